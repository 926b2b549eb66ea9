// Driftwood: Node, the deterministic Raft core.
//
// A Node is a pure state machine: its inputs are Tick, Step, Propose and
// Campaign; its output is a Ready that the driver performs and acknowledges
// with Advance (the contract is in raft/core/ready.h; ReadyProcessor in
// raft/server performs it). It has no threads, clocks, sockets or files;
// randomness comes from Config::seed. The same inputs give the same Readies,
// byte for byte. Status() is the one window into its state; the units it is
// built from (log, progress, quorum arithmetic) are in raft::internal.
//
// Not thread-safe: use from one thread. The LogReader passed to Create must
// outlive the Node and is only read.
#ifndef DRIFTWOOD_RAFT_CORE_NODE_H_
#define DRIFTWOOD_RAFT_CORE_NODE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/config.h"
#include "raft/core/log_reader.h"
#include "raft/core/message.h"
#include "raft/core/progress.h"
#include "raft/core/raft_log.h"
#include "raft/core/ready.h"
#include "raft/core/status.h"
#include "raft/core/types.h"

namespace driftwood::raft {

namespace internal {
class NodeInternals;
}  // namespace internal

class Node {
 public:
  // Restores term, vote, commit and configuration from `log`. InvalidArgument
  // when the config is invalid; DataLoss when the stored state is inconsistent
  // (commit past the last index, applied past commit, an invalid
  // configuration).
  static absl::StatusOr<std::unique_ptr<Node>> Create(const Config& config,
                                                      const LogReader& log);

  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Advances the logical clock by one tick: elections, heartbeats, CheckQuorum.
  void Tick();

  // Delivers a message from a peer. InvalidArgument for a malformed message
  // (addressed to another node, from this node or from node 0). Protocol
  // rejections are not errors: they become response messages.
  absl::Status Step(const Message& message);

  // Appends a command on the leader and returns its {term, index}. The entry is
  // committed only if an entry at that index with that term is later applied.
  // FailedPrecondition when this node is not the leader (leader_id() names the
  // leader when known).
  absl::StatusOr<EntryId> Propose(std::string command);
  // Appends several commands at once; returns the id of the last one. The
  // entries share the commands' bytes (EntryData), so a payload handed in
  // by reference is not copied on its way to the log, the peers' messages
  // and the state machine. REQUIRES: !commands.empty().
  absl::StatusOr<EntryId> ProposeBatch(std::vector<EntryData> commands);

  // Starts an election now (with PreVote if configured). Ignored by leaders and
  // by nodes that are not voters.
  void Campaign();

  // Asks for a linearizable read (thesis §6.4). When leadership is confirmed a
  // later Ready carries ReadState{request_id, index}; the read may be served
  // once the state machine has applied through index. The leader confirms only
  // after an entry of its own term committed, with a heartbeat round of its
  // own; a follower forwards the request to the leader. Unavailable when no
  // leader is known. A request may be dropped (leader change, lost message)
  // without an answer: callers use deadlines. `request_id` is the caller's.
  absl::Status ReadIndex(uint64_t request_id);

  // Hands leadership to `to` (thesis §3.10): brings it up to date, then tells
  // it to campaign at once. Proposals fail with Unavailable meanwhile; the
  // transfer is abandoned after an election timeout, replaced by a transfer
  // to another node, and cancelled by a transfer to this node.
  // FailedPrecondition when not leader; InvalidArgument when `to` is not a
  // voter.
  absl::Status TransferLeadership(NodeId to);

  // The transport could not reach `peer`: stop pipelining to it and probe.
  void ReportUnreachable(NodeId peer);
  // The snapshot sent to `peer` was delivered and installed (or failed).
  void ReportSnapshot(NodeId peer, bool succeeded);

  // True when there is something to do and no Ready is outstanding.
  bool HasReady() const;
  // Takes the next Ready. REQUIRES: HasReady().
  Ready TakeReady();
  // Acknowledges that every step of `ready` was performed.
  // REQUIRES: `ready` is the outstanding Ready.
  void Advance(const Ready& ready);

  // Everything the node reports about itself, in one value (a copy).
  NodeStatus Status() const;

  NodeId id() const { return config_.id; }
  Role role() const { return role_; }
  Term term() const { return term_; }
  // The leader of the current term if known, else kNoNode.
  NodeId leader_id() const { return leader_; }
  LogIndex commit_index() const { return log_.commit_index(); }
  // The index of the last entry of the log, durable or not.
  LogIndex last_index() const { return log_.last_index(); }
  LogIndex applied_index() const { return log_.applied(); }
  const Configuration& configuration() const { return configuration_; }
  // A one-line summary: id, role, term, vote, leader, log, commit.
  std::string DebugString() const;

 private:
  friend class internal::NodeInternals;

  Node(const Config& config, const LogReader& log, const InitialState& state);

  // Role transitions (paper §5.2, thesis §9.6).
  void BecomeFollower(Term term, NodeId leader);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void ResetForTerm(Term term);
  void ResetElectionTimer();
  void StartElection(bool pre_vote, bool transfer);
  void RecordVote(NodeId voter, bool granted);

  // Step helpers.
  // A message of the current term from its leader: follow it and restart the
  // election timer.
  void HeardFromLeader(NodeId leader);
  absl::Status StepTermRules(const Message& message, bool& handled);
  void HandleRequestVote(const Message& message, const RequestVote& request);
  void HandleRequestVoteResponse(const Message& message,
                                 const RequestVoteResponse& response);
  void HandleAppendEntries(const Message& message,
                           const AppendEntries& request);
  void HandleAppendEntriesResponse(const Message& message,
                                   const AppendEntriesResponse& response);
  void HandleHeartbeat(const Message& message, const Heartbeat& heartbeat);
  void HandleHeartbeatResponse(const Message& message,
                               const HeartbeatResponse& response);
  void HandleInstallSnapshot(const Message& message,
                             const InstallSnapshot& request);
  void HandleTimeoutNow(const Message& message);
  void HandleReadIndexRequest(const Message& message,
                              const ReadIndexRequest& request);
  void HandleReadIndexResponse(const Message& message,
                               const ReadIndexResponse& response);

  // Leader replication.
  bool SendAppend(NodeId to, bool send_if_empty);
  bool SendSnapshot(NodeId to, internal::Progress& progress);
  void MaybeSendTimeoutNow(NodeId to);
  void BroadcastAppend();
  // Whether an AppendEntries without entries would teach the replicating
  // follower a commit index it can use.
  bool CommitOnlyAppendUseful(const internal::Progress& progress) const;
  void BroadcastHeartbeat();
  bool MaybeCommit();
  void TickLeader();
  bool CommittedEntryInCurrentTerm() const;
  bool ReadRoundDue() const;
  void StartReadRound();
  void ConfirmReads();

  void Send(NodeId to, Term term, Payload payload);
  bool IsPromotable() const;
  std::vector<NodeId> Peers() const;
  HardState CurrentHardState() const;
  SoftState CurrentSoftState() const;

  Config config_;
  const LogReader& reader_;
  internal::RaftLog log_;
  Configuration configuration_;

  Role role_ = Role::kFollower;
  // Paper Figure 2 persistent state (with the log). Persisted via Ready.
  Term term_;
  NodeId voted_for_;
  NodeId leader_;

  // Leader only: one entry per node of the configuration, self included (its
  // match is its durable last index, advanced only at Advance).
  std::map<NodeId, internal::Progress> progress_;
  // Candidate and pre-candidate only: votes received in this election.
  std::map<NodeId, bool> votes_;
  // Leader only: proposals were appended or the commit index advanced since the
  // last broadcast; TakeReady sends AppendEntries to every follower.
  bool pending_broadcast_ = false;
  // Set when a follower needed a snapshot newer than the reader offers;
  // reported (and cleared) by the next Ready.
  bool snapshot_wanted_ = false;

  // Leader only: a read waiting for its confirmation round.
  struct PendingRead {
    uint64_t request_id = 0;
    NodeId from;  // this node, or the follower that forwarded it
    LogIndex index;
    uint64_t round = 0;
  };
  // Reads not yet in a round: they wait for an entry of this term to commit.
  std::vector<PendingRead> reads_waiting_;
  // Reads in a round, ordered by round.
  std::vector<PendingRead> reads_confirming_;
  // The last read-confirmation round started. Strictly increasing for the life
  // of this Node, so every round has a unique id.
  uint64_t read_round_ = 0;
  // Confirmed reads for the next Ready.
  std::vector<ReadState> read_states_;

  // Leader only: leadership transfer in progress (thesis §3.10).
  NodeId lead_transferee_;
  uint64_t transfer_elapsed_ = 0;

  // Leader only: bytes of this term's entries not yet committed, and the size
  // of each such proposal batch by its last index.
  uint64_t uncommitted_bytes_ = 0;
  std::vector<std::pair<LogIndex, uint64_t>> uncommitted_batches_;

  // Ticks since the last election timeout reset (followers: since the leader
  // was last heard; leaders: since the last CheckQuorum round).
  uint64_t election_elapsed_ = 0;
  uint64_t heartbeat_elapsed_ = 0;
  uint64_t randomized_election_timeout_ = 0;
  std::mt19937_64 rng_;

  // Messages produced since the last Ready, in order.
  std::vector<Message> outbox_;
  // What the previous Ready reported; the next Ready reports differences.
  HardState last_hard_state_;
  SoftState last_soft_state_;
  bool ready_outstanding_ = false;
  uint64_t ready_number_ = 0;
};

namespace internal {

// Read access to a Node's log for the simulation's checker and tests that
// must look inside (the term at an index, the unstable tail). Not part of the
// embedding API: embedders read Node::Status().
class NodeInternals {
 public:
  static const RaftLog& Log(const Node& node) { return node.log_; }
};

}  // namespace internal
}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_NODE_H_
