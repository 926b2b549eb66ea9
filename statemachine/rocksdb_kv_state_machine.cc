#include "statemachine/rocksdb_kv_state_machine.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <span>
#include <system_error>
#include <unordered_map>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "raft/storage/encoding.h"
#include "raft/storage/file_util.h"
#include "raft/storage/rocksdb_background_errors.h"
#include "raft/storage/rocksdb_background_io.h"
#include "raft/storage/sequential_skiplist.h"
#include "raft/util/crc32c.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/snapshot.h"
#include "rocksdb/sst_file_reader.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/sst_partitioner.h"
#include "rocksdb/table.h"
#include "rocksdb/table_properties.h"
#include "rocksdb/write_batch.h"
#include "statemachine/kv_command.h"

namespace driftwood::statemachine {
namespace {

namespace fs = std::filesystem;

constexpr uint8_t kAppliedRecordVersion = 1;
constexpr char kFolderPrefix[] = "db-";
constexpr size_t kFolderPrefixSize = sizeof(kFolderPrefix) - 1;

absl::Status FromRocks(const rocksdb::Status& status, const std::string& what) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", status.ToString());
  if (status.IsCorruption()) return absl::DataLossError(message);
  if (status.IsNotFound()) return absl::NotFoundError(message);
  if (status.IsIOError() && status.subcode() == rocksdb::Status::kNoSpace) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InternalError(message);
}

absl::Status FromErrorCode(const std::error_code& error, const char* what,
                           const fs::path& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path.string(), ": ", error.message()));
}

rocksdb::Options DbOptions(const RocksDbKvStateMachineOptions& options,
                           bool create) {
  rocksdb::Options o;
  o.create_if_missing = create;
  if (options.env != nullptr) o.env = options.env;
  o.paranoid_checks = true;
  // Applied batches are written without sync (by default without the
  // write-ahead log too); what no flush or sync has made durable may be lost
  // in a crash, and the framework re-applies it from the log. Without the
  // write-ahead log every memtable flush holds whole batches; with it,
  // point-in-time recovery replays the log up to the first damaged record.
  // Either way a restart finds a consistent prefix of whole batches (data and
  // applied record together). A clean close flushes what the write-ahead log
  // does not hold (Database's destructor).
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  // A failed background flush is final (raft/storage/
  // rocksdb_background_errors.h): Apply and Sync answer with its error from
  // then on, which stops the node.
  raft::RocksDbBackgroundErrors::Install(o);
  // Database's destructor flushes before a clean close (RocksDB's own flush
  // at close would skip a flush Sync() queued).
  o.avoid_flush_during_shutdown = true;
  o.write_buffer_size = options.write_buffer_size;
  // Applied batches write mostly increasing keys (the MVCC store's event
  // records, in revision order): a memtable that places a key after the
  // previous one in two comparisons (raft/storage/sequential_skiplist.h),
  // which takes one insert at a time.
  o.memtable_factory = raft::NewSequentialSkipListFactory();
  o.allow_concurrent_memtable_write = false;
  o.level_compaction_dynamic_level_bytes = true;
  // Each flush adds a level-0 file (in driftwood-kv, one per log compaction).
  // Each such file spans from its first new key to the applied record (and,
  // in the MVCC store, its revision record), so it overlaps whichever
  // base-level file holds those keys. Without the cut below, that file held
  // the whole history too, and every level-0 compaction re-read and
  // rewrote it, at a cost that grew with the database (bench/README.md,
  // twenty-fourth and twenty-sixth sessions). Cutting compaction output at
  // every change of key kind keeps the rewritten keys out of the files of an
  // append-only history, which later level-0 compactions leave alone.
  // Waiting for 8 level-0 files instead of RocksDB's 4 halves how often the
  // small files of the rewritten keys are merged; reads check each level-0
  // file's Bloom filter.
  o.level0_file_num_compaction_trigger = 8;
  o.sst_partitioner_factory =
      rocksdb::NewSstPartitionerFixedPrefixFactory(1 + options.key_kind_bytes);
  o.max_background_jobs = 2;
  raft::InstallBackgroundIoPacing(
      o, {.write_bytes_per_second = options.background_write_bytes_per_second});
  // Every Put reads the key first (its response says whether it existed):
  // a Bloom filter makes the misses cheap.
  rocksdb::BlockBasedTableOptions table;
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  // Reads of keys flushed out of the memtable (every MVCC put reads the
  // key's latest record) hit uncompressed blocks instead of RocksDB's small
  // default cache.
  if (options.block_cache_bytes > 0) {
    table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  }
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return o;
}

std::string FolderName(uint64_t number) {
  return absl::StrFormat("db-%06d", number);
}

// The N of "db-N"; std::nullopt for any other name.
std::optional<uint64_t> ParseFolderName(std::string_view name) {
  if (name.size() <= kFolderPrefixSize ||
      name.substr(0, kFolderPrefixSize) != kFolderPrefix) {
    return std::nullopt;
  }
  const std::string_view digits = name.substr(kFolderPrefixSize);
  if (digits.size() > 19 ||
      !std::all_of(digits.begin(), digits.end(),
                   [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint64_t number = 0;
  if (!absl::SimpleAtoi(std::string(digits), &number) || number == 0) {
    return std::nullopt;
  }
  return number;
}

std::string DataKey(std::string_view key) {
  std::string data_key;
  data_key.reserve(key.size() + 1);
  data_key.push_back(RocksDbKvStateMachine::kDataPrefix);
  data_key.append(key);
  return data_key;
}

std::string EncodeAppliedRecord(const raft::AppliedState& applied,
                                uint64_t key_count) {
  std::string out;
  out.push_back(static_cast<char>(kAppliedRecordVersion));
  raft::PutVarint64(&out, applied.index.value());
  raft::PutVarint64(&out, applied.term.value());
  raft::PutVarint64(&out, key_count);
  const std::string configuration =
      raft::storage::EncodeConfiguration(applied.configuration);
  raft::PutVarint64(&out, configuration.size());
  out.append(configuration);
  raft::AppendCrc(&out);
  return out;
}

struct AppliedRecord {
  raft::AppliedState applied;
  uint64_t key_count = 0;
};

absl::StatusOr<AppliedRecord> DecodeAppliedRecord(std::string_view bytes,
                                                  const fs::path& folder) {
  auto corrupt = [&](const std::string& problem) {
    return absl::DataLossError(absl::StrCat(
        "corrupt applied-state record in the state machine database ",
        folder.string(), ": ", problem));
  };
  if (!raft::CheckCrc(&bytes)) {
    return corrupt("checksum mismatch or truncated");
  }
  if (bytes.empty() ||
      static_cast<uint8_t>(bytes[0]) != kAppliedRecordVersion) {
    return corrupt(absl::StrCat(
        "unknown version ",
        bytes.empty() ? -1 : static_cast<int>(static_cast<uint8_t>(bytes[0]))));
  }
  bytes.remove_prefix(1);
  uint64_t index = 0;
  uint64_t term = 0;
  AppliedRecord record;
  uint64_t configuration_size = 0;
  if (!raft::GetVarint64(&bytes, &index) || !raft::GetVarint64(&bytes, &term) ||
      !raft::GetVarint64(&bytes, &record.key_count) ||
      !raft::GetVarint64(&bytes, &configuration_size) ||
      configuration_size != bytes.size()) {
    return corrupt("truncated fields");
  }
  auto configuration = raft::storage::DecodeConfiguration(bytes);
  if (!configuration.ok()) {
    return corrupt(std::string(configuration.status().message()));
  }
  record.applied = raft::AppliedState{raft::LogIndex(index), raft::Term(term),
                                      std::move(*configuration)};
  return record;
}

// Reads the applied record of `db` (index 0 when there is none yet). With
// `tier` kPersistedTier, what the SST files hold: writes made without the
// write-ahead log are skipped until a flush has made them durable.
absl::StatusOr<AppliedRecord> ReadAppliedRecord(
    rocksdb::DB* db, const fs::path& folder,
    rocksdb::ReadTier tier = rocksdb::kReadAllTier) {
  std::string value;
  rocksdb::ReadOptions read;
  read.read_tier = tier;
  rocksdb::Status status =
      db->Get(read, RocksDbKvStateMachine::kAppliedKey, &value);
  if (status.IsNotFound()) return AppliedRecord{};
  if (!status.ok()) {
    return FromRocks(status, absl::StrCat("reading the applied record of ",
                                          folder.string()));
  }
  return DecodeAppliedRecord(value, folder);
}

}  // namespace

// An open RocksDB instance, shared by the state machine and the snapshots
// captured from it. The last owner closes it; when the state machine has
// replaced it (Restore), the last owner also removes its folder. A failed
// removal is left for the next Open, which removes folders CURRENT_DB does
// not name.
class RocksDbKvStateMachine::Database {
 public:
  Database(std::unique_ptr<rocksdb::DB> db, fs::path folder,
           rocksdb::Options options, bool flush_on_close)
      : db_(std::move(db)),
        folder_(std::move(folder)),
        options_(std::move(options)),
        flush_on_close_(flush_on_close),
        background_errors_(raft::RocksDbBackgroundErrors::Find(options_)) {}

  ~Database() {
    if (db_ != nullptr && flush_on_close_ && !remove_when_closed_.load()) {
      // Applied batches skip the write-ahead log: a clean close writes them
      // out. RocksDB's own flush at close covers only the live memtable and
      // drops a flush that Sync() scheduled but that has not run yet.
      rocksdb::FlushOptions flush;
      flush.wait = true;
      db_->Flush(flush).PermitUncheckedError();
    }
    if (db_ != nullptr) db_->Close().PermitUncheckedError();
    db_.reset();
    if (remove_when_closed_.load()) {
      raft::RemoveAll(folder_).IgnoreError();
      raft::SyncDir(folder_.parent_path()).IgnoreError();
    }
  }

  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  rocksdb::DB* get() const { return db_.get(); }
  const fs::path& folder() const { return folder_; }
  // The options it was opened with (SST files for it are written with them).
  const rocksdb::Options& options() const { return options_; }
  void RemoveWhenClosed() { remove_when_closed_.store(true); }

  // OK until a background error left RocksDB running no more flushes
  // (raft::RocksDbBackgroundErrors); that error from then on. Any thread.
  absl::Status BackgroundError() const {
    if (background_errors_ == nullptr) return absl::OkStatus();
    rocksdb::Status error = background_errors_->error();
    if (error.ok()) return absl::OkStatus();
    return FromRocks(
        error,
        absl::StrCat("a background flush or compaction of ", folder_.string(),
                     " failed, and RocksDB writes no more flushes"));
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  const fs::path folder_;
  const rocksdb::Options options_;
  const bool flush_on_close_;
  std::atomic<bool> remove_when_closed_{false};
  const std::shared_ptr<raft::RocksDbBackgroundErrors> background_errors_;
};

// A RocksDB snapshot of the data plus the applied point it belongs to.
class RocksDbKvStateMachine::Snapshot : public raft::StateMachineSnapshot {
 public:
  Snapshot(std::shared_ptr<Database> db, const rocksdb::Snapshot* snapshot,
           raft::SnapshotMeta meta, uint64_t max_file_bytes)
      : db_(std::move(db)),
        snapshot_(snapshot),
        meta_(std::move(meta)),
        max_file_bytes_(max_file_bytes) {}

  ~Snapshot() override { db_->get()->ReleaseSnapshot(snapshot_); }

  raft::SnapshotMeta meta() const override { return meta_; }

  absl::Status WriteTo(const fs::path& dir) override {
    const std::string lower(1, kDataPrefix);
    const std::string upper(1, static_cast<char>(kDataPrefix + 1));
    const rocksdb::Slice lower_bound(lower);
    const rocksdb::Slice upper_bound(upper);
    rocksdb::ReadOptions read;
    read.snapshot = snapshot_;
    read.fill_cache = false;  // one pass over everything: keep the cache
    read.readahead_size = 2 << 20;
    read.iterate_lower_bound = &lower_bound;
    read.iterate_upper_bound = &upper_bound;
    std::unique_ptr<rocksdb::Iterator> it(db_->get()->NewIterator(read));

    rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), db_->options());
    bool open = false;
    uint64_t file_number = 0;
    std::string file;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (!open) {
        file = (dir / absl::StrFormat("data-%06d.sst", ++file_number)).string();
        if (absl::Status s =
                FromRocks(writer.Open(file), absl::StrCat("creating ", file));
            !s.ok()) {
          return s;
        }
        open = true;
      }
      if (absl::Status s = FromRocks(writer.Put(it->key(), it->value()),
                                     absl::StrCat("writing ", file));
          !s.ok()) {
        return s;
      }
      if (writer.FileSize() >= max_file_bytes_) {
        if (absl::Status s =
                FromRocks(writer.Finish(), absl::StrCat("finishing ", file));
            !s.ok()) {
          return s;
        }
        open = false;
      }
    }
    if (absl::Status s = FromRocks(
            it->status(),
            absl::StrCat("reading the snapshot of ", db_->folder().string()));
        !s.ok()) {
      return s;
    }
    if (open) {
      return FromRocks(writer.Finish(), absl::StrCat("finishing ", file));
    }
    return absl::OkStatus();
  }

 private:
  const std::shared_ptr<Database> db_;
  const rocksdb::Snapshot* const snapshot_;
  const raft::SnapshotMeta meta_;
  const uint64_t max_file_bytes_;
};

// The KvStore view of one batch: writes go into a WriteBatch, and a cache of
// the keys the batch has read or written makes later commands of the batch
// see them (and keeps key_count exact). Invariant: every key the batch wrote
// is in the cache with the value it leaves, which is what lets the batch's
// scans overlay the cache on the database (BatchView::Scan).
class RocksDbKvStateMachine::BatchStore : public KvStore {
 public:
  // `scratch` (reused by every batch) holds the cache's keys, values and
  // nodes until it is full; what does not fit comes from the heap. Both are
  // released together when the store is destroyed, so no entry of the cache
  // costs an allocation and a free of its own, and the memory a batch uses
  // is the memory the previous one used, still in the CPU's caches.
  BatchStore(rocksdb::DB* db, const fs::path& folder, uint64_t key_count,
             rocksdb::WriteBatch* batch, std::span<char> scratch)
      : db_(db),
        folder_(folder),
        key_count_(key_count),
        batch_(batch),
        memory_(scratch.data(), scratch.size(),
                std::pmr::new_delete_resource()),
        cache_(&memory_) {}

  uint64_t key_count() const { return key_count_; }

  absl::StatusOr<std::optional<std::string>> Get(
      const std::string& key) override {
    return Get(std::string_view(key));
  }
  absl::Status Put(const std::string& key, const std::string& value) override {
    return Put(std::string_view(key), std::string_view(value));
  }
  absl::Status Delete(const std::string& key) override {
    return Delete(std::string_view(key));
  }

  absl::StatusOr<std::optional<std::string>> Get(std::string_view key) {
    auto cached = Lookup(key);
    if (!cached.ok()) return cached.status();
    const std::optional<std::string_view>& value = (*cached)->second;
    if (!value.has_value()) return std::optional<std::string>();
    return std::optional<std::string>(std::string(*value));
  }

  absl::Status Put(std::string_view key, std::string_view value) {
    auto cached = Lookup(key);
    if (!cached.ok()) return cached.status();
    return Write(*cached, value);
  }

  // OrderedKv::PutNew: a key the batch has not seen is absent from the
  // database, so it is not read (checked when NDEBUG is off).
  absl::Status PutNew(std::string_view key, std::string_view value) {
    auto it = cache_.find(key);
    if (it == cache_.end()) {
#ifndef NDEBUG
      auto stored = Lookup(key);
      if (!stored.ok()) return stored.status();
      if ((*stored)->second.has_value()) {
        return absl::InternalError(absl::StrCat(
            "PutNew of a key the state already holds: '",
            absl::CHexEscape(std::string(key)), "' in ", folder_.string()));
      }
      it = *stored;
#else
      it = cache_.emplace(Keep(key), std::nullopt).first;
#endif
    }
    return Write(it, value);
  }

  absl::Status Delete(std::string_view key) {
    auto cached = Lookup(key);
    if (!cached.ok()) return cached.status();
    if ((*cached)->second.has_value()) --key_count_;
    (*cached)->second.reset();
    // The message is built only on failure: this runs for every record.
    if (rocksdb::Status s = batch_->Delete(DataKey(key)); !s.ok()) {
      return FromRocks(
          s, absl::StrCat("adding a Delete to a batch for ", folder_.string()));
    }
    return absl::OkStatus();
  }

 private:
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(std::string_view key) const {
      return std::hash<std::string_view>()(key);
    }
  };
  // Key -> its value as the batch leaves it (nullopt: absent); both views
  // into memory_.
  using Cache =
      std::pmr::unordered_map<std::string_view, std::optional<std::string_view>,
                              KeyHash, std::equal_to<>>;

  // A copy of `bytes` in memory_, valid until the store is destroyed.
  std::string_view Keep(std::string_view bytes) {
    if (bytes.empty()) return {};
    char* copy = static_cast<char*>(memory_.allocate(bytes.size(), 1));
    std::memcpy(copy, bytes.data(), bytes.size());
    return std::string_view(copy, bytes.size());
  }

  absl::StatusOr<Cache::iterator> Lookup(std::string_view key) {
    if (auto it = cache_.find(key); it != cache_.end()) return it;
    std::string value;
    rocksdb::Status status =
        db_->Get(rocksdb::ReadOptions(), DataKey(key), &value);
    if (status.IsNotFound()) {
      return cache_.emplace(Keep(key), std::nullopt).first;
    }
    if (!status.ok()) {
      return FromRocks(status,
                       absl::StrCat("reading a key from ", folder_.string()));
    }
    return cache_.emplace(Keep(key), Keep(value)).first;
  }

  absl::Status Write(Cache::iterator cached, std::string_view value) {
    if (!cached->second.has_value()) ++key_count_;
    // A value the batch overwrites stays in memory_ until the batch ends.
    cached->second = Keep(value);
    if (rocksdb::Status s =
            batch_->Put(DataKey(cached->first), rocksdb::Slice(value));
        !s.ok()) {
      return FromRocks(
          s, absl::StrCat("adding a Put to a batch for ", folder_.string()));
    }
    return absl::OkStatus();
  }

  rocksdb::DB* const db_;
  const fs::path& folder_;
  uint64_t key_count_;
  rocksdb::WriteBatch* const batch_;
  std::pmr::monotonic_buffer_resource memory_;
  Cache cache_;

  friend class BatchView;
};

namespace {

// Visits the data keys in [start, end) of `it` (positioned by the caller's
// bounds), stripped of the data prefix.
absl::Status VisitData(rocksdb::Iterator* it, std::string_view start,
                       std::string_view end, const OrderedKv::Visitor& visitor,
                       const fs::path& folder) {
  const std::string first = DataKey(start);
  const std::string last = DataKey(end);
  for (it->Seek(first); it->Valid(); it->Next()) {
    const rocksdb::Slice key = it->key();
    if (key.compare(rocksdb::Slice(last)) >= 0) break;
    if (!visitor(std::string_view(key.data() + 1, key.size() - 1),
                 std::string_view(it->value().data(), it->value().size()))) {
      break;
    }
  }
  return FromRocks(it->status(),
                   absl::StrCat("scanning keys of ", folder.string()));
}

}  // namespace

// The OrderedKv view of one batch for a KvApplication: BatchStore's writes
// and reads, plus scans that merge the batch with the database.
class RocksDbKvStateMachine::BatchView : public OrderedKv {
 public:
  explicit BatchView(BatchStore& store) : store_(store) {}

  absl::StatusOr<std::optional<std::string>> Get(
      std::string_view key) const override {
    return store_.Get(key);
  }
  absl::Status Put(std::string_view key, std::string_view value) override {
    return store_.Put(key, value);
  }
  absl::Status PutNew(std::string_view key, std::string_view value) override {
    return store_.PutNew(key, value);
  }
  absl::Status Delete(std::string_view key) override {
    return store_.Delete(key);
  }
  // The database's keys overlaid with the batch's cache, which holds every
  // key the batch wrote (and keys it only read, with the database's value).
  absl::Status Scan(std::string_view start, std::string_view end,
                    const Visitor& visitor) const override {
    if (!(start < end)) return absl::OkStatus();
    std::vector<const BatchStore::Cache::value_type*> overlay;
    for (const auto& entry : store_.cache_) {
      if (entry.first >= start && entry.first < end) overlay.push_back(&entry);
    }
    std::sort(overlay.begin(), overlay.end(),
              [](const auto* a, const auto* b) { return a->first < b->first; });
    auto next = overlay.begin();
    bool stopped = false;
    // Visits the overlay's live keys before `bound` (all when null).
    const auto visit_overlay_before = [&](const std::string_view* bound) {
      for (; !stopped && next != overlay.end() &&
             (bound == nullptr || std::string_view((*next)->first) < *bound);
           ++next) {
        if ((*next)->second.has_value() &&
            !visitor((*next)->first, *(*next)->second)) {
          stopped = true;
        }
      }
    };
    std::unique_ptr<rocksdb::Iterator> it(
        store_.db_->NewIterator(rocksdb::ReadOptions()));
    absl::Status status = VisitData(
        it.get(), start, end,
        [&](std::string_view key, std::string_view value) {
          visit_overlay_before(&key);
          if (stopped) return false;
          if (next != overlay.end() && (*next)->first == key) {
            return true;  // the batch's value, visited with the keys after it
          }
          if (!visitor(key, value)) stopped = true;
          return !stopped;
        },
        store_.folder_);
    if (!status.ok()) return status;
    visit_overlay_before(nullptr);
    return absl::OkStatus();
  }

 private:
  BatchStore& store_;
};

// The OrderedKv view of one RocksDB snapshot, for queries: read only.
class RocksDbKvStateMachine::SnapshotView : public OrderedKv {
 public:
  SnapshotView(rocksdb::DB* db, const fs::path& folder)
      : db_(db), folder_(folder), snapshot_(db->GetSnapshot()) {
    read_.snapshot = snapshot_;
  }
  ~SnapshotView() override { db_->ReleaseSnapshot(snapshot_); }

  absl::StatusOr<std::optional<std::string>> Get(
      std::string_view key) const override {
    std::string value;
    rocksdb::Status status = db_->Get(read_, DataKey(key), &value);
    if (status.IsNotFound()) return std::optional<std::string>();
    if (!status.ok()) {
      return FromRocks(status,
                       absl::StrCat("reading a key from ", folder_.string()));
    }
    return std::optional<std::string>(std::move(value));
  }
  absl::Status Put(std::string_view, std::string_view) override {
    return absl::FailedPreconditionError("a query cannot write");
  }
  absl::Status Delete(std::string_view) override {
    return absl::FailedPreconditionError("a query cannot write");
  }
  absl::Status Scan(std::string_view start, std::string_view end,
                    const Visitor& visitor) const override {
    if (!(start < end)) return absl::OkStatus();
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_));
    return VisitData(it.get(), start, end, visitor, folder_);
  }

 private:
  rocksdb::DB* const db_;
  const fs::path& folder_;
  const rocksdb::Snapshot* const snapshot_;
  rocksdb::ReadOptions read_;
};

RocksDbKvStateMachine::RocksDbKvStateMachine(
    RocksDbKvStateMachineOptions options)
    : options_(std::move(options)) {}

RocksDbKvStateMachine::~RocksDbKvStateMachine() = default;

void RocksDbKvStateMachine::CrashPoint(std::string_view point) const {
  if (options_.crash_point) options_.crash_point(point);
}

fs::path RocksDbKvStateMachine::live_folder() const {
  return db_ == nullptr ? fs::path() : db_->folder();
}

absl::StatusOr<std::shared_ptr<RocksDbKvStateMachine::Database>>
RocksDbKvStateMachine::OpenDatabase(const std::string& folder_name,
                                    bool create) const {
  const fs::path folder = options_.path / folder_name;
  rocksdb::Options db_options = DbOptions(options_, create);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status status = rocksdb::DB::Open(db_options, folder.string(), &raw);
  if (!status.ok()) {
    if (!create && status.IsInvalidArgument()) {
      // RocksDB says "does not exist (create_if_missing is false)".
      return absl::DataLossError(absl::StrCat(
          "the state machine database folder ", folder.string(), " named by ",
          (options_.path / kCurrentFileName).string(),
          " is not a RocksDB database: ", status.ToString()));
    }
    return FromRocks(status, absl::StrCat("opening the state machine "
                                          "database ",
                                          folder.string()));
  }
  return std::make_shared<Database>(std::unique_ptr<rocksdb::DB>(raw), folder,
                                    std::move(db_options),
                                    options_.flush_on_close);
}

absl::StatusOr<raft::AppliedState> RocksDbKvStateMachine::Open() {
  if (options_.path.empty()) {
    return absl::InvalidArgumentError(
        "RocksDbKvStateMachineOptions.path is empty");
  }
  if (db_ != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("RocksDbKvStateMachine at ", options_.path.string(),
                     " is already open"));
  }
  const fs::path& path = options_.path;
  const fs::path current = path / kCurrentFileName;
  std::error_code error;
  const bool exists = fs::is_directory(path, error);
  if (error && error != std::errc::no_such_file_or_directory) {
    return FromErrorCode(error, "checking", path);
  }
  if (!exists) {
    if (!options_.create_if_missing) {
      return absl::NotFoundError(
          absl::StrCat("no state machine at ", path.string()));
    }
    // Every folder created is synced into its parent, so a power cut cannot
    // lose the state machine's folder after data was made durable in it.
    if (absl::Status s = raft::CreateDirsDurably(path); !s.ok()) return s;
  }

  // The folders present, by number.
  std::vector<std::pair<uint64_t, std::string>> folders;
  for (fs::directory_iterator it(path, error), end; !error && it != end;
       it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (std::optional<uint64_t> number = ParseFolderName(name)) {
      folders.emplace_back(*number, name);
    }
  }
  if (error) return FromErrorCode(error, "listing", path);

  absl::StatusOr<std::string> pointer = raft::ReadFileToString(current);
  std::string live_name;
  if (pointer.ok()) {
    const std::string& text = *pointer;
    std::optional<uint64_t> number;
    if (!text.empty() && text.back() == '\n') {
      number =
          ParseFolderName(std::string_view(text).substr(0, text.size() - 1));
    }
    if (!number.has_value()) {
      return absl::DataLossError(absl::StrCat(
          "corrupt ", current.string(), ": \"", absl::CHexEscape(text),
          "\" does not name a database folder (db-N)"));
    }
    live_name = FolderName(*number);
    // A pointer written by this code is canonical; anything else was not.
    if (live_name + "\n" != text) {
      return absl::DataLossError(absl::StrCat(
          "corrupt ", current.string(), ": \"", absl::CHexEscape(text),
          "\" is not the canonical name of a database folder"));
    }
    if (!fs::is_directory(path / live_name, error)) {
      return absl::DataLossError(
          absl::StrCat(current.string(), " names the database folder ",
                       (path / live_name).string(), ", which does not exist"));
    }
    auto db = OpenDatabase(live_name, /*create=*/false);
    if (!db.ok()) return db.status();
    db_ = std::move(*db);
    db_number_ = *number;
  } else if (absl::IsNotFound(pointer.status())) {
    if (!options_.create_if_missing) {
      return absl::NotFoundError(absl::StrCat("no state machine at ",
                                              path.string(), " (no ",
                                              kCurrentFileName, ")"));
    }
    // A fresh state machine. The only folder that may exist without
    // CURRENT_DB is db-000001 from an Open interrupted before it wrote
    // CURRENT_DB; it cannot hold applied state, because Open had not
    // returned. Anything else means CURRENT_DB was lost.
    live_name = FolderName(1);
    for (const auto& [number, name] : folders) {
      if (number != 1) {
        return absl::DataLossError(
            absl::StrCat(current.string(), " is missing but database folder ",
                         (path / name).string(), " exists"));
      }
    }
    auto db = OpenDatabase(live_name, /*create=*/true);
    if (!db.ok()) return db.status();
    auto record = ReadAppliedRecord((*db)->get(), (*db)->folder());
    if (!record.ok()) return record.status();
    if (record->applied.index != raft::LogIndex(0)) {
      return absl::DataLossError(
          absl::StrCat(current.string(), " is missing but database folder ",
                       (*db)->folder().string(), " holds applied index ",
                       record->applied.index.value()));
    }
    if (absl::Status s = raft::SyncFolderFiles((*db)->folder()); !s.ok())
      return s;
    if (absl::Status s = raft::SyncDir(path); !s.ok()) return s;
    if (absl::Status s = raft::WriteFileDurably(current, live_name + "\n");
        !s.ok()) {
      return s;
    }
    db_ = std::move(*db);
    db_number_ = 1;
  } else {
    return pointer.status();
  }

  // Remove what an interrupted Restore (or pointer write) left behind.
  bool removed = false;
  for (const auto& [number, name] : folders) {
    if (name == live_name) continue;
    if (absl::Status s = raft::RemoveAll(path / name); !s.ok()) return s;
    removed = true;
  }
  fs::path temporary = current;
  temporary += ".tmp";
  if (fs::exists(temporary, error)) {
    if (absl::Status s = raft::RemoveAll(temporary); !s.ok()) return s;
    removed = true;
  }
  if (removed) {
    if (absl::Status s = raft::SyncDir(path); !s.ok()) return s;
  }

  auto record = ReadAppliedRecord(db_->get(), db_->folder());
  if (!record.ok()) {
    db_.reset();
    return record.status();
  }
  applied_ = std::move(record->applied);
  key_count_ = record->key_count;
  if (options_.application != nullptr) {
    std::unique_lock lock(mutex_);
    SnapshotView view(db_->get(), db_->folder());
    if (absl::Status s = options_.application->Load(view); !s.ok()) {
      db_.reset();
      return s;
    }
  }
  return applied_;
}

absl::StatusOr<std::vector<std::string>> RocksDbKvStateMachine::Apply(
    const raft::ApplyBatch& batch) {
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::Apply before a successful Open");
  }
  std::vector<std::string> responses;
  if (batch.entries.empty()) return responses;
  if (absl::Status s = raft::CheckBatchFollows(applied_, batch,
                                               "RocksDbKvStateMachine::Apply");
      !s.ok()) {
    return s;
  }
  if (absl::Status failed = db_->BackgroundError(); !failed.ok()) {
    return failed;
  }
  responses.reserve(batch.entries.size());
  rocksdb::WriteBatch write_batch;
  if (batch_scratch_ == nullptr) {
    batch_scratch_ = std::make_unique<char[]>(kBatchScratchBytes);
  }
  BatchStore store(db_->get(), db_->folder(), key_count_, &write_batch,
                   std::span<char>(batch_scratch_.get(), kBatchScratchBytes));
  BatchView view(store);
  std::vector<std::string_view> upcoming;
  size_t prefetched_through = 0;  // entries before it were offered
  for (size_t i = 0; i < batch.entries.size(); ++i) {
    const raft::Entry& entry = batch.entries[i];
    if (options_.application != nullptr && i == prefetched_through) {
      upcoming.clear();
      for (; prefetched_through < batch.entries.size() &&
             upcoming.size() < KvApplication::kPrefetchEntries;
           ++prefetched_through) {
        const raft::Entry& next = batch.entries[prefetched_through];
        if (next.type != raft::EntryType::kNoOp) {
          upcoming.push_back(next.data.view());
        }
      }
      options_.application->Prefetch(upcoming);
    }
    if (entry.type == raft::EntryType::kNoOp) {
      responses.emplace_back();
      continue;
    }
    absl::StatusOr<std::string> response =
        options_.application != nullptr
            ? options_.application->Apply(entry.data.view(), view)
            : ApplyEntryData(entry.data.view(), &store);
    if (!response.ok()) return response.status();
    responses.push_back(std::move(*response));
  }
  if (options_.application != nullptr) {
    if (absl::Status s = options_.application->BeforeWrite(view); !s.ok()) {
      return s;
    }
  }
  const raft::Entry& last = batch.entries.back();
  raft::AppliedState applied{last.index, last.term, batch.configuration};
  // The data of the batch and the applied point in one atomic write
  // (docs/design.md "State machines": a persistent state machine keeps the
  // applied index in the same atomic write as the data it covers).
  if (absl::Status s = FromRocks(
          write_batch.Put(kAppliedKey,
                          EncodeAppliedRecord(applied, store.key_count())),
          "adding the applied record to a batch");
      !s.ok()) {
    return s;
  }
  rocksdb::WriteOptions write;
  write.disableWAL = !options_.write_ahead_log;
  if (rocksdb::Status s = db_->get()->Write(write, &write_batch); !s.ok()) {
    return FromRocks(
        s, absl::StrCat("writing entries ", batch.entries.front().index.value(),
                        " to ", last.index.value(), " to ",
                        db_->folder().string()));
  }
  applied_ = std::move(applied);
  key_count_ = store.key_count();
  if (options_.application != nullptr) options_.application->Committed();
  return responses;
}

absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>>
RocksDbKvStateMachine::Capture() {
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::Capture before a successful Open");
  }
  if (applied_.index == raft::LogIndex(0)) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::Capture: nothing has been applied");
  }
  const rocksdb::Snapshot* snapshot = db_->get()->GetSnapshot();
  if (snapshot == nullptr) {
    return absl::InternalError(
        absl::StrCat("RocksDB refused a snapshot of ", db_->folder().string()));
  }
  return std::unique_ptr<raft::StateMachineSnapshot>(new Snapshot(
      db_, snapshot,
      raft::SnapshotMeta{applied_.index, applied_.term, applied_.configuration},
      options_.max_snapshot_file_bytes));
}

absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>>
RocksDbKvStateMachine::CaptureData() const {
  std::shared_lock lock(mutex_);
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::CaptureData before a successful Open");
  }
  const rocksdb::Snapshot* snapshot = db_->get()->GetSnapshot();
  if (snapshot == nullptr) {
    return absl::InternalError(
        absl::StrCat("RocksDB refused a snapshot of ", db_->folder().string()));
  }
  return std::unique_ptr<raft::StateMachineSnapshot>(new Snapshot(
      db_, snapshot, raft::SnapshotMeta{}, options_.max_snapshot_file_bytes));
}

absl::Status RocksDbKvStateMachine::Restore(const raft::SnapshotMeta& meta,
                                            const fs::path& dir) {
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::Restore before a successful Open");
  }
  // The snapshot's SST files, checked before anything changes: readable,
  // only Puts, only data keys. Their entry counts give the key count.
  std::vector<std::string> files;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end;
       it.increment(error)) {
    if (it->path().extension() == ".sst") files.push_back(it->path().string());
  }
  if (error) return FromErrorCode(error, "listing the snapshot folder", dir);
  std::sort(files.begin(), files.end());
  const rocksdb::Options db_options = DbOptions(options_, true);
  uint64_t key_count = 0;
  for (const std::string& file : files) {
    rocksdb::SstFileReader reader(db_options);
    rocksdb::Status status = reader.Open(file);
    if (!status.ok()) {
      return absl::DataLossError(
          absl::StrCat("snapshot file ", file,
                       " is not a readable SST file: ", status.ToString()));
    }
    std::shared_ptr<const rocksdb::TableProperties> properties =
        reader.GetTableProperties();
    if (properties == nullptr || properties->num_deletions != 0 ||
        properties->num_merge_operands != 0 ||
        properties->num_range_deletions != 0) {
      return absl::DataLossError(
          absl::StrCat("snapshot file ", file,
                       " holds deletions or merges: it was not written by "
                       "RocksDbKvStateMachine"));
    }
    std::unique_ptr<rocksdb::Iterator> it(
        reader.NewIterator(rocksdb::ReadOptions()));
    std::string first;
    std::string last;
    it->SeekToFirst();
    if (it->Valid()) first = it->key().ToString();
    it->SeekToLast();
    if (it->Valid()) last = it->key().ToString();
    if (!it->status().ok()) {
      return absl::DataLossError(absl::StrCat("reading snapshot file ", file,
                                              ": ", it->status().ToString()));
    }
    if (first.empty() || first[0] != kDataPrefix || last[0] != kDataPrefix) {
      return absl::DataLossError(absl::StrCat(
          "snapshot file ", file,
          " is empty or holds keys outside the state machine's data"));
    }
    key_count += properties->num_entries;
  }

  // Build the new database next to the live one.
  const uint64_t number = db_number_ + 1;
  const std::string name = FolderName(number);
  const fs::path folder = options_.path / name;
  if (absl::Status s = raft::RemoveAll(folder); !s.ok()) return s;
  auto built = OpenDatabase(name, /*create=*/true);
  if (!built.ok()) return built.status();
  std::shared_ptr<Database> next = std::move(*built);
  auto abandon = [&](absl::Status status) {
    next->RemoveWhenClosed();
    next.reset();
    return status;
  };
  if (!files.empty()) {
    rocksdb::IngestExternalFileOptions ingest;
    // Copy: the snapshot store keeps owning its files (a move would unlink
    // them after ingestion).
    ingest.move_files = false;
    ingest.write_global_seqno = false;
    if (absl::Status s =
            FromRocks(next->get()->IngestExternalFile(files, ingest),
                      absl::StrCat("ingesting the snapshot ", dir.string(),
                                   " into ", folder.string()));
        !s.ok()) {
      return abandon(s);
    }
  }
  const raft::AppliedState applied{meta.index, meta.term, meta.configuration};
  rocksdb::WriteOptions synced;
  synced.sync = true;
  if (absl::Status s = FromRocks(
          next->get()->Put(synced, kAppliedKey,
                           EncodeAppliedRecord(applied, key_count)),
          absl::StrCat("writing the applied record to ", folder.string()));
      !s.ok()) {
    return abandon(s);
  }
  // The new database must be complete on disk before CURRENT_DB names it.
  rocksdb::FlushOptions flush;
  flush.wait = true;
  if (absl::Status s = FromRocks(next->get()->Flush(flush),
                                 absl::StrCat("flushing ", folder.string()));
      !s.ok()) {
    return abandon(s);
  }
  if (absl::Status s = raft::SyncFolderFiles(folder); !s.ok())
    return abandon(s);
  if (absl::Status s = raft::SyncDir(options_.path); !s.ok()) {
    return abandon(s);
  }
  CrashPoint("restore:after-build");

  // The switch: atomic and durable (temporary + fsync + rename + fsync dir).
  // After an error here CURRENT_DB names either folder; both are complete.
  if (absl::Status s =
          raft::WriteFileDurably(options_.path / kCurrentFileName, name + "\n");
      !s.ok()) {
    return s;
  }
  CrashPoint("restore:after-pointer");

  std::shared_ptr<Database> old;
  absl::Status loaded;
  {
    std::unique_lock lock(mutex_);
    old = std::exchange(db_, std::move(next));
    if (options_.application != nullptr) {
      SnapshotView view(db_->get(), db_->folder());
      loaded = options_.application->Load(view);
    }
  }
  db_number_ = number;
  applied_ = applied;
  key_count_ = key_count;
  // Closed and removed now, or when the last snapshot of it is destroyed.
  old->RemoveWhenClosed();
  old.reset();
  if (!loaded.ok()) return loaded;
  if (options_.application != nullptr) options_.application->Restored();
  return absl::OkStatus();
}

absl::StatusOr<std::string> RocksDbKvStateMachine::Query(
    std::string_view query) const {
  if (options_.application != nullptr) {
    std::shared_lock lock(mutex_);
    if (db_ == nullptr) {
      return absl::FailedPreconditionError(
          "RocksDbKvStateMachine::Query before a successful Open");
    }
    // A state older than what the application derived in memory since is
    // asked again with a newer one; a later state exists by then, so the
    // bound is never reached unless something is wrong.
    constexpr int kMaxAttempts = 16;
    for (int attempt = 1;; ++attempt) {
      SnapshotView view(db_->get(), db_->folder());
      absl::StatusOr<std::string> answer =
          options_.application->Query(query, view);
      if (answer.ok() || !IsQueryAgain(answer.status()) ||
          attempt == kMaxAttempts) {
        return answer;
      }
    }
  }
  absl::StatusOr<KvQuery> decoded = DecodeQuery(query);
  if (!decoded.ok()) return decoded.status();
  std::shared_lock lock(mutex_);
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::Query before a successful Open");
  }
  if (const auto* get = std::get_if<GetQuery>(&*decoded)) {
    std::string value;
    rocksdb::Status status =
        db_->get()->Get(rocksdb::ReadOptions(), DataKey(get->key), &value);
    if (status.IsNotFound()) return EncodeGetResult(std::nullopt);
    if (!status.ok()) {
      return FromRocks(
          status, absl::StrCat("reading a key from ", db_->folder().string()));
    }
    return EncodeGetResult(std::move(value));
  }
  // The key count lives in the applied record, written with the data.
  auto record = ReadAppliedRecord(db_->get(), db_->folder());
  if (!record.ok()) return record.status();
  return EncodeCountResult(record->key_count);
}

absl::Status RocksDbKvStateMachine::CompactStorage() {
  std::shared_lock lock(mutex_);
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::CompactStorage before a successful Open");
  }
  return FromRocks(db_->get()->CompactRange(rocksdb::CompactRangeOptions(),
                                            nullptr, nullptr),
                   absl::StrCat("compacting ", db_->folder().string()));
}

absl::StatusOr<raft::LogIndex> RocksDbKvStateMachine::Sync() {
  if (db_ == nullptr) {
    return absl::FailedPreconditionError(
        "RocksDbKvStateMachine::Sync before a successful Open");
  }
  if (absl::Status failed = db_->BackgroundError(); !failed.ok()) {
    return failed;
  }
  if (options_.write_ahead_log) {
    if (absl::Status s =
            FromRocks(db_->get()->FlushWAL(/*sync=*/true),
                      absl::StrCat("syncing the write-ahead log of ",
                                   db_->folder().string()));
        !s.ok()) {
      return s;
    }
    return applied_.index;
  }
  // Starts a flush of everything applied so far and answers with what
  // earlier flushes made durable: a flush writes its SST file and the
  // MANIFEST with sync before RocksDB reads from it, and kPersistedTier reads
  // only from there. Waiting here would stall the apply thread for a whole
  // memtable's flush.
  rocksdb::FlushOptions flush;
  flush.wait = false;
  flush.allow_write_stall = true;
  // TryAgain: writes are stopped until the flushes already queued finish;
  // those make the same progress durable, and the next call starts another.
  if (rocksdb::Status flushed = db_->get()->Flush(flush);
      !flushed.ok() && !flushed.IsTryAgain()) {
    return FromRocks(flushed, absl::StrCat("flushing the memtable of ",
                                           db_->folder().string()));
  }
  absl::StatusOr<AppliedRecord> durable =
      ReadAppliedRecord(db_->get(), db_->folder(), rocksdb::kPersistedTier);
  if (!durable.ok()) return durable.status();
  return durable->applied.index;
}

}  // namespace driftwood::statemachine
