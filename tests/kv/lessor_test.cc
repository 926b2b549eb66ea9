// Lessor (examples/kv/lessor.h) on a fake monotonic clock: the minimum TTL,
// keep-alives and Remaining only on the primary, expiry TTL seconds after a
// grant or a keep-alive, expired leases reported once per retry interval,
// Promote giving every lease a full TTL, Revoked, Reset and rounding.
#include "examples/kv/lessor.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace driftwood::kv {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A clock the test moves by hand. It starts well after the clock's epoch
// (the Lessor keeps the epoch as "never").
class FakeClock {
 public:
  std::chrono::steady_clock::time_point now() const { return now_; }
  void Advance(std::chrono::steady_clock::duration by) { now_ += by; }
  Lessor::Clock AsClock() const {
    return [this] { return now_; };
  }

 private:
  std::chrono::steady_clock::time_point now_{std::chrono::hours(1000)};
};

int64_t RenewOk(Lessor& lessor, int64_t id) {
  absl::StatusOr<int64_t> ttl = lessor.Renew(id);
  INFO("Renew " << id << ": " << ttl.status().ToString());
  REQUIRE(ttl.ok());
  return *ttl;
}

std::optional<int64_t> RemainingOk(const Lessor& lessor, int64_t id) {
  absl::StatusOr<std::optional<int64_t>> remaining = lessor.Remaining(id);
  INFO("Remaining " << id << ": " << remaining.status().ToString());
  REQUIRE(remaining.ok());
  return *remaining;
}

using Ids = std::vector<int64_t>;

TEST_CASE("lessor: short TTLs are raised to the minimum",
          "[statemachine][lessor]") {
  Lessor lessor(5);
  CHECK(lessor.GrantedTTL(-3) == 5);
  CHECK(lessor.GrantedTTL(0) == 5);
  CHECK(lessor.GrantedTTL(1) == 5);
  CHECK(lessor.GrantedTTL(5) == 5);
  CHECK(lessor.GrantedTTL(6) == 6);
  CHECK(lessor.GrantedTTL(3600) == 3600);
}

TEST_CASE(
    "lessor: Renew and Remaining need the primary, and TakeExpired is empty "
    "elsewhere",
    "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock());
  lessor.Granted(1, 10);
  CHECK_FALSE(lessor.primary());
  CHECK(lessor.Renew(1).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(lessor.Remaining(1).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  clock.Advance(seconds(60));  // long expired
  CHECK(lessor.TakeExpired(10).empty());

  lessor.Promote();
  CHECK(lessor.primary());
  CHECK(RenewOk(lessor, 1) == 10);
  CHECK(RemainingOk(lessor, 1) == 10);

  lessor.Demote();
  CHECK_FALSE(lessor.primary());
  CHECK(lessor.Renew(1).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(lessor.Remaining(1).status().code() ==
        absl::StatusCode::kFailedPrecondition);
  clock.Advance(seconds(60));
  CHECK(lessor.TakeExpired(10).empty());
  CHECK(lessor.size() == 1);
}

TEST_CASE(
    "lessor: a lease expires TTL seconds after its grant, and Renew moves "
    "its expiry to now + TTL",
    "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock());
  lessor.Promote();
  lessor.Granted(1, 10);
  lessor.Granted(2, 10);

  clock.Advance(seconds(5));
  CHECK(RenewOk(lessor, 1) == 10);  // lease 1 now expires at +15 s
  clock.Advance(milliseconds(4999));
  CHECK(lessor.TakeExpired(10).empty());
  clock.Advance(milliseconds(1));  // +10 s: lease 2's expiry
  CHECK(lessor.TakeExpired(10) == Ids{2});
  // An expired lease stays expired: its keep-alive answers 0.
  CHECK(RenewOk(lessor, 2) == 0);
  CHECK(RemainingOk(lessor, 2) == 0);
  CHECK(RemainingOk(lessor, 1) == 5);
  lessor.Revoked(2);  // its revoke was applied

  clock.Advance(milliseconds(4999));  // +14.999 s
  CHECK(lessor.TakeExpired(10).empty());
  clock.Advance(milliseconds(1));  // +15 s
  CHECK(lessor.TakeExpired(10) == Ids{1});
  CHECK(RenewOk(lessor, 1) == 0);
  // An unknown lease renews to 0 as well.
  CHECK(RenewOk(lessor, 99) == 0);
}

TEST_CASE(
    "lessor: TakeExpired reports an expired lease once per retry "
    "interval until it is revoked",
    "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock(), milliseconds(1000));
  lessor.Promote();
  lessor.Granted(1, 2);
  lessor.Granted(2, 2);
  lessor.Granted(3, 2);
  lessor.Granted(4, 100);
  clock.Advance(seconds(2));

  // A limit: the first two, then the one left.
  CHECK(lessor.TakeExpired(2) == Ids{1, 2});
  CHECK(lessor.TakeExpired(2) == Ids{3});
  CHECK(lessor.TakeExpired(10).empty());
  clock.Advance(milliseconds(999));
  CHECK(lessor.TakeExpired(10).empty());
  clock.Advance(milliseconds(1));  // a retry interval after the first take
  CHECK(lessor.TakeExpired(10) == Ids{1, 2, 3});
  CHECK(lessor.TakeExpired(10).empty());

  // Revoked (the revoke was applied): never reported again.
  lessor.Revoked(2);
  clock.Advance(seconds(1));
  CHECK(lessor.TakeExpired(10) == Ids{1, 3});
  lessor.Revoked(1);
  lessor.Revoked(3);
  clock.Advance(seconds(5));
  CHECK(lessor.TakeExpired(10).empty());
  CHECK(lessor.size() == 1);
}

TEST_CASE("lessor: Promote gives every lease a full TTL from now",
          "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock());
  SECTION("leases granted on a follower, long before") {
    lessor.Granted(1, 10);
    lessor.Granted(2, 30);
    // Under the clock of the member that granted them, both are expired.
    clock.Advance(seconds(100));
    lessor.Promote();
    CHECK(lessor.TakeExpired(10).empty());
    CHECK(RemainingOk(lessor, 1) == 10);
    CHECK(RemainingOk(lessor, 2) == 30);
    clock.Advance(milliseconds(9999));
    CHECK(lessor.TakeExpired(10).empty());
    clock.Advance(milliseconds(1));  // now + 10 s
    CHECK(lessor.TakeExpired(10) == Ids{1});
    lessor.Revoked(1);
    clock.Advance(seconds(20));  // now + 30 s
    CHECK(lessor.TakeExpired(10) == Ids{2});
  }
  SECTION("leadership lost and regained") {
    lessor.Promote();
    lessor.Granted(1, 10);
    clock.Advance(seconds(8));
    lessor.Demote();
    clock.Advance(seconds(1));
    lessor.Promote();           // expiry: 9 s + 10 s instead of 10 s
    clock.Advance(seconds(5));  // the old expiry passed
    CHECK(lessor.TakeExpired(10).empty());
    CHECK(RemainingOk(lessor, 1) == 5);
    clock.Advance(seconds(5));
    CHECK(lessor.TakeExpired(10) == Ids{1});
  }
  SECTION("an expired lease whose revoke was proposed") {
    lessor.Promote();
    lessor.Granted(1, 10);
    clock.Advance(seconds(10));
    CHECK(lessor.TakeExpired(10) == Ids{1});
    // The revoke was lost with the leadership; the new term starts afresh.
    lessor.Demote();
    lessor.Promote();
    CHECK(lessor.TakeExpired(10).empty());
    CHECK(RenewOk(lessor, 1) == 10);
    clock.Advance(seconds(10));
    CHECK(lessor.TakeExpired(10) == Ids{1});
  }
}

TEST_CASE("lessor: Revoked removes a lease", "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock());
  lessor.Promote();
  lessor.Granted(1, 10);
  lessor.Granted(2, 10);
  CHECK(lessor.size() == 2);
  lessor.Revoked(1);
  CHECK(lessor.size() == 1);
  CHECK(RemainingOk(lessor, 1) == std::nullopt);
  CHECK(RenewOk(lessor, 1) == 0);
  CHECK(RemainingOk(lessor, 2) == 10);
  lessor.Revoked(1);  // twice is harmless
  lessor.Revoked(42);
  CHECK(lessor.size() == 1);
  clock.Advance(seconds(10));
  CHECK(lessor.TakeExpired(10) == Ids{2});
}

TEST_CASE(
    "lessor: Reset keeps known expiries and gives unknown leases a "
    "full TTL",
    "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock());
  lessor.Promote();
  lessor.Granted(1, 10);
  lessor.Granted(3, 10);
  clock.Advance(seconds(6));
  lessor.Reset({{1, 10}, {2, 20}});  // 3 is gone, 2 is new
  CHECK(lessor.size() == 2);
  CHECK(RemainingOk(lessor, 1) == 4);
  CHECK(RemainingOk(lessor, 2) == 20);
  CHECK(RemainingOk(lessor, 3) == std::nullopt);
  clock.Advance(seconds(4));
  CHECK(lessor.TakeExpired(10) == Ids{1});
  lessor.Revoked(1);  // its revoke was applied
  clock.Advance(seconds(16));
  CHECK(lessor.TakeExpired(10) == Ids{2});
  // A kept lease renews with the TTL the table gives.
  lessor.Reset({{4, 7}});
  CHECK(lessor.size() == 1);
  CHECK(RenewOk(lessor, 4) == 7);
}

TEST_CASE("lessor: Remaining rounds up and stops at zero",
          "[statemachine][lessor]") {
  FakeClock clock;
  Lessor lessor(1, clock.AsClock());
  lessor.Promote();
  lessor.Granted(1, 10);
  CHECK(RemainingOk(lessor, 1) == 10);
  clock.Advance(milliseconds(1));
  CHECK(RemainingOk(lessor, 1) == 10);  // 9.999 s
  clock.Advance(milliseconds(999));
  CHECK(RemainingOk(lessor, 1) == 9);  // exactly 9 s
  clock.Advance(milliseconds(8001));
  CHECK(RemainingOk(lessor, 1) == 1);  // 0.999 s
  clock.Advance(milliseconds(998));
  CHECK(RemainingOk(lessor, 1) == 1);  // 1 ms
  clock.Advance(milliseconds(1));
  CHECK(RemainingOk(lessor, 1) == 0);
  clock.Advance(seconds(100));
  CHECK(RemainingOk(lessor, 1) == 0);
  CHECK(RemainingOk(lessor, 2) == std::nullopt);
}

}  // namespace
}  // namespace driftwood::kv
