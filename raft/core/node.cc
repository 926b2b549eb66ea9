#include "raft/core/node.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "raft/core/quorum.h"

namespace driftwood::raft {

using internal::JointMatchedIndex;
using internal::JointQuorumActive;
using internal::JointVoteResult;
using internal::Progress;
using internal::VoteResult;

namespace {

// An overload set of lambdas, for exhaustive std::visit.
template <typename... Handlers>
struct Overloaded : Handlers... {
  using Handlers::operator()...;
};
template <typename... Handlers>
Overloaded(Handlers...) -> Overloaded<Handlers...>;

template <typename T>
const T* As(const Message& message) {
  return std::get_if<T>(&message.payload);
}

}  // namespace

absl::Status Config::Validate() const {
  if (id == kNoNode) return absl::InvalidArgumentError("Config.id must be set");
  if (heartbeat_ticks == 0) {
    return absl::InvalidArgumentError("Config.heartbeat_ticks must be >= 1");
  }
  if (election_ticks <= heartbeat_ticks) {
    return absl::InvalidArgumentError(
        "Config.election_ticks must be greater than heartbeat_ticks");
  }
  if (max_inflight_messages == 0) {
    return absl::InvalidArgumentError(
        "Config.max_inflight_messages must be >= 1");
  }
  if (max_message_bytes == 0 || max_committed_bytes_per_ready == 0) {
    return absl::InvalidArgumentError(
        "Config.max_message_bytes and max_committed_bytes_per_ready must be "
        ">= 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Node>> Node::Create(const Config& config,
                                                   const LogReader& log) {
  if (absl::Status status = config.Validate(); !status.ok()) return status;
  absl::StatusOr<InitialState> state = log.LoadInitialState();
  if (!state.ok()) return state.status();
  if (std::string problem = state->configuration.Validate(); !problem.empty()) {
    return absl::DataLossError(
        absl::StrCat("stored configuration is invalid: ", problem));
  }
  if (state->hard_state.commit > log.LastIndex()) {
    return absl::DataLossError(absl::StrFormat(
        "stored commit index %d is past the last log index %d",
        state->hard_state.commit.value(), log.LastIndex().value()));
  }
  // The state machine applies only committed entries, so its applied index is
  // committed even when the (unsynced) commit index on disk is older:
  // commit = max(stored commit, applied) (docs/design.md "Recovery"). An
  // applied index past the log cannot be reconciled.
  if (config.applied > log.LastIndex()) {
    return absl::DataLossError(absl::StrFormat(
        "the state machine applied through %d but the log ends at %d",
        config.applied.value(), log.LastIndex().value()));
  }
  // Entries between the applied point and the log's first entry were
  // compacted away: the state machine can never catch up from this log.
  if (config.applied < log.FirstIndex().prev()) {
    return absl::DataLossError(absl::StrFormat(
        "the state machine applied through %d but the log starts at %d: "
        "entries %d to %d are gone",
        config.applied.value(), log.FirstIndex().value(),
        config.applied.value() + 1, log.FirstIndex().value() - 1));
  }
  InitialState recovered = *std::move(state);
  recovered.hard_state.commit =
      std::max(recovered.hard_state.commit, config.applied);
  return std::unique_ptr<Node>(new Node(config, log, recovered));
}

Node::Node(const Config& config, const LogReader& log,
           const InitialState& state)
    : config_(config),
      reader_(log),
      log_(log, state.hard_state.commit, config.applied),
      configuration_(state.configuration),
      term_(state.hard_state.term),
      voted_for_(state.hard_state.voted_for),
      rng_(config.seed ^ (config.id.value() * 0x9e3779b97f4a7c15ULL)),
      last_hard_state_(state.hard_state) {
  BecomeFollower(term_, kNoNode);
  last_soft_state_ = CurrentSoftState();
}

// ---------------------------------------------------------------------------
// Role transitions.

void Node::ResetElectionTimer() {
  election_elapsed_ = 0;
  // Paper §5.2: randomized election timeouts in [T, 2T) make split votes rare.
  // The raw PRNG output is mapped by hand so every standard library agrees.
  randomized_election_timeout_ =
      config_.election_ticks + rng_() % config_.election_ticks;
}

void Node::ResetForTerm(Term term) {
  if (term_ != term) {
    term_ = term;
    voted_for_ = kNoNode;
  }
  leader_ = kNoNode;
  heartbeat_elapsed_ = 0;
  ResetElectionTimer();
  votes_.clear();
  progress_.clear();
  pending_broadcast_ = false;
  // Reads in flight are dropped: only a leader of the current term may
  // confirm them (their callers time out and retry).
  reads_waiting_.clear();
  reads_confirming_.clear();
  lead_transferee_ = kNoNode;
  transfer_elapsed_ = 0;
  uncommitted_bytes_ = 0;
  uncommitted_batches_.clear();
}

void Node::BecomeFollower(Term term, NodeId leader) {
  ResetForTerm(term);
  role_ = Role::kFollower;
  leader_ = leader;
}

void Node::BecomePreCandidate() {
  RAFT_CHECK(role_ != Role::kLeader, "a leader cannot become pre-candidate");
  // Thesis §9.6: a pre-candidate changes neither term nor vote. It forgets the
  // leader so that it does not itself refuse pre-votes for stickiness
  // (docs/design.md pitfall 6, etcd #8334).
  votes_.clear();
  leader_ = kNoNode;
  role_ = Role::kPreCandidate;
}

void Node::BecomeCandidate() {
  RAFT_CHECK(role_ != Role::kLeader, "a leader cannot become candidate");
  ResetForTerm(term_.next());
  // Paper §5.2: increment the term and vote for self.
  voted_for_ = config_.id;
  role_ = Role::kCandidate;
}

void Node::BecomeLeader() {
  RAFT_CHECK(role_ == Role::kCandidate, "only a candidate becomes leader");
  role_ = Role::kLeader;
  leader_ = config_.id;
  // The leader's first CheckQuorum round (thesis §6.2) starts now: the ticks
  // spent campaigning must not count against it, or a leader elected late in
  // its candidate timeout steps down before its followers could answer.
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  progress_.clear();
  for (NodeId node : configuration_.AllNodes()) {
    Progress progress(log_.last_index().next(), config_.max_inflight_messages,
                      config_.max_inflight_bytes);
    if (node == config_.id) {
      // The leader's own match is its durable last index (thesis §10.2.1):
      // entries still being written do not count toward commitment.
      progress.SetSelfMatch(log_.durable_last());
      progress.BecomeReplicate();
      progress.set_recent_active(true);
    }
    progress_.emplace(node, std::move(progress));
  }
  // Paper §5.4.2 / thesis §6.4: a new leader appends a no-op of its term;
  // entries of earlier terms commit only once an entry of this term does.
  log_.Append({Entry{term_, log_.last_index().next(), EntryType::kNoOp, ""}});
  BroadcastAppend();
}

void Node::Campaign() {
  if (role_ == Role::kLeader || !IsPromotable()) return;
  StartElection(config_.pre_vote, /*transfer=*/false);
}

void Node::StartElection(bool pre_vote, bool transfer) {
  if (pre_vote) {
    BecomePreCandidate();
  } else {
    BecomeCandidate();
  }
  const Term campaign_term = pre_vote ? term_.next() : term_;
  RecordVote(config_.id, true);
  if (role_ == Role::kLeader || role_ == Role::kFollower) return;
  if (pre_vote && role_ == Role::kCandidate) return;  // Won the pre-vote alone.
  for (NodeId peer : Peers()) {
    if (!configuration_.IsVoter(peer)) continue;
    Send(peer, campaign_term,
         RequestVote{log_.last_index(), log_.last_term(), pre_vote, transfer});
  }
}

void Node::RecordVote(NodeId voter, bool granted) {
  votes_.emplace(voter, granted);  // The first answer from a voter counts.
  switch (JointVoteResult(configuration_, votes_)) {
    case VoteResult::kPending:
      return;
    case VoteResult::kLost:
      BecomeFollower(term_, kNoNode);
      return;
    case VoteResult::kWon:
      if (role_ == Role::kPreCandidate) {
        StartElection(/*pre_vote=*/false, /*transfer=*/false);
      } else {
        BecomeLeader();
      }
      return;
  }
}

bool Node::IsPromotable() const { return configuration_.IsVoter(config_.id); }

std::vector<NodeId> Node::Peers() const {
  std::vector<NodeId> peers = configuration_.AllNodes();
  peers.erase(std::remove(peers.begin(), peers.end(), config_.id), peers.end());
  return peers;
}

// ---------------------------------------------------------------------------
// Inputs.

void Node::Tick() {
  if (role_ == Role::kLeader) {
    TickLeader();
    return;
  }
  ++election_elapsed_;
  if (election_elapsed_ >= randomized_election_timeout_ && IsPromotable()) {
    ResetElectionTimer();
    StartElection(config_.pre_vote, /*transfer=*/false);
  }
}

void Node::TickLeader() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (lead_transferee_ != kNoNode &&
      ++transfer_elapsed_ >= config_.election_ticks) {
    // Thesis §3.10: a transfer that does not complete within an election
    // timeout is abandoned and the leader resumes accepting proposals.
    lead_transferee_ = kNoNode;
    transfer_elapsed_ = 0;
  }
  for (auto& [node, progress] : progress_) {
    progress.TickProbe();
    // docs/design.md pitfall 19: a snapshot that is never reported (the
    // receiver crashed, the report was lost) must not park the follower
    // forever.
    if (progress.state() == ProgressState::kSnapshot &&
        progress.TickSnapshot() >= config_.snapshot_timeout_ticks) {
      progress.SnapshotDone(/*succeeded=*/false);
    }
  }
  if (election_elapsed_ >= config_.election_ticks) {
    election_elapsed_ = 0;
    if (config_.check_quorum) {
      // Thesis §6.2 (CheckQuorum): a leader that has not heard from a quorum
      // within an election timeout steps down, so a partitioned leader stops
      // serving and stickiness cannot keep a dead leader in place.
      const bool quorum_active =
          JointQuorumActive(configuration_, [this](NodeId node) {
            auto it = progress_.find(node);
            return it != progress_.end() && it->second.recent_active();
          });
      for (auto& [node, progress] : progress_) {
        progress.set_recent_active(node == config_.id);
      }
      if (!quorum_active) {
        BecomeFollower(term_, kNoNode);
        return;
      }
    }
  }
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    BroadcastHeartbeat();
  }
}

absl::StatusOr<EntryId> Node::Propose(std::string command) {
  std::vector<EntryData> commands;
  commands.emplace_back(std::move(command));
  return ProposeBatch(std::move(commands));
}

absl::StatusOr<EntryId> Node::ProposeBatch(std::vector<EntryData> commands) {
  RAFT_CHECK(!commands.empty(), "ProposeBatch needs at least one command");
  if (role_ != Role::kLeader) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", config_.id.value(), " is not the leader (leader ",
                     leader_.value(), ")"));
  }
  if (lead_transferee_ != kNoNode) {
    return absl::UnavailableError(absl::StrCat("leadership transfer to node ",
                                               lead_transferee_.value(),
                                               " in progress"));
  }
  std::vector<Entry> entries;
  entries.reserve(commands.size());
  LogIndex index = log_.last_index();
  uint64_t bytes = 0;
  for (EntryData& command : commands) {
    index = index.next();
    entries.push_back(
        Entry{term_, index, EntryType::kNormal, std::move(command)});
    bytes += entries.back().ByteSize();
  }
  // An empty backlog always admits one entry, however large, so that one big
  // entry cannot wedge the group (docs/design.md "The driver contract"); a
  // batch of several is held to the limit like any other proposal.
  const bool lone_entry = uncommitted_bytes_ == 0 && entries.size() == 1;
  if (config_.max_uncommitted_bytes != 0 && !lone_entry &&
      uncommitted_bytes_ + bytes > config_.max_uncommitted_bytes) {
    return absl::UnavailableError(
        absl::StrCat("too many uncommitted bytes (", uncommitted_bytes_, " + ",
                     bytes, " > ", config_.max_uncommitted_bytes, ")"));
  }
  uncommitted_bytes_ += bytes;
  uncommitted_batches_.emplace_back(index, bytes);
  log_.Append(std::move(entries));
  // Replication is deferred to TakeReady so that every proposal drained
  // before a Ready travels in one AppendEntries per follower.
  pending_broadcast_ = true;
  return EntryId{term_, index};
}

absl::Status Node::ReadIndex(uint64_t request_id) {
  if (role_ == Role::kLeader) {
    reads_waiting_.push_back({request_id, config_.id, {}, 0});
    return absl::OkStatus();
  }
  if (leader_ == kNoNode) {
    return absl::UnavailableError(absl::StrCat(
        "node ", config_.id.value(), " knows no leader to confirm the read"));
  }
  Send(leader_, term_, ReadIndexRequest{request_id});
  return absl::OkStatus();
}

absl::Status Node::TransferLeadership(NodeId to) {
  if (role_ != Role::kLeader) {
    return absl::FailedPreconditionError(
        absl::StrCat("node ", config_.id.value(), " is not the leader"));
  }
  if (to == config_.id) {
    // Thesis §3.10: the leader keeps its office; a pending transfer is
    // cancelled so proposals are accepted again at once.
    lead_transferee_ = kNoNode;
    transfer_elapsed_ = 0;
    return absl::OkStatus();
  }
  if (!configuration_.IsVoter(to)) {
    return absl::InvalidArgumentError(
        absl::StrCat("node ", to.value(), " is not a voter"));
  }
  if (lead_transferee_ == to) return absl::OkStatus();
  lead_transferee_ = to;
  transfer_elapsed_ = 0;
  // Bring the target up to date first; TimeoutNow follows once it has
  // acknowledged our last index.
  MaybeSendTimeoutNow(to);
  SendAppend(to, /*send_if_empty=*/false);
  return absl::OkStatus();
}

void Node::ReportUnreachable(NodeId peer) {
  if (role_ != Role::kLeader) return;
  auto it = progress_.find(peer);
  if (it == progress_.end()) return;
  if (it->second.state() == ProgressState::kReplicate) it->second.BecomeProbe();
}

void Node::ReportSnapshot(NodeId peer, bool succeeded) {
  if (role_ != Role::kLeader) return;
  auto it = progress_.find(peer);
  if (it == progress_.end()) return;
  if (it->second.state() != ProgressState::kSnapshot) return;
  it->second.SnapshotDone(succeeded);
}

absl::Status Node::Step(const Message& message) {
  if (message.to != config_.id) {
    return absl::InvalidArgumentError(
        absl::StrCat("message for node ", message.to.value(), " delivered to ",
                     config_.id.value()));
  }
  if (message.from == kNoNode || message.from == config_.id) {
    return absl::InvalidArgumentError(
        absl::StrCat("message with invalid sender ", message.from.value()));
  }
  bool handled = false;
  if (absl::Status status = StepTermRules(message, handled); !status.ok()) {
    return status;
  }
  if (handled) return absl::OkStatus();

  // One handler per message type: a payload type without one does not
  // compile.
  std::visit(
      Overloaded{
          [&](const RequestVote& p) { HandleRequestVote(message, p); },
          [&](const RequestVoteResponse& p) {
            HandleRequestVoteResponse(message, p);
          },
          [&](const AppendEntries& p) { HandleAppendEntries(message, p); },
          [&](const AppendEntriesResponse& p) {
            HandleAppendEntriesResponse(message, p);
          },
          [&](const Heartbeat& p) { HandleHeartbeat(message, p); },
          [&](const HeartbeatResponse& p) {
            HandleHeartbeatResponse(message, p);
          },
          [&](const InstallSnapshot& p) { HandleInstallSnapshot(message, p); },
          [&](const TimeoutNow&) { HandleTimeoutNow(message); },
          [&](const ReadIndexRequest& p) {
            HandleReadIndexRequest(message, p);
          },
          [&](const ReadIndexResponse& p) {
            HandleReadIndexResponse(message, p);
          },
      },
      message.payload);
  return absl::OkStatus();
}

// Applies the term rules common to every role (paper Figure 2, "All Servers":
// a higher term makes us a follower in it; stale terms are ignored), with the
// exceptions PreVote and stickiness require. Sets `handled` when the message
// needs no further processing.
absl::Status Node::StepTermRules(const Message& message, bool& handled) {
  const auto* vote_request = As<RequestVote>(message);
  if (message.term > term_) {
    if (vote_request != nullptr) {
      // Thesis §4.2.3 (leader stickiness), only with CheckQuorum: ignore a vote
      // request while a leader was heard within the minimum election timeout,
      // and do not adopt its term. A transfer campaign (thesis §3.10) is let
      // through.
      const bool in_lease = config_.check_quorum && leader_ != kNoNode &&
                            election_elapsed_ < config_.election_ticks;
      if (in_lease && !vote_request->transfer) {
        handled = true;
        return absl::OkStatus();
      }
      // Thesis §9.6: a pre-vote request changes no state of the receiver.
      if (vote_request->pre_vote) return absl::OkStatus();
    }
    if (const auto* vote_response = As<RequestVoteResponse>(message);
        vote_response != nullptr && vote_response->pre_vote &&
        vote_response->granted) {
      // A granted pre-vote carries the term we would campaign in, not a term
      // anyone is in yet.
      return absl::OkStatus();
    }
    const bool from_leader = As<AppendEntries>(message) != nullptr ||
                             As<Heartbeat>(message) != nullptr ||
                             As<InstallSnapshot>(message) != nullptr;
    const uint64_t elapsed = election_elapsed_;
    const uint64_t timeout = randomized_election_timeout_;
    BecomeFollower(message.term, from_leader ? message.from : kNoNode);
    if (vote_request != nullptr) {
      // Paper Figure 2 (Followers): only AppendEntries from the current leader
      // or granting a vote restarts the election timer. A vote request we
      // reject must not, so a node with the most up-to-date log keeps its
      // place in line instead of being held back by candidates that cannot
      // win (HandleRequestVote restarts the timer when it grants).
      election_elapsed_ = elapsed;
      randomized_election_timeout_ = timeout;
    }
    return absl::OkStatus();
  }
  if (message.term < term_) {
    handled = true;
    if ((config_.check_quorum || config_.pre_vote) &&
        (As<AppendEntries>(message) != nullptr ||
         As<Heartbeat>(message) != nullptr ||
         As<InstallSnapshot>(message) != nullptr)) {
      // A leader of an older term. With stickiness or PreVote, our higher term
      // may never reach it through a vote, so tell it directly; it steps down.
      Send(message.from, term_, HeartbeatResponse{});
    } else if (vote_request != nullptr && vote_request->pre_vote) {
      // Tell the pre-candidate our term so it can catch up.
      Send(message.from, term_, RequestVoteResponse{false, true});
    }
    // Any other message from an older term is stale and dropped.
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Elections.

void Node::HandleRequestVote(const Message& message,
                             const RequestVote& request) {
  // Paper Figure 2, RequestVote receiver: grant if votedFor is null or the
  // candidate (one vote per term, §5.2) and the candidate's log is at least as
  // up-to-date as ours (§5.4.1). Thesis §9.6: a pre-vote applies the same log
  // check; it may be granted for a future term without changing our vote.
  const bool can_vote = voted_for_ == message.from ||
                        (voted_for_ == kNoNode && leader_ == kNoNode) ||
                        (request.pre_vote && message.term > term_);
  const bool up_to_date =
      log_.IsUpToDate(request.last_log_index, request.last_log_term);
  if (can_vote && up_to_date) {
    // The grant carries the request's term (for a pre-vote, a future term).
    Send(message.from, message.term,
         RequestVoteResponse{true, request.pre_vote});
    if (!request.pre_vote) {
      // The vote is durable before the grant leaves: the grant is in
      // messages_after_persist of the Ready that persists voted_for.
      voted_for_ = message.from;
      election_elapsed_ = 0;
    }
  } else {
    Send(message.from, term_, RequestVoteResponse{false, request.pre_vote});
  }
}

void Node::HandleRequestVoteResponse(const Message& message,
                                     const RequestVoteResponse& response) {
  const bool expecting = (role_ == Role::kPreCandidate && response.pre_vote) ||
                         (role_ == Role::kCandidate && !response.pre_vote);
  if (!expecting) return;
  if (!configuration_.IsVoter(message.from)) return;
  RecordVote(message.from, response.granted);
}

// ---------------------------------------------------------------------------
// Replication, follower side.

void Node::HeardFromLeader(NodeId leader) {
  // Paper §5.2 / Election Safety: at most one leader per term. A second one is
  // a broken invariant, not something to tolerate (docs/design.md pitfall 18).
  RAFT_CHECK(role_ != Role::kLeader,
             absl::StrCat("two leaders in term ", term_.value(), ": ",
                          config_.id.value(), " and ", leader.value()));
  if (role_ != Role::kFollower) BecomeFollower(term_, leader);
  leader_ = leader;
  election_elapsed_ = 0;
}

void Node::HandleAppendEntries(const Message& message,
                               const AppendEntries& request) {
  HeardFromLeader(message.from);

  if (request.prev_log_index < log_.commit_index()) {
    // Everything through our commit index matches the leader (Log Matching);
    // this message is stale. Report what we know instead.
    Send(message.from, term_,
         AppendEntriesResponse{true, log_.commit_index(), {}, {}});
    return;
  }
  // Paper Figure 2, AppendEntries receiver step 2: reply false if the log does
  // not contain an entry at prevLogIndex whose term matches prevLogTerm.
  if (!log_.Matches(request.prev_log_index, request.prev_log_term)) {
    const LogIndex hint_index = log_.FindConflictByTerm(
        std::min(request.prev_log_index, log_.last_index()),
        request.prev_log_term);
    Send(message.from, term_,
         AppendEntriesResponse{false, request.prev_log_index, hint_index,
                               log_.MaybeTermAt(hint_index).value_or(Term(0))});
    return;
  }
  // The index through which our log now provably equals the leader's. Entries
  // past it (if any) may be stale and must not be acknowledged or committed.
  const LogIndex last_new = request.prev_log_index + request.entries.size();
  if (!request.entries.empty()) log_.AppendAfterMatch(request.entries);
  // Paper Figure 2, step 5: commitIndex = min(leaderCommit, index of last new
  // entry).
  log_.CommitTo(std::min(request.leader_commit, last_new));
  Send(message.from, term_, AppendEntriesResponse{true, last_new, {}, {}});
}

void Node::HandleHeartbeat(const Message& message, const Heartbeat& heartbeat) {
  HeardFromLeader(message.from);
  // The leader sends min(match, commit), an index our log is known to share
  // with it; CommitTo checks that it is within our log.
  log_.CommitTo(heartbeat.leader_commit);
  Send(message.from, term_, HeartbeatResponse{heartbeat.read_round});
}

void Node::HandleInstallSnapshot(const Message& message,
                                 const InstallSnapshot& request) {
  HeardFromLeader(message.from);
  const SnapshotMeta& snapshot = request.snapshot;
  // Paper §7, Figure 13 as docs/design.md "The driver contract" fixes it. A
  // snapshot at or below our commit index holds nothing new; installing it
  // would move the state machine backwards. Report our commit index instead.
  if (snapshot.index <= log_.commit_index()) {
    Send(message.from, term_,
         AppendEntriesResponse{true, log_.commit_index(), {}, {}});
    return;
  }
  // Figure 13 step 6: if our log holds the snapshot's last entry, keep the
  // entries after it; everything through it is committed.
  // A configuration is persisted only with a snapshot, so when the
  // snapshot's configuration (the one as of its index, newer than ours)
  // differs, step 7 applies instead: install it, dropping the log.
  if (log_.Matches(snapshot.index, snapshot.term) &&
      snapshot.configuration == configuration_) {
    log_.CommitTo(snapshot.index);
    Send(message.from, term_,
         AppendEntriesResponse{true, snapshot.index, {}, {}});
    return;
  }
  // Figure 13 step 7: otherwise discard the whole log and restore from the
  // snapshot, with the configuration as of its index (docs/design.md
  // pitfall 7).
  log_.RestoreSnapshot(snapshot);
  configuration_ = snapshot.configuration;
  Send(message.from, term_,
       AppendEntriesResponse{true, snapshot.index, {}, {}});
}

void Node::HandleTimeoutNow(const Message& message) {
  if (role_ != Role::kFollower || message.from != leader_) return;
  if (!IsPromotable()) return;
  // Thesis §3.10: the transfer target campaigns at once, without PreVote; its
  // RequestVote is marked so that stickiness lets it through. Voters still
  // apply the log up-to-date check (§5.4.1).
  StartElection(/*pre_vote=*/false, /*transfer=*/true);
}

void Node::HandleReadIndexRequest(const Message& message,
                                  const ReadIndexRequest& request) {
  if (role_ != Role::kLeader) return;  // The follower's request times out.
  reads_waiting_.push_back({request.request_id, message.from, {}, 0});
}

void Node::HandleReadIndexResponse(const Message& message,
                                   const ReadIndexResponse& response) {
  if (message.from != leader_) return;
  read_states_.push_back({response.request_id, response.index});
}

// ---------------------------------------------------------------------------
// Replication, leader side.

void Node::HandleAppendEntriesResponse(const Message& message,
                                       const AppendEntriesResponse& response) {
  if (role_ != Role::kLeader) return;
  auto it = progress_.find(message.from);
  if (it == progress_.end()) return;
  Progress& progress = it->second;
  progress.set_recent_active(true);

  if (!response.success) {
    // Fast backtracking: the follower may match up to its hint; on our side the
    // logs can agree at most up to the last index whose term is <= hint_term.
    LogIndex match_hint = response.hint_index;
    if (response.hint_term > Term(0)) {
      match_hint =
          log_.FindConflictByTerm(response.hint_index, response.hint_term);
    }
    if (progress.MaybeDecreaseTo(response.index, match_hint)) {
      if (progress.state() == ProgressState::kReplicate) progress.BecomeProbe();
      SendAppend(message.from, /*send_if_empty=*/true);
    }
    return;
  }

  const bool updated = progress.MaybeUpdate(response.index);
  // A probe answered at the follower's known match (an empty probe of a
  // caught-up follower) confirms where its log matches just as well.
  const bool probe_confirmed = progress.state() == ProgressState::kProbe &&
                               response.index == progress.match();
  if (updated || probe_confirmed) {
    // A follower in the snapshot state is done with it once its match
    // reaches the snapshot, or reaches into the leader's log (it caught up
    // some other way, e.g. an older snapshot or a late AppendEntries): the
    // entries it needs can be sent again (pitfall 19).
    if (progress.state() == ProgressState::kProbe ||
        (progress.state() == ProgressState::kSnapshot &&
         (progress.match() >= progress.pending_snapshot() ||
          progress.match().next() >= log_.first_index()))) {
      progress.BecomeReplicate();
    }
    // The new commit index reaches the followers in one AppendEntries each,
    // sent when the next Ready is taken, however many acknowledgements
    // advanced it meanwhile.
    if (MaybeCommit()) pending_broadcast_ = true;
  }
  while (SendAppend(message.from, /*send_if_empty=*/false)) {
  }
  // The last acknowledgement of a window may leave the follower without the
  // commit index: the next Ready sends it (see CommitOnlyAppendUseful).
  if (CommitOnlyAppendUseful(progress)) pending_broadcast_ = true;
  if (message.from == lead_transferee_) MaybeSendTimeoutNow(message.from);
}

void Node::HandleHeartbeatResponse(const Message& message,
                                   const HeartbeatResponse& response) {
  if (role_ != Role::kLeader) return;
  auto it = progress_.find(message.from);
  if (it == progress_.end()) return;
  it->second.set_recent_active(true);
  // At most one probe resend per heartbeat interval, however many heartbeat
  // responses arrive in it.
  it->second.OnHeartbeatResponse(config_.heartbeat_ticks);
  if (response.read_round != 0) {
    it->second.AckReadRound(response.read_round);
    ConfirmReads();
  }
  // A follower behind, or in probe (even a caught-up one, so that its answer
  // returns it to replicate without waiting for the next proposal), is sent
  // an AppendEntries; Paused() keeps it to one probe per interval.
  if (it->second.match() < log_.last_index() ||
      it->second.state() == ProgressState::kProbe) {
    SendAppend(message.from, /*send_if_empty=*/true);
  }
}

bool Node::SendAppend(NodeId to, bool send_if_empty) {
  Progress& progress = progress_.at(to);
  if (progress.Paused()) return false;
  const LogIndex prev_log_index = progress.next().prev();
  std::optional<Term> prev_log_term = log_.MaybeTermAt(prev_log_index);
  absl::StatusOr<std::vector<Entry>> entries =
      log_.EntriesFrom(progress.next(), config_.max_message_bytes);
  if (!prev_log_term.has_value() || !entries.ok()) {
    RAFT_CHECK(
        entries.ok() || absl::IsOutOfRange(entries.status()),
        absl::StrCat("reading the log failed: ", entries.status().ToString()));
    // The entries the follower needs were compacted (paper §7).
    return SendSnapshot(to, progress);
  }
  if (entries->empty() && !send_if_empty) return false;
  uint64_t bytes = 0;
  for (const Entry& entry : *entries) bytes += entry.ByteSize();
  const LogIndex last = prev_log_index + entries->size();
  const bool had_entries = !entries->empty();
  Send(to, term_,
       AppendEntries{prev_log_index, *prev_log_term, *std::move(entries),
                     log_.commit_index()});
  progress.SentEntries(last, bytes, had_entries);
  progress.SentCommit(log_.commit_index());
  return true;
}

bool Node::SendSnapshot(NodeId to, Progress& progress) {
  // A follower that has not answered recently may be down; snapshots are
  // expensive, so wait until it shows signs of life.
  if (!progress.recent_active()) return false;
  absl::StatusOr<SnapshotMeta> snapshot = reader_.Snapshot();
  RAFT_CHECK(snapshot.ok() || absl::IsUnavailable(snapshot.status()) ||
                 absl::IsNotFound(snapshot.status()),
             absl::StrCat("cannot read the snapshot to send: ",
                          snapshot.status().ToString()));
  // A snapshot older than the compaction point cannot bring the follower up
  // to the log (the entries after it are gone: sending it would loop), so it
  // counts as missing. The driver is asked for a newer one
  // (Ready::snapshot_wanted) and the next heartbeat response retries. A
  // persistent state machine produces snapshots only on this demand.
  if (!snapshot.ok() && absl::IsUnavailable(snapshot.status())) {
    // One is being produced: the next heartbeat response retries; asking
    // again would start another.
    return false;
  }
  if (!snapshot.ok() || snapshot->index < log_.first_index().prev()) {
    snapshot_wanted_ = true;
    return false;
  }
  Send(to, term_, InstallSnapshot{*snapshot});
  progress.BecomeSnapshot(snapshot->index);
  return true;
}

void Node::MaybeSendTimeoutNow(NodeId to) {
  const Progress& progress = progress_.at(to);
  if (progress.match() == log_.last_index()) {
    Send(to, term_, TimeoutNow{});
  }
}

void Node::BroadcastAppend() {
  pending_broadcast_ = false;
  for (NodeId peer : Peers()) {
    const Progress& progress = progress_.at(peer);
    SendAppend(
        peer, /*send_if_empty=*/progress.state() != ProgressState::kReplicate ||
                  CommitOnlyAppendUseful(progress));
  }
}

bool Node::CommitOnlyAppendUseful(const Progress& progress) const {
  // A follower takes the commit index only up to the entries it was sent
  // with it, so one through next - 1 is all it can use. While entries are in
  // flight to it, their acknowledgement brings the leader back here and any
  // newer entries carry the commit index anyway: an AppendEntries with only
  // a commit index is sent to a replicating follower only once its window is
  // empty. (Heartbeats carry the commit index too, so a follower learns it
  // within a heartbeat interval whatever is lost.)
  return progress.state() == ProgressState::kReplicate &&
         progress.inflights().count() == 0 &&
         std::min(log_.commit_index(), progress.next().prev()) >
             progress.sent_commit();
}

void Node::BroadcastHeartbeat() {
  for (NodeId peer : Peers()) {
    // A heartbeat is not checked against the follower's log, so it may carry
    // only an index the follower is known to hold (docs/design.md "The driver
    // contract").
    const LogIndex commit =
        std::min(progress_.at(peer).match(), log_.commit_index());
    Send(peer, term_, Heartbeat{commit, read_round_});
  }
}

bool Node::MaybeCommit() {
  const LogIndex matched =
      JointMatchedIndex(configuration_, [this](NodeId node) {
        auto it = progress_.find(node);
        return it == progress_.end()
                   ? std::nullopt
                   : std::optional<LogIndex>(it->second.match());
      });
  if (matched <= log_.commit_index()) return false;
  // Paper §5.4.2 (Figure 8): only an entry of the leader's current term is
  // committed by counting replicas; earlier entries commit with it.
  if (log_.MaybeTermAt(matched) != term_) return false;
  log_.CommitTo(matched);
  while (!uncommitted_batches_.empty() &&
         uncommitted_batches_.front().first <= matched) {
    uncommitted_bytes_ -= uncommitted_batches_.front().second;
    uncommitted_batches_.erase(uncommitted_batches_.begin());
  }
  return true;
}

bool Node::CommittedEntryInCurrentTerm() const {
  return log_.MaybeTermAt(log_.commit_index()) == term_;
}

bool Node::ReadRoundDue() const {
  // One round in flight at a time: reads that arrive meanwhile share the next
  // round, so a read-heavy load costs one heartbeat broadcast per round trip,
  // not one per read. Periodic heartbeats carry the newest round id, so a
  // round whose own heartbeats were lost is still confirmed.
  return role_ == Role::kLeader && !reads_waiting_.empty() &&
         reads_confirming_.empty() && CommittedEntryInCurrentTerm();
}

void Node::StartReadRound() {
  // Thesis §6.4 step 1: the read index is the commit index, usable only once
  // an entry of this term committed (until then a new leader's commit index
  // may lag the previous leader's; docs/design.md pitfall 3).
  const LogIndex read_index = log_.commit_index();
  // Step 2: confirm leadership with a fresh heartbeat round. The round id is
  // new, so only answers to heartbeats sent after these reads arrived count.
  ++read_round_;
  for (PendingRead& read : reads_waiting_) {
    read.index = read_index;
    read.round = read_round_;
    reads_confirming_.push_back(read);
  }
  reads_waiting_.clear();
  progress_.at(config_.id).AckReadRound(read_round_);
  BroadcastHeartbeat();
  ConfirmReads();
}

void Node::ConfirmReads() {
  if (reads_confirming_.empty()) return;
  // The newest round that a quorum (a majority of each half of a joint
  // configuration) has answered; quorum math over round ids is the same as
  // over match indexes.
  const uint64_t confirmed =
      JointMatchedIndex(configuration_, [this](NodeId node) {
        auto it = progress_.find(node);
        return it == progress_.end() ? std::nullopt
                                     : std::optional<LogIndex>(LogIndex(
                                           it->second.acked_read_round()));
      }).value();
  size_t done = 0;
  while (done < reads_confirming_.size() &&
         reads_confirming_[done].round <= confirmed) {
    const PendingRead& read = reads_confirming_[done];
    if (read.from == config_.id) {
      read_states_.push_back({read.request_id, read.index});
    } else {
      Send(read.from, term_, ReadIndexResponse{read.request_id, read.index});
    }
    ++done;
  }
  reads_confirming_.erase(
      reads_confirming_.begin(),
      reads_confirming_.begin() + static_cast<std::ptrdiff_t>(done));
}

// ---------------------------------------------------------------------------
// Ready / Advance.

void Node::Send(NodeId to, Term term, Payload payload) {
  outbox_.push_back(Message{config_.id, to, term, std::move(payload)});
}

HardState Node::CurrentHardState() const {
  return HardState{term_, voted_for_, log_.commit_index()};
}

SoftState Node::CurrentSoftState() const {
  return SoftState{role_, leader_, term_};
}

bool Node::HasReady() const {
  if (ready_outstanding_) return false;
  return pending_broadcast_ || !outbox_.empty() || !read_states_.empty() ||
         ReadRoundDue() || CurrentHardState() != last_hard_state_ ||
         CurrentSoftState() != last_soft_state_ ||
         log_.SnapshotToPersist().has_value() || log_.HasEntriesToPersist() ||
         log_.HasNextCommittedEntries() || snapshot_wanted_;
}

Ready Node::TakeReady() {
  RAFT_CHECK(!ready_outstanding_, "a Ready is already outstanding");
  if (pending_broadcast_ && role_ == Role::kLeader) BroadcastAppend();
  pending_broadcast_ = false;
  if (ReadRoundDue()) StartReadRound();

  Ready ready;
  ready.number = ++ready_number_;
  if (SoftState soft = CurrentSoftState(); soft != last_soft_state_) {
    ready.soft_state = soft;
    last_soft_state_ = soft;
  }
  const HardState hard = CurrentHardState();
  // Paper Figure 2: currentTerm and votedFor are persistent state, updated on
  // stable storage before responding to RPCs.
  const bool term_or_vote_changed =
      hard.term != last_hard_state_.term ||
      hard.voted_for != last_hard_state_.voted_for;
  if (hard != last_hard_state_) {
    ready.hard_state = hard;
    last_hard_state_ = hard;
  }
  ready.snapshot = log_.SnapshotToPersist();
  if (ready.snapshot) log_.MarkSnapshotPersisting();
  ready.snapshot_wanted = std::exchange(snapshot_wanted_, false);
  ready.entries = log_.EntriesToPersist();
  if (!ready.entries.empty()) log_.MarkPersisting(ready.entries.back().index);
  ready.must_sync = term_or_vote_changed || ready.snapshot.has_value() ||
                    !ready.entries.empty();

  for (Message& message : outbox_) {
    // Only requests whose term is already durable may leave before the write;
    // every response, and everything of a Ready that changes term or vote,
    // waits for it (docs/design.md pitfall 10: persist before you
    // acknowledge).
    if (!term_or_vote_changed && IsRequest(message)) {
      ready.messages.push_back(std::move(message));
    } else {
      ready.messages_after_persist.push_back(std::move(message));
    }
  }
  outbox_.clear();

  ready.read_states.swap(read_states_);
  ready.committed_entries =
      log_.NextCommittedEntries(config_.max_committed_bytes_per_ready);
  if (!ready.committed_entries.empty()) {
    log_.MarkApplying(ready.committed_entries.back().index);
  }
  ready_outstanding_ = true;
  return ready;
}

void Node::Advance(const Ready& ready) {
  RAFT_CHECK(ready_outstanding_ && ready.number == ready_number_,
             "Advance must acknowledge the outstanding Ready");
  ready_outstanding_ = false;
  if (ready.snapshot) log_.StableSnapshotTo(ready.snapshot->index);
  if (!ready.entries.empty()) {
    log_.StableTo(ready.entries.back().id());
    if (role_ == Role::kLeader) {
      // Thesis §10.2.1: the leader counts itself only by its durable index.
      progress_.at(config_.id).SetSelfMatch(log_.durable_last());
      if (MaybeCommit()) pending_broadcast_ = true;
    }
  }
  if (!ready.committed_entries.empty()) {
    log_.AppliedTo(ready.committed_entries.back().index);
  }
}

NodeStatus Node::Status() const {
  NodeStatus status;
  status.id = config_.id;
  status.role = role_;
  status.term = term_;
  status.voted_for = voted_for_;
  status.leader = leader_;
  status.first_index = log_.first_index();
  status.last_index = log_.last_index();
  status.last_term = log_.last_term();
  status.durable_index = log_.durable_last();
  status.commit = log_.commit_index();
  status.applied = log_.applied();
  status.configuration = configuration_;
  status.lead_transferee = lead_transferee_;
  status.election_timeout = randomized_election_timeout_;
  for (const auto& [node, progress] : progress_) {
    status.peers.emplace(
        node,
        PeerStatus{progress.match(), progress.next(), progress.state(),
                   progress.inflights().count(), progress.inflights().bytes(),
                   progress.pending_snapshot(), progress.recent_active()});
  }
  return status;
}

std::string Node::DebugString() const { return Status().DebugString(); }

}  // namespace driftwood::raft
