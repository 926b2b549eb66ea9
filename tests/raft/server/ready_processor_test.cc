// Where the ReadyProcessor puts step 4 (the hand-over to the apply side)
// relative to the write (raft/server/ready_processor.h): before it for a Ready
// without a snapshot, after it for one with a snapshot or when the processor
// is built with kAfterPersist.
#include "raft/server/ready_processor.h"

#include <catch2/catch.hpp>
#include <memory>
#include <vector>

#include "raft/core/node.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/core_harness.h"

namespace driftwood::raft {
namespace {

using Step = ReadyProcessor::Step;
using Timing = ReadyProcessor::HandOverTiming;

// One node over a MemoryLogStore; each hand-over records the committed
// entries and the store's last index at that moment.
struct Driven {
  struct HandOver {
    std::vector<LogIndex> committed;
    bool snapshot = false;
    LogIndex stored_last;
  };

  Driven(uint64_t id, const Ids& voters, Timing timing)
      : store(MakeConfiguration(voters)) {
    Config config;
    config.id = NodeId(id);
    absl::StatusOr<std::unique_ptr<Node>> created = Node::Create(config, store);
    REQUIRE(created.ok());
    node = *std::move(created);
    processor = std::make_unique<ReadyProcessor>(
        *node, store,
        ReadyProcessor::Callbacks{
            .send = [](std::vector<Message>&) {},
            .hand_over =
                [this](const Ready& ready) {
                  HandOver& handed = hand_overs.emplace_back();
                  handed.snapshot = ready.snapshot.has_value();
                  handed.stored_last = store.LastIndex();
                  for (const Entry& entry : ready.committed_entries) {
                    handed.committed.push_back(entry.index);
                  }
                }},
        timing);
  }

  // Performs the taken Ready one step at a time; returns the steps in order.
  std::vector<Step> Steps() {
    std::vector<Step> steps;
    while (processor->busy()) {
      steps.push_back(processor->next_step());
      absl::StatusOr<bool> stepped = processor->StepOnce();
      REQUIRE(stepped.ok());
    }
    return steps;
  }

  MemoryLogStore store;
  std::unique_ptr<Node> node;
  std::unique_ptr<ReadyProcessor> processor;
  std::vector<HandOver> hand_overs;
};

// A single-voter leader with entry `a` written and committed but not yet
// handed over, and `b` proposed: its next Ready writes b and hands over a.
LogIndex LeaderWithCommittedAndNewEntry(Driven& d) {
  d.node->Campaign();
  REQUIRE(d.processor->Process().ok());
  REQUIRE(d.node->role() == Role::kLeader);
  absl::StatusOr<EntryId> a = d.node->Propose("a");
  REQUIRE(a.ok());
  REQUIRE(d.processor->Take());
  REQUIRE(d.processor->ready().entries.back().index == a->index);
  REQUIRE(d.processor->Finish().ok());
  // Advance counted the leader's own durable write: `a` is committed.
  REQUIRE(d.node->commit_index() == a->index);
  REQUIRE(d.node->Propose("b").ok());
  d.hand_overs.clear();
  return a->index;
}

TEST_CASE(
    "the driver hands durable committed entries to the apply side before "
    "the write of newer ones, or after it with kAfterPersist",
    "[ready-processor]") {
  const bool before = GENERATE(true, false);
  CAPTURE(before);
  Driven d(1, {1}, before ? Timing::kBeforePersist : Timing::kAfterPersist);
  const LogIndex a = LeaderWithCommittedAndNewEntry(d);
  REQUIRE(d.processor->Take());
  const Ready& ready = d.processor->ready();
  REQUIRE(ready.entries.size() == 1);
  REQUIRE(ready.committed_entries.back().index == a);
  CHECK(d.processor->hands_over_before_persist() == before);
  const std::vector<Step> expected =
      before
          ? std::vector<Step>{Step::kSendNow, Step::kHandOver, Step::kPersist,
                              Step::kSendAfterPersist, Step::kAdvance}
          : std::vector<Step>{Step::kSendNow, Step::kPersist,
                              Step::kSendAfterPersist, Step::kHandOver,
                              Step::kAdvance};
  CHECK(d.Steps() == expected);
  REQUIRE(d.hand_overs.size() == 1);
  CHECK(d.hand_overs[0].committed.back() == a);
  // Before: the store did not hold `b` yet when `a` went to the apply side.
  CHECK(d.hand_overs[0].stored_last == (before ? a : a.next()));
  CHECK(d.store.LastIndex() == a.next());
}

TEST_CASE(
    "a Ready with a snapshot hands it over only after the write stored it",
    "[ready-processor]") {
  Driven d(2, {1, 2, 3}, Timing::kBeforePersist);
  REQUIRE(
      d.node
          ->Step(Msg(1, 2, 2,
                     InstallSnapshot{SnapshotMeta{
                         LogIndex(5), Term(2), MakeConfiguration({1, 2, 3})}}))
          .ok());
  REQUIRE(d.processor->Take());
  REQUIRE(d.processor->ready().snapshot.has_value());
  CHECK_FALSE(d.processor->hands_over_before_persist());
  CHECK(d.Steps() == std::vector<Step>{Step::kSendNow, Step::kPersist,
                                       Step::kSendAfterPersist, Step::kHandOver,
                                       Step::kAdvance});
  REQUIRE(d.hand_overs.size() == 1);
  CHECK(d.hand_overs[0].snapshot);
  CHECK(d.hand_overs[0].stored_last == LogIndex(5));
}

}  // namespace
}  // namespace driftwood::raft
