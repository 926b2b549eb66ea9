#include "raft/core/types.h"

#include <algorithm>
#include <cstdio>

namespace driftwood::raft {

void CheckFailed(const char* file, int line, const char* condition,
                 const std::string& message) {
  std::fprintf(stderr, "%s:%d: RAFT_CHECK failed: %s: %s\n", file, line,
               condition, message.c_str());
  std::fflush(stderr);
  std::abort();
}

namespace {
bool Contains(const std::vector<NodeId>& ids, NodeId id) {
  return std::binary_search(ids.begin(), ids.end(), id);
}

bool SortedUnique(const std::vector<NodeId>& ids) {
  return std::adjacent_find(ids.begin(), ids.end(), [](NodeId a, NodeId b) {
           return a >= b;
         }) == ids.end();
}
}  // namespace

bool Configuration::IsVoter(NodeId id) const {
  return Contains(voters, id) || Contains(voters_outgoing, id);
}

bool Configuration::IsLearner(NodeId id) const {
  return Contains(learners, id);
}

std::vector<NodeId> Configuration::AllNodes() const {
  std::vector<NodeId> all = voters;
  all.insert(all.end(), voters_outgoing.begin(), voters_outgoing.end());
  all.insert(all.end(), learners.begin(), learners.end());
  std::sort(all.begin(), all.end());
  all.erase(std::unique(all.begin(), all.end()), all.end());
  return all;
}

std::string Configuration::Validate() const {
  for (const auto* list : {&voters, &voters_outgoing, &learners}) {
    if (!SortedUnique(*list)) return "node lists must be sorted and unique";
    if (Contains(*list, kNoNode)) return "node id 0 is reserved for 'nobody'";
  }
  if (voters.empty()) return "a configuration needs at least one voter";
  for (NodeId learner : learners) {
    if (IsVoter(learner)) return "a node cannot be both voter and learner";
  }
  return "";
}

}  // namespace driftwood::raft
