// Unit tests for raft/core/raft_log.h over a MemoryLogStore.
#include "raft/core/raft_log.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/types.h"
#include "raft/storage/log_store.h"
#include "raft/storage/memory_log_store.h"

namespace driftwood::raft::internal {
namespace {

Configuration OneVoter() {
  Configuration config;
  config.voters = {NodeId(1)};
  return config;
}

Entry E(uint64_t term, uint64_t index, std::string data = "") {
  Entry entry;
  entry.term = Term(term);
  entry.index = LogIndex(index);
  entry.data = std::move(data);
  return entry;
}

// Entries first, first+1, ... with the given terms.
std::vector<Entry> Entries(uint64_t first,
                           std::initializer_list<uint64_t> terms,
                           const std::string& data = "") {
  std::vector<Entry> entries;
  uint64_t index = first;
  for (uint64_t term : terms) entries.push_back(E(term, index++, data));
  return entries;
}

std::vector<uint64_t> Indexes(const std::vector<Entry>& entries) {
  std::vector<uint64_t> indexes;
  for (const Entry& entry : entries) indexes.push_back(entry.index.value());
  return indexes;
}

std::vector<uint64_t> Terms(const std::vector<Entry>& entries) {
  std::vector<uint64_t> terms;
  for (const Entry& entry : entries) terms.push_back(entry.term.value());
  return terms;
}

void PersistEntries(MemoryLogStore& store, std::vector<Entry> entries) {
  PersistRequest request;
  request.entries = std::move(entries);
  request.sync = true;
  const absl::Status status = store.Persist(request);
  REQUIRE(status.ok());
}

// What the driver does with a Ready: write EntriesToPersist and report it done.
void PersistAndStabilize(MemoryLogStore& store, RaftLog& log) {
  std::vector<Entry> entries = log.EntriesToPersist();
  REQUIRE_FALSE(entries.empty());
  const EntryId last = entries.back().id();
  log.MarkPersisting(last.index);
  PersistEntries(store, std::move(entries));
  log.StableTo(last);
}

std::optional<uint64_t> Some(uint64_t value) { return value; }

std::optional<uint64_t> TermOf(const RaftLog& log, uint64_t index) {
  absl::StatusOr<Term> term = log.TermAt(LogIndex(index));
  if (!term.ok()) return std::nullopt;
  return term->value();
}

TEST_CASE("An empty RaftLog", "[unit]") {
  MemoryLogStore store(OneVoter());
  RaftLog log(store, LogIndex(0), LogIndex(0));
  CHECK(log.first_index() == LogIndex(1));
  CHECK(log.last_index() == LogIndex(0));
  CHECK(log.last_term() == Term(0));
  CHECK(log.last_id() == EntryId{Term(0), LogIndex(0)});
  CHECK(log.durable_last() == LogIndex(0));
  CHECK(log.commit_index() == LogIndex(0));
  CHECK(log.applied() == LogIndex(0));
  CHECK(TermOf(log, 0) == Some(0));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(1)).status()));
  CHECK_FALSE(log.MaybeTermAt(LogIndex(1)).has_value());
  CHECK_FALSE(log.HasEntriesToPersist());
  CHECK(log.EntriesToPersist().empty());
  CHECK_FALSE(log.HasNextCommittedEntries());
  CHECK(log.NextCommittedEntries(1000).empty());
  absl::StatusOr<std::vector<Entry>> entries =
      log.EntriesFrom(LogIndex(1), 100);
  REQUIRE(entries.ok());
  CHECK(entries->empty());
}

TEST_CASE("RaftLog last index and term span durable and unstable entries",
          "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 2}));
  RaftLog log(store, LogIndex(2), LogIndex(1));
  CHECK(log.commit_index() == LogIndex(2));
  CHECK(log.applied() == LogIndex(1));
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.last_index() == LogIndex(3));
  CHECK(log.last_term() == Term(2));
  CHECK_FALSE(log.HasEntriesToPersist());

  log.Append(Entries(4, {3, 3}));
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.last_index() == LogIndex(5));
  CHECK(log.last_term() == Term(3));
  CHECK(log.last_id() == EntryId{Term(3), LogIndex(5)});

  CHECK(TermOf(log, 0) == Some(0));
  CHECK(TermOf(log, 1) == Some(1));
  CHECK(TermOf(log, 3) == Some(2));
  CHECK(TermOf(log, 4) == Some(3));
  CHECK(TermOf(log, 5) == Some(3));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(6)).status()));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(100)).status()));
  CHECK(log.MaybeTermAt(LogIndex(4)) == std::optional<Term>(Term(3)));
  CHECK_FALSE(log.MaybeTermAt(LogIndex(6)).has_value());

  CHECK(log.Matches(LogIndex(0), Term(0)));
  CHECK(log.Matches(LogIndex(3), Term(2)));
  CHECK_FALSE(log.Matches(LogIndex(3), Term(1)));
  CHECK(log.Matches(LogIndex(5), Term(3)));
  CHECK_FALSE(log.Matches(LogIndex(6), Term(3)));
}

TEST_CASE("TermAt past the end of a durable-only log is NotFound", "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 2}));
  RaftLog log(store, LogIndex(0), LogIndex(0));
  CHECK(TermOf(log, 2) == Some(2));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(3)).status()));
}

TEST_CASE("RaftLog::Append extends the unstable tail contiguously", "[unit]") {
  MemoryLogStore store(OneVoter());
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append({});
  CHECK(log.last_index() == LogIndex(0));
  CHECK_FALSE(log.HasEntriesToPersist());

  log.Append(Entries(1, {1}));
  log.Append(Entries(2, {1, 2}));
  CHECK(log.last_index() == LogIndex(3));
  CHECK(log.last_term() == Term(2));
  CHECK(log.durable_last() == LogIndex(0));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{1, 2, 3});
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{1, 1, 2});
  CHECK(log.HasEntriesToPersist());
}

// Durable 1..3 (terms 1,1,2), unstable 4..6 (terms 3,3,3).
struct SplitLog {
  SplitLog() : store(OneVoter()) {
    PersistEntries(store, Entries(1, {1, 1, 2}));
    log.emplace(store, LogIndex(0), LogIndex(0));
    log->Append(Entries(4, {3, 3, 3}));
  }
  MemoryLogStore store;
  std::optional<RaftLog> log;
};

TEST_CASE("AppendAfterMatch of a duplicate batch truncates nothing", "[unit]") {
  SplitLog split;
  RaftLog& log = *split.log;
  const std::vector<Entry> before = log.EntriesToPersist();
  REQUIRE(Indexes(before) == std::vector<uint64_t>{4, 5, 6});

  SECTION("a prefix of the unstable tail") {
    log.AppendAfterMatch(Entries(4, {3, 3}));
  }
  SECTION("entries spanning durable and unstable") {
    log.AppendAfterMatch(Entries(2, {1, 2, 3}));
  }
  SECTION("entries entirely in the durable part") {
    log.AppendAfterMatch(Entries(1, {1, 1}));
  }
  SECTION("the whole log") {
    log.AppendAfterMatch(Entries(1, {1, 1, 2, 3, 3, 3}));
  }
  SECTION("an empty batch") { log.AppendAfterMatch({}); }

  CHECK(log.last_index() == LogIndex(6));
  CHECK(log.last_term() == Term(3));
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.EntriesToPersist() == before);
}

TEST_CASE("AppendAfterMatch of a duplicate batch keeps the persisting mark",
          "[unit]") {
  SplitLog split;
  RaftLog& log = *split.log;
  log.MarkPersisting(LogIndex(6));
  REQUIRE_FALSE(log.HasEntriesToPersist());
  log.AppendAfterMatch(Entries(5, {3, 3}));
  // Nothing to write again: the stale message did not re-queue entries.
  CHECK_FALSE(log.HasEntriesToPersist());
  CHECK(log.EntriesToPersist().empty());
  CHECK(log.last_index() == LogIndex(6));
}

TEST_CASE("AppendAfterMatch of matching entries below commit does not truncate",
          "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 2, 2}));
  RaftLog log(store, LogIndex(4), LogIndex(0));
  // A stale AppendEntries re-sending committed entries must not abort.
  log.AppendAfterMatch(Entries(2, {1, 2, 2}));
  CHECK(log.last_index() == LogIndex(4));
  CHECK(log.durable_last() == LogIndex(4));
  CHECK(log.commit_index() == LogIndex(4));
  CHECK_FALSE(log.HasEntriesToPersist());
  // Matching committed entries followed by new ones append after the end.
  log.AppendAfterMatch(Entries(3, {2, 2, 3}));
  CHECK(log.last_index() == LogIndex(5));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{5});
}

TEST_CASE("AppendAfterMatch appends entries past the end", "[unit]") {
  SplitLog split;
  RaftLog& log = *split.log;
  log.AppendAfterMatch(Entries(5, {3, 3, 4, 4}));
  CHECK(log.last_index() == LogIndex(8));
  CHECK(log.last_term() == Term(4));
  CHECK(Indexes(log.EntriesToPersist()) ==
        std::vector<uint64_t>{4, 5, 6, 7, 8});
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{3, 3, 3, 4, 4});
  CHECK(log.durable_last() == LogIndex(3));
}

TEST_CASE(
    "AppendAfterMatch truncates at the first conflict in the unstable tail",
    "[unit]") {
  SplitLog split;
  RaftLog& log = *split.log;
  log.MarkPersisting(LogIndex(6));
  REQUIRE_FALSE(log.HasEntriesToPersist());

  // 4 matches, 5 conflicts.
  log.AppendAfterMatch(Entries(4, {3, 4, 4, 4}));
  CHECK(log.last_index() == LogIndex(7));
  CHECK(log.last_term() == Term(4));
  CHECK(TermOf(log, 4) == Some(3));
  CHECK(TermOf(log, 5) == Some(4));
  CHECK(TermOf(log, 6) == Some(4));
  CHECK(log.durable_last() == LogIndex(3));
  // The replaced entries must be written again; entry 4 was already handed out.
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{5, 6, 7});
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{4, 4, 4});
}

TEST_CASE("AppendAfterMatch can shorten the log", "[unit]") {
  SplitLog split;
  RaftLog& log = *split.log;
  log.AppendAfterMatch(Entries(5, {5}));
  CHECK(log.last_index() == LogIndex(5));
  CHECK(log.last_term() == Term(5));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(6)).status()));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{4, 5});
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{3, 5});
}

TEST_CASE("AppendAfterMatch truncates a conflict inside the durable part",
          "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 1, 1, 1}));
  RaftLog log(store, LogIndex(2), LogIndex(0));
  REQUIRE(log.durable_last() == LogIndex(5));

  // 3 matches, 4 conflicts: the durable entries 4 and 5 are no longer ours.
  log.AppendAfterMatch(Entries(3, {1, 2}));
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.last_index() == LogIndex(4));
  CHECK(log.last_term() == Term(2));
  CHECK(TermOf(log, 3) == Some(1));
  CHECK(TermOf(log, 4) == Some(2));
  // The store still holds the stale entry 5, but the log does not.
  CHECK(store.LastIndex() == LogIndex(5));
  CHECK(absl::IsNotFound(log.TermAt(LogIndex(5)).status()));
  CHECK_FALSE(log.Matches(LogIndex(5), Term(1)));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{4});
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{2});
  // Reads never return the stale durable entries.
  absl::StatusOr<std::vector<Entry>> entries =
      log.EntriesFrom(LogIndex(1), 1000);
  REQUIRE(entries.ok());
  CHECK(Indexes(*entries) == std::vector<uint64_t>{1, 2, 3, 4});
  CHECK(Terms(*entries) == std::vector<uint64_t>{1, 1, 1, 2});

  // The driver writes the replacement and reports it.
  PersistAndStabilize(store, log);
  CHECK(store.LastIndex() == LogIndex(4));
  CHECK(log.durable_last() == LogIndex(4));
  CHECK(log.last_index() == LogIndex(4));
  CHECK_FALSE(log.HasEntriesToPersist());
}

TEST_CASE("AppendAfterMatch may truncate just above commit", "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 1, 1}));
  RaftLog log(store, LogIndex(3), LogIndex(0));
  log.AppendAfterMatch(Entries(4, {2}));
  CHECK(log.commit_index() == LogIndex(3));
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.last_index() == LogIndex(4));
  CHECK(log.last_term() == Term(2));
}

TEST_CASE("AppendAfterMatch replaces the whole unstable tail from its start",
          "[unit]") {
  SplitLog split;
  RaftLog& log = *split.log;
  log.AppendAfterMatch(Entries(4, {4, 4}));
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.last_index() == LogIndex(5));
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{4, 4});
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{4, 5});
}

TEST_CASE("FindConflictByTerm", "[unit]") {
  // Terms by index 1..10: 1 1 1 4 4 5 5 6 6 6, split between durable (1..5)
  // and unstable (6..10).
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 1, 4, 4}));
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append(Entries(6, {5, 5, 6, 6, 6}));

  struct Case {
    uint64_t index;
    uint64_t term;
    uint64_t want;
  };
  const Case cases[] = {
      {10, 6, 10}, {10, 7, 10}, {10, 5, 7}, {10, 4, 5},  {10, 3, 3},
      {10, 2, 3},  {10, 1, 3},  {10, 0, 0}, {100, 5, 7}, {100, 6, 10},
      {7, 5, 7},   {7, 4, 5},   {6, 4, 5},  {5, 4, 5},   {5, 1, 3},
      {3, 0, 0},   {0, 0, 0},   {0, 9, 0},  {8, 6, 8},
  };
  for (const Case& c : cases) {
    CAPTURE(c.index, c.term);
    CHECK(log.FindConflictByTerm(LogIndex(c.index), Term(c.term)) ==
          LogIndex(c.want));
  }
}

TEST_CASE("IsUpToDate compares last terms, then lengths (§5.4.1)", "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 2, 3}));
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append(Entries(4, {3, 3}));
  // Our log ends at (term 3, index 5).
  CHECK(log.IsUpToDate(LogIndex(5), Term(4)));  // higher term, same length
  CHECK(log.IsUpToDate(LogIndex(1), Term(4)));  // higher term, shorter
  CHECK(log.IsUpToDate(LogIndex(9), Term(4)));  // higher term, longer
  CHECK(log.IsUpToDate(LogIndex(6), Term(3)));  // same term, longer
  CHECK(log.IsUpToDate(LogIndex(5), Term(3)));  // identical
  CHECK_FALSE(log.IsUpToDate(LogIndex(4), Term(3)));    // same term, shorter
  CHECK_FALSE(log.IsUpToDate(LogIndex(100), Term(2)));  // lower term, longer
  CHECK_FALSE(log.IsUpToDate(LogIndex(0), Term(0)));

  MemoryLogStore empty_store(OneVoter());
  RaftLog empty(empty_store, LogIndex(0), LogIndex(0));
  CHECK(empty.IsUpToDate(LogIndex(0), Term(0)));
  CHECK(empty.IsUpToDate(LogIndex(3), Term(1)));
}

TEST_CASE("EntriesToPersist, MarkPersisting and StableTo", "[unit]") {
  MemoryLogStore store(OneVoter());
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append(Entries(1, {1, 1, 1}));
  CHECK(log.HasEntriesToPersist());
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{1, 2, 3});

  log.MarkPersisting(LogIndex(3));
  CHECK_FALSE(log.HasEntriesToPersist());
  CHECK(log.EntriesToPersist().empty());
  CHECK(log.durable_last() == LogIndex(0));

  // Appended while the write is in flight: only the new entries are handed out.
  log.Append(Entries(4, {1, 1}));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{4, 5});
  // MarkPersisting never moves backwards.
  log.MarkPersisting(LogIndex(2));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{4, 5});

  PersistEntries(store, Entries(1, {1, 1, 1}));
  log.StableTo(EntryId{Term(1), LogIndex(3)});
  CHECK(log.durable_last() == LogIndex(3));
  CHECK(log.last_index() == LogIndex(5));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{4, 5});
  CHECK(TermOf(log, 3) == Some(1));
  CHECK(TermOf(log, 5) == Some(1));

  // A repeated or older acknowledgement changes nothing.
  log.StableTo(EntryId{Term(1), LogIndex(3)});
  log.StableTo(EntryId{Term(1), LogIndex(2)});
  CHECK(log.durable_last() == LogIndex(3));
  // An id past the end is ignored.
  log.StableTo(EntryId{Term(1), LogIndex(9)});
  CHECK(log.durable_last() == LogIndex(3));

  log.MarkPersisting(LogIndex(5));
  PersistEntries(store, Entries(4, {1, 1}));
  log.StableTo(EntryId{Term(1), LogIndex(5)});
  CHECK(log.durable_last() == LogIndex(5));
  CHECK(log.last_index() == LogIndex(5));
  CHECK(log.last_term() == Term(1));
  CHECK_FALSE(log.HasEntriesToPersist());
}

TEST_CASE("StableTo ignores an id whose term no longer matches", "[unit]") {
  MemoryLogStore store(OneVoter());
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.AppendAfterMatch(Entries(1, {1, 1, 1}));
  // The driver starts writing 1..3 (term 1).
  std::vector<Entry> first_write = log.EntriesToPersist();
  REQUIRE(Indexes(first_write) == std::vector<uint64_t>{1, 2, 3});
  log.MarkPersisting(LogIndex(3));

  // Before it completes, a new leader replaces 2.. with term 2.
  log.AppendAfterMatch(Entries(2, {2}));
  REQUIRE(log.last_index() == LogIndex(2));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{2});
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{2});

  // The first write completes.
  PersistEntries(store, first_write);
  log.StableTo(EntryId{Term(1), LogIndex(3)});  // past the end now
  CHECK(log.durable_last() == LogIndex(0));
  log.StableTo(EntryId{Term(1), LogIndex(2)});  // term no longer matches
  CHECK(log.durable_last() == LogIndex(0));
  CHECK(TermOf(log, 2) == Some(2));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{2});
  // Entry 1 was written and is still ours.
  log.StableTo(EntryId{Term(1), LogIndex(1)});
  CHECK(log.durable_last() == LogIndex(1));
  CHECK(log.last_index() == LogIndex(2));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{2});

  // The second write completes.
  PersistAndStabilize(store, log);
  CHECK(log.durable_last() == LogIndex(2));
  CHECK(log.last_id() == EntryId{Term(2), LogIndex(2)});
  CHECK_FALSE(log.HasEntriesToPersist());
}

TEST_CASE("StableTo after a durable truncation ignores the replaced write",
          "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 1}));
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append(Entries(4, {1, 1}));
  std::vector<Entry> first_write = log.EntriesToPersist();
  log.MarkPersisting(LogIndex(5));

  // Conflict at 3 (durable): durable_last drops to 2.
  log.AppendAfterMatch(Entries(3, {2, 2, 2}));
  CHECK(log.durable_last() == LogIndex(2));
  CHECK(Indexes(log.EntriesToPersist()) == std::vector<uint64_t>{3, 4, 5});

  PersistEntries(store, first_write);
  log.StableTo(EntryId{Term(1), LogIndex(5)});
  log.StableTo(EntryId{Term(1), LogIndex(4)});
  CHECK(log.durable_last() == LogIndex(2));
  CHECK(Terms(log.EntriesToPersist()) == std::vector<uint64_t>{2, 2, 2});

  PersistAndStabilize(store, log);
  CHECK(log.durable_last() == LogIndex(5));
  CHECK(log.last_term() == Term(2));
}

TEST_CASE("CommitTo never decreases", "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 1, 1, 1}));
  RaftLog log(store, LogIndex(2), LogIndex(0));
  CHECK(log.commit_index() == LogIndex(2));
  log.CommitTo(LogIndex(4));
  CHECK(log.commit_index() == LogIndex(4));
  log.CommitTo(LogIndex(3));
  CHECK(log.commit_index() == LogIndex(4));
  log.CommitTo(LogIndex(0));
  CHECK(log.commit_index() == LogIndex(4));
  log.CommitTo(LogIndex(4));
  CHECK(log.commit_index() == LogIndex(4));
  log.CommitTo(LogIndex(5));
  CHECK(log.commit_index() == LogIndex(5));
}

TEST_CASE("NextCommittedEntries returns only committed, durable entries",
          "[unit]") {
  SplitLog split;  // durable 1..3, unstable 4..6
  RaftLog& log = *split.log;
  CHECK_FALSE(log.HasNextCommittedEntries());
  CHECK(log.NextCommittedEntries(1000).empty());

  log.CommitTo(LogIndex(2));
  CHECK(log.HasNextCommittedEntries());
  CHECK(Indexes(log.NextCommittedEntries(1000)) == std::vector<uint64_t>{1, 2});

  // Committed beyond what is durable here: stop at durable_last.
  log.CommitTo(LogIndex(5));
  CHECK(Indexes(log.NextCommittedEntries(1000)) ==
        std::vector<uint64_t>{1, 2, 3});
  // Not consumed until MarkApplying.
  CHECK(Indexes(log.NextCommittedEntries(1000)) ==
        std::vector<uint64_t>{1, 2, 3});

  log.MarkApplying(LogIndex(3));
  CHECK_FALSE(log.HasNextCommittedEntries());
  CHECK(log.NextCommittedEntries(1000).empty());
  CHECK(log.applied() == LogIndex(0));

  PersistAndStabilize(split.store, log);
  REQUIRE(log.durable_last() == LogIndex(6));
  CHECK(log.HasNextCommittedEntries());
  CHECK(Indexes(log.NextCommittedEntries(1000)) == std::vector<uint64_t>{4, 5});
  log.MarkApplying(LogIndex(5));
  CHECK_FALSE(log.HasNextCommittedEntries());
  log.CommitTo(LogIndex(6));
  CHECK(Indexes(log.NextCommittedEntries(1000)) == std::vector<uint64_t>{6});
}

TEST_CASE("NextCommittedEntries respects max_bytes but returns at least one",
          "[unit]") {
  MemoryLogStore store(OneVoter());
  // Each entry: 6 bytes of data + 24 overhead = 30 bytes.
  PersistEntries(store, Entries(1, {1, 1, 1, 1, 1}, "abcdef"));
  RaftLog log(store, LogIndex(5), LogIndex(0));
  REQUIRE(E(1, 1, "abcdef").ByteSize() == 30);

  CHECK(Indexes(log.NextCommittedEntries(0)) == std::vector<uint64_t>{1});
  CHECK(Indexes(log.NextCommittedEntries(29)) == std::vector<uint64_t>{1});
  CHECK(Indexes(log.NextCommittedEntries(30)) == std::vector<uint64_t>{1});
  CHECK(Indexes(log.NextCommittedEntries(59)) == std::vector<uint64_t>{1});
  CHECK(Indexes(log.NextCommittedEntries(60)) == std::vector<uint64_t>{1, 2});
  CHECK(Indexes(log.NextCommittedEntries(1000)) ==
        std::vector<uint64_t>{1, 2, 3, 4, 5});

  log.MarkApplying(LogIndex(2));
  CHECK(Indexes(log.NextCommittedEntries(0)) == std::vector<uint64_t>{3});
  CHECK(Indexes(log.NextCommittedEntries(90)) ==
        std::vector<uint64_t>{3, 4, 5});
}

TEST_CASE("NextCommittedEntries with a byte limit across the boundary",
          "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1}, "abcdef"));
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append(Entries(3, {1, 1}, "abcdef"));
  PersistAndStabilize(store, log);
  log.CommitTo(LogIndex(4));
  log.MarkApplying(LogIndex(1));
  CHECK(Indexes(log.NextCommittedEntries(60)) == std::vector<uint64_t>{2, 3});
  CHECK(Indexes(log.NextCommittedEntries(1000)) ==
        std::vector<uint64_t>{2, 3, 4});
}

TEST_CASE("MarkApplying and AppliedTo", "[unit]") {
  MemoryLogStore store(OneVoter());
  PersistEntries(store, Entries(1, {1, 1, 1, 1}));
  RaftLog log(store, LogIndex(4), LogIndex(1));
  CHECK(log.applied() == LogIndex(1));
  CHECK(Indexes(log.NextCommittedEntries(1000)) ==
        std::vector<uint64_t>{2, 3, 4});

  log.MarkApplying(LogIndex(3));
  CHECK(log.applied() == LogIndex(1));
  CHECK(Indexes(log.NextCommittedEntries(1000)) == std::vector<uint64_t>{4});
  // MarkApplying never moves backwards.
  log.MarkApplying(LogIndex(2));
  CHECK(Indexes(log.NextCommittedEntries(1000)) == std::vector<uint64_t>{4});

  log.AppliedTo(LogIndex(3));
  CHECK(log.applied() == LogIndex(3));
  // AppliedTo never moves backwards.
  log.AppliedTo(LogIndex(2));
  CHECK(log.applied() == LogIndex(3));

  log.MarkApplying(LogIndex(4));
  CHECK_FALSE(log.HasNextCommittedEntries());
  log.AppliedTo(LogIndex(4));
  CHECK(log.applied() == LogIndex(4));
}

TEST_CASE("EntriesFrom reads across the durable/unstable boundary", "[unit]") {
  MemoryLogStore store(OneVoter());
  // 30 bytes per entry.
  PersistEntries(store, Entries(1, {1, 1, 2}, "abcdef"));
  RaftLog log(store, LogIndex(0), LogIndex(0));
  log.Append(Entries(4, {3, 3, 3}, "abcdef"));

  auto from = [&log](uint64_t first, uint64_t max_bytes) {
    absl::StatusOr<std::vector<Entry>> entries =
        log.EntriesFrom(LogIndex(first), max_bytes);
    REQUIRE(entries.ok());
    return Indexes(*entries);
  };
  using V = std::vector<uint64_t>;
  CHECK(from(1, 10000) == V{1, 2, 3, 4, 5, 6});
  CHECK(from(2, 90) == V{2, 3, 4});
  CHECK(from(2, 89) == V{2, 3});
  CHECK(from(2, 119) == V{2, 3, 4});
  CHECK(from(3, 60) == V{3, 4});
  CHECK(from(3, 59) == V{3});
  CHECK(from(1, 45) == V{1});
  // At least one entry, whether durable or unstable.
  CHECK(from(1, 0) == V{1});
  CHECK(from(3, 0) == V{3});
  CHECK(from(4, 0) == V{4});
  CHECK(from(5, 10000) == V{5, 6});
  CHECK(from(6, 30) == V{6});
  CHECK(from(7, 10000).empty());
  CHECK(from(100, 10000).empty());

  absl::StatusOr<std::vector<Entry>> all = log.EntriesFrom(LogIndex(1), 10000);
  REQUIRE(all.ok());
  CHECK(Terms(*all) == V{1, 1, 2, 3, 3, 3});
  CHECK((*all)[4] == E(3, 5, "abcdef"));
}

}  // namespace
}  // namespace driftwood::raft::internal
