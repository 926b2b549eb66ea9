#include "raft/server/raft_loop.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/core/describe.h"
#include "raft/util/overloaded.h"
#include "spdlog/spdlog.h"

namespace driftwood::raft {

namespace {

std::vector<PendingRequest> Requests(std::vector<ProposalInput>& proposals) {
  std::vector<PendingRequest> requests;
  requests.reserve(proposals.size());
  for (ProposalInput& proposal : proposals) {
    requests.push_back(std::move(proposal.request));
  }
  return requests;
}

}  // namespace

uint64_t RequestIdBase(absl::Time start) {
  const int64_t micros = absl::ToUnixMicros(start);
  return micros <= 0 ? 0 : static_cast<uint64_t>(micros) << 12;
}

RaftLoop::RaftLoop(Node& node, LogStore& log, ReplicaState& replica,
                   RaftLoopOutputs outputs, RaftLoopOptions options,
                   AtomicCounters& counters)
    : node_(node),
      log_(log),
      replica_(replica),
      outputs_(std::move(outputs)),
      options_(options),
      counters_(counters),
      processor_(
          node, log,
          ReadyProcessor::Callbacks{
              .send =
                  [this](std::vector<Message>& messages) { Send(messages); },
              .hand_over = [this](const Ready& ready) { HandOver(ready); }},
          options.hand_over_before_persist
              ? ReadyProcessor::HandOverTiming::kBeforePersist
              : ReadyProcessor::HandOverTiming::kAfterPersist),
      handed_over_(node.applied_index()),
      next_forward_id_(options.first_request_id),
      next_read_id_(options.first_request_id) {}

absl::Status RaftLoop::Drain(RaftInput input) {
  for (uint64_t i = 0; i < input.ticks; ++i) node_.Tick();
  now_ = std::max(now_, input.now);
  if (input.ticks > 0) RetryReads(input.ticks);
  for (const Message& message : input.messages) {
    // A malformed message is the sender's problem; Raft is best effort.
    if (absl::Status status = node_.Step(message); !status.ok()) {
      spdlog::debug("node {} dropped a message from node {}: {}",
                    node_.id().value(), message.from.value(),
                    status.ToString());
    }
  }
  for (ControlEvent& event : input.controls) {
    if (absl::Status status = HandleControl(event); !status.ok()) {
      return status;
    }
  }
  for (ServerMessage& message : input.server_messages) {
    HandleServerMessage(message);
  }
  if (!input.proposals.empty()) Propose(input.proposals);
  if (!input.reads.empty()) Read(input.reads);
  return absl::OkStatus();
}

void RaftLoop::Send(std::vector<Message>& messages) {
  outgoing_.clear();
  for (Message& message : messages) {
    if (std::holds_alternative<InstallSnapshot>(message.payload)) {
      // The files travel first; the receiver steps its core with this
      // message only after verifying them (docs/design.md "The runtime").
      outputs_.snapshot(SendSnapshotJob{std::move(message)});
    } else {
      outgoing_.push_back(std::move(message));
    }
  }
  if (!outgoing_.empty()) outputs_.send(outgoing_);
}

void RaftLoop::HandOver(const Ready& ready) {
  if (ready.soft_state) {
    const SoftState& soft = *ready.soft_state;
    if (soft.role == Role::kCandidate) {
      counters_.elections.fetch_add(1, std::memory_order_relaxed);
    }
    if (soft.role == Role::kLeader) {
      spdlog::info("node {} became leader at term {}", node_.id().value(),
                   soft.term.value());
    } else if (soft.role == Role::kCandidate) {
      spdlog::info("node {} started an election at term {}", node_.id().value(),
                   soft.term.value());
    } else if (soft.leader != kNoNode && soft.role == Role::kFollower) {
      spdlog::info("node {} follows leader {} at term {}", node_.id().value(),
                   soft.leader.value(), soft.term.value());
    }
    if (soft.leader != last_leader_) {
      last_leader_ = soft.leader;
      counters_.leader_changes.fetch_add(1, std::memory_order_relaxed);
      outputs_.apply(LeaderChangedTask{soft.leader, soft.term});
    }
  }
  HandOverTask task;
  task.snapshot = ready.snapshot;
  task.committed_entries = ready.committed_entries;
  task.read_states = ready.read_states;
  task.snapshot_wanted = ready.snapshot_wanted;
  task.configuration = node_.configuration();
  if (ready.snapshot) {
    spdlog::info("node {} installs the snapshot at index {} (term {})",
                 node_.id().value(), ready.snapshot->index.value(),
                 ready.snapshot->term.value());
    handed_over_ = std::max(handed_over_, ready.snapshot->index);
  }
  if (!ready.committed_entries.empty()) {
    handed_over_ = ready.committed_entries.back().index;
  }
  for (const ReadState& read_state : ready.read_states) {
    outstanding_reads_.erase(read_state.request_id);
  }
  if (task.snapshot || !task.committed_entries.empty() ||
      !task.read_states.empty() || task.snapshot_wanted) {
    outputs_.apply(std::move(task));
  }
}

absl::Status RaftLoop::HandleControl(ControlEvent& event) {
  return std::visit(
      Overloaded{
          [&](SnapshotPublishedEvent& published) -> absl::Status {
            absl::StatusOr<SnapshotMeta> recorded = log_.Snapshot();
            if (!recorded.ok() || recorded->index < published.meta.index) {
              // Recorded so the leader can send it (LogStore::SetSnapshot);
              // a capture is taken at the applied point, which the log
              // holds unless it was compacted past it meanwhile.
              if (absl::Status status = log_.SetSnapshot(published.meta);
                  !status.ok()) {
                spdlog::warn("node {} could not record snapshot {}: {}",
                             node_.id().value(), published.meta.index.value(),
                             status.ToString());
                return absl::OkStatus();
              }
            }
            return Compact(published.meta.index);
          },
          [&](CompactEvent& compact) -> absl::Status {
            return Compact(compact.recovery_point);
          },
          [&](SnapshotReportEvent& report) -> absl::Status {
            node_.ReportSnapshot(report.peer, report.succeeded);
            return absl::OkStatus();
          },
          [&](UnreachableEvent& unreachable) -> absl::Status {
            node_.ReportUnreachable(unreachable.peer);
            return absl::OkStatus();
          },
          [&](TransferEvent& transfer) -> absl::Status {
            absl::Status status = node_.TransferLeadership(transfer.to);
            if (status.ok()) {
              spdlog::info("node {} transfers leadership to node {}",
                           node_.id().value(), transfer.to.value());
            }
            if (transfer.done) transfer.done(std::move(status));
            return absl::OkStatus();
          },
      },
      event);
}

absl::Status RaftLoop::Compact(LogIndex recovery_point) {
  // Never past the recovery point minus K (docs/design.md "Snapshots and
  // compaction"); ReplicaState enforces it.
  absl::StatusOr<LogIndex> compacted =
      replica_.CompactLogBehind(log_, recovery_point);
  if (!compacted.ok()) return compacted.status();
  outputs_.snapshot(RetireSnapshotsJob{*compacted});
  return absl::OkStatus();
}

absl::Status RaftLoop::CheckApplyLag() const {
  const LogIndex applied = outputs_.applied_index();
  const LogIndex commit = node_.commit_index();
  if (commit > applied && Distance(applied, commit) > options_.max_apply_lag) {
    return absl::ResourceExhaustedError(
        absl::StrCat("too many requests: ", Distance(applied, commit),
                     " committed entries are waiting to be applied"));
  }
  return absl::OkStatus();
}

void RaftLoop::Refuse(std::vector<ProposalInput>& proposals,
                      absl::Status status) {
  outputs_.apply(CompleteTask{Requests(proposals), std::move(status)});
}

void RaftLoop::Propose(std::vector<ProposalInput>& proposals) {
  if (node_.role() != Role::kLeader) {
    const NodeId leader = node_.leader_id();
    if (leader == kNoNode || leader == node_.id()) {
      Refuse(proposals,
             absl::UnavailableError(absl::StrCat(
                 "node ", node_.id().value(), " knows no leader at term ",
                 node_.term().value(), "; the proposal was not appended")));
      return;
    }
    // Forwarded with a server-level message; the leader answers with where
    // it appended them (docs/design.md "The runtime").
    ForwardRequest request{.request_id = ++next_forward_id_};
    request.commands.reserve(proposals.size());
    for (ProposalInput& proposal : proposals) {
      request.commands.push_back(std::move(proposal.command));
    }
    counters_.proposals_forwarded.fetch_add(proposals.size(),
                                            std::memory_order_relaxed);
    outputs_.apply(
        TrackForwardTask{request.request_id, Requests(proposals), leader});
    outputs_.send_server_message(
        ServerMessage{node_.id(), leader, std::move(request)});
    return;
  }
  if (absl::Status lag = CheckApplyLag(); !lag.ok()) {
    Refuse(proposals, std::move(lag));
    return;
  }
  std::vector<EntryData> commands;
  commands.reserve(proposals.size());
  for (ProposalInput& proposal : proposals) {
    commands.push_back(std::move(proposal.command));
  }
  absl::StatusOr<EntryId> last = node_.ProposeBatch(std::move(commands));
  if (!last.ok()) {
    // Not appended: no longer leader, a transfer, or the uncommitted-bytes
    // limit. Known not committed, safe to retry.
    Refuse(proposals, absl::UnavailableError(last.status().message()));
    return;
  }
  const EntryId first{last->term, last->index - (proposals.size() - 1)};
  outputs_.apply(TrackProposalsTask{first, Requests(proposals)});
}

void RaftLoop::HandleServerMessage(ServerMessage& message) {
  if (auto* request = std::get_if<ForwardRequest>(&message.payload)) {
    ForwardResponse response{.request_id = request->request_id};
    absl::Status refused;
    if (node_.role() != Role::kLeader) {
      refused = absl::UnavailableError(absl::StrCat(
          "node ", node_.id().value(), " is not the leader (leader: ",
          node_.leader_id().value(), ", term ", node_.term().value(), ")"));
    } else if (request->commands.empty()) {
      refused = absl::InvalidArgumentError("forwarded no commands");
    } else {
      refused = CheckApplyLag();
    }
    if (refused.ok()) {
      absl::StatusOr<EntryId> last =
          node_.ProposeBatch(std::move(request->commands));
      if (last.ok()) {
        response.last = *last;
      } else {
        refused = absl::UnavailableError(last.status().message());
      }
    }
    response.code = refused.code();
    response.error = std::string(refused.message());
    outputs_.send_server_message(
        ServerMessage{node_.id(), message.from, std::move(response)});
    return;
  }
  auto& response = std::get<ForwardResponse>(message.payload);
  outputs_.apply(ForwardAnsweredTask{std::move(response)});
}

void RaftLoop::Read(std::vector<ReadInput>& reads) {
  // One ReadIndex request serves every read queued this turn: they all began
  // before it, so its read index covers each (thesis §6.4).
  const uint64_t read_id = ++next_read_id_;
  if (absl::Status status = node_.ReadIndex(read_id); !status.ok()) {
    std::vector<PendingRequest> requests;
    requests.reserve(reads.size());
    for (ReadInput& read : reads) requests.push_back(std::move(read.request));
    outputs_.apply(CompleteTask{std::move(requests),
                                absl::UnavailableError(status.message()),
                                /*reads=*/true});
    return;
  }
  absl::Time deadline = absl::InfinitePast();
  for (const ReadInput& read : reads) {
    deadline = std::max(deadline, read.request.deadline);
  }
  outstanding_reads_.emplace(
      read_id,
      OutstandingRead{.deadline = deadline,
                      .term = node_.term(),
                      .sent_as_leader = node_.role() == Role::kLeader});
  outputs_.apply(TrackReadsTask{read_id, std::move(reads)});
}

void RaftLoop::RetryReads(uint64_t ticks) {
  for (auto it = outstanding_reads_.begin(); it != outstanding_reads_.end();) {
    OutstandingRead& read = it->second;
    if (read.deadline <= now_) {
      it = outstanding_reads_.erase(it);  // the apply loop failed its reads
      continue;
    }
    read.ticks_since_sent += ticks;
    const bool queued_here = read.sent_as_leader &&
                             node_.role() == Role::kLeader &&
                             node_.term() == read.term;
    if (read.ticks_since_sent >= options_.read_retry_ticks && !queued_here) {
      read.ticks_since_sent = 0;
      // Unavailable (no leader known) is not final: the next retry may
      // find one before the deadline.
      if (node_.ReadIndex(it->first).ok()) {
        read.term = node_.term();
        read.sent_as_leader = node_.role() == Role::kLeader;
        counters_.read_index_retries.fetch_add(1, std::memory_order_relaxed);
      }
    }
    ++it;
  }
}

}  // namespace driftwood::raft
