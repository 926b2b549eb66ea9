// Random histories for jepsen-check's tests, linearizable by construction:
// every op gets a random linearization point inside its interval (info ops:
// possibly after their completion, or never), and the outputs are those of
// a register (or list) applying the ops in linearization-point order.
// Written values are unique per history, so tests can inject anomalies
// whose detection is certain.
#ifndef DRIFTWOOD_TESTS_JEPSEN_CHECKER_RANDOM_HISTORY_H_
#define DRIFTWOOD_TESTS_JEPSEN_CHECKER_RANDOM_HISTORY_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace driftwood::jepsen::testing {

struct RandomHistoryOptions {
  uint64_t seed = 1;
  // Client ops (invocations).
  size_t ops = 10'000;
  size_t register_keys = 50;
  size_t list_keys = 0;
  // Concurrent client slots; a slot whose op ends info continues as a new
  // process.
  size_t processes = 10;
  // Probabilities per op: an info completion (a write, cas or append that
  // ends info takes effect half the time), a fail completion for a write
  // or append (no effect).
  double info_rate = 0.01;
  double fail_rate = 0.03;
  // Adds partition, kill and pause windows.
  bool faults = true;
};

// One line of a history.
struct Event {
  int64_t time = 0;
  int64_t process = 0;  // -1: the nemesis
  std::string type;     // invoke, ok, fail, info
  std::string f;
  std::string key;    // empty for the nemesis
  std::string value;  // JSON text
  std::string node;   // may be empty
  // The generated op the event belongs to (-1 for the nemesis).
  int64_t op = -1;
};

// The events in history order.
std::vector<Event> GenerateRandomHistory(const RandomHistoryOptions& options);

// JSON Lines, with "index" = position.
std::string ToJsonLines(const std::vector<Event>& events);

// Makes one ok read of a register key stale: it returns the value of a
// write (or cas) w1 although a later write w2 completed before the read
// began, w1 completed before w2 began, and no other op writes that value;
// no linearization exists afterwards. Picks at random from `seed`. Returns
// the position of the changed completion event, or -1 when the history has
// no such read.
int64_t InjectStaleRead(std::vector<Event>* events, uint64_t seed);

}  // namespace driftwood::jepsen::testing

#endif  // DRIFTWOOD_TESTS_JEPSEN_CHECKER_RANDOM_HISTORY_H_
