// core_bench: the Raft core alone. Three cores in one thread, no I/O: every
// entry is proposed to the leader, replicated to both followers, persisted to
// a MemoryLogStore on all three, committed and handed to apply on all three.
// Prints ns per entry (CPU time of the whole cluster on one core) and
// entries/s, as the median of interleaved repetitions with min and max.
//
//   core_bench [--seconds S] [--repetitions N]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_clock.h"
#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/storage/memory_log_store.h"

namespace {

using driftwood::bench::ProcessCpuSeconds;
using driftwood::bench::WallSeconds;

using driftwood::raft::Config;
using driftwood::raft::Configuration;
using driftwood::raft::EntryData;
using driftwood::raft::LogIndex;
using driftwood::raft::MemoryLogStore;
using driftwood::raft::Message;
using driftwood::raft::Node;
using driftwood::raft::NodeId;
using driftwood::raft::Ready;
using driftwood::raft::ReadyProcessor;
using driftwood::raft::Role;
using driftwood::raft::SnapshotMeta;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "core_bench: %s\n", what.c_str());
  std::exit(1);
}

class Cluster {
 public:
  Cluster() {
    Configuration configuration;
    configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
    for (NodeId id : configuration.voters) {
      Replica& replica = replicas_[id];
      replica.store = std::make_unique<MemoryLogStore>(configuration);
      Config config;
      config.id = id;
      config.max_uncommitted_bytes = 0;
      config.max_inflight_messages = 1024;
      config.max_inflight_bytes = 0;
      auto node = Node::Create(config, *replica.store);
      if (!node.ok()) Die(node.status().ToString());
      replica.node = *std::move(node);
      replica.processor = std::make_unique<ReadyProcessor>(
          *replica.node, *replica.store,
          ReadyProcessor::Callbacks{
              .send =
                  [this](std::vector<Message>& messages) {
                    for (Message& message : messages) {
                      network_.push_back(std::move(message));
                    }
                  },
              .hand_over =
                  [&replica](const Ready& ready) {
                    for (const auto& entry : ready.committed_entries) {
                      replica.applied_bytes += entry.data.size();
                      if (entry.type == driftwood::raft::EntryType::kNormal) {
                        ++replica.applied;
                      }
                    }
                  }});
    }
    replicas_[NodeId(1)].node->Campaign();
    RunUntilQuiet();
    if (replicas_[NodeId(1)].node->role() != Role::kLeader) Die("no leader");
  }

  Node& leader() { return *replicas_[NodeId(1)].node; }

  // Drives every node until no Ready and no message is left.
  void RunUntilQuiet() {
    for (bool busy = true; busy;) {
      busy = false;
      for (auto& [id, replica] : replicas_) {
        const uint64_t readies = replica.processor->stats().readies;
        if (!replica.processor->Process().ok()) Die("persist failed");
        if (replica.processor->stats().readies != readies) busy = true;
      }
      while (!network_.empty()) {
        Message message = std::move(network_.front());
        network_.pop_front();
        if (!replicas_[message.to].node->Step(message).ok()) Die("bad message");
        busy = true;
      }
    }
  }

  // Entries applied on the node that applied the fewest.
  uint64_t MinApplied() const {
    uint64_t applied = UINT64_MAX;
    for (const auto& [id, replica] : replicas_) {
      applied = std::min(applied, replica.applied);
    }
    return applied;
  }

  // Keeps memory flat on long runs: snapshot at the applied index and drop
  // the log before it.
  void Compact() {
    for (auto& [id, replica] : replicas_) {
      const LogIndex applied = replica.node->applied_index();
      auto term = replica.store->TermAt(applied);
      if (!term.ok()) continue;
      if (!replica.store
               ->SetSnapshot(
                   SnapshotMeta{applied, *term, replica.node->configuration()})
               .ok() ||
          !replica.store->Compact(applied).ok()) {
        Die("compaction failed");
      }
    }
  }

 private:
  struct Replica {
    std::unique_ptr<MemoryLogStore> store;
    std::unique_ptr<Node> node;
    std::unique_ptr<ReadyProcessor> processor;
    uint64_t applied = 0;
    uint64_t applied_bytes = 0;
  };

  std::map<NodeId, Replica> replicas_;
  std::deque<Message> network_;
};

struct Sample {
  double cpu_ns_per_entry;
  double entries_per_second;  // wall clock
};

Sample RunOnce(size_t payload, size_t batch, double seconds) {
  Cluster cluster;
  const std::string data(payload, 'x');
  uint64_t proposed = 0;
  const double wall_start = WallSeconds();
  const double cpu_start = ProcessCpuSeconds();
  while (WallSeconds() - wall_start < seconds) {
    for (int round = 0; round < 16; ++round) {
      // Each entry its own payload, as proposals from clients would be.
      std::vector<EntryData> commands;
      commands.reserve(batch);
      for (size_t i = 0; i < batch; ++i) commands.emplace_back(data);
      if (!cluster.leader().ProposeBatch(std::move(commands)).ok()) {
        Die("propose failed");
      }
      proposed += batch;
      cluster.RunUntilQuiet();
    }
    if (proposed % (1 << 16) < 16 * batch) cluster.Compact();
  }
  // Followers learn the last commit index from the next heartbeat.
  cluster.leader().Tick();
  cluster.RunUntilQuiet();
  const double cpu = ProcessCpuSeconds() - cpu_start;
  const double wall = WallSeconds() - wall_start;
  if (cluster.MinApplied() != proposed) {
    Die("not every node applied every entry: " +
        std::to_string(cluster.MinApplied()) + " of " +
        std::to_string(proposed));
  }
  return {cpu * 1e9 / static_cast<double>(proposed),
          static_cast<double>(proposed) / wall};
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  int repetitions = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0) {
      std::printf(
          "usage: core_bench [--seconds S] [--repetitions N]\n"
          "Three in-memory Raft cores in one thread: ns per entry (CPU) and\n"
          "entries/s for 16 B and 256 B payloads at batch sizes 1, 64, 1024.\n"
          "Each configuration runs S seconds (default 2), N times interleaved\n"
          "(default 3); medians are printed with min and max.\n");
      return 0;
    } else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (std::strcmp(argv[i], "--repetitions") == 0 && i + 1 < argc) {
      repetitions = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "core_bench: unknown argument '%s' (try --help)\n",
                   argv[i]);
      return 2;
    }
  }
  if (seconds <= 0 || repetitions < 1) {
    std::fprintf(stderr,
                 "core_bench: --seconds and --repetitions must be positive\n");
    return 2;
  }
  const size_t payloads[] = {16, 256};
  const size_t batches[] = {1, 64, 1024};
  std::map<std::pair<size_t, size_t>, std::vector<Sample>> samples;
  for (int rep = 0; rep < repetitions; ++rep) {
    for (size_t payload : payloads) {
      for (size_t batch : batches) {
        samples[{payload, batch}].push_back(RunOnce(payload, batch, seconds));
      }
    }
  }
  std::printf(
      "core_bench --seconds %g --repetitions %d (3 nodes, one thread, "
      "MemoryLogStore)\n",
      seconds, repetitions);
  std::printf("%8s %6s %28s %34s\n", "payload", "batch",
              "CPU ns/entry med [min-max]", "entries/s med [min-max]");
  for (auto& [key, runs] : samples) {
    auto by_cpu = runs;
    std::sort(by_cpu.begin(), by_cpu.end(),
              [](const Sample& a, const Sample& b) {
                return a.cpu_ns_per_entry < b.cpu_ns_per_entry;
              });
    auto by_rate = runs;
    std::sort(by_rate.begin(), by_rate.end(),
              [](const Sample& a, const Sample& b) {
                return a.entries_per_second < b.entries_per_second;
              });
    const size_t mid = runs.size() / 2;
    std::printf("%6zu B %6zu %10.0f [%6.0f-%6.0f] %14.0f [%8.0f-%8.0f]\n",
                key.first, key.second, by_cpu[mid].cpu_ns_per_entry,
                by_cpu.front().cpu_ns_per_entry, by_cpu.back().cpu_ns_per_entry,
                by_rate[mid].entries_per_second,
                by_rate.front().entries_per_second,
                by_rate.back().entries_per_second);
  }
  return 0;
}
