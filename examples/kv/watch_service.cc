#include "examples/kv/watch_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace driftwood::kv {

namespace {

using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

int64_t SteadyMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

class WatchStream;

// A stream's state. Shared with the hub's waker (through a weak_ptr), so it
// outlives the reactor by as long as a wake-up is running.
class StreamState : public std::enable_shared_from_this<StreamState> {
 public:
  StreamState(const Context& context, absl::Duration progress_interval,
              bool require_leader, WatchStream* reactor)
      : context_(context),
        progress_interval_(progress_interval),
        require_leader_(require_leader),
        reactor_(reactor) {}

  // OnReadDone: one client request.
  void Handle(const WatchRequest& request);
  // Sends the next response if none is in flight (any thread).
  void Pump();
  // OnWriteDone.
  void WriteDone(bool ok);
  // The client stopped sending, or cancelled.
  void Close();
  // OnDone: the reactor is gone.
  void Detach();

  uint64_t handle = 0;  // the hub subscription

 private:
  struct Watcher {
    mvcc::WatchSpec spec;
    int64_t next_revision = 0;
    bool progress_notify = false;
    bool fragment = false;
    absl::Time last_sent = absl::Now();
  };

  void FillHeader(WatchResponse* response, int64_t revision) const {
    context_.FillHeader(response->mutable_header());
    response->mutable_header()->set_revision(revision);
  }
  // Builds the next response into out_; false when there is none.
  // REQUIRES: mu_ held, no write in flight.
  bool NextResponse();
  // Splits out_ into fragments when it is over the request limit.
  void Fragment();
  // Finishes the call (once), when no write is in flight.
  void MaybeFinish();

  const Context& context_;
  const absl::Duration progress_interval_;
  const bool require_leader_;

  std::mutex mu_;
  WatchStream* reactor_;                 // mu_; null once the reactor is done
  std::map<int64_t, Watcher> watchers_;  // mu_
  int64_t next_id_ = 0;                  // mu_
  int64_t cursor_ = 0;                   // mu_: round robin over ids
  std::deque<WatchResponse> control_;    // mu_: created/canceled replies
  std::deque<WatchResponse> fragments_;  // mu_
  bool progress_requested_ = false;      // mu_
  bool writing_ = false;                 // mu_
  bool closing_ = false;                 // mu_
  bool finished_ = false;                // mu_
  grpc::Status finish_status_;           // mu_
  WatchResponse out_;  // the response in flight (owned by gRPC meanwhile)
};

class WatchStream final
    : public rpc::ServerBidiReactor<WatchRequest, WatchResponse> {
 public:
  WatchStream(const Context& context, absl::Duration progress_interval,
              bool require_leader)
      : context_(context),
        state_(std::make_shared<StreamState>(context, progress_interval,
                                             require_leader, this)) {
    ++context_.watch_streams;
    std::weak_ptr<StreamState> weak = state_;
    state_->handle = context_.watch_hub->Subscribe([weak] {
      if (std::shared_ptr<StreamState> state = weak.lock()) state->Pump();
    });
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      state_->Close();
      return;
    }
    state_->Handle(request_);
    StartRead(&request_);
  }
  void OnWriteDone(bool ok) override { state_->WriteDone(ok); }
  void OnCancel() override { state_->Close(); }
  void OnDone() override {
    context_.watch_hub->Unsubscribe(state_->handle);
    state_->Detach();
    delete this;
  }

 private:
  const Context& context_;
  std::shared_ptr<StreamState> state_;
  WatchRequest request_;
};

void StreamState::Handle(const WatchRequest& request) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    switch (request.request_union_case()) {
      case WatchRequest::kCreateRequest: {
        const etcdserverpb::WatchCreateRequest& create =
            request.create_request();
        WatchResponse& reply = control_.emplace_back();
        absl::StatusOr<int64_t> current = context_.watch_hub->Revision();
        int64_t id = create.watch_id();
        if (!current.ok()) {
          reply.set_created(true);
          reply.set_canceled(true);
          reply.set_watch_id(-1);
          reply.set_cancel_reason(std::string(current.status().message()));
          FillHeader(&reply, 0);
          break;
        }
        if (id == 0) {
          while (watchers_.contains(next_id_)) ++next_id_;
          id = next_id_++;
        } else if (watchers_.contains(id)) {
          // etcd's ErrWatcherDuplicateID.
          reply.set_created(true);
          reply.set_canceled(true);
          reply.set_watch_id(-1);
          reply.set_cancel_reason("mvcc: duplicate watch ID provided");
          FillHeader(&reply, *current);
          break;
        }
        Watcher watcher;
        watcher.spec.key = create.key();
        watcher.spec.range_end = create.range_end();
        watcher.spec.prev_kv = create.prev_kv();
        for (int filter : create.filters()) {
          if (filter == etcdserverpb::WatchCreateRequest::NOPUT) {
            watcher.spec.no_put = true;
          } else if (filter == etcdserverpb::WatchCreateRequest::NODELETE) {
            watcher.spec.no_delete = true;
          }
        }
        watcher.next_revision = create.start_revision() > 0
                                    ? create.start_revision()
                                    : *current + 1;
        watcher.progress_notify = create.progress_notify();
        watcher.fragment = create.fragment();
        watchers_.emplace(id, std::move(watcher));
        ++context_.watchers;
        reply.set_created(true);
        reply.set_watch_id(id);
        FillHeader(&reply, *current);
        break;
      }
      case WatchRequest::kCancelRequest: {
        const int64_t id = request.cancel_request().watch_id();
        if (watchers_.erase(id) == 0) break;  // etcd answers nothing
        --context_.watchers;
        WatchResponse& reply = control_.emplace_back();
        reply.set_watch_id(id);
        reply.set_canceled(true);
        absl::StatusOr<int64_t> current = context_.watch_hub->Revision();
        FillHeader(&reply, current.ok() ? *current : 0);
        break;
      }
      case WatchRequest::kProgressRequest:
        progress_requested_ = true;
        break;
      case WatchRequest::REQUEST_UNION_NOT_SET:
        break;
    }
  }
  Pump();
}

bool StreamState::NextResponse() {
  out_.Clear();
  // The rest of a fragmented response first: clients join the pieces of
  // a watcher until the last, so nothing may come between them.
  if (!fragments_.empty()) {
    out_ = std::move(fragments_.front());
    fragments_.pop_front();
    return true;
  }
  if (!control_.empty()) {
    out_ = std::move(control_.front());
    control_.pop_front();
    return true;
  }
  absl::StatusOr<int64_t> current = context_.watch_hub->Revision();
  if (!current.ok()) {
    closing_ = true;
    finish_status_ = grpc::Status(grpc::StatusCode::INTERNAL,
                                  std::string(current.status().message()));
    return false;
  }
  // One watcher with news per response, taking turns.
  for (size_t n = 0; n < watchers_.size(); ++n) {
    auto it = watchers_.lower_bound(cursor_);
    if (it == watchers_.end()) it = watchers_.begin();
    cursor_ = it->first + 1;
    Watcher& watcher = it->second;
    if (watcher.next_revision > *current) continue;
    absl::StatusOr<mvcc::WatchRead> read =
        context_.watch_hub->Read(watcher.spec, watcher.next_revision);
    if (!read.ok()) {
      closing_ = true;
      finish_status_ = grpc::Status(grpc::StatusCode::INTERNAL,
                                    std::string(read.status().message()));
      return false;
    }
    if (read->compacted) {
      // etcd: the watcher is cancelled with the compaction point; clients
      // report "required revision has been compacted".
      out_.set_watch_id(it->first);
      out_.set_canceled(true);
      out_.set_compact_revision(read->compact_revision);
      // etcd leaves the revision out of this header.
      FillHeader(&out_, 0);
      watchers_.erase(it);
      --context_.watchers;
      return true;
    }
    watcher.next_revision = read->through_revision + 1;
    if (read->events.empty()) continue;
    out_.set_watch_id(it->first);
    FillHeader(&out_, std::max(*current, read->through_revision));
    for (mvccpb::Event& event : read->events) {
      *out_.add_events() = std::move(event);
    }
    watcher.last_sent = absl::Now();
    if (watcher.fragment) Fragment();
    return true;
  }
  if (progress_requested_) {
    const bool all_synced =
        std::all_of(watchers_.begin(), watchers_.end(), [&](const auto& entry) {
          return entry.second.next_revision > *current;
        });
    if (all_synced) {
      progress_requested_ = false;
      out_.set_watch_id(-1);
      FillHeader(&out_, *current);
      return true;
    }
  }
  if (progress_interval_ > absl::ZeroDuration()) {
    const absl::Time now = absl::Now();
    for (auto& [id, watcher] : watchers_) {
      if (!watcher.progress_notify || watcher.next_revision <= *current ||
          now - watcher.last_sent < progress_interval_) {
        continue;
      }
      watcher.last_sent = now;
      out_.set_watch_id(id);
      FillHeader(&out_, *current);
      return true;
    }
  }
  return false;
}

void StreamState::Fragment() {
  if (out_.ByteSizeLong() <= mvcc::kMaxRequestBytes) return;
  WatchResponse whole = std::move(out_);
  std::vector<WatchResponse> pieces;
  size_t bytes = 0;
  for (mvccpb::Event& event : *whole.mutable_events()) {
    const size_t size = event.ByteSizeLong();
    if (pieces.empty() ||
        (bytes + size > mvcc::kMaxRequestBytes && bytes > 0)) {
      WatchResponse& piece = pieces.emplace_back();
      *piece.mutable_header() = whole.header();
      piece.set_watch_id(whole.watch_id());
      bytes = 0;
    }
    *pieces.back().add_events() = std::move(event);
    bytes += size;
  }
  for (size_t i = 0; i + 1 < pieces.size(); ++i) pieces[i].set_fragment(true);
  out_ = std::move(pieces.front());
  for (size_t i = 1; i < pieces.size(); ++i) {
    fragments_.push_back(std::move(pieces[i]));
  }
}

void StreamState::Pump() {
  std::unique_lock<std::mutex> lock(mu_);
  if (reactor_ == nullptr || writing_ || finished_) return;
  if (!closing_ && require_leader_) {
    const int64_t since = context_.leaderless_since_ms.load();
    const int64_t limit =
        3 * context_.options.election_ticks *
        absl::ToInt64Milliseconds(context_.options.tick_interval);
    if (since != 0 && SteadyMillis() - since > limit) {
      closing_ = true;
      finish_status_ =
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader");
    }
  }
  if (closing_) {
    MaybeFinish();
    return;
  }
  if (!NextResponse()) {
    if (closing_) MaybeFinish();
    return;
  }
  writing_ = true;
  WatchStream* reactor = reactor_;
  lock.unlock();
  // Finish is never called while writing_, so the reactor is alive.
  reactor->StartWrite(&out_);
}

void StreamState::WriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) closing_ = true;
    if (closing_) {
      MaybeFinish();
      return;
    }
  }
  Pump();
}

void StreamState::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closing_ = true;
  MaybeFinish();
}

void StreamState::MaybeFinish() {
  if (finished_ || writing_ || reactor_ == nullptr) return;
  finished_ = true;
  reactor_->Finish(finish_status_);
}

void StreamState::Detach() {
  std::lock_guard<std::mutex> lock(mu_);
  reactor_ = nullptr;
  context_.watchers -= static_cast<int64_t>(watchers_.size());
  watchers_.clear();
  --context_.watch_streams;
}

// A stream refused at once.
class RefusedWatch final
    : public rpc::ServerBidiReactor<WatchRequest, WatchResponse> {
 public:
  explicit RefusedWatch(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

void WatchService::Serve(rpc::QueueServer& server) {
  rpc::ServeBidi(server, &async,
                 &etcdserverpb::Watch::AsyncService::RequestWatch,
                 [this](grpc::ServerContext* call) { return Watch(call); });
}

rpc::ServerBidiReactor<WatchRequest, WatchResponse>* WatchService::Watch(
    grpc::ServerContext* call) {
  bool require_leader = false;
  for (const auto& [key, value] : call->client_metadata()) {
    if (key == "hasleader" && value == "true") require_leader = true;
  }
  if (require_leader && context_.server->leader() == raft::kNoNode) {
    return new RefusedWatch(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader"));
  }
  return new WatchStream(context_, progress_notify_interval_, require_leader);
}

}  // namespace driftwood::kv
