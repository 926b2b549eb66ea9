// jepsen-check's plot: latency and throughput over time, with the fault
// windows shaded, rendered by gnuplot.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_PLOT_H_
#define DRIFTWOOD_JEPSEN_CHECKER_PLOT_H_

#include <string>

#include "absl/status/status.h"
#include "jepsen/checker/history.h"

namespace driftwood::jepsen {

// Writes into the existing folder `dir`:
// - latency.dat: per completed client op "time_s latency_ms point_type"
//   (time of invocation; point type encodes f), one gnuplot data block per
//   completion type present, in the order ok, fail, info;
// - throughput.dat: per 1 s bucket of completion time "time_s ok_per_s
//   fail_per_s info_per_s";
// - plot.gp: draws latency.png, two panels (latency on a log scale above,
//   throughput below), with the fault windows as shaded rectangles, one
//   color per fault kind, labelled, on both.
// Returns the I/O error, naming the file, when a file cannot be written.
absl::Status WritePlotFiles(const History& history, const std::string& dir,
                            const std::string& title);

// Runs `gnuplot plot.gp` in `dir`, its output going to dir/gnuplot.log.
// NotFound when gnuplot is not installed, Internal when it fails.
absl::Status RunGnuplot(const std::string& dir);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_PLOT_H_
