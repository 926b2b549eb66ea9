// InProcessNetwork (raft/server/in_process_transport.h): ordered and batched
// delivery, the fault injection, the bounds, Stop, and snapshot streams.
#include "raft/server/in_process_transport.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "catch2/catch.hpp"
#include "raft/core/message.h"
#include "raft/core/types.h"
#include "raft/transport.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

using ::driftwood::testing::TempDir;

constexpr absl::Duration kTimeout = absl::Seconds(10);

// A one-shot event (std primitives throughout: ThreadSanitizer does not see
// the synchronization of an uninstrumented Abseil).
class Flag {
 public:
  void Notify() {
    std::lock_guard lock(mu_);
    notified_ = true;
    changed_.notify_all();
  }
  bool HasBeenNotified() const {
    std::lock_guard lock(mu_);
    return notified_;
  }
  // False when not notified within kTimeout.
  bool Wait() const {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, absl::ToChronoMilliseconds(kTimeout),
                             [&] { return notified_; });
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  bool notified_ = false;
};

// A Raft message numbered `seq`.
Message Beat(uint64_t from, uint64_t to, uint64_t seq) {
  return Message{.from = NodeId(from),
                 .to = NodeId(to),
                 .term = Term(1),
                 .payload = Heartbeat{.read_round = seq}};
}

std::vector<Message> Beats(uint64_t from, uint64_t to, uint64_t first,
                           uint64_t count) {
  std::vector<Message> messages;
  messages.reserve(count);
  for (uint64_t seq = first; seq < first + count; ++seq) {
    messages.push_back(Beat(from, to, seq));
  }
  return messages;
}

// A server message numbered `seq`.
ServerMessage Forward(uint64_t from, uint64_t to, uint64_t seq) {
  return ServerMessage{.from = NodeId(from),
                       .to = NodeId(to),
                       .payload = ForwardRequest{.request_id = seq}};
}

// One thing a handler received, in order.
struct Event {
  bool server = false;
  uint64_t from = 0;
  uint64_t seq = 0;

  bool operator==(const Event&) const = default;
};

// What a RecordingSink saw.
struct SinkLog {
  std::vector<std::string> file_order;
  std::map<std::string, std::string> files;
  std::map<std::string, int> writes;
  bool finished = false;
  bool destroyed = false;
};

// Records everything delivered to one node. Thread-safe.
class Recorder : public TransportHandler {
 public:
  struct State {
    std::vector<Event> events;
    std::vector<size_t> batches;
    std::vector<NodeId> unreachable;
    std::vector<SinkLog> sinks;
    size_t messages = 0;
  };

  // Runs at the start of every handler call, outside the recorder's lock.
  void set_on_call(std::function<void()> on_call) {
    std::lock_guard lock(mu_);
    on_call_ = std::move(on_call);
  }
  // Runs after every sink Write, outside the recorder's lock.
  void set_on_write(std::function<void()> on_write) {
    std::lock_guard lock(mu_);
    on_write_ = std::move(on_write);
  }
  void set_receive_status(absl::Status status) {
    std::lock_guard lock(mu_);
    receive_status_ = std::move(status);
  }
  void set_finish_status(absl::Status status) {
    std::lock_guard lock(mu_);
    finish_status_ = std::move(status);
  }

  void HandleMessages(std::vector<Message> messages) override {
    OnCall();
    std::lock_guard lock(mu_);
    state_.batches.push_back(messages.size());
    state_.messages += messages.size();
    for (const Message& message : messages) {
      state_.events.push_back(
          {.server = false,
           .from = message.from.value(),
           .seq = std::get<Heartbeat>(message.payload).read_round});
    }
    changed_.notify_all();
  }

  void HandleServerMessage(ServerMessage message) override {
    OnCall();
    std::lock_guard lock(mu_);
    state_.events.push_back(
        {.server = true,
         .from = message.from.value(),
         .seq = std::visit([](const auto& p) { return p.request_id; },
                           message.payload)});
    changed_.notify_all();
  }

  absl::StatusOr<std::unique_ptr<SnapshotSink>> ReceiveSnapshot(
      const Message& /*message*/,
      const SnapshotManifest& /*manifest*/) override {
    std::lock_guard lock(mu_);
    if (!receive_status_.ok()) return receive_status_;
    state_.sinks.emplace_back();
    changed_.notify_all();
    return std::make_unique<RecordingSink>(this, state_.sinks.size() - 1);
  }

  void ReportUnreachable(NodeId peer) override {
    OnCall();
    std::lock_guard lock(mu_);
    state_.unreachable.push_back(peer);
    changed_.notify_all();
  }

  State state() const {
    std::lock_guard lock(mu_);
    return state_;
  }

  // Waits until `done(state)` holds; false after `timeout`.
  bool WaitUntil(const std::function<bool(const State&)>& done,
                 absl::Duration timeout = kTimeout) const {
    std::unique_lock lock(mu_);
    return changed_.wait_for(lock, absl::ToChronoMilliseconds(timeout),
                             [&] { return done(state_); });
  }

 private:
  class RecordingSink : public SnapshotSink {
   public:
    RecordingSink(Recorder* recorder, size_t index)
        : recorder_(recorder), index_(index) {}
    ~RecordingSink() override {
      std::lock_guard lock(recorder_->mu_);
      log().destroyed = true;
      recorder_->changed_.notify_all();
    }
    absl::Status Write(std::string_view file_name,
                       std::string_view bytes) override {
      std::function<void()> on_write;
      {
        std::lock_guard lock(recorder_->mu_);
        SinkLog& sink = log();
        const std::string name(file_name);
        if (sink.file_order.empty() || sink.file_order.back() != name) {
          sink.file_order.push_back(name);
        }
        sink.files[name].append(bytes);
        ++sink.writes[name];
        on_write = recorder_->on_write_;
        recorder_->changed_.notify_all();
      }
      if (on_write) on_write();
      return absl::OkStatus();
    }
    absl::Status Finish() override {
      std::lock_guard lock(recorder_->mu_);
      log().finished = true;
      recorder_->changed_.notify_all();
      return recorder_->finish_status_;
    }

   private:
    SinkLog& log() { return recorder_->state_.sinks[index_]; }
    Recorder* recorder_;
    size_t index_;
  };

  void OnCall() {
    std::function<void()> on_call;
    {
      std::lock_guard lock(mu_);
      on_call = on_call_;
    }
    if (on_call) on_call();
  }

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  State state_;
  std::function<void()> on_call_;
  std::function<void()> on_write_;
  absl::Status receive_status_;
  absl::Status finish_status_;
};

// Polls `done` until it holds; false after `timeout`.
bool Eventually(const std::function<bool()>& done,
                absl::Duration timeout = kTimeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// Every message is delivered, dropped or queued.
bool Balanced(const InProcessNetwork::Stats& stats) {
  return stats.sent + stats.duplicated ==
         stats.delivered + stats.dropped + stats.queued;
}

// Nothing is queued any more.
bool Settled(const InProcessNetwork& network) {
  return Eventually([&] { return network.stats().queued == 0; });
}

// The Raft message numbers from `from`, in delivery order.
std::vector<uint64_t> SeqsFrom(const Recorder::State& state, uint64_t from) {
  std::vector<uint64_t> seqs;
  for (const Event& event : state.events) {
    if (!event.server && event.from == from) seqs.push_back(event.seq);
  }
  return seqs;
}

std::vector<uint64_t> Iota(uint64_t count) {
  std::vector<uint64_t> seqs(count);
  for (uint64_t i = 0; i < count; ++i) seqs[i] = i;
  return seqs;
}

// Nodes 1..n on one network, each with a Recorder.
struct Cluster {
  explicit Cluster(int n, InProcessNetwork::Options options = {})
      : network(options), recorders(static_cast<size_t>(n)) {
    for (int i = 0; i < n; ++i) {
      transports.push_back(network.CreateTransport());
      REQUIRE(transports.back()
                  ->Start(NodeId(static_cast<uint64_t>(i + 1)),
                          &recorders[static_cast<size_t>(i)])
                  .ok());
    }
  }
  Transport& transport(uint64_t id) { return *transports[id - 1]; }
  Recorder& recorder(uint64_t id) { return recorders[id - 1]; }
  void Send(uint64_t from, uint64_t to, uint64_t first, uint64_t count) {
    std::vector<Message> messages = Beats(from, to, first, count);
    transport(from).Send(messages);
  }

  InProcessNetwork network;
  std::vector<Recorder> recorders;
  std::vector<std::unique_ptr<Transport>> transports;
};

TEST_CASE("messages of each pair arrive in order, concurrent senders",
          "[in_process_transport]") {
  // Through the delivery thread, and inline on the senders' threads.
  InProcessNetwork::Options options;
  options.inline_delivery = GENERATE(false, true);
  CAPTURE(options.inline_delivery);
  Cluster cluster(4, options);
  constexpr uint64_t kCount = 5000;
  std::vector<std::thread> senders;
  for (uint64_t from : {1u, 3u, 4u}) {
    senders.emplace_back([&cluster, from] {
      uint64_t seq = 0;
      uint64_t chunk = 1;
      while (seq < kCount) {
        const uint64_t count = std::min(chunk, kCount - seq);
        cluster.Send(from, 2, seq, count);
        seq += count;
        chunk = chunk % 37 + 1;
      }
    });
  }
  for (std::thread& sender : senders) sender.join();
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages == 3 * kCount; }));
  const Recorder::State state = cluster.recorder(2).state();
  for (uint64_t from : {1u, 3u, 4u})
    CHECK(SeqsFrom(state, from) == Iota(kCount));
  CHECK(state.unreachable.empty());
  const InProcessNetwork::Stats stats = cluster.network.stats();
  CHECK(stats.sent == 3 * kCount);
  CHECK(stats.delivered == 3 * kCount);
  CHECK(stats.dropped == 0);
  CHECK(Balanced(stats));
}

TEST_CASE(
    "inline delivery runs on the sender's thread while the receiver "
    "is idle, and Stop waits for it",
    "[in_process_transport]") {
  InProcessNetwork::Options options;
  options.inline_delivery = true;
  Cluster cluster(2, options);
  std::mutex mu;
  std::vector<std::thread::id> callers;
  cluster.recorder(2).set_on_call([&] {
    std::lock_guard lock(mu);
    callers.push_back(std::this_thread::get_id());
  });
  for (uint64_t i = 0; i < 20; ++i) {
    // The delivery thread may still be on its way back to waiting after a
    // round of its own (or starting up): a Send then leaves the round to it.
    REQUIRE(Eventually(
        [&] { return cluster.network.DeliveryIdleForTesting(NodeId(2)); }));
    cluster.Send(1, 2, i, 1);
    REQUIRE(cluster.recorder(2).WaitUntil(
        [i](const Recorder::State& state) { return state.messages == i + 1; }));
  }
  {
    std::lock_guard lock(mu);
    const auto on_sender =
        std::count(callers.begin(), callers.end(), std::this_thread::get_id());
    CHECK(on_sender == 20);
  }
  // A slow handler on the sender's thread holds Stop until it returns.
  std::atomic<bool> in_handler{false};
  std::atomic<bool> handler_done{false};
  cluster.recorder(2).set_on_call([&] {
    in_handler = true;
    absl::SleepFor(absl::Milliseconds(100));
    handler_done = true;
  });
  std::thread sender([&] { cluster.Send(1, 2, 100, 1); });
  REQUIRE(Eventually([&] { return in_handler.load(); }));
  cluster.transport(2).Stop();
  CHECK(handler_done.load());
  sender.join();
}

TEST_CASE("messages sent at once are delivered in one batch",
          "[in_process_transport]") {
  Cluster cluster(2);
  cluster.Send(1, 2, 0, 1000);
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages == 1000; }));
  const Recorder::State state = cluster.recorder(2).state();
  CHECK(state.batches == std::vector<size_t>{1000});
  CHECK(SeqsFrom(state, 1) == Iota(1000));
}

TEST_CASE("batches are at most max_batch messages", "[in_process_transport]") {
  Cluster cluster(2, {.max_batch = 64});
  cluster.Send(1, 2, 0, 1000);
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages == 1000; }));
  const Recorder::State state = cluster.recorder(2).state();
  CHECK(*std::max_element(state.batches.begin(), state.batches.end()) == 64);
  CHECK(SeqsFrom(state, 1) == Iota(1000));
}

TEST_CASE("server messages keep their place among the Raft messages",
          "[in_process_transport]") {
  Cluster cluster(3);
  std::vector<Event> expected;
  uint64_t seq = 0;
  for (int round = 0; round < 200; ++round) {
    for (uint64_t from : {1u, 3u}) {
      const uint64_t count = static_cast<uint64_t>(round % 4);
      cluster.Send(from, 2, seq, count);
      for (uint64_t i = 0; i < count; ++i) {
        expected.push_back({.server = false, .from = from, .seq = seq + i});
      }
      seq += count;
      cluster.transport(from).SendServerMessage(Forward(from, 2, seq));
      expected.push_back({.server = true, .from = from, .seq = seq});
      ++seq;
    }
  }
  REQUIRE(cluster.recorder(2).WaitUntil([&](const Recorder::State& s) {
    return s.events.size() == expected.size();
  }));
  const Recorder::State state = cluster.recorder(2).state();
  for (uint64_t from : {1u, 3u}) {
    std::vector<Event> want;
    std::vector<Event> got;
    for (const Event& event : expected) {
      if (event.from == from) want.push_back(event);
    }
    for (const Event& event : state.events) {
      if (event.from == from) got.push_back(event);
    }
    CHECK(got == want);
  }
  // A ForwardResponse travels the other way.
  cluster.transport(2).SendServerMessage(ServerMessage{
      .from = NodeId(2),
      .to = NodeId(1),
      .payload = ForwardResponse{.request_id = 7,
                                 .code = absl::StatusCode::kUnavailable}});
  REQUIRE(Settled(cluster.network));
  CHECK(cluster.network.stats().delivered == expected.size() + 1);
}

TEST_CASE("drop loses messages silently", "[in_process_transport]") {
  Cluster cluster(2);
  SECTION("drop = 1 loses every message") {
    cluster.network.SetFaults({.drop = 1});
    cluster.Send(1, 2, 0, 1000);
    cluster.transport(1).SendServerMessage(Forward(1, 2, 1000));
    const InProcessNetwork::Stats stats = cluster.network.stats();
    CHECK(stats.sent == 1001);
    CHECK(stats.dropped == 1001);
    CHECK(stats.queued == 0);
    CHECK(Balanced(stats));
    // Healing the faults lets the next ones through.
    cluster.network.ClearFaults();
    cluster.Send(1, 2, 2000, 1);
    REQUIRE(cluster.recorder(2).WaitUntil(
        [](const Recorder::State& s) { return s.messages == 1; }));
    CHECK(SeqsFrom(cluster.recorder(2).state(), 1) ==
          std::vector<uint64_t>{2000});
  }
  SECTION("drop = 0.5 loses some, keeps the order of the others") {
    cluster.network.SetFaults({.drop = 0.5});
    cluster.Send(1, 2, 0, 2000);
    REQUIRE(Settled(cluster.network));
    const InProcessNetwork::Stats stats = cluster.network.stats();
    REQUIRE(cluster.recorder(2).WaitUntil([&](const Recorder::State& s) {
      return s.messages == stats.delivered;
    }));
    CHECK(stats.dropped > 500);
    CHECK(stats.delivered > 500);
    CHECK(stats.dropped + stats.delivered == 2000);
    const std::vector<uint64_t> seqs = SeqsFrom(cluster.recorder(2).state(), 1);
    CHECK(std::is_sorted(seqs.begin(), seqs.end()));
    CHECK(std::adjacent_find(seqs.begin(), seqs.end()) == seqs.end());
  }
  CHECK(cluster.recorder(1).state().unreachable.empty());
}

TEST_CASE("the same seed drops the same messages", "[in_process_transport]") {
  auto delivered = [](uint64_t seed) {
    Cluster cluster(2, {.seed = seed});
    cluster.network.SetFaults({.drop = 0.3, .duplicate = 0.3});
    for (uint64_t seq = 0; seq < 500; seq += 10) cluster.Send(1, 2, seq, 10);
    REQUIRE(Settled(cluster.network));
    const uint64_t count = cluster.network.stats().delivered;
    REQUIRE(cluster.recorder(2).WaitUntil(
        [&](const Recorder::State& s) { return s.messages == count; }));
    return SeqsFrom(cluster.recorder(2).state(), 1);
  };
  const std::vector<uint64_t> first = delivered(7);
  CHECK(first == delivered(7));
  CHECK(first != delivered(8));
}

TEST_CASE("duplicate = 1 delivers every message twice, in order",
          "[in_process_transport]") {
  Cluster cluster(2);
  cluster.network.SetFaults({.duplicate = 1});
  for (uint64_t seq = 0; seq < 500; seq += 50) cluster.Send(1, 2, seq, 50);
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages == 1000; }));
  std::vector<uint64_t> want;
  for (uint64_t seq = 0; seq < 500; ++seq) {
    want.push_back(seq);
    want.push_back(seq);
  }
  CHECK(SeqsFrom(cluster.recorder(2).state(), 1) == want);
  const InProcessNetwork::Stats stats = cluster.network.stats();
  CHECK(stats.duplicated == 500);
  CHECK(stats.delivered == 1000);
  CHECK(Balanced(stats));
}

TEST_CASE("delay holds messages back and keeps their order",
          "[in_process_transport]") {
  Cluster cluster(3);
  constexpr absl::Duration kMin = absl::Milliseconds(100);
  cluster.network.SetLinkFaults(
      NodeId(1), NodeId(2),
      {.min_delay = kMin, .max_delay = absl::Milliseconds(150)});
  const absl::Time start = absl::Now();
  for (uint64_t seq = 0; seq < 400; seq += 4) cluster.Send(1, 2, seq, 4);
  // Other links are not delayed.
  cluster.Send(3, 2, 0, 1);
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages >= 1; }));
  CHECK(SeqsFrom(cluster.recorder(2).state(), 1).empty());
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages == 401; }));
  CHECK(absl::Now() - start >= kMin);
  CHECK(SeqsFrom(cluster.recorder(2).state(), 1) == Iota(400));
}

TEST_CASE("partitions cut links silently", "[in_process_transport]") {
  Cluster cluster(3);
  // Sends one message on each of the six links, numbered by round, and
  // returns which links delivered it.
  uint64_t round = 0;
  auto probe = [&] {
    const uint64_t before = cluster.network.stats().delivered;
    for (uint64_t from = 1; from <= 3; ++from) {
      for (uint64_t to = 1; to <= 3; ++to) {
        if (from != to) cluster.Send(from, to, round, 1);
      }
    }
    REQUIRE(Settled(cluster.network));
    const uint64_t delivered = cluster.network.stats().delivered - before;
    std::set<std::pair<uint64_t, uint64_t>> links;
    // Every delivered message has reached its recorder.
    REQUIRE(Eventually([&] {
      size_t got = 0;
      for (uint64_t to = 1; to <= 3; ++to) {
        for (const Event& event : cluster.recorder(to).state().events) {
          got += event.seq == round;
        }
      }
      return got == delivered;
    }));
    for (uint64_t to = 1; to <= 3; ++to) {
      for (const Event& event : cluster.recorder(to).state().events) {
        if (event.seq == round) links.insert({event.from, to});
      }
    }
    ++round;
    return links;
  };
  using Links = std::set<std::pair<uint64_t, uint64_t>>;
  const Links all = {{1, 2}, {1, 3}, {2, 1}, {2, 3}, {3, 1}, {3, 2}};
  CHECK(probe() == all);

  cluster.network.Partition({{NodeId(1)}, {NodeId(2), NodeId(3)}});
  CHECK(probe() == Links{{2, 3}, {3, 2}});
  // Unlisted nodes form one group.
  cluster.network.Partition({{NodeId(3)}});
  CHECK(probe() == Links{{1, 2}, {2, 1}});
  cluster.network.Heal();
  CHECK(probe() == all);

  cluster.network.Isolate(NodeId(2));
  CHECK(probe() == Links{{1, 3}, {3, 1}});
  cluster.network.Heal();

  cluster.network.BlockOneWay(NodeId(1), NodeId(2));
  CHECK(probe() == Links{{1, 3}, {2, 1}, {2, 3}, {3, 1}, {3, 2}});
  cluster.network.Heal();
  CHECK(probe() == all);

  for (uint64_t id = 1; id <= 3; ++id) {
    CHECK(cluster.recorder(id).state().unreachable.empty());
  }
  CHECK(Balanced(cluster.network.stats()));
}

TEST_CASE("a cut made while messages are in flight loses them",
          "[in_process_transport]") {
  Cluster cluster(2);
  cluster.network.SetFaults({.min_delay = absl::Milliseconds(100)});
  cluster.Send(1, 2, 0, 100);
  cluster.transport(1).SendServerMessage(Forward(1, 2, 100));
  cluster.network.Isolate(NodeId(2));
  REQUIRE(Settled(cluster.network));
  const InProcessNetwork::Stats stats = cluster.network.stats();
  CHECK(stats.dropped == 101);
  CHECK(stats.delivered == 0);
  CHECK(cluster.recorder(2).state().events.empty());
  // Healed before they are due, they arrive.
  cluster.network.Heal();
  cluster.Send(1, 2, 200, 10);
  REQUIRE(cluster.recorder(2).WaitUntil(
      [](const Recorder::State& s) { return s.messages == 10; }));
}

TEST_CASE("a node that is not started is reported unreachable",
          "[in_process_transport]") {
  Cluster cluster(2, {.unreachable_interval = absl::Milliseconds(10)});
  const absl::Time start = absl::Now();
  for (uint64_t seq = 0; seq < 200; ++seq) cluster.Send(1, 9, seq, 1);
  cluster.transport(1).SendServerMessage(Forward(1, 9, 200));
  REQUIRE(cluster.recorder(1).WaitUntil(
      [](const Recorder::State& s) { return !s.unreachable.empty(); }));
  const absl::Duration elapsed = absl::Now() - start;
  const Recorder::State state = cluster.recorder(1).state();
  CHECK(state.unreachable.front() == NodeId(9));
  // At most one report per interval.
  CHECK(static_cast<int64_t>(state.unreachable.size()) <=
        elapsed / absl::Milliseconds(10) + 1);
  const InProcessNetwork::Stats stats = cluster.network.stats();
  CHECK(stats.dropped == 201);
  CHECK(Balanced(stats));

  // A stopped node is unreachable too.
  cluster.transport(2).Stop();
  cluster.Send(1, 2, 0, 1);
  REQUIRE(cluster.recorder(1).WaitUntil([](const Recorder::State& s) {
    return std::count(s.unreachable.begin(), s.unreachable.end(), NodeId(2)) ==
           1;
  }));
  CHECK(cluster.recorder(2).state().events.empty());
}

TEST_CASE("a flood is bounded by the queue cap", "[in_process_transport]") {
  constexpr size_t kCap = 10000;
  constexpr size_t kBatch = 1024;
  Cluster cluster(2, {.max_queued = kCap, .max_batch = kBatch});
  Flag release;
  Flag blocked;
  std::atomic<bool> first{true};
  cluster.recorder(2).set_on_call([&] {
    if (first.exchange(false)) {
      blocked.Notify();
      release.Wait();
    }
  });
  constexpr uint64_t kTotal = 1000000;
  for (uint64_t seq = 0; seq < kTotal; seq += 1000) {
    cluster.Send(1, 2, seq, 1000);
    if (seq == 0) REQUIRE(blocked.Wait());
  }
  InProcessNetwork::Stats stats = cluster.network.stats();
  CHECK(stats.sent == kTotal);
  CHECK(stats.queued <= kCap);
  CHECK(stats.peak_queued == kCap);
  CHECK(stats.dropped >= kTotal - kCap - kBatch);
  CHECK(Balanced(stats));
  // The sender is told, at a bounded rate.
  REQUIRE(cluster.recorder(1).WaitUntil(
      [](const Recorder::State& s) { return !s.unreachable.empty(); }));
  CHECK(cluster.recorder(1).state().unreachable.front() == NodeId(2));

  release.Notify();
  REQUIRE(Settled(cluster.network));
  stats = cluster.network.stats();
  REQUIRE(cluster.recorder(2).WaitUntil(
      [&](const Recorder::State& s) { return s.messages == stats.delivered; }));
  CHECK(stats.delivered <= kCap + kBatch);
  CHECK(stats.delivered + stats.dropped == kTotal);
  const std::vector<uint64_t> seqs = SeqsFrom(cluster.recorder(2).state(), 1);
  CHECK(std::is_sorted(seqs.begin(), seqs.end()));
}

TEST_CASE("no handler call runs after Stop returns", "[in_process_transport]") {
  Cluster cluster(3);
  std::atomic<bool> stopped{false};
  std::atomic<int> running{0};
  std::atomic<int> calls{0};
  std::atomic<int> late{0};
  cluster.recorder(2).set_on_call([&] {
    ++running;
    if (stopped) ++late;
    ++calls;
    absl::SleepFor(absl::Microseconds(200));
    if (stopped) ++late;
    --running;
  });
  std::atomic<bool> sending{true};
  std::vector<std::thread> senders;
  for (uint64_t from : {1u, 3u}) {
    senders.emplace_back([&, from] {
      uint64_t seq = 0;
      while (sending) {
        cluster.Send(from, 2, seq, 3);
        cluster.transport(from).SendServerMessage(Forward(from, 2, seq + 3));
        seq += 4;
        std::this_thread::yield();
      }
    });
  }
  REQUIRE(Eventually([&] { return calls >= 20; }));
  cluster.transport(2).Stop();
  stopped = true;
  CHECK(running == 0);
  // Keep sending for a while: nothing more reaches the stopped node.
  const int calls_at_stop = calls;
  absl::SleepFor(absl::Milliseconds(20));
  sending = false;
  for (std::thread& sender : senders) sender.join();
  CHECK(late == 0);
  CHECK(calls == calls_at_stop);
  cluster.transport(2).Stop();  // idempotent

  // A new transport restarts node 2.
  Recorder restarted;
  std::unique_ptr<Transport> transport = cluster.network.CreateTransport();
  REQUIRE(transport->Start(NodeId(2), &restarted).ok());
  cluster.Send(1, 2, 0, 5);
  REQUIRE(restarted.WaitUntil(
      [](const Recorder::State& s) { return s.messages == 5; }));
  CHECK(Balanced(cluster.network.stats()));
}

TEST_CASE("Start checks its arguments and that the node is free",
          "[in_process_transport]") {
  InProcessNetwork network;
  Recorder recorder;
  std::unique_ptr<Transport> first = network.CreateTransport();
  std::unique_ptr<Transport> second = network.CreateTransport();
  CHECK(first->Start(kNoNode, &recorder).code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(first->Start(NodeId(1), nullptr).code() ==
        absl::StatusCode::kInvalidArgument);
  REQUIRE(first->Start(NodeId(1), &recorder).ok());
  CHECK(first->Start(NodeId(1), &recorder).code() ==
        absl::StatusCode::kFailedPrecondition);
  CHECK(second->Start(NodeId(1), &recorder).code() ==
        absl::StatusCode::kAlreadyExists);
  first->Stop();
  CHECK(second->Start(NodeId(1), &recorder).ok());
  CHECK(first->Start(NodeId(1), &recorder).code() ==
        absl::StatusCode::kFailedPrecondition);
}

TEST_CASE("the network may be destroyed before its transports",
          "[in_process_transport]") {
  auto network = std::make_unique<InProcessNetwork>();
  Recorder one;
  Recorder two;
  std::unique_ptr<Transport> a = network->CreateTransport();
  std::unique_ptr<Transport> b = network->CreateTransport();
  REQUIRE(a->Start(NodeId(1), &one).ok());
  REQUIRE(b->Start(NodeId(2), &two).ok());
  network->SetFaults({.min_delay = absl::Seconds(10)});
  std::vector<Message> messages = Beats(1, 2, 0, 10);
  a->Send(messages);
  network.reset();
  messages = Beats(1, 2, 10, 10);
  a->Send(messages);
  std::optional<absl::Status> outcome;
  a->SendSnapshot(OutgoingSnapshot{.message = {.from = NodeId(1),
                                               .to = NodeId(2),
                                               .payload = InstallSnapshot{}}},
                  [&](absl::Status status) { outcome = status; });
  REQUIRE(outcome.has_value());
  CHECK(outcome->code() == absl::StatusCode::kCancelled);
  a->Stop();
  b.reset();
  CHECK(two.state().events.empty());
}

// Snapshot streams.

void WriteFile(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string Pattern(size_t size, int salt) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) {
    bytes[i] = static_cast<char>((i * 131 + static_cast<size_t>(salt)) % 251);
  }
  return bytes;
}

// The outcome of one stream.
class Outcome {
 public:
  std::function<void(absl::Status)> Callback() {
    return [this](absl::Status status) {
      std::lock_guard lock(mu_);
      ++calls_;
      status_ = std::move(status);
      arrived_.notify_all();
    };
  }
  int calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::optional<absl::Status> Peek() const {
    std::lock_guard lock(mu_);
    return status_;
  }
  // The status, waiting for it; Internal when none arrives.
  absl::Status Wait() const {
    std::unique_lock lock(mu_);
    if (!arrived_.wait_for(lock, absl::ToChronoMilliseconds(kTimeout),
                           [&] { return status_.has_value(); })) {
      return absl::InternalError("no outcome");
    }
    return *status_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::condition_variable arrived_;
  std::optional<absl::Status> status_;
  int calls_ = 0;
};

struct SnapshotFixture {
  SnapshotFixture() : cluster(2) {
    files = {{"a.data", Pattern(200 * 1000, 1)},
             {"b.empty", ""},
             {"c.small", Pattern(10, 2)}};
    for (const auto& [name, bytes] : files) {
      WriteFile(std::filesystem::path(dir.path()) / name, bytes);
    }
  }

  OutgoingSnapshot Snapshot() const {
    OutgoingSnapshot snapshot{
        .message = {.from = NodeId(1),
                    .to = NodeId(2),
                    .term = Term(3),
                    .payload =
                        InstallSnapshot{.snapshot = {.index = LogIndex(10),
                                                     .term = Term(2)}}},
        .dir = dir.path()};
    snapshot.manifest.meta = {.index = LogIndex(10), .term = Term(2)};
    for (const auto& [name, bytes] : files) {
      snapshot.manifest.files.push_back({.name = name, .size = bytes.size()});
      snapshot.manifest.total_bytes += bytes.size();
    }
    return snapshot;
  }

  Recorder& receiver() { return cluster.recorder(2); }

  TempDir dir;
  std::map<std::string, std::string> files;
  Cluster cluster;
};

TEST_CASE("a snapshot stream delivers the files exactly",
          "[in_process_transport]") {
  SnapshotFixture fixture;
  Outcome outcome;
  fixture.cluster.transport(1).SendSnapshot(fixture.Snapshot(),
                                            outcome.Callback());
  REQUIRE(outcome.Wait().ok());
  const Recorder::State state = fixture.receiver().state();
  REQUIRE(state.sinks.size() == 1);
  const SinkLog& sink = state.sinks[0];
  CHECK(sink.finished);
  CHECK(sink.destroyed);
  CHECK(sink.file_order == std::vector<std::string>{"a.data", "c.small"});
  CHECK(sink.files.at("a.data") == fixture.files.at("a.data"));
  CHECK(sink.files.at("c.small") == fixture.files.at("c.small"));
  CHECK(sink.files.count("b.empty") == 0);  // no Write for an empty file
  CHECK(sink.writes.at("a.data") == 4);     // 64 KiB chunks
  // The InstallSnapshot message is not delivered by itself.
  CHECK(state.events.empty());
  const InProcessNetwork::Stats stats = fixture.cluster.network.stats();
  CHECK(stats.snapshots_sent == 1);
  CHECK(stats.snapshots_failed == 0);
  CHECK(outcome.calls() == 1);
}

TEST_CASE("snapshot streams fail", "[in_process_transport]") {
  SnapshotFixture fixture;
  Outcome outcome;
  OutgoingSnapshot snapshot = fixture.Snapshot();
  // Checks that the stream created a sink and abandoned it.
  auto abandoned = [&] {
    const Recorder::State state = fixture.receiver().state();
    REQUIRE(state.sinks.size() == 1);
    CHECK(state.sinks[0].destroyed);
    CHECK_FALSE(state.sinks[0].finished);
  };

  SECTION("a cut mid-stream") {
    fixture.receiver().set_on_write(
        [&] { fixture.cluster.network.Isolate(NodeId(2)); });
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait().code() == absl::StatusCode::kUnavailable);
    abandoned();
    CHECK(fixture.receiver().state().sinks[0].writes.at("a.data") == 1);
  }
  SECTION("a one-way cut before the stream") {
    fixture.cluster.network.BlockOneWay(NodeId(1), NodeId(2));
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait().code() == absl::StatusCode::kUnavailable);
    CHECK(fixture.receiver().state().sinks.empty());
  }
  SECTION("drop = 1") {
    fixture.cluster.network.SetLinkFaults(NodeId(1), NodeId(2), {.drop = 1});
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait().code() == absl::StatusCode::kUnavailable);
  }
  SECTION("a missing file") {
    snapshot.manifest.files.push_back({.name = "d.gone", .size = 5});
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    const absl::Status status = outcome.Wait();
    CHECK(status.code() == absl::StatusCode::kNotFound);
    CHECK(status.message().find("d.gone") != std::string_view::npos);
    abandoned();
  }
  SECTION("a file shorter than the manifest") {
    snapshot.manifest.files[2].size = 11;
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait().code() == absl::StatusCode::kDataLoss);
    abandoned();
  }
  SECTION("Finish fails") {
    fixture.receiver().set_finish_status(absl::DataLossError("crc mismatch"));
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait() == absl::DataLossError("crc mismatch"));
    const Recorder::State state = fixture.receiver().state();
    CHECK(state.sinks[0].finished);
  }
  SECTION("the receiver refuses") {
    fixture.receiver().set_receive_status(absl::ResourceExhaustedError("busy"));
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait() == absl::ResourceExhaustedError("busy"));
  }
  SECTION("the receiver is not started") {
    snapshot.message.to = NodeId(5);
    fixture.cluster.transport(1).SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait().code() == absl::StatusCode::kUnavailable);
  }
  SECTION("the sender is not started") {
    std::unique_ptr<Transport> idle = fixture.cluster.network.CreateTransport();
    idle->SendSnapshot(snapshot, outcome.Callback());
    CHECK(outcome.Wait().code() == absl::StatusCode::kFailedPrecondition);
  }
  const InProcessNetwork::Stats stats = fixture.cluster.network.stats();
  CHECK(stats.snapshots_sent == 0);
  CHECK(stats.snapshots_failed == 1);
  CHECK(outcome.calls() == 1);
}

TEST_CASE("Stop ends the streams of either end", "[in_process_transport]") {
  SnapshotFixture fixture;
  Outcome outcome;
  Flag writing;
  Flag proceed;
  fixture.receiver().set_on_write([&] {
    if (!writing.HasBeenNotified()) writing.Notify();
    proceed.Wait();
  });
  fixture.cluster.transport(1).SendSnapshot(fixture.Snapshot(),
                                            outcome.Callback());
  REQUIRE(writing.Wait());
  const uint64_t stopping = GENERATE(uint64_t{1}, uint64_t{2});
  std::atomic<bool> stop_returned{false};
  std::thread stopper([&] {
    fixture.cluster.transport(stopping).Stop();
    stop_returned = true;
  });
  // Stop has begun, and waits for the Write in progress.
  REQUIRE(Eventually(
      [&] { return fixture.cluster.network.stats().stops_begun == 1; }));
  absl::SleepFor(absl::Milliseconds(5));
  CHECK_FALSE(stop_returned);
  proceed.Notify();
  stopper.join();
  // The outcome was reported before Stop returned.
  const std::optional<absl::Status> status = outcome.Peek();
  REQUIRE(status.has_value());
  CHECK(status->code() == (stopping == 1 ? absl::StatusCode::kCancelled
                                         : absl::StatusCode::kUnavailable));
  const Recorder::State state = fixture.receiver().state();
  REQUIRE(state.sinks.size() == 1);
  CHECK(state.sinks[0].destroyed);
  CHECK_FALSE(state.sinks[0].finished);
}

// Not run by default: messages per second through three nodes, each sending
// to the next in batches.
TEST_CASE("throughput", "[.][throughput]") {
  class Counter : public TransportHandler {
   public:
    void HandleMessages(std::vector<Message> messages) override {
      count += messages.size();
    }
    void HandleServerMessage(ServerMessage) override {}
    absl::StatusOr<std::unique_ptr<SnapshotSink>> ReceiveSnapshot(
        const Message&, const SnapshotManifest&) override {
      return absl::UnimplementedError("");
    }
    void ReportUnreachable(NodeId) override {}
    std::atomic<uint64_t> count{0};
  };
  InProcessNetwork network;
  Counter counters[3];
  std::vector<std::unique_ptr<Transport>> transports;
  for (uint64_t id = 1; id <= 3; ++id) {
    transports.push_back(network.CreateTransport());
    REQUIRE(transports.back()->Start(NodeId(id), &counters[id - 1]).ok());
  }
  constexpr uint64_t kPerSender = 2000000;
  constexpr uint64_t kBatch = 64;
  const absl::Time start = absl::Now();
  std::vector<std::thread> senders;
  for (uint64_t id = 1; id <= 3; ++id) {
    senders.emplace_back([&, id] {
      const uint64_t to = id % 3 + 1;
      for (uint64_t seq = 0; seq < kPerSender; seq += kBatch) {
        while (network.stats().queued > 5000) std::this_thread::yield();
        std::vector<Message> messages = Beats(id, to, seq, kBatch);
        transports[id - 1]->Send(messages);
      }
    });
  }
  for (std::thread& sender : senders) sender.join();
  REQUIRE(Eventually([&] {
    return counters[0].count + counters[1].count + counters[2].count ==
           3 * kPerSender;
  }));
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("%.0f messages/s (%llu messages in %.2f s)\n",
              3 * kPerSender / seconds,
              static_cast<unsigned long long>(3 * kPerSender), seconds);
  CHECK(network.stats().dropped == 0);
}

}  // namespace
}  // namespace driftwood::raft
