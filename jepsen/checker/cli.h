// jepsen-check's command line, as a function so that tests can run it.
//
//   jepsen-check --history FILE --out DIR [--max-ops-per-key N]
//                [--key-budget-seconds S] [--no-plot] [--title TEXT]
//
// Checks the history, prints the summary (report.h) to `out`, writes
// DIR/results.json and, unless --no-plot, the plot files (plot.h) and
// DIR/latency.png. A plot that cannot be drawn is a warning on `err`, not a
// failure.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_CLI_H_
#define DRIFTWOOD_JEPSEN_CHECKER_CLI_H_

#include <ostream>
#include <string>
#include <vector>

namespace driftwood::jepsen {

// The exit codes.
inline constexpr int kExitPassed = 0;
// A checker failed or could not decide.
inline constexpr int kExitFailed = 1;
// Bad arguments, or a file that cannot be read or written.
inline constexpr int kExitUsage = 2;

// `args` excludes the program name. Returns one of the exit codes above.
int RunCheck(const std::vector<std::string>& args, std::ostream& out,
             std::ostream& err);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_CLI_H_
