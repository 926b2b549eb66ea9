// replicated_counter: a replicated counter built outside the Driftwood tree
// against the installed package (tests/install/install_test.sh).
//
//   replicated_counter DATA_DIR [INCREMENTS]
//
// Starts three raft::Servers in this process, each with an
// rpc::GrpcTransport on 127.0.0.1 (ports chosen by the OS), a RocksDB log
// under DATA_DIR/nodeN (DATA_DIR must not hold an earlier run) and a
// CounterStateMachine. Proposes the increments 1..INCREMENTS (default 100)
// one at a time, round robin to the three nodes (a follower forwards to the
// leader), then waits until every node has applied them. Prints each node's
// total; exits 0 when every node holds INCREMENTS * (INCREMENTS + 1) / 2,
// 1 otherwise, 2 for bad arguments.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "raft/core/types.h"
#include "raft/server/server.h"
#include "raft/state_machine.h"
#include "rpc/grpc_transport.h"

namespace {

namespace fs = std::filesystem;
using driftwood::raft::AppliedState;
using driftwood::raft::ApplyBatch;
using driftwood::raft::Entry;
using driftwood::raft::EntryType;
using driftwood::raft::NodeId;
using driftwood::raft::Role;
using driftwood::raft::Server;
using driftwood::raft::ServerOptions;
using driftwood::raft::SnapshotMeta;
using driftwood::raft::StateMachine;
using driftwood::raft::StateMachineSnapshot;
using driftwood::rpc::GrpcTransport;
using driftwood::rpc::GrpcTransportOptions;

constexpr char kSnapshotFile[] = "counter";

// The captured total, written as decimal text to one file.
class CounterSnapshot : public StateMachineSnapshot {
 public:
  CounterSnapshot(int64_t total, SnapshotMeta meta)
      : total_(total), meta_(std::move(meta)) {}

  SnapshotMeta meta() const override { return meta_; }

  absl::Status WriteTo(const fs::path& dir) override {
    std::ofstream out(dir / kSnapshotFile, std::ios::binary | std::ios::trunc);
    out << total_;
    out.close();
    if (!out) {
      return absl::InternalError(
          absl::StrCat("cannot write ", (dir / kSnapshotFile).string()));
    }
    return absl::OkStatus();
  }

 private:
  int64_t total_;
  SnapshotMeta meta_;
};

// An in-memory StateMachine (raft/state_machine.h) holding one integer.
// A command is a decimal integer, added to the total; its response is the
// new total. A command that is not an integer changes nothing and gets the
// response "invalid" (deterministic, so not an error). The query "" returns
// the total; queries may run on any thread.
class CounterStateMachine : public StateMachine {
 public:
  absl::StatusOr<AppliedState> Open() override { return applied_; }

  absl::StatusOr<std::vector<std::string>> Apply(
      const ApplyBatch& batch) override {
    if (absl::Status s = driftwood::raft::CheckBatchFollows(
            applied_, batch, "CounterStateMachine::Apply");
        !s.ok()) {
      return s;
    }
    std::vector<std::string> responses;
    responses.reserve(batch.entries.size());
    for (const Entry& entry : batch.entries) {
      int64_t increment = 0;
      if (entry.type == EntryType::kNoOp) {
        responses.emplace_back();
      } else if (!absl::SimpleAtoi(entry.data.str(), &increment)) {
        responses.emplace_back("invalid");
      } else {
        const int64_t total = total_.load() + increment;
        total_.store(total);
        responses.push_back(absl::StrCat(total));
      }
    }
    if (!batch.entries.empty()) {
      applied_.index = batch.entries.back().index;
      applied_.term = batch.entries.back().term;
      applied_.configuration = batch.configuration;
    }
    return responses;
  }

  AppliedState applied() const override { return applied_; }

  absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> Capture() override {
    if (applied_.index.value() == 0) {
      return absl::FailedPreconditionError(
          "CounterStateMachine::Capture: nothing has been applied");
    }
    return std::make_unique<CounterSnapshot>(
        total_.load(),
        SnapshotMeta{applied_.index, applied_.term, applied_.configuration});
  }

  absl::Status Restore(const SnapshotMeta& meta, const fs::path& dir) override {
    std::ifstream in(dir / kSnapshotFile, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    int64_t total = 0;
    if (!in || !absl::SimpleAtoi(text.str(), &total)) {
      return absl::DataLossError(
          absl::StrCat("CounterStateMachine::Restore: bad ",
                       (dir / kSnapshotFile).string()));
    }
    total_.store(total);
    applied_ = AppliedState{meta.index, meta.term, meta.configuration};
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Query(std::string_view query) const override {
    if (!query.empty()) {
      return absl::InvalidArgumentError("the only query is \"\"");
    }
    return absl::StrCat(total_.load());
  }

  bool ConcurrentQueries() const override { return true; }

 private:
  // Written by the apply thread only; read by queries on any thread.
  std::atomic<int64_t> total_{0};
  AppliedState applied_;  // apply thread only
};

struct Node {
  std::unique_ptr<GrpcTransport> transport;
  std::unique_ptr<CounterStateMachine> state_machine;
  std::unique_ptr<Server> server;
};

// Runs `call` with a callback and waits for the result it is given.
template <typename Call>
absl::StatusOr<std::string> Wait(Call call) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<std::string>>>();
  std::future<absl::StatusOr<std::string>> result = promise->get_future();
  call([promise](absl::StatusOr<std::string> value) {
    promise->set_value(std::move(value));
  });
  return result.get();
}

// Proposes `command` through `nodes` (round robin from `first`) until it is
// applied. Statuses that mean "not committed" are retried; any other failure
// (an unknown outcome) is returned.
absl::StatusOr<std::string> ProposeUntilApplied(std::vector<Node>& nodes,
                                                size_t first,
                                                const std::string& command,
                                                absl::Time deadline) {
  for (size_t attempt = first;; ++attempt) {
    Server& server = *nodes[attempt % nodes.size()].server;
    absl::StatusOr<std::string> result = Wait(
        [&](auto done) { server.Propose(command, deadline, std::move(done)); });
    const absl::StatusCode code = result.status().code();
    const bool not_committed = code == absl::StatusCode::kUnavailable ||
                               code == absl::StatusCode::kFailedPrecondition ||
                               code == absl::StatusCode::kResourceExhausted ||
                               code == absl::StatusCode::kAborted;
    if (!not_committed || absl::Now() >= deadline) return result;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

int Run(const fs::path& data_dir, int64_t increments) {
  const std::vector<NodeId> members = {NodeId(1), NodeId(2), NodeId(3)};
  std::vector<Node> nodes(members.size());
  ServerOptions defaults;
  defaults.members = members;
  defaults.bootstrap = true;
  // A quick election: 300-600 ms.
  defaults.tick_interval = absl::Milliseconds(10);
  defaults.election_ticks = 30;

  // Every transport listens first, so each can be told the others' ports.
  for (size_t i = 0; i < members.size(); ++i) {
    GrpcTransportOptions options;
    options.listen_address = "127.0.0.1:0";
    options.cluster_id =
        driftwood::raft::ClusterIdFor(members, defaults.cluster_token);
    absl::StatusOr<std::unique_ptr<GrpcTransport>> transport =
        GrpcTransport::Create(options);
    if (!transport.ok()) {
      std::fprintf(stderr, "transport: %s\n",
                   transport.status().ToString().c_str());
      return 1;
    }
    nodes[i].transport = *std::move(transport);
  }
  for (size_t i = 0; i < members.size(); ++i) {
    for (size_t j = 0; j < members.size(); ++j) {
      if (i == j) continue;
      nodes[i].transport->SetPeerAddress(
          members[j], absl::StrCat("127.0.0.1:", nodes[j].transport->port()));
    }
  }
  for (size_t i = 0; i < members.size(); ++i) {
    ServerOptions options = defaults;
    options.id = members[i];
    options.data_dir = data_dir / absl::StrCat("node", members[i].value());
    nodes[i].state_machine = std::make_unique<CounterStateMachine>();
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Start(options, *nodes[i].state_machine, *nodes[i].transport);
    if (!server.ok()) {
      std::fprintf(stderr, "server %zu: %s\n", i + 1,
                   server.status().ToString().c_str());
      return 1;
    }
    nodes[i].server = *std::move(server);
  }

  int exit_code = 0;
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  for (int64_t i = 1; i <= increments && exit_code == 0; ++i) {
    absl::StatusOr<std::string> result = ProposeUntilApplied(
        nodes, static_cast<size_t>(i), absl::StrCat(i), deadline);
    if (!result.ok()) {
      std::fprintf(stderr, "increment %lld: %s\n", static_cast<long long>(i),
                   result.status().ToString().c_str());
      exit_code = 1;
    }
  }

  // Every node applies every increment (a follower may lag a little).
  const std::string expected = absl::StrCat(increments * (increments + 1) / 2);
  for (size_t i = 0; i < nodes.size() && exit_code == 0; ++i) {
    absl::StatusOr<std::string> total;
    do {
      total = Wait(
          [&](auto done) { nodes[i].server->ReadLocal("", std::move(done)); });
      if (total.ok() && *total == expected) break;
      absl::SleepFor(absl::Milliseconds(10));
    } while (absl::Now() < deadline);
    std::printf(
        "node %llu: total %s\n",
        static_cast<unsigned long long>(members[i].value()),
        total.ok() ? total->c_str() : total.status().ToString().c_str());
    if (!total.ok() || *total != expected) exit_code = 1;
  }
  std::printf("replicated counter: %s (expected %s on every node)\n",
              exit_code == 0 ? "OK" : "FAILED", expected.c_str());

  // Servers stop before their transports. The leader stops first each time,
  // so that it hands over to a node that is still running.
  while (true) {
    Node* next = nullptr;
    for (Node& node : nodes) {
      if (node.server == nullptr) continue;
      if (next == nullptr || node.server->Status().role == Role::kLeader) {
        next = &node;
      }
    }
    if (next == nullptr) break;
    next->server.reset();
  }
  for (Node& node : nodes) node.transport.reset();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t increments = 100;
  if (argc < 2 || argc > 3 ||
      (argc == 3 &&
       (!absl::SimpleAtoi(argv[2], &increments) || increments < 1))) {
    std::fprintf(stderr, "usage: replicated_counter DATA_DIR [INCREMENTS]\n");
    return 2;
  }
  return Run(argv[1], increments);
}
