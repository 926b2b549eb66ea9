// SIGKILL durability of RocksDbKvStateMachine (docs/design.md "Tests", storage
// layer): a child process (counter_writer) applies Increment("counter", 1)
// entries, one per index, and reports its durable applied index after each
// Sync; the test SIGKILLs it at a random moment, then a checker process
// (counter_writer --check) reopens the state machine and the test checks that
// the applied point and the data were written atomically (counter == applied
// index) and that nothing reported durable was lost (applied >= last report).
// The next writer continues from the recovered applied index, so every round
// also checks recovery of the previous one. SIGKILL keeps the page cache: this
// checks atomicity and recovery, not fsync.
//
// DRIFTWOOD_SEED overrides the seed, DRIFTWOOD_KILL_ITERATIONS the number of
// kills (default 50). Every run prints both. This process never opens RocksDB
// (the crash tests in the same executable fork).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace driftwood::statemachine {
namespace {

using driftwood::testing::Child;
using driftwood::testing::Clock;
using driftwood::testing::DescribeWaitStatus;
using std::chrono::milliseconds;

#ifndef DRIFTWOOD_COUNTER_WRITER
#error "DRIFTWOOD_COUNTER_WRITER must name the counter_writer binary"
#endif
constexpr char kWriter[] = DRIFTWOOD_COUNTER_WRITER;

// Generous: how long a child may take to print what the test waits for.
constexpr milliseconds kDeadline(20'000);

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  uint64_t parsed = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &parsed)) return fallback;
  return parsed;
}

// Parses "<word> <number>" lines.
uint64_t NumberAfter(const std::string& line, const std::string& word) {
  std::vector<std::string> parts = absl::StrSplit(line, ' ');
  INFO("line \"" << line << "\", expected \"" << word << " <number>\"");
  REQUIRE(parts.size() == 2);
  REQUIRE(parts[0] == word);
  uint64_t value = 0;
  REQUIRE(absl::SimpleAtoi(parts[1], &value));
  return value;
}

struct Checked {
  uint64_t applied = 0;
  uint64_t counter = 0;
};

// Runs counter_writer --check on `path`.
Checked Check(const std::string& path) {
  auto checker = Child::Spawn({kWriter, "--check", "--path", path});
  std::vector<std::string> lines;
  const int status = checker->Finish(Clock::now() + kDeadline, &lines);
  INFO("checker " << DescribeWaitStatus(status));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  REQUIRE(lines.size() == 1);
  std::vector<std::string> parts = absl::StrSplit(lines[0], ' ');
  INFO("checker printed \"" << lines[0] << "\"");
  REQUIRE(parts.size() == 6);
  REQUIRE(parts[0] == "applied");
  REQUIRE(parts[4] == "counter");
  Checked checked;
  REQUIRE(absl::SimpleAtoi(parts[1], &checked.applied));
  REQUIRE(absl::SimpleAtoi(parts[5], &checked.counter));
  return checked;
}

TEST_CASE(
    "SIGKILL during Apply and Sync never splits data from the applied "
    "index",
    "[statemachine]") {
  const uint64_t seed = EnvOr("DRIFTWOOD_SEED", std::random_device()());
  const uint64_t kills = EnvOr("DRIFTWOOD_KILL_ITERATIONS", 50);
  std::printf(
      "state machine kill test: DRIFTWOOD_SEED=%llu "
      "DRIFTWOOD_KILL_ITERATIONS=%llu\n",
      static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(kills));
  std::fflush(stdout);
  INFO("DRIFTWOOD_SEED=" << seed);
  std::mt19937_64 random(seed);
  driftwood::testing::TempDir dir;
  const std::string path = dir.path() + "/machine";

  uint64_t recovered = 0;  // the applied index the last check found
  uint64_t reports = 0;
  uint64_t progressed = 0;  // reports of more than the round started with
  uint64_t early_kills = 0;
  for (uint64_t round = 0; round < kills; ++round) {
    INFO("round " << round << ", recovered applied index " << recovered);
    // A small memtable: flushes (and kills during them) happen often.
    auto writer = Child::Spawn({kWriter, "--path", path, "--seed",
                                absl::StrCat(seed + round),
                                "--write-buffer-bytes", "262144"});
    std::string line;
    uint64_t start = recovered;
    uint64_t last_durable = 0;
    // One round in five kills the writer while it may still be opening
    // (recovering) the database; the others once it has started applying.
    const bool early = random() % 5 == 0;
    if (!early) {
      REQUIRE(writer->NextLine(Clock::now() + kDeadline, &line) ==
              Child::Read::kLine);
      start = NumberAfter(line, "start");
      REQUIRE(start == recovered);
    } else {
      ++early_kills;
    }
    // A short random delay before the kill, reading reports meanwhile.
    const auto kill_at =
        Clock::now() + milliseconds(static_cast<int64_t>(random() % 60));
    while (true) {
      const Child::Read read = writer->NextLine(kill_at, &line);
      if (read != Child::Read::kLine) {
        INFO("the writer stopped early");
        REQUIRE(read == Child::Read::kTimeout);
        break;
      }
      if (line.rfind("start ", 0) == 0) {
        start = NumberAfter(line, "start");
        REQUIRE(start == recovered);
        continue;
      }
      // Sync reports what flushes made durable, which may still be the
      // starting point while the first flush runs.
      const uint64_t durable = NumberAfter(line, "durable");
      REQUIRE(durable >= start);
      REQUIRE(durable >= last_durable);
      if (durable > start) ++progressed;
      last_durable = durable;
      ++reports;
    }
    const int status = writer->Kill();
    INFO("writer " << DescribeWaitStatus(status));
    // Reports written before the kill are still in the pipe.
    while (writer->NextLine(Clock::now() + kDeadline, &line) ==
           Child::Read::kLine) {
      if (line.rfind("start ", 0) == 0) continue;
      const uint64_t durable = NumberAfter(line, "durable");
      REQUIRE(durable >= last_durable);
      last_durable = durable;
      ++reports;
    }
    REQUIRE(WIFSIGNALED(status));

    if (early && !std::filesystem::exists(path + "/CURRENT_DB")) {
      // Killed before the very first Open created the state machine.
      continue;
    }
    const Checked checked = Check(path);
    INFO("after the kill: applied "
         << checked.applied << ", counter " << checked.counter
         << ", last durable report " << last_durable);
    // The data and the applied index are one atomic write: the counter
    // counts exactly the applied entries.
    REQUIRE(checked.counter == checked.applied);
    // Nothing reported durable is lost, and nothing goes backwards.
    REQUIRE(checked.applied >= last_durable);
    REQUIRE(checked.applied >= recovered);
    recovered = checked.applied;
  }
  std::printf(
      "state machine kill test: %llu kills (%llu early), %llu "
      "durable reports, final applied index %llu\n",
      static_cast<unsigned long long>(kills),
      static_cast<unsigned long long>(early_kills),
      static_cast<unsigned long long>(reports),
      static_cast<unsigned long long>(recovered));
  REQUIRE(reports > 0);
  REQUIRE(progressed > 0);
  REQUIRE(recovered > 0);
}

}  // namespace
}  // namespace driftwood::statemachine
