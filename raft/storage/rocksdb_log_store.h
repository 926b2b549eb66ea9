// Driftwood: a LogStore on RocksDB (key layout and encodings in FORMAT.md).
//
// Entries, hard state, configuration, snapshot metadata and the compaction
// point of one Raft group live in one RocksDB instance; every Persist is one
// atomic WriteBatch, synced when asked. Keys carry a group id so that one
// instance can later host many groups. The store checks the format version and
// the identity (cluster id, node id) it was created with.
//
// Thread safety: one writer (the raft thread); reads from the same thread.
// Error policy: a failed Persist, SetSnapshot or Compact means acknowledged
// writes may not be durable; the caller must stop the process.
#ifndef DRIFTWOOD_RAFT_STORAGE_ROCKSDB_LOG_STORE_H_
#define DRIFTWOOD_RAFT_STORAGE_ROCKSDB_LOG_STORE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/storage/log_store.h"

namespace rocksdb {
class DB;
class Env;
}  // namespace rocksdb

namespace driftwood::raft {

struct RocksDbLogStoreOptions {
  // The folder holding the RocksDB files. Required.
  std::string path;
  // Identity checked on every open: a store written by another cluster or
  // node is refused. Required (non-zero).
  uint64_t cluster_id = 0;
  NodeId node_id;
  // The Raft group within the instance. Default: 1.
  uint64_t group_id = 1;
  // Create an empty store when `path` holds none, with this configuration.
  // When false, a missing store is NotFound. Default: false.
  bool create_if_missing = false;
  Configuration initial_configuration;
  // The newest entries, up to this many bytes (Entry::ByteSize), are also
  // kept in memory and served from there: committed entries are read back
  // right after they are written (to apply them, to send them to followers),
  // and a read from memory costs no RocksDB lookup, checksum or copy of the
  // payload. 0 turns the cache off. Default: 16 MiB.
  uint64_t recent_entries_bytes = 16 << 20;
  // The most the store's background work (memtable flushes, compactions)
  // writes per second, so that it leaves room on the disk for the synced
  // appends (rocksdb_background_io.h). 0: not limited. Default: 128 MiB/s.
  uint64_t background_write_bytes_per_second = 128 << 20;
  // Test hook: the RocksDB Env whose FileSystem the store uses (e.g. one
  // that simulates power loss); its other services are Env::Default()'s.
  // Not owned; must outlive the store. Default: the process's default Env.
  rocksdb::Env* env = nullptr;
};

class RocksDbLogStore : public LogStore {
 public:
  // Opens (or creates) the store. FailedPrecondition for a store of another
  // format version, cluster or node; DataLoss naming the key or index for
  // corrupt metadata or files; NotFound when missing and !create_if_missing.
  static absl::StatusOr<std::unique_ptr<RocksDbLogStore>> Open(
      const RocksDbLogStoreOptions& options);
  ~RocksDbLogStore() override;

  absl::StatusOr<InitialState> LoadInitialState() const override;
  LogIndex FirstIndex() const override { return first_index_; }
  LogIndex LastIndex() const override { return last_index_; }
  absl::StatusOr<Term> TermAt(LogIndex index) const override;
  absl::StatusOr<std::vector<Entry>> Entries(LogIndex first,
                                             LogIndex last_exclusive,
                                             uint64_t max_bytes) const override;
  absl::StatusOr<SnapshotMeta> Snapshot() const override;
  absl::Status Persist(const PersistRequest& request) override;
  absl::Status SetSnapshot(const SnapshotMeta& snapshot) override;
  absl::Status Compact(LogIndex index) override;

  // Test hook: flushes the memtable to an SST file and waits, so that tests
  // can corrupt every kind of RocksDB file.
  absl::Status FlushForTesting();

  // The format version written by this code. Open moves a format 1 store to
  // it (FORMAT.md); other versions are refused.
  static constexpr uint64_t kFormatVersion = 2;

 private:
  RocksDbLogStore(const RocksDbLogStoreOptions& options,
                  std::unique_ptr<rocksdb::Env> env,
                  std::unique_ptr<rocksdb::DB> db);
  absl::Status Load();
  // Rewrites a format 1 store as the current format, atomically.
  absl::Status MigrateFromFormat1();
  std::string EntryKey(LogIndex index) const;
  std::string MetaKey(const char* name) const;
  absl::StatusOr<std::optional<std::string>> Get(const std::string& key) const;
  // The cached entry at `index`, or nullptr when it is not cached.
  const Entry* Recent(LogIndex index) const;
  // Brings the cache in line with a Persist or Compact that succeeded.
  void RememberPersisted(const PersistRequest& request);
  // Drops cached entries through `index` after a compaction. Only frees
  // memory: reads below the first index are refused before the cache is
  // consulted.
  void ForgetThrough(LogIndex index);

  RocksDbLogStoreOptions options_;
  // The store's files, the write-ahead log's prefilled (wal_prefill.h);
  // destroyed after db_.
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<rocksdb::DB> db_;
  // Cached so that FirstIndex, LastIndex and TermAt(last) need no reads.
  LogIndex first_index_{1};
  Term previous_term_;  // term of first_index_ - 1
  LogIndex last_index_;
  Term last_term_;
  HardState hard_state_;
  Configuration configuration_;
  std::optional<SnapshotMeta> snapshot_;
  // Invariant: empty, or the entries [recent_.front().index, last_index_],
  // contiguous, exactly as stored; recent_bytes_ is the sum of their
  // ByteSize(). Entries share their payload (EntryData), so a copy handed out
  // costs a reference count.
  std::deque<Entry> recent_;
  uint64_t recent_bytes_ = 0;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_ROCKSDB_LOG_STORE_H_
