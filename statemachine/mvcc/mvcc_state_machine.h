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

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/ordered_kv.h"
#include "statemachine/rocksdb_kv_state_machine.h"

namespace driftwood::mvcc {

// Told what each applied batch changed (on the apply thread, after the batch
// is written, so that queries already see it): watch hubs and lessors.
// Implementations must not block.
class ApplyObserver {
 public:
  virtual ~ApplyObserver() = default;
  virtual void OnApplied(AppliedChanges changes) = 0;
  // The state was replaced by a snapshot: whatever was derived from earlier
  // changes must be rebuilt from the store.
  virtual void OnRestored() = 0;
};

// The MVCC store as a KvApplication. A command or query that does not parse
// is answered with InvalidArgument in the result, changing nothing.
// The key of a serialized MvccCommand that is a put, read from its wire
// format without parsing the rest; nullopt for any other command and for
// bytes that are not one. A view into `command`.
std::optional<std::string_view> PutKeyOf(std::string_view command);

class MvccApplication : public statemachine::KvApplication {
 public:
  // `value_cache_bytes`: the key index's value cache (key_index.h).
  explicit MvccApplication(
      ApplyObserver* observer = nullptr,
      size_t value_cache_bytes = KeyIndex::kDefaultValueCacheBytes)
      : observer_(observer), index_(value_cache_bytes) {}

  absl::StatusOr<std::string> Apply(std::string_view data,
                                    OrderedKv& store) override;
  // Warms the key index for the puts among `entries` (KeyIndex::Prefetch).
  void Prefetch(const std::vector<std::string_view>& entries) override;
  absl::StatusOr<std::string> Query(std::string_view query,
                                    OrderedKv& state) const override;
  // Builds the key index from the state.
  absl::Status Load(const OrderedKv& state) override;
  absl::Status BeforeWrite(OrderedKv& store) override;
  void Committed() override;
  void Restored() override;

 private:
  // The store's revision and compaction point as the batch's commands left
  // them (and its NOSPACE alarm, when known); the first two are written once
  // per batch, by BeforeWrite, when `dirty`. The compaction record only when it
  // moved from stored_meta_'s: a record written in every batch, sorting after
  // the event records being appended, makes RocksDB's memtable inserts of those
  // records cost more (bench/README.md).
  struct BatchMeta {
    int64_t revision = 0;
    int64_t compact_revision = 0;
    bool dirty = false;
    // MvccStore::known_no_space_alarm(), carried so that the batch's next
    // write need not read the alarm record.
    std::optional<bool> no_space_alarm;
  };

  ApplyObserver* const observer_;
  // Every store this application makes shares it: the apply thread writes
  // it, queries (const) read it at their state's revision.
  mutable KeyIndex index_;
  // The compaction point the batch being written leaves, once the index must
  // be pruned to it (Committed).
  std::optional<int64_t> prune_after_write_;
  // Set by the batch's first Apply.
  std::optional<BatchMeta> batch_meta_;
  // The revision, compaction point and NOSPACE alarm (when known) the store
  // holds: read by the first
  // Apply after Load or Restored, then taken from each batch written
  // (writing_meta_, from BeforeWrite until Committed; a failed write leaves
  // the store, and so stored_meta_, as they were).
  struct StoredMeta {
    int64_t revision = 0;
    int64_t compact_revision = 0;
    std::optional<bool> no_space_alarm;
  };
  std::optional<StoredMeta> stored_meta_;
  std::optional<StoredMeta> writing_meta_;
  // What the entries of the batch being applied changed.
  AppliedChanges pending_;
  bool pending_applied_ = false;
};

class MvccStateMachine : public statemachine::RocksDbKvStateMachine {
 public:
  // options.application is ignored (this class's own is used). `observer`
  // (not owned; may be null) must outlive the state machine. The key index
  // caches up to `value_cache_bytes` of the keys' newest values.
  explicit MvccStateMachine(
      statemachine::RocksDbKvStateMachineOptions options,
      ApplyObserver* observer = nullptr,
      size_t value_cache_bytes = KeyIndex::kDefaultValueCacheBytes);

 private:
  static statemachine::RocksDbKvStateMachineOptions WithApplication(
      statemachine::RocksDbKvStateMachineOptions options,
      MvccApplication* application) {
    options.application = application;
    // Every MVCC record key starts with its type (mvcc_store.cc).
    options.key_kind_bytes = 1;
    return options;
  }

  // Used by the base only after construction.
  MvccApplication application_;
};

}  // namespace driftwood::mvcc

#endif  // DRIFTWOOD_STATEMACHINE_MVCC_MVCC_STATE_MACHINE_H_
