// WatchHub (statemachine/mvcc/watch_hub.h) over a real MvccStore: commands
// are applied with an AppliedChanges and published as the server's OnApplied
// does (examples/kv/kv_server.cc), and the StoreReader answers an MvccQuery's
// events as the server's ReadEvents does. What watchers read, from the ring or
// from the store, must be what MvccStore::Events reads for the same
// revisions: random writes and watchers, filters, prev_kv, a ring too small
// for the watchers, compaction, Reset, whole revisions, wakes and Revision.
#include "statemachine/mvcc/watch_hub.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/ordered_kv.h"
#include "tests/statemachine/mvcc_events_check.h"

namespace driftwood::mvcc {
namespace {

using mvccpb::Event;

WatchHubOptions RingOf(size_t events) {
  WatchHubOptions options;
  options.ring_events = events;
  return options;
}

class Fixture {
 public:
  // `watched`: a stream is subscribed, as in a server with watchers, so the
  // ring keeps what its options allow (with none, only the newest batch).
  explicit Fixture(WatchHubOptions options = {}, bool watched = true)
      : hub_([this](const EventsQuery& query) { return ReadEvents(query); },
             options) {
    REQUIRE(store_.Load().ok());
    if (watched) hub_.Subscribe([] {});
  }

  MvccStore& store() { return store_; }
  WatchHub& hub() { return hub_; }

  // Applies `commands` as one batch and, when `publish`, publishes what it
  // changed (as OnApplied does).
  std::vector<MvccResult> ApplyBatch(const std::vector<MvccCommand>& commands,
                                     bool publish = true) {
    AppliedChanges changes;
    store_.set_changes(&changes);
    std::vector<MvccResult> results;
    for (const MvccCommand& command : commands) {
      absl::StatusOr<MvccResult> result = store_.Apply(command);
      INFO("Apply: " << result.status().ToString());
      REQUIRE(result.ok());
      results.push_back(*result);
    }
    store_.set_changes(nullptr);
    if (publish) {
      hub_.Publish(std::move(changes.events), changes.revision,
                   changes.compact_revision);
    }
    return results;
  }
  MvccResult Apply(const MvccCommand& command, bool publish = true) {
    return ApplyBatch({command}, publish)[0];
  }

  // What a watcher of `spec` must see of revisions [start, end] (0: the
  // store's revision).
  std::vector<Event> Expected(const WatchSpec& spec, int64_t start,
                              int64_t end = 0) const {
    absl::StatusOr<EventsResult> result =
        store_.Events(EventsRequest{.key = spec.key,
                                    .range_end = spec.range_end,
                                    .start_revision = start,
                                    .end_revision = end,
                                    .prev_kv = spec.prev_kv});
    INFO("Events: " << result.status().ToString());
    REQUIRE(result.ok());
    std::vector<Event> events;
    for (Event& event : result->events) {
      if (event.type() == Event::PUT ? spec.no_put : spec.no_delete) continue;
      events.push_back(std::move(event));
    }
    return events;
  }

  WatchRead Read(const WatchSpec& spec, int64_t next,
                 size_t max_events = 1000) const {
    absl::StatusOr<WatchRead> read = hub_.Read(spec, next, max_events);
    INFO("Read: " << read.status().ToString());
    REQUIRE(read.ok());
    return *read;
  }

  // Reads from `start` until caught up with the store; every read must make
  // progress, hold only revisions it covers, and not be compacted.
  std::vector<Event> ReadAll(const WatchSpec& spec, int64_t start,
                             size_t max_events = 1000) const {
    std::vector<Event> events;
    int64_t next = start;
    for (int reads = 0; next <= store_.revision(); ++reads) {
      REQUIRE(reads < 10'000);
      WatchRead read = Read(spec, next, max_events);
      INFO("read from " << next << " through " << read.through_revision);
      REQUIRE_FALSE(read.compacted);
      REQUIRE(read.through_revision >= next);
      for (Event& event : read.events) {
        CHECK(event.kv().mod_revision() >= next);
        CHECK(event.kv().mod_revision() <= read.through_revision);
        events.push_back(std::move(event));
      }
      next = read.through_revision + 1;
    }
    return events;
  }

 private:
  // As the server's ReadEvents: the store's answer to an events query.
  absl::StatusOr<EventsResponse> ReadEvents(const EventsQuery& query) const {
    MvccQuery request;
    *request.mutable_events() = query;
    absl::StatusOr<MvccResult> result = store_.Query(request);
    if (!result.ok()) return result.status();
    if (result->code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(result->code()),
                          result->message());
    }
    return std::move(*result->mutable_events());
  }

  statemachine::MemoryOrderedKv kv_;
  MvccStore store_{&kv_};
  // Last: destroyed first, while the store it reads still exists.
  WatchHub hub_;
};

MvccCommand DeleteCommand(const std::string& key, const std::string& end = "") {
  MvccCommand command;
  command.mutable_delete_range()->set_key(key);
  command.mutable_delete_range()->set_range_end(end);
  return command;
}

MvccCommand TxnPuts(const std::vector<std::string>& keys,
                    const std::string& value) {
  MvccCommand command;
  for (const std::string& key : keys) {
    auto* put = command.mutable_txn()->add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
  }
  return command;
}

MvccCommand CompactCommand(int64_t revision) {
  MvccCommand command;
  command.mutable_compact()->set_revision(revision);
  return command;
}

// [key, range_end), built in one go (assigning short literals to a default
// WatchSpec's strings trips GCC 12's -Wrestrict false positive at -O3).
WatchSpec Range(std::string key, std::string range_end) {
  return WatchSpec{.key = std::move(key), .range_end = std::move(range_end)};
}

WatchSpec Everything() {
  WatchSpec spec;
  spec.key = std::string(1, '\0');
  spec.range_end = std::string(1, '\0');
  spec.prev_kv = true;
  return spec;
}

// Polls `done` until it holds or the deadline passes; the only sleep.
bool PollUntil(const std::function<bool()>& done,
               std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

std::string RandomKey(std::mt19937_64& random) {
  static const std::vector<std::string> keys = {
      "a", "ab",    "abc",   "b", std::string("b\0x", 3),
      "c", "foo/1", "foo/2", "z"};
  return keys[random() % keys.size()];
}

WatchSpec RandomSpec(std::mt19937_64& random) {
  WatchSpec spec;
  spec.key = RandomKey(random);
  switch (random() % 4) {
    case 0:
      break;  // the key alone
    case 1:
      spec.range_end = std::string(1, '\0');
      break;
    case 2:
      spec.range_end = PrefixEnd(spec.key);
      break;
    default:
      spec.key = std::string(1, '\0');
      spec.range_end = std::string(1, '\0');
      break;
  }
  spec.prev_kv = random() % 2 == 0;
  spec.no_put = random() % 5 == 0;
  spec.no_delete = !spec.no_put && random() % 5 == 0;
  return spec;
}

// One randomly chosen write (or a command that writes nothing).
MvccCommand RandomCommand(std::mt19937_64& random, int step,
                          std::vector<int64_t>* leases, int64_t* next_lease,
                          const MvccStore& store) {
  const auto lease = [&]() -> int64_t {
    if (leases->empty() || random() % 2 == 0) return 0;
    return (*leases)[random() % leases->size()];
  };
  MvccCommand command;
  switch (random() % 12) {
    case 0:
    case 1:
    case 2:
    case 3:
      return PutCommand(RandomKey(random), absl::StrCat("v", step), lease());
    case 4:
    case 5: {
      const std::string key = RandomKey(random);
      return DeleteCommand(key, random() % 2 ? PrefixEnd(key) : "");
    }
    case 6:
    case 7: {
      std::set<std::string> keys;
      for (int i = 0; i < 4; ++i) keys.insert(RandomKey(random));
      command = TxnPuts({keys.begin(), keys.end()}, absl::StrCat("t", step));
      for (auto& op : *command.mutable_txn()->mutable_success()) {
        op.mutable_request_put()->set_lease(lease());
      }
      return command;
    }
    case 8:
      command.mutable_lease_grant()->set_id(*next_lease);
      command.mutable_lease_grant()->set_ttl(10);
      leases->push_back((*next_lease)++);
      return command;
    case 9:
    case 10:
      if (!leases->empty()) {
        const size_t index = random() % leases->size();
        command.mutable_lease_revoke()->set_id((*leases)[index]);
        leases->erase(leases->begin() + static_cast<std::ptrdiff_t>(index));
        return command;
      }
      return PutCommand(RandomKey(random), "no lease");
    default: {
      const int64_t compacted = store.compact_revision();
      // Compact rarely and not all the way, so that watchers have history.
      if (random() % 3 != 0 || store.revision() - 5 <= compacted) {
        return PutCommand(RandomKey(random), absl::StrCat("v", step));
      }
      return CompactCommand(
          compacted + 1 +
          static_cast<int64_t>(
              random() %
              static_cast<uint64_t>(store.revision() - 5 - compacted)));
    }
  }
}

TEST_CASE(
    "watch hub: random watchers read what MvccStore::Events reads, from the "
    "ring or the store, without gap or duplicate",
    "[statemachine][mvcc][watch]") {
  const uint64_t seed = GENERATE(as<uint64_t>(), 1, 2, 3, 4);
  // Small rings make watchers fall behind and catch up from the store.
  const size_t ring = GENERATE(as<size_t>(), 5, 40, 100'000);
  INFO("seed " << seed << " ring " << ring);
  std::mt19937_64 random(seed);
  Fixture fixture(RingOf(ring));

  struct Watcher {
    WatchSpec spec;
    int64_t next = 0;
    size_t max_events = 0;
    size_t events = 0;
  };
  std::vector<Watcher> watchers;
  int compacted_reads = 0;
  const auto spawn = [&] {
    Watcher watcher;
    watcher.spec = RandomSpec(random);
    const int64_t from = fixture.store().compact_revision() + 1;
    watcher.next =
        from + static_cast<int64_t>(
                   random() % static_cast<uint64_t>(fixture.store().revision() -
                                                    from + 2));
    const size_t sizes[] = {1, 2, 3, 1000};
    watcher.max_events = sizes[random() % 4];
    watchers.push_back(watcher);
  };
  // One read of `watcher`, checked against the store's events for exactly
  // the revisions it covers. false: compacted (the watcher is done).
  const auto step_watcher = [&](Watcher& watcher) {
    WatchRead read =
        fixture.Read(watcher.spec, watcher.next, watcher.max_events);
    INFO("watcher at " << watcher.next << " of [" << watcher.spec.key << ", "
                       << watcher.spec.range_end << ") max "
                       << watcher.max_events);
    if (read.compacted) {
      CHECK(watcher.next <= fixture.store().compact_revision());
      CHECK(read.compact_revision == fixture.store().compact_revision());
      CHECK(read.events.empty());
      ++compacted_reads;
      return false;
    }
    CHECK(read.through_revision >= watcher.next - 1);
    CHECK(read.through_revision <= fixture.store().revision());
    if (read.through_revision >= watcher.next) {
      CheckSameEvents(read.events, fixture.Expected(watcher.spec, watcher.next,
                                                    read.through_revision));
    } else {
      CHECK(read.events.empty());
    }
    watcher.events += read.events.size();
    watcher.next = read.through_revision + 1;
    return true;
  };

  std::vector<int64_t> leases;
  int64_t next_lease = 1;
  size_t events_seen = 0;
  for (int step = 0; step < 150; ++step) {
    INFO("step " << step);
    std::vector<MvccCommand> batch;
    const int size = 1 + static_cast<int>(random() % 3);
    for (int i = 0; i < size; ++i) {
      batch.push_back(
          RandomCommand(random, step, &leases, &next_lease, fixture.store()));
    }
    // Commands of a batch may fail (a revoked lease, a second compaction):
    // they publish nothing.
    fixture.ApplyBatch(batch);
    absl::StatusOr<int64_t> revision = fixture.hub().Revision();
    REQUIRE(revision.ok());
    CHECK(*revision == fixture.store().revision());

    if (watchers.size() < 4 && random() % 3 == 0) spawn();
    for (auto it = watchers.begin(); it != watchers.end();) {
      // Some watchers skip turns, so that the ring can move past them.
      if (random() % 3 == 0) {
        ++it;
        continue;
      }
      const bool alive = step_watcher(*it);
      const bool caught_up = it->next > fixture.store().revision();
      if (!alive || (caught_up && random() % 4 == 0)) {
        events_seen += it->events;
        it = watchers.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Whoever is left catches up.
  for (Watcher& watcher : watchers) {
    for (int reads = 0; watcher.next <= fixture.store().revision(); ++reads) {
      REQUIRE(reads < 10'000);
      if (!step_watcher(watcher)) break;
    }
    events_seen += watcher.events;
  }
  CHECK(events_seen > 0);
  // The walk reaches compaction and watchers it overtakes.
  CHECK(fixture.store().compact_revision() > 0);
  CHECK(compacted_reads > 0);
  if (ring == 5) CHECK(fixture.hub().store_reads() > 0);
}

TEST_CASE(
    "watch hub: NOPUT and NODELETE filter, and prev_kv is only there when "
    "asked, from the ring and from the store",
    "[statemachine][mvcc][watch]") {
  Fixture fixture;
  fixture.Apply(PutCommand("a", "1"));  // 2
  fixture.Apply(PutCommand("a", "2"));  // 3
  fixture.Apply(DeleteCommand("a"));    // 4
  fixture.Apply(PutCommand("b", "1"));  // 5
  const bool from_store = GENERATE(false, true);
  INFO((from_store ? "from the store" : "from the ring"));
  if (from_store) fixture.hub().Reset();
  const uint64_t store_reads = fixture.hub().store_reads();

  WatchSpec spec = Range("a", "b");  // [a, b): not b

  std::vector<Event> all = fixture.ReadAll(spec, 2);
  REQUIRE(all.size() == 3);
  for (const Event& event : all) CHECK_FALSE(event.has_prev_kv());
  CHECK(all[0].type() == Event::PUT);
  CHECK(all[1].type() == Event::PUT);
  CHECK(all[2].type() == Event::DELETE);
  CheckSameEvents(all, fixture.Expected(spec, 2));

  spec.prev_kv = true;
  all = fixture.ReadAll(spec, 2);
  REQUIRE(all.size() == 3);
  CHECK_FALSE(all[0].has_prev_kv());
  REQUIRE(all[1].has_prev_kv());
  CHECK(all[1].prev_kv().value() == "1");
  REQUIRE(all[2].has_prev_kv());
  CHECK(all[2].prev_kv().value() == "2");
  CHECK(all[2].prev_kv().mod_revision() == 3);
  CheckSameEvents(all, fixture.Expected(spec, 2));

  spec.no_put = true;
  std::vector<Event> deletes = fixture.ReadAll(spec, 2);
  REQUIRE(deletes.size() == 1);
  CHECK(deletes[0].type() == Event::DELETE);
  CHECK(deletes[0].kv().mod_revision() == 4);
  CHECK(deletes[0].prev_kv().value() == "2");

  spec.no_put = false;
  spec.no_delete = true;
  spec.prev_kv = false;
  std::vector<Event> puts = fixture.ReadAll(spec, 2);
  REQUIRE(puts.size() == 2);
  CHECK(puts[0].type() == Event::PUT);
  CHECK(puts[1].type() == Event::PUT);
  CHECK(puts[1].kv().value() == "2");
  CHECK_FALSE(puts[1].has_prev_kv());

  if (from_store) {
    CHECK(fixture.hub().store_reads() > store_reads);
  } else {
    CHECK(fixture.hub().store_reads() == store_reads);
  }
}

TEST_CASE(
    "watch hub: watchers behind a tiny ring catch up from the store with no "
    "gap and no duplicate",
    "[statemachine][mvcc][watch]") {
  Fixture fixture(RingOf(5));
  for (int i = 0; i < 40; ++i) {
    if (i % 7 == 3) {
      fixture.Apply(TxnPuts({"t1", "t2", "t3"}, absl::StrCat(i)));
    } else if (i % 11 == 5) {
      fixture.Apply(DeleteCommand("k", "l"));
    } else {
      fixture.Apply(PutCommand(absl::StrCat("k", i % 10), absl::StrCat(i)));
    }
  }
  // The ring holds at most 5 events, or the newest batch alone.
  CHECK(fixture.hub().ring_events() <= 5);
  CHECK(fixture.hub().ring_events() > 0);

  const WatchSpec spec = Everything();
  const uint64_t before = fixture.hub().store_reads();
  std::vector<Event> events = fixture.ReadAll(spec, 2, /*max_events=*/3);
  CHECK(fixture.hub().store_reads() > before);
  CheckSameEvents(events, fixture.Expected(spec, 2));
  std::set<std::pair<int64_t, std::string>> seen;
  for (const Event& event : events) {
    CHECK(seen.emplace(event.kv().mod_revision(), event.kv().key()).second);
  }

  // A slow watcher: the ring moves past it between its reads (three batches
  // of four events per read of about one).
  int64_t next = fixture.store().revision() + 1;
  const int64_t start = next;
  std::vector<Event> slow;
  const uint64_t reads_before = fixture.hub().store_reads();
  for (int i = 0; i < 20; ++i) {
    fixture.Apply(PutCommand(absl::StrCat("s", i % 4), absl::StrCat(i)));
    fixture.Apply(TxnPuts({"u1", "u2"}, absl::StrCat(i)));
    fixture.Apply(DeleteCommand("u1"));
    WatchRead read = fixture.Read(spec, next, 1);
    REQUIRE_FALSE(read.compacted);
    for (Event& event : read.events) slow.push_back(std::move(event));
    next = read.through_revision + 1;
  }
  for (int reads = 0; next <= fixture.store().revision(); ++reads) {
    REQUIRE(reads < 1000);
    WatchRead read = fixture.Read(spec, next, 2);
    for (Event& event : read.events) slow.push_back(std::move(event));
    next = read.through_revision + 1;
  }
  CHECK(fixture.hub().store_reads() > reads_before);
  CheckSameEvents(slow, fixture.Expected(spec, start));
}

TEST_CASE(
    "watch hub: a compacted start is answered compacted with the compact "
    "revision",
    "[statemachine][mvcc][watch]") {
  const size_t ring = GENERATE(as<size_t>(), 3, 100'000);
  INFO("ring " << ring);
  Fixture fixture(RingOf(ring));
  for (int i = 0; i < 10; ++i) {
    fixture.Apply(PutCommand(absl::StrCat("k", i % 3), absl::StrCat(i)));
  }  // revisions 2..11
  REQUIRE(fixture.Apply(CompactCommand(6)).code() == 0);
  const WatchSpec spec = Everything();

  for (int64_t next : {1, 2, 5, 6}) {
    INFO("next " << next);
    WatchRead read = fixture.Read(spec, next);
    CHECK(read.compacted);
    CHECK(read.compact_revision == 6);
    CHECK(read.events.empty());
  }
  // Just after the compaction point: the rest, as the store has it.
  std::vector<Event> events = fixture.ReadAll(spec, 7);
  CHECK(events.size() == 5);
  CheckSameEvents(events, fixture.Expected(spec, 7));

  // After a Reset the store itself answers.
  fixture.hub().Reset();
  WatchRead read = fixture.Read(spec, 4);
  CHECK(read.compacted);
  CHECK(read.compact_revision == 6);
  CheckSameEvents(fixture.ReadAll(spec, 7), fixture.Expected(spec, 7));
}

TEST_CASE(
    "watch hub: with nothing subscribed the ring keeps only the newest batch, "
    "and watchers read the rest from the store",
    "[statemachine][mvcc][watch]") {
  Fixture fixture(WatchHubOptions{}, /*watched=*/false);
  for (int i = 0; i < 5; ++i) {
    fixture.Apply(PutCommand(absl::StrCat("k", i), absl::StrCat(i)));
  }
  fixture.Apply(TxnPuts({"t1", "t2"}, "x"));
  // The newest batch (one transaction, two events), none of the five before.
  CHECK(fixture.hub().ring_events() == 2);
  const WatchSpec spec = Everything();
  uint64_t before = fixture.hub().store_reads();
  CheckSameEvents(fixture.ReadAll(spec, 2), fixture.Expected(spec, 2));
  CHECK(fixture.hub().store_reads() > before);

  // A subscriber: the ring keeps every batch published from then on.
  const uint64_t handle = fixture.hub().Subscribe([] {});
  const int64_t subscribed_at = fixture.store().revision() + 1;
  for (int i = 0; i < 3; ++i) {
    fixture.Apply(PutCommand(absl::StrCat("w", i), absl::StrCat(i)));
  }
  CHECK(fixture.hub().ring_events() == 2 + 3);
  before = fixture.hub().store_reads();
  CheckSameEvents(fixture.ReadAll(spec, subscribed_at),
                  fixture.Expected(spec, subscribed_at));
  CHECK(fixture.hub().store_reads() == before);

  // The last subscriber gone: the next batch is all the ring keeps.
  fixture.hub().Unsubscribe(handle);
  fixture.Apply(PutCommand("after", "1"));
  CHECK(fixture.hub().ring_events() == 1);
  CheckSameEvents(fixture.ReadAll(spec, 2), fixture.Expected(spec, 2));
}

TEST_CASE("watch hub: after Reset watchers read the store, then the ring",
          "[statemachine][mvcc][watch]") {
  Fixture fixture;
  for (int i = 0; i < 6; ++i) {
    fixture.Apply(PutCommand(absl::StrCat("k", i), absl::StrCat(i)));
  }
  const WatchSpec spec = Everything();
  const uint64_t from_ring = fixture.hub().store_reads();
  CheckSameEvents(fixture.ReadAll(spec, 2), fixture.Expected(spec, 2));
  CHECK(fixture.hub().store_reads() == from_ring);

  fixture.hub().Reset();
  CHECK(fixture.hub().ring_events() == 0);
  // Nothing published since: the store's revision and history.
  absl::StatusOr<int64_t> revision = fixture.hub().Revision();
  REQUIRE(revision.ok());
  CHECK(*revision == fixture.store().revision());
  CheckSameEvents(fixture.ReadAll(spec, 2), fixture.Expected(spec, 2));
  const uint64_t after_reset = fixture.hub().store_reads();
  CHECK(after_reset > from_ring);

  // Writes applied while the hub was reset are in the store only; then a
  // new batch is published and the ring takes over from it.
  fixture.Apply(PutCommand("hidden", "x"), /*publish=*/false);
  const int64_t published_from = fixture.store().revision() + 1;
  fixture.Apply(PutCommand("after", "1"));
  fixture.Apply(PutCommand("after", "2"));
  const uint64_t before = fixture.hub().store_reads();
  CheckSameEvents(fixture.ReadAll(spec, published_from),
                  fixture.Expected(spec, published_from));
  CHECK(fixture.hub().store_reads() == before);
  // From before the ring: the store up to it, then the ring.
  CheckSameEvents(fixture.ReadAll(spec, 2), fixture.Expected(spec, 2));
  CHECK(fixture.hub().store_reads() > before);
}

TEST_CASE(
    "watch hub: a Txn's events are never split across reads, even with "
    "max_events 1",
    "[statemachine][mvcc][watch]") {
  const bool from_store = GENERATE(false, true);
  INFO((from_store ? "from the store" : "from the ring"));
  Fixture fixture;
  fixture.Apply(PutCommand("before", "1"));               // 2
  fixture.Apply(TxnPuts({"t1", "t2", "t3", "t4"}, "x"));  // 3
  fixture.Apply(PutCommand("after", "1"));                // 4
  if (from_store) fixture.hub().Reset();
  const WatchSpec spec = Everything();

  WatchRead read = fixture.Read(spec, 3, 1);
  CHECK(read.through_revision == 3);
  REQUIRE(read.events.size() == 4);
  for (size_t i = 0; i < read.events.size(); ++i) {
    CHECK(read.events[i].kv().mod_revision() == 3);
    CHECK(read.events[i].kv().key() == absl::StrCat("t", i + 1));
  }
  read = fixture.Read(spec, 4, 1);
  CHECK(read.through_revision == 4);
  REQUIRE(read.events.size() == 1);
  CHECK(read.events[0].kv().key() == "after");

  // From revision 2 with max_events 1 the first read stops after revision
  // 2 or takes all of 3, never part of it.
  read = fixture.Read(spec, 2, 1);
  size_t at_three = 0;
  for (const Event& event : read.events) {
    if (event.kv().mod_revision() == 3) ++at_three;
  }
  CHECK((at_three == 0 || at_three == 4));
  CHECK((read.through_revision == 2) == (at_three == 0));

  // A filter that matches part of the Txn still returns its matching part
  // whole.
  const WatchSpec some = Range("t2", "t4");
  read = fixture.Read(some, 3, 1);
  REQUIRE(read.events.size() == 2);
  CHECK(read.events[0].kv().key() == "t2");
  CHECK(read.events[1].kv().key() == "t3");
}

TEST_CASE("watch hub: subscribers are woken after Publish and on ticks",
          "[statemachine][mvcc][watch]") {
  // Declared before the hub: they outlive its waking thread.
  std::atomic<int> first{0}, second{0}, ticked{0};
  SECTION("after Publish") {
    WatchHubOptions options;
    options.tick = absl::Hours(1);  // no tick during the test
    Fixture fixture(options);
    const uint64_t handle = fixture.hub().Subscribe([&] { ++first; });
    fixture.Apply(PutCommand("k", "1"));
    CHECK(PollUntil([&] { return first.load() >= 1; }));

    // Unsubscribed: not called again. Subscribers are called in handle
    // order in one pass, so once the second is called after the next
    // publish, the first would have been too.
    fixture.hub().Unsubscribe(handle);
    const int calls = first.load();
    const uint64_t other = fixture.hub().Subscribe([&] { ++second; });
    fixture.Apply(PutCommand("k", "2"));
    CHECK(PollUntil([&] { return second.load() >= 1; }));
    CHECK(first.load() == calls);
    fixture.hub().Unsubscribe(other);
  }
  SECTION("on ticks, with nothing published") {
    WatchHubOptions options;
    options.tick = absl::Milliseconds(5);
    Fixture fixture(options);
    const uint64_t handle = fixture.hub().Subscribe([&] { ++ticked; });
    CHECK(PollUntil([&] { return ticked.load() >= 3; }));
    fixture.hub().Unsubscribe(handle);
  }
}

TEST_CASE(
    "watch hub: Revision before any publish is the store's, then the "
    "published one",
    "[statemachine][mvcc][watch]") {
  Fixture fixture;
  fixture.Apply(PutCommand("a", "1"), /*publish=*/false);
  fixture.Apply(PutCommand("b", "1"), /*publish=*/false);
  absl::StatusOr<int64_t> revision = fixture.hub().Revision();
  REQUIRE(revision.ok());
  CHECK(*revision == 3);
  CHECK(fixture.store().revision() == 3);
  // Reads before any publish come from the store.
  const WatchSpec spec = Everything();
  CheckSameEvents(fixture.ReadAll(spec, 1), fixture.Expected(spec, 1));
  CHECK(fixture.hub().store_reads() > 0);

  fixture.Apply(PutCommand("c", "1"));
  revision = fixture.hub().Revision();
  REQUIRE(revision.ok());
  CHECK(*revision == 4);
  // A batch that writes nothing (a grant) moves nothing.
  MvccCommand grant;
  grant.mutable_lease_grant()->set_id(1);
  grant.mutable_lease_grant()->set_ttl(10);
  fixture.Apply(grant);
  revision = fixture.hub().Revision();
  REQUIRE(revision.ok());
  CHECK(*revision == 4);
  // Nothing new yet: through_revision < next.
  WatchRead read = fixture.Read(spec, 5);
  CHECK(read.events.empty());
  CHECK(read.through_revision == 4);
  CHECK_FALSE(read.compacted);
}

}  // namespace
}  // namespace driftwood::mvcc
