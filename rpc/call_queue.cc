#include "rpc/call_queue.h"

#include <grpc/grpc.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/impl/server_initializer.h>

#include <cstdio>
#include <string>
#include <vector>

#include "raft/util/thread_name.h"

namespace driftwood::rpc {

namespace {

// A ServerBuilder plugin sees the server between its creation and its start,
// the one moment a queue can be registered with it, but only through a
// grpc::ServerInitializer, which keeps the server private. An explicit
// instantiation may name a private member: this one hands
// &ServerInitializer::server_ to ServerOf. The build breaks, rather than
// misbehaves, if gRPC renames the member.
template <grpc::Server* grpc::ServerInitializer::*kMember>
struct InitializerServer {
  friend grpc::Server* ServerOf(grpc::ServerInitializer* initializer) {
    return initializer->*kMember;
  }
};
template struct InitializerServer<&grpc::ServerInitializer::server_>;
grpc::Server* ServerOf(grpc::ServerInitializer* initializer);

class RegisterQueuePlugin final : public grpc::ServerBuilderPlugin {
 public:
  explicit RegisterQueuePlugin(grpc_completion_queue* cq) : cq_(cq) {}
  std::string name() override { return "driftwood_call_queue"; }
  void InitServer(grpc::ServerInitializer* initializer) override {
    grpc_server_register_completion_queue(ServerOf(initializer)->c_server(),
                                          cq_, nullptr);
  }
  void Finish(grpc::ServerInitializer* /*initializer*/) override {}
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}
  bool has_async_methods() const override { return true; }

 private:
  grpc_completion_queue* cq_;
};

class RegisterQueueOption final : public grpc::ServerBuilderOption {
 public:
  explicit RegisterQueueOption(grpc_completion_queue* cq) : cq_(cq) {}
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>*
                         plugins) override {
    plugins->push_back(std::make_unique<RegisterQueuePlugin>(cq_));
  }

 private:
  grpc_completion_queue* cq_;
};

std::mutex shared_mu;
std::weak_ptr<CallQueue> shared_queue;  // shared_mu

thread_local void* arriving_call = nullptr;

}  // namespace

namespace internal {

void SetArrivingCall(void* core) { arriving_call = core; }

void* TakeArrivingCallOrDie() {
  void* core = arriving_call;
  if (core == nullptr) {
    std::fputs(
        "driftwood: a server reactor was made outside its method's handler\n",
        stderr);
    std::abort();
  }
  arriving_call = nullptr;
  return core;
}

bool ArrivingCallTaken() { return arriving_call == nullptr; }

}  // namespace internal

std::shared_ptr<CallQueue> CallQueue::Shared() {
  std::lock_guard<std::mutex> lock(shared_mu);
  std::shared_ptr<CallQueue> queue = shared_queue.lock();
  if (queue == nullptr) {
    queue = std::shared_ptr<CallQueue>(new CallQueue());
    shared_queue = queue;
  }
  return queue;
}

CallQueue::CallQueue() {
  // ServerCompletionQueue has no public constructor; a builder that is never
  // built makes one.
  grpc::ServerBuilder maker;
  cq_ = maker.AddCompletionQueue();
  thread_ = std::thread([this] {
    raft::SetThreadName("dw-grpc");
    Run();
  });
}

CallQueue::~CallQueue() {
  cq_->Shutdown();
  thread_.join();
}

void CallQueue::Run() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) static_cast<QueueTag*>(tag)->Proceed(ok);
}

// Answers one call of a method no handler serves, and waits for the next.
class QueueServer::UnknownMethod final : private QueueTag {
 public:
  static void Await(grpc::AsyncGenericService* service,
                    grpc::ServerCompletionQueue* cq,
                    internal::Arrivals* arrivals) {
    arrivals->Add();
    auto* call = new UnknownMethod(service, cq, arrivals);
    service->RequestCall(&call->context_, &call->stream_, cq, cq,
                         static_cast<QueueTag*>(call));
  }

 private:
  UnknownMethod(grpc::AsyncGenericService* service,
                grpc::ServerCompletionQueue* cq, internal::Arrivals* arrivals)
      : service_(service), cq_(cq), arrivals_(arrivals), stream_(&context_) {}

  void Proceed(bool ok) override {
    if (answered_ || !ok) {
      internal::Arrivals* arrivals = arrivals_;
      delete this;
      arrivals->Done();
      return;
    }
    answered_ = true;
    Await(service_, cq_, arrivals_);
    stream_.Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                                "unknown method " + context_.method()),
                   static_cast<QueueTag*>(this));
  }

  grpc::AsyncGenericService* service_;
  grpc::ServerCompletionQueue* cq_;
  internal::Arrivals* arrivals_;
  grpc::GenericServerContext context_;
  grpc::GenericServerAsyncReaderWriter stream_;
  bool answered_ = false;
};

std::unique_ptr<QueueServer> CallQueue::BuildAndStart(
    grpc::ServerBuilder& builder) {
  std::unique_ptr<QueueServer> server(new QueueServer(shared_from_this()));
  builder.RegisterAsyncGenericService(&server->unknown_);
  server->builder_queue_ = builder.AddCompletionQueue();
  builder.SetOption(std::make_unique<RegisterQueueOption>(cq_->cq()));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr) return nullptr;
  QueueServer::UnknownMethod::Await(&server->unknown_, cq_.get(),
                                    &server->arrivals_);
  return server;
}

QueueServer::QueueServer(std::shared_ptr<CallQueue> queue)
    : queue_(std::move(queue)) {}

QueueServer::~QueueServer() {
  Shutdown(std::chrono::system_clock::now());
  server_.reset();
  if (builder_queue_ != nullptr) {
    builder_queue_->Shutdown();
    void* tag = nullptr;
    bool ok = false;
    while (builder_queue_->Next(&tag, &ok)) {
    }
  }
}

void QueueServer::Shutdown(std::chrono::system_clock::time_point deadline) {
  if (shut_down_ || server_ == nullptr) return;
  shut_down_ = true;
  server_->Shutdown(deadline);
  arrivals_.WaitForNone();
}

}  // namespace driftwood::rpc
