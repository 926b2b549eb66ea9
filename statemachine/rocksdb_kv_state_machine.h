// Driftwood: a persistent key-value state machine on its own RocksDB instance
// (the commands and queries of statemachine/kv_command.h). docs/design.md
// "State machines": the data of every applied batch and the applied point are
// written in one atomic RocksDB WriteBatch, so after a crash the state machine
// opens at a consistent applied index and the framework re-applies the log
// from there.
//
// On-disk layout under options.path:
//
//   CURRENT_DB       "db-NNNNNN\n": the live database folder, replaced with
//                    WriteFileDurably (temporary + fsync + rename + fsync dir)
//   db-NNNNNN/       a RocksDB database:
//                      'd' + key   -> value            (data)
//                      'm' "applied" -> applied record  (kAppliedKey)
//
// Applied record: u8 version (1), varint index, varint term, varint number of
// data keys, varint length + the configuration encoded by
// raft/storage/encoding.h (it carries its own CRC32C), then a CRC32C of all
// preceding bytes (4 bytes, little endian).
//
// Snapshots: Capture takes a RocksDB snapshot (O(1)); WriteTo writes the data
// keys at that snapshot into SST files "data-NNNNNN.sst" (at most
// options.max_snapshot_file_bytes each; none when there are no keys). Restore
// builds a new folder db-(N+1) from those files (IngestExternalFile, copying,
// so the snapshot store keeps its files), writes the applied record, makes the
// folder durable, switches CURRENT_DB, and only then drops the old folder.
// Open removes db-* folders CURRENT_DB does not name (left by an interrupted
// Restore).
//
// Durability: the Raft log is the durable record. By default Apply writes
// the memtable only, without RocksDB's write-ahead log (a file write per batch
// saved): a crash loses what no memtable flush has written, and the framework
// re-applies it from the log, which it compacts only up to what Sync()
// reported durable. Sync() starts a flush and returns the applied index the
// flushed SST files hold; repeated calls catch up with applied() as flushes
// complete. Every flush holds whole batches, each with its applied record, so
// a restart finds a consistent prefix. With options.write_ahead_log, Apply
// also writes the write-ahead log (without sync) and Sync() syncs it and
// returns applied(). Restore is durable when it returns.
//
// Thread safety: the StateMachine contract. Query may run on any thread
// concurrently with every other call (ConcurrentQueries() is true). Snapshots
// may be written on any thread and keep their database open until they are
// destroyed; REQUIRES: every snapshot is destroyed before a state machine is
// opened again at the same path.
#ifndef DRIFTWOOD_STATEMACHINE_ROCKSDB_KV_STATE_MACHINE_H_
#define DRIFTWOOD_STATEMACHINE_ROCKSDB_KV_STATE_MACHINE_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/state_machine.h"
#include "statemachine/ordered_kv.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace driftwood::statemachine {

// What the entries and queries of a RocksDbKvStateMachine mean, for
// applications with their own commands over its ordered keys (the MVCC store
// of statemachine/mvcc). Without one, they are kv_command.h's.
class KvApplication {
 public:
  virtual ~KvApplication() = default;
  // Applies one committed entry's data to `store`, the applied state, in
  // which reads see the writes of earlier entries of the same batch; returns
  // the entry's response. Deterministic (the StateMachine contract). A
  // non-OK status is a storage failure and is fatal; a bad command is a
  // response.
  virtual absl::StatusOr<std::string> Apply(std::string_view data,
                                            OrderedKv& store) = 0;
  // A hint, on the apply thread, before Apply sees them: the data of the
  // batch's next entries (up to kPrefetchEntries, no-op entries left out).
  // An application may start loading into the CPU's caches what applying
  // them reads, so that those cache misses overlap instead of following one
  // another. Must not change anything Apply or Query sees.
  static constexpr size_t kPrefetchEntries = 64;
  virtual void Prefetch(const std::vector<std::string_view>& /*entries*/) {}
  // Answers a query against `state`: one consistent applied state, read
  // only (writes fail). May run on any thread, concurrently with Apply.
  // QueryAgainError (ordered_kv.h) asks to be called again with a newer
  // state (for state derived in memory that has moved past `state`).
  virtual absl::StatusOr<std::string> Query(std::string_view query,
                                            OrderedKv& state) const = 0;
  // Called on the apply thread with the state Open found and with the state
  // Restore installed, before any Apply or Query sees it (queries wait): for
  // what the application derives from the stored state and keeps in memory.
  // Read only. A non-OK status fails Open or Restore.
  virtual absl::Status Load(const OrderedKv& /*state*/) {
    return absl::OkStatus();
  }
  // Called on the apply thread after the batch's last Apply and before the
  // batch is written (also when no entry called Apply): what it writes to
  // `store` joins the same atomic write. For state an application keeps
  // across the entries of a batch and saves once. A non-OK status is a
  // storage failure and is fatal.
  virtual absl::Status BeforeWrite(OrderedKv& /*store*/) {
    return absl::OkStatus();
  }
  // Called on the apply thread once the batch whose entries Apply saw since
  // the last call is written: what they changed is now what queries read.
  virtual void Committed() {}
  // Called on the apply thread once Restore replaced the state.
  virtual void Restored() {}
};

struct RocksDbKvStateMachineOptions {
  // The folder holding CURRENT_DB and the database folders. Required.
  std::filesystem::path path;

  // Default true: Open creates the folder and an empty database when path has
  // no CURRENT_DB. When false, Open returns NotFound instead.
  bool create_if_missing = true;

  // Default 64 MiB: RocksDB's memtable size (rocksdb::Options::
  // write_buffer_size).
  size_t write_buffer_size = 64 << 20;

  // Default 0 (not limited): the most RocksDB's flushes and compactions
  // write per second, so that they leave room on the disk for the Raft
  // log's synced appends (raft/storage/rocksdb_background_io.h). A limit
  // makes each flush take longer, and this database keeps RocksDB's default
  // of two memtables: a flush still running when the next memtable fills
  // stops the apply thread until it ends.
  uint64_t background_write_bytes_per_second = 0;

  // Default 256 MiB: RocksDB's block cache (uncompressed data blocks of the
  // SST files), filled as keys are read. 0 leaves RocksDB's own default.
  size_t block_cache_bytes = 256 << 20;

  // Default 256 MiB: WriteTo starts a new SST file once the current one
  // reaches this size.
  uint64_t max_snapshot_file_bytes = uint64_t{256} << 20;

  // Default false: applied batches skip RocksDB's write-ahead log; Sync()
  // starts a memtable flush and reports what flushes made durable. True also
  // writes each batch to the write-ahead log (without sync): a restart after
  // a process crash re-applies fewer entries from the Raft log, at the cost
  // of one more file write per applied batch.
  bool write_ahead_log = false;

  // Test only; default true. False skips the flush of a clean close, so that
  // closing loses what no flush wrote, as a crash does (a power-loss test
  // closes a state machine whose disk has gone away).
  bool flush_on_close = true;

  // Test only; default none. Called with the name of each crash point a
  // Restore passes ("restore:after-build": the new database is durable,
  // CURRENT_DB still names the old one; "restore:after-pointer": CURRENT_DB
  // names the new one, the old folder still exists). A crash test makes it
  // end the process.
  std::function<void(std::string_view point)> crash_point;

  // Default 0: how many leading bytes of an application key name its kind
  // (the MVCC store's: 1, its record type). A compaction cuts its output
  // files wherever the kind changes (and between data and the applied
  // record), so no SST file spans two kinds. An application whose keys of one
  // kind are only ever appended in order (an event history) then keeps them
  // out of the files of the keys every batch rewrites (its revision, the
  // applied record); a level-0 compaction then rewrites the new history and
  // those few keys, instead of every history file whose key range the
  // rewritten keys stretched over.
  size_t key_kind_bytes = 0;

  // The meaning of entries and queries; default none (kv_command.h). Not
  // owned; must outlive the state machine.
  KvApplication* application = nullptr;

  // Test only; default none (the process's default Env). The RocksDB Env the
  // databases run on, for example one that simulates power loss. Not owned;
  // must outlive the state machine.
  rocksdb::Env* env = nullptr;
};

class RocksDbKvStateMachine : public raft::StateMachine {
 public:
  static constexpr char kCurrentFileName[] = "CURRENT_DB";
  // The key of the applied record, and the prefix of every data key.
  static constexpr char kAppliedKey[] = "mapplied";
  static constexpr char kDataPrefix = 'd';

  explicit RocksDbKvStateMachine(RocksDbKvStateMachineOptions options);
  // Closes the database (snapshots still alive keep it open until they are
  // destroyed).
  ~RocksDbKvStateMachine() override;
  RocksDbKvStateMachine(const RocksDbKvStateMachine&) = delete;
  RocksDbKvStateMachine& operator=(const RocksDbKvStateMachine&) = delete;

  // Opens (or creates, see create_if_missing) the database CURRENT_DB names,
  // removes leftover db-* folders, and reports the applied record (index 0
  // when fresh). InvalidArgument for an empty path; NotFound when missing and
  // not create_if_missing; DataLoss when CURRENT_DB is malformed or names a
  // missing folder, or the applied record is corrupt. REQUIRES: called once,
  // before anything else.
  absl::StatusOr<raft::AppliedState> Open() override;

  // Applies the batch and records its last entry as the applied point in one
  // WriteBatch, without sync. REQUIRES: Open succeeded; the entries are
  // contiguous and start at applied().index + 1 (FailedPrecondition
  // otherwise, changing nothing). Once a background flush failed, the error
  // that names it (ResourceExhausted for a full disk, DataLoss for
  // corruption, else Internal), and nothing changes.
  absl::StatusOr<std::vector<std::string>> Apply(
      const raft::ApplyBatch& batch) override;

  raft::AppliedState applied() const override { return applied_; }

  // A RocksDB snapshot plus the applied point: O(1), no I/O.
  // FailedPrecondition when nothing has been applied.
  absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> Capture()
      override;

  // The data as it is now, for a backup: like Capture (a RocksDB snapshot,
  // whole batches only), but callable on any thread; its meta() is index 0
  // (a backup is restored as the initial state of a new cluster).
  // FailedPrecondition before Open.
  absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> CaptureData()
      const;

  // Replaces the state by the snapshot in `dir` (its *.sst files; other files
  // such as the snapshot store's metadata are ignored). Atomic across crashes
  // and durable when it returns. DataLoss when an SST file is unreadable or
  // holds keys outside the data prefix.
  absl::Status Restore(const raft::SnapshotMeta& meta,
                       const std::filesystem::path& dir) override;

  // Get and Count (kv_command.h), or the application's queries;
  // InvalidArgument for a malformed query. Each query reads one consistent
  // state (a whole number of batches).
  absl::StatusOr<std::string> Query(std::string_view query) const override;

  bool ConcurrentQueries() const override { return true; }
  bool persistent() const override { return true; }

  // Compacts the whole database (what etcd's Defragment asks for); safe
  // alongside every other call.
  absl::Status CompactStorage();

  // Returns an applied index through which the state is durable: what the
  // flushed SST files hold, after starting a flush of the rest (or, with
  // options.write_ahead_log, applied() after syncing the write-ahead log).
  // Once a background flush failed, the error that names it, as Apply.
  absl::StatusOr<raft::LogIndex> Sync() override;

  // The live database folder (for tests and tools; apply thread only).
  std::filesystem::path live_folder() const;

 private:
  class Database;
  class Snapshot;
  class BatchStore;
  class BatchView;
  class SnapshotView;

  void CrashPoint(std::string_view point) const;
  absl::StatusOr<std::shared_ptr<Database>> OpenDatabase(
      const std::string& folder_name, bool create) const;

  const RocksDbKvStateMachineOptions options_;
  // Guards the db_ pointer (not the database, which is thread-safe): Query
  // threads read it under a shared lock; Restore replaces it under an
  // exclusive lock. The apply thread, the only writer, reads it without.
  mutable std::shared_mutex mutex_;
  std::shared_ptr<Database> db_;
  uint64_t db_number_ = 0;  // the N of db_'s folder db-N
  uint64_t key_count_ = 0;  // number of data keys, as in the applied record
  raft::AppliedState applied_;
  // The memory each batch's BatchStore starts from (apply thread only).
  static constexpr size_t kBatchScratchBytes = size_t{256} << 10;
  std::unique_ptr<char[]> batch_scratch_;
};

}  // namespace driftwood::statemachine

#endif  // DRIFTWOOD_STATEMACHINE_ROCKSDB_KV_STATE_MACHINE_H_
