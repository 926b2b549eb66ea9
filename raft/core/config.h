// Driftwood: the configuration of one Raft core. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_CONFIG_H_
#define DRIFTWOOD_RAFT_CORE_CONFIG_H_

#include <cstdint>

#include "absl/status/status.h"
#include "raft/core/types.h"

namespace driftwood::raft {

struct Config {
  // This server's id. Required; never kNoNode.
  NodeId id;

  // Election timeout T in ticks: each follower and candidate waits a random
  // number of ticks in [T, 2T) (paper §5.2). Default: 10. REQUIRES: >
  // heartbeat.
  uint64_t election_ticks = 10;
  // Heartbeat interval in ticks. Default: 1.
  uint64_t heartbeat_ticks = 1;
  // Seeds the PRNG that draws election timeouts; the same seed and inputs give
  // the same outputs. Default: 0 (mixed with the node id).
  uint64_t seed = 0;

  // PreVote (thesis §9.6): campaign only after a majority says it would vote
  // for us, so a partitioned node cannot disrupt the cluster. Default: on.
  bool pre_vote = true;
  // CheckQuorum (thesis §6.2): a leader that has not heard from a quorum within
  // an election timeout steps down; with it, leader stickiness (thesis §4.2.3)
  // ignores vote requests while a leader is known. Default: on.
  bool check_quorum = true;

  // Maximum bytes of entries in one AppendEntries; one entry is always
  // admitted. Default: 1 MiB.
  uint64_t max_message_bytes = 1 << 20;
  // Maximum AppendEntries in flight to one follower in the replicate state.
  // Default: 256.
  uint64_t max_inflight_messages = 256;
  // Maximum bytes of entries in flight to one follower; 0 means no limit. An
  // empty window always admits one message. Default: 32 MiB.
  uint64_t max_inflight_bytes = 32 << 20;
  // Maximum bytes of committed entries handed out in one Ready (at least one
  // entry is). Default: 64 MiB.
  uint64_t max_committed_bytes_per_ready = 64 << 20;

  // Maximum bytes of entries the leader has appended but not committed; further
  // proposals fail with Unavailable, so a leader without a quorum cannot grow
  // its log without bound. An empty backlog always admits one proposal; 0 means
  // no limit. Default: 64 MiB.
  uint64_t max_uncommitted_bytes = 64 << 20;
  // Ticks a leader waits for a follower to report a sent snapshot before it
  // probes the follower again (docs/design.md pitfall 19). Default: 100.
  uint64_t snapshot_timeout_ticks = 100;

  // The index up to which the state machine has applied entries; committed
  // entries are handed out from applied + 1. Default: 0.
  LogIndex applied;

  // InvalidArgument naming the field when the configuration cannot work.
  absl::Status Validate() const;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_CONFIG_H_
