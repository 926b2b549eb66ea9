// One contract suite for every LogStore (docs/design.md "Tests"): the same
// cases run against MemoryLogStore and RocksDbLogStore; RocksDB-only cases
// (reopen, identity, format version, corruption) follow.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/storage/encoding.h"
#include "raft/storage/memory_log_store.h"
#include "raft/storage/rocksdb_log_store.h"
#include "raft/util/coding.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

using storage::EncodeConfiguration;
using storage::EncodeEntry;
using storage::EncodeHardState;
using storage::EncodeLogStart;
using storage::EncodeSnapshotMeta;

Configuration ThreeVoters() {
  Configuration configuration;
  configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  return configuration;
}

std::vector<Entry> Make(uint64_t first, const std::vector<uint64_t>& terms,
                        const std::string& tag = "") {
  std::vector<Entry> entries;
  for (size_t i = 0; i < terms.size(); ++i) {
    const uint64_t index = first + i;
    entries.push_back(Entry{
        Term(terms[i]), LogIndex(index),
        index % 7 == 0 ? EntryType::kNoOp : EntryType::kNormal,
        index % 7 == 0 ? std::string() : absl::StrCat(tag, "entry-", index)});
  }
  return entries;
}

PersistRequest Append(std::vector<Entry> entries, bool sync = true) {
  PersistRequest request;
  request.entries = std::move(entries);
  request.sync = sync;
  return request;
}

// Opens stores for the contract suite; `Reopen` simulates a clean restart.
struct StoreFactory {
  virtual ~StoreFactory() = default;
  virtual LogStore& Open() = 0;
  // Closes and reopens the same store; nullptr when the store cannot survive a
  // restart (memory).
  virtual LogStore* Reopen() = 0;
};

struct MemoryFactory : StoreFactory {
  std::unique_ptr<MemoryLogStore> store;
  LogStore& Open() override {
    store = std::make_unique<MemoryLogStore>(ThreeVoters());
    return *store;
  }
  LogStore* Reopen() override { return nullptr; }
};

struct RocksFactory : StoreFactory {
  testing::TempDir dir;
  std::unique_ptr<RocksDbLogStore> store;
  RocksDbLogStoreOptions Options() {
    RocksDbLogStoreOptions options;
    options.path = dir.path() + "/log";
    options.cluster_id = 42;
    options.node_id = NodeId(1);
    options.create_if_missing = true;
    options.initial_configuration = ThreeVoters();
    return options;
  }
  LogStore& Open() override {
    auto opened = RocksDbLogStore::Open(Options());
    REQUIRE(opened.ok());
    store = *std::move(opened);
    return *store;
  }
  LogStore* Reopen() override {
    store.reset();
    auto opened = RocksDbLogStore::Open(Options());
    INFO(opened.status().ToString());
    REQUIRE(opened.ok());
    store = *std::move(opened);
    return store.get();
  }
};

std::vector<std::unique_ptr<StoreFactory>> Factories() {
  std::vector<std::unique_ptr<StoreFactory>> factories;
  factories.push_back(std::make_unique<MemoryFactory>());
  factories.push_back(std::make_unique<RocksFactory>());
  return factories;
}

void ForEachStore(const std::function<void(StoreFactory&, LogStore&)>& body) {
  for (auto& factory : Factories()) {
    LogStore& store = factory->Open();
    INFO((dynamic_cast<MemoryFactory*>(factory.get()) ? "MemoryLogStore"
                                                      : "RocksDbLogStore"));
    body(*factory, store);
  }
}

std::vector<Entry> All(const LogStore& store) {
  if (store.LastIndex() < store.FirstIndex()) return {};
  auto entries =
      store.Entries(store.FirstIndex(), store.LastIndex().next(), UINT64_MAX);
  REQUIRE(entries.ok());
  return *entries;
}

TEST_CASE("LogStore: an empty store", "[storage]") {
  ForEachStore([](StoreFactory&, LogStore& store) {
    CHECK(store.FirstIndex() == LogIndex(1));
    CHECK(store.LastIndex() == LogIndex(0));
    CHECK(*store.TermAt(LogIndex(0)) == Term(0));
    CHECK(absl::IsNotFound(store.TermAt(LogIndex(1)).status()));
    auto state = store.LoadInitialState();
    REQUIRE(state.ok());
    CHECK(state->hard_state == HardState{});
    CHECK(state->configuration == ThreeVoters());
    CHECK(absl::IsNotFound(store.Snapshot().status()));
  });
}

TEST_CASE("LogStore: append and read back", "[storage]") {
  ForEachStore([](StoreFactory&, LogStore& store) {
    REQUIRE(store.Persist(Append(Make(1, {1, 1, 2, 2, 3, 3, 3, 3}))).ok());
    CHECK(store.LastIndex() == LogIndex(8));
    CHECK(*store.TermAt(LogIndex(4)) == Term(2));
    CHECK(*store.TermAt(LogIndex(8)) == Term(3));
    CHECK(All(store) == Make(1, {1, 1, 2, 2, 3, 3, 3, 3}));
    REQUIRE(store.Persist(Append(Make(9, {3, 4}))).ok());
    CHECK(store.LastIndex() == LogIndex(10));
    CHECK(All(store) == Make(1, {1, 1, 2, 2, 3, 3, 3, 3, 3, 4}));
  });
}

TEST_CASE("LogStore: writing at index i replaces the tail from i",
          "[storage]") {
  ForEachStore([](StoreFactory&, LogStore& store) {
    REQUIRE(store.Persist(Append(Make(1, {1, 1, 1, 1, 1}))).ok());
    REQUIRE(store.Persist(Append(Make(3, {2}, "new-"))).ok());
    CHECK(store.LastIndex() == LogIndex(3));
    CHECK(*store.TermAt(LogIndex(3)) == Term(2));
    CHECK(absl::IsNotFound(store.TermAt(LogIndex(4)).status()));
    std::vector<Entry> expected = Make(1, {1, 1});
    auto tail = Make(3, {2}, "new-");
    expected.insert(expected.end(), tail.begin(), tail.end());
    CHECK(All(store) == expected);
  });
}

TEST_CASE("LogStore: a write that leaves a gap is refused and changes nothing",
          "[storage]") {
  ForEachStore([](StoreFactory&, LogStore& store) {
    REQUIRE(store.Persist(Append(Make(1, {1, 1}))).ok());
    PersistRequest request = Append(Make(5, {1}));
    request.hard_state = HardState{Term(9), NodeId(2), LogIndex(1)};
    CHECK(absl::IsInvalidArgument(store.Persist(request)));
    CHECK(store.LastIndex() == LogIndex(2));
    CHECK(store.LoadInitialState()->hard_state == HardState{});
  });
}

TEST_CASE("LogStore: hard state, entries and snapshot persist together",
          "[storage]") {
  ForEachStore([](StoreFactory& factory, LogStore& store) {
    PersistRequest request = Append(Make(1, {1, 1, 1}));
    request.hard_state = HardState{Term(1), NodeId(1), LogIndex(2)};
    REQUIRE(store.Persist(request).ok());
    CHECK(store.LoadInitialState()->hard_state == *request.hard_state);

    PersistRequest install;
    Configuration configuration;
    configuration.voters = {NodeId(1), NodeId(2)};
    configuration.learners = {NodeId(5)};
    install.snapshot = SnapshotMeta{LogIndex(10), Term(4), configuration};
    install.hard_state = HardState{Term(4), NodeId(2), LogIndex(10)};
    install.entries = Make(11, {4, 4});
    install.sync = true;
    REQUIRE(store.Persist(install).ok());
    CHECK(store.FirstIndex() == LogIndex(11));
    CHECK(store.LastIndex() == LogIndex(12));
    CHECK(*store.TermAt(LogIndex(10)) == Term(4));
    CHECK(absl::IsOutOfRange(store.TermAt(LogIndex(9)).status()));
    CHECK(*store.Snapshot() == *install.snapshot);
    CHECK(store.LoadInitialState()->configuration == configuration);
    if (LogStore* reopened = factory.Reopen()) {
      CHECK(reopened->FirstIndex() == LogIndex(11));
      CHECK(reopened->LastIndex() == LogIndex(12));
      CHECK(*reopened->TermAt(LogIndex(10)) == Term(4));
      CHECK(*reopened->Snapshot() == *install.snapshot);
      CHECK(reopened->LoadInitialState()->configuration == configuration);
      CHECK(reopened->LoadInitialState()->hard_state == *install.hard_state);
      CHECK(All(*reopened) == Make(11, {4, 4}));
    }
  });
}

TEST_CASE("LogStore: compaction keeps TermAt(FirstIndex() - 1)", "[storage]") {
  ForEachStore([](StoreFactory& factory, LogStore& store) {
    REQUIRE(store.Persist(Append(Make(1, {1, 1, 2, 2, 3, 3}))).ok());
    REQUIRE(store.SetSnapshot(SnapshotMeta{LogIndex(4), Term(2), ThreeVoters()})
                .ok());
    REQUIRE(store.Compact(LogIndex(3)).ok());
    CHECK(store.FirstIndex() == LogIndex(4));
    CHECK(*store.TermAt(LogIndex(3)) == Term(2));
    CHECK(absl::IsOutOfRange(store.TermAt(LogIndex(2)).status()));
    CHECK(absl::IsOutOfRange(
        store.Entries(LogIndex(2), LogIndex(5), UINT64_MAX).status()));
    CHECK(All(store) == Make(4, {2, 3, 3}));
    CHECK(store.Snapshot()->index == LogIndex(4));
    // Compacting again at the same point is a no-op; past the end is refused.
    CHECK(store.Compact(LogIndex(3)).ok());
    CHECK(absl::IsInvalidArgument(store.Compact(LogIndex(7))));
    if (LogStore* reopened = factory.Reopen()) {
      CHECK(reopened->FirstIndex() == LogIndex(4));
      CHECK(*reopened->TermAt(LogIndex(3)) == Term(2));
      CHECK(All(*reopened) == Make(4, {2, 3, 3}));
    }
  });
}

TEST_CASE("LogStore: snapshots are checked against the log", "[storage]") {
  ForEachStore([](StoreFactory&, LogStore& store) {
    REQUIRE(store.Persist(Append(Make(1, {1, 1, 2}))).ok());
    CHECK(absl::IsInvalidArgument(
        store.SetSnapshot(SnapshotMeta{LogIndex(2), Term(2), ThreeVoters()})));
    CHECK(absl::IsInvalidArgument(
        store.SetSnapshot(SnapshotMeta{LogIndex(9), Term(2), ThreeVoters()})));
    REQUIRE(store.SetSnapshot(SnapshotMeta{LogIndex(3), Term(2), ThreeVoters()})
                .ok());
    CHECK(absl::IsInvalidArgument(
        store.SetSnapshot(SnapshotMeta{LogIndex(2), Term(1), ThreeVoters()})));
  });
}

TEST_CASE("LogStore: Entries honours the byte limit but returns one entry",
          "[storage]") {
  ForEachStore([](StoreFactory&, LogStore& store) {
    std::vector<Entry> entries;
    for (uint64_t i = 1; i <= 10; ++i) {
      entries.push_back(Entry{Term(1), LogIndex(i), EntryType::kNormal,
                              std::string(100, static_cast<char>('a' + i))});
    }
    REQUIRE(store.Persist(Append(entries)).ok());
    const uint64_t size = entries[0].ByteSize();
    auto one = store.Entries(LogIndex(1), LogIndex(11), 1);
    REQUIRE(one.ok());
    CHECK(one->size() == 1);
    auto three = store.Entries(LogIndex(2), LogIndex(11), 3 * size + size / 2);
    REQUIRE(three.ok());
    REQUIRE(three->size() == 3);
    CHECK(three->front().index == LogIndex(2));
    auto bounded = store.Entries(LogIndex(4), LogIndex(6), UINT64_MAX);
    REQUIRE(bounded.ok());
    CHECK(bounded->size() == 2);
    CHECK(!store.Entries(LogIndex(4), LogIndex(12), UINT64_MAX).ok());
  });
}

TEST_CASE("LogStore: reopening keeps every synced write", "[storage]") {
  RocksFactory factory;
  LogStore* store = &factory.Open();
  std::mt19937_64 rng(7);
  std::vector<Entry> expected;
  HardState hard;
  for (int round = 0; round < 50; ++round) {
    const uint64_t last = store->LastIndex().value();
    const uint64_t from = last == 0 ? 1 : 1 + rng() % (last + 1);
    const uint64_t term = static_cast<uint64_t>(round) + 1;
    std::vector<uint64_t> terms(1 + rng() % 5, term);
    auto entries = Make(from, terms, absl::StrCat("r", round, "-"));
    PersistRequest request = Append(entries);
    hard = HardState{Term(term), NodeId(1 + rng() % 3), LogIndex(from - 1)};
    request.hard_state = hard;
    REQUIRE(store->Persist(request).ok());
    expected.resize(from - 1);
    expected.insert(expected.end(), entries.begin(), entries.end());
    if (round % 10 == 9) {
      store = factory.Reopen();
      CHECK(store->LoadInitialState()->hard_state == hard);
    }
    CHECK(All(*store) == expected);
  }
}

// The recent-entry cache (RocksDbLogStoreOptions::recent_entries_bytes) must
// be invisible: after every append, overwrite, installed snapshot and
// compaction, a store with a cache so small that it keeps trimming answers
// Entries and TermAt exactly as MemoryLogStore and a store without a cache
// do, and so does the cached store once reopened (its cache then empty).
TEST_CASE("RocksDbLogStore: reads from its recent-entry cache match the log",
          "[storage]") {
  for (const uint64_t seed : {1U, 2U, 3U, 4U}) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    MemoryLogStore memory(ThreeVoters());
    RocksFactory cached_factory;
    RocksFactory uncached_factory;
    auto open = [](RocksFactory& factory, uint64_t cache_bytes) {
      RocksDbLogStoreOptions options = factory.Options();
      options.recent_entries_bytes = cache_bytes;
      auto opened = RocksDbLogStore::Open(options);
      INFO(opened.status().ToString());
      REQUIRE(opened.ok());
      return *std::move(opened);
    };
    // About ten entries of Make()'s sizes.
    const uint64_t cache_bytes = 10 * Make(1, {1})[0].ByteSize();
    std::unique_ptr<RocksDbLogStore> cached = open(cached_factory, cache_bytes);
    std::unique_ptr<RocksDbLogStore> uncached = open(uncached_factory, 0);
    std::vector<LogStore*> stores = {&memory, cached.get(), uncached.get()};
    auto check_same = [&](const LogStore& store) {
      REQUIRE(store.FirstIndex() == memory.FirstIndex());
      REQUIRE(store.LastIndex() == memory.LastIndex());
      for (LogIndex i = memory.FirstIndex().prev(); i <= memory.LastIndex();
           i = i.next()) {
        CHECK(*store.TermAt(i) == *memory.TermAt(i));
      }
      if (memory.LastIndex() < memory.FirstIndex()) return;
      for (int read = 0; read < 8; ++read) {
        const uint64_t span =
            memory.LastIndex().value() - memory.FirstIndex().value() + 1;
        const LogIndex first(memory.FirstIndex().value() + rng() % span);
        const LogIndex end(
            first.value() + 1 +
            rng() % (memory.LastIndex().value() - first.value() + 1));
        const uint64_t max_bytes = rng() % 4 == 0 ? 1 : 50 * (1 + rng() % 20);
        auto expected = memory.Entries(first, end, max_bytes);
        auto got = store.Entries(first, end, max_bytes);
        REQUIRE(expected.ok());
        REQUIRE(got.ok());
        CHECK(*got == *expected);
      }
    };
    uint64_t term = 1;
    for (int step = 0; step < 300; ++step) {
      const uint64_t choice = rng() % 20;
      const LogIndex first = memory.FirstIndex();
      const LogIndex last = memory.LastIndex();
      if (choice < 14 || last < first) {
        // Append, or overwrite the tail from a point inside the log.
        LogIndex from = last.next();
        if (choice >= 10 && last >= first) {
          from = LogIndex(first.value() +
                          rng() % (last.value() - first.value() + 1));
          ++term;
        }
        std::vector<uint64_t> terms(1 + rng() % 6, term);
        PersistRequest request = Append(
            Make(from.value(), terms, absl::StrCat("s", step, "-")), false);
        for (LogStore* store : stores) REQUIRE(store->Persist(request).ok());
      } else if (choice < 18) {
        const LogIndex through(first.value() - 1 +
                               rng() % (last.value() - first.value() + 2));
        for (LogStore* store : stores) REQUIRE(store->Compact(through).ok());
      } else {
        // Install a snapshot past the log's end, with or without entries.
        ++term;
        PersistRequest request;
        request.snapshot = SnapshotMeta{LogIndex(last.value() + 1 + rng() % 5),
                                        Term(term), ThreeVoters()};
        if (rng() % 2 == 0) {
          request.entries = Make(request.snapshot->index.value() + 1,
                                 {term, term}, absl::StrCat("s", step, "-"));
        }
        for (LogStore* store : stores) REQUIRE(store->Persist(request).ok());
      }
      check_same(*cached);
      check_same(*uncached);
      if (step % 100 == 99) {
        cached.reset();
        cached = open(cached_factory, cache_bytes);
        stores[1] = cached.get();
        check_same(*cached);
      }
    }
  }
}

TEST_CASE("RocksDbLogStore refuses a store of another cluster, node or format",
          "[storage]") {
  RocksFactory factory;
  factory.Open();
  factory.store.reset();
  auto options = factory.Options();
  options.node_id = NodeId(2);
  auto other_node = RocksDbLogStore::Open(options);
  CHECK(absl::IsFailedPrecondition(other_node.status()));
  CHECK(other_node.status().message().find("node 1") != std::string::npos);
  options = factory.Options();
  options.cluster_id = 43;
  CHECK(absl::IsFailedPrecondition(RocksDbLogStore::Open(options).status()));
  options = factory.Options();
  options.path = factory.dir.path() + "/missing";
  options.create_if_missing = false;
  CHECK(absl::IsNotFound(RocksDbLogStore::Open(options).status()));
  options = factory.Options();
  options.cluster_id = 0;
  CHECK(absl::IsInvalidArgument(RocksDbLogStore::Open(options).status()));

  // A store written by another format version (FORMAT.md: the varint under
  // the key 00 "format").
  {
    rocksdb::DB* raw = nullptr;
    rocksdb::Options db_options;
    REQUIRE(rocksdb::DB::Open(db_options, factory.Options().path, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    REQUIRE(db->Put(rocksdb::WriteOptions(), std::string("\0format", 7),
                    std::string(1, '\x03'))
                .ok());
  }
  auto other_version = RocksDbLogStore::Open(factory.Options());
  CHECK(absl::IsFailedPrecondition(other_version.status()));
  CHECK(other_version.status().message().find("format version 3") !=
        std::string::npos);
}

// Format 1 (FORMAT.md) kept each group's metadata under 'm', after the
// entries; format 2 keeps it under 'M'. The store here is written key by key
// in format 1, for two groups, so the test does not depend on the code that
// migrates it.
TEST_CASE("RocksDbLogStore moves a format 1 store to format 2 on open",
          "[storage]") {
  RocksFactory factory;
  const std::string path = factory.Options().path;
  auto group_key = [](char prefix, uint64_t group, std::string_view rest) {
    std::string key(1, prefix);
    PutFixed64BigEndian(&key, group);
    key.append(rest);
    return key;
  };
  auto entry_key = [&](uint64_t group, uint64_t index) {
    std::string rest;
    PutFixed64BigEndian(&rest, index);
    return group_key('e', group, rest);
  };
  const HardState hard_state{Term(3), NodeId(2), LogIndex(4)};
  Configuration group2_configuration;
  group2_configuration.voters = {NodeId(1)};
  const std::vector<Entry> entries = Make(3, {2, 3, 3, 3});  // 3..6
  {
    rocksdb::DB* raw = nullptr;
    rocksdb::Options db_options;
    db_options.create_if_missing = true;
    REQUIRE(rocksdb::DB::Open(db_options, path, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    rocksdb::WriteBatch batch;
    std::string version;
    PutVarint64(&version, 1);
    batch.Put(std::string("\0format", 7), version);
    std::string identity;
    PutVarint64(&identity, 42);
    PutVarint64(&identity, 1);
    batch.Put(std::string("\0identity", 9), identity);
    batch.Put(group_key('m', 1, "hard_state"), EncodeHardState(hard_state));
    batch.Put(group_key('m', 1, "configuration"),
              EncodeConfiguration(ThreeVoters()));
    batch.Put(group_key('m', 1, "log_start"),
              EncodeLogStart(LogIndex(3), Term(1)));
    batch.Put(
        group_key('m', 1, "snapshot"),
        EncodeSnapshotMeta(SnapshotMeta{LogIndex(2), Term(1), ThreeVoters()}));
    for (const Entry& entry : entries) {
      batch.Put(entry_key(1, entry.index.value()), EncodeEntry(entry));
    }
    batch.Put(group_key('m', 2, "hard_state"),
              EncodeHardState(HardState{Term(9), NodeId(1), LogIndex(0)}));
    batch.Put(group_key('m', 2, "configuration"),
              EncodeConfiguration(group2_configuration));
    batch.Put(group_key('m', 2, "log_start"),
              EncodeLogStart(LogIndex(1), Term(0)));
    REQUIRE(db->Write(rocksdb::WriteOptions(), &batch).ok());
  }

  auto check_group1 = [&](const LogStore& store) {
    auto initial = store.LoadInitialState();
    REQUIRE(initial.ok());
    CHECK(initial->hard_state == hard_state);
    CHECK(initial->configuration == ThreeVoters());
    CHECK(store.FirstIndex() == LogIndex(3));
    CHECK(*store.TermAt(LogIndex(2)) == Term(1));
    CHECK(store.LastIndex() == LogIndex(6));
    CHECK(All(store) == entries);
    auto snapshot = store.Snapshot();
    REQUIRE(snapshot.ok());
    CHECK(snapshot->index == LogIndex(2));
  };
  {
    auto migrated = RocksDbLogStore::Open(factory.Options());
    INFO(migrated.status().ToString());
    REQUIRE(migrated.ok());
    check_group1(**migrated);
    // The migrated store takes writes; they survive a reopen.
    REQUIRE((*migrated)->Persist(Append(Make(7, {3}))).ok());
  }
  auto reopened = RocksDbLogStore::Open(factory.Options());
  REQUIRE(reopened.ok());
  CHECK((*reopened)->LastIndex() == LogIndex(7));
  reopened->reset();
  RocksDbLogStoreOptions group2 = factory.Options();
  group2.group_id = 2;
  auto second = RocksDbLogStore::Open(group2);
  REQUIRE(second.ok());
  CHECK((*second)->LoadInitialState()->hard_state ==
        HardState{Term(9), NodeId(1), LogIndex(0)});
  CHECK((*second)->LoadInitialState()->configuration == group2_configuration);
  second->reset();

  // On disk: version 2, and no key left under the old prefix.
  rocksdb::DB* raw = nullptr;
  REQUIRE(rocksdb::DB::Open(rocksdb::Options(), path, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string version;
  REQUIRE(db->Get(rocksdb::ReadOptions(), std::string("\0format", 7), &version)
              .ok());
  CHECK(version == std::string(1, '\x02'));
  std::unique_ptr<rocksdb::Iterator> it(
      db->NewIterator(rocksdb::ReadOptions()));
  int old_keys = 0;
  int new_keys = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().starts_with("m")) ++old_keys;
    if (it->key().starts_with("M")) ++new_keys;
  }
  CHECK(old_keys == 0);
  CHECK(new_keys == 7);
}

}  // namespace
}  // namespace driftwood::raft
