// The server runtime (raft/server/server.h) as an application sees it:
// threaded 3- and 5-node clusters over the in-process transport, RocksDB logs
// in temporary folders. Liveness deadlines are generous; nothing sleeps to
// wait (Eventually polls with a deadline).
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "catch2/catch.hpp"
#include "raft/storage/memory_log_store.h"
#include "tests/raft/server/server_cluster.h"

namespace driftwood::testing {
namespace {

using raft::LogIndex;
using raft::NodeId;
using raft::Role;

// Proposes `count` puts key<i> = value<i> on `on`, `window` at a time, and
// waits for every outcome; returns how many were OK.
uint64_t ProposeMany(ServerCluster& cluster, NodeId on, int count, int window,
                     const std::string& prefix = "key") {
  std::atomic<int> in_flight{0};
  std::atomic<uint64_t> ok{0};
  std::atomic<int> completed{0};
  for (int i = 0; i < count; ++i) {
    REQUIRE(Eventually([&] { return in_flight.load() < window; }));
    ++in_flight;
    cluster.server(on).Propose(
        Put(absl::StrCat(prefix, i), absl::StrCat("value", i)),
        absl::Now() + absl::Seconds(30),
        [&](absl::StatusOr<std::string> result) {
          if (result.ok()) ++ok;
          --in_flight;
          ++completed;
        });
  }
  REQUIRE(
      Eventually([&] { return completed.load() == count; }, absl::Seconds(60)));
  return ok.load();
}

LogIndex LeaderCommit(ServerCluster& cluster, NodeId leader) {
  return cluster.server(leader).Status().commit;
}

TEST_CASE("a three-node cluster elects one leader that every node follows",
          "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const raft::NodeStatus status = cluster.server(*leader).Status();
  CHECK(status.term > raft::Term(0));
  CHECK(status.peers.size() == 3);
  CHECK(status.counters.elections >= 1);
  // Each server's threads carry names `top -H` and perf show.
  std::map<std::string, int> names;
  for (const auto& task :
       std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    ++names[name];
  }
  for (const char* name : {"dw-raft", "dw-apply", "dw-snapshot", "dw-timer"}) {
    CAPTURE(name);
    CHECK(names[name] == 3);
  }
}

TEST_CASE("10,000 proposals are applied identically on every node",
          "[server]") {
  const bool inline_delivery = GENERATE(true, false);
  CAPTURE(inline_delivery);
  ServerCluster cluster(3, nullptr, inline_delivery);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  CHECK(ProposeMany(cluster, *leader, 10'000, 256) == 10'000);
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  for (NodeId id : cluster.members()) {
    auto count = statemachine::DecodeCountResult(*cluster.ReadLocal(
        id, statemachine::EncodeQuery(statemachine::CountQuery{})));
    REQUIRE(count.ok());
    CHECK(*count == 10'000);
    for (int i = 0; i < 10'000; i += 997) {
      CHECK(GetValue(cluster.ReadLocal(id, Get(absl::StrCat("key", i)))) ==
            absl::StrCat("value", i));
    }
  }
  const raft::NodeStatus status = cluster.server(*leader).Status();
  CHECK(status.counters.proposals_ok == 10'000);
  // Group commit: many entries share one fsync.
  CHECK(status.counters.EntriesPerFsync() > 1.0);
  // Every entry was applied (the 10,000 proposals, the leader's empty
  // entry), many per Apply call.
  CHECK(status.counters.entries_applied >= 10'001);
  CHECK(status.counters.apply_batches > 0);
  CHECK(status.counters.apply_batches < status.counters.entries_applied);
}

TEST_CASE(
    "a proposal's callback finds its index committed and applied in Status()",
    "[server]") {
  // Callers wait on Status() after their proposals completed (tests,
  // operators, the store's revision checks); the apply thread completes a
  // proposal before the raft loop publishes its next turn, so the applied
  // index must move before the callbacks run and the commit index must never
  // read below it.
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  // The leader's empty entry applied, the next proposal goes to last + 1.
  const LogIndex last = cluster.server(*leader).Status().last_index;
  REQUIRE(cluster.WaitApplied(last));
  constexpr int kProposals = 200;
  int ok = 0;
  for (int i = 0; i < kProposals; ++i) {
    // A lower bound: a leadership change would add an entry before it.
    const LogIndex index(last.value() + 1 + static_cast<uint64_t>(i));
    raft::NodeStatus seen;
    Outcome outcome;
    cluster.server(*leader).Propose(
        Put(absl::StrCat("key", i), "value"), absl::Now() + absl::Seconds(10),
        [&, done = outcome.Callback()](
            absl::StatusOr<std::string> result) mutable {
          seen = cluster.server(*leader).Status();
          done(std::move(result));
        });
    if (!outcome.Wait().ok()) continue;
    ++ok;
    CAPTURE(i, index.value(), seen.applied.value(), seen.commit.value());
    REQUIRE(seen.applied >= index);
    REQUIRE(seen.commit >= seen.applied);
  }
  CHECK(ok > kProposals / 2);
}

TEST_CASE("a five-node cluster commits with two nodes cut off", "[server]") {
  ServerCluster cluster(5);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const std::vector<NodeId> others = cluster.Others(*leader);
  cluster.network().Isolate(others[0]);
  cluster.network().Isolate(others[1]);
  CHECK(ProposeMany(cluster, *leader, 500, 32) == 500);
  cluster.network().Heal();
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
}

TEST_CASE("a leader cut off and destroyed without a clean stop is replaced",
          "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  REQUIRE(cluster.Propose(*old_leader, Put("a", "1")).ok());
  // Cut off first, so its stop cannot hand over: the others must elect.
  cluster.network().Isolate(*old_leader);
  const absl::Time cut = absl::Now();
  const std::vector<NodeId> rest = cluster.Others(*old_leader);
  std::optional<NodeId> new_leader =
      cluster.WaitForLeaderAmong(rest, absl::Seconds(10));
  REQUIRE(new_leader.has_value());
  // Within a few election timeouts (30 ticks of 10 ms, randomized to 2x).
  CHECK(absl::Now() - cut < absl::Seconds(3));
  cluster.Stop(*old_leader);
  REQUIRE(cluster.Propose(*new_leader, Put("b", "2")).ok());
  CHECK(GetValue(cluster.Read(*new_leader, Get("a"))) == "1");
  // term() and leader() (what every response header reads) follow the new
  // term and leader as Status() does.
  const raft::Term new_term = cluster.server(*new_leader).Status().term;
  for (NodeId id : rest) {
    CAPTURE(id.value());
    CHECK(Eventually(
        [&] {
          const raft::NodeStatus status = cluster.server(id).Status();
          return cluster.server(id).leader() == *new_leader &&
                 cluster.server(id).term() == new_term &&
                 status.leader == *new_leader && status.term == new_term;
        },
        absl::Seconds(10)));
  }
}

TEST_CASE("a restarted follower catches up from the log", "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId follower = *leader == NodeId(1) ? NodeId(2) : NodeId(1);
  CHECK(ProposeMany(cluster, *leader, 100, 16, "before") == 100);
  cluster.Stop(follower);
  CHECK(ProposeMany(cluster, *leader, 300, 16, "while") == 300);
  REQUIRE(cluster.Start(follower).ok());
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  CHECK(GetValue(cluster.ReadLocal(follower, Get("before7"))) == "value7");
  CHECK(GetValue(cluster.ReadLocal(follower, Get("while299"))) == "value299");
  CHECK(cluster.server(follower).Status().counters.snapshots_received == 0);
}

TEST_CASE(
    "a restarted follower catches up from a snapshot sent through the "
    "transport",
    "[server]") {
  const bool inline_delivery = GENERATE(true, false);
  CAPTURE(inline_delivery);
  ServerCluster cluster(
      3,
      [](raft::ServerOptions& options) {
        options.compaction.snapshot_every_entries = 100;
        options.compaction.trailing_entries = 20;
      },
      inline_delivery);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId follower = *leader == NodeId(1) ? NodeId(2) : NodeId(1);
  CHECK(ProposeMany(cluster, *leader, 50, 16, "before") == 50);
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  cluster.Stop(follower);
  CHECK(ProposeMany(cluster, *leader, 600, 32, "while") == 600);
  // The leader compacted past what the follower holds.
  REQUIRE(Eventually([&] {
    return cluster.server(*leader).Status().first_index > LogIndex(60);
  }));
  REQUIRE(cluster.Start(follower).ok());
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  CHECK(cluster.server(follower).Status().counters.snapshots_received >= 1);
  CHECK(cluster.server(*leader).Status().counters.snapshots_sent >= 1);
  CHECK(GetValue(cluster.ReadLocal(follower, Get("while599"))) == "value599");
  CHECK(GetValue(cluster.ReadLocal(follower, Get("before3"))) == "value3");
  // And it restarts again from its own snapshot plus log.
  cluster.Stop(follower);
  REQUIRE(cluster.Start(follower).ok());
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, *leader)));
  CHECK(GetValue(cluster.ReadLocal(follower, Get("while42"))) == "value42");
}

TEST_CASE(
    "linearizable reads see every acknowledged write across a leader "
    "change",
    "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  REQUIRE(cluster.Propose(*leader, Put("x", "1")).ok());
  for (NodeId id : cluster.members()) {
    CHECK(GetValue(cluster.Read(id, Get("x"))) == "1");
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
    CHECK(GetValue(cluster.Read(id, Get("x"))) == "2");
  }
  CHECK(cluster.server(next).Status().counters.reads_ok >= 2);
}

void RetryReadsQuickly(raft::ServerOptions& options) {
  options.read_retry_interval = absl::Milliseconds(100);
}

// Starts `cluster` and commits x=1; returns the leader, if one was elected
// and the write committed.
std::optional<NodeId> StartWithOneWrite(ServerCluster& cluster) {
  if (!cluster.StartAll().ok()) return std::nullopt;
  std::optional<NodeId> leader = cluster.WaitForLeader();
  if (!leader.has_value() || !cluster.Propose(*leader, Put("x", "1")).ok()) {
    return std::nullopt;
  }
  return leader;
}

TEST_CASE(
    "a follower's linearizable read is answered after its ReadIndex request "
    "was lost",
    "[server]") {
  ServerCluster cluster(3, RetryReadsQuickly);
  const std::optional<NodeId> leader = StartWithOneWrite(cluster);
  REQUIRE(leader.has_value());
  const NodeId follower = *leader == NodeId(1) ? NodeId(2) : NodeId(1);
  // The follower still hears (and follows) the leader, but what it sends is
  // lost.
  cluster.network().BlockOneWay(follower, *leader);
  const uint64_t retries_before =
      cluster.server(follower).Status().counters.read_index_retries;
  Outcome outcome;
  cluster.server(follower).Read(Get("x"), absl::Now() + absl::Seconds(15),
                                outcome.Callback());
  // A retry means the first request was sent, over the cut link.
  REQUIRE(Eventually([&] {
    return cluster.server(follower).Status().counters.read_index_retries >
           retries_before;
  }));
  CHECK_FALSE(outcome.done());
  cluster.network().Heal();
  CHECK(GetValue(outcome.Wait()) == "1");
}

TEST_CASE(
    "a read held by a leader that steps down is answered by the next leader",
    "[server]") {
  ServerCluster cluster(3, RetryReadsQuickly);
  const std::optional<NodeId> leader = StartWithOneWrite(cluster);
  REQUIRE(leader.has_value());
  // Cut off, the leader cannot confirm the read (thesis §6.4 step 2); it
  // steps down after an election timeout (CheckQuorum) and drops it.
  cluster.network().Isolate(*leader);
  Outcome outcome;
  cluster.server(*leader).Read(Get("x"), absl::Now() + absl::Seconds(15),
                               outcome.Callback());
  std::optional<NodeId> next =
      cluster.WaitForLeaderAmong(cluster.Others(*leader));
  REQUIRE(next.has_value());
  REQUIRE(cluster.Propose(*next, Put("x", "2")).ok());
  REQUIRE(Eventually(
      [&] { return cluster.server(*leader).Status().role != Role::kLeader; }));
  CHECK_FALSE(outcome.done());
  cluster.network().Heal();
  // Sent again to the leader it now follows. The read overlaps the write of
  // 2, so either value is linearizable; an answer must come.
  const std::string value = GetValue(outcome.Wait());
  CHECK((value == "1" || value == "2"));
  CHECK(cluster.server(*leader).Status().counters.read_index_retries >= 1);
}

TEST_CASE(
    "a follower forwards proposals to the leader and completes them "
    "when it applies them",
    "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId follower = *leader == NodeId(1) ? NodeId(2) : NodeId(1);
  absl::StatusOr<std::string> response =
      cluster.Propose(follower, Put("f", "1"));
  REQUIRE(response.ok());
  auto decoded = statemachine::DecodeResponse(*response);
  REQUIRE(decoded.ok());
  CHECK(decoded->ok());
  CHECK(ProposeMany(cluster, follower, 1000, 64, "fwd") == 1000);
  CHECK(cluster.server(follower).Status().counters.proposals_forwarded == 1001);
  CHECK(GetValue(cluster.Read(*leader, Get("fwd999"))) == "value999");
}

TEST_CASE("outcome table: no leader known is Unavailable", "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.Start(NodeId(1)).ok());
  absl::StatusOr<std::string> result =
      cluster.Propose(NodeId(1), Put("k", "v"));
  CHECK(absl::IsUnavailable(result.status()));
  absl::StatusOr<std::string> read = cluster.Read(NodeId(1), Get("k"));
  CHECK(absl::IsUnavailable(read.status()));
  CHECK(cluster.server(NodeId(1)).Status().counters.proposals_unavailable == 1);
}

TEST_CASE(
    "outcome table: a transfer in progress refuses proposals as "
    "Unavailable",
    "[server]") {
  // Long election timeouts: the transfer is not abandoned during the test.
  ServerCluster cluster(
      3, [](raft::ServerOptions& options) { options.election_ticks = 100; });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  const NodeId target = *leader == NodeId(1) ? NodeId(2) : NodeId(1);
  // The target cannot hear the leader, so the transfer stays in progress.
  cluster.network().BlockOneWay(*leader, target);
  Latch<absl::Status> started;
  cluster.server(*leader).TransferLeadership(
      target, [&](absl::Status status) { started.Set(status); });
  REQUIRE(started.Wait().has_value());
  REQUIRE(Eventually([&] {
    return cluster.server(*leader).Status().lead_transferee == target;
  }));
  absl::StatusOr<std::string> result = cluster.Propose(*leader, Put("k", "v"));
  CHECK(absl::IsUnavailable(result.status()));
  CHECK_THAT(std::string(result.status().message()),
             Catch::Contains("transfer"));
  cluster.network().Heal();
}

TEST_CASE(
    "outcome table: too large is InvalidArgument, a full queue is "
    "ResourceExhausted",
    "[server]") {
  ServerCluster cluster(3, [](raft::ServerOptions& options) {
    options.max_request_bytes = 1000;
    options.max_pending_proposals = 4;
  });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  absl::StatusOr<std::string> large =
      cluster.Propose(*leader, Put("k", std::string(2000, 'x')));
  CHECK(absl::IsInvalidArgument(large.status()));
  // Without a quorum nothing commits, so four proposals fill the queue.
  for (NodeId id : cluster.Others(*leader)) cluster.network().Isolate(id);
  std::vector<std::unique_ptr<Outcome>> pending;
  for (int i = 0; i < 4; ++i) {
    pending.push_back(std::make_unique<Outcome>());
    cluster.server(*leader).Propose(Put("p", "v"),
                                    absl::Now() + absl::Seconds(30),
                                    pending.back()->Callback());
  }
  absl::StatusOr<std::string> refused = cluster.Propose(*leader, Put("q", "v"));
  CHECK(absl::IsResourceExhausted(refused.status()));
  cluster.network().Heal();
  // Healed, the queued proposals complete (committed, or known not to be).
  for (auto& outcome : pending) {
    absl::StatusOr<std::string> result = outcome->Wait();
    CHECK((result.ok() || absl::IsUnavailable(result.status()) ||
           absl::IsAborted(result.status())));
  }
}

// Cuts off `old_leader` right after it appended an orphan proposal (whose
// outcome goes to `orphan`), and returns the leader the others elect.
NodeId CutOffWithOrphan(ServerCluster& cluster, NodeId old_leader,
                        Outcome& orphan) {
  REQUIRE(cluster.Propose(old_leader, Put("a", "1")).ok());
  cluster.network().Isolate(old_leader);
  // Appended by the cut-off leader, never committed.
  cluster.server(old_leader)
      .Propose(Put("orphan", "x"), absl::Now() + absl::Seconds(60),
               orphan.Callback());
  std::optional<NodeId> new_leader =
      cluster.WaitForLeaderAmong(cluster.Others(old_leader));
  REQUIRE(new_leader.has_value());
  return *new_leader;
}

TEST_CASE("outcome table: an entry overwritten by another term is Aborted",
          "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  Outcome orphan;
  const NodeId new_leader = CutOffWithOrphan(cluster, *old_leader, orphan);
  REQUIRE(cluster.Propose(new_leader, Put("b", "2")).ok());
  cluster.network().Heal();
  absl::StatusOr<std::string> result = orphan.Wait();
  CHECK(absl::IsAborted(result.status()));
  REQUIRE(cluster.WaitApplied(LeaderCommit(cluster, new_leader)));
  CHECK(GetValue(cluster.ReadLocal(*old_leader, Get("orphan"))) == "<absent>");
  CHECK(cluster.server(*old_leader).Status().counters.proposals_aborted == 1);
}

TEST_CASE(
    "outcome table: a leader that steps down keeps waiting, and its "
    "entry committed by the next leader completes OK",
    "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  REQUIRE(cluster.Propose(*old_leader, Put("a", "1")).ok());
  const std::vector<NodeId> rest = cluster.Others(*old_leader);
  // The followers receive the entry but their answers are lost: the old
  // leader cannot commit it, and steps down for want of a quorum.
  for (NodeId id : rest) cluster.network().BlockOneWay(id, *old_leader);
  Outcome survivor;
  cluster.server(*old_leader)
      .Propose(Put("survivor", "x"), absl::Now() + absl::Seconds(60),
               survivor.Callback());
  REQUIRE(Eventually([&] {
    return cluster.server(*old_leader).Status().role != Role::kLeader;
  }));
  CHECK_FALSE(survivor.done());
  // A follower that holds the entry wins and commits it in its own term.
  cluster.network().Isolate(*old_leader);
  std::optional<NodeId> new_leader = cluster.WaitForLeaderAmong(rest);
  REQUIRE(new_leader.has_value());
  CHECK(GetValue(cluster.Read(*new_leader, Get("survivor"))) == "x");
  CHECK_FALSE(survivor.done());
  cluster.network().Heal();
  absl::StatusOr<std::string> result = survivor.Wait();
  REQUIRE(result.ok());
  auto decoded = statemachine::DecodeResponse(*result);
  REQUIRE(decoded.ok());
  CHECK(decoded->ok());
}

TEST_CASE(
    "outcome table: an index covered by an installed snapshot is "
    "DeadlineExceeded",
    "[server]") {
  ServerCluster cluster(3, [](raft::ServerOptions& options) {
    options.compaction.snapshot_every_entries = 50;
    options.compaction.trailing_entries = 5;
  });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  Outcome orphan;
  const NodeId new_leader = CutOffWithOrphan(cluster, *old_leader, orphan);
  CHECK(ProposeMany(cluster, new_leader, 400, 32) == 400);
  REQUIRE(Eventually([&] {
    return cluster.server(new_leader).Status().first_index > LogIndex(50);
  }));
  cluster.network().Heal();
  absl::StatusOr<std::string> result = orphan.Wait();
  CHECK(absl::IsDeadlineExceeded(result.status()));
  CHECK_THAT(std::string(result.status().message()),
             Catch::Contains("snapshot"));
}

TEST_CASE(
    "outcome table: a proposal forwarded to a leader that is replaced before "
    "it answers is DeadlineExceeded as soon as the follower learns of the "
    "next leader, not at its deadline",
    "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> old_leader = cluster.WaitForLeader();
  REQUIRE(old_leader.has_value());
  const NodeId follower = cluster.Others(*old_leader).front();
  // Committed through the follower first, so that it surely follows the old
  // leader when it forwards the next one.
  REQUIRE(cluster.Propose(follower, Put("a", "1")).ok());
  cluster.network().Isolate(*old_leader);
  Outcome forwarded;
  const absl::Time proposed = absl::Now();
  cluster.server(follower).Propose(
      Put("lost", "x"), proposed + absl::Seconds(120), forwarded.Callback());
  std::optional<NodeId> new_leader =
      cluster.WaitForLeaderAmong(cluster.Others(*old_leader));
  REQUIRE(new_leader.has_value());
  absl::StatusOr<std::string> result = forwarded.Wait(absl::Seconds(60));
  CHECK(absl::IsDeadlineExceeded(result.status()));
  CHECK_THAT(std::string(result.status().message()),
             Catch::Contains("no longer the leader"));
  // Long before the deadline: once the follower knew another leader (or
  // none, while it campaigned).
  CHECK(absl::Now() - proposed < absl::Seconds(60));
  // The cluster goes on, through the same follower.
  REQUIRE(cluster.Propose(follower, Put("b", "2")).ok());
  cluster.network().Heal();
}

TEST_CASE(
    "outcome table: a passed deadline is DeadlineExceeded, a stop is "
    "Cancelled",
    "[server]") {
  // Long election timeouts: the cut-off leader stays leader meanwhile.
  ServerCluster cluster(
      3, [](raft::ServerOptions& options) { options.election_ticks = 100; });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  cluster.network().Isolate(*leader);
  absl::StatusOr<std::string> late =
      cluster.Propose(*leader, Put("k", "v"), absl::Milliseconds(50));
  CHECK(absl::IsDeadlineExceeded(late.status()));
  absl::StatusOr<std::string> late_read =
      cluster.Read(*leader, Get("k"), absl::Milliseconds(50));
  CHECK(absl::IsDeadlineExceeded(late_read.status()));
  // Still waiting when the server stops: outcome unknown.
  const NodeId follower = *leader == NodeId(1) ? NodeId(2) : NodeId(1);
  Outcome waiting;
  cluster.server(follower).Read(Get("k"), absl::Now() + absl::Seconds(60),
                                waiting.Callback());
  cluster.Stop(follower);
  CHECK(absl::IsCancelled(waiting.Wait().status()));
}

TEST_CASE("a flood of proposals stays bounded and the cluster recovers",
          "[server]") {
  ServerCluster cluster(3, [](raft::ServerOptions& options) {
    options.max_pending_proposals = 2000;
  });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  std::atomic<uint64_t> ok{0};
  std::atomic<uint64_t> exhausted{0};
  // Known not committed: a leader change under the load (slow builds such
  // as ThreadSanitizer's can miss heartbeats) answers Unavailable or Aborted.
  std::atomic<uint64_t> not_committed{0};
  std::atomic<uint64_t> other{0};
  std::atomic<uint64_t> completed{0};
  constexpr uint64_t kFlood = 100'000;
  std::vector<std::thread> clients;
  for (int t = 0; t < 2; ++t) {
    clients.emplace_back([&, t] {
      for (uint64_t i = 0; i < kFlood / 2; ++i) {
        cluster.server(*leader).Propose(
            Put(absl::StrCat("flood", t, "-", i % 1000), "v"),
            absl::Now() + absl::Seconds(60),
            [&](absl::StatusOr<std::string> result) {
              if (result.ok()) {
                ++ok;
              } else if (absl::IsResourceExhausted(result.status())) {
                ++exhausted;
              } else if (absl::IsUnavailable(result.status()) ||
                         absl::IsAborted(result.status())) {
                ++not_committed;
              } else {
                ++other;
              }
              ++completed;
            });
      }
    });
  }
  for (std::thread& client : clients) client.join();
  REQUIRE(Eventually([&] { return completed.load() == kFlood; },
                     absl::Seconds(60)));
  CHECK(exhausted.load() > 0);
  CHECK(ok.load() > 0);
  CHECK(other.load() == 0);
  INFO("not committed: " << not_committed.load());
  // Every request was answered, so none is held any more, and the cluster
  // still serves.
  REQUIRE(cluster.WaitForLeader().has_value());
  leader = cluster.WaitForLeader();
  REQUIRE(cluster.Propose(*leader, Put("after", "flood")).ok());
  CHECK(GetValue(cluster.Read(*leader, Get("after"))) == "flood");
}

// A MemoryLogStore whose writes fail on demand, as a full disk's would.
class FailingLogStore : public raft::LogStore {
 public:
  explicit FailingLogStore(raft::Configuration configuration)
      : store_(std::move(configuration)) {}
  void FailWrites() { failing_ = true; }

  absl::StatusOr<raft::InitialState> LoadInitialState() const override {
    return store_.LoadInitialState();
  }
  LogIndex FirstIndex() const override { return store_.FirstIndex(); }
  LogIndex LastIndex() const override { return store_.LastIndex(); }
  absl::StatusOr<raft::Term> TermAt(LogIndex index) const override {
    return store_.TermAt(index);
  }
  absl::StatusOr<std::vector<raft::Entry>> Entries(
      LogIndex first, LogIndex last_exclusive,
      uint64_t max_bytes) const override {
    return store_.Entries(first, last_exclusive, max_bytes);
  }
  absl::StatusOr<raft::SnapshotMeta> Snapshot() const override {
    return store_.Snapshot();
  }
  absl::Status Persist(const raft::PersistRequest& request) override {
    if (failing_) return absl::ResourceExhaustedError("disk full (injected)");
    return store_.Persist(request);
  }
  absl::Status SetSnapshot(const raft::SnapshotMeta& snapshot) override {
    return store_.SetSnapshot(snapshot);
  }
  absl::Status Compact(LogIndex index) override {
    return store_.Compact(index);
  }

 private:
  raft::MemoryLogStore store_;
  std::atomic<bool> failing_{false};
};

TEST_CASE(
    "a failed log write stops the node, and its requests still "
    "complete once",
    "[server]") {
  ServerCluster cluster(1);
  FailingLogStore store(raft::Configuration{.voters = {NodeId(1)}});
  Latch<absl::Status> fatal;
  raft::ServerOptions options = cluster.Options(NodeId(1));
  options.log_store = &store;
  options.on_fatal = [&](const absl::Status& status) { fatal.Set(status); };
  REQUIRE(cluster.StartWith(NodeId(1), options).ok());
  REQUIRE(cluster.WaitForLeader().has_value());
  REQUIRE(cluster.Propose(NodeId(1), Put("k", "v")).ok());
  store.FailWrites();
  Outcome lost;
  cluster.server(NodeId(1)).Propose(
      Put("k", "w"), absl::Now() + absl::Seconds(60), lost.Callback());
  std::optional<absl::Status> failure = fatal.Wait();
  REQUIRE(failure.has_value());
  CHECK_THAT(failure->ToString(), Catch::Contains("disk full"));
  // Fail-stop: nothing more is served; the request's outcome is unknown.
  Outcome after;
  cluster.server(NodeId(1)).Propose(
      Put("k", "x"), absl::Now() + absl::Seconds(60), after.Callback());
  cluster.Stop(NodeId(1));
  CHECK(absl::IsCancelled(lost.Wait().status()));
  CHECK(absl::IsCancelled(after.Wait().status()));
}

TEST_CASE("a clean stop of the leader hands leadership over", "[server]") {
  ServerCluster cluster(3, [](raft::ServerOptions& options) {
    // Long election timeouts: a new leader this fast came from the transfer.
    options.election_ticks = 100;
  });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  REQUIRE(cluster.Propose(*leader, Put("k", "v")).ok());
  const absl::Time stopping = absl::Now();
  cluster.Stop(*leader);
  std::optional<NodeId> next;
  REQUIRE(Eventually([&] { return (next = cluster.Leader()).has_value(); }));
  // Well under one election timeout (100 ticks of 10 ms).
  CHECK(absl::Now() - stopping < absl::Milliseconds(900));
  CHECK(*next != *leader);
  CHECK(GetValue(cluster.Read(*next, Get("k"))) == "v");
}

TEST_CASE(
    "a data folder of another node or cluster, or an empty one "
    "without bootstrap, is refused",
    "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.Start(NodeId(1)).ok());
  cluster.Stop(NodeId(1));
  // Node 2 on node 1's folder.
  raft::ServerOptions wrong_node = cluster.Options(NodeId(2));
  wrong_node.data_dir = cluster.Options(NodeId(1)).data_dir;
  absl::Status status = cluster.StartWith(NodeId(2), wrong_node);
  CHECK(absl::IsFailedPrecondition(status));
  // Another cluster token: another cluster.
  raft::ServerOptions wrong_cluster = cluster.Options(NodeId(1));
  wrong_cluster.cluster_token = "another";
  status = cluster.StartWith(NodeId(1), wrong_cluster);
  CHECK(absl::IsFailedPrecondition(status));
  // A wiped node must not rejoin under its old id.
  raft::ServerOptions empty = cluster.Options(NodeId(3));
  empty.bootstrap = false;
  status = cluster.StartWith(NodeId(3), empty);
  CHECK(absl::IsFailedPrecondition(status));
  CHECK_THAT(std::string(status.message()), Catch::Contains("vote twice"));
  // Bad options.
  raft::ServerOptions stranger = cluster.Options(NodeId(3));
  stranger.id = NodeId(9);
  CHECK(absl::IsInvalidArgument(cluster.StartWith(NodeId(9), stranger)));
}

// A clock that moves only when told to.
class ManualClock : public raft::Clock {
 public:
  absl::Time Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  void Advance(absl::Duration by) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += by;
  }

 private:
  mutable std::mutex mu_;
  absl::Time now_ = absl::Now();  // guarded by mu_
};

// Returns once the raft thread of `server` finished a whole turn that began
// after this call (a transfer to the node itself is a control event the raft
// loop answers in its turn; the second answer comes after the first turn).
void AwaitRaftTurn(raft::Server& server) {
  for (int i = 0; i < 2; ++i) {
    Latch<absl::Status> answered;
    server.TransferLeadership(
        server.id(), [&](absl::Status status) { answered.Set(status); });
    REQUIRE(answered.Wait().has_value());
  }
}

// Cuts the links from `leader` to the others (it still hears them) and
// proposes `first` on it; returns the last index from before, once the
// proposal is appended and its round is in flight.
LogIndex StartStuckRound(ServerCluster& cluster, NodeId leader,
                         Outcome& first) {
  for (NodeId id : cluster.Others(leader)) {
    cluster.network().BlockOneWay(leader, id);
  }
  raft::Server& server = cluster.server(leader);
  const LogIndex base = server.Status().last_index;
  server.Propose(Put("first", "1"), absl::Now() + absl::Seconds(30),
                 first.Callback());
  REQUIRE(Eventually([&] { return server.Status().last_index == base + 1; }));
  return base;
}

TEST_CASE(
    "proposals that arrive while a round is in flight are appended together "
    "once it commits",
    "[server]") {
  ManualClock clock;  // stands still: no proposal is held for long
  ServerCluster cluster(
      3, [&clock](raft::ServerOptions& options) { options.clock = &clock; });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  raft::Server& server = cluster.server(*leader);
  Outcome first;
  const LogIndex base = StartStuckRound(cluster, *leader, first);
  const uint64_t fsyncs = server.Status().counters.fsyncs;
  std::vector<std::unique_ptr<Outcome>> held;
  for (int i = 0; i < 20; ++i) {
    held.push_back(std::make_unique<Outcome>());
    server.Propose(Put(absl::StrCat("held", i), "1"),
                   absl::Now() + absl::Seconds(30), held.back()->Callback());
    // Raft turns pass (ticks among them), and the proposal waits.
    AwaitRaftTurn(server);
    CHECK(server.Status().last_index == base + 1);
  }
  cluster.network().Heal();
  REQUIRE(first.Wait().ok());
  for (auto& outcome : held) {
    absl::StatusOr<std::string> result = outcome->Wait();
    INFO(result.status().ToString());
    REQUIRE(result.ok());
  }
  const raft::NodeStatus status = server.Status();
  CHECK(status.last_index == base + 21);
  // One synced write for the twenty, once the first's round committed.
  CHECK(status.counters.fsyncs - fsyncs == 1);
}

TEST_CASE(
    "a proposal is held for about a tick by the clock from the start of its "
    "own wait",
    "[server]") {
  ManualClock clock;
  ServerCluster cluster(
      3, [&clock](raft::ServerOptions& options) { options.clock = &clock; });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  raft::Server& server = cluster.server(*leader);
  const absl::Duration tick = cluster.Options(*leader).tick_interval;
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    Outcome first;
    Outcome second;
    const LogIndex base = StartStuckRound(cluster, *leader, first);
    server.Propose(Put("second", "2"), absl::Now() + absl::Seconds(30),
                   second.Callback());
    AwaitRaftTurn(server);
    CHECK(server.Status().last_index == base + 1);
    // A tick by the clock later, the next tick of the timer releases it.
    clock.Advance(tick);
    CHECK(Eventually([&] { return server.Status().last_index == base + 2; }));
    cluster.network().Heal();
    CHECK(first.Wait().ok());
    CHECK(second.Wait().ok());
  }
}

TEST_CASE(
    "a proposal that finds no round in flight starts one at once, without "
    "waiting for a tick",
    "[server]") {
  // Ticks half a second apart: a proposal that waited for the next tick to
  // wake the raft thread would take about that long.
  ServerCluster cluster(3, [](raft::ServerOptions& options) {
    options.tick_interval = absl::Milliseconds(500);
    options.election_ticks = 4;
  });
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader(absl::Seconds(30));
  REQUIRE(leader.has_value());
  raft::Server& server = cluster.server(*leader);
  const absl::Time started = absl::Now();
  for (int i = 0; i < 10; ++i) {
    Outcome outcome;
    server.Propose(Put(absl::StrCat("k", i), "v"),
                   absl::Now() + absl::Seconds(30), outcome.Callback());
    absl::StatusOr<std::string> result = outcome.Wait();
    INFO(result.status().ToString());
    REQUIRE(result.ok());
  }
  // Ten rounds one after another, each on the leader's own wake-up.
  CHECK(absl::Now() - started < absl::Seconds(2));
}

TEST_CASE("a round that cannot commit holds new proposals for at most one tick",
          "[server]") {
  ServerCluster cluster(3);
  REQUIRE(cluster.StartAll().ok());
  std::optional<NodeId> leader = cluster.WaitForLeader();
  REQUIRE(leader.has_value());
  raft::Server& server = cluster.server(*leader);
  Outcome first;
  Outcome second;
  const LogIndex base = StartStuckRound(cluster, *leader, first);
  server.Propose(Put("second", "2"), absl::Now() + absl::Seconds(30),
                 second.Callback());
  // Appended about a tick (10 ms here) later, while this node still leads:
  // from then on the apply loop tracks it and its deadline.
  CHECK(Eventually([&] { return server.Status().last_index == base + 2; },
                   absl::Seconds(5)));
  cluster.network().Heal();
  for (Outcome* outcome : {&first, &second}) {
    absl::StatusOr<std::string> result = outcome->Wait(absl::Seconds(60));
    CHECK((result.ok() || absl::IsAborted(result.status()) ||
           absl::IsDeadlineExceeded(result.status())));
  }
}

}  // namespace
}  // namespace driftwood::testing
