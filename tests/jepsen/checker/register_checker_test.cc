// The linearizable-register checker (jepsen/checker/register_checker.h):
// linearizable histories pass, including info ops that take effect late or
// never; stale reads, lost writes, reads of unwritten values and wrong cas
// fail with the culprit named; generated histories of 10k ops pass fast, and
// a single injected stale read in them is found.
#include "jepsen/checker/register_checker.h"

#include <chrono>
#include <cstdint>
#include <random>
#include <string>

#include "catch2/catch.hpp"
#include "tests/jepsen/checker/history_builder.h"
#include "tests/jepsen/checker/random_history.h"

namespace driftwood::jepsen {
namespace {

using testing::HistoryBuilder;

RegisterResult Check(const History& history,
                     const RegisterOptions& options = {}) {
  INFO((history.errors.empty() ? "" : history.errors.front().message));
  REQUIRE(history.valid());
  return CheckRegisters(history, options);
}

// The op id of the op invoked at `index`.
size_t OpAt(const History& history, int64_t index) {
  for (size_t id = 0; id < history.ops.size(); ++id) {
    if (history.ops[id].invoke_index == index) return id;
  }
  FAIL("no op invoked at index " << index);
  return 0;
}

TEST_CASE("register: sequential ops are linearizable", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Read(1, "x", 0, 10, "null")
                              .Write(1, "x", 20, 30, 1)
                              .Read(2, "x", 40, 50, "1")
                              .Cas(2, "x", 60, 70, 1, 2)
                              .Cas(1, "x", 80, 90, 1, 3, "fail")
                              .Read(1, "x", 100, 110, "2")
                              .Write(3, "y", 0, 5, 7)
                              .Read(3, "y", 6, 9, "7")
                              .Build();
  const RegisterResult result = Check(history);
  CHECK(result.verdict == Verdict::kValid);
  CHECK(result.keys == 2);
  CHECK(result.failures.empty());
  CHECK(result.checked_ops == 8);
}

TEST_CASE("register: reads concurrent with overlapping writes see either",
          "[jepsen]") {
  for (const char* seen : {"1", "2"}) {
    INFO("read sees " << seen);
    const History history = HistoryBuilder()
                                .Write(1, "x", 0, 100, 1)
                                .Write(2, "x", 10, 90, 2)
                                .Read(3, "x", 20, 80, seen)
                                .Read(4, "x", 30, 200, seen)
                                .Build();
    CHECK(Check(history).verdict == Verdict::kValid);
  }
  // Both values, in both orders, by overlapping readers.
  const History both = HistoryBuilder()
                           .Write(1, "x", 0, 100, 1)
                           .Write(2, "x", 10, 90, 2)
                           .Read(3, "x", 20, 50, "1")
                           .Read(4, "x", 60, 95, "2")
                           .Build();
  CHECK(Check(both).verdict == Verdict::kValid);
  // A call and a return at the same time are concurrent.
  const History tie = HistoryBuilder()
                          .Write(1, "x", 0, 10, 1)
                          .Read(2, "x", 10, 20, "null")
                          .Build();
  CHECK(Check(tie).verdict == Verdict::kValid);
  const History after = HistoryBuilder()
                            .Write(1, "x", 0, 10, 1)
                            .Read(2, "x", 11, 20, "null")
                            .Build();
  CHECK(Check(after).verdict == Verdict::kInvalid);
}

TEST_CASE("register: info writes may take effect late, or never", "[jepsen]") {
  // The info write of 2 becomes visible long after its completion.
  const History late = HistoryBuilder()
                           .Write(1, "x", 0, 10, 1)
                           .Write(2, "x", 20, 30, 2, "info")
                           .Read(3, "x", 40, 50, "1")
                           .Read(3, "x", 60, 70, "1")
                           .Read(3, "x", 500, 510, "2")
                           .Read(4, "x", 600, 610, "2")
                           .Build();
  CHECK(Check(late).verdict == Verdict::kValid);
  // Never visible, and an open write never completing.
  const History never = HistoryBuilder()
                            .Write(1, "x", 0, 10, 1)
                            .Write(2, "x", 20, 30, 2, "info")
                            .Write(5, "x", 25, 0, 3, "")
                            .Read(3, "x", 40, 50, "1")
                            .Read(3, "x", 500, 510, "1")
                            .Build();
  CHECK(never.open_ops.size() == 1);
  CHECK(Check(never).verdict == Verdict::kValid);
  // An info cas takes effect only from the value it expects.
  const History info_cas = HistoryBuilder()
                               .Write(1, "x", 0, 10, 1)
                               .Cas(2, "x", 20, 30, 1, 5, "info")
                               .Read(3, "x", 40, 50, "5")
                               .Build();
  CHECK(Check(info_cas).verdict == Verdict::kValid);
  const History info_cas_wrong = HistoryBuilder()
                                     .Write(1, "x", 0, 10, 1)
                                     .Cas(2, "x", 20, 30, 4, 5, "info")
                                     .Read(3, "x", 40, 50, "5")
                                     .Build();
  CHECK(Check(info_cas_wrong).verdict == Verdict::kInvalid);
  // Fail ops and info reads are ignored.
  const History ignored = HistoryBuilder()
                              .Write(1, "x", 0, 10, 1)
                              .Write(2, "x", 20, 30, 9, "fail")
                              .Read(3, "x", 40, 50, "", "info")
                              .Read(4, "x", 60, 70, "1")
                              .Build();
  CHECK(Check(ignored).verdict == Verdict::kValid);
}

TEST_CASE("register: cas succeeds and fails by the register's value",
          "[jepsen]") {
  const History history = HistoryBuilder()
                              .Write(1, "x", 0, 10, 1)
                              .Cas(1, "x", 20, 30, 1, 2)
                              .Cas(2, "x", 25, 35, 1, 3, "fail")
                              .Cas(3, "x", 40, 50, 2, 4)
                              .Read(1, "x", 60, 70, "4")
                              .Build();
  CHECK(Check(history).verdict == Verdict::kValid);
}

TEST_CASE("register: a stale read is not linearizable", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Fault("partition", 35, 200)
                              .Write(1, "x", 0, 10, 1)
                              .Write(1, "x", 20, 30, 2)
                              .Read(2, "x", 40, 50, "1")
                              .Read(3, "x", 45, 60, "2")
                              .Build();
  const RegisterResult result = Check(history);
  CHECK(result.verdict == Verdict::kInvalid);
  REQUIRE(result.failures.size() == 1);
  const RegisterKeyResult& key = result.failures[0];
  CHECK(key.verdict == Verdict::kInvalid);
  CHECK(history.keys[key.key] == "x");
  const size_t stale = OpAt(history, history.ops[2].invoke_index);
  CHECK(key.culprit == stale);
  CHECK(key.state_present);
  CHECK(key.state_value == 2);
  INFO(key.reason);
  CHECK(key.reason.find("read -> 1") != std::string::npos);
  REQUIRE_FALSE(key.shown_ops.empty());
  CHECK(key.shown_ops[0] == stale);
  CHECK(key.shown_ops.size() <= RegisterKeyResult::kMaxShownOps);
  // The write it should have seen, and the concurrent read.
  CHECK(std::find(key.shown_ops.begin(), key.shown_ops.end(), 1) !=
        key.shown_ops.end());
  CHECK(std::find(key.shown_ops.begin(), key.shown_ops.end(), 3) !=
        key.shown_ops.end());
  CHECK(DescribeOp(history, history.ops[stale]).find("faults: partition") !=
        std::string::npos);
}

TEST_CASE("register: a lost write is not linearizable", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Write(1, "x", 0, 10, 1)
                              .Write(2, "x", 20, 30, 2)
                              .Read(3, "x", 40, 50, "1")
                              .Build();
  const RegisterResult result = Check(history);
  CHECK(result.verdict == Verdict::kInvalid);
  REQUIRE(result.failures.size() == 1);
  CHECK(result.failures[0].culprit == 2);
}

TEST_CASE("register: a read of a value nobody wrote", "[jepsen]") {
  const History history = HistoryBuilder()
                              .Write(1, "x", 0, 10, 1)
                              .Read(2, "x", 5, 50, "99")
                              .Build();
  const RegisterResult result = Check(history);
  CHECK(result.verdict == Verdict::kInvalid);
  REQUIRE(result.failures.size() == 1);
  INFO(result.failures[0].reason);
  CHECK(result.failures[0].culprit == 1);
  CHECK(result.failures[0].reason.find(
            "no ok or info op writes 99 to x before it returns") !=
        std::string::npos);
}

TEST_CASE("register: a cas that succeeded against the wrong value",
          "[jepsen]") {
  const History history = HistoryBuilder()
                              .Write(1, "x", 0, 10, 1)
                              .Write(1, "x", 20, 30, 2)
                              .Cas(2, "x", 40, 50, 1, 3)
                              .Build();
  const RegisterResult result = Check(history);
  CHECK(result.verdict == Verdict::kInvalid);
  REQUIRE(result.failures.size() == 1);
  CHECK(result.failures[0].culprit == 2);
  // Only one key of several fails.
  const History mixed = HistoryBuilder()
                            .Write(1, "ok", 0, 10, 1)
                            .Read(1, "ok", 20, 30, "1")
                            .Cas(2, "bad", 0, 10, 5, 6)
                            .Build();
  const RegisterResult mixed_result = Check(mixed);
  CHECK(mixed_result.verdict == Verdict::kInvalid);
  REQUIRE(mixed_result.failures.size() == 1);
  CHECK(mixed.keys[mixed_result.failures[0].key] == "bad");
  CHECK(mixed_result.checked_ops == 3);
}

TEST_CASE(
    "register: info writes whose value nobody observes are left out of the "
    "search",
    "[jepsen]") {
  HistoryBuilder builder;
  for (int i = 0; i < 60; ++i) {
    builder.Write(i, "z", i, 1000 + i, i + 1, "info");
  }
  builder.Write(100, "z", 0, 2000, 7000);
  builder.Read(101, "z", 2100, 2110, "7000");
  const RegisterResult valid =
      Check(builder.Build(), RegisterOptions{.key_budget_seconds = 5});
  CHECK(valid.verdict == Verdict::kValid);
  // One observed info write stays in and still explains a read.
  HistoryBuilder observed;
  for (int i = 0; i < 60; ++i) {
    observed.Write(i, "z", i, 1000 + i, i + 1, "info");
  }
  observed.Read(101, "z", 2100, 2110, "17");
  CHECK(Check(observed.Build(), RegisterOptions{.key_budget_seconds = 5})
            .verdict == Verdict::kValid);
  // A read of a value no write wrote is still invalid.
  HistoryBuilder impossible;
  for (int i = 0; i < 60; ++i) {
    impossible.Write(i, "z", i, 1000 + i, i + 1, "info");
  }
  impossible.Read(101, "z", 2100, 2110, "1000");
  CHECK(Check(impossible.Build(), RegisterOptions{.key_budget_seconds = 5})
            .verdict == Verdict::kInvalid);
}

TEST_CASE("register: keys over the op cap or the time budget are unknown",
          "[jepsen]") {
  HistoryBuilder builder;
  for (int i = 0; i < 20; ++i) {
    builder.Write(i, "x", i * 10, i * 10 + 5, i);
  }
  builder.Write(100, "y", 0, 5, 1);
  const History history = builder.Build();
  const RegisterResult capped =
      Check(history, RegisterOptions{.max_ops_per_key = 10});
  CHECK(capped.verdict == Verdict::kUnknown);
  REQUIRE(capped.failures.size() == 1);
  CHECK(capped.failures[0].verdict == Verdict::kUnknown);
  CHECK(capped.failures[0].reason == "too many ops (20 > 10)");
  CHECK(capped.checked_ops == 1);

  // Many concurrent writes and an impossible read: the search has
  // exponentially many configurations to try. (Info writes whose value no
  // op observes would be left out, which makes this easy.)
  HistoryBuilder hard;
  for (int i = 0; i < 40; ++i) {
    hard.Write(i, "z", i, 1000 + i, i + 1);
  }
  hard.Read(100, "z", 2000, 2010, "1000");
  const auto start = std::chrono::steady_clock::now();
  const RegisterResult budget =
      Check(hard.Build(), RegisterOptions{.key_budget_seconds = 0.2});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  CHECK(budget.verdict == Verdict::kUnknown);
  REQUIRE(budget.failures.size() == 1);
  CHECK(budget.failures[0].reason.find("time budget of 0.2 s exhausted") !=
        std::string::npos);
  CHECK(seconds < 5);
}

TEST_CASE("register: generated linearizable histories pass, fast", "[jepsen]") {
  const uint64_t seed = std::random_device()();
  INFO("seed " << seed);
  const std::vector<testing::Event> events = testing::GenerateRandomHistory(
      testing::RandomHistoryOptions{.seed = seed});
  const History history = ParseHistoryText(testing::ToJsonLines(events));
  REQUIRE(history.ops.size() == 10'000);
  CHECK(history.keys.size() == 50);
  const auto start = std::chrono::steady_clock::now();
  const RegisterResult result = Check(history);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  for (const RegisterKeyResult& key : result.failures) {
    INFO("key " << history.keys[key.key] << ": " << key.reason);
    for (size_t id : key.shown_ops) {
      INFO(DescribeOp(history, history.ops[id]));
    }
    CHECK(false);
  }
  CHECK(result.verdict == Verdict::kValid);
  CHECK(result.keys == 50);
  CHECK(seconds < 2);

  // Denser: 5 keys of ~1000 ops each, 20 processes.
  const History dense = ParseHistoryText(testing::ToJsonLines(
      testing::GenerateRandomHistory(testing::RandomHistoryOptions{
          .seed = seed, .register_keys = 5, .processes = 20})));
  const RegisterResult dense_result =
      Check(dense, RegisterOptions{.max_ops_per_key = 5000});
  CHECK(dense_result.verdict == Verdict::kValid);
}

TEST_CASE("register: one stale read injected into 10k ops is found",
          "[jepsen]") {
  const uint64_t base = std::random_device()();
  for (uint64_t seed = base; seed < base + 5; ++seed) {
    INFO("seed " << seed);
    std::vector<testing::Event> events = testing::GenerateRandomHistory(
        testing::RandomHistoryOptions{.seed = seed});
    const int64_t position = testing::InjectStaleRead(&events, seed);
    REQUIRE(position >= 0);
    const testing::Event& stale = events[static_cast<size_t>(position)];
    INFO("stale read of " << stale.key << " at index " << position);
    const History history = ParseHistoryText(testing::ToJsonLines(events));
    const RegisterResult result = Check(history);
    CHECK(result.verdict == Verdict::kInvalid);
    REQUIRE(result.failures.size() == 1);
    const RegisterKeyResult& key = result.failures[0];
    CHECK(history.keys[key.key] == stale.key);
    INFO(key.reason);
    CHECK(history.ops[key.culprit].complete_index == position);
  }
}

}  // namespace
}  // namespace driftwood::jepsen
