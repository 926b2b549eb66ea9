// Driftwood: how the RocksDB databases (the Raft log store and the state
// machine) pace their background disk work, so that it does not hold up the
// fdatasync of the write-ahead log every commit waits for (docs/design.md
// "Storage").
//
// Two kinds of background work arrive as large bursts:
// - A memtable flush writes a whole table at once (up to 64 MB), and on the
//   three nodes of a cluster at nearly the same moment, since their logs are
//   identical. The device queues those writes ahead of the commits' small
//   synced appends.
// - The file that a flush or compaction makes obsolete (a write-ahead log or
//   a table, tens of MB) is unlinked in one system call, which frees all its
//   blocks at once; on a file system mounted with `discard` that is one
//   large TRIM.
// Measured with bench/kvload at 256 puts in flight on this project's test
// machine (ext4 mounted with `discard`), each burst stopped all commits for
// 50-150 ms (bench/README.md).
//
// Pacing spreads both out: background writes go through a rate limiter
// (flushes ahead of compactions) and reach the disk a megabyte at a time,
// and an obsolete file is renamed to
// `<name>.trash` at once, then shrunk by small truncations from a background
// thread. A crash leaves at most `.trash` files behind, which RocksDB removes
// when it next opens the database and never reads. Too slow a write rate only
// delays flushes; once the memtables a database allows are full, RocksDB
// stalls writes until a flush completes, so nothing is lost.
#ifndef DRIFTWOOD_RAFT_STORAGE_ROCKSDB_BACKGROUND_IO_H_
#define DRIFTWOOD_RAFT_STORAGE_ROCKSDB_BACKGROUND_IO_H_

#include <cstdint>

#include "rocksdb/options.h"

namespace driftwood::raft {

struct BackgroundIoPacing {
  // Flush and compaction writes of one database, bytes per second. 0: not
  // limited.
  uint64_t write_bytes_per_second = 128 << 20;
  // Obsolete files of one database, bytes freed per second. 0: each file is
  // unlinked whole, at once.
  uint64_t delete_bytes_per_second = 128 << 20;
  // Bytes freed by one truncation of a `.trash` file.
  uint64_t bytes_per_truncation = 4 << 20;
};

// Sets `options` up to pace its background work as `pacing` says, on
// `options.env`: call after setting `options.env`.
void InstallBackgroundIoPacing(rocksdb::Options& options,
                               const BackgroundIoPacing& pacing);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_ROCKSDB_BACKGROUND_IO_H_
