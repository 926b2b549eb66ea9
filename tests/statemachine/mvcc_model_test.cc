// MvccStore (statemachine/mvcc/mvcc_store.h) against a reference model that
// keeps the whole key space after every revision: random sequences of Put,
// DeleteRange, Txn, Range at revisions and Compact must give the same
// revisions, versions, create and mod revisions, results and errors, and the
// same watch events (MvccStore::Events) as the model's differences between
// revisions. Plus one case per rule of etcd's the random walk reaches rarely.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/ordered_kv.h"

namespace driftwood::mvcc {
namespace {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;
using mvccpb::KeyValue;

struct ModelKv {
  int64_t create = 0;
  int64_t mod = 0;
  int64_t version = 0;
  std::string value;
};
using ModelState = std::map<std::string, ModelKv>;

bool InModelRange(const std::string& key, const std::string& start,
                  const std::string& end) {
  if (end.empty()) return key == start;
  if (end == std::string(1, '\0')) return key >= start;
  return key >= start && key < end;
}

// The reference: the state after every revision still readable.
class Model {
 public:
  Model() { states_[1] = {}; }

  int64_t revision() const { return revision_; }
  int64_t compacted() const { return compacted_; }
  const ModelState& current() const { return states_.at(revision_); }

  // Applies a write: `change` edits a copy of the current state and returns
  // whether it changed anything.
  template <typename Change>
  void Write(Change change) {
    ModelState next = current();
    if (change(next, revision_ + 1)) {
      ++revision_;
      states_[revision_] = std::move(next);
    }
  }

  static bool Put(ModelState& state, int64_t revision, const std::string& key,
                  const std::string& value) {
    ModelKv& kv = state[key];
    if (kv.version == 0) kv.create = revision;
    ++kv.version;
    kv.mod = revision;
    kv.value = value;
    return true;
  }
  static int64_t Delete(ModelState& state, const std::string& key,
                        const std::string& end) {
    int64_t deleted = 0;
    for (auto it = state.begin(); it != state.end();) {
      if (InModelRange(it->first, key, end)) {
        it = state.erase(it);
        ++deleted;
      } else {
        ++it;
      }
    }
    return deleted;
  }

  // nullopt: an error, with `*error` etcd's message.
  std::optional<std::vector<std::pair<std::string, ModelKv>>> Range(
      const std::string& key, const std::string& end, int64_t revision,
      std::string* error) const {
    if (revision <= 0) revision = revision_;
    if (revision > revision_) {
      *error = mvcc_errors::kFutureRevision;
      return std::nullopt;
    }
    if (revision < compacted_) {
      *error = mvcc_errors::kCompacted;
      return std::nullopt;
    }
    std::vector<std::pair<std::string, ModelKv>> out;
    for (const auto& [k, kv] : states_.at(revision)) {
      if (InModelRange(k, key, end)) out.emplace_back(k, kv);
    }
    return out;
  }

  // The state after `revision`; REQUIRES: compacted() <= revision <=
  // revision().
  const ModelState& StateAt(int64_t revision) const {
    return states_.at(revision);
  }

  std::string Compact(int64_t revision) {
    if (revision <= compacted_) return mvcc_errors::kCompacted;
    if (revision > revision_) return mvcc_errors::kFutureRevision;
    compacted_ = revision;
    states_.erase(states_.begin(), states_.lower_bound(revision));
    return "";
  }

 private:
  std::map<int64_t, ModelState> states_;
  int64_t revision_ = 1;
  int64_t compacted_ = 0;
};

// A store over a shared KeyIndex with a value cache of `value_cache_bytes`
// (0: every value is read back from its record).
class Harness {
 public:
  explicit Harness(size_t value_cache_bytes = KeyIndex::kDefaultValueCacheBytes)
      : value_cache_bytes_(value_cache_bytes) {
    Reload();
  }

  MvccStore& store() { return *store_; }
  const KeyIndex& index() const { return *index_; }

  // A new store and index over the same data, as after a restart.
  void Reload() {
    store_.reset();
    index_ = std::make_unique<KeyIndex>(value_cache_bytes_);
    store_ = std::make_unique<MvccStore>(&kv_, index_.get());
    REQUIRE(store_->Load().ok());
    REQUIRE(MvccStore::BuildIndex(kv_, index_.get()).ok());
  }

  // Every other command goes through Apply(MvccCommand&&), which may move
  // the command's bytes (as MvccApplication's), the rest through the copy.
  MvccResult Apply(const MvccCommand& command) {
    moved_ = !moved_;
    absl::StatusOr<MvccResult> result =
        moved_ ? store_->Apply(MvccCommand(command)) : store_->Apply(command);
    REQUIRE(result.ok());
    return *result;
  }
  MvccResult Query(const MvccQuery& query) const {
    absl::StatusOr<MvccResult> result = store_->Query(query);
    REQUIRE(result.ok());
    return *result;
  }

  // How many change records ("e" + revision + sub) the store holds.
  size_t ChangeRecords() const {
    size_t count = 0;
    REQUIRE(kv_.Scan("e", "f",
                     [&](std::string_view, std::string_view) {
                       ++count;
                       return true;
                     })
                .ok());
    return count;
  }

 private:
  const size_t value_cache_bytes_;
  bool moved_ = false;
  statemachine::MemoryOrderedKv kv_;
  std::unique_ptr<KeyIndex> index_;
  std::unique_ptr<MvccStore> store_;
};

MvccCommand PutCommand(const std::string& key, const std::string& value,
                       bool prev_kv = false) {
  MvccCommand command;
  command.mutable_put()->set_key(key);
  command.mutable_put()->set_value(value);
  command.mutable_put()->set_prev_kv(prev_kv);
  return command;
}

MvccCommand DeleteCommand(const std::string& key, const std::string& end,
                          bool prev_kv = false) {
  MvccCommand command;
  command.mutable_delete_range()->set_key(key);
  command.mutable_delete_range()->set_range_end(end);
  command.mutable_delete_range()->set_prev_kv(prev_kv);
  return command;
}

MvccQuery RangeQuery(const std::string& key, const std::string& end,
                     int64_t revision = 0) {
  MvccQuery query;
  query.mutable_range()->set_key(key);
  query.mutable_range()->set_range_end(end);
  query.mutable_range()->set_revision(revision);
  return query;
}

void CheckKv(const KeyValue& actual, const std::string& key,
             const ModelKv& expected) {
  INFO("key " << key);
  CHECK(actual.key() == key);
  CHECK(actual.create_revision() == expected.create);
  CHECK(actual.mod_revision() == expected.mod);
  CHECK(actual.version() == expected.version);
  CHECK(actual.value() == expected.value);
}

std::string RandomKey(std::mt19937_64& random) {
  // A small key space with shared prefixes and a zero byte.
  static const std::vector<std::string> keys = {
      "a", "ab",  "abc",   "b",     std::string("b\0x", 3),
      "c", "foo", "foo/1", "foo/2", "z\xff"};
  return keys[random() % keys.size()];
}

std::string RandomEnd(std::mt19937_64& random, const std::string& key) {
  switch (random() % 4) {
    case 0:
      return "";
    case 1:
      return std::string(1, '\0');
    case 2:
      return PrefixEnd(key);
    default:
      return RandomKey(random);
  }
}

// Watch events from a random start over a random range against the model:
// a key whose mod revision is r changed at r (a PUT), one present before r
// and absent after it was deleted at r; prev_kv is the key before r. Within
// a revision the events are compared by key.
void CheckEvents(const Model& model, const MvccStore& store,
                 std::mt19937_64& random) {
  EventsRequest request;
  request.key = RandomKey(random);
  request.range_end = RandomEnd(random, request.key);
  request.prev_kv = random() % 2 == 0;
  request.max_events = random() % 3 == 0 ? 1 + random() % 4 : 0;
  const int64_t span = model.revision() - model.compacted() + 1;
  request.start_revision =
      model.compacted() + 1 +
      static_cast<int64_t>(random() % static_cast<uint64_t>(span));
  if (model.compacted() > 0 && random() % 10 == 0) {
    request.start_revision = model.compacted();
    absl::StatusOr<EventsResult> refused = store.Events(request);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.status().code() == absl::StatusCode::kOutOfRange);
    CHECK(refused.status().message() == mvcc_errors::kCompacted);
    return;
  }
  INFO("events from " << request.start_revision << " of [" << request.key
                      << ", " << request.range_end << ") prev_kv "
                      << request.prev_kv << " max " << request.max_events);
  absl::StatusOr<EventsResult> result = store.Events(request);
  REQUIRE(result.ok());

  struct Expected {
    int64_t revision;
    std::string key;
    bool put;
    std::optional<ModelKv> kv, prev;
  };
  std::vector<Expected> expected;
  int64_t through = model.revision();
  // Revision 1 is the empty store: the first write makes revision 2.
  for (int64_t revision = std::max<int64_t>(request.start_revision, 2);
       revision <= model.revision(); ++revision) {
    const ModelState& before = model.StateAt(revision - 1);
    const ModelState& after = model.StateAt(revision);
    std::set<std::string> keys;
    for (const auto& [key, kv] : before) keys.insert(key);
    for (const auto& [key, kv] : after) keys.insert(key);
    for (const std::string& key : keys) {
      if (!InModelRange(key, request.key, request.range_end)) continue;
      auto was = before.find(key);
      auto now = after.find(key);
      std::optional<ModelKv> prev;
      if (was != before.end()) prev = was->second;
      if (now != after.end() && now->second.mod == revision) {
        expected.push_back({revision, key, true, now->second, prev});
      } else if (now == after.end() && was != before.end()) {
        expected.push_back({revision, key, false, std::nullopt, prev});
      }
    }
    if (request.max_events != 0 && expected.size() >= request.max_events) {
      through = revision;
      break;
    }
  }
  CHECK(result->through_revision == through);
  std::vector<mvccpb::Event> events = result->events;
  std::stable_sort(events.begin(), events.end(),
                   [](const auto& a, const auto& b) {
                     return std::pair(a.kv().mod_revision(), a.kv().key()) <
                            std::pair(b.kv().mod_revision(), b.kv().key());
                   });
  REQUIRE(events.size() == expected.size());
  for (size_t i = 0; i < events.size(); ++i) {
    const mvccpb::Event& event = events[i];
    INFO("event " << i << " at " << expected[i].revision);
    CHECK(event.kv().mod_revision() == expected[i].revision);
    if (expected[i].put) {
      CHECK(event.type() == mvccpb::Event::PUT);
      CheckKv(event.kv(), expected[i].key, *expected[i].kv);
    } else {
      CHECK(event.type() == mvccpb::Event::DELETE);
      CHECK(event.kv().key() == expected[i].key);
      CHECK(event.kv().value().empty());
      CHECK(event.kv().version() == 0);
    }
    if (request.prev_kv && expected[i].prev) {
      REQUIRE(event.has_prev_kv());
      CheckKv(event.prev_kv(), expected[i].key, *expected[i].prev);
    } else {
      CHECK_FALSE(event.has_prev_kv());
    }
  }
}

TEST_CASE(
    "mvcc: random writes, reads at revisions and compactions match "
    "the model",
    "[statemachine][mvcc]") {
  const uint64_t seed = GENERATE(as<uint64_t>(), 1, 2, 3, 4, 5, 6, 7, 8);
  // The value cache holds every value, none, or some (each cached value
  // costs its size plus 96 bytes).
  const size_t value_cache_bytes =
      GENERATE(KeyIndex::kDefaultValueCacheBytes, size_t{0}, size_t{400});
  INFO("seed " << seed << ", value cache " << value_cache_bytes << " bytes");
  std::mt19937_64 random(seed);
  Model model;
  Harness harness(value_cache_bytes);
  for (int step = 0; step < 600; ++step) {
    INFO("step " << step);
    const int kind = static_cast<int>(random() % 10);
    if (random() % 40 == 0) harness.Reload();
    if (kind <= 2) {
      const std::string key = RandomKey(random);
      const std::string value = absl::StrCat("v", step);
      std::optional<ModelKv> previous;
      if (auto it = model.current().find(key); it != model.current().end()) {
        previous = it->second;
      }
      MvccResult result = harness.Apply(PutCommand(key, value, true));
      model.Write([&](ModelState& state, int64_t revision) {
        return Model::Put(state, revision, key, value);
      });
      REQUIRE(result.code() == 0);
      CHECK(result.put().header().revision() == model.revision());
      CHECK(result.put().has_prev_kv() == previous.has_value());
      if (previous) CheckKv(result.put().prev_kv(), key, *previous);
    } else if (kind == 3) {
      const std::string key = RandomKey(random);
      const std::string end = RandomEnd(random, key);
      int64_t deleted = 0;
      model.Write([&](ModelState& state, int64_t) {
        deleted = Model::Delete(state, key, end);
        return deleted > 0;
      });
      MvccResult result = harness.Apply(DeleteCommand(key, end));
      REQUIRE(result.code() == 0);
      CHECK(result.delete_range().deleted() == deleted);
      CHECK(result.delete_range().header().revision() == model.revision());
    } else if (kind <= 5) {
      // Txn: if version(key) == v then put other else delete key.
      const std::string key = RandomKey(random);
      const std::string other = RandomKey(random);
      const int64_t version = static_cast<int64_t>(random() % 3);
      MvccCommand command;
      Compare* compare = command.mutable_txn()->add_compare();
      compare->set_key(key);
      compare->set_target(Compare::VERSION);
      compare->set_result(random() % 2 == 0 ? Compare::EQUAL
                                            : Compare::GREATER);
      compare->set_version(version);
      auto* put = command.mutable_txn()->add_success()->mutable_request_put();
      put->set_key(other);
      put->set_value(absl::StrCat("t", step));
      command.mutable_txn()->add_success()->mutable_request_range()->set_key(
          other);
      command.mutable_txn()
          ->add_failure()
          ->mutable_request_delete_range()
          ->set_key(key);
      const auto it = model.current().find(key);
      const int64_t actual_version =
          it == model.current().end() ? 0 : it->second.version;
      const bool holds = compare->result() == Compare::EQUAL
                             ? actual_version == version
                             : actual_version > version;
      model.Write([&](ModelState& state, int64_t revision) {
        if (holds) return Model::Put(state, revision, other, put->value());
        return Model::Delete(state, key, "") > 0;
      });
      MvccResult result = harness.Apply(command);
      REQUIRE(result.code() == 0);
      CHECK(result.txn().succeeded() == holds);
      CHECK(result.txn().header().revision() == model.revision());
      if (holds) {
        REQUIRE(result.txn().responses_size() == 2);
        const auto& range = result.txn().responses(1).response_range();
        REQUIRE(range.kvs_size() == 1);
        CheckKv(range.kvs(0), other, model.current().at(other));
      }
    } else if (kind <= 8) {
      const std::string key = RandomKey(random);
      const std::string end = RandomEnd(random, key);
      const int64_t revision =
          static_cast<int64_t>(random() %
                               static_cast<uint64_t>(model.revision() + 3)) -
          1;
      MvccQuery query = RangeQuery(key, end, revision);
      RangeRequest& request = *query.mutable_range();
      request.set_limit(static_cast<int64_t>(random() % 4));
      request.set_sort_order(
          static_cast<RangeRequest::SortOrder>(random() % 3));
      request.set_sort_target(
          static_cast<RangeRequest::SortTarget>(random() % 5));
      if (random() % 4 == 0) request.set_min_mod_revision(model.revision() / 2);
      std::string error;
      auto expected = model.Range(key, end, revision, &error);
      MvccResult result = harness.Query(query);
      if (!expected) {
        CHECK(result.code() ==
              static_cast<int32_t>(absl::StatusCode::kOutOfRange));
        CHECK(result.message() == error);
        continue;
      }
      REQUIRE(result.code() == 0);
      const auto& range = result.range();
      CHECK(range.header().revision() == model.revision());
      CHECK(range.count() == static_cast<int64_t>(expected->size()));
      std::erase_if(*expected, [&](const auto& entry) {
        return request.min_mod_revision() != 0 &&
               entry.second.mod < request.min_mod_revision();
      });
      // etcd sorts everything only with an order or a filter; otherwise the
      // first limit + 1 keys in key order.
      if (request.sort_order() == RangeRequest::NONE &&
          request.min_mod_revision() == 0 && request.limit() > 0 &&
          static_cast<int64_t>(expected->size()) > request.limit() + 1) {
        expected->resize(static_cast<size_t>(request.limit() + 1));
      }
      RangeRequest::SortOrder order = request.sort_order();
      if (order == RangeRequest::NONE &&
          request.sort_target() != RangeRequest::KEY) {
        order = RangeRequest::ASCEND;
      }
      const auto field = [&](const std::pair<std::string, ModelKv>& e)
          -> std::pair<std::string, int64_t> {
        switch (request.sort_target()) {
          case RangeRequest::VERSION:
            return {"", e.second.version};
          case RangeRequest::CREATE:
            return {"", e.second.create};
          case RangeRequest::MOD:
            return {"", e.second.mod};
          case RangeRequest::VALUE:
            return {e.second.value, 0};
          default:
            return {e.first, 0};
        }
      };
      if (order == RangeRequest::ASCEND) {
        std::stable_sort(
            expected->begin(), expected->end(),
            [&](const auto& a, const auto& b) { return field(a) < field(b); });
      } else if (order == RangeRequest::DESCEND) {
        std::stable_sort(
            expected->begin(), expected->end(),
            [&](const auto& a, const auto& b) { return field(b) < field(a); });
      }
      bool more = false;
      if (request.limit() > 0 &&
          static_cast<int64_t>(expected->size()) > request.limit()) {
        expected->resize(static_cast<size_t>(request.limit()));
        more = true;
      }
      CHECK(range.more() == more);
      REQUIRE(range.kvs_size() == static_cast<int>(expected->size()));
      for (size_t i = 0; i < expected->size(); ++i) {
        CheckKv(range.kvs(static_cast<int>(i)), (*expected)[i].first,
                (*expected)[i].second);
      }
    } else {
      const int64_t revision =
          model.compacted() + static_cast<int64_t>(random() % 4) - 1;
      const std::string error = model.Compact(revision);
      MvccCommand command;
      command.mutable_compact()->set_revision(revision);
      MvccResult result = harness.Apply(command);
      if (error.empty()) {
        CHECK(result.code() == 0);
        CHECK(harness.store().compact_revision() == revision);
        // Compaction keeps the put that holds each key live at `revision`
        // and every change after it, nothing else.
        EventsRequest after;
        after.key = std::string(1, '\0');
        after.range_end = std::string(1, '\0');
        after.start_revision = revision + 1;
        absl::StatusOr<EventsResult> changes = harness.store().Events(after);
        REQUIRE(changes.ok());
        CHECK(harness.ChangeRecords() ==
              model.StateAt(revision).size() + changes->events.size());
        CHECK(harness.index().pruned_through() == revision);
      } else {
        CHECK(result.code() ==
              static_cast<int32_t>(absl::StatusCode::kOutOfRange));
        CHECK(result.message() == error);
      }
    }
    REQUIRE(harness.store().revision() == model.revision());
    CheckEvents(model, harness.store(), random);
  }
}

TEST_CASE(
    "mvcc: watch events come whole revisions at a time, in the order the "
    "request wrote them",
    "[statemachine][mvcc]") {
  Harness harness;
  harness.Apply(PutCommand("a", "1"));  // revision 2
  MvccCommand txn;                      // revision 3: b, then a deleted
  auto* put = txn.mutable_txn()->add_success()->mutable_request_put();
  put->set_key("b");
  put->set_value("2");
  auto* remove =
      txn.mutable_txn()->add_success()->mutable_request_delete_range();
  remove->set_key("a");
  REQUIRE(harness.Apply(txn).code() == 0);
  harness.Apply(PutCommand("c", "3"));  // revision 4

  EventsRequest request;
  request.key = "a";
  request.range_end = std::string(1, '\0');
  request.start_revision = 2;
  request.prev_kv = true;
  request.max_events = 2;
  absl::StatusOr<EventsResult> first = harness.store().Events(request);
  REQUIRE(first.ok());
  // Revision 3 is not split although the limit is reached inside it.
  CHECK(first->through_revision == 3);
  REQUIRE(first->events.size() == 3);
  CHECK(first->events[0].kv().key() == "a");
  CHECK(first->events[1].kv().key() == "b");
  CHECK(first->events[2].type() == mvccpb::Event::DELETE);
  CHECK(first->events[2].kv().key() == "a");
  CHECK(first->events[2].kv().mod_revision() == 3);
  CHECK(first->events[2].prev_kv().value() == "1");

  request.start_revision = first->through_revision + 1;
  absl::StatusOr<EventsResult> rest = harness.store().Events(request);
  REQUIRE(rest.ok());
  CHECK(rest->through_revision == 4);
  REQUIRE(rest->events.size() == 1);
  CHECK(rest->events[0].kv().key() == "c");
  CHECK_FALSE(rest->events[0].has_prev_kv());

  // Past the current revision: nothing yet.
  request.start_revision = 5;
  absl::StatusOr<EventsResult> future = harness.store().Events(request);
  REQUIRE(future.ok());
  CHECK(future->events.empty());
  CHECK(future->through_revision == 4);

  // A byte limit stops between revisions too: the first event alone
  // reaches one byte, revision 3 still comes whole with the next read.
  request.max_events = 0;
  request.max_bytes = 1;
  request.start_revision = 2;
  absl::StatusOr<EventsResult> by_bytes = harness.store().Events(request);
  REQUIRE(by_bytes.ok());
  CHECK(by_bytes->through_revision == 2);
  REQUIRE(by_bytes->events.size() == 1);
  request.start_revision = 3;
  by_bytes = harness.store().Events(request);
  REQUIRE(by_bytes.ok());
  CHECK(by_bytes->through_revision == 3);
  CHECK(by_bytes->events.size() == 2);
  request.max_bytes = 1 << 20;
  request.start_revision = 2;
  by_bytes = harness.store().Events(request);
  REQUIRE(by_bytes.ok());
  CHECK(by_bytes->through_revision == 4);
  CHECK(by_bytes->events.size() == 4);

  request.start_revision = 0;
  CHECK(harness.store().Events(request).status().code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("mvcc: revisions, versions and recreation follow etcd's rules",
          "[statemachine][mvcc]") {
  Harness harness;
  CHECK(harness.store().revision() == 1);
  CHECK(harness.Apply(PutCommand("k", "1")).put().header().revision() == 2);
  CHECK(harness.Apply(PutCommand("k", "1")).put().header().revision() == 3);
  // A delete that matches nothing creates no revision.
  MvccResult none = harness.Apply(DeleteCommand("nothing", ""));
  CHECK(none.delete_range().deleted() == 0);
  CHECK(none.delete_range().header().revision() == 3);
  CHECK(harness.Apply(DeleteCommand("k", "")).delete_range().deleted() == 1);
  CHECK(harness.store().revision() == 4);
  MvccResult put = harness.Apply(PutCommand("k", "2", true));
  CHECK_FALSE(put.put().has_prev_kv());
  MvccResult read = harness.Query(RangeQuery("k", ""));
  REQUIRE(read.range().kvs_size() == 1);
  CHECK(read.range().kvs(0).create_revision() == 5);
  CHECK(read.range().kvs(0).version() == 1);
  // At revision 3 the key had version 2 and was created at 2.
  read = harness.Query(RangeQuery("k", "", 3));
  REQUIRE(read.range().kvs_size() == 1);
  CHECK(read.range().kvs(0).version() == 2);
  CHECK(read.range().kvs(0).create_revision() == 2);
  CHECK(read.range().header().revision() == 5);
  // At revision 4 it was deleted.
  CHECK(harness.Query(RangeQuery("k", "", 4)).range().kvs_size() == 0);
}

TEST_CASE("mvcc: requests etcd refuses get etcd's codes and messages",
          "[statemachine][mvcc]") {
  Harness harness;
  harness.Apply(PutCommand("k", "v"));
  const auto code = [](absl::StatusCode c) { return static_cast<int32_t>(c); };

  MvccResult result = harness.Apply(PutCommand("", "v"));
  CHECK(result.code() == code(absl::StatusCode::kInvalidArgument));
  CHECK(result.message() == "etcdserver: key is not provided");

  MvccCommand ignore_value = PutCommand("missing", "");
  ignore_value.mutable_put()->set_ignore_value(true);
  result = harness.Apply(ignore_value);
  CHECK(result.code() == code(absl::StatusCode::kInvalidArgument));
  CHECK(result.message() == "etcdserver: key not found");

  MvccCommand leased = PutCommand("k", "v");
  leased.mutable_put()->set_lease(42);
  result = harness.Apply(leased);
  CHECK(result.code() == code(absl::StatusCode::kNotFound));
  CHECK(result.message() == "etcdserver: requested lease not found");

  MvccCommand many;
  for (int i = 0; i <= kMaxTxnOps; ++i) {
    auto* put = many.mutable_txn()->add_success()->mutable_request_put();
    put->set_key(absl::StrCat("key", i));
  }
  result = harness.Apply(many);
  CHECK(result.code() == code(absl::StatusCode::kInvalidArgument));
  CHECK(result.message() == "etcdserver: too many operations in txn request");
  many.mutable_txn()->mutable_success()->RemoveLast();
  CHECK(harness.Apply(many).code() == 0);  // 128 operations are fine

  MvccCommand duplicate;
  duplicate.mutable_txn()->add_success()->mutable_request_put()->set_key("d");
  duplicate.mutable_txn()->add_success()->mutable_request_put()->set_key("d");
  result = harness.Apply(duplicate);
  CHECK(result.code() == code(absl::StatusCode::kInvalidArgument));
  CHECK(result.message() == "etcdserver: duplicate key given in txn request");

  MvccCommand put_in_delete;
  put_in_delete.mutable_txn()->add_success()->mutable_request_put()->set_key(
      "foo/1");
  auto* del = put_in_delete.mutable_txn()
                  ->add_success()
                  ->mutable_request_delete_range();
  del->set_key("foo/");
  del->set_range_end(PrefixEnd("foo/"));
  CHECK(harness.Apply(put_in_delete).message() ==
        "etcdserver: duplicate key given in txn request");

  // A get and a put of one key, or the same key in both branches, are fine.
  MvccCommand allowed;
  allowed.mutable_txn()->add_success()->mutable_request_range()->set_key("d");
  allowed.mutable_txn()->add_success()->mutable_request_put()->set_key("d");
  allowed.mutable_txn()->add_failure()->mutable_request_put()->set_key("d");
  CHECK(harness.Apply(allowed).code() == 0);

  // A Range at a future revision fails the whole Txn, changing nothing.
  const int64_t before = harness.store().revision();
  MvccCommand future;
  future.mutable_txn()->add_success()->mutable_request_put()->set_key("x");
  future.mutable_txn()->add_success()->mutable_request_range()->set_key("x");
  future.mutable_txn()
      ->mutable_success(1)
      ->mutable_request_range()
      ->set_revision(before + 1);
  result = harness.Apply(future);
  CHECK(result.code() == code(absl::StatusCode::kOutOfRange));
  CHECK(result.message() ==
        "etcdserver: mvcc: required revision is a future revision");
  CHECK(harness.store().revision() == before);
  CHECK(harness.Query(RangeQuery("x", "")).range().kvs_size() == 0);

  // Compaction: at or below the point is compacted; reading at exactly the
  // point works, below it is compacted.
  MvccCommand compact;
  compact.mutable_compact()->set_revision(3);
  CHECK(harness.Apply(compact).code() == 0);
  CHECK(harness.Apply(compact).message() ==
        "etcdserver: mvcc: required revision has been compacted");
  compact.mutable_compact()->set_revision(0);
  CHECK(harness.Apply(compact).message() ==
        "etcdserver: mvcc: required revision has been compacted");
  compact.mutable_compact()->set_revision(harness.store().revision() + 1);
  CHECK(harness.Apply(compact).message() ==
        "etcdserver: mvcc: required revision is a future revision");
  CHECK(harness.Query(RangeQuery("k", "", 3)).code() == 0);
  CHECK(harness.Query(RangeQuery("k", "", 2)).message() ==
        "etcdserver: mvcc: required revision has been compacted");
}

TEST_CASE(
    "mvcc: compares on a missing key compare against zero, and a "
    "value compare is false",
    "[statemachine][mvcc]") {
  Harness harness;
  const auto txn = [&](Compare::CompareTarget target, auto set) {
    MvccCommand command;
    Compare* compare = command.mutable_txn()->add_compare();
    compare->set_key("absent");
    compare->set_target(target);
    compare->set_result(Compare::EQUAL);
    set(compare);
    return harness.Apply(command).txn().succeeded();
  };
  CHECK(txn(Compare::VERSION, [](Compare* c) { c->set_version(0); }));
  CHECK(txn(Compare::CREATE, [](Compare* c) { c->set_create_revision(0); }));
  CHECK_FALSE(txn(Compare::VALUE, [](Compare* c) { c->set_value(""); }));
}

TEST_CASE(
    "mvcc: HashKV agrees across replicas and is stable for a past "
    "revision",
    "[statemachine][mvcc]") {
  Harness first, second;
  std::vector<MvccCommand> commands;
  for (int i = 0; i < 50; ++i) {
    commands.push_back(PutCommand(absl::StrCat("k", i % 7), absl::StrCat(i)));
    if (i % 9 == 0) commands.push_back(DeleteCommand("k3", ""));
  }
  for (const MvccCommand& command : commands) {
    first.Apply(command);
    second.Apply(command);
  }
  MvccQuery query;
  query.mutable_hash_kv()->set_revision(0);
  const uint32_t hash = first.Query(query).hash_kv().hash();
  CHECK(second.Query(query).hash_kv().hash() == hash);
  const int64_t revision = first.store().revision();
  // Later changes to keys that existed at `revision`, and a new key: the
  // hash at `revision` is rebuilt from what they replaced.
  first.Apply(PutCommand("later", "x"));
  first.Apply(PutCommand("k1", "changed"));
  first.Apply(DeleteCommand("k2", ""));
  CHECK(first.Query(query).hash_kv().hash() != hash);
  query.mutable_hash_kv()->set_revision(revision);
  CHECK(first.Query(query).hash_kv().hash() == hash);
}

TEST_CASE(
    "mvcc: a store an earlier layout wrote is refused with a message, not "
    "misread",
    "[statemachine][mvcc]") {
  statemachine::MemoryOrderedKv kv;
  // Layout 1 kept the revision under "mrev" (8 bytes, big endian) and a
  // history record per change.
  REQUIRE(kv.Put("mrev", std::string("\0\0\0\0\0\0\0\x02", 8)).ok());
  REQUIRE(kv.Put(std::string("hk\0\x01\0\0\0\0\0\0\0\x02", 12), "").ok());
  MvccStore store(&kv);
  const absl::Status loaded = store.Load();
  CHECK(loaded.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(loaded.message()),
             Catch::Matchers::Contains("layout 1"));

  // Layout 2 kept a latest record per key: "l" + escaped key.
  statemachine::MemoryOrderedKv layout2;
  REQUIRE(layout2.Put("mrevision", std::string("\0\0\0\0\0\0\0\x02", 8)).ok());
  REQUIRE(layout2.Put(std::string("lk\0\x01", 4), "").ok());
  MvccStore refused(&layout2);
  const absl::Status refusal = refused.Load();
  CHECK(refusal.code() == absl::StatusCode::kFailedPrecondition);
  CHECK_THAT(std::string(refusal.message()),
             Catch::Matchers::Contains("layout 2"));

  // A store this version wrote loads.
  statemachine::MemoryOrderedKv current;
  MvccStore writer(&current);
  REQUIRE(writer.Load().ok());
  REQUIRE(writer.Apply(PutCommand("k", "v")).ok());
  MvccStore reader(&current);
  REQUIRE(reader.Load().ok());
  CHECK(reader.revision() == 2);
}

TEST_CASE("mvcc: each Txn response carries the revision as of its operation",
          "[statemachine][mvcc]") {
  Harness harness;
  harness.Apply(PutCommand("k", "v"));  // revision 2
  MvccCommand command;
  auto* txn = command.mutable_txn();
  txn->add_success()->mutable_request_range()->set_key("k");
  txn->add_success()->mutable_request_delete_range()->set_key("nothing");
  txn->add_success()->mutable_request_put()->set_key("p");
  txn->add_success()->mutable_request_range()->set_key("p");
  txn->add_success()->mutable_request_delete_range()->set_key("k");
  MvccResult result = harness.Apply(command);
  REQUIRE(result.txn().responses_size() == 5);
  CHECK(result.txn().header().revision() == 3);
  CHECK(result.txn().responses(0).response_range().header().revision() == 2);
  CHECK(result.txn().responses(1).response_delete_range().header().revision() ==
        2);
  CHECK(result.txn().responses(2).response_put().header().revision() == 3);
  CHECK(result.txn().responses(3).response_range().header().revision() == 3);
  CHECK(result.txn().responses(4).response_delete_range().header().revision() ==
        3);
}

TEST_CASE("mvcc: the NOSPACE alarm refuses writes until it is cleared",
          "[statemachine][mvcc]") {
  Harness harness;
  MvccCommand alarm;
  alarm.mutable_alarm()->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  alarm.mutable_alarm()->set_memberid(7);
  alarm.mutable_alarm()->set_alarm(etcdserverpb::NOSPACE);
  REQUIRE(harness.Apply(alarm).code() == 0);
  MvccQuery list;
  list.mutable_alarms();
  REQUIRE(harness.Query(list).alarm().alarms_size() == 1);
  MvccResult refused = harness.Apply(PutCommand("k", "v"));
  CHECK(refused.code() ==
        static_cast<int32_t>(absl::StatusCode::kResourceExhausted));
  CHECK(refused.message() == "etcdserver: mvcc: database space exceeded");
  // Deletes still work (they free space).
  CHECK(harness.Apply(DeleteCommand("k", "")).code() == 0);
  alarm.mutable_alarm()->set_action(etcdserverpb::AlarmRequest::DEACTIVATE);
  REQUIRE(harness.Apply(alarm).code() == 0);
  CHECK(harness.Query(list).alarm().alarms_size() == 0);
  CHECK(harness.Apply(PutCommand("k", "v")).code() == 0);
}

}  // namespace
}  // namespace driftwood::mvcc
