// Regression tests for defects found by reviewing the core against its design
// and against the behaviours etcd-io/raft's suite exercises. Each test fails
// without its fix; tests/raft/core/PAPER_RULES.md lists the break that turns
// it red.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/core_harness.h"
#include "tests/support/interaction_env.h"

namespace driftwood::raft {
namespace {

bool AnySnapshotWanted(TestNode& n) {
  bool wanted = false;
  while (n->HasReady()) {
    Ready ready = n.Take();
    wanted = wanted || ready.snapshot_wanted;
    n.Finish(ready);
  }
  return wanted;
}

TEST_CASE(
    "§6.2 CheckQuorum: a leader elected late in its candidate timeout "
    "survives its first round",
    "[regression]") {
  TestNode n(1, {.check_quorum = true});
  n->Campaign();
  n.Drain();
  REQUIRE(n->role() == Role::kCandidate);
  // The votes arrive just before the candidate would time out.
  n.TickN(n->Status().election_timeout - 1);
  REQUIRE(n->role() == Role::kCandidate);
  n.Step(Msg(2, 1, 1, RequestVoteResponse{true, false}));
  n.Drain();
  REQUIRE(n->role() == Role::kLeader);
  // Its followers have had no chance to answer yet: a full election timeout
  // must pass before CheckQuorum judges them.
  n.TickN(9);
  CHECK(n->role() == Role::kLeader);
  n.Step(Msg(2, 1, 1, HeartbeatResponse{0}));
  n.TickN(1);
  CHECK(n->role() == Role::kLeader);
}

TEST_CASE(
    "§7 leader: a snapshot being produced (Unavailable) is not asked for "
    "again on every heartbeat response",
    "[regression]") {
  TestNode n(1, {});
  CommitFourWithoutFollower3(n);
  REQUIRE(n.store().Compact(LogIndex(4)).ok());
  n.store().set_snapshot_unavailable(true);
  CHECK(Follower3RejectsBackToTheNoOp(n).empty());
  CHECK_FALSE(AnySnapshotWanted(n));
  for (int round = 0; round < 3; ++round) {
    n.TickN(1);
    n.Drain();
    n.Step(Msg(3, 1, 1, HeartbeatResponse{0}));
    CHECK_FALSE(AnySnapshotWanted(n));
  }
  // No snapshot at all (NotFound): the driver is asked to produce one.
  n.store().set_snapshot_unavailable(false);
  n.TickN(1);
  n.Drain();
  n.Step(Msg(3, 1, 1, HeartbeatResponse{0}));
  CHECK(AnySnapshotWanted(n));
}

TEST_CASE(
    "uncommitted-bytes cap: an empty backlog admits one entry of any size, "
    "not a batch",
    "[regression]") {
  TestNode n(1, {.max_uncommitted_bytes = 100});
  n.BecomeLeader();
  n.AckAll();
  const std::string big(200, 'x');
  absl::StatusOr<EntryId> batch = n->ProposeBatch({big, big});
  CHECK(absl::IsUnavailable(batch.status()));
  absl::StatusOr<EntryId> lone = n->Propose(big);
  CHECK(lone.ok());
  CHECK(absl::IsUnavailable(n->Propose("y").status()));
}

TEST_CASE(
    "Node::Create: a state machine applied below the compaction point is "
    "DataLoss at once",
    "[regression]") {
  MemoryLogStore store(MakeConfiguration({1, 2, 3}));
  PersistRequest request;
  request.entries = EntriesWithTerms({1, 1, 1, 1, 1, 1, 1, 1});
  request.hard_state = HardState{Term(1), kNoNode, LogIndex(8)};
  REQUIRE(store.Persist(request).ok());
  REQUIRE(store.Compact(LogIndex(5)).ok());
  Config config;
  config.id = NodeId(1);
  config.applied = LogIndex(4);
  absl::StatusOr<std::unique_ptr<Node>> gap = Node::Create(config, store);
  CHECK(absl::IsDataLoss(gap.status()));
  CHECK_THAT(
      std::string(gap.status().message()),
      Catch::Contains("applied through 4") && Catch::Contains("starts at 6"));
  config.applied = LogIndex(5);
  absl::StatusOr<std::unique_ptr<Node>> at_point = Node::Create(config, store);
  REQUIRE(at_point.ok());
  std::vector<Entry> applied;
  ReadyProcessor driver(**at_point, store,
                        {.send = [](std::vector<Message>&) {},
                         .hand_over =
                             [&applied](const Ready& ready) {
                               applied.insert(applied.end(),
                                              ready.committed_entries.begin(),
                                              ready.committed_entries.end());
                             }});
  REQUIRE(driver.Process().ok());
  REQUIRE(applied.size() == 3);
  CHECK(applied.front().index == LogIndex(6));
}

TEST_CASE(
    "§3.10 transfer: to the leader itself cancels a pending transfer, a new "
    "target replaces the old, repeating one does not extend its timeout",
    "[regression]") {
  TestNode n(1, {});
  n.BecomeLeader();
  // Only 3 is up to date, so a transfer to 2 stays pending.
  n.Step(Msg(3, 1, 1, Ack(1)));
  n.Drain();

  SECTION("to itself") {
    REQUIRE(n->TransferLeadership(NodeId(2)).ok());
    n.Drain();
    REQUIRE(absl::IsUnavailable(n->Propose("x").status()));
    REQUIRE(n->TransferLeadership(NodeId(1)).ok());
    CHECK(n->Status().lead_transferee == kNoNode);
    CHECK(n->Propose("x").ok());
  }
  SECTION("a second target") {
    REQUIRE(n->TransferLeadership(NodeId(2)).ok());
    CHECK(OfType<TimeoutNow>(n.Drain()).empty());
    REQUIRE(n->TransferLeadership(NodeId(3)).ok());
    CHECK(n->Status().lead_transferee == NodeId(3));
    auto [message, timeout] = Only<TimeoutNow>(n.Drain());
    CHECK(message.to == NodeId(3));
  }
  SECTION("the same target again") {
    REQUIRE(n->TransferLeadership(NodeId(2)).ok());
    n.TickN(6);
    REQUIRE(n->TransferLeadership(NodeId(2)).ok());
    n.TickN(4);  // one election timeout since the first request
    CHECK(n->Status().lead_transferee == kNoNode);
    CHECK(n->Propose("x").ok());
  }
  SECTION("a higher term") {
    REQUIRE(n->TransferLeadership(NodeId(2)).ok());
    n.Step(Msg(3, 1, 2, Heartbeat{LogIndex(1), 0}));
    n.Drain();
    CHECK(n->role() == Role::kFollower);
    CHECK(n->Status().lead_transferee == kNoNode);
    n.TickN(n->Status().election_timeout);
    for (const auto& [message, vote] : OfType<RequestVote>(n.Drain())) {
      n.Step(Msg(message.to.value(), 1, message.term.value(),
                 RequestVoteResponse{true, false}));
    }
    n.Drain();
    REQUIRE(n->role() == Role::kLeader);
    CHECK(n->Status().lead_transferee == kNoNode);
    CHECK(n->Propose("y").ok());
  }
}

TEST_CASE(
    "§3.10 transfer: a target that needs a snapshot gets TimeoutNow only "
    "after acknowledging it",
    "[regression]") {
  TestNode n(1, {});
  CommitFourWithoutFollower3(n);
  REQUIRE(n.store()
              .SetSnapshot(SnapshotMeta{LogIndex(4), Term(1),
                                        MakeConfiguration({1, 2, 3})})
              .ok());
  REQUIRE(n.store().Compact(LogIndex(4)).ok());
  Only<InstallSnapshot>(Follower3RejectsBackToTheNoOp(n));
  REQUIRE(n->TransferLeadership(NodeId(3)).ok());
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  n->ReportSnapshot(NodeId(3), true);
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  n.Step(Msg(3, 1, 1, Ack(4)));
  auto [message, timeout] = Only<TimeoutNow>(n.Drain());
  CHECK(message.to == NodeId(3));
}

TEST_CASE(
    "progress: a caught-up follower moved to probe returns to replicate on "
    "the next heartbeat round, without a proposal",
    "[regression]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  n->ReportUnreachable(NodeId(2));
  REQUIRE(n->Status().peers.at(NodeId(2)).state == ProgressState::kProbe);
  n.TickN(1);
  n.Drain();
  n.Step(Msg(2, 1, 1, HeartbeatResponse{0}));
  auto [message, probe] = Only<AppendEntries>(To(n.Drain(), 2));
  CHECK(probe.prev_log_index == LogIndex(1));
  n.Step(Msg(2, 1, 1, Ack(1)));
  n.Drain();
  CHECK(n->Status().peers.at(NodeId(2)).state == ProgressState::kReplicate);
}

TEST_CASE(
    "progress: an acknowledgement below a pending snapshot but inside the "
    "leader's log ends the snapshot state",
    "[regression]") {
  TestNode n(1, {});
  CommitFourWithoutFollower3(n);
  REQUIRE(n->Propose("d").ok());
  REQUIRE(n->Propose("e").ok());
  n.Drain();
  n.Step(Msg(2, 1, 1, Ack(6)));
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(6));
  REQUIRE(n.store()
              .SetSnapshot(SnapshotMeta{LogIndex(6), Term(1),
                                        MakeConfiguration({1, 2, 3})})
              .ok());
  REQUIRE(n.store().Compact(LogIndex(4)).ok());
  Only<InstallSnapshot>(Follower3RejectsBackToTheNoOp(n));
  REQUIRE(n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  // A late acknowledgement shows 3 holds entries through 4: the leader's log
  // (from 5) has all it needs.
  n.Step(Msg(3, 1, 1, Ack(4)));
  std::vector<Message> sent = To(n.Drain(), 3);
  CHECK(n->Status().peers.at(NodeId(3)).state == ProgressState::kReplicate);
  auto [message, append] = Only<AppendEntries>(sent);
  CHECK(append.prev_log_index == LogIndex(4));
  CHECK(append.entries.size() == 2);
}

// A slow follower whose inflight window filled and whose AppendEntries were
// all lost is brought up to date by heartbeats alone, also after the leader
// compacted past it.
TEST_CASE(
    "progress: a follower with a full inflight window whose appends were "
    "lost catches up on heartbeats",
    "[regression]") {
  const bool compact = GENERATE(false, true);
  testing::InteractionEnv env;
  const std::vector<NodeId> ids = {NodeId(1), NodeId(2), NodeId(3)};
  Config base;
  base.max_inflight_messages = 2;
  base.pre_vote = true;
  base.check_quorum = true;
  env.AddNodes(ids, MakeConfiguration({1, 2, 3}), base);
  env.node(NodeId(1)).Campaign();
  env.Stabilize(ids);
  REQUIRE(env.node(NodeId(1)).role() == Role::kLeader);
  for (int i = 0; i < 8; ++i) {
    REQUIRE(env.node(NodeId(1)).Propose(absl::StrCat("v", i)).ok());
    env.ProcessReady(NodeId(1));
    env.DropMessages(NodeId(2));
  }
  env.Stabilize({NodeId(1), NodeId(3)});
  env.DropMessages(NodeId(2));
  const LogIndex last = env.node(NodeId(1)).Status().last_index;
  REQUIRE(env.node(NodeId(1)).commit_index() == last);
  REQUIRE(env.node(NodeId(2)).Status().last_index < last);
  if (compact) {
    const LogIndex applied = env.node(NodeId(1)).applied_index();
    REQUIRE(env.store(NodeId(1))
                .SetSnapshot(SnapshotMeta{applied, env.node(NodeId(1)).term(),
                                          MakeConfiguration({1, 2, 3})})
                .ok());
    REQUIRE(env.store(NodeId(1)).Compact(applied).ok());
  }
  for (int tick = 0; tick < 20; ++tick) {
    for (NodeId id : ids) env.node(id).Tick();
    env.Stabilize(ids);
  }
  CHECK(env.node(NodeId(2)).Status().last_index == last);
  CHECK(env.node(NodeId(2)).commit_index() == last);
  CHECK(env.node(NodeId(2)).applied_index() == last);
  CHECK(env.node(NodeId(1)).Status().peers.at(NodeId(2)).state ==
        ProgressState::kReplicate);
}

TEST_CASE(
    "commit index: an AppendEntries carrying only the commit index goes to a "
    "replicating follower once nothing is in flight to it, and only when it "
    "teaches the follower something",
    "[regression]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->commit_index() == LogIndex(1));
  REQUIRE(n->Propose("a").ok());
  const std::vector<Message> appends = n.Drain();
  for (uint64_t peer : {uint64_t{2}, uint64_t{3}}) {
    auto [message, append] = Only<AppendEntries>(To(appends, peer));
    REQUIRE(append.entries.size() == 1);
  }
  // Follower 2 commits index 2. Follower 3 still has index 2 in flight: its
  // acknowledgement, not another message, is what comes next for it.
  n.Step(Msg(2, 1, 1, Ack(2)));
  REQUIRE(n->commit_index() == LogIndex(2));
  std::vector<Message> sent = n.Drain();
  auto [to2, commit2] = Only<AppendEntries>(To(sent, 2));
  CHECK(commit2.entries.empty());
  CHECK(commit2.leader_commit == LogIndex(2));
  CHECK(OfType<AppendEntries>(To(sent, 3)).empty());
  // Follower 3's window empties: now it needs the commit index.
  n.Step(Msg(3, 1, 1, Ack(2)));
  auto [to3, commit3] = Only<AppendEntries>(To(n.Drain(), 3));
  CHECK(commit3.entries.empty());
  CHECK(commit3.leader_commit == LogIndex(2));
  // Answers to commit-only AppendEntries teach nothing new: no more traffic.
  n.Step(Msg(2, 1, 1, Ack(2)));
  n.Step(Msg(3, 1, 1, Ack(2)));
  CHECK(OfType<AppendEntries>(n.Drain()).empty());
  // A new entry carries the commit index itself.
  REQUIRE(n->Propose("b").ok());
  const std::vector<Message> more = n.Drain();
  for (uint64_t peer : {uint64_t{2}, uint64_t{3}}) {
    auto [message, append] = Only<AppendEntries>(To(more, peer));
    CHECK(append.entries.size() == 1);
    CHECK(append.leader_commit == LogIndex(2));
  }
}

}  // namespace
}  // namespace driftwood::raft
