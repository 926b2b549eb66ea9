#include "raft/server/node_runtime.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/core/config.h"
#include "raft/storage/rocksdb_log_store.h"
#include "spdlog/spdlog.h"

namespace driftwood::raft {

namespace {

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

std::vector<NodeId> Sorted(std::vector<NodeId> nodes) {
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  return nodes;
}

}  // namespace

absl::Status ValidateServerOptions(const ServerOptions& options) {
  if (options.id == kNoNode) {
    return absl::InvalidArgumentError("ServerOptions.id must not be 0");
  }
  const std::vector<NodeId> members = Sorted(options.members);
  if (!std::binary_search(members.begin(), members.end(), options.id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("ServerOptions.members must include this node (",
                     options.id.value(), ")"));
  }
  if (options.data_dir.empty()) {
    return absl::InvalidArgumentError("ServerOptions.data_dir is required");
  }
  if (options.tick_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ServerOptions.tick_interval must be positive");
  }
  if (options.read_retry_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "ServerOptions.read_retry_interval must be positive");
  }
  if (options.max_pending_proposals == 0 || options.max_pending_reads == 0 ||
      options.max_queued_messages == 0) {
    return absl::InvalidArgumentError(
        "ServerOptions: queue limits must be positive");
  }
  return absl::OkStatus();
}

Clock& SystemClock() {
  static RealClock* const kClock = new RealClock();
  return *kClock;
}

uint64_t ClusterIdFor(const std::vector<NodeId>& members,
                      const std::string& cluster_token) {
  // FNV-1a over the sorted member ids and the token: the same on every node
  // without talking (docs/design.md "The runtime": identity).
  uint64_t hash = 0xcbf29ce484222325ULL;
  auto mix = [&hash](uint8_t byte) {
    hash ^= byte;
    hash *= 0x100000001b3ULL;
  };
  for (NodeId member : Sorted(members)) {
    for (int shift = 0; shift < 64; shift += 8) {
      mix(static_cast<uint8_t>(member.value() >> shift));
    }
  }
  mix(0xff);
  for (char c : cluster_token) mix(static_cast<uint8_t>(c));
  return hash == 0 ? 1 : hash;
}

absl::StatusOr<std::unique_ptr<NodeRuntime>> NodeRuntime::Open(
    const ServerOptions& options, StateMachine& state_machine,
    Transport& transport, RuntimeQueues queues) {
  if (absl::Status status = ValidateServerOptions(options); !status.ok()) {
    return status;
  }
  std::unique_ptr<NodeRuntime> runtime(new NodeRuntime(
      ClusterIdFor(options.members, options.cluster_token), std::move(queues)));
  if (absl::Status status =
          runtime->Assemble(options, state_machine, transport);
      !status.ok()) {
    return status;
  }
  return runtime;
}

absl::Status NodeRuntime::Assemble(const ServerOptions& options,
                                   StateMachine& state_machine,
                                   Transport& transport) {
  const uint64_t cluster_id = cluster_id_;
  const NodeId id = options.id;
  if (options.log_store != nullptr) {
    log_ = options.log_store;
  } else {
    const std::filesystem::path log_dir = options.data_dir / "log";
    std::error_code error;
    if (!options.bootstrap && !std::filesystem::exists(log_dir, error)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "data folder ", options.data_dir.string(),
          " holds no log: a node of an existing cluster cannot start empty "
          "(it could vote twice under its old id); use bootstrap only when "
          "creating a new cluster"));
    }
    std::filesystem::create_directories(options.data_dir, error);
    if (error) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create data folder ", options.data_dir.string(),
                       ": ", error.message()));
    }
    RocksDbLogStoreOptions store_options;
    store_options.path = log_dir.string();
    store_options.cluster_id = cluster_id;
    store_options.node_id = id;
    store_options.create_if_missing = options.bootstrap;
    store_options.background_write_bytes_per_second =
        options.log_background_write_bytes_per_second;
    store_options.initial_configuration.voters = Sorted(options.members);
    absl::StatusOr<std::unique_ptr<RocksDbLogStore>> store =
        RocksDbLogStore::Open(store_options);
    if (!store.ok()) {
      return absl::Status(
          store.status().code(),
          absl::StrCat("data folder ", options.data_dir.string(), ": ",
                       store.status().message()));
    }
    owned_log_ = *std::move(store);
    log_ = owned_log_.get();
  }

  absl::StatusOr<std::unique_ptr<ReplicaState>> replica =
      ReplicaState::Recover(state_machine, *log_,
                            {.snapshot_dir = options.data_dir / "snapshots",
                             .policy = options.compaction});
  if (!replica.ok()) return replica.status();
  replica_ = *std::move(replica);
  for (const std::string& note : replica_->recovery().notes) {
    spdlog::info("node {} recovery: {}", id.value(), note);
  }

  Config config;
  config.id = id;
  config.election_ticks = options.election_ticks;
  config.heartbeat_ticks = options.heartbeat_ticks;
  config.seed = options.seed;
  config.pre_vote = options.pre_vote;
  config.check_quorum = options.check_quorum;
  config.max_message_bytes = options.max_message_bytes;
  config.max_inflight_bytes = options.max_inflight_bytes;
  config.max_inflight_messages = options.max_inflight_messages;
  config.snapshot_timeout_ticks = options.snapshot_timeout_ticks;
  config.max_uncommitted_bytes = options.max_uncommitted_bytes;
  config.applied = replica_->applied();
  absl::StatusOr<std::unique_ptr<Node>> node = Node::Create(config, *log_);
  if (!node.ok()) return node.status();
  node_ = *std::move(node);

  raft_loop_ = std::make_unique<RaftLoop>(
      *node_, *log_, *replica_,
      RaftLoopOutputs{.send =
                          [&transport](std::vector<Message>& messages) {
                            transport.Send(messages);
                          },
                      .send_server_message =
                          [&transport](ServerMessage message) {
                            transport.SendServerMessage(std::move(message));
                          },
                      .apply = queues_.apply,
                      .snapshot = queues_.snapshot,
                      .applied_index = queues_.applied_index},
      RaftLoopOptions{
          .max_apply_lag = options.max_apply_lag,
          .first_request_id = RequestIdBase(
              (options.clock != nullptr ? *options.clock : SystemClock())
                  .Now()),
          .hand_over_before_persist = options.hand_over_before_persist,
          .read_retry_ticks = static_cast<uint64_t>(std::max(
              1.0, std::ceil(absl::FDivDuration(options.read_retry_interval,
                                                options.tick_interval))))},
      counters_);
  apply_loop_ = std::make_unique<ApplyLoop>(
      *replica_,
      ApplyLoopOutputs{.raft = queues_.raft_control,
                       .snapshot = queues_.snapshot,
                       .applied = queues_.applied_advanced},
      counters_, snapshot_in_progress_);
  if (replica_->recovery().snapshot_needed) apply_loop_->WantSnapshot();
  snapshot_writer_ = std::make_unique<SnapshotWriter>(
      id, *replica_, transport, queues_.raft_control, counters_,
      snapshot_in_progress_);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SnapshotSink>> NodeRuntime::ReceiveSnapshot(
    const Message& message, const SnapshotManifest& manifest) {
  absl::StatusOr<std::unique_ptr<SnapshotReceiver>> receiver =
      SnapshotReceiver::Begin(*replica_, message, manifest,
                              queues_.raft_message, counters_);
  if (!receiver.ok()) return receiver.status();
  return std::unique_ptr<SnapshotSink>(*std::move(receiver));
}

NodeStatus NodeRuntime::Status() const {
  NodeStatus status = node_->Status();
  const ReadyProcessor::Stats& stats = raft_loop_->processor().stats();
  status.counters.log_writes = stats.writes;
  status.counters.fsyncs = stats.syncs;
  status.counters.entries_persisted = stats.entries_persisted;
  status.counters.fsync_micros = stats.sync_micros;
  return status;
}

}  // namespace driftwood::raft
