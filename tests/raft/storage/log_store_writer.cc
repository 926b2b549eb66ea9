// log_store_writer: the child process of the SIGKILL test (kill_test.cc).
//
// Opens (or creates) a RocksDbLogStore and appends synced batches forever,
// reporting each acknowledged batch on stdout as one line "index term\n"
// (the batch's last entry), written with write(2) only after Persist returned.
// The parent kills it with SIGKILL at an arbitrary moment and checks that every
// reported entry survived. Entry contents are a function of (index, term) (see
// Payload), so the parent can check every stored byte.
//
// Sometimes, as a new leader would, a batch overwrites a short tail of
// unreported entries with a higher term; entries at or below the floor (the
// highest index reported so far, by this process or, through --floor, by the
// ones before it) are never overwritten. Each hard state carries, as commit,
// the last reported index.
//
// Exits 1 with a message on stderr on any error; otherwise never exits.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "raft/storage/rocksdb_log_store.h"

namespace driftwood::raft {
namespace {

constexpr char kUsage[] =
    "usage: log_store_writer --path P --seed S [--floor F]\n"
    "\n"
    "Opens (creating it if missing) the RocksDbLogStore at P (cluster 42,\n"
    "node 1, voters {1,2,3}) and persists synced batches of 1-20 entries\n"
    "forever, printing \"index term\" of each batch's last entry on stdout\n"
    "after Persist returns. S seeds the batch sizes and tail overwrites. F is\n"
    "the highest index already acknowledged (default: the last stored index);\n"
    "entries at or below it are never overwritten. Stop it with a signal.\n";

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "log_store_writer: %s\n", message.c_str());
  std::exit(1);
}

// The contents of entry (index, term). Must stay identical to Payload in
// kill_test.cc.
std::string Payload(uint64_t index, uint64_t term) {
  std::string data = absl::StrCat("e", index, "-t", term, "-");
  const uint64_t padding = (index * 7) % 200;
  for (uint64_t i = 0; i < padding; ++i) {
    data.push_back(static_cast<char>('a' + (index + term + i) % 26));
  }
  return data;
}

// A uniform value in [0, n) from raw PRNG output. REQUIRES: n > 0.
uint64_t Below(std::mt19937_64& rng, uint64_t n) { return rng() % n; }

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

struct Args {
  std::string path;
  uint64_t seed = 0;
  bool has_seed = false;
  bool has_floor = false;
  uint64_t floor = 0;
};

Args Parse(int argc, char** argv) {
  Args args;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) Fail(absl::StrCat(flag, " needs a value\n", kUsage));
    const std::string value = argv[++i];
    if (flag == "--path") {
      args.path = value;
    } else if (flag == "--seed") {
      if (!absl::SimpleAtoi(value, &args.seed)) {
        Fail(absl::StrCat("bad --seed ", value));
      }
      args.has_seed = true;
    } else if (flag == "--floor") {
      if (!absl::SimpleAtoi(value, &args.floor)) {
        Fail(absl::StrCat("bad --floor ", value));
      }
      args.has_floor = true;
    } else {
      Fail(absl::StrCat("unknown flag ", flag, "\n", kUsage));
    }
  }
  if (args.path.empty() || !args.has_seed) {
    Fail(absl::StrCat("--path and --seed are required\n", kUsage));
  }
  return args;
}

void Run(const Args& args) {
  RocksDbLogStoreOptions options;
  options.path = args.path;
  options.cluster_id = 42;
  options.node_id = NodeId(1);
  options.create_if_missing = true;
  options.initial_configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  auto opened = RocksDbLogStore::Open(options);
  if (!opened.ok()) Fail(opened.status().ToString());
  RocksDbLogStore& store = **opened;

  const LogIndex last = store.LastIndex();
  auto last_term = store.TermAt(last);
  if (!last_term.ok()) Fail(last_term.status().ToString());
  auto initial = store.LoadInitialState();
  if (!initial.ok()) Fail(initial.status().ToString());
  uint64_t term = std::max(
      {initial->hard_state.term.value(), last_term->value(), uint64_t{1}});

  // The highest index reported: never overwritten, and the commit index of
  // the next hard state.
  uint64_t floor = args.has_floor ? args.floor : last.value();
  if (floor > last.value()) {
    Fail(absl::StrCat("--floor ", floor, " is past the last stored index ",
                      last.value()));
  }

  std::mt19937_64 rng(args.seed);
  while (true) {
    const uint64_t last_index = store.LastIndex().value();
    uint64_t start = last_index + 1;
    if (Below(rng, 4) == 0) {
      // Overwrite up to 3 unreported entries at the tail, if there are any.
      const uint64_t lowest = std::max(
          floor + 1, last_index + 1 - std::min<uint64_t>(3, last_index));
      start = lowest + Below(rng, last_index + 2 - lowest);
    }
    if (start <= last_index || Below(rng, 16) == 0) ++term;
    const uint64_t count = 1 + Below(rng, 20);

    PersistRequest request;
    request.sync = true;
    request.hard_state = HardState{Term(term), NodeId(1), LogIndex(floor)};
    request.entries.reserve(count);
    for (uint64_t index = start; index < start + count; ++index) {
      request.entries.push_back(Entry{Term(term), LogIndex(index),
                                      EntryType::kNormal,
                                      Payload(index, term)});
    }
    if (absl::Status status = store.Persist(request); !status.ok()) {
      Fail(status.ToString());
    }
    floor = start + count - 1;
    Report(absl::StrCat(floor, " ", term, "\n"));
  }
}

}  // namespace
}  // namespace driftwood::raft

int main(int argc, char** argv) {
  driftwood::raft::Run(driftwood::raft::Parse(argc, argv));
  return 0;
}
