// Driftwood: WatchHub, where the apply loop publishes the events of each
// applied batch once, and from which every watcher reads them
// (docs/design.md "Watches").
//
// The hub keeps the newest batches in a bounded ring of shared, immutable
// batches: a watcher that is up to date reads its events from there without
// touching the store, and no watcher has a buffer of its own. A watcher that
// is behind the ring (a start revision in the past, or a slow stream the ring
// moved past) reads from the store's history (MvccStore::Events) through the
// StoreReader, in bounded steps, until it reaches the ring. A watcher whose
// next revision was compacted away is told so. Memory is therefore bounded by
// the ring plus one response per stream, whatever the watchers do, and
// publishing never waits for a watcher.
//
// Invariant (what makes the ring and the store agree): every revision has at
// least one event, the revisions of a batch follow the previous batch's, and
// a batch is published only after it is written, so the store holds every
// revision below the ring's first one.
//
// Thread safety: Publish and Reset come from the apply thread; everything
// else from any thread.
#ifndef DRIFTWOOD_STATEMACHINE_MVCC_WATCH_HUB_H_
#define DRIFTWOOD_STATEMACHINE_MVCC_WATCH_HUB_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "statemachine/mvcc/mvcc_store.h"

namespace driftwood::mvcc {

// What one watcher asks for (etcd's WatchCreateRequest, resolved).
struct WatchSpec {
  std::string key;
  std::string range_end;
  bool prev_kv = false;
  bool no_put = false;
  bool no_delete = false;
};

// One read of a watcher's events.
struct WatchRead {
  // In revision order; whole revisions only.
  std::vector<mvccpb::Event> events;
  // The watcher has seen everything up to here; it continues after it.
  int64_t through_revision = 0;
  // The watcher's next revision was compacted: no events; it must be
  // cancelled with compact_revision.
  bool compacted = false;
  int64_t compact_revision = 0;
};

struct WatchHubOptions {
  // The ring keeps at most this many events and bytes of keys and values
  // (the newest batch is always kept). While nothing is subscribed it keeps
  // the newest batch only: no stream could read the rest from the ring
  // before a later batch, and a stream that subscribes later starts behind
  // the ring anyway (it reads the store until it reaches the ring). Keeping
  // 100,000 events nobody reads would make every put's event outlive about
  // 100,000 other puts, so that each allocation of the apply thread reuses
  // memory that long left the CPU's caches.
  size_t ring_events = 100'000;
  size_t ring_bytes = size_t{64} << 20;
  // How often subscribers are woken without new events (for their timers).
  absl::Duration tick = absl::Seconds(1);
};

class WatchHub {
 public:
  // Reads the store's history (an MvccQuery's events); must be callable from
  // any thread.
  using StoreReader =
      std::function<absl::StatusOr<EventsResponse>(const EventsQuery&)>;

  WatchHub(StoreReader reader, WatchHubOptions options = {});
  // Stops the waking thread. REQUIRES: no subscriber is left.
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // The apply thread: the events of one written batch and the store's
  // revision and compaction point after it (a batch without events only
  // moves them). False when the batch did not follow the previous one (the
  // ring was dropped; see gaps()).
  bool Publish(std::vector<mvccpb::Event> events, int64_t revision,
               int64_t compact_revision);
  // The apply thread: the state was replaced by a snapshot; the ring is
  // dropped and watchers read the new state's history.
  void Reset();

  // The newest revision a watcher can be told about: what was published,
  // or, before anything was, the store's.
  absl::StatusOr<int64_t> Revision() const;

  // Up to about `max_events` events (and `max_bytes`) of `spec` from
  // `next_revision` on. through_revision < next_revision means nothing new
  // yet. Errors are the store's (storage failures).
  absl::StatusOr<WatchRead> Read(const WatchSpec& spec, int64_t next_revision,
                                 size_t max_events = 1000,
                                 size_t max_bytes = size_t{1} << 20) const;

  // `wake` is called (on the hub's own thread, never on the apply thread)
  // after new events are published and once per tick. It must not block for
  // long; it may call Read. Returns a handle for Unsubscribe. Unsubscribe
  // does not wait for a call in progress: `wake` guards the lifetime of what
  // it uses itself (a weak_ptr, say).
  uint64_t Subscribe(std::function<void()> wake);
  void Unsubscribe(uint64_t handle);

  // For tests and metrics: events in the ring, and reads that went to the
  // store.
  size_t ring_events() const;
  uint64_t store_reads() const;
  // Batches that did not follow the previous one (the ring was dropped for
  // each). Always 0 unless the apply path is broken.
  uint64_t gaps() const;

 private:
  struct Batch {
    int64_t revision = 0;  // the store's revision after the batch
    std::vector<mvccpb::Event> events;
    size_t bytes = 0;
  };

  void WakeLoop();
  // Tells the waker thread that something was published, if anyone listens.
  void WakeSubscribers();
  static bool Matches(const WatchSpec& spec, const mvccpb::Event& event);

  const StoreReader reader_;
  const WatchHubOptions options_;

  mutable std::mutex mu_;
  std::deque<std::shared_ptr<const Batch>> ring_;  // mu_
  // Every event of a revision >= covered_from_ is in the ring (0: nothing
  // was published since the start or the last Reset).
  int64_t covered_from_ = 0;  // mu_
  int64_t revision_ = 0;      // mu_; 0: nothing published yet
  // Events at or below it are compacted, even those still in the ring.
  int64_t compact_revision_ = 0;                       // mu_
  size_t ring_event_count_ = 0, ring_byte_count_ = 0;  // mu_
  mutable uint64_t store_reads_ = 0;                   // mu_
  uint64_t gaps_ = 0;                                  // mu_

  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  bool published_ = false;                                 // wake_mu_
  bool stop_ = false;                                      // wake_mu_
  std::map<uint64_t, std::function<void()>> subscribers_;  // wake_mu_
  // subscribers_.size(), for Publish, which does not take wake_mu_.
  std::atomic<size_t> subscriber_count_{0};
  uint64_t next_handle_ = 1;  // wake_mu_
  std::thread waker_;
};

}  // namespace driftwood::mvcc

#endif  // DRIFTWOOD_STATEMACHINE_MVCC_WATCH_HUB_H_
