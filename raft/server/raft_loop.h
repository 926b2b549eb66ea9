// Driftwood: the raft loop, the step function that owns the core
// (docs/design.md "The runtime").
//
// RaftLoop owns the Node, the write side of the LogStore and the
// ReadyProcessor. Each turn drains everything queued since the last one into
// the core (ticks, peer messages, forwarded proposals, control events, then
// every queued proposal as one batch and every queued read as one ReadIndex
// request) and only then performs Readies: proposals that pile up while the
// previous fsync runs share the next one (group commit).
//
// What it produces leaves through RaftLoopOutputs: messages to the transport
// (InstallSnapshot messages go to the snapshot writer, which streams the
// files first), tasks for the apply loop, jobs for the snapshot writer.
//
// Not thread-safe: one thread (or the simulation's scheduler) calls every
// method. The outputs run on that thread and must not call back into the
// loop.
#ifndef DRIFTWOOD_RAFT_SERVER_RAFT_LOOP_H_
#define DRIFTWOOD_RAFT_SERVER_RAFT_LOOP_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/server/replica_state.h"
#include "raft/server/runtime_types.h"
#include "raft/storage/log_store.h"
#include "raft/transport.h"

namespace driftwood::raft {

struct RaftLoopOutputs {
  // Raft messages for the transport, in order; the callee may move from
  // them.
  std::function<void(std::vector<Message>&)> send;
  std::function<void(ServerMessage)> send_server_message;
  std::function<void(ApplyTask)> apply;
  std::function<void(SnapshotJob)> snapshot;
  // The apply loop's applied index (read for the apply-lag limit).
  std::function<LogIndex()> applied_index;
};

struct RaftLoopOptions {
  // Proposals (local and forwarded) are refused with ResourceExhausted while
  // more than this many committed entries wait to be applied (etcd's "too
  // many requests").
  uint64_t max_apply_lag = 5'000;
  // ReadIndex request ids and forward ids count up from here. It must exceed
  // every id an earlier incarnation of this node used: an answer to a request
  // of that incarnation may still be in flight after a restart, and must not
  // be taken for the answer to a new request with the same id (a stale read
  // index would break linearizability, a stale forward answer would complete
  // a proposal with another entry's outcome). RequestIdBase derives one from
  // a clock that does not go back across restarts.
  uint64_t first_request_id = 0;
  // ReadyProcessor::HandOverTiming: committed entries go to the apply loop
  // before the Ready's write (true) or after it.
  bool hand_over_before_persist = true;
  // Ticks after which a ReadIndex request that got no ReadState is sent
  // again, until its reads' deadline. The core drops a request without an
  // answer when the request or the answer is lost, or when the node that
  // holds it stops leading (Node::ReadIndex); re-sending the same request id
  // is safe, since any leader that confirms it does so after the reads
  // began (thesis §6.4) and the apply loop takes the first answer. Greater
  // than 0.
  uint64_t read_retry_ticks = 5;
};

// A first_request_id from the time an incarnation starts: microseconds since
// the epoch, times 4096. An incarnation would have to issue 4096 requests per
// microsecond of its life to reach the next incarnation's base.
uint64_t RequestIdBase(absl::Time start);

class RaftLoop {
 public:
  // `node`, `log` and `replica` must outlive the loop; `log` is the store
  // `node` reads.
  RaftLoop(Node& node, LogStore& log, ReplicaState& replica,
           RaftLoopOutputs outputs, RaftLoopOptions options,
           AtomicCounters& counters);

  RaftLoop(const RaftLoop&) = delete;
  RaftLoop& operator=(const RaftLoop&) = delete;

  // Feeds everything in `input` to the core (see the file comment for the
  // order). Requests refused at once go to the apply loop as CompleteTasks.
  // A non-OK status is a failed log store write: the node must stop.
  absl::Status Drain(RaftInput input);

  // Performs every Ready the core has. A non-OK status is a failed write:
  // the node must stop (fail-stop, docs/design.md "Storage").
  absl::Status ProcessReadies() { return processor_.Process(); }

  // The driver, for a scheduler that performs one contract step at a time.
  ReadyProcessor& processor() { return processor_; }
  const Node& node() const { return node_; }

  // True while this node leads and its log holds entries not known to be
  // committed.
  bool ProposalsInFlight() const {
    return node_.role() == Role::kLeader &&
           node_.last_index() > node_.commit_index();
  }

  // The last index handed to the apply loop.
  LogIndex handed_over() const { return handed_over_; }

 private:
  void Send(std::vector<Message>& messages);
  void HandOver(const Ready& ready);
  absl::Status HandleControl(ControlEvent& event);
  void HandleServerMessage(ServerMessage& message);
  void Propose(std::vector<ProposalInput>& proposals);
  void Read(std::vector<ReadInput>& reads);
  // Re-sends the ReadIndex requests due again (RaftLoopOptions::
  // read_retry_ticks) and forgets those past their deadline.
  void RetryReads(uint64_t ticks);
  // Empty when proposals may be appended; otherwise why not (apply lag).
  absl::Status CheckApplyLag() const;
  absl::Status Compact(LogIndex recovery_point);
  void Refuse(std::vector<ProposalInput>& proposals, absl::Status status);

  Node& node_;
  LogStore& log_;
  ReplicaState& replica_;
  RaftLoopOutputs outputs_;
  RaftLoopOptions options_;
  AtomicCounters& counters_;
  ReadyProcessor processor_;
  LogIndex handed_over_;
  NodeId last_leader_;
  uint64_t next_forward_id_ = 0;
  uint64_t next_read_id_ = 0;
  // ReadIndex requests the core accepted and no Ready has answered yet.
  struct OutstandingRead {
    // The latest deadline among the request's reads.
    absl::Time deadline;
    uint64_t ticks_since_sent = 0;
    // Where the request went when last sent: a leader keeps its own reads
    // queued for as long as it leads in that term, so only a request sent
    // elsewhere, or by a leader of an earlier term, can be lost.
    Term term;
    bool sent_as_leader = false;
  };
  std::map<uint64_t, OutstandingRead> outstanding_reads_;
  // The latest RaftInput::now seen.
  absl::Time now_ = absl::InfinitePast();
  // Messages for the transport, gathered in Send.
  std::vector<Message> outgoing_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_RAFT_LOOP_H_
