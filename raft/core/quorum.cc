#include "raft/core/quorum.h"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace driftwood::raft::internal {

LogIndex MajorityMatchedIndex(const std::vector<NodeId>& voters,
                              MatchLookup match) {
  if (voters.empty()) return LogIndex(std::numeric_limits<uint64_t>::max());
  std::vector<LogIndex> matched;
  matched.reserve(voters.size());
  for (NodeId voter : voters) {
    matched.push_back(match(voter).value_or(LogIndex(0)));
  }
  // Sorted descending, the entry at position floor(n/2) is held by at least
  // floor(n/2)+1 voters: a majority.
  std::sort(matched.begin(), matched.end(), std::greater<>());
  return matched[voters.size() / 2];
}

LogIndex JointMatchedIndex(const Configuration& config, MatchLookup match) {
  return std::min(MajorityMatchedIndex(config.voters, match),
                  MajorityMatchedIndex(config.voters_outgoing, match));
}

VoteResult MajorityVoteResult(const std::vector<NodeId>& voters,
                              const std::map<NodeId, bool>& votes) {
  if (voters.empty()) return VoteResult::kWon;
  size_t granted = 0;
  size_t missing = 0;
  for (NodeId voter : voters) {
    auto it = votes.find(voter);
    if (it == votes.end()) {
      ++missing;
    } else if (it->second) {
      ++granted;
    }
  }
  const size_t quorum = voters.size() / 2 + 1;
  if (granted >= quorum) return VoteResult::kWon;
  if (granted + missing >= quorum) return VoteResult::kPending;
  return VoteResult::kLost;
}

VoteResult JointVoteResult(const Configuration& config,
                           const std::map<NodeId, bool>& votes) {
  const VoteResult incoming = MajorityVoteResult(config.voters, votes);
  const VoteResult outgoing = MajorityVoteResult(config.voters_outgoing, votes);
  if (incoming == VoteResult::kLost || outgoing == VoteResult::kLost) {
    return VoteResult::kLost;
  }
  if (incoming == VoteResult::kWon && outgoing == VoteResult::kWon) {
    return VoteResult::kWon;
  }
  return VoteResult::kPending;
}

bool JointQuorumActive(const Configuration& config,
                       absl::FunctionRef<bool(NodeId)> active) {
  std::map<NodeId, bool> votes;
  for (NodeId node : config.AllNodes()) votes[node] = active(node);
  return JointVoteResult(config, votes) == VoteResult::kWon;
}

}  // namespace driftwood::raft::internal
