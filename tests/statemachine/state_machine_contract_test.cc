// The StateMachine contract (raft/state_machine.h), run against both
// key-value state machines: apply order and responses, the applied point,
// point-in-time capture, restore replacing the whole state, and malformed
// commands applied as error responses.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "statemachine/memory_kv_state_machine.h"
#include "statemachine/rocksdb_kv_state_machine.h"
#include "tests/statemachine/kv_test_util.h"
#include "tests/support/temp_dir.h"

namespace driftwood::statemachine {
namespace {

using namespace testing;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;

// Each factory makes opened, empty state machines of one kind, and snapshot
// folders that live as long as the factory.
struct Memory {
  driftwood::testing::TempDir dir;
  int folders = 0;

  std::unique_ptr<raft::StateMachine> Make() {
    auto machine = std::make_unique<MemoryKvStateMachine>();
    auto opened = machine->Open();
    REQUIRE(opened.ok());
    REQUIRE(opened->index == raft::LogIndex(0));
    return machine;
  }
  fs::path NewFolder() {
    return fs::path(dir.path()) / absl::StrCat("snapshot-", ++folders);
  }
};

struct RocksDb {
  driftwood::testing::TempDir dir;
  int folders = 0;

  std::unique_ptr<raft::StateMachine> Make() {
    RocksDbKvStateMachineOptions options;
    options.path = fs::path(dir.path()) / absl::StrCat("machine-", ++folders);
    // Small enough that the larger tests span several files.
    options.max_snapshot_file_bytes = 64 << 10;
    auto machine = std::make_unique<RocksDbKvStateMachine>(options);
    auto opened = machine->Open();
    INFO(opened.status().ToString());
    REQUIRE(opened.ok());
    REQUIRE(opened->index == raft::LogIndex(0));
    return machine;
  }
  fs::path NewFolder() {
    return fs::path(dir.path()) / absl::StrCat("snapshot-", ++folders);
  }
};

TEMPLATE_TEST_CASE("Contract: commands apply in order with their responses",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  REQUIRE(Count(*machine) == 0);
  // One batch: later commands see the effects of earlier ones.
  std::vector<KvResponse> r = ApplyCommands(
      *machine,
      {PutCommand{"a", "1"}, PutCommand{"a", "2"},
       CompareAndSwapCommand{"a", "1", "x"},
       CompareAndSwapCommand{"a", "2", "3"},
       CompareAndSwapCommand{"b", std::nullopt, "bee"}, DeleteCommand{"a"},
       DeleteCommand{"a"}, IncrementCommand{"c", 5}, IncrementCommand{"c", -2},
       IncrementCommand{"b", 1}, PutCommand{"d", ""}});
  REQUIRE(r.size() == 11);
  REQUIRE_FALSE(r[0].existed);
  REQUIRE(r[1].existed);
  REQUIRE_FALSE(r[2].swapped);
  REQUIRE(r[2].value == "2");
  REQUIRE(r[3].swapped);
  REQUIRE(r[3].value == "3");
  REQUIRE(r[4].swapped);
  REQUIRE(r[5].existed);
  REQUIRE_FALSE(r[6].existed);
  REQUIRE(r[7].counter == 5);
  REQUIRE(r[8].counter == 3);
  REQUIRE(r[9].code == KvResponseCode::kNotACounter);
  REQUIRE(r[10].ok());
  REQUIRE(machine->applied() == raft::AppliedState{raft::LogIndex(11),
                                                   raft::Term(1),
                                                   Voters({1, 2, 3})});

  REQUIRE_FALSE(Get(*machine, "a").has_value());
  REQUIRE(Get(*machine, "b") == "bee");
  REQUIRE(Get(*machine, "c") == "3");
  REQUIRE(Get(*machine, "d") == "");
  REQUIRE(Count(*machine) == 3);

  // A second batch in a later term with a new configuration.
  r = ApplyCommands(*machine, {IncrementCommand{"c", 10}}, 4, Voters({1, 2}));
  REQUIRE(r[0].counter == 13);
  REQUIRE(machine->applied() == raft::AppliedState{raft::LogIndex(12),
                                                   raft::Term(4),
                                                   Voters({1, 2})});
}

TEMPLATE_TEST_CASE("Contract: no-op entries advance the applied point",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  std::vector<std::string> responses =
      ApplyRaw(*machine, {NoOpEntry(1, 2), NoOpEntry(2, 2)});
  REQUIRE(responses == std::vector<std::string>{"", ""});
  REQUIRE(machine->applied().index == raft::LogIndex(2));
  REQUIRE(machine->applied().term == raft::Term(2));
  responses = ApplyRaw(
      *machine, {CommandEntry(3, 2, PutCommand{"k", "v"}), NoOpEntry(4, 3)});
  REQUIRE(Decode(responses[0]).ok());
  REQUIRE(responses[1].empty());
  REQUIRE(machine->applied().index == raft::LogIndex(4));
  REQUIRE(machine->applied().term == raft::Term(3));
  REQUIRE(Get(*machine, "k") == "v");
}

TEMPLATE_TEST_CASE("Contract: a malformed command is an error response",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  ApplyCommands(*machine, {PutCommand{"k", "v"}});
  std::vector<std::string> responses =
      ApplyRaw(*machine, {RawEntry(2, 1, "\x07garbage"), RawEntry(3, 1, ""),
                          CommandEntry(4, 1, PutCommand{"k2", "v2"})});
  KvResponse bad = Decode(responses[0]);
  REQUIRE(bad.code == KvResponseCode::kMalformedCommand);
  REQUIRE(bad.error.find("unknown op code 7") != std::string::npos);
  REQUIRE(Decode(responses[1]).code == KvResponseCode::kMalformedCommand);
  REQUIRE(Decode(responses[2]).ok());
  REQUIRE(machine->applied().index == raft::LogIndex(4));
  REQUIRE(Get(*machine, "k") == "v");
  REQUIRE(Get(*machine, "k2") == "v2");
  REQUIRE(Count(*machine) == 2);
}

TEMPLATE_TEST_CASE("Contract: a batch not at applied plus one is refused",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  ApplyCommands(*machine, {PutCommand{"k", "v"}});
  const raft::Configuration configuration = Voters({1});
  std::vector<raft::Entry> gap = {CommandEntry(3, 1, PutCommand{"k", "x"})};
  auto result = machine->Apply(raft::ApplyBatch{gap, configuration});
  REQUIRE(absl::IsFailedPrecondition(result.status()));
  std::vector<raft::Entry> holes = {CommandEntry(2, 1, PutCommand{"k", "x"}),
                                    CommandEntry(4, 1, PutCommand{"k", "y"})};
  result = machine->Apply(raft::ApplyBatch{holes, configuration});
  REQUIRE(absl::IsFailedPrecondition(result.status()));
  REQUIRE(machine->applied().index == raft::LogIndex(1));
  REQUIRE(Get(*machine, "k") == "v");
  // An empty batch changes nothing.
  result = machine->Apply(raft::ApplyBatch{{}, configuration});
  REQUIRE(result.ok());
  REQUIRE(result->empty());
  REQUIRE(machine->applied().index == raft::LogIndex(1));
}

TEMPLATE_TEST_CASE("Contract: Capture before anything applied is refused",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  REQUIRE(absl::IsFailedPrecondition(machine->Capture().status()));
}

TEMPLATE_TEST_CASE("Contract: a capture is a point in time", "[statemachine]",
                   Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  ApplyCommands(*machine,
                {PutCommand{"keep", "1"}, PutCommand{"change", "old"},
                 PutCommand{"remove", "r"}, IncrementCommand{"n", 7}},
                2, Voters({1, 2, 3}));
  auto snapshot = machine->Capture();
  REQUIRE(snapshot.ok());
  const raft::SnapshotMeta meta = (*snapshot)->meta();
  REQUIRE(meta == raft::SnapshotMeta{raft::LogIndex(4), raft::Term(2),
                                     Voters({1, 2, 3})});

  // Changes after Capture, in every shard and key, must not show.
  std::vector<KvCommand> later = {
      PutCommand{"change", "new"}, DeleteCommand{"remove"},
      PutCommand{"added", "a"}, IncrementCommand{"n", 1}};
  for (int i = 0; i < 200; ++i) {
    later.push_back(PutCommand{absl::StrCat("later-", i), "x"});
  }
  ApplyCommands(*machine, later, 3, Voters({1, 2}));

  const fs::path folder = factory.NewFolder();
  fs::create_directories(folder);
  absl::Status written = (*snapshot)->WriteTo(folder);
  INFO(written.ToString());
  REQUIRE(written.ok());
  snapshot->reset();

  auto restored = factory.Make();
  absl::Status status = restored->Restore(meta, folder);
  INFO(status.ToString());
  REQUIRE(status.ok());
  REQUIRE(restored->applied() ==
          raft::AppliedState{meta.index, meta.term, meta.configuration});
  REQUIRE(Get(*restored, "keep") == "1");
  REQUIRE(Get(*restored, "change") == "old");
  REQUIRE(Get(*restored, "remove") == "r");
  REQUIRE(Get(*restored, "n") == "7");
  REQUIRE_FALSE(Get(*restored, "added").has_value());
  REQUIRE_FALSE(Get(*restored, "later-0").has_value());
  REQUIRE(Count(*restored) == 4);

  // The live machine is unaffected by the snapshot.
  REQUIRE(Get(*machine, "change") == "new");
  REQUIRE(Count(*machine) == 3 + 1 + 200);

  // Applying continues at meta.index + 1 on the restored machine.
  std::vector<KvResponse> r =
      ApplyCommands(*restored, {IncrementCommand{"n", 1}}, 2);
  REQUIRE(r[0].counter == 8);
  REQUIRE(restored->applied().index == raft::LogIndex(5));
}

// docs/design.md "State machines": the capture is taken on the apply thread
// and written out on a background thread while the state machine keeps
// applying.
TEMPLATE_TEST_CASE(
    "Contract: a capture written out on another thread while "
    "applying holds the captured state",
    "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  std::vector<KvCommand> first;
  for (int i = 0; i < 2000; ++i) {
    first.push_back(PutCommand{absl::StrCat("key-", i), absl::StrCat("v", i)});
  }
  ApplyCommands(*machine, first, 1);
  auto snapshot = machine->Capture();
  REQUIRE(snapshot.ok());
  const raft::SnapshotMeta meta = (*snapshot)->meta();
  const fs::path folder = factory.NewFolder();
  fs::create_directories(folder);

  absl::Status written = absl::UnknownError("not run");
  std::thread writer([&] { written = (*snapshot)->WriteTo(folder); });
  // Meanwhile every key changes, some disappear, new ones appear.
  for (int round = 0; round < 20; ++round) {
    std::vector<KvCommand> later;
    for (int i = round; i < 2000; i += 20) {
      later.push_back(
          PutCommand{absl::StrCat("key-", i), absl::StrCat("round-", round)});
    }
    later.push_back(DeleteCommand{absl::StrCat("key-", 1000 + round)});
    later.push_back(PutCommand{absl::StrCat("new-", round), "n"});
    ApplyCommands(*machine, later, 2);
  }
  writer.join();
  INFO(written.ToString());
  REQUIRE(written.ok());
  snapshot->reset();

  auto restored = factory.Make();
  const absl::Status restored_status = restored->Restore(meta, folder);
  INFO(restored_status.ToString());
  REQUIRE(restored_status.ok());
  REQUIRE(Count(*restored) == 2000);
  for (int i = 0; i < 2000; i += 97) {
    REQUIRE(Get(*restored, absl::StrCat("key-", i)) == absl::StrCat("v", i));
  }
  REQUIRE_FALSE(Get(*restored, "new-0").has_value());
  REQUIRE(Get(*machine, "key-0") == "round-0");
}

TEMPLATE_TEST_CASE("Contract: restore replaces all the old state",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto source = factory.Make();
  ApplyCommands(*source, {PutCommand{"shared", "from-snapshot"},
                          PutCommand{"only-snapshot", "s"}});
  const fs::path folder = factory.NewFolder();
  const raft::SnapshotMeta meta = CaptureTo(*source, folder);

  auto target = factory.Make();
  std::vector<KvCommand> commands = {PutCommand{"shared", "old"}};
  for (int i = 0; i < 300; ++i) {
    commands.push_back(PutCommand{absl::StrCat("old-", i), "o"});
  }
  ApplyCommands(*target, commands, 5, Voters({4, 5, 6}));
  REQUIRE(target->applied().index == raft::LogIndex(301));

  // A snapshot behind the target's applied point also replaces everything.
  const absl::Status restored_status = target->Restore(meta, folder);
  INFO(restored_status.ToString());
  REQUIRE(restored_status.ok());
  REQUIRE(target->applied() == raft::AppliedState{raft::LogIndex(2),
                                                  raft::Term(1),
                                                  Voters({1, 2, 3})});
  REQUIRE(Get(*target, "shared") == "from-snapshot");
  REQUIRE(Get(*target, "only-snapshot") == "s");
  for (int i = 0; i < 300; i += 37) {
    REQUIRE_FALSE(Get(*target, absl::StrCat("old-", i)).has_value());
  }
  REQUIRE(Count(*target) == 2);

  // Restoring twice in a row works (the second replaces the first).
  const absl::Status restored_again = target->Restore(meta, folder);
  INFO(restored_again.ToString());
  REQUIRE(restored_again.ok());
  REQUIRE(Count(*target) == 2);
  // The restored state can be captured and restored again.
  const fs::path again = factory.NewFolder();
  REQUIRE(CaptureTo(*target, again) == meta);
  auto third = factory.Make();
  REQUIRE(third->Restore(meta, again).ok());
  REQUIRE(Get(*third, "shared") == "from-snapshot");
  REQUIRE(Count(*third) == 2);
}

TEMPLATE_TEST_CASE("Contract: a snapshot of no keys restores to no keys",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto source = factory.Make();
  ApplyCommands(*source, {PutCommand{"k", "v"}, DeleteCommand{"k"}});
  ApplyRaw(*source, {NoOpEntry(3, 2)});
  const fs::path folder = factory.NewFolder();
  const raft::SnapshotMeta meta = CaptureTo(*source, folder);
  REQUIRE(meta.index == raft::LogIndex(3));

  auto target = factory.Make();
  ApplyCommands(*target, {PutCommand{"x", "y"}});
  const absl::Status restored_status = target->Restore(meta, folder);
  INFO(restored_status.ToString());
  REQUIRE(restored_status.ok());
  REQUIRE(Count(*target) == 0);
  REQUIRE_FALSE(Get(*target, "x").has_value());
  REQUIRE(target->applied().index == raft::LogIndex(3));
}

TEMPLATE_TEST_CASE("Contract: many keys survive a snapshot round trip",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto source = factory.Make();
  constexpr int kKeys = 5000;
  for (int batch = 0; batch < kKeys / 500; ++batch) {
    std::vector<KvCommand> commands;
    for (int i = batch * 500; i < (batch + 1) * 500; ++i) {
      commands.push_back(
          PutCommand{absl::StrCat("key-", i),
                     std::string(static_cast<size_t>(i % 97),
                                 static_cast<char>('a' + i % 26))});
    }
    ApplyCommands(*source, commands);
  }
  const fs::path folder = factory.NewFolder();
  const raft::SnapshotMeta meta = CaptureTo(*source, folder);
  auto target = factory.Make();
  const absl::Status restored_status = target->Restore(meta, folder);
  INFO(restored_status.ToString());
  REQUIRE(restored_status.ok());
  REQUIRE(Count(*target) == kKeys);
  int mismatches = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = absl::StrCat("key-", i);
    if (Get(*target, key) != Get(*source, key)) ++mismatches;
  }
  REQUIRE(mismatches == 0);
}

TEMPLATE_TEST_CASE("Contract: a malformed query is InvalidArgument",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  REQUIRE(absl::IsInvalidArgument(machine->Query("").status()));
  REQUIRE(absl::IsInvalidArgument(machine->Query("\x09").status()));
  REQUIRE(absl::IsInvalidArgument(
      machine->Query(EncodeQuery(CountQuery{}) + "x").status()));
}

TEMPLATE_TEST_CASE("Contract: concurrent queries see a monotonic counter",
                   "[statemachine]", Memory, RocksDb) {
  TestType factory;
  auto machine = factory.Make();
  REQUIRE(machine->ConcurrentQueries());
  constexpr int64_t kIncrements = 20000;
  std::atomic<bool> done{false};
  std::atomic<int> errors{0};
  std::atomic<int> regressions{0};
  std::atomic<int64_t> reads{0};
  auto reader = [&] {
    int64_t last = 0;
    // Bounded: stops once the applier is done (plus one final read).
    while (true) {
      const bool finished = done.load();
      auto answer = machine->Query(EncodeQuery(GetQuery{"counter"}));
      if (!answer.ok()) {
        ++errors;
        return;
      }
      auto value = DecodeGetResult(*answer);
      if (!value.ok()) {
        ++errors;
        return;
      }
      int64_t seen = 0;
      if (value->has_value()) {
        std::optional<int64_t> parsed = ParseCounter(**value);
        if (!parsed.has_value()) {
          ++errors;
          return;
        }
        seen = *parsed;
      }
      if (seen < last || seen > kIncrements) ++regressions;
      last = seen;
      ++reads;
      if (finished) {
        if (seen != kIncrements) ++errors;
        return;
      }
    }
  };
  std::thread first(reader);
  std::thread second(reader);
  std::mt19937_64 random(7);
  int64_t applied = 0;
  while (applied < kIncrements) {
    const int64_t size = std::min<int64_t>(
        kIncrements - applied, static_cast<int64_t>(random() % 50) + 1);
    std::vector<KvCommand> commands(static_cast<size_t>(size),
                                    IncrementCommand{"counter", 1});
    ApplyCommands(*machine, commands);
    applied += size;
  }
  done.store(true);
  first.join();
  second.join();
  INFO("reads: " << reads.load());
  REQUIRE(errors.load() == 0);
  REQUIRE(regressions.load() == 0);
  REQUIRE(Get(*machine, "counter") == FormatCounter(kIncrements));
}

}  // namespace
}  // namespace driftwood::statemachine
