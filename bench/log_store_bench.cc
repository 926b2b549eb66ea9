// log_store_bench: RocksDbLogStore::Persist with sync on, beside the same bytes
// written with write(2) + fdatasync(2) to a plain file in the same folder by
// the same binary. Prints entries/s, MB/s and Persist latency (p50, p99) per
// payload size and batch size, and the ratio to the raw file.
//
//   log_store_bench --dir D [--seconds S] [--sustained S]
//
// --sustained runs one configuration (256 B, batch 64) for S seconds with the
// log compacted behind the writer, so RocksDB flushes and compacts as it would
// in service, and reports its write amplification (bytes the process wrote to
// disk per payload byte, from /proc/self/io).
//
// Last, the cost of one write+fdatasync of a put-64 batch to a plain file,
// appending versus overwriting blocks written before: wall time, CPU time and
// blocking waits (voluntary context switches) per write.
//
//   log_store_bench --dir D --batches N
//
// instead runs exactly N Persist calls of a put-64 batch (26 entries of 256 B
// and a hard state, synced) and prints the thread's CPU time per entry. The
// work is fixed, so `valgrind --tool=callgrind` counts instructions that can
// be compared between builds, which this VM's timings cannot be.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "bench/bench_clock.h"
#include "raft/storage/encoding.h"
#include "raft/storage/rocksdb_log_store.h"

namespace {

using driftwood::bench::WallSeconds;

using driftwood::raft::Entry;
using driftwood::raft::EntryType;
using driftwood::raft::HardState;
using driftwood::raft::LogIndex;
using driftwood::raft::NodeId;
using driftwood::raft::PersistRequest;
using driftwood::raft::RocksDbLogStore;
using driftwood::raft::RocksDbLogStoreOptions;
using driftwood::raft::Term;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "log_store_bench: %s\n", what.c_str());
  std::exit(1);
}

uint64_t DiskBytesWritten() {
  std::ifstream io("/proc/self/io");
  std::string key;
  uint64_t value = 0;
  while (io >> key >> value) {
    if (key == "write_bytes:") return value;
  }
  return 0;
}

struct Result {
  double cpu_us_per_entry = 0;  // this thread's user + system time
  double entries_per_second = 0;
  double mb_per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  double write_amplification = 0;
};

Result Summarize(std::vector<double>& latencies, uint64_t entries,
                 uint64_t payload_bytes, double elapsed) {
  std::sort(latencies.begin(), latencies.end());
  Result r;
  r.entries_per_second = static_cast<double>(entries) / elapsed;
  r.mb_per_second = static_cast<double>(payload_bytes) / elapsed / 1e6;
  r.p50_us = latencies[latencies.size() / 2] * 1e6;
  r.p99_us = latencies[latencies.size() * 99 / 100] * 1e6;
  return r;
}

double ThreadCpuSeconds() {
  struct rusage usage {};
  getrusage(RUSAGE_THREAD, &usage);
  auto seconds_of = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return seconds_of(usage.ru_utime) + seconds_of(usage.ru_stime);
}

// Persists batches for `seconds`, or exactly `batches` of them when that is
// not zero.
Result RunRocks(const std::string& dir, size_t payload, size_t batch,
                double seconds, bool compact_behind, uint64_t batches = 0) {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  RocksDbLogStoreOptions options;
  options.path = dir;
  options.cluster_id = 1;
  options.node_id = NodeId(1);
  options.create_if_missing = true;
  options.initial_configuration.voters = {NodeId(1)};
  auto store = RocksDbLogStore::Open(options);
  if (!store.ok()) Die(store.status().ToString());
  const std::string data(payload, 'x');
  std::vector<double> latencies;
  uint64_t index = 0;
  const uint64_t disk_before = DiskBytesWritten();
  const double cpu_before = ThreadCpuSeconds();
  const double start = WallSeconds();
  while (batches != 0 ? index < batches * batch
                      : WallSeconds() - start < seconds) {
    PersistRequest request;
    request.sync = true;
    for (size_t i = 0; i < batch; ++i) {
      request.entries.push_back(
          Entry{Term(1), LogIndex(++index), EntryType::kNormal, data});
    }
    request.hard_state = HardState{Term(1), NodeId(1), LogIndex(index - batch)};
    const double t0 = WallSeconds();
    if (absl::Status s = (*store)->Persist(request); !s.ok()) Die(s.ToString());
    latencies.push_back(WallSeconds() - t0);
    // In service the log is compacted a little behind the applied index.
    if (compact_behind && index > 100000 && index % 10000 < batch) {
      if (!(*store)->Compact(LogIndex(index - 100000)).ok()) Die("compact");
    }
  }
  const double elapsed = WallSeconds() - start;
  Result r = Summarize(latencies, index, index * payload, elapsed);
  r.cpu_us_per_entry =
      (ThreadCpuSeconds() - cpu_before) / static_cast<double>(index) * 1e6;
  r.write_amplification =
      static_cast<double>(DiskBytesWritten() - disk_before) /
      static_cast<double>(index * payload);
  store->reset();
  std::filesystem::remove_all(dir);
  return r;
}

Result RunRaw(const std::string& dir, size_t payload, size_t batch,
              double seconds) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/raw.log";
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) Die("cannot create " + path);
  const std::string data(payload, 'x');
  std::vector<double> latencies;
  uint64_t index = 0;
  const double start = WallSeconds();
  std::string buffer;
  while (WallSeconds() - start < seconds) {
    buffer.clear();
    for (size_t i = 0; i < batch; ++i) {
      // The same encoded bytes the store writes for each entry.
      buffer += driftwood::raft::storage::EncodeEntry(
          Entry{Term(1), LogIndex(++index), EntryType::kNormal, data});
    }
    const double t0 = WallSeconds();
    if (write(fd, buffer.data(), buffer.size()) !=
            static_cast<ssize_t>(buffer.size()) ||
        fdatasync(fd) != 0) {
      Die("write to the raw file failed");
    }
    latencies.push_back(WallSeconds() - t0);
  }
  const double elapsed = WallSeconds() - start;
  close(fd);
  std::filesystem::remove(path);
  return Summarize(latencies, index, index * payload, elapsed);
}

// What one write(2) + fdatasync(2) of `batch` encoded entries costs when it
// appends (the file grows, so the sync also writes the inode: the case of
// RocksDB's write-ahead log, which RocksDB 7.8 recycles only under recovery
// modes that would truncate silently at damage) and when it overwrites blocks
// written and synced before (no metadata to write).
struct SyncCost {
  double p50_us = 0;
  double cpu_us = 0;              // user + system time per write
  double voluntary_switches = 0;  // blocking waits per write
};

SyncCost RunSyncCost(const std::string& dir, size_t payload, size_t batch,
                     double seconds, bool overwrite) {
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/sync-cost.log";
  const int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  if (fd < 0) Die("cannot create " + path);
  std::string buffer;
  for (size_t i = 0; i < batch; ++i) {
    buffer += driftwood::raft::storage::EncodeEntry(
        Entry{Term(1), LogIndex(i + 1), EntryType::kNormal,
              std::string(payload, 'x')});
  }
  // Overwrite mode cycles through a file written and synced in advance.
  constexpr off_t kOverwriteBytes = off_t{64} << 20;
  if (overwrite) {
    const std::string zeros(1 << 20, '\0');
    for (off_t at = 0; at < kOverwriteBytes; at += 1 << 20) {
      if (write(fd, zeros.data(), zeros.size()) !=
          static_cast<ssize_t>(zeros.size())) {
        Die("cannot fill " + path);
      }
    }
    if (fsync(fd) != 0) Die("cannot sync " + path);
  }
  std::vector<double> latencies;
  off_t offset = 0;
  struct rusage before {};
  getrusage(RUSAGE_THREAD, &before);
  const double cpu_before = ThreadCpuSeconds();
  const double start = WallSeconds();
  while (WallSeconds() - start < seconds) {
    if (overwrite &&
        offset + static_cast<off_t>(buffer.size()) > kOverwriteBytes) {
      offset = 0;
    }
    const double t0 = WallSeconds();
    if (pwrite(fd, buffer.data(), buffer.size(), offset) !=
            static_cast<ssize_t>(buffer.size()) ||
        fdatasync(fd) != 0) {
      Die("write to " + path + " failed");
    }
    latencies.push_back(WallSeconds() - t0);
    offset += static_cast<off_t>(buffer.size());
  }
  struct rusage after {};
  getrusage(RUSAGE_THREAD, &after);
  const double cpu_after = ThreadCpuSeconds();
  close(fd);
  std::filesystem::remove(path);
  const double writes = static_cast<double>(latencies.size());
  SyncCost cost;
  cost.cpu_us = (cpu_after - cpu_before) / writes * 1e6;
  cost.voluntary_switches =
      static_cast<double>(after.ru_nvcsw - before.ru_nvcsw) / writes;
  std::sort(latencies.begin(), latencies.end());
  cost.p50_us = latencies[latencies.size() / 2] * 1e6;
  return cost;
}

void PrintRow(size_t payload, size_t batch, const Result& rocks,
              const Result& raw) {
  std::printf(
      "%6zu B %6zu | %10.0f %8.1f %8.0f %8.0f | %10.0f %8.1f %8.0f %8.0f | "
      "%5.0f%%\n",
      payload, batch, rocks.entries_per_second, rocks.mb_per_second,
      rocks.p50_us, rocks.p99_us, raw.entries_per_second, raw.mb_per_second,
      raw.p50_us, raw.p99_us,
      100.0 * rocks.entries_per_second / raw.entries_per_second);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double seconds = 1.0;
  double sustained = 0;
  uint64_t batches = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--help") == 0) {
      std::printf(
          "usage: log_store_bench --dir D [--seconds S] [--sustained S]\n"
          "       log_store_bench --dir D --batches N\n"
          "Persist with sync on versus write+fdatasync of the same bytes to a\n"
          "plain file in D (removed afterwards). Each configuration runs S\n"
          "seconds (default 1). --sustained S adds one long run (256 B, batch\n"
          "64) with compaction behind the writer and reports write\n"
          "amplification. Last, the cost of one write+fdatasync of a put-64\n"
          "batch, appending versus overwriting blocks written before.\n"
          "--batches N instead persists exactly N put-64 batches (26 entries\n"
          "of 256 B and a hard state, synced) and prints CPU us per entry:\n"
          "fixed work, for comparing builds under valgrind "
          "--tool=callgrind.\n");
      return 0;
    } else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (std::strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (std::strcmp(argv[i], "--sustained") == 0 && i + 1 < argc) {
      sustained = std::atof(argv[++i]);
    } else if (std::strcmp(argv[i], "--batches") == 0 && i + 1 < argc) {
      batches = std::strtoull(argv[++i], nullptr, 10);
    } else {
      std::fprintf(stderr,
                   "log_store_bench: unknown argument '%s' (try --help)\n",
                   argv[i]);
      return 2;
    }
  }
  if (dir.empty() || seconds <= 0) {
    std::fprintf(
        stderr,
        "log_store_bench: --dir is required and --seconds must be positive\n");
    return 2;
  }
  if (batches != 0) {
    const Result rocks = RunRocks(dir + "/rocks", 256, 26, 0, false, batches);
    std::printf(
        "log_store_bench --batches %llu: %llu entries of 256 B in batches of "
        "26, %.0f entries/s, p50 %.0f us per Persist, CPU %.2f us per entry\n",
        static_cast<unsigned long long>(batches),
        static_cast<unsigned long long>(batches * 26), rocks.entries_per_second,
        rocks.p50_us, rocks.cpu_us_per_entry);
    return 0;
  }
  std::printf("log_store_bench --dir %s --seconds %g --sustained %g\n",
              dir.c_str(), seconds, sustained);
  std::fflush(stdout);
  std::printf("%8s %6s | %-39s | %-39s | %s\n", "payload", "batch",
              "RocksDbLogStore: entries/s MB/s p50us p99us",
              "raw file: entries/s MB/s p50us p99us", "ratio");
  for (size_t payload : {size_t{16}, size_t{256}, size_t{4096}}) {
    for (size_t batch : {size_t{1}, size_t{16}, size_t{256}, size_t{1024}}) {
      const Result rocks =
          RunRocks(dir + "/rocks", payload, batch, seconds, false);
      const Result raw = RunRaw(dir, payload, batch, seconds);
      PrintRow(payload, batch, rocks, raw);
    }
  }
  std::printf(
      "write+fdatasync of 26 entries of 256 B (a put-64 batch), appending "
      "versus overwriting blocks written before:\n");
  for (const bool overwrite : {false, true}) {
    const SyncCost cost = RunSyncCost(dir, 256, 26, seconds, overwrite);
    std::printf(
        "  %-9s p50 %6.0f us  CPU %5.1f us  blocking waits %4.2f per write\n",
        overwrite ? "overwrite" : "append", cost.p50_us, cost.cpu_us,
        cost.voluntary_switches);
  }
  if (sustained > 0) {
    const Result rocks = RunRocks(dir + "/rocks", 256, 64, sustained, true);
    const Result raw = RunRaw(dir, 256, 64, sustained);
    std::printf(
        "sustained %.0f s, 256 B batch 64 (compaction behind the writer):\n",
        sustained);
    PrintRow(256, 64, rocks, raw);
    std::printf(
        "RocksDB write amplification: %.2f bytes written per payload byte\n",
        rocks.write_amplification);
  }
  return 0;
}
