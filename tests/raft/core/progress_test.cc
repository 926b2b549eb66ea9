// Unit tests for raft/core/progress.h: the leader's view of one follower.
#include "raft/core/progress.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>

#include "raft/core/types.h"

namespace driftwood::raft::internal {
namespace {

// A progress in kReplicate with match `match` (next == match + 1).
Progress Replicating(uint64_t match, uint64_t max_messages = 3,
                     uint64_t max_bytes = 0) {
  Progress progress(LogIndex(match + 1), max_messages, max_bytes);
  if (match > 0) progress.MaybeUpdate(LogIndex(match));
  progress.BecomeReplicate();
  return progress;
}

TEST_CASE("Progress starts probing at the given next index", "[unit]") {
  Progress progress(LogIndex(11), 4, 0);
  CHECK(progress.state() == ProgressState::kProbe);
  CHECK(progress.match() == LogIndex(0));
  CHECK(progress.next() == LogIndex(11));
  CHECK_FALSE(progress.probe_sent());
  CHECK_FALSE(progress.Paused());
  CHECK(progress.inflights().count() == 0);
  CHECK_FALSE(progress.recent_active());
}

TEST_CASE("ProgressStateName names every state", "[unit]") {
  CHECK(std::string(ProgressStateName(ProgressState::kProbe)) == "probe");
  CHECK(std::string(ProgressStateName(ProgressState::kReplicate)) ==
        "replicate");
  CHECK(std::string(ProgressStateName(ProgressState::kSnapshot)) == "snapshot");
}

TEST_CASE("recent_active is a plain flag", "[unit]") {
  Progress progress(LogIndex(1), 1, 0);
  progress.set_recent_active(true);
  CHECK(progress.recent_active());
  progress.set_recent_active(false);
  CHECK_FALSE(progress.recent_active());
}

TEST_CASE("Probe pauses after one send until the send is answered", "[unit]") {
  Progress progress(LogIndex(6), 4, 0);
  progress.SentEntries(LogIndex(8), 100, true);
  CHECK(progress.probe_sent());
  CHECK(progress.Paused());
  // Probing does not advance next optimistically nor use the window.
  CHECK(progress.next() == LogIndex(6));
  CHECK(progress.inflights().count() == 0);

  SECTION("an acknowledgement unpauses") {
    CHECK(progress.MaybeUpdate(LogIndex(8)));
    CHECK_FALSE(progress.probe_sent());
    CHECK_FALSE(progress.Paused());
    CHECK(progress.match() == LogIndex(8));
    CHECK(progress.next() == LogIndex(9));
    CHECK(progress.state() == ProgressState::kProbe);
  }
  SECTION("a rejection of the outstanding probe unpauses") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(5), LogIndex(2)));
    CHECK_FALSE(progress.probe_sent());
    CHECK_FALSE(progress.Paused());
    CHECK(progress.next() == LogIndex(3));
  }
  SECTION("a heartbeat response unpauses") {
    progress.OnHeartbeatResponse();
    CHECK_FALSE(progress.probe_sent());
    CHECK_FALSE(progress.Paused());
    CHECK(progress.next() == LogIndex(6));
    CHECK(progress.match() == LogIndex(0));
  }
  SECTION("a stale rejection does not unpause") {
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(3), LogIndex(1)));
    CHECK(progress.probe_sent());
    CHECK(progress.Paused());
  }
}

TEST_CASE("Probe pauses after an empty send too", "[unit]") {
  Progress progress(LogIndex(3), 4, 0);
  progress.SentEntries(LogIndex(2), 0, false);
  CHECK(progress.Paused());
  CHECK(progress.next() == LogIndex(3));
}

TEST_CASE("Replicate advances next optimistically", "[unit]") {
  Progress progress = Replicating(5, 3, 0);
  CHECK(progress.state() == ProgressState::kReplicate);
  CHECK(progress.match() == LogIndex(5));
  CHECK(progress.next() == LogIndex(6));
  CHECK_FALSE(progress.Paused());

  progress.SentEntries(LogIndex(7), 10, true);
  CHECK(progress.next() == LogIndex(8));
  CHECK(progress.match() == LogIndex(5));
  CHECK(progress.inflights().count() == 1);
  CHECK(progress.inflights().bytes() == 10);
  CHECK_FALSE(progress.Paused());
  CHECK_FALSE(progress.probe_sent());

  // A message without entries (a heartbeat-like append) uses no slot.
  progress.SentEntries(LogIndex(7), 0, false);
  CHECK(progress.next() == LogIndex(8));
  CHECK(progress.inflights().count() == 1);
  CHECK_FALSE(progress.Paused());

  progress.SentEntries(LogIndex(9), 10, true);
  CHECK(progress.next() == LogIndex(10));
  CHECK_FALSE(progress.Paused());
  progress.SentEntries(LogIndex(12), 10, true);
  CHECK(progress.next() == LogIndex(13));
  CHECK(progress.inflights().count() == 3);
  // The window holds 3 messages: full.
  CHECK(progress.Paused());

  // Acknowledging the first message frees its slot.
  CHECK(progress.MaybeUpdate(LogIndex(7)));
  CHECK(progress.match() == LogIndex(7));
  CHECK(progress.next() == LogIndex(13));
  CHECK(progress.inflights().count() == 2);
  CHECK_FALSE(progress.Paused());

  // Acknowledging everything empties the window.
  CHECK(progress.MaybeUpdate(LogIndex(12)));
  CHECK(progress.inflights().count() == 0);
  CHECK(progress.inflights().bytes() == 0);
  CHECK(progress.next() == LogIndex(13));
}

TEST_CASE("Replicate pauses when the window is full by bytes", "[unit]") {
  Progress progress = Replicating(0, 100, 50);
  progress.SentEntries(LogIndex(1), 30, true);
  CHECK_FALSE(progress.Paused());
  progress.SentEntries(LogIndex(2), 30, true);
  CHECK(progress.Paused());
  CHECK(progress.MaybeUpdate(LogIndex(1)));
  CHECK_FALSE(progress.Paused());
}

TEST_CASE("Replicate admits one message larger than the byte window",
          "[unit]") {
  Progress progress = Replicating(3, 10, 50);
  CHECK_FALSE(progress.Paused());
  progress.SentEntries(LogIndex(4), 5000, true);
  CHECK(progress.next() == LogIndex(5));
  CHECK(progress.Paused());
}

TEST_CASE("MaybeUpdate never moves match or next backwards", "[unit]") {
  Progress progress = Replicating(5, 10, 0);
  progress.SentEntries(LogIndex(10), 1, true);
  REQUIRE(progress.next() == LogIndex(11));

  SECTION("an ack below match is stale") {
    CHECK_FALSE(progress.MaybeUpdate(LogIndex(3)));
    CHECK(progress.match() == LogIndex(5));
    CHECK(progress.next() == LogIndex(11));
    CHECK(progress.inflights().count() == 1);
  }
  SECTION("an ack equal to match is stale") {
    CHECK_FALSE(progress.MaybeUpdate(LogIndex(5)));
    CHECK(progress.match() == LogIndex(5));
    CHECK(progress.next() == LogIndex(11));
  }
  SECTION("an ack below next raises match but leaves next") {
    CHECK(progress.MaybeUpdate(LogIndex(8)));
    CHECK(progress.match() == LogIndex(8));
    CHECK(progress.next() == LogIndex(11));
    // The message ending at 10 is still in flight.
    CHECK(progress.inflights().count() == 1);
    // A reordered older ack changes nothing.
    CHECK_FALSE(progress.MaybeUpdate(LogIndex(6)));
    CHECK(progress.match() == LogIndex(8));
    CHECK(progress.next() == LogIndex(11));
  }
  SECTION("an ack beyond next raises both") {
    CHECK(progress.MaybeUpdate(LogIndex(15)));
    CHECK(progress.match() == LogIndex(15));
    CHECK(progress.next() == LogIndex(16));
    CHECK(progress.inflights().count() == 0);
  }
}

TEST_CASE("MaybeUpdate in probe keeps next at least match + 1", "[unit]") {
  Progress progress(LogIndex(3), 4, 0);
  CHECK(progress.MaybeUpdate(LogIndex(2)));
  CHECK(progress.match() == LogIndex(2));
  CHECK(progress.next() == LogIndex(3));
  CHECK(progress.MaybeUpdate(LogIndex(7)));
  CHECK(progress.match() == LogIndex(7));
  CHECK(progress.next() == LogIndex(8));
  CHECK_FALSE(progress.MaybeUpdate(LogIndex(4)));
  CHECK(progress.match() == LogIndex(7));
  CHECK(progress.next() == LogIndex(8));
}

TEST_CASE("MaybeDecreaseTo in replicate", "[unit]") {
  Progress progress = Replicating(5, 10, 0);
  progress.SentEntries(LogIndex(8), 1, true);
  progress.SentEntries(LogIndex(12), 1, true);
  REQUIRE(progress.next() == LogIndex(13));

  SECTION("a rejection below match is stale") {
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(3), LogIndex(1)));
    CHECK(progress.match() == LogIndex(5));
    CHECK(progress.next() == LogIndex(13));
    CHECK(progress.state() == ProgressState::kReplicate);
    CHECK(progress.inflights().count() == 2);
  }
  SECTION("a rejection at match is stale") {
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(5), LogIndex(0)));
    CHECK(progress.match() == LogIndex(5));
    CHECK(progress.next() == LogIndex(13));
  }
  SECTION("a rejection above match sends next back to match + 1") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(8), LogIndex(7)));
    CHECK(progress.match() == LogIndex(5));
    CHECK(progress.next() == LogIndex(6));
  }
  SECTION("the hint is ignored in replicate") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(12), LogIndex(2)));
    CHECK(progress.next() == LogIndex(6));
  }
  SECTION("a rejection learned after a newer ack is stale") {
    CHECK(progress.MaybeUpdate(LogIndex(12)));
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(8), LogIndex(3)));
    CHECK(progress.match() == LogIndex(12));
    CHECK(progress.next() == LogIndex(13));
  }
}

TEST_CASE("MaybeDecreaseTo in probe only counts the outstanding probe",
          "[unit]") {
  Progress progress(LogIndex(10), 4, 0);
  progress.SentEntries(LogIndex(12), 1, true);
  REQUIRE(progress.Paused());

  SECTION("a rejection of an older prev index is stale") {
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(8), LogIndex(3)));
    CHECK(progress.next() == LogIndex(10));
    CHECK(progress.Paused());
  }
  SECTION("a rejection of a higher prev index is stale") {
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(10), LogIndex(3)));
    CHECK(progress.next() == LogIndex(10));
    CHECK(progress.Paused());
  }
  SECTION("the hint moves next to hint + 1") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(3)));
    CHECK(progress.next() == LogIndex(4));
    CHECK_FALSE(progress.Paused());
    // The same rejection delivered twice is now stale.
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(3)));
    CHECK(progress.next() == LogIndex(4));
  }
  SECTION("a hint at or beyond the rejected index moves next to rejected") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(8)));
    CHECK(progress.next() == LogIndex(9));
  }
  SECTION("a hint far beyond the rejected index moves next to rejected") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(50)));
    CHECK(progress.next() == LogIndex(9));
  }
  SECTION("a hint of 0 moves next to 1") {
    CHECK(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(0)));
    CHECK(progress.next() == LogIndex(1));
  }
}

TEST_CASE("MaybeDecreaseTo in probe never goes below match + 1", "[unit]") {
  Progress progress(LogIndex(10), 4, 0);
  REQUIRE(progress.MaybeUpdate(LogIndex(4)));
  REQUIRE(progress.next() == LogIndex(10));
  progress.SentEntries(LogIndex(10), 1, true);
  CHECK(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(1)));
  CHECK(progress.match() == LogIndex(4));
  CHECK(progress.next() == LogIndex(5));
}

TEST_CASE("Stale rejections never move progress backwards", "[unit]") {
  // Probe down, get acknowledged, then receive old rejections again.
  Progress progress(LogIndex(10), 4, 0);
  progress.SentEntries(LogIndex(9), 0, false);
  REQUIRE(progress.MaybeDecreaseTo(LogIndex(9), LogIndex(6)));
  REQUIRE(progress.next() == LogIndex(7));
  progress.SentEntries(LogIndex(9), 1, true);
  REQUIRE(progress.MaybeUpdate(LogIndex(9)));
  REQUIRE(progress.match() == LogIndex(9));
  progress.BecomeReplicate();
  REQUIRE(progress.next() == LogIndex(10));
  progress.SentEntries(LogIndex(11), 1, true);

  for (uint64_t rejected = 6; rejected <= 9; ++rejected) {
    CAPTURE(rejected);
    CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(rejected), LogIndex(0)));
    CHECK(progress.match() == LogIndex(9));
    CHECK(progress.next() == LogIndex(12));
    CHECK(progress.state() == ProgressState::kReplicate);
    CHECK(progress.inflights().count() == 1);
  }
}

TEST_CASE("A stale rejection at or below match in probe changes nothing",
          "[unit]") {
  // match == 5, next == 6: the outstanding probe has prev == 5. The follower
  // durably holds entry 5 (it acknowledged it), so a rejection of prev 5 can
  // only be an old, duplicated answer. The header: "Returns false (and changes
  // nothing) when the rejection is stale".
  Progress progress(LogIndex(6), 4, 0);
  REQUIRE(progress.MaybeUpdate(LogIndex(5)));
  REQUIRE(progress.next() == LogIndex(6));
  progress.SentEntries(LogIndex(7), 1, true);
  REQUIRE(progress.Paused());

  CHECK_FALSE(progress.MaybeDecreaseTo(LogIndex(5), LogIndex(2)));
  CHECK(progress.match() == LogIndex(5));
  CHECK(progress.next() == LogIndex(6));
  // Still waiting for the answer to the outstanding probe.
  CHECK(progress.probe_sent());
  CHECK(progress.Paused());
}

TEST_CASE("OnHeartbeatResponse frees one slot of a full window", "[unit]") {
  Progress progress = Replicating(2, 2, 0);
  progress.SentEntries(LogIndex(4), 10, true);
  progress.SentEntries(LogIndex(6), 20, true);
  REQUIRE(progress.Paused());

  progress.OnHeartbeatResponse();
  CHECK_FALSE(progress.Paused());
  CHECK(progress.inflights().count() == 1);
  CHECK(progress.inflights().bytes() == 20);
  CHECK(progress.next() == LogIndex(7));
  CHECK(progress.match() == LogIndex(2));

  // Not full: a heartbeat response frees nothing.
  progress.OnHeartbeatResponse();
  CHECK(progress.inflights().count() == 1);
  CHECK(progress.inflights().bytes() == 20);
}

TEST_CASE("BecomeProbe and BecomeReplicate restart at match + 1", "[unit]") {
  Progress progress = Replicating(4, 3, 0);
  progress.SentEntries(LogIndex(6), 1, true);
  progress.SentEntries(LogIndex(8), 1, true);
  REQUIRE(progress.next() == LogIndex(9));

  progress.BecomeProbe();
  CHECK(progress.state() == ProgressState::kProbe);
  CHECK(progress.match() == LogIndex(4));
  CHECK(progress.next() == LogIndex(5));
  CHECK(progress.inflights().count() == 0);
  CHECK(progress.inflights().bytes() == 0);
  CHECK_FALSE(progress.probe_sent());
  CHECK_FALSE(progress.Paused());

  progress.SentEntries(LogIndex(5), 1, true);
  REQUIRE(progress.Paused());
  REQUIRE(progress.MaybeUpdate(LogIndex(5)));
  progress.BecomeReplicate();
  CHECK(progress.state() == ProgressState::kReplicate);
  CHECK(progress.match() == LogIndex(5));
  CHECK(progress.next() == LogIndex(6));
  CHECK(progress.inflights().count() == 0);
  CHECK_FALSE(progress.Paused());
}

TEST_CASE("BecomeReplicate from a probe that was sent clears the pause",
          "[unit]") {
  Progress progress(LogIndex(3), 3, 0);
  progress.SentEntries(LogIndex(3), 1, true);
  REQUIRE(progress.Paused());
  progress.BecomeReplicate();
  CHECK_FALSE(progress.probe_sent());
  CHECK_FALSE(progress.Paused());
  CHECK(progress.next() == LogIndex(1));
}

TEST_CASE("SetSelfMatch tracks the leader's durable last index", "[unit]") {
  Progress progress(LogIndex(5), 1, 0);
  progress.SetSelfMatch(LogIndex(4));
  CHECK(progress.match() == LogIndex(4));
  CHECK(progress.next() == LogIndex(5));
  progress.SetSelfMatch(LogIndex(9));
  CHECK(progress.match() == LogIndex(9));
  CHECK(progress.next() == LogIndex(10));
  // Never backwards.
  progress.SetSelfMatch(LogIndex(6));
  CHECK(progress.match() == LogIndex(9));
  CHECK(progress.next() == LogIndex(10));
}

}  // namespace
}  // namespace driftwood::raft::internal

namespace driftwood::raft::internal {
namespace {

TEST_CASE(
    "A burst of heartbeat responses resends a probe at most once per interval",
    "[unit]") {
  Progress progress(LogIndex(5), 4, 0);
  progress.SentEntries(LogIndex(5), 10, true);
  REQUIRE(progress.Paused());
  // Responses arriving before the probe is one heartbeat interval old leave
  // it outstanding.
  progress.OnHeartbeatResponse(2);
  progress.OnHeartbeatResponse(2);
  CHECK(progress.Paused());
  progress.TickProbe();
  progress.OnHeartbeatResponse(2);
  CHECK(progress.Paused());
  progress.TickProbe();
  progress.OnHeartbeatResponse(2);
  CHECK_FALSE(progress.Paused());
  // A resend restarts the age.
  progress.SentEntries(LogIndex(5), 10, true);
  progress.OnHeartbeatResponse(2);
  CHECK(progress.Paused());
}

}  // namespace
}  // namespace driftwood::raft::internal
