// jepsen-check's checks of the watch and lock workloads
// (jepsen/client/coordination.h), read from the client's watch log:
//
//  watch-truth         the truth (a fresh watch from revision 1 after the
//                      run) has every revision from 2 to the final one,
//                      in order, each (revision, key) once;
//  watch-exactly-once  every watcher saw exactly the truth, in order,
//                      across its reconnects: nothing skipped, repeated,
//                      reordered or changed; and got through the final
//                      revision;
//  watch-history       every write the register and list clients saw
//                      succeed is a PUT of the truth;
//  lock-fence          the fenced writes of lock holders (key "fence") never
//                      interleave: once another holder wrote, an earlier
//                      holder never writes again.
// The unfenced writes (key "unfenced") are counted the same way but only
// reported: a holder whose lease expired while it was paused keeps writing,
// which is what a lease does not prevent.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_COORDINATION_CHECKER_H_
#define DRIFTWOOD_JEPSEN_CHECKER_COORDINATION_CHECKER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "jepsen/checker/history.h"

namespace driftwood::jepsen {

struct CoordinationResult {
  int64_t final_revision = 0;
  int watchers = 0;
  size_t truth_events = 0;
  size_t watcher_events = 0;
  size_t reconnects = 0;
  size_t writes_checked = 0;
  size_t fenced_writes = 0;
  size_t fence_holders = 0;
  size_t unfenced_writes = 0;
  size_t unfenced_interleavings = 0;
  // Per check: empty when it passed, else what is wrong (at most a few
  // examples each).
  std::vector<std::string> truth_problems;
  std::vector<std::string> watcher_problems;
  std::vector<std::string> history_problems;
  std::vector<std::string> fence_problems;
  bool has_fence = false;

  int passed() const;
  int failed() const;
};

// Reads the watch log and checks it against `history` (whose ok writes
// must be in the truth). An unreadable or malformed log is an error.
absl::StatusOr<CoordinationResult> CheckCoordination(
    const std::string& watch_log, const History& history);

// Lines for the summary.
std::string CoordinationSummary(const CoordinationResult& result);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_COORDINATION_CHECKER_H_
