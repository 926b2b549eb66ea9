#include "jepsen/checker/cli.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "jepsen/checker/history.h"
#include "jepsen/checker/plot.h"
#include "jepsen/checker/register_checker.h"
#include "jepsen/checker/report.h"

namespace driftwood::jepsen {
namespace {

constexpr char kUsage[] =
    "usage: jepsen-check --history FILE --out DIR [--max-ops-per-key N]\n"
    "                    [--key-budget-seconds S] [--no-plot] [--title TEXT]\n"
    "                    [--watch-log FILE]\n"
    "\n"
    "Checks a Jepsen-style history (JSON Lines, one event a line): the\n"
    "history's own validity, register keys for linearizability and list\n"
    "keys for the list-append anomalies. Prints a summary, writes\n"
    "DIR/results.json and, unless --no-plot, DIR/latency.png (with\n"
    "latency.dat, throughput.dat and plot.gp, drawn by gnuplot).\n"
    "\n"
    "  --history FILE          the history\n"
    "  --out DIR               where the results go (created if missing)\n"
    "  --max-ops-per-key N     register keys with more ops are unknown\n"
    "                          (default 400)\n"
    "  --key-budget-seconds S  register keys whose search takes longer are\n"
    "                          unknown (default 10)\n"
    "  --no-plot               skip the plot\n"
    "  --title TEXT            the plot's title (default: the file name)\n"
    "  --watch-log FILE        the watch and lock workloads' log: watchers\n"
    "                          against the truth, acknowledged writes in it,\n"
    "                          fenced lock writes never interleaved\n"
    "\n"
    "Exit codes: 0 every check passed; 1 a check failed or was unknown;\n"
    "2 bad arguments or a file that cannot be read or written.\n";

struct Flags {
  std::string history;
  std::string out;
  std::optional<std::string> title;
  std::optional<std::string> watch_log;
  bool plot = true;
  RegisterOptions options;
};

int BadUsage(std::ostream& err, std::string_view why) {
  err << "jepsen-check: " << why << "\n\n" << kUsage;
  return kExitUsage;
}

// Parses `args` into `flags`; returns the error, or an empty string.
std::string ParseFlags(const std::vector<std::string>& args, Flags* flags,
                       bool* help) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::optional<std::string> value;
    if (const size_t eq = flag.find('=');
        flag.starts_with("--") && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    }
    if (flag == "--help" || flag == "-h") {
      *help = true;
      return "";
    }
    if (flag == "--no-plot") {
      if (value.has_value()) return "--no-plot takes no value";
      flags->plot = false;
      continue;
    }
    if (flag != "--history" && flag != "--out" && flag != "--title" &&
        flag != "--watch-log" && flag != "--max-ops-per-key" &&
        flag != "--key-budget-seconds") {
      return absl::StrCat("unknown argument ", args[i]);
    }
    if (!value.has_value()) {
      if (i + 1 == args.size()) return absl::StrCat(flag, " needs a value");
      value = args[++i];
    }
    if (flag == "--history") {
      flags->history = *value;
    } else if (flag == "--out") {
      flags->out = *value;
    } else if (flag == "--title") {
      flags->title = *value;
    } else if (flag == "--watch-log") {
      flags->watch_log = *value;
    } else if (flag == "--max-ops-per-key") {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(*value, &n) || n == 0) {
        return absl::StrCat(
            "--max-ops-per-key must be a positive integer, "
            "not \"",
            *value, "\"");
      }
      flags->options.max_ops_per_key = static_cast<size_t>(n);
    } else {
      double seconds = 0;
      if (!absl::SimpleAtod(*value, &seconds) || !std::isfinite(seconds) ||
          seconds <= 0) {
        return absl::StrCat(
            "--key-budget-seconds must be a positive number, "
            "not \"",
            *value, "\"");
      }
      flags->options.key_budget_seconds = seconds;
    }
  }
  if (flags->history.empty()) return "--history is required";
  if (flags->out.empty()) return "--out is required";
  return "";
}

}  // namespace

int RunCheck(const std::vector<std::string>& args, std::ostream& out,
             std::ostream& err) {
  Flags flags;
  bool help = false;
  if (const std::string why = ParseFlags(args, &flags, &help); help) {
    out << kUsage;
    return kExitPassed;
  } else if (!why.empty()) {
    return BadUsage(err, why);
  }
  absl::StatusOr<History> history = ReadHistoryFile(flags.history);
  if (!history.ok()) {
    err << "jepsen-check: " << history.status().message() << "\n";
    return kExitUsage;
  }
  std::error_code error;
  std::filesystem::create_directories(flags.out, error);
  if (error) {
    err << "jepsen-check: cannot create " << flags.out << ": "
        << error.message() << "\n";
    return kExitUsage;
  }

  CheckResults results = RunCheckers(*history, flags.options);
  if (flags.watch_log.has_value()) {
    results.has_coordination = true;
    absl::StatusOr<CoordinationResult> coordination =
        CheckCoordination(*flags.watch_log, *history);
    if (coordination.ok()) {
      results.coordination = *std::move(coordination);
    } else {
      results.coordination_error = std::string(coordination.status().message());
    }
  }
  const std::string results_path = flags.out + "/results.json";
  {
    std::ofstream file(results_path, std::ios::trunc);
    file << ResultsJson(results);
    file.close();
    if (!file) {
      err << "jepsen-check: cannot write " << results_path << "\n";
      return kExitUsage;
    }
  }
  if (flags.plot) {
    const std::string title = flags.title.value_or(
        absl::StrCat("jepsen-check: ",
                     std::filesystem::path(flags.history).filename().string()));
    absl::Status plotted = WritePlotFiles(*history, flags.out, title);
    if (plotted.ok()) plotted = RunGnuplot(flags.out);
    if (!plotted.ok()) {
      err << "jepsen-check: warning: no plot: " << plotted.message() << "\n";
    }
  }
  out << SummaryText(results);
  out.flush();
  return results.valid() ? kExitPassed : kExitFailed;
}

}  // namespace driftwood::jepsen
