// Unit tests for raft/core/inflights.h: the window of AppendEntries in flight.
#include "raft/core/inflights.h"

#include <catch2/catch.hpp>
#include <cstdint>

#include "raft/core/types.h"

namespace driftwood::raft::internal {
namespace {

TEST_CASE("Inflights starts empty and not full", "[unit]") {
  Inflights inflights(3, 100);
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
  CHECK_FALSE(inflights.Full());
}

TEST_CASE("Inflights is full by message count", "[unit]") {
  Inflights inflights(3, 0);
  inflights.Add(LogIndex(1), 10);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(2), 10);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(5), 10);
  CHECK(inflights.Full());
  CHECK(inflights.count() == 3);
  CHECK(inflights.bytes() == 30);
}

TEST_CASE("Inflights with one message slot is full after one message",
          "[unit]") {
  Inflights inflights(1, 0);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(4), 1);
  CHECK(inflights.Full());
  inflights.FreeUpTo(LogIndex(4));
  CHECK_FALSE(inflights.Full());
}

TEST_CASE("Inflights is full by bytes", "[unit]") {
  Inflights inflights(100, 50);
  inflights.Add(LogIndex(1), 20);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(2), 20);
  CHECK_FALSE(inflights.Full());
  CHECK(inflights.bytes() == 40);
  // Below the limit a message may still go, even one that crosses it.
  inflights.Add(LogIndex(3), 30);
  CHECK(inflights.bytes() == 70);
  CHECK(inflights.Full());
}

TEST_CASE("Inflights is full when bytes reach the limit exactly", "[unit]") {
  Inflights inflights(100, 50);
  inflights.Add(LogIndex(1), 25);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(2), 25);
  CHECK(inflights.bytes() == 50);
  CHECK(inflights.Full());
  inflights.FreeUpTo(LogIndex(1));
  CHECK(inflights.bytes() == 25);
  CHECK_FALSE(inflights.Full());
}

TEST_CASE("An empty Inflights window admits one message bigger than max_bytes",
          "[unit]") {
  Inflights inflights(10, 100);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(7), 1000);
  CHECK(inflights.count() == 1);
  CHECK(inflights.bytes() == 1000);
  CHECK(inflights.Full());
  inflights.FreeUpTo(LogIndex(7));
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
  CHECK_FALSE(inflights.Full());
  // And again: the window never wedges on a big message.
  inflights.Add(LogIndex(8), 5000);
  CHECK(inflights.Full());
}

TEST_CASE("Inflights with max_bytes 0 has no byte limit", "[unit]") {
  Inflights inflights(5, 0);
  inflights.Add(LogIndex(1), uint64_t{1} << 40);
  CHECK_FALSE(inflights.Full());
  inflights.Add(LogIndex(2), uint64_t{1} << 40);
  inflights.Add(LogIndex(3), uint64_t{1} << 40);
  inflights.Add(LogIndex(4), uint64_t{1} << 40);
  CHECK_FALSE(inflights.Full());
  CHECK(inflights.bytes() == (uint64_t{4} << 40));
  inflights.Add(LogIndex(5), 0);
  // Only the message count limits it.
  CHECK(inflights.Full());
}

TEST_CASE("Inflights::FreeUpTo frees exactly messages with last_index <= index",
          "[unit]") {
  Inflights inflights(10, 0);
  inflights.Add(LogIndex(3), 1);
  inflights.Add(LogIndex(6), 2);
  inflights.Add(LogIndex(9), 4);
  inflights.Add(LogIndex(12), 8);
  CHECK(inflights.count() == 4);
  CHECK(inflights.bytes() == 15);

  SECTION("an index below every message frees nothing") {
    inflights.FreeUpTo(LogIndex(2));
    CHECK(inflights.count() == 4);
    CHECK(inflights.bytes() == 15);
    inflights.FreeUpTo(LogIndex(0));
    CHECK(inflights.count() == 4);
    CHECK(inflights.bytes() == 15);
  }
  SECTION("an index equal to a message's last index frees it") {
    inflights.FreeUpTo(LogIndex(3));
    CHECK(inflights.count() == 3);
    CHECK(inflights.bytes() == 14);
  }
  SECTION("an index inside a message does not free it") {
    inflights.FreeUpTo(LogIndex(8));
    CHECK(inflights.count() == 2);
    CHECK(inflights.bytes() == 12);
    // Freeing again at a lower (stale) index changes nothing.
    inflights.FreeUpTo(LogIndex(4));
    CHECK(inflights.count() == 2);
    CHECK(inflights.bytes() == 12);
    inflights.FreeUpTo(LogIndex(9));
    CHECK(inflights.count() == 1);
    CHECK(inflights.bytes() == 8);
  }
  SECTION("the last index frees everything") {
    inflights.FreeUpTo(LogIndex(12));
    CHECK(inflights.count() == 0);
    CHECK(inflights.bytes() == 0);
  }
  SECTION("an index beyond everything frees everything") {
    inflights.FreeUpTo(LogIndex(100));
    CHECK(inflights.count() == 0);
    CHECK(inflights.bytes() == 0);
    // Adding after freeing all works with any higher index.
    inflights.Add(LogIndex(101), 5);
    CHECK(inflights.count() == 1);
    CHECK(inflights.bytes() == 5);
  }
}

TEST_CASE("Inflights::FreeUpTo on an empty window is a no-op", "[unit]") {
  Inflights inflights(2, 10);
  inflights.FreeUpTo(LogIndex(5));
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
  CHECK_FALSE(inflights.Full());
}

TEST_CASE("Inflights::FreeFirst frees the oldest message", "[unit]") {
  Inflights inflights(3, 0);
  inflights.Add(LogIndex(2), 5);
  inflights.Add(LogIndex(4), 7);
  inflights.Add(LogIndex(6), 11);
  CHECK(inflights.Full());

  inflights.FreeFirst();
  CHECK(inflights.count() == 2);
  CHECK(inflights.bytes() == 18);
  CHECK_FALSE(inflights.Full());

  // The remaining messages are the newer ones: freeing up to 4 frees one more.
  inflights.FreeUpTo(LogIndex(4));
  CHECK(inflights.count() == 1);
  CHECK(inflights.bytes() == 11);

  inflights.FreeFirst();
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
  // On an empty window it does nothing.
  inflights.FreeFirst();
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
}

TEST_CASE("Inflights::FreeFirst unblocks a window full by bytes", "[unit]") {
  Inflights inflights(10, 10);
  inflights.Add(LogIndex(1), 6);
  inflights.Add(LogIndex(2), 6);
  CHECK(inflights.Full());
  inflights.FreeFirst();
  CHECK(inflights.bytes() == 6);
  CHECK_FALSE(inflights.Full());
}

TEST_CASE("Inflights::Reset empties the window", "[unit]") {
  Inflights inflights(2, 100);
  inflights.Add(LogIndex(10), 60);
  inflights.Add(LogIndex(20), 60);
  CHECK(inflights.Full());
  inflights.Reset();
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
  CHECK_FALSE(inflights.Full());
  // After a reset, indexes may start over (e.g. after the follower was probed
  // back to a lower index).
  inflights.Add(LogIndex(5), 1);
  CHECK(inflights.count() == 1);
  CHECK(inflights.bytes() == 1);
}

TEST_CASE("Inflights byte accounting follows adds and frees", "[unit]") {
  Inflights inflights(100, 0);
  uint64_t expected = 0;
  for (uint64_t i = 1; i <= 20; ++i) {
    inflights.Add(LogIndex(i * 2), i);
    expected += i;
    CHECK(inflights.bytes() == expected);
  }
  CHECK(inflights.count() == 20);
  // Free the messages ending at 2..20 (i = 1..10).
  inflights.FreeUpTo(LogIndex(21));
  expected -= 55;
  CHECK(inflights.count() == 10);
  CHECK(inflights.bytes() == expected);
  inflights.FreeFirst();  // i = 11
  expected -= 11;
  CHECK(inflights.bytes() == expected);
  inflights.FreeUpTo(LogIndex(40));
  CHECK(inflights.count() == 0);
  CHECK(inflights.bytes() == 0);
}

}  // namespace
}  // namespace driftwood::raft::internal
