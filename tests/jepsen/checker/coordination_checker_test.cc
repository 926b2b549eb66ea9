// The watch and lock checks (jepsen/checker/coordination_checker.h) on
// hand-written watch logs in the format jepsen/client/coordination.cc
// writes: watchers equal to the truth across reconnects pass; a skipped,
// repeated, reordered or changed event, an unsynced watcher, a truth with a
// gap or ending early, an acknowledged write missing from the truth and a
// fenced holder writing again each fail their own check; a log without its
// final line or with a malformed line is an error; and the command line's
// --watch-log.
#include "jepsen/checker/coordination_checker.h"

#include <sys/wait.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "catch2/catch.hpp"
#include "jepsen/checker/cli.h"
#include "nlohmann/json.hpp"
#include "tests/jepsen/checker/history_builder.h"
#include "tests/support/temp_dir.h"

namespace driftwood::jepsen {
namespace {

using Json = nlohmann::json;
using testing::HistoryBuilder;

// One watched event, as the client logs it.
struct Ev {
  int64_t rev = 0;
  std::string key;
  std::string type;
  std::string value;
};

Ev Put(int64_t rev, const std::string& key, const std::string& value) {
  return Ev{rev, key, "put", value};
}
Ev Del(int64_t rev, const std::string& key) {
  return Ev{rev, key, "delete", ""};
}

std::string EventLine(int64_t w, const Ev& e) {
  return Json{{"w", w},         {"rev", e.rev},     {"key", e.key},
              {"type", e.type}, {"value", e.value}, {"node", "n1"}}
      .dump();
}

// A small run through revision 14: registers r1 and list a1 (MainHistory's
// acknowledged writes), two lock holders each with a lock key, fenced
// writes (in contiguous runs) and unfenced writes, and a lease revoke that
// deletes two keys in one revision.
std::vector<Ev> Truth() {
  return {
      Put(2, "r1", "1"),
      Put(3, "a1", "10"),
      Put(4, "jepsen-lock/694d", ""),
      Put(5, "fence", "p0-1:0"),
      Put(6, "unfenced", "p0-1:0"),
      Put(7, "fence", "p0-1:1"),
      Put(8, "r1", "2"),
      Put(9, "a1", "10,11"),
      Del(10, "jepsen-lock/694d"),
      Put(11, "jepsen-lock/694e", ""),
      Put(12, "fence", "p1-1:0"),
      Put(13, "unfenced", "p1-1:0"),
      Del(14, "jepsen-lock/694e"),
      Del(14, "session/694e"),
  };
}

// The register and list clients' history matching Truth(): ok writes, a
// cas and appends that are in it, and info / failed ones that are not.
HistoryBuilder MainHistory() {
  HistoryBuilder builder;
  builder.Write(1, "r1", 0, 10, 1)
      .Append(2, "a1", 0, 10, 10)
      .Cas(1, "r1", 20, 30, 1, 2)
      .Append(2, "a1", 20, 30, 11)
      .Read(3, "r1", 40, 50, "2")
      .Read(4, "a1", 40, 50, "[10,11]")
      .Write(5, "r1", 60, 70, 3, "info")
      .Write(6, "r2", 60, 70, 5, "fail")
      .Append(7, "a1", 60, 70, 12, "info");
  return builder;
}

// A watch log: what each watcher saw, where it reconnected, and the final
// line. Watchers' lines are interleaved as concurrent watchers' are.
struct Scenario {
  std::vector<Ev> truth;
  std::vector<std::vector<Ev>> watchers;
  // (watcher, i): the watcher reconnects before its i-th event.
  std::vector<std::pair<size_t, size_t>> reconnects = {{1, 5}, {2, 3}, {2, 9}};
  // Extra lines written after the watchers' events.
  std::vector<std::string> extra;
  std::vector<bool> synced = {true, true, true};
  int64_t final_revision = 14;
  bool has_truth = true;
  bool final_line = true;

  explicit Scenario(std::vector<Ev> t = Truth())
      : truth(std::move(t)), watchers(3, truth) {}

  std::string Text() const {
    std::vector<std::string> lines;
    // Watcher 0 also saw a write after the final revision before it
    // stopped (the info write of r1 taking effect late).
    std::vector<std::vector<Ev>> seen = watchers;
    seen[0].push_back(Put(final_revision + 1, "r1", "3"));
    size_t longest = 0;
    for (const auto& events : seen) longest = std::max(longest, events.size());
    for (size_t i = 0; i < longest; ++i) {
      for (size_t w = 0; w < seen.size(); ++w) {
        if (i >= seen[w].size()) continue;
        if (std::find(reconnects.begin(), reconnects.end(),
                      std::pair<size_t, size_t>{w, i}) != reconnects.end()) {
          lines.push_back(Json{{"w", w},
                               {"reconnect", true},
                               {"from", "n1"},
                               {"resume", seen[w][i].rev},
                               {"error", "stream ended"}}
                              .dump());
        }
        lines.push_back(EventLine(static_cast<int64_t>(w), seen[w][i]));
      }
    }
    for (const std::string& line : extra) lines.push_back(line);
    if (has_truth) {
      for (const Ev& e : truth) lines.push_back(EventLine(-1, e));
    }
    if (final_line) {
      lines.push_back(Json{
          {"final_revision", final_revision},
          {"watchers", watchers.size()},
          {"synced", synced},
          {"truth",
           has_truth}}.dump());
    }
    std::string text;
    for (const std::string& line : lines) text += line + "\n";
    return text;
  }
};

std::string WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

absl::StatusOr<CoordinationResult> CheckText(const std::string& text,
                                             const History& history) {
  driftwood::testing::TempDir dir;
  return CheckCoordination(WriteFile(dir.path() + "/watch.jsonl", text),
                           history);
}

CoordinationResult Check(const Scenario& scenario,
                         const History& history = MainHistory().Build()) {
  REQUIRE(history.valid());
  absl::StatusOr<CoordinationResult> result =
      CheckText(scenario.Text(), history);
  INFO(scenario.Text());
  REQUIRE(result.ok());
  return *std::move(result);
}

bool Mentions(const std::vector<std::string>& problems,
              const std::string& text) {
  return std::any_of(
      problems.begin(), problems.end(),
      [&](const std::string& p) { return p.find(text) != std::string::npos; });
}

std::vector<Ev> Without(std::vector<Ev> events, size_t index) {
  events.erase(events.begin() + static_cast<std::ptrdiff_t>(index));
  return events;
}

TEST_CASE("coordination: watchers equal to the truth pass every check",
          "[jepsen]") {
  const Scenario scenario;
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  CHECK(result.truth_problems.empty());
  CHECK(result.watcher_problems.empty());
  CHECK(result.history_problems.empty());
  CHECK(result.fence_problems.empty());
  CHECK(result.has_fence);
  CHECK(result.passed() == 4);
  CHECK(result.failed() == 0);
  CHECK(result.final_revision == 14);
  CHECK(result.watchers == 3);
  CHECK(result.truth_events == 14);
  CHECK(result.watcher_events == 3 * 14 + 1);
  CHECK(result.reconnects == 3);
  // write 1, cas 1->2, append 10, append 11; not the info write of r1 3,
  // the failed write of r2 5 nor the info append of 12.
  CHECK(result.writes_checked == 4);
  CHECK(result.fenced_writes == 3);
  CHECK(result.fence_holders == 2);
  CHECK(result.unfenced_writes == 2);
  CHECK(result.unfenced_interleavings == 0);
  CHECK(CoordinationSummary(result) ==
        "watch-truth: valid (14 events through revision 14)\n"
        "watch-exactly-once: valid (3 watchers, 43 events, 3 reconnects)\n"
        "watch-history: valid (4 acknowledged writes)\n"
        "lock-fence: valid (3 fenced writes by 2 holders)\n"
        "lock-unfenced (reported, not checked): 2 writes, 0 returns of an "
        "earlier holder\n");
}

TEST_CASE("coordination: a watcher that skipped an event fails", "[jepsen]") {
  Scenario scenario;
  scenario.watchers[1] = Without(scenario.truth, 5);  // fence @7
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0] ==
        "watcher 1 skipped put fence=p0-1:1 @7 (event 5), got put r1=2 @8");
  CHECK(result.truth_problems.empty());
  CHECK(result.history_problems.empty());
  CHECK(result.fence_problems.empty());
  CHECK(result.passed() == 3);
  CHECK(result.failed() == 1);
  CHECK(CoordinationSummary(result).find(
            "watch-exactly-once: INVALID: watcher 1 skipped") !=
        std::string::npos);
}

TEST_CASE(
    "coordination: a watcher that repeated an event after a reconnect "
    "fails",
    "[jepsen]") {
  Scenario scenario;
  // Watcher 2 reconnects before its event 3 and resumes one revision early.
  std::vector<Ev> events = scenario.truth;
  const Ev again = events[2];
  events.insert(events.begin() + 3, again);
  scenario.watchers[2] = events;
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0] ==
        "watcher 2 repeats put jepsen-lock/694d= @4 (event 3)");
  CHECK(result.failed() == 1);
}

TEST_CASE("coordination: a watcher's events out of order fail", "[jepsen]") {
  Scenario scenario;
  std::swap(scenario.watchers[0][6], scenario.watchers[0][7]);  // @8, @9
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0] ==
        "watcher 0 has put a1=10,11 @9 where the truth has put r1=2 @8 "
        "(event 6)");
  CHECK(result.failed() == 1);
}

TEST_CASE("coordination: a watcher that saw a wrong value fails", "[jepsen]") {
  Scenario scenario;
  scenario.watchers[2][7].value = "10,12";  // a1 @9
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0].starts_with("watcher 2 "));
  CHECK(result.watcher_problems[0].find("put a1=10,12 @9") !=
        std::string::npos);
  CHECK(result.failed() == 1);

  // A wrong type at the right revision fails the same way.
  Scenario deleted;
  deleted.watchers[1][8].type = "put";  // the delete @10
  const CoordinationResult other = Check(deleted);
  CHECK(Mentions(other.watcher_problems, "watcher 1 "));
  CHECK(other.failed() == 1);
}

TEST_CASE("coordination: a watcher that did not sync fails", "[jepsen]") {
  Scenario scenario;
  scenario.synced = {true, false, true};
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0] ==
        "watcher 1 never got through revision 14");
  CHECK(result.failed() == 1);

  // A synced list shorter than the watchers: the missing ones did not sync.
  Scenario shorter;
  shorter.synced = {true, true};
  CHECK(
      Mentions(Check(shorter).watcher_problems, "watcher 2 never got through"));
}

TEST_CASE("coordination: a watcher that stopped early or saw more fails",
          "[jepsen]") {
  Scenario stopped;
  stopped.watchers[0].resize(10);
  const CoordinationResult result = Check(stopped);
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0] ==
        "watcher 0 stops after 10 of 14 events; the next is put "
        "fence=p1-1:0 @12");

  Scenario more;
  more.watchers[1].push_back(Put(14, "r1", "9"));
  const CoordinationResult extra = Check(more);
  REQUIRE(extra.watcher_problems.size() == 1);
  CHECK(extra.watcher_problems[0] ==
        "watcher 1 has 1 events more than the truth, the first put r1=9 @14");
}

TEST_CASE("coordination: a truth with a missing revision fails", "[jepsen]") {
  // Revision 7 is missing from the truth and, so that only the truth is
  // wrong, from every watcher.
  const Scenario scenario(Without(Truth(), 5));
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.truth_problems.size() == 1);
  CHECK(result.truth_problems[0] == "the truth jumps from revision 6 to 8");
  CHECK(result.watcher_problems.empty());
  CHECK(result.history_problems.empty());
  CHECK(result.failed() == 1);
  CHECK(CoordinationSummary(result).starts_with(
      "watch-truth: INVALID: the truth jumps from revision 6 to 8 (13 "
      "events through revision 14)\n"));
}

TEST_CASE("coordination: a truth that ends before the final revision fails",
          "[jepsen]") {
  Scenario scenario;
  scenario.final_revision = 15;
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.truth_problems.size() == 1);
  CHECK(result.truth_problems[0] ==
        "the truth ends at revision 14, not at the final revision 15");
  CHECK(result.watcher_problems.empty());
  CHECK(result.failed() == 1);

  // An event twice in the truth.
  std::vector<Ev> twice = Truth();
  const Ev again = twice[2];
  twice.insert(twice.begin() + 3, again);
  const CoordinationResult repeated = Check(Scenario(twice));
  CHECK(Mentions(repeated.truth_problems,
                 "the truth has put jepsen-lock/694d= @4 twice"));

  // No truth at all: watch-truth fails, and the watchers and the history
  // are not compared with it.
  Scenario none;
  none.has_truth = false;
  const CoordinationResult missing = Check(none);
  REQUIRE(missing.truth_problems.size() == 1);
  CHECK(missing.truth_problems[0].starts_with("no truth"));
  CHECK(missing.watcher_problems.empty());
  CHECK(missing.writes_checked == 0);
  CHECK(missing.failed() == 1);
}

TEST_CASE("coordination: an acknowledged write missing from the truth fails",
          "[jepsen]") {
  const Scenario scenario;

  SECTION("a register write") {
    const CoordinationResult result =
        Check(scenario, MainHistory().Write(8, "r1", 80, 90, 9).Build());
    INFO(CoordinationSummary(result));
    REQUIRE(result.history_problems.size() == 1);
    CHECK(result.history_problems[0].find("write 9") != std::string::npos);
    CHECK(
        result.history_problems[0].ends_with(" is not in the watched history"));
    CHECK(result.writes_checked == 5);
    CHECK(result.failed() == 1);
  }
  SECTION("a cas") {
    const CoordinationResult result =
        Check(scenario, MainHistory().Cas(8, "r1", 80, 90, 2, 4).Build());
    REQUIRE(result.history_problems.size() == 1);
    CHECK(result.history_problems[0].find("cas [2,4]") != std::string::npos);
  }
  SECTION("a write to a key that is not in the truth at all") {
    const CoordinationResult result =
        Check(scenario, MainHistory().Write(8, "r9", 80, 90, 1).Build());
    REQUIRE(result.history_problems.size() == 1);
    CHECK(result.history_problems[0].find("r9") != std::string::npos);
  }
  SECTION("an append whose element ends no PUT of its key") {
    // 10 is in a1's list "10,11" but only as its last element in the
    // first PUT, which this truth lacks.
    const Scenario late(Without(Truth(), 1));  // a1=10 @3
    const CoordinationResult result = Check(late);
    INFO(CoordinationSummary(result));
    REQUIRE(result.history_problems.size() == 1);
    CHECK(result.history_problems[0].find("append 10") != std::string::npos);
    CHECK(result.truth_problems.size() == 1);  // and the gap at 3
  }
  SECTION("an append of an element that is only a suffix of the last") {
    // "11" ends with "1", but the element 1 was never appended.
    const CoordinationResult result =
        Check(scenario, MainHistory().Append(8, "a1", 80, 90, 1).Build());
    REQUIRE(result.history_problems.size() == 1);
    CHECK(result.history_problems[0].find("append 1 ") != std::string::npos);
  }
  SECTION("info and failed writes absent from the truth are fine") {
    const CoordinationResult result =
        Check(scenario, MainHistory()
                            .Write(8, "r1", 80, 90, 7, "info")
                            .Cas(9, "r1", 80, 90, 2, 8, "fail")
                            .Append(10, "a1", 80, 90, 13, "fail")
                            .Append(11, "a9", 80, 90, 1, "info")
                            .Write(12, "r1", 80, 0, 6, "")  // open
                            .Build());
    CHECK(result.history_problems.empty());
    CHECK(result.writes_checked == 4);
    CHECK(result.failed() == 0);
  }
}

TEST_CASE("coordination: a fenced holder writing again after another fails",
          "[jepsen]") {
  // Holder p0-1, then p1-1, then p0-1 again writes the fence key.
  std::vector<Ev> truth = Truth();
  truth[11] = Put(13, "fence", "p0-1:2");
  const CoordinationResult result = Check(Scenario(truth));
  INFO(CoordinationSummary(result));
  REQUIRE(result.fence_problems.size() == 1);
  CHECK(result.fence_problems[0] ==
        "holder p0-1 wrote fence again at revision 13 after holder p1-1");
  CHECK(result.fenced_writes == 4);
  CHECK(result.fence_holders == 2);
  CHECK(result.truth_problems.empty());
  CHECK(result.watcher_problems.empty());
  CHECK(result.history_problems.empty());
  CHECK(result.passed() == 3);
  CHECK(result.failed() == 1);
  CHECK(CoordinationSummary(result).find("lock-fence: INVALID: holder p0-1 "
                                         "wrote fence again") !=
        std::string::npos);
}

TEST_CASE("coordination: unfenced writes that interleave are only counted",
          "[jepsen]") {
  std::vector<Ev> truth = Truth();
  truth[10] = Put(12, "unfenced", "p1-1:0");
  truth[11] = Put(13, "unfenced", "p0-1:2");
  const CoordinationResult result = Check(Scenario(truth));
  INFO(CoordinationSummary(result));
  CHECK(result.unfenced_writes == 3);
  CHECK(result.unfenced_interleavings == 1);
  CHECK(result.fence_problems.empty());
  CHECK(result.fenced_writes == 2);
  CHECK(result.fence_holders == 1);
  CHECK(result.passed() == 4);
  CHECK(result.failed() == 0);
  CHECK(CoordinationSummary(result).find(
            "lock-unfenced (reported, not checked): 3 writes, 1 returns of "
            "an earlier holder\n") != std::string::npos);

  // Without any fenced write there is no lock-fence check.
  std::vector<Ev> unfenced_only = Truth();
  for (Ev& e : unfenced_only) {
    if (e.key == "fence") e.key = "other";
  }
  const CoordinationResult no_fence = Check(Scenario(unfenced_only));
  CHECK_FALSE(no_fence.has_fence);
  CHECK(no_fence.passed() == 3);
  CHECK(no_fence.failed() == 0);
  CHECK(CoordinationSummary(no_fence).find("lock-fence") == std::string::npos);
}

TEST_CASE("coordination: a log without its final line is an error",
          "[jepsen]") {
  Scenario scenario;
  scenario.final_line = false;
  const absl::StatusOr<CoordinationResult> result =
      CheckText(scenario.Text(), MainHistory().Build());
  REQUIRE_FALSE(result.ok());
  CHECK(result.status().message().find("has no final line") !=
        std::string::npos);

  const absl::StatusOr<CoordinationResult> empty =
      CheckText("", MainHistory().Build());
  CHECK_FALSE(empty.ok());

  const absl::StatusOr<CoordinationResult> missing =
      CheckCoordination("/nonexistent/watch.jsonl", MainHistory().Build());
  REQUIRE_FALSE(missing.ok());
  CHECK(absl::IsNotFound(missing.status()));
}

TEST_CASE("coordination: a malformed line is an error", "[jepsen]") {
  const std::string valid = Scenario().Text();
  const size_t second = valid.find('\n') + 1;
  const std::vector<std::string> bad_lines = {
      R"({"w":0,"rev":)", "[1,2]", R"("text")", R"({"w":0,"key":"r1"})"};
  for (const std::string& bad : bad_lines) {
    INFO(bad);
    std::string text = valid;
    text.insert(second, bad + "\n");
    const absl::StatusOr<CoordinationResult> result =
        CheckText(text, MainHistory().Build());
    REQUIRE_FALSE(result.ok());
    CHECK(result.status().message().find("watch.jsonl:2: ") !=
          std::string::npos);
  }
}

// A line that is JSON with a field of the wrong type is malformed too: it
// must be an error, not an exception out of CheckCoordination.
TEST_CASE("coordination: a field of the wrong type is an error", "[jepsen]") {
  const std::string valid = Scenario().Text();
  const std::vector<std::string> bad = {
      R"({"w":0,"rev":"7","key":"fence","type":"put","value":"p0-1:1"})",
      R"({"w":"0","rev":7,"key":"fence","type":"put","value":"p0-1:1"})",
      R"({"w":0,"rev":7,"key":"fence","type":"put","value":7})",
      R"({"w":0,"rev":7,"key":"fence","type":"put","value":null})",
      R"({"final_revision":"14","watchers":3,"synced":[true,true,true],"truth":true})",
      R"({"final_revision":14,"watchers":3,"synced":[1,1,1],"truth":true})",
  };
  for (const std::string& line : bad) {
    INFO(line);
    const std::string text = valid + line + "\n";
    bool threw = false;
    std::string what;
    absl::StatusOr<CoordinationResult> result = absl::UnknownError("unset");
    try {
      result = CheckText(text, MainHistory().Build());
    } catch (const std::exception& e) {
      threw = true;
      what = e.what();
    }
    INFO(what);
    CHECK_FALSE(threw);
    CHECK_FALSE(result.ok());
  }
}

TEST_CASE("coordination: a canceled watch fails watch-exactly-once",
          "[jepsen]") {
  Scenario scenario;
  scenario.extra.push_back(Json{
      {"w", 1},
      {"canceled", true},
      {"compact_revision", 5},
      {"reason", "compacted"},
      {"node", "n2"}}.dump());
  const CoordinationResult result = Check(scenario);
  INFO(CoordinationSummary(result));
  REQUIRE(result.watcher_problems.size() == 1);
  CHECK(result.watcher_problems[0].starts_with("watcher 1 was cancelled: "));
  CHECK(result.watcher_problems[0].find("compacted") != std::string::npos);
  CHECK(result.failed() == 1);
}

// jepsen-check --watch-log.
struct Run {
  int exit_code = -1;
  std::string out;
  std::string err;
};

Run RunCli(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  Run run;
  run.exit_code = RunCheck(args, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.is_open());
  return Json::parse(in);
}

TEST_CASE("coordination: jepsen-check --watch-log", "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string history =
      WriteFile(dir.path() + "/history.jsonl", MainHistory().Text());
  const std::string out = dir.path() + "/out";
  auto check = [&](const std::string& watch_log) {
    return RunCli({"--history", history, "--out", out, "--no-plot",
                   "--watch-log", watch_log});
  };

  SECTION("a valid log passes") {
    const Run run =
        check(WriteFile(dir.path() + "/watch.jsonl", Scenario().Text()));
    INFO(run.out << run.err);
    CHECK(run.exit_code == kExitPassed);
    CHECK(run.out.find("watch-exactly-once: valid (3 watchers, 43 events, 3 "
                       "reconnects)\n") != std::string::npos);
    CHECK(run.out.ends_with("checks: 7 passed, 0 failed\n"));
    const Json results = ReadJson(out + "/results.json");
    CHECK(results["valid"] == true);
    CHECK(results["checks"]["watch"]["valid"] == true);
    CHECK(results["checks"]["watch"]["acknowledged_writes"] == 4);
    CHECK(results["checks"]["lock"]["valid"] == true);
    CHECK(results["checks"]["lock"]["fenced_writes"] == 3);
  }
  SECTION("a failing log fails the run") {
    Scenario scenario;
    scenario.watchers[1] = Without(scenario.truth, 5);
    const Run run =
        check(WriteFile(dir.path() + "/watch.jsonl", scenario.Text()));
    INFO(run.out << run.err);
    CHECK(run.exit_code == kExitFailed);
    CHECK(run.out.find("watch-exactly-once: INVALID: watcher 1 skipped put "
                       "fence=p0-1:1 @7") != std::string::npos);
    CHECK(run.out.ends_with("checks: 6 passed, 1 failed\n"));
    const Json results = ReadJson(out + "/results.json");
    CHECK(results["valid"] == false);
    CHECK(results["checks"]["watch"]["valid"] == false);
    CHECK(results["checks"]["watch"]["watcher_problems"].size() == 1);
    CHECK(results["checks"]["lock"]["valid"] == true);
  }
  SECTION("a failing lock fence fails the run") {
    std::vector<Ev> truth = Truth();
    truth[11] = Put(13, "fence", "p0-1:2");
    const Run run =
        check(WriteFile(dir.path() + "/watch.jsonl", Scenario(truth).Text()));
    INFO(run.out << run.err);
    CHECK(run.exit_code == kExitFailed);
    CHECK(run.out.find("lock-fence: INVALID: ") != std::string::npos);
    const Json results = ReadJson(out + "/results.json");
    CHECK(results["valid"] == false);
    CHECK(results["checks"]["watch"]["valid"] == true);
    CHECK(results["checks"]["lock"]["valid"] == false);
  }
  SECTION("a missing log fails the run") {
    const std::string missing = dir.path() + "/missing.jsonl";
    const Run run = check(missing);
    INFO(run.out << run.err);
    CHECK(run.exit_code == kExitFailed);
    CHECK(run.out.find("watch: INVALID: cannot read " + missing + "\n") !=
          std::string::npos);
    CHECK(run.out.ends_with("checks: 3 passed, 1 failed\n"));
    const Json results = ReadJson(out + "/results.json");
    CHECK(results["valid"] == false);
    CHECK(results["checks"]["watch"]["valid"] == false);
    CHECK(results["checks"]["watch"]["error"].get<std::string>().find(
              missing) != std::string::npos);
  }
  SECTION("a log without its final line fails the run") {
    Scenario scenario;
    scenario.final_line = false;
    const Run run =
        check(WriteFile(dir.path() + "/watch.jsonl", scenario.Text()));
    INFO(run.out << run.err);
    CHECK(run.exit_code == kExitFailed);
    CHECK(run.out.find("watch: INVALID: ") != std::string::npos);
  }
}

// The binary on a log with a wrongly typed field: it must report the log
// as invalid (exit 1), not die of an uncaught exception.
TEST_CASE("coordination: jepsen-check does not crash on a wrongly typed log",
          "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string history =
      WriteFile(dir.path() + "/history.jsonl", MainHistory().Text());
  const std::string log = WriteFile(
      dir.path() + "/watch.jsonl",
      Scenario().Text() +
          R"({"w":0,"rev":"7","key":"fence","type":"put","value":"p0-1:1"})" +
          "\n");
  const std::string command = "ulimit -c 0; " + std::string(JEPSEN_CHECK_PATH) +
                              " --no-plot --history " + history + " --out " +
                              dir.path() + "/out --watch-log " + log + " >" +
                              dir.path() + "/stdout 2>" + dir.path() +
                              "/stderr";
  const int status = std::system(command.c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == kExitFailed);
}

}  // namespace
}  // namespace driftwood::jepsen
