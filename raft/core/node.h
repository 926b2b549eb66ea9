// Driftwood: Node, the deterministic Raft core.
//
// A Node is a pure state machine: its inputs are Tick, Step, Propose and
// Campaign; its output is a Ready that the driver performs and acknowledges
// with Advance (the contract is in raft/core/ready.h). It has no threads,
// clocks, sockets or files; randomness comes from Config::seed. The same inputs
// give the same Readies, byte for byte.
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
#include "raft/core/types.h"

namespace driftwood::raft {

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
  // Appends several commands at once; returns the id of the last one.
  // REQUIRES: !commands.empty().
  absl::StatusOr<EntryId> ProposeBatch(std::vector<std::string> commands);

  // Starts an election now (with PreVote if configured). Ignored by leaders and
  // by nodes that are not voters.
  void Campaign();

  // True when there is something to do and no Ready is outstanding.
  bool HasReady() const;
  // Takes the next Ready. REQUIRES: HasReady().
  Ready TakeReady();
  // Acknowledges that every step of `ready` was performed.
  // REQUIRES: `ready` is the outstanding Ready.
  void Advance(const Ready& ready);

  NodeId id() const { return config_.id; }
  Role role() const { return role_; }
  Term term() const { return term_; }
  NodeId voted_for() const { return voted_for_; }
  // The leader of the current term if known, else kNoNode.
  NodeId leader_id() const { return leader_; }
  LogIndex commit_index() const { return log_.commit_index(); }
  LogIndex applied_index() const { return log_.applied(); }
  const Configuration& configuration() const { return configuration_; }
  const RaftLog& log() const { return log_; }
  // The leader's view of `peer`, or nullptr when not leader or unknown peer.
  const Progress* progress(NodeId peer) const;
  // The election timeout drawn for the current term, in ticks.
  uint64_t randomized_election_timeout() const {
    return randomized_election_timeout_;
  }
  // A one-line summary: id, role, term, vote, leader, log, commit.
  std::string DebugString() const;

 private:
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
  absl::Status StepTermRules(const Message& message, bool& handled);
  void HandleRequestVote(const Message& message, const RequestVote& request);
  void HandleRequestVoteResponse(const Message& message,
                                 const RequestVoteResponse& response);
  void HandleAppendEntries(const Message& message,
                           const AppendEntries& request);
  void HandleAppendEntriesResponse(const Message& message,
                                   const AppendEntriesResponse& response);
  void HandleHeartbeat(const Message& message, const Heartbeat& heartbeat);
  void HandleHeartbeatResponse(const Message& message);

  // Leader replication.
  bool SendAppend(NodeId to, bool send_if_empty);
  void BroadcastAppend();
  void BroadcastHeartbeat();
  bool MaybeCommit();
  void TickLeader();

  void Send(NodeId to, Term term, Payload payload);
  bool IsPromotable() const;
  std::vector<NodeId> Peers() const;
  HardState CurrentHardState() const;
  SoftState CurrentSoftState() const;

  Config config_;
  RaftLog log_;
  Configuration configuration_;

  Role role_ = Role::kFollower;
  // Paper Figure 2 persistent state (with the log). Persisted via Ready.
  Term term_;
  NodeId voted_for_;
  NodeId leader_;

  // Leader only: one entry per node of the configuration, self included (its
  // match is its durable last index, advanced only at Advance).
  std::map<NodeId, Progress> progress_;
  // Candidate and pre-candidate only: votes received in this election.
  std::map<NodeId, bool> votes_;
  // Leader only: proposals were appended or the commit index advanced since the
  // last broadcast; TakeReady sends AppendEntries to every follower.
  bool pending_broadcast_ = false;

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

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_NODE_H_
