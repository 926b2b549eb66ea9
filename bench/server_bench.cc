// server_bench: proposals through three Servers in one process.
//
//   server_bench [--transport inprocess|grpc] [--concurrency 1,16,64,256]
//                [--seconds S] [--repetitions R] [--value-bytes B] [--dir D]
//
// Three raft::Servers on the in-process transport (or on GrpcTransport over
// loopback gRPC, plaintext, ports chosen by the OS), each with a RocksDB log
// (fsync on) and an in-memory key-value state machine, in folders under D
// (default: a new folder under /tmp, removed at the end). For each
// concurrency C, C closed-loop clients propose B-byte Put commands (default
// 256) to the leader for S seconds (default 3); each point runs R times
// (default 3), interleaved with the other points, and the median is printed
// with the minimum and maximum. Figures: proposals/s, latency p50/p99/p99.9
// (ms), process CPU microseconds per proposal (all three servers, the
// clients and the transport), and entries per fsync on the leader.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "bench/bench_clock.h"
#include "raft/server/in_process_transport.h"
#include "raft/server/node_runtime.h"
#include "raft/server/server.h"
#include "rpc/grpc_transport.h"
#include "spdlog/spdlog.h"
#include "statemachine/kv_command.h"
#include "statemachine/memory_kv_state_machine.h"

namespace {

using driftwood::bench::ProcessCpuSeconds;

namespace fs = std::filesystem;
using driftwood::raft::InProcessNetwork;
using driftwood::raft::NodeId;
using driftwood::raft::NodeStatus;
using driftwood::raft::Role;
using driftwood::raft::Server;
using driftwood::raft::ServerOptions;
using driftwood::raft::Transport;
using driftwood::statemachine::EncodeCommand;
using driftwood::statemachine::MemoryKvStateMachine;
using driftwood::statemachine::PutCommand;

constexpr char kUsage[] =
    "usage: server_bench [--transport inprocess|grpc]\n"
    "                    [--concurrency 1,16,64,256] [--seconds S]\n"
    "                    [--repetitions R] [--value-bytes B] [--dir D]\n"
    "\n"
    "Runs three Servers in one process (in-process transport, or gRPC over\n"
    "loopback with --transport grpc; RocksDB logs with fsync, in-memory\n"
    "key-value state machines) and measures closed-loop\n"
    "proposals to the leader at each concurrency: proposals/s, latency\n"
    "p50/p99/p99.9, CPU microseconds per proposal and entries per fsync.\n"
    "Each point runs R times (default 3), interleaved; medians with min and\n"
    "max are printed. S defaults to 3 seconds, B to 256 bytes, D to a new\n"
    "folder under /tmp (removed at the end).\n";

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "server_bench: %s\n", what.c_str());
  std::exit(1);
}

struct Point {
  double ops_per_second = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
  double cpu_us_per_op = 0;
  double entries_per_fsync = 0;
  uint64_t errors = 0;
};

class Cluster {
 public:
  Cluster(const fs::path& dir, bool grpc) {
    std::vector<NodeId> members = {NodeId(1), NodeId(2), NodeId(3)};
    if (grpc) {
      // Every transport listens first, so each knows the others' ports.
      std::map<uint64_t, driftwood::rpc::GrpcTransport*> transports;
      for (NodeId id : members) {
        driftwood::rpc::GrpcTransportOptions options;
        options.cluster_id = driftwood::raft::ClusterIdFor(
            members, ServerOptions().cluster_token);
        auto transport = driftwood::rpc::GrpcTransport::Create(options);
        if (!transport.ok()) Die(transport.status().ToString());
        transports[id.value()] = transport->get();
        nodes_[id.value()].transport = *std::move(transport);
      }
      for (auto& [id, transport] : transports) {
        for (auto& [peer, other] : transports) {
          if (peer == id) continue;
          transport->SetPeerAddress(NodeId(peer),
                                    absl::StrCat("127.0.0.1:", other->port()));
        }
      }
    }
    for (NodeId id : members) {
      Node& node = nodes_[id.value()];
      ServerOptions options;
      options.id = id;
      options.members = members;
      options.data_dir = dir / absl::StrCat("node", id.value());
      options.bootstrap = true;
      if (!grpc) node.transport = network_.CreateTransport();
      node.state_machine = std::make_unique<MemoryKvStateMachine>();
      auto server =
          Server::Start(options, *node.state_machine, *node.transport);
      if (!server.ok()) Die(server.status().ToString());
      node.server = *std::move(server);
    }
  }
  ~Cluster() {
    for (auto& [id, node] : nodes_) node.server.reset();
  }

  Server& WaitForLeader() {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      for (auto& [id, node] : nodes_) {
        if (node.server->Status().role == Role::kLeader) return *node.server;
      }
      absl::SleepFor(absl::Milliseconds(10));
    }
    Die("no leader was elected within 30 s");
  }

 private:
  struct Node {
    std::unique_ptr<Transport> transport;
    std::unique_ptr<MemoryKvStateMachine> state_machine;
    std::unique_ptr<Server> server;
  };
  // Inline delivery: a message is handed to the receiver on the sender's
  // thread, as a network stack's receive path would, instead of through a
  // delivery thread of the test transport.
  InProcessNetwork network_{
      InProcessNetwork::Options{.seed = 1, .inline_delivery = true}};
  std::map<uint64_t, Node> nodes_;
};

// Closed-loop clients: each keeps one proposal in flight and issues the next
// from the completion callback.
class Load {
 public:
  Load(Server& leader, int concurrency, size_t value_bytes, double seconds)
      : leader_(leader),
        value_(value_bytes, 'v'),
        stop_at_(
            std::chrono::steady_clock::now() +
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                std::chrono::duration<double>(seconds))) {
    latencies_.resize(static_cast<size_t>(concurrency));
    outstanding_ = concurrency;
    for (int client = 0; client < concurrency; ++client) Issue(client);
  }

  // Waits for every client to finish; returns latencies in microseconds.
  std::vector<double> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    finished_.wait(lock, [this] { return outstanding_ == 0; });
    std::vector<double> all;
    for (auto& client : latencies_) {
      all.insert(all.end(), client.begin(), client.end());
    }
    return all;
  }
  uint64_t errors() const { return errors_.load(); }

 private:
  void Finished() {
    // Notified under the lock: Wait's caller destroys the load once it sees
    // zero.
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
    finished_.notify_all();
  }

  void Issue(int client) {
    const auto started = std::chrono::steady_clock::now();
    if (started >= stop_at_) {
      Finished();
      return;
    }
    const uint64_t sequence = next_key_.fetch_add(1);
    leader_.Propose(
        EncodeCommand(
            PutCommand{absl::StrCat("key", sequence % 100'000), value_}),
        absl::Now() + absl::Seconds(30),
        [this, client, started](absl::StatusOr<std::string> result) {
          if (result.ok()) {
            latencies_[static_cast<size_t>(client)].push_back(
                std::chrono::duration<double, std::micro>(
                    std::chrono::steady_clock::now() - started)
                    .count());
            Issue(client);
          } else {
            // A refusal may come back on this thread; retrying from here
            // could recurse without bound, so the client stops.
            errors_.fetch_add(1);
            Finished();
          }
        });
  }

  Server& leader_;
  const std::string value_;
  const std::chrono::steady_clock::time_point stop_at_;
  std::atomic<uint64_t> next_key_{0};
  std::atomic<uint64_t> errors_{0};
  // One vector per client; a client's callbacks never overlap.
  std::vector<std::vector<double>> latencies_;
  std::mutex mu_;
  std::condition_variable finished_;
  int outstanding_ = 0;  // guarded by mu_
};

double Percentile(std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  const size_t index = std::min(
      sorted.size() - 1,
      static_cast<size_t>(fraction * static_cast<double>(sorted.size())));
  return sorted[index];
}

Point Measure(Server& leader, int concurrency, size_t value_bytes,
              double seconds) {
  const NodeStatus before = leader.Status();
  const double cpu_before = ProcessCpuSeconds();
  const auto wall_before = std::chrono::steady_clock::now();
  Load load(leader, concurrency, value_bytes, seconds);
  std::vector<double> latencies = load.Wait();
  const double wall = std::chrono::duration<double>(
                          std::chrono::steady_clock::now() - wall_before)
                          .count();
  const double cpu = ProcessCpuSeconds() - cpu_before;
  const NodeStatus after = leader.Status();
  std::sort(latencies.begin(), latencies.end());
  Point point;
  const double ops = static_cast<double>(latencies.size());
  point.ops_per_second = ops / wall;
  point.p50_ms = Percentile(latencies, 0.50) / 1000;
  point.p99_ms = Percentile(latencies, 0.99) / 1000;
  point.p999_ms = Percentile(latencies, 0.999) / 1000;
  point.cpu_us_per_op = ops == 0 ? 0 : cpu * 1e6 / ops;
  const uint64_t fsyncs = after.counters.fsyncs - before.counters.fsyncs;
  const uint64_t entries =
      after.counters.entries_persisted - before.counters.entries_persisted;
  point.entries_per_fsync =
      fsyncs == 0 ? 0
                  : static_cast<double>(entries) / static_cast<double>(fsyncs);
  point.errors = load.errors();
  return point;
}

std::string MedianMinMax(std::vector<double> values, int precision) {
  std::sort(values.begin(), values.end());
  return absl::StrFormat("%.*f (%.*f-%.*f)", precision,
                         values[values.size() / 2], precision, values.front(),
                         precision, values.back());
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> concurrencies = {1, 16, 64, 256};
  double seconds = 3;
  int repetitions = 3;
  size_t value_bytes = 256;
  std::optional<fs::path> dir_flag;
  bool grpc = false;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) Die(absl::StrCat(flag, " needs a value\n", kUsage));
    const std::string value = argv[++i];
    if (flag == "--concurrency") {
      concurrencies.clear();
      for (absl::string_view part : absl::StrSplit(value, ',')) {
        int c = 0;
        if (!absl::SimpleAtoi(part, &c) || c <= 0) {
          Die(absl::StrCat("--concurrency: '", part,
                           "' is not a positive "
                           "number"));
        }
        concurrencies.push_back(c);
      }
    } else if (flag == "--seconds") {
      if (!absl::SimpleAtod(value, &seconds) || seconds <= 0) {
        Die("--seconds must be a positive number");
      }
    } else if (flag == "--repetitions") {
      if (!absl::SimpleAtoi(value, &repetitions) || repetitions <= 0) {
        Die("--repetitions must be a positive number");
      }
    } else if (flag == "--value-bytes") {
      if (!absl::SimpleAtoi(value, &value_bytes)) {
        Die("--value-bytes must be a number");
      }
    } else if (flag == "--dir") {
      dir_flag = value;
    } else if (flag == "--transport") {
      if (value != "inprocess" && value != "grpc") {
        Die(absl::StrCat("--transport: '", value,
                         "' is neither inprocess nor grpc"));
      }
      grpc = value == "grpc";
    } else {
      Die(absl::StrCat("unknown flag ", flag, "\n", kUsage));
    }
  }
  spdlog::set_level(spdlog::level::warn);
  const fs::path dir = dir_flag ? *dir_flag
                                : fs::temp_directory_path() /
                                      absl::StrCat("server_bench-", getpid());
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) Die(absl::StrCat("cannot create ", dir.string()));

  std::printf("command: ");
  for (int i = 0; i < argc; ++i) std::printf("%s ", argv[i]);
  std::printf("\nfolder: %s\n", dir.string().c_str());
  std::map<int, std::vector<Point>> points;
  {
    Cluster cluster(dir, grpc);
    Server& leader = cluster.WaitForLeader();
    // Warm up RocksDB and the allocator.
    Measure(leader, 16, value_bytes, 0.5);
    for (int repetition = 0; repetition < repetitions; ++repetition) {
      for (int concurrency : concurrencies) {
        Point point = Measure(leader, concurrency, value_bytes, seconds);
        std::fprintf(stderr,
                     "  rep %d c=%d: %.0f/s p50 %.3f ms p99 %.3f ms "
                     "cpu %.1f us errors %llu\n",
                     repetition + 1, concurrency, point.ops_per_second,
                     point.p50_ms, point.p99_ms, point.cpu_us_per_op,
                     static_cast<unsigned long long>(point.errors));
        points[concurrency].push_back(point);
      }
    }
  }
  if (!dir_flag) fs::remove_all(dir, error);

  std::printf("\n%-11s | %-24s | %-22s | %-22s | %-22s | %-20s | %s\n",
              "concurrency", "proposals/s", "p50 ms", "p99 ms", "p99.9 ms",
              "CPU us/proposal", "entries/fsync");
  for (int concurrency : concurrencies) {
    auto field = [&](double Point::*member) {
      std::vector<double> values;
      for (const Point& point : points[concurrency]) {
        values.push_back(point.*member);
      }
      return values;
    };
    std::printf("%-11d | %-24s | %-22s | %-22s | %-22s | %-20s | %s\n",
                concurrency,
                MedianMinMax(field(&Point::ops_per_second), 0).c_str(),
                MedianMinMax(field(&Point::p50_ms), 3).c_str(),
                MedianMinMax(field(&Point::p99_ms), 3).c_str(),
                MedianMinMax(field(&Point::p999_ms), 3).c_str(),
                MedianMinMax(field(&Point::cpu_us_per_op), 1).c_str(),
                MedianMinMax(field(&Point::entries_per_fsync), 1).c_str());
  }
  return 0;
}
