// The list-append checker (jepsen/checker/append_checker.h): growing reads
// pass; each anomaly (garbage, aborted read, duplicate, incompatible order,
// lost write, stale read, realtime order) is reported under its own name.
#include "jepsen/checker/append_checker.h"

#include <random>
#include <string>

#include "catch2/catch.hpp"
#include "tests/jepsen/checker/history_builder.h"
#include "tests/jepsen/checker/random_history.h"

namespace driftwood::jepsen {
namespace {

using testing::HistoryBuilder;

AppendResult Check(const History& history) {
  INFO((history.errors.empty() ? "" : history.errors.front().message));
  REQUIRE(history.valid());
  return CheckAppends(history);
}

size_t Count(const AppendResult& result, AppendAnomalyKind kind) {
  return result.counts[static_cast<size_t>(kind)];
}

size_t Total(const AppendResult& result) {
  size_t total = 0;
  for (size_t count : result.counts) total += count;
  return total;
}

// The first stored anomaly of `kind`; REQUIREs one.
const AppendAnomaly& First(const AppendResult& result, AppendAnomalyKind kind) {
  for (const AppendAnomaly& anomaly : result.anomalies) {
    if (anomaly.kind == kind) return anomaly;
  }
  FAIL("no " << AnomalyName(kind) << " anomaly");
  return result.anomalies.front();
}

std::string Describe(const AppendResult& result) {
  std::string text;
  for (const AppendAnomaly& anomaly : result.anomalies) {
    text +=
        std::string(AnomalyName(anomaly.kind)) + ": " + anomaly.message + "\n";
  }
  return text;
}

TEST_CASE("append: reads that grow are valid", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Read(1, "l", 0, 5, "[]")
                              .Append(1, "l", 10, 20, 1)
                              .Append(2, "l", 15, 40, 2)
                              .Read(3, "l", 25, 30, "[1]")
                              .Read(3, "l", 45, 50, "[1,2]")
                              .Append(1, "l", 60, 70, 3, "info")
                              .Append(2, "l", 60, 70, 4, "fail")
                              .Read(4, "l", 80, 90, "[1,2]")
                              .Read(4, "l", 100, 110, "[1,2,3]")
                              .Append(5, "l", 200, 210, 5)
                              .Append(6, "m", 0, 10, 1)
                              .Read(6, "m", 20, 30, "[1]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(result.verdict == Verdict::kValid);
  CHECK(Total(result) == 0);
  CHECK(result.keys == 2);
  CHECK(result.appends_ok == 4);
  CHECK(result.appends_info == 1);
  CHECK(result.appends_fail == 1);
  CHECK(result.reads == 6);
  CHECK(result.confirmed == 3);
  CHECK(result.unverified == 1);  // append 5: no read after it
  CHECK(result.checked_ops == 12);
}

TEST_CASE("append: a lost write", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Append(2, "l", 20, 30, 2)
                              .Read(3, "l", 40, 50, "[1]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(result.verdict == Verdict::kInvalid);
  CHECK(Count(result, AppendAnomalyKind::kLostWrite) == 1);
  CHECK(Total(result) == 1);
  const AppendAnomaly& lost = First(result, AppendAnomalyKind::kLostWrite);
  CHECK(lost.ops == std::vector<size_t>{1, 2});
  CHECK(lost.message.find("append 2") != std::string::npos);
}

TEST_CASE("append: a stale read, and reads going back in time", "[jepsen]") {
  // The read at 40 misses 2, which later reads have.
  const History stale = HistoryBuilder()
                            .Append(1, "l", 0, 10, 1)
                            .Append(2, "l", 20, 30, 2)
                            .Read(3, "l", 40, 50, "[1]")
                            .Read(4, "l", 60, 70, "[1,2]")
                            .Build();
  const AppendResult result = Check(stale);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kStaleRead) == 1);
  CHECK(Count(result, AppendAnomalyKind::kLostWrite) == 0);
  CHECK(First(result, AppendAnomalyKind::kStaleRead).ops[0] == 2);

  // Monotonic reads: [1,2] then, later, [1] (2 was an info append).
  const History back = HistoryBuilder()
                           .Append(1, "l", 0, 10, 1)
                           .Append(2, "l", 5, 15, 2, "info")
                           .Read(3, "l", 20, 30, "[1,2]")
                           .Read(4, "l", 40, 50, "[1]")
                           .Read(4, "l", 60, 70, "[1,2]")
                           .Build();
  const AppendResult back_result = Check(back);
  INFO(Describe(back_result));
  CHECK(Count(back_result, AppendAnomalyKind::kStaleRead) == 1);
  CHECK(Total(back_result) == 1);
  CHECK(First(back_result, AppendAnomalyKind::kStaleRead).ops ==
        std::vector<size_t>{3, 2});
}

TEST_CASE("append: a duplicate apply", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Append(2, "l", 20, 30, 2)
                              .Read(3, "l", 40, 50, "[1,2,2]")
                              .Read(3, "l", 60, 70, "[1,2,2]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kDuplicate) == 1);
  CHECK(Total(result) == 1);
  CHECK(First(result, AppendAnomalyKind::kDuplicate)
            .message.find("holds 2 more than once") != std::string::npos);
}

TEST_CASE("append: a read of an element nobody appended", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Read(3, "l", 40, 50, "[1,99]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kGarbage) == 1);
  CHECK(Total(result) == 1);
  CHECK(First(result, AppendAnomalyKind::kGarbage).message.find("99") !=
        std::string::npos);
}

TEST_CASE("append: a read of an element appended only after it", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Read(3, "l", 20, 30, "[1,2]")
                              .Append(2, "l", 40, 50, 2)
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kFutureRead) == 1);
  CHECK(Total(result) == 1);
  CHECK(First(result, AppendAnomalyKind::kFutureRead).message.find("2") !=
        std::string::npos);
}

TEST_CASE("append: an aborted read", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Append(2, "l", 0, 10, 2, "fail")
                              .Read(3, "l", 40, 50, "[1,2]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kAbortedRead) == 1);
  CHECK(Total(result) == 1);
  CHECK(First(result, AppendAnomalyKind::kAbortedRead).ops ==
        std::vector<size_t>{2, 1});
}

TEST_CASE("append: reads in incompatible orders", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Append(2, "l", 0, 10, 2)
                              .Read(3, "l", 40, 50, "[2,1]")
                              .Read(4, "l", 40, 50, "[1,2]")
                              .Read(4, "l", 60, 70, "[1,2]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kIncompatibleOrder) == 1);
  CHECK(Total(result) == 1);
  const AppendAnomaly& anomaly =
      First(result, AppendAnomalyKind::kIncompatibleOrder);
  CHECK(anomaly.ops == std::vector<size_t>{2, 4});
  CHECK(anomaly.message.find("position 0 holds 2 there and 1") !=
        std::string::npos);
}

TEST_CASE("append: appends out of real-time order", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Append(1, "l", 0, 10, 1)
                              .Append(2, "l", 20, 30, 2)
                              .Read(3, "l", 25, 50, "[2,1]")
                              .Build();
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(Count(result, AppendAnomalyKind::kRealtimeOrder) == 1);
  CHECK(Total(result) == 1);
  CHECK(First(result, AppendAnomalyKind::kRealtimeOrder).ops ==
        std::vector<size_t>{0, 1, 2});

  // The longest read holds the later append but not the earlier one, which
  // no read invoked after it could have seen.
  const History missing = HistoryBuilder()
                              .Read(3, "l", 10, 60, "[2]")
                              .Append(1, "l", 20, 30, 1)
                              .Append(2, "l", 40, 50, 2)
                              .Build();
  const AppendResult missing_result = Check(missing);
  INFO(Describe(missing_result));
  CHECK(Count(missing_result, AppendAnomalyKind::kRealtimeOrder) == 1);
  CHECK(Total(missing_result) == 1);
  CHECK(missing_result.unverified == 2);
  CHECK(First(missing_result, AppendAnomalyKind::kRealtimeOrder)
            .message.find("has 2 and not 1") != std::string::npos);
}

TEST_CASE("append: generated list histories are valid", "[jepsen]") {
  const uint64_t seed = std::random_device()();
  INFO("seed " << seed);
  const History history = ParseHistoryText(testing::ToJsonLines(
      testing::GenerateRandomHistory(testing::RandomHistoryOptions{
          .seed = seed, .register_keys = 0, .list_keys = 40})));
  const AppendResult result = Check(history);
  INFO(Describe(result));
  CHECK(result.verdict == Verdict::kValid);
  CHECK(result.keys == 40);
  CHECK(result.confirmed > 1000);
}

}  // namespace
}  // namespace driftwood::jepsen
