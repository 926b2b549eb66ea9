#include "jepsen/checker/report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace driftwood::jepsen {
namespace {

using Json = nlohmann::json;

// How much of each failure the summary shows; results.json holds more.
constexpr size_t kShownHistoryErrors = 10;
constexpr size_t kShownOpenOps = 5;
constexpr size_t kShownRegisterKeys = 5;
constexpr size_t kShownAnomalies = 10;

void Count(OutcomeCounts* counts, const Operation& op) {
  ++counts->invoked;
  if (op.open) {
    ++counts->open;
    return;
  }
  switch (op.outcome) {
    case Outcome::kOk:
      ++counts->ok;
      break;
    case Outcome::kFail:
      ++counts->fail;
      break;
    case Outcome::kInfo:
      ++counts->info;
      break;
  }
}

Json CountsJson(const OutcomeCounts& counts) {
  return Json{{"invoked", counts.invoked},
              {"ok", counts.ok},
              {"fail", counts.fail},
              {"info", counts.info},
              {"open", counts.open}};
}

Json OpJson(const History& history, const Operation& op) {
  Json json{{"index", op.invoke_index},
            {"process", op.process},
            {"time", op.invoke_time},
            {"f", FunctionName(op.f)},
            {"key", history.keys[op.key]},
            {"type", OutcomeName(op.outcome)},
            {"open", op.open}};
  if (!op.open) {
    json["complete_index"] = op.complete_index;
    json["complete_time"] = op.complete_time;
  }
  switch (op.f) {
    case Function::kRead:
      if (op.outcome != Outcome::kOk ||
          op.read.kind == ReadValue::Kind::kNull) {
        json["value"] = nullptr;
      } else if (op.read.kind == ReadValue::Kind::kInt) {
        json["value"] = op.read.integer;
      } else {
        json["value"] = op.read.list;
      }
      break;
    case Function::kWrite:
    case Function::kAppend:
      json["value"] = op.arg1;
      break;
    case Function::kCas:
      json["value"] = Json::array({op.arg1, op.arg2});
      break;
  }
  if (!op.node.empty()) json["node"] = op.node;
  if (!op.error.empty()) json["error"] = op.error;
  json["faults"] = ActiveFaults(history, op.invoke_time, op.complete_time);
  return json;
}

Json VerdictJson(Verdict verdict) {
  if (verdict == Verdict::kUnknown) return "unknown";
  return verdict == Verdict::kValid;
}

// "1 key", "2 keys".
std::string Plural(size_t n, const char* noun) {
  return absl::StrCat(n, " ", noun, n == 1 ? "" : "s");
}

std::string Seconds(double seconds) {
  return absl::StrFormat("%.2f s", seconds);
}

void HistorySummary(const CheckResults& results, std::string* out) {
  const History& history = *results.history;
  if (history.valid()) {
    absl::StrAppend(out, "checker history: valid");
    if (!history.open_ops.empty()) {
      absl::StrAppend(out, " (", Plural(history.open_ops.size(), "op"),
                      " open at the end, treated as info)");
    }
    absl::StrAppend(out, "\n");
    for (size_t i = 0; i < history.open_ops.size() && i < kShownOpenOps; ++i) {
      absl::StrAppend(out, "  open: ",
                      DescribeOp(history, history.ops[history.open_ops[i]]),
                      "\n");
    }
    if (history.open_ops.size() > kShownOpenOps) {
      absl::StrAppend(out, "  ... and ",
                      history.open_ops.size() - kShownOpenOps, " more\n");
    }
    return;
  }
  absl::StrAppend(out, "checker history: invalid (",
                  Plural(history.error_count, "error"), ")\n");
  for (size_t i = 0; i < history.errors.size() && i < kShownHistoryErrors;
       ++i) {
    absl::StrAppend(out, "  ", history.errors[i].message, "\n");
  }
  if (history.error_count > kShownHistoryErrors) {
    absl::StrAppend(out, "  ... and ",
                    history.error_count - kShownHistoryErrors, " more\n");
  }
}

void RegisterSummary(const CheckResults& results, std::string* out) {
  const History& history = *results.history;
  if (!results.registers.has_value()) {
    absl::StrAppend(out,
                    "checker linearizable-register: not run (the history is "
                    "invalid)\n");
    return;
  }
  const RegisterResult& result = *results.registers;
  size_t invalid = 0;
  size_t unknown = 0;
  for (const RegisterKeyResult& key : result.failures) {
    (key.verdict == Verdict::kInvalid ? invalid : unknown) += 1;
  }
  const std::string tail =
      absl::StrCat(Seconds(result.seconds), ", max ", result.max_configurations,
                   " configurations/key)");
  absl::StrAppend(out, "checker linearizable-register: ",
                  VerdictName(result.verdict), " (");
  if (invalid > 0) {
    absl::StrAppend(out, invalid, " of ", Plural(result.keys, "key"),
                    " not linearizable, ");
    if (unknown > 0) absl::StrAppend(out, unknown, " unknown, ");
  } else if (unknown > 0) {
    absl::StrAppend(out, unknown, " of ", Plural(result.keys, "key"),
                    " unknown, ");
  } else {
    absl::StrAppend(out, Plural(result.keys, "key"), ", ");
  }
  absl::StrAppend(out, tail, "\n");
  size_t shown = 0;
  for (const RegisterKeyResult& key : result.failures) {
    if (key.verdict != Verdict::kInvalid) continue;
    if (shown++ == kShownRegisterKeys) {
      absl::StrAppend(out, "  ... and ", invalid - kShownRegisterKeys,
                      " more keys not linearizable\n");
      break;
    }
    absl::StrAppend(out, "  key ", history.keys[key.key], ": ", key.reason,
                    "\n");
    for (size_t id : key.shown_ops) {
      absl::StrAppend(out, "    ", DescribeOp(history, history.ops[id]), "\n");
    }
  }
  shown = 0;
  for (const RegisterKeyResult& key : result.failures) {
    if (key.verdict != Verdict::kUnknown) continue;
    if (shown++ == kShownRegisterKeys) {
      absl::StrAppend(out, "  ... and ", unknown - kShownRegisterKeys,
                      " more keys unknown\n");
      break;
    }
    absl::StrAppend(out, "  key ", history.keys[key.key],
                    ": unknown: ", key.reason, "\n");
  }
}

void AppendSummary(const CheckResults& results, std::string* out) {
  const History& history = *results.history;
  if (!results.appends.has_value()) {
    absl::StrAppend(out, "checker append: not run (the history is invalid)\n");
    return;
  }
  const AppendResult& result = *results.appends;
  absl::StrAppend(out, "checker append: ", VerdictName(result.verdict), " (");
  std::vector<std::string> found;
  for (size_t kind = 0; kind < kAppendAnomalyKinds; ++kind) {
    if (result.counts[kind] == 0) continue;
    found.push_back(
        absl::StrCat(AnomalyName(static_cast<AppendAnomalyKind>(kind)), " ",
                     result.counts[kind]));
  }
  if (!found.empty()) absl::StrAppend(out, absl::StrJoin(found, ", "), "; ");
  absl::StrAppend(out, Plural(result.keys, "key"), ", ", result.confirmed,
                  " elements confirmed, ", result.unverified, " unverified)\n");
  for (size_t i = 0; i < result.anomalies.size() && i < kShownAnomalies; ++i) {
    const AppendAnomaly& anomaly = result.anomalies[i];
    absl::StrAppend(out, "  key ", history.keys[anomaly.key], " ",
                    AnomalyName(anomaly.kind), ": ", anomaly.message, "\n");
    for (size_t id : anomaly.ops) {
      absl::StrAppend(out, "    ", DescribeOp(history, history.ops[id]), "\n");
    }
  }
  size_t total = 0;
  for (size_t count : result.counts) total += count;
  if (total > kShownAnomalies) {
    absl::StrAppend(out, "  ... and ", total - kShownAnomalies,
                    " more anomalies (see results.json)\n");
  }
}

}  // namespace

Stats ComputeStats(const History& history) {
  Stats stats;
  for (const Operation& op : history.ops) {
    Count(&stats.all, op);
    Count(&stats.by_f[static_cast<size_t>(op.f)], op);
  }
  for (size_t key = 0; key < history.keys.size(); ++key) {
    if (history.key_kinds[key] == KeyKind::kList) {
      ++stats.list_keys;
    } else {
      ++stats.register_keys;
      stats.max_register_key_ops =
          std::max(stats.max_register_key_ops, history.ops_by_key[key].size());
    }
  }
  for (const FaultWindow& window : history.faults) {
    auto it =
        std::find_if(stats.faults.begin(), stats.faults.end(),
                     [&](const auto& f) { return f.first == window.kind; });
    if (it == stats.faults.end()) {
      stats.faults.emplace_back(window.kind, 1);
    } else {
      ++it->second;
    }
  }
  stats.nemesis_events = history.nemesis_events;
  return stats;
}

int CheckResults::passed() const {
  int count = history->valid() ? 1 : 0;
  if (registers.has_value() && registers->verdict == Verdict::kValid) ++count;
  if (appends.has_value() && appends->verdict == Verdict::kValid) ++count;
  if (coordination.has_value()) count += coordination->passed();
  return count;
}

int CheckResults::failed() const {
  const int applicable =
      1 + (has_register_keys ? 1 : 0) + (has_list_keys ? 1 : 0);
  int coordination_failed = 0;
  if (has_coordination) {
    coordination_failed = coordination.has_value() ? coordination->failed() : 1;
  }
  return applicable - passed() +
         (coordination.has_value() ? coordination->passed() : 0) +
         coordination_failed;
}

size_t CheckResults::checked_ops() const {
  return (registers.has_value() ? registers->checked_ops : 0) +
         (appends.has_value() ? appends->checked_ops : 0);
}

CheckResults RunCheckers(const History& history,
                         const RegisterOptions& options) {
  CheckResults results;
  results.history = &history;
  results.stats = ComputeStats(history);
  results.has_register_keys = results.stats.register_keys > 0;
  results.has_list_keys = results.stats.list_keys > 0;
  if (!history.valid()) return results;
  if (results.has_register_keys) {
    results.registers = CheckRegisters(history, options);
  }
  if (results.has_list_keys) results.appends = CheckAppends(history);
  return results;
}

std::string SummaryText(const CheckResults& results) {
  const Stats& stats = results.stats;
  std::string out = absl::StrCat(
      "ops: ", stats.all.invoked, " invoked | ok ", stats.all.ok, " | fail ",
      stats.all.fail, " | info ", stats.all.info, " | open ", stats.all.open,
      " | register keys ", stats.register_keys);
  if (stats.register_keys > 0) {
    absl::StrAppend(&out, " (max ", stats.max_register_key_ops, " ops/key)");
  }
  absl::StrAppend(&out, " | list keys ", stats.list_keys, "\n");
  std::vector<std::string> faults;
  for (const auto& [kind, count] : stats.faults) {
    faults.push_back(absl::StrCat(kind, " ", count));
  }
  absl::StrAppend(&out, "faults: ",
                  faults.empty() ? "none" : absl::StrJoin(faults, " | "), "\n");
  HistorySummary(results, &out);
  if (results.has_register_keys) RegisterSummary(results, &out);
  if (results.has_list_keys) AppendSummary(results, &out);
  if (results.coordination.has_value()) {
    absl::StrAppend(&out, CoordinationSummary(*results.coordination));
  } else if (results.has_coordination) {
    absl::StrAppend(&out, "watch: INVALID: ", results.coordination_error, "\n");
  }
  absl::StrAppend(&out, "checks: ", results.passed(), " passed, ",
                  results.failed(), " failed\n");
  return out;
}

std::string ResultsJson(const CheckResults& results) {
  const History& history = *results.history;
  Json checks = Json::object();

  Json errors = Json::array();
  for (const HistoryError& error : history.errors) {
    errors.push_back(error.message);
  }
  Json open = Json::array();
  for (size_t id : history.open_ops) {
    open.push_back(OpJson(history, history.ops[id]));
  }
  checks["history"] =
      Json{{"valid", history.valid()},           {"lines", history.lines},
           {"error_count", history.error_count}, {"errors", std::move(errors)},
           {"open", history.open_ops.size()},    {"open_ops", std::move(open)}};

  if (results.has_register_keys) {
    Json check{{"keys", results.stats.register_keys}};
    if (!results.registers.has_value()) {
      check["valid"] = "unknown";
      check["reason"] = "not run: the history is invalid";
    } else {
      const RegisterResult& result = *results.registers;
      check["valid"] = VerdictJson(result.verdict);
      check["seconds"] = result.seconds;
      check["max_configurations"] = result.max_configurations;
      check["max_ops"] = result.max_ops;
      check["checked_ops"] = result.checked_ops;
      Json failures = Json::array();
      for (const RegisterKeyResult& key : result.failures) {
        Json failure{{"key", history.keys[key.key]},
                     {"valid", VerdictJson(key.verdict)},
                     {"reason", key.reason},
                     {"ops_searched", key.ops},
                     {"configurations", key.configurations}};
        if (key.verdict == Verdict::kInvalid) {
          failure["linearized"] = key.linearized;
          failure["register"] =
              key.state_present ? Json(key.state_value) : Json(nullptr);
          failure["culprit"] = OpJson(history, history.ops[key.culprit]);
          Json ops = Json::array();
          for (size_t id : key.shown_ops) {
            ops.push_back(OpJson(history, history.ops[id]));
          }
          failure["ops"] = std::move(ops);
        }
        failures.push_back(std::move(failure));
      }
      check["failures"] = std::move(failures);
    }
    checks["linearizable-register"] = std::move(check);
  }

  if (results.has_list_keys) {
    Json check{{"keys", results.stats.list_keys}};
    if (!results.appends.has_value()) {
      check["valid"] = "unknown";
      check["reason"] = "not run: the history is invalid";
    } else {
      const AppendResult& result = *results.appends;
      check["valid"] = VerdictJson(result.verdict);
      check["seconds"] = result.seconds;
      check["appends"] = Json{{"ok", result.appends_ok},
                              {"info", result.appends_info},
                              {"fail", result.appends_fail}};
      check["reads"] = result.reads;
      check["confirmed"] = result.confirmed;
      check["unverified"] = result.unverified;
      check["checked_ops"] = result.checked_ops;
      Json counts = Json::object();
      for (size_t kind = 0; kind < kAppendAnomalyKinds; ++kind) {
        counts[std::string(AnomalyName(static_cast<AppendAnomalyKind>(kind)))] =
            result.counts[kind];
      }
      check["anomaly_counts"] = std::move(counts);
      Json anomalies = Json::array();
      for (const AppendAnomaly& anomaly : result.anomalies) {
        Json ops = Json::array();
        for (size_t id : anomaly.ops) {
          ops.push_back(OpJson(history, history.ops[id]));
        }
        anomalies.push_back(Json{{"kind", AnomalyName(anomaly.kind)},
                                 {"key", history.keys[anomaly.key]},
                                 {"message", anomaly.message},
                                 {"ops", std::move(ops)}});
      }
      check["anomalies"] = std::move(anomalies);
    }
    checks["append"] = std::move(check);
  }

  if (results.coordination.has_value()) {
    const CoordinationResult& r = *results.coordination;
    checks["watch"] =
        Json{{"valid", r.truth_problems.empty() && r.watcher_problems.empty() &&
                           r.history_problems.empty()},
             {"final_revision", r.final_revision},
             {"watchers", r.watchers},
             {"truth_events", r.truth_events},
             {"watcher_events", r.watcher_events},
             {"reconnects", r.reconnects},
             {"acknowledged_writes", r.writes_checked},
             {"truth_problems", r.truth_problems},
             {"watcher_problems", r.watcher_problems},
             {"history_problems", r.history_problems}};
    checks["lock"] = Json{{"valid", r.fence_problems.empty()},
                          {"fenced_writes", r.fenced_writes},
                          {"holders", r.fence_holders},
                          {"fence_problems", r.fence_problems},
                          {"unfenced_writes", r.unfenced_writes},
                          {"unfenced_interleavings", r.unfenced_interleavings}};
  } else if (results.has_coordination) {
    checks["watch"] =
        Json{{"valid", false}, {"error", results.coordination_error}};
  }

  const Stats& stats = results.stats;
  Json by_f = Json::object();
  for (size_t f = 0; f < stats.by_f.size(); ++f) {
    if (stats.by_f[f].invoked == 0) continue;
    by_f[std::string(FunctionName(static_cast<Function>(f)))] =
        CountsJson(stats.by_f[f]);
  }
  Json faults = Json::object();
  for (const auto& [kind, count] : stats.faults) faults[kind] = count;
  Json windows = Json::array();
  for (const FaultWindow& window : history.faults) {
    windows.push_back(
        Json{{"kind", window.kind},
             {"start", window.start_time},
             {"stop", window.stop_time == kInfinity ? Json(nullptr)
                                                    : Json(window.stop_time)}});
  }
  Json stats_json = CountsJson(stats.all);
  stats_json["by_f"] = std::move(by_f);
  stats_json["faults"] = std::move(faults);
  stats_json["fault_windows"] = std::move(windows);
  stats_json["register_keys"] = stats.register_keys;
  stats_json["list_keys"] = stats.list_keys;
  stats_json["nemesis_events"] = stats.nemesis_events;

  const Json json{{"valid", results.valid()},
                  {"checks", std::move(checks)},
                  {"stats", std::move(stats_json)},
                  {"checked_ops", results.checked_ops()}};
  return json.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

}  // namespace driftwood::jepsen
