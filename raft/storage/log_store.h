// Driftwood: the write side of durable Raft storage.
//
// The driver (never the core) writes through Persist, one call per Ready. Error
// policy: any non-OK status from Persist means the store can no longer promise
// durability; the caller must stop the process (fail-stop) rather than
// continue, because Raft's safety assumes acknowledged writes survive.
#ifndef DRIFTWOOD_RAFT_STORAGE_LOG_STORE_H_
#define DRIFTWOOD_RAFT_STORAGE_LOG_STORE_H_

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "raft/core/log_reader.h"
#include "raft/core/types.h"

namespace driftwood::raft {

// One atomic write: what a Ready asks to persist.
struct PersistRequest {
  // Replaces the stored hard state when set.
  std::optional<HardState> hard_state;
  // When set, the whole stored log is dropped and replaced by this snapshot
  // (FirstIndex() becomes snapshot.index + 1, TermAt(snapshot.index) its term)
  // before `entries` are written; the stored configuration becomes its
  // configuration.
  std::optional<SnapshotMeta> snapshot;
  // Writing entries starting at index i first removes every stored entry >= i.
  // REQUIRES: contiguous; entries.front().index <= LastIndex() + 1.
  std::vector<Entry> entries;
  // Durable before Persist returns when true.
  bool sync = false;
};

class LogStore : public LogReader {
 public:
  // Applies `request` atomically: after a crash either all of it or none of it
  // is visible. When request.sync, it is durable before this returns.
  // Not thread-safe with respect to other writes; reads may run on the same
  // thread between writes.
  virtual absl::Status Persist(const PersistRequest& request) = 0;

  // Records a snapshot the state machine produced locally; Snapshot() returns
  // the newest one. InvalidArgument when its term does not match the log at
  // its index, when it is past the last index or older than the current one.
  virtual absl::Status SetSnapshot(const SnapshotMeta& snapshot) = 0;

  // Drops the entries through `index`; TermAt(index) stays answerable.
  // InvalidArgument unless FirstIndex() - 1 <= index <= LastIndex().
  virtual absl::Status Compact(LogIndex index) = 0;
};

// Checks shared by every LogStore implementation; each returns
// InvalidArgument naming the problem.

// `request` fits a log holding [first, last]: after the request's snapshot (if
// any) resets the log, its entries are contiguous and start no later than
// just after the last entry.
absl::Status ValidatePersist(const PersistRequest& request, LogIndex first,
                             LogIndex last);

// A locally produced `snapshot` matches `log` (the log's term at its index,
// unless compacted; not past the last index) and is not older than `current`.
// Read errors of `log` other than OutOfRange are returned as they are.
absl::Status ValidateSnapshot(const LogReader& log,
                              const SnapshotMeta& snapshot,
                              const std::optional<SnapshotMeta>& current);

// Compacting through `index` is possible for a log holding [first, last].
absl::Status ValidateCompaction(LogIndex index, LogIndex first, LogIndex last);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_LOG_STORE_H_
