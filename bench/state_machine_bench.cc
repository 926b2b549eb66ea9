// state_machine_bench: snapshots of a large RocksDbKvStateMachine.
//
//   state_machine_bench [--dir D] [--gigabytes G] [--value-bytes V]
//                       [--batch B] [--captures C] [--keep]
//
// Fills a RocksDbKvStateMachine with about G GiB of Put entries (V-byte random,
// incompressible values; B entries per Apply), Syncs, then measures:
//   * Capture() wall time (C times; median, min, max): the figure that matters,
//     since Capture runs on the apply thread and blocks applying;
//   * WriteTo() of one capture (the background part): time, SST files and
//     bytes written;
//   * Restore() of that snapshot into a second, fresh state machine;
//   * the on-disk size of both databases.
// Prints the command line beside the figures. D defaults to a fresh folder
// under /tmp, removed at the end unless --keep.
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_clock.h"
#include "raft/storage/snapshot_store.h"
#include "statemachine/kv_command.h"
#include "statemachine/rocksdb_kv_state_machine.h"

namespace {

using driftwood::bench::WallSeconds;

namespace fs = std::filesystem;
using driftwood::raft::ApplyBatch;
using driftwood::raft::Configuration;
using driftwood::raft::Entry;
using driftwood::raft::EntryType;
using driftwood::raft::LogIndex;
using driftwood::raft::NodeId;
using driftwood::raft::SnapshotMeta;
using driftwood::raft::StateMachineSnapshot;
using driftwood::raft::Term;
using driftwood::statemachine::CountQuery;
using driftwood::statemachine::DecodeCountResult;
using driftwood::statemachine::EncodeCommand;
using driftwood::statemachine::EncodeQuery;
using driftwood::statemachine::PutCommand;
using driftwood::statemachine::RocksDbKvStateMachine;
using driftwood::statemachine::RocksDbKvStateMachineOptions;

constexpr char kUsage[] =
    "usage: state_machine_bench [--dir D] [--gigabytes G] [--value-bytes V]\n"
    "                           [--batch B] [--captures C] [--keep]\n"
    "\n"
    "Fills a RocksDbKvStateMachine in D (default: a new folder under /tmp)\n"
    "with about G GiB (default 1) of Put entries with V-byte random values\n"
    "(default 1024), B entries per Apply (default 1000), and measures\n"
    "Capture (C times, default 5), WriteTo, and Restore into a second state\n"
    "machine. D is removed at the end unless --keep. Needs about 3.3 x G GiB\n"
    "free in D's file system.\n";

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "state_machine_bench: %s\n", what.c_str());
  std::exit(1);
}

// Bytes of every regular file below `path`, and their number.
std::pair<uint64_t, uint64_t> DiskUsage(const fs::path& path) {
  uint64_t bytes = 0;
  uint64_t files = 0;
  std::error_code error;
  for (fs::recursive_directory_iterator it(path, error), end;
       !error && it != end; it.increment(error)) {
    if (it->is_regular_file(error)) {
      bytes += it->file_size(error);
      ++files;
    }
  }
  if (error)
    Die(absl::StrCat("measuring ", path.string(), ": ", error.message()));
  return {bytes, files};
}

std::string Mib(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

std::unique_ptr<RocksDbKvStateMachine> OpenMachine(const fs::path& path) {
  RocksDbKvStateMachineOptions options;
  options.path = path;
  auto machine = std::make_unique<RocksDbKvStateMachine>(options);
  auto opened = machine->Open();
  if (!opened.ok()) Die(absl::StrCat("Open: ", opened.status().ToString()));
  return machine;
}

uint64_t CountKeys(const RocksDbKvStateMachine& machine) {
  auto answer = machine.Query(EncodeQuery(CountQuery{}));
  if (!answer.ok()) Die(answer.status().ToString());
  auto count = DecodeCountResult(*answer);
  if (!count.ok()) Die(count.status().ToString());
  return *count;
}

int Main(int argc, char** argv) {
  std::string dir;
  double gigabytes = 1;
  uint64_t value_bytes = 1024;
  uint64_t batch_size = 1000;
  uint64_t captures = 5;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--dir" && has_value) {
      dir = argv[++i];
    } else if (arg == "--gigabytes" && has_value) {
      if (!absl::SimpleAtod(argv[++i], &gigabytes) || gigabytes <= 0) {
        Die("bad --gigabytes");
      }
    } else if (arg == "--value-bytes" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &value_bytes) || value_bytes == 0) {
        Die("bad --value-bytes");
      }
    } else if (arg == "--batch" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &batch_size) || batch_size == 0) {
        Die("bad --batch");
      }
    } else if (arg == "--captures" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &captures) || captures == 0) {
        Die("bad --captures");
      }
    } else if (arg == "--keep") {
      keep = true;
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  std::string command_line = argv[0];
  for (int i = 1; i < argc; ++i) absl::StrAppend(&command_line, " ", argv[i]);

  bool made_dir = false;
  if (dir.empty()) {
    std::string pattern =
        (fs::temp_directory_path() / "driftwood-sm-bench-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) Die("mkdtemp failed");
    dir = pattern;
    made_dir = true;
  } else if (fs::exists(dir) && !fs::is_empty(dir)) {
    Die(absl::StrCat("--dir ", dir, " exists and is not empty"));
  }
  const fs::path root(dir);

  std::printf("command: %s\n", command_line.c_str());
  std::printf("folder: %s\n", dir.c_str());

  constexpr uint64_t kKeyBytes = 17;  // "k" and 16 hex digits
  const auto fill_bytes =
      static_cast<uint64_t>(gigabytes * static_cast<double>(uint64_t{1} << 30));
  const uint64_t total_entries =
      std::max<uint64_t>(1, fill_bytes / (kKeyBytes + value_bytes));
  std::printf("filling: %" PRIu64 " Put entries, %" PRIu64
              "-byte keys, %" PRIu64 "-byte random values, %" PRIu64
              " per Apply (%s of keys and values)\n",
              total_entries, kKeyBytes, value_bytes, batch_size,
              Mib(total_entries * (kKeyBytes + value_bytes)).c_str());
  std::fflush(stdout);

  auto source = OpenMachine(root / "source");
  Configuration configuration;
  configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  std::mt19937_64 random(42);
  std::vector<Entry> entries;
  std::string value(value_bytes, '\0');
  uint64_t next = 1;
  uint64_t next_report = 1;
  const double fill_start = WallSeconds();
  while (next <= total_entries) {
    entries.clear();
    const uint64_t end = std::min(total_entries + 1, next + batch_size);
    for (uint64_t index = next; index < end; ++index) {
      for (size_t at = 0; at < value.size(); at += 8) {
        const uint64_t bits = random();
        for (size_t b = 0; b < 8 && at + b < value.size(); ++b) {
          value[at + b] = static_cast<char>(bits >> (8 * b));
        }
      }
      // Keys in a scattered order, as applications write them (an odd
      // multiplier is a bijection: no two indexes share a key).
      const uint64_t key = index * 0x9E3779B97F4A7C15ull;
      entries.push_back(Entry{
          Term(1), LogIndex(index), EntryType::kNormal,
          EncodeCommand(PutCommand{absl::StrFormat("k%016x", key), value})});
    }
    auto responses = source->Apply(ApplyBatch{entries, configuration});
    if (!responses.ok()) Die(responses.status().ToString());
    next = end;
    const uint64_t done = next - 1;
    if (done * 10 >= next_report * total_entries) {
      const double elapsed = WallSeconds() - fill_start;
      std::printf("  filled %3" PRIu64 "%%: %" PRIu64
                  " entries in %.1f s (%.1f MiB/s)\n",
                  done * 100 / total_entries, done, elapsed,
                  static_cast<double>(done * (kKeyBytes + value_bytes)) /
                      elapsed / (1 << 20));
      std::fflush(stdout);
      while (done * 10 >= next_report * total_entries) ++next_report;
    }
  }
  const double fill_seconds = WallSeconds() - fill_start;
  double start = WallSeconds();
  auto synced = source->Sync();
  if (!synced.ok()) Die(synced.status().ToString());
  const double sync_seconds = WallSeconds() - start;
  const uint64_t keys = CountKeys(*source);
  std::printf("filled in %.1f s; Sync %.3f s; applied index %" PRIu64
              ", %" PRIu64 " keys\n",
              fill_seconds, sync_seconds, synced->value(), keys);

  // Capture: the apply-thread cost.
  std::vector<double> capture_us;
  std::unique_ptr<StateMachineSnapshot> snapshot;
  for (uint64_t i = 0; i < captures; ++i) {
    snapshot.reset();
    start = WallSeconds();
    auto captured = source->Capture();
    const double elapsed = WallSeconds() - start;
    if (!captured.ok()) Die(captured.status().ToString());
    capture_us.push_back(elapsed * 1e6);
    snapshot = std::move(*captured);
  }
  std::vector<double> sorted = capture_us;
  std::sort(sorted.begin(), sorted.end());
  std::string all;
  for (double us : capture_us)
    absl::StrAppend(&all, absl::StrFormat(" %.1f", us));
  std::printf("Capture: median %.1f us [min %.1f, max %.1f] over %" PRIu64
              " captures (each:%s us)\n",
              sorted[sorted.size() / 2], sorted.front(), sorted.back(),
              captures, all.c_str());

  // WriteTo: the background cost, while the state machine keeps applying,
  // into the snapshot store as the framework does it.
  auto store = driftwood::raft::SnapshotStore::Open(root / "snapshots");
  if (!store.ok()) Die(store.status().ToString());
  const SnapshotMeta meta = snapshot->meta();
  auto pending = (*store)->Begin(meta);
  if (!pending.ok()) Die(pending.status().ToString());
  const fs::path pending_dir = pending->dir();
  start = WallSeconds();
  absl::Status written = snapshot->WriteTo(pending_dir);
  const double write_seconds = WallSeconds() - start;
  if (!written.ok()) Die(written.ToString());
  snapshot.reset();
  const auto [snapshot_bytes, snapshot_files] = DiskUsage(pending_dir);
  std::printf("WriteTo: %.2f s, %" PRIu64 " SST files, %s (%.1f MiB/s)\n",
              write_seconds, snapshot_files, Mib(snapshot_bytes).c_str(),
              static_cast<double>(snapshot_bytes) / write_seconds / (1 << 20));
  // Publish (CRC32C and fsync of every file, manifest, rename) and the full
  // verification every restore starts with.
  start = WallSeconds();
  auto published = (*store)->Publish(*std::move(pending));
  const double publish_seconds = WallSeconds() - start;
  if (!published.ok()) Die(published.status().ToString());
  start = WallSeconds();
  auto verified = (*store)->Verify(meta.index);
  const double verify_seconds = WallSeconds() - start;
  if (!verified.ok()) Die(verified.status().ToString());
  std::printf("Publish: %.2f s; Verify: %.2f s (%.1f MiB/s)\n", publish_seconds,
              verify_seconds,
              static_cast<double>(snapshot_bytes) / verify_seconds / (1 << 20));
  const fs::path snapshot_dir = (*store)->DirFor(meta.index, meta.term);

  // Restore into a second, fresh state machine.
  auto target = OpenMachine(root / "target");
  start = WallSeconds();
  absl::Status restored = target->Restore(meta, snapshot_dir);
  const double restore_seconds = WallSeconds() - start;
  if (!restored.ok()) Die(restored.ToString());
  const uint64_t restored_keys = CountKeys(*target);
  std::printf("Restore: %.2f s (%.1f MiB/s of snapshot), %" PRIu64
              " keys, applied index %" PRIu64 "%s\n",
              restore_seconds,
              static_cast<double>(snapshot_bytes) / restore_seconds / (1 << 20),
              restored_keys, target->applied().index.value(),
              restored_keys == keys ? "" : "  KEY COUNT MISMATCH");

  const auto [source_bytes, source_files] = DiskUsage(source->live_folder());
  const auto [target_bytes, target_files] = DiskUsage(target->live_folder());
  std::printf("on disk: source database %s in %" PRIu64
              " files; restored database %s in %" PRIu64 " files\n",
              Mib(source_bytes).c_str(), source_files,
              Mib(target_bytes).c_str(), target_files);
  std::printf("command: %s\n", command_line.c_str());

  source.reset();
  target.reset();
  if (!keep) {
    std::error_code error;
    if (made_dir) {
      fs::remove_all(root, error);
    } else {
      for (const char* name : {"source", "target", "snapshot"}) {
        fs::remove_all(root / name, error);
      }
    }
    if (error) Die(absl::StrCat("removing ", dir, ": ", error.message()));
  }
  return restored_keys == keys ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
