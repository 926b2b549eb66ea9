#include "raft/server/in_process_transport.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <variant>

#include "absl/random/distributions.h"
#include "absl/strings/str_cat.h"

namespace driftwood::raft {
namespace in_process_internal {

// The state every transport of one network shares. One mutex, mu_, guards
// all of it, including the Endpoints the transports own; it is never held
// while a handler, a sink or a `done` runs. The private helpers other than
// the thread bodies (DeliveryLoop, StreamLoop, RunStream, Transfer,
// TransferFile) REQUIRE mu_ held.
//
// std::mutex rather than absl::Mutex: ThreadSanitizer sees the pthread calls
// under std::mutex, but not the synchronization inside an Abseil library
// built without it.
class Medium {
 public:
  using Options = InProcessNetwork::Options;
  using Stats = InProcessNetwork::Stats;
  using Done = std::function<void(absl::Status)>;

  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  enum class State { kNew, kStarted, kStopped };

  // One transport's registration, owned by the transport. Guarded by mu_.
  struct Endpoint {
    State state = State::kNew;
    NodeId self;
    TransportHandler* handler = nullptr;
    // Stop began: no delivery starts, streams end at their next check.
    bool stopping = false;
    // Delivery rounds running the handler.
    int calls = 0;
    // Streams holding the endpoint: as sender from SendSnapshot, as receiver
    // from the stream's start, until after the stream's `done` ran.
    int streams = 0;
    // Signalled when calls and streams are 0 while stopping.
    std::condition_variable idle;
  };

  explicit Medium(Options options);
  ~Medium() { Shutdown(); }

  Medium(const Medium&) = delete;
  Medium& operator=(const Medium&) = delete;

  // Joins every thread; afterwards nothing is delivered. Idempotent.
  void Shutdown();

  absl::Status Start(Endpoint& endpoint, NodeId self,
                     TransportHandler* handler);
  void Stop(Endpoint& endpoint);
  void Send(Endpoint& endpoint, std::vector<Message>& messages);
  void SendServerMessage(Endpoint& endpoint, ServerMessage message);
  void SendSnapshot(Endpoint& endpoint, OutgoingSnapshot snapshot, Done done);

  void SetFaults(LinkFaults faults);
  void SetLinkFaults(NodeId from, NodeId to, LinkFaults faults);
  void Partition(std::vector<std::vector<NodeId>> groups);
  void Isolate(NodeId node);
  void BlockOneWay(NodeId from, NodeId to);
  void Heal();
  void ClearFaults();
  Stats stats() const;
  bool DeliveryIdle(NodeId node) const;

 private:
  // A message on its way, due at `due`.
  struct Item {
    TimePoint due;
    std::variant<Message, ServerMessage> message;
  };

  // The messages of one sender to one receiver, oldest first.
  struct PairQueue {
    std::deque<Item> items;
    TimePoint last_due = TimePoint::min();
  };

  // Everything addressed to one node id, and its delivery thread. Created
  // by the first Start of the id; lives as long as the medium.
  struct Inbox {
    NodeId id;
    // The started transport of the node; null when none is.
    Endpoint* endpoint = nullptr;
    // By sender.
    std::map<NodeId, PairQueue> queues;
    // Peers to report unreachable to this node.
    std::vector<NodeId> unreachable;
    std::map<NodeId, TimePoint> last_report;
    // While the thread waits: when it wakes up by itself (max: never).
    // min() while it runs (it looks at the queues again before it waits).
    TimePoint wake_at = TimePoint::min();
    std::condition_variable wake;
    // Rotates the sender served first.
    uint64_t round = 0;
    // A sender's thread is delivering to this node (inline_delivery); the
    // delivery thread waits until it is done.
    bool inline_round = false;
    std::thread thread;
  };

  struct Stream {
    OutgoingSnapshot snapshot;
    Done done;
    // Null when the sending transport was not started.
    Endpoint* sender = nullptr;
  };

  // Runs the streams of one sender→receiver pair in order.
  struct StreamWorker {
    NodeId from;
    NodeId to;
    std::deque<Stream> queue;
    std::condition_variable wake;
    std::thread thread;
  };

  bool Sending(const Endpoint& endpoint) const {
    return !shutdown_ && endpoint.state == State::kStarted &&
           !endpoint.stopping;
  }
  Inbox* FindInbox(NodeId id);
  // Whether messages or unreachable reports wait in `inbox` (delayed ones
  // included). REQUIRES: mu_ held.
  static bool HasPending(const Inbox& inbox);
  bool IsCut(NodeId from, NodeId to) const;
  const LinkFaults& FaultsOf(NodeId from, NodeId to) const;
  bool Draw(double probability);
  Clock::duration DrawDelay(const LinkFaults& faults);

  // Queues `message` from `from` to `to`, or drops it. Wakes the delivery
  // thread when `wake` and the message is due before it would wake.
  template <typename M>
  void Route(NodeId from, NodeId to, M message, TimePoint now,
             bool wake = true);
  // inline_delivery: delivers what is due for `to` on this thread when its
  // delivery thread is idle; otherwise leaves it to that thread, waking it
  // if needed. REQUIRES: `lock` holds mu_; released during handler calls.
  void DeliverInline(std::unique_lock<std::mutex>& lock, NodeId to);
  // Queues a ReportUnreachable(peer) to `node`, at most one per
  // unreachable_interval.
  void QueueReport(NodeId node, NodeId peer, TimePoint now);
  // Discards what is queued for `inbox`.
  void DiscardQueued(Inbox& inbox);
  void Release(Endpoint& endpoint);

  void DeliveryLoop(Inbox* inbox);
  // Moves what is due at `now` out of the queues of `inbox`: the due prefix
  // of Raft messages of each sender into `batch`, and the server message
  // that ends it, if due, into `server_messages`. Returns when the next
  // message left is due.
  TimePoint Collect(Inbox& inbox, TimePoint now, std::vector<Message>& batch,
                    std::vector<ServerMessage>& server_messages);

  void StreamLoop(StreamWorker* worker);
  void RunStream(NodeId from, NodeId to, Stream& stream);
  // OK when the stream may go on: the network is up, the sender and the
  // receiver (`receiver`, or when null the started node `to`) are not
  // stopping, the link is not cut, and no drop hits.
  absl::Status CheckStream(const Endpoint* sender, const Endpoint* receiver,
                           NodeId from, NodeId to);
  absl::Status Transfer(NodeId from, NodeId to, const Stream& stream,
                        Endpoint& receiver);
  absl::Status TransferFile(NodeId from, NodeId to, const Stream& stream,
                            const Endpoint& receiver, const SnapshotFile& file,
                            SnapshotSink& sink, std::string& buffer);

  const Options options_;
  const Clock::duration unreachable_interval_;

  // Guards everything below, and the Endpoints.
  mutable std::mutex mu_;
  bool shutdown_ = false;
  std::mt19937_64 random_;
  Stats stats_;
  std::map<NodeId, std::unique_ptr<Inbox>> inboxes_;
  std::map<std::pair<NodeId, NodeId>, std::unique_ptr<StreamWorker>> workers_;

  LinkFaults faults_;
  std::map<std::pair<NodeId, NodeId>, LinkFaults> link_faults_;
  // Partition: the group of each listed node; unlisted nodes are group 0.
  std::map<NodeId, size_t> group_of_;
  std::set<NodeId> isolated_;
  std::set<std::pair<NodeId, NodeId>> blocked_;
};

namespace {

void CheckFaults(const LinkFaults& faults) {
  RAFT_CHECK(faults.drop >= 0 && faults.drop <= 1,
             absl::StrCat("LinkFaults::drop ", faults.drop, " not in [0, 1]"));
  RAFT_CHECK(faults.duplicate >= 0 && faults.duplicate <= 1,
             absl::StrCat("LinkFaults::duplicate ", faults.duplicate,
                          " not in [0, 1]"));
  RAFT_CHECK(
      faults.min_delay >= absl::ZeroDuration(),
      absl::StrCat("LinkFaults::min_delay ",
                   absl::FormatDuration(faults.min_delay), " is negative"));
}

absl::Status ErrnoError(const char* call, const std::filesystem::path& path,
                        int error) {
  const std::string message =
      absl::StrCat(call, " ", path.string(), ": ", std::strerror(error));
  return error == ENOENT ? absl::NotFoundError(message)
                         : absl::InternalError(message);
}

std::string LinkName(NodeId from, NodeId to) {
  return absl::StrCat(from.value(), "->", to.value());
}

}  // namespace

Medium::Medium(Options options)
    : options_(options),
      unreachable_interval_(std::chrono::duration_cast<Clock::duration>(
          absl::ToChronoNanoseconds(options.unreachable_interval))),
      random_(options.seed) {
  RAFT_CHECK(options_.max_queued > 0, "Options::max_queued must be positive");
  RAFT_CHECK(options_.max_batch > 0, "Options::max_batch must be positive");
  RAFT_CHECK(options_.snapshot_chunk_bytes > 0,
             "Options::snapshot_chunk_bytes must be positive");
}

void Medium::Shutdown() {
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
    for (auto& [id, inbox] : inboxes_) {
      DiscardQueued(*inbox);
      inbox->wake.notify_one();
      threads.push_back(std::move(inbox->thread));
    }
    for (auto& [pair, worker] : workers_) {
      worker->wake.notify_one();
      threads.push_back(std::move(worker->thread));
    }
  }
  for (std::thread& thread : threads) thread.join();
}

absl::Status Medium::Start(Endpoint& endpoint, NodeId self,
                           TransportHandler* handler) {
  if (self == kNoNode) {
    return absl::InvalidArgumentError("Start: node id 0 is kNoNode");
  }
  if (handler == nullptr) {
    return absl::InvalidArgumentError("Start: no handler");
  }
  std::lock_guard lock(mu_);
  if (shutdown_) {
    return absl::FailedPreconditionError(
        "Start: the in-process network was destroyed");
  }
  if (endpoint.state != State::kNew) {
    return absl::FailedPreconditionError(
        "Start: a transport is started at most once");
  }
  auto [it, inserted] = inboxes_.try_emplace(self);
  if (inserted) {
    it->second = std::make_unique<Inbox>();
    Inbox* const inbox = it->second.get();
    inbox->id = self;
    inbox->thread = std::thread([this, inbox] { DeliveryLoop(inbox); });
  }
  Inbox& inbox = *it->second;
  if (inbox.endpoint != nullptr) {
    return absl::AlreadyExistsError(absl::StrCat(
        "Start: node ", self.value(), " is started on another transport"));
  }
  endpoint.state = State::kStarted;
  endpoint.self = self;
  endpoint.handler = handler;
  inbox.endpoint = &endpoint;
  inbox.last_report.clear();
  return absl::OkStatus();
}

void Medium::Stop(Endpoint& endpoint) {
  std::unique_lock lock(mu_);
  switch (endpoint.state) {
    case State::kNew:
      endpoint.state = State::kStopped;
      return;
    case State::kStopped:
      return;
    case State::kStarted:
      break;
  }
  if (!endpoint.stopping) {
    endpoint.stopping = true;
    ++stats_.stops_begun;
    Inbox& inbox = *inboxes_.at(endpoint.self);
    inbox.endpoint = nullptr;
    DiscardQueued(inbox);
  }
  endpoint.idle.wait(
      lock, [&] { return endpoint.calls == 0 && endpoint.streams == 0; });
  endpoint.state = State::kStopped;
}

void Medium::Send(Endpoint& endpoint, std::vector<Message>& messages) {
  if (messages.empty()) return;
  std::unique_lock lock(mu_);
  if (!Sending(endpoint)) {
    stats_.sent += messages.size();
    stats_.dropped += messages.size();
    return;
  }
  const TimePoint now = Clock::now();
  for (Message& message : messages) {
    RAFT_CHECK(
        message.from == endpoint.self,
        absl::StrCat("Send: message from ", message.from.value(),
                     " on the transport of node ", endpoint.self.value()));
    const NodeId to = message.to;
    Route(endpoint.self, to, std::move(message), now,
          /*wake=*/!options_.inline_delivery);
  }
  if (!options_.inline_delivery) return;
  std::vector<NodeId> receivers;
  for (const Message& message : messages) {
    if (std::find(receivers.begin(), receivers.end(), message.to) ==
        receivers.end()) {
      receivers.push_back(message.to);
    }
  }
  for (NodeId to : receivers) DeliverInline(lock, to);
}

void Medium::DeliverInline(std::unique_lock<std::mutex>& lock, NodeId to) {
  Inbox* const inbox = FindInbox(to);
  if (inbox == nullptr) return;
  Endpoint* const endpoint = inbox->endpoint;
  // wake_at is min() while the delivery thread runs a round: it collects
  // again before it waits, so what was queued is its.
  const bool thread_idle = inbox->wake_at != TimePoint::min();
  if (!shutdown_ && endpoint != nullptr && !endpoint->stopping && thread_idle &&
      !inbox->inline_round) {
    std::vector<Message> batch;
    std::vector<ServerMessage> server_messages;
    Collect(*inbox, Clock::now(), batch, server_messages);
    if (!batch.empty() || !server_messages.empty()) {
      inbox->inline_round = true;
      ++endpoint->calls;
      TransportHandler* const handler = endpoint->handler;
      lock.unlock();
      if (!batch.empty()) handler->HandleMessages(std::move(batch));
      for (ServerMessage& message : server_messages) {
        handler->HandleServerMessage(std::move(message));
      }
      lock.lock();
      --endpoint->calls;
      inbox->inline_round = false;
      Release(*endpoint);
    }
  }
  // Whatever is left (delayed, or queued meanwhile) is the thread's.
  if (HasPending(*inbox) && inbox->wake_at != TimePoint::min()) {
    inbox->wake.notify_one();
  }
}

void Medium::SendServerMessage(Endpoint& endpoint, ServerMessage message) {
  std::lock_guard lock(mu_);
  if (!Sending(endpoint)) {
    ++stats_.sent;
    ++stats_.dropped;
    return;
  }
  RAFT_CHECK(
      message.from == endpoint.self,
      absl::StrCat("SendServerMessage: message from ", message.from.value(),
                   " on the transport of node ", endpoint.self.value()));
  const NodeId to = message.to;
  Route(endpoint.self, to, std::move(message), Clock::now());
}

void Medium::SendSnapshot(Endpoint& endpoint, OutgoingSnapshot snapshot,
                          Done done) {
  RAFT_CHECK(done != nullptr, "SendSnapshot: no done callback");
  RAFT_CHECK(std::holds_alternative<InstallSnapshot>(snapshot.message.payload),
             "SendSnapshot: the message is not an InstallSnapshot");
  std::unique_lock lock(mu_);
  if (shutdown_) {
    lock.unlock();
    done(absl::CancelledError("the in-process network was destroyed"));
    return;
  }
  Endpoint* sender = nullptr;
  NodeId from = kNoNode;
  if (Sending(endpoint)) {
    RAFT_CHECK(snapshot.message.from == endpoint.self,
               absl::StrCat(
                   "SendSnapshot: message from ", snapshot.message.from.value(),
                   " on the transport of node ", endpoint.self.value()));
    sender = &endpoint;
    from = endpoint.self;
    ++endpoint.streams;
  }
  const NodeId to = snapshot.message.to;
  auto [it, inserted] = workers_.try_emplace({from, to});
  if (inserted) {
    it->second = std::make_unique<StreamWorker>();
    StreamWorker* const worker = it->second.get();
    worker->from = from;
    worker->to = to;
    worker->thread = std::thread([this, worker] { StreamLoop(worker); });
  }
  it->second->queue.push_back(Stream{.snapshot = std::move(snapshot),
                                     .done = std::move(done),
                                     .sender = sender});
  it->second->wake.notify_one();
}

void Medium::SetFaults(LinkFaults faults) {
  CheckFaults(faults);
  std::lock_guard lock(mu_);
  faults_ = faults;
  link_faults_.clear();
}

void Medium::SetLinkFaults(NodeId from, NodeId to, LinkFaults faults) {
  CheckFaults(faults);
  std::lock_guard lock(mu_);
  link_faults_[{from, to}] = faults;
}

void Medium::Partition(std::vector<std::vector<NodeId>> groups) {
  std::lock_guard lock(mu_);
  group_of_.clear();
  for (size_t group = 0; group < groups.size(); ++group) {
    for (NodeId node : groups[group]) {
      RAFT_CHECK(
          group_of_.emplace(node, group + 1).second,
          absl::StrCat("Partition: node ", node.value(), " is listed twice"));
    }
  }
}

void Medium::Isolate(NodeId node) {
  std::lock_guard lock(mu_);
  isolated_.insert(node);
}

void Medium::BlockOneWay(NodeId from, NodeId to) {
  std::lock_guard lock(mu_);
  blocked_.insert({from, to});
}

void Medium::Heal() {
  std::lock_guard lock(mu_);
  group_of_.clear();
  isolated_.clear();
  blocked_.clear();
}

void Medium::ClearFaults() {
  std::lock_guard lock(mu_);
  group_of_.clear();
  isolated_.clear();
  blocked_.clear();
  faults_ = LinkFaults();
  link_faults_.clear();
}

Medium::Stats Medium::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

bool Medium::DeliveryIdle(NodeId node) const {
  std::lock_guard lock(mu_);
  const auto it = inboxes_.find(node);
  if (it == inboxes_.end()) return false;
  const Inbox& inbox = *it->second;
  return inbox.wake_at != TimePoint::min() && !inbox.inline_round &&
         !HasPending(inbox);
}

bool Medium::HasPending(const Inbox& inbox) {
  if (!inbox.unreachable.empty()) return true;
  for (const auto& [from, queue] : inbox.queues) {
    if (!queue.items.empty()) return true;
  }
  return false;
}

Medium::Inbox* Medium::FindInbox(NodeId id) {
  const auto it = inboxes_.find(id);
  return it == inboxes_.end() ? nullptr : it->second.get();
}

bool Medium::IsCut(NodeId from, NodeId to) const {
  if (from == to) return false;
  if (!isolated_.empty() &&
      (isolated_.contains(from) || isolated_.contains(to))) {
    return true;
  }
  if (!blocked_.empty() && blocked_.contains({from, to})) return true;
  if (!group_of_.empty()) {
    const auto group = [this](NodeId node) -> size_t {
      const auto it = group_of_.find(node);
      return it == group_of_.end() ? 0 : it->second;
    };
    return group(from) != group(to);
  }
  return false;
}

const LinkFaults& Medium::FaultsOf(NodeId from, NodeId to) const {
  if (link_faults_.empty()) return faults_;
  const auto it = link_faults_.find({from, to});
  return it == link_faults_.end() ? faults_ : it->second;
}

bool Medium::Draw(double probability) {
  return probability > 0 && absl::Bernoulli(random_, probability);
}

Medium::Clock::duration Medium::DrawDelay(const LinkFaults& faults) {
  const int64_t low = absl::ToInt64Nanoseconds(faults.min_delay);
  const int64_t high =
      std::max(low, absl::ToInt64Nanoseconds(faults.max_delay));
  if (low == high) return std::chrono::nanoseconds(low);
  return std::chrono::nanoseconds(
      absl::Uniform(absl::IntervalClosed, random_, low, high));
}

template <typename M>
void Medium::Route(NodeId from, NodeId to, M message, TimePoint now,
                   bool wake) {
  ++stats_.sent;
  Inbox* const inbox = FindInbox(to);
  if (inbox == nullptr || inbox->endpoint == nullptr) {
    ++stats_.dropped;
    QueueReport(from, to, now);
    return;
  }
  if (IsCut(from, to)) {
    ++stats_.dropped;
    return;
  }
  const LinkFaults& faults = FaultsOf(from, to);
  if (Draw(faults.drop)) {
    ++stats_.dropped;
    return;
  }
  int copies = 1;
  if (Draw(faults.duplicate)) {
    copies = 2;
    ++stats_.duplicated;
  }
  TimePoint due = now;
  if (faults.min_delay > absl::ZeroDuration() ||
      faults.max_delay > absl::ZeroDuration()) {
    due += DrawDelay(faults);
  }
  PairQueue& queue = inbox->queues[from];
  due = std::max(due, queue.last_due);
  for (int copy = 0; copy < copies; ++copy) {
    if (queue.items.size() >= options_.max_queued) {
      ++stats_.dropped;
      QueueReport(from, to, now);
      continue;
    }
    if (copy + 1 < copies) {
      queue.items.push_back(Item{.due = due, .message = message});
    } else {
      queue.items.push_back(Item{.due = due, .message = std::move(message)});
    }
    ++stats_.queued;
    stats_.peak_queued =
        std::max<uint64_t>(stats_.peak_queued, queue.items.size());
  }
  queue.last_due = due;
  if (wake && due < inbox->wake_at) inbox->wake.notify_one();
}

void Medium::QueueReport(NodeId node, NodeId peer, TimePoint now) {
  Inbox* const inbox = FindInbox(node);
  if (inbox == nullptr || inbox->endpoint == nullptr) return;
  if (std::find(inbox->unreachable.begin(), inbox->unreachable.end(), peer) !=
      inbox->unreachable.end()) {
    return;
  }
  auto [it, inserted] = inbox->last_report.try_emplace(peer, now);
  if (!inserted) {
    if (now - it->second < unreachable_interval_) return;
    it->second = now;
  }
  inbox->unreachable.push_back(peer);
  if (now < inbox->wake_at) inbox->wake.notify_one();
}

void Medium::DiscardQueued(Inbox& inbox) {
  for (const auto& [from, queue] : inbox.queues) {
    stats_.dropped += queue.items.size();
    stats_.queued -= queue.items.size();
  }
  inbox.queues.clear();
  inbox.unreachable.clear();
}

void Medium::Release(Endpoint& endpoint) {
  if (endpoint.stopping && endpoint.calls == 0 && endpoint.streams == 0) {
    endpoint.idle.notify_all();
  }
}

void Medium::DeliveryLoop(Inbox* inbox) {
  std::vector<NodeId> reports;
  std::vector<Message> batch;
  std::vector<ServerMessage> server_messages;
  std::unique_lock lock(mu_);
  while (!shutdown_) {
    if (inbox->inline_round) {
      // A sender delivers; it wakes this thread if it leaves anything.
      inbox->wake_at = TimePoint::max();
      inbox->wake.wait(lock);
      inbox->wake_at = TimePoint::min();
      continue;
    }
    Endpoint* const endpoint = inbox->endpoint;
    TimePoint next = TimePoint::max();
    if (endpoint != nullptr) {
      reports.swap(inbox->unreachable);
      next = Collect(*inbox, Clock::now(), batch, server_messages);
    }
    if (reports.empty() && batch.empty() && server_messages.empty()) {
      inbox->wake_at = next;
      if (next == TimePoint::max()) {
        inbox->wake.wait(lock);
      } else {
        inbox->wake.wait_until(lock, next);
      }
      inbox->wake_at = TimePoint::min();
      continue;
    }
    stats_.unreachable_reports += reports.size();
    ++endpoint->calls;
    TransportHandler* const handler = endpoint->handler;
    lock.unlock();
    for (const NodeId peer : reports) handler->ReportUnreachable(peer);
    if (!batch.empty()) handler->HandleMessages(std::move(batch));
    for (ServerMessage& message : server_messages) {
      handler->HandleServerMessage(std::move(message));
    }
    reports.clear();
    batch.clear();
    server_messages.clear();
    lock.lock();
    --endpoint->calls;
    Release(*endpoint);
  }
}

Medium::TimePoint Medium::Collect(Inbox& inbox, TimePoint now,
                                  std::vector<Message>& batch,
                                  std::vector<ServerMessage>& server_messages) {
  TimePoint next = TimePoint::max();
  const size_t senders = inbox.queues.size();
  if (senders == 0) return next;
  auto it = inbox.queues.begin();
  std::advance(it, static_cast<std::ptrdiff_t>(inbox.round++ % senders));
  for (size_t visited = 0; visited < senders; ++visited, ++it) {
    if (it == inbox.queues.end()) it = inbox.queues.begin();
    const NodeId from = it->first;
    std::deque<Item>& items = it->second.items;
    if (items.empty()) continue;
    const bool cut = IsCut(from, inbox.id);
    while (!items.empty()) {
      Item& item = items.front();
      if (item.due > now) {
        next = std::min(next, item.due);
        break;
      }
      const bool is_raft = std::holds_alternative<Message>(item.message);
      if (!cut && is_raft && batch.size() >= options_.max_batch) break;
      std::variant<Message, ServerMessage> message = std::move(item.message);
      items.pop_front();
      --stats_.queued;
      if (cut) {
        ++stats_.dropped;
        continue;
      }
      ++stats_.delivered;
      if (is_raft) {
        batch.push_back(std::move(std::get<Message>(message)));
        continue;
      }
      server_messages.push_back(std::move(std::get<ServerMessage>(message)));
      break;
    }
  }
  return next;
}

void Medium::StreamLoop(StreamWorker* worker) {
  std::unique_lock lock(mu_);
  while (true) {
    worker->wake.wait(lock,
                      [&] { return !worker->queue.empty() || shutdown_; });
    if (worker->queue.empty()) break;
    {
      Stream stream = std::move(worker->queue.front());
      worker->queue.pop_front();
      lock.unlock();
      RunStream(worker->from, worker->to, stream);
    }
    lock.lock();
  }
}

void Medium::RunStream(NodeId from, NodeId to, Stream& stream) {
  Endpoint* receiver = nullptr;
  absl::Status status;
  {
    std::lock_guard lock(mu_);
    status = CheckStream(stream.sender, nullptr, from, to);
    if (status.ok()) {
      receiver = inboxes_.at(to)->endpoint;
      ++receiver->streams;
    }
  }
  if (status.ok()) status = Transfer(from, to, stream, *receiver);
  {
    std::lock_guard lock(mu_);
    ++(status.ok() ? stats_.snapshots_sent : stats_.snapshots_failed);
  }
  {
    Done done = std::move(stream.done);
    done(std::move(status));
  }
  std::lock_guard lock(mu_);
  if (receiver != nullptr) {
    --receiver->streams;
    Release(*receiver);
  }
  if (stream.sender != nullptr) {
    --stream.sender->streams;
    Release(*stream.sender);
  }
}

absl::Status Medium::CheckStream(const Endpoint* sender,
                                 const Endpoint* receiver, NodeId from,
                                 NodeId to) {
  if (shutdown_) {
    return absl::CancelledError("the in-process network was destroyed");
  }
  if (sender == nullptr) {
    return absl::FailedPreconditionError(
        "snapshot stream: the sending transport is not started");
  }
  if (sender->stopping) {
    return absl::CancelledError(absl::StrCat(
        "snapshot stream ", LinkName(from, to), ": the sender stopped"));
  }
  if (receiver == nullptr) {
    const Inbox* const inbox = FindInbox(to);
    if (inbox == nullptr || inbox->endpoint == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("snapshot stream ", LinkName(from, to), ": node ",
                       to.value(), " is not started"));
    }
  } else if (receiver->stopping) {
    return absl::UnavailableError(absl::StrCat(
        "snapshot stream ", LinkName(from, to), ": the receiver stopped"));
  }
  if (IsCut(from, to)) {
    return absl::UnavailableError(absl::StrCat(
        "snapshot stream ", LinkName(from, to), ": the link is cut"));
  }
  if (Draw(FaultsOf(from, to).drop)) {
    return absl::UnavailableError(absl::StrCat(
        "snapshot stream ", LinkName(from, to), ": lost (drop fault)"));
  }
  return absl::OkStatus();
}

absl::Status Medium::Transfer(NodeId from, NodeId to, const Stream& stream,
                              Endpoint& receiver) {
  absl::StatusOr<std::unique_ptr<SnapshotSink>> sink =
      receiver.handler->ReceiveSnapshot(stream.snapshot.message,
                                        stream.snapshot.manifest);
  if (!sink.ok()) return sink.status();
  RAFT_CHECK(*sink != nullptr, "ReceiveSnapshot returned OK without a sink");
  std::string buffer(options_.snapshot_chunk_bytes, '\0');
  for (const SnapshotFile& file : stream.snapshot.manifest.files) {
    absl::Status status =
        TransferFile(from, to, stream, receiver, file, **sink, buffer);
    if (!status.ok()) return status;
  }
  {
    std::lock_guard lock(mu_);
    absl::Status status = CheckStream(stream.sender, &receiver, from, to);
    if (!status.ok()) return status;
  }
  return (*sink)->Finish();
}

absl::Status Medium::TransferFile(NodeId from, NodeId to, const Stream& stream,
                                  const Endpoint& receiver,
                                  const SnapshotFile& file, SnapshotSink& sink,
                                  std::string& buffer) {
  const std::filesystem::path path = stream.snapshot.dir / file.name;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError("open", path, errno);
  absl::Status status;
  uint64_t sent = 0;
  while (status.ok() && sent < file.size) {
    const size_t want = static_cast<size_t>(
        std::min<uint64_t>(file.size - sent, buffer.size()));
    size_t got = 0;
    while (got < want) {
      const ssize_t n = ::read(fd, buffer.data() + got, want - got);
      if (n < 0) {
        if (errno == EINTR) continue;
        status = ErrnoError("read", path, errno);
        break;
      }
      if (n == 0) {
        status = absl::DataLossError(
            absl::StrCat(path.string(), " holds ", sent + got,
                         " bytes; the snapshot manifest says ", file.size));
        break;
      }
      got += static_cast<size_t>(n);
    }
    if (!status.ok()) break;
    {
      std::lock_guard lock(mu_);
      status = CheckStream(stream.sender, &receiver, from, to);
    }
    if (!status.ok()) break;
    status = sink.Write(file.name, std::string_view(buffer.data(), want));
    sent += want;
  }
  ::close(fd);
  return status;
}

}  // namespace in_process_internal

namespace {

using in_process_internal::Medium;

class InProcessTransport final : public Transport {
 public:
  explicit InProcessTransport(std::shared_ptr<Medium> medium)
      : medium_(std::move(medium)) {}
  ~InProcessTransport() override { medium_->Stop(endpoint_); }

  absl::Status Start(NodeId self, TransportHandler* handler) override {
    return medium_->Start(endpoint_, self, handler);
  }
  void Stop() override { medium_->Stop(endpoint_); }
  void Send(std::vector<Message>& messages) override {
    medium_->Send(endpoint_, messages);
  }
  void SendServerMessage(ServerMessage message) override {
    medium_->SendServerMessage(endpoint_, std::move(message));
  }
  void SendSnapshot(OutgoingSnapshot snapshot,
                    std::function<void(absl::Status)> done) override {
    medium_->SendSnapshot(endpoint_, std::move(snapshot), std::move(done));
  }

 private:
  const std::shared_ptr<Medium> medium_;
  Medium::Endpoint endpoint_;
};

}  // namespace

InProcessNetwork::InProcessNetwork(uint64_t seed)
    : InProcessNetwork(Options{.seed = seed}) {}

InProcessNetwork::InProcessNetwork(Options options)
    : medium_(std::make_shared<in_process_internal::Medium>(options)) {}

InProcessNetwork::~InProcessNetwork() { medium_->Shutdown(); }

std::unique_ptr<Transport> InProcessNetwork::CreateTransport() {
  return std::make_unique<InProcessTransport>(medium_);
}

void InProcessNetwork::SetFaults(LinkFaults faults) {
  medium_->SetFaults(faults);
}

void InProcessNetwork::SetLinkFaults(NodeId from, NodeId to,
                                     LinkFaults faults) {
  medium_->SetLinkFaults(from, to, faults);
}

void InProcessNetwork::Partition(std::vector<std::vector<NodeId>> groups) {
  medium_->Partition(std::move(groups));
}

void InProcessNetwork::Isolate(NodeId node) { medium_->Isolate(node); }

void InProcessNetwork::BlockOneWay(NodeId from, NodeId to) {
  medium_->BlockOneWay(from, to);
}

void InProcessNetwork::Heal() { medium_->Heal(); }

void InProcessNetwork::ClearFaults() { medium_->ClearFaults(); }

InProcessNetwork::Stats InProcessNetwork::stats() const {
  return medium_->stats();
}

bool InProcessNetwork::DeliveryIdleForTesting(NodeId node) const {
  return medium_->DeliveryIdle(node);
}

}  // namespace driftwood::raft
