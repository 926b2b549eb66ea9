// raft_sim: runs seeded cluster simulations (see simulation.h).
//
//   raft_sim --seeds 1-2000          a range of seeds (CI)
//   raft_sim --duration 600          as many seeds as fit in 600 s (soak)
//   raft_sim --seed 1234 --verbose   replay one seed with a full trace
//   raft_sim --seeds 1-200 --determinism   each seed twice, traces compared
//
// Exits 0 when every seed passed and, for runs of 100 seeds or more, every
// coverage counter is above zero; 1 on the first failing seed, printing the
// seed and the command that replays it.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include "CLI/CLI.hpp"
#include "spdlog/spdlog.h"
#include "tests/sim/simulation.h"

namespace {

// The seed being run, for the crash handler: a core invariant check aborts the
// process, and the replay command must still be printed.
char g_replay[512];

void OnFatalSignal(int signal_number) {
  const char* prefix =
      "\nraft_sim: crashed (a RAFT_CHECK or a fault); replay with:\n  ";
  ssize_t ignored = write(STDERR_FILENO, prefix, std::strlen(prefix));
  ignored = write(STDERR_FILENO, g_replay, std::strlen(g_replay));
  ignored = write(STDERR_FILENO, "\n", 1);
  (void)ignored;
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

double Now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) +
         static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Seeded Raft cluster simulation with safety and liveness checks."};
  std::string seeds;
  uint64_t seed = 0;
  double duration = 0;
  int nodes = 0;
  uint64_t events = 3000;
  bool verbose = false;
  bool quiet = false;
  bool determinism = false;
  app.add_option("--seeds", seeds, "Seed range FIRST-LAST (inclusive)");
  app.add_option("--seed", seed, "Run (replay) a single seed");
  app.add_option("--duration", duration,
                 "Soak: run consecutive seeds from --seed (default 1) for "
                 "this many seconds");
  app.add_option("--nodes", nodes,
                 "Cluster size, 3 or 5 (default: from the seed)")
      ->check(CLI::IsMember({0, 3, 5}));
  app.add_option("--events", events, "Events in the fault phase of each seed")
      ->check(CLI::Range(uint64_t{500}, uint64_t{10000000}));
  app.add_flag("--verbose", verbose, "Print every event (use with --seed)");
  app.add_flag("--quiet", quiet, "Print only the summary and failures");
  app.add_flag("--determinism", determinism,
               "Run each seed twice with a full trace and fail unless the "
               "two traces are identical, byte for byte");
  CLI11_PARSE(app, argc, argv);

  uint64_t first = seed == 0 ? 1 : seed;
  uint64_t last = first;
  if (!seeds.empty()) {
    const size_t dash = seeds.find('-');
    char* end = nullptr;
    first = std::strtoull(seeds.c_str(), &end, 10);
    last = dash == std::string::npos
               ? first
               : std::strtoull(seeds.c_str() + dash + 1, nullptr, 10);
    if (first == 0 || last < first) {
      std::fprintf(stderr,
                   "raft_sim: --seeds wants FIRST-LAST with 1 <= FIRST <= "
                   "LAST, got '%s'\n",
                   seeds.c_str());
      return 2;
    }
  } else if (seed == 0 && duration <= 0) {
    std::fprintf(stderr,
                 "raft_sim: give --seeds, --seed or --duration (see --help)\n");
    return 2;
  }
  if (duration > 0) last = UINT64_MAX;

  // The runtime logs through spdlog; a simulation prints only its own trace.
  spdlog::set_level(spdlog::level::off);
  std::signal(SIGABRT, OnFatalSignal);
  std::signal(SIGSEGV, OnFatalSignal);

  driftwood::sim::Coverage total;
  const double start = Now();
  uint64_t runs = 0;
  uint64_t total_events = 0;
  for (uint64_t s = first; s <= last; ++s) {
    if (duration > 0 && Now() - start >= duration) break;
    std::snprintf(g_replay, sizeof(g_replay),
                  "%s --seed %llu --nodes %d --events %llu --verbose", argv[0],
                  static_cast<unsigned long long>(s), nodes,
                  static_cast<unsigned long long>(events));
    driftwood::sim::SimOptions options;
    options.seed = s;
    options.nodes = nodes;
    options.events = events;
    options.verbose = verbose;
    options.trace = determinism;
    const driftwood::sim::SimResult result =
        driftwood::sim::RunSimulation(options);
    if (determinism) {
      const driftwood::sim::SimResult again =
          driftwood::sim::RunSimulation(options);
      if (again.trace != result.trace || again.ok != result.ok ||
          again.failure != result.failure) {
        size_t at = 0;
        while (at < result.trace.size() && at < again.trace.size() &&
               result.trace[at] == again.trace[at]) {
          ++at;
        }
        const size_t line_start = result.trace.rfind('\n', at);
        const size_t from =
            line_start == std::string::npos ? 0 : line_start + 1;
        std::printf(
            "FAILED seed %llu: two runs differ at byte %zu of the trace:\n"
            "  first:  %s\n  second: %s\n",
            static_cast<unsigned long long>(s), at,
            result.trace.substr(from, result.trace.find('\n', from) - from)
                .c_str(),
            again.trace.substr(from, again.trace.find('\n', from) - from)
                .c_str());
        return 1;
      }
    }
    ++runs;
    total_events += result.events;
    total.Add(result.coverage);
    if (!result.ok) {
      std::printf(
          "FAILED seed %llu (%d nodes): %s\nreplay: %s --seed %llu --nodes %d "
          "--events %llu --verbose\n",
          static_cast<unsigned long long>(s), result.nodes,
          result.failure.c_str(), argv[0], static_cast<unsigned long long>(s),
          result.nodes, static_cast<unsigned long long>(events));
      return 1;
    }
    if (!quiet && (runs % 1000 == 0)) {
      std::printf("%llu seeds passed (%.0f s)\n",
                  static_cast<unsigned long long>(runs), Now() - start);
      std::fflush(stdout);
    }
  }
  const double elapsed = Now() - start;
  std::printf("%llu seeds passed (seeds %llu-%llu), %llu events in %.1f s\n",
              static_cast<unsigned long long>(runs),
              static_cast<unsigned long long>(first),
              static_cast<unsigned long long>(first + runs - 1),
              static_cast<unsigned long long>(total_events), elapsed);
  std::printf("coverage: %s\n", total.ToString().c_str());
  if (runs >= 100 && !total.Missing().empty()) {
    std::printf("FAILED: coverage counters still zero: %s\n",
                total.Missing().c_str());
    return 1;
  }
  return 0;
}
