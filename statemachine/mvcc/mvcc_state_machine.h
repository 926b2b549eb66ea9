// Driftwood: MvccStateMachine, etcd's data model (statemachine/mvcc/
// mvcc_store.h) as a persistent raft::StateMachine on its own RocksDB
// instance: a RocksDbKvStateMachine whose entries are MvccCommands and whose
// queries are MvccQuerys (statemachine/mvcc/proto/mvcc_command.proto), each
// answered with a serialized MvccResult.
//
// Everything RocksDbKvStateMachine promises holds: the data of every applied
// batch and the applied index are written in one atomic write; snapshots are
// SST files of a RocksDB snapshot; Restore is atomic and durable; queries run
// on any thread against one consistent state.
#ifndef DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STATE_MACHINE_H_
#define DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STATE_MACHINE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/ordered_kv.h"
#include "statemachine/rocksdb_kv_state_machine.h"

namespace driftwood::mvcc {

// The MVCC store as a KvApplication. A command or query that does not parse
// is answered with InvalidArgument in the result, changing nothing.
class MvccApplication : public statemachine::KvApplication {
 public:
  absl::StatusOr<std::string> Apply(std::string_view data,
                                    OrderedKv& store) override;
  absl::StatusOr<std::string> Query(std::string_view query,
                                    OrderedKv& state) const override;
};

class MvccStateMachine : public statemachine::RocksDbKvStateMachine {
 public:
  // options.application is ignored (this class's own is used).
  explicit MvccStateMachine(statemachine::RocksDbKvStateMachineOptions options);

 private:
  static statemachine::RocksDbKvStateMachineOptions WithApplication(
      statemachine::RocksDbKvStateMachineOptions options,
      MvccApplication* application) {
    options.application = application;
    return options;
  }

  // Used by the base only after construction.
  MvccApplication application_;
};

}  // namespace driftwood::mvcc

#endif  // DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STATE_MACHINE_H_
