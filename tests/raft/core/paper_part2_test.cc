// Paper tests, part 2: linearizable reads (thesis §6.4), leadership transfer
// (thesis §3.10), snapshots (paper §7, Figure 13) on both sides, and the
// uncommitted-bytes cap. Like paper_test.cc, every test drives a Node only
// through its inputs (Tick, Step, Propose, ProposeBatch, Campaign, ReadIndex,
// TransferLeadership, ReportSnapshot, ReportUnreachable, TakeReady/Advance)
// and asserts on the Ready it produces. PAPER_RULES.md maps rules to tests.
#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/core/describe.h"
#include "raft/core/node.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/core_harness.h"

namespace driftwood::raft {
namespace {

// ===========================================================================
// Thesis §6.4: linearizable reads with ReadIndex.

TEST_CASE(
    "§6.4 ReadIndex: a new leader parks reads until an entry of its term "
    "committed",
    "[paper]") {
  // Entries 1-2 of term 1 are on the log; the new leader of term 2 knows only
  // commit 1.
  TestNode n(1,
             {.log_terms = {1, 1}, .hard_state = {Term(1), {}, LogIndex(1)}});
  n.BecomeLeader();  // term 2, no-op at 3, durable
  REQUIRE(n->term() == Term(2));
  REQUIRE(n->ReadIndex(100).ok());
  // Parked: no round starts, so no heartbeat carries a round.
  for (const Message& message : n.Drain()) {
    CHECK_FALSE(std::holds_alternative<Heartbeat>(message.payload));
  }
  // Heartbeats go out and are answered, but they belong to no read round.
  n.TickN(1);
  for (uint64_t round : HeartbeatRounds(n.Drain())) CHECK(round == 0);
  n.Step(Msg(2, 1, 2, HeartbeatResponse{0}));
  n.Step(Msg(3, 1, 2, HeartbeatResponse{0}));
  // Followers acknowledging only term-1 entries commit nothing (§5.4.2).
  n.Step(Msg(2, 1, 2, Ack(2)));
  n.Step(Msg(3, 1, 2, Ack(2)));
  n.Drain();
  CHECK(n->commit_index() == LogIndex(1));
  CHECK(n.reads().empty());

  // The no-op commits: the parked read enters a round whose read index is the
  // new commit index.
  n.Step(Msg(2, 1, 2, Ack(3)));
  REQUIRE(n->commit_index() == LogIndex(3));
  const uint64_t round = TakeReadRound(n, 2);
  CHECK(n.reads().empty());
  n.Step(Msg(2, 1, 2, HeartbeatResponse{round}));
  n.Drain();
  REQUIRE(n.reads().size() == 1);
  CHECK(n.reads()[0] == ReadState{100, LogIndex(3)});
}

TEST_CASE(
    "§6.4 ReadIndex: the read index is the commit index when the round "
    "started",
    "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->commit_index() == LogIndex(1));
  REQUIRE(n->Propose("x").ok());  // index 2, not committed yet
  n.Drain();
  REQUIRE(n->ReadIndex(7).ok());
  const uint64_t round = TakeReadRound(n, 2);
  // Index 2 commits while the round is being confirmed.
  n.Step(Msg(2, 1, 1, Ack(2)));
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(2));
  n.Step(Msg(2, 1, 1, HeartbeatResponse{round}));
  n.Drain();
  REQUIRE(n.reads().size() == 1);
  CHECK(n.reads()[0] == ReadState{7, LogIndex(1)});
}

TEST_CASE(
    "§6.4 ReadIndex: every round has a new, strictly increasing id carried in "
    "Heartbeat.read_round",
    "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  uint64_t previous = 0;
  for (uint64_t request = 1; request <= 3; ++request) {
    REQUIRE(n->ReadIndex(request).ok());
    const uint64_t round = TakeReadRound(n, 2);
    CHECK(round > previous);
    previous = round;
    n.Step(Msg(2, 1, 1, HeartbeatResponse{round}));
    n.Drain();
    REQUIRE(n.reads().size() == request);
  }
  // Reads that arrive together share one round.
  REQUIRE(n->ReadIndex(10).ok());
  REQUIRE(n->ReadIndex(11).ok());
  const uint64_t shared = TakeReadRound(n, 2);
  CHECK(shared > previous);
  // Periodic heartbeats carry the newest round started; they start none.
  n.TickN(1);
  for (uint64_t round : HeartbeatRounds(n.Drain())) CHECK(round == shared);
  n.Step(Msg(3, 1, 1, HeartbeatResponse{shared}));
  n.Drain();
  REQUIRE(n.reads().size() == 5);
  CHECK(n.reads()[3] == ReadState{10, LogIndex(1)});
  CHECK(n.reads()[4] == ReadState{11, LogIndex(1)});

  // Ids keep increasing across leaderships of the same node.
  n.Step(Msg(2, 1, 2, Append(1, 1, {}, 1)));
  n.Drain();
  REQUIRE(n->role() == Role::kFollower);
  n.BecomeLeader();  // term 3
  n.AckAll();
  REQUIRE(n->ReadIndex(20).ok());
  CHECK(TakeReadRound(n, 2) > shared);
}

TEST_CASE(
    "§6.4 ReadIndex: a HeartbeatResponse with an older round id does not "
    "confirm a newer read",
    "[paper]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5}});
  n.BecomeLeader();
  n.AckAll();
  n.TickN(1);
  n.Drain();  // a periodic heartbeat (no round yet) whose answer comes late
  REQUIRE(n->ReadIndex(1).ok());
  const uint64_t first = TakeReadRound(n, 4);
  // Read 2 arrives while the first round is in flight. Whenever its own round
  // starts, answers to the first round must not confirm it.
  REQUIRE(n->ReadIndex(2).ok());
  std::vector<uint64_t> rounds = HeartbeatRounds(n.Drain());
  n.Step(Msg(2, 1, 1, HeartbeatResponse{first}));
  n.Step(Msg(3, 1, 1, HeartbeatResponse{first}));
  std::vector<uint64_t> more = HeartbeatRounds(n.Drain());
  rounds.insert(rounds.end(), more.begin(), more.end());
  REQUIRE(n.reads().size() == 1);
  CHECK(n.reads()[0].request_id == 1);
  REQUIRE_FALSE(rounds.empty());
  const uint64_t second = *std::max_element(rounds.begin(), rounds.end());
  REQUIRE(second > first);
  // Late answers: to the periodic heartbeat, and duplicated or delayed
  // answers to the first round from every follower.
  n.Step(Msg(4, 1, 1, HeartbeatResponse{0}));
  for (uint64_t peer : Ids{2, 3, 4, 5}) {
    n.Step(Msg(peer, 1, 1, HeartbeatResponse{first}));
  }
  n.Drain();
  CHECK(n.reads().size() == 1);
  // Answers to the second round from a quorum confirm read 2.
  n.Step(Msg(4, 1, 1, HeartbeatResponse{second}));
  n.Drain();
  CHECK(n.reads().size() == 1);
  n.Step(Msg(5, 1, 1, HeartbeatResponse{second}));
  n.Drain();
  REQUIRE(n.reads().size() == 2);
  CHECK(n.reads()[1] == ReadState{2, LogIndex(1)});
}

TEST_CASE(
    "§6.4 ReadIndex: a read is confirmed only when a quorum answered its round",
    "[paper]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5}});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->ReadIndex(9).ok());
  const uint64_t round = TakeReadRound(n, 4);
  n.Step(Msg(2, 1, 1, HeartbeatResponse{round}));
  n.Drain();
  CHECK(n.reads().empty());  // self + 1 of 5
  // A duplicated answer from the same follower does not count twice.
  n.Step(Msg(2, 1, 1, HeartbeatResponse{round}));
  n.Drain();
  CHECK(n.reads().empty());
  n.Step(Msg(4, 1, 1, HeartbeatResponse{round}));
  n.Drain();
  REQUIRE(n.reads().size() == 1);  // self + 2 of 5
  CHECK(n.reads()[0] == ReadState{9, LogIndex(1)});
}

TEST_CASE(
    "§6.4 ReadIndex: a follower forwards the read to the leader and emits the "
    "answer as a ReadState",
    "[paper]") {
  SECTION("follower side") {
    TestNode n(2, {.hard_state = {Term(1), {}, {}}});
    n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0), 0}));
    n.Drain();
    REQUIRE(n->leader_id() == NodeId(1));
    REQUIRE(n->ReadIndex(42).ok());
    Ready ready = n.Take();
    auto [message, request] = Only<ReadIndexRequest>(ready.messages);
    CHECK(message.to == NodeId(1));
    CHECK(message.term == Term(1));
    CHECK(request.request_id == 42);
    CHECK(ready.read_states.empty());
    n.Finish(ready);
    // An answer from a node that is not our leader is ignored.
    n.Step(Msg(3, 2, 1, ReadIndexResponse{42, LogIndex(5)}));
    n.Drain();
    CHECK(n.reads().empty());
    n.Step(Msg(1, 2, 1, ReadIndexResponse{42, LogIndex(5)}));
    Ready answer = n.Take();
    REQUIRE(answer.read_states.size() == 1);
    CHECK(answer.read_states[0] == ReadState{42, LogIndex(5)});
  }
  SECTION("leader side") {
    TestNode n(1, {});
    n.BecomeLeader();
    n.AckAll();
    n.Step(Msg(3, 1, 1, ReadIndexRequest{42}));
    const uint64_t round = TakeReadRound(n, 2);
    n.Step(Msg(2, 1, 1, HeartbeatResponse{round}));
    Ready ready = n.Take();
    CHECK(ready.read_states.empty());  // the read is the follower's
    auto [message, response] = Only<ReadIndexResponse>(AllMessages(ready));
    CHECK(message.to == NodeId(3));
    CHECK(response.request_id == 42);
    CHECK(response.index == LogIndex(1));
  }
}

TEST_CASE("§6.4 ReadIndex: with no known leader a read is Unavailable",
          "[paper]") {
  TestNode n(2, {.hard_state = {Term(3), {}, {}}});
  CHECK(absl::IsUnavailable(n->ReadIndex(1)));
  n->Campaign();
  REQUIRE(n->role() == Role::kCandidate);
  CHECK(absl::IsUnavailable(n->ReadIndex(2)));
  for (const Message& message : n.Drain()) {
    CHECK_FALSE(std::holds_alternative<ReadIndexRequest>(message.payload));
  }
}

TEST_CASE(
    "§6.4 ReadIndex: a single-voter leader confirms at once after its no-op "
    "committed",
    "[paper]") {
  TestNode n(1, {.voters = {1}});
  n->Campaign();
  REQUIRE(n->role() == Role::kLeader);
  REQUIRE(n->ReadIndex(5).ok());
  Ready first = n.Take();  // persists the no-op; nothing is committed yet
  CHECK(first.read_states.empty());
  n.Finish(first);
  REQUIRE(n->commit_index() == LogIndex(1));
  Ready second = n.Take();
  CHECK(second.messages.empty());
  REQUIRE(second.read_states.size() == 1);
  CHECK(second.read_states[0] == ReadState{5, LogIndex(1)});
  n.Finish(second);
  REQUIRE(n->ReadIndex(6).ok());
  Ready third = n.Take();
  REQUIRE(third.read_states.size() == 1);
  CHECK(third.read_states[0] == ReadState{6, LogIndex(1)});
}

TEST_CASE(
    "§6.4 ReadIndex: reads pending when the leader steps down are dropped",
    "[paper]") {
  SECTION("a read in a confirmation round") {
    TestNode n(1, {});
    n.BecomeLeader();
    n.AckAll();
    REQUIRE(n->ReadIndex(1).ok());
    const uint64_t round = TakeReadRound(n, 2);
    // A leader of term 2 appears before the round is answered.
    n.Step(Msg(2, 1, 2, Heartbeat{LogIndex(1), 0}));
    REQUIRE(n->role() == Role::kFollower);
    n.Step(Msg(2, 1, 1, HeartbeatResponse{round}));
    n.Step(Msg(3, 1, 1, HeartbeatResponse{round}));
    n.Drain();
    // Leader again in term 3; its rounds never confirm the dropped read.
    n.BecomeLeader();
    n.AckAll();
    REQUIRE(n->ReadIndex(2).ok());
    const uint64_t next = TakeReadRound(n, 2);
    n.Step(Msg(2, 1, 3, HeartbeatResponse{next}));
    n.Step(Msg(3, 1, 3, HeartbeatResponse{next}));
    n.Drain();
    REQUIRE(n.reads().size() == 1);
    CHECK(n.reads()[0].request_id == 2);
  }
  SECTION("a read parked before the leader's no-op committed") {
    TestNode n(1, {});
    n.BecomeLeader();
    REQUIRE(n->ReadIndex(1).ok());
    n.Drain();
    n.Step(Msg(2, 1, 2, Append(0, 0, {2}, 0)));  // a leader of term 2
    REQUIRE(n->role() == Role::kFollower);
    n.Drain();
    n.Step(Msg(2, 1, 2, Append(1, 2, {}, 1)));
    n.TickN(3);
    n.Drain();
    CHECK(n.reads().empty());
  }
}

// ===========================================================================
// Thesis §3.10: leadership transfer.

TEST_CASE(
    "§3.10 transfer: TimeoutNow is sent only once the target's match equals "
    "the leader's last index",
    "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose("a").ok());
  REQUIRE(n->Propose("b").ok());
  n.Drain();  // last index 3, followers matched at 1
  REQUIRE(n->TransferLeadership(NodeId(3)).ok());
  CHECK(n->Status().lead_transferee == NodeId(3));
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  n.Step(Msg(3, 1, 1, Ack(2)));
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  n.Step(Msg(2, 1, 1, Ack(3)));  // another follower catching up does not count
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  n.Step(Msg(3, 1, 1, Ack(3)));
  Ready ready = n.Take();
  auto [message, timeout_now] = Only<TimeoutNow>(ready.messages);
  CHECK(message.to == NodeId(3));
  CHECK(message.term == Term(1));
}

TEST_CASE("§3.10 transfer: proposals fail with Unavailable during the transfer",
          "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose("a").ok());
  n.Drain();
  REQUIRE(n->TransferLeadership(NodeId(2)).ok());
  const LogIndex last = n->Status().last_index;
  CHECK(absl::IsUnavailable(n->Propose("b").status()));
  CHECK(absl::IsUnavailable(n->ProposeBatch({"c", "d"}).status()));
  CHECK(n->Status().last_index == last);
}

TEST_CASE(
    "§3.10 transfer: abandoned after election_ticks ticks, proposals accepted "
    "again",
    "[paper]") {
  TestNode n(1, {.election_ticks = 10});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose("a").ok());
  n.Drain();  // follower 3 never acknowledges index 2
  REQUIRE(n->TransferLeadership(NodeId(3)).ok());
  n.TickN(9);
  n.Drain();
  CHECK(n->Status().lead_transferee == NodeId(3));
  CHECK(absl::IsUnavailable(n->Propose("b").status()));
  n.TickN(1);
  CHECK(n->Status().lead_transferee == kNoNode);
  CHECK(n->role() == Role::kLeader);
  auto id = n->Propose("c");
  REQUIRE(id.ok());
  CHECK(id->index == LogIndex(3));
}

TEST_CASE(
    "§3.10 transfer: TimeoutNow makes a follower campaign at once without "
    "PreVote",
    "[paper]") {
  TestNode n(3, {.pre_vote = true,
                 .check_quorum = true,
                 .log_terms = {1, 1},
                 .hard_state = {Term(1), NodeId(1), LogIndex(1)}});
  n.Step(Msg(1, 3, 1, Heartbeat{LogIndex(1), 0}));
  n.Drain();
  // TimeoutNow from a node that is not our leader is ignored.
  n.Step(Msg(2, 3, 1, TimeoutNow{}));
  CHECK(n->role() == Role::kFollower);
  n.Drain();
  n.Step(Msg(1, 3, 1, TimeoutNow{}));
  CHECK(n->role() == Role::kCandidate);  // not a pre-candidate
  CHECK(n->term() == Term(2));
  Ready ready = n.Take();
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->term == Term(2));
  CHECK(ready.hard_state->voted_for == NodeId(3));
  CHECK(ready.must_sync);
  CHECK(ready.messages.empty());
  auto requests = OfType<RequestVote>(ready.messages_after_persist);
  REQUIRE(requests.size() == 2);
  for (const auto& [message, request] : requests) {
    CHECK(message.term == Term(2));
    CHECK_FALSE(request.pre_vote);
    CHECK(request.transfer);
    CHECK(request.last_log_index == LogIndex(2));
    CHECK(request.last_log_term == Term(1));
  }
}

TEST_CASE(
    "§3.10 transfer: a voter grants a transfer vote while it hears a leader",
    "[paper]") {
  TestNode n(2, {.pre_vote = true,
                 .check_quorum = true,
                 .log_terms = {1, 1},
                 .hard_state = {Term(1), NodeId(1), LogIndex(1)}});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(1), 0}));
  n.Drain();
  // The same request without the transfer mark is ignored (stickiness).
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(2), Term(1), false, false}));
  CHECK(n->term() == Term(1));
  CHECK(n.Drain().empty());
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(2), Term(1), false, true}));
  CHECK(n->term() == Term(2));
  CHECK(n->Status().voted_for == NodeId(3));
  Ready ready = n.Take();
  auto [message, response] =
      Only<RequestVoteResponse>(ready.messages_after_persist);
  CHECK(response.granted);
  CHECK(message.term == Term(2));
}

TEST_CASE(
    "§3.10 transfer: a transfer vote is refused when the candidate's log is "
    "not up to date (§5.4.1)",
    "[paper]") {
  TestNode n(2, {.pre_vote = true,
                 .check_quorum = true,
                 .log_terms = {1, 1, 1},
                 .hard_state = {Term(1), NodeId(1), LogIndex(1)}});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(1), 0}));
  n.Drain();
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(2), Term(1), false, true}));
  CHECK(n->Status().voted_for == kNoNode);
  auto [message, response] = Only<RequestVoteResponse>(n.Drain());
  CHECK_FALSE(response.granted);
}

TEST_CASE(
    "§3.10 transfer: TransferLeadership on a follower is FailedPrecondition, "
    "to a non-voter InvalidArgument",
    "[paper]") {
  TestNode follower(2, {});
  CHECK(absl::IsFailedPrecondition(follower->TransferLeadership(NodeId(1))));
  TestNode n(1, {.voters = {1, 2, 3}, .learners = {4}});
  n.BecomeLeader();
  CHECK(absl::IsInvalidArgument(n->TransferLeadership(NodeId(4))));
  CHECK(absl::IsInvalidArgument(n->TransferLeadership(NodeId(9))));
  CHECK(n->Status().lead_transferee == kNoNode);
  CHECK(n->Propose("still leader").ok());
}

// ===========================================================================
// Paper §7 and Figure 13: InstallSnapshot on a follower.

SnapshotMeta Snapshot(uint64_t index, uint64_t term, const Ids& voters,
                      const Ids& learners = {}) {
  return SnapshotMeta{LogIndex(index), Term(term),
                      MakeConfiguration(voters, learners)};
}

TEST_CASE(
    "§7 Fig13 InstallSnapshot: a snapshot at or below the commit index is "
    "ignored",
    "[paper]") {
  for (uint64_t index : {uint64_t{1}, uint64_t{2}}) {
    INFO("snapshot index " << index);
    TestNode n(
        2, {.log_terms = {1, 1, 1}, .hard_state = {Term(1), {}, LogIndex(2)}});
    n.Drain();
    n.Step(Msg(1, 2, 1, InstallSnapshot{Snapshot(index, 1, {1, 2, 3, 4})}));
    Ready ready = n.Take();
    CHECK_FALSE(ready.snapshot.has_value());
    CHECK(ready.messages.empty());
    auto [message, response] =
        Only<AppendEntriesResponse>(ready.messages_after_persist);
    CHECK(response.success);
    CHECK(response.index == LogIndex(2));  // our commit index
    n.Finish(ready);
    CHECK(n->configuration() == MakeConfiguration({1, 2, 3}));
    CHECK(n->Status().last_index == LogIndex(3));
    CHECK(n->commit_index() == LogIndex(2));
  }
}

TEST_CASE(
    "§7 Fig13 InstallSnapshot: when the log holds the snapshot's last entry "
    "the suffix is kept",
    "[paper]") {
  TestNode n(2, {.log_terms = {1, 1, 2, 2, 2},
                 .hard_state = {Term(2), {}, LogIndex(1)}});
  n.Drain();
  n.Step(Msg(1, 2, 2, InstallSnapshot{Snapshot(3, 2, {1, 2, 3})}));
  Ready ready = n.Take();
  CHECK_FALSE(ready.snapshot.has_value());
  CHECK(ready.entries.empty());
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->commit == LogIndex(3));
  auto [message, response] =
      Only<AppendEntriesResponse>(ready.messages_after_persist);
  CHECK(response.success);
  CHECK(response.index == LogIndex(3));
  n.Finish(ready);
  n.Drain();
  CHECK(n->commit_index() == LogIndex(3));
  CHECK(n->Status().last_index == LogIndex(5));
  CHECK(n.store().LastIndex() == LogIndex(5));
  CHECK(n.snapshots().empty());
  // The kept entries are applied from the log.
  REQUIRE_FALSE(n.applied().empty());
  CHECK(n.applied().back().index == LogIndex(3));
}

TEST_CASE(
    "§7 Fig13 InstallSnapshot: otherwise the snapshot replaces the whole log",
    "[paper]") {
  const SnapshotMeta snapshot = Snapshot(5, 2, {1, 2, 3, 4}, {5});
  // Either the log is too short, or it holds index 5 with another term.
  for (const std::vector<uint64_t>& log_terms :
       {std::vector<uint64_t>{1, 1}, std::vector<uint64_t>{1, 1, 1, 1, 1, 1}}) {
    INFO("follower log of " << log_terms.size() << " entries");
    TestNode n(
        2, {.log_terms = log_terms, .hard_state = {Term(2), {}, LogIndex(1)}});
    n.Drain();
    n.Step(Msg(1, 2, 2, InstallSnapshot{snapshot}));
    CHECK(n->configuration() == snapshot.configuration);
    Ready ready = n.Take();
    REQUIRE(ready.snapshot.has_value());
    CHECK(*ready.snapshot == snapshot);
    CHECK(ready.must_sync);
    CHECK(ready.entries.empty());
    CHECK(ready.committed_entries.empty());
    REQUIRE(ready.hard_state.has_value());
    CHECK(ready.hard_state->commit == LogIndex(5));
    CHECK(ready.messages.empty());
    auto [message, response] =
        Only<AppendEntriesResponse>(ready.messages_after_persist);
    CHECK(response.success);
    CHECK(response.index == LogIndex(5));
    n.Finish(ready);
    CHECK(n.store().FirstIndex() == LogIndex(6));
    CHECK(n->Status().last_index == LogIndex(5));
    CHECK(n->applied_index() == LogIndex(5));
    auto stored = n.store().LoadInitialState();
    REQUIRE(stored.ok());
    CHECK(stored->configuration == snapshot.configuration);

    // Entries after the snapshot are applied from snapshot index + 1.
    const size_t before = n.applied().size();
    n.Step(Msg(1, 2, 2, Append(5, 2, {2, 2}, 7)));
    n.Drain();
    REQUIRE(n.applied().size() == before + 2);
    CHECK(n.applied()[before].index == LogIndex(6));
    CHECK(n.applied()[before + 1].index == LogIndex(7));
  }
}

TEST_CASE(
    "§7 Fig13 InstallSnapshot: entries arriving before the snapshot is "
    "persisted are applied after it",
    "[paper]") {
  TestNode n(2, {.log_terms = {1}, .hard_state = {Term(2), {}, LogIndex(1)}});
  n.Drain();
  n.Step(Msg(1, 2, 2, InstallSnapshot{Snapshot(4, 2, {1, 2, 3})}));
  n.Step(Msg(1, 2, 2, Append(4, 2, {2}, 5)));
  Ready ready = n.Take();
  REQUIRE(ready.snapshot.has_value());
  REQUIRE(ready.entries.size() == 1);
  CHECK(ready.entries[0].index == LogIndex(5));
  CHECK(ready.committed_entries.empty());
  const size_t before = n.applied().size();
  n.Finish(ready);
  n.Drain();
  REQUIRE(n.applied().size() == before + 1);
  CHECK(n.applied().back().index == LogIndex(5));
}

// ===========================================================================
// Paper §7: the leader side of snapshots.

// A leader of term 1 whose follower 3 acknowledged only the no-op (index 1)
// and then fell silent while entries 2-4 committed through follower 2; the
// leader's log is compacted through 4 and a snapshot at 4 recorded.
struct CompactedLeader {
  explicit CompactedLeader(uint64_t snapshot_timeout_ticks = 100,
                           uint64_t recorded_index = 4)
      : n(1, {.snapshot_timeout_ticks = snapshot_timeout_ticks}) {
    CommitFourWithoutFollower3(n);
    REQUIRE(n->applied_index() == LogIndex(4));
    REQUIRE(n.store()
                .SetSnapshot(recorded_index == 4
                                 ? snapshot
                                 : Snapshot(recorded_index, 1, {1, 2, 3}))
                .ok());
    REQUIRE(n.store().Compact(LogIndex(4)).ok());
  }

  // Follower 3 answers a heartbeat; returns what the leader sends to it.
  std::vector<Message> HeartbeatAnswer() {
    n.Step(Msg(3, 1, 1, HeartbeatResponse{0}));
    return To(n.Drain(), 3);
  }

  // Follower 3 shows signs of life and is found to need the snapshot: its
  // answer to the heartbeat leads to an AppendEntries it rejects.
  void SendSnapshot() {
    auto [to, install] =
        Only<InstallSnapshot>(Follower3RejectsBackToTheNoOp(n));
    REQUIRE(install.snapshot == snapshot);
  }

  const SnapshotMeta snapshot = Snapshot(4, 1, {1, 2, 3});
  TestNode n;
};

TEST_CASE(
    "§7 leader: a follower that needs compacted entries gets InstallSnapshot "
    "and nothing else",
    "[paper]") {
  CompactedLeader c;
  std::vector<Message> sent = c.HeartbeatAnswer();
  auto [message, append] = Only<AppendEntries>(sent);
  c.n.Step(Msg(3, 1, 1,
               AppendEntriesResponse{false, append.prev_log_index, LogIndex(1),
                                     Term(1)}));
  Ready ready = c.n.Take();
  auto [to, install] = Only<InstallSnapshot>(To(ready.messages, 3));
  CHECK(to.term == Term(1));
  CHECK(install.snapshot == c.snapshot);
  c.n.Finish(ready);
  const std::optional<PeerStatus> progress = c.n->Status().Peer(NodeId(3));
  REQUIRE(progress.has_value());
  CHECK(progress->state == ProgressState::kSnapshot);
  CHECK(progress->pending_snapshot == LogIndex(4));
  // While the snapshot is in flight no entries and no second snapshot go to 3.
  REQUIRE(c.n->Propose("d").ok());
  std::vector<Message> later = c.n.Drain();
  CHECK_FALSE(To(later, 2).empty());
  CHECK(To(later, 3).empty());
  for (const Message& answer : c.HeartbeatAnswer()) {
    CHECK_FALSE(std::holds_alternative<AppendEntries>(answer.payload));
    CHECK_FALSE(std::holds_alternative<InstallSnapshot>(answer.payload));
  }
  c.n.Step(
      Msg(3, 1, 1,
          AppendEntriesResponse{false, LogIndex(4), LogIndex(1), Term(1)}));
  CHECK(To(c.n.Drain(), 3).empty());
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
}

TEST_CASE(
    "§7 leader: while the snapshot is unavailable the leader sends nothing "
    "and retries on a later heartbeat response",
    "[paper]") {
  CompactedLeader c;
  c.n.store().set_snapshot_unavailable(true);
  std::vector<Message> sent = c.HeartbeatAnswer();
  auto [message, append] = Only<AppendEntries>(sent);
  c.n.Step(Msg(3, 1, 1,
               AppendEntriesResponse{false, append.prev_log_index, LogIndex(1),
                                     Term(1)}));
  CHECK(To(c.n.Drain(), 3).empty());
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kProbe);
  CHECK(c.HeartbeatAnswer().empty());  // still unavailable
  c.n.store().set_snapshot_unavailable(false);
  auto [to, install] = Only<InstallSnapshot>(c.HeartbeatAnswer());
  CHECK(install.snapshot == c.snapshot);
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
}

// docs/design.md pitfall 19 (snapshot livelock): a snapshot older than the
// compaction point cannot bring the follower up to the log, so sending it
// would loop forever. The leader asks its driver for a newer one instead; a
// persistent state machine compacts its log without making snapshots, so
// this is how its snapshots get made.
TEST_CASE(
    "§7 leader: a snapshot older than the compaction point is not sent and "
    "a newer one is asked for",
    "[paper]") {
  CompactedLeader c(/*snapshot_timeout_ticks=*/100, /*recorded_index=*/2);
  std::vector<Message> sent = c.HeartbeatAnswer();
  auto [message, append] = Only<AppendEntries>(sent);
  c.n.Step(Msg(3, 1, 1,
               AppendEntriesResponse{false, append.prev_log_index, LogIndex(1),
                                     Term(1)}));
  Ready ready = c.n.Take();
  CHECK(ready.snapshot_wanted);
  CHECK(To(ready.messages, 3).empty());
  c.n.Finish(ready);
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kProbe);
  // The driver records a snapshot at the applied point; the next heartbeat
  // answer gets it.
  REQUIRE(c.n.store().SetSnapshot(c.snapshot).ok());
  auto [to, install] = Only<InstallSnapshot>(c.HeartbeatAnswer());
  CHECK(install.snapshot == c.snapshot);
}

TEST_CASE(
    "§7 leader: ReportSnapshot success resumes probing after the snapshot "
    "index, failure after match",
    "[paper]") {
  CompactedLeader c;
  REQUIRE(c.n->Propose("d").ok());  // index 5, after the snapshot
  c.n.Drain();
  c.SendSnapshot();
  SECTION("success") {
    c.n->ReportSnapshot(NodeId(3), true);
    const std::optional<PeerStatus> progress = c.n->Status().Peer(NodeId(3));
    CHECK(progress->state == ProgressState::kProbe);
    CHECK(progress->next == LogIndex(5));
    CHECK(To(c.n.Drain(), 3).empty());  // the probe waits for a sign of life
    auto [message, append] = Only<AppendEntries>(c.HeartbeatAnswer());
    CHECK(append.prev_log_index == LogIndex(4));
    CHECK(append.prev_log_term == Term(1));
    REQUIRE(append.entries.size() == 1);
    CHECK(append.entries[0].index == LogIndex(5));
  }
  SECTION("failure") {
    c.n->ReportSnapshot(NodeId(3), false);
    const std::optional<PeerStatus> progress = c.n->Status().Peer(NodeId(3));
    CHECK(progress->state == ProgressState::kProbe);
    CHECK(progress->match == LogIndex(1));
    CHECK(progress->next == LogIndex(2));
    CHECK(To(c.n.Drain(), 3).empty());
    // Entries after match are compacted: the probe sends the snapshot again.
    auto [message, install] = Only<InstallSnapshot>(c.HeartbeatAnswer());
    CHECK(install.snapshot == c.snapshot);
  }
  SECTION("a report for a follower not in the snapshot state is ignored") {
    c.n->ReportSnapshot(NodeId(2), false);
    CHECK(c.n->Status().peers.at(NodeId(2)).state == ProgressState::kReplicate);
    CHECK(c.n->Status().peers.at(NodeId(2)).match == LogIndex(4));
  }
}

TEST_CASE(
    "§7 leader: an acknowledgement of the snapshot index moves the follower "
    "to replicate",
    "[paper]") {
  CompactedLeader c;
  REQUIRE(c.n->Propose("d").ok());
  c.n.Drain();
  c.SendSnapshot();
  // An older acknowledgement does not end the snapshot state.
  c.n.Step(Msg(3, 1, 1, Ack(1)));
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  c.n.Step(Msg(3, 1, 1, Ack(4)));
  const std::optional<PeerStatus> progress = c.n->Status().Peer(NodeId(3));
  CHECK(progress->state == ProgressState::kReplicate);
  CHECK(progress->match == LogIndex(4));
  auto [message, append] = Only<AppendEntries>(To(c.n.Drain(), 3));
  CHECK(append.prev_log_index == LogIndex(4));
  REQUIRE(append.entries.size() == 1);
  CHECK(append.entries[0].index == LogIndex(5));
}

TEST_CASE(
    "§7 leader: a snapshot never reported times out after "
    "snapshot_timeout_ticks and the follower is probed again",
    "[paper]") {
  CompactedLeader c(/*snapshot_timeout_ticks=*/20);
  c.SendSnapshot();
  c.n.TickN(19);
  c.n.Drain();
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  c.n.TickN(1);
  const std::optional<PeerStatus> progress = c.n->Status().Peer(NodeId(3));
  CHECK(progress->state == ProgressState::kProbe);
  CHECK(progress->next == LogIndex(2));
  c.n.Drain();
  // The follower answers again: the probe finds the entries compacted and a
  // new snapshot goes out.
  auto [message, install] = Only<InstallSnapshot>(c.HeartbeatAnswer());
  CHECK(install.snapshot == c.snapshot);
  CHECK(c.n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
}

TEST_CASE("§7 leader: ReportUnreachable moves a replicating follower to probe",
          "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Status().peers.at(NodeId(2)).state == ProgressState::kReplicate);
  REQUIRE(n->Propose("a").ok());
  n.Drain();  // pipelined to 2: next 3
  n->ReportUnreachable(NodeId(2));
  const std::optional<PeerStatus> progress = n->Status().Peer(NodeId(2));
  CHECK(progress->state == ProgressState::kProbe);
  CHECK(progress->next == LogIndex(2));  // match + 1
  // Probing: one AppendEntries, then nothing until it is answered.
  REQUIRE(n->Propose("b").ok());
  auto first = OfType<AppendEntries>(To(n.Drain(), 2));
  REQUIRE(first.size() == 1);
  CHECK(first[0].second.prev_log_index == LogIndex(1));
  REQUIRE(n->Propose("c").ok());
  CHECK(To(n.Drain(), 2).empty());
  // Unreachable reports for probing followers and non-peers change nothing.
  n->ReportUnreachable(NodeId(2));
  n->ReportUnreachable(NodeId(9));
  CHECK(n->Status().peers.at(NodeId(2)).next == LogIndex(2));
}

// ===========================================================================
// Flow control: the uncommitted-bytes cap (docs/design.md "The driver
// contract").

TEST_CASE(
    "flow control: uncommitted bytes beyond the cap fail with Unavailable, "
    "one large proposal is admitted when nothing is uncommitted",
    "[paper]") {
  // Entry::ByteSize() is the data size plus 24 bytes of overhead.
  TestNode n(1, {.max_uncommitted_bytes = 100});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->commit_index() == LogIndex(1));     // the no-op is not charged
  auto big = n->Propose(std::string(200, 'x'));  // 224 bytes > the cap
  REQUIRE(big.ok());
  CHECK(big->index == LogIndex(2));
  CHECK(absl::IsUnavailable(n->Propose("y").status()));
  CHECK(absl::IsUnavailable(n->ProposeBatch({"y", "z"}).status()));
  CHECK(n->Status().last_index == LogIndex(2));
  n.Drain();

  // The budget frees as entries commit.
  n.Step(Msg(2, 1, 1, Ack(2)));
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(2));
  REQUIRE(n->Propose(std::string(40, 'a')).ok());        // 64
  REQUIRE(n->Propose(std::string(10, 'b')).ok());        // 64 + 34 = 98
  CHECK(absl::IsUnavailable(n->Propose("c").status()));  // 98 + 25 > 100
  n.Drain();
  n.Step(Msg(2, 1, 1, Ack(3)));  // frees the first 64 only
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(3));
  CHECK(absl::IsUnavailable(n->Propose(std::string(60, 'd')).status()));
  CHECK(n->Propose(std::string(40, 'e')).ok());  // 34 + 64 = 98
  n.Drain();
  n.Step(Msg(2, 1, 1, Ack(5)));
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(5));
  CHECK(n->ProposeBatch({std::string(26, 'f'), std::string(26, 'g')}).ok());
}

}  // namespace
}  // namespace driftwood::raft
