// Driftwood: Server, the Raft node an application embeds (docs/design.md
// "The runtime").
//
//   raft::ServerOptions options;
//   options.id = raft::NodeId(1);
//   options.members = {raft::NodeId(1), raft::NodeId(2), raft::NodeId(3)};
//   options.data_dir = "/var/lib/app/node1";
//   options.bootstrap = true;  // first start of a new cluster
//   auto server = raft::Server::Start(options, state_machine, transport);
//   (*server)->Propose(command, absl::Now() + absl::Seconds(5),
//                      [](absl::StatusOr<std::string> response) { ... });
//
// A Server runs four threads, each a thin pump around a single-threaded step
// function: the raft loop (raft/server/raft_loop.h: owns the core and the
// log store's write side; group commit), the apply loop
// (raft/server/apply_loop.h: owns the state machine; completes proposals and
// reads), the snapshot writer (raft/server/snapshot_writer.h) and the timer
// (ticks and deadlines). They talk through bounded queues; no mutex guards
// the core.
//
// Outcomes (docs/design.md "The runtime", outcome table). A proposal's
// callback receives exactly one of:
//   OK with the state machine's response: committed and applied;
//   Unavailable or FailedPrecondition: never appended (no leader known, a
//     leadership transfer in progress, a core limit): safe to retry;
//   ResourceExhausted: refused by a queue or cap (proposal queue, apply lag):
//     never appended, retry later;
//   InvalidArgument: the command is larger than max_request_bytes;
//   Aborted: another entry committed at its index: known not committed;
//   DeadlineExceeded: the deadline passed, or its index was covered by an
//     installed snapshot before its entry was seen: outcome unknown;
//   Cancelled: the server stopped first: outcome unknown.
// Reads complete with the query's result or the same statuses.
//
// Thread safety: every public method may be called from any thread.
// Callbacks run on the apply thread (or on the calling thread when refused at
// once) and must not block; they may call Propose and Read.
#ifndef DRIFTWOOD_RAFT_SERVER_SERVER_H_
#define DRIFTWOOD_RAFT_SERVER_SERVER_H_

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "raft/core/status.h"
#include "raft/core/types.h"
#include "raft/server/replica_state.h"
#include "raft/server/runtime_types.h"
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

  // Limits. Each refuses work with the status the file comment lists
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

// The cluster id every node of a cluster derives from the initial members
// and the cluster token.
uint64_t ClusterIdFor(const std::vector<NodeId>& members,
                      const std::string& cluster_token);

class Server : public TransportHandler {
 public:
  // Opens the data folder (refusing one of another cluster or node, or an
  // empty one without bootstrap), recovers through ReplicaState, starts the
  // threads and attaches to `transport`. `state_machine` and `transport`
  // must outlive the server. InvalidArgument for bad options;
  // FailedPrecondition for a data folder the options do not fit; DataLoss
  // when the durable state is inconsistent.
  static absl::StatusOr<std::unique_ptr<Server>> Start(
      const ServerOptions& options, StateMachine& state_machine,
      Transport& transport);

  // Stops the server (Stop()).
  ~Server() override;

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Replicates `command` and applies it; `done` receives the state
  // machine's response or a status of the file comment's list. On a
  // follower the command is forwarded to the leader.
  void Propose(std::string command, absl::Time deadline, ResultCallback done);

  // A linearizable read (thesis §6.4): `query` runs against the state
  // machine once it has applied through a read index confirmed by a quorum.
  void Read(std::string query, absl::Time deadline, ResultCallback done);

  // A serializable read of this node's applied state, which may be stale.
  // Runs on the calling thread when the state machine allows concurrent
  // queries, otherwise on the apply thread.
  void ReadLocal(std::string query, ResultCallback done);

  // Asks the leader to hand leadership to `to` (thesis §3.10). `done` runs
  // on the raft thread when the transfer started (OK) or was refused
  // (FailedPrecondition: not leader; InvalidArgument: not a voter); watch
  // Status() for its completion.
  void TransferLeadership(NodeId to,
                          absl::AnyInvocable<void(absl::Status)> done);

  // Role, term, leader, log, commit and applied index, per-peer progress and
  // the runtime counters, as of the raft loop's last turn.
  NodeStatus Status() const;

  NodeId id() const { return options_.id; }
  uint64_t cluster_id() const { return cluster_id_; }

  // Stops serving: a leader first transfers leadership to its most
  // up-to-date voter and waits up to an election timeout for it to take
  // over. Then the transport is detached, the threads finish, and every
  // request still waiting completes with Cancelled. Idempotent.
  void Stop();

  // TransportHandler: inbound traffic, from transport threads.
  void HandleMessages(std::vector<Message> messages) override;
  void HandleServerMessage(ServerMessage message) override;
  absl::StatusOr<std::unique_ptr<SnapshotSink>> ReceiveSnapshot(
      const Message& message, const SnapshotManifest& manifest) override;
  void ReportUnreachable(NodeId peer) override;

 private:
  class Impl;
  explicit Server(const ServerOptions& options);

  ServerOptions options_;
  uint64_t cluster_id_ = 0;
  std::unique_ptr<Impl> impl_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_SERVER_H_
