// mvcc_apply_bench: the apply thread's cost per etcd put, without raft or
// gRPC: MvccStateMachine::Apply of Put commands in batches, as driftwood-kv's
// apply thread runs them.
//
//   mvcc_apply_bench [--puts N] [--batch B] [--key-space K] [--value-bytes V]
//                    [--write-buffer-mb M] [--dir D]
//
// Applies N puts (default 300,000) of 8-byte keys drawn uniformly from K
// (default 100,000) with V-byte values (default 256), B per batch (default
// 32), with an M MiB memtable (default: the state machine's), and prints puts/s
// and CPU microseconds per put (the process's user + system time over the
// applies). D defaults to a new folder under /tmp, removed at the end.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "bench/bench_clock.h"
#include "statemachine/mvcc/mvcc_state_machine.h"

namespace {

using driftwood::bench::ProcessCpuSeconds;
using driftwood::bench::WallSeconds;

namespace fs = std::filesystem;
using driftwood::mvcc::MvccCommand;
using driftwood::mvcc::MvccStateMachine;
using driftwood::raft::ApplyBatch;
using driftwood::raft::Configuration;
using driftwood::raft::Entry;
using driftwood::raft::EntryType;
using driftwood::raft::LogIndex;
using driftwood::raft::NodeId;
using driftwood::raft::Term;

constexpr char kUsage[] =
    "usage: mvcc_apply_bench [--puts N] [--batch B] [--key-space K]\n"
    "                        [--value-bytes V] [--write-buffer-mb M]\n"
    "                        [--dir D]\n"
    "\n"
    "Applies N etcd puts (default 300000) to an MvccStateMachine, B per\n"
    "batch (default 32), 8-byte keys uniform over K (default 100000), V-byte\n"
    "values (default 256), an M MiB memtable (default: the state machine's\n"
    "default); prints puts/s and CPU us per put. D (default: a\n"
    "new folder under /tmp) is removed at the end.\n";

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "mvcc_apply_bench: %s\n", what.c_str());
  std::exit(2);
}

uint64_t ParseCount(const char* flag, const char* text) {
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value == 0) {
    Die(absl::StrFormat("%s wants a positive integer, not '%s'", flag, text));
  }
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t puts = 300'000, batch = 32, key_space = 100'000, value_bytes = 256;
  uint64_t write_buffer_mb = 0;
  fs::path dir;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc)
      Die(absl::StrFormat("%s needs a value\n%s", flag, kUsage));
    const char* value = argv[++i];
    if (flag == "--puts") {
      puts = ParseCount("--puts", value);
    } else if (flag == "--batch") {
      batch = ParseCount("--batch", value);
    } else if (flag == "--key-space") {
      key_space = ParseCount("--key-space", value);
    } else if (flag == "--value-bytes") {
      value_bytes = ParseCount("--value-bytes", value);
    } else if (flag == "--write-buffer-mb") {
      write_buffer_mb = ParseCount("--write-buffer-mb", value);
    } else if (flag == "--dir") {
      dir = value;
    } else {
      Die(absl::StrFormat("unknown flag '%s'\n%s", flag, kUsage));
    }
  }
  const bool own_dir = dir.empty();
  if (own_dir) {
    char pattern[] = "/tmp/mvcc-apply-bench-XXXXXX";
    if (mkdtemp(pattern) == nullptr) Die("cannot create a folder in /tmp");
    dir = pattern;
  }

  driftwood::statemachine::RocksDbKvStateMachineOptions options;
  options.path = dir / "sm";
  if (write_buffer_mb != 0) options.write_buffer_size = write_buffer_mb << 20;
  MvccStateMachine machine(options);
  if (auto opened = machine.Open(); !opened.ok()) {
    Die(opened.status().ToString());
  }
  Configuration configuration;
  configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};

  std::mt19937_64 random(1);
  const std::string value(value_bytes, 'v');
  std::vector<Entry> entries;
  uint64_t index = 0;
  const double wall_start = WallSeconds();
  const double cpu_start = ProcessCpuSeconds();
  for (uint64_t done = 0; done < puts;) {
    entries.clear();
    for (uint64_t i = 0; i < batch && done < puts; ++i, ++done) {
      MvccCommand command;
      command.mutable_put()->set_key(
          absl::StrFormat("%08d", random() % key_space));
      command.mutable_put()->set_value(value);
      entries.push_back(Entry{Term(1), LogIndex(++index), EntryType::kNormal,
                              command.SerializeAsString()});
    }
    if (auto applied = machine.Apply(ApplyBatch{entries, configuration});
        !applied.ok()) {
      Die(applied.status().ToString());
    }
  }
  const double wall = WallSeconds() - wall_start;
  const double cpu = ProcessCpuSeconds() - cpu_start;
  std::printf(
      "mvcc_apply_bench --puts %llu --batch %llu --key-space %llu "
      "--value-bytes %llu --write-buffer-mb %llu\n"
      "  %.0f puts/s, %.2f CPU us/put (%.2f s wall, %.2f s CPU; includes "
      "RocksDB's background flushes)\n",
      static_cast<unsigned long long>(puts),
      static_cast<unsigned long long>(batch),
      static_cast<unsigned long long>(key_space),
      static_cast<unsigned long long>(value_bytes),
      static_cast<unsigned long long>(options.write_buffer_size >> 20),
      static_cast<double>(puts) / wall, cpu * 1e6 / static_cast<double>(puts),
      wall, cpu);
  if (own_dir) {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  return 0;
}
