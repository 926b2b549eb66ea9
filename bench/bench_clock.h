// Driftwood benchmarks: the two clocks every benchmark reads.
#ifndef DRIFTWOOD_BENCH_BENCH_CLOCK_H_
#define DRIFTWOOD_BENCH_BENCH_CLOCK_H_

#include <time.h>

namespace driftwood::bench {

// Seconds on the monotonic clock (wall time; only differences mean anything).
inline double WallSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) +
         static_cast<double>(ts.tv_nsec) * 1e-9;
}

// CPU seconds of the whole process: every thread, user and system.
inline double ProcessCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) +
         static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace driftwood::bench

#endif  // DRIFTWOOD_BENCH_BENCH_CLOCK_H_
