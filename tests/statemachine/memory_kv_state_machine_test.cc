// MemoryKvStateMachine beyond the shared contract: the kv.data file is
// checked on Restore (DataLoss naming the file and offset, state unchanged),
// snapshots outlive the machine, copy-on-write keeps captures intact.
#include "statemachine/memory_kv_state_machine.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/storage/file_util.h"
#include "tests/statemachine/kv_test_util.h"
#include "tests/support/temp_dir.h"

namespace driftwood::statemachine {
namespace {

using namespace testing;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;

std::unique_ptr<MemoryKvStateMachine> Opened() {
  auto machine = std::make_unique<MemoryKvStateMachine>();
  REQUIRE(machine->Open().ok());
  return machine;
}

std::string ReadAll(const fs::path& path) {
  auto contents = raft::ReadFileToString(path);
  REQUIRE(contents.ok());
  return *contents;
}

void WriteAll(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  REQUIRE(out.good());
}

// A machine holding a few keys, and its snapshot in `folder`.
raft::SnapshotMeta MakeSnapshot(const fs::path& folder) {
  auto machine = Opened();
  ApplyCommands(*machine, {PutCommand{"alpha", "1"}, PutCommand{"beta", "22"},
                           PutCommand{"gamma", std::string(100, 'g')}});
  return CaptureTo(*machine, folder);
}

void RequireDataLoss(const absl::Status& status,
                     const std::vector<std::string>& needles) {
  INFO("status: " << status.ToString());
  REQUIRE(absl::IsDataLoss(status));
  for (const std::string& needle : needles) {
    INFO("expected to find: " << needle);
    REQUIRE(std::string(status.message()).find(needle) != std::string::npos);
  }
}

TEST_CASE("Memory: the snapshot is one kv.data file", "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path folder = fs::path(dir.path()) / "snapshot";
  MakeSnapshot(folder);
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(folder)) {
    names.push_back(entry.path().filename().string());
  }
  REQUIRE(names == std::vector<std::string>{"kv.data"});
  REQUIRE(ReadAll(folder / "kv.data").substr(0, 8) == "DWKVMEM1");
}

TEST_CASE("Memory: a damaged kv.data is DataLoss and changes nothing",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  const fs::path folder = fs::path(dir.path()) / "snapshot";
  const raft::SnapshotMeta meta = MakeSnapshot(folder);
  const fs::path file = folder / "kv.data";
  const std::string good = ReadAll(file);
  const std::string file_name = file.string();

  auto target = Opened();
  ApplyCommands(*target, {PutCommand{"mine", "m"}});
  auto require_unchanged = [&] {
    REQUIRE(target->applied().index == raft::LogIndex(1));
    REQUIRE(Get(*target, "mine") == "m");
    REQUIRE(Count(*target) == 1);
  };

  SECTION("every truncation") {
    for (size_t length = 0; length < good.size(); ++length) {
      WriteAll(file, good.substr(0, length));
      INFO("truncated to " << length << " bytes");
      RequireDataLoss(target->Restore(meta, folder),
                      {file_name, "byte offset"});
    }
    require_unchanged();
  }
  SECTION("every flipped byte") {
    for (size_t at = 0; at < good.size(); ++at) {
      std::string bad = good;
      bad[at] = static_cast<char>(bad[at] ^ 0x20);
      WriteAll(file, bad);
      INFO("byte " << at << " flipped");
      RequireDataLoss(target->Restore(meta, folder), {file_name});
    }
    require_unchanged();
  }
  SECTION("a checksum mismatch names its offset") {
    std::string bad = good;
    bad[good.size() - 1] = static_cast<char>(bad[good.size() - 1] ^ 1);
    WriteAll(file, bad);
    RequireDataLoss(target->Restore(meta, folder),
                    {file_name, "checksum mismatch",
                     absl::StrCat("byte offset ", good.size() - 4)});
    require_unchanged();
  }
  SECTION("bytes after the checksum") {
    WriteAll(file, good + "x");
    RequireDataLoss(target->Restore(meta, folder),
                    {file_name, "bytes follow the checksum"});
    require_unchanged();
  }
  SECTION("bad magic") {
    WriteAll(file, "XXXXXXXX" + good.substr(8));
    RequireDataLoss(target->Restore(meta, folder), {file_name, "bad magic"});
    require_unchanged();
  }
  SECTION("missing file") {
    fs::remove(file);
    RequireDataLoss(target->Restore(meta, folder), {file_name, "missing"});
    require_unchanged();
  }
  SECTION("metadata of another snapshot") {
    raft::SnapshotMeta other = meta;
    other.index = raft::LogIndex(99);
    RequireDataLoss(target->Restore(other, folder), {file_name, "index 99"});
    require_unchanged();
  }
  SECTION("the good file restores") {
    REQUIRE(target->Restore(meta, folder).ok());
    REQUIRE(Count(*target) == 3);
    REQUIRE(Get(*target, "beta") == "22");
  }
}

TEST_CASE("Memory: a snapshot outlives its machine", "[statemachine]") {
  driftwood::testing::TempDir dir;
  auto machine = Opened();
  ApplyCommands(*machine, {PutCommand{"k", "v"}});
  auto snapshot = machine->Capture();
  REQUIRE(snapshot.ok());
  machine.reset();
  const fs::path folder = fs::path(dir.path()) / "snapshot";
  fs::create_directories(folder);
  REQUIRE((*snapshot)->WriteTo(folder).ok());
  auto target = Opened();
  REQUIRE(target->Restore((*snapshot)->meta(), folder).ok());
  REQUIRE(Get(*target, "k") == "v");
}

TEST_CASE("Memory: copy-on-write keeps several captures apart",
          "[statemachine]") {
  driftwood::testing::TempDir dir;
  auto machine = Opened();
  std::vector<std::unique_ptr<raft::StateMachineSnapshot>> snapshots;
  // Each round overwrites every key, then captures: every shard is shared
  // with the previous capture when the next round writes it.
  for (int round = 0; round < 3; ++round) {
    std::vector<KvCommand> commands;
    for (int i = 0; i < 500; ++i) {
      commands.push_back(
          PutCommand{absl::StrCat("k", i), absl::StrCat("round-", round)});
    }
    ApplyCommands(*machine, commands);
    auto snapshot = machine->Capture();
    REQUIRE(snapshot.ok());
    snapshots.push_back(std::move(*snapshot));
  }
  for (int round = 0; round < 3; ++round) {
    const fs::path folder = fs::path(dir.path()) / absl::StrCat("s", round);
    fs::create_directories(folder);
    REQUIRE(snapshots[static_cast<size_t>(round)]->WriteTo(folder).ok());
    auto target = Opened();
    REQUIRE(
        target->Restore(snapshots[static_cast<size_t>(round)]->meta(), folder)
            .ok());
    REQUIRE(Count(*target) == 500);
    REQUIRE(Get(*target, "k0") == absl::StrCat("round-", round));
    REQUIRE(Get(*target, "k499") == absl::StrCat("round-", round));
  }
}

TEST_CASE("Memory: Sync is Unimplemented and Open reports nothing applied",
          "[statemachine]") {
  MemoryKvStateMachine machine;
  auto opened = machine.Open();
  REQUIRE(opened.ok());
  REQUIRE(*opened == raft::AppliedState{});
  REQUIRE_FALSE(machine.persistent());
  REQUIRE(absl::IsUnimplemented(machine.Sync().status()));
}

}  // namespace
}  // namespace driftwood::statemachine
