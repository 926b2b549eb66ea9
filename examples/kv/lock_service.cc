#include "examples/kv/lock_service.h"

#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_format.h"

namespace driftwood::kv {

namespace {

using etcdserverpb::Compare;
using etcdserverpb::RangeRequest;
using etcdserverpb::RangeResponse;
using etcdserverpb::ResponseHeader;
using etcdserverpb::TxnRequest;
using etcdserverpb::TxnResponse;

// How often a waiting call looks at its cancellation when nothing happens.
constexpr auto kWaitPoll = std::chrono::milliseconds(100);

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

// etcd's services return their own errors as plain Go errors (Unknown).
absl::Status Plain(const std::string& message) {
  return absl::UnknownError(message);
}

// etcd's recipe steps, run synchronously on the calling thread against this
// member: writes through the log, linearizable reads, and waits on the
// watch hub.
class Recipe {
 public:
  Recipe(const Context& context, grpc::ServerContextBase* call)
      : context_(context), call_(call) {}

  absl::StatusOr<MvccResult> Propose(const MvccCommand& command) {
    return Await([&](raft::ResultCallback done) {
      context_.server->Propose(command.SerializeAsString(),
                               absl::Now() + kDefaultRequestTimeout,
                               std::move(done));
    });
  }

  absl::StatusOr<MvccResult> Read(const MvccQuery& query) {
    return Await([&](raft::ResultCallback done) {
      context_.server->Read(query.SerializeAsString(),
                            absl::Now() + kDefaultRequestTimeout,
                            std::move(done));
    });
  }

  absl::StatusOr<TxnResponse> Txn(const TxnRequest& request) {
    MvccCommand command;
    *command.mutable_txn() = request;
    absl::StatusOr<MvccResult> result = Propose(command);
    if (!result.ok()) return result.status();
    return std::move(*result->mutable_txn());
  }

  absl::StatusOr<RangeResponse> Range(const RangeRequest& request) {
    MvccQuery query;
    *query.mutable_range() = request;
    absl::StatusOr<MvccResult> result = Read(query);
    if (!result.ok()) return result.status();
    return std::move(*result->mutable_range());
  }

  absl::Status Delete(const std::string& key) {
    MvccCommand command;
    command.mutable_delete_range()->set_key(key);
    return Propose(command).status();
  }

  // The oldest (or newest) key of `prefix`, created at or before
  // max_create_revision when it is not 0.
  absl::StatusOr<RangeResponse> Edge(const std::string& prefix, bool oldest,
                                     int64_t max_create_revision = 0) {
    RangeRequest request;
    request.set_key(prefix);
    request.set_range_end(mvcc::PrefixEnd(prefix));
    request.set_sort_target(RangeRequest::CREATE);
    request.set_sort_order(oldest ? RangeRequest::ASCEND
                                  : RangeRequest::DESCEND);
    request.set_limit(1);
    request.set_max_create_revision(max_create_revision);
    return Range(request);
  }

  // Waits for the first event of `spec` from `revision` on that `accept`
  // takes; returns it, or nullopt when the history there was compacted (the
  // caller looks again).
  absl::StatusOr<std::optional<std::pair<mvccpb::Event, int64_t>>> WaitEvent(
      const mvcc::WatchSpec& spec, int64_t revision,
      const std::function<bool(const mvccpb::Event&)>& accept) {
    struct Waker {
      std::mutex mu;
      std::condition_variable cv;
      uint64_t generation = 0;
    };
    auto waker = std::make_shared<Waker>();
    std::weak_ptr<Waker> weak = waker;
    const uint64_t handle = context_.watch_hub->Subscribe([weak] {
      if (std::shared_ptr<Waker> w = weak.lock()) {
        std::lock_guard<std::mutex> lock(w->mu);
        ++w->generation;
        w->cv.notify_all();
      }
    });
    struct Unsubscribe {
      const Context& context;
      uint64_t handle;
      ~Unsubscribe() { context.watch_hub->Unsubscribe(handle); }
    } unsubscribe{context_, handle};
    int64_t next = revision;
    for (;;) {
      if (call_->IsCancelled()) {
        return absl::CancelledError("context canceled");
      }
      uint64_t seen;
      {
        std::lock_guard<std::mutex> lock(waker->mu);
        seen = waker->generation;
      }
      absl::StatusOr<mvcc::WatchRead> read =
          context_.watch_hub->Read(spec, next);
      if (!read.ok()) return read.status();
      if (read->compacted) {
        return std::optional<std::pair<mvccpb::Event, int64_t>>();
      }
      for (mvccpb::Event& event : read->events) {
        if (accept(event)) {
          return std::optional<std::pair<mvccpb::Event, int64_t>>(
              std::pair{std::move(event), read->through_revision});
        }
      }
      const bool moved = read->through_revision >= next;
      next = std::max(next, read->through_revision + 1);
      if (moved) continue;
      std::unique_lock<std::mutex> lock(waker->mu);
      waker->cv.wait_for(lock, kWaitPoll,
                         [&] { return waker->generation != seen; });
    }
  }

  // Waits until `key` is deleted at or after `revision`.
  absl::Status WaitDelete(const std::string& key, int64_t revision) {
    mvcc::WatchSpec spec;
    spec.key = key;
    spec.no_put = true;
    return WaitEvent(spec, revision,
                     [](const mvccpb::Event& event) {
                       return event.type() == mvccpb::Event::DELETE;
                     })
        .status();
  }

  // etcd's waitDeletes: until no key of `prefix` created at or before
  // max_create_revision is left.
  absl::StatusOr<ResponseHeader> WaitDeletes(const std::string& prefix,
                                             int64_t max_create_revision) {
    for (;;) {
      absl::StatusOr<RangeResponse> newest =
          Edge(prefix, /*oldest=*/false, max_create_revision);
      if (!newest.ok()) return newest.status();
      if (newest->kvs().empty()) return newest->header();
      if (absl::Status status =
              WaitDelete(newest->kvs(0).key(), newest->header().revision());
          !status.ok()) {
        return status;
      }
    }
  }

  // Takes the place of `key` in the queue of `prefix` (creating it with
  // `value` and `lease` if absent): the key's create revision, and whether
  // it already existed with another value.
  struct Place {
    int64_t revision = 0;
    bool held = false;  // the oldest key of the prefix
    std::string existing_value;
    bool existed = false;
  };
  absl::StatusOr<Place> Enqueue(const std::string& prefix,
                                const std::string& key,
                                const std::string& value, int64_t lease) {
    TxnRequest txn;
    Compare* absent = txn.add_compare();
    absent->set_key(key);
    absent->set_target(Compare::CREATE);
    absent->set_result(Compare::EQUAL);
    absent->set_create_revision(0);
    etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(value);
    put->set_lease(lease);
    txn.add_failure()->mutable_request_range()->set_key(key);
    for (auto* branch : {txn.mutable_success(), txn.mutable_failure()}) {
      RangeRequest* owner = branch->Add()->mutable_request_range();
      owner->set_key(prefix);
      owner->set_range_end(mvcc::PrefixEnd(prefix));
      owner->set_sort_target(RangeRequest::CREATE);
      owner->set_sort_order(RangeRequest::ASCEND);
      owner->set_limit(1);
    }
    absl::StatusOr<TxnResponse> response = Txn(txn);
    if (!response.ok()) return response.status();
    Place place;
    place.revision = response->header().revision();
    if (!response->succeeded()) {
      const RangeResponse& mine = response->responses(0).response_range();
      if (mine.kvs().empty()) return Plain("session expired");
      place.revision = mine.kvs(0).create_revision();
      place.existed = true;
      place.existing_value = mine.kvs(0).value();
    }
    const RangeResponse& owner = response->responses(1).response_range();
    place.held =
        owner.kvs().empty() || owner.kvs(0).create_revision() == place.revision;
    return place;
  }

  // Waits until `place` (of `key` under `prefix`) is the oldest key: the
  // revision at which it is. On failure the key is deleted: a waiter that
  // gave up leaves the queue.
  absl::StatusOr<int64_t> WaitTurn(const std::string& prefix,
                                   const std::string& key, const Place& place) {
    if (place.held) return place.revision;
    absl::StatusOr<ResponseHeader> header =
        WaitDeletes(prefix, place.revision - 1);
    absl::Status status = header.status();
    if (status.ok()) status = CheckStillOwned(key, place.revision);
    if (!status.ok()) {
      (void)Delete(key);
      return status;
    }
    return header->revision();
  }

  // After waiting: the key must still be ours, or the lease expired
  // meanwhile and nothing is held.
  absl::Status CheckStillOwned(const std::string& key, int64_t revision) {
    RangeRequest request;
    request.set_key(key);
    absl::StatusOr<RangeResponse> mine = Range(request);
    if (!mine.ok()) return mine.status();
    if (mine->kvs().empty() || mine->kvs(0).create_revision() != revision) {
      return Plain("session expired");
    }
    return absl::OkStatus();
  }

  ResponseHeader Header(int64_t revision) const {
    ResponseHeader header;
    context_.FillHeader(&header);
    header.set_revision(revision);
    return header;
  }

 private:
  // Starts a request with `start` and waits for its answer.
  template <typename Start>
  absl::StatusOr<MvccResult> Await(Start start) {
    auto promise =
        std::make_shared<std::promise<absl::StatusOr<std::string>>>();
    std::future<absl::StatusOr<std::string>> future = promise->get_future();
    start([promise](absl::StatusOr<std::string> out) {
      promise->set_value(std::move(out));
    });
    return Parse(future.get());
  }

  absl::StatusOr<MvccResult> Parse(const absl::StatusOr<std::string>& out) {
    if (!out.ok()) return FromGrpc(ToEtcdError(out.status()));
    MvccResult result;
    if (!result.ParseFromString(*out)) {
      return absl::InternalError("driftwood: an unreadable result");
    }
    if (result.code() != 0) {
      return absl::Status(static_cast<absl::StatusCode>(result.code()),
                          result.message());
    }
    return result;
  }

  const Context& context_;
  grpc::ServerContextBase* const call_;
};

std::string LeaseKey(const std::string& name, int64_t lease) {
  return absl::StrFormat("%s/%x", name, lease);
}

// Runs `body` on a thread of its own and finishes the call with its status.
template <typename Body>
rpc::UnaryReactor* RunBlocking(rpc::UnaryServerContext* call,
                               const Context& context, Method method,
                               Body body) {
  rpc::UnaryReactor* reactor = call->DefaultReactor();
  std::thread([reactor, call, &context, method, body = std::move(body)] {
    const absl::Time start = absl::Now();
    Recipe recipe(context, call);
    absl::Status status = body(recipe);
    context.metrics.Record(method, absl::Now() - start, status.ok());
    reactor->Finish(ToGrpc(status));
  }).detach();
  return reactor;
}

}  // namespace

void LockService::Serve(rpc::QueueServer& server) {
  // The recipes poll IsCancelled while they wait.
  using S = v3lockpb::Lock::AsyncService;
  rpc::ServeUnaryMember(server, &async, &S::RequestLock, this,
                        &LockService::Lock, rpc::Cancel::kWatch);
  rpc::ServeUnaryMember(server, &async, &S::RequestUnlock, this,
                        &LockService::Unlock, rpc::Cancel::kWatch);
}

void ElectionService::Serve(rpc::QueueServer& server) {
  using S = v3electionpb::Election::AsyncService;
  using E = ElectionService;
  rpc::ServeUnaryMember(server, &async, &S::RequestCampaign, this, &E::Campaign,
                        rpc::Cancel::kWatch);
  rpc::ServeUnaryMember(server, &async, &S::RequestProclaim, this, &E::Proclaim,
                        rpc::Cancel::kWatch);
  rpc::ServeUnaryMember(server, &async, &S::RequestLeader, this, &E::Leader,
                        rpc::Cancel::kWatch);
  rpc::ServeUnaryMember(server, &async, &S::RequestResign, this, &E::Resign,
                        rpc::Cancel::kWatch);
  rpc::ServeServerStreaming(server, &async, &S::RequestObserve,
                            [this](grpc::ServerContext* call,
                                   const v3electionpb::LeaderRequest* request) {
                              return Observe(call, request);
                            });
}

rpc::UnaryReactor* LockService::Lock(rpc::UnaryServerContext* call,
                                     const v3lockpb::LockRequest* request,
                                     v3lockpb::LockResponse* response) {
  return RunBlocking(
      call, context_, Method::kLock,
      [request, response](Recipe& recipe) -> absl::Status {
        if (request->lease() == 0) {
          return absl::InvalidArgumentError(
              "lock: a lease is required (grant one and keep it alive)");
        }
        const std::string prefix = request->name() + "/";
        const std::string key = LeaseKey(request->name(), request->lease());
        absl::StatusOr<Recipe::Place> place =
            recipe.Enqueue(prefix, key, "", request->lease());
        if (!place.ok()) return place.status();
        absl::StatusOr<int64_t> revision = recipe.WaitTurn(prefix, key, *place);
        if (!revision.ok()) return revision.status();
        *response->mutable_header() = recipe.Header(*revision);
        response->set_key(key);
        return absl::OkStatus();
      });
}

rpc::UnaryReactor* LockService::Unlock(rpc::UnaryServerContext* call,
                                       const v3lockpb::UnlockRequest* request,
                                       v3lockpb::UnlockResponse* response) {
  MvccCommand command;
  command.mutable_delete_range()->set_key(request->key());
  return context_.Propose(call, Method::kUnlock, command,
                          [this, response](MvccResult& result) {
                            context_.FillHeader(response->mutable_header());
                            response->mutable_header()->set_revision(
                                result.delete_range().header().revision());
                          });
}

rpc::UnaryReactor* ElectionService::Campaign(
    rpc::UnaryServerContext* call, const v3electionpb::CampaignRequest* request,
    v3electionpb::CampaignResponse* response) {
  return RunBlocking(
      call, context_, Method::kLock,
      [request, response](Recipe& recipe) -> absl::Status {
        if (request->lease() == 0) {
          return absl::InvalidArgumentError(
              "election: a lease is required (grant one and keep it alive)");
        }
        const std::string prefix = request->name() + "/";
        const std::string key = LeaseKey(request->name(), request->lease());
        absl::StatusOr<Recipe::Place> place =
            recipe.Enqueue(prefix, key, request->value(), request->lease());
        if (!place.ok()) return place.status();
        if (place->existed && place->existing_value != request->value()) {
          // etcd's Campaign proclaims the new value on an existing key.
          TxnRequest txn;
          Compare* ours = txn.add_compare();
          ours->set_key(key);
          ours->set_target(Compare::CREATE);
          ours->set_result(Compare::EQUAL);
          ours->set_create_revision(place->revision);
          etcdserverpb::PutRequest* put =
              txn.add_success()->mutable_request_put();
          put->set_key(key);
          put->set_value(request->value());
          put->set_lease(request->lease());
          absl::StatusOr<TxnResponse> proclaimed = recipe.Txn(txn);
          if (!proclaimed.ok()) return proclaimed.status();
          if (!proclaimed->succeeded()) return Plain("election: not leader");
        }
        absl::StatusOr<int64_t> revision = recipe.WaitTurn(prefix, key, *place);
        if (!revision.ok()) return revision.status();
        *response->mutable_header() = recipe.Header(*revision);
        v3electionpb::LeaderKey* leader = response->mutable_leader();
        leader->set_name(request->name());
        leader->set_key(key);
        leader->set_rev(place->revision);
        leader->set_lease(request->lease());
        return absl::OkStatus();
      });
}

namespace {

// Proclaim and Resign: a Txn guarded by the leader key's create revision.
absl::StatusOr<TxnResponse> GuardedTxn(Recipe& recipe,
                                       const v3electionpb::LeaderKey& leader,
                                       etcdserverpb::RequestOp op) {
  TxnRequest txn;
  Compare* ours = txn.add_compare();
  ours->set_key(leader.key());
  ours->set_target(Compare::CREATE);
  ours->set_result(Compare::EQUAL);
  ours->set_create_revision(leader.rev());
  *txn.add_success() = std::move(op);
  return recipe.Txn(txn);
}

}  // namespace

rpc::UnaryReactor* ElectionService::Proclaim(
    rpc::UnaryServerContext* call, const v3electionpb::ProclaimRequest* request,
    v3electionpb::ProclaimResponse* response) {
  return RunBlocking(call, context_, Method::kLock,
                     [request, response](Recipe& recipe) -> absl::Status {
                       etcdserverpb::RequestOp op;
                       etcdserverpb::PutRequest* put = op.mutable_request_put();
                       put->set_key(request->leader().key());
                       put->set_value(request->value());
                       put->set_lease(request->leader().lease());
                       absl::StatusOr<TxnResponse> txn =
                           GuardedTxn(recipe, request->leader(), std::move(op));
                       if (!txn.ok()) return txn.status();
                       if (!txn->succeeded())
                         return Plain("election: not leader");
                       *response->mutable_header() =
                           recipe.Header(txn->header().revision());
                       return absl::OkStatus();
                     });
}

rpc::UnaryReactor* ElectionService::Resign(
    rpc::UnaryServerContext* call, const v3electionpb::ResignRequest* request,
    v3electionpb::ResignResponse* response) {
  return RunBlocking(
      call, context_, Method::kUnlock,
      [request, response](Recipe& recipe) -> absl::Status {
        etcdserverpb::RequestOp op;
        op.mutable_request_delete_range()->set_key(request->leader().key());
        absl::StatusOr<TxnResponse> txn =
            GuardedTxn(recipe, request->leader(), std::move(op));
        if (!txn.ok()) return txn.status();
        *response->mutable_header() = recipe.Header(txn->header().revision());
        return absl::OkStatus();
      });
}

rpc::UnaryReactor* ElectionService::Leader(
    rpc::UnaryServerContext* call, const v3electionpb::LeaderRequest* request,
    v3electionpb::LeaderResponse* response) {
  return RunBlocking(call, context_, Method::kRange,
                     [request, response](Recipe& recipe) -> absl::Status {
                       absl::StatusOr<RangeResponse> oldest =
                           recipe.Edge(request->name() + "/", /*oldest=*/true);
                       if (!oldest.ok()) return oldest.status();
                       if (oldest->kvs().empty()) {
                         return Plain("election: no leader");
                       }
                       *response->mutable_header() =
                           recipe.Header(oldest->header().revision());
                       *response->mutable_kv() = oldest->kvs(0);
                       return absl::OkStatus();
                     });
}

namespace {

// Observe: every leader of the election as it changes, sent from a thread of
// its own, one response at a time.
class ObserveStream final
    : public rpc::ServerWriteReactor<v3electionpb::LeaderResponse> {
 public:
  ObserveStream(const Context& context, grpc::ServerContext* call,
                std::string name)
      : context_(context), call_(call), name_(std::move(name)) {
    std::thread([this] { Run(); }).detach();
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    write_ok_ = ok;
    writing_ = false;
    cv_.notify_all();
  }
  void OnDone() override { delete this; }

 private:
  bool Send(const ResponseHeader& header, const mvccpb::KeyValue& kv,
            Recipe& recipe) {
    response_.Clear();
    *response_.mutable_header() = recipe.Header(header.revision());
    *response_.mutable_kv() = kv;
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = true;
    }
    StartWrite(&response_);
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !writing_; });
    return write_ok_;
  }

  void Run() {
    Recipe recipe(context_, call_);
    const std::string prefix = name_ + "/";
    absl::Status status;
    while (status.ok() && !call_->IsCancelled()) {
      absl::StatusOr<RangeResponse> oldest =
          recipe.Edge(prefix, /*oldest=*/true);
      if (!oldest.ok()) {
        status = oldest.status();
        break;
      }
      ResponseHeader header = oldest->header();
      mvccpb::KeyValue leader;
      if (oldest->kvs().empty()) {
        // No leader yet: the first key put under the prefix.
        mvcc::WatchSpec spec;
        spec.key = prefix;
        spec.range_end = mvcc::PrefixEnd(prefix);
        spec.no_delete = true;
        absl::StatusOr<std::optional<std::pair<mvccpb::Event, int64_t>>> put =
            recipe.WaitEvent(spec, header.revision() + 1,
                             [](const mvccpb::Event&) { return true; });
        if (!put.ok()) {
          status = put.status();
          break;
        }
        if (!put->has_value()) continue;  // compacted: look again
        leader = (*put)->first.kv();
        header.set_revision((*put)->second);
      } else {
        leader = oldest->kvs(0);
      }
      if (!Send(header, leader, recipe)) return Finish(grpc::Status::OK);
      // Each new value of the leader key, until it is deleted.
      mvcc::WatchSpec spec;
      spec.key = leader.key();
      int64_t next = leader.mod_revision() + 1;
      for (;;) {
        absl::StatusOr<std::optional<std::pair<mvccpb::Event, int64_t>>>
            change = recipe.WaitEvent(
                spec, next, [](const mvccpb::Event&) { return true; });
        if (!change.ok()) {
          status = change.status();
          break;
        }
        if (!change->has_value()) break;  // compacted: look again
        const mvccpb::Event& event = (*change)->first;
        if (event.type() == mvccpb::Event::DELETE) break;
        header.set_revision((*change)->second);
        if (!Send(header, event.kv(), recipe)) {
          return Finish(grpc::Status::OK);
        }
        next = event.kv().mod_revision() + 1;
      }
    }
    Finish(call_->IsCancelled() ? grpc::Status::OK : ToGrpc(status));
  }

  const Context& context_;
  grpc::ServerContext* const call_;
  const std::string name_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool writing_ = false;  // mu_
  bool write_ok_ = true;  // mu_
  v3electionpb::LeaderResponse response_;
};

}  // namespace

rpc::ServerWriteReactor<v3electionpb::LeaderResponse>* ElectionService::Observe(
    grpc::ServerContext* call, const v3electionpb::LeaderRequest* request) {
  return new ObserveStream(context_, call, request->name());
}

}  // namespace driftwood::kv
