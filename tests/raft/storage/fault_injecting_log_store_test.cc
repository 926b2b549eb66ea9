// The simulation's fault-injecting store loses exactly what a power cut would.
#include "tests/support/fault_injecting_log_store.h"

#include <catch2/catch.hpp>

namespace driftwood::testing {
namespace {

using raft::Entry;
using raft::HardState;
using raft::LogIndex;
using raft::NodeId;
using raft::PersistRequest;
using raft::Term;

raft::Configuration Voters() {
  raft::Configuration configuration;
  configuration.voters = {NodeId(1)};
  return configuration;
}

PersistRequest Write(uint64_t index, uint64_t commit, bool sync) {
  PersistRequest request;
  request.entries = {
      Entry{Term(1), LogIndex(index), raft::EntryType::kNormal, "x"}};
  request.hard_state = HardState{Term(1), NodeId(1), LogIndex(commit)};
  request.sync = sync;
  return request;
}

TEST_CASE("FaultInjectingLogStore: a power cut keeps synced writes only",
          "[storage]") {
  FaultInjectingLogStore store(Voters());
  REQUIRE(store.Persist(Write(1, 0, true)).ok());
  REQUIRE(store.Persist(Write(2, 1, false)).ok());
  REQUIRE(store.Persist(Write(3, 2, false)).ok());
  CHECK(store.LastIndex() == LogIndex(3));
  CHECK(store.unsynced_writes() == 2);
  CHECK(store.sync_count() == 1);
  store.PowerCut(0);
  CHECK(store.LastIndex() == LogIndex(1));
  CHECK(store.hard_state().commit == LogIndex(0));
}

TEST_CASE(
    "FaultInjectingLogStore: a power cut may keep a prefix of unsynced writes",
    "[storage]") {
  FaultInjectingLogStore store(Voters());
  REQUIRE(store.Persist(Write(1, 0, false)).ok());
  REQUIRE(store.Persist(Write(2, 1, false)).ok());
  store.PowerCut(1);
  CHECK(store.LastIndex() == LogIndex(1));
  // A sync makes every earlier write durable too.
  REQUIRE(store.Persist(Write(2, 0, false)).ok());
  REQUIRE(store.Persist(Write(3, 2, true)).ok());
  store.PowerCut(0);
  CHECK(store.LastIndex() == LogIndex(3));
  CHECK(store.hard_state().commit == LogIndex(2));
}

TEST_CASE("FaultInjectingLogStore: an injected write failure changes nothing",
          "[storage]") {
  FaultInjectingLogStore store(Voters());
  store.FailNextWrite();
  CHECK(absl::IsResourceExhausted(store.Persist(Write(1, 0, true))));
  CHECK(store.LastIndex() == LogIndex(0));
  CHECK(store.Persist(Write(1, 0, true)).ok());
}

}  // namespace
}  // namespace driftwood::testing
