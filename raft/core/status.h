// Driftwood: NodeStatus, everything a Node reports about itself in one value.
//
// Node::Status() copies it out; nothing in it refers back into the Node. It is
// what tests, the simulation, status pages and operators read: there are no
// other observers of the core's internals. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_STATUS_H_
#define DRIFTWOOD_RAFT_CORE_STATUS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "raft/core/types.h"

namespace driftwood::raft {

enum class Role { kFollower, kPreCandidate, kCandidate, kLeader };

const char* RoleName(Role role);

// How the leader replicates to one follower (etcd's progress states):
// kProbe: it does not know where the follower's log diverges and sends one
//   AppendEntries at a time;
// kReplicate: the follower matched at `match`; AppendEntries are pipelined up
//   to the inflight window;
// kSnapshot: the follower needs a snapshot; nothing else is sent until it is
//   reported, acknowledged, or times out.
enum class ProgressState { kProbe, kReplicate, kSnapshot };

const char* ProgressStateName(ProgressState state);

// The leader's view of one node of the configuration (itself included).
struct PeerStatus {
  // The highest index known to be durably replicated on the node (paper
  // Figure 2 matchIndex); for the leader itself, its durable last index.
  LogIndex match;
  // The next index to send (Figure 2 nextIndex).
  LogIndex next;
  ProgressState state = ProgressState::kProbe;
  // AppendEntries in flight and the bytes of their entries.
  uint64_t inflight_messages = 0;
  uint64_t inflight_bytes = 0;
  // kSnapshot only: the index of the snapshot in flight.
  LogIndex pending_snapshot;
  // Heard from since the last CheckQuorum round (thesis §6.2).
  bool recent_active = false;

  bool operator==(const PeerStatus&) const = default;
};

// What the runtime (raft/server) counts about a node. The core leaves these
// zero; Server::Status() fills them in.
struct RuntimeCounters {
  // Log writes, those that were synced, the entries they wrote, and the
  // time spent in synced writes.
  uint64_t log_writes = 0;
  uint64_t fsyncs = 0;
  uint64_t entries_persisted = 0;
  uint64_t fsync_micros = 0;
  // Times this node became a candidate, and leader changes it observed.
  uint64_t elections = 0;
  uint64_t leader_changes = 0;
  // Entries committed but not yet applied (commit - applied).
  uint64_t apply_lag = 0;
  // State machine Apply calls with entries, and the entries they applied.
  uint64_t apply_batches = 0;
  uint64_t entries_applied = 0;
  uint64_t snapshots_created = 0;
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_send_failures = 0;
  uint64_t snapshots_received = 0;
  // Proposals completed, by outcome (docs/design.md "The runtime").
  uint64_t proposals_ok = 0;
  uint64_t proposals_aborted = 0;
  uint64_t proposals_unavailable = 0;
  uint64_t proposals_resource_exhausted = 0;
  uint64_t proposals_deadline_exceeded = 0;
  uint64_t proposals_cancelled = 0;
  uint64_t proposals_invalid = 0;
  // Proposals this follower forwarded to the leader.
  uint64_t proposals_forwarded = 0;
  uint64_t reads_ok = 0;
  uint64_t reads_failed = 0;
  // ReadIndex requests sent again because no answer came (a lost request or
  // answer, a leader that stepped down before confirming).
  uint64_t read_index_retries = 0;
  // Inbound Raft messages dropped because the raft loop's queue was full.
  uint64_t messages_dropped = 0;

  // Entries per synced write, and the mean synced write in microseconds.
  double EntriesPerFsync() const {
    return fsyncs == 0 ? 0.0
                       : static_cast<double>(entries_persisted) /
                             static_cast<double>(fsyncs);
  }
  double MeanFsyncMicros() const {
    return fsyncs == 0 ? 0.0
                       : static_cast<double>(fsync_micros) /
                             static_cast<double>(fsyncs);
  }
};

// What a node's transport (raft/transport.h) did since it started; zero for
// a transport that does not count.
struct TransportCounters {
  // Raft and server messages handed to the network, and those dropped
  // before reaching it (a full queue, a broken stream, an unknown peer).
  uint64_t messages_sent = 0;
  uint64_t messages_dropped = 0;
  // Outbound streams opened, and those that ended with an error.
  uint64_t streams_opened = 0;
  uint64_t stream_failures = 0;
  // Inbound envelopes refused: another cluster, a sender that is not a
  // known peer (or a receiver other than this node), malformed or of
  // another protocol version.
  uint64_t refused_cluster = 0;
  uint64_t refused_sender = 0;
  uint64_t refused_malformed = 0;
  // Snapshot file bytes streamed out and in, and streams that continued a
  // partial receive instead of starting from zero.
  uint64_t snapshot_bytes_sent = 0;
  uint64_t snapshot_bytes_received = 0;
  uint64_t snapshot_resumes = 0;
};

struct NodeStatus {
  NodeId id;
  Role role = Role::kFollower;
  Term term;
  NodeId voted_for;
  // The leader of the current term if known, else kNoNode.
  NodeId leader;
  // The log: [first_index, last_index] held (first_index - 1 is the
  // compaction point); entries through durable_index are persisted.
  LogIndex first_index;
  LogIndex last_index;
  Term last_term;
  LogIndex durable_index;
  LogIndex commit;
  LogIndex applied;
  Configuration configuration;
  // Leader only: the transfer target while a leadership transfer is in
  // progress (thesis §3.10), else kNoNode.
  NodeId lead_transferee;
  // The election timeout drawn for the current term, in ticks.
  uint64_t election_timeout = 0;
  // Leader only: one entry per node of the configuration, itself included.
  std::map<NodeId, PeerStatus> peers;

  // Filled in by the runtime (raft/server); zero from Node::Status().
  RuntimeCounters counters;
  // Filled in by the runtime from Transport::Counters().
  TransportCounters transport;
  // The leader's view of `node`; nullopt when not leader or not a member.
  std::optional<PeerStatus> Peer(NodeId node) const {
    auto it = peers.find(node);
    if (it == peers.end()) return std::nullopt;
    return it->second;
  }
  // One line: id, role, term, vote, leader, log, commit, applied.
  std::string DebugString() const;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_STATUS_H_
