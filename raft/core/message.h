// Driftwood: the messages Raft servers exchange, one plain struct per RPC,
// named as in the paper. Requests and responses are one-way messages; a
// response is just another message flowing the other way. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_MESSAGE_H_
#define DRIFTWOOD_RAFT_CORE_MESSAGE_H_

#include <variant>
#include <vector>

#include "raft/core/types.h"

namespace driftwood::raft {

// Invoked by the leader to replicate entries (paper Figure 2, §5.3).
struct AppendEntries {
  LogIndex prev_log_index;
  Term prev_log_term;
  std::vector<Entry> entries;
  LogIndex leader_commit;

  bool operator==(const AppendEntries&) const = default;
};

// The follower's answer to AppendEntries.
struct AppendEntriesResponse {
  // Whether the follower's log matched prev_log_index/prev_log_term.
  bool success = false;
  // success: prev_log_index + len(entries), the index now known to match the
  //   leader's log (not the follower's last index, which may hold stale
  //   entries).
  // failure: the rejected prev_log_index.
  LogIndex index;
  // failure only (fast backtracking): the follower's log may match the leader's
  // up to hint_index, whose term on the follower is hint_term.
  LogIndex hint_index;
  Term hint_term;

  bool operator==(const AppendEntriesResponse&) const = default;
};

// Invoked by candidates (and, with pre_vote, pre-candidates) to gather votes
// (paper §5.2, thesis §9.6).
struct RequestVote {
  LogIndex last_log_index;
  Term last_log_term;
  // A PreVote (thesis §9.6): the message's term is the term the sender would
  // campaign in; the receiver changes no state.
  bool pre_vote = false;
  // The campaign follows a leadership transfer (thesis §3.10) and may disrupt a
  // live leader: stickiness does not apply.
  bool transfer = false;

  bool operator==(const RequestVote&) const = default;
};

// The answer to RequestVote.
struct RequestVoteResponse {
  bool granted = false;
  bool pre_vote = false;

  bool operator==(const RequestVoteResponse&) const = default;
};

// The leader's periodic heartbeat. It carries no entries and is not checked
// against the log, so it may only carry a commit index the follower is known to
// hold: min(match_index[follower], commit_index).
struct Heartbeat {
  LogIndex leader_commit;
  // The newest read-confirmation round the leader has started (thesis §6.4).
  // Every round has its own id, so an answer to an older heartbeat can never
  // confirm a newer read (docs/design.md pitfall 4).
  uint64_t read_round = 0;

  bool operator==(const Heartbeat&) const = default;
};

// The answer to Heartbeat: proof of life for CheckQuorum and probing.
struct HeartbeatResponse {
  // The read_round of the heartbeat answered.
  uint64_t read_round = 0;

  bool operator==(const HeartbeatResponse&) const = default;
};

// Invoked by the leader to bring a follower that needs compacted entries up to
// date (paper §7, Figure 13). Carries the snapshot's metadata; the transport
// moves its data separately. The follower answers with AppendEntriesResponse.
struct InstallSnapshot {
  SnapshotMeta snapshot;

  bool operator==(const InstallSnapshot&) const = default;
};

// Sent by a leader transferring leadership (thesis §3.10): the receiver starts
// an election at once, without PreVote.
struct TimeoutNow {
  bool operator==(const TimeoutNow&) const = default;
};

// A follower forwards a linearizable read to the leader (thesis §6.4).
struct ReadIndexRequest {
  uint64_t request_id = 0;

  bool operator==(const ReadIndexRequest&) const = default;
};

// The leader's answer once leadership was confirmed for the read: the follower
// may serve it after applying through `index`.
struct ReadIndexResponse {
  uint64_t request_id = 0;
  LogIndex index;

  bool operator==(const ReadIndexResponse&) const = default;
};

using Payload = std::variant<AppendEntries, AppendEntriesResponse, RequestVote,
                             RequestVoteResponse, Heartbeat, HeartbeatResponse,
                             InstallSnapshot, TimeoutNow, ReadIndexRequest,
                             ReadIndexResponse>;

// One message between two servers. `term` is the sender's current term, except
// for PreVote requests (the term the sender would campaign in) and granted
// PreVote responses (the term of the request).
struct Message {
  NodeId from;
  NodeId to;
  Term term;
  Payload payload;

  bool operator==(const Message&) const = default;
};

// True for messages that ask something of the receiver (as opposed to answers).
bool IsRequest(const Message& message);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_MESSAGE_H_
