// Driftwood: the apply loop, the step function that owns the state machine
// and completes proposals and reads (docs/design.md "The runtime").
//
// ApplyLoop applies what the raft loop hands over (a snapshot to restore,
// then committed entries, strictly in order), and completes requests:
//
//  * a proposal the local core appended at index i in term t completes when
//    index i is applied: with the state machine's response when the applied
//    entry has term t, with Aborted when it has another term (known not
//    committed). Leadership changes do not complete it: a stepped-down
//    leader's entry may still commit;
//  * a proposal a follower forwarded completes the same way once the leader
//    told where it appended it; a refusal completes it with the leader's
//    status (Unavailable or ResourceExhausted: known not appended); one
//    still unanswered when this node learns of another leader (or of none)
//    completes with DeadlineExceeded (outcome unknown) at once;
//  * an index covered by an installed snapshot whose entry was never seen
//    here completes with DeadlineExceeded (outcome unknown), as does every
//    request whose deadline passes;
//  * a linearizable read runs once the ReadState for it arrived and the
//    applied index reached its read index (thesis §6.4).
//
// It also starts snapshots: when the policy says one is due, when the core
// asked for one (Ready::snapshot_wanted) or recovery found one missing, it
// captures the state machine and hands the image to the snapshot writer (one
// at a time). A persistent state machine is synced and the raft loop told to
// compact behind its durable point.
//
// Not thread-safe: one thread (or the simulation's scheduler) calls every
// method; callbacks run on it.
#ifndef DRIFTWOOD_RAFT_SERVER_APPLY_LOOP_H_
#define DRIFTWOOD_RAFT_SERVER_APPLY_LOOP_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "raft/server/replica_state.h"
#include "raft/server/runtime_types.h"

namespace driftwood::raft {

struct ApplyLoopOutputs {
  std::function<void(ControlEvent)> raft;
  std::function<void(SnapshotJob)> snapshot;
  // Optional: told the applied index each time it moves (entries applied or
  // a snapshot installed), before any request those entries answer
  // completes, so a caller whose proposal completed reads an applied index
  // at least its entry's.
  std::function<void(LogIndex)> applied;
};

class ApplyLoop {
 public:
  // How many recently applied entries keep their term and response, for
  // forwarded proposals whose answer arrives after their index was applied.
  static constexpr size_t kRecentResults = 8192;

  // `replica` must outlive the loop. `snapshot_in_progress` is shared with
  // the snapshot writer, which clears it when a capture is written.
  ApplyLoop(ReplicaState& replica, ApplyLoopOutputs outputs,
            AtomicCounters& counters, std::atomic<bool>& snapshot_in_progress);

  ApplyLoop(const ApplyLoop&) = delete;
  ApplyLoop& operator=(const ApplyLoop&) = delete;

  // Performs one task. A non-OK status is a state machine or snapshot
  // failure: the state may no longer match the log, so the node must stop.
  absl::Status Handle(ApplyTask task);

  // Asks for a snapshot at the next opportunity (recovery found the
  // recorded one missing: RecoveryPlan::snapshot_needed).
  void WantSnapshot() { snapshot_wanted_ = true; }

  // Completes every pending request with `status` (the server is stopping;
  // their outcome is unknown).
  void CancelAll(const absl::Status& status);

  // Completes the requests `task` carries with `status` (known outcomes of a
  // CompleteTask keep theirs) without applying or tracking anything: the
  // node failed and applies nothing more.
  void Abandon(ApplyTask task, const absl::Status& status);

  LogIndex applied() const { return replica_.applied(); }
  // Requests waiting for an outcome.
  size_t pending() const;

 private:
  struct TrackedProposal {
    Term term;
    PendingRequest request;
  };
  struct Recent {
    EntryId id;
    std::string response;
  };

  absl::Status HandOver(HandOverTask& task);
  void Track(EntryId id, PendingRequest request);
  void ForwardAnswered(ForwardAnsweredTask& task);
  void LeaderChanged(const LeaderChangedTask& task);
  void ServeReads();
  void ExpireDeadlines(absl::Time now);
  absl::Status MaybeSnapshot();
  void Complete(PendingRequest& request, absl::StatusOr<std::string> result,
                bool read);

  ReplicaState& replica_;
  ApplyLoopOutputs outputs_;
  AtomicCounters& counters_;
  std::atomic<bool>& snapshot_in_progress_;
  bool snapshot_wanted_ = false;
  // By index; two proposals may wait on one index (appended in different
  // terms), at most one of them commits.
  std::multimap<LogIndex, TrackedProposal> proposals_;
  struct Forward {
    NodeId leader;
    std::vector<PendingRequest> requests;
  };
  // By forward id.
  std::map<uint64_t, Forward> forwards_;
  // Reads waiting for their ReadState, by read id.
  std::map<uint64_t, std::vector<ReadInput>> reads_unconfirmed_;
  // Confirmed reads waiting for the applied index to reach their read index.
  std::multimap<LogIndex, ReadInput> reads_confirmed_;
  std::deque<Recent> recent_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_APPLY_LOOP_H_
