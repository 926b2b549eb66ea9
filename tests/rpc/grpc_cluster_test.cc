// Integration: threaded 3- and 5-node Server clusters over loopback gRPC
// (rpc::GrpcTransport), RocksDB logs in temporary folders, faults injected by
// the LoopbackProxy between every ordered pair of nodes (tests/rpc/
// grpc_cluster.h). Covers the server tests' scenarios over the real wire,
// snapshots of more than 64 MiB with a stream broken midway, mutual TLS, and
// hostile input from raw gRPC clients. Liveness deadlines are generous;
// nothing sleeps to wait (Eventually polls with a deadline).
#include "tests/rpc/grpc_cluster.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "catch2/catch.hpp"
#include "rpc/codec.h"
#include "rpc/proto/peer.pb.h"

namespace driftwood::testing {
namespace {

using raft::LogIndex;
using raft::NodeId;

// Proposes command(i) for each i of `indexes` on `on`, `window` at a time,
// and waits for every outcome; returns the indexes whose proposal failed.
std::vector<int> ProposeEach(GrpcCluster& cluster, NodeId on,
                             const std::vector<int>& indexes, int window,
                             const std::function<std::string(int)>& command) {
  std::atomic<int> in_flight{0};
  std::atomic<size_t> completed{0};
  std::mutex failed_mu;
  std::vector<int> failed;
  for (int i : indexes) {
    REQUIRE(Eventually([&] { return in_flight.load() < window; },
                       absl::Seconds(60)));
    ++in_flight;
    cluster.server(on).Propose(command(i), absl::Now() + absl::Seconds(60),
                               [&, i](absl::StatusOr<std::string> result) {
                                 if (!result.ok()) {
                                   std::lock_guard<std::mutex> lock(failed_mu);
                                   failed.push_back(i);
                                 }
                                 --in_flight;
                                 ++completed;
                               });
  }
  REQUIRE(Eventually([&] { return completed.load() == indexes.size(); },
                     absl::Seconds(90)));
  std::lock_guard<std::mutex> lock(failed_mu);
  return failed;
}

std::vector<int> FirstIndexes(int count) {
  std::vector<int> indexes(static_cast<size_t>(count));
  std::iota(indexes.begin(), indexes.end(), 0);
  return indexes;
}

// Proposes `count` commands command(0), command(1), ... on `on`, `window` at
// a time, and waits for every outcome; returns how many were OK.
uint64_t ProposeMany(GrpcCluster& cluster, NodeId on, int count, int window,
                     const std::function<std::string(int)>& command) {
  return static_cast<uint64_t>(count) -
         ProposeEach(cluster, on, FirstIndexes(count), window, command).size();
}

// ProposeMany for idempotent commands (puts of fixed values) where the test
// needs them all applied, not the cluster's answers under a fault: a leader
// that loses its quorum check under load (sanitizers, tests in parallel)
// fails the proposals in flight, so once a leader is known again each failed
// one is proposed again, up to `rounds` times. Returns how many succeeded.
uint64_t ProposeAllIdempotent(GrpcCluster& cluster, NodeId on, int count,
                              int window,
                              const std::function<std::string(int)>& command,
                              int rounds = 5) {
  std::vector<int> pending = FirstIndexes(count);
  for (int round = 0; round < rounds && !pending.empty(); ++round) {
    if (round > 0) {
      // Reported with the test's next assertion, should it fail.
      UNSCOPED_INFO(pending.size() << " proposals failed in round " << round
                                   << "; proposing them again");
      REQUIRE(cluster.WaitForLeader().has_value());
    }
    pending = ProposeEach(cluster, on, pending, window, command);
  }
  return static_cast<uint64_t>(count) - pending.size();
}

// Puts key<i> = value<i> with `prefix` for "key".
uint64_t ProposeMany(GrpcCluster& cluster, NodeId on, int count, int window,
                     const std::string& prefix = "key") {
  return ProposeMany(cluster, on, count, window, [&](int i) {
    return Put(absl::StrCat(prefix, i), absl::StrCat("value", i));
  });
}

// GetValue (tests/raft/server/server_cluster.h), not inlined: g++ 12 at -O3
// reports a false -Wrestrict in its string concatenation when inlined here.
[[gnu::noinline]] std::string ValueOf(
    const absl::StatusOr<std::string>& result) {
  return GetValue(result);
}

// The commit index as `leader` knows it.
LogIndex LeaderCommit(GrpcCluster& cluster, NodeId leader) {
  return cluster.server(leader).Status().commit;
}

// The number of keys node `on` holds; 0 when the read fails.
uint64_t KeyCount(GrpcCluster& cluster, NodeId on) {
  absl::StatusOr<std::string> result = cluster.ReadLocal(
      on, statemachine::EncodeQuery(statemachine::CountQuery{}));
  if (!result.ok()) return 0;
  absl::StatusOr<uint64_t> count = statemachine::DecodeCountResult(*result);
  return count.ok() ? *count : 0;
}

// Node 1, or node 2 when `id` is node 1.
NodeId AnotherThan(NodeId id) {
  return id == NodeId(1) ? NodeId(2) : NodeId(1);
}

// Inbound envelopes refused, for any reason.
uint64_t Refused(const raft::TransportCounters& counters) {
  return counters.refused_cluster + counters.refused_sender +
         counters.refused_malformed;
}

// --- Elections, replication, failures -------------------------------------

TEST_CASE(
    "grpc: a three-node cluster elects one leader that every node follows",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const raft::NodeStatus status = cluster.server(*leader).Status();
  CHECK(status.term > raft::Term(0));
  CHECK(status.peers.size() == 3);
  CHECK(status.transport.streams_opened >= 2);
  CHECK(status.transport.messages_sent > 0);
  REQUIRE(cluster.Propose(*leader, Put("k", "v")).ok());
  // The traffic goes through the proxies, both ways.
  for (NodeId other : cluster.Others(*leader)) {
    CHECK(Eventually([&] {
      return cluster.proxy(*leader, other).bytes_forwarded() > 0 &&
             cluster.proxy(other, *leader).bytes_forwarded() > 0;
    }));
  }
}

TEST_CASE(
    "grpc: an idle stream broken by the network is noticed and reopened "
    "before a message needs it",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  REQUIRE(cluster.Propose(*leader, Put("k", "v")).ok());
  const std::vector<NodeId> followers = cluster.Others(*leader);
  const NodeId a = followers[0];
  const NodeId b = followers[1];
  // Followers do not talk to each other: a's stream to b is idle. Once it
  // was opened (at start, perhaps before b listened, and reopened after any
  // failure), breaking its connection must be noticed without a write.
  auto counters = [&] { return cluster.server(a).Status().transport; };
  // Both of a's outbound streams are open (every stream opened and not
  // failed is open).
  REQUIRE(Eventually([&] {
    const raft::TransportCounters now = counters();
    return now.streams_opened - now.stream_failures == 2;
  }));
  const raft::TransportCounters before = counters();
  cluster.proxy(a, b).BreakConnections();
  CHECK(Eventually(
      [&] { return counters().stream_failures > before.stream_failures; },
      absl::Seconds(5)));
  CHECK(Eventually(
      [&] { return counters().streams_opened > before.streams_opened; },
      absl::Seconds(5)));
  // And a's first messages to b, when b leads, get through: a linearizable
  // read on a right after the change (its ReadIndex request goes to b).
  Latch<absl::Status> transfer;
  cluster.server(*leader).TransferLeadership(
      b, [&](absl::Status status) { transfer.Set(status); });
  REQUIRE(transfer.Wait().value_or(absl::UnknownError("no answer")).ok());
  REQUIRE(Eventually([&] { return cluster.Leader() == b; }));
  const absl::Time start = absl::Now();
  CHECK(ValueOf(cluster.Read(a, Get("k"), absl::Seconds(5))) == "v");
  CHECK(absl::Now() - start < absl::Seconds(2));
}

TEST_CASE(
    "grpc: a five-node cluster elects a leader and commits with two nodes "
    "cut off",
    "[integration]") {
  GrpcCluster cluster(5);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const std::vector<NodeId> others = cluster.Others(*leader);
  cluster.Isolate(others[0]);
  cluster.Isolate(others[1]);
  CHECK(ProposeMany(cluster, *leader, 500, 32) == 500);
  // The cut-off nodes learned nothing of it.
  CHECK(cluster.server(others[0]).Status().commit <
        LeaderCommit(cluster, *leader));
  cluster.Heal();
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  for (NodeId id : cluster.members()) CHECK(KeyCount(cluster, id) == 500);
}

TEST_CASE(
    "grpc: a five-node leader partitioned into the minority is replaced, and "
    "its uncommitted entry is dropped when the partition heals",
    "[integration]") {
  GrpcCluster cluster(5);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  REQUIRE(cluster.Propose(*old_leader, Put("a", "1")).ok());
  const std::vector<NodeId> others = cluster.Others(*old_leader);
  const std::vector<NodeId> minority = {*old_leader, others[0]};
  const std::vector<NodeId> majority = {others[1], others[2], others[3]};
  cluster.Partition({minority, majority});
  Outcome orphan;
  cluster.server(*old_leader)
      .Propose(Put("orphan", "x"), absl::Now() + absl::Seconds(60),
               orphan.Callback());
  std::optional<NodeId> new_leader = cluster.WaitForLeaderAmong(majority);
  REQUIRE(new_leader.has_value());
  CHECK(ProposeMany(cluster, *new_leader, 100, 16) == 100);
  cluster.Heal();
  REQUIRE(Eventually([&] { return cluster.Leader().has_value(); }));
  // Known not committed: overwritten by the majority's entries.
  CHECK(absl::IsAborted(orphan.Wait().status()));
  const NodeId leader = *cluster.Leader();
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, leader)));
  for (NodeId id : cluster.members()) {
    CHECK(KeyCount(cluster, id) == 101);
    CHECK(ValueOf(cluster.ReadLocal(id, Get("orphan"))) == "<absent>");
    CHECK(ValueOf(cluster.ReadLocal(id, Get("key99"))) == "value99");
  }
}

TEST_CASE(
    "grpc: 10,000 pipelined proposals are applied identically on every node",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  // Messages sent before every transport listened may have been dropped;
  // none is once the cluster runs.
  const uint64_t dropped =
      cluster.server(*leader).Status().transport.messages_dropped;
  const absl::Time start = absl::Now();
  CHECK(ProposeMany(cluster, *leader, 10'000, 256) == 10'000);
  const absl::Duration took = absl::Now() - start;
  std::cout << absl::StrFormat(
                   "grpc: 10,000 proposals committed in %.2f s (%.0f/s)\n",
                   absl::ToDoubleSeconds(took),
                   10'000 / absl::ToDoubleSeconds(took))
            << std::flush;
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  for (NodeId id : cluster.members()) {
    INFO("node " << id.value());
    CHECK(KeyCount(cluster, id) == 10'000);
    int wrong = 0;
    std::string first_wrong;
    for (int i = 0; i < 10'000; ++i) {
      const std::string value =
          ValueOf(cluster.ReadLocal(id, Get(absl::StrCat("key", i))));
      if (value != absl::StrCat("value", i) && wrong++ == 0) {
        first_wrong = absl::StrCat("key", i, " = ", value);
      }
    }
    INFO("first wrong: " << first_wrong);
    CHECK(wrong == 0);
  }
  const raft::NodeStatus status = cluster.server(*leader).Status();
  CHECK(status.counters.proposals_ok == 10'000);
  // Pipelined: many entries share one fsync.
  CHECK(status.counters.EntriesPerFsync() > 1.0);
  CHECK(status.transport.messages_dropped == dropped);
}

TEST_CASE(
    "grpc: a leader cut off and destroyed without a clean stop is replaced "
    "within a bound",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  REQUIRE(cluster.Propose(*old_leader, Put("a", "1")).ok());
  // Cut off first, so its stop cannot hand over: the others must elect.
  cluster.Isolate(*old_leader);
  const absl::Time cut = absl::Now();
  const std::vector<NodeId> rest = cluster.Others(*old_leader);
  std::optional<NodeId> new_leader =
      cluster.WaitForLeaderAmong(rest, absl::Seconds(10));
  REQUIRE(new_leader.has_value());
  // Within a few election timeouts (30 ticks of 10 ms, randomized to 2x).
  CHECK(absl::Now() - cut < absl::Seconds(3));
  cluster.Stop(*old_leader);
  REQUIRE(cluster.Propose(*new_leader, Put("b", "2")).ok());
  CHECK(ValueOf(cluster.Read(*new_leader, Get("a"))) == "1");
  for (NodeId id : rest) {
    CHECK(ValueOf(cluster.Read(id, Get("b"))) == "2");
  }
}

TEST_CASE(
    "grpc: restarted nodes, a follower and then the leader, catch up from "
    "the log on new ports",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId follower = AnotherThan(*leader);
  CHECK(ProposeMany(cluster, *leader, 100, 16, "before") == 100);
  const int old_port = cluster.port(follower);
  cluster.Stop(follower);
  CHECK(ProposeMany(cluster, *leader, 300, 16, "while") == 300);
  REQUIRE(cluster.Start(follower).ok());
  INFO("old port " << old_port << ", new port " << cluster.port(follower));
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  CHECK(ValueOf(cluster.ReadLocal(follower, Get("before7"))) == "value7");
  CHECK(ValueOf(cluster.ReadLocal(follower, Get("while299"))) == "value299");
  CHECK(cluster.server(follower).Status().counters.snapshots_received == 0);

  // The leader now: stopped cleanly, it hands over; restarted, it follows.
  cluster.Stop(*leader);
  std::optional<NodeId> next =
      cluster.WaitForLeaderAmong(cluster.Others(*leader));
  REQUIRE(next.has_value());
  CHECK(ProposeMany(cluster, *next, 100, 16, "after") == 100);
  REQUIRE(cluster.Start(*leader).ok());
  REQUIRE(Eventually([&] { return cluster.Leader().has_value(); }));
  const NodeId current = *cluster.Leader();
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, current)));
  for (NodeId id : cluster.members()) CHECK(KeyCount(cluster, id) == 500);
  CHECK(ValueOf(cluster.Read(*leader, Get("after99"))) == "value99");
}

TEST_CASE(
    "grpc: linearizable reads see every acknowledged write across a leader "
    "change",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  REQUIRE(cluster.Propose(*leader, Put("x", "1")).ok());
  for (NodeId id : cluster.members()) {
    CHECK(ValueOf(cluster.Read(id, Get("x"))) == "1");
  }
  const NodeId next = *leader == NodeId(3) ? NodeId(1) : NodeId(3);
  Latch<absl::Status> transfer;
  cluster.server(*leader).TransferLeadership(
      next, [&](absl::Status status) { transfer.Set(status); });
  REQUIRE(transfer.Wait().value_or(absl::UnknownError("no answer")).ok());
  REQUIRE(Eventually([&] { return cluster.Leader() == next; }));
  REQUIRE(cluster.Propose(next, Put("x", "2")).ok());
  // Every node, the old leader included, reads the new value at once.
  for (NodeId id : cluster.members()) {
    CHECK(ValueOf(cluster.Read(id, Get("x"))) == "2");
  }
  CHECK(cluster.server(next).Status().counters.reads_ok >= 2);
}

TEST_CASE(
    "grpc: a follower forwards proposals to the leader and completes them "
    "when it applies them",
    "[integration]") {
  GrpcCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId follower = AnotherThan(*leader);
  absl::StatusOr<std::string> response =
      cluster.Propose(follower, Put("f", "1"));
  REQUIRE(response.ok());
  auto decoded = statemachine::DecodeResponse(*response);
  REQUIRE(decoded.ok());
  CHECK(decoded->ok());
  CHECK(ProposeMany(cluster, follower, 1000, 64, "fwd") == 1000);
  CHECK(cluster.server(follower).Status().counters.proposals_forwarded == 1001);
  CHECK(ValueOf(cluster.Read(*leader, Get("fwd999"))) == "value999");
  CHECK(ValueOf(cluster.Read(follower, Get("fwd0"))) == "value0");
}

// --- Snapshots --------------------------------------------------------------

constexpr int kLargeValues = 72;
constexpr uint64_t kMiB = 1 << 20;

std::string LargeValue(int i) {
  std::string value(kMiB, static_cast<char>('a' + i % 26));
  const std::string tag = absl::StrCat("value", i, ";");
  value.replace(0, tag.size(), tag);
  return value;
}

// Options for the snapshot tests: one snapshot once ~70 MiB were applied,
// few trailing entries, and the production snapshot timeout (100 ticks of
// 100 ms; these ticks are 10 ms).
void SnapshotOptions(raft::ServerOptions& options) {
  // A 1 s election timeout: the large writes of these tests, under the
  // sanitizers and beside other tests, can hold a raft thread longer than
  // the cluster's usual 300 ms, and the leader's quorum check then fails.
  options.election_ticks = 100;
  options.compaction.snapshot_every_entries = 70;
  options.compaction.snapshot_every_bytes = uint64_t{1} << 30;
  options.compaction.trailing_entries = 5;
  options.snapshot_timeout_ticks = 1000;
}

struct FellBehind {
  NodeId leader;    // the leader once the follower fell behind
  NodeId follower;  // stopped
};

// Builds a cluster state where a follower (stopped) is so far behind the
// leader's compacted log that only a snapshot of more than 64 MiB can catch
// it up. Under load the leader may lose its quorum check while the large
// values are written and be elected again, or another node may be; the
// returned leader is the one in charge afterwards.
FellBehind FallBehind(GrpcCluster& cluster, NodeId leader) {
  const NodeId follower = AnotherThan(leader);
  CHECK(ProposeMany(cluster, leader, 2, 2, "before") == 2);
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, leader)));
  cluster.Stop(follower);
  CHECK(ProposeAllIdempotent(cluster, leader, kLargeValues, 4, [](int i) {
          return Put(absl::StrCat("large", i), LargeValue(i));
        }) == kLargeValues);
  const std::optional<NodeId> current = cluster.WaitForLeader();
  REQUIRE(current.has_value());
  REQUIRE(Eventually(
      [&] {
        return cluster.server(*current).Status().first_index > LogIndex(60);
      },
      absl::Seconds(60)));
  return {*current, follower};
}

// The follower holds every value the leader acknowledged.
void CheckCaughtUp(GrpcCluster& cluster, NodeId leader, NodeId follower) {
  REQUIRE(
      cluster.WaitApplied(LeaderCommit(cluster, leader), absl::Seconds(60)));
  CHECK(KeyCount(cluster, follower) == kLargeValues + 2);
  CHECK(ValueOf(cluster.ReadLocal(follower, Get("before1"))) == "value1");
  for (int i : {0, 1, 33, 64, kLargeValues - 1}) {
    INFO("large" << i);
    CHECK(ValueOf(cluster.ReadLocal(follower, Get(absl::StrCat("large", i)))) ==
          LargeValue(i));
  }
}

// The size of the largest snapshot data file under `dir`.
uint64_t LargestSnapshotFile(const std::filesystem::path& dir) {
  uint64_t largest = 0;
  std::error_code error;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, error);
       !error && it != std::filesystem::recursive_directory_iterator();
       it.increment(error)) {
    // Snapshots are retired while the cluster runs: a file removed
    // meanwhile is skipped.
    std::error_code file_error;
    if (it->is_regular_file(file_error) &&
        it->path().filename() ==
            statemachine::MemoryKvStateMachine::kDataFileName) {
      const std::uintmax_t size = it->file_size(file_error);
      if (!file_error) largest = std::max<uint64_t>(largest, size);
    }
  }
  return largest;
}

TEST_CASE(
    "grpc: a follower far behind catches up through a snapshot of more "
    "than 64 MiB streamed over gRPC",
    "[integration]") {
  GrpcCluster cluster(3, {.configure = SnapshotOptions});
  REQUIRE(cluster.StartAll().ok());
  const std::optional<NodeId> first_leader = cluster.WaitForLeader();
  REQUIRE(first_leader.has_value());
  const auto [leader, follower] = FallBehind(cluster, *first_leader);
  REQUIRE(cluster.Start(follower).ok());
  const absl::Time restarted = absl::Now();
  REQUIRE(Eventually(
      [&] {
        return cluster.server(follower)
                   .Status()
                   .transport.snapshot_bytes_received > 0;
      },
      absl::Seconds(30)));
  const absl::Time first_byte = absl::Now();
  REQUIRE(Eventually(
      [&] {
        return cluster.server(follower).Status().counters.snapshots_received >=
               1;
      },
      absl::Seconds(60)));
  const absl::Time installed = absl::Now();
  const raft::NodeStatus status = cluster.server(follower).Status();
  const uint64_t bytes = status.transport.snapshot_bytes_received;
  CHECK(bytes >= 64 * kMiB);
  CHECK(status.transport.snapshot_resumes == 0);
  CHECK(cluster.server(leader).Status().transport.snapshot_bytes_sent >= bytes);
  const double seconds =
      std::max(absl::ToDoubleSeconds(installed - first_byte), 1e-3);
  const std::string rate = absl::StrFormat(
      "grpc: snapshot of %.1f MiB streamed and installed in %.2f s: %.0f MiB/s "
      "(%.2f s from restart to first byte)",
      static_cast<double>(bytes) / kMiB, seconds,
      static_cast<double>(bytes) / kMiB / seconds,
      absl::ToDoubleSeconds(first_byte - restarted));
  INFO(rate);
  std::cout << rate << "\n" << std::flush;
  CheckCaughtUp(cluster, leader, follower);
  CHECK(cluster.server(leader).Status().counters.snapshots_sent >= 1);
}

TEST_CASE("grpc: a snapshot stream broken midway resumes where it stopped",
          "[integration]") {
  // Slow enough (~2 s for the snapshot) that the test breaks it midway.
  constexpr uint64_t kBytesPerSecond = 32 * kMiB;
  GrpcCluster cluster(
      3, {.configure = SnapshotOptions,
          .configure_transport = [&](NodeId, rpc::GrpcTransportOptions& o) {
            o.snapshot_bytes_per_second = kBytesPerSecond;
          }});
  REQUIRE(cluster.StartAll().ok());
  const std::optional<NodeId> first_leader = cluster.WaitForLeader();
  REQUIRE(first_leader.has_value());
  const auto [leader, follower] = FallBehind(cluster, *first_leader);
  REQUIRE(cluster.Start(follower).ok());
  auto received = [&] {
    return cluster.server(follower).Status().transport.snapshot_bytes_received;
  };
  REQUIRE(
      Eventually([&] { return received() >= 8 * kMiB; }, absl::Seconds(30)));
  cluster.proxy(leader, follower).BreakConnections();
  const uint64_t at_break = received();
  INFO("received " << at_break << " bytes when the stream broke");
  REQUIRE(cluster.server(follower).Status().counters.snapshots_received == 0);
  CHECK(at_break > 0);
  CHECK(at_break < 64 * kMiB);
  REQUIRE(Eventually(
      [&] {
        return cluster.server(follower).Status().counters.snapshots_received >=
               1;
      },
      absl::Seconds(60)));
  const raft::TransportCounters counters =
      cluster.server(follower).Status().transport;
  CHECK(counters.snapshot_resumes >= 1);
  // Resumed, not restarted: the bytes received add up to about one copy of
  // the snapshot (bytes lost in flight at the break are received twice).
  const uint64_t snapshot_bytes =
      LargestSnapshotFile(cluster.Options(follower).data_dir);
  INFO("snapshot file of " << snapshot_bytes << " bytes");
  CHECK(snapshot_bytes >= 64 * kMiB);
  CHECK(counters.snapshot_bytes_received >= snapshot_bytes);
  CHECK(counters.snapshot_bytes_received < snapshot_bytes + at_break / 2);
  CheckCaughtUp(cluster, leader, follower);
}

// --- Security ---------------------------------------------------------------

// A raw call of Peer.Send: writes each frame as one message (bytes, so they
// need not parse as an Envelope), half-closes, and returns the status.
grpc::Status RawSend(const std::shared_ptr<grpc::Channel>& channel,
                     const std::vector<std::string>& frames) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue queue;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(20));
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, "/driftwood.rpc.Peer/Send", &queue);
  // Each operation completes before the next starts.
  auto complete = [&](intptr_t expected) {
    void* tag = nullptr;
    bool ok = false;
    REQUIRE(queue.Next(&tag, &ok));
    REQUIRE(reinterpret_cast<intptr_t>(tag) == expected);
    return ok;
  };
  call->StartCall(reinterpret_cast<void*>(1));
  bool ok = complete(1);
  for (const std::string& frame : frames) {
    if (!ok) break;
    grpc::Slice slice(frame);
    grpc::ByteBuffer buffer(&slice, 1);
    call->Write(buffer, reinterpret_cast<void*>(2));
    ok = complete(2);
  }
  if (ok) {
    call->WritesDone(reinterpret_cast<void*>(3));
    complete(3);
  }
  grpc::ByteBuffer reply;
  call->Read(&reply, reinterpret_cast<void*>(4));
  complete(4);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  complete(5);
  queue.Shutdown();
  void* tag;
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

std::shared_ptr<grpc::Channel> PlaintextChannel(int port) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

TEST_CASE("grpc: a mutual TLS cluster elects, commits and forwards",
          "[integration]") {
  GrpcCluster cluster(3, {.tls = true});
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId follower = AnotherThan(*leader);
  CHECK(ProposeMany(cluster, *leader, 200, 32, "direct") == 200);
  CHECK(ProposeMany(cluster, follower, 200, 32, "forwarded") == 200);
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  for (NodeId id : cluster.members()) {
    CHECK(KeyCount(cluster, id) == 400);
    CHECK(ValueOf(cluster.Read(id, Get("forwarded199"))) == "value199");
  }
  // A plaintext client cannot talk to a TLS node.
  grpc::Status plaintext = RawSend(PlaintextChannel(cluster.port(*leader)),
                                   {rpc::Envelope().SerializeAsString()});
  CHECK_FALSE(plaintext.ok());
  CHECK(Refused(cluster.server(*leader).Status().transport) == 0);
}

TEST_CASE(
    "grpc: a node whose certificate another CA signed is refused and the "
    "others keep working",
    "[integration]") {
  const NodeId rogue(3);
  GrpcCluster cluster(3, {.tls = true, .rogue_certificates = {rogue}});
  REQUIRE(cluster.StartAll().ok());
  const std::vector<NodeId> good = cluster.Others(rogue);
  std::optional<NodeId> leader = cluster.WaitForLeaderAmong(good);
  REQUIRE(leader.has_value());
  REQUIRE(Eventually([&] {
    return cluster.server(rogue).Status().transport.stream_failures >= 1;
  }));
  const uint64_t failures =
      cluster.server(rogue).Status().transport.stream_failures;
  CHECK(cluster.server(rogue).Status().leader == raft::kNoNode);
  CHECK(ProposeMany(cluster, *leader, 200, 32) == 200);
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader), absl::Seconds(20),
                              good));
  const raft::NodeStatus rogue_status = cluster.server(rogue).Status();
  CHECK(rogue_status.leader == raft::kNoNode);
  CHECK(rogue_status.commit < LeaderCommit(cluster, *leader));
  CHECK(KeyCount(cluster, rogue) == 0);
  // It keeps trying, and keeps failing.
  CHECK(Eventually([&] {
    return cluster.server(rogue).Status().transport.stream_failures > failures;
  }));
  CHECK(cluster.server(rogue).Status().leader == raft::kNoNode);
  // The leader never heard from it.
  const std::optional<raft::PeerStatus> view =
      cluster.server(*leader).Status().Peer(rogue);
  REQUIRE(view.has_value());
  CHECK(view->match == LogIndex(0));
}

TEST_CASE("grpc: a node of another cluster is refused and never joins",
          "[integration]") {
  const NodeId stranger(3);
  GrpcCluster cluster(3, {.configure = [&](raft::ServerOptions& options) {
                        if (options.id == stranger) {
                          options.cluster_token = "another-cluster";
                        }
                      }});
  REQUIRE(cluster.StartAll().ok());
  const std::vector<NodeId> good = cluster.Others(stranger);
  std::optional<NodeId> leader = cluster.WaitForLeaderAmong(good);
  REQUIRE(leader.has_value());
  auto refused_by_good = [&] {
    uint64_t refused = 0;
    for (NodeId id : good) {
      refused += cluster.server(id).Status().transport.refused_cluster;
    }
    return refused;
  };
  REQUIRE(Eventually([&] { return refused_by_good() >= 1; }));
  const uint64_t refused = refused_by_good();
  CHECK(ProposeMany(cluster, *leader, 200, 32) == 200);
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader), absl::Seconds(20),
                              good));
  // The stranger keeps knocking (its elections), and is refused each time;
  // it refuses the others' traffic alike.
  CHECK(Eventually([&] { return refused_by_good() > refused; }));
  CHECK(Eventually([&] {
    return cluster.server(stranger).Status().transport.refused_cluster >= 1;
  }));
  const raft::NodeStatus status = cluster.server(stranger).Status();
  CHECK(status.leader == raft::kNoNode);
  CHECK(KeyCount(cluster, stranger) == 0);
  const std::optional<raft::PeerStatus> view =
      cluster.server(*leader).Status().Peer(stranger);
  REQUIRE(view.has_value());
  CHECK(view->match == LogIndex(0));
}

// --- Hostile input ----------------------------------------------------------

// A valid envelope from `from` to `to` with messages of every common kind,
// in a stale term 1 (the template of the mutations; never sent as is).
rpc::Envelope TemplateEnvelope(uint64_t cluster_id, NodeId from, NodeId to) {
  auto message = [&](raft::Payload payload) {
    return raft::Message{from, to, raft::Term(1), std::move(payload)};
  };
  raft::AppendEntries append{LogIndex(3), raft::Term(1), {}, LogIndex(2)};
  for (uint64_t i = 4; i <= 6; ++i) {
    append.entries.push_back(raft::Entry{raft::Term(1), LogIndex(i),
                                         raft::EntryType::kNormal,
                                         raft::EntryData(Put("m", "x"))});
  }
  const std::vector<raft::Message> messages = {
      message(append),
      message(raft::AppendEntriesResponse{true, LogIndex(6), LogIndex(0),
                                          raft::Term(0)}),
      message(raft::RequestVote{LogIndex(6), raft::Term(1), true, false}),
      message(raft::Heartbeat{LogIndex(2), 5}),
  };
  return rpc::EncodeEnvelope(cluster_id, from, to, messages);
}

// Whether `target` (with `cluster_id`, in `cluster`) would accept `bytes`:
// they parse, are routed to it from a member, and decode.
bool Acceptable(const std::string& bytes, uint64_t cluster_id, NodeId target,
                const std::vector<NodeId>& members) {
  rpc::Envelope envelope;
  if (!envelope.ParseFromString(bytes)) return false;
  const bool known_sender = envelope.from() != target.value() &&
                            std::find(members.begin(), members.end(),
                                      NodeId(envelope.from())) != members.end();
  return envelope.protocol_version() == rpc::kProtocolVersion &&
         envelope.cluster_id() == cluster_id &&
         envelope.to() == target.value() && known_sender &&
         rpc::DecodeEnvelope(envelope).ok();
}

TEST_CASE(
    "grpc: hostile envelopes are refused with a status naming the problem, "
    "and the cluster loses nothing",
    "[integration]") {
  constexpr size_t kMaxGrpcMessage = 4 << 20;
  GrpcCluster cluster(
      3, {.configure_transport = [](NodeId, rpc::GrpcTransportOptions& o) {
        o.max_grpc_message_bytes = kMaxGrpcMessage;
      }});
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  // The puts are idempotent: those a leader change under load fails are
  // proposed again (ProposeAllIdempotent), since what this test checks is
  // that hostile input loses nothing, not the cluster's liveness.
  const auto put_value = [](const std::string& prefix) {
    return [prefix](int i) {
      return Put(absl::StrCat(prefix, i), absl::StrCat("value", i));
    };
  };
  CHECK(ProposeAllIdempotent(cluster, *leader, 200, 32, put_value("before")) ==
        200);
  const uint64_t cluster_id = cluster.cluster_id();
  const uint64_t seed = std::random_device{}();
  std::cout << "grpc hostile input: seed " << seed << "\n" << std::flush;
  INFO("seed " << seed);
  std::mt19937_64 random(seed);

  for (NodeId target : cluster.members()) {
    INFO("target node " << target.value());
    const NodeId peer = AnotherThan(target);
    std::shared_ptr<grpc::Channel> channel =
        PlaintextChannel(cluster.port(target));
    const raft::TransportCounters before =
        cluster.server(target).Status().transport;
    auto counters = [&] { return cluster.server(target).Status().transport; };

    // Another protocol version.
    rpc::Envelope envelope = TemplateEnvelope(cluster_id, peer, target);
    envelope.set_protocol_version(rpc::kProtocolVersion + 7);
    grpc::Status status = RawSend(channel, {envelope.SerializeAsString()});
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(), Catch::Contains("protocol version"));
    CHECK(counters().refused_malformed == before.refused_malformed + 1);

    // Another cluster.
    envelope = TemplateEnvelope(cluster_id ^ 0x5a5a, peer, target);
    status = RawSend(channel, {envelope.SerializeAsString()});
    CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
    CHECK_THAT(status.error_message(), Catch::Contains("cluster"));
    CHECK(counters().refused_cluster == before.refused_cluster + 1);

    // A sender that is not a member.
    envelope = TemplateEnvelope(cluster_id, NodeId(99), target);
    status = RawSend(channel, {envelope.SerializeAsString()});
    CHECK(status.error_code() == grpc::StatusCode::PERMISSION_DENIED);
    CHECK_THAT(status.error_message(), Catch::Contains("not a known peer"));
    CHECK(counters().refused_sender == before.refused_sender + 1);

    // A malformed message from a member: entries out of order.
    envelope = TemplateEnvelope(cluster_id, peer, target);
    envelope.mutable_messages(0)
        ->mutable_append_entries()
        ->mutable_entries(1)
        ->set_index(20);
    status = RawSend(channel, {envelope.SerializeAsString()});
    CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(status.error_message(),
               Catch::Contains("index 20 where 5 was expected"));
    CHECK(counters().refused_malformed == before.refused_malformed + 2);

    // More than max_grpc_message_bytes: refused by gRPC itself.
    envelope = TemplateEnvelope(cluster_id, peer, target);
    envelope.mutable_messages(0)
        ->mutable_append_entries()
        ->mutable_entries(0)
        ->set_data(std::string(kMaxGrpcMessage + 1000, 'o'));
    status = RawSend(channel, {envelope.SerializeAsString()});
    CHECK(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    CHECK_THAT(status.error_message(), Catch::Contains("larger than max"));
    INFO("oversized: refused counters " << Refused(before) << " -> "
                                        << Refused(counters()));

    // Random bytes, and random mutations of a valid envelope that the node
    // must refuse (a mutation it would accept is a well-formed message from
    // a member, which no transport can tell from a real one: not sent).
    const std::string valid =
        TemplateEnvelope(cluster_id, peer, target).SerializeAsString();
    const raft::TransportCounters before_random = counters();
    uint64_t sent = 0;
    int unparsable = 0;
    int skipped = 0;
    // Calls that ended OK, or non-OK without a message; the first of each.
    int accepted = 0;
    int unexplained = 0;
    std::string first_accepted;
    std::string first_unexplained;
    for (int i = 0; i < 200; ++i) {
      std::string bytes;
      if (i < 40) {
        bytes.resize(1 + random() % 2000);
        for (char& c : bytes) c = static_cast<char>(random());
      } else {
        bytes = valid;
        const int edits = 1 + static_cast<int>(random() % 4);
        for (int e = 0; e < edits; ++e) {
          const size_t at = random() % bytes.size();
          switch (random() % 3) {
            case 0:
              bytes[at] = static_cast<char>(random());
              break;
            case 1: {
              const auto flip = static_cast<uint8_t>(1u << (random() % 8));
              bytes[at] =
                  static_cast<char>(static_cast<uint8_t>(bytes[at]) ^ flip);
              break;
            }
            default:
              bytes.resize(at + 1);
              break;
          }
        }
      }
      if (Acceptable(bytes, cluster_id, target, cluster.members())) {
        ++skipped;
        continue;
      }
      rpc::Envelope parsed;
      const bool parses = parsed.ParseFromString(bytes);
      if (!parses) ++unparsable;
      ++sent;
      status = RawSend(channel, {bytes});
      const std::string what =
          absl::StrCat("frame ", i, " (", bytes.size(), " bytes, ",
                       parses ? "parses" : "does not parse", ")");
      if (status.ok()) {
        if (accepted++ == 0) first_accepted = what;
      } else if (status.error_message().empty()) {
        if (unexplained++ == 0) {
          first_unexplained =
              absl::StrCat(what, ": code ", status.error_code());
        }
      }
    }
    INFO("sent " << sent << " (" << unparsable << " unparsable), skipped "
                 << skipped << "; first ended OK: " << first_accepted
                 << "; first without a message: " << first_unexplained);
    CHECK(accepted == 0);
    CHECK(unexplained == 0);
    CHECK(Refused(counters()) == Refused(before_random) + sent);
    // A good frame after a bad one on the same stream does not get through.
    envelope = TemplateEnvelope(cluster_id, peer, target);
    envelope.set_cluster_id(cluster_id + 1);
    status = RawSend(
        channel,
        {envelope.SerializeAsString(),
         TemplateEnvelope(cluster_id, peer, target).SerializeAsString()});
    CHECK(status.error_code() == grpc::StatusCode::FAILED_PRECONDITION);
  }

  // Nothing was lost, and the cluster keeps committing.
  leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  CHECK(ProposeAllIdempotent(cluster, *leader, 200, 32, put_value("after")) ==
        200);
  leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  for (NodeId id : cluster.members()) {
    CHECK(KeyCount(cluster, id) == 400);
    CHECK(ValueOf(cluster.Read(id, Get("before0"))) == "value0");
    CHECK(ValueOf(cluster.Read(id, Get("after199"))) == "value199");
  }
}

}  // namespace
}  // namespace driftwood::testing
