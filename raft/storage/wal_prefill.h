// The log store's write-ahead log, kept from growing at every synced append
// (docs/design.md "Storage").
//
// Why: on ext4, an fdatasync after an append that grew the file must also
// write the inode (the new size), a second synchronous I/O per commit.
// bench/log_store_bench --batches on the VM of bench/README.md: a synced
// Persist of 26 entries took 182-210 us with the WAL growing and 111-131 us
// with it written over zeros, at a quarter less CPU per entry.
//
// WalPrefillFileSystem wraps RocksDB's files so that, for the WAL files only
// (NNNNNN.log), a sync that finds fewer than kLowWaterBytes of zeros past
// the end of what was appended first writes the next kChunkBytes of zeros;
// the same sync makes them durable along with the data, so the following
// syncs write data over blocks that already exist and leave the size alone
// (one inode write per chunk instead of one per sync). The chunk is small
// because the sync that carries it waits for it: 4 MiB chunks raised the p99
// of puts at 64 in flight from 8.7 to 13.5 ms. Close truncates the file to
// what was appended. A failed zero write only stops the prefill of that
// file: the appends go on as they would without.
//
// Recovery: a crash leaves zeros after the last record, where a file
// without the prefill would simply end, and RocksDB judges the two
// differently under kTolerateCorruptedTailRecords:
//  * zeros right after the first fragment of a record (a power cut that
//    kept some pages of an unsynced record and not others) are "error in
//    middle of record", where a file that ends after that fragment opens;
//  * a record cut short (a SIGKILL in the middle of the write() that
//    appended it: the kernel had copied only a prefix into the page cache)
//    and followed by zeros has a length that fits the file and fails its
//    checksum, where a file that ends inside that record opens.
// In both cases the torn record was never synced, so never acknowledged.
// TrimWalZeroTails, run before the store opens, cuts the zeros off the end
// of each WAL, back to its last non-zero byte but never into its last
// intact record: RocksDB then reads the file as it would have been without
// the prefill. It removes zero bytes only, so it never drops a record
// RocksDB could have read; whatever else follows the last intact record
// (corruption in the middle of the log, say) is left for RocksDB to judge.
#ifndef DRIFTWOOD_RAFT_STORAGE_WAL_PREFILL_H_
#define DRIFTWOOD_RAFT_STORAGE_WAL_PREFILL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "rocksdb/file_system.h"

namespace driftwood::raft {

class WalPrefillFileSystem : public rocksdb::FileSystemWrapper {
 public:
  static constexpr uint64_t kChunkBytes = uint64_t{256} << 10;
  static constexpr uint64_t kLowWaterBytes = uint64_t{128} << 10;

  explicit WalPrefillFileSystem(
      const std::shared_ptr<rocksdb::FileSystem>& target)
      : FileSystemWrapper(target) {}

  static const char* kClassName() { return "DriftwoodWalPrefill"; }
  const char* Name() const override { return kClassName(); }

  rocksdb::IOStatus NewWritableFile(
      const std::string& name, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* result,
      rocksdb::IODebugContext* dbg) override;
};

// Whether `path`'s file name is a RocksDB write-ahead log's (digits, ".log").
bool IsWalFileName(std::string_view path);

// Where the last intact record of the RocksDB write-ahead log `bytes` ends
// (the log format of RocksDB's db/log_format.h: 32 KiB blocks of records
// with a 7-byte header of masked CRC-32C, length and type), whether every
// byte after that is zero, and where the bytes end once the zeros at the end
// are cut off (never before records_end).
struct WalTail {
  uint64_t records_end = 0;
  bool zeros_after = true;
  uint64_t data_end = 0;
};
WalTail ScanWal(std::string_view bytes);

// For every write-ahead log in `folder` that ends in zeros after its last
// intact record: truncates it at its WalTail::data_end (see the file
// comment). Returns how many files it truncated; a missing folder has none.
absl::StatusOr<int> TrimWalZeroTails(rocksdb::FileSystem& fs,
                                     const std::string& folder);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_WAL_PREFILL_H_
