#include "jepsen/checker/coordination_checker.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace driftwood::jepsen {

namespace {

constexpr size_t kMaxExamples = 5;

struct Event {
  int64_t revision = 0;
  std::string key;
  std::string type;
  std::string value;
  bool operator==(const Event&) const = default;
};

std::string Describe(const Event& event) {
  return absl::StrCat(event.type, " ", event.key, "=", event.value, " @",
                      event.revision);
}

void Note(std::vector<std::string>* problems, std::string problem) {
  if (problems->size() < kMaxExamples) problems->push_back(std::move(problem));
}

// Holders (the part of a value before its last ':') must write in
// contiguous runs; returns the number of returns of an earlier holder.
size_t Interleavings(const std::vector<Event>& truth, const std::string& key,
                     size_t* writes, size_t* holders,
                     std::vector<std::string>* examples) {
  std::set<std::string> finished;
  std::string current;
  size_t count = 0;
  for (const Event& event : truth) {
    if (event.key != key || event.type != "put") continue;
    ++*writes;
    const std::string holder = event.value.substr(0, event.value.rfind(':'));
    if (holder == current) continue;
    if (!current.empty()) finished.insert(current);
    if (finished.contains(holder)) {
      ++count;
      if (examples != nullptr) {
        Note(examples, absl::StrCat("holder ", holder, " wrote ", key,
                                    " again at revision ", event.revision,
                                    " after holder ", current));
      }
    } else {
      ++*holders;
    }
    current = holder;
  }
  return count;
}

}  // namespace

int CoordinationResult::passed() const {
  return (truth_problems.empty() ? 1 : 0) + (watcher_problems.empty() ? 1 : 0) +
         (history_problems.empty() ? 1 : 0) +
         (has_fence && fence_problems.empty() ? 1 : 0);
}

int CoordinationResult::failed() const {
  return (has_fence ? 4 : 3) - passed();
}

absl::StatusOr<CoordinationResult> CheckCoordination(
    const std::string& watch_log, const History& history) {
  std::ifstream in(watch_log);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read ", watch_log));
  }
  CoordinationResult result;
  std::vector<Event> truth;
  std::map<int64_t, std::vector<Event>> seen;  // by watcher
  std::vector<bool> synced;
  bool final_line = false;
  bool has_truth = false;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    nlohmann::json entry = nlohmann::json::parse(line, nullptr, false);
    if (entry.is_discarded() || !entry.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(watch_log, ":", number, ": not a JSON object"));
    }
    // A field of the wrong type makes nlohmann throw: the line is malformed.
    try {
      if (entry.contains("final_revision")) {
        final_line = true;
        result.final_revision = entry.value("final_revision", int64_t{0});
        result.watchers = entry.value("watchers", 0);
        has_truth = entry.value("truth", false);
        synced = entry.value("synced", std::vector<bool>());
        continue;
      }
      if (!entry.contains("w") || !entry["w"].is_number_integer()) {
        return absl::InvalidArgumentError(absl::StrCat(
            watch_log, ":", number, ": no watcher number (\"w\")"));
      }
      const int64_t watcher = entry["w"].get<int64_t>();
      if (entry.contains("reconnect")) {
        ++result.reconnects;
        continue;
      }
      if (entry.contains("canceled")) {
        Note(&result.watcher_problems,
             absl::StrCat("watcher ", watcher,
                          " was cancelled: ", entry.dump()));
        continue;
      }
      if (!entry.contains("rev")) {
        return absl::InvalidArgumentError(absl::StrCat(
            watch_log, ":", number, ": neither an event nor a known line"));
      }
      Event event{entry.value("rev", int64_t{0}), entry.value("key", ""),
                  entry.value("type", ""), entry.value("value", "")};
      if (watcher == -1) {
        truth.push_back(std::move(event));
      } else {
        seen[watcher].push_back(std::move(event));
        ++result.watcher_events;
      }
    } catch (const nlohmann::json::exception& error) {
      return absl::InvalidArgumentError(
          absl::StrCat(watch_log, ":", number, ": a field of the wrong type (",
                       error.what(), ")"));
    }
  }
  for (const auto& [watcher, events] : seen) {
    if (watcher < 0 || watcher >= result.watchers) {
      Note(&result.watcher_problems, absl::StrCat("events of watcher ", watcher,
                                                  ", which the final "
                                                  "line does not count"));
    }
  }
  if (!final_line) {
    return absl::InvalidArgumentError(absl::StrCat(
        watch_log, " has no final line (the client did not finish)"));
  }
  result.truth_events = truth.size();
  const int64_t final_revision = result.final_revision;

  // watch-truth.
  if (!has_truth) {
    Note(&result.truth_problems,
         "no truth: the final watch from revision 1 did not complete");
  } else {
    // Revisions start at 1 and the first write makes 2.
    int64_t expected = 2;
    bool any = false;
    std::set<std::pair<int64_t, std::string>> keys;
    for (const Event& event : truth) {
      if (event.revision != expected &&
          !(any && event.revision == expected - 1)) {
        Note(&result.truth_problems,
             absl::StrCat("the truth jumps from revision ", expected - 1,
                          " to ", event.revision));
      }
      if (!keys.emplace(event.revision, event.key).second) {
        Note(&result.truth_problems,
             absl::StrCat("the truth has ", Describe(event), " twice"));
      }
      expected = std::max(expected, event.revision + 1);
      any = true;
    }
    if (final_revision >= 2 && expected != final_revision + 1) {
      Note(&result.truth_problems,
           absl::StrCat("the truth ends at revision ", expected - 1,
                        ", not at the final revision ", final_revision));
    }
  }

  // watch-exactly-once.
  for (int w = 0; w < result.watchers; ++w) {
    if (static_cast<size_t>(w) >= synced.size() ||
        !synced[static_cast<size_t>(w)]) {
      Note(&result.watcher_problems,
           absl::StrCat("watcher ", w, " never got through revision ",
                        final_revision));
    }
    std::vector<Event> events = seen[w];
    std::erase_if(events, [&](const Event& event) {
      return event.revision > final_revision;
    });
    if (!has_truth) continue;
    const size_t common = std::min(events.size(), truth.size());
    size_t i = 0;
    while (i < common && events[i] == truth[i]) ++i;
    const auto at = static_cast<std::ptrdiff_t>(i);
    if (i == events.size() && i == truth.size()) continue;
    std::string what;
    if (i == events.size()) {
      what = absl::StrCat("stops after ", i, " of ", truth.size(),
                          " events; the next is ", Describe(truth[i]));
    } else if (i == truth.size()) {
      what = absl::StrCat("has ", events.size() - i,
                          " events more than the truth, the first ",
                          Describe(events[i]));
    } else if (std::find(truth.begin(), truth.begin() + at, events[i]) !=
               truth.begin() + at) {
      what = absl::StrCat("repeats ", Describe(events[i]), " (event ", i, ")");
    } else if (std::find(events.begin() + at, events.end(), truth[i]) ==
               events.end()) {
      what = absl::StrCat("skipped ", Describe(truth[i]), " (event ", i,
                          "), got ", Describe(events[i]));
    } else {
      what = absl::StrCat("has ", Describe(events[i]), " where the truth has ",
                          Describe(truth[i]), " (event ", i, ")");
    }
    Note(&result.watcher_problems, absl::StrCat("watcher ", w, " ", what));
  }

  // watch-history: every acknowledged write is a put of the truth.
  if (has_truth) {
    std::map<std::string, std::set<std::string>> values;
    for (const Event& event : truth) {
      if (event.type == "put") values[event.key].insert(event.value);
    }
    for (const Operation& op : history.ops) {
      if (op.outcome != Outcome::kOk || op.f == Function::kRead) continue;
      const std::string& key = history.keys[op.key];
      ++result.writes_checked;
      bool found = false;
      const auto it = values.find(key);
      if (it != values.end()) {
        if (op.f == Function::kWrite || op.f == Function::kCas) {
          found = it->second.contains(
              std::to_string(op.f == Function::kWrite ? op.arg1 : op.arg2));
        } else {
          const std::string element = std::to_string(op.arg1);
          for (const std::string& list : it->second) {
            const size_t comma = list.rfind(',');
            if ((comma == std::string::npos ? list : list.substr(comma + 1)) ==
                element) {
              found = true;
              break;
            }
          }
        }
      }
      if (!found) {
        Note(&result.history_problems,
             absl::StrCat("the acknowledged ", DescribeOp(history, op),
                          " is not in the watched history"));
      }
    }
  }

  // lock-fence, and the unfenced writes for the report.
  result.has_fence =
      std::any_of(truth.begin(), truth.end(),
                  [](const Event& e) { return e.key == "fence"; });
  Interleavings(truth, "fence", &result.fenced_writes, &result.fence_holders,
                &result.fence_problems);
  size_t unfenced_holders = 0;
  result.unfenced_interleavings = Interleavings(
      truth, "unfenced", &result.unfenced_writes, &unfenced_holders, nullptr);
  return result;
}

std::string CoordinationSummary(const CoordinationResult& r) {
  const auto verdict = [](const std::vector<std::string>& problems) {
    return problems.empty()
               ? std::string("valid")
               : absl::StrCat("INVALID: ", absl::StrJoin(problems, "; "));
  };
  std::string out = absl::StrCat(
      "watch-truth: ", verdict(r.truth_problems), " (", r.truth_events,
      " events through revision ", r.final_revision, ")\n",
      "watch-exactly-once: ", verdict(r.watcher_problems), " (", r.watchers,
      " watchers, ", r.watcher_events, " events, ", r.reconnects,
      " reconnects)\n", "watch-history: ", verdict(r.history_problems), " (",
      r.writes_checked, " acknowledged writes)\n");
  if (r.has_fence) {
    absl::StrAppend(&out, "lock-fence: ", verdict(r.fence_problems), " (",
                    r.fenced_writes, " fenced writes by ", r.fence_holders,
                    " holders)\n");
  }
  absl::StrAppend(
      &out, "lock-unfenced (reported, not checked): ", r.unfenced_writes,
      " writes, ", r.unfenced_interleavings, " returns of an earlier holder\n");
  return out;
}

}  // namespace driftwood::jepsen
