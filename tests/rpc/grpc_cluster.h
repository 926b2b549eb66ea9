// Driftwood: threaded Servers in one process talking over loopback gRPC
// (rpc::GrpcTransport), each with a RocksDB log and an in-memory key-value
// state machine in its own temporary folder, for the `integration` tests.
//
// Every ordered pair of nodes i -> j has its own LoopbackProxy
// (tests/support/tcp_proxy.h): node i reaches node j at proxy(i, j)'s port,
// which forwards to node j's transport. Faults are injected by blocking or
// breaking proxies: Isolate, Partition, BlockOneWay, and proxy(i, j) itself
// (BreakConnections). A restarted node gets a new transport on a port the OS
// chooses, and the proxies towards it are retargeted (SetTarget).
//
// The helpers of tests/raft/server/server_cluster.h (Latch, Outcome,
// Eventually, Put, Get, GetValue) work with this fixture too; its methods
// mirror ServerCluster's.
#ifndef DRIFTWOOD_TESTS_RPC_GRPC_CLUSTER_H_
#define DRIFTWOOD_TESTS_RPC_GRPC_CLUSTER_H_

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "raft/server/node_runtime.h"
#include "raft/server/server.h"
#include "rpc/grpc_transport.h"
#include "statemachine/memory_kv_state_machine.h"
#include "tests/raft/server/server_cluster.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_certs.h"

namespace driftwood::testing {

struct GrpcClusterOptions {
  // Adjusts every node's server options, after the test defaults. A node
  // given another cluster_token here belongs to another cluster: its
  // transport gets that cluster's id.
  std::function<void(raft::ServerOptions&)> configure;
  // Adjusts a node's transport options, after the defaults (address, peers,
  // cluster id, certificates).
  std::function<void(raft::NodeId, rpc::GrpcTransportOptions&)>
      configure_transport;
  // Mutual TLS: every node gets a certificate of a throwaway cluster CA
  // (tests/support/test_certs.h) and trusts that CA only.
  bool tls = false;
  // With tls: these nodes' certificates come from the rogue CA instead
  // (they still trust the cluster CA, so the refusal is of their own
  // certificate).
  std::vector<raft::NodeId> rogue_certificates;
};

class GrpcCluster {
 public:
  // Every member's cluster token unless configured otherwise.
  static constexpr char kClusterToken[] = "driftwood-grpc-test";

  // Creates the proxies between `size` members (ids 1..size); Start or
  // StartAll starts the nodes.
  explicit GrpcCluster(int size, GrpcClusterOptions options = {})
      : options_(std::move(options)) {
    for (int i = 1; i <= size; ++i) {
      members_.push_back(raft::NodeId(static_cast<uint64_t>(i)));
    }
    for (raft::NodeId from : members_) {
      for (raft::NodeId to : members_) {
        if (from == to) continue;
        // Nothing listens on the target until `to` starts.
        absl::StatusOr<std::unique_ptr<LoopbackProxy>> proxy =
            LoopbackProxy::Start(0);
        INFO(proxy.status().ToString());
        REQUIRE(proxy.ok());
        proxies_[{from.value(), to.value()}] = *std::move(proxy);
      }
    }
  }
  ~GrpcCluster() {
    // Servers stop before their transports, transports before the proxies.
    // A leader stops first each time, handing over to a running node (a
    // leader whose chosen successor already stopped waits out an election
    // timeout).
    while (true) {
      Node* next = nullptr;
      for (auto& [id, node] : nodes_) {
        if (node.server == nullptr) continue;
        if (next == nullptr ||
            node.server->Status().role == raft::Role::kLeader) {
          next = &node;
        }
      }
      if (next == nullptr) break;
      next->server.reset();
    }
    for (auto& [id, node] : nodes_) node.transport.reset();
  }

  GrpcCluster(const GrpcCluster&) = delete;
  GrpcCluster& operator=(const GrpcCluster&) = delete;

  const std::vector<raft::NodeId>& members() const { return members_; }

  raft::ServerOptions Options(raft::NodeId id) const {
    raft::ServerOptions options;
    options.id = id;
    options.members = members_;
    options.cluster_token = kClusterToken;
    options.data_dir = std::filesystem::path(dir_.path()) /
                       ("node" + std::to_string(id.value()));
    options.bootstrap = true;
    options.tick_interval = absl::Milliseconds(10);
    // 300-600 ms: short for a test, long enough that a loaded machine (ctest
    // runs tests in parallel) does not miss heartbeats.
    options.election_ticks = 30;
    options.seed = id.value() * 7919;
    if (options_.configure) options_.configure(options);
    return options;
  }

  // The transport options of node `id` started with `server_options`: its
  // cluster's id, peers at the proxies' ports, and certificates with tls.
  absl::StatusOr<rpc::GrpcTransportOptions> TransportOptions(
      raft::NodeId id, const raft::ServerOptions& server_options) {
    rpc::GrpcTransportOptions options;
    options.listen_address = "127.0.0.1:0";
    options.cluster_id = raft::ClusterIdFor(server_options.members,
                                            server_options.cluster_token);
    for (raft::NodeId peer : members_) {
      if (peer == id) continue;
      options.peers[peer] = absl::StrCat("127.0.0.1:", proxy(id, peer).port());
    }
    // Quick reconnects after a heal; a test's healing waits stay short.
    options.reconnect_max = absl::Milliseconds(500);
    options.seed = id.value();
    if (options_.tls) {
      absl::StatusOr<CertificateFiles> files = Certificate(id);
      if (!files.ok()) return files.status();
      options.tls.cert_file = files->cert_file;
      options.tls.key_file = files->key_file;
      options.tls.ca_file = certificates_->ca_file();
    }
    if (options_.configure_transport) options_.configure_transport(id, options);
    return options;
  }

  // Starts (or restarts) node `id` with a fresh state machine and a new
  // transport; the proxies towards it are retargeted to the new port.
  absl::Status Start(raft::NodeId id) { return StartWith(id, Options(id)); }
  absl::Status StartWith(raft::NodeId id, const raft::ServerOptions& options) {
    Node& node = nodes_[id.value()];
    node.server.reset();
    node.transport.reset();
    absl::StatusOr<rpc::GrpcTransportOptions> transport_options =
        TransportOptions(id, options);
    if (!transport_options.ok()) return transport_options.status();
    absl::StatusOr<std::unique_ptr<rpc::GrpcTransport>> transport =
        rpc::GrpcTransport::Create(*transport_options);
    if (!transport.ok()) return transport.status();
    node.transport = *std::move(transport);
    node.port = node.transport->port();
    for (raft::NodeId peer : members_) {
      if (peer != id) proxy(peer, id).SetTarget(node.port);
    }
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
  // Stops node `id` (a leader that can reach the others hands over first)
  // and destroys its transport.
  void Stop(raft::NodeId id) {
    Node& node = nodes_[id.value()];
    node.server.reset();
    node.transport.reset();
  }

  bool running(raft::NodeId id) const {
    auto it = nodes_.find(id.value());
    return it != nodes_.end() && it->second.server != nullptr;
  }
  raft::Server& server(raft::NodeId id) {
    return *nodes_.at(id.value()).server;
  }
  rpc::GrpcTransport& transport(raft::NodeId id) {
    return *nodes_.at(id.value()).transport;
  }
  // The port node `id`'s current transport listens on (not a proxy's).
  int port(raft::NodeId id) const { return nodes_.at(id.value()).port; }
  // The cluster id of the members (with the default token).
  uint64_t cluster_id() const {
    return raft::ClusterIdFor(members_, kClusterToken);
  }
  // With tls: the certificates (created at the first start).
  TestCertificates* certificates() { return certificates_.get(); }

  // The proxy that carries node `from`'s traffic to node `to`.
  LoopbackProxy& proxy(raft::NodeId from, raft::NodeId to) {
    return *proxies_.at({from.value(), to.value()});
  }

  // Fault injection. Blocking the proxy from -> to closes every connection
  // node `from` has to node `to` and refuses new ones, so nothing `from`
  // sends reaches `to` (one way).
  void BlockOneWay(raft::NodeId from, raft::NodeId to) {
    proxy(from, to).Block();
  }
  void Isolate(raft::NodeId id) {
    for (raft::NodeId other : members_) {
      if (other == id) continue;
      proxy(id, other).Block();
      proxy(other, id).Block();
    }
  }
  // Nodes in different groups cannot talk; a node in no group is isolated.
  void Partition(const std::vector<std::vector<raft::NodeId>>& groups) {
    auto group_of = [&](raft::NodeId id) -> int {
      for (size_t g = 0; g < groups.size(); ++g) {
        if (std::find(groups[g].begin(), groups[g].end(), id) !=
            groups[g].end()) {
          return static_cast<int>(g);
        }
      }
      return -1;
    };
    for (auto& [pair, p] : proxies_) {
      const int from = group_of(raft::NodeId(pair.first));
      const int to = group_of(raft::NodeId(pair.second));
      if (from < 0 || to < 0 || from != to) {
        p->Block();
      } else {
        p->Unblock();
      }
    }
  }
  void Heal() {
    for (auto& [pair, p] : proxies_) p->Unblock();
  }

  // The node every running node agrees leads, once one does.
  std::optional<raft::NodeId> Leader() { return LeaderAmong(members_); }
  // A leader among the running nodes of `among` that the others of `among`
  // follow.
  std::optional<raft::NodeId> LeaderAmong(
      const std::vector<raft::NodeId>& among) {
    std::optional<raft::NodeId> leader;
    for (raft::NodeId id : among) {
      if (!running(id)) continue;
      if (server(id).Status().role == raft::Role::kLeader) {
        if (leader) return std::nullopt;
        leader = id;
      }
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
    return WaitForLeaderAmong(members_, timeout);
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

  // Waits until every running node of `among` (all when empty) applied
  // through `index`.
  bool WaitApplied(raft::LogIndex index,
                   absl::Duration timeout = absl::Seconds(20),
                   const std::vector<raft::NodeId>& among = {}) {
    const std::vector<raft::NodeId>& nodes = among.empty() ? members_ : among;
    return Eventually(
        [&] {
          for (raft::NodeId id : nodes) {
            if (running(id) && server(id).Status().applied < index) {
              return false;
            }
          }
          return true;
        },
        timeout);
  }

 private:
  struct Node {
    int port = 0;
    // Declared in this order so that, for a Node destroyed as a whole, the
    // server stops before its transport and state machine go away.
    std::unique_ptr<statemachine::MemoryKvStateMachine> state_machine;
    std::unique_ptr<rpc::GrpcTransport> transport;
    std::unique_ptr<raft::Server> server;
  };

  absl::StatusOr<CertificateFiles> Certificate(raft::NodeId id) {
    if (certificates_ == nullptr) {
      absl::StatusOr<std::unique_ptr<TestCertificates>> made =
          TestCertificates::Create();
      if (!made.ok()) return made.status();
      certificates_ = *std::move(made);
    }
    auto it = certificate_files_.find(id.value());
    if (it != certificate_files_.end()) return it->second;
    const std::string name = absl::StrCat("node", id.value());
    const bool rogue = std::find(options_.rogue_certificates.begin(),
                                 options_.rogue_certificates.end(),
                                 id) != options_.rogue_certificates.end();
    absl::StatusOr<CertificateFiles> files =
        rogue ? certificates_->IssueRogue(name) : certificates_->Issue(name);
    if (files.ok()) certificate_files_[id.value()] = *files;
    return files;
  }

  TempDir dir_;
  GrpcClusterOptions options_;
  std::vector<raft::NodeId> members_;
  std::unique_ptr<TestCertificates> certificates_;
  std::map<uint64_t, CertificateFiles> certificate_files_;
  // Declared before nodes_: the proxies outlive the transports.
  std::map<std::pair<uint64_t, uint64_t>, std::unique_ptr<LoopbackProxy>>
      proxies_;
  std::map<uint64_t, Node> nodes_;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_RPC_GRPC_CLUSTER_H_
