// jepsen-check end to end (jepsen/checker/cli.h): history files in a
// temporary folder, the summary, results.json, the plot files and the exit
// codes, through RunCheck and through the binary.
#include "jepsen/checker/cli.h"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "catch2/catch.hpp"
#include "nlohmann/json.hpp"
#include "tests/jepsen/checker/history_builder.h"
#include "tests/support/temp_dir.h"

namespace driftwood::jepsen {
namespace {

using Json = nlohmann::json;
using testing::HistoryBuilder;

struct Run {
  int exit_code = -1;
  std::string out;
  std::string err;
};

Run Check(const std::vector<std::string>& args) {
  std::ostringstream out;
  std::ostringstream err;
  Run run;
  run.exit_code = RunCheck(args, out, err);
  run.out = out.str();
  run.err = err.str();
  return run;
}

std::string WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

Json ReadJson(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.is_open());
  return Json::parse(in);
}

std::string LastLine(const std::string& text) {
  std::string trimmed = text;
  while (!trimmed.empty() && trimmed.back() == '\n') trimmed.pop_back();
  return trimmed.substr(trimmed.rfind('\n') + 1);
}

std::string ValidHistory() {
  return HistoryBuilder()
      .Fault("partition", 1'000'000'000, 2'000'000'000)
      .Fault("kill", 1'500'000'000, -1)
      .Write(1, "r1", 0, 10'000'000, 1)
      .Read(2, "r1", 20'000'000, 30'000'000, "1")
      .Cas(3, "r1", 1'100'000'000, 1'300'000'000, 1, 2, "info")
      .Write(4, "r2", 1'200'000'000, 1'250'000'000, 5, "fail")
      .Append(5, "l1", 0, 5'000'000, 10)
      .Read(5, "l1", 10'000'000, 12'000'000, "[10]")
      .Append(6, "l1", 2'500'000'000, 0, 11, "")
      .Text();
}

TEST_CASE("cli: a valid history passes every check", "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string history =
      WriteFile(dir.path() + "/history.jsonl", ValidHistory());
  const std::string out = dir.path() + "/out";
  const Run run = Check(
      {"--history", history, "--out", out, "--title", "a \"quoted\" title"});
  INFO(run.out << run.err);
  CHECK(run.exit_code == kExitPassed);
  CHECK(run.out.rfind(
            "ops: 7 invoked | ok 4 | fail 1 | info 1 | open 1 | register "
            "keys 2 (max 3 ops/key) | list keys 1\n"
            "faults: partition 1 | kill 1\n"
            "checker history: valid (1 op open at the end, treated as "
            "info)\n",
            0) == 0);
  CHECK(run.out.find("checker linearizable-register: valid (2 keys, ") !=
        std::string::npos);
  CHECK(run.out.find("checker append: valid (1 key, 1 elements confirmed, 0 "
                     "unverified)\n") != std::string::npos);
  CHECK(LastLine(run.out) == "checks: 3 passed, 0 failed");

  const Json results = ReadJson(out + "/results.json");
  CHECK(results["valid"] == true);
  CHECK(results["checks"].size() == 3);
  CHECK(results["checks"]["history"]["valid"] == true);
  CHECK(results["checks"]["history"]["open"] == 1);
  CHECK(results["checks"]["linearizable-register"]["valid"] == true);
  CHECK(results["checks"]["linearizable-register"]["keys"] == 2);
  CHECK(results["checks"]["linearizable-register"]["failures"].empty());
  CHECK(results["checks"]["append"]["valid"] == true);
  CHECK(results["checks"]["append"]["confirmed"] == 1);
  CHECK(results["stats"]["invoked"] == 7);
  CHECK(results["stats"]["ok"] == 4);
  CHECK(results["stats"]["by_f"]["write"]["fail"] == 1);
  CHECK(results["stats"]["faults"]["partition"] == 1);
  CHECK(results["checked_ops"] == 6);

  for (const char* file : {"latency.dat", "throughput.dat", "plot.gp"}) {
    INFO(file);
    CHECK(std::filesystem::file_size(out + "/" + file) > 0);
  }
  std::ifstream gp(out + "/plot.gp");
  const std::string script((std::istreambuf_iterator<char>(gp)),
                           std::istreambuf_iterator<char>());
  CHECK(script.find("title \"a \\\"quoted\\\" title\"") != std::string::npos);
  CHECK(script.find("set object 2 rect") != std::string::npos);
  if (std::filesystem::exists("/usr/bin/gnuplot")) {
    CHECK(std::filesystem::file_size(out + "/latency.png") > 1000);
    CHECK(run.err.empty());
  }
}

TEST_CASE("cli: a non-linearizable history fails with its culprit",
          "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string history =
      WriteFile(dir.path() + "/history.jsonl", HistoryBuilder()
                                                   .Write(1, "r1", 0, 10, 1)
                                                   .Write(1, "r1", 20, 30, 2)
                                                   .Read(2, "r1", 40, 50, "1")
                                                   .Write(3, "r2", 0, 10, 7)
                                                   .Text());
  const std::string out = dir.path() + "/out";
  const Run run = Check({"--history", history, "--out", out, "--no-plot"});
  INFO(run.out << run.err);
  CHECK(run.exit_code == kExitFailed);
  CHECK(run.out.find("checker linearizable-register: invalid (1 of 2 keys "
                     "not linearizable, ") != std::string::npos);
  CHECK(run.out.find("  key r1: after linearizing 2 of 3 ops (register = "
                     "2), read -> 1 (index 6) fits no order\n") !=
        std::string::npos);
  CHECK(LastLine(run.out) == "checks: 1 passed, 1 failed");
  CHECK_FALSE(std::filesystem::exists(out + "/plot.gp"));

  const Json results = ReadJson(out + "/results.json");
  CHECK(results["valid"] == false);
  CHECK_FALSE(results["checks"].contains("append"));
  const Json& check = results["checks"]["linearizable-register"];
  CHECK(check["valid"] == false);
  REQUIRE(check["failures"].size() == 1);
  CHECK(check["failures"][0]["key"] == "r1");
  CHECK(check["failures"][0]["culprit"]["index"] == 6);
  CHECK(check["failures"][0]["culprit"]["value"] == 1);
  CHECK(check["failures"][0]["register"] == 2);
  CHECK(results["checked_ops"] == 4);
}

TEST_CASE("cli: an invalid history fails and skips the other checks",
          "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string history = WriteFile(
      dir.path() + "/history.jsonl",
      R"({"index":1,"time":0,"process":1,"type":"invoke","f":"write","key":"a","value":3}
{"index":2,"time":1,"process":1,"type":"invoke","f":"write","key":"a","value":4}
)");
  const std::string out = dir.path() + "/out";
  const Run run = Check({"--history=" + history, "--out=" + out, "--no-plot"});
  INFO(run.out << run.err);
  CHECK(run.exit_code == kExitFailed);
  CHECK(run.out.find("checker history: invalid (1 error)\n  line 2 (index "
                     "2, process 1): process 1 invokes while") !=
        std::string::npos);
  CHECK(run.out.find("checker linearizable-register: not run") !=
        std::string::npos);
  CHECK(LastLine(run.out) == "checks: 0 passed, 2 failed");
  const Json results = ReadJson(out + "/results.json");
  CHECK(results["valid"] == false);
  CHECK(results["checks"]["history"]["valid"] == false);
  CHECK(results["checks"]["history"]["errors"].size() == 1);
  CHECK(results["checks"]["linearizable-register"]["valid"] == "unknown");
  CHECK(results["checked_ops"] == 0);
}

TEST_CASE("cli: an undecided key makes the run fail as unknown", "[jepsen]") {
  driftwood::testing::TempDir dir;
  HistoryBuilder builder;
  for (int i = 0; i < 5; ++i) builder.Write(i, "r1", i * 10, i * 10 + 5, i);
  const std::string history =
      WriteFile(dir.path() + "/history.jsonl", builder.Text());
  const Run run = Check({"--history", history, "--out", dir.path(), "--no-plot",
                         "--max-ops-per-key", "4"});
  INFO(run.out << run.err);
  CHECK(run.exit_code == kExitFailed);
  CHECK(run.out.find("checker linearizable-register: unknown (1 of 1 key "
                     "unknown, ") != std::string::npos);
  CHECK(run.out.find("  key r1: unknown: too many ops (5 > 4)\n") !=
        std::string::npos);
  const Json results = ReadJson(dir.path() + "/results.json");
  CHECK(results["checks"]["linearizable-register"]["valid"] == "unknown");
}

TEST_CASE("cli: usage errors and unreadable files exit 2", "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string history =
      WriteFile(dir.path() + "/history.jsonl", ValidHistory());
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"--history", history},
      {"--out", dir.path()},
      {"--history", history, "--out", dir.path(), "--frobnicate"},
      {"--history", history, "--out", dir.path(), "--max-ops-per-key", "x"},
      {"--history", history, "--out", dir.path(), "--key-budget-seconds", "-1"},
      {"--history", history, "--out"},
  };
  for (const auto& args : bad) {
    const Run run = Check(args);
    INFO(run.err);
    CHECK(run.exit_code == kExitUsage);
    CHECK(run.err.find("usage: jepsen-check") != std::string::npos);
    CHECK(run.out.empty());
  }
  const Run missing =
      Check({"--history", dir.path() + "/missing.jsonl", "--out", dir.path()});
  CHECK(missing.exit_code == kExitUsage);
  CHECK(missing.err.find(dir.path() + "/missing.jsonl") != std::string::npos);
  const Run help = Check({"--help"});
  CHECK(help.exit_code == kExitPassed);
  CHECK(help.out.find("Exit codes") != std::string::npos);
}

TEST_CASE("cli: the jepsen-check binary's exit codes", "[jepsen]") {
  driftwood::testing::TempDir dir;
  const std::string valid =
      WriteFile(dir.path() + "/valid.jsonl", ValidHistory());
  const std::string invalid =
      WriteFile(dir.path() + "/invalid.jsonl", HistoryBuilder()
                                                   .Write(1, "r", 0, 10, 1)
                                                   .Read(2, "r", 20, 30, "2")
                                                   .Text());
  auto run = [&](const std::string& args) {
    const std::string command = std::string(JEPSEN_CHECK_PATH) + " " + args +
                                " >" + dir.path() + "/stdout 2>" + dir.path() +
                                "/stderr";
    const int status = std::system(command.c_str());
    REQUIRE(WIFEXITED(status));
    return WEXITSTATUS(status);
  };
  CHECK(run("--no-plot --history " + valid + " --out " + dir.path() + "/a") ==
        0);
  CHECK(ReadJson(dir.path() + "/a/results.json")["valid"] == true);
  CHECK(run("--no-plot --history " + invalid + " --out " + dir.path() + "/b") ==
        1);
  CHECK(ReadJson(dir.path() + "/b/results.json")["valid"] == false);
  CHECK(run("--history " + valid) == 2);
}

}  // namespace
}  // namespace driftwood::jepsen
