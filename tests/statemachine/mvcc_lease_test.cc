// Leases in MvccStore (statemachine/mvcc/mvcc_store.h) over a MemoryOrderedKv:
// grant and revoke, keys attached by a put with a lease and detached by a put
// with another lease or a delete, a revoke deleting every attached key at one
// revision (or at none when nothing is attached), etcd's errors, Txns that
// name an unknown lease, LeaseTimeToLive and Leases, what AppliedChanges
// records (checked against MvccStore::Events for the same revisions) and
// leases across Compact and a reload.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "statemachine/mvcc/mvcc_store.h"
#include "statemachine/ordered_kv.h"
#include "tests/statemachine/mvcc_events_check.h"

namespace driftwood::mvcc {
namespace {

using etcdserverpb::Compare;
using mvccpb::Event;
using mvccpb::KeyValue;

int32_t Code(absl::StatusCode code) { return static_cast<int32_t>(code); }

constexpr char kLeaseNotFound[] = "etcdserver: requested lease not found";

class Harness {
 public:
  Harness() : store_(&kv_) {
    REQUIRE(store_.Load().ok());
    store_.set_changes(&changes_);
  }

  MvccStore& store() { return store_; }
  statemachine::MemoryOrderedKv& kv() { return kv_; }
  AppliedChanges& changes() { return changes_; }

  // Applies `command` with a fresh AppliedChanges.
  MvccResult Apply(const MvccCommand& command) {
    changes_ = AppliedChanges();
    absl::StatusOr<MvccResult> result = store_.Apply(command);
    INFO("Apply: " << result.status().ToString());
    REQUIRE(result.ok());
    return *result;
  }
  MvccResult Query(const MvccQuery& query) const {
    absl::StatusOr<MvccResult> result = store_.Query(query);
    INFO("Query: " << result.status().ToString());
    REQUIRE(result.ok());
    return *result;
  }

  MvccResult Grant(int64_t id, int64_t ttl) {
    MvccCommand command;
    command.mutable_lease_grant()->set_id(id);
    command.mutable_lease_grant()->set_ttl(ttl);
    return Apply(command);
  }
  MvccResult Revoke(int64_t id) {
    MvccCommand command;
    command.mutable_lease_revoke()->set_id(id);
    return Apply(command);
  }

  std::optional<KeyValue> Get(const std::string& key) const {
    MvccQuery query;
    query.mutable_range()->set_key(key);
    MvccResult result = Query(query);
    REQUIRE(result.code() == 0);
    if (result.range().kvs_size() == 0) return std::nullopt;
    REQUIRE(result.range().kvs_size() == 1);
    return result.range().kvs(0);
  }

  etcdserverpb::LeaseTimeToLiveResponse TimeToLive(int64_t id,
                                                   bool keys = true) const {
    etcdserverpb::LeaseTimeToLiveRequest request;
    request.set_id(id);
    request.set_keys(keys);
    absl::StatusOr<etcdserverpb::LeaseTimeToLiveResponse> response =
        store_.LeaseTimeToLive(request);
    REQUIRE(response.ok());
    return *response;
  }
  std::vector<std::string> AttachedKeys(int64_t id) const {
    etcdserverpb::LeaseTimeToLiveResponse response = TimeToLive(id);
    return {response.keys().begin(), response.keys().end()};
  }

  // (id, ttl) of every lease, in the order Leases() gives them.
  std::vector<std::pair<int64_t, int64_t>> Leases() const {
    absl::StatusOr<LeaseTable> table = store_.Leases();
    REQUIRE(table.ok());
    std::vector<std::pair<int64_t, int64_t>> out;
    for (const auto& lease : table->leases()) {
      out.emplace_back(lease.id(), lease.ttl());
    }
    return out;
  }

  std::vector<Event> Events(int64_t start, int64_t end = 0) const {
    absl::StatusOr<EventsResult> result =
        store_.Events(EventsRequest{.key = std::string(1, '\0'),
                                    .range_end = std::string(1, '\0'),
                                    .start_revision = start,
                                    .end_revision = end,
                                    .prev_kv = true});
    INFO("Events: " << result.status().ToString());
    REQUIRE(result.ok());
    return result->events;
  }

  // Every byte the store keeps, to show that a refused request wrote nothing.
  std::map<std::string, std::string> Dump() const {
    std::map<std::string, std::string> out;
    REQUIRE(kv_.Scan(std::string(), std::string(1, '\xff'),
                     [&](std::string_view key, std::string_view value) {
                       out.emplace(key, value);
                       return true;
                     })
                .ok());
    return out;
  }

 private:
  statemachine::MemoryOrderedKv kv_;
  MvccStore store_;
  AppliedChanges changes_;
};

MvccCommand IgnoreLeasePut(const std::string& key, const std::string& value) {
  MvccCommand command = PutCommand(key, value);
  command.mutable_put()->set_ignore_lease(true);
  return command;
}

MvccCommand DeleteCommand(const std::string& key, const std::string& end = "") {
  MvccCommand command;
  command.mutable_delete_range()->set_key(key);
  command.mutable_delete_range()->set_range_end(end);
  return command;
}

MvccCommand CompactCommand(int64_t revision) {
  MvccCommand command;
  command.mutable_compact()->set_revision(revision);
  return command;
}

etcdserverpb::PutRequest* AddTxnPut(etcdserverpb::TxnRequest* txn,
                                    const std::string& key,
                                    const std::string& value, int64_t lease,
                                    bool success = true) {
  etcdserverpb::PutRequest* put =
      (success ? txn->add_success() : txn->add_failure())
          ->mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
  return put;
}

void RequireOk(const MvccResult& result) {
  INFO("code " << result.code() << ": " << result.message());
  REQUIRE(result.code() == 0);
}

// The events as text, so that a mismatch prints both sides.
TEST_CASE("mvcc lease: a grant adds no revision and Leases lists it by id",
          "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Apply(PutCommand("k", "v")));  // revision 2
  MvccResult granted = harness.Grant(7, 10);
  RequireOk(granted);
  REQUIRE(granted.has_lease_grant());
  CHECK(granted.lease_grant().id() == 7);
  CHECK(granted.lease_grant().ttl() == 10);
  CHECK(granted.lease_grant().header().revision() == 2);
  CHECK(harness.store().revision() == 2);
  REQUIRE(harness.changes().granted_leases.size() == 1);
  CHECK(harness.changes().granted_leases[0] ==
        std::pair<int64_t, int64_t>{7, 10});
  CHECK(harness.changes().events.empty());
  CHECK(harness.changes().revoked_leases.empty());
  CHECK(harness.changes().revision == 2);

  RequireOk(harness.Grant(3, 60));
  RequireOk(harness.Grant(int64_t{1} << 40, kMaxLeaseTTL));  // the largest TTL
  CHECK(harness.store().revision() == 2);
  CHECK(harness.Leases() ==
        std::vector<std::pair<int64_t, int64_t>>{
            {3, 60}, {7, 10}, {int64_t{1} << 40, kMaxLeaseTTL}});

  // The same through a query.
  MvccQuery query;
  query.mutable_leases();
  MvccResult table = harness.Query(query);
  RequireOk(table);
  REQUIRE(table.has_leases());
  REQUIRE(table.leases().leases_size() == 3);
  CHECK(table.leases().leases(0).id() == 3);
  CHECK(table.leases().leases(0).ttl() == 60);
  CHECK(table.leases().leases(1).id() == 7);
  CHECK(table.leases().revision() == 2);
}

TEST_CASE(
    "mvcc lease: a put with a lease attaches the key, a put with another "
    "lease, with lease 0 or a delete detaches it, ignore_lease keeps it",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(7, 10));
  RequireOk(harness.Grant(8, 20));

  RequireOk(harness.Apply(PutCommand("a", "1", 7)));
  REQUIRE(harness.Get("a"));
  CHECK(harness.Get("a")->lease() == 7);
  CHECK(harness.AttachedKeys(7) == std::vector<std::string>{"a"});

  // Another lease moves the key.
  RequireOk(harness.Apply(PutCommand("a", "2", 8)));
  CHECK(harness.Get("a")->lease() == 8);
  CHECK(harness.AttachedKeys(7).empty());
  CHECK(harness.AttachedKeys(8) == std::vector<std::string>{"a"});

  // ignore_lease keeps the key's lease (and the value changes).
  RequireOk(harness.Apply(IgnoreLeasePut("a", "3")));
  CHECK(harness.Get("a")->lease() == 8);
  CHECK(harness.Get("a")->value() == "3");
  CHECK(harness.AttachedKeys(8) == std::vector<std::string>{"a"});

  // A plain put (lease 0) detaches it.
  RequireOk(harness.Apply(PutCommand("a", "4")));
  CHECK(harness.Get("a")->lease() == 0);
  CHECK(harness.AttachedKeys(8).empty());

  // A delete detaches it too; a put of the key afterwards has no lease.
  RequireOk(harness.Apply(PutCommand("a", "5", 8)));
  RequireOk(harness.Apply(PutCommand("b", "1", 8)));
  CHECK(harness.AttachedKeys(8) == std::vector<std::string>{"a", "b"});
  RequireOk(harness.Apply(DeleteCommand("a")));
  CHECK(harness.AttachedKeys(8) == std::vector<std::string>{"b"});
  RequireOk(harness.Apply(PutCommand("a", "6")));
  CHECK(harness.Get("a")->lease() == 0);
  CHECK(harness.AttachedKeys(8) == std::vector<std::string>{"b"});

  // Revoking lease 8 deletes only what is still attached to it; lease 7 has
  // nothing left.
  const int64_t before = harness.store().revision();
  RequireOk(harness.Revoke(8));
  CHECK(harness.store().revision() == before + 1);
  CHECK(harness.Get("a"));
  CHECK_FALSE(harness.Get("b"));
  RequireOk(harness.Revoke(7));
  CHECK(harness.store().revision() == before + 1);
  CHECK(harness.Get("a"));
}

TEST_CASE(
    "mvcc lease: a revoke deletes every attached key at one revision, with "
    "DELETE events carrying prev_kv",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(5, 30));
  RequireOk(harness.Grant(6, 30));
  const std::string zero_key("b\0x", 3);
  RequireOk(harness.Apply(PutCommand("c", "c1", 5)));
  RequireOk(harness.Apply(PutCommand("a", "a1", 5)));
  RequireOk(harness.Apply(PutCommand("a", "a2", 5)));  // version 2
  RequireOk(harness.Apply(PutCommand(zero_key, "z", 5)));
  RequireOk(harness.Apply(PutCommand("d", "d", 6)));  // another lease
  RequireOk(harness.Apply(PutCommand("e", "e")));     // no lease
  const std::optional<KeyValue> a = harness.Get("a");
  const std::optional<KeyValue> c = harness.Get("c");
  const std::optional<KeyValue> z = harness.Get(zero_key);
  REQUIRE((a && c && z));
  CHECK(harness.AttachedKeys(5) ==
        std::vector<std::string>{"a", zero_key, "c"});

  const int64_t before = harness.store().revision();
  MvccResult revoked = harness.Revoke(5);
  RequireOk(revoked);
  REQUIRE(revoked.has_lease_revoke());
  const int64_t at = before + 1;
  CHECK(harness.store().revision() == at);
  CHECK(revoked.lease_revoke().header().revision() == at);
  CHECK_FALSE(harness.Get("a"));
  CHECK_FALSE(harness.Get("c"));
  CHECK_FALSE(harness.Get(zero_key));
  CHECK(harness.Get("d"));
  CHECK(harness.Get("e"));
  CHECK(harness.Leases() == std::vector<std::pair<int64_t, int64_t>>{{6, 30}});
  CHECK(harness.TimeToLive(5).ttl() == -1);

  // One DELETE per key, all at the revoke's revision, in key order, each
  // with the key's last value as prev_kv.
  const std::vector<Event> events = harness.Events(at);
  REQUIRE(events.size() == 3);
  const std::vector<const KeyValue*> previous = {&*a, &*z, &*c};
  for (size_t i = 0; i < events.size(); ++i) {
    INFO("event " << i);
    CHECK(events[i].type() == Event::DELETE);
    CHECK(events[i].kv().key() == previous[i]->key());
    CHECK(events[i].kv().mod_revision() == at);
    REQUIRE(events[i].has_prev_kv());
    CHECK(events[i].prev_kv().SerializeAsString() ==
          previous[i]->SerializeAsString());
    CHECK(events[i].prev_kv().lease() == 5);
  }
  CHECK(events[0].prev_kv().value() == "a2");
  CHECK(events[0].prev_kv().version() == 2);
  // AppliedChanges saw the same events, and the lease go.
  CheckSameEvents(harness.changes().events, events);
  CHECK(harness.changes().revoked_leases == std::vector<int64_t>{5});
  CHECK(harness.changes().granted_leases.empty());
  CHECK(harness.changes().revision == at);

  // The lease is gone: a second revoke is refused.
  MvccResult again = harness.Revoke(5);
  CHECK(again.code() == Code(absl::StatusCode::kNotFound));
  CHECK(again.message() == kLeaseNotFound);
  CHECK(harness.store().revision() == at);
}

TEST_CASE("mvcc lease: revoking a lease with no keys adds no revision",
          "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Apply(PutCommand("k", "v")));
  RequireOk(harness.Grant(9, 10));
  const int64_t before = harness.store().revision();

  SECTION("never attached") {}
  SECTION("attached, then moved to no lease and deleted") {
    RequireOk(harness.Apply(PutCommand("x", "1", 9)));
    RequireOk(harness.Apply(PutCommand("x", "2")));
    RequireOk(harness.Apply(PutCommand("y", "1", 9)));
    RequireOk(harness.Apply(DeleteCommand("y")));
  }
  const int64_t revision = harness.store().revision();
  CHECK(revision >= before);
  MvccResult revoked = harness.Revoke(9);
  RequireOk(revoked);
  CHECK(harness.store().revision() == revision);
  CHECK(revoked.lease_revoke().header().revision() == revision);
  CHECK(harness.changes().events.empty());
  CHECK(harness.changes().revoked_leases == std::vector<int64_t>{9});
  CHECK(harness.changes().revision == revision);
  CHECK(harness.Leases().empty());
  CHECK(harness.Events(revision + 1).empty());
  CHECK(harness.Get("k"));
}

TEST_CASE(
    "mvcc lease: refused requests get etcd's codes and messages and "
    "change nothing",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Apply(PutCommand("k", "v")));
  RequireOk(harness.Grant(1, 10));
  const std::map<std::string, std::string> before = harness.Dump();
  const int64_t revision = harness.store().revision();

  const auto refused = [&](const MvccResult& result, absl::StatusCode code,
                           const std::string& message) {
    CHECK(result.code() == Code(code));
    CHECK(result.message() == message);
    CHECK(result.response_case() == MvccResult::RESPONSE_NOT_SET);
    CHECK(harness.store().revision() == revision);
    CHECK(harness.changes().events.empty());
    CHECK(harness.changes().granted_leases.empty());
    CHECK(harness.changes().revoked_leases.empty());
    CHECK(harness.Dump() == before);
  };

  SECTION("grant of id 0") {
    refused(harness.Grant(0, 10), absl::StatusCode::kNotFound, kLeaseNotFound);
  }
  SECTION("grant of a TTL above 9e9 seconds") {
    refused(harness.Grant(2, kMaxLeaseTTL + 1), absl::StatusCode::kOutOfRange,
            "etcdserver: too large lease TTL");
  }
  SECTION("grant of an existing id, even with another TTL") {
    refused(harness.Grant(1, 99), absl::StatusCode::kFailedPrecondition,
            "etcdserver: lease already exists");
    CHECK(harness.Leases() ==
          std::vector<std::pair<int64_t, int64_t>>{{1, 10}});
  }
  SECTION("revoke of an unknown lease") {
    refused(harness.Revoke(2), absl::StatusCode::kNotFound, kLeaseNotFound);
  }
  SECTION("put with an unknown lease, new key and existing key") {
    refused(harness.Apply(PutCommand("new", "v", 2)),
            absl::StatusCode::kNotFound, kLeaseNotFound);
    refused(harness.Apply(PutCommand("k", "w", 2)), absl::StatusCode::kNotFound,
            kLeaseNotFound);
    CHECK(harness.Get("k")->value() == "v");
  }
  SECTION("put with ignore_lease of a missing key") {
    refused(harness.Apply(IgnoreLeasePut("missing", "v")),
            absl::StatusCode::kInvalidArgument, "etcdserver: key not found");
  }
  SECTION("a revoked lease is unknown") {
    RequireOk(harness.Grant(3, 10));
    RequireOk(harness.Revoke(3));
    refused(harness.Apply(PutCommand("k", "w", 3)), absl::StatusCode::kNotFound,
            kLeaseNotFound);
  }
}

TEST_CASE(
    "mvcc lease: a Txn that puts with an unknown lease fails whole with "
    "nothing changed",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(1, 10));
  RequireOk(harness.Apply(PutCommand("z", "z", 1)));
  const std::map<std::string, std::string> before = harness.Dump();
  const int64_t revision = harness.store().revision();

  MvccCommand command;
  etcdserverpb::TxnRequest* txn = command.mutable_txn();
  AddTxnPut(txn, "x", "1", 0);
  AddTxnPut(txn, "w", "1", 1);
  txn->add_success()->mutable_request_delete_range()->set_key("z");
  SECTION("in the branch itself") { AddTxnPut(txn, "y", "1", 99); }
  SECTION("in a nested Txn") {
    etcdserverpb::TxnRequest* nested =
        txn->add_success()->mutable_request_txn();
    AddTxnPut(nested, "y", "1", 99);
  }
  MvccResult result = harness.Apply(command);
  CHECK(result.code() == Code(absl::StatusCode::kNotFound));
  CHECK(result.message() == kLeaseNotFound);
  CHECK(harness.store().revision() == revision);
  CHECK(harness.changes().events.empty());
  CHECK(harness.Dump() == before);
  CHECK_FALSE(harness.Get("x"));
  CHECK(harness.Get("z"));
  CHECK(harness.AttachedKeys(1) == std::vector<std::string>{"z"});
}

TEST_CASE("mvcc lease: a Txn attaches and detaches at its one revision",
          "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(1, 10));
  RequireOk(harness.Grant(2, 10));
  RequireOk(harness.Apply(PutCommand("c", "c", 1)));
  RequireOk(harness.Apply(PutCommand("d", "d", 1)));
  const int64_t revision = harness.store().revision();

  MvccCommand command;
  etcdserverpb::TxnRequest* txn = command.mutable_txn();
  Compare* compare = txn->add_compare();
  compare->set_key("c");
  compare->set_target(Compare::LEASE);
  compare->set_result(Compare::EQUAL);
  compare->set_lease(1);
  AddTxnPut(txn, "a", "a", 1);
  AddTxnPut(txn, "b", "b", 2);
  AddTxnPut(txn, "d", "d2", 2);
  txn->add_success()->mutable_request_delete_range()->set_key("c");
  MvccResult result = harness.Apply(command);
  RequireOk(result);
  CHECK(result.txn().succeeded());
  CHECK(harness.store().revision() == revision + 1);
  CHECK(harness.AttachedKeys(1) == std::vector<std::string>{"a"});
  CHECK(harness.AttachedKeys(2) == std::vector<std::string>{"b", "d"});
  CheckSameEvents(harness.changes().events, harness.Events(revision + 1));
  REQUIRE(harness.changes().events.size() == 4);
  CHECK(harness.changes().events[2].prev_kv().lease() == 1);
  CHECK(harness.changes().events[2].kv().lease() == 2);

  // Revoking 2 deletes b and d at one revision; a stays.
  RequireOk(harness.Revoke(2));
  CHECK(harness.store().revision() == revision + 2);
  CHECK(harness.Events(revision + 2).size() == 2);
  CHECK(harness.Get("a"));
}

TEST_CASE(
    "mvcc lease: LeaseTimeToLive gives the granted TTL and keys, an unknown "
    "lease has TTL -1 and grantedTTL 0",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(4, 40));
  RequireOk(harness.Grant(5, 50));  // the next id: its keys must not show
  RequireOk(harness.Grant(-1, 5));  // every bit set: the last possible id
  RequireOk(harness.Apply(PutCommand("k2", "v", 4)));
  RequireOk(harness.Apply(PutCommand("k1", "v", 4)));
  RequireOk(harness.Apply(PutCommand("k3", "v", 5)));
  RequireOk(harness.Apply(PutCommand("k4", "v", -1)));

  etcdserverpb::LeaseTimeToLiveResponse known = harness.TimeToLive(4);
  CHECK(known.id() == 4);
  CHECK(known.ttl() == 40);
  CHECK(known.grantedttl() == 40);
  CHECK(std::vector<std::string>(known.keys().begin(), known.keys().end()) ==
        std::vector<std::string>{"k1", "k2"});
  CHECK(known.header().revision() == harness.store().revision());
  CHECK(harness.TimeToLive(4, /*keys=*/false).keys_size() == 0);
  CHECK(harness.AttachedKeys(5) == std::vector<std::string>{"k3"});
  CHECK(harness.AttachedKeys(-1) == std::vector<std::string>{"k4"});

  etcdserverpb::LeaseTimeToLiveResponse unknown = harness.TimeToLive(6);
  CHECK(unknown.id() == 6);
  CHECK(unknown.ttl() == -1);
  CHECK(unknown.grantedttl() == 0);
  CHECK(unknown.keys_size() == 0);

  // The same through a query.
  MvccQuery query;
  query.mutable_lease_time_to_live()->set_id(4);
  query.mutable_lease_time_to_live()->set_keys(true);
  MvccResult result = harness.Query(query);
  RequireOk(result);
  REQUIRE(result.has_lease_time_to_live());
  CHECK(result.lease_time_to_live().SerializeAsString() ==
        known.SerializeAsString());
  query.mutable_lease_time_to_live()->set_id(6);
  result = harness.Query(query);
  RequireOk(result);
  CHECK(result.lease_time_to_live().ttl() == -1);
  CHECK(result.lease_time_to_live().grantedttl() == 0);

  // Revoking the last possible id deletes only its own key.
  RequireOk(harness.Revoke(-1));
  CHECK_FALSE(harness.Get("k4"));
  CHECK(harness.Get("k3"));
  CHECK(harness.AttachedKeys(5) == std::vector<std::string>{"k3"});
}

std::string RandomKey(std::mt19937_64& random) {
  static const std::vector<std::string> keys = {
      "a", "ab", "b", std::string("b\0x", 3), "c", "foo/1", "foo/2", "z"};
  return keys[random() % keys.size()];
}

TEST_CASE(
    "mvcc lease: AppliedChanges holds every event with prev_kv (as Events "
    "reads them), the leases and the revisions",
    "[statemachine][mvcc][lease]") {
  const uint64_t seed = GENERATE(as<uint64_t>(), 1, 2, 3);
  INFO("seed " << seed);
  std::mt19937_64 random(seed);
  Harness harness;
  std::vector<int64_t> leases;  // granted, not yet revoked
  int64_t next_lease = 1;
  for (int step = 0; step < 300; ++step) {
    INFO("step " << step);
    const int64_t before = harness.store().revision();
    const int64_t compacted_before = harness.store().compact_revision();
    const auto lease = [&]() -> int64_t {
      if (leases.empty() || random() % 3 == 0) return 0;
      return leases[random() % leases.size()];
    };
    MvccCommand command;
    const int kind = static_cast<int>(random() % 12);
    std::optional<std::pair<int64_t, int64_t>> granted;
    std::optional<int64_t> revoked;
    if (kind <= 3) {
      command = PutCommand(RandomKey(random), absl::StrCat("v", step), lease());
      if (random() % 5 == 0 && harness.Get(command.put().key())) {
        command.mutable_put()->set_lease(0);
        command.mutable_put()->set_ignore_lease(true);
      }
    } else if (kind == 4) {
      const std::string key = RandomKey(random);
      command = DeleteCommand(key, random() % 2 ? PrefixEnd(key) : "");
    } else if (kind <= 6) {
      etcdserverpb::TxnRequest* txn = command.mutable_txn();
      const std::string first = RandomKey(random);
      AddTxnPut(txn, first, absl::StrCat("t", step), lease());
      std::string second = RandomKey(random);
      if (second != first) {
        AddTxnPut(txn, second, absl::StrCat("u", step), lease());
      }
    } else if (kind <= 8) {
      const int64_t ttl = 1 + static_cast<int64_t>(random() % 100);
      command.mutable_lease_grant()->set_id(next_lease);
      command.mutable_lease_grant()->set_ttl(ttl);
      granted = std::pair{next_lease, ttl};
      leases.push_back(next_lease++);
    } else if (kind <= 10) {
      if (leases.empty()) continue;
      const size_t index = random() % leases.size();
      command.mutable_lease_revoke()->set_id(leases[index]);
      revoked = leases[index];
      leases.erase(leases.begin() + static_cast<std::ptrdiff_t>(index));
    } else {
      if (before - 1 <= compacted_before) continue;
      command = CompactCommand(
          compacted_before + 1 +
          static_cast<int64_t>(
              random() % static_cast<uint64_t>(before - compacted_before)));
    }
    INFO(command.ShortDebugString());
    RequireOk(harness.Apply(command));
    const AppliedChanges& changes = harness.changes();
    const int64_t after = harness.store().revision();
    CHECK(changes.revision == after);
    CHECK(changes.compact_revision == harness.store().compact_revision());
    CHECK(after - before <= 1);
    if (after == before) {
      CHECK(changes.events.empty());
    } else {
      CheckSameEvents(changes.events, harness.Events(before + 1, after));
      for (const Event& event : changes.events) {
        CHECK(event.kv().mod_revision() == after);
      }
    }
    if (granted) {
      CHECK(changes.granted_leases ==
            std::vector<std::pair<int64_t, int64_t>>{*granted});
    } else {
      CHECK(changes.granted_leases.empty());
    }
    if (revoked) {
      CHECK(changes.revoked_leases == std::vector<int64_t>{*revoked});
    } else {
      CHECK(changes.revoked_leases.empty());
    }
    // Every key's lease is one that exists, and it lists the key.
    for (const char* key : {"a", "ab", "b", "c", "foo/1", "z"}) {
      std::optional<KeyValue> kv = harness.Get(key);
      if (!kv || kv->lease() == 0) continue;
      INFO("key " << key << " lease " << kv->lease());
      const std::vector<std::string> attached =
          harness.AttachedKeys(kv->lease());
      CHECK(std::find(attached.begin(), attached.end(), key) != attached.end());
    }
  }
  CHECK(harness.Leases().size() == leases.size());
}

TEST_CASE(
    "mvcc lease: AppliedChanges accumulates across applies, without one "
    "nothing is recorded",
    "[statemachine][mvcc][lease]") {
  statemachine::MemoryOrderedKv kv;
  MvccStore store(&kv);
  REQUIRE(store.Load().ok());
  AppliedChanges changes;
  store.set_changes(&changes);
  const auto apply = [&](const MvccCommand& command) {
    absl::StatusOr<MvccResult> result = store.Apply(command);
    REQUIRE(result.ok());
    RequireOk(*result);
  };
  MvccCommand grant;
  grant.mutable_lease_grant()->set_id(3);
  grant.mutable_lease_grant()->set_ttl(30);
  apply(grant);
  apply(PutCommand("a", "1", 3));
  apply(PutCommand("a", "2", 3));
  apply(CompactCommand(2));
  MvccCommand revoke;
  revoke.mutable_lease_revoke()->set_id(3);
  apply(revoke);
  REQUIRE(changes.events.size() == 3);
  CHECK(changes.events[0].type() == Event::PUT);
  CHECK_FALSE(changes.events[0].has_prev_kv());
  CHECK(changes.events[1].prev_kv().value() == "1");
  CHECK(changes.events[2].type() == Event::DELETE);
  CHECK(changes.events[2].kv().mod_revision() == 4);
  CHECK(changes.events[2].prev_kv().value() == "2");
  CHECK(changes.granted_leases ==
        std::vector<std::pair<int64_t, int64_t>>{{3, 30}});
  CHECK(changes.revoked_leases == std::vector<int64_t>{3});
  CHECK(changes.revision == 4);
  CHECK(changes.compact_revision == 2);

  // Without an AppliedChanges nothing is recorded.
  store.set_changes(nullptr);
  const AppliedChanges copy = changes;
  apply(PutCommand("b", "1"));
  CHECK(changes.events.size() == copy.events.size());
  CHECK(changes.revision == copy.revision);
}

TEST_CASE("mvcc lease: leases and their keys survive Compact and a reload",
          "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(1, 10));
  RequireOk(harness.Grant(2, 20));
  RequireOk(harness.Apply(PutCommand("a", "1", 1)));
  RequireOk(harness.Apply(PutCommand("a", "2", 1)));
  RequireOk(harness.Apply(PutCommand("b", "1", 2)));
  RequireOk(harness.Apply(PutCommand("c", "1", 1)));
  RequireOk(harness.Apply(DeleteCommand("c")));
  const int64_t revision = harness.store().revision();
  RequireOk(harness.Apply(CompactCommand(revision)));
  CHECK(harness.changes().compact_revision == revision);
  CHECK(harness.changes().events.empty());

  CHECK(harness.Leases() ==
        std::vector<std::pair<int64_t, int64_t>>{{1, 10}, {2, 20}});
  CHECK(harness.AttachedKeys(1) == std::vector<std::string>{"a"});
  CHECK(harness.AttachedKeys(2) == std::vector<std::string>{"b"});

  // A store reloaded from the same OrderedKv sees the same leases.
  {
    MvccStore reloaded(&harness.kv());
    REQUIRE(reloaded.Load().ok());
    absl::StatusOr<LeaseTable> table = reloaded.Leases();
    REQUIRE(table.ok());
    CHECK(table->leases_size() == 2);
  }

  // Revoking after the compaction deletes the key at one new revision, with
  // its value as prev_kv.
  RequireOk(harness.Revoke(1));
  CHECK(harness.store().revision() == revision + 1);
  const std::vector<Event> events = harness.Events(revision + 1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].type() == Event::DELETE);
  CHECK(events[0].kv().key() == "a");
  CHECK(events[0].prev_kv().value() == "2");
  CheckSameEvents(harness.changes().events, events);
  CHECK(harness.Get("b"));
}

// --- Differences from etcd found while writing these tests (they fail). ---

// etcd 3.4 applies a LeaseGrant through applierV3Capped while the NOSPACE
// alarm is raised, which refuses it with ErrNoSpace (server/etcdserver/
// apply.go: func (a *applierV3Capped) LeaseGrant ... return nil, ErrNoSpace).
TEST_CASE(
    "mvcc lease: a grant under the NOSPACE alarm is refused as etcd "
    "refuses it",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  RequireOk(harness.Grant(2, 10));
  RequireOk(harness.Apply(PutCommand("k", "v", 2)));
  MvccCommand alarm;
  alarm.mutable_alarm()->set_action(etcdserverpb::AlarmRequest::ACTIVATE);
  alarm.mutable_alarm()->set_memberid(7);
  alarm.mutable_alarm()->set_alarm(etcdserverpb::NOSPACE);
  RequireOk(harness.Apply(alarm));
  MvccResult result = harness.Grant(1, 10);
  CHECK(result.code() == Code(absl::StatusCode::kResourceExhausted));
  CHECK(result.message() == "etcdserver: mvcc: database space exceeded");
  CHECK(harness.changes().granted_leases.empty());
  CHECK(harness.Leases() == std::vector<std::pair<int64_t, int64_t>>{{2, 10}});
  // A revoke still works under the alarm (it frees space), as in etcd.
  RequireOk(harness.Revoke(2));
  CHECK_FALSE(harness.Get("k"));
  CHECK(harness.Leases().empty());
}

// etcd 3.4 checks a Txn's puts (checkRequests with txnPath, after
// compareToPath) on the path the compares choose only: a put with an unknown
// lease in the branch that does not run fails nothing.
TEST_CASE(
    "mvcc lease: an unknown lease in the Txn branch that does not run "
    "does not fail the Txn",
    "[statemachine][mvcc][lease]") {
  Harness harness;
  MvccCommand command;
  etcdserverpb::TxnRequest* txn = command.mutable_txn();
  Compare* compare = txn->add_compare();
  compare->set_key("absent");
  compare->set_target(Compare::VERSION);
  compare->set_result(Compare::GREATER);
  compare->set_version(0);  // false: the failure branch runs
  AddTxnPut(txn, "s", "1", 99, /*success=*/true);
  AddTxnPut(txn, "f", "1", 0, /*success=*/false);
  MvccResult result = harness.Apply(command);
  CHECK(result.code() == 0);
  CHECK(result.message().empty());
  CHECK_FALSE(result.txn().succeeded());
  CHECK(harness.Get("f"));
  CHECK_FALSE(harness.Get("s"));
}

}  // namespace
}  // namespace driftwood::mvcc
