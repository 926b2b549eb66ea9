// Unit tests for raft/core/quorum.h: majority and joint quorum arithmetic.
#include "raft/core/quorum.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "raft/core/types.h"

namespace driftwood::raft::internal {
namespace {

constexpr LogIndex kMaxIndex(std::numeric_limits<uint64_t>::max());

std::vector<NodeId> Ids(std::initializer_list<uint64_t> ids) {
  std::vector<NodeId> result;
  for (uint64_t id : ids) result.push_back(NodeId(id));
  return result;
}

// Match indexes by node id; a node not in the map is unknown (nullopt).
using Matches = std::map<uint64_t, uint64_t>;

LogIndex Majority(const std::vector<NodeId>& voters, const Matches& matches) {
  return MajorityMatchedIndex(voters,
                              [&matches](NodeId id) -> std::optional<LogIndex> {
                                auto it = matches.find(id.value());
                                if (it == matches.end()) return std::nullopt;
                                return LogIndex(it->second);
                              });
}

LogIndex Joint(const Configuration& config, const Matches& matches) {
  return JointMatchedIndex(config,
                           [&matches](NodeId id) -> std::optional<LogIndex> {
                             auto it = matches.find(id.value());
                             if (it == matches.end()) return std::nullopt;
                             return LogIndex(it->second);
                           });
}

// Votes by node id (true = granted).
std::map<NodeId, bool> Votes(
    std::initializer_list<std::pair<uint64_t, bool>> v) {
  std::map<NodeId, bool> result;
  for (const auto& [id, granted] : v) result[NodeId(id)] = granted;
  return result;
}

Configuration Config(std::initializer_list<uint64_t> incoming,
                     std::initializer_list<uint64_t> outgoing = {},
                     std::initializer_list<uint64_t> learners = {}) {
  Configuration config;
  config.voters = Ids(incoming);
  config.voters_outgoing = Ids(outgoing);
  config.learners = Ids(learners);
  return config;
}

TEST_CASE("MajorityMatchedIndex of an empty voter list is the maximum index",
          "[unit]") {
  CHECK(Majority({}, {}) == kMaxIndex);
  CHECK(Majority({}, {{1, 5}}) == kMaxIndex);
}

TEST_CASE("MajorityMatchedIndex with one voter is that voter's match",
          "[unit]") {
  CHECK(Majority(Ids({1}), {{1, 7}}) == LogIndex(7));
  CHECK(Majority(Ids({1}), {{1, 0}}) == LogIndex(0));
  // Unknown counts as 0.
  CHECK(Majority(Ids({1}), {}) == LogIndex(0));
  // Non-voters are ignored.
  CHECK(Majority(Ids({1}), {{1, 3}, {2, 100}}) == LogIndex(3));
}

TEST_CASE("MajorityMatchedIndex with two voters needs both", "[unit]") {
  CHECK(Majority(Ids({1, 2}), {{1, 5}, {2, 3}}) == LogIndex(3));
  CHECK(Majority(Ids({1, 2}), {{1, 3}, {2, 5}}) == LogIndex(3));
  CHECK(Majority(Ids({1, 2}), {{1, 4}, {2, 4}}) == LogIndex(4));
  CHECK(Majority(Ids({1, 2}), {{1, 9}}) == LogIndex(0));
}

TEST_CASE("MajorityMatchedIndex with three voters is the median", "[unit]") {
  CHECK(Majority(Ids({1, 2, 3}), {{1, 5}, {2, 3}, {3, 1}}) == LogIndex(3));
  CHECK(Majority(Ids({1, 2, 3}), {{1, 1}, {2, 5}, {3, 3}}) == LogIndex(3));
  CHECK(Majority(Ids({1, 2, 3}), {{1, 5}, {2, 5}, {3, 1}}) == LogIndex(5));
  CHECK(Majority(Ids({1, 2, 3}), {{1, 5}, {2, 1}, {3, 1}}) == LogIndex(1));
  // One unknown voter: the other two decide.
  CHECK(Majority(Ids({1, 2, 3}), {{1, 5}, {2, 4}}) == LogIndex(4));
  // Two unknown voters: nothing is on a majority.
  CHECK(Majority(Ids({1, 2, 3}), {{1, 5}}) == LogIndex(0));
  CHECK(Majority(Ids({1, 2, 3}), {}) == LogIndex(0));
}

TEST_CASE("MajorityMatchedIndex with four voters needs three", "[unit]") {
  // Sorted descending 8,6,4,2: three voters hold 4.
  CHECK(Majority(Ids({1, 2, 3, 4}), {{1, 2}, {2, 8}, {3, 4}, {4, 6}}) ==
        LogIndex(4));
  // Two at 9 is only half, not a majority.
  CHECK(Majority(Ids({1, 2, 3, 4}), {{1, 9}, {2, 9}, {3, 1}, {4, 1}}) ==
        LogIndex(1));
  CHECK(Majority(Ids({1, 2, 3, 4}), {{1, 9}, {2, 9}, {3, 9}, {4, 1}}) ==
        LogIndex(9));
  // Missing voters count as 0.
  CHECK(Majority(Ids({1, 2, 3, 4}), {{1, 9}, {2, 9}}) == LogIndex(0));
  CHECK(Majority(Ids({1, 2, 3, 4}), {{1, 9}, {2, 9}, {3, 7}}) == LogIndex(7));
}

TEST_CASE("MajorityMatchedIndex with five voters needs three", "[unit]") {
  CHECK(Majority(Ids({1, 2, 3, 4, 5}),
                 {{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}}) == LogIndex(3));
  CHECK(Majority(Ids({1, 2, 3, 4, 5}),
                 {{1, 10}, {2, 10}, {3, 1}, {4, 1}, {5, 1}}) == LogIndex(1));
  CHECK(Majority(Ids({1, 2, 3, 4, 5}),
                 {{1, 10}, {2, 10}, {3, 10}, {4, 1}, {5, 1}}) == LogIndex(10));
  // Two missing voters: the three known ones must all hold the index.
  CHECK(Majority(Ids({1, 2, 3, 4, 5}), {{1, 10}, {3, 6}, {5, 8}}) ==
        LogIndex(6));
  // Three missing voters: nothing is on a majority.
  CHECK(Majority(Ids({1, 2, 3, 4, 5}), {{1, 10}, {3, 6}}) == LogIndex(0));
}

TEST_CASE("JointMatchedIndex is the minimum of both halves", "[unit]") {
  const Matches matches = {{1, 10}, {2, 9}, {3, 2}, {4, 3}, {5, 1}};
  // Incoming {1,2,3}: 9. Outgoing {3,4,5}: 2.
  CHECK(Joint(Config({1, 2, 3}, {3, 4, 5}), matches) == LogIndex(2));
  // Incoming {3,4,5}: 2. Outgoing {1,2,3}: 9.
  CHECK(Joint(Config({3, 4, 5}, {1, 2, 3}), matches) == LogIndex(2));
  // Incoming {1,2}: 9. Outgoing {1,2,3}: 9.
  CHECK(Joint(Config({1, 2}, {1, 2, 3}), matches) == LogIndex(9));
  // A non-joint configuration: the empty outgoing half imposes nothing.
  CHECK(Joint(Config({1, 2, 3}), matches) == LogIndex(9));
  CHECK(Joint(Config({3, 4, 5}), matches) == LogIndex(2));
  // Learners never count.
  CHECK(Joint(Config({3, 4, 5}, {}, {1, 2}), matches) == LogIndex(2));
  // Both halves empty: no limit at all.
  CHECK(Joint(Config({}), matches) == kMaxIndex);
}

TEST_CASE("MajorityVoteResult with an empty voter list is won", "[unit]") {
  CHECK(MajorityVoteResult({}, {}) == VoteResult::kWon);
  CHECK(MajorityVoteResult({}, Votes({{1, false}})) == VoteResult::kWon);
}

TEST_CASE("MajorityVoteResult with one voter", "[unit]") {
  CHECK(MajorityVoteResult(Ids({1}), {}) == VoteResult::kPending);
  CHECK(MajorityVoteResult(Ids({1}), Votes({{1, true}})) == VoteResult::kWon);
  CHECK(MajorityVoteResult(Ids({1}), Votes({{1, false}})) == VoteResult::kLost);
  // Votes of non-voters are ignored.
  CHECK(MajorityVoteResult(Ids({1}), Votes({{2, true}})) ==
        VoteResult::kPending);
}

TEST_CASE("MajorityVoteResult with three voters", "[unit]") {
  const std::vector<NodeId> voters = Ids({1, 2, 3});
  CHECK(MajorityVoteResult(voters, {}) == VoteResult::kPending);
  CHECK(MajorityVoteResult(voters, Votes({{1, true}})) == VoteResult::kPending);
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, true}})) ==
        VoteResult::kWon);
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, false}})) ==
        VoteResult::kPending);
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, false}, {3, true}})) ==
        VoteResult::kWon);
  CHECK(MajorityVoteResult(voters, Votes({{1, false}})) ==
        VoteResult::kPending);
  CHECK(MajorityVoteResult(voters, Votes({{1, false}, {2, false}})) ==
        VoteResult::kLost);
  CHECK(
      MajorityVoteResult(voters, Votes({{1, true}, {2, false}, {3, false}})) ==
      VoteResult::kLost);
  // Grants from outside the voter set do not count.
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {4, true}, {5, true}})) ==
        VoteResult::kPending);
  CHECK(MajorityVoteResult(
            voters,
            Votes({{1, true}, {2, false}, {3, false}, {4, true}, {5, true}})) ==
        VoteResult::kLost);
}

TEST_CASE("MajorityVoteResult with four voters needs three grants", "[unit]") {
  const std::vector<NodeId> voters = Ids({1, 2, 3, 4});
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, true}})) ==
        VoteResult::kPending);
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, true}, {3, true}})) ==
        VoteResult::kWon);
  // Two grants and one rejection: the last vote decides.
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, true}, {3, false}})) ==
        VoteResult::kPending);
  // Two grants, two rejections: a tie loses.
  CHECK(MajorityVoteResult(
            voters, Votes({{1, true}, {2, true}, {3, false}, {4, false}})) ==
        VoteResult::kLost);
  // Two rejections already make three grants impossible.
  CHECK(MajorityVoteResult(voters, Votes({{1, false}, {2, false}})) ==
        VoteResult::kLost);
  CHECK(MajorityVoteResult(voters, Votes({{1, false}})) ==
        VoteResult::kPending);
}

TEST_CASE("MajorityVoteResult with five voters needs three grants", "[unit]") {
  const std::vector<NodeId> voters = Ids({1, 2, 3, 4, 5});
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, true}})) ==
        VoteResult::kPending);
  CHECK(MajorityVoteResult(voters, Votes({{1, true}, {2, true}, {5, true}})) ==
        VoteResult::kWon);
  CHECK(MajorityVoteResult(voters, Votes({{1, false}, {2, false}})) ==
        VoteResult::kPending);
  CHECK(
      MajorityVoteResult(voters, Votes({{1, false}, {2, false}, {3, false}})) ==
      VoteResult::kLost);
  CHECK(MajorityVoteResult(
            voters, Votes({{1, true}, {2, true}, {3, false}, {4, false}})) ==
        VoteResult::kPending);
  CHECK(
      MajorityVoteResult(
          voters,
          Votes({{1, true}, {2, true}, {3, false}, {4, false}, {5, false}})) ==
      VoteResult::kLost);
  CHECK(MajorityVoteResult(
            voters,
            Votes({{1, true}, {2, true}, {3, false}, {4, false}, {5, true}})) ==
        VoteResult::kWon);
}

TEST_CASE("JointVoteResult needs both halves to win", "[unit]") {
  const Configuration joint = Config({1, 2, 3}, {3, 4, 5});
  CHECK(JointVoteResult(joint, {}) == VoteResult::kPending);
  // Incoming won, outgoing pending.
  CHECK(JointVoteResult(joint, Votes({{1, true}, {2, true}})) ==
        VoteResult::kPending);
  // Both won (node 3 counts in both halves).
  CHECK(JointVoteResult(joint, Votes({{1, true}, {3, true}, {4, true}})) ==
        VoteResult::kWon);
  // Incoming won, outgoing lost.
  CHECK(JointVoteResult(
            joint, Votes({{1, true}, {2, true}, {4, false}, {5, false}})) ==
        VoteResult::kLost);
  // Incoming lost, outgoing won.
  CHECK(JointVoteResult(
            joint, Votes({{1, false}, {2, false}, {4, true}, {5, true}})) ==
        VoteResult::kLost);
  // Incoming lost, outgoing pending.
  CHECK(JointVoteResult(joint, Votes({{1, false}, {2, false}})) ==
        VoteResult::kLost);
  // Both lost.
  CHECK(JointVoteResult(joint, Votes({{1, false}, {3, false}, {4, false}})) ==
        VoteResult::kLost);
}

TEST_CASE("JointVoteResult of a non-joint configuration is the majority result",
          "[unit]") {
  const Configuration config = Config({1, 2, 3});
  CHECK(JointVoteResult(config, {}) == VoteResult::kPending);
  CHECK(JointVoteResult(config, Votes({{1, true}, {2, true}})) ==
        VoteResult::kWon);
  CHECK(JointVoteResult(config, Votes({{1, false}, {2, false}})) ==
        VoteResult::kLost);
  // Learners' votes do not count.
  const Configuration with_learners = Config({1, 2, 3}, {}, {4, 5});
  CHECK(JointVoteResult(with_learners,
                        Votes({{1, true}, {4, true}, {5, true}})) ==
        VoteResult::kPending);
}

TEST_CASE("JointQuorumActive needs an active majority of each half", "[unit]") {
  const Configuration joint = Config({1, 2, 3}, {3, 4, 5}, {6});
  auto check = [&joint](const std::vector<NodeId>& active) {
    return JointQuorumActive(joint, [&active](NodeId id) {
      return std::find(active.begin(), active.end(), id) != active.end();
    });
  };
  CHECK_FALSE(check(Ids({})));
  CHECK_FALSE(check(Ids({1, 2})));
  CHECK_FALSE(check(Ids({4, 5})));
  CHECK(check(Ids({1, 3, 4})));
  CHECK(check(Ids({1, 2, 4, 5})));
  CHECK(check(Ids({1, 2, 3, 4, 5})));
  // The learner never helps.
  CHECK_FALSE(check(Ids({1, 2, 4, 6})));

  const Configuration single = Config({1, 2, 3}, {}, {4});
  CHECK(JointQuorumActive(single, [](NodeId id) { return id <= NodeId(2); }));
  CHECK_FALSE(
      JointQuorumActive(single, [](NodeId id) { return id == NodeId(1); }));
  CHECK_FALSE(JointQuorumActive(
      single, [](NodeId id) { return id == NodeId(1) || id == NodeId(4); }));
  CHECK_FALSE(JointQuorumActive(single, [](NodeId) { return false; }));
  CHECK(JointQuorumActive(single, [](NodeId) { return true; }));
}

}  // namespace
}  // namespace driftwood::raft::internal
