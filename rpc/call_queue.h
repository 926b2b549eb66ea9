// Driftwood: gRPC served and called through one completion queue and one
// thread of ours (docs/design.md "The transport", "One completion queue").
//
// gRPC's callback API runs its reactors on two threads of its own that take
// turns polling the sockets, and most calls cost a hand-off between them;
// bench/grpc_unary_bench measured 43 us of server CPU per call against 27 us
// on one completion-queue thread of ours. The gain needs every server and
// client call of the process off the callback API: one idle callback service
// brings gRPC's threads back (38 us). So every gRPC server of the process is
// built by CallQueue::BuildAndStart, which makes the queue the one its calls
// arrive on, and every call, server or client, completes on it.
//
// The reactor classes below have the callback API's shape (StartRead,
// StartWrite, Finish, OnReadDone, OnDone, ...) and its rules, so services are
// written as they would be for it:
//   - at most one read and one write in flight per stream;
//   - every server call is finished exactly once (Finish or
//     StartWriteAndFinish), even after a cancellation;
//   - Start* and Finish may be called from any thread, and from the
//     reactor's constructor (they take effect once the call is bound);
//   - On* callbacks run on the queue's thread, one at a time for the whole
//     process, and must not block;
//   - OnDone is the last callback: every operation has completed, and the
//     reactor may delete itself.
//
//   auto queue = rpc::CallQueue::Shared();
//   grpc::ServerBuilder builder;
//   builder.RegisterService(&async_service);
//   auto server = queue->BuildAndStart(builder);
//   rpc::ServeUnary(*queue, &async_service, &Kv::AsyncService::RequestPut,
//                   [](rpc::UnaryServerContext* call, const PutRequest* in,
//                      PutResponse* out) { ...; call->Finish(status); });
#ifndef DRIFTWOOD_RPC_CALL_QUEUE_H_
#define DRIFTWOOD_RPC_CALL_QUEUE_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

namespace driftwood::rpc {

// An operation's completion: Proceed runs on the queue's thread (ok: the
// operation succeeded).
class QueueTag {
 public:
  virtual void Proceed(bool ok) = 0;

 protected:
  ~QueueTag() = default;
};

// A QueueTag that calls Owner::*kMethod.
template <typename Owner, void (Owner::*kMethod)(bool)>
class MemberTag final : public QueueTag {
 public:
  explicit MemberTag(Owner* owner) : owner_(owner) {}
  void Proceed(bool ok) override { (owner_->*kMethod)(ok); }

 private:
  Owner* owner_;
};

class QueueServer;

namespace internal {

// A server's calls: requested and not arrived yet, or running. gRPC's
// Shutdown returns before an asynchronous server's calls have ended, and a
// request refused by the shutdown still completes on the queue, reading the
// server: a QueueServer's Shutdown returns once none is left.
class Arrivals {
 public:
  void Add() {
    std::lock_guard<std::mutex> lock(mu_);
    ++waiting_;
  }
  void Done() {
    std::lock_guard<std::mutex> lock(mu_);
    if (--waiting_ == 0) none_.notify_all();
  }
  void WaitForNone() {
    std::unique_lock<std::mutex> lock(mu_);
    none_.wait(lock, [this] { return waiting_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable none_;
  int waiting_ = 0;  // mu_
};

}  // namespace internal

// One completion queue and the thread that drains it.
class CallQueue : public std::enable_shared_from_this<CallQueue> {
 public:
  // The process's queue: created on first use, and shut down (its thread
  // joined) when the last reference goes. Every server and call using it
  // must be done by then, and the last reference must not go on the queue's
  // own thread.
  static std::shared_ptr<CallQueue> Shared();

  ~CallQueue();
  CallQueue(const CallQueue&) = delete;
  CallQueue& operator=(const CallQueue&) = delete;

  grpc::ServerCompletionQueue* cq() { return cq_.get(); }

  // Builds and starts `builder`'s server with calls arriving on this queue.
  // Methods this process serves no handler for are answered UNIMPLEMENTED.
  // Null when gRPC refuses (for example, the port cannot be bound).
  std::unique_ptr<QueueServer> BuildAndStart(grpc::ServerBuilder& builder);

 private:
  CallQueue();
  void Run();

  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
};

// A server whose calls arrive on a CallQueue.
class QueueServer {
 public:
  // Shutdown(now).
  ~QueueServer();
  QueueServer(const QueueServer&) = delete;
  QueueServer& operator=(const QueueServer&) = delete;

  grpc::ServerCompletionQueue* cq() { return queue_->cq(); }
  internal::Arrivals* arrivals() { return &arrivals_; }

  // Stops taking calls, cancels those still running at `deadline`, and
  // returns once every call has ended (its reactor's OnDone has run). Must
  // not be called on the queue's thread.
  void Shutdown(std::chrono::system_clock::time_point deadline);

 private:
  friend class CallQueue;
  class UnknownMethod;
  explicit QueueServer(std::shared_ptr<CallQueue> queue);

  std::shared_ptr<CallQueue> queue_;
  internal::Arrivals arrivals_;
  grpc::AsyncGenericService unknown_;
  // gRPC's ServerBuilder refuses to build an asynchronous server without a
  // queue of its own; this one gets no calls (they all arrive on queue_).
  std::unique_ptr<grpc::ServerCompletionQueue> builder_queue_;
  std::unique_ptr<grpc::Server> server_;
  bool shut_down_ = false;
};

// ---------------------------------------------------------------------------
// Unary server calls.

// What a unary handler finishes its call through (any thread, once).
class UnaryReactor {
 public:
  virtual void Finish(grpc::Status status) = 0;

 protected:
  ~UnaryReactor() = default;
};

// A unary call as its handler sees it: the call's context, and its reactor.
// IsCancelled works only for methods served with Cancel::kWatch.
class UnaryServerContext : public grpc::ServerContext, public UnaryReactor {
 public:
  UnaryReactor* DefaultReactor() { return this; }
};

namespace internal {

// Hands the arriving call to the reactor its handler makes.
void SetArrivingCall(void* core);
void* TakeArrivingCallOrDie();
bool ArrivingCallTaken();
template <typename Core>
Core* TakeArrivingCall() {
  return static_cast<Core*>(TakeArrivingCallOrDie());
}

template <typename T>
struct UnaryMethod;
template <typename Class, typename Req, typename Resp>
struct UnaryMethod<void (Class::*)(
    grpc::ServerContext*, Req*, grpc::ServerAsyncResponseWriter<Resp>*,
    grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*)> {
  using Request = Req;
  using Response = Resp;
};

template <typename Request, typename Response>
class UnaryCall final : public UnaryServerContext, private QueueTag {
 public:
  struct Binding {
    grpc::ServerCompletionQueue* cq;
    Arrivals* arrivals;
    bool watch_cancel;
    std::function<void(grpc::ServerContext*, Request*,
                       grpc::ServerAsyncResponseWriter<Response>*,
                       grpc::ServerCompletionQueue*, void*)>
        request;
    std::function<void(UnaryServerContext*, const Request*, Response*)> handler;
  };

  // Waits for the next call of the method.
  static void Await(std::shared_ptr<const Binding> binding) {
    binding->arrivals->Add();
    auto* call = new UnaryCall(std::move(binding));
    if (call->binding_->watch_cancel) {
      call->AsyncNotifyWhenDone(static_cast<QueueTag*>(&call->done_tag_));
      call->ends_ = 2;
    }
    call->binding_->request(call, &call->request_, &call->responder_,
                            call->binding_->cq, static_cast<QueueTag*>(call));
  }

  void Finish(grpc::Status status) override {
    responder_.Finish(response_, status, static_cast<QueueTag*>(this));
  }

 private:
  explicit UnaryCall(std::shared_ptr<const Binding> binding)
      : binding_(std::move(binding)), responder_(this) {}

  // The request's completion, then the finish's.
  void Proceed(bool ok) override {
    if (arrived_) {
      Ended();
      return;
    }
    if (!ok) {  // the server shut down before a call came
      Arrivals* arrivals = binding_->arrivals;
      delete this;
      arrivals->Done();
      return;
    }
    arrived_ = true;
    Await(binding_);
    // `this` lives until its finish completes, later on this thread.
    binding_->handler(this, &request_, &response_);
  }
  void CallDone(bool /*ok*/) { Ended(); }
  void Ended() {
    if (--ends_ > 0) return;
    Arrivals* arrivals = binding_->arrivals;
    delete this;
    arrivals->Done();
  }

  std::shared_ptr<const Binding> binding_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
  MemberTag<UnaryCall, &UnaryCall::CallDone> done_tag_{this};
  bool arrived_ = false;
  // Completions left: the finish's, and the call's end when watched.
  int ends_ = 1;
};

}  // namespace internal

enum class Cancel { kIgnore, kWatch };

// Serves `service`'s unary method (its generated RequestX member) with
// `handler`: (UnaryServerContext*, const Request*, Response*), which finishes
// the call, at once or later, from any thread. The request and response stay
// valid until then. Cancel::kWatch makes the call's IsCancelled work, at the
// cost of one more completion per call.
template <typename Service, typename RequestMethod, typename Handler>
void ServeUnary(QueueServer& server, Service* service, RequestMethod method,
                Handler handler, Cancel cancel = Cancel::kIgnore) {
  using Traits = internal::UnaryMethod<RequestMethod>;
  using Call =
      internal::UnaryCall<typename Traits::Request, typename Traits::Response>;
  auto binding = std::make_shared<typename Call::Binding>();
  binding->cq = server.cq();
  binding->arrivals = server.arrivals();
  binding->watch_cancel = cancel == Cancel::kWatch;
  binding->request = [service, method](auto* context, auto* request,
                                       auto* responder, auto* cq, void* tag) {
    (service->*method)(context, request, responder, cq, cq, tag);
  };
  binding->handler = std::move(handler);
  Call::Await(std::move(binding));
}

// ServeUnary with a member function of `object` as the handler.
template <typename Service, typename RequestMethod, typename Object,
          typename Member>
void ServeUnaryMember(QueueServer& server, Service* service,
                      RequestMethod method, Object* object, Member member,
                      Cancel cancel = Cancel::kIgnore) {
  ServeUnary(
      server, service, method,
      [object, member](UnaryServerContext* call, const auto* request,
                       auto* response) {
        (object->*member)(call, request, response);
      },
      cancel);
}

// ---------------------------------------------------------------------------
// Streaming server calls.

namespace internal {

// The operations of one server stream, with the callback API's rules (see
// the file comment). Stream is grpc::ServerAsyncReaderWriter<Response,
// Request> or grpc::ServerAsyncWriter<Response>.
template <typename Request, typename Response, typename Stream>
class ServerStreamCore {
 public:
  class Callbacks {
   public:
    virtual void OnSendInitialMetadataDone(bool /*ok*/) {}
    virtual void OnReadDone(bool /*ok*/) {}
    virtual void OnWriteDone(bool /*ok*/) {}
    virtual void OnCancel() {}
    virtual void OnDone() = 0;

   protected:
    ~Callbacks() = default;
  };

  explicit ServerStreamCore(Arrivals* arrivals)
      : arrivals_(arrivals), stream_(&context_) {}

  grpc::ServerContext* context() { return &context_; }
  Stream* stream() { return &stream_; }

  // Attaches the reactor and starts what it asked for before.
  void Bind(Callbacks* callbacks) {
    std::lock_guard<std::mutex> lock(mu_);
    callbacks_ = callbacks;
    if (pending_metadata_) {
      pending_metadata_ = false;
      SendMetadataLocked();
    }
    if (pending_read_ != nullptr) {
      Request* request = pending_read_;
      pending_read_ = nullptr;
      ReadLocked(request);
    }
    if (pending_write_ != nullptr) {
      const Response* response = pending_write_;
      pending_write_ = nullptr;
      WriteLocked(response, pending_options_);
    }
    if (pending_finish_.has_value()) {
      grpc::Status status = std::move(*pending_finish_);
      pending_finish_.reset();
      FinishLocked(pending_final_write_, pending_options_, std::move(status));
    }
  }

  void StartSendInitialMetadata() {
    std::lock_guard<std::mutex> lock(mu_);
    if (callbacks_ == nullptr) {
      pending_metadata_ = true;
    } else {
      SendMetadataLocked();
    }
  }
  void StartRead(Request* request) {
    std::lock_guard<std::mutex> lock(mu_);
    if (callbacks_ == nullptr) {
      pending_read_ = request;
    } else {
      ReadLocked(request);
    }
  }
  void StartWrite(const Response* response, grpc::WriteOptions options) {
    std::lock_guard<std::mutex> lock(mu_);
    if (callbacks_ == nullptr) {
      pending_write_ = response;
      pending_options_ = options;
    } else {
      WriteLocked(response, options);
    }
  }
  // `final_write` (may be null) goes out with the status; OnWriteDone is not
  // called for it.
  void Finish(const Response* final_write, grpc::WriteOptions options,
              grpc::Status status) {
    std::lock_guard<std::mutex> lock(mu_);
    if (callbacks_ == nullptr) {
      pending_final_write_ = final_write;
      pending_options_ = options;
      pending_finish_ = std::move(status);
    } else {
      FinishLocked(final_write, options, std::move(status));
    }
  }

  // Before the call is requested: the end of the call (OnCancel, OnDone).
  void NotifyWhenDone() {
    context_.AsyncNotifyWhenDone(static_cast<QueueTag*>(&done_tag_));
    ++outstanding_;
  }

 private:
  void SendMetadataLocked() {
    ++outstanding_;
    stream_.SendInitialMetadata(&metadata_tag_);
  }
  void ReadLocked(Request* request) {
    ++outstanding_;
    if constexpr (std::is_same_v<Stream, grpc::ServerAsyncReaderWriter<
                                             Response, Request>>) {
      stream_.Read(request, &read_tag_);
    }
  }
  void WriteLocked(const Response* response, grpc::WriteOptions options) {
    ++outstanding_;
    stream_.Write(*response, options, &write_tag_);
  }
  void FinishLocked(const Response* final_write, grpc::WriteOptions options,
                    grpc::Status status) {
    ++outstanding_;
    if (final_write != nullptr) {
      stream_.WriteAndFinish(*final_write, options, status, &finish_tag_);
    } else {
      stream_.Finish(status, &finish_tag_);
    }
  }

  void MetadataDone(bool ok) {
    Settle();
    callbacks_->OnSendInitialMetadataDone(ok);
    MaybeDone();
  }
  void ReadDone(bool ok) {
    Settle();
    callbacks_->OnReadDone(ok);
    MaybeDone();
  }
  void WriteDone(bool ok) {
    Settle();
    callbacks_->OnWriteDone(ok);
    MaybeDone();
  }
  void FinishDone(bool /*ok*/) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
      --outstanding_;
    }
    MaybeDone();
  }
  void CallDone(bool /*ok*/) {
    Settle();
    if (context_.IsCancelled()) callbacks_->OnCancel();
    MaybeDone();
  }
  void Settle() {
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
  }
  // Runs OnDone once nothing is outstanding and the call was finished; it
  // may delete the reactor, and with it this core.
  void MaybeDone() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!finished_ || outstanding_ > 0 || done_) return;
      done_ = true;
    }
    Arrivals* arrivals = arrivals_;
    callbacks_->OnDone();
    arrivals->Done();
  }

  Arrivals* const arrivals_;
  grpc::ServerContext context_;
  Stream stream_;
  MemberTag<ServerStreamCore, &ServerStreamCore::MetadataDone> metadata_tag_{
      this};
  MemberTag<ServerStreamCore, &ServerStreamCore::ReadDone> read_tag_{this};
  MemberTag<ServerStreamCore, &ServerStreamCore::WriteDone> write_tag_{this};
  MemberTag<ServerStreamCore, &ServerStreamCore::FinishDone> finish_tag_{this};
  MemberTag<ServerStreamCore, &ServerStreamCore::CallDone> done_tag_{this};

  std::mutex mu_;
  Callbacks* callbacks_ = nullptr;  // mu_ (set once)
  int outstanding_ = 0;             // mu_: operations started, not completed
  bool finished_ = false;           // mu_: the finish completed
  bool done_ = false;               // mu_: OnDone ran
  bool pending_metadata_ = false;   // mu_: before Bind
  Request* pending_read_ = nullptr;
  const Response* pending_write_ = nullptr;
  const Response* pending_final_write_ = nullptr;
  grpc::WriteOptions pending_options_;
  std::optional<grpc::Status> pending_finish_;
};

}  // namespace internal

namespace internal {

// What both server stream reactors offer: the reactor takes the call that
// arrived when its method's handler makes it (on the queue's thread).
template <typename CoreType>
class ServerReactorBase : public CoreType::Callbacks {
 public:
  using Core = CoreType;

  ServerReactorBase() : core_(TakeArrivingCall<Core>()) {}
  virtual ~ServerReactorBase() = default;

  void StartSendInitialMetadata() { core_->StartSendInitialMetadata(); }
  template <typename Response>
  void StartWrite(const Response* response,
                  grpc::WriteOptions options = grpc::WriteOptions()) {
    core_->StartWrite(response, options);
  }
  template <typename Response>
  void StartWriteAndFinish(const Response* response, grpc::WriteOptions options,
                           grpc::Status status) {
    core_->Finish(response, options, std::move(status));
  }
  void Finish(grpc::Status status) {
    core_->Finish(nullptr, grpc::WriteOptions(), std::move(status));
  }

 protected:
  Core* core() { return core_.get(); }

 private:
  std::unique_ptr<Core> core_;
};

}  // namespace internal

// A bidirectional server stream (the callback API's ServerBidiReactor).
template <typename Request, typename Response>
class ServerBidiReactor
    : public internal::ServerReactorBase<internal::ServerStreamCore<
          Request, Response,
          grpc::ServerAsyncReaderWriter<Response, Request>>> {
 public:
  void StartRead(Request* request) { this->core()->StartRead(request); }
};

// A server-streaming call (the callback API's ServerWriteReactor).
template <typename Response>
class ServerWriteReactor
    : public internal::ServerReactorBase<internal::ServerStreamCore<
          grpc::ByteBuffer, Response, grpc::ServerAsyncWriter<Response>>> {};

namespace internal {

template <typename T>
struct StreamMethod;
// Bidirectional: RequestX(context, stream, cq, notification_cq, tag).
template <typename Class, typename Resp, typename Req>
struct StreamMethod<void (Class::*)(
    grpc::ServerContext*, grpc::ServerAsyncReaderWriter<Resp, Req>*,
    grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*)> {
  using Request = Req;
  using Response = Resp;
};
// Server-streaming: RequestX(context, request, writer, cq, notification_cq,
// tag).
template <typename Class, typename Req, typename Resp>
struct StreamMethod<void (Class::*)(
    grpc::ServerContext*, Req*, grpc::ServerAsyncWriter<Resp>*,
    grpc::CompletionQueue*, grpc::ServerCompletionQueue*, void*)> {
  using Request = Req;
  using Response = Resp;
};

template <typename Request, typename Response, typename Reactor>
class BidiArrival final : private QueueTag {
 public:
  using Core = typename Reactor::Core;
  struct Binding {
    grpc::ServerCompletionQueue* cq;
    Arrivals* arrivals;
    std::function<void(grpc::ServerContext*,
                       grpc::ServerAsyncReaderWriter<Response, Request>*,
                       grpc::ServerCompletionQueue*, void*)>
        request;
    std::function<Reactor*(grpc::ServerContext*)> handler;
  };

  static void Await(std::shared_ptr<const Binding> binding) {
    binding->arrivals->Add();
    auto* arrival = new BidiArrival(std::move(binding));
    arrival->core_->NotifyWhenDone();
    arrival->binding_->request(arrival->core_->context(),
                               arrival->core_->stream(), arrival->binding_->cq,
                               static_cast<QueueTag*>(arrival));
  }

 private:
  explicit BidiArrival(std::shared_ptr<const Binding> binding)
      : binding_(std::move(binding)),
        core_(std::make_unique<Core>(binding_->arrivals)) {}

  void Proceed(bool ok) override {
    std::unique_ptr<BidiArrival> self(this);
    if (!ok) {  // the server shut down before a call came
      binding_->arrivals->Done();
      return;
    }
    Await(binding_);
    Core* core = core_.release();  // the reactor owns it from here
    SetArrivingCall(core);
    Reactor* reactor = binding_->handler(core->context());
    if (!ArrivingCallTaken()) std::abort();  // the handler made no reactor
    core->Bind(reactor);
  }

  std::shared_ptr<const Binding> binding_;
  std::unique_ptr<Core> core_;
};

template <typename Request, typename Response, typename Reactor>
class WriterArrival final : private QueueTag {
 public:
  using Core = typename Reactor::Core;
  struct Binding {
    grpc::ServerCompletionQueue* cq;
    Arrivals* arrivals;
    std::function<void(grpc::ServerContext*, Request*,
                       grpc::ServerAsyncWriter<Response>*,
                       grpc::ServerCompletionQueue*, void*)>
        request;
    std::function<Reactor*(grpc::ServerContext*, const Request*)> handler;
  };

  static void Await(std::shared_ptr<const Binding> binding) {
    binding->arrivals->Add();
    auto* arrival = new WriterArrival(std::move(binding));
    arrival->core_->NotifyWhenDone();
    arrival->binding_->request(arrival->core_->context(), &arrival->request_,
                               arrival->core_->stream(), arrival->binding_->cq,
                               static_cast<QueueTag*>(arrival));
  }

 private:
  explicit WriterArrival(std::shared_ptr<const Binding> binding)
      : binding_(std::move(binding)),
        core_(std::make_unique<Core>(binding_->arrivals)) {}

  void Proceed(bool ok) override {
    std::unique_ptr<WriterArrival> self(this);
    if (!ok) {
      binding_->arrivals->Done();
      return;
    }
    Await(binding_);
    Core* core = core_.release();
    SetArrivingCall(core);
    // The request lives here: handlers copy what they keep.
    Reactor* reactor = binding_->handler(core->context(), &request_);
    if (!ArrivingCallTaken()) std::abort();  // the handler made no reactor
    core->Bind(reactor);
  }

  std::shared_ptr<const Binding> binding_;
  std::unique_ptr<Core> core_;
  Request request_;
};

}  // namespace internal

// Serves a bidirectional method: `handler(grpc::ServerContext*)` makes a
// new reactor for each call (on the queue's thread) and returns it.
template <typename Service, typename RequestMethod, typename Handler>
void ServeBidi(QueueServer& server, Service* service, RequestMethod method,
               Handler handler) {
  using Traits = internal::StreamMethod<RequestMethod>;
  using Request = typename Traits::Request;
  using Response = typename Traits::Response;
  using Arrival = internal::BidiArrival<Request, Response,
                                        ServerBidiReactor<Request, Response>>;
  auto binding = std::make_shared<typename Arrival::Binding>();
  binding->cq = server.cq();
  binding->arrivals = server.arrivals();
  binding->request = [service, method](auto* context, auto* stream, auto* cq,
                                       void* tag) {
    (service->*method)(context, stream, cq, cq, tag);
  };
  binding->handler = std::move(handler);
  Arrival::Await(std::move(binding));
}

// Serves a server-streaming method: `handler(grpc::ServerContext*, const
// Request*)` makes a new reactor for each call and returns it. The request
// is valid only during the handler call.
template <typename Service, typename RequestMethod, typename Handler>
void ServeServerStreaming(QueueServer& server, Service* service,
                          RequestMethod method, Handler handler) {
  using Traits = internal::StreamMethod<RequestMethod>;
  using Request = typename Traits::Request;
  using Response = typename Traits::Response;
  using Arrival =
      internal::WriterArrival<Request, Response, ServerWriteReactor<Response>>;
  auto binding = std::make_shared<typename Arrival::Binding>();
  binding->cq = server.cq();
  binding->arrivals = server.arrivals();
  binding->request = [service, method](auto* context, auto* request,
                                       auto* stream, auto* cq, void* tag) {
    (service->*method)(context, request, stream, cq, cq, tag);
  };
  binding->handler = std::move(handler);
  Arrival::Await(std::move(binding));
}

// ---------------------------------------------------------------------------
// Blocking server streams, for long transfers whose every step does disk I/O
// (snapshots): each call runs its handler on a thread of its own, with
// blocking reads and writes.

namespace internal {

// One operation's completion, waited for by a blocking thread.
class Waiter final : public QueueTag {
 public:
  void Proceed(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    ok_ = ok;
    cv_.notify_one();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    done_ = false;
    return ok_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;  // mu_
  bool ok_ = false;    // mu_
};

}  // namespace internal

template <typename Request, typename Response>
class BlockingServerStream {
 public:
  // False once the client finished sending or the call broke.
  bool Read(Request* request) {
    stream_.Read(request, &waiter_);
    return waiter_.Wait();
  }
  // False when the call broke.
  bool Write(const Response& response) {
    stream_.Write(response, &waiter_);
    return waiter_.Wait();
  }

 private:
  template <typename, typename, typename>
  friend class BlockingArrival;
  BlockingServerStream() : stream_(&context_) {}

  grpc::ServerContext context_;
  grpc::ServerAsyncReaderWriter<Response, Request> stream_;
  internal::Waiter waiter_;
};

template <typename Request, typename Response, typename Handler>
class BlockingArrival final : private QueueTag {
 public:
  using Stream = BlockingServerStream<Request, Response>;
  struct Binding {
    grpc::ServerCompletionQueue* cq;
    internal::Arrivals* arrivals;
    std::function<void(grpc::ServerContext*,
                       grpc::ServerAsyncReaderWriter<Response, Request>*,
                       grpc::ServerCompletionQueue*, void*)>
        request;
    Handler handler;
  };

  static void Await(std::shared_ptr<const Binding> binding) {
    binding->arrivals->Add();
    auto* arrival = new BlockingArrival(std::move(binding));
    arrival->binding_->request(
        &arrival->stream_->context_, &arrival->stream_->stream_,
        arrival->binding_->cq, static_cast<QueueTag*>(arrival));
  }

 private:
  explicit BlockingArrival(std::shared_ptr<const Binding> binding)
      : binding_(std::move(binding)), stream_(new Stream()) {}

  void Proceed(bool ok) override {
    std::unique_ptr<BlockingArrival> self(this);
    if (!ok) {  // the server shut down before a call came
      binding_->arrivals->Done();
      return;
    }
    Await(binding_);
    // The thread owns the call; the server's Shutdown waits for it to end.
    std::thread([binding = binding_, stream = std::move(stream_)]() mutable {
      grpc::Status status = binding->handler(&stream->context_, stream.get());
      stream->stream_.Finish(status, &stream->waiter_);
      stream->waiter_.Wait();
      stream.reset();
      binding->arrivals->Done();
    }).detach();
  }

  std::shared_ptr<const Binding> binding_;
  std::unique_ptr<Stream> stream_;
};

// Serves a bidirectional method with blocking code: `handler(
// grpc::ServerContext*, BlockingServerStream<Request, Response>*)` runs on a
// new thread per call and returns the call's status.
template <typename Service, typename RequestMethod, typename Handler>
void ServeBidiOnThread(QueueServer& server, Service* service,
                       RequestMethod method, Handler handler) {
  using Traits = internal::StreamMethod<RequestMethod>;
  using Arrival = BlockingArrival<typename Traits::Request,
                                  typename Traits::Response, Handler>;
  auto binding =
      std::make_shared<typename Arrival::Binding>(typename Arrival::Binding{
          server.cq(), server.arrivals(), nullptr, std::move(handler)});
  binding->request = [service, method](auto* context, auto* stream, auto* cq,
                                       void* tag) {
    (service->*method)(context, stream, cq, cq, tag);
  };
  Arrival::Await(std::move(binding));
}

// ---------------------------------------------------------------------------
// Client calls.

// A bidirectional client stream (the callback API's ClientBidiReactor).
// Prepare with Bind(stub->PrepareAsyncX(context(), queue.cq())), then
// StartCall.
template <typename Request, typename Response>
class ClientBidiReactor {
 public:
  virtual ~ClientBidiReactor() = default;

  // The call's context (deadline, metadata, TryCancel).
  grpc::ClientContext* context() { return &context_; }

  void Bind(std::unique_ptr<grpc::ClientAsyncReaderWriter<Request, Response>>
                stream) {
    stream_ = std::move(stream);
  }

  void StartCall() {
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    outstanding_ += 3;
    stream_->StartCall(&start_tag_);
    stream_->ReadInitialMetadata(&metadata_tag_);
    if (pending_read_ != nullptr) {
      ++outstanding_;
      stream_->Read(pending_read_, &read_tag_);
      pending_read_ = nullptr;
    }
    stream_->Finish(&status_, &finish_tag_);
  }
  void StartRead(Response* response) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_) {
      pending_read_ = response;
      return;
    }
    ++outstanding_;
    stream_->Read(response, &read_tag_);
  }
  void StartWrite(const Request* request) {
    std::lock_guard<std::mutex> lock(mu_);
    // gRPC's asynchronous stream starts the call with the operation set of
    // its writes: a write waits for the start to complete.
    if (!start_done_) {
      pending_write_ = request;
      return;
    }
    ++outstanding_;
    stream_->Write(*request, &write_tag_);
  }
  // Holds keep OnDone from running (while another thread may still start
  // an operation).
  void AddHold() {
    std::lock_guard<std::mutex> lock(mu_);
    ++holds_;
  }
  void RemoveHold() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --holds_;
    }
    MaybeDone();
  }

  virtual void OnReadInitialMetadataDone(bool /*ok*/) {}
  virtual void OnReadDone(bool /*ok*/) {}
  virtual void OnWriteDone(bool /*ok*/) {}
  // The last callback: the call ended with `status`; the reactor may be
  // deleted.
  virtual void OnDone(const grpc::Status& status) = 0;

 private:
  void StartDone(bool /*ok*/) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      start_done_ = true;
      if (pending_write_ != nullptr) {
        ++outstanding_;
        stream_->Write(*pending_write_, &write_tag_);
        pending_write_ = nullptr;
      }
    }
    Settle();
    MaybeDone();
  }
  void MetadataDone(bool ok) {
    EnterCallback();
    OnReadInitialMetadataDone(ok);
    LeaveCallback();
  }
  void ReadDone(bool ok) {
    EnterCallback();
    OnReadDone(ok);
    LeaveCallback();
  }
  void WriteDone(bool ok) {
    EnterCallback();
    OnWriteDone(ok);
    LeaveCallback();
  }
  void FinishDone(bool /*ok*/) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
      --outstanding_;
    }
    MaybeDone();
  }
  void Settle() {
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
  }
  // A callback may release the last hold (RemoveHold): OnDone, which may
  // delete the reactor, then waits until the callback has returned.
  void EnterCallback() {
    std::lock_guard<std::mutex> lock(mu_);
    --outstanding_;
    ++in_callback_;
  }
  void LeaveCallback() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      --in_callback_;
    }
    MaybeDone();
  }
  void MaybeDone() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!finished_ || outstanding_ > 0 || holds_ > 0 || in_callback_ > 0 ||
          done_) {
        return;
      }
      done_ = true;
    }
    OnDone(status_);
  }

  grpc::ClientContext context_;
  // Lives in the call's arena, which goes with context_: declared after it,
  // so destroyed before it.
  std::unique_ptr<grpc::ClientAsyncReaderWriter<Request, Response>> stream_;
  MemberTag<ClientBidiReactor, &ClientBidiReactor::StartDone> start_tag_{this};
  MemberTag<ClientBidiReactor, &ClientBidiReactor::MetadataDone> metadata_tag_{
      this};
  MemberTag<ClientBidiReactor, &ClientBidiReactor::ReadDone> read_tag_{this};
  MemberTag<ClientBidiReactor, &ClientBidiReactor::WriteDone> write_tag_{this};
  MemberTag<ClientBidiReactor, &ClientBidiReactor::FinishDone> finish_tag_{
      this};
  grpc::Status status_;

  std::mutex mu_;
  bool started_ = false;                    // mu_
  bool start_done_ = false;                 // mu_
  int outstanding_ = 0;                     // mu_
  int holds_ = 0;                           // mu_
  int in_callback_ = 0;                     // mu_
  bool finished_ = false;                   // mu_
  bool done_ = false;                       // mu_
  Response* pending_read_ = nullptr;        // mu_: before StartCall
  const Request* pending_write_ = nullptr;  // mu_: before the start is done
};

namespace internal {

template <typename Response>
class ClientUnaryCall final : private QueueTag {
 public:
  ClientUnaryCall(
      std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader,
      Response* response, std::function<void(grpc::Status)> done)
      : reader_(std::move(reader)), done_(std::move(done)) {
    reader_->StartCall();
    reader_->Finish(response, &status_, static_cast<QueueTag*>(this));
  }

 private:
  void Proceed(bool /*ok*/) override {
    std::unique_ptr<ClientUnaryCall> self(this);
    // The reader lives in the call's arena, which goes with the context;
    // `done` may release the context.
    reader_.reset();
    done_(status_);
  }

  std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader_;
  std::function<void(grpc::Status)> done_;
  grpc::Status status_;
};

}  // namespace internal

// Starts a unary client call prepared on the queue
// (stub->PrepareAsyncX(&context, request, queue.cq())); `done` runs on the
// queue's thread with its status. The context and `response` must outlive
// the call.
template <typename Response>
void StartUnaryCall(
    std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader,
    Response* response, std::function<void(grpc::Status)> done) {
  new internal::ClientUnaryCall<Response>(std::move(reader), response,
                                          std::move(done));
}

}  // namespace driftwood::rpc

#endif  // DRIFTWOOD_RPC_CALL_QUEUE_H_
