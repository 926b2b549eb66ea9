// Background disk work pacing (raft/storage/rocksdb_background_io.h): an
// obsolete write-ahead log is renamed to `.trash` and shrunk by truncations
// before it is deleted, never unlinked whole; the flush and compaction
// writes go through a rate limiter of the configured rate; the log store
// installs both; leftover `.trash` files go at the next open.
#include "raft/storage/rocksdb_background_io.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "raft/storage/rocksdb_log_store.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/options.h"
#include "rocksdb/rate_limiter.h"
#include "tests/raft/storage/log_store_options.h"
#include "tests/raft/storage/recording_fs.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

using testing::RecordingFs;
using testing::SingleVoterStoreOptions;
using testing::TempDir;

struct Database {
  std::shared_ptr<RecordingFs> fs =
      std::make_shared<RecordingFs>(rocksdb::FileSystem::Default());
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
  std::unique_ptr<rocksdb::DB> db;
};

// Opens a database in `path` whose memtable holds about 1 MiB, paced by
// `pacing`, and writes `megabytes` of 1 KiB values, then flushes.
void FillAndFlush(Database& d, const std::string& path,
                  const BackgroundIoPacing& pacing, int megabytes) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.env = d.env.get();
  options.write_buffer_size = 1 << 20;
  InstallBackgroundIoPacing(options, pacing);
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::Open(options, path, &raw);
  INFO(opened.ToString());
  REQUIRE(opened.ok());
  d.db.reset(raw);
  const std::string value(1024, 'v');
  for (int i = 0; i < megabytes * 1024; ++i) {
    REQUIRE(
        d.db->Put(rocksdb::WriteOptions(), absl::StrCat("key", i), value).ok());
  }
  REQUIRE(d.db->Flush(rocksdb::FlushOptions()).ok());
}

TEST_CASE("an obsolete write-ahead log is renamed and truncated in steps",
          "[storage][pacing]") {
  TempDir dir;
  Database d;
  FillAndFlush(
      d, dir.path() + "/db",
      {.delete_bytes_per_second = 64 << 20, .bytes_per_truncation = 64 << 10},
      3);
  const std::string log = d.fs->FirstTrashed(".log");
  INFO("calls: " << d.fs->calls().size());
  REQUIRE(!log.empty());
  const std::string trash = log + ".trash";
  REQUIRE(d.fs->WaitFor("delete " + trash));
  // A log of about 1 MiB in 64 KiB steps: one reopening per truncation.
  CHECK(d.fs->Count("reopen " + trash) >= 8);
  CHECK(d.fs->Count("delete " + log) == 0);
}

TEST_CASE("without deletion pacing the log is unlinked whole",
          "[storage][pacing]") {
  TempDir dir;
  Database d;
  FillAndFlush(d, dir.path() + "/db", {.delete_bytes_per_second = 0}, 3);
  CHECK(d.fs->FirstTrashed(".log").empty());
  bool deleted_log = false;
  for (const std::string& call : d.fs->calls()) {
    deleted_log |=
        absl::StartsWith(call, "delete ") && absl::EndsWith(call, ".log");
  }
  CHECK(deleted_log);
}

TEST_CASE("background writes go through a rate limiter of the given rate",
          "[storage][pacing]") {
  rocksdb::Options options;
  InstallBackgroundIoPacing(options, {.write_bytes_per_second = 48 << 20});
  REQUIRE(options.rate_limiter != nullptr);
  CHECK(options.rate_limiter->GetBytesPerSecond() == (48 << 20));
  CHECK(options.rate_limiter->IsRateLimited(
      rocksdb::RateLimiter::OpType::kWrite));
  CHECK(!options.rate_limiter->IsRateLimited(
      rocksdb::RateLimiter::OpType::kRead));

  rocksdb::Options unlimited;
  InstallBackgroundIoPacing(unlimited, {.write_bytes_per_second = 0});
  CHECK(unlimited.rate_limiter == nullptr);
}

TEST_CASE("the log store paces the deletion of its write-ahead log",
          "[storage][pacing]") {
  TempDir dir;
  Database d;
  auto opened = RocksDbLogStore::Open(
      SingleVoterStoreOptions(dir.path() + "/log", d.env.get()));
  INFO(opened.status().ToString());
  REQUIRE(opened.ok());
  std::unique_ptr<RocksDbLogStore> store = *std::move(opened);
  PersistRequest request;
  for (uint64_t i = 1; i <= 64; ++i) {
    request.entries.push_back(Entry{Term(1), LogIndex(i), EntryType::kNormal,
                                    std::string(16 << 10, 'p')});
  }
  request.sync = true;
  REQUIRE(store->Persist(request).ok());
  REQUIRE(store->FlushForTesting().ok());
  const std::string log = d.fs->FirstTrashed(".log");
  REQUIRE(!log.empty());
  REQUIRE(d.fs->WaitFor("delete " + log + ".trash"));
  CHECK(d.fs->Count("delete " + log) == 0);
}

TEST_CASE("a .trash file a crash left behind is gone after the next open",
          "[storage][pacing]") {
  TempDir dir;
  Database d;
  const std::string path = dir.path() + "/log";
  {
    auto opened =
        RocksDbLogStore::Open(SingleVoterStoreOptions(path, d.env.get()));
    REQUIRE(opened.ok());
  }
  const std::string leftover = path + "/000003.log.trash";
  std::ofstream(leftover) << std::string(4096, 'x');
  REQUIRE(std::filesystem::exists(leftover));
  auto reopened =
      RocksDbLogStore::Open(SingleVoterStoreOptions(path, d.env.get()));
  INFO(reopened.status().ToString());
  REQUIRE(reopened.ok());
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::filesystem::exists(leftover) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(!std::filesystem::exists(leftover));
  CHECK((*reopened)->LastIndex() == LogIndex(0));
}

}  // namespace
}  // namespace driftwood::raft
