// jepsen-check's results: running the checkers over a parsed history, the
// statistics, the human summary and results.json.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_REPORT_H_
#define DRIFTWOOD_JEPSEN_CHECKER_REPORT_H_

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "jepsen/checker/append_checker.h"
#include "jepsen/checker/coordination_checker.h"
#include "jepsen/checker/history.h"
#include "jepsen/checker/register_checker.h"

namespace driftwood::jepsen {

struct OutcomeCounts {
  size_t invoked = 0;
  size_t ok = 0;
  size_t fail = 0;
  size_t info = 0;  // info completions; open ops are counted in `open` only
  size_t open = 0;
};

struct Stats {
  OutcomeCounts all;
  // Indexed by Function.
  std::array<OutcomeCounts, 4> by_f;
  size_t register_keys = 0;
  size_t list_keys = 0;
  // The most ops invoked on one register key.
  size_t max_register_key_ops = 0;
  // Fault kind -> number of windows, in order of the first window.
  std::vector<std::pair<std::string, size_t>> faults;
  int64_t nemesis_events = 0;
};

Stats ComputeStats(const History& history);

// Every checker's result for one history. The history checker always runs;
// "linearizable-register" applies when there are register keys, "append"
// when there are list keys. Neither runs on an invalid history (their
// optional stays empty and they count as failed).
struct CheckResults {
  const History* history = nullptr;
  Stats stats;
  bool has_register_keys = false;
  bool has_list_keys = false;
  std::optional<RegisterResult> registers;
  std::optional<AppendResult> appends;
  // The watch and lock checks, when a watch log was given; an error reading
  // it counts as one failed check.
  bool has_coordination = false;
  std::optional<CoordinationResult> coordination;
  std::string coordination_error;

  int passed() const;
  int failed() const;
  bool valid() const { return failed() == 0; }
  // Completed client ops on keys a checker decided.
  size_t checked_ops() const;
};

// REQUIRES: `history` outlives the result.
CheckResults RunCheckers(const History& history,
                         const RegisterOptions& options);

// The human summary; its last line is "checks: N passed, M failed".
std::string SummaryText(const CheckResults& results);

// The contents of results.json.
std::string ResultsJson(const CheckResults& results);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_REPORT_H_
