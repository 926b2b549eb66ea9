// Driftwood: quorum arithmetic for majority and joint configurations.
//
// Pure functions over sorted voter lists. A joint configuration (thesis §4.3)
// decides only with a majority of each half; an empty half imposes no
// condition. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_QUORUM_H_
#define DRIFTWOOD_RAFT_CORE_QUORUM_H_

#include <map>
#include <optional>
#include <vector>

#include "absl/functional/function_ref.h"
#include "raft/core/types.h"

namespace driftwood::raft::internal {

// How a tally of votes stands.
enum class VoteResult { kPending, kWon, kLost };

// Looks up a voter's durable match index; nullopt when nothing is known (counts
// as index 0).
using MatchLookup = absl::FunctionRef<std::optional<LogIndex>(NodeId)>;

// The largest index that a majority of `voters` have matched (paper §5.3: an
// index is replicated on a majority). An empty voter list returns the maximum
// index, so that it never limits a joint commit.
LogIndex MajorityMatchedIndex(const std::vector<NodeId>& voters,
                              MatchLookup match);

// The index matched by a majority of both halves of `config`.
LogIndex JointMatchedIndex(const Configuration& config, MatchLookup match);

// The outcome of an election among `voters` given the votes received so far
// (true = granted). An empty voter list counts as won.
VoteResult MajorityVoteResult(const std::vector<NodeId>& voters,
                              const std::map<NodeId, bool>& votes);

// The outcome in a possibly joint configuration: won when both halves are won,
// lost when either half is lost, pending otherwise.
VoteResult JointVoteResult(const Configuration& config,
                           const std::map<NodeId, bool>& votes);

// True when the nodes for which `active` holds form a quorum of `config`.
bool JointQuorumActive(const Configuration& config,
                       absl::FunctionRef<bool(NodeId)> active);

}  // namespace driftwood::raft::internal

#endif  // DRIFTWOOD_RAFT_CORE_QUORUM_H_
