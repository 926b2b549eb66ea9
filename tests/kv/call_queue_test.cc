// rpc::CallQueue (rpc/call_queue.h): gRPC served through one completion
// queue of ours, with reactors of the callback API's shape. Exercised with
// etcd's generated services on a loopback port and gRPC's blocking client.
#include "rpc/call_queue.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"

namespace driftwood::rpc {
namespace {

using etcdserverpb::PutRequest;
using etcdserverpb::PutResponse;
using etcdserverpb::RangeRequest;
using etcdserverpb::RangeResponse;
using etcdserverpb::WatchRequest;
using etcdserverpb::WatchResponse;

bool Eventually(const std::function<bool()>& condition,
                absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return condition();
}

std::chrono::system_clock::time_point In(absl::Duration timeout) {
  return std::chrono::system_clock::now() + absl::ToChronoMilliseconds(timeout);
}

// Put calls the test holds: the handler keeps them unfinished.
struct HeldPuts {
  std::mutex mu;
  std::vector<std::pair<UnaryServerContext*, PutResponse*>> calls;

  size_t size() {
    std::lock_guard<std::mutex> lock(mu);
    return calls.size();
  }
  void FinishAll(int64_t revision) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [call, response] : calls) {
      response->mutable_header()->set_revision(revision);
      call->Finish(grpc::Status::OK);
    }
    calls.clear();
  }
};

// Echoes each request's key back as a response (its watch_id the key's
// length); counts its callbacks.
struct EchoCounts {
  std::atomic<int> cancels{0};
  std::atomic<int> done{0};
};

class EchoStream final : public ServerBidiReactor<WatchRequest, WatchResponse> {
 public:
  explicit EchoStream(EchoCounts& counts) : counts_(counts) {
    // Before the call is bound to the reactor: they take effect at binding.
    StartSendInitialMetadata();
    StartRead(&request_);
  }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    response_.Clear();
    response_.set_watch_id(
        static_cast<int64_t>(request_.create_request().key().size()));
    StartWrite(&response_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    StartRead(&request_);
  }
  void OnCancel() override { ++counts_.cancels; }
  void OnDone() override {
    ++counts_.done;
    delete this;
  }

 private:
  EchoCounts& counts_;
  WatchRequest request_;
  WatchResponse response_;
};

struct TestServer {
  std::shared_ptr<CallQueue> queue = CallQueue::Shared();
  etcdserverpb::KV::AsyncService kv;
  etcdserverpb::Watch::AsyncService watch;
  HeldPuts held;
  EchoCounts echo;
  int port = 0;
  std::unique_ptr<QueueServer> server;

  TestServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&kv);
    builder.RegisterService(&watch);
    server = queue->BuildAndStart(builder);
    REQUIRE(server != nullptr);
    ServeUnary(*server, &kv, &etcdserverpb::KV::AsyncService::RequestRange,
               [](UnaryServerContext* call, const RangeRequest* request,
                  RangeResponse* response) {
                 response->mutable_header()->set_revision(
                     static_cast<int64_t>(request->key().size()));
                 call->Finish(grpc::Status::OK);
               });
    ServeUnary(*server, &kv, &etcdserverpb::KV::AsyncService::RequestPut,
               [this](UnaryServerContext* call, const PutRequest*,
                      PutResponse* response) {
                 std::lock_guard<std::mutex> lock(held.mu);
                 held.calls.emplace_back(call, response);
               });
    ServeBidi(*server, &watch, &etcdserverpb::Watch::AsyncService::RequestWatch,
              [this](grpc::ServerContext*) { return new EchoStream(echo); });
  }

  std::shared_ptr<grpc::Channel> Channel() const {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                               grpc::InsecureChannelCredentials());
  }
};

TEST_CASE(
    "call queue: a unary call is answered when its handler finishes it, at "
    "once or later from another thread, a method nobody serves is answered "
    "UNIMPLEMENTED",
    "[rpc][call_queue]") {
  TestServer server;
  auto kv = etcdserverpb::KV::NewStub(server.Channel());

  RangeRequest range;
  range.set_key("abcde");
  RangeResponse range_response;
  grpc::ClientContext range_context;
  range_context.set_deadline(In(absl::Seconds(10)));
  REQUIRE(kv->Range(&range_context, range, &range_response).ok());
  CHECK(range_response.header().revision() == 5);

  auto put = std::async(std::launch::async, [&] {
    grpc::ClientContext context;
    context.set_deadline(In(absl::Seconds(10)));
    PutResponse response;
    grpc::Status status = kv->Put(&context, PutRequest(), &response);
    return std::make_pair(status.ok(), response.header().revision());
  });
  REQUIRE(Eventually([&] { return server.held.size() == 1; }));
  CHECK(put.wait_for(std::chrono::milliseconds(50)) ==
        std::future_status::timeout);
  std::thread([&] { server.held.FinishAll(42); }).join();
  const auto [ok, revision] = put.get();
  CHECK(ok);
  CHECK(revision == 42);

  // DeleteRange has no handler here, but KV is registered: gRPC would hold
  // such a call forever. Lease is not registered at all: answered at once.
  auto lease = etcdserverpb::Lease::NewStub(server.Channel());
  grpc::ClientContext lease_context;
  lease_context.set_deadline(In(absl::Seconds(10)));
  etcdserverpb::LeaseGrantResponse grant;
  const grpc::Status refused = lease->LeaseGrant(
      &lease_context, etcdserverpb::LeaseGrantRequest(), &grant);
  CHECK(refused.error_code() == grpc::StatusCode::UNIMPLEMENTED);
  CHECK(refused.error_message().find("LeaseGrant") != std::string::npos);
}

TEST_CASE(
    "call queue: Shutdown returns only once every call it served has ended, "
    "and the server's calls end when their handlers finish them",
    "[rpc][call_queue]") {
  TestServer server;
  auto kv = etcdserverpb::KV::NewStub(server.Channel());
  auto put = std::async(std::launch::async, [&] {
    grpc::ClientContext context;
    context.set_deadline(In(absl::Seconds(30)));
    PutResponse response;
    return kv->Put(&context, PutRequest(), &response).error_code();
  });
  REQUIRE(Eventually([&] { return server.held.size() == 1; }));
  auto shutdown = std::async(std::launch::async, [&] {
    server.server->Shutdown(std::chrono::system_clock::now());
  });
  // The held call is cancelled, but it has not ended: its handler has not
  // finished it.
  CHECK(shutdown.wait_for(std::chrono::milliseconds(300)) ==
        std::future_status::timeout);
  server.held.FinishAll(1);
  CHECK(shutdown.wait_for(std::chrono::seconds(10)) ==
        std::future_status::ready);
  CHECK(put.get() != grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_CASE(
    "call queue: a bidirectional reactor may start operations from its "
    "constructor, OnCancel runs when the client cancels, and OnDone "
    "once, "
    "after every operation completed",
    "[rpc][call_queue]") {
  TestServer server;
  auto watch = etcdserverpb::Watch::NewStub(server.Channel());
  {
    grpc::ClientContext context;
    context.set_deadline(In(absl::Seconds(10)));
    auto stream = watch->Watch(&context);
    for (const std::string key : {"a", "bb", "ccc"}) {
      WatchRequest request;
      request.mutable_create_request()->set_key(key);
      REQUIRE(stream->Write(request));
      WatchResponse response;
      REQUIRE(stream->Read(&response));
      CHECK(response.watch_id() == static_cast<int64_t>(key.size()));
    }
    REQUIRE(stream->WritesDone());
    WatchResponse extra;
    CHECK_FALSE(stream->Read(&extra));
    CHECK(stream->Finish().ok());
  }
  REQUIRE(Eventually([&] { return server.echo.done.load() == 1; }));
  CHECK(server.echo.cancels.load() == 0);

  {
    grpc::ClientContext context;
    context.set_deadline(In(absl::Seconds(10)));
    auto stream = watch->Watch(&context);
    WatchRequest request;
    request.mutable_create_request()->set_key("dddd");
    REQUIRE(stream->Write(request));
    WatchResponse response;
    REQUIRE(stream->Read(&response));
    context.TryCancel();
    CHECK(stream->Finish().error_code() == grpc::StatusCode::CANCELLED);
  }
  REQUIRE(Eventually([&] { return server.echo.done.load() == 2; }));
  CHECK(server.echo.cancels.load() == 1);
}

}  // namespace
}  // namespace driftwood::rpc
