// Driftwood: threaded Servers in one process over the in-process transport,
// each with a RocksDB log and an in-memory key-value state machine in its own
// temporary folder, for the `server` tests.
#ifndef DRIFTWOOD_TESTS_RAFT_SERVER_SERVER_CLUSTER_H_
#define DRIFTWOOD_TESTS_RAFT_SERVER_SERVER_CLUSTER_H_

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "raft/server/in_process_transport.h"
#include "raft/server/server.h"
#include "statemachine/kv_command.h"
#include "statemachine/memory_kv_state_machine.h"
#include "tests/support/temp_dir.h"

namespace driftwood::testing {

// A value one thread sets once and another waits for (std::mutex, so
// ThreadSanitizer sees the hand-off).
template <typename T>
class Latch {
 public:
  void Set(T value) {
    // Notified under the lock: the waiter may destroy the latch as soon as
    // it sees the value.
    std::lock_guard<std::mutex> lock(mu_);
    value_ = std::move(value);
    set_.notify_all();
  }
  // The value, or nullopt after `timeout`.
  std::optional<T> Wait(absl::Duration timeout = absl::Seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    set_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
                  [this] { return value_.has_value(); });
    return value_;
  }
  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return value_.has_value();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable set_;
  std::optional<T> value_;  // guarded by mu_
};

// Waits for a proposal's or read's result.
class Outcome {
 public:
  raft::ResultCallback Callback() {
    return [this](absl::StatusOr<std::string> result) {
      latch_.Set(std::move(result));
    };
  }
  // The result, or DeadlineExceeded("test: no outcome") after `timeout`.
  absl::StatusOr<std::string> Wait(absl::Duration timeout = absl::Seconds(20)) {
    std::optional<absl::StatusOr<std::string>> result = latch_.Wait(timeout);
    if (!result) return absl::DeadlineExceededError("test: no outcome");
    return *result;
  }
  bool done() const { return latch_.done(); }

 private:
  Latch<absl::StatusOr<std::string>> latch_;
};

// Polls `condition` until it holds or `timeout` passes.
inline bool Eventually(const std::function<bool()>& condition,
                       absl::Duration timeout = absl::Seconds(20)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(2));
  }
  return condition();
}

inline std::string Put(const std::string& key, const std::string& value) {
  return statemachine::EncodeCommand(statemachine::PutCommand{key, value});
}
inline std::string Get(const std::string& key) {
  return statemachine::EncodeQuery(statemachine::GetQuery{key});
}
// The value a Get result holds ("<absent>" when the key is absent).
inline std::string GetValue(const absl::StatusOr<std::string>& result) {
  if (!result.ok()) return "<" + result.status().ToString() + ">";
  auto value = statemachine::DecodeGetResult(*result);
  if (!value.ok()) return "<undecodable>";
  return value->has_value() ? **value : "<absent>";
}

class ServerCluster {
 public:
  // `configure` adjusts every node's options (after the test defaults).
  // `inline_delivery`: InProcessNetwork::Options::inline_delivery (false:
  // every message goes through the receiver's delivery thread).
  explicit ServerCluster(
      int size, std::function<void(raft::ServerOptions&)> configure = nullptr,
      bool inline_delivery = true)
      : network_(raft::InProcessNetwork::Options{
            .seed = 1, .inline_delivery = inline_delivery}),
        configure_(std::move(configure)) {
    for (int i = 1; i <= size; ++i) {
      members_.push_back(raft::NodeId(static_cast<uint64_t>(i)));
    }
  }
  ~ServerCluster() {
    for (auto& [id, node] : nodes_) node.server.reset();
  }

  raft::InProcessNetwork& network() { return network_; }
  const std::vector<raft::NodeId>& members() const { return members_; }

  raft::ServerOptions Options(raft::NodeId id) const {
    raft::ServerOptions options;
    options.id = id;
    options.members = members_;
    options.data_dir = std::filesystem::path(dir_.path()) /
                       ("node" + std::to_string(id.value()));
    options.bootstrap = true;
    options.tick_interval = absl::Milliseconds(10);
    // 300-600 ms: short for a test, long enough that a loaded machine (ctest
    // runs tests in parallel) does not miss heartbeats.
    options.election_ticks = 30;
    options.seed = id.value() * 7919;
    if (configure_) configure_(options);
    return options;
  }

  // Starts (or restarts) node `id` with a fresh state machine.
  absl::Status Start(raft::NodeId id) { return StartWith(id, Options(id)); }
  absl::Status StartWith(raft::NodeId id, const raft::ServerOptions& options) {
    Node& node = nodes_[id.value()];
    node.server.reset();
    node.transport = network_.CreateTransport();
    node.state_machine = std::make_unique<statemachine::MemoryKvStateMachine>();
    absl::StatusOr<std::unique_ptr<raft::Server>> server =
        raft::Server::Start(options, *node.state_machine, *node.transport);
    if (!server.ok()) return server.status();
    node.server = *std::move(server);
    return absl::OkStatus();
  }
  absl::Status StartAll() {
    for (raft::NodeId id : members_) {
      if (absl::Status status = Start(id); !status.ok()) return status;
    }
    return absl::OkStatus();
  }
  // Stops node `id` cleanly (a leader hands over first).
  void Stop(raft::NodeId id) { nodes_[id.value()].server.reset(); }

  bool running(raft::NodeId id) const {
    auto it = nodes_.find(id.value());
    return it != nodes_.end() && it->second.server != nullptr;
  }
  raft::Server& server(raft::NodeId id) {
    return *nodes_.at(id.value()).server;
  }

  // The node every running node agrees leads, once one does.
  std::optional<raft::NodeId> Leader() {
    std::optional<raft::NodeId> leader;
    for (auto& [id, node] : nodes_) {
      if (!node.server) continue;
      raft::NodeStatus status = node.server->Status();
      if (status.role == raft::Role::kLeader) {
        if (leader) return std::nullopt;
        leader = status.id;
      }
    }
    if (!leader) return std::nullopt;
    for (auto& [id, node] : nodes_) {
      if (!node.server) continue;
      if (node.server->Status().leader != *leader) return std::nullopt;
    }
    return leader;
  }
  // A leader among the nodes in `among` (all running ones when empty) that
  // the others of `among` follow.
  std::optional<raft::NodeId> LeaderAmong(
      const std::vector<raft::NodeId>& among) {
    std::optional<raft::NodeId> leader;
    for (raft::NodeId id : among) {
      if (!running(id)) continue;
      raft::NodeStatus status = server(id).Status();
      if (status.role == raft::Role::kLeader) leader = id;
    }
    if (!leader) return std::nullopt;
    for (raft::NodeId id : among) {
      if (running(id) && server(id).Status().leader != *leader) {
        return std::nullopt;
      }
    }
    return leader;
  }
  // Every member but `id`.
  std::vector<raft::NodeId> Others(raft::NodeId id) const {
    std::vector<raft::NodeId> others;
    for (raft::NodeId member : members_) {
      if (member != id) others.push_back(member);
    }
    return others;
  }
  std::optional<raft::NodeId> WaitForLeaderAmong(
      const std::vector<raft::NodeId>& among,
      absl::Duration timeout = absl::Seconds(20)) {
    std::optional<raft::NodeId> leader;
    Eventually([&] { return (leader = LeaderAmong(among)).has_value(); },
               timeout);
    return leader;
  }
  std::optional<raft::NodeId> WaitForLeader(
      absl::Duration timeout = absl::Seconds(20)) {
    std::optional<raft::NodeId> leader;
    Eventually([&] { return (leader = Leader()).has_value(); }, timeout);
    return leader;
  }

  absl::StatusOr<std::string> Propose(
      raft::NodeId on, std::string command,
      absl::Duration timeout = absl::Seconds(10)) {
    Outcome outcome;
    server(on).Propose(std::move(command), absl::Now() + timeout,
                       outcome.Callback());
    return outcome.Wait(timeout + absl::Seconds(10));
  }
  absl::StatusOr<std::string> Read(raft::NodeId on, std::string query,
                                   absl::Duration timeout = absl::Seconds(10)) {
    Outcome outcome;
    server(on).Read(std::move(query), absl::Now() + timeout,
                    outcome.Callback());
    return outcome.Wait(timeout + absl::Seconds(10));
  }
  absl::StatusOr<std::string> ReadLocal(raft::NodeId on, std::string query) {
    Outcome outcome;
    server(on).ReadLocal(std::move(query), outcome.Callback());
    return outcome.Wait();
  }

  // Waits until every running node applied through `index`.
  bool WaitApplied(raft::LogIndex index,
                   absl::Duration timeout = absl::Seconds(20)) {
    return Eventually(
        [&] {
          for (auto& [id, node] : nodes_) {
            if (node.server && node.server->Status().applied < index) {
              return false;
            }
          }
          return true;
        },
        timeout);
  }

 private:
  struct Node {
    std::unique_ptr<raft::Transport> transport;
    std::unique_ptr<statemachine::MemoryKvStateMachine> state_machine;
    std::unique_ptr<raft::Server> server;
  };

  TempDir dir_;
  raft::InProcessNetwork network_;
  std::function<void(raft::ServerOptions&)> configure_;
  std::vector<raft::NodeId> members_;
  // Declared last: servers stop before their transports and state machines
  // go away (see the destructor).
  std::map<uint64_t, Node> nodes_;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_RAFT_SERVER_SERVER_CLUSTER_H_
