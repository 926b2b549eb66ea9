// Driftwood example: three Raft cores in one process, each with an in-memory
// log, driven through the driver contract of raft/core/ready.h by the
// ReadyProcessor (raft/server/ready_processor.h). The network is
// a queue; each node's state machine is the reference in-memory key-value map
// behind a ReplicaState, which snapshots it every 20 entries into a folder and
// compacts the log behind the snapshot. It elects a leader, replicates
// --entries Put commands, restarts one node from its snapshot and log, and
// checks that every node holds the same keys.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/server/replica_state.h"
#include "raft/storage/memory_log_store.h"
#include "statemachine/kv_command.h"
#include "statemachine/memory_kv_state_machine.h"

namespace {

using driftwood::raft::Config;
using driftwood::raft::Configuration;
using driftwood::raft::Entry;
using driftwood::raft::EntryType;
using driftwood::raft::MemoryLogStore;
using driftwood::raft::Message;
using driftwood::raft::Node;
using driftwood::raft::NodeId;
using driftwood::raft::Ready;
using driftwood::raft::ReadyProcessor;
using driftwood::raft::Role;

using driftwood::raft::ReplicaState;
using driftwood::statemachine::MemoryKvStateMachine;

// Ends the program: a node whose storage or state machine fails must stop.
void Die(const char* what, const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", what, status.ToString().c_str());
  std::exit(1);
}

struct Replica {
  std::unique_ptr<MemoryLogStore> store;  // survives a "restart" below
  std::filesystem::path snapshot_dir;     // so do the snapshot files
  std::unique_ptr<MemoryKvStateMachine> state_machine;
  std::unique_ptr<ReplicaState> replica_state;
  std::unique_ptr<Node> node;
  // Performs each Ready in the order of the driver contract.
  std::unique_ptr<ReadyProcessor> processor;
};

// Step 4 of the driver contract, the apply side: restore a snapshot the
// leader sent (its files were received and published before the message was
// stepped), then apply in order; snapshot and compact when the policy says
// so or a follower needs a snapshot.
void HandOver(Replica& replica, const Ready& ready) {
  ReplicaState& state = *replica.replica_state;
  if (ready.snapshot) {
    if (absl::Status status = state.Install(*ready.snapshot); !status.ok()) {
      Die("install", status);
    }
  }
  if (auto applied =
          state.Apply(ready.committed_entries, replica.node->configuration());
      !applied.ok()) {
    Die("apply", applied.status());
  }
  if (state.SnapshotDue() || ready.snapshot_wanted) {
    if (auto made = state.CreateSnapshot(*replica.store); !made.ok()) {
      Die("snapshot", made.status());
    }
  }
}

// Starts (or restarts) a node: the recovery algorithm reconciles the state
// machine, the snapshots and the log, then the core resumes after it.
void Start(Replica& replica, NodeId id, std::deque<Message>& network) {
  replica.processor.reset();
  replica.state_machine = std::make_unique<MemoryKvStateMachine>();
  auto recovered = ReplicaState::Recover(
      *replica.state_machine, *replica.store,
      {.snapshot_dir = replica.snapshot_dir,
       .policy = {.trailing_entries = 10, .snapshot_every_entries = 20}});
  if (!recovered.ok()) Die("recovery", recovered.status());
  replica.replica_state = *std::move(recovered);
  Config config;
  config.id = id;
  config.seed = 42;
  config.applied = replica.replica_state->applied();
  auto node = Node::Create(config, *replica.store);
  if (!node.ok()) Die("start", node.status());
  replica.node = *std::move(node);
  replica.processor = std::make_unique<ReadyProcessor>(
      *replica.node, *replica.store,
      ReadyProcessor::Callbacks{
          .send =
              [&network](std::vector<Message>& messages) {
                for (Message& message : messages) {
                  network.push_back(std::move(message));
                }
              },
          .hand_over =
              [&replica](const Ready& ready) { HandOver(replica, ready); }});
}

}  // namespace

int main(int argc, char** argv) {
  int entries = 10;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0) {
      std::printf(
          "usage: core_driver [--entries N]\n"
          "Runs three in-memory Raft cores in one process, replicates N Put "
          "commands (default 10)\nwith snapshots every 20 entries, restarts "
          "a follower and checks that every replica\nholds the same keys.\n");
      return 0;
    }
    if (std::strcmp(argv[i], "--entries") == 0 && i + 1 < argc) {
      entries = std::atoi(argv[++i]);
      continue;
    }
    std::fprintf(stderr, "core_driver: unknown argument '%s' (try --help)\n",
                 argv[i]);
    return 2;
  }
  if (entries < 0) {
    std::fprintf(stderr, "core_driver: --entries must be >= 0\n");
    return 2;
  }

  std::string folder_pattern =
      (std::filesystem::temp_directory_path() / "core-driver-XXXXXX").string();
  if (mkdtemp(folder_pattern.data()) == nullptr) {
    std::perror("core_driver: mkdtemp");
    return 1;
  }
  const std::filesystem::path folder = folder_pattern;

  Configuration configuration;
  configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  std::deque<Message> network;
  std::map<NodeId, Replica> replicas;
  for (NodeId id : configuration.voters) {
    Replica& replica = replicas[id];
    replica.store = std::make_unique<MemoryLogStore>(configuration);
    replica.snapshot_dir = folder / absl::StrCat("node-", id.value());
    Start(replica, id, network);
  }

  auto run_until_quiet = [&] {
    for (bool busy = true; busy;) {
      busy = false;
      for (auto& [id, replica] : replicas) {
        if (replica.node->HasReady()) busy = true;
        // A failed write stops the program (fail-stop).
        if (absl::Status status = replica.processor->Process(); !status.ok()) {
          Die("persist", status);
        }
      }
      while (!network.empty()) {
        Message message = std::move(network.front());
        network.pop_front();
        (void)replicas.at(message.to).node->Step(message);
        busy = true;
      }
    }
  };

  // Tick until some node's election timeout fires and it wins.
  Node* leader = nullptr;
  for (int tick = 0; tick < 1000 && leader == nullptr; ++tick) {
    for (auto& [id, replica] : replicas) replica.node->Tick();
    run_until_quiet();
    for (auto& [id, replica] : replicas) {
      if (replica.node->role() == Role::kLeader) leader = replica.node.get();
    }
  }
  if (leader == nullptr) {
    std::fprintf(stderr, "no leader elected\n");
    return 1;
  }
  std::printf("node %llu is leader of term %llu\n",
              static_cast<unsigned long long>(leader->id().value()),
              static_cast<unsigned long long>(leader->term().value()));

  using driftwood::statemachine::EncodeCommand;
  using driftwood::statemachine::PutCommand;
  for (int i = 0; i < entries; ++i) {
    auto id = leader->Propose(EncodeCommand(
        PutCommand{absl::StrCat("key-", i % 50), absl::StrCat("value-", i)}));
    if (!id.ok()) {
      std::fprintf(stderr, "%s\n", id.status().ToString().c_str());
      return 1;
    }
  }
  run_until_quiet();
  // Followers learn the final commit index from the next heartbeat.
  leader->Tick();
  run_until_quiet();

  // Restart a follower: it recovers from its newest snapshot and replays the
  // rest of its log.
  NodeId restarted = NodeId(1);
  while (replicas.at(restarted).node.get() == leader) {
    restarted = restarted.next();
  }
  Start(replicas.at(restarted), restarted, network);
  std::printf("node %llu restarted: %s\n",
              static_cast<unsigned long long>(restarted.value()),
              replicas.at(restarted).replica_state->recovery().notes.empty()
                  ? "nothing to restore"
                  : replicas.at(restarted)
                        .replica_state->recovery()
                        .notes.back()
                        .c_str());
  leader->Tick();
  run_until_quiet();
  leader->Tick();
  run_until_quiet();

  using driftwood::statemachine::CountQuery;
  using driftwood::statemachine::DecodeCountResult;
  using driftwood::statemachine::EncodeQuery;
  using driftwood::statemachine::GetQuery;
  int status = 0;
  const uint64_t expected_keys = static_cast<uint64_t>(std::min(entries, 50));
  for (const auto& [id, replica] : replicas) {
    auto count = replica.state_machine->Query(EncodeQuery(CountQuery{}));
    auto keys = count.ok() ? DecodeCountResult(*count) : count.status();
    auto first = replica.state_machine->Query(EncodeQuery(GetQuery{"key-0"}));
    auto reference = replicas.begin()->second.state_machine->Query(
        EncodeQuery(GetQuery{"key-0"}));
    std::printf(
        "node %llu applied through %llu, %llu keys, log starts at "
        "%llu\n",
        static_cast<unsigned long long>(id.value()),
        static_cast<unsigned long long>(
            replica.replica_state->applied().value()),
        static_cast<unsigned long long>(keys.ok() ? *keys : 0),
        static_cast<unsigned long long>(replica.store->FirstIndex().value()));
    if (!keys.ok() || *keys != expected_keys || !first.ok() ||
        !reference.ok() || *first != *reference ||
        replica.replica_state->applied() !=
            replicas.begin()->second.replica_state->applied()) {
      std::fprintf(stderr, "replicas diverged\n");
      status = 1;
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(folder, ignored);
  return status;
}
