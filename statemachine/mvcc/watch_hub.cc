#include "statemachine/mvcc/watch_hub.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace driftwood::mvcc {

namespace {

size_t EventBytes(const mvccpb::Event& event) {
  return event.kv().key().size() + event.kv().value().size() +
         event.prev_kv().key().size() + event.prev_kv().value().size() + 64;
}

}  // namespace

WatchHub::WatchHub(StoreReader reader, WatchHubOptions options)
    : reader_(std::move(reader)), options_(options) {
  waker_ = std::thread([this] { WakeLoop(); });
}

WatchHub::~WatchHub() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    stop_ = true;
  }
  wake_cv_.notify_all();
  waker_.join();
}

bool WatchHub::Publish(std::vector<mvccpb::Event> events, int64_t revision,
                       int64_t compact_revision) {
  auto batch = std::make_shared<Batch>();
  batch->revision = revision;
  batch->events = std::move(events);
  for (const mvccpb::Event& event : batch->events) {
    batch->bytes += EventBytes(event);
  }
  bool followed = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    compact_revision_ = std::max(compact_revision_, compact_revision);
    if (revision <= revision_) return true;  // nothing new
    // The ring must hold every revision after its first one. A batch that
    // does not start right after the last one (which the apply path never
    // publishes) would leave a hole that watchers reading the ring could
    // not see; the ring is dropped instead, and watchers behind read the
    // store, which holds every revision.
    const bool follows =
        !batch->events.empty() &&
        batch->events.front().kv().mod_revision() == revision_ + 1;
    if (revision_ != 0 && !follows) {
      followed = false;
      ++gaps_;
      ring_.clear();
      ring_event_count_ = ring_byte_count_ = 0;
      covered_from_ = 0;
    }
    if (covered_from_ == 0) {
      // Revisions are consecutive and each has an event, so the batch's
      // first event is the first revision after the store's previous one.
      covered_from_ = batch->events.empty()
                          ? revision + 1
                          : batch->events.front().kv().mod_revision();
    }
    revision_ = revision;
    if (!batch->events.empty()) {
      ring_event_count_ += batch->events.size();
      ring_byte_count_ += batch->bytes;
      ring_.push_back(std::move(batch));
      const bool watched =
          subscriber_count_.load(std::memory_order_relaxed) > 0;
      while (ring_.size() > 1 &&
             (!watched || ring_event_count_ > options_.ring_events ||
              ring_byte_count_ > options_.ring_bytes)) {
        const Batch& oldest = *ring_.front();
        ring_event_count_ -= oldest.events.size();
        ring_byte_count_ -= oldest.bytes;
        covered_from_ = oldest.revision + 1;
        ring_.pop_front();
      }
    }
  }
  WakeSubscribers();
  return followed;
}

void WatchHub::Reset() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ring_.clear();
    ring_event_count_ = ring_byte_count_ = 0;
    covered_from_ = 0;
    compact_revision_ = 0;
    revision_ = 0;
  }
  WakeSubscribers();
}

void WatchHub::WakeSubscribers() {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    // Without subscribers the waker thread stays asleep: a watcher that
    // subscribes later reads what was published (the ring is updated
    // before this), so waking nobody loses nothing and saves the apply
    // thread a futex wake and the waker a context switch per batch.
    if (subscribers_.empty()) return;
    published_ = true;
  }
  wake_cv_.notify_one();
}

absl::StatusOr<int64_t> WatchHub::Revision() const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (revision_ != 0) return revision_;
  }
  EventsQuery query;
  query.set_start_revision(std::numeric_limits<int64_t>::max());
  absl::StatusOr<EventsResponse> response = reader_(query);
  if (!response.ok()) return response.status();
  return response->revision();
}

bool WatchHub::Matches(const WatchSpec& spec, const mvccpb::Event& event) {
  if (event.type() == mvccpb::Event::PUT ? spec.no_put : spec.no_delete) {
    return false;
  }
  return KeyInRange(event.kv().key(), spec.key, spec.range_end);
}

absl::StatusOr<WatchRead> WatchHub::Read(const WatchSpec& spec,
                                         int64_t next_revision,
                                         size_t max_events,
                                         size_t max_bytes) const {
  WatchRead read;
  read.through_revision = next_revision - 1;
  std::vector<std::shared_ptr<const Batch>> batches;
  bool from_ring = false;
  int64_t store_end = 0;  // 0: read the store up to its current revision
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (next_revision <= compact_revision_) {
      // As the store would answer (MvccStore::Events).
      read.compacted = true;
      read.compact_revision = compact_revision_;
      return read;
    }
    if (covered_from_ != 0 && next_revision >= covered_from_) {
      from_ring = true;
      // The first batch that may hold next_revision (batches are in
      // revision order).
      auto it = std::lower_bound(
          ring_.begin(), ring_.end(), next_revision,
          [](const std::shared_ptr<const Batch>& batch, int64_t revision) {
            return batch->revision < revision;
          });
      size_t events = 0, bytes = 0;
      for (; it != ring_.end(); ++it) {
        batches.push_back(*it);
        events += (*it)->events.size();
        bytes += (*it)->bytes;
        if (events >= max_events || bytes >= max_bytes) {
          ++it;
          break;
        }
      }
      // Up to the newest batch taken, or everything published when no batch
      // was left behind (empty batches move the revision too).
      read.through_revision = it == ring_.end()
                                  ? std::max(revision_, next_revision - 1)
                                  : batches.back()->revision;
    } else if (covered_from_ != 0) {
      store_end = covered_from_ - 1;
    }
    if (!from_ring) ++store_reads_;
  }
  if (from_ring) {
    for (const auto& batch : batches) {
      for (const mvccpb::Event& event : batch->events) {
        if (event.kv().mod_revision() < next_revision) continue;
        if (!Matches(spec, event)) continue;
        mvccpb::Event& out = read.events.emplace_back(event);
        if (!spec.prev_kv) out.clear_prev_kv();
      }
    }
    return read;
  }

  // Behind the ring: the store's history, filtered by the store.
  EventsQuery query;
  query.set_key(spec.key);
  query.set_range_end(spec.range_end);
  query.set_start_revision(next_revision);
  query.set_end_revision(store_end);
  query.set_prev_kv(spec.prev_kv);
  query.set_max_events(max_events);
  query.set_max_bytes(max_bytes);
  absl::StatusOr<EventsResponse> response = reader_(query);
  if (!response.ok()) return response.status();
  if (response->compacted()) {
    read.compacted = true;
    read.compact_revision = response->compact_revision();
    return read;
  }
  read.through_revision =
      std::max(response->through_revision(), next_revision - 1);
  for (mvccpb::Event& event : *response->mutable_events()) {
    if (event.type() == mvccpb::Event::PUT ? spec.no_put : spec.no_delete) {
      continue;
    }
    read.events.push_back(std::move(event));
  }
  return read;
}

uint64_t WatchHub::Subscribe(std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(wake_mu_);
  const uint64_t handle = next_handle_++;
  subscribers_.emplace(handle, std::move(wake));
  subscriber_count_.store(subscribers_.size(), std::memory_order_relaxed);
  return handle;
}

void WatchHub::Unsubscribe(uint64_t handle) {
  std::lock_guard<std::mutex> lock(wake_mu_);
  subscribers_.erase(handle);
  subscriber_count_.store(subscribers_.size(), std::memory_order_relaxed);
}

size_t WatchHub::ring_events() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ring_event_count_;
}

uint64_t WatchHub::gaps() const {
  std::lock_guard<std::mutex> lock(mu_);
  return gaps_;
}

uint64_t WatchHub::store_reads() const {
  std::lock_guard<std::mutex> lock(mu_);
  return store_reads_;
}

void WatchHub::WakeLoop() {
  std::unique_lock<std::mutex> lock(wake_mu_);
  while (!stop_) {
    wake_cv_.wait_for(lock, absl::ToChronoNanoseconds(options_.tick),
                      [this] { return stop_ || published_; });
    if (stop_) return;
    published_ = false;
    // Called without the lock, so that subscribers may come and go.
    std::vector<std::function<void()>> wakes;
    wakes.reserve(subscribers_.size());
    for (const auto& [handle, wake] : subscribers_) wakes.push_back(wake);
    lock.unlock();
    for (const std::function<void()>& wake : wakes) wake();
    lock.lock();
  }
}

}  // namespace driftwood::mvcc
