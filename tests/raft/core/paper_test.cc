// Paper tests: each rule of the Raft paper's Figure 2 and of the thesis
// sections the core implements, driving a Node only through its inputs (Tick,
// Step, Propose, Campaign, Advance) and asserting on the Ready it produces.
// PAPER_RULES.md maps every rule to its test case.
#include <algorithm>
#include <catch2/catch.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/core/describe.h"
#include "raft/core/node.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/core_harness.h"

namespace driftwood::raft {
namespace {

// ---------------------------------------------------------------------------
// Figure 2, "Rules for Servers": all servers.

TEST_CASE(
    "Fig2 all servers: a higher term in a request makes any role a follower",
    "[paper]") {
  for (Role start : {Role::kFollower, Role::kCandidate, Role::kLeader}) {
    TestNode n(1, {});
    if (start == Role::kCandidate) {
      n->Campaign();
      n.Drain();
    } else if (start == Role::kLeader) {
      n.BecomeLeader();
    }
    REQUIRE(n->role() == start);
    n.Step(Msg(2, 1, 5, Append(0, 0, {}, 0)));
    CHECK(n->role() == Role::kFollower);
    CHECK(n->term() == Term(5));
    CHECK(n->leader_id() == NodeId(2));
    Ready ready = n.Take();
    REQUIRE(ready.hard_state.has_value());
    CHECK(ready.hard_state->term == Term(5));
    CHECK(ready.hard_state->voted_for == kNoNode);
    CHECK(ready.must_sync);
  }
}

TEST_CASE(
    "Fig2 all servers: a higher term in a response makes a leader step down",
    "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.Step(Msg(2, 1, 9, AppendEntriesResponse{false, LogIndex(1), {}, {}}));
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(9));
  CHECK(n->leader_id() == kNoNode);
}

TEST_CASE("Fig2 all servers: committed entries are applied in order, once each",
          "[paper]") {
  TestNode n(2,
             {.log_terms = {1, 1, 1}, .hard_state = {Term(1), NodeId(1), {}}});
  n.Step(Msg(1, 2, 1, Append(3, 1, {}, 2)));
  n.Drain();
  n.Step(Msg(1, 2, 1, Append(3, 1, {}, 3)));
  n.Drain();
  n.Step(Msg(1, 2, 1, Append(3, 1, {}, 3)));
  n.Drain();
  REQUIRE(n.applied().size() == 3);
  for (size_t i = 0; i < 3; ++i) CHECK(n.applied()[i].index == LogIndex(i + 1));
  CHECK(n->applied_index() == LogIndex(3));
}

// ---------------------------------------------------------------------------
// Figure 2: followers.

TEST_CASE(
    "Fig2 followers: election timeout starts an election after T to 2T-1 ticks",
    "[paper]") {
  std::vector<uint64_t> timeouts;
  for (uint64_t seed = 0; seed < 50; ++seed) {
    TestNode n(1, {.election_ticks = 10, .seed = seed});
    const uint64_t timeout = n->Status().election_timeout;
    CHECK(timeout >= 10);
    CHECK(timeout < 20);
    timeouts.push_back(timeout);
    n.TickN(timeout - 1);
    CHECK(n->role() == Role::kFollower);
    n.TickN(1);
    CHECK(n->role() == Role::kCandidate);
    CHECK(n->term() == Term(1));
  }
  std::sort(timeouts.begin(), timeouts.end());
  CHECK(timeouts.front() != timeouts.back());  // randomized, not constant
}

TEST_CASE("Fig2 followers: hearing from the leader resets the election timer",
          "[paper]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  for (int round = 0; round < 10; ++round) {
    n.TickN(9);
    n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0)}));
    n.Drain();
  }
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(1));
}

TEST_CASE("Fig2 followers: a granted vote resets the election timer",
          "[paper]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  const uint64_t timeout = n->Status().election_timeout;
  n.TickN(timeout - 1);
  n.Step(Msg(3, 2, 1, RequestVote{LogIndex(0), Term(0), false, false}));
  REQUIRE(n->Status().voted_for == NodeId(3));
  n.Drain();
  n.TickN(timeout - 1);
  CHECK(n->role() == Role::kFollower);
}

// ---------------------------------------------------------------------------
// Figure 2: candidates.

TEST_CASE(
    "Fig2 candidates: on conversion increment term, vote for self, request "
    "votes",
    "[paper]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5},
                 .log_terms = {1, 2},
                 .hard_state = {Term(2), {}, {}}});
  n->Campaign();
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == Term(3));
  Ready ready = n.Take();
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->term == Term(3));
  CHECK(ready.hard_state->voted_for == NodeId(1));
  CHECK(ready.must_sync);
  // The RequestVote depends on the new term and vote: only after persist.
  CHECK(ready.messages.empty());
  auto requests = OfType<RequestVote>(ready.messages_after_persist);
  REQUIRE(requests.size() == 4);
  for (const auto& [message, request] : requests) {
    CHECK(message.term == Term(3));
    CHECK(request.last_log_index == LogIndex(2));
    CHECK(request.last_log_term == Term(2));
    CHECK_FALSE(request.pre_vote);
  }
}

TEST_CASE("Fig2 candidates: votes from a majority make a leader", "[paper]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5}});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 1, RequestVoteResponse{true, false}));
  CHECK(n->role() == Role::kCandidate);
  n.Step(Msg(3, 1, 1, RequestVoteResponse{false, false}));
  CHECK(n->role() == Role::kCandidate);
  n.Step(Msg(4, 1, 1, RequestVoteResponse{true, false}));
  CHECK(n->role() == Role::kLeader);
  CHECK(n->leader_id() == NodeId(1));
}

TEST_CASE("Fig2 candidates: rejections from a majority end the candidacy",
          "[paper]") {
  TestNode n(1, {});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 1, RequestVoteResponse{false, false}));
  n.Step(Msg(3, 1, 1, RequestVoteResponse{false, false}));
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(1));
}

TEST_CASE("Fig2 candidates: AppendEntries from the new leader makes a follower",
          "[paper]") {
  TestNode n(1, {});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 1, Append(0, 0, {1}, 0)));
  CHECK(n->role() == Role::kFollower);
  CHECK(n->leader_id() == NodeId(2));
  CHECK(n->term() == Term(1));
}

TEST_CASE("Fig2 candidates: election timeout starts a new election",
          "[paper]") {
  TestNode n(1, {});
  n->Campaign();
  n.Drain();
  n.TickN(n->Status().election_timeout);
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == Term(2));
}

// ---------------------------------------------------------------------------
// Figure 2: leaders.

TEST_CASE(
    "Fig2 leaders: upon election append a no-op and send AppendEntries to all",
    "[paper]") {
  TestNode n(1, {.log_terms = {1}, .hard_state = {Term(1), {}, {}}});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 2, RequestVoteResponse{true, false}));
  REQUIRE(n->role() == Role::kLeader);
  Ready ready = n.Take();
  REQUIRE(ready.entries.size() == 1);
  CHECK(ready.entries[0].type == EntryType::kNoOp);
  CHECK(ready.entries[0].id() == EntryId{Term(2), LogIndex(2)});
  auto appends = OfType<AppendEntries>(ready.messages);
  REQUIRE(appends.size() == 2);
  for (const auto& [message, append] : appends) {
    CHECK(append.prev_log_index == LogIndex(1));
    CHECK(append.prev_log_term == Term(1));
  }
}

TEST_CASE("Fig2 leaders: heartbeats go to every follower during idle periods",
          "[paper]") {
  TestNode n(1, {.heartbeat_ticks = 2});
  n.BecomeLeader();
  n.TickN(1);
  CHECK(OfType<Heartbeat>(n.Drain()).empty());
  n.TickN(1);
  auto heartbeats = OfType<Heartbeat>(n.Drain());
  CHECK(heartbeats.size() == 2);
}

TEST_CASE(
    "Fig2 leaders: a command is appended and replicated, not applied before "
    "commit",
    "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  auto id = n->Propose("x");
  REQUIRE(id.ok());
  CHECK(*id == EntryId{Term(1), LogIndex(2)});
  Ready ready = n.Take();
  REQUIRE(ready.entries.size() == 1);
  CHECK(ready.entries[0].data == "x");
  CHECK(OfType<AppendEntries>(ready.messages).size() == 2);
  CHECK(ready.committed_entries.empty());
  n.Finish(ready);
  CHECK(n->commit_index() < LogIndex(2));
}

TEST_CASE(
    "Fig2 leaders: proposals on a non-leader fail with FailedPrecondition",
    "[paper]") {
  TestNode n(2, {});
  auto id = n->Propose("x");
  CHECK(absl::IsFailedPrecondition(id.status()));
}

TEST_CASE("Fig2 leaders: on rejection decrement nextIndex and retry",
          "[paper]") {
  TestNode n(1, {.log_terms = {1, 1, 2, 2}, .hard_state = {Term(2), {}, {}}});
  n.BecomeLeader();  // term 3, no-op at 5
  // Follower 2 rejects prev=4 and hints that it has nothing past index 1.
  n.Step(Msg(2, 1, 3,
             AppendEntriesResponse{false, LogIndex(4), LogIndex(1), Term(1)}));
  auto [message, retry] = Only<AppendEntries>(n.Drain());
  CHECK(message.to == NodeId(2));
  CHECK(retry.prev_log_index == LogIndex(1));
  CHECK(retry.prev_log_term == Term(1));
  CHECK(retry.entries.size() == 4);
}

TEST_CASE("Fig2 leaders: success updates matchIndex and nextIndex", "[paper]") {
  TestNode n(1, {.log_terms = {1, 1}});
  n.BecomeLeader();
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(3), {}, {}}));
  const std::optional<PeerStatus> progress = n->Status().Peer(NodeId(2));
  REQUIRE(progress.has_value());
  CHECK(progress->match == LogIndex(3));
  CHECK(progress->next == LogIndex(4));
  CHECK(progress->state == ProgressState::kReplicate);
}

TEST_CASE(
    "Fig2 leaders: commitIndex = N when a majority matches N of the current "
    "term",
    "[paper]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5}});
  n.BecomeLeader();  // no-op 1/1, durable after Drain
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(1), {}, {}}));
  CHECK(n->commit_index() == LogIndex(0));  // 2 of 5
  n.Step(Msg(3, 1, 1, AppendEntriesResponse{true, LogIndex(1), {}, {}}));
  CHECK(n->commit_index() == LogIndex(1));  // 3 of 5
  Ready ready = n.Take();
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->commit == LogIndex(1));
  CHECK_FALSE(ready.must_sync);  // a commit-only change is not synced
  REQUIRE(ready.committed_entries.size() == 1);
}

// ---------------------------------------------------------------------------
// Figure 2: AppendEntries receiver implementation.

TEST_CASE(
    "Fig2 AppendEntries receiver 1: reply with our term if term < currentTerm",
    "[paper]") {
  TestNode n(
      2,
      {.pre_vote = true, .log_terms = {1, 1}, .hard_state = {Term(3), {}, {}}});
  n.Step(Msg(1, 2, 2, Append(2, 1, {2}, 2)));
  CHECK(n->term() == Term(3));
  CHECK(n->Status().last_index == LogIndex(2));
  CHECK(n->commit_index() == LogIndex(0));
  auto [message, response] = Only<HeartbeatResponse>(n.Drain());
  CHECK(message.term == Term(3));  // the stale leader learns our term
}

TEST_CASE(
    "Fig2 AppendEntries receiver 2: reject when prevLogIndex/prevLogTerm do "
    "not match",
    "[paper]") {
  SECTION("missing entry") {
    TestNode n(2, {.log_terms = {1}, .hard_state = {Term(2), {}, {}}});
    n.Step(Msg(1, 2, 2, Append(3, 2, {2}, 3)));
    auto [message, response] = Only<AppendEntriesResponse>(n.Drain());
    CHECK_FALSE(response.success);
    CHECK(response.index == LogIndex(3));
    CHECK(response.hint_index == LogIndex(1));
    CHECK(n->Status().last_index == LogIndex(1));
    CHECK(n->commit_index() == LogIndex(0));
  }
  SECTION("term mismatch") {
    TestNode n(2, {.log_terms = {1, 1, 1}, .hard_state = {Term(3), {}, {}}});
    n.Step(Msg(1, 2, 3, Append(3, 2, {3}, 4)));
    auto [message, response] = Only<AppendEntriesResponse>(n.Drain());
    CHECK_FALSE(response.success);
    CHECK(response.index == LogIndex(3));
    // Fast backtracking: the last index whose term is <= 2 is 3 (term 1).
    CHECK(response.hint_index == LogIndex(3));
    CHECK(response.hint_term == Term(1));
    CHECK(n->Status().last_index == LogIndex(3));
    CHECK(n->Status().last_term == Term(1));
    CHECK(n->commit_index() == LogIndex(0));
  }
}

TEST_CASE(
    "Fig2 AppendEntries receiver 3-4: delete conflicting entries, append new "
    "ones",
    "[paper]") {
  TestNode n(2, {.log_terms = {1, 1, 1, 1}, .hard_state = {Term(2), {}, {}}});
  n.Step(Msg(1, 2, 2, Append(2, 1, {2, 2}, 0)));
  Ready ready = n.Take();
  REQUIRE(ready.entries.size() == 2);
  CHECK(ready.entries[0].id() == EntryId{Term(2), LogIndex(3)});
  CHECK(ready.entries[1].id() == EntryId{Term(2), LogIndex(4)});
  n.Finish(ready);
  CHECK(n.store().LastIndex() == LogIndex(4));
  CHECK(*n.store().TermAt(LogIndex(3)) == Term(2));
}

TEST_CASE(
    "Fig2 AppendEntries receiver 3: a matching stale AppendEntries truncates "
    "nothing",
    "[paper]") {
  TestNode n(2,
             {.log_terms = {1, 1, 1, 1, 1}, .hard_state = {Term(1), {}, {}}});
  // A delayed copy of an earlier message: prev=1, entries 2..3, all matching.
  n.Step(Msg(1, 2, 1, Append(1, 1, {1, 1}, 0)));
  Ready ready = n.Take();
  CHECK(ready.entries.empty());
  CHECK(n->Status().last_index == LogIndex(5));
  n.Finish(ready);
  CHECK(n.store().LastIndex() == LogIndex(5));
  auto [message, response] = Only<AppendEntriesResponse>(AllMessages(ready));
  CHECK(response.success);
  CHECK(response.index == LogIndex(3));  // prev + len, not our last index
}

TEST_CASE(
    "Fig2 AppendEntries receiver 4-5: acknowledge and commit only through prev "
    "+ len(entries)",
    "[paper]") {
  // The follower holds stale entries 4..6 of term 1 beyond what the message
  // proves; they must be neither acknowledged nor committed.
  TestNode n(
      2, {.log_terms = {1, 1, 1, 1, 1, 1}, .hard_state = {Term(2), {}, {}}});
  n.Step(Msg(1, 2, 2, Append(2, 1, {1}, 6)));
  Ready ready = n.Take();
  auto [message, response] = Only<AppendEntriesResponse>(AllMessages(ready));
  CHECK(response.success);
  CHECK(response.index == LogIndex(3));
  CHECK(n->commit_index() == LogIndex(3));
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->commit == LogIndex(3));
}

TEST_CASE(
    "Fig2 AppendEntries receiver 5: commit = min(leaderCommit, last new entry)",
    "[paper]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Append(0, 0, {1, 1, 1}, 2)));
  CHECK(n->commit_index() == LogIndex(2));
  n.Drain();
  // Commit never moves backwards.
  n.Step(Msg(1, 2, 1, Append(3, 1, {}, 1)));
  CHECK(n->commit_index() == LogIndex(2));
}

TEST_CASE(
    "Fig2 AppendEntries receiver: the acknowledgement waits for the write",
    "[paper]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Append(0, 0, {1}, 0)));
  Ready ready = n.Take();
  CHECK(ready.must_sync);
  CHECK(OfType<AppendEntriesResponse>(ready.messages).empty());
  CHECK(OfType<AppendEntriesResponse>(ready.messages_after_persist).size() ==
        1);
}

TEST_CASE(
    "Fig2 AppendEntries receiver: committed entries are applied only once "
    "durable",
    "[paper]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Append(0, 0, {1, 1}, 2)));
  Ready first = n.Take();
  CHECK(first.committed_entries.empty());  // not yet written
  n.Finish(first);
  Ready second = n.Take();
  CHECK(second.committed_entries.size() == 2);
}

// ---------------------------------------------------------------------------
// Figure 2: RequestVote receiver implementation.

TEST_CASE("Fig2 RequestVote receiver 1: never grant a vote for a stale term",
          "[paper]") {
  TestNode n(2, {.hard_state = {Term(3), {}, {}}});
  n.Step(Msg(1, 2, 2, RequestVote{LogIndex(5), Term(2), false, false}));
  auto messages = n.Drain();
  for (const auto& [message, response] :
       OfType<RequestVoteResponse>(messages)) {
    CHECK_FALSE(response.granted);
  }
  CHECK(n->Status().voted_for == kNoNode);
}

TEST_CASE(
    "Fig2 RequestVote receiver 2: one vote per term, first come first served",
    "[paper]") {
  TestNode n(3, {});
  n.Step(Msg(1, 3, 1, RequestVote{LogIndex(0), Term(0), false, false}));
  auto first = Only<RequestVoteResponse>(n.Drain());
  CHECK(first.second.granted);
  n.Step(Msg(2, 3, 1, RequestVote{LogIndex(0), Term(0), false, false}));
  auto second = Only<RequestVoteResponse>(n.Drain());
  CHECK_FALSE(second.second.granted);
  // A repeated request from the candidate we voted for is granted again.
  n.Step(Msg(1, 3, 1, RequestVote{LogIndex(0), Term(0), false, false}));
  auto repeat = Only<RequestVoteResponse>(n.Drain());
  CHECK(repeat.second.granted);
}

TEST_CASE(
    "Fig2 RequestVote receiver 2: the vote is durable before the grant is sent",
    "[paper]") {
  TestNode n(3, {});
  n.Step(Msg(1, 3, 1, RequestVote{LogIndex(0), Term(0), false, false}));
  Ready ready = n.Take();
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->voted_for == NodeId(1));
  CHECK(ready.must_sync);
  CHECK(ready.messages.empty());
  auto grant = Only<RequestVoteResponse>(ready.messages_after_persist);
  CHECK(grant.second.granted);
}

TEST_CASE(
    "§5.4.1 election restriction: vote only for an at least as up-to-date log",
    "[paper]") {
  struct Case {
    uint64_t last_index;
    uint64_t last_term;
    bool granted;
  };
  // Our log: terms 1, 1, 2 (last 2/3).
  for (const Case& c : {Case{3, 2, true}, Case{4, 2, true}, Case{1, 3, true},
                        Case{2, 2, false}, Case{9, 1, false}}) {
    TestNode n(3, {.log_terms = {1, 1, 2}, .hard_state = {Term(2), {}, {}}});
    n.Step(Msg(
        1, 3, 3,
        RequestVote{LogIndex(c.last_index), Term(c.last_term), false, false}));
    auto response = Only<RequestVoteResponse>(n.Drain());
    INFO("candidate last " << c.last_term << "/" << c.last_index);
    CHECK(response.second.granted == c.granted);
    CHECK(n->Status().voted_for == (c.granted ? NodeId(1) : kNoNode));
  }
}

// ---------------------------------------------------------------------------
// §5.4.2: committing entries from previous terms (Figure 8).

TEST_CASE(
    "§5.4.2 a leader does not commit an entry of a previous term by counting",
    "[paper]") {
  // Figure 8 (c): leader of term 4 holds an entry of term 2 at index 2 that a
  // majority stores; it must not be committed until an entry of term 4 is.
  TestNode n(1, {.voters = {1, 2, 3, 4, 5},
                 .log_terms = {1, 2},
                 .hard_state = {Term(3), {}, LogIndex(1)}});
  n.BecomeLeader();  // term 4, no-op at 3 (durable after Drain)
  REQUIRE(n->term() == Term(4));
  n.Step(Msg(2, 1, 4, AppendEntriesResponse{true, LogIndex(2), {}, {}}));
  n.Step(Msg(3, 1, 4, AppendEntriesResponse{true, LogIndex(2), {}, {}}));
  CHECK(n->commit_index() == LogIndex(1));
  n.Drain();
  // Once the current term's no-op is on a majority, everything before commits.
  n.Step(Msg(2, 1, 4, AppendEntriesResponse{true, LogIndex(3), {}, {}}));
  n.Step(Msg(3, 1, 4, AppendEntriesResponse{true, LogIndex(3), {}, {}}));
  CHECK(n->commit_index() == LogIndex(3));
}

// ---------------------------------------------------------------------------
// Thesis §10.2.1: the leader writes in parallel and counts itself when durable.

TEST_CASE("§10.2.1 the leader's unpersisted entries do not count toward commit",
          "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->commit_index() == LogIndex(1));
  REQUIRE(n->Propose("x").ok());
  Ready ready = n.Take();  // carries 1/2 to persist and AppendEntries to send
  CHECK_FALSE(OfType<AppendEntries>(ready.messages).empty());
  // Follower 2 acknowledges before the leader's own write completed: 2 of 3
  // nodes would be a majority only if the leader counted its unwritten entry.
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(2), {}, {}}));
  CHECK(n->commit_index() == LogIndex(1));
  CHECK(n->Status().peers.at(NodeId(1)).match == LogIndex(1));
  n.Finish(ready);  // Advance: now durable
  CHECK(n->Status().peers.at(NodeId(1)).match == LogIndex(2));
  CHECK(n->commit_index() == LogIndex(2));
}

TEST_CASE("§10.2.1 a single-node leader commits only after its own write",
          "[paper]") {
  TestNode n(1, {.voters = {1}});
  n->Campaign();
  Ready ready = n.Take();
  REQUIRE(n->role() == Role::kLeader);
  CHECK(n->commit_index() == LogIndex(0));
  CHECK(ready.committed_entries.empty());
  n.Finish(ready);
  CHECK(n->commit_index() == LogIndex(1));
  Ready next = n.Take();
  CHECK(next.committed_entries.size() == 1);
}

// ---------------------------------------------------------------------------
// Heartbeats (docs/design.md "The driver contract").

TEST_CASE("heartbeat carries min(match_index, commit_index)", "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  REQUIRE(n->Propose("x").ok());
  n.Drain();
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(2), {}, {}}));
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(2));
  n.TickN(1);
  auto heartbeats = OfType<Heartbeat>(n.Drain());
  REQUIRE(heartbeats.size() == 2);
  for (const auto& [message, heartbeat] : heartbeats) {
    const LogIndex expected =
        message.to == NodeId(2) ? LogIndex(2) : LogIndex(0);
    INFO("heartbeat to " << message.to.value());
    CHECK(heartbeat.leader_commit == expected);
  }
}

// ---------------------------------------------------------------------------
// Replication flow control.

TEST_CASE("replication: probe sends one message at a time, replicate pipelines",
          "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  // Follower 2 is in probe: further proposals do not send more to it.
  REQUIRE(n->Propose("a").ok());
  auto messages = n.Drain();
  for (const auto& [message, append] : OfType<AppendEntries>(messages)) {
    CHECK(message.to != NodeId(2));  // still waiting for its probe answer
  }
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(1), {}, {}}));
  CHECK(n->Status().peers.at(NodeId(2)).state == ProgressState::kReplicate);
  n.Drain();
  REQUIRE(n->Propose("b").ok());
  n.Drain();
  REQUIRE(n->Propose("c").ok());
  auto pipelined = OfType<AppendEntries>(n.Drain());
  bool sent_to_2 = false;
  for (const auto& [message, append] : pipelined) {
    if (message.to == NodeId(2)) {
      sent_to_2 = true;
      CHECK(append.prev_log_index == LogIndex(3));  // not waiting for 3's ack
    }
  }
  CHECK(sent_to_2);
}

TEST_CASE(
    "replication: a message larger than the size limit still carries one entry",
    "[paper]") {
  TestNode n(1, {.max_message_bytes = 16});
  n.BecomeLeader();
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(1), {}, {}}));
  n.Drain();
  REQUIRE(n->Propose(std::string(100, 'x')).ok());
  REQUIRE(n->Propose(std::string(100, 'y')).ok());
  auto appends = OfType<AppendEntries>(n.Drain());
  bool sent = false;
  for (const auto& [message, append] : appends) {
    if (message.to != NodeId(2)) continue;
    sent = true;
    CHECK(append.entries.size() == 1);
  }
  CHECK(sent);
}

TEST_CASE("replication: a stale rejection does not move progress backwards",
          "[paper]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(1), {}, {}}));
  REQUIRE(n->Propose("a").ok());
  n.Drain();
  n.Step(Msg(2, 1, 1, AppendEntriesResponse{true, LogIndex(2), {}, {}}));
  const LogIndex match = n->Status().peers.at(NodeId(2)).match;
  const LogIndex next = n->Status().peers.at(NodeId(2)).next;
  // A delayed rejection of prev=0 from before the follower caught up.
  n.Step(Msg(2, 1, 1,
             AppendEntriesResponse{false, LogIndex(0), LogIndex(0), Term(0)}));
  CHECK(n->Status().peers.at(NodeId(2)).match == match);
  CHECK(n->Status().peers.at(NodeId(2)).next == next);
  CHECK(n->Status().peers.at(NodeId(2)).state == ProgressState::kReplicate);
}

// ---------------------------------------------------------------------------
// Thesis §9.6: PreVote.

TEST_CASE("§9.6 PreVote: a pre-candidate changes neither term nor vote",
          "[paper]") {
  TestNode n(1, {.pre_vote = true, .hard_state = {Term(4), {}, {}}});
  n->Campaign();
  CHECK(n->role() == Role::kPreCandidate);
  CHECK(n->term() == Term(4));
  Ready ready = n.Take();
  CHECK_FALSE(ready.hard_state.has_value());
  CHECK_FALSE(ready.must_sync);
  // The term is durable already, so pre-votes may leave before any write.
  auto requests = OfType<RequestVote>(ready.messages);
  REQUIRE(requests.size() == 2);
  for (const auto& [message, request] : requests) {
    CHECK(request.pre_vote);
    CHECK(message.term == Term(5));
  }
}

TEST_CASE("§9.6 PreVote: granting a pre-vote changes no state of the voter",
          "[paper]") {
  TestNode n(2, {.pre_vote = true, .hard_state = {Term(4), {}, {}}});
  n.Step(Msg(1, 2, 5, RequestVote{LogIndex(0), Term(0), true, false}));
  CHECK(n->term() == Term(4));
  CHECK(n->Status().voted_for == kNoNode);
  Ready ready = n.Take();
  CHECK_FALSE(ready.hard_state.has_value());
  auto response = Only<RequestVoteResponse>(AllMessages(ready));
  CHECK(response.second.granted);
  CHECK(response.second.pre_vote);
  CHECK(response.first.term == Term(5));
}

TEST_CASE("§9.6 PreVote applies the same log up-to-date check as a vote",
          "[paper]") {
  TestNode n(2, {.pre_vote = true,
                 .log_terms = {1, 2, 2},
                 .hard_state = {Term(2), {}, {}}});
  n.Step(Msg(1, 2, 3, RequestVote{LogIndex(2), Term(2), true, false}));
  auto behind = Only<RequestVoteResponse>(n.Drain());
  CHECK_FALSE(behind.second.granted);
  n.Step(Msg(1, 2, 3, RequestVote{LogIndex(1), Term(1), true, false}));
  auto older = Only<RequestVoteResponse>(n.Drain());
  CHECK_FALSE(older.second.granted);
  n.Step(Msg(1, 2, 3, RequestVote{LogIndex(3), Term(2), true, false}));
  auto equal = Only<RequestVoteResponse>(n.Drain());
  CHECK(equal.second.granted);
}

TEST_CASE("§9.6 PreVote: a majority of pre-votes starts the real election",
          "[paper]") {
  TestNode n(1, {.pre_vote = true, .hard_state = {Term(4), {}, {}}});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 5, RequestVoteResponse{true, true}));
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == Term(5));
  Ready ready = n.Take();
  auto votes = OfType<RequestVote>(ready.messages_after_persist);
  REQUIRE(votes.size() == 2);
  CHECK_FALSE(votes[0].second.pre_vote);
}

TEST_CASE("§9.6 PreVote: a rejection with a higher term makes a follower in it",
          "[paper]") {
  TestNode n(1, {.pre_vote = true, .hard_state = {Term(4), {}, {}}});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 8, RequestVoteResponse{false, true}));
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(8));
}

TEST_CASE("§9.6 PreVote: a partitioned node does not inflate its term",
          "[paper]") {
  TestNode n(1, {.pre_vote = true, .hard_state = {Term(2), {}, {}}});
  for (int i = 0; i < 5; ++i) {
    n.TickN(n->Status().election_timeout);
    n.Drain();  // pre-votes lost
  }
  CHECK(n->term() == Term(2));
}

// ---------------------------------------------------------------------------
// Thesis §4.2.3 (leader stickiness) and §6.2 (CheckQuorum).

TEST_CASE(
    "§4.2.3 stickiness: a vote request is ignored while the leader is heard",
    "[paper]") {
  TestNode n(2, {.check_quorum = true,
                 .log_terms = {1},
                 .hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0)}));
  n.Drain();
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(5), Term(1), false, false}));
  CHECK(n->term() == Term(1));  // the ignored request's term is not adopted
  CHECK(n->Status().voted_for == kNoNode);
  CHECK(n->leader_id() == NodeId(1));
  CHECK(n.Drain().empty());
}

TEST_CASE("§4.2.3 stickiness: pre-votes are refused while the leader is heard",
          "[paper]") {
  TestNode n(2, {.pre_vote = true,
                 .check_quorum = true,
                 .hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0)}));
  n.Drain();
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(0), Term(0), true, false}));
  CHECK(n.Drain().empty());
  CHECK(n->term() == Term(1));
}

TEST_CASE(
    "§4.2.3 stickiness: after an election timeout without the leader, votes "
    "resume",
    "[paper]") {
  // With PreVote the timeout makes a pre-candidate, which keeps term and vote.
  TestNode n(2, {.pre_vote = true,
                 .check_quorum = true,
                 .hard_state = {Term(1), {}, {}},
                 .election_ticks = 10});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0)}));
  n.Drain();
  n.TickN(10);
  n.Drain();
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(0), Term(0), false, false}));
  CHECK(n->term() == Term(2));
  auto response = Only<RequestVoteResponse>(n.Drain());
  CHECK(response.second.granted);
}

TEST_CASE("§4.2.3 stickiness applies only with CheckQuorum", "[paper]") {
  TestNode n(2, {.check_quorum = false, .hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0)}));
  n.Drain();
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(0), Term(0), false, false}));
  CHECK(n->term() == Term(2));
  auto response = Only<RequestVoteResponse>(n.Drain());
  CHECK(response.second.granted);
}

TEST_CASE("§4.2.3 stickiness lets a transfer campaign through", "[paper]") {
  TestNode n(2, {.check_quorum = true, .hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(0)}));
  n.Drain();
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(0), Term(0), false, true}));
  CHECK(n->term() == Term(2));
  auto response = Only<RequestVoteResponse>(n.Drain());
  CHECK(response.second.granted);
}

TEST_CASE("§6.2 CheckQuorum: a leader without a live quorum steps down",
          "[paper]") {
  TestNode n(1, {.check_quorum = true, .election_ticks = 10});
  n.BecomeLeader();
  // Follower 2 answers throughout; 3 is silent. 2 of 3 is a quorum.
  for (int i = 0; i < 10; ++i) {
    n.TickN(1);
    n.Drain();
    n.Step(Msg(2, 1, 1, HeartbeatResponse{}));
  }
  CHECK(n->role() == Role::kLeader);
  // Now nobody answers: the first check after a full silent election timeout
  // (at most two timeouts away) steps down.
  n.TickN(20);
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(1));
  CHECK(n->leader_id() == kNoNode);
}

TEST_CASE("§6.2 without CheckQuorum a silent cluster keeps its leader",
          "[paper]") {
  TestNode n(1, {.check_quorum = false});
  n.BecomeLeader();
  n.TickN(100);
  CHECK(n->role() == Role::kLeader);
}

// ---------------------------------------------------------------------------
// Malformed input.

TEST_CASE("Step rejects a message for another node or from itself", "[paper]") {
  TestNode n(1, {});
  CHECK(absl::IsInvalidArgument(n->Step(Msg(2, 3, 1, Heartbeat{LogIndex(0)}))));
  CHECK(absl::IsInvalidArgument(n->Step(Msg(1, 1, 1, Heartbeat{LogIndex(0)}))));
  CHECK(absl::IsInvalidArgument(n->Step(Msg(0, 1, 1, Heartbeat{LogIndex(0)}))));
}

TEST_CASE("Node::Create refuses an inconsistent stored state", "[paper]") {
  MemoryLogStore store(MakeConfiguration({1, 2, 3}));
  PersistRequest request;
  request.hard_state = HardState{Term(1), kNoNode, LogIndex(5)};
  REQUIRE(store.Persist(request).ok());
  Config config;
  config.id = NodeId(1);
  auto node = Node::Create(config, store);
  CHECK(absl::IsDataLoss(node.status()));

  MemoryLogStore empty_config(Configuration{});
  auto no_voters = Node::Create(config, empty_config);
  CHECK(absl::IsDataLoss(no_voters.status()));

  config.election_ticks = 1;
  MemoryLogStore good(MakeConfiguration({1}));
  CHECK(absl::IsInvalidArgument(Node::Create(config, good).status()));
}

}  // namespace
}  // namespace driftwood::raft

namespace driftwood::raft {
namespace {

TEST_CASE(
    "Fig2 followers: a rejected vote request does not restart the election "
    "timer",
    "[paper]") {
  // Node 2 holds the longer log. Candidates with shorter logs in ever higher
  // terms must not hold it back: it adopts their terms but keeps its timer.
  TestNode n(2, {.log_terms = {1, 1, 1}, .hard_state = {Term(1), {}, {}}});
  const uint64_t timeout = n->Status().election_timeout;
  n.TickN(timeout - 1);
  n.Step(Msg(3, 2, 2, RequestVote{LogIndex(1), Term(1), false, false}));
  auto response = Only<RequestVoteResponse>(n.Drain());
  CHECK_FALSE(response.second.granted);
  CHECK(n->term() == Term(2));
  n.TickN(1);
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == Term(3));
}

}  // namespace
}  // namespace driftwood::raft
