// RocksDbKvStateMachine beyond the shared contract: persistence across
// reopen, Sync, the CURRENT_DB pointer and its failure modes, leftover
// folders, snapshot files, and snapshots outliving a Restore.
#include "statemachine/rocksdb_kv_state_machine.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "raft/storage/file_util.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_writer.h"
#include "tests/raft/storage/recording_fs.h"
#include "tests/statemachine/kv_test_util.h"
#include "tests/statemachine/live_tables.h"
#include "tests/support/temp_dir.h"

namespace driftwood::statemachine {
namespace {

using namespace testing;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;

RocksDbKvStateMachineOptions Options(const fs::path& path) {
  RocksDbKvStateMachineOptions options;
  options.path = path;
  return options;
}

std::unique_ptr<RocksDbKvStateMachine> Opened(
    const RocksDbKvStateMachineOptions& options) {
  auto machine = std::make_unique<RocksDbKvStateMachine>(options);
  auto opened = machine->Open();
  INFO("Open: " << opened.status().ToString());
  REQUIRE(opened.ok());
  return machine;
}

absl::Status OpenStatus(const RocksDbKvStateMachineOptions& options) {
  RocksDbKvStateMachine machine(options);
  return machine.Open().status();
}

std::vector<std::string> Names(const fs::path& folder) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

void WriteAll(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  REQUIRE(out.good());
}

void RequireStatus(const absl::Status& status, absl::StatusCode code,
                   const std::vector<std::string>& needles) {
  INFO("status: " << status.ToString());
  REQUIRE(status.code() == code);
  for (const std::string& needle : needles) {
    INFO("expected to find: " << needle);
    REQUIRE(std::string(status.message()).find(needle) != std::string::npos);
  }
}

TEST_CASE("RocksDb: reopen reports the applied state and the data",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  {
    auto machine = Opened(options);
    REQUIRE(machine->persistent());
    REQUIRE(machine->applied() == raft::AppliedState{});
    ApplyCommands(*machine, {PutCommand{"a", "1"}, IncrementCommand{"n", 3}}, 2,
                  Voters({1, 2, 3}));
    ApplyRaw(*machine, {NoOpEntry(3, 5)}, Voters({1, 2, 3, 4}));
  }
  const raft::AppliedState expected{raft::LogIndex(3), raft::Term(5),
                                    Voters({1, 2, 3, 4})};
  RocksDbKvStateMachine machine(options);
  auto opened = machine.Open();
  REQUIRE(opened.ok());
  REQUIRE(*opened == expected);
  REQUIRE(machine.applied() == expected);
  REQUIRE(Get(machine, "a") == "1");
  REQUIRE(Get(machine, "n") == "3");
  REQUIRE(Count(machine) == 2);
  // Applying continues from the reopened point.
  std::vector<KvResponse> r =
      ApplyCommands(machine, {IncrementCommand{"n", 1}});
  REQUIRE(r[0].counter == 4);
  REQUIRE(machine.applied().index == raft::LogIndex(4));
}

TEST_CASE("RocksDb: tables a compaction made obsolete go through .trash",
          "[statemachine]") {
  // raft/storage/rocksdb_background_io.h: an obsolete file is renamed and
  // shrunk in steps, never unlinked whole at once.
  driftwood::testing::TempDir dir;
  auto recording = std::make_shared<driftwood::testing::RecordingFs>(
      rocksdb::FileSystem::Default());
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(recording);
  RocksDbKvStateMachineOptions options = Options(fs::path(dir.path()) / "m");
  options.env = env.get();
  auto machine = Opened(options);
  for (int table = 0; table < 3; ++table) {
    ApplyCommands(*machine, {PutCommand{absl::StrCat("k", table), "v"}});
    REQUIRE(SyncThrough(*machine, machine->applied().index).ok());
  }
  REQUIRE(machine->CompactStorage().ok());
  const std::string table = recording->FirstTrashed(".sst");
  REQUIRE(!table.empty());
  CHECK(recording->WaitFor("delete " + table + ".trash"));
  for (const std::string& call : recording->calls()) {
    INFO(call);
    CHECK(!(call.starts_with("delete ") && call.ends_with(".sst")));
  }
  CHECK(Get(*machine, "k2") == "v");
}

TEST_CASE(
    "RocksDb: compactions keep each key kind in files of its own, so an "
    "appended history is not rewritten",
    "[statemachine]") {
  // Keys "e" + sequence number are only ever appended; "m" is rewritten by
  // every batch, as the MVCC store's event records and revision are.
  driftwood::testing::TempDir dir;
  RocksDbKvStateMachineOptions options = Options(fs::path(dir.path()) / "m");
  options.key_kind_bytes = 1;
  auto machine = Opened(options);
  uint64_t sequence = 0;
  auto append_round = [&] {
    for (int flush = 0; flush < 4; ++flush) {
      std::vector<KvCommand> commands;
      for (int i = 0; i < 50; ++i) {
        commands.push_back(
            PutCommand{absl::StrFormat("e%012d", ++sequence), "event"});
      }
      commands.push_back(PutCommand{"m", absl::StrCat(sequence)});
      ApplyCommands(*machine, commands);
      REQUIRE(SyncThrough(*machine, machine->applied().index).ok());
    }
    REQUIRE(machine->CompactStorage().ok());
  };
  auto history_tables = [&] {
    std::vector<std::string> names;
    for (const rocksdb::LiveFileMetaData& table : LiveTables(*machine)) {
      INFO(table.name << " holds " << table.smallestkey << " .. "
                      << table.largestkey);
      // 'd' + the application key's kind byte, or the applied record's 'm'.
      const size_t kind =
          table.smallestkey.starts_with(RocksDbKvStateMachine::kDataPrefix) ? 2
                                                                            : 1;
      CHECK(table.largestkey.substr(0, kind) ==
            table.smallestkey.substr(0, kind));
      if (table.smallestkey.starts_with("de")) names.push_back(table.name);
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  append_round();
  const std::vector<std::string> first = history_tables();
  REQUIRE(!first.empty());
  append_round();
  const std::vector<std::string> second = history_tables();
  // The first round's history files are still there, untouched: the second
  // round's compaction overlapped only the rewritten keys' files.
  for (const std::string& table : first) {
    INFO(table);
    CHECK(std::find(second.begin(), second.end(), table) != second.end());
  }
  CHECK(second.size() > first.size());
  CHECK(Get(*machine, "e000000000001") == "event");
  CHECK(Get(*machine, "m") == absl::StrCat(sequence));
}

TEST_CASE("RocksDb: Sync reports what flushes made durable and catches up",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path path = fs::path(dir.path()) / "machine";
  auto machine = Opened(Options(path));
  auto synced = machine->Sync();
  REQUIRE(synced.ok());
  REQUIRE(*synced == raft::LogIndex(0));
  ApplyCommands(*machine, {PutCommand{"a", "1"}, PutCommand{"b", "2"}});
  synced = machine->Sync();
  REQUIRE(synced.ok());
  REQUIRE(*synced <= raft::LogIndex(2));
  synced = SyncThrough(*machine, raft::LogIndex(2));
  REQUIRE(synced.ok());
  REQUIRE(*synced == raft::LogIndex(2));
  // What Sync reported is in an SST file, and what was applied after it is in
  // no file yet: a read-only open (which sees SST files and write-ahead logs)
  // finds a and b but not c.
  ApplyCommands(*machine, {PutCommand{"c", "3"}});
  {
    std::ifstream current(path / RocksDbKvStateMachine::kCurrentFileName);
    std::string folder;
    current >> folder;
    rocksdb::Options options;
    options.paranoid_checks = true;
    rocksdb::DB* raw = nullptr;
    REQUIRE(
        rocksdb::DB::OpenForReadOnly(options, (path / folder).string(), &raw)
            .ok());
    std::unique_ptr<rocksdb::DB> read_only(raw);
    std::string value;
    CHECK(read_only->Get(rocksdb::ReadOptions(), "da", &value).ok());
    CHECK(read_only->Get(rocksdb::ReadOptions(), "db", &value).ok());
    CHECK(read_only->Get(rocksdb::ReadOptions(), "dc", &value).IsNotFound());
  }
}

TEST_CASE("RocksDb: with the write-ahead log, Sync returns the applied index",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  RocksDbKvStateMachineOptions options =
      Options(fs::path(dir.path()) / "machine");
  options.write_ahead_log = true;
  auto machine = Opened(options);
  ApplyCommands(*machine, {PutCommand{"a", "1"}, PutCommand{"b", "2"}});
  auto synced = machine->Sync();
  REQUIRE(synced.ok());
  REQUIRE(*synced == raft::LogIndex(2));
}

TEST_CASE("RocksDb: the folder layout is CURRENT_DB and one database",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path path = fs::path(dir.path()) / "machine";
  auto machine = Opened(Options(path));
  REQUIRE(Names(path) == std::vector<std::string>{"CURRENT_DB", "db-000001"});
  REQUIRE(*raft::ReadFileToString(path / "CURRENT_DB") == "db-000001\n");
  REQUIRE(machine->live_folder() == path / "db-000001");
}

TEST_CASE("RocksDb: a missing state machine is NotFound without create",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  auto options = Options(fs::path(dir.path()) / "machine");
  options.create_if_missing = false;
  RequireStatus(OpenStatus(options), absl::StatusCode::kNotFound,
                {"no state machine"});
  fs::create_directories(options.path);
  RequireStatus(OpenStatus(options), absl::StatusCode::kNotFound,
                {"CURRENT_DB"});
  RequireStatus(OpenStatus(Options("")), absl::StatusCode::kInvalidArgument,
                {"path"});
}

TEST_CASE("RocksDb: CURRENT_DB naming a missing folder is DataLoss",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  { Opened(options); }
  REQUIRE(
      raft::WriteFileDurably(options.path / "CURRENT_DB", "db-000007\n").ok());
  RequireStatus(OpenStatus(options), absl::StatusCode::kDataLoss,
                {"db-000007", "does not exist"});
}

TEST_CASE("RocksDb: a malformed CURRENT_DB is DataLoss", "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  { Opened(options); }
  for (const char* text : {"", "db-000001", "db-1\n", "db-x\n", "garbage\n",
                           "db-000000\n", "db-000001\nextra"}) {
    INFO("CURRENT_DB \"" << text << "\"");
    WriteAll(options.path / "CURRENT_DB", text);
    RequireStatus(OpenStatus(options), absl::StatusCode::kDataLoss,
                  {"CURRENT_DB"});
  }
}

TEST_CASE("RocksDb: CURRENT_DB naming a folder that is not a database",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  { Opened(options); }
  fs::create_directories(options.path / "db-000002");
  REQUIRE(
      raft::WriteFileDurably(options.path / "CURRENT_DB", "db-000002\n").ok());
  RequireStatus(OpenStatus(options), absl::StatusCode::kDataLoss,
                {"db-000002", "not a RocksDB database"});
}

TEST_CASE("RocksDb: a lost CURRENT_DB with data is DataLoss",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  {
    auto machine = Opened(options);
    ApplyCommands(*machine, {PutCommand{"a", "1"}});
  }
  fs::remove(options.path / "CURRENT_DB");
  RequireStatus(OpenStatus(options), absl::StatusCode::kDataLoss,
                {"CURRENT_DB is missing", "applied index 1"});
  fs::rename(options.path / "db-000001", options.path / "db-000004");
  RequireStatus(OpenStatus(options), absl::StatusCode::kDataLoss,
                {"CURRENT_DB is missing", "db-000004"});
}

TEST_CASE("RocksDb: an interrupted first Open is finished by the next",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  { Opened(options); }
  // What a crash before CURRENT_DB was written leaves: db-000001 alone.
  fs::remove(options.path / "CURRENT_DB");
  auto machine = Opened(options);
  REQUIRE(machine->applied() == raft::AppliedState{});
  REQUIRE(Names(options.path) ==
          std::vector<std::string>{"CURRENT_DB", "db-000001"});
}

TEST_CASE("RocksDb: a corrupt applied record is DataLoss", "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  {
    auto machine = Opened(options);
    ApplyCommands(*machine, {PutCommand{"a", "1"}});
  }
  for (const std::string& bad :
       {std::string("garbage"), std::string(), std::string("\x01\x02", 2)}) {
    {
      rocksdb::DB* raw = nullptr;
      rocksdb::Options db_options;
      REQUIRE(rocksdb::DB::Open(db_options,
                                (options.path / "db-000001").string(), &raw)
                  .ok());
      std::unique_ptr<rocksdb::DB> db(raw);
      REQUIRE(db->Put(rocksdb::WriteOptions(),
                      RocksDbKvStateMachine::kAppliedKey, bad)
                  .ok());
    }
    RequireStatus(OpenStatus(options), absl::StatusCode::kDataLoss,
                  {"applied-state record", "db-000001"});
  }
}

TEST_CASE("RocksDb: Open removes leftover folders", "[statemachine]") {
  driftwood::testing::TempDir dir;
  const auto options = Options(fs::path(dir.path()) / "machine");
  {
    auto machine = Opened(options);
    ApplyCommands(*machine, {PutCommand{"a", "1"}});
  }
  fs::create_directories(options.path / "db-000002" / "sub");
  WriteAll(options.path / "db-000002" / "file", "x");
  fs::create_directories(options.path / "db-000009");
  WriteAll(options.path / "CURRENT_DB.tmp", "db-000002\n");
  auto machine = Opened(options);
  REQUIRE(Names(options.path) ==
          std::vector<std::string>{"CURRENT_DB", "db-000001"});
  REQUIRE(Get(*machine, "a") == "1");
  REQUIRE(machine->applied().index == raft::LogIndex(1));
}

TEST_CASE("RocksDb: Restore switches folders and survives reopen",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path root(dir.path());
  auto source = Opened(Options(root / "source"));
  ApplyCommands(*source, {PutCommand{"s", "snap"}}, 3, Voters({1, 2}));
  const fs::path folder = root / "snapshot";
  const raft::SnapshotMeta meta = CaptureTo(*source, folder);
  // The snapshot store's own files sit beside ours; Restore ignores them.
  WriteAll(folder / "SNAPSHOT_META", "not an sst");

  const auto options = Options(root / "target");
  {
    auto target = Opened(options);
    ApplyCommands(*target, {PutCommand{"t", "old"}});
    REQUIRE(target->Restore(meta, folder).ok());
    REQUIRE(target->live_folder() == options.path / "db-000002");
    REQUIRE(Names(options.path) ==
            std::vector<std::string>{"CURRENT_DB", "db-000002"});
    // The snapshot's files were copied, not moved.
    REQUIRE(Names(folder).size() == 2);
  }
  auto target = Opened(options);
  REQUIRE(target->applied() ==
          raft::AppliedState{meta.index, meta.term, meta.configuration});
  REQUIRE(Get(*target, "s") == "snap");
  REQUIRE_FALSE(Get(*target, "t").has_value());
  REQUIRE(Count(*target) == 1);
  REQUIRE(target->Restore(meta, folder).ok());
  REQUIRE(target->live_folder() == options.path / "db-000003");
}

TEST_CASE("RocksDb: a snapshot outlives a Restore of its machine",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path root(dir.path());
  auto source = Opened(Options(root / "source"));
  ApplyCommands(*source, {PutCommand{"new", "n"}});
  const raft::SnapshotMeta new_meta = CaptureTo(*source, root / "new");

  const auto options = Options(root / "target");
  auto target = Opened(options);
  ApplyCommands(*target, {PutCommand{"old", "o"}, PutCommand{"other", "x"}});
  auto captured = target->Capture();
  REQUIRE(captured.ok());
  REQUIRE(target->Restore(new_meta, root / "new").ok());
  // The old database stays open (and on disk) for the snapshot.
  REQUIRE(fs::exists(options.path / "db-000001"));
  fs::create_directories(root / "old");
  REQUIRE((*captured)->WriteTo(root / "old").ok());
  const raft::SnapshotMeta old_meta = (*captured)->meta();
  captured->reset();
  REQUIRE_FALSE(fs::exists(options.path / "db-000001"));

  auto check = Opened(Options(root / "check"));
  REQUIRE(check->Restore(old_meta, root / "old").ok());
  REQUIRE(Get(*check, "old") == "o");
  REQUIRE(Count(*check) == 2);
  REQUIRE(Get(*target, "new") == "n");
}

TEST_CASE("RocksDb: WriteTo splits the data into bounded SST files",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path root(dir.path());
  auto options = Options(root / "source");
  options.max_snapshot_file_bytes = 32 << 10;
  auto source = Opened(options);
  // Random values: RocksDB compresses SST blocks, and the limit is on the
  // compressed size.
  std::mt19937_64 random(1);
  std::vector<KvCommand> commands;
  std::string last_value;
  for (int i = 0; i < 2000; ++i) {
    std::string value(100, ' ');
    for (char& c : value) c = static_cast<char>(random());
    last_value = value;
    commands.push_back(PutCommand{absl::StrFormat("key-%05d", i), value});
  }
  ApplyCommands(*source, commands);
  const raft::SnapshotMeta meta = CaptureTo(*source, root / "snapshot");
  const std::vector<std::string> names = Names(root / "snapshot");
  REQUIRE(names.size() > 3);
  for (const std::string& name : names) {
    REQUIRE(name.substr(0, 5) == "data-");
    REQUIRE(fs::path(name).extension() == ".sst");
    // A file is finished at the first Put that reaches the limit.
    REQUIRE(fs::file_size(root / "snapshot" / name) < (64 << 10));
  }
  auto target = Opened(Options(root / "target"));
  REQUIRE(target->Restore(meta, root / "snapshot").ok());
  REQUIRE(Count(*target) == 2000);
  REQUIRE(Get(*target, "key-01999") == last_value);
}

TEST_CASE("RocksDb: Restore rejects SST files it did not write",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path root(dir.path());
  const fs::path folder = root / "snapshot";
  fs::create_directories(folder);
  const raft::SnapshotMeta meta{raft::LogIndex(5), raft::Term(1), Voters({1})};
  auto target = Opened(Options(root / "target"));
  ApplyCommands(*target, {PutCommand{"mine", "m"}});

  SECTION("keys outside the data prefix") {
    rocksdb::SstFileWriter writer{rocksdb::EnvOptions(), rocksdb::Options()};
    REQUIRE(writer.Open((folder / "data-000001.sst").string()).ok());
    REQUIRE(writer.Put("mapplied", "forged").ok());
    REQUIRE(writer.Finish().ok());
    RequireStatus(target->Restore(meta, folder), absl::StatusCode::kDataLoss,
                  {"data-000001.sst", "outside"});
  }
  SECTION("not an SST file") {
    WriteAll(folder / "data-000001.sst", "this is not an sst file");
    RequireStatus(target->Restore(meta, folder), absl::StatusCode::kDataLoss,
                  {"data-000001.sst", "not a readable SST file"});
  }
  SECTION("deletions") {
    rocksdb::SstFileWriter writer{rocksdb::EnvOptions(), rocksdb::Options()};
    REQUIRE(writer.Open((folder / "data-000001.sst").string()).ok());
    REQUIRE(writer.Delete("dkey").ok());
    REQUIRE(writer.Finish().ok());
    RequireStatus(target->Restore(meta, folder), absl::StatusCode::kDataLoss,
                  {"data-000001.sst", "deletions"});
  }
  // Nothing changed, and no half-built folder is left.
  REQUIRE(target->applied().index == raft::LogIndex(1));
  REQUIRE(Get(*target, "mine") == "m");
  REQUIRE(Names(root / "target") ==
          std::vector<std::string>{"CURRENT_DB", "db-000001"});
}

TEST_CASE("RocksDb: calls before Open are refused", "[statemachine]") {
  driftwood::testing::TempDir dir;
  RocksDbKvStateMachine machine(Options(fs::path(dir.path()) / "machine"));
  REQUIRE(absl::IsFailedPrecondition(machine.Capture().status()));
  REQUIRE(absl::IsFailedPrecondition(machine.Sync().status()));
  REQUIRE(absl::IsFailedPrecondition(
      machine.Query(EncodeQuery(CountQuery{})).status()));
  std::vector<raft::Entry> entries = {NoOpEntry(1, 1)};
  REQUIRE(absl::IsFailedPrecondition(
      machine.Apply(raft::ApplyBatch{entries, Voters({1})}).status()));
  REQUIRE(machine.Open().ok());
  REQUIRE(absl::IsFailedPrecondition(machine.Open().status()));
}

// An application whose entries are "new KEY VALUE" (PutNew), "put KEY VALUE",
// "del KEY", "get KEY" (the value the batch sees, or "-") and "scan" (every
// key=value; the batch sees), and whose queries are a key (its value, or
// "-").
class PutNewApplication : public KvApplication {
 public:
  absl::StatusOr<std::string> Apply(std::string_view data,
                                    OrderedKv& store) override {
    const std::vector<std::string> words =
        absl::StrSplit(std::string(data), ' ');
    if (words[0] == "new") {
      if (absl::Status s = store.PutNew(words[1], words[2]); !s.ok()) return s;
      return std::string("ok");
    }
    if (words[0] == "put") {
      if (absl::Status s = store.Put(words[1], words[2]); !s.ok()) return s;
      return std::string("ok");
    }
    if (words[0] == "del") {
      if (absl::Status s = store.Delete(words[1]); !s.ok()) return s;
      return std::string("ok");
    }
    if (words[0] == "scan") {
      std::string out;
      absl::Status s = store.Scan(
          "", "\xff", [&](std::string_view key, std::string_view value) {
            out.append(key).append("=").append(value).append(";");
            return true;
          });
      if (!s.ok()) return s;
      return out;
    }
    absl::StatusOr<std::optional<std::string>> value = store.Get(words[1]);
    if (!value.ok()) return value.status();
    return value->value_or("-");
  }
  absl::StatusOr<std::string> Query(std::string_view query,
                                    OrderedKv& state) const override {
    absl::StatusOr<std::optional<std::string>> value = state.Get(query);
    if (!value.ok()) return value.status();
    return value->value_or("-");
  }
};

TEST_CASE(
    "RocksDb: PutNew writes are read back within their batch and kept after "
    "a reopen",
    "[statemachine]") {
  driftwood::testing::TempDir dir;
  PutNewApplication application;
  RocksDbKvStateMachineOptions options = Options(fs::path(dir.path()) / "m");
  options.application = &application;
  {
    std::unique_ptr<RocksDbKvStateMachine> machine = Opened(options);
    CHECK(
        ApplyRaw(*machine, {RawEntry(1, 1, "new a 1"), RawEntry(2, 1, "get a"),
                            RawEntry(3, 1, "new a 2"), RawEntry(4, 1, "get a"),
                            RawEntry(5, 1, "new b 3"), RawEntry(6, 1, "get b"),
                            RawEntry(7, 1, "get c")}) ==
        std::vector<std::string>{"ok", "1", "ok", "2", "ok", "3", "-"});
    CHECK(*machine->Query("a") == "2");
    CHECK(
        ApplyRaw(*machine, {RawEntry(8, 1, "put a 4"), RawEntry(9, 1, "get a"),
                            RawEntry(10, 1, "new c 5")}) ==
        std::vector<std::string>{"ok", "4", "ok"});
    REQUIRE(machine->Sync().ok());
  }
  std::unique_ptr<RocksDbKvStateMachine> reopened = Opened(options);
  CHECK(*reopened->Query("a") == "4");
  CHECK(*reopened->Query("b") == "3");
  CHECK(*reopened->Query("c") == "5");
#ifndef NDEBUG
  // The promise is checked where assertions are on: the key is stored.
  std::vector<raft::Entry> entries = {RawEntry(11, 1, "new b 6")};
  absl::StatusOr<std::vector<std::string>> broken =
      reopened->Apply(raft::ApplyBatch{entries, Voters({1, 2, 3})});
  RequireStatus(broken.status(), absl::StatusCode::kInternal,
                {"PutNew of a key the state already holds", "'b'"});
#endif
}

TEST_CASE(
    "RocksDb: a batch larger than its scratch memory reads its own writes, "
    "and the next batch starts clean",
    "[statemachine]") {
  driftwood::testing::TempDir dir;
  PutNewApplication application;
  RocksDbKvStateMachineOptions options = Options(fs::path(dir.path()) / "m");
  options.application = &application;
  std::unique_ptr<RocksDbKvStateMachine> machine = Opened(options);
  // 600 puts of 1,000-byte values over 150 keys, with deletions, reads and a
  // scan in between: about 600 KB of values in one batch's cache.
  std::map<std::string, std::string> model;
  std::vector<raft::Entry> entries;
  std::vector<std::string> expected;
  uint64_t index = 0;
  const auto add = [&](std::string command, std::string response) {
    entries.push_back(RawEntry(++index, 1, std::move(command)));
    expected.push_back(std::move(response));
  };
  const auto scan = [&] {
    std::string out;
    for (const auto& [key, value] : model) {
      absl::StrAppend(&out, key, "=", value, ";");
    }
    return out;
  };
  for (int i = 0; i < 600; ++i) {
    const std::string key = absl::StrCat("k", 100 + i % 150);
    const std::string value =
        absl::StrCat(i, std::string(1000, static_cast<char>('a' + i % 26)));
    add(absl::StrCat("put ", key, " ", value), "ok");
    model[key] = value;
    if (i % 7 == 0) {
      const std::string victim = absl::StrCat("k", 100 + (i * 13) % 150);
      add(absl::StrCat("del ", victim), "ok");
      model.erase(victim);
    }
    if (i % 50 == 49) {
      add(absl::StrCat("get ", key), model[key]);
      add("scan", scan());
    }
  }
  CHECK(ApplyRaw(*machine, entries) == expected);

  // The next batch reuses the memory: it sees the stored state only.
  entries.clear();
  expected.clear();
  for (int k = 100; k < 250; ++k) {
    const std::string key = absl::StrCat("k", k);
    const auto it = model.find(key);
    add(absl::StrCat("get ", key), it == model.end() ? "-" : it->second);
  }
  add("scan", scan());
  add("put k100 last", "ok");
  model["k100"] = "last";
  add("get k100", "last");
  CHECK(ApplyRaw(*machine, entries) == expected);
  for (const auto& [key, value] : model) CHECK(*machine->Query(key) == value);
}

// Counts its Loads and what they saw, and asks for every query again until
// `query_again` attempts have been refused.
class LoadingApplication : public PutNewApplication {
 public:
  absl::StatusOr<std::string> Query(std::string_view query,
                                    OrderedKv& state) const override {
    ++attempts;
    if (attempts <= query_again) return QueryAgainError("a newer state");
    return PutNewApplication::Query(query, state);
  }
  absl::Status Load(const OrderedKv& state) override {
    ++loads;
    loaded_keys.clear();
    return state.Scan("", "\xff", [&](std::string_view key, std::string_view) {
      loaded_keys.emplace_back(key);
      return true;
    });
  }

  int query_again = 0;
  mutable int attempts = 0;
  int loads = 0;
  std::vector<std::string> loaded_keys;
};

TEST_CASE(
    "RocksDb: the application loads the state Open found and the state "
    "Restore installed, and a query asked again gets a newer state",
    "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path root(dir.path());
  LoadingApplication application;
  RocksDbKvStateMachineOptions options = Options(root / "m");
  options.application = &application;
  {
    std::unique_ptr<RocksDbKvStateMachine> machine = Opened(options);
    CHECK(application.loads == 1);
    CHECK(application.loaded_keys.empty());
    ApplyRaw(*machine, {RawEntry(1, 1, "new a 1")});
    REQUIRE(machine->Sync().ok());
  }
  std::unique_ptr<RocksDbKvStateMachine> machine = Opened(options);
  CHECK(application.loads == 2);
  CHECK(application.loaded_keys == std::vector<std::string>{"a"});

  application.query_again = 3;
  CHECK(*machine->Query("a") == "1");
  CHECK(application.attempts == 4);
  // The retries are bounded: an application that always asks again gets
  // its error back.
  application.attempts = 0;
  application.query_again = 1000;
  const absl::StatusOr<std::string> refused = machine->Query("a");
  CHECK(IsQueryAgain(refused.status()));
  CHECK(application.attempts == 16);
  application.query_again = 0;

  // Restore loads the new state before any query reads it.
  PutNewApplication source_application;
  RocksDbKvStateMachineOptions source_options = Options(root / "source");
  source_options.application = &source_application;
  std::unique_ptr<RocksDbKvStateMachine> source = Opened(source_options);
  ApplyRaw(*source, {RawEntry(1, 1, "new s 1"), RawEntry(2, 1, "new t 2")});
  const raft::SnapshotMeta meta = CaptureTo(*source, root / "snapshot");
  REQUIRE(machine->Restore(meta, root / "snapshot").ok());
  CHECK(application.loads == 3);
  CHECK(application.loaded_keys == std::vector<std::string>{"s", "t"});
  CHECK(*machine->Query("t") == "2");
}

}  // namespace
}  // namespace driftwood::statemachine
