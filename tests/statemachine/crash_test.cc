// Crash points of RocksDbKvStateMachine::Restore (docs/design.md "Follower
// snapshot installation": restore the state machine atomically through a
// pointer file; a crash between any two steps has a test).
//
// Every RocksDB call runs in a fork()ed child: RocksDB's background threads do
// not survive fork, so this process never opens a database itself. One child
// writes a snapshot, one applies entries and dies at a crash point inside
// Restore (_exit(77)), and a fresh child reopens the folder and reports what
// it finds. The state must be exactly the old one (crash before the pointer
// switch) or exactly the snapshot (after), never a mix, with the other
// database folder cleaned up.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "statemachine/kv_command.h"
#include "statemachine/rocksdb_kv_state_machine.h"
#include "tests/statemachine/kv_test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace driftwood::statemachine {
namespace {

using driftwood::statemachine::testing::SyncThrough;
using driftwood::testing::Child;
using driftwood::testing::Clock;
using driftwood::testing::DescribeWaitStatus;
namespace fs = std::filesystem;

constexpr int kCrashExit = 77;
constexpr auto kChildDeadline = std::chrono::seconds(60);

raft::Configuration Voters(std::vector<uint64_t> ids) {
  raft::Configuration configuration;
  for (uint64_t id : ids) configuration.voters.emplace_back(id);
  return configuration;
}

// The keys every report lists.
const std::vector<std::string> kKeys = {
    "k0", "k1", "k2", "k3", "k4", "k9", "only-old", "only-snapshot"};

// In a child: applies Put(key, value) for each pair, one entry each, from
// applied + 1 in `term`. Returns an error message, empty on success.
std::string ApplyPuts(
    RocksDbKvStateMachine& machine,
    const std::vector<std::pair<std::string, std::string>>& puts, uint64_t term,
    const raft::Configuration& configuration) {
  std::vector<raft::Entry> entries;
  uint64_t index = machine.applied().index.value();
  for (const auto& [key, value] : puts) {
    entries.push_back(raft::Entry{raft::Term(term), raft::LogIndex(++index),
                                  raft::EntryType::kNormal,
                                  EncodeCommand(PutCommand{key, value})});
  }
  auto responses = machine.Apply(raft::ApplyBatch{entries, configuration});
  return responses.ok() ? "" : responses.status().ToString();
}

// Runs `body` in a forked child and REQUIREs exit code `expected_exit`;
// returns its output lines.
std::vector<std::string> RunInChild(const std::function<int(FILE*)>& body,
                                    int expected_exit) {
  auto child = Child::Fork(body);
  std::vector<std::string> lines;
  const int status = child->Finish(Clock::now() + kChildDeadline, &lines);
  INFO("child output:\n" << absl::StrJoin(lines, "\n"));
  INFO("child " << DescribeWaitStatus(status));
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == expected_exit);
  return lines;
}

// In a child: opens the machine at `path`, reports "applied I T", each key
// of kKeys as "key <name> <value>" or "key <name> -", "count N", and each
// entry of `path` as "file <name>".
int Report(const fs::path& path, FILE* out) {
  RocksDbKvStateMachineOptions options;
  options.path = path;
  options.create_if_missing = false;
  RocksDbKvStateMachine machine(options);
  auto opened = machine.Open();
  if (!opened.ok()) {
    std::fprintf(out, "error Open: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  std::fprintf(out, "applied %llu %llu\n",
               static_cast<unsigned long long>(opened->index.value()),
               static_cast<unsigned long long>(opened->term.value()));
  for (const std::string& key : kKeys) {
    auto answer = machine.Query(EncodeQuery(GetQuery{key}));
    if (!answer.ok()) return 2;
    auto value = DecodeGetResult(*answer);
    if (!value.ok()) return 3;
    std::fprintf(out, "key %s %s\n", key.c_str(),
                 value->has_value() ? (*value)->c_str() : "-");
  }
  auto count = machine.Query(EncodeQuery(CountQuery{}));
  if (!count.ok() || !DecodeCountResult(*count).ok()) return 4;
  std::fprintf(out, "count %llu\n",
               static_cast<unsigned long long>(*DecodeCountResult(*count)));
  for (const auto& entry : fs::directory_iterator(path)) {
    std::fprintf(out, "file %s\n", entry.path().filename().c_str());
  }
  return 0;
}

// What a report says.
struct Observed {
  uint64_t index = 0;
  uint64_t term = 0;
  std::map<std::string, std::string> keys;  // "-" when absent
  uint64_t count = 0;
  std::vector<std::string> files;
};

Observed Parse(const std::vector<std::string>& lines) {
  Observed observed;
  for (const std::string& line : lines) {
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    INFO("report line \"" << line << "\"");
    REQUIRE(parts.size() >= 2);
    if (parts[0] == "applied") {
      REQUIRE(parts.size() == 3);
      REQUIRE(absl::SimpleAtoi(parts[1], &observed.index));
      REQUIRE(absl::SimpleAtoi(parts[2], &observed.term));
    } else if (parts[0] == "key") {
      REQUIRE(parts.size() == 3);
      observed.keys[parts[1]] = parts[2];
    } else if (parts[0] == "count") {
      REQUIRE(absl::SimpleAtoi(parts[1], &observed.count));
    } else if (parts[0] == "file") {
      observed.files.push_back(parts[1]);
    }
  }
  std::sort(observed.files.begin(), observed.files.end());
  return observed;
}

// The state before the restore: entries 1..6 in term 1.
const std::vector<std::pair<std::string, std::string>> kOldPuts = {
    {"k0", "old-0"}, {"k1", "old-1"}, {"k2", "old-2"},
    {"k3", "old-3"}, {"k4", "old-4"}, {"only-old", "o"}};
// The snapshot: entries 1..11 in term 2.
std::vector<std::pair<std::string, std::string>> SnapshotPuts() {
  std::vector<std::pair<std::string, std::string>> puts;
  for (int i = 0; i < 10; ++i) {
    puts.emplace_back(absl::StrCat("k", i), absl::StrCat("snap-", i));
  }
  puts.emplace_back("only-snapshot", "s");
  return puts;
}

void RequireOldState(const Observed& observed) {
  REQUIRE(observed.index == 6);
  REQUIRE(observed.term == 1);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(observed.keys.at(absl::StrCat("k", i)) == absl::StrCat("old-", i));
  }
  REQUIRE(observed.keys.at("k9") == "-");
  REQUIRE(observed.keys.at("only-old") == "o");
  REQUIRE(observed.keys.at("only-snapshot") == "-");
  REQUIRE(observed.count == 6);
}

void RequireSnapshotState(const Observed& observed) {
  REQUIRE(observed.index == 11);
  REQUIRE(observed.term == 2);
  for (int i : {0, 1, 2, 3, 4, 9}) {
    REQUIRE(observed.keys.at(absl::StrCat("k", i)) == absl::StrCat("snap-", i));
  }
  REQUIRE(observed.keys.at("only-old") == "-");
  REQUIRE(observed.keys.at("only-snapshot") == "s");
  REQUIRE(observed.count == 11);
}

void RunCrashPoint(const std::string& point, bool expect_snapshot) {
  driftwood::testing::TempDir dir;
  const fs::path root(dir.path());
  const fs::path snapshot_dir = root / "snapshot";
  const fs::path live = root / "live";
  const raft::SnapshotMeta meta{raft::LogIndex(11), raft::Term(2),
                                Voters({1, 2, 3})};

  // 1. A snapshot of another machine.
  RunInChild(
      [&](FILE* out) {
        RocksDbKvStateMachineOptions options;
        options.path = root / "source";
        RocksDbKvStateMachine machine(options);
        if (!machine.Open().ok()) return 1;
        std::string error =
            ApplyPuts(machine, SnapshotPuts(), 2, Voters({1, 2, 3}));
        if (!error.empty()) {
          std::fprintf(out, "error %s\n", error.c_str());
          return 2;
        }
        auto snapshot = machine.Capture();
        if (!snapshot.ok() || !((*snapshot)->meta() == meta)) return 3;
        fs::create_directories(snapshot_dir);
        absl::Status written = (*snapshot)->WriteTo(snapshot_dir);
        if (!written.ok()) {
          std::fprintf(out, "error %s\n", written.ToString().c_str());
          return 4;
        }
        return 0;
      },
      0);

  // 2. A machine with other state dies inside Restore at `point`.
  RunInChild(
      [&](FILE* out) {
        RocksDbKvStateMachineOptions options;
        options.path = live;
        options.crash_point = [&](std::string_view at) {
          if (at == point) {
            std::fflush(out);
            _exit(kCrashExit);
          }
        };
        RocksDbKvStateMachine machine(options);
        if (!machine.Open().ok()) return 1;
        std::string error = ApplyPuts(machine, kOldPuts, 1, Voters({1}));
        if (!error.empty()) {
          std::fprintf(out, "error %s\n", error.c_str());
          return 2;
        }
        // The old state must be durable before the crash, as the test
        // expects to find it afterwards.
        auto synced = SyncThrough(machine, machine.applied().index);
        if (!synced.ok() || *synced != machine.applied().index) return 3;
        absl::Status restored = machine.Restore(meta, snapshot_dir);
        std::fprintf(out, "Restore returned %s without reaching %s\n",
                     restored.ToString().c_str(), point.c_str());
        return 4;
      },
      kCrashExit);

  // 3. A fresh process reopens: old or snapshot state, whole, and one
  // database folder.
  Observed observed =
      Parse(RunInChild([&](FILE* out) { return Report(live, out); }, 0));
  if (expect_snapshot) {
    RequireSnapshotState(observed);
    REQUIRE(observed.files ==
            std::vector<std::string>{"CURRENT_DB", "db-000002"});
  } else {
    RequireOldState(observed);
    REQUIRE(observed.files ==
            std::vector<std::string>{"CURRENT_DB", "db-000001"});
  }

  // 4. Applying continues from the recovered point, and a complete Restore
  // still works afterwards.
  observed = Parse(RunInChild(
      [&](FILE* out) {
        {
          RocksDbKvStateMachineOptions options;
          options.path = live;
          RocksDbKvStateMachine machine(options);
          if (!machine.Open().ok()) return 1;
          std::string error =
              ApplyPuts(machine, {{"k9", "after"}}, 3, Voters({1, 2, 3}));
          if (!error.empty()) {
            std::fprintf(out, "error %s\n", error.c_str());
            return 2;
          }
          if (!machine.Restore(meta, snapshot_dir).ok()) return 3;
        }
        return Report(live, out) == 0 ? 0 : 4;
      },
      0));
  RequireSnapshotState(observed);
  REQUIRE(observed.files.size() == 2);
  REQUIRE(observed.files[0] == "CURRENT_DB");
}

TEST_CASE("Restore crash after the new database is built keeps the old state",
          "[statemachine]") {
  RunCrashPoint("restore:after-build", /*expect_snapshot=*/false);
}

TEST_CASE("Restore crash after the pointer switch gives the snapshot state",
          "[statemachine]") {
  RunCrashPoint("restore:after-pointer", /*expect_snapshot=*/true);
}

}  // namespace
}  // namespace driftwood::statemachine
