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
// once) and must not block; they may call Propose, Read, ReadLocal, Status
// and TransferLeadership, but not Stop or the destructor.
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
#include "absl/time/time.h"
#include "raft/core/status.h"
#include "raft/core/types.h"
#include "raft/server/node_runtime.h"
#include "raft/server/runtime_types.h"
#include "raft/state_machine.h"
#include "raft/storage/log_store.h"
#include "raft/transport.h"

namespace driftwood::raft {

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
  // the runtime counters, as of the raft loop's last turn; the applied index
  // (and the commit index, never below it) as of the apply thread's latest
  // step: once a proposal's callback ran, both are at least its index.
  NodeStatus Status() const;
  // Status().term and Status().leader without copying the rest (each an
  // atomic load): for what every request reads, such as response headers.
  Term term() const;
  NodeId leader() const;

  NodeId id() const { return options_.id; }
  uint64_t cluster_id() const;

  // Stops serving: a leader first transfers leadership to its most
  // up-to-date voter and waits up to two election timeouts for it to take
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
  std::unique_ptr<Impl> impl_;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_SERVER_H_
