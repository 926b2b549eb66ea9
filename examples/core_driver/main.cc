// Driftwood example: three Raft cores in one process, each with an in-memory
// log, driven through the driver contract of raft/core/ready.h. The network is
// a queue; the "state machine" appends each committed command to a vector.
// It elects a leader, replicates --entries commands and checks that every node
// applied the same sequence.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "raft/core/node.h"
#include "raft/storage/memory_log_store.h"

namespace {

using driftwood::raft::Config;
using driftwood::raft::Configuration;
using driftwood::raft::Entry;
using driftwood::raft::EntryType;
using driftwood::raft::MemoryLogStore;
using driftwood::raft::Message;
using driftwood::raft::Node;
using driftwood::raft::NodeId;
using driftwood::raft::PersistRequest;
using driftwood::raft::Ready;
using driftwood::raft::Role;

struct Replica {
  std::unique_ptr<MemoryLogStore> store;
  std::unique_ptr<Node> node;
  std::vector<std::string> applied;
};

// Performs one Ready exactly as the driver contract says.
void HandleReady(Replica& replica, std::deque<Message>& network) {
  Ready ready = replica.node->TakeReady();
  // 1. Requests whose term is durable leave before the write.
  for (Message& message : ready.messages) network.push_back(std::move(message));
  // 2. One atomic write, synced when asked.
  PersistRequest request;
  request.hard_state = ready.hard_state;
  request.entries = ready.entries;
  request.sync = ready.must_sync;
  if (absl::Status status = replica.store->Persist(request); !status.ok()) {
    // Fail-stop: a store that cannot persist cannot promise anything.
    std::fprintf(stderr, "persist failed: %s\n", status.ToString().c_str());
    std::abort();
  }
  // 3. Responses only after the write.
  for (Message& message : ready.messages_after_persist) {
    network.push_back(std::move(message));
  }
  // 4. Apply committed entries in order.
  for (const Entry& entry : ready.committed_entries) {
    if (entry.type == EntryType::kNormal)
      replica.applied.push_back(entry.data.str());
  }
  // 5. Acknowledge.
  replica.node->Advance(ready);
}

}  // namespace

int main(int argc, char** argv) {
  int entries = 10;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0) {
      std::printf(
          "usage: core_driver [--entries N]\n"
          "Runs three in-memory Raft cores in one process, replicates N "
          "commands (default 10)\nand checks that every replica applied the "
          "same sequence.\n");
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

  Configuration configuration;
  configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  std::map<NodeId, Replica> replicas;
  for (NodeId id : configuration.voters) {
    Replica replica;
    replica.store = std::make_unique<MemoryLogStore>(configuration);
    Config config;
    config.id = id;
    config.seed = 42;
    auto node = Node::Create(config, *replica.store);
    if (!node.ok()) {
      std::fprintf(stderr, "%s\n", node.status().ToString().c_str());
      return 1;
    }
    replica.node = *std::move(node);
    replicas.emplace(id, std::move(replica));
  }

  std::deque<Message> network;
  auto run_until_quiet = [&] {
    for (bool busy = true; busy;) {
      busy = false;
      for (auto& [id, replica] : replicas) {
        while (replica.node->HasReady()) {
          HandleReady(replica, network);
          busy = true;
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

  for (int i = 0; i < entries; ++i) {
    auto id = leader->Propose("command-" + std::to_string(i));
    if (!id.ok()) {
      std::fprintf(stderr, "%s\n", id.status().ToString().c_str());
      return 1;
    }
  }
  run_until_quiet();
  // Followers learn the final commit index from the next heartbeat.
  leader->Tick();
  run_until_quiet();

  for (const auto& [id, replica] : replicas) {
    std::printf("node %llu applied %zu commands\n",
                static_cast<unsigned long long>(id.value()),
                replica.applied.size());
    if (replica.applied != replicas.begin()->second.applied ||
        replica.applied.size() != static_cast<size_t>(entries)) {
      std::fprintf(stderr, "replicas diverged\n");
      return 1;
    }
  }
  return 0;
}
