// Driftwood: stable text renderings of core values, used by interaction tests
// (their traces depend on the exact wording) and by logs.
//
//   Entry:   2/5 'set x=1'  (term/index, then the data or "noop")
//   Message: 1->2 AppendEntries term=2 prev=1/4 commit=4 entries=[2/5 'x']
//   Ready:   one line per field, see DescribeReady.
#ifndef DRIFTWOOD_RAFT_CORE_DESCRIBE_H_
#define DRIFTWOOD_RAFT_CORE_DESCRIBE_H_

#include <string>
#include <vector>

#include "raft/core/message.h"
#include "raft/core/ready.h"
#include "raft/core/types.h"

namespace driftwood::raft {

std::string Describe(const Entry& entry);
std::string Describe(const std::vector<Entry>& entries);
std::string Describe(const Message& message);
std::string Describe(const HardState& state);
std::string Describe(const SoftState& state);
std::string Describe(const Configuration& configuration);
std::string Describe(const SnapshotMeta& snapshot);
// One line holding every non-empty field of `ready`.
std::string Describe(const Ready& ready);
// The same fields one per line (messages one per line), each prefixed with
// `indent`; empty fields are omitted.
std::string DescribeReadyLines(const Ready& ready, const std::string& indent);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_DESCRIBE_H_
