#include "raft/storage/rocksdb_background_io.h"

#include <cstdint>
#include <limits>

#include "rocksdb/rate_limiter.h"
#include "rocksdb/sst_file_manager.h"

namespace driftwood::raft {
namespace {

// The rate limiter grants bytes every refill period: a short period keeps
// each grant (and so each burst of queued writes) small: 1.3 MB at
// 128 MiB/s.
constexpr int64_t kRefillPeriodMicros = 10'000;

// RocksDB deletes a file at once, whatever the pacing, when the files
// already waiting for deletion exceed this multiple of the size of the
// database's tables; that bounds the backlog if files become obsolete faster
// than the pacing frees them. The file that arrives with none waiting is
// always paced, however small the tables: the log store's can be nearly
// empty while its write-ahead log files are tens of MB.
constexpr double kMaxTrashToTables = 4.0;

int64_t Clamped(uint64_t bytes_per_second) {
  return bytes_per_second >
                 static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(bytes_per_second);
}

}  // namespace

void InstallBackgroundIoPacing(rocksdb::Options& options,
                               const BackgroundIoPacing& pacing) {
  // Table writes reach the disk a megabyte at a time instead of in one
  // fsync at the end of a flush or compaction.
  options.bytes_per_sync = 1 << 20;
  if (pacing.write_bytes_per_second > 0) {
    options.rate_limiter.reset(rocksdb::NewGenericRateLimiter(
        Clamped(pacing.write_bytes_per_second), kRefillPeriodMicros,
        /*fairness=*/10, rocksdb::RateLimiter::Mode::kWritesOnly,
        /*auto_tuned=*/false));
  }
  options.sst_file_manager.reset(rocksdb::NewSstFileManager(
      options.env, /*info_log=*/nullptr, /*trash_dir=*/"",
      Clamped(pacing.delete_bytes_per_second),
      /*delete_existing_trash=*/true, /*status=*/nullptr, kMaxTrashToTables,
      pacing.bytes_per_truncation));
}

}  // namespace driftwood::raft
