// Driftwood: NodeRuntime, one node's runtime assembled from ServerOptions
// without threads (docs/design.md "The runtime").
//
// Open does everything Server::Start does before it starts threads: it opens
// (or, with bootstrap, creates) the log store and refuses a data folder of
// another cluster or node, recovers the state machine and snapshots through
// ReplicaState, creates the core, and builds the three step functions (raft
// loop, apply loop, snapshot writer) wired to the queues the caller provides
// in RuntimeQueues. Server pumps those queues with threads; the simulation
// pumps them from its deterministic scheduler. Both therefore start, recover
// and run the same code.
//
// Not thread-safe by itself: each step function belongs to one pump (see
// raft/server/runtime_types.h); ReceiveSnapshot may run on a transport
// thread.
#ifndef DRIFTWOOD_RAFT_SERVER_NODE_RUNTIME_H_
#define DRIFTWOOD_RAFT_SERVER_NODE_RUNTIME_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "raft/core/node.h"
#include "raft/server/apply_loop.h"
#include "raft/server/raft_loop.h"
#include "raft/server/replica_state.h"
#include "raft/server/runtime_types.h"
#include "raft/server/snapshot_writer.h"
#include "raft/state_machine.h"
#include "raft/storage/log_store.h"
#include "raft/transport.h"

namespace driftwood::raft {

// The time source for deadlines. Tests may substitute one.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

// The process's real clock.
Clock& SystemClock();

struct ServerOptions {
  // This node's id. Required; never 0.
  NodeId id;
  // The voters of the cluster when it was first started. Required; must
  // include `id`. Together with cluster_token it determines the cluster id
  // (ClusterIdFor), which every node derives alike.
  std::vector<NodeId> members;
  // Distinguishes clusters with the same members. Default: "driftwood".
  std::string cluster_token = "driftwood";
  // The node's folder: log/ (RocksDB) and snapshots/. Required.
  std::filesystem::path data_dir;
  // True only on the first start of a new cluster: creates an empty log in
  // an empty data_dir. False refuses a data_dir without a log, so a wiped
  // node cannot rejoin under its old id and vote twice. Default: false.
  bool bootstrap = false;
  // The most the log store's background work (memtable flushes,
  // compactions) writes per second; 0: not limited. Default: 128 MiB/s
  // (RocksDbLogStoreOptions::background_write_bytes_per_second).
  uint64_t log_background_write_bytes_per_second = 128 << 20;

  // Time per logical tick. Default: 100 ms (etcd's heartbeat interval).
  absl::Duration tick_interval = absl::Milliseconds(100);
  // Election timeout and heartbeat interval in ticks (raft/core/config.h).
  // Defaults: 10 and 1, etcd's 1 s and 100 ms.
  uint64_t election_ticks = 10;
  uint64_t heartbeat_ticks = 1;
  // PreVote and CheckQuorum (raft/core/config.h). Defaults: on.
  bool pre_vote = true;
  bool check_quorum = true;
  // Seeds the election timer's randomness. Default: 0 (the core mixes in the
  // node id).
  uint64_t seed = 0;

  // Limits. Each refuses work with the status raft/server/server.h lists
  // instead of growing memory.
  // Largest command or query, in bytes. Default: 1.5 MiB (etcd's).
  uint64_t max_request_bytes = 3 << 19;
  // Proposals queued or waiting for their outcome. Default: 10,000.
  uint64_t max_pending_proposals = 10'000;
  // Linearizable and local reads queued or waiting. Default: 10,000.
  uint64_t max_pending_reads = 10'000;
  // Committed entries not yet applied beyond which proposals are refused.
  // Default: 5,000 (etcd's).
  uint64_t max_apply_lag = 5'000;
  // Bytes a leader appended but not yet committed beyond which proposals
  // are refused (raft/core/config.h). Default: 64 MiB.
  uint64_t max_uncommitted_bytes = 64 << 20;
  // Inbound Raft messages queued for the raft loop; more are dropped (Raft
  // retries). Default: 10,000.
  uint64_t max_queued_messages = 10'000;
  // Bytes of entries per AppendEntries and in flight per follower
  // (raft/core/config.h). Defaults: 1 MiB and 32 MiB.
  uint64_t max_message_bytes = 1 << 20;
  uint64_t max_inflight_bytes = 32 << 20;
  // AppendEntries in flight per follower (raft/core/config.h). Default: 256.
  uint64_t max_inflight_messages = 256;
  // Ticks a leader waits for a sent snapshot to be reported before probing
  // again (raft/core/config.h). Default: 100.
  uint64_t snapshot_timeout_ticks = 100;

  // Group commit across replication rounds (docs/design.md "The runtime"):
  // while this node leads and entries it appended are not yet committed, new
  // proposals wait in the raft loop's inbox, and the turn that commits the
  // round appends them all as one batch, in the AppendEntries that carries
  // the new commit index. Under load that makes fewer, larger appends and
  // fsyncs on every node (one round in flight instead of a pipeline of small
  // ones); a lone proposal is never held, as nothing is in flight. A round
  // that cannot commit holds proposals for about one tick_interval (by
  // `clock`; at most two ticks), after which they are appended. False
  // appends every proposal at once. Default: true.
  bool hold_proposals_in_flight = true;

  // Committed entries go to the apply loop as soon as a Ready is taken,
  // before its write (raft/server/ready_processor.h): they are durable
  // already, so the state machine applies them, and clients hear of them,
  // while the raft loop's fsync of newer entries runs. False hands them over
  // after the write. Default: true.
  bool hand_over_before_persist = true;

  // How long a linearizable read waits for its ReadIndex request to be
  // answered before the request is sent again (to the leader known then),
  // until the read's deadline: a request or answer lost in transport, or
  // held by a leader that stepped down, is never answered. Rounded up to
  // whole ticks. Default: 500 ms (etcd's read-index retry interval).
  absl::Duration read_retry_interval = absl::Milliseconds(500);

  // When to snapshot and compact (raft/server/replica_state.h).
  CompactionPolicy compaction;

  // Not owned; must outlive the server. Defaults: SystemClock(); a
  // RocksDbLogStore in data_dir/log (tests may pass another store, which
  // must hold this cluster's configuration).
  Clock* clock = nullptr;
  LogStore* log_store = nullptr;

  // Called, on the thread that found it, with a failure that makes
  // continuing unsafe (a failed log write, a state machine error), after the
  // server stopped serving. Default: log it and abort the process
  // (fail-stop, docs/design.md "Storage").
  std::function<void(const absl::Status&)> on_fatal;
};

// InvalidArgument naming the field when the options cannot work.
absl::Status ValidateServerOptions(const ServerOptions& options);

// The cluster id every node of a cluster derives from the initial members
// and the cluster token.
uint64_t ClusterIdFor(const std::vector<NodeId>& members,
                      const std::string& cluster_token);

// Where each step function's output goes. Every callback must be cheap and
// must not call back into the step function that produced it.
struct RuntimeQueues {
  // To the apply loop.
  std::function<void(ApplyTask)> apply;
  // To the snapshot writer.
  std::function<void(SnapshotJob)> snapshot;
  // To the raft loop: control events (from the apply loop, the snapshot
  // writer and its streams) and verified InstallSnapshot messages (from
  // ReceiveSnapshot).
  std::function<void(ControlEvent)> raft_control;
  std::function<void(Message)> raft_message;
  // The apply loop's applied index, as the raft loop may read it.
  std::function<LogIndex()> applied_index;
  // Optional: ApplyLoopOutputs::applied (the apply loop's applied index each
  // time it moves, before the requests it answers complete).
  std::function<void(LogIndex)> applied_advanced;
};

class NodeRuntime {
 public:
  // See the file comment. `state_machine` and `transport` must outlive the
  // runtime. InvalidArgument for bad options; FailedPrecondition for a data
  // folder the options do not fit; DataLoss when the durable state is
  // inconsistent.
  static absl::StatusOr<std::unique_ptr<NodeRuntime>> Open(
      const ServerOptions& options, StateMachine& state_machine,
      Transport& transport, RuntimeQueues queues);

  NodeRuntime(const NodeRuntime&) = delete;
  NodeRuntime& operator=(const NodeRuntime&) = delete;

  uint64_t cluster_id() const { return cluster_id_; }
  LogStore& log() { return *log_; }
  ReplicaState& replica() { return *replica_; }
  const Node& node() const { return *node_; }
  RaftLoop& raft_loop() { return *raft_loop_; }
  ApplyLoop& apply_loop() { return *apply_loop_; }
  SnapshotWriter& snapshot_writer() { return *snapshot_writer_; }
  AtomicCounters& counters() { return counters_; }

  // The receiving end of a snapshot stream (TransportHandler::
  // ReceiveSnapshot): the InstallSnapshot reaches queues.raft_message once
  // the files are verified and published.
  absl::StatusOr<std::unique_ptr<SnapshotSink>> ReceiveSnapshot(
      const Message& message, const SnapshotManifest& manifest);

  // The core's status with the log counters of the raft loop (the other
  // counters and the apply loop's applied index are the pump's to add).
  NodeStatus Status() const;

 private:
  NodeRuntime(uint64_t cluster_id, RuntimeQueues queues)
      : cluster_id_(cluster_id), queues_(std::move(queues)) {}
  absl::Status Assemble(const ServerOptions& options,
                        StateMachine& state_machine, Transport& transport);

  uint64_t cluster_id_;
  RuntimeQueues queues_;
  AtomicCounters counters_;
  std::atomic<bool> snapshot_in_progress_{false};
  std::unique_ptr<LogStore> owned_log_;
  LogStore* log_ = nullptr;
  std::unique_ptr<ReplicaState> replica_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<RaftLoop> raft_loop_;
  std::unique_ptr<ApplyLoop> apply_loop_;
  std::unique_ptr<SnapshotWriter> snapshot_writer_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_NODE_RUNTIME_H_
