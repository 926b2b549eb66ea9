#include "raft/storage/rocksdb_log_store.h"

#include <cstddef>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/storage/encoding.h"
#include "raft/storage/file_util.h"
#include "raft/storage/rocksdb_background_errors.h"
#include "raft/storage/rocksdb_background_io.h"
#include "raft/storage/sequential_skiplist.h"
#include "raft/storage/wal_prefill.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace driftwood::raft {

using storage::DecodeConfiguration;
using storage::DecodeEntry;
using storage::DecodeHardState;
using storage::DecodeLogStart;
using storage::DecodeSnapshotMeta;
using storage::EncodeConfiguration;
using storage::EncodeEntry;
using storage::EncodeHardState;
using storage::EncodeLogStart;
using storage::EncodeSnapshotMeta;

namespace {

// Instance-wide keys start with 0x00; per-group keys with 'M' (metadata) or
// 'e' (entries) and the 8-byte big-endian group id (FORMAT.md). Metadata
// sorts before every entry, so an appended entry is the last key of the
// memtable: RocksDB's skip-list insert then compares it with no successor.
// (std::string with an explicit length: the leading NUL must not end them.)
const std::string kFormatKey("\0format", 7);
const std::string kIdentityKey("\0identity", 9);
constexpr char kMetaPrefix = 'M';
// Format 1 kept the metadata under 'm', after the entries; Open moves it.
constexpr uint64_t kFormatVersion1 = 1;
constexpr char kFormat1MetaPrefix = 'm';

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

rocksdb::Options LogOptions(const RocksDbLogStoreOptions& options,
                            rocksdb::Env* env) {
  rocksdb::Options o;
  o.create_if_missing = options.create_if_missing;
  o.env = env;
  // A torn record at the end of the WAL is what a crash leaves behind and is
  // dropped; corruption anywhere else fails the open (never a silent
  // truncation of acknowledged writes).
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  o.paranoid_checks = true;
  // A failed background flush is final (rocksdb_background_errors.h), and
  // the append that fails then stops the node: at once after a failed WAL
  // write or sync or a non-retryable flush error; after a retryable one,
  // once max_write_buffer_number memtables are full and RocksDB stops
  // writes.
  RocksDbBackgroundErrors::Install(o);
  // Entries are written once, read back soon (followers catching up, apply)
  // and deleted by compaction soon after: a large memtable lets most of them
  // die before they are ever flushed to an SST.
  o.write_buffer_size = 64 << 20;
  o.max_write_buffer_number = 4;
  // Entries are appended in index order and the metadata sorts before them:
  // a memtable that places a key after the previous one in two comparisons
  // (sequential_skiplist.h), which takes one insert at a time.
  o.memtable_factory = NewSequentialSkipListFactory();
  o.allow_concurrent_memtable_write = false;
  // Payloads are the application's bytes, often already compact; compression
  // costs CPU on the write path for little space.
  o.compression = rocksdb::kNoCompression;
  // Deleted ranges make tombstones; level compaction with dynamic level sizes
  // keeps space and read amplification low as the log slides forward.
  o.level_compaction_dynamic_level_bytes = true;
  o.max_background_jobs = 2;
  InstallBackgroundIoPacing(
      o, {.write_bytes_per_second = options.background_write_bytes_per_second});
  return o;
}

}  // namespace

RocksDbLogStore::RocksDbLogStore(const RocksDbLogStoreOptions& options,
                                 std::unique_ptr<rocksdb::Env> env,
                                 std::unique_ptr<rocksdb::DB> db)
    : options_(options), env_(std::move(env)), db_(std::move(db)) {}

RocksDbLogStore::~RocksDbLogStore() = default;

std::string RocksDbLogStore::EntryKey(LogIndex index) const {
  std::string key;
  key.reserve(17);
  key.push_back('e');
  PutFixed64BigEndian(&key, options_.group_id);
  PutFixed64BigEndian(&key, index.value());
  return key;
}

std::string RocksDbLogStore::MetaKey(const char* name) const {
  std::string key(1, kMetaPrefix);
  PutFixed64BigEndian(&key, options_.group_id);
  key.append(name);
  return key;
}

absl::StatusOr<std::optional<std::string>> RocksDbLogStore::Get(
    const std::string& key) const {
  std::string value;
  rocksdb::Status status = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (status.IsNotFound()) return std::optional<std::string>();
  if (!status.ok()) return FromRocks(status, "reading the log store");
  return std::optional<std::string>(std::move(value));
}

absl::StatusOr<std::unique_ptr<RocksDbLogStore>> RocksDbLogStore::Open(
    const RocksDbLogStoreOptions& options) {
  if (options.path.empty()) {
    return absl::InvalidArgumentError("RocksDbLogStoreOptions.path is empty");
  }
  if (options.cluster_id == 0 || options.node_id == kNoNode) {
    return absl::InvalidArgumentError(
        "RocksDbLogStoreOptions needs a cluster_id and a node_id");
  }
  if (options.create_if_missing && options.env == nullptr) {
    // RocksDB fsyncs its own folder, not the folders above it: without this
    // a power cut could lose the whole store, votes included, right after
    // it was created.
    if (absl::Status created = CreateDirsDurably(options.path); !created.ok()) {
      return created;
    }
  }
  // Synced appends write over zeros instead of growing the write-ahead log,
  // and a crash's zeros after the last record are cut before RocksDB reads
  // the log (wal_prefill.h).
  auto file_system = std::make_shared<WalPrefillFileSystem>(
      options.env != nullptr ? options.env->GetFileSystem()
                             : rocksdb::FileSystem::Default());
  if (absl::StatusOr<int> trimmed =
          TrimWalZeroTails(*file_system, options.path);
      !trimmed.ok()) {
    return trimmed.status();
  }
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(file_system);
  rocksdb::DB* raw = nullptr;
  rocksdb::Status status =
      rocksdb::DB::Open(LogOptions(options, env.get()), options.path, &raw);
  if (!status.ok()) {
    if (!options.create_if_missing && status.IsInvalidArgument()) {
      return absl::NotFoundError(absl::StrCat("no log store at ", options.path,
                                              ": ", status.ToString()));
    }
    absl::Status error = FromRocks(
        status, absl::StrCat("opening the log store at ", options.path));
    // RocksDB names the file for SST and MANIFEST damage but not for a
    // record that fails its checksum while the write-ahead log is replayed.
    if (absl::IsDataLoss(error) &&
        error.message().find(" file") == std::string_view::npos) {
      return absl::DataLossError(absl::StrCat(
          error.message(), " (while replaying a write-ahead log file, ",
          options.path, "/*.log)"));
    }
    return error;
  }
  std::unique_ptr<RocksDbLogStore> store(new RocksDbLogStore(
      options, std::move(env), std::unique_ptr<rocksdb::DB>(raw)));

  auto format = store->Get(kFormatKey);
  if (!format.ok()) return format.status();
  std::string identity;
  PutVarint64(&identity, options.cluster_id);
  PutVarint64(&identity, options.node_id.value());
  if (!format->has_value()) {
    if (!options.create_if_missing) {
      return absl::NotFoundError(
          absl::StrCat("no log store at ", options.path));
    }
    if (std::string problem = options.initial_configuration.Validate();
        !problem.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("initial configuration: ", problem));
    }
    std::string version;
    PutVarint64(&version, kFormatVersion);
    rocksdb::WriteBatch batch;
    batch.Put(kFormatKey, version);
    batch.Put(kIdentityKey, identity);
    batch.Put(store->MetaKey("configuration"),
              EncodeConfiguration(options.initial_configuration));
    batch.Put(store->MetaKey("hard_state"), EncodeHardState(HardState{}));
    batch.Put(store->MetaKey("log_start"),
              EncodeLogStart(LogIndex(1), Term(0)));
    rocksdb::WriteOptions write;
    write.sync = true;
    if (absl::Status s = FromRocks(store->db_->Write(write, &batch),
                                   "initializing the log store");
        !s.ok()) {
      return s;
    }
  } else {
    std::string_view bytes = **format;
    uint64_t version = 0;
    if (!GetVarint64(&bytes, &version)) {
      return absl::DataLossError(
          absl::StrCat("corrupt format version in ", options.path));
    }
    if (version != kFormatVersion && version != kFormatVersion1) {
      return absl::FailedPreconditionError(
          absl::StrCat("log store at ", options.path, " has format version ",
                       version, "; this build reads versions ", kFormatVersion1,
                       " and ", kFormatVersion));
    }
    auto stored_identity = store->Get(kIdentityKey);
    if (!stored_identity.ok()) return stored_identity.status();
    if (!stored_identity->has_value() || **stored_identity != identity) {
      uint64_t cluster = 0;
      uint64_t node = 0;
      std::string_view in = stored_identity->has_value()
                                ? std::string_view(**stored_identity)
                                : "";
      GetVarint64(&in, &cluster);
      GetVarint64(&in, &node);
      return absl::FailedPreconditionError(
          absl::StrCat("log store at ", options.path, " belongs to cluster ",
                       cluster, " node ", node, ", not cluster ",
                       options.cluster_id, " node ", options.node_id.value()));
    }
    if (version == kFormatVersion1) {
      if (absl::Status s = store->MigrateFromFormat1(); !s.ok()) return s;
    }
  }
  if (absl::Status s = store->Load(); !s.ok()) return s;
  return store;
}

absl::Status RocksDbLogStore::MigrateFromFormat1() {
  // Every group's metadata moves from 'm' to 'M' in one synced batch with the
  // new version: after a crash the store is wholly format 1 or wholly 2.
  rocksdb::WriteBatch batch;
  const std::string lower(1, kFormat1MetaPrefix);
  const std::string upper(1, kFormat1MetaPrefix + 1);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions read;
  read.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read));
  for (it->Seek(lower); it->Valid(); it->Next()) {
    std::string moved = it->key().ToString();
    moved[0] = kMetaPrefix;
    batch.Put(moved, it->value());
    batch.Delete(it->key());
  }
  if (!it->status().ok()) {
    return FromRocks(it->status(), absl::StrCat("reading the format 1 log "
                                                "store at ",
                                                options_.path));
  }
  std::string version;
  PutVarint64(&version, kFormatVersion);
  batch.Put(kFormatKey, version);
  rocksdb::WriteOptions write;
  write.sync = true;
  return FromRocks(db_->Write(write, &batch),
                   absl::StrCat("moving the log store at ", options_.path,
                                " from format 1 to ", kFormatVersion));
}

absl::Status RocksDbLogStore::Load() {
  auto hard = Get(MetaKey("hard_state"));
  auto configuration = Get(MetaKey("configuration"));
  auto start = Get(MetaKey("log_start"));
  auto snapshot = Get(MetaKey("snapshot"));
  for (const auto* value : {&hard, &configuration, &start, &snapshot}) {
    if (!value->ok()) return value->status();
  }
  if (!hard->has_value() || !configuration->has_value() ||
      !start->has_value()) {
    return absl::DataLossError(
        absl::StrCat("log store at ", options_.path, " is missing metadata"));
  }
  auto decoded_hard = DecodeHardState(**hard);
  if (!decoded_hard.ok()) return decoded_hard.status();
  hard_state_ = *decoded_hard;
  auto decoded_configuration = DecodeConfiguration(**configuration);
  if (!decoded_configuration.ok()) return decoded_configuration.status();
  configuration_ = *decoded_configuration;
  if (absl::Status s = DecodeLogStart(**start, &first_index_, &previous_term_);
      !s.ok()) {
    return s;
  }
  if (snapshot->has_value()) {
    auto meta = DecodeSnapshotMeta(**snapshot);
    if (!meta.ok()) return meta.status();
    snapshot_ = *meta;
  }
  // The last entry: the greatest key of this group's entry range.
  last_index_ = first_index_.prev();
  last_term_ = previous_term_;
  const std::string lower = EntryKey(LogIndex(0));
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions()));
  it->SeekForPrev(EntryKey(LogIndex(std::numeric_limits<uint64_t>::max())));
  if (it->Valid() && it->key().compare(lower) >= 0) {
    const LogIndex index(DecodeFixed64BigEndian(it->key().data() + 9));
    auto entry = DecodeEntry(
        std::string_view(it->value().data(), it->value().size()), index);
    if (!entry.ok()) return entry.status();
    if (index < first_index_) {
      return absl::DataLossError(absl::StrCat("entry ", index.value(),
                                              " lies before the log start ",
                                              first_index_.value()));
    }
    last_index_ = index;
    last_term_ = entry->term;
  }
  if (!it->status().ok()) return FromRocks(it->status(), "scanning the log");
  if (hard_state_.commit > last_index_) {
    return absl::DataLossError(
        absl::StrCat("stored commit index ", hard_state_.commit.value(),
                     " is past the last stored entry ", last_index_.value()));
  }
  return absl::OkStatus();
}

absl::StatusOr<InitialState> RocksDbLogStore::LoadInitialState() const {
  return InitialState{hard_state_, configuration_};
}

absl::StatusOr<Term> RocksDbLogStore::TermAt(LogIndex index) const {
  if (index < first_index_.prev()) {
    return absl::OutOfRangeError(absl::StrCat("index ", index.value(),
                                              " is compacted (first index ",
                                              first_index_.value(), ")"));
  }
  if (index == first_index_.prev()) return previous_term_;
  if (index > last_index_) {
    return absl::NotFoundError(absl::StrCat("index ", index.value(),
                                            " is past the last index ",
                                            last_index_.value()));
  }
  if (index == last_index_) return last_term_;
  if (const Entry* recent = Recent(index); recent != nullptr) {
    return recent->term;
  }
  auto value = Get(EntryKey(index));
  if (!value.ok()) return value.status();
  if (!value->has_value()) {
    return absl::DataLossError(absl::StrCat("entry ", index.value(),
                                            " is missing from the log store"));
  }
  auto entry = DecodeEntry(**value, index);
  if (!entry.ok()) return entry.status();
  return entry->term;
}

absl::StatusOr<std::vector<Entry>> RocksDbLogStore::Entries(
    LogIndex first, LogIndex last_exclusive, uint64_t max_bytes) const {
  if (first < first_index_) {
    return absl::OutOfRangeError(absl::StrCat("index ", first.value(),
                                              " is compacted (first index ",
                                              first_index_.value(), ")"));
  }
  if (first >= last_exclusive || last_exclusive > last_index_.next()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid entry range [", first.value(), ", ", last_exclusive.value(),
        ") of log [", first_index_.value(), ", ", last_index_.value(), "]"));
  }
  if (!recent_.empty() && first >= recent_.front().index) {
    std::vector<Entry> result;
    uint64_t bytes = 0;
    for (auto it = recent_.begin() +
                   static_cast<std::ptrdiff_t>(first.value() -
                                               recent_.front().index.value());
         it != recent_.end() && it->index < last_exclusive; ++it) {
      if (!result.empty() && bytes + it->ByteSize() > max_bytes) break;
      bytes += it->ByteSize();
      result.push_back(*it);
    }
    return result;
  }
  const std::string upper = EntryKey(last_exclusive);
  rocksdb::Slice upper_slice(upper);
  rocksdb::ReadOptions read;
  read.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read));
  std::vector<Entry> result;
  uint64_t bytes = 0;
  LogIndex expected = first;
  bool limited = false;
  for (it->Seek(EntryKey(first)); it->Valid(); it->Next()) {
    auto entry = DecodeEntry(
        std::string_view(it->value().data(), it->value().size()), expected);
    if (!entry.ok()) return entry.status();
    if (!result.empty() && bytes + entry->ByteSize() > max_bytes) {
      limited = true;
      break;
    }
    bytes += entry->ByteSize();
    result.push_back(*std::move(entry));
    expected = expected.next();
  }
  if (!it->status().ok()) return FromRocks(it->status(), "reading entries");
  if (!limited && expected < last_exclusive) {
    return absl::DataLossError(absl::StrCat("entry ", expected.value(),
                                            " is missing from the log store"));
  }
  return result;
}

absl::Status RocksDbLogStore::FlushForTesting() {
  return FromRocks(db_->Flush(rocksdb::FlushOptions()), "flushing");
}

absl::StatusOr<SnapshotMeta> RocksDbLogStore::Snapshot() const {
  if (!snapshot_) return absl::NotFoundError("no snapshot");
  return *snapshot_;
}

absl::Status RocksDbLogStore::Persist(const PersistRequest& request) {
  if (absl::Status status = ValidatePersist(request, first_index_, last_index_);
      !status.ok()) {
    return status;
  }
  LogIndex first = first_index_;
  LogIndex last = last_index_;
  Term previous_term = previous_term_;
  Term last_term = last_term_;
  rocksdb::WriteBatch batch;
  if (request.snapshot) {
    first = request.snapshot->index.next();
    last = request.snapshot->index;
    previous_term = request.snapshot->term;
    last_term = previous_term;
    batch.DeleteRange(EntryKey(LogIndex(0)),
                      EntryKey(LogIndex(std::numeric_limits<uint64_t>::max())));
    batch.Put(MetaKey("snapshot"), EncodeSnapshotMeta(*request.snapshot));
    batch.Put(MetaKey("log_start"), EncodeLogStart(first, previous_term));
    batch.Put(MetaKey("configuration"),
              EncodeConfiguration(request.snapshot->configuration));
  }
  if (!request.entries.empty()) {
    const LogIndex from = request.entries.front().index;
    // Overwriting the tail: drop it in the same batch (no tombstone for a
    // plain append).
    if (from <= last) {
      batch.DeleteRange(
          EntryKey(from),
          EntryKey(LogIndex(std::numeric_limits<uint64_t>::max())));
    }
    for (const Entry& entry : request.entries) {
      batch.Put(EntryKey(entry.index), EncodeEntry(entry));
    }
    last = request.entries.back().index;
    last_term = request.entries.back().term;
  }
  if (request.hard_state) {
    batch.Put(MetaKey("hard_state"), EncodeHardState(*request.hard_state));
  }
  if (batch.Count() == 0) return absl::OkStatus();
  rocksdb::WriteOptions write;
  write.sync = request.sync;
  if (absl::Status s = FromRocks(db_->Write(write, &batch), "persisting");
      !s.ok()) {
    return s;
  }
  if (request.snapshot) {
    snapshot_ = *request.snapshot;
    configuration_ = request.snapshot->configuration;
  }
  if (request.hard_state) hard_state_ = *request.hard_state;
  first_index_ = first;
  previous_term_ = previous_term;
  last_index_ = last;
  last_term_ = last_term;
  RememberPersisted(request);
  return absl::OkStatus();
}

const Entry* RocksDbLogStore::Recent(LogIndex index) const {
  if (recent_.empty() || index < recent_.front().index ||
      index > recent_.back().index) {
    return nullptr;
  }
  return &recent_[index.value() - recent_.front().index.value()];
}

void RocksDbLogStore::RememberPersisted(const PersistRequest& request) {
  if (request.snapshot) {
    recent_.clear();
    recent_bytes_ = 0;
  }
  if (request.entries.empty()) return;
  const LogIndex from = request.entries.front().index;
  // The write replaced the stored tail from `from` on.
  while (!recent_.empty() && recent_.back().index >= from) {
    recent_bytes_ -= recent_.back().ByteSize();
    recent_.pop_back();
  }
  for (const Entry& entry : request.entries) {
    recent_.push_back(entry);
    recent_bytes_ += entry.ByteSize();
  }
  while (!recent_.empty() && recent_bytes_ > options_.recent_entries_bytes) {
    recent_bytes_ -= recent_.front().ByteSize();
    recent_.pop_front();
  }
}

void RocksDbLogStore::ForgetThrough(LogIndex index) {
  while (!recent_.empty() && recent_.front().index <= index) {
    recent_bytes_ -= recent_.front().ByteSize();
    recent_.pop_front();
  }
}

absl::Status RocksDbLogStore::SetSnapshot(const SnapshotMeta& snapshot) {
  if (absl::Status status = ValidateSnapshot(*this, snapshot, snapshot_);
      !status.ok()) {
    return status;
  }
  rocksdb::WriteOptions write;
  write.sync = true;
  if (absl::Status s = FromRocks(
          db_->Put(write, MetaKey("snapshot"), EncodeSnapshotMeta(snapshot)),
          "recording a snapshot");
      !s.ok()) {
    return s;
  }
  snapshot_ = snapshot;
  return absl::OkStatus();
}

absl::Status RocksDbLogStore::Compact(LogIndex index) {
  if (absl::Status status =
          ValidateCompaction(index, first_index_, last_index_);
      !status.ok()) {
    return status;
  }
  if (index == first_index_.prev()) return absl::OkStatus();
  absl::StatusOr<Term> term = TermAt(index);
  if (!term.ok()) return term.status();
  rocksdb::WriteBatch batch;
  batch.DeleteRange(EntryKey(LogIndex(0)), EntryKey(index.next()));
  batch.Put(MetaKey("log_start"), EncodeLogStart(index.next(), *term));
  // Not synced: if a crash loses it, the entries come back, which is harmless.
  if (absl::Status s =
          FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "compacting");
      !s.ok()) {
    return s;
  }
  first_index_ = index.next();
  previous_term_ = *term;
  ForgetThrough(index);
  return absl::OkStatus();
}

}  // namespace driftwood::raft
