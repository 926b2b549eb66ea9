// Driftwood: the interface applications implement (docs/design.md "State
// machines").
//
// A StateMachine is the deterministic function of the committed log that an
// application replicates. The framework owns one instance per group and calls
// it from a single apply thread.
//
// Contract (every implementation must honour it; the framework relies on it):
//  * Serial calls. Open, Apply, Capture, Restore and Sync are called one at a
//    time from the apply thread. Query is called from other threads only when
//    ConcurrentQueries() is true; otherwise also from the apply thread.
//  * Exactly once, in order. After Open reports applied index A, the first
//    Apply starts at A + 1, and every later Apply starts right after the last
//    entry of the previous one. After Restore(meta, ...) the next Apply starts
//    at meta.index + 1. Each committed index is applied exactly once between
//    two restores.
//  * Deterministic. Apply's effect and responses depend only on the state and
//    the entries: no clocks, randomness or local configuration. A failure of
//    the application's own logic (a failed compare-and-swap, a missing key) is
//    a response, not an error.
//  * Errors are fatal. A non-OK status from Apply, Restore or Sync means the
//    state machine can no longer promise its state matches the log; the
//    framework stops the process (fail-stop) and recovers on restart.
//  * Persistence. A persistent state machine (persistent() true) keeps its data
//    on disk and writes the applied index, its term and the configuration in
//    the same atomic write as the data of the entries they cover; Sync()
//    returns an index through which that is durable, which may lag behind
//    the applied index while the state machine makes the rest durable in the
//    background (repeated calls must catch up). The framework compacts the
//    log only up to that durable point (minus trailing entries). An
//    in-memory state machine loses everything in a crash and is rebuilt from
//    the newest snapshot plus the log.
#ifndef DRIFTWOOD_RAFT_STATE_MACHINE_H_
#define DRIFTWOOD_RAFT_STATE_MACHINE_H_

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "raft/core/types.h"

namespace driftwood::raft {

// The point a state machine has applied through: the index, the term of the
// entry at that index, and the configuration as of that index. Index 0 (term
// 0, empty configuration) means nothing has been applied.
struct AppliedState {
  LogIndex index;
  Term term;
  Configuration configuration;

  bool operator==(const AppliedState&) const = default;
};

// A contiguous run of committed entries to apply.
struct ApplyBatch {
  // Committed, durable on this node, contiguous, starting at applied + 1.
  // kNoOp entries carry no data; they only advance the applied point.
  std::span<const Entry> entries;
  // The configuration as of the last entry of `entries`; the state machine
  // records it with the applied point so that Open and Capture can report it.
  Configuration configuration;
};

// The "exactly once, in order" check of the contract above, for
// implementations: OK when `batch` is contiguous and starts right after
// `applied`; otherwise FailedPrecondition naming `who` and the indexes.
inline absl::Status CheckBatchFollows(const AppliedState& applied,
                                      const ApplyBatch& batch,
                                      std::string_view who) {
  LogIndex expected = applied.index.next();
  for (const Entry& entry : batch.entries) {
    if (entry.index != expected) {
      return absl::FailedPreconditionError(absl::StrCat(
          std::string(who), ": entry index ", entry.index.value(), " where ",
          expected.value(), " was expected (applied index ",
          applied.index.value(), ")"));
    }
    expected = expected.next();
  }
  return absl::OkStatus();
}

// A point-in-time image of a state machine, taken cheaply on the apply thread
// by StateMachine::Capture and written out later on a background thread while
// the state machine keeps applying.
class StateMachineSnapshot {
 public:
  virtual ~StateMachineSnapshot() = default;

  // The applied point the image holds: index, term and configuration of the
  // state machine when Capture was called.
  virtual SnapshotMeta meta() const = 0;

  // Writes the image as one or more regular files into `dir`, which exists and
  // is empty. Called at most once, from any thread, possibly concurrently with
  // Apply and Query on the state machine. Need not fsync: the snapshot store
  // syncs every file and the folder before it publishes the snapshot.
  virtual absl::Status WriteTo(const std::filesystem::path& dir) = 0;
};

class StateMachine {
 public:
  virtual ~StateMachine() = default;

  // Opens the state machine's durable state and reports what it has applied.
  // An in-memory state machine reports index 0. Called once, first.
  virtual absl::StatusOr<AppliedState> Open() = 0;

  // Applies `batch` and returns one response per entry, in order (an empty
  // string for kNoOp entries and for commands without a reply).
  // REQUIRES: batch.entries.front().index == applied index + 1.
  virtual absl::StatusOr<std::vector<std::string>> Apply(
      const ApplyBatch& batch) = 0;

  // The applied point: what the next Capture would hold.
  virtual AppliedState applied() const = 0;

  // Captures the applied state without copying it (for example a RocksDB
  // snapshot, a copy-on-write reference). Must be cheap: it runs on the apply
  // thread. FailedPrecondition when nothing has been applied yet.
  virtual absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> Capture() = 0;

  // Replaces the whole state by the snapshot whose files are in `dir` and
  // whose metadata is `meta` (the snapshot store has already verified both).
  // Atomic: after a crash the state machine opens either as before or as the
  // snapshot. Afterwards applied() reports meta's index, term and
  // configuration. For a persistent state machine the restored state is
  // durable when this returns.
  virtual absl::Status Restore(const SnapshotMeta& meta,
                               const std::filesystem::path& dir) = 0;

  // A read-only query against the applied state. Its encoding is the
  // application's. InvalidArgument for a malformed query.
  virtual absl::StatusOr<std::string> Query(std::string_view query) const = 0;

  // True when Query may run on any thread concurrently with every other call.
  virtual bool ConcurrentQueries() const { return false; }

  // True when the state survives a crash up to Sync()'s durable point.
  virtual bool persistent() const { return false; }

  // Persistent state machines: returns an applied index through which the
  // state is durable, at most the applied index, and sees to it that the rest
  // becomes durable (either before returning, or in the background so that a
  // later call returns more). In-memory ones return Unimplemented.
  virtual absl::StatusOr<LogIndex> Sync() {
    return absl::UnimplementedError(
        "Sync: this state machine is not persistent");
  }
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STATE_MACHINE_H_
