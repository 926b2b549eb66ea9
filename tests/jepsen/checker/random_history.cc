#include "tests/jepsen/checker/random_history.h"

#include <algorithm>
#include <map>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace driftwood::jepsen::testing {
namespace {

constexpr int64_t kMillisecond = 1'000'000;

enum class Plan { kOk, kFail, kInfo };

struct GeneratedOp {
  int64_t process = 0;
  bool list = false;
  std::string key;
  std::string f;
  std::string node;
  int64_t invoke = 0;
  int64_t complete = 0;
  // The linearization point, or -1 when the op takes no effect.
  int64_t point = -1;
  Plan plan = Plan::kOk;
  // write v, append e, cas new.
  int64_t value = 0;
  // cas old; chosen when the op is applied.
  std::optional<int64_t> old;
  // The completion's type and, for reads, the value read (JSON).
  std::string result = "ok";
  std::string output = "null";
};

}  // namespace

std::vector<Event> GenerateRandomHistory(const RandomHistoryOptions& options) {
  std::mt19937_64 rng(options.seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  const size_t slots = std::max<size_t>(options.processes, 1);
  const size_t keys = options.register_keys + options.list_keys;
  std::vector<int64_t> slot_time(slots);
  std::vector<int64_t> slot_process(slots);
  for (size_t s = 0; s < slots; ++s) {
    slot_time[s] = uniform(0, kMillisecond);
    slot_process[s] = static_cast<int64_t>(s);
  }
  int64_t next_value = 1;
  std::vector<GeneratedOp> ops(options.ops);
  for (size_t i = 0; i < options.ops; ++i) {
    GeneratedOp& op = ops[i];
    const size_t slot = i % slots;
    op.process = slot_process[slot];
    const size_t key =
        static_cast<size_t>(uniform(0, static_cast<int64_t>(keys) - 1));
    op.list = key >= options.register_keys;
    op.key = op.list ? absl::StrCat("l", key - options.register_keys)
                     : absl::StrCat("r", key);
    const double roll = std::uniform_real_distribution<double>(0, 1)(rng);
    if (op.list) {
      op.f = roll < 0.5 ? "append" : "read";
    } else {
      op.f = roll < 0.5 ? "read" : roll < 0.8 ? "write" : "cas";
    }
    op.node = absl::StrCat("n", uniform(1, 3));
    op.invoke = slot_time[slot] + uniform(1, 200'000);
    const int64_t duration = chance(0.02)
                                 ? uniform(5 * kMillisecond, 50 * kMillisecond)
                                 : uniform(50'000, 3 * kMillisecond);
    op.complete = op.invoke + duration;
    slot_time[slot] = op.complete;
    if (op.f != "read") op.value = next_value++;
    if (chance(options.info_rate)) {
      op.plan = Plan::kInfo;
      op.result = "info";
      slot_process[slot] += static_cast<int64_t>(slots);
      if (op.f != "read" && chance(0.5)) {
        op.point = uniform(op.invoke, op.complete + 20 * kMillisecond);
      }
    } else if (op.f != "cas" && chance(options.fail_rate)) {
      op.plan = Plan::kFail;
      op.result = "fail";
    } else {
      op.point = uniform(op.invoke, op.complete);
    }
  }

  std::vector<size_t> order;
  for (size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].point >= 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ops[a].point < ops[b].point;
  });
  std::map<std::string, std::optional<int64_t>> registers;
  std::map<std::string, std::vector<int64_t>> lists;
  for (size_t i : order) {
    GeneratedOp& op = ops[i];
    if (op.list) {
      std::vector<int64_t>& list = lists[op.key];
      if (op.f == "append") {
        list.push_back(op.value);
      } else {
        op.output = absl::StrCat("[", absl::StrJoin(list, ","), "]");
      }
      continue;
    }
    std::optional<int64_t>& state = registers[op.key];
    if (op.f == "read") {
      op.output = state.has_value() ? absl::StrCat(*state) : "null";
    } else if (op.f == "write") {
      state = op.value;
    } else {
      op.old =
          state.has_value() && chance(0.7) ? *state : uniform(1, next_value);
      if (state == op.old) {
        state = op.value;
      } else if (op.plan == Plan::kOk) {
        op.result = "fail";
      }
    }
  }

  std::vector<Event> events;
  events.reserve(ops.size() * 2 + 64);
  for (size_t i = 0; i < ops.size(); ++i) {
    const GeneratedOp& op = ops[i];
    std::string argument = "null";
    if (op.f == "write" || op.f == "append") {
      argument = absl::StrCat(op.value);
    } else if (op.f == "cas") {
      argument = absl::StrCat("[", op.old.value_or(-1), ",", op.value, "]");
    }
    const int64_t id = static_cast<int64_t>(i);
    events.push_back(Event{op.invoke, op.process, "invoke", op.f, op.key,
                           argument, op.node, id});
    events.push_back(Event{op.complete, op.process, op.result, op.f, op.key,
                           op.f == "read" ? op.output : argument, op.node, id});
  }
  if (options.faults) {
    int64_t end = 0;
    for (const GeneratedOp& op : ops) end = std::max(end, op.complete);
    const char* kinds[] = {"partition", "kill", "pause"};
    size_t kind = 0;
    for (int64_t t = 500 * kMillisecond; t < end;
         t += 3000 * kMillisecond, ++kind) {
      const std::string name = kinds[kind % 3];
      const std::string value =
          name == "partition" ? R"({"n1":["n2","n3"]})" : R"(["n2"])";
      events.push_back(
          Event{t, -1, "info", "start-" + name, "", value, "", -1});
      events.push_back(Event{t + 1500 * kMillisecond, -1, "info",
                             "stop-" + name, "", value, "", -1});
    }
  }
  std::stable_sort(
      events.begin(), events.end(),
      [](const Event& a, const Event& b) { return a.time < b.time; });
  return events;
}

std::string ToJsonLines(const std::vector<Event>& events) {
  std::string text;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& event = events[i];
    absl::StrAppend(&text, "{\"index\":", i, ",\"time\":", event.time,
                    ",\"process\":",
                    event.process < 0 ? std::string("\"nemesis\"")
                                      : absl::StrCat(event.process),
                    ",\"type\":\"", event.type, "\",\"f\":\"", event.f, "\"");
    if (!event.key.empty())
      absl::StrAppend(&text, ",\"key\":\"", event.key, "\"");
    absl::StrAppend(&text, ",\"value\":", event.value);
    if (!event.node.empty()) {
      absl::StrAppend(&text, ",\"node\":\"", event.node, "\"");
    }
    absl::StrAppend(&text, "}\n");
  }
  return text;
}

int64_t InjectStaleRead(std::vector<Event>* events, uint64_t seed) {
  struct Write {
    int64_t invoke;
    int64_t complete;
    int64_t value;
  };
  // Per generated op: its invocation time.
  std::map<int64_t, int64_t> invoked;
  // Per register key: the ok writes and cas, which took effect.
  std::map<std::string, std::vector<Write>> writes;
  std::vector<size_t> reads;
  for (size_t i = 0; i < events->size(); ++i) {
    const Event& event = (*events)[i];
    if (event.op < 0) continue;
    if (event.type == "invoke") {
      invoked[event.op] = event.time;
      continue;
    }
    if (event.type != "ok" || event.key.empty() || event.key[0] != 'r') {
      continue;
    }
    if (event.f == "read") {
      reads.push_back(i);
    } else if (event.f == "write" || event.f == "cas") {
      const nlohmann::json value = nlohmann::json::parse(event.value);
      writes[event.key].push_back(Write{
          invoked[event.op], event.time,
          event.f == "write" ? value.get<int64_t>() : value[1].get<int64_t>()});
    }
  }
  std::mt19937_64 rng(seed);
  std::shuffle(reads.begin(), reads.end(), rng);
  for (size_t position : reads) {
    Event& read = (*events)[position];
    const int64_t begin = invoked[read.op];
    const std::vector<Write>& key_writes = writes[read.key];
    // w2: the write completing last before the read began.
    const Write* w2 = nullptr;
    for (const Write& w : key_writes) {
      if (w.complete < begin && (w2 == nullptr || w.complete > w2->complete)) {
        w2 = &w;
      }
    }
    if (w2 == nullptr) continue;
    std::vector<const Write*> earlier;
    for (const Write& w : key_writes) {
      if (w.complete < w2->invoke) earlier.push_back(&w);
    }
    if (earlier.empty()) continue;
    const Write* w1 = earlier[std::uniform_int_distribution<size_t>(
        0, earlier.size() - 1)(rng)];
    read.value = absl::StrCat(w1->value);
    return static_cast<int64_t>(position);
  }
  return -1;
}

}  // namespace driftwood::jepsen::testing
