// The sequential skip list memtable (raft/storage/sequential_skiplist.h)
// under a real RocksDB: every read agrees with a sorted map of what was
// written, across the insert patterns the log store and the MVCC store make
// (appends, appends before rewritten records, scattered keys, deletes), with
// snapshots, flushes and a reopen; and readers running beside the writer see
// a sorted list that holds everything written before they started.
#include "raft/storage/sequential_skiplist.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/util/coding.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

using Model = std::map<std::string, std::string>;
using testing::TempDir;

rocksdb::Options SkipListOptions() {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.memtable_factory = NewSequentialSkipListFactory();
  options.allow_concurrent_memtable_write = false;
  return options;
}

std::unique_ptr<rocksdb::DB> Open(const std::string& path,
                                  const rocksdb::Options& options) {
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status status = rocksdb::DB::Open(options, path, &raw);
  INFO(status.ToString());
  REQUIRE(status.ok());
  return std::unique_ptr<rocksdb::DB>(raw);
}

std::string SequentialKey(uint64_t n) {
  std::string key = "e";
  PutFixed64BigEndian(&key, n);
  return key;
}

// Compares every read path of `db` (at `snapshot`, or the latest state) with
// `model`: a forward and a backward scan, and Get, Seek and SeekForPrev at
// keys drawn from the model and around it.
void ExpectMatches(rocksdb::DB& db, const Model& model,
                   const rocksdb::Snapshot* snapshot, std::mt19937_64& random) {
  rocksdb::ReadOptions read;
  read.snapshot = snapshot;
  std::unique_ptr<rocksdb::Iterator> it(db.NewIterator(read));
  auto expected = model.begin();
  for (it->SeekToFirst(); it->Valid(); it->Next(), ++expected) {
    REQUIRE(expected != model.end());
    REQUIRE(it->key().ToString() == expected->first);
    REQUIRE(it->value().ToString() == expected->second);
  }
  REQUIRE(it->status().ok());
  REQUIRE(expected == model.end());
  auto backward = model.rbegin();
  for (it->SeekToLast(); it->Valid(); it->Prev(), ++backward) {
    REQUIRE(backward != model.rend());
    REQUIRE(it->key().ToString() == backward->first);
  }
  REQUIRE(backward == model.rend());

  std::vector<std::string> probes = {"", "a", "e", "f", "z", "zz"};
  for (int i = 0; i < 20 && !model.empty(); ++i) {
    auto pick = model.begin();
    std::advance(pick, static_cast<long>(random() % model.size()));
    probes.push_back(pick->first);
    probes.push_back(pick->first + '\0');
    std::string before = pick->first;
    before.back() = static_cast<char>(before.back() - 1);
    probes.push_back(before);
  }
  for (const std::string& probe : probes) {
    INFO("probe of " << probe.size() << " bytes");
    std::string value;
    const rocksdb::Status got = db.Get(read, probe, &value);
    auto found = model.find(probe);
    if (found == model.end()) {
      REQUIRE(got.IsNotFound());
    } else {
      REQUIRE(got.ok());
      REQUIRE(value == found->second);
    }
    it->Seek(probe);
    auto lower = model.lower_bound(probe);
    REQUIRE(it->Valid() == (lower != model.end()));
    if (it->Valid()) REQUIRE(it->key().ToString() == lower->first);
    it->SeekForPrev(probe);
    auto upper = model.upper_bound(probe);
    REQUIRE(it->Valid() == (upper != model.begin()));
    if (it->Valid()) REQUIRE(it->key().ToString() == std::prev(upper)->first);
  }
}

TEST_CASE(
    "sequential skip list memtable: reads agree with a sorted map under "
    "appends, rewritten records, scattered keys and deletes, with "
    "snapshots, flushes and a reopen",
    "[storage]") {
  const uint64_t seed = GENERATE(uint64_t{1}, uint64_t{2}, uint64_t{3});
  INFO("seed " << seed);
  std::mt19937_64 random(seed);
  TempDir dir;
  rocksdb::Options options = SkipListOptions();
  // Large enough that most checks read the memtable alone, small enough
  // that some read a memtable beside flushed files.
  options.write_buffer_size = 4 << 20;
  std::unique_ptr<rocksdb::DB> db = Open(dir.path(), options);
  REQUIRE(std::string(db->GetOptions().memtable_factory->Name()) ==
          "DriftwoodSequentialSkipList");

  Model model;
  std::optional<Model> at_snapshot;
  const rocksdb::Snapshot* snapshot = nullptr;
  uint64_t next_sequential = 1;
  for (int round = 0; round < 400; ++round) {
    rocksdb::WriteBatch batch;
    const int writes = 1 + static_cast<int>(random() % 40);
    for (int i = 0; i < writes; ++i) {
      std::string key;
      switch (random() % 8) {
        case 0:
        case 1:
        case 2:
        case 3:  // appended in order, like log entries and event records
          key = SequentialKey(next_sequential++);
          break;
        case 4:  // a record after the appended ones, rewritten often
          key = absl::StrCat("m", random() % 3);
          break;
        case 5:  // a record before them, like the log store's metadata
          key = absl::StrCat("M", random() % 3);
          break;
        default:  // anywhere
          key = absl::StrCat("k", random() % 500);
          break;
      }
      if (random() % 6 == 0) {
        batch.Delete(key);
        model.erase(key);
      } else {
        const std::string value =
            absl::StrCat("v", round, ".", i, std::string(random() % 64, 'x'));
        batch.Put(key, value);
        model[key] = value;
      }
    }
    REQUIRE(db->Write(rocksdb::WriteOptions(), &batch).ok());
    if (round % 25 == 0) ExpectMatches(*db, model, nullptr, random);
    if (round % 60 == 10) {
      if (snapshot != nullptr) {
        ExpectMatches(*db, *at_snapshot, snapshot, random);
        db->ReleaseSnapshot(snapshot);
      }
      snapshot = db->GetSnapshot();
      at_snapshot = model;
    }
    if (round % 130 == 70) REQUIRE(db->Flush(rocksdb::FlushOptions()).ok());
  }
  ExpectMatches(*db, model, nullptr, random);
  ExpectMatches(*db, *at_snapshot, snapshot, random);
  db->ReleaseSnapshot(snapshot);

  // The write-ahead log replays into a new memtable.
  db.reset();
  db = Open(dir.path(), options);
  ExpectMatches(*db, model, nullptr, random);
}

TEST_CASE(
    "sequential skip list memtable: readers beside the writer see sorted "
    "keys and every key written before they started",
    "[storage]") {
  TempDir dir;
  std::unique_ptr<rocksdb::DB> db = Open(dir.path(), SkipListOptions());
  constexpr uint64_t kKeys = 60000;
  std::atomic<uint64_t> written{0};
  std::atomic<bool> failed{false};
  std::atomic<int> scans{0};
  auto reader = [&] {
    while (written.load() < kKeys && !failed.load()) {
      const uint64_t known = written.load();
      std::unique_ptr<rocksdb::Iterator> it(
          db->NewIterator(rocksdb::ReadOptions()));
      std::string previous;
      uint64_t sequential_seen = 0;
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const std::string key = it->key().ToString();
        if (!previous.empty() && !(previous < key)) failed = true;
        if (key.size() == 9 && key[0] == 'e') ++sequential_seen;
        previous = key;
      }
      if (!it->status().ok() || sequential_seen < known) failed = true;
      std::string value;
      if (known > 0 &&
          !db->Get(rocksdb::ReadOptions(), SequentialKey(known), &value).ok()) {
        failed = true;
      }
      ++scans;
    }
  };
  std::thread first(reader);
  std::thread second(reader);
  std::mt19937_64 random(7);
  for (uint64_t n = 1; n <= kKeys; ++n) {
    rocksdb::WriteBatch batch;
    batch.Put(SequentialKey(n), "value");
    if (n % 16 == 0) {
      batch.Put("meta", absl::StrCat(n));
      batch.Put(absl::StrCat("k", random() % 1000), "scattered");
    }
    REQUIRE(db->Write(rocksdb::WriteOptions(), &batch).ok());
    written.store(n);
  }
  first.join();
  second.join();
  REQUIRE_FALSE(failed.load());
  REQUIRE(scans.load() > 0);
}

TEST_CASE(
    "sequential skip list memtable: RocksDB flushes it once its entries fill "
    "the write buffer",
    "[storage]") {
  // The list's nodes are in its own arena, which RocksDB knows of only
  // through ApproximateMemoryUsage: without it a memtable would grow without
  // bound.
  TempDir dir;
  rocksdb::Options options = SkipListOptions();
  constexpr size_t kWriteBuffer = size_t{4} << 20;
  options.write_buffer_size = kWriteBuffer;
  options.disable_auto_compactions = true;
  std::unique_ptr<rocksdb::DB> db = Open(dir.path(), options);
  const std::string value(1000, 'v');
  constexpr uint64_t kWrites = 40'000;  // about 40 MiB of entries
  uint64_t largest_memtable = 0;
  for (uint64_t n = 1; n <= kWrites; ++n) {
    REQUIRE(db->Put(rocksdb::WriteOptions(), SequentialKey(n), value).ok());
    if (n % 100 == 0) {
      uint64_t bytes = 0;
      REQUIRE(db->GetIntProperty("rocksdb.cur-size-active-mem-table", &bytes));
      largest_memtable = std::max(largest_memtable, bytes);
    }
  }
  REQUIRE(db->Flush(rocksdb::FlushOptions()).ok());
  INFO("largest active memtable " << largest_memtable << " bytes");
  CHECK(largest_memtable > kWriteBuffer / 2);
  CHECK(largest_memtable <= kWriteBuffer + (size_t{1} << 20));
  std::string files;
  REQUIRE(db->GetProperty("rocksdb.num-files-at-level0", &files));
  // 40 MiB in 4 MiB memtables: ten full ones and the rest.
  INFO("level-0 files " << files);
  CHECK(std::stoi(files) >= 9);
  CHECK(std::stoi(files) <= 14);
  std::string read;
  REQUIRE(
      db->Get(rocksdb::ReadOptions(), SequentialKey(kWrites / 2), &read).ok());
  REQUIRE(read == value);
}

TEST_CASE(
    "sequential skip list memtable: point reads and scans leave no iterator "
    "behind",
    "[storage]") {
  TempDir dir;
  std::unique_ptr<rocksdb::DB> db = Open(dir.path(), SkipListOptions());
  for (uint64_t n = 1; n <= 100; ++n) {
    REQUIRE(db->Put(rocksdb::WriteOptions(), SequentialKey(n), "value").ok());
  }
  const int64_t before = SequentialSkipListHeapIteratorsForTesting();
  for (uint64_t n = 1; n <= 1000; ++n) {
    std::string value;
    const rocksdb::Status got =
        db->Get(rocksdb::ReadOptions(), SequentialKey(n % 200), &value);
    REQUIRE((got.ok() || got.IsNotFound()));
  }
  for (int i = 0; i < 10; ++i) {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions()));
    int count = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
    REQUIRE(count == 100);
  }
  // RocksDB's MemTableRep::Get never frees the iterator it asks for.
  REQUIRE(SequentialSkipListHeapIteratorsForTesting() == before);
}

}  // namespace
}  // namespace driftwood::raft
