#include "raft/server/apply_loop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/util/overloaded.h"
#include "spdlog/spdlog.h"

namespace driftwood::raft {

ApplyLoop::ApplyLoop(ReplicaState& replica, ApplyLoopOutputs outputs,
                     AtomicCounters& counters,
                     std::atomic<bool>& snapshot_in_progress)
    : replica_(replica),
      outputs_(std::move(outputs)),
      counters_(counters),
      snapshot_in_progress_(snapshot_in_progress) {}

size_t ApplyLoop::pending() const {
  size_t count = proposals_.size() + reads_confirmed_.size();
  for (const auto& [id, forward] : forwards_) {
    for (const PendingRequest& request : forward.requests)
      if (request.done) ++count;
  }
  for (const auto& [id, reads] : reads_unconfirmed_) count += reads.size();
  return count;
}

void ApplyLoop::Complete(PendingRequest& request,
                         absl::StatusOr<std::string> result, bool read) {
  counters_.CountOutcome(result.status(), read);
  if (!request.done) return;
  // Moved out first: a request completes exactly once.
  ResultCallback done = std::move(request.done);
  request.done = nullptr;
  done(std::move(result));
}

absl::Status ApplyLoop::Handle(ApplyTask task) {
  return std::visit(
      Overloaded{
          [&](HandOverTask& hand_over) { return HandOver(hand_over); },
          [&](TrackProposalsTask& track) {
            LogIndex index = track.first.index;
            for (PendingRequest& request : track.proposals) {
              Track(EntryId{track.first.term, index}, std::move(request));
              index = index.next();
            }
            return absl::OkStatus();
          },
          [&](TrackForwardTask& track) {
            forwards_.emplace(
                track.forward_id,
                Forward{track.leader, std::move(track.proposals)});
            return absl::OkStatus();
          },
          [&](LeaderChangedTask& changed) {
            LeaderChanged(changed);
            return absl::OkStatus();
          },
          [&](ForwardAnsweredTask& answered) {
            ForwardAnswered(answered);
            return absl::OkStatus();
          },
          [&](TrackReadsTask& track) {
            reads_unconfirmed_.emplace(track.read_id, std::move(track.reads));
            return absl::OkStatus();
          },
          [&](CompleteTask& complete) {
            for (PendingRequest& request : complete.requests) {
              Complete(request, complete.status, complete.reads);
            }
            return absl::OkStatus();
          },
          [&](DeadlineTask& deadline) {
            ExpireDeadlines(deadline.now);
            return absl::OkStatus();
          },
          [&](LocalReadTask& local) {
            Complete(local.read.request,
                     replica_.state_machine().Query(local.read.query),
                     /*read=*/true);
            return absl::OkStatus();
          },
      },
      task);
}

void ApplyLoop::Track(EntryId id, PendingRequest request) {
  if (id.index <= applied()) {
    // Applied before we learned where the proposal went (a forward answer
    // that arrived late): the recent results say what happened there.
    for (Recent& recent : recent_) {
      if (recent.id.index != id.index) continue;
      if (recent.id.term == id.term) {
        Complete(request, recent.response, false);
      } else {
        Complete(request,
                 absl::AbortedError(absl::StrCat(
                     "another entry (term ", recent.id.term.value(),
                     ") was committed at index ", id.index.value())),
                 false);
      }
      return;
    }
    Complete(request,
             absl::DeadlineExceededError(absl::StrCat(
                 "index ", id.index.value(),
                 " was applied before the leader's answer arrived; the "
                 "outcome is unknown")),
             false);
    return;
  }
  proposals_.emplace(id.index, TrackedProposal{id.term, std::move(request)});
}

void ApplyLoop::ForwardAnswered(ForwardAnsweredTask& task) {
  const ForwardResponse& response = task.response;
  auto forward = forwards_.find(response.request_id);
  if (forward == forwards_.end()) return;  // its deadline passed
  std::vector<PendingRequest> requests = std::move(forward->second.requests);
  forwards_.erase(forward);
  // Requests without a callback already completed (their deadline passed).
  if (response.code != absl::StatusCode::kOk) {
    for (PendingRequest& request : requests) {
      if (!request.done) continue;
      Complete(request, absl::Status(response.code, response.error), false);
    }
    return;
  }
  if (response.last.index.value() < requests.size()) return;  // malformed
  LogIndex index = response.last.index - (requests.size() - 1);
  for (PendingRequest& request : requests) {
    if (request.done)
      Track(EntryId{response.last.term, index}, std::move(request));
    index = index.next();
  }
}

void ApplyLoop::LeaderChanged(const LeaderChangedTask& task) {
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    if (it->second.leader == task.leader) {
      ++it;
      continue;
    }
    // The node they were forwarded to may have appended them before it lost
    // leadership, and the next leader may still commit them: unknown.
    const absl::Status unknown = absl::DeadlineExceededError(
        absl::StrCat("forwarded to node ", it->second.leader.value(),
                     ", which is no longer the leader this node knows (term ",
                     task.term.value(),
                     ") and did not say where it appended it; the "
                     "outcome is unknown"));
    for (PendingRequest& request : it->second.requests) {
      if (request.done) Complete(request, unknown, false);
    }
    it = forwards_.erase(it);
  }
}

absl::Status ApplyLoop::HandOver(HandOverTask& task) {
  if (task.snapshot) {
    if (absl::Status status = replica_.Install(*task.snapshot); !status.ok()) {
      return status;
    }
    if (outputs_.applied) outputs_.applied(applied());
    // Entries covered by the snapshot were never seen here: their
    // proposals' outcome is unknown (docs/design.md "The runtime").
    const LogIndex covered = task.snapshot->index;
    for (auto it = proposals_.begin();
         it != proposals_.end() && it->first <= covered;) {
      Complete(it->second.request,
               absl::DeadlineExceededError(absl::StrCat(
                   "index ", it->first.value(),
                   " is covered by an installed snapshot; the outcome is "
                   "unknown")),
               false);
      it = proposals_.erase(it);
    }
    recent_.clear();
  }
  if (!task.committed_entries.empty()) {
    absl::StatusOr<std::vector<std::string>> responses =
        replica_.Apply(task.committed_entries, task.configuration);
    if (!responses.ok()) return responses.status();
    if (outputs_.applied) outputs_.applied(applied());
    counters_.apply_batches.fetch_add(1, std::memory_order_relaxed);
    counters_.entries_applied.fetch_add(task.committed_entries.size(),
                                        std::memory_order_relaxed);
    for (size_t i = 0; i < task.committed_entries.size(); ++i) {
      const Entry& entry = task.committed_entries[i];
      std::string& response = (*responses)[i];
      auto [first, last] = proposals_.equal_range(entry.index);
      for (auto it = first; it != last; ++it) {
        if (it->second.term == entry.term) {
          Complete(it->second.request, response, false);
        } else {
          // Another term's entry committed at the proposal's index: it is
          // known never to commit (Log Matching, paper §5.3).
          Complete(it->second.request,
                   absl::AbortedError(absl::StrCat(
                       "another entry (term ", entry.term.value(),
                       ") was committed at index ", entry.index.value())),
                   false);
        }
      }
      proposals_.erase(first, last);
      if (entry.type == EntryType::kNormal) {
        recent_.push_back(Recent{entry.id(), std::move(response)});
        if (recent_.size() > kRecentResults) recent_.pop_front();
      }
    }
  }
  for (const ReadState& read_state : task.read_states) {
    auto reads = reads_unconfirmed_.find(read_state.request_id);
    if (reads == reads_unconfirmed_.end()) continue;  // expired
    for (ReadInput& read : reads->second) {
      reads_confirmed_.emplace(read_state.index, std::move(read));
    }
    reads_unconfirmed_.erase(reads);
  }
  ServeReads();
  if (task.snapshot_wanted) snapshot_wanted_ = true;
  return MaybeSnapshot();
}

void ApplyLoop::ServeReads() {
  const LogIndex applied_index = applied();
  for (auto it = reads_confirmed_.begin();
       it != reads_confirmed_.end() && it->first <= applied_index;) {
    // Thesis §6.4 step 4: the state machine has applied through the read
    // index, so the query sees every write committed before the read began.
    Complete(it->second.request,
             replica_.state_machine().Query(it->second.query), true);
    it = reads_confirmed_.erase(it);
  }
}

void ApplyLoop::ExpireDeadlines(absl::Time now) {
  const absl::Status expired = absl::DeadlineExceededError(
      "the deadline passed before the outcome was known");
  for (auto it = proposals_.begin(); it != proposals_.end();) {
    if (it->second.request.deadline > now) {
      ++it;
      continue;
    }
    Complete(it->second.request, expired, false);
    it = proposals_.erase(it);
  }
  for (auto it = forwards_.begin(); it != forwards_.end();) {
    // Each request has its own deadline (a forward batches the proposals of
    // several clients). An expired one stays in place, completed and without
    // a callback, so the others keep their positions for the answer.
    bool waiting = false;
    for (PendingRequest& request : it->second.requests) {
      if (!request.done) continue;
      if (request.deadline <= now) {
        Complete(request, expired, false);
        request.done = nullptr;
      } else {
        waiting = true;
      }
    }
    it = waiting ? std::next(it) : forwards_.erase(it);
  }
  for (auto it = reads_unconfirmed_.begin(); it != reads_unconfirmed_.end();) {
    std::vector<ReadInput>& reads = it->second;
    std::vector<ReadInput> kept;
    for (ReadInput& read : reads) {
      if (read.request.deadline <= now) {
        Complete(read.request, expired, true);
      } else {
        kept.push_back(std::move(read));
      }
    }
    if (kept.empty()) {
      it = reads_unconfirmed_.erase(it);
    } else {
      it->second = std::move(kept);
      ++it;
    }
  }
  for (auto it = reads_confirmed_.begin(); it != reads_confirmed_.end();) {
    if (it->second.request.deadline > now) {
      ++it;
      continue;
    }
    Complete(it->second.request, expired, true);
    it = reads_confirmed_.erase(it);
  }
}

absl::Status ApplyLoop::MaybeSnapshot() {
  if (replica_.CompactionDue()) {
    // A persistent state machine needs no snapshot to restart: compact
    // behind its durable applied point.
    absl::StatusOr<LogIndex> durable = replica_.RecoveryPoint();
    if (!durable.ok()) return durable.status();
    outputs_.raft(CompactEvent{*durable});
  }
  if (!snapshot_wanted_ && !replica_.SnapshotDue()) return absl::OkStatus();
  if (applied() == LogIndex(0)) return absl::OkStatus();
  if (snapshot_in_progress_.exchange(true)) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> captured =
      replica_.Capture();
  if (!captured.ok()) {
    snapshot_in_progress_.store(false);
    return captured.status();
  }
  snapshot_wanted_ = false;
  outputs_.snapshot(WriteSnapshotJob{
      std::shared_ptr<StateMachineSnapshot>(std::move(*captured))});
  return absl::OkStatus();
}

void ApplyLoop::Abandon(ApplyTask task, const absl::Status& status) {
  std::visit(Overloaded{
                 [&](HandOverTask&) {},
                 [&](TrackProposalsTask& track) {
                   for (PendingRequest& request : track.proposals) {
                     Complete(request, status, false);
                   }
                 },
                 [&](TrackForwardTask& track) {
                   for (PendingRequest& request : track.proposals) {
                     Complete(request, status, false);
                   }
                 },
                 [&](ForwardAnsweredTask&) {},
                 [&](TrackReadsTask& track) {
                   for (ReadInput& read : track.reads) {
                     Complete(read.request, status, true);
                   }
                 },
                 [&](CompleteTask& complete) {
                   for (PendingRequest& request : complete.requests) {
                     Complete(request, complete.status, complete.reads);
                   }
                 },
                 [&](DeadlineTask&) {},
                 [&](LocalReadTask& local) {
                   Complete(local.read.request, status, true);
                 },
                 [&](LeaderChangedTask&) {},
             },
             task);
}

void ApplyLoop::CancelAll(const absl::Status& status) {
  for (auto& [index, tracked] : proposals_) {
    Complete(tracked.request, status, false);
  }
  proposals_.clear();
  for (auto& [id, forward] : forwards_) {
    for (PendingRequest& request : forward.requests) {
      if (request.done) Complete(request, status, false);
    }
  }
  forwards_.clear();
  for (auto& [id, reads] : reads_unconfirmed_) {
    for (ReadInput& read : reads) Complete(read.request, status, true);
  }
  reads_unconfirmed_.clear();
  for (auto& [index, read] : reads_confirmed_) {
    Complete(read.request, status, true);
  }
  reads_confirmed_.clear();
}

}  // namespace driftwood::raft
