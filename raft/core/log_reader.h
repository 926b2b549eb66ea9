// Driftwood: the read side of durable Raft storage, the only way the core sees
// the disk.
//
// The core reads the durable log through a `const LogReader&` and never writes
// it; the driver writes through LogStore::Persist (raft/storage/log_store.h)
// and then calls Node::Advance. Implementations must be readable from the
// thread that drives the core while that thread is the only writer.
#ifndef DRIFTWOOD_RAFT_CORE_LOG_READER_H_
#define DRIFTWOOD_RAFT_CORE_LOG_READER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/core/types.h"

namespace driftwood::raft {

// What a restarting node recovers besides its log.
struct InitialState {
  HardState hard_state;
  Configuration configuration;
};

class LogReader {
 public:
  virtual ~LogReader() = default;

  // The durable hard state and configuration. DataLoss when they cannot be
  // read.
  virtual absl::StatusOr<InitialState> LoadInitialState() const = 0;

  // The first index still stored (1 for a log never compacted). An empty log
  // has LastIndex() == FirstIndex() - 1.
  virtual LogIndex FirstIndex() const = 0;
  virtual LogIndex LastIndex() const = 0;

  // The term of the entry at `index`. Valid for FirstIndex() - 1 <= index <=
  // LastIndex(); the term at index 0 is 0. OutOfRange below that range
  // (compacted), NotFound above it, DataLoss for a corrupt entry.
  virtual absl::StatusOr<Term> TermAt(LogIndex index) const = 0;

  // Entries in [first, last_exclusive), stopping before the total ByteSize()
  // passes `max_bytes` but always returning at least one entry.
  // REQUIRES: FirstIndex() <= first < last_exclusive <= LastIndex() + 1.
  // OutOfRange when first is compacted, DataLoss for a corrupt entry.
  virtual absl::StatusOr<std::vector<Entry>> Entries(
      LogIndex first, LogIndex last_exclusive, uint64_t max_bytes) const = 0;

  // The newest durable snapshot a leader may send to a follower that needs
  // compacted entries. NotFound when there is none; Unavailable when one is
  // being produced (the leader retries later).
  virtual absl::StatusOr<SnapshotMeta> Snapshot() const = 0;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_LOG_READER_H_
