#include "jepsen/client/coordination.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "examples/kv/proto/v3lock.grpc.pb.h"
#include "jepsen/client/json_log.h"

namespace driftwood::jepsen {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string EventType(const mvccpb::Event& event) {
  return event.type() == mvccpb::Event::DELETE ? "delete" : "put";
}

// Sleeps up to `duration`, returning early when `stop` is set.
void SleepUnless(const std::atomic<bool>& stop, std::chrono::milliseconds d) {
  const auto end = Clock::now() + d;
  while (!stop.load() && Clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

class Coordination::Impl {
 public:
  explicit Impl(CoordinationOptions options)
      : options_(std::move(options)),
        watch_log_(options_.watch_log),
        lock_log_(options_.lock_log) {
    for (const auto& [name, address] : options_.nodes) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
      auto channel = grpc::CreateCustomChannel(
          address, grpc::InsecureChannelCredentials(), args);
      kv_.push_back(etcdserverpb::KV::NewStub(channel));
      watch_.push_back(etcdserverpb::Watch::NewStub(channel));
      lease_.push_back(etcdserverpb::Lease::NewStub(channel));
      lock_.push_back(v3lockpb::Lock::NewStub(channel));
    }
    watchers_ = std::vector<Watcher>(static_cast<size_t>(options_.watchers));
  }

  ~Impl() {
    StopLocks();
    stop_watchers_ = true;
    CancelWatchers();
    for (std::thread& t : threads_) t.join();
  }

  void Start() {
    for (int i = 0; i < options_.watchers; ++i) {
      threads_.emplace_back([this, i] { RunWatcher(i); });
    }
    for (int p = 0; p < options_.lock_processes; ++p) {
      lock_threads_.emplace_back([this, p] { RunLockProcess(p); });
    }
  }

  void StopLocks() {
    stop_locks_ = true;
    for (std::thread& t : lock_threads_) t.join();
    lock_threads_.clear();
  }

  std::string LockSummary() const {
    return absl::StrCat("acquired=", acquired_.load(),
                        " fenced-ok=", fenced_ok_.load(),
                        " fenced-refused=", fenced_refused_.load(),
                        " lock-errors=", lock_errors_.load());
  }

  std::string Finish(double timeout_s) {
    const auto deadline =
        Clock::now() +
        std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    int64_t final_revision = 0;
    while (final_revision == 0 && Clock::now() < deadline) {
      for (size_t node = 0; node < kv_.size() && final_revision == 0; ++node) {
        etcdserverpb::RangeRequest request;
        request.set_key("final-revision-probe");
        etcdserverpb::RangeResponse response;
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(2));
        if (kv_[node]->Range(&context, request, &response).ok()) {
          final_revision = response.header().revision();
        }
      }
    }
    // Every watcher is asked for progress until it is synced through R.
    bool all_synced = false;
    while (!all_synced && Clock::now() < deadline && final_revision > 0) {
      all_synced = true;
      for (Watcher& watcher : watchers_) {
        if (watcher.synced_through.load() >= final_revision) continue;
        all_synced = false;
        RequestProgress(watcher);
      }
      if (!all_synced)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::vector<bool> synced;
    int synced_count = 0;
    for (const Watcher& watcher : watchers_) {
      synced.push_back(watcher.synced_through.load() >= final_revision &&
                       final_revision > 0);
      synced_count += synced.back() ? 1 : 0;
    }
    stop_watchers_ = true;
    CancelWatchers();
    for (std::thread& t : threads_) t.join();
    threads_.clear();

    // The truth: a fresh watch from revision 1 through R.
    bool truth = final_revision > 0 && options_.watchers > 0 &&
                 WriteTruth(final_revision, deadline);
    watch_log_.Write({{"final_revision", final_revision},
                      {"watchers", options_.watchers},
                      {"synced", synced},
                      {"truth", truth}});
    return absl::StrCat(
        "final_revision=", final_revision, " synced=", synced_count, "/",
        options_.watchers, " truth=", truth ? "yes" : "no",
        " events=", events_.load(), " reconnects=", reconnects_.load());
  }

 private:
  struct Watcher {
    std::mutex mu;
    grpc::ClientContext* context = nullptr;  // mu
    grpc::ClientReaderWriter<etcdserverpb::WatchRequest,
                             etcdserverpb::WatchResponse>* stream =
        nullptr;  // mu
    std::atomic<int64_t> synced_through{0};
  };

  void CancelWatchers() {
    for (Watcher& watcher : watchers_) {
      std::lock_guard<std::mutex> lock(watcher.mu);
      if (watcher.context != nullptr) watcher.context->TryCancel();
    }
  }

  void RequestProgress(Watcher& watcher) {
    std::lock_guard<std::mutex> lock(watcher.mu);
    if (watcher.stream == nullptr) return;
    etcdserverpb::WatchRequest request;
    request.mutable_progress_request();
    watcher.stream->Write(request);
  }

  // Opens a watch of every key from `start` on `node`; the caller reads.
  static etcdserverpb::WatchRequest CreateAll(int64_t start) {
    etcdserverpb::WatchRequest request;
    etcdserverpb::WatchCreateRequest* create = request.mutable_create_request();
    create->set_key(std::string(1, '\0'));
    create->set_range_end(std::string(1, '\0'));
    create->set_start_revision(start);
    return request;
  }

  void RunWatcher(int index) {
    Watcher& watcher = watchers_[static_cast<size_t>(index)];
    size_t node = static_cast<size_t>(index) % watch_.size();
    int64_t next = 1;
    while (!stop_watchers_.load()) {
      grpc::ClientContext context;
      context.AddMetadata("hasleader", "true");
      auto stream = watch_[node]->Watch(&context);
      {
        std::lock_guard<std::mutex> lock(watcher.mu);
        watcher.context = &context;
        watcher.stream = stream.get();
        if (stop_watchers_.load()) context.TryCancel();
        stream->Write(CreateAll(next));
      }
      etcdserverpb::WatchResponse response;
      std::string why = "stream ended";
      while (stream->Read(&response)) {
        if (response.created() && !response.canceled()) continue;
        if (response.canceled()) {
          watch_log_.Write({{"w", index},
                            {"canceled", true},
                            {"compact_revision", response.compact_revision()},
                            {"reason", response.cancel_reason()},
                            {"node", options_.nodes[node].first}});
          why = "canceled";
          break;
        }
        if (response.watch_id() == -1) {
          int64_t seen = watcher.synced_through.load();
          // A progress reply: everything through its revision was sent.
          while (response.header().revision() > seen &&
                 !watcher.synced_through.compare_exchange_weak(
                     seen, response.header().revision())) {
          }
          continue;
        }
        for (const mvccpb::Event& event : response.events()) {
          watch_log_.Write({{"w", index},
                            {"rev", event.kv().mod_revision()},
                            {"key", event.kv().key()},
                            {"type", EventType(event)},
                            {"value", event.kv().value()},
                            {"node", options_.nodes[node].first}});
          ++events_;
          next = std::max(next, event.kv().mod_revision() + 1);
        }
        if (!response.fragment()) {
          int64_t seen = watcher.synced_through.load();
          while (
              next - 1 > seen &&
              !watcher.synced_through.compare_exchange_weak(seen, next - 1)) {
          }
        }
      }
      {
        std::lock_guard<std::mutex> lock(watcher.mu);
        watcher.context = nullptr;
        watcher.stream = nullptr;
      }
      context.TryCancel();
      const grpc::Status status = stream->Finish();
      if (stop_watchers_.load()) break;
      ++reconnects_;
      watch_log_.Write({{"w", index},
                        {"reconnect", true},
                        {"from", options_.nodes[node].first},
                        {"resume", next},
                        {"error", status.ok() ? why : status.error_message()}});
      node = (node + 1) % watch_.size();
      SleepUnless(stop_watchers_, std::chrono::milliseconds(100));
    }
  }

  bool WriteTruth(int64_t final_revision, Clock::time_point deadline) {
    for (size_t attempt = 0; Clock::now() < deadline; ++attempt) {
      const size_t node = attempt % watch_.size();
      grpc::ClientContext context;
      auto stream = watch_[node]->Watch(&context);
      std::vector<json> lines;
      std::mutex write_mu;
      std::atomic<bool> done{false};
      stream->Write(CreateAll(1));
      std::thread ticker([&] {
        while (!done.load() && Clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
          std::lock_guard<std::mutex> lock(write_mu);
          etcdserverpb::WatchRequest progress;
          progress.mutable_progress_request();
          if (!done.load()) stream->Write(progress);
        }
        context.TryCancel();
      });
      etcdserverpb::WatchResponse response;
      bool complete = false;
      while (!complete && stream->Read(&response)) {
        if (response.canceled()) break;
        if (response.watch_id() == -1) {
          complete = response.header().revision() >= final_revision;
          continue;
        }
        for (const mvccpb::Event& event : response.events()) {
          if (event.kv().mod_revision() > final_revision) {
            complete = true;
            break;
          }
          lines.push_back({{"w", -1},
                           {"rev", event.kv().mod_revision()},
                           {"key", event.kv().key()},
                           {"type", EventType(event)},
                           {"value", event.kv().value()},
                           {"node", options_.nodes[node].first}});
        }
      }
      done = true;
      context.TryCancel();
      ticker.join();
      stream->Finish();
      if (!complete) continue;
      for (const json& line : lines) watch_log_.Write(line);
      return true;
    }
    return false;
  }

  // One lock process: lease, lock, fenced and unfenced writes, unlock.
  void RunLockProcess(int process) {
    std::mt19937_64 random(options_.seed * 7919 +
                           static_cast<uint64_t>(process));
    size_t node = static_cast<size_t>(process) % kv_.size();
    int64_t round = 0;
    while (!stop_locks_.load()) {
      ++round;
      const std::string holder = absl::StrCat("p", process, "-", round);
      const int64_t lease = Grant(node);
      if (lease == 0) {
        node = (node + 1) % kv_.size();
        SleepUnless(stop_locks_, std::chrono::milliseconds(200));
        continue;
      }
      KeepAliveControl control;
      std::thread keepalive([&] { KeepAlive(node, lease, control); });
      const auto timeout = std::chrono::milliseconds(
          std::max(5000, 4 * options_.request_timeout_ms));
      v3lockpb::LockRequest request;
      request.set_name("jepsen-lock");
      request.set_lease(lease);
      v3lockpb::LockResponse response;
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + timeout);
      lock_log_.Write({{"holder", holder},
                       {"f", "acquire"},
                       {"type", "invoke"},
                       {"lease", lease}});
      const grpc::Status locked =
          lock_[node]->Lock(&context, request, &response);
      lock_log_.Write({{"holder", holder},
                       {"f", "acquire"},
                       {"type", locked.ok() ? "ok" : "info"},
                       {"key", response.key()},
                       {"error", locked.error_message()}});
      if (locked.ok()) {
        ++acquired_;
        const int64_t created = CreateRevision(node, response.key());
        for (int write = 0; write < 3 && created > 0; ++write) {
          const std::string value = absl::StrCat(holder, ":", write);
          FencedPut(node, response.key(), created, value, holder);
          UnfencedPut(node, value);
          std::this_thread::sleep_for(
              std::chrono::milliseconds(20 + random() % 60));
        }
        Unlock(node, response.key());
      } else {
        ++lock_errors_;
        node = (node + 1) % kv_.size();
      }
      {
        std::lock_guard<std::mutex> lock(control.mu);
        control.stop = true;
        if (control.context != nullptr) control.context->TryCancel();
      }
      keepalive.join();
      Revoke(node, lease);
    }
  }

  int64_t Grant(size_t node) {
    etcdserverpb::LeaseGrantRequest request;
    request.set_ttl(options_.lease_ttl_s);
    etcdserverpb::LeaseGrantResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    if (!lease_[node]->LeaseGrant(&context, request, &response).ok()) return 0;
    return response.id();
  }

  void Revoke(size_t node, int64_t lease) {
    etcdserverpb::LeaseRevokeRequest request;
    request.set_id(lease);
    etcdserverpb::LeaseRevokeResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    (void)lease_[node]->LeaseRevoke(&context, request, &response);
  }

  struct KeepAliveControl {
    std::mutex mu;
    std::atomic<bool> stop{false};
    grpc::ClientContext* context = nullptr;  // mu
  };

  void KeepAlive(size_t node, int64_t lease, KeepAliveControl& control) {
    const std::atomic<bool>& stop = control.stop;
    while (!stop.load()) {
      grpc::ClientContext context;
      {
        std::lock_guard<std::mutex> lock(control.mu);
        if (control.stop.load()) break;
        control.context = &context;
      }
      auto stream = lease_[node]->LeaseKeepAlive(&context);
      etcdserverpb::LeaseKeepAliveRequest request;
      request.set_id(lease);
      etcdserverpb::LeaseKeepAliveResponse response;
      bool alive = true;
      while (!stop.load() && alive) {
        alive = stream->Write(request) && stream->Read(&response) &&
                response.ttl() > 0;
        if (alive) {
          SleepUnless(
              stop, std::chrono::milliseconds(options_.lease_ttl_s * 1000 / 3));
        }
      }
      {
        std::lock_guard<std::mutex> lock(control.mu);
        control.context = nullptr;
      }
      context.TryCancel();
      stream->Finish();
      if (!stop.load() && !alive) {
        // Expired or unreachable: try again after a short pause (an
        // expired lease stays expired; the lock then fails as it must).
        SleepUnless(stop, std::chrono::milliseconds(200));
      }
    }
  }

  int64_t CreateRevision(size_t node, const std::string& key) {
    etcdserverpb::RangeRequest request;
    request.set_key(key);
    etcdserverpb::RangeResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    if (!kv_[node]->Range(&context, request, &response).ok() ||
        response.kvs().empty()) {
      return 0;
    }
    return response.kvs(0).create_revision();
  }

  void FencedPut(size_t node, const std::string& lock_key, int64_t created,
                 const std::string& value, const std::string& holder) {
    etcdserverpb::TxnRequest request;
    etcdserverpb::Compare* still_held = request.add_compare();
    still_held->set_key(lock_key);
    still_held->set_target(etcdserverpb::Compare::CREATE);
    still_held->set_result(etcdserverpb::Compare::EQUAL);
    still_held->set_create_revision(created);
    etcdserverpb::PutRequest* put =
        request.add_success()->mutable_request_put();
    put->set_key("fence");
    put->set_value(value);
    etcdserverpb::TxnResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status = kv_[node]->Txn(&context, request, &response);
    const char* type = !status.ok()           ? "info"
                       : response.succeeded() ? "ok"
                                              : "fail";
    if (status.ok()) ++(response.succeeded() ? fenced_ok_ : fenced_refused_);
    lock_log_.Write({{"holder", holder},
                     {"f", "fenced-write"},
                     {"type", type},
                     {"value", value},
                     {"error", status.error_message()}});
  }

  void UnfencedPut(size_t node, const std::string& value) {
    etcdserverpb::PutRequest request;
    request.set_key("unfenced");
    request.set_value(value);
    etcdserverpb::PutResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    (void)kv_[node]->Put(&context, request, &response);
  }

  void Unlock(size_t node, const std::string& key) {
    v3lockpb::UnlockRequest request;
    request.set_key(key);
    v3lockpb::UnlockResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    (void)lock_[node]->Unlock(&context, request, &response);
  }

  void SetDeadline(grpc::ClientContext& context) const {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(options_.request_timeout_ms));
  }

  const CoordinationOptions options_;
  JsonLog watch_log_;
  JsonLog lock_log_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv_;
  std::vector<std::unique_ptr<etcdserverpb::Watch::Stub>> watch_;
  std::vector<std::unique_ptr<etcdserverpb::Lease::Stub>> lease_;
  std::vector<std::unique_ptr<v3lockpb::Lock::Stub>> lock_;
  std::vector<Watcher> watchers_;
  std::vector<std::thread> threads_;
  std::vector<std::thread> lock_threads_;
  std::atomic<bool> stop_watchers_{false};
  std::atomic<bool> stop_locks_{false};
  std::atomic<int64_t> events_{0}, reconnects_{0};
  std::atomic<int64_t> acquired_{0}, fenced_ok_{0}, fenced_refused_{0},
      lock_errors_{0};
};

Coordination::Coordination(CoordinationOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
Coordination::~Coordination() = default;
void Coordination::Start() { impl_->Start(); }
void Coordination::StopLocks() { impl_->StopLocks(); }
std::string Coordination::Finish(double timeout_s) {
  return impl_->Finish(timeout_s);
}
std::string Coordination::LockSummary() const { return impl_->LockSummary(); }

}  // namespace driftwood::jepsen
