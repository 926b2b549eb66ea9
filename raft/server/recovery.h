// Driftwood: the restart algorithm (raft/storage/FORMAT.md "Recovery";
// docs/design.md "Recovery").
//
// On restart a node holds three durable things that were written at different
// moments: the log [F, L] with its stored commit C and snapshot record, the
// snapshots in the snapshot store, and (for a persistent state machine) the
// state machine's own applied point A. PlanRecovery decides, from those alone,
// where the state machine resumes, or refuses with DataLoss when they cannot
// all be true of one history. It never writes; ExecuteRecovery-style callers
// carry out the plan.
#ifndef DRIFTWOOD_RAFT_SERVER_RECOVERY_H_
#define DRIFTWOOD_RAFT_SERVER_RECOVERY_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/log_reader.h"
#include "raft/core/types.h"
#include "raft/state_machine.h"

namespace driftwood::raft {

class SnapshotStore;

// A published snapshot as recovery sees it.
struct SnapshotCandidate {
  LogIndex index;
  Term term;
  // OK when the snapshot's metadata reads and checks.
  absl::StatusOr<SnapshotMeta> meta;
  // Full verification (every file's size and checksum); called at most once,
  // and only for a snapshot recovery would restore from.
  std::function<absl::Status()> verify;
};

struct RecoveryPlan {
  // Restore the state machine from this snapshot before applying anything.
  std::optional<SnapshotMeta> restore;
  // Where the state machine stands once `restore` (if any) is done; apply
  // resumes at applied + 1.
  LogIndex applied;
  // The commit index the core starts from: max(C, applied).
  LogIndex commit;
  // A verified snapshot newer than the log store's snapshot record: record it
  // (LogStore::SetSnapshot) so the leader can send it.
  std::optional<SnapshotMeta> record;
  // Snapshots to retire: published by an installation whose metadata never
  // reached the log, contradicting the log, or corrupt.
  std::vector<LogIndex> discard;
  // True when the log store records a snapshot that is missing or corrupt: a
  // new one must be produced before a follower can be sent one.
  bool snapshot_needed = false;
  // One line per decision, for the node's log.
  std::vector<std::string> notes;
};

// The algorithm of FORMAT.md "Recovery". `applied` is what the state machine's
// Open reported (index 0 for an in-memory state machine); `snapshots` is
// newest first. DataLoss, naming the indexes involved, for every inconsistent
// case; other errors of `log` are returned as they are.
absl::StatusOr<RecoveryPlan> PlanRecovery(
    const LogReader& log, const AppliedState& applied,
    const std::vector<SnapshotCandidate>& snapshots);

// The candidates of a snapshot store, newest first.
std::vector<SnapshotCandidate> SnapshotCandidates(const SnapshotStore& store);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_RECOVERY_H_
