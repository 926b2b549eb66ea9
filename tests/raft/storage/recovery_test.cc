// The recovery algorithm of FORMAT.md "Recovery", one case per rule. The log
// is a fake LogReader so that every combination of A (state machine), S
// (snapshots), [F, L] (log) and C (stored commit) can be set up directly.
#include "raft/storage/recovery.h"

#include <catch2/catch.hpp>
#include <map>

namespace driftwood::raft {
namespace {

class FakeLog : public LogReader {
 public:
  // Entries first..last; the term of index i is terms_[i] or 1.
  FakeLog(uint64_t first, uint64_t last, uint64_t commit)
      : first_(first), last_(last), commit_(commit) {}

  absl::StatusOr<InitialState> LoadInitialState() const override {
    return InitialState{{Term(5), kNoNode, LogIndex(commit_)}, {}};
  }
  LogIndex FirstIndex() const override { return LogIndex(first_); }
  LogIndex LastIndex() const override { return LogIndex(last_); }
  absl::StatusOr<Term> TermAt(LogIndex index) const override {
    if (index.value() + 1 < first_) return absl::OutOfRangeError("compacted");
    if (index.value() > last_) return absl::NotFoundError("past the end");
    if (index.value() == 0) return Term(0);
    auto it = terms_.find(index.value());
    return Term(it == terms_.end() ? 1 : it->second);
  }
  absl::StatusOr<std::vector<Entry>> Entries(LogIndex, LogIndex,
                                             uint64_t) const override {
    return absl::UnimplementedError("not used by recovery");
  }
  absl::StatusOr<SnapshotMeta> Snapshot() const override {
    if (!recorded_) return absl::NotFoundError("none");
    return *recorded_;
  }

  std::map<uint64_t, uint64_t> terms_;
  std::optional<SnapshotMeta> recorded_;

 private:
  uint64_t first_, last_, commit_;
};

SnapshotMeta Meta(uint64_t index, uint64_t term = 1) {
  return {LogIndex(index), Term(term), {}};
}

SnapshotCandidate Good(uint64_t index, uint64_t term = 1) {
  return {LogIndex(index), Term(term), Meta(index, term),
          [] { return absl::OkStatus(); }};
}

SnapshotCandidate CorruptData(uint64_t index, uint64_t term = 1) {
  return {LogIndex(index), Term(term), Meta(index, term),
          [] { return absl::DataLossError("snapshot file x is corrupt"); }};
}

SnapshotCandidate CorruptMeta(uint64_t index) {
  return {LogIndex(index), Term(1),
          absl::DataLossError("snapshot metadata unreadable"), nullptr};
}

AppliedState Applied(uint64_t index, uint64_t term = 1) {
  return {LogIndex(index), Term(term), {}};
}

bool Contains(const std::vector<LogIndex>& list, uint64_t index) {
  return std::find(list.begin(), list.end(), LogIndex(index)) != list.end();
}

TEST_CASE("Recovery: a fresh node starts at zero", "[storage][recovery]") {
  FakeLog log(1, 0, 0);
  absl::StatusOr<RecoveryPlan> plan = PlanRecovery(log, Applied(0, 0), {});
  REQUIRE(plan.ok());
  CHECK(!plan->restore);
  CHECK(plan->applied == LogIndex(0));
  CHECK(plan->commit == LogIndex(0));
}

TEST_CASE("Recovery: A below S restores from S and commit is max(C, S)",
          "[storage][recovery]") {
  FakeLog log(31, 100, 40);
  log.recorded_ = Meta(50);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {Good(50), Good(20)});
  REQUIRE(plan.ok());
  REQUIRE(plan->restore);
  CHECK(plan->restore->index == LogIndex(50));
  CHECK(plan->applied == LogIndex(50));
  CHECK(plan->commit == LogIndex(50));
  CHECK(!plan->record);
  CHECK(!plan->snapshot_needed);
}

TEST_CASE("Recovery: commit C above the snapshot is kept",
          "[storage][recovery]") {
  FakeLog log(31, 100, 90);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {Good(50)});
  REQUIRE(plan.ok());
  CHECK(plan->commit == LogIndex(90));
  // The log did not record snapshot 50 (a crash after publishing it): record
  // it now so a leader can send it.
  REQUIRE(plan->record);
  CHECK(plan->record->index == LogIndex(50));
}

TEST_CASE("Recovery: an older snapshot stands in while the log covers the gap",
          "[storage][recovery]") {
  FakeLog log(41, 100, 90);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {CorruptData(60), Good(45)});
  REQUIRE(plan.ok());
  REQUIRE(plan->restore);
  CHECK(plan->restore->index == LogIndex(45));
  CHECK(Contains(plan->discard, 60));
}

TEST_CASE("Recovery: the compaction point itself is covered",
          "[storage][recovery]") {
  FakeLog log(41, 100, 90);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {CorruptData(60), Good(40)});
  REQUIRE(plan.ok());
  CHECK(plan->restore->index == LogIndex(40));
}

TEST_CASE("Recovery: an older snapshot may not stand in across a gap",
          "[storage][recovery]") {
  FakeLog log(41, 100, 90);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {CorruptData(60), Good(30)});
  REQUIRE(absl::IsDataLoss(plan.status()));
  CHECK(plan.status().message().find("snapshot file x is corrupt") !=
        absl::string_view::npos);
  CHECK(plan.status().message().find("31..40") != absl::string_view::npos);
}

TEST_CASE("Recovery: a corrupt snapshot with no stand-in is DataLoss",
          "[storage][recovery]") {
  FakeLog log(41, 100, 90);
  CHECK(absl::IsDataLoss(
      PlanRecovery(log, Applied(0, 0), {CorruptMeta(60)}).status()));
  CHECK(absl::IsDataLoss(
      PlanRecovery(log, Applied(0, 0), {CorruptData(60)}).status()));
}

TEST_CASE("Recovery: a compacted log without any snapshot is DataLoss",
          "[storage][recovery]") {
  FakeLog log(41, 100, 90);
  absl::StatusOr<RecoveryPlan> plan = PlanRecovery(log, Applied(0, 0), {});
  CHECK(absl::IsDataLoss(plan.status()));
}

TEST_CASE("Recovery: a persistent state machine resumes at A",
          "[storage][recovery]") {
  FakeLog log(41, 100, 70);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(80), {Good(50)});
  REQUIRE(plan.ok());
  CHECK(!plan->restore);
  CHECK(plan->applied == LogIndex(80));
  // commit = max(C, A): A's entries were applied, so they were committed.
  CHECK(plan->commit == LogIndex(80));
}

TEST_CASE("Recovery: A may stand in for a corrupt newer snapshot",
          "[storage][recovery]") {
  FakeLog log(41, 100, 70);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(45), {CorruptData(60)});
  REQUIRE(plan.ok());
  CHECK(!plan->restore);
  CHECK(plan->applied == LogIndex(45));
}

TEST_CASE(
    "Recovery: a persistent state machine behind the compaction point "
    "restores a newer snapshot",
    "[storage][recovery]") {
  FakeLog log(61, 100, 70);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(45), {Good(60)});
  REQUIRE(plan.ok());
  REQUIRE(plan->restore);
  CHECK(plan->applied == LogIndex(60));
  CHECK(absl::IsDataLoss(PlanRecovery(log, Applied(45), {}).status()));
}

TEST_CASE("Recovery: A past both the log and the snapshots is DataLoss",
          "[storage][recovery]") {
  FakeLog log(1, 100, 100);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(101), {Good(50)});
  REQUIRE(absl::IsDataLoss(plan.status()));
  CHECK(plan.status().message().find("applied through 101") !=
        absl::string_view::npos);
}

TEST_CASE("Recovery: a term at A that differs from the log is DataLoss",
          "[storage][recovery]") {
  FakeLog log(1, 100, 100);
  log.terms_[80] = 3;
  CHECK(PlanRecovery(log, Applied(80, 3), {}).ok());
  absl::StatusOr<RecoveryPlan> plan = PlanRecovery(log, Applied(80, 2), {});
  REQUIRE(absl::IsDataLoss(plan.status()));
  CHECK(plan.status().message().find("different histories") !=
        absl::string_view::npos);
}

TEST_CASE("Recovery: a stored commit past the log's end is DataLoss",
          "[storage][recovery]") {
  FakeLog log(1, 100, 101);
  CHECK(absl::IsDataLoss(PlanRecovery(log, Applied(0, 0), {}).status()));
}

TEST_CASE("Recovery: a snapshot past the log's end was never installed",
          "[storage][recovery]") {
  // Crash between publishing a received snapshot and persisting its
  // metadata: the log does not know it.
  FakeLog log(1, 100, 90);
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {Good(150, 2), Good(50)});
  REQUIRE(plan.ok());
  CHECK(Contains(plan->discard, 150));
  CHECK(plan->restore->index == LogIndex(50));
}

TEST_CASE(
    "Recovery: a snapshot contradicting the log is discarded unless the "
    "log records it",
    "[storage][recovery]") {
  FakeLog log(1, 100, 40);
  log.terms_[60] = 1;
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, Applied(0, 0), {Good(60, 2), Good(50)});
  REQUIRE(plan.ok());
  CHECK(Contains(plan->discard, 60));
  CHECK(plan->restore->index == LogIndex(50));

  log.recorded_ = Meta(60, 2);
  CHECK(absl::IsDataLoss(
      PlanRecovery(log, Applied(0, 0), {Good(60, 2), Good(50)}).status()));
}

TEST_CASE(
    "Recovery: a recorded snapshot that is missing must be produced again",
    "[storage][recovery]") {
  FakeLog log(1, 100, 90);
  log.recorded_ = Meta(70);
  absl::StatusOr<RecoveryPlan> plan = PlanRecovery(log, Applied(80), {});
  REQUIRE(plan.ok());
  CHECK(plan->snapshot_needed);
  plan = PlanRecovery(log, Applied(80), {CorruptData(70)});
  REQUIRE(plan.ok());
  // A = 80 is newer, so snapshot 70 is not even read; but it is recorded and
  // not verified here, so nothing is claimed about it.
  CHECK(!plan->snapshot_needed);
}

}  // namespace
}  // namespace driftwood::raft
