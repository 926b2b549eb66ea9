// The log store's prefilled write-ahead log (raft/storage/wal_prefill.h):
// synced appends write over zeros, closing cuts them, and a crash's zeros
// after a torn record are cut before RocksDB reads the log.
#include "raft/storage/wal_prefill.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "raft/storage/rocksdb_log_store.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "tests/raft/storage/log_store_options.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;
using testing::SingleVoterStoreOptions;
using testing::TempDir;

// The store's write-ahead log files (one while it has never flushed).
std::vector<fs::path> Wals(const std::string& folder) {
  std::vector<fs::path> wals;
  for (const auto& file : fs::directory_iterator(folder)) {
    if (IsWalFileName(file.path().string())) wals.push_back(file.path());
  }
  return wals;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void Persist(RocksDbLogStore& store, uint64_t first, uint64_t count,
             size_t payload_bytes, bool sync) {
  PersistRequest request;
  for (uint64_t index = first; index < first + count; ++index) {
    request.entries.push_back(Entry{Term(1), LogIndex(index),
                                    EntryType::kNormal,
                                    std::string(payload_bytes, 'p')});
  }
  request.sync = sync;
  REQUIRE(store.Persist(request).ok());
}

TEST_CASE(
    "WAL prefill: synced appends write over zeros ahead of the end, "
    "and closing the store cuts them",
    "[storage][wal]") {
  TempDir dir;
  const std::string path = dir.path() + "/log";
  auto opened = RocksDbLogStore::Open(SingleVoterStoreOptions(path));
  REQUIRE(opened.ok());
  std::unique_ptr<RocksDbLogStore> store = *std::move(opened);
  for (uint64_t batch = 0; batch < 20; ++batch) {
    Persist(*store, 1 + batch * 26, 26, 256, /*sync=*/true);
  }

  std::vector<fs::path> wals = Wals(path);
  REQUIRE(wals.size() == 1);
  std::string bytes = ReadAll(wals[0]);
  WalTail tail = ScanWal(bytes);
  // 520 entries of 256 B were appended: the scan finds all of them, and at
  // least the low-water mark of zeros follows.
  CHECK(tail.records_end > 520 * 256);
  CHECK(tail.zeros_after);
  CHECK(bytes.size() - tail.records_end >=
        WalPrefillFileSystem::kLowWaterBytes);

  store.reset();
  wals = Wals(path);
  REQUIRE(!wals.empty());
  for (const fs::path& wal : wals) {
    bytes = ReadAll(wal);
    tail = ScanWal(bytes);
    INFO(wal.string());
    CHECK(tail.records_end == bytes.size());
  }

  opened = RocksDbLogStore::Open(SingleVoterStoreOptions(path));
  REQUIRE(opened.ok());
  CHECK((*opened)->LastIndex() == LogIndex(520));
  auto entries = (*opened)->Entries(LogIndex(1), LogIndex(521), 1 << 30);
  REQUIRE(entries.ok());
  CHECK(entries->size() == 520);
}

// A store at `path` with entries 1-30 (100 bytes, synced) and entry 31
// (`unsynced_bytes`, not synced), copied to `crashed` while still open: what
// a crash right then could leave. Returns the copy's one WAL.
fs::path CopyAfterUnsyncedEntry(const std::string& path,
                                const std::string& crashed,
                                uint64_t unsynced_bytes) {
  auto opened = RocksDbLogStore::Open(SingleVoterStoreOptions(path));
  REQUIRE(opened.ok());
  std::unique_ptr<RocksDbLogStore> store = *std::move(opened);
  Persist(*store, 1, 30, 100, /*sync=*/true);
  Persist(*store, 31, 1, unsynced_bytes, /*sync=*/false);
  fs::copy(path, crashed, fs::copy_options::recursive);
  store.reset();
  std::vector<fs::path> wals = Wals(crashed);
  REQUIRE(wals.size() == 1);
  return wals[0];
}

TEST_CASE(
    "WAL prefill: after a crash, zeros after the first fragment of a "
    "torn record are cut, and the store opens with every earlier "
    "entry",
    "[storage][wal]") {
  TempDir dir;
  const std::string crashed = dir.path() + "/crashed";
  // An unsynced entry of 70 KiB: its WAL record spans three 32 KiB blocks.
  // What a power cut could leave: the files as they are now (the WAL with
  // its zeros ahead), except the last block the big record reached, lost.
  const fs::path wal = CopyAfterUnsyncedEntry(dir.path() + "/log", crashed,
                                              /*unsynced_bytes=*/70 << 10);
  std::string bytes = ReadAll(wal);
  const WalTail tail = ScanWal(bytes);
  REQUIRE(tail.zeros_after);
  REQUIRE(tail.records_end > (70 << 10));
  const uint64_t last_block = (tail.records_end - 1) / 32768 * 32768;
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(last_block),
            bytes.begin() + static_cast<std::ptrdiff_t>(tail.records_end),
            '\0');
  WriteAll(wal, bytes);
  const WalTail torn = ScanWal(bytes);
  CHECK(torn.zeros_after);
  CHECK(torn.records_end <= last_block);

  SECTION("RocksDB alone refuses the file: the zeros follow a fragment") {
    rocksdb::Options options;
    options.wal_recovery_mode =
        rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status status = rocksdb::DB::Open(options, crashed, &raw);
    std::unique_ptr<rocksdb::DB> db(raw);
    INFO(status.ToString());
    CHECK(status.IsCorruption());
  }
  SECTION(
      "the store cuts the zeros, drops the torn record and keeps the "
      "rest") {
    auto reopened = RocksDbLogStore::Open(SingleVoterStoreOptions(crashed));
    INFO(reopened.status().ToString());
    REQUIRE(reopened.ok());
    CHECK((*reopened)->LastIndex() == LogIndex(30));
    auto entries = (*reopened)->Entries(LogIndex(1), LogIndex(31), 1 << 30);
    REQUIRE(entries.ok());
    REQUIRE(entries->size() == 30);
    CHECK(entries->back().data.view() == std::string(100, 'p'));
  }
  SECTION(
      "anything but zeros after the last intact record stays: only the "
      "zeros after it are cut") {
    bytes[tail.records_end + 100] = 'x';
    WriteAll(wal, bytes);
    auto file_system = rocksdb::FileSystem::Default();
    absl::StatusOr<int> trimmed = TrimWalZeroTails(*file_system, crashed);
    REQUIRE(trimmed.ok());
    CHECK(*trimmed == 1);
    const std::string left = ReadAll(wal);
    CHECK(left == bytes.substr(0, tail.records_end + 101));
    // Nothing left to cut.
    trimmed = TrimWalZeroTails(*file_system, crashed);
    REQUIRE(trimmed.ok());
    CHECK(*trimmed == 0);
  }
}

TEST_CASE(
    "WAL prefill: after a SIGKILL in the middle of a record's write, the "
    "zeros after what was written are cut, and the store opens with every "
    "earlier entry",
    "[storage][wal]") {
  TempDir dir;
  const std::string crashed = dir.path() + "/crashed";
  // A write() that a SIGKILL interrupted leaves a prefix of its bytes in the
  // page cache; past it, the file holds the prefill's zeros.
  const fs::path wal = CopyAfterUnsyncedEntry(dir.path() + "/log", crashed,
                                              /*unsynced_bytes=*/1000);
  std::string bytes = ReadAll(wal);
  const WalTail whole = ScanWal(bytes);
  REQUIRE(whole.zeros_after);
  REQUIRE(bytes.size() > whole.records_end);
  const uint64_t written = whole.records_end - 500;
  std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(written),
            bytes.begin() + static_cast<std::ptrdiff_t>(whole.records_end),
            '\0');
  bytes[written - 1] = 'p';  // the last byte the write copied
  WriteAll(wal, bytes);
  const WalTail torn = ScanWal(bytes);
  CHECK_FALSE(torn.zeros_after);
  CHECK(torn.records_end < written);
  CHECK(torn.data_end == written);

  SECTION("RocksDB alone refuses the file: the record fails its checksum") {
    rocksdb::Options options;
    options.wal_recovery_mode =
        rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status status = rocksdb::DB::Open(options, crashed, &raw);
    std::unique_ptr<rocksdb::DB> db(raw);
    INFO(status.ToString());
    CHECK(status.IsCorruption());
  }
  SECTION("the store cuts the zeros, drops the torn record, keeps the rest") {
    auto reopened = RocksDbLogStore::Open(SingleVoterStoreOptions(crashed));
    INFO(reopened.status().ToString());
    REQUIRE(reopened.ok());
    CHECK((*reopened)->LastIndex() == LogIndex(30));
    auto entries = (*reopened)->Entries(LogIndex(1), LogIndex(31), 1 << 30);
    REQUIRE(entries.ok());
    REQUIRE(entries->size() == 30);
    CHECK(entries->back().data.view() == std::string(100, 'p'));
  }
}

TEST_CASE("WAL prefill: the scan of a write-ahead log", "[storage][wal]") {
  CHECK(IsWalFileName("/a/b/000004.log"));
  CHECK(IsWalFileName("12.log"));
  CHECK_FALSE(IsWalFileName("/a/b/LOG"));
  CHECK_FALSE(IsWalFileName("/a/b/LOG.old.1"));
  CHECK_FALSE(IsWalFileName("/a/b/.log"));
  CHECK_FALSE(IsWalFileName("/a/b/x1.log"));

  const WalTail empty = ScanWal("");
  CHECK(empty.records_end == 0);
  CHECK(empty.zeros_after);
  const WalTail zeros = ScanWal(std::string(100000, '\0'));
  CHECK(zeros.records_end == 0);
  CHECK(zeros.zeros_after);
  // A header whose checksum does not match is not a record.
  const WalTail garbage = ScanWal(std::string("\1\2\3\4\5\0\1hello", 12));
  CHECK(garbage.records_end == 0);
  CHECK_FALSE(garbage.zeros_after);
}

}  // namespace
}  // namespace driftwood::raft
