// Regression tests for the Raft correctness pitfalls that other projects hit
// (docs/design.md "Pitfalls"). Each test is named after the pitfall it
// reconstructs. Nodes are driven only through their inputs and every Ready is
// performed by a driver that checks the driver contract (docs/design.md "The
// driver contract") as it goes; the randomized cases print their seed on
// failure.
#include <algorithm>
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
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

using internal::RaftLog;

// Records a failure without adding an assertion for every success (the
// randomized cases check hundreds of thousands of conditions).
#define QUIET_CHECK(condition, description)                          \
  do {                                                               \
    if (!(condition)) FAIL_CHECK(#condition << ": " << description); \
  } while (false)

// Several TestNodes and the messages between them. Messages wait in one queue
// until delivered; a message to or from an isolated node is dropped when
// delivered. The driver reports delivered snapshots to the leader.
class Network {
 public:
  Network(const Ids& ids, TestNode::Options options) : ids_(ids) {
    options.voters = ids;
    for (uint64_t id : ids) {
      nodes_.emplace(id, std::make_unique<TestNode>(id, options));
    }
  }

  TestNode& operator[](uint64_t id) { return *nodes_.at(id); }
  const Ids& ids() const { return ids_; }
  std::deque<Message>& queue() { return queue_; }

  void Process(uint64_t id) {
    for (Message& message : nodes_.at(id)->Drain()) {
      queue_.push_back(std::move(message));
    }
  }
  void ProcessAll() {
    for (uint64_t id : ids_) Process(id);
  }
  bool Cut(const Message& message) const {
    return isolated_.count(message.from.value()) != 0 ||
           isolated_.count(message.to.value()) != 0;
  }
  // Delivers queued message `i` (dropping it if cut off); returns whether it
  // reached its receiver.
  bool Deliver(size_t i, bool report_snapshot = true) {
    const Message message = queue_[i];
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(i));
    if (Cut(message)) {
      Dropped(message);
      return false;
    }
    (*this)[message.to.value()].Step(message);
    if (report_snapshot &&
        std::holds_alternative<InstallSnapshot>(message.payload)) {
      (*this)[message.from.value()]->ReportSnapshot(message.to, true);
    }
    return true;
  }
  void Drop(size_t i) {
    const Message message = queue_[i];
    queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(i));
    Dropped(message);
  }
  // Processes and delivers until nothing is left to do.
  void Stabilize() {
    for (int round = 0; round < 1000; ++round) {
      ProcessAll();
      if (queue_.empty()) return;
      while (!queue_.empty()) Deliver(0);
    }
    FAIL("the network did not stabilize");
  }
  // Node `id` campaigns and wins, with every message delivered.
  void Elect(uint64_t id) {
    (*this)[id]->Campaign();
    Stabilize();
    REQUIRE((*this)[id]->role() == Role::kLeader);
  }
  void TickAll(uint64_t ticks = 1) {
    for (uint64_t id : ids_) (*this)[id].TickN(ticks);
  }
  void Isolate(uint64_t id) { isolated_.insert(id); }
  void Heal() { isolated_.clear(); }
  bool isolated(uint64_t id) const { return isolated_.count(id) != 0; }

  // The nodes that currently believe they lead, with their terms.
  std::vector<std::pair<uint64_t, Term>> Leaders() {
    std::vector<std::pair<uint64_t, Term>> leaders;
    for (uint64_t id : ids_) {
      if ((*this)[id]->role() == Role::kLeader) {
        leaders.emplace_back(id, (*this)[id]->term());
      }
    }
    return leaders;
  }

 private:
  // What the driver of the sender learns from its transport.
  void Dropped(const Message& message) {
    TestNode& sender = (*this)[message.from.value()];
    if (std::holds_alternative<InstallSnapshot>(message.payload)) {
      sender->ReportSnapshot(message.to, false);
    } else if (std::holds_alternative<AppendEntries>(message.payload)) {
      sender->ReportUnreachable(message.to);
    }
  }

  Ids ids_;
  std::map<uint64_t, std::unique_ptr<TestNode>> nodes_;
  std::deque<Message> queue_;
  std::set<uint64_t> isolated_;
};

// ---------------------------------------------------------------------------
// A seeded randomized cluster: ticks, deliveries out of order, drops,
// duplicates, partitions, proposals, reads, transfers and compaction, with the
// safety invariants checked after every step from an all-seeing view:
//   - Election Safety: at most one leader per term (docs/design.md pitfall 18);
//   - State Machine Safety: every node applies the same entry at an index;
//   - Leader Completeness: a leader of a term after an entry's commit holds it;
//   - a read is answered with an index at or past every commit that
//     completed before it was asked (items 3 and 4);
//   - commit indexes never decrease;
//   - every Ready honours the driver contract (item 10, in TestNode::Finish).

struct Profile {
  uint64_t nodes = 3;
  bool pre_vote = true;
  bool check_quorum = true;
  uint64_t drop_percent = 5;
  uint64_t duplicate_percent = 0;
  bool reorder = true;
  bool compact = false;
  // Per step: the chance (in percent) that a partition starts or heals.
  uint64_t partition_percent = 1;
  uint64_t steps = 4000;
};

struct Coverage {
  uint64_t committed = 0;
  uint64_t leader_terms = 0;
  uint64_t reads = 0;
  uint64_t snapshots = 0;
};

class Simulation {
 public:
  Simulation(uint64_t seed, const Profile& profile)
      : profile_(profile),
        rng_(seed),
        network_(MakeIds(profile.nodes), MakeOptions(seed, profile)) {}

  Coverage Run() {
    for (uint64_t step = 0; step < profile_.steps; ++step) {
      RandomStep();
      Observe();
    }
    // Heal and let the cluster settle without faults.
    network_.Heal();
    for (int round = 0; round < 50; ++round) {
      network_.TickAll();
      network_.ProcessAll();
      while (!network_.queue().empty()) network_.Deliver(0);
      network_.ProcessAll();
      Observe();
    }
    Coverage coverage;
    coverage.committed = committed_.size();
    coverage.leader_terms = leaders_.size();
    coverage.reads = reads_answered_;
    for (uint64_t id : network_.ids()) {
      coverage.snapshots += network_[id].snapshots().size();
    }
    return coverage;
  }

 private:
  struct Committed {
    Entry entry;
    // The lowest term of a node seen applying it: the entry was committed in
    // this term or earlier, so every leader of a later term must hold it.
    Term min_term;
  };

  static Ids MakeIds(uint64_t count) {
    Ids ids;
    for (uint64_t id = 1; id <= count; ++id) ids.push_back(id);
    return ids;
  }
  static TestNode::Options MakeOptions(uint64_t seed, const Profile& profile) {
    TestNode::Options options;
    options.pre_vote = profile.pre_vote;
    options.check_quorum = profile.check_quorum;
    options.snapshot_timeout_ticks = 30;
    options.seed = seed;
    return options;
  }

  uint64_t Pick(uint64_t n) { return rng_() % n; }
  bool Chance(uint64_t percent) { return rng_() % 100 < percent; }
  uint64_t AnyNode() { return network_.ids()[Pick(network_.ids().size())]; }

  void RandomStep() {
    if (Chance(profile_.partition_percent)) {
      const auto leaders = network_.Leaders();
      if (Chance(50)) {
        network_.Heal();
      } else if (!leaders.empty() && Chance(50)) {
        network_.Isolate(leaders[Pick(leaders.size())].first);
      } else {
        network_.Isolate(AnyNode());
      }
    }
    const uint64_t action = Pick(100);
    if (action < 25) {
      network_[AnyNode()]->Tick();
    } else if (action < 60) {
      DeliverOne();
    } else if (action < 75) {
      network_.Process(AnyNode());
    } else if (action < 82) {
      for (auto [id, term] : network_.Leaders()) {
        (void)network_[id]->Propose(absl::StrCat("p", ++proposals_));
      }
    } else if (action < 86) {
      Read(AnyNode());
    } else if (action < 88) {
      if (profile_.compact) Compact(AnyNode());
    } else if (action < 89) {
      for (auto [id, term] : network_.Leaders()) {
        (void)network_[id]->TransferLeadership(NodeId(AnyNode()));
      }
    } else if (action < 90) {
      network_[AnyNode()]->Campaign();
    } else {
      network_.ProcessAll();
    }
  }

  void DeliverOne() {
    std::deque<Message>& queue = network_.queue();
    if (queue.empty()) return;
    while (queue.size() > 500) network_.Drop(0);
    const size_t i = profile_.reorder ? Pick(queue.size()) : 0;
    if (Chance(profile_.drop_percent)) {
      network_.Drop(i);
      return;
    }
    if (Chance(profile_.duplicate_percent)) {
      const Message copy = queue[i];
      queue.push_back(copy);
    }
    network_.Deliver(i, /*report_snapshot=*/Chance(70));
  }

  void Read(uint64_t id) {
    const uint64_t request_id = ++read_ids_;
    LogIndex required;
    for (uint64_t node : network_.ids()) {
      required = std::max(required, network_[node]->commit_index());
    }
    if (network_[id]->ReadIndex(request_id).ok()) {
      read_required_[{id, request_id}] = required;
    }
  }

  void Compact(uint64_t id) {
    TestNode& node = network_[id];
    const LogIndex applied = node->applied_index();
    if (applied < node.store().FirstIndex()) return;
    absl::StatusOr<Term> term = node.store().TermAt(applied);
    REQUIRE(term.ok());
    REQUIRE(
        node.store()
            .SetSnapshot(SnapshotMeta{applied, *term, node->configuration()})
            .ok());
    REQUIRE(node.store().Compact(applied).ok());
  }

  void Observe() {
    for (uint64_t id : network_.ids()) {
      TestNode& node = network_[id];
      INFO("node " << node->DebugString());
      QUIET_CHECK(node->commit_index() >= commit_seen_[id],
                  "commit moved backwards from " << commit_seen_[id].value());
      commit_seen_[id] = node->commit_index();
      if (node->role() == Role::kLeader) {
        auto [it, inserted] = leaders_.emplace(node->term().value(), id);
        QUIET_CHECK(it->second == id, "two leaders in term "
                                          << node->term().value() << ": "
                                          << it->second << " and " << id);
      }
      const std::vector<Entry>& applied = node.applied();
      for (size_t i = applied_seen_[id]; i < applied.size(); ++i) {
        const Entry& entry = applied[i];
        auto [it, inserted] = committed_.emplace(
            entry.index.value(), Committed{entry, node->term()});
        QUIET_CHECK(it->second.entry == entry,
                    "node " << id << " applied " << Describe(entry)
                            << " where another applied "
                            << Describe(it->second.entry));
        it->second.min_term = std::min(it->second.min_term, node->term());
      }
      applied_seen_[id] = applied.size();
      const std::vector<SnapshotMeta>& snapshots = node.snapshots();
      for (size_t i = snapshots_seen_[id]; i < snapshots.size(); ++i) {
        auto it = committed_.find(snapshots[i].index.value());
        if (it != committed_.end()) {
          QUIET_CHECK(it->second.entry.term == snapshots[i].term,
                      "snapshot " << Describe(snapshots[i])
                                  << " disagrees with the applied entry "
                                  << Describe(it->second.entry));
        }
      }
      snapshots_seen_[id] = snapshots.size();
      const std::vector<ReadState>& reads = node.reads();
      for (size_t i = reads_seen_[id]; i < reads.size(); ++i) {
        auto it = read_required_.find({id, reads[i].request_id});
        QUIET_CHECK(it != read_required_.end(),
                    "unknown read " << reads[i].request_id);
        if (it == read_required_.end()) continue;
        QUIET_CHECK(reads[i].index >= it->second,
                    "read " << reads[i].request_id << " at index "
                            << reads[i].index.value()
                            << " misses a write committed through "
                            << it->second.value() << " before it was asked");
        // A duplicated ReadIndexResponse answers the same read twice; each
        // answer must still be current enough.
        ++reads_answered_;
      }
      reads_seen_[id] = reads.size();
    }
    for (auto [id, term] : network_.Leaders()) {
      const RaftLog& log =
          internal::NodeInternals::Log(*network_[id].operator->());
      for (const auto& [index, committed] : committed_) {
        if (term <= committed.min_term) continue;
        if (LogIndex(index) < log.first_index()) continue;
        QUIET_CHECK(log.MaybeTermAt(LogIndex(index)) == committed.entry.term,
                    "leader " << id << " of term " << term.value()
                              << " lacks committed entry "
                              << Describe(committed.entry));
      }
    }
  }

  Profile profile_;
  std::mt19937_64 rng_;
  Network network_;
  uint64_t proposals_ = 0;
  uint64_t read_ids_ = 0;
  uint64_t reads_answered_ = 0;
  std::map<uint64_t, uint64_t> leaders_;     // term -> leader
  std::map<uint64_t, Committed> committed_;  // index -> entry
  std::map<std::pair<uint64_t, uint64_t>, LogIndex> read_required_;
  std::map<uint64_t, LogIndex> commit_seen_;
  std::map<uint64_t, size_t> applied_seen_;
  std::map<uint64_t, size_t> snapshots_seen_;
  std::map<uint64_t, size_t> reads_seen_;
};

// Runs `seeds` randomized clusters of `profile`; returns the summed coverage.
Coverage RunSeeds(const Profile& profile, uint64_t first_seed, uint64_t seeds) {
  Coverage total;
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    INFO("seed " << seed << " (rerun this case; the seeds are fixed)");
    Coverage coverage = Simulation(seed, profile).Run();
    total.committed += coverage.committed;
    total.leader_terms += coverage.leader_terms;
    total.reads += coverage.reads;
    total.snapshots += coverage.snapshots;
  }
  return total;
}

// ===========================================================================
// Item 1: committing entries from previous terms by counting replicas.

TEST_CASE(
    "pitfall 1: a leader never commits a previous-term entry by counting "
    "(LogCabin #44)",
    "[regression]") {
  // Figure 8: S1 leads term 4 holding 2/2 from its term-2 leadership; S5 holds
  // 3/2 from term 3. Counting replicas of 2/2 would commit an entry that S5
  // can still overwrite.
  TestNode s1(1, {.voters = {1, 2, 3, 4, 5},
                  .log_terms = {1, 2},
                  .hard_state = {Term(3), {}, LogIndex(1)}});
  s1.BecomeLeader();  // term 4, no-op at 3
  REQUIRE(s1->term() == Term(4));
  // Every follower holds 2/2 now; none has the no-op yet.
  for (uint64_t peer : Ids{2, 3, 4, 5}) s1.Step(Msg(peer, 1, 4, Ack(2)));
  for (uint64_t peer : Ids{2, 3, 4, 5}) {
    s1.Step(Msg(peer, 1, 4, HeartbeatResponse{0}));
  }
  s1.TickN(3);
  s1.Drain();
  CHECK(s1->commit_index() == LogIndex(1));
  // Why: S5 with 3/2 is more up to date than a voter holding 2/2, and could
  // win an election and overwrite index 2.
  TestNode voter(3, {.voters = {1, 2, 3, 4, 5},
                     .log_terms = {1, 2},
                     .hard_state = {Term(4), {}, LogIndex(1)}});
  voter.Step(Msg(5, 3, 5, RequestVote{LogIndex(2), Term(3), false, false}));
  auto [message, response] = Only<RequestVoteResponse>(voter.Drain());
  CHECK(response.granted);
  // Once the no-op of term 4 is on a majority, 2/2 commits with it.
  s1.Step(Msg(2, 1, 4, Ack(3)));
  CHECK(s1->commit_index() == LogIndex(1));
  s1.Step(Msg(3, 1, 4, Ack(3)));
  CHECK(s1->commit_index() == LogIndex(3));
}

TEST_CASE(
    "pitfall 1: the leader's own durable write does not commit a "
    "previous-term entry either",
    "[regression]") {
  // Commit is re-evaluated at Advance when the leader's own write completes;
  // that path must apply the same current-term rule.
  TestNode n(1,
             {.log_terms = {1, 1}, .hard_state = {Term(1), {}, LogIndex(1)}});
  n->Campaign();
  n.Drain();
  n.Step(Msg(2, 1, 2, RequestVoteResponse{true, false}));
  REQUIRE(n->role() == Role::kLeader);  // term 2, no-op 2/3 not yet durable
  n.Step(Msg(2, 1, 2, Ack(2)));         // follower 2 holds 1/2, not the no-op
  CHECK(n->commit_index() == LogIndex(1));
  Ready ready = n.Take();  // the leader's write of its no-op
  n.Finish(ready);
  CHECK(n->commit_index() == LogIndex(1));
  n.Step(Msg(2, 1, 2, Ack(3)));
  CHECK(n->commit_index() == LogIndex(3));
}

// ===========================================================================
// Item 3: ReadIndex requires a committed entry in the leader's current term.

TEST_CASE(
    "pitfall 3: a new leader answers reads only after its term's entry "
    "committed (etcd #7331)",
    "[regression]") {
  // The old leader committed through 3 and acknowledged the writes; the new
  // leader (node 2) holds 1..3 but only knows commit 1. Answering a read with
  // index 1 would return data from before acknowledged writes.
  TestNode n(
      2, {.log_terms = {1, 1, 1}, .hard_state = {Term(1), {}, LogIndex(1)}});
  n.BecomeLeader();  // term 2, no-op at 4
  REQUIRE(n->commit_index() == LogIndex(1));
  REQUIRE(n->ReadIndex(1).ok());
  n.Step(Msg(3, 2, 2, ReadIndexRequest{2}));  // a forwarded read
  // Heartbeats are answered, but no read round runs yet.
  n.TickN(2);
  for (uint64_t round : HeartbeatRounds(n.Drain())) CHECK(round == 0);
  n.Step(Msg(1, 2, 2, HeartbeatResponse{0}));
  n.Step(Msg(3, 2, 2, HeartbeatResponse{0}));
  std::vector<Message> sent = n.Drain();
  CHECK(OfType<ReadIndexResponse>(sent).empty());
  CHECK(n.reads().empty());
  // The no-op commits; the reads get index 4 >= 3, the old leader's commit.
  n.Step(Msg(1, 2, 2, Ack(4)));
  REQUIRE(n->commit_index() == LogIndex(4));
  std::vector<uint64_t> rounds = HeartbeatRounds(n.Drain());
  REQUIRE_FALSE(rounds.empty());
  n.Step(Msg(3, 2, 2, HeartbeatResponse{rounds.front()}));
  sent = n.Drain();
  REQUIRE(n.reads().size() == 1);
  CHECK(n.reads()[0] == ReadState{1, LogIndex(4)});
  auto [message, response] = Only<ReadIndexResponse>(sent);
  CHECK(message.to == NodeId(3));
  CHECK(response.index == LogIndex(4));
}

// ===========================================================================
// Item 4: read request identity and delayed or duplicated heartbeats.

TEST_CASE(
    "pitfall 4: a delayed answer to an older heartbeat round never confirms "
    "a later read (etcd #20418)",
    "[regression]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  // The caller reuses its request id for two reads, as etcd reused the
  // request context as the heartbeat context.
  REQUIRE(n->ReadIndex(5).ok());
  std::vector<uint64_t> first = HeartbeatRounds(n.Drain());
  REQUIRE(first.size() == 2);
  n.Step(Msg(2, 1, 1, HeartbeatResponse{first.front()}));
  n.Drain();
  REQUIRE(n.reads().size() == 1);
  // The answer of follower 3 to the first round is still in flight.
  REQUIRE(n->ReadIndex(5).ok());
  std::vector<uint64_t> second = HeartbeatRounds(n.Drain());
  REQUIRE(second.size() == 2);
  CHECK(second.front() != first.front());
  n.Step(Msg(3, 1, 1, HeartbeatResponse{first.front()}));
  n.Step(Msg(3, 1, 1, HeartbeatResponse{first.front()}));  // and a duplicate
  n.Drain();
  CHECK(n.reads().size() == 1);
  n.Step(Msg(3, 1, 1, HeartbeatResponse{second.front()}));
  n.Drain();
  CHECK(n.reads().size() == 2);
}

TEST_CASE(
    "pitfall 4: a deposed leader's read is never confirmed by answers from a "
    "newer term",
    "[regression]") {
  for (bool check_quorum : {false, true}) {
    INFO("check_quorum " << check_quorum);
    Network net({1, 2, 3}, {.check_quorum = check_quorum});
    net.Elect(1);
    REQUIRE(net[1]->commit_index() == LogIndex(1));
    // Node 1 is cut off; 2 and 3 elect a leader of a newer term.
    net.Isolate(1);
    uint64_t new_leader = 0;
    for (int tick = 0; tick < 100 && new_leader == 0; ++tick) {
      net[2].TickN(1);
      net[3].TickN(1);
      net.Stabilize();
      for (auto [id, term] : net.Leaders()) {
        if (id != 1) new_leader = id;
      }
    }
    REQUIRE(new_leader != 0);
    REQUIRE(net[1]->role() == Role::kLeader);  // it does not know yet
    net.Heal();
    REQUIRE(net[1]->ReadIndex(9).ok());
    net.Stabilize();
    CHECK(net[1].reads().empty());
    net.TickAll(3);
    net.Stabilize();
    CHECK(net[1].reads().empty());
    CHECK(net[1]->role() == Role::kFollower);
    CHECK(net[1]->leader_id() == NodeId(new_leader));
  }
}

// ===========================================================================
// Item 6: PreVote and CheckQuorum (leader stickiness) interplay.

// Ticks `node` until it starts a (pre-)election; returns what it sent.
std::vector<Message> TickUntilCampaign(TestNode& node) {
  for (int tick = 0; tick < 100; ++tick) {
    node->Tick();
    if (node->role() != Role::kFollower) return node.Drain();
  }
  FAIL("no campaign after 100 ticks");
  return {};
}

TEST_CASE(
    "pitfall 6: a pre-candidate forgets its leader so it grants other "
    "pre-votes (etcd #8334)",
    "[regression]") {
  // Leader 1 of term 1 crashed. Followers 2 and 3 both heard it recently.
  const TestNode::Options options{
      .pre_vote = true,
      .check_quorum = true,
      .log_terms = {1},
      .hard_state = {Term(1), NodeId(1), LogIndex(1)}};
  TestNode n2(2, options);
  TestNode n3(3, options);
  for (TestNode* n : {&n2, &n3}) {
    n->Step(Msg(1, n->id().value(), 1, Heartbeat{LogIndex(1), 0}));
    n->Drain();
  }
  // 3 times out first. 2 still hears its leader's lease and ignores the
  // pre-vote (etcd prevote_checkquorum.txt).
  auto from3 = To(TickUntilCampaign(n3), 2);
  REQUIRE(n3->role() == Role::kPreCandidate);
  CHECK(n3->leader_id() == kNoNode);
  CHECK(n3->term() == Term(1));
  auto [pre_vote3, request3] = Only<RequestVote>(from3);
  REQUIRE(request3.pre_vote);
  n2.Step(pre_vote3);
  CHECK(n2.Drain().empty());
  // 2 times out next. 3, a pre-candidate that forgot leader 1, grants it:
  // otherwise both would refuse each other forever.
  auto from2 = To(TickUntilCampaign(n2), 3);
  REQUIRE(n2->role() == Role::kPreCandidate);
  auto [pre_vote2, request2] = Only<RequestVote>(from2);
  n3.Step(pre_vote2);
  auto [grant_message, grant] = Only<RequestVoteResponse>(n3.Drain());
  CHECK(grant.granted);
  CHECK(grant.pre_vote);
  CHECK(grant_message.term == Term(2));
  CHECK(n3->term() == Term(1));  // a pre-vote changes no state
  n2.Step(grant_message);
  REQUIRE(n2->role() == Role::kCandidate);
  auto [vote_message, vote] = Only<RequestVote>(To(n2.Drain(), 3));
  CHECK_FALSE(vote.pre_vote);
  n3.Step(vote_message);
  auto [answer, granted] = Only<RequestVoteResponse>(n3.Drain());
  CHECK(granted.granted);
  n2.Step(answer);
  CHECK(n2->role() == Role::kLeader);
  CHECK(n2->term() == Term(2));
}

TEST_CASE(
    "pitfall 6: with PreVote and CheckQuorum a partitioned leader steps down "
    "and the rest elect a new one",
    "[regression]") {
  Network net({1, 2, 3}, {.pre_vote = true, .check_quorum = true});
  net.Elect(1);
  net.Isolate(1);
  bool stepped_down = false;
  for (int tick = 0; tick < 100; ++tick) {
    net.TickAll();
    net.Stabilize();
    if (net[1]->role() != Role::kLeader) stepped_down = true;
    if (stepped_down && !net.Leaders().empty()) break;
  }
  CHECK(stepped_down);
  auto leaders = net.Leaders();
  REQUIRE(leaders.size() == 1);
  CHECK(leaders[0].first != 1);
  CHECK(leaders[0].second >= Term(2));
  // The isolated node's pre-votes never succeed, so its term stays put.
  CHECK(net[1]->term() == Term(1));
  net.Heal();
  net.TickAll();
  net.Stabilize();
  CHECK(net[1]->term() == Term(2));
  CHECK(net[1]->leader_id() == NodeId(leaders[0].first));
  CHECK(net.Leaders() == leaders);
}

TEST_CASE(
    "pitfall 6: a granted pre-vote carries the request's term and changes no "
    "term (canonical/raft #279)",
    "[regression]") {
  // The voter answers with the term the pre-candidate would campaign in, so
  // the answer is not dropped as stale, and keeps its own term.
  TestNode voter(2, {.pre_vote = true, .hard_state = {Term(1), {}, {}}});
  voter.Step(Msg(1, 2, 2, RequestVote{LogIndex(0), Term(0), true, false}));
  auto [message, response] = Only<RequestVoteResponse>(voter.Drain());
  CHECK(response.granted);
  CHECK(message.term == Term(2));
  CHECK(voter->term() == Term(1));
  // A granted pre-vote answer arriving late at a node that is no longer a
  // pre-candidate does not move it into the future term.
  TestNode late(1, {.pre_vote = true, .hard_state = {Term(1), {}, {}}});
  late.Step(Msg(2, 1, 2, RequestVoteResponse{true, true}));
  CHECK(late->term() == Term(1));
  CHECK(late->role() == Role::kFollower);
  CHECK(late.Drain().empty());
}

TEST_CASE(
    "pitfall 6: a refused pre-vote carries the voter's newer term and the "
    "pre-candidate adopts it",
    "[regression]") {
  TestNode voter(2, {.pre_vote = true, .hard_state = {Term(5), {}, {}}});
  voter.Step(Msg(1, 2, 3, RequestVote{LogIndex(0), Term(0), true, false}));
  auto [message, response] = Only<RequestVoteResponse>(voter.Drain());
  CHECK_FALSE(response.granted);
  CHECK(response.pre_vote);
  CHECK(message.term == Term(5));
  CHECK(voter->term() == Term(5));

  TestNode candidate(1, {.pre_vote = true, .hard_state = {Term(2), {}, {}}});
  candidate->Campaign();
  candidate.Drain();
  REQUIRE(candidate->role() == Role::kPreCandidate);
  candidate.Step(message);
  CHECK(candidate->role() == Role::kFollower);
  CHECK(candidate->term() == Term(5));
}

TEST_CASE(
    "pitfall 6: PreVote applies the log up-to-date check, so a stale node "
    "never disrupts (ClickHouse #121252)",
    "[regression]") {
  // Node 3 missed entries 2-3 and keeps timing out; with a pre-vote that
  // skipped the log check it would be granted and then bump everyone's term.
  const TestNode::Options up_to_date{.pre_vote = true,
                                     .log_terms = {1, 1, 1},
                                     .hard_state = {Term(1), {}, LogIndex(1)}};
  TestNode n1(1, up_to_date);
  TestNode n2(2, up_to_date);
  TestNode n3(3, {.pre_vote = true,
                  .log_terms = {1},
                  .hard_state = {Term(1), {}, LogIndex(1)}});
  n1.Drain();
  n2.Drain();
  for (int round = 0; round < 5; ++round) {
    for (const Message& message : TickUntilCampaign(n3)) {
      TestNode& voter = message.to == NodeId(1) ? n1 : n2;
      voter.Step(message);
      for (const auto& [answer, response] :
           OfType<RequestVoteResponse>(voter.Drain())) {
        CHECK_FALSE(response.granted);
        n3.Step(answer);
      }
    }
    n3.Drain();
    CHECK(n3->role() == Role::kFollower);
  }
  CHECK(n1->term() == Term(1));
  CHECK(n2->term() == Term(1));
  CHECK(n3->term() == Term(1));
  CHECK(n1->Status().voted_for == kNoNode);
}

// ===========================================================================
// Item 7 (core half): snapshots and membership.

TEST_CASE(
    "pitfall 7: a snapshot carries the configuration as of its index and "
    "installing it sets the node's configuration",
    "[regression]") {
  // Learner 4 joined before index 4; follower 3 still has the configuration
  // from before (it was partitioned).
  const Configuration with_learner = MakeConfiguration({1, 2, 3}, {4});
  TestNode leader(1, {.voters = {1, 2, 3}, .learners = {4}});
  leader.BecomeLeader();
  leader.AckAll();
  for (const char* command : {"a", "b", "c"}) {
    REQUIRE(leader->Propose(command).ok());
  }
  leader.Drain();
  leader.Step(Msg(2, 1, 1, Ack(4)));
  leader.Drain();
  REQUIRE(leader->applied_index() == LogIndex(4));
  const SnapshotMeta snapshot{LogIndex(4), Term(1), leader->configuration()};
  REQUIRE(snapshot.configuration == with_learner);
  REQUIRE(leader.store().SetSnapshot(snapshot).ok());
  REQUIRE(leader.store().Compact(LogIndex(4)).ok());
  // Follower 3 answers a heartbeat, rejects the probe, and needs the snapshot.
  leader.Step(Msg(3, 1, 1, HeartbeatResponse{0}));
  auto [probe_message, probe] = Only<AppendEntries>(To(leader.Drain(), 3));
  leader.Step(Msg(3, 1, 1,
                  AppendEntriesResponse{false, probe.prev_log_index,
                                        LogIndex(1), Term(1)}));
  auto [install_message, install] =
      Only<InstallSnapshot>(To(leader.Drain(), 3));
  CHECK(install.snapshot == snapshot);

  TestNode follower(3, {.voters = {1, 2, 3},
                        .log_terms = {1},
                        .hard_state = {Term(1), NodeId(1), LogIndex(1)}});
  follower.Drain();
  REQUIRE(follower->configuration() == MakeConfiguration({1, 2, 3}));
  follower.Step(install_message);
  CHECK(follower->configuration() == with_learner);
  Ready ready = follower.Take();
  REQUIRE(ready.snapshot.has_value());
  CHECK(ready.snapshot->configuration == with_learner);
  follower.Finish(ready);
  // The configuration survives a restart: it was stored with the snapshot.
  follower.Restart();
  CHECK(follower->configuration() == with_learner);
  CHECK(follower->commit_index() == LogIndex(4));
}

TEST_CASE(
    "pitfall 7: an old snapshot does not overwrite a newer configuration "
    "(NuRaft #566)",
    "[regression]") {
  const Configuration current = MakeConfiguration({1, 2, 3}, {4});
  TestNode follower(3, {.voters = {1, 2, 3},
                        .learners = {4},
                        .log_terms = {1, 1, 1, 1},
                        .hard_state = {Term(1), NodeId(1), LogIndex(4)}});
  follower.Drain();
  // A delayed snapshot from before learner 4 joined.
  follower.Step(Msg(1, 3, 1,
                    InstallSnapshot{SnapshotMeta{
                        LogIndex(3), Term(1), MakeConfiguration({1, 2, 3})}}));
  Ready ready = follower.Take();
  CHECK_FALSE(ready.snapshot.has_value());
  follower.Finish(ready);
  CHECK(follower->configuration() == current);
  follower.Restart();
  CHECK(follower->configuration() == current);
}

// ===========================================================================
// Item 10: persist before you acknowledge.

TEST_CASE(
    "pitfall 10: a vote grant leaves only with the Ready that persists the "
    "vote (RATIS-980)",
    "[regression]") {
  TestNode n(3, {.hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 3, 2, RequestVote{LogIndex(0), Term(0), false, false}));
  Ready ready = n.Take();
  REQUIRE(ready.hard_state.has_value());
  CHECK(ready.hard_state->term == Term(2));
  CHECK(ready.hard_state->voted_for == NodeId(1));
  CHECK(ready.must_sync);
  CHECK(ready.messages.empty());
  auto [message, grant] =
      Only<RequestVoteResponse>(ready.messages_after_persist);
  CHECK(grant.granted);
  n.Finish(ready);
  // After a crash the vote is still there: a second candidate is refused.
  n.Restart();
  CHECK(n->Status().voted_for == NodeId(1));
  n.Step(Msg(2, 3, 2, RequestVote{LogIndex(0), Term(0), false, false}));
  auto [second, refusal] = Only<RequestVoteResponse>(n.Drain());
  CHECK_FALSE(refusal.granted);
}

TEST_CASE(
    "pitfall 10: an append acknowledgement leaves only with the Ready that "
    "persists the entries (TiKV #994)",
    "[regression]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  n.Step(Msg(1, 2, 1, Append(0, 0, {1, 1}, 2)));
  Ready ready = n.Take();
  REQUIRE(ready.entries.size() == 2);
  CHECK(ready.must_sync);
  CHECK(ready.committed_entries.empty());
  CHECK(ready.messages.empty());
  auto [message, ack] =
      Only<AppendEntriesResponse>(ready.messages_after_persist);
  CHECK(ack.index == LogIndex(2));
  // A duplicate arrives while the write is in progress: its acknowledgement
  // cannot leave before that write completes either.
  n.Step(Msg(1, 2, 1, Append(0, 0, {1, 1}, 2)));
  CHECK_FALSE(n->HasReady());
  n.Finish(ready);
  Ready next = n.Take();
  CHECK(next.messages.empty());
  auto [duplicate, duplicate_ack] =
      Only<AppendEntriesResponse>(next.messages_after_persist);
  CHECK(duplicate_ack.index == LogIndex(2));
  CHECK(next.committed_entries.size() == 2);
}

TEST_CASE(
    "pitfall 10: a snapshot acknowledgement leaves only with the Ready that "
    "persists the snapshot",
    "[regression]") {
  TestNode n(2, {.log_terms = {1}, .hard_state = {Term(1), {}, LogIndex(1)}});
  n.Drain();
  n.Step(Msg(1, 2, 1,
             InstallSnapshot{SnapshotMeta{LogIndex(5), Term(1),
                                          MakeConfiguration({1, 2, 3})}}));
  Ready ready = n.Take();
  REQUIRE(ready.snapshot.has_value());
  CHECK(ready.must_sync);
  CHECK(ready.messages.empty());
  auto [message, ack] =
      Only<AppendEntriesResponse>(ready.messages_after_persist);
  CHECK(ack.index == LogIndex(5));
  n.Finish(ready);
}

TEST_CASE(
    "pitfall 10: a single voter hands out committed entries only once they "
    "are durable (etcd #14370)",
    "[regression]") {
  TestNode n(1, {.voters = {1}});
  n->Campaign();
  Ready first = n.Take();
  CHECK(first.entries.size() == 1);
  CHECK(first.committed_entries.empty());
  CHECK((!first.hard_state || first.hard_state->commit == LogIndex(0)));
  n.Finish(first);
  for (int i = 0; i < 3; ++i) {
    Ready apply = n.Take();
    CHECK(apply.entries.empty());
    REQUIRE_FALSE(apply.committed_entries.empty());
    n.Finish(apply);
    REQUIRE(n->Propose(absl::StrCat("x", i)).ok());
    Ready write = n.Take();
    REQUIRE(write.entries.size() == 1);
    CHECK(write.committed_entries.empty());
    CHECK((!write.hard_state ||
           write.hard_state->commit < write.entries[0].index));
    n.Finish(write);
  }
  n.Drain();
  CHECK(n.applied().size() == 4);
}

TEST_CASE(
    "pitfall 10: randomized clusters honour the driver contract in every "
    "Ready",
    "[regression]") {
  // Each Ready of every node is checked in TestNode::Finish: nothing but
  // requests with a durable term leaves before the write, and every grant,
  // acknowledgement and applied entry depends only on durable state.
  Profile profile;
  profile.drop_percent = 10;
  profile.compact = true;
  Coverage coverage = RunSeeds(profile, 100, 6);
  profile.pre_vote = false;
  profile.check_quorum = false;
  profile.nodes = 5;
  Coverage more = RunSeeds(profile, 200, 4);
  // Coverage: entries committed, snapshots installed, reads answered.
  CHECK(coverage.committed + more.committed > 100);
  CHECK(coverage.snapshots + more.snapshots > 0);
  CHECK(coverage.reads + more.reads > 0);
}

// ===========================================================================
// Item 11: leader-parallel disk writes and commit accounting.

TEST_CASE(
    "pitfall 11: a leader counts itself toward commit only by its durable "
    "index",
    "[regression]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5}});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose("x").ok());
  Ready write = n.Take();  // the leader's write of 1/2, sent in parallel
  n.Step(Msg(2, 1, 1, Ack(2)));
  n.Step(Msg(3, 1, 1, Ack(2)));
  CHECK(n->commit_index() == LogIndex(1));  // 2 of 5 durable
  CHECK(n->Status().peers.at(NodeId(1)).match == LogIndex(1));
  n.Finish(write);
  CHECK(n->Status().peers.at(NodeId(1)).match == LogIndex(2));
  CHECK(n->commit_index() == LogIndex(2));  // 3 of 5 durable
}

TEST_CASE(
    "pitfall 11: entries replaced before Advance are not marked durable "
    "(etcd async_storage_writes_append_aba_race)",
    "[regression]") {
  TestNode n(1, {.voters = {1, 2, 3, 4, 5}});
  n.BecomeLeader();
  n.AckAll();
  REQUIRE(n->Propose("x").ok());
  Ready old_write = n.Take();  // writing 1/2
  REQUIRE(old_write.entries.size() == 1);
  REQUIRE(old_write.entries[0].id() == (EntryId{Term(1), LogIndex(2)}));
  // Before that write completes, node 2 leads term 2 and overwrites index 2.
  n.Step(Msg(2, 1, 2, Append(1, 1, {2}, 1)));
  REQUIRE(n->role() == Role::kFollower);
  REQUIRE((EntryId{n->Status().last_term, n->Status().last_index}) ==
          (EntryId{Term(2), LogIndex(2)}));

  SECTION("as a follower") {
    n.Finish(old_write);  // 1/2 is on disk, but 2/2 is the log's entry
    CHECK(n->Status().durable_index == LogIndex(1));
    Ready next = n.Take();
    REQUIRE(next.entries.size() == 1);
    CHECK(next.entries[0].id() == (EntryId{Term(2), LogIndex(2)}));
    CHECK(next.must_sync);
    auto [message, ack] =
        Only<AppendEntriesResponse>(next.messages_after_persist);
    CHECK(ack.index == LogIndex(2));
    n.Finish(next);
    CHECK(n->Status().durable_index == LogIndex(2));
  }
  SECTION("as a leader again") {
    // Node 1 then wins term 3 (its no-op goes to 3/3), still before the old
    // write completes.
    n->Campaign();
    REQUIRE(n->role() == Role::kCandidate);
    n.Step(Msg(3, 1, 3, RequestVoteResponse{true, false}));
    n.Step(Msg(4, 1, 3, RequestVoteResponse{true, false}));
    REQUIRE(n->role() == Role::kLeader);
    REQUIRE((EntryId{n->Status().last_term, n->Status().last_index}) ==
            (EntryId{Term(3), LogIndex(3)}));
    n.Finish(old_write);
    CHECK(n->Status().durable_index == LogIndex(1));
    CHECK(n->Status().peers.at(NodeId(1)).match == LogIndex(1));
    // Followers 3 and 4 hold 2/2 and 3/3: with the leader that would be 3 of
    // 5, but the leader's own 2/2 and 3/3 are not written yet.
    n.Step(Msg(3, 1, 3, Ack(3)));
    n.Step(Msg(4, 1, 3, Ack(3)));
    CHECK(n->commit_index() == LogIndex(1));
    Ready next = n.Take();
    REQUIRE(next.entries.size() == 2);
    CHECK(next.entries[0].id() == (EntryId{Term(2), LogIndex(2)}));
    CHECK(next.entries[1].id() == (EntryId{Term(3), LogIndex(3)}));
    n.Finish(next);
    CHECK(n->Status().peers.at(NodeId(1)).match == LogIndex(3));
    CHECK(n->commit_index() == LogIndex(3));
  }
}

// ===========================================================================
// Item 12: pipelining reorders and duplicates messages.

TEST_CASE(
    "pitfall 12: reordered and duplicated AppendEntries never make a "
    "follower truncate matching entries",
    "[regression]") {
  TestNode n(2, {.hard_state = {Term(1), {}, {}}});
  const Message a1 = Msg(1, 2, 1, Append(0, 0, {1}, 0));
  const Message a2 = Msg(1, 2, 1, Append(1, 1, {1}, 0));
  const Message a3 = Msg(1, 2, 1, Append(2, 1, {1}, 1));
  const Message a4 = Msg(1, 2, 1, Append(3, 1, {1}, 2));
  auto answer = [&n](const Message& message) {
    n.Step(message);
    return Only<AppendEntriesResponse>(n.Drain()).second;
  };
  CHECK(answer(a1).index == LogIndex(1));
  AppendEntriesResponse gap = answer(a3);  // arrives before a2
  CHECK_FALSE(gap.success);
  CHECK(n->Status().last_index == LogIndex(1));
  CHECK(answer(a2).index == LogIndex(2));
  CHECK(answer(a3).index == LogIndex(3));
  CHECK(answer(a4).index == LogIndex(4));
  REQUIRE(n->Status().last_index == LogIndex(4));
  const uint64_t syncs = n.store().sync_count();
  // Late duplicates of earlier messages: nothing is truncated or rewritten
  // and each acknowledges only what it proves. a3 (prev 2, commit 2) reaches
  // the log matching rule; the older ones are below the commit index.
  AppendEntriesResponse late3 = answer(a3);
  CHECK(late3.success);
  CHECK(late3.index == LogIndex(3));
  CHECK(n->Status().last_index == LogIndex(4));
  AppendEntriesResponse late2 = answer(a2);
  CHECK(late2.success);
  CHECK(late2.index == LogIndex(2));
  AppendEntriesResponse late1 = answer(a1);
  CHECK(late1.success);
  CHECK(late1.index >= LogIndex(1));
  CHECK(late1.index <= LogIndex(2));  // the commit index at most
  CHECK(n->Status().last_index == LogIndex(4));
  CHECK(n.store().LastIndex() == LogIndex(4));
  CHECK(n.store().sync_count() == syncs);
  CHECK(n->commit_index() == LogIndex(2));
}

TEST_CASE(
    "pitfall 12: reordered acknowledgements and stale rejections never move "
    "the leader backwards",
    "[regression]") {
  TestNode n(1, {});
  n.BecomeLeader();
  n.AckAll();
  for (const char* command : {"a", "b", "c"}) {
    REQUIRE(n->Propose(command).ok());
    n.Drain();  // one pipelined AppendEntries each: prev 1, 2, 3
  }
  REQUIRE(n->Status().peers.at(NodeId(2)).next == LogIndex(5));
  n.Step(Msg(2, 1, 1, Ack(4)));
  n.Drain();
  CHECK(n->commit_index() == LogIndex(4));
  n.Step(Msg(2, 1, 1, Ack(2)));
  n.Step(Msg(2, 1, 1, Ack(3)));
  n.Step(Msg(2, 1, 1, Ack(4)));
  // A rejection of a message from before the follower caught up.
  n.Step(Msg(2, 1, 1,
             AppendEntriesResponse{false, LogIndex(2), LogIndex(1), Term(1)}));
  const std::optional<PeerStatus> progress = n->Status().Peer(NodeId(2));
  CHECK(progress->match == LogIndex(4));
  CHECK(progress->next == LogIndex(5));
  CHECK(progress->state == ProgressState::kReplicate);
  CHECK(n->commit_index() == LogIndex(4));
  CHECK(OfType<AppendEntries>(To(n.Drain(), 2)).empty());
}

TEST_CASE(
    "pitfall 12: a lost pipelined message makes the leader back off once, "
    "not once per rejection",
    "[regression]") {
  TestNode leader(1, {});
  leader.BecomeLeader();
  TestNode follower(2, {.hard_state = {Term(1), {}, {}}});
  follower.Step(Msg(1, 2, 1, Append(0, 0, {1}, 0)));
  follower.Drain();
  leader.AckAll();
  std::vector<Message> pipeline;
  for (const char* command : {"a", "b", "c"}) {
    REQUIRE(leader->Propose(command).ok());
    for (Message& message : To(leader.Drain(), 2)) pipeline.push_back(message);
  }
  REQUIRE(pipeline.size() == 3);
  // The first (prev 1) is lost; the follower rejects the other two.
  std::vector<Message> rejections;
  for (size_t i = 1; i < pipeline.size(); ++i) {
    follower.Step(pipeline[i]);
    for (Message& message : follower.Drain()) rejections.push_back(message);
  }
  REQUIRE(rejections.size() == 2);
  leader.Step(rejections[0]);
  auto resent = OfType<AppendEntries>(To(leader.Drain(), 2));
  REQUIRE(resent.size() == 1);
  CHECK(resent[0].second.prev_log_index == LogIndex(1));
  CHECK(resent[0].second.entries.size() == 3);
  leader.Step(rejections[1]);  // stale: the leader already backed off
  CHECK(To(leader.Drain(), 2).empty());
  follower.Step(resent[0].first);
  for (const Message& message : follower.Drain()) leader.Step(message);
  CHECK(leader->Status().peers.at(NodeId(2)).match == LogIndex(4));
  CHECK(leader->Status().peers.at(NodeId(2)).state ==
        ProgressState::kReplicate);
  CHECK(leader->commit_index() == LogIndex(4));
}

TEST_CASE(
    "pitfall 12: randomized clusters with reordering and duplication keep "
    "logs consistent",
    "[regression]") {
  Profile profile;
  profile.drop_percent = 5;
  profile.duplicate_percent = 20;
  profile.reorder = true;
  Coverage coverage = RunSeeds(profile, 300, 8);
  CHECK(coverage.committed > 100);
}

// ===========================================================================
// Item 18: two leaders in one term. The core aborts (RAFT_CHECK) when a leader
// hears another leader of its term; that abort is deliberately not exercised
// here. These tests show the precondition cannot arise.

TEST_CASE(
    "pitfall 18: two leaders in one term cannot arise: one durable vote per "
    "term, even across a restart (NuRaft #531)",
    "[regression]") {
  // Candidates 1 and 2 both campaign in term 2; voter 3 is the tie-breaker.
  TestNode voter(3, {.hard_state = {Term(1), {}, {}}});
  voter.Step(Msg(1, 3, 2, RequestVote{LogIndex(0), Term(0), false, false}));
  auto [first, first_answer] = Only<RequestVoteResponse>(voter.Drain());
  CHECK(first_answer.granted);
  voter.Restart();
  voter.Step(Msg(2, 3, 2, RequestVote{LogIndex(0), Term(0), false, false}));
  auto [second, second_answer] = Only<RequestVoteResponse>(voter.Drain());
  CHECK_FALSE(second_answer.granted);
  // Candidate 2, refused by 3, cannot win with its own vote alone.
  TestNode candidate(2, {.hard_state = {Term(1), {}, {}}});
  candidate->Campaign();
  candidate.Drain();
  candidate.Step(second);
  CHECK(candidate->role() != Role::kLeader);
}

TEST_CASE(
    "pitfall 18: randomized elections never produce two leaders in one term",
    "[regression]") {
  Profile profile;
  profile.drop_percent = 15;
  profile.partition_percent = 3;
  Coverage coverage = RunSeeds(profile, 400, 4);
  profile.pre_vote = false;
  profile.check_quorum = false;
  Coverage without = RunSeeds(profile, 500, 4);
  profile.nodes = 5;
  profile.pre_vote = true;
  Coverage five = RunSeeds(profile, 600, 4);
  // Coverage: the runs must actually exercise elections (a leader in more
  // than ten terms over the four runs of each profile).
  CHECK(coverage.leader_terms > 10);
  CHECK(without.leader_terms > 10);
  CHECK(five.leader_terms > 10);
}

// ===========================================================================
// Item 19: snapshot progress-state liveness.

// A leader whose follower 3 needs a snapshot at 4, already sent.
struct SnapshotSent {
  SnapshotSent() : n(1, {.snapshot_timeout_ticks = 15}) {
    CommitFourWithoutFollower3(n);
    REQUIRE(n.store().SetSnapshot(snapshot).ok());
    REQUIRE(n.store().Compact(LogIndex(4)).ok());
    Only<InstallSnapshot>(Follower3RejectsBackToTheNoOp(n));
    REQUIRE(n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  }

  const SnapshotMeta snapshot{LogIndex(4), Term(1),
                              MakeConfiguration({1, 2, 3})};
  TestNode n;
};

TEST_CASE(
    "pitfall 19: a snapshot whose receiver crashed times out and the "
    "follower is probed again (etcd #10225)",
    "[regression]") {
  SnapshotSent s;
  // Follower 3 crashed: no answer and no ReportSnapshot ever comes.
  s.n.TickN(14);
  s.n.Drain();
  CHECK(s.n->Status().peers.at(NodeId(3)).state == ProgressState::kSnapshot);
  s.n.TickN(1);
  CHECK(s.n->Status().peers.at(NodeId(3)).state == ProgressState::kProbe);
  s.n.Drain();
  // It comes back: the leader finds out what it needs and sends it again.
  s.n.Step(Msg(3, 1, 1, HeartbeatResponse{0}));
  auto [message, install] = Only<InstallSnapshot>(To(s.n.Drain(), 3));
  CHECK(install.snapshot == s.snapshot);
  // This time it installs and acknowledges; no report is needed.
  s.n.Step(Msg(3, 1, 1, Ack(4)));
  CHECK(s.n->Status().peers.at(NodeId(3)).state == ProgressState::kReplicate);
  CHECK(s.n->Status().peers.at(NodeId(3)).match == LogIndex(4));
}

TEST_CASE(
    "pitfall 19: a ReportSnapshot arriving after the timeout changes nothing",
    "[regression]") {
  SnapshotSent s;
  s.n.TickN(15);
  s.n.Drain();
  REQUIRE(s.n->Status().peers.at(NodeId(3)).state == ProgressState::kProbe);
  const LogIndex next = s.n->Status().peers.at(NodeId(3)).next;
  s.n->ReportSnapshot(NodeId(3), true);
  CHECK(s.n->Status().peers.at(NodeId(3)).state == ProgressState::kProbe);
  CHECK(s.n->Status().peers.at(NodeId(3)).next == next);
}

TEST_CASE(
    "pitfall 19: a snapshot in flight does not hold back replication to "
    "others or commit",
    "[regression]") {
  SnapshotSent s;
  REQUIRE(s.n->Propose("d").ok());
  std::vector<Message> sent = s.n.Drain();
  CHECK(To(sent, 3).empty());
  CHECK_FALSE(OfType<AppendEntries>(To(sent, 2)).empty());
  s.n.Step(Msg(2, 1, 1, Ack(5)));
  CHECK(s.n->commit_index() == LogIndex(5));
}

}  // namespace
}  // namespace driftwood::raft
