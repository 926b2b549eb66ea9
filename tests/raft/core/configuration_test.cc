// Configuration tests: learners (they replicate but never vote, campaign or
// count toward a quorum), joint configurations (thesis §4.3: every decision
// needs a majority of each half), configurations restored from an installed
// snapshot, per-term state that must not leak from one leadership into the
// next, and an idle cluster repairing a lost message. Like paper_test.cc,
// every test drives a Node only through its inputs and asserts on the Ready
// it produces.
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
#include "tests/support/interaction_env.h"

namespace driftwood::raft {
namespace {

// The joint configuration most tests use: incoming voters {1,2,3}, outgoing
// voters {1,4,5}. Node 1 is in both halves, 2 and 3 only in the incoming one,
// 4 and 5 only in the outgoing one.
TestNode::Options Joint(TestNode::Options options = {}) {
  options.voters = {1, 2, 3};
  options.voters_outgoing = {1, 4, 5};
  return options;
}

Configuration MakeJoint(const Ids& voters, const Ids& outgoing,
                        const Ids& learners = {}) {
  Configuration configuration = MakeConfiguration(voters, learners);
  for (uint64_t id : outgoing) configuration.voters_outgoing.emplace_back(id);
  return configuration;
}

RequestVoteResponse Grant(bool pre_vote = false) {
  return RequestVoteResponse{true, pre_vote};
}
RequestVoteResponse Reject() { return RequestVoteResponse{false, false}; }

std::vector<uint64_t> Recipients(const std::vector<Message>& messages) {
  std::vector<uint64_t> to;
  for (const Message& message : messages) to.push_back(message.to.value());
  std::sort(to.begin(), to.end());
  return to;
}

// Every peer in `peers` acknowledges the leader's log through `index`.
void AckFrom(TestNode& n, const Ids& peers, uint64_t index) {
  for (uint64_t peer : peers) {
    n.Step(Message{NodeId(peer), n->id(), n->term(), Ack(index)});
  }
  n.Drain();
}

void AnswerRound(TestNode& n, const Ids& peers, uint64_t round) {
  for (uint64_t peer : peers) {
    n.Step(Message{NodeId(peer), n->id(), n->term(), HeartbeatResponse{round}});
  }
  n.Drain();
}

// Ticks a leader `ticks` times; before each tick every node in `alive`
// answers a heartbeat (proof of life for CheckQuorum).
void TickWithAnswers(TestNode& n, const Ids& alive, uint64_t ticks) {
  for (uint64_t i = 0; i < ticks; ++i) {
    for (uint64_t peer : alive) {
      n.Step(Message{NodeId(peer), n->id(), n->term(), HeartbeatResponse{0}});
    }
    n.TickN(1);
    n.Drain();
  }
}

// Like TestNode::BecomeLeader (every voter grants), but returns the messages
// the node sent from the moment it became leader.
std::vector<Message> WinElection(TestNode& n) {
  n->Campaign();
  for (int round = 0; round < 2 && n->role() != Role::kLeader; ++round) {
    for (const auto& [message, request] : OfType<RequestVote>(n.Drain())) {
      n.Step(Message{message.to, n->id(), message.term,
                     RequestVoteResponse{true, request.pre_vote}});
    }
  }
  REQUIRE(n->role() == Role::kLeader);
  return n.Drain();
}

bool HasRequestVote(const std::vector<Message>& messages) {
  return !OfType<RequestVote>(messages).empty();
}

// ===========================================================================
// Learners.

TEST_CASE("learner: never campaigns, on timeout, Campaign() or TimeoutNow",
          "[config]") {
  for (bool pre_vote : {false, true}) {
    INFO("pre_vote " << pre_vote);
    TestNode n(4, {.voters = {1, 2, 3},
                   .learners = {4},
                   .pre_vote = pre_vote,
                   .hard_state = {Term(1), {}, {}}});
    n.TickN(10 * n->Status().election_timeout);
    CHECK(n->role() == Role::kFollower);
    CHECK(n->term() == Term(1));
    CHECK_FALSE(HasRequestVote(n.Drain()));
    n->Campaign();
    CHECK(n->role() == Role::kFollower);
    CHECK(n->term() == Term(1));
    CHECK_FALSE(HasRequestVote(n.Drain()));
    // Even its leader cannot hand it leadership.
    n.Step(Msg(1, 4, 1, Heartbeat{LogIndex(0), 0}));
    n.Drain();
    n.Step(Msg(1, 4, 1, TimeoutNow{}));
    CHECK(n->role() == Role::kFollower);
    CHECK(n->term() == Term(1));
    CHECK_FALSE(HasRequestVote(n.Drain()));
  }
}

TEST_CASE("learner: acknowledgements from learners never commit", "[config]") {
  SECTION("voters {1,2,3}, learner 4") {
    TestNode n(1, {.voters = {1, 2, 3}, .learners = {4}});
    n.BecomeLeader();
    REQUIRE(n->Status().peers.count(NodeId(4)) != 0);
    AckFrom(n, {4}, 1);
    CHECK(n->Status().peers.at(NodeId(4)).match == LogIndex(1));
    CHECK(n->commit_index() == LogIndex(0));
    AckFrom(n, {2}, 1);
    CHECK(n->commit_index() == LogIndex(1));
    REQUIRE(n->Propose("a").ok());
    n.Drain();
    AckFrom(n, {4}, 2);
    CHECK(n->commit_index() == LogIndex(1));
    AckFrom(n, {3}, 2);
    CHECK(n->commit_index() == LogIndex(2));
  }
  SECTION("voters {1,2,3}, learners {4,5}: leader + 2 learners is 3 of 5") {
    TestNode n(1, {.voters = {1, 2, 3}, .learners = {4, 5}});
    n.BecomeLeader();
    AckFrom(n, {4, 5}, 1);
    CHECK(n->commit_index() == LogIndex(0));
    REQUIRE(n->Propose("a").ok());
    n.Drain();
    AckFrom(n, {4, 5}, 2);
    CHECK(n->commit_index() == LogIndex(0));
    AckFrom(n, {3}, 2);
    CHECK(n->commit_index() == LogIndex(2));
    CHECK(n.applied().size() == 2);
  }
}

TEST_CASE("learner: heartbeat answers from learners never confirm a read",
          "[config]") {
  TestNode n(1, {.voters = {1, 2, 3}, .learners = {4, 5}});
  n.BecomeLeader();
  AckFrom(n, {2, 3, 4, 5}, 1);
  REQUIRE(n->commit_index() == LogIndex(1));
  REQUIRE(n->ReadIndex(7).ok());
  const uint64_t round = TakeReadRound(n, 4);  // learners get it too
  AnswerRound(n, {4, 5}, round);
  CHECK(n.reads().empty());  // self + 2 learners: not a quorum of voters
  AnswerRound(n, {2}, round);
  REQUIRE(n.reads().size() == 1);
  CHECK(n.reads()[0] == ReadState{7, LogIndex(1)});
}

TEST_CASE("learner: CheckQuorum does not count learners", "[config]") {
  TestNode n(1,
             {.voters = {1, 2, 3}, .learners = {4, 5}, .check_quorum = true});
  n.BecomeLeader();
  SECTION("only learners answer: the leader steps down after a timeout") {
    TickWithAnswers(n, {4, 5}, 9);
    REQUIRE(n->role() == Role::kLeader);
    TickWithAnswers(n, {4, 5}, 1);
    CHECK(n->role() == Role::kFollower);
    CHECK(n->term() == Term(1));
    CHECK(n->leader_id() == kNoNode);
  }
  SECTION("one voter answers: the leader stays") {
    TickWithAnswers(n, {2}, 35);
    CHECK(n->role() == Role::kLeader);
  }
}

TEST_CASE("learner: vote requests skip learners, their answers are ignored",
          "[config]") {
  SECTION("vote") {
    TestNode n(1, {.voters = {1, 2, 3}, .learners = {4, 5}});
    n->Campaign();
    const std::vector<Message> sent = n.Drain();
    CHECK(Recipients(sent) == Ids{2, 3});
    // Grants from learners do not win (self + 2 would be 3 of 5).
    n.Step(Msg(4, 1, 1, Grant()));
    n.Step(Msg(5, 1, 1, Grant()));
    CHECK(n->role() == Role::kCandidate);
    // Rejections from learners do not lose either.
    n.Step(Msg(2, 1, 1, Reject()));
    CHECK(n->role() == Role::kCandidate);
    n.Step(Msg(3, 1, 1, Grant()));
    CHECK(n->role() == Role::kLeader);
  }
  SECTION("pre-vote") {
    TestNode n(1, {.voters = {1, 2, 3}, .learners = {4, 5}, .pre_vote = true});
    n->Campaign();
    REQUIRE(n->role() == Role::kPreCandidate);
    CHECK(Recipients(n.Drain()) == Ids{2, 3});
    n.Step(Msg(4, 1, 1, Grant(true)));
    n.Step(Msg(5, 1, 1, Grant(true)));
    CHECK(n->role() == Role::kPreCandidate);
    CHECK(n->term() == Term(0));
    n.Step(Msg(2, 1, 1, Grant(true)));
    CHECK(n->role() == Role::kCandidate);
  }
}

TEST_CASE("learner: receives AppendEntries and heartbeats and replicates",
          "[config]") {
  SECTION("leader side") {
    TestNode n(1, {.voters = {1, 2, 3}, .learners = {4}});
    n.BecomeLeader();
    n.TickN(1);
    std::vector<Message> beats;
    for (const auto& [message, heartbeat] : OfType<Heartbeat>(n.Drain())) {
      beats.push_back(message);
    }
    CHECK(Recipients(beats) == Ids{2, 3, 4});
    AckFrom(n, {2, 4}, 1);
    REQUIRE(n->commit_index() == LogIndex(1));
    REQUIRE(n->Status().peers.at(NodeId(4)).state == ProgressState::kReplicate);
    REQUIRE(n->Propose("a").ok());
    auto [to4, append] = Only<AppendEntries>(To(n.Drain(), 4));
    REQUIRE(append.entries.size() == 1);
    CHECK(append.entries[0].index == LogIndex(2));
    // The commit index reaches the learner too, once the entry in flight to
    // it is acknowledged (CommitOnlyAppendUseful).
    n.Step(Msg(2, 1, 1, Ack(2)));
    REQUIRE(n->commit_index() == LogIndex(2));
    CHECK(OfType<AppendEntries>(To(n.Drain(), 4)).empty());
    n.Step(Msg(4, 1, 1, Ack(2)));
    auto [to4_again, commit] = Only<AppendEntries>(To(n.Drain(), 4));
    CHECK(commit.leader_commit == LogIndex(2));
    CHECK(commit.entries.empty());
  }
  SECTION("learner side") {
    TestNode n(4, {.voters = {1, 2, 3}, .learners = {4}});
    n.Step(Msg(1, 4, 1, Append(0, 0, {1, 1}, 1)));
    Ready ready = n.Take();
    CHECK(ready.entries.size() == 2);
    auto [message, ack] = Only<AppendEntriesResponse>(AllMessages(ready));
    CHECK(ack.success);
    CHECK(ack.index == LogIndex(2));
    n.Finish(ready);
    n.Drain();
    CHECK(n->commit_index() == LogIndex(1));
    n.Step(Msg(1, 4, 1, Heartbeat{LogIndex(2), 0}));
    auto [to, answer] = Only<HeartbeatResponse>(n.Drain());
    CHECK(to.to == NodeId(1));
    CHECK(n->commit_index() == LogIndex(2));
    REQUIRE(n.applied().size() == 2);
    CHECK(n.applied().back().index == LogIndex(2));
  }
}

// ===========================================================================
// Joint configurations (thesis §4.3): incoming {1,2,3}, outgoing {1,4,5}.

TEST_CASE("joint: commit needs a majority of each half", "[config]") {
  SECTION("the incoming half alone does not commit") {
    TestNode n(1, Joint());
    n.BecomeLeader();
    AckFrom(n, {2, 3}, 1);
    CHECK(n->commit_index() == LogIndex(0));
    AckFrom(n, {4}, 1);
    CHECK(n->commit_index() == LogIndex(1));
  }
  SECTION("the outgoing half alone does not commit") {
    TestNode n(1, Joint());
    n.BecomeLeader();
    AckFrom(n, {4, 5}, 1);
    CHECK(n->commit_index() == LogIndex(0));
    AckFrom(n, {3}, 1);
    CHECK(n->commit_index() == LogIndex(1));
  }
  SECTION("a leader outside the outgoing half needs two of {1,4,5}") {
    TestNode n(2, Joint());
    n.BecomeLeader();
    AckFrom(n, {1, 3}, 1);  // incoming: all; outgoing: 1 of 3
    CHECK(n->commit_index() == LogIndex(0));
    AckFrom(n, {5}, 1);
    CHECK(n->commit_index() == LogIndex(1));
  }
  SECTION("later entries too") {
    TestNode n(1, Joint());
    n.BecomeLeader();
    AckFrom(n, {2, 4}, 1);
    REQUIRE(n->commit_index() == LogIndex(1));
    REQUIRE(n->Propose("a").ok());
    n.Drain();
    AckFrom(n, {4, 5}, 2);
    CHECK(n->commit_index() == LogIndex(1));
    AckFrom(n, {2}, 2);
    CHECK(n->commit_index() == LogIndex(2));
  }
}

TEST_CASE("joint: an election needs a majority of each half", "[config]") {
  SECTION("vote requests go to both halves") {
    TestNode n(1, Joint());
    n->Campaign();
    CHECK(Recipients(n.Drain()) == Ids{2, 3, 4, 5});
  }
  SECTION("grants from the incoming half alone do not win") {
    TestNode n(1, Joint());
    n->Campaign();
    n.Drain();
    n.Step(Msg(2, 1, 1, Grant()));
    n.Step(Msg(3, 1, 1, Grant()));
    CHECK(n->role() == Role::kCandidate);
    n.Step(Msg(5, 1, 1, Grant()));
    CHECK(n->role() == Role::kLeader);
  }
  SECTION("grants from the outgoing half alone do not win") {
    TestNode n(1, Joint());
    n->Campaign();
    n.Drain();
    n.Step(Msg(4, 1, 1, Grant()));
    n.Step(Msg(5, 1, 1, Grant()));
    CHECK(n->role() == Role::kCandidate);
    n.Step(Msg(2, 1, 1, Grant()));
    CHECK(n->role() == Role::kLeader);
  }
  SECTION("losing one half loses the election") {
    TestNode n(1, Joint());
    n->Campaign();
    n.Drain();
    n.Step(Msg(2, 1, 1, Grant()));
    n.Step(Msg(3, 1, 1, Grant()));
    n.Step(Msg(4, 1, 1, Reject()));
    CHECK(n->role() == Role::kCandidate);
    n.Step(Msg(5, 1, 1, Reject()));
    CHECK(n->role() == Role::kFollower);
    CHECK(n->term() == Term(1));
  }
  SECTION("pre-votes too") {
    TestNode n(1, Joint({.pre_vote = true}));
    n->Campaign();
    REQUIRE(n->role() == Role::kPreCandidate);
    n.Drain();
    n.Step(Msg(2, 1, 1, Grant(true)));
    n.Step(Msg(3, 1, 1, Grant(true)));
    CHECK(n->role() == Role::kPreCandidate);
    n.Step(Msg(4, 1, 1, Grant(true)));
    CHECK(n->role() == Role::kCandidate);
    CHECK(n->term() == Term(1));
  }
}

TEST_CASE("joint: a read is confirmed only by a quorum of each half",
          "[config]") {
  TestNode n(1, Joint());
  n.BecomeLeader();
  AckFrom(n, {2, 3, 4, 5}, 1);
  REQUIRE(n->commit_index() == LogIndex(1));
  SECTION("incoming half first") {
    REQUIRE(n->ReadIndex(1).ok());
    const uint64_t round = TakeReadRound(n, 4);
    AnswerRound(n, {2, 3}, round);
    CHECK(n.reads().empty());
    AnswerRound(n, {4}, round);
    REQUIRE(n.reads().size() == 1);
    CHECK(n.reads()[0] == ReadState{1, LogIndex(1)});
  }
  SECTION("outgoing half first") {
    REQUIRE(n->ReadIndex(2).ok());
    const uint64_t round = TakeReadRound(n, 4);
    AnswerRound(n, {4, 5}, round);
    CHECK(n.reads().empty());
    AnswerRound(n, {3}, round);
    REQUIRE(n.reads().size() == 1);
    CHECK(n.reads()[0] == ReadState{2, LogIndex(1)});
  }
}

TEST_CASE("joint: CheckQuorum needs a live quorum in each half", "[config]") {
  TestNode n(1, Joint({.check_quorum = true}));
  n.BecomeLeader();
  SECTION("only the incoming half answers") {
    TickWithAnswers(n, {2, 3}, 10);
    CHECK(n->role() == Role::kFollower);
  }
  SECTION("only the outgoing half answers") {
    TickWithAnswers(n, {4, 5}, 10);
    CHECK(n->role() == Role::kFollower);
  }
  SECTION("one of each half answers") {
    TickWithAnswers(n, {2, 4}, 35);
    CHECK(n->role() == Role::kLeader);
  }
}

TEST_CASE("joint: a node only in the outgoing half is still a voter",
          "[config]") {
  SECTION("it campaigns and wins with a majority of each half") {
    TestNode n(4, Joint());
    n.TickN(n->Status().election_timeout);
    REQUIRE(n->role() == Role::kCandidate);
    CHECK(Recipients(n.Drain()) == Ids{1, 2, 3, 5});
    n.Step(Msg(5, 4, 1, Grant()));  // outgoing {4,5}: won
    n.Step(Msg(2, 4, 1, Grant()));  // incoming {2}: pending
    CHECK(n->role() == Role::kCandidate);
    n.Step(Msg(3, 4, 1, Grant()));
    CHECK(n->role() == Role::kLeader);
  }
  SECTION("its vote counts for a candidate, its ack for commit") {
    TestNode n(1, Joint());
    n->Campaign();
    n.Drain();
    n.Step(Msg(2, 1, 1, Grant()));
    n.Step(Msg(4, 1, 1, Grant()));
    REQUIRE(n->role() == Role::kLeader);
    n.Drain();
    AckFrom(n, {2}, 1);
    CHECK(n->commit_index() == LogIndex(0));
    AckFrom(n, {5}, 1);
    CHECK(n->commit_index() == LogIndex(1));
  }
  SECTION("leadership may be transferred to it") {
    TestNode n(1, Joint());
    n.BecomeLeader();
    CHECK(n->TransferLeadership(NodeId(4)).ok());
    CHECK(n->Status().lead_transferee == NodeId(4));
  }
}

// ===========================================================================
// A configuration restored from an installed snapshot.

TEST_CASE(
    "snapshot configuration: a voter made a learner by a snapshot stops "
    "campaigning, also after a restart",
    "[config]") {
  const Configuration demoted = MakeConfiguration({1, 2}, {3});
  TestNode n(3, {.voters = {1, 2, 3}, .hard_state = {Term(2), {}, {}}});
  n.Step(Msg(1, 3, 2,
             InstallSnapshot{SnapshotMeta{LogIndex(5), Term(2), demoted}}));
  CHECK(n->configuration() == demoted);
  n.Drain();
  REQUIRE(n.snapshots().size() == 1);
  n.TickN(10 * n->Status().election_timeout);
  n->Campaign();
  n.Step(Msg(1, 3, 2, TimeoutNow{}));
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(2));
  CHECK_FALSE(HasRequestVote(n.Drain()));

  auto stored = n.store().LoadInitialState();
  REQUIRE(stored.ok());
  CHECK(stored->configuration == demoted);
  Config config;
  config.id = NodeId(3);
  config.applied = LogIndex(5);
  auto restarted = Node::Create(config, n.store());
  REQUIRE(restarted.ok());
  CHECK((*restarted)->configuration() == demoted);
  for (int i = 0; i < 100; ++i) (*restarted)->Tick();
  (*restarted)->Campaign();
  CHECK((*restarted)->role() == Role::kFollower);
  CHECK((*restarted)->term() == Term(2));
}

TEST_CASE(
    "snapshot configuration: a learner made a voter by a snapshot campaigns",
    "[config]") {
  TestNode n(
      4,
      {.voters = {1, 2, 3}, .learners = {4}, .hard_state = {Term(2), {}, {}}});
  n.TickN(2 * n->Status().election_timeout);
  REQUIRE(n->role() == Role::kFollower);
  n.Step(Msg(1, 4, 2,
             InstallSnapshot{SnapshotMeta{LogIndex(5), Term(2),
                                          MakeConfiguration({1, 2, 3, 4})}}));
  n.Drain();
  n.TickN(n->Status().election_timeout);
  CHECK(n->role() == Role::kCandidate);
  CHECK(n->term() == Term(3));
  CHECK(Recipients(n.Drain()) == Ids{1, 2, 3});
}

TEST_CASE(
    "snapshot configuration: a follower that installs a joint configuration "
    "needs both halves to win",
    "[config]") {
  const Configuration joint = MakeJoint({1, 2, 3}, {1, 4, 5}, {6});
  TestNode n(2, {.voters = {1, 2, 3}, .hard_state = {Term(2), {}, {}}});
  n.Step(
      Msg(1, 2, 2, InstallSnapshot{SnapshotMeta{LogIndex(5), Term(2), joint}}));
  CHECK(n->configuration() == joint);
  n.Drain();
  n->Campaign();
  REQUIRE(n->role() == Role::kCandidate);
  CHECK(Recipients(n.Drain()) == Ids{1, 3, 4, 5});  // not learner 6
  n.Step(Msg(3, 2, 3, Grant()));  // incoming {2,3}: a majority of {1,2,3}
  CHECK(n->role() == Role::kCandidate);
  n.Step(Msg(4, 2, 3, Grant()));
  CHECK(n->role() == Role::kCandidate);
  n.Step(Msg(5, 2, 3, Grant()));
  REQUIRE(n->role() == Role::kLeader);
  // The new leader replicates to every node of the new configuration.
  for (uint64_t peer : Ids{1, 3, 4, 5, 6}) {
    CHECK(n->Status().peers.count(NodeId(peer)) != 0);
  }
  std::vector<Message> appends;
  for (const auto& [message, append] : OfType<AppendEntries>(n.Drain())) {
    appends.push_back(message);
  }
  CHECK(Recipients(appends) == Ids{1, 3, 4, 5, 6});
}

// Figure 13 step 6: the follower's log already holds the snapshot's last
// entry. The snapshot's configuration (the configuration as of its index,
// past the follower's commit) is the cluster's and must be taken; since a
// configuration is persisted only with a snapshot, the follower installs the
// snapshot (dropping its log) when the configurations differ.
TEST_CASE(
    "snapshot configuration: a snapshot whose last entry the follower holds "
    "still brings its configuration",
    "[config]") {
  const Configuration demoted = MakeConfiguration({1, 2}, {3});
  TestNode n(3, {.log_terms = {1, 1, 2, 2, 2},
                 .hard_state = {Term(2), {}, LogIndex(1)}});
  n.Drain();
  n.Step(Msg(1, 3, 2,
             InstallSnapshot{SnapshotMeta{LogIndex(3), Term(2), demoted}}));
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(3));
  CHECK(n->configuration() == demoted);
  n.TickN(10 * n->Status().election_timeout);
  CHECK(n->role() == Role::kFollower);
  CHECK(n->term() == Term(2));
}

// ===========================================================================
// Per-term state: nothing of one leadership leaks into the next.

// A leader of term 1 that hears of term `term` from node 2 and steps down.
void StepDown(TestNode& n, uint64_t term) {
  n.Step(Msg(2, 1, term, Heartbeat{LogIndex(0), 0}));
  REQUIRE(n->role() == Role::kFollower);
  REQUIRE(n->term() == Term(term));
  n.Drain();
}

TEST_CASE("per-term reset: a leadership transfer does not survive the term",
          "[config]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose("a").ok());
  n.Drain();  // 3 never acknowledges index 2: the transfer stays pending
  REQUIRE(n->TransferLeadership(NodeId(3)).ok());
  n.Drain();
  REQUIRE(n->Status().lead_transferee == NodeId(3));
  StepDown(n, 2);
  CHECK(n->Status().lead_transferee == kNoNode);
  n.BecomeLeader();  // term 3
  CHECK(n->Status().lead_transferee == kNoNode);
  auto id = n->Propose("b");
  REQUIRE(id.ok());
  CHECK(id->term == Term(3));
  n.Drain();
  // 3 catching up with the new leader's whole log gets no TimeoutNow.
  n.Step(Msg(3, 1, 3, Ack(id->index.value())));
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  n.TickN(25);
  CHECK(OfType<TimeoutNow>(n.Drain()).empty());
  CHECK(n->role() == Role::kLeader);
  CHECK(n->term() == Term(3));
}

TEST_CASE(
    "per-term reset: the uncommitted-bytes budget starts empty in each "
    "leadership",
    "[config]") {
  TestNode n(1, {.max_uncommitted_bytes = 100});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose(std::string(200, 'x')).ok());  // 224 bytes, never acked
  CHECK(absl::IsUnavailable(n->Propose("y").status()));
  n.Drain();
  StepDown(n, 2);
  n.BecomeLeader();  // term 3, no-op at 3
  REQUIRE(n->Status().last_index == LogIndex(3));
  // The previous term's 224 bytes are not charged to this leadership.
  REQUIRE(n->Propose(std::string(40, 'a')).ok());  // 64, index 4
  REQUIRE(n->Propose(std::string(10, 'b')).ok());  // 98, index 5
  CHECK(absl::IsUnavailable(n->Propose("c").status()));
  n.Drain();
  // The previous term's entry commits with this term's no-op; only this
  // term's batches are released, each once.
  AckFrom(n, {2}, 3);
  REQUIRE(n->commit_index() == LogIndex(3));
  CHECK(absl::IsUnavailable(n->Propose("c").status()));
  AckFrom(n, {2}, 5);
  REQUIRE(n->commit_index() == LogIndex(5));
  CHECK(n->Propose(std::string(60, 'd')).ok());          // 84
  CHECK(absl::IsUnavailable(n->Propose("e").status()));  // 84 + 25 > 100
}

TEST_CASE(
    "per-term reset: inflights and snapshot state of followers start over",
    "[config]") {
  TestNode n(1, {});
  CommitFourWithoutFollower3(n);
  const SnapshotMeta snapshot{LogIndex(4), Term(1),
                              MakeConfiguration({1, 2, 3})};
  REQUIRE(n.store().SetSnapshot(snapshot).ok());
  REQUIRE(n.store().Compact(LogIndex(4)).ok());
  // Follower 3 (matched at 1) needs the snapshot.
  Only<InstallSnapshot>(Follower3RejectsBackToTheNoOp(n));
  REQUIRE(n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  // Follower 2 has entries in flight.
  REQUIRE(n->Propose("d").ok());
  n.Drain();
  REQUIRE(n->Propose("e").ok());
  n.Drain();
  REQUIRE(n->Status().peers.at(NodeId(2)).state == ProgressState::kReplicate);
  REQUIRE(n->Status().peers.at(NodeId(2)).inflight_messages == 2);

  StepDown(n, 2);
  CHECK(n->Status().peers.count(NodeId(2)) == 0);
  const std::vector<Message> sent = WinElection(n);  // term 3, no-op at 7
  REQUIRE(n->Status().last_index == LogIndex(7));
  for (uint64_t peer : Ids{2, 3}) {
    INFO("follower " << peer);
    const std::optional<PeerStatus> progress = n->Status().Peer(NodeId(peer));
    REQUIRE(progress.has_value());
    CHECK(progress->state == ProgressState::kProbe);
    CHECK(progress->match == LogIndex(0));
    CHECK(progress->next == LogIndex(7));
    CHECK(progress->inflight_messages == 0);
    CHECK(progress->pending_snapshot == LogIndex(0));
    // Each follower gets a probe carrying the new no-op, snapshot state or
    // not.
    auto [to, append] = Only<AppendEntries>(To(sent, peer));
    CHECK(to.term == Term(3));
    CHECK(append.prev_log_index == LogIndex(6));
    REQUIRE(append.entries.size() == 1);
    CHECK(append.entries[0].index == LogIndex(7));
  }
  // A late report of the previous term's snapshot changes nothing.
  n->ReportSnapshot(NodeId(3), true);
  CHECK(n->Status().peers.at(NodeId(3)).state == ProgressState::kProbe);
  CHECK(n->Status().peers.at(NodeId(3)).next == LogIndex(7));
  // The snapshot is sent again when this term's probe finds 3 behind.
  n.Step(Msg(3, 1, 3,
             AppendEntriesResponse{false, LogIndex(6), LogIndex(1), Term(1)}));
  auto [to3, install] = Only<InstallSnapshot>(To(n.Drain(), 3));
  CHECK(to3.term == Term(3));
  CHECK(install.snapshot == snapshot);
  CHECK(n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  // And proposals are accepted.
  CHECK(n->Propose("f").ok());
}

TEST_CASE("per-term reset: pending reads do not leak across leaderships",
          "[config]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  // Term 1: read 1 in a round never answered, read 2 (forwarded by 3) waiting
  // for the next round.
  REQUIRE(n->ReadIndex(1).ok());
  const uint64_t old_round = TakeReadRound(n, 2);
  n.Step(Msg(3, 1, 1, ReadIndexRequest{2}));
  n.Drain();
  StepDown(n, 2);
  // Term 3: read 3 parked until the no-op commits, which never happens.
  n.BecomeLeader();
  REQUIRE(n->ReadIndex(3).ok());
  n.Drain();
  StepDown(n, 4);
  // Term 5.
  n.BecomeLeader();
  const LogIndex noop = n->Status().last_index;
  n.AckAll();
  REQUIRE(n->commit_index() == noop);
  std::vector<Message> sent;
  // Answers to the old round confirm nothing in this term.
  n.Step(Msg(2, 1, 5, HeartbeatResponse{old_round}));
  n.Step(Msg(3, 1, 5, HeartbeatResponse{old_round}));
  std::vector<Message> more = n.Drain();
  sent.insert(sent.end(), more.begin(), more.end());
  n.TickN(3);
  more = n.Drain();
  sent.insert(sent.end(), more.begin(), more.end());
  CHECK(n.reads().empty());
  // A new read is confirmed alone, by its own round.
  REQUIRE(n->ReadIndex(4).ok());
  const uint64_t round = TakeReadRound(n, 2);
  CHECK(round > old_round);
  n.Step(Msg(2, 1, 5, HeartbeatResponse{round}));
  more = n.Drain();
  sent.insert(sent.end(), more.begin(), more.end());
  REQUIRE(n.reads().size() == 1);
  CHECK(n.reads()[0] == ReadState{4, noop});
  CHECK(OfType<ReadIndexResponse>(sent).empty());
}

// ===========================================================================
// An idle cluster repairs a lost message with heartbeats alone.

TEST_CASE("idle cluster: a lost AppendEntries is repaired by heartbeats",
          "[config]") {
  using driftwood::testing::InteractionEnv;
  const std::vector<NodeId> all = {NodeId(1), NodeId(2), NodeId(3)};
  InteractionEnv env;
  Config base;
  base.election_ticks = 10;
  base.heartbeat_ticks = 1;
  base.seed = 3;
  env.AddNodes(all, MakeConfiguration({1, 2, 3}), base);
  env.node(NodeId(1)).Campaign();
  env.Stabilize(all);
  REQUIRE(env.node(NodeId(1)).role() == Role::kLeader);
  const Term term = env.node(NodeId(1)).term();
  auto id = env.node(NodeId(1)).Propose("x");
  REQUIRE(id.ok());

  SECTION("the entry is lost") {
    env.ProcessReady(NodeId(1));
    env.DropMessages(NodeId(3));
    env.Stabilize({NodeId(1), NodeId(2)});
    env.DropMessages(NodeId(3));  // the commit broadcast is lost too
    REQUIRE(env.node(NodeId(3)).Status().last_index < id->index);
  }
  SECTION("only the commit index is lost") {
    env.ProcessReady(NodeId(1));
    env.Stabilize({NodeId(2), NodeId(3)});
    env.DeliverMessages(NodeId(1));
    env.ProcessReady(NodeId(1));  // the commit broadcast
    env.DropMessages(NodeId(3));
    env.Stabilize({NodeId(1), NodeId(2)});
    env.DropMessages(NodeId(3));
    REQUIRE(env.node(NodeId(3)).Status().last_index == id->index);
  }
  REQUIRE(env.node(NodeId(1)).commit_index() == id->index);
  REQUIRE(env.node(NodeId(3)).commit_index() < id->index);

  // No proposals from here on: only ticks.
  int ticks = 0;
  while (ticks < 10 && env.node(NodeId(3)).commit_index() < id->index) {
    for (NodeId node : all) env.node(node).Tick();
    env.Stabilize(all);
    ++ticks;
  }
  INFO("ticks " << ticks);
  CHECK(ticks <= 2);
  CHECK(env.node(NodeId(3)).commit_index() == id->index);
  CHECK(env.node(NodeId(3)).Status().last_index == id->index);
  REQUIRE_FALSE(env.applied(NodeId(3)).empty());
  CHECK(env.applied(NodeId(3)).back().data == "x");
  for (NodeId node : all) {
    CHECK(env.node(node).term() == term);
    CHECK(env.node(node).leader_id() == NodeId(1));
  }
}

}  // namespace
}  // namespace driftwood::raft
