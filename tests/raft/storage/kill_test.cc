// SIGKILL durability (docs/design.md "Tests", storage layer): a child process
// (log_store_writer) appends synced batches to a RocksDbLogStore and reports
// each one on stdout after Persist returns; the test kills it with SIGKILL at a
// random moment, reopens the store and checks that every reported entry is
// still there with exactly its contents, then lets a new writer continue in the
// same folder. SIGKILL keeps the page cache, so this checks atomicity and
// recovery (torn WAL tails, half-applied batches, tail overwrites), not fsync;
// power loss is tested separately.
//
// DRIFTWOOD_SEED overrides the seed, DRIFTWOOD_KILL_ITERATIONS the number of
// kills (default 200). Every run prints both.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "raft/storage/rocksdb_log_store.h"
#include "tests/support/child_process.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

using driftwood::testing::Child;
using driftwood::testing::Clock;
using driftwood::testing::DescribeWaitStatus;
using std::chrono::milliseconds;

#ifndef DRIFTWOOD_LOG_STORE_WRITER
#error "DRIFTWOOD_LOG_STORE_WRITER must name the log_store_writer binary"
#endif
constexpr char kWriter[] = DRIFTWOOD_LOG_STORE_WRITER;

// How long a writer may take to report the lines the test waits for.
constexpr milliseconds kReadDeadline(10'000);

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  uint64_t parsed = 0;
  if (value == nullptr || !absl::SimpleAtoi(value, &parsed)) return fallback;
  return parsed;
}

// The contents of entry (index, term). Must stay identical to Payload in
// log_store_writer.cc.
std::string Payload(uint64_t index, uint64_t term) {
  std::string data = absl::StrCat("e", index, "-t", term, "-");
  const uint64_t padding = (index * 7) % 200;
  for (uint64_t i = 0; i < padding; ++i) {
    data.push_back(static_cast<char>('a' + (index + term + i) % 26));
  }
  return data;
}

RocksDbLogStoreOptions StoreOptions(const std::string& path,
                                    bool create_if_missing) {
  RocksDbLogStoreOptions options;
  options.path = path;
  options.cluster_id = 42;
  options.node_id = NodeId(1);
  options.create_if_missing = create_if_missing;
  options.initial_configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  return options;
}

// What the test knows from the writers' reports.
struct Acks {
  // acked_term[i]: the reported term of entry i, 0 when i was not reported.
  std::vector<uint64_t> acked_term = {0};
  uint64_t last = 0;  // the highest reported index
  uint64_t count = 0;

  // Records one "index term" line.
  void Add(const std::string& line) {
    INFO("writer reported \"" << line << "\"");
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    REQUIRE(parts.size() == 2);
    uint64_t index = 0;
    uint64_t term = 0;
    REQUIRE(absl::SimpleAtoi(parts[0], &index));
    REQUIRE(absl::SimpleAtoi(parts[1], &term));
    // Reported entries are never overwritten, so reports only move forward.
    REQUIRE(index > last);
    REQUIRE(term > 0);
    acked_term.resize(index + 1, 0);
    acked_term[index] = term;
    last = index;
    ++count;
  }
};

// Reopens the store after a kill and checks it against `acks`. Returns the
// stored term of every index (0 unused) for the next iteration's comparison.
std::vector<uint64_t> Verify(const std::string& path, const Acks& acks) {
  auto opened = RocksDbLogStore::Open(StoreOptions(path, acks.last == 0));
  INFO("reopening after SIGKILL: " << opened.status().ToString());
  REQUIRE(opened.ok());
  RocksDbLogStore& store = **opened;
  const uint64_t last = store.LastIndex().value();
  INFO("LastIndex " << last << ", last acknowledged index " << acks.last);
  REQUIRE(store.FirstIndex() == LogIndex(1));
  REQUIRE(last >= acks.last);

  std::vector<uint64_t> terms(last + 1, 0);
  if (last > 0) {
    auto entries =
        store.Entries(LogIndex(1), LogIndex(last).next(), UINT64_MAX);
    INFO("reading entries: " << entries.status().ToString());
    REQUIRE(entries.ok());
    REQUIRE(entries->size() == last);
    // One REQUIRE per problem, not per entry: the log grows to tens of
    // thousands of entries and is read back after every kill.
    uint64_t previous_term = 0;
    for (uint64_t index = 1; index <= last; ++index) {
      const Entry& entry = (*entries)[index - 1];
      const uint64_t term = entry.term.value();
      std::string problem;
      if (entry.index.value() != index) {
        problem = absl::StrCat("has index ", entry.index.value());
      } else if (entry.type != EntryType::kNormal ||
                 entry.data.str() != Payload(index, term)) {
        problem = absl::StrCat("has type ", static_cast<int>(entry.type),
                               " and data \"", entry.data.str(),
                               "\", expected \"", Payload(index, term), "\"");
      } else if (term < previous_term) {
        // Every writer appends with a term at least as high as the log's.
        problem = absl::StrCat("has a lower term than entry ", index - 1, " (",
                               previous_term, ")");
      } else if (index < acks.acked_term.size() &&
                 acks.acked_term[index] != 0 &&
                 acks.acked_term[index] != term) {
        problem =
            absl::StrCat("was acknowledged with term ", acks.acked_term[index]);
      }
      if (!problem.empty()) {
        FAIL("entry " << index << " (term " << term << ") " << problem);
      }
      terms[index] = term;
      previous_term = term;
    }
  }

  auto initial = store.LoadInitialState();
  REQUIRE(initial.ok());
  const HardState& hard = initial->hard_state;
  INFO("hard state term " << hard.term.value() << " vote "
                          << hard.voted_for.value() << " commit "
                          << hard.commit.value());
  REQUIRE(hard.commit.value() <= last);
  // A hard state's commit is an index the writer had already reported, and
  // it is written in the same batch as the entries, so it is never older
  // than the terms of the log.
  REQUIRE(hard.commit.value() <= acks.last);
  REQUIRE(hard.term.value() >= terms.back());
  REQUIRE((hard.voted_for == kNoNode || hard.voted_for == NodeId(1)));
  REQUIRE(initial->configuration.voters ==
          std::vector<NodeId>{NodeId(1), NodeId(2), NodeId(3)});
  return terms;
}

TEST_CASE("RocksDbLogStore keeps every acknowledged entry across SIGKILL",
          "[storage][kill]") {
  const uint64_t seed = EnvOr("DRIFTWOOD_SEED", 20261125);
  const uint64_t iterations = EnvOr("DRIFTWOOD_KILL_ITERATIONS", 200);
  std::printf("kill_test: seed %" PRIu64 ", %" PRIu64
              " iterations (override with DRIFTWOOD_SEED, "
              "DRIFTWOOD_KILL_ITERATIONS)\n",
              seed, iterations);
  std::fflush(stdout);
  INFO("seed " << seed << " (rerun with DRIFTWOOD_SEED=" << seed << ")");
  std::mt19937_64 rng(seed);
  testing::TempDir dir;
  const std::string path = dir.path() + "/log";

  Acks acks;
  std::vector<uint64_t> previous_terms = {0};
  uint64_t previous_acked = 0;
  uint64_t early_kills = 0;
  uint64_t unacked_tails = 0;
  uint64_t overwritten_tails = 0;
  const auto started = Clock::now();
  for (uint64_t iteration = 0; iteration < iterations; ++iteration) {
    const uint64_t writer_seed = rng();
    const uint64_t wanted = 1 + rng() % 50;
    // One kill in four comes at a random moment within 100 ms of the spawn,
    // sometimes while the writer is still opening the store.
    const bool early = rng() % 4 == 0;
    const milliseconds wait =
        early ? milliseconds(static_cast<int64_t>(rng() % 100)) : kReadDeadline;
    INFO("iteration " << iteration << ": writer --seed " << writer_seed
                      << " --floor " << acks.last << ", waiting for " << wanted
                      << " lines or " << wait.count() << " ms");

    {
      auto writer = Child::Spawn({kWriter, "--path", path, "--seed",
                                  absl::StrCat(writer_seed), "--floor",
                                  absl::StrCat(acks.last)});
      const auto deadline = Clock::now() + wait;
      uint64_t lines = 0;
      std::string line;
      while (lines < wanted) {
        const Child::Read read = writer->NextLine(deadline, &line);
        if (read == Child::Read::kLine) {
          acks.Add(line);
          ++lines;
          continue;
        }
        if (read == Child::Read::kEof) {
          FAIL("the writer stopped by itself ("
               << DescribeWaitStatus(writer->Reap()) << ") after " << lines
               << " lines; see its message above");
        }
        if (!early) {
          FAIL("the writer reported " << lines << " of " << wanted
                                      << " lines in " << wait.count() << " ms");
        }
        ++early_kills;
        break;
      }
      const int status = writer->Kill();
      INFO("writer " << DescribeWaitStatus(status));
      REQUIRE(WIFSIGNALED(status));
      REQUIRE(WTERMSIG(status) == SIGKILL);
      // Lines still in the pipe were reported before the kill: they are
      // acknowledged too. The writer is dead, so EOF comes at once.
      const auto drain_deadline = Clock::now() + kReadDeadline;
      Child::Read read;
      while ((read = writer->NextLine(drain_deadline, &line)) ==
             Child::Read::kLine) {
        acks.Add(line);
      }
      REQUIRE(read == Child::Read::kEof);
    }

    const std::vector<uint64_t> terms = Verify(path, acks);
    // Coverage: did an unreported tail survive the kill, and did the next
    // writer overwrite one?
    if (terms.size() - 1 > acks.last) ++unacked_tails;
    for (uint64_t i = previous_acked + 1; i < previous_terms.size(); ++i) {
      if (i >= terms.size() || terms[i] != previous_terms[i]) {
        ++overwritten_tails;
        break;
      }
    }
    previous_terms = terms;
    previous_acked = acks.last;
  }
  const auto elapsed =
      std::chrono::duration_cast<milliseconds>(Clock::now() - started);
  std::printf("kill_test: seed %" PRIu64 ", %" PRIu64 " iterations in %" PRId64
              " ms: %" PRIu64 " acknowledged batches, last index %" PRIu64
              ", %" PRIu64 " kills at the random deadline, %" PRIu64
              " unacknowledged tails survived, %" PRIu64 " tails overwritten\n",
              seed, iterations, static_cast<int64_t>(elapsed.count()),
              acks.count, acks.last, early_kills, unacked_tails,
              overwritten_tails);
  std::fflush(stdout);
}

}  // namespace
}  // namespace driftwood::raft
