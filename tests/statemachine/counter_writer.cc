// counter_writer: the child process of the state machine SIGKILL test
// (kill_test.cc).
//
// Write mode: opens (or creates) a RocksDbKvStateMachine and applies entries
// Increment("counter", 1), one per index, in batches of random size, forever
// (or until --max-entries). Every entry's response must equal its index (the
// counter counts the entries applied since index 1). Every few batches it
// calls Sync and reports the durable applied index on stdout as
// "durable <index>\n", written with write(2) after Sync returned. The first
// line is "start <applied index reported by Open>\n".
//
// Check mode (--check): opens the state machine (never creating it), prints
// "applied <index> term <term> counter <value>\n" and exits 0.
//
// Exits 1 with a message on stderr on any error.
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "statemachine/kv_command.h"
#include "statemachine/rocksdb_kv_state_machine.h"

namespace driftwood::statemachine {
namespace {

constexpr char kUsage[] =
    "usage: counter_writer --path P [--seed S] [--max-entries N]\n"
    "                      [--write-buffer-bytes B]\n"
    "       counter_writer --check --path P\n"
    "\n"
    "Write mode applies Increment(\"counter\", 1) entries to the\n"
    "RocksDbKvStateMachine at P (created if missing) in batches of 1-64,\n"
    "syncing every 1-4 batches and printing \"durable <index>\" after each\n"
    "Sync. S seeds the batch sizes (default 1). Stops after N entries\n"
    "(default: never). B sets RocksDB's memtable size (default 64 MiB; a\n"
    "small one makes flushes, and kills during them, frequent). Check mode\n"
    "prints \"applied <index> term <term>\n"
    "counter <value>\".\n";

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "counter_writer: %s\n", message.c_str());
  std::exit(1);
}

// Writes all of `line` to fd 1 with write(2), so that nothing is buffered in
// this process when it is killed.
void Report(const std::string& line) {
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n =
        write(STDOUT_FILENO, line.data() + written, line.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(absl::StrCat("writing to stdout: ", std::strerror(errno)));
    }
    written += static_cast<size_t>(n);
  }
}

int Check(const std::string& path) {
  RocksDbKvStateMachineOptions options;
  options.path = path;
  options.create_if_missing = false;
  RocksDbKvStateMachine machine(options);
  auto opened = machine.Open();
  if (!opened.ok()) Fail(absl::StrCat("Open: ", opened.status().ToString()));
  auto answer = machine.Query(EncodeQuery(GetQuery{"counter"}));
  if (!answer.ok()) Fail(absl::StrCat("Query: ", answer.status().ToString()));
  auto value = DecodeGetResult(*answer);
  if (!value.ok()) Fail(value.status().ToString());
  int64_t counter = 0;
  if (value->has_value()) {
    std::optional<int64_t> parsed = ParseCounter(**value);
    if (!parsed.has_value()) Fail(absl::StrCat("counter is \"", **value, "\""));
    counter = *parsed;
  }
  Report(absl::StrCat("applied ", opened->index.value(), " term ",
                      opened->term.value(), " counter ", counter, "\n"));
  return 0;
}

int Write(const std::string& path, uint64_t seed, uint64_t max_entries,
          uint64_t write_buffer_bytes) {
  // Die with the test: a writer must never outlive a failed parent.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) Fail("prctl(PR_SET_PDEATHSIG)");
  if (getppid() == 1) Fail("the parent is gone");

  RocksDbKvStateMachineOptions options;
  options.path = path;
  options.write_buffer_size = static_cast<size_t>(write_buffer_bytes);
  RocksDbKvStateMachine machine(options);
  auto opened = machine.Open();
  if (!opened.ok()) Fail(absl::StrCat("Open: ", opened.status().ToString()));
  Report(absl::StrCat("start ", opened->index.value(), "\n"));

  std::mt19937_64 random(seed);
  raft::Configuration configuration;
  configuration.voters = {raft::NodeId(1), raft::NodeId(2), raft::NodeId(3)};
  const std::string increment = EncodeCommand(IncrementCommand{"counter", 1});
  uint64_t next = opened->index.value() + 1;
  uint64_t written = 0;
  uint64_t batches_until_sync = random() % 4 + 1;
  uint64_t last_durable = opened->index.value();
  std::vector<raft::Entry> entries;
  while (written < max_entries) {
    const uint64_t size = random() % 64 + 1;
    entries.clear();
    for (uint64_t i = 0; i < size; ++i) {
      entries.push_back(raft::Entry{raft::Term(1), raft::LogIndex(next + i),
                                    raft::EntryType::kNormal, increment});
    }
    auto responses = machine.Apply(raft::ApplyBatch{entries, configuration});
    if (!responses.ok()) {
      Fail(absl::StrCat("Apply: ", responses.status().ToString()));
    }
    for (uint64_t i = 0; i < size; ++i) {
      auto response = DecodeResponse((*responses)[i]);
      const auto expected = static_cast<int64_t>(next + i);
      if (!response.ok() || response->counter != expected) {
        Fail(absl::StrCat("entry ", next + i, " answered ",
                          response.ok() && response->counter.has_value()
                              ? absl::StrCat(*response->counter)
                              : std::string("no counter"),
                          "; the counter must equal the index"));
      }
    }
    next += size;
    written += size;
    if (--batches_until_sync == 0) {
      auto durable = machine.Sync();
      if (!durable.ok())
        Fail(absl::StrCat("Sync: ", durable.status().ToString()));
      // Durable at most what is applied, and never less than before.
      if (durable->value() > next - 1 || durable->value() < last_durable) {
        Fail(absl::StrCat("Sync returned ", durable->value(), ", applied is ",
                          next - 1, ", earlier Sync returned ", last_durable));
      }
      last_durable = durable->value();
      Report(absl::StrCat("durable ", durable->value(), "\n"));
      batches_until_sync = random() % 4 + 1;
    }
  }
  return 0;
}

int Main(int argc, char** argv) {
  std::string path;
  uint64_t seed = 1;
  uint64_t max_entries = UINT64_MAX;
  uint64_t write_buffer_bytes =
      RocksDbKvStateMachineOptions().write_buffer_size;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--path" && has_value) {
      path = argv[++i];
    } else if (arg == "--seed" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &seed)) Fail("bad --seed");
    } else if (arg == "--max-entries" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &max_entries)) Fail("bad --max-entries");
    } else if (arg == "--write-buffer-bytes" && has_value) {
      if (!absl::SimpleAtoi(argv[++i], &write_buffer_bytes)) {
        Fail("bad --write-buffer-bytes");
      }
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
  }
  if (path.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  return check ? Check(path)
               : Write(path, seed, max_entries, write_buffer_bytes);
}

}  // namespace
}  // namespace driftwood::statemachine

int main(int argc, char** argv) {
  return driftwood::statemachine::Main(argc, argv);
}
