// Behaviours that etcd-io/raft's own suite checks and the paper and pitfall
// tests here did not: follower log repair for every shape of the paper's
// Figure 7, the exact fast-backtracking hints, vote and pre-vote requests in
// every role, RaftLog arithmetic at the compaction point and around a pending
// snapshot, election liveness with mixed PreVote and split votes, and the
// pagination of committed entries across Readies. The tests are our own,
// written against this core's documented behaviour (raft/core/*.h).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <deque>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "raft/core/node.h"
#include "raft/core/raft_log.h"
#include "raft/server/ready_processor.h"
#include "raft/storage/log_store.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/core_harness.h"
#include "tests/support/interaction_env.h"

namespace driftwood::raft {
namespace {

using internal::RaftLog;

using testing::InteractionEnv;

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

std::vector<uint64_t> TermsOf(const std::vector<Entry>& entries) {
  std::vector<uint64_t> terms;
  for (const Entry& entry : entries) terms.push_back(entry.term.value());
  return terms;
}

std::vector<uint64_t> IndexesOf(const std::vector<Entry>& entries) {
  std::vector<uint64_t> indexes;
  for (const Entry& entry : entries) indexes.push_back(entry.index.value());
  return indexes;
}

// The node's whole log as the core sees it (durable and unstable).
std::vector<Entry> LogOf(TestNode& n) {
  absl::StatusOr<std::vector<Entry>> entries =
      internal::NodeInternals::Log(*n.operator->())
          .EntriesFrom(n->Status().first_index, kNoLimit);
  REQUIRE(entries.ok());
  return *entries;
}

// The log as stored on the node's disk.
std::vector<Entry> StoredLogOf(TestNode& n) {
  MemoryLogStore& store = n.store();
  if (store.LastIndex() < store.FirstIndex()) return {};
  absl::StatusOr<std::vector<Entry>> entries =
      store.Entries(store.FirstIndex(), store.LastIndex().next(), kNoLimit);
  REQUIRE(entries.ok());
  return *entries;
}

// Makes `n` leader through an election in which every voter grants (with
// PreVote when configured) and returns the messages of its first Readies as
// leader: its initial AppendEntries, which TestNode::BecomeLeader discards.
std::vector<Message> ElectKeepingMessages(TestNode& n) {
  n->Campaign();
  for (int round = 0; round < 3 && n->role() != Role::kLeader; ++round) {
    for (const auto& [message, request] : OfType<RequestVote>(n.Drain())) {
      n.Step(Message{message.to, message.from, message.term,
                     RequestVoteResponse{true, request.pre_vote}});
    }
  }
  REQUIRE(n->role() == Role::kLeader);
  return n.Drain();
}

// Delivers `pending` and everything it causes between `a` and `b`, FIFO,
// performing every Ready at once. Messages for other nodes are lost. Every
// delivered message is appended to `trace` when given.
void Pump(TestNode& a, TestNode& b, std::vector<Message> pending,
          std::vector<Message>* trace = nullptr) {
  std::deque<Message> queue(pending.begin(), pending.end());
  int delivered = 0;
  while (!queue.empty()) {
    REQUIRE(++delivered < 10000);
    const Message message = queue.front();
    queue.pop_front();
    TestNode* target = message.to == a->id()   ? &a
                       : message.to == b->id() ? &b
                                               : nullptr;
    if (target == nullptr) continue;
    if (trace != nullptr) trace->push_back(message);
    target->Step(message);
    for (const Message& out : target->Drain()) queue.push_back(out);
  }
}

// ---------------------------------------------------------------------------
// 1. Follower log repair.

// The paper's Figure 7: the leader's log (elected for term 8) and the
// followers (a)-(f).
const std::vector<uint64_t> kFigure7Leader = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};

struct Figure7Follower {
  const char* name;
  std::vector<uint64_t> terms;
};

const Figure7Follower kFigure7Followers[] = {
    {"a", {1, 1, 1, 4, 4, 5, 5, 6, 6}},
    {"b", {1, 1, 1, 4}},
    {"c", {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6}},
    {"d", {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}},
    {"e", {1, 1, 1, 4, 4, 4, 4}},
    {"f", {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}},
};

TEST_CASE(
    "etcd: the leader repairs every follower log of the paper's Figure 7 to "
    "its own",
    "[etcd]") {
  for (const Figure7Follower& shape : kFigure7Followers) {
    CAPTURE(shape.name);
    TestNode leader(1, {.log_terms = kFigure7Leader,
                        .hard_state = {Term(7), kNoNode, LogIndex(0)}});
    TestNode follower(2, {.log_terms = shape.terms,
                          .hard_state = {Term(7), kNoNode, LogIndex(0)}});
    follower.Drain();
    std::vector<Message> first = ElectKeepingMessages(leader);
    REQUIRE(leader->term() == Term(8));
    Pump(leader, follower, std::move(first));

    // Figure 7's leader log plus the no-op of term 8.
    std::vector<uint64_t> want = kFigure7Leader;
    want.push_back(8);
    CHECK(TermsOf(LogOf(leader)) == want);
    CHECK(LogOf(follower) == LogOf(leader));
    CHECK(StoredLogOf(follower) == StoredLogOf(leader));
    // The follower and the leader form a majority of three: everything is
    // committed and the follower learned it.
    CHECK(leader->commit_index() == LogIndex(11));
    CHECK(follower->commit_index() == LogIndex(11));
    CHECK(follower->term() == Term(8));
    CHECK(follower->leader_id() == NodeId(1));
    const std::optional<PeerStatus> progress = leader->Status().Peer(NodeId(2));
    REQUIRE(progress.has_value());
    CHECK(progress->match == LogIndex(11));
    CHECK(progress->state == ProgressState::kReplicate);
  }
}

TEST_CASE(
    "etcd: a lower-term entry from the current leader replaces a higher-term "
    "uncommitted entry on a follower",
    "[etcd]") {
  // The leader of term 2 wrote entry 3 on node 1 only; the leader of term 3
  // wrote another entry 3 on node 2 only. Node 1 then wins term 4 (node 3,
  // with log [1 1], votes for it). Node 2's entry 3 of term 3 was never
  // committed and must give way to node 1's entry 3 of term 2.
  TestNode leader(1, {.log_terms = {1, 1, 2},
                      .hard_state = {Term(3), kNoNode, LogIndex(2)}});
  TestNode follower(2, {.log_terms = {1, 1, 3},
                        .hard_state = {Term(3), kNoNode, LogIndex(2)}});
  leader.Drain();
  follower.Drain();
  REQUIRE(follower.applied().size() == 2);
  std::vector<Message> first = ElectKeepingMessages(leader);
  REQUIRE(leader->term() == Term(4));
  Pump(leader, follower, std::move(first));

  CHECK(TermsOf(LogOf(follower)) == std::vector<uint64_t>{1, 1, 2, 4});
  CHECK(TermsOf(StoredLogOf(follower)) == std::vector<uint64_t>{1, 1, 2, 4});
  CHECK(LogOf(follower) == LogOf(leader));
  CHECK(follower->commit_index() == LogIndex(4));
  // The replaced entry is what the follower's state machine applied.
  REQUIRE(follower.applied().size() == 4);
  CHECK(follower.applied()[2].term == Term(2));
  CHECK(follower.applied()[2].data == "e3");
}

struct HintCase {
  const char* name;
  std::vector<uint64_t> leader_terms;
  uint64_t leader_term;  // the leader's term before its election
  std::vector<uint64_t> follower_terms;
  uint64_t follower_term;
  // The follower's answer to the leader's first AppendEntries.
  bool first_rejected;
  uint64_t hint_index;
  uint64_t hint_term;
  // The prev_log_index/term of the leader's next AppendEntries to it.
  uint64_t next_prev_index;
  uint64_t next_prev_term;
  // Rejections in the whole repair.
  int rejections;
};

TEST_CASE(
    "etcd: a rejection carries the exact fast-backtracking hint and the "
    "leader's next probe follows it",
    "[etcd]") {
  // Follower: hint_index = FindConflictByTerm(min(prev, last), prev_term),
  // hint_term = its term there (0 when none). Leader: with hint_term > 0 it
  // probes after FindConflictByTerm(hint_index, hint_term) on its own log,
  // i.e. next = min(rejected, that + 1). Every leader below appends its no-op
  // after len(leader_terms), so its first AppendEntries has prev =
  // len(leader_terms).
  // clang-format off
  const HintCase cases[] = {
      // Figure 7, leader 1 1 1 4 4 5 5 6 6 6 at term 8 (prev 10, term 6).
      {"fig7 a: one entry short", kFigure7Leader, 7,
       kFigure7Followers[0].terms, 7, true, 9, 6, 9, 6, 1},
      {"fig7 b: far behind", kFigure7Leader, 7, kFigure7Followers[1].terms, 7,
       true, 4, 4, 4, 4, 1},
      {"fig7 c: one extra entry", kFigure7Leader, 7,
       kFigure7Followers[2].terms, 7, false, 0, 0, 0, 0, 0},
      {"fig7 d: extra entries of term 7", kFigure7Leader, 7,
       kFigure7Followers[3].terms, 7, false, 0, 0, 0, 0, 0},
      // e: follower's 7 has term 4 <= 6: hint (7, 4); the leader's last entry
      // of term <= 4 is 5.
      {"fig7 e: a term-4 tail", kFigure7Leader, 7, kFigure7Followers[4].terms,
       7, true, 7, 4, 5, 4, 1},
      // f: prev 10 has term 3 on the follower: hint (10, 3); the leader's last
      // entry of term <= 3 is 3.
      {"fig7 f: terms 2 and 3 the leader never saw", kFigure7Leader, 7,
       kFigure7Followers[5].terms, 7, true, 10, 3, 3, 1, 1},
      // An empty follower: hint (0, 0); the leader probes from the start.
      {"empty follower", {1, 1, 2}, 2, {}, 0, true, 0, 0, 0, 0, 1},
      // The follower's terms at and below prev are all higher than prev_term
      // except entry 1.
      {"higher-term follower tail", {1, 2, 2}, 4, {1, 3, 3, 3, 3}, 4, true, 1,
       1, 1, 1, 1},
      // The follower's hint term 2 is absent on the leader, whose last entry
      // of term <= 2 is 1: the leader jumps further back than the hint.
      {"leader jumps past the hint", {1, 3, 3, 3, 3}, 3,
       {1, 2, 2, 2, 2, 2, 2}, 3, true, 5, 2, 1, 1, 1},
      {"mixed terms below prev", {1, 1, 5, 5, 5}, 5, {1, 1, 2, 3, 4, 4}, 4,
       true, 5, 4, 2, 1, 1},
      // The hint is not exact: the next probe at 2 is rejected again (hint
      // (1, 1)) before the logs meet at 1.
      {"two rounds", {1, 1, 3, 3}, 3, {1, 2, 2, 2, 2}, 2, true, 4, 2, 2, 1, 2},
  };
  // clang-format on
  for (const HintCase& c : cases) {
    CAPTURE(c.name);
    TestNode leader(1, {.log_terms = c.leader_terms,
                        .hard_state = {Term(c.leader_term), kNoNode, {}}});
    TestNode follower(2, {.log_terms = c.follower_terms,
                          .hard_state = {Term(c.follower_term), kNoNode, {}}});
    follower.Drain();
    std::vector<Message> first = ElectKeepingMessages(leader);
    std::vector<Message> trace;
    Pump(leader, follower, std::move(first), &trace);

    std::vector<AppendEntries> appends;
    std::vector<AppendEntriesResponse> responses;
    for (const auto& [message, append] : OfType<AppendEntries>(trace)) {
      if (message.to == NodeId(2)) appends.push_back(append);
    }
    for (const auto& [message, response] :
         OfType<AppendEntriesResponse>(trace)) {
      responses.push_back(response);
    }
    REQUIRE(appends.size() >= 2);
    REQUIRE_FALSE(responses.empty());
    CHECK(appends[0].prev_log_index == LogIndex(c.leader_terms.size()));
    CHECK(responses[0].success == !c.first_rejected);
    if (c.first_rejected) {
      CHECK(responses[0].index == LogIndex(c.leader_terms.size()));
      CHECK(responses[0].hint_index == LogIndex(c.hint_index));
      CHECK(responses[0].hint_term == Term(c.hint_term));
      CHECK(appends[1].prev_log_index == LogIndex(c.next_prev_index));
      CHECK(appends[1].prev_log_term == Term(c.next_prev_term));
    }
    const auto rejections = std::count_if(
        responses.begin(), responses.end(),
        [](const AppendEntriesResponse& r) { return !r.success; });
    CHECK(rejections == c.rejections);
    CHECK(LogOf(follower) == LogOf(leader));
  }
}

// ---------------------------------------------------------------------------
// 2. RequestVote and PreVote in every role.

enum class Start {
  kFollower,                 // term 5, no vote, no leader
  kFollowerWithLeader,       // term 5, heard leader 3 this tick
  kFollowerVotedOther,       // term 5, voted for 3
  kFollowerVotedRequester,   // term 5, voted for 2 (the requester)
  kPreCandidate,             // term 5, campaigning with PreVote
  kPreCandidateAfterLeader,  // term 5, heard leader 3, then campaigned
  kCandidate,                // term 6, voted for itself
  kLeader,                   // term 6
};

const char* StartName(Start start) {
  switch (start) {
    case Start::kFollower:
      return "follower";
    case Start::kFollowerWithLeader:
      return "follower with a leader";
    case Start::kFollowerVotedOther:
      return "follower that voted for 3";
    case Start::kFollowerVotedRequester:
      return "follower that voted for 2";
    case Start::kPreCandidate:
      return "pre-candidate";
    case Start::kPreCandidateAfterLeader:
      return "pre-candidate that followed leader 3";
    case Start::kCandidate:
      return "candidate";
    case Start::kLeader:
      return "leader";
  }
  return "?";
}

enum class Setting { kAny, kOn, kOff };
enum class Outcome { kGrant, kReject, kIgnore };

std::unique_ptr<TestNode> NodeIn(Start start, bool pre_vote,
                                 bool check_quorum) {
  auto n = std::make_unique<TestNode>(
      1, TestNode::Options{.pre_vote = pre_vote,
                           .check_quorum = check_quorum,
                           .log_terms = {2, 5},
                           .hard_state = {Term(5), kNoNode, LogIndex(0)}});
  TestNode& node = *n;
  switch (start) {
    case Start::kFollower:
      break;
    case Start::kFollowerWithLeader:
      node.Step(Msg(3, 1, 5, Heartbeat{LogIndex(0)}));
      REQUIRE(node->leader_id() == NodeId(3));
      break;
    case Start::kFollowerVotedOther:
    case Start::kFollowerVotedRequester: {
      const uint64_t candidate = start == Start::kFollowerVotedOther ? 3 : 2;
      node.Step(Msg(candidate, 1, 5,
                    RequestVote{LogIndex(2), Term(5), false, false}));
      REQUIRE(node->Status().voted_for == NodeId(candidate));
      break;
    }
    case Start::kPreCandidate:
    case Start::kPreCandidateAfterLeader:
      REQUIRE(pre_vote);
      if (start == Start::kPreCandidateAfterLeader) {
        node.Step(Msg(3, 1, 5, Heartbeat{LogIndex(0)}));
        REQUIRE(node->leader_id() == NodeId(3));
      }
      node->Campaign();
      REQUIRE(node->role() == Role::kPreCandidate);
      break;
    case Start::kCandidate:
      node->Campaign();
      if (pre_vote) {
        node.Drain();
        node.Step(Msg(3, 1, 6, RequestVoteResponse{true, true}));
      }
      REQUIRE(node->role() == Role::kCandidate);
      break;
    case Start::kLeader:
      node.BecomeLeader();
      break;
  }
  node.Drain();
  return n;
}

struct VoteCase {
  Start start;
  Setting check_quorum;
  bool pre_vote_request;
  int term_delta;  // the request's term minus the receiver's
  Outcome outcome;
  Role role_after;
  uint64_t term_increase;
  uint64_t vote_after;
  uint64_t leader_after;
};

TEST_CASE(
    "etcd: vote and pre-vote requests in every role at a higher, equal and "
    "lower term",
    "[etcd]") {
  using S = Start;
  using O = Outcome;
  constexpr Setting kAny = Setting::kAny;
  constexpr Setting kOn = Setting::kOn;
  constexpr Setting kOff = Setting::kOff;
  constexpr Role F = Role::kFollower;
  constexpr Role PC = Role::kPreCandidate;
  constexpr Role C = Role::kCandidate;
  constexpr Role L = Role::kLeader;
  constexpr bool kVote = false;
  constexpr bool kPreVote = true;
  // The requester is node 2 with a log exactly as up-to-date as the
  // receiver's. Node 1 receives; node 3 is the other peer.
  // clang-format off
  const VoteCase cases[] = {
      // Higher term. A vote request makes the receiver a follower in the new
      // term and is granted, unless stickiness (CheckQuorum with a leader
      // heard within the election timeout; a leader counts itself) ignores
      // it without adopting the term. A pre-vote request is granted (or
      // ignored by stickiness) and changes nothing, whatever the role.
      {S::kFollower, kAny, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kFollower, kAny, kPreVote, 1, O::kGrant, F, 0, 0, 0},
      {S::kFollowerWithLeader, kOn, kVote, 1, O::kIgnore, F, 0, 0, 3},
      {S::kFollowerWithLeader, kOn, kPreVote, 1, O::kIgnore, F, 0, 0, 3},
      {S::kFollowerWithLeader, kOff, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kFollowerWithLeader, kOff, kPreVote, 1, O::kGrant, F, 0, 0, 3},
      {S::kFollowerVotedOther, kAny, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kFollowerVotedOther, kAny, kPreVote, 1, O::kGrant, F, 0, 3, 0},
      {S::kPreCandidate, kAny, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kPreCandidate, kAny, kPreVote, 1, O::kGrant, PC, 0, 0, 0},
      // A pre-candidate forgets its leader (etcd #8334), so stickiness does
      // not make it ignore other campaigns, though it heard the leader this
      // very tick.
      {S::kPreCandidateAfterLeader, kAny, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kPreCandidateAfterLeader, kAny, kPreVote, 1, O::kGrant, PC, 0, 0,
       0},
      {S::kCandidate, kAny, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kCandidate, kAny, kPreVote, 1, O::kGrant, C, 0, 1, 0},
      {S::kLeader, kOn, kVote, 1, O::kIgnore, L, 0, 1, 1},
      {S::kLeader, kOn, kPreVote, 1, O::kIgnore, L, 0, 1, 1},
      {S::kLeader, kOff, kVote, 1, O::kGrant, F, 1, 2, 0},
      {S::kLeader, kOff, kPreVote, 1, O::kGrant, L, 0, 1, 1},
      // Same term: one vote per term, and none while a leader is known.
      {S::kFollower, kAny, kVote, 0, O::kGrant, F, 0, 2, 0},
      {S::kFollower, kAny, kPreVote, 0, O::kGrant, F, 0, 0, 0},
      {S::kFollowerWithLeader, kAny, kVote, 0, O::kReject, F, 0, 0, 3},
      {S::kFollowerWithLeader, kAny, kPreVote, 0, O::kReject, F, 0, 0, 3},
      {S::kFollowerVotedOther, kAny, kVote, 0, O::kReject, F, 0, 3, 0},
      {S::kFollowerVotedOther, kAny, kPreVote, 0, O::kReject, F, 0, 3, 0},
      {S::kFollowerVotedRequester, kAny, kVote, 0, O::kGrant, F, 0, 2, 0},
      {S::kFollowerVotedRequester, kAny, kPreVote, 0, O::kGrant, F, 0, 2, 0},
      // A pre-candidate has not voted in its term (it forgot its leader), so
      // it grants a same-term vote and stays pre-candidate, as in etcd.
      {S::kPreCandidate, kAny, kVote, 0, O::kGrant, PC, 0, 2, 0},
      {S::kPreCandidate, kAny, kPreVote, 0, O::kGrant, PC, 0, 0, 0},
      {S::kPreCandidateAfterLeader, kAny, kVote, 0, O::kGrant, PC, 0, 2, 0},
      {S::kPreCandidateAfterLeader, kAny, kPreVote, 0, O::kGrant, PC, 0, 0,
       0},
      {S::kCandidate, kAny, kVote, 0, O::kReject, C, 0, 1, 0},
      {S::kCandidate, kAny, kPreVote, 0, O::kReject, C, 0, 1, 0},
      {S::kLeader, kAny, kVote, 0, O::kReject, L, 0, 1, 1},
      {S::kLeader, kAny, kPreVote, 0, O::kReject, L, 0, 1, 1},
      // Lower term: a stale vote request is dropped; a stale pre-vote is
      // refused with the receiver's term so the pre-candidate catches up.
      {S::kFollower, kAny, kVote, -1, O::kIgnore, F, 0, 0, 0},
      {S::kFollower, kAny, kPreVote, -1, O::kReject, F, 0, 0, 0},
      {S::kCandidate, kAny, kVote, -1, O::kIgnore, C, 0, 1, 0},
      {S::kCandidate, kAny, kPreVote, -1, O::kReject, C, 0, 1, 0},
      {S::kLeader, kAny, kVote, -1, O::kIgnore, L, 0, 1, 1},
      {S::kLeader, kAny, kPreVote, -1, O::kReject, L, 0, 1, 1},
  };
  // clang-format on
  for (const VoteCase& c : cases) {
    for (const bool pre_vote : {false, true}) {
      for (const bool check_quorum : {false, true}) {
        if ((c.start == Start::kPreCandidate ||
             c.start == Start::kPreCandidateAfterLeader) &&
            !pre_vote) {
          continue;
        }
        if (c.check_quorum == kOn && !check_quorum) continue;
        if (c.check_quorum == kOff && check_quorum) continue;
        CAPTURE(StartName(c.start), pre_vote, check_quorum, c.pre_vote_request,
                c.term_delta);
        std::unique_ptr<TestNode> n = NodeIn(c.start, pre_vote, check_quorum);
        TestNode& node = *n;
        const Role role_before = node->role();
        const Term term = node->term();
        const NodeId vote_before = node->Status().voted_for;
        const Term request_term(static_cast<uint64_t>(
            static_cast<int64_t>(term.value()) + c.term_delta));
        node.Step(Message{
            NodeId(2), NodeId(1), request_term,
            RequestVote{node->Status().last_index, node->Status().last_term,
                        c.pre_vote_request, false}});
        CHECK(node->role() == c.role_after);
        CHECK(node->term() == Term(term.value() + c.term_increase));
        CHECK(node->Status().voted_for == NodeId(c.vote_after));
        CHECK(node->leader_id() == NodeId(c.leader_after));
        if (c.pre_vote_request) {
          CHECK(node->role() == role_before);
          CHECK(node->term() == term);
          CHECK(node->Status().voted_for == vote_before);
        }

        std::vector<std::pair<Message, RequestVoteResponse>> answers;
        std::vector<HardState> hard_states;
        bool answer_after_persist = true;
        while (node->HasReady()) {
          Ready ready = node.Take();
          if (ready.hard_state) hard_states.push_back(*ready.hard_state);
          for (auto& answer : OfType<RequestVoteResponse>(AllMessages(ready))) {
            answers.push_back(answer);
          }
          if (!OfType<RequestVoteResponse>(ready.messages).empty()) {
            answer_after_persist = false;
          }
          node.Finish(ready);
        }
        if (c.pre_vote_request) {
          // A pre-vote never changes the durable term or vote.
          CHECK(hard_states.empty());
        }
        if (c.outcome == Outcome::kIgnore) {
          CHECK(answers.empty());
          continue;
        }
        REQUIRE(answers.size() == 1);
        const auto& [message, answer] = answers.front();
        CHECK(message.to == NodeId(2));
        CHECK(answer.pre_vote == c.pre_vote_request);
        CHECK(answer.granted == (c.outcome == Outcome::kGrant));
        // A grant carries the request's term, a refusal the receiver's.
        CHECK(message.term == (answer.granted ? request_term : node->term()));
        CHECK(answer_after_persist);
        if (answer.granted && !c.pre_vote_request && vote_before != NodeId(2)) {
          // The vote was persisted by the Ready that sent the grant.
          REQUIRE(hard_states.size() == 1);
          CHECK(hard_states[0].voted_for == NodeId(2));
          CHECK(hard_states[0].term == request_term);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// 3. RaftLog index arithmetic.

std::vector<Entry> Numbered(uint64_t first, const std::vector<uint64_t>& terms,
                            const std::string& data = "x") {
  std::vector<Entry> entries;
  for (size_t i = 0; i < terms.size(); ++i) {
    entries.push_back(
        Entry{Term(terms[i]), LogIndex(first + i), EntryType::kNormal, data});
  }
  return entries;
}

void Write(MemoryLogStore& store, std::vector<Entry> entries) {
  PersistRequest request;
  request.entries = std::move(entries);
  request.sync = true;
  REQUIRE(store.Persist(request).ok());
}

std::optional<uint64_t> TermNumber(const RaftLog& log, uint64_t index) {
  std::optional<Term> term = log.MaybeTermAt(LogIndex(index));
  if (!term) return std::nullopt;
  return term->value();
}

std::optional<uint64_t> Some(uint64_t value) { return value; }

TEST_CASE("etcd: RaftLog index arithmetic at the compaction point", "[etcd]") {
  MemoryLogStore store(MakeConfiguration({1}));
  // Terms by index 1..10: 1 1 2 2 3 3 3 4 4 4.
  Write(store, Numbered(1, {1, 1, 2, 2, 3, 3, 3, 4, 4, 4}));
  RaftLog log(store, LogIndex(7), LogIndex(5));
  REQUIRE(
      store.SetSnapshot({LogIndex(5), Term(3), MakeConfiguration({1})}).ok());
  REQUIRE(store.Compact(LogIndex(5)).ok());
  log.Append(Numbered(11, {5, 5}));  // an unstable tail after the store

  CHECK(log.first_index() == LogIndex(6));
  CHECK(log.last_index() == LogIndex(12));
  CHECK(log.last_term() == Term(5));
  CHECK(log.durable_last() == LogIndex(10));
  // The entry just before the first index is compacted but its term is kept
  // (it is the snapshot's), so an AppendEntries with prev there can match.
  CHECK(TermNumber(log, 5) == Some(3));
  CHECK(log.Matches(LogIndex(5), Term(3)));
  CHECK_FALSE(log.Matches(LogIndex(5), Term(2)));
  CHECK(absl::IsOutOfRange(log.TermAt(LogIndex(4)).status()));
  CHECK(absl::IsOutOfRange(log.TermAt(LogIndex(0)).status()));
  CHECK_FALSE(log.MaybeTermAt(LogIndex(4)).has_value());
  CHECK_FALSE(log.Matches(LogIndex(4), Term(2)));
  CHECK(TermNumber(log, 6) == Some(3));
  CHECK(TermNumber(log, 10) == Some(4));
  CHECK(TermNumber(log, 11) == Some(5));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(13)).status()));

  // EntriesFrom: the first index reads, one below is compacted.
  absl::StatusOr<std::vector<Entry>> from_first =
      log.EntriesFrom(LogIndex(6), kNoLimit);
  REQUIRE(from_first.ok());
  CHECK(IndexesOf(*from_first) ==
        std::vector<uint64_t>{6, 7, 8, 9, 10, 11, 12});
  CHECK(TermsOf(*from_first) == std::vector<uint64_t>{3, 3, 4, 4, 4, 5, 5});
  CHECK(absl::IsOutOfRange(log.EntriesFrom(LogIndex(5), kNoLimit).status()));
  CHECK(absl::IsOutOfRange(log.EntriesFrom(LogIndex(1), kNoLimit).status()));
  absl::StatusOr<std::vector<Entry>> one = log.EntriesFrom(LogIndex(6), 0);
  REQUIRE(one.ok());
  CHECK(IndexesOf(*one) == std::vector<uint64_t>{6});
  absl::StatusOr<std::vector<Entry>> past = log.EntriesFrom(LogIndex(13), 0);
  REQUIRE(past.ok());
  CHECK(past->empty());

  // Committed entries are handed out from applied + 1 = first_index.
  CHECK(IndexesOf(log.NextCommittedEntries(kNoLimit)) ==
        std::vector<uint64_t>{6, 7});

  // Fast backtracking stops at the compaction point: below it the term is
  // unknown, and the hint is the highest index not known to conflict.
  CHECK(log.FindConflictByTerm(LogIndex(12), Term(3)) == LogIndex(7));
  CHECK(log.FindConflictByTerm(LogIndex(12), Term(2)) == LogIndex(4));
  CHECK(log.FindConflictByTerm(LogIndex(5), Term(3)) == LogIndex(5));
  CHECK(log.FindConflictByTerm(LogIndex(5), Term(1)) == LogIndex(4));

  // A matching AppendEntries batch starting at the compaction point is a
  // no-op for the compacted entry.
  log.AppendAfterMatch(Numbered(5, {3, 3, 3}));
  CHECK(log.last_index() == LogIndex(12));

  SECTION("compacting everything durable") {
    REQUIRE(store.SetSnapshot({LogIndex(10), Term(4), MakeConfiguration({1})})
                .ok());
    REQUIRE(store.Compact(LogIndex(10)).ok());
    CHECK(log.first_index() == LogIndex(11));
    CHECK(log.last_index() == LogIndex(12));
    CHECK(TermNumber(log, 10) == Some(4));
    CHECK_FALSE(log.MaybeTermAt(LogIndex(9)).has_value());
    absl::StatusOr<std::vector<Entry>> rest =
        log.EntriesFrom(LogIndex(11), kNoLimit);
    REQUIRE(rest.ok());
    CHECK(IndexesOf(*rest) == std::vector<uint64_t>{11, 12});
    CHECK(absl::IsOutOfRange(log.EntriesFrom(LogIndex(10), kNoLimit).status()));
  }
  SECTION("a log that is all snapshot") {
    MemoryLogStore bare(MakeConfiguration({1}));
    Write(bare, Numbered(1, {1, 2, 2}));
    REQUIRE(
        bare.SetSnapshot({LogIndex(3), Term(2), MakeConfiguration({1})}).ok());
    REQUIRE(bare.Compact(LogIndex(3)).ok());
    RaftLog empty(bare, LogIndex(3), LogIndex(3));
    CHECK(empty.first_index() == LogIndex(4));
    CHECK(empty.last_index() == LogIndex(3));
    CHECK(empty.last_id() == EntryId{Term(2), LogIndex(3)});
    CHECK(empty.IsUpToDate(LogIndex(3), Term(2)));
    CHECK_FALSE(empty.IsUpToDate(LogIndex(2), Term(2)));
    CHECK(absl::IsOutOfRange(empty.EntriesFrom(LogIndex(3), 0).status()));
    absl::StatusOr<std::vector<Entry>> none = empty.EntriesFrom(LogIndex(4), 0);
    REQUIRE(none.ok());
    CHECK(none->empty());
    CHECK_FALSE(empty.HasNextCommittedEntries());
    empty.Append(Numbered(4, {3}));
    CHECK(empty.last_id() == EntryId{Term(3), LogIndex(4)});
    CHECK(empty.first_index() == LogIndex(4));
  }
}

TEST_CASE(
    "etcd: RaftLog index arithmetic while a received snapshot awaits "
    "persistence",
    "[etcd]") {
  MemoryLogStore store(MakeConfiguration({1, 2, 3}));
  // Durable 1..10 with terms 1 1 2 2 2 2 2 2 2 2; commit 3, applied 2.
  Write(store, Numbered(1, {1, 1, 2, 2, 2, 2, 2, 2, 2, 2}));
  RaftLog log(store, LogIndex(3), LogIndex(2));
  log.Append(Numbered(11, {2}));
  const SnapshotMeta snapshot{LogIndex(8), Term(4),
                              MakeConfiguration({1, 2, 3})};
  log.RestoreSnapshot(snapshot);

  // The snapshot answers for everything through its index; the store's stale
  // entries (1..10 of the old history) are invisible.
  CHECK(log.first_index() == LogIndex(9));
  CHECK(log.last_index() == LogIndex(8));
  CHECK(log.last_term() == Term(4));
  CHECK(log.last_id() == EntryId{Term(4), LogIndex(8)});
  CHECK(TermNumber(log, 8) == Some(4));
  CHECK(absl::IsOutOfRange(log.TermAt(LogIndex(7)).status()));
  CHECK(absl::IsOutOfRange(log.TermAt(LogIndex(3)).status()));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(9)).status()));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(10)).status()));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(11)).status()));
  CHECK(log.Matches(LogIndex(8), Term(4)));
  CHECK_FALSE(log.Matches(LogIndex(8), Term(2)));  // the store's old entry 8
  CHECK_FALSE(log.Matches(LogIndex(3), Term(2)));
  CHECK_FALSE(log.Matches(LogIndex(10), Term(2)));
  CHECK(log.IsUpToDate(LogIndex(8), Term(4)));
  CHECK_FALSE(log.IsUpToDate(LogIndex(10), Term(2)));
  CHECK(log.FindConflictByTerm(LogIndex(10), Term(4)) == LogIndex(8));
  CHECK(log.FindConflictByTerm(LogIndex(8), Term(3)) == LogIndex(7));

  // Commit jumps to the snapshot; applied waits for the snapshot's write.
  CHECK(log.commit_index() == LogIndex(8));
  CHECK(log.applied() == LogIndex(2));
  CHECK_FALSE(log.HasNextCommittedEntries());
  CHECK(log.NextCommittedEntries(kNoLimit).empty());
  CHECK_FALSE(log.HasEntriesToPersist());
  CHECK(absl::IsOutOfRange(log.EntriesFrom(LogIndex(8), kNoLimit).status()));
  absl::StatusOr<std::vector<Entry>> after = log.EntriesFrom(LogIndex(9), 0);
  REQUIRE(after.ok());
  CHECK(after->empty());
  REQUIRE(log.SnapshotToPersist().has_value());
  CHECK(*log.SnapshotToPersist() == snapshot);

  // Handing the snapshot to the driver changes none of the arithmetic.
  log.MarkSnapshotPersisting();
  CHECK_FALSE(log.SnapshotToPersist().has_value());
  CHECK(log.first_index() == LogIndex(9));
  CHECK(log.last_index() == LogIndex(8));
  CHECK(TermNumber(log, 8) == Some(4));

  // The leader's next entries follow the snapshot before it is durable.
  log.AppendAfterMatch(Numbered(9, {4, 4}));
  CHECK(log.last_index() == LogIndex(10));
  CHECK(log.last_term() == Term(4));
  CHECK(TermNumber(log, 10) == Some(4));
  CHECK(IndexesOf(log.EntriesToPersist()) == std::vector<uint64_t>{9, 10});
  log.CommitTo(LogIndex(10));
  CHECK(log.commit_index() == LogIndex(10));
  // Nothing after the snapshot is durable yet, so nothing is handed out.
  CHECK(log.NextCommittedEntries(kNoLimit).empty());
  absl::StatusOr<std::vector<Entry>> tail =
      log.EntriesFrom(LogIndex(9), kNoLimit);
  REQUIRE(tail.ok());
  CHECK(IndexesOf(*tail) == std::vector<uint64_t>{9, 10});

  // The driver writes snapshot and entries in one request.
  std::vector<Entry> entries = log.EntriesToPersist();
  log.MarkPersisting(entries.back().index);
  PersistRequest request;
  request.snapshot = snapshot;
  request.entries = entries;
  request.sync = true;
  REQUIRE(store.Persist(request).ok());
  log.StableSnapshotTo(LogIndex(8));
  log.StableTo(entries.back().id());

  CHECK(log.applied() == LogIndex(8));
  CHECK(log.first_index() == LogIndex(9));
  CHECK(log.last_index() == LogIndex(10));
  CHECK(log.durable_last() == LogIndex(10));
  CHECK(TermNumber(log, 8) == Some(4));
  CHECK_FALSE(log.MaybeTermAt(LogIndex(7)).has_value());
  CHECK(IndexesOf(log.NextCommittedEntries(kNoLimit)) ==
        std::vector<uint64_t>{9, 10});
}

TEST_CASE("etcd: a snapshot below the store's last index hides the stale tail",
          "[etcd]") {
  MemoryLogStore store(MakeConfiguration({1}));
  Write(store, Numbered(1, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1}));
  RaftLog log(store, LogIndex(3), LogIndex(3));
  // A snapshot at 6 of a different history than the stored entry 6.
  log.RestoreSnapshot({LogIndex(6), Term(2), MakeConfiguration({1})});
  CHECK(log.first_index() == LogIndex(7));
  CHECK(log.last_index() == LogIndex(6));
  CHECK(log.last_term() == Term(2));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(7)).status()));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(10)).status()));
  CHECK_FALSE(log.Matches(LogIndex(7), Term(1)));
  CHECK_FALSE(log.Matches(LogIndex(6), Term(1)));
  CHECK(log.Matches(LogIndex(6), Term(2)));
  absl::StatusOr<std::vector<Entry>> none = log.EntriesFrom(LogIndex(7), 0);
  REQUIRE(none.ok());
  CHECK(none->empty());
  CHECK(log.commit_index() == LogIndex(6));
  CHECK(log.applied() == LogIndex(3));
}

// ---------------------------------------------------------------------------
// 4. Election liveness.

std::vector<NodeId> NodeIds(std::initializer_list<uint64_t> ids) {
  std::vector<NodeId> result;
  for (uint64_t id : ids) result.emplace_back(id);
  return result;
}

// The leader every node of `ids` follows in one term, or kNoNode.
NodeId AgreedLeader(InteractionEnv& env, const std::vector<NodeId>& ids) {
  const NodeId leader = env.node(ids.front()).leader_id();
  const Term term = env.node(ids.front()).term();
  if (leader == kNoNode) return kNoNode;
  for (NodeId id : ids) {
    if (env.node(id).leader_id() != leader || env.node(id).term() != term) {
      return kNoNode;
    }
  }
  if (std::find(ids.begin(), ids.end(), leader) == ids.end() ||
      env.node(leader).role() != Role::kLeader) {
    return kNoNode;
  }
  return leader;
}

// Ticks every node of `tick` once per round and lets `tick` exchange messages,
// until the nodes of `agree` follow one leader in a term of at least
// `min_term`. Returns the number of ticks it took, or max_ticks + 1.
uint64_t TicksUntilLeader(InteractionEnv& env, const std::vector<NodeId>& tick,
                          const std::vector<NodeId>& agree, Term min_term,
                          uint64_t max_ticks) {
  for (uint64_t ticks = 0; ticks <= max_ticks; ++ticks) {
    const NodeId leader = AgreedLeader(env, agree);
    if (leader != kNoNode && env.node(leader).term() >= min_term) return ticks;
    for (NodeId id : tick) env.node(id).Tick();
    env.Stabilize(tick);
  }
  return max_ticks + 1;
}

struct MixedCluster {
  bool pre_vote[3];
};

std::string MixName(const MixedCluster& mix) {
  std::string name;
  for (bool on : mix.pre_vote) name += on ? "P" : "-";
  return name;
}

void AddMixedNodes(InteractionEnv& env, const MixedCluster& mix,
                   bool check_quorum, uint64_t seed) {
  const Configuration configuration = MakeConfiguration({1, 2, 3});
  for (uint64_t id = 1; id <= 3; ++id) {
    Config base;
    base.pre_vote = mix.pre_vote[id - 1];
    base.check_quorum = check_quorum;
    base.election_ticks = 10;
    base.heartbeat_ticks = 1;
    base.seed = seed;
    env.AddNodes({NodeId(id)}, configuration, base);
  }
}

// Every mix where the nodes disagree on PreVote (P: on, -: off).
const MixedCluster kMixes[] = {
    {{true, false, false}}, {{false, true, false}}, {{false, false, true}},
    {{false, true, true}},  {{true, false, true}},  {{true, true, false}},
};

constexpr uint64_t kElectionTicks = 10;
// Generous: a timeout is at most 2T - 1 ticks, and a few collisions may force
// retries.
constexpr uint64_t kElectionBound = 10 * kElectionTicks;

TEST_CASE(
    "etcd: a new leader is elected after the leader crashes when PreVote "
    "differs between nodes",
    "[etcd]") {
  const std::vector<NodeId> all = NodeIds({1, 2, 3});
  uint64_t worst = 0;
  for (const MixedCluster& mix : kMixes) {
    for (const bool check_quorum : {false, true}) {
      for (uint64_t seed = 1; seed <= 8; ++seed) {
        CAPTURE(MixName(mix), check_quorum, seed);
        InteractionEnv env;
        AddMixedNodes(env, mix, check_quorum, seed);
        REQUIRE(TicksUntilLeader(env, all, all, Term(1), kElectionBound) <=
                kElectionBound);
        const NodeId old_leader = AgreedLeader(env, all);
        const Term old_term = env.node(old_leader).term();
        REQUIRE(env.node(old_leader).Propose("before").ok());
        env.Stabilize(all);
        env.Crash(old_leader);
        std::vector<NodeId> rest;
        for (NodeId id : all) {
          if (id != old_leader) rest.push_back(id);
        }
        const uint64_t ticks =
            TicksUntilLeader(env, rest, rest, old_term.next(), kElectionBound);
        CHECK(ticks <= kElectionBound);
        worst = std::max(worst, ticks);
        const NodeId new_leader = AgreedLeader(env, rest);
        if (new_leader == kNoNode) continue;
        // The new leader commits in its term with the surviving follower.
        REQUIRE(env.node(new_leader).Propose("after").ok());
        env.Stabilize(rest);
        for (NodeId id : rest) {
          CHECK(env.node(id).commit_index() ==
                env.node(new_leader).Status().last_index);
        }
      }
    }
  }
  INFO("slowest re-election: " << worst << " ticks");
  CHECK(worst <= kElectionBound);
}

TEST_CASE(
    "etcd: a cluster with mixed PreVote elects a new leader while the leader "
    "is isolated and converges on one leader after it rejoins",
    "[etcd]") {
  const std::vector<NodeId> all = NodeIds({1, 2, 3});
  for (const MixedCluster& mix : kMixes) {
    for (const bool check_quorum : {false, true}) {
      for (uint64_t seed = 1; seed <= 8; ++seed) {
        CAPTURE(MixName(mix), check_quorum, seed);
        InteractionEnv env;
        AddMixedNodes(env, mix, check_quorum, seed);
        REQUIRE(TicksUntilLeader(env, all, all, Term(1), kElectionBound) <=
                kElectionBound);
        const NodeId old_leader = AgreedLeader(env, all);
        const Term old_term = env.node(old_leader).term();
        env.Isolate(old_leader);
        std::vector<NodeId> rest;
        for (NodeId id : all) {
          if (id != old_leader) rest.push_back(id);
        }
        CHECK(TicksUntilLeader(env, all, rest, old_term.next(),
                               kElectionBound) <= kElectionBound);
        // Run the isolated node on its own a while longer (with PreVote off it
        // may campaign and inflate its term), then heal.
        for (int i = 0; i < 30; ++i) {
          for (NodeId id : all) env.node(id).Tick();
          env.Stabilize(all);
        }
        env.Heal();
        CHECK(TicksUntilLeader(env, all, all, old_term.next(),
                               2 * kElectionBound) <= 2 * kElectionBound);
        const NodeId leader = AgreedLeader(env, all);
        if (leader == kNoNode) continue;
        REQUIRE(env.node(leader).Propose("after heal").ok());
        env.Stabilize(all);
        for (NodeId id : all) {
          CHECK(env.node(id).commit_index() ==
                env.node(leader).Status().last_index);
        }
      }
    }
  }
}

TEST_CASE(
    "etcd: a split vote with PreVote resolves to one leader within a bounded "
    "number of ticks",
    "[etcd]") {
  const std::vector<NodeId> all = NodeIds({1, 2, 3, 4});
  uint64_t worst = 0;
  for (const bool check_quorum : {false, true}) {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
      CAPTURE(check_quorum, seed);
      InteractionEnv env;
      Config base;
      base.pre_vote = true;
      base.check_quorum = check_quorum;
      base.election_ticks = kElectionTicks;
      base.seed = seed;
      env.AddNodes(all, MakeConfiguration({1, 2, 3, 4}), base);
      // 3 hears only candidate 1, 4 only candidate 2: both win their
      // pre-votes (each pre-candidate grants the other's), then each gets one
      // real vote besides its own, and neither reaches 3 of 4.
      env.Cut(NodeId(1), NodeId(4));
      env.Cut(NodeId(2), NodeId(3));
      env.node(NodeId(1)).Campaign();
      env.node(NodeId(2)).Campaign();
      env.Stabilize(all);
      REQUIRE(env.node(NodeId(1)).role() == Role::kCandidate);
      REQUIRE(env.node(NodeId(2)).role() == Role::kCandidate);
      REQUIRE(env.node(NodeId(1)).term() == Term(1));
      REQUIRE(env.node(NodeId(2)).term() == Term(1));
      REQUIRE(env.node(NodeId(3)).Status().voted_for == NodeId(1));
      REQUIRE(env.node(NodeId(4)).Status().voted_for == NodeId(2));
      REQUIRE(AgreedLeader(env, all) == kNoNode);

      env.Heal();
      const uint64_t ticks =
          TicksUntilLeader(env, all, all, Term(2), kElectionBound);
      CHECK(ticks <= kElectionBound);
      worst = std::max(worst, ticks);
      const NodeId leader = AgreedLeader(env, all);
      if (leader == kNoNode) continue;
      // Every node follows it, including both former candidates.
      CHECK(env.node(NodeId(1)).role() != Role::kCandidate);
      CHECK(env.node(NodeId(2)).role() != Role::kCandidate);
    }
  }
  INFO("slowest resolution: " << worst << " ticks");
  CHECK(worst <= kElectionBound);
}

TEST_CASE("etcd: randomized election timeouts of five nodes rarely collide",
          "[etcd]") {
  // With five independent uniform draws from [T, 2T), the two smallest are
  // equal with probability 0.2334 for T = 10 and 0.0248 for T = 100. The
  // bounds allow for sampling noise over 1000 seeds (sd ~0.013 and ~0.005)
  // but not for draws correlated across nodes (the same seed mixed with
  // different ids must give different streams).
  struct Case {
    uint64_t election_ticks;
    double bound;
  };
  for (const Case& c : {Case{10, 0.30}, Case{100, 0.05}}) {
    CAPTURE(c.election_ticks);
    constexpr int kTrials = 1000;
    int collisions = 0;
    std::vector<int> histogram(c.election_ticks, 0);
    for (int trial = 0; trial < kTrials; ++trial) {
      std::vector<uint64_t> timeouts;
      for (uint64_t id = 1; id <= 5; ++id) {
        TestNode n(id, {.voters = {1, 2, 3, 4, 5},
                        .election_ticks = c.election_ticks,
                        .seed = static_cast<uint64_t>(trial)});
        const uint64_t timeout = n->Status().election_timeout;
        REQUIRE(timeout >= c.election_ticks);
        REQUIRE(timeout < 2 * c.election_ticks);
        ++histogram[timeout - c.election_ticks];
        timeouts.push_back(timeout);
      }
      std::sort(timeouts.begin(), timeouts.end());
      if (timeouts[0] == timeouts[1]) ++collisions;
    }
    const double fraction = static_cast<double>(collisions) / kTrials;
    INFO("two smallest timeouts equal in " << collisions << " of " << kTrials
                                           << " trials");
    CHECK(fraction < c.bound);
    // Every value of the range is drawn.
    CHECK(*std::min_element(histogram.begin(), histogram.end()) > 0);
  }
}

// ---------------------------------------------------------------------------
// 5. Pagination of committed entries across Readies.

// Checks every Ready's committed entries as they are handed out and, at the
// end, that each page was as full as the byte limit allowed.
class PageChecker {
 public:
  PageChecker(uint64_t max_bytes, LogIndex applied)
      : max_bytes_(max_bytes), applied_(applied) {}

  // `commit` and `durable_last` are the node's right after TakeReady.
  void Record(const Ready& ready, LogIndex commit, LogIndex durable_last) {
    CHECK(commit >= last_commit_);
    last_commit_ = commit;
    if (ready.hard_state) {
      CHECK(ready.hard_state->commit >= last_hard_commit_);
      last_hard_commit_ = ready.hard_state->commit;
    }
    const std::vector<Entry>& entries = ready.committed_entries;
    if (entries.empty()) return;
    uint64_t bytes = 0;
    LogIndex expected = applied_.next();
    for (const Entry& entry : entries) {
      CHECK(entry.index == expected);  // no gap, no duplicate
      expected = expected.next();
      bytes += entry.ByteSize();
    }
    const LogIndex limit = std::min(commit, durable_last);
    CHECK(entries.back().index <= limit);
    if (entries.size() > 1) CHECK(bytes <= max_bytes_);
    pages_.push_back({entries, bytes, limit});
    applied_ = entries.back().index;
  }

  // Every page but the last of a run stopped only because the next entry did
  // not fit.
  void CheckPagesFull() const {
    for (size_t i = 0; i + 1 < pages_.size(); ++i) {
      const Page& page = pages_[i];
      if (page.entries.back().index >= page.limit) continue;
      const Entry& next = pages_[i + 1].entries.front();
      CAPTURE(i, page.entries.back().index.value());
      CHECK(next.index == page.entries.back().index.next());
      CHECK(page.bytes + next.ByteSize() > max_bytes_);
    }
  }

  LogIndex applied() const { return applied_; }
  size_t pages() const { return pages_.size(); }
  // Every index handed out, in order.
  std::vector<uint64_t> Handed() const {
    std::vector<uint64_t> indexes;
    for (const Page& page : pages_) {
      for (const Entry& entry : page.entries) {
        indexes.push_back(entry.index.value());
      }
    }
    return indexes;
  }

 private:
  struct Page {
    std::vector<Entry> entries;
    uint64_t bytes;
    LogIndex limit;
  };
  uint64_t max_bytes_;
  LogIndex applied_;
  LogIndex last_commit_;
  LogIndex last_hard_commit_;
  std::vector<Page> pages_;
};

std::vector<uint64_t> Range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> result;
  for (uint64_t i = first; i <= last; ++i) result.push_back(i);
  return result;
}

void DrainPaged(TestNode& n, PageChecker& pages) {
  while (n->HasReady()) {
    Ready ready = n.Take();
    pages.Record(ready, n->commit_index(), n->Status().durable_index);
    n.Finish(ready);
  }
}

TEST_CASE(
    "etcd: committed entries paginated across Readies have no gap, no "
    "duplicate and a monotonic commit",
    "[etcd]") {
  // Entries "e1".."e9" are 26 bytes, "e10".. 27 bytes: 3 fit in 100 bytes.
  constexpr uint64_t kMax = 100;

  SECTION("a follower learning commits while Readies are outstanding") {
    TestNode n(2, {.hard_state = {Term(1), kNoNode, LogIndex(0)},
                   .max_committed_bytes_per_ready = kMax});
    PageChecker pages(kMax, LogIndex(0));
    n.Step(Msg(1, 2, 1, Append(0, 0, std::vector<uint64_t>(8, 1), 0)));
    DrainPaged(n, pages);
    // More entries and a commit of 12 while only 1..8 are durable.
    n.Step(Msg(1, 2, 1, Append(8, 1, std::vector<uint64_t>(8, 1), 12)));
    Ready outstanding = n.Take();
    pages.Record(outstanding, n->commit_index(), n->Status().durable_index);
    CHECK(IndexesOf(outstanding.committed_entries) ==
          std::vector<uint64_t>{1, 2, 3});
    // The commit advances while that Ready is being performed.
    n.Step(Msg(1, 2, 1, Heartbeat{LogIndex(14)}));
    n.Finish(outstanding);
    DrainPaged(n, pages);
    CHECK(pages.applied() == LogIndex(14));
    // A batch whose commit covers entries of the same message.
    n.Step(Msg(1, 2, 1, Append(16, 1, std::vector<uint64_t>(10, 1), 26)));
    DrainPaged(n, pages);
    // A duplicate of an old AppendEntries changes nothing.
    n.Step(Msg(1, 2, 1, Append(8, 1, std::vector<uint64_t>(8, 1), 12)));
    DrainPaged(n, pages);

    CHECK(pages.Handed() == Range(1, 26));
    CHECK(pages.pages() >= 9);
    pages.CheckPagesFull();
    REQUIRE(n.applied().size() == 26);
    CHECK(IndexesOf(n.applied()) == Range(1, 26));
    CHECK(n->applied_index() == LogIndex(26));
    CHECK(n.store().hard_state().commit == LogIndex(26));
  }

  SECTION("a single-voter leader with entries of varied sizes") {
    TestNode n(1, {.voters = {1}, .max_committed_bytes_per_ready = kMax});
    n.BecomeLeader();  // applies the no-op (index 1)
    PageChecker pages(kMax, n->applied_index());
    REQUIRE(n->applied_index() == LogIndex(1));
    for (uint64_t i = 0; i < 24; ++i) {
      // 0 to 95 bytes of data: some entries alone exceed the limit.
      REQUIRE(n->Propose(std::string((i * 37) % 96, 'x')).ok());
      if (i % 5 == 4) DrainPaged(n, pages);
    }
    DrainPaged(n, pages);
    CHECK(pages.Handed() == Range(2, 25));
    CHECK(pages.pages() >= 8);
    pages.CheckPagesFull();
    CHECK(n->applied_index() == LogIndex(25));
  }
}

TEST_CASE(
    "etcd: after a restart with the stored commit above applied, Readies hand "
    "out applied+1..commit in order in pages",
    "[etcd]") {
  constexpr uint64_t kMax = 100;
  // The stored log holds 20 entries of term 2, committed through 15.
  const uint64_t applied_points[] = {0, 4, 14, 15, 17};
  for (const uint64_t applied : applied_points) {
    CAPTURE(applied);
    MemoryLogStore store(MakeConfiguration({1, 2, 3}));
    PersistRequest initial;
    initial.entries = EntriesWithTerms(std::vector<uint64_t>(20, 2));
    initial.hard_state = HardState{Term(2), NodeId(1), LogIndex(15)};
    initial.sync = true;
    REQUIRE(store.Persist(initial).ok());
    Config config;
    config.id = NodeId(2);
    config.applied = LogIndex(applied);
    config.max_committed_bytes_per_ready = kMax;
    config.seed = 3;
    absl::StatusOr<std::unique_ptr<Node>> created = Node::Create(config, store);
    REQUIRE(created.ok());
    Node& node = **created;
    // Applied entries are committed even when the stored commit lags.
    const uint64_t commit = std::max<uint64_t>(15, applied);
    CHECK(node.commit_index() == LogIndex(commit));
    CHECK(node.applied_index() == LogIndex(applied));

    PageChecker pages(kMax, LogIndex(applied));
    ReadyProcessor driver(node, store,
                          {.send = [](std::vector<Message>&) {},
                           .hand_over = [](const Ready&) {}});
    auto drain = [&] {
      while (driver.Take()) {
        pages.Record(driver.ready(), node.commit_index(),
                     node.Status().durable_index);
        REQUIRE(driver.Finish().ok());
      }
    };
    drain();
    CHECK(pages.Handed() == Range(applied + 1, commit));
    if (commit - applied > 3) CHECK(pages.pages() >= (commit - applied) / 4);
    CHECK(node.applied_index() == LogIndex(commit));

    // The leader of term 2 then reports commit 20.
    REQUIRE(node.Step(Msg(1, 2, 2, Heartbeat{LogIndex(20)})).ok());
    drain();
    CHECK(pages.Handed() == Range(applied + 1, 20));
    pages.CheckPagesFull();
    CHECK(node.applied_index() == LogIndex(20));
    CHECK(store.hard_state().commit == LogIndex(20));
  }
}

}  // namespace
}  // namespace driftwood::raft
