#include "examples/kv/lease_service.h"

#include <fstream>
#include <sstream>
#include <utility>

namespace driftwood::kv {

namespace {

using etcdserverpb::LeaseKeepAliveRequest;
using etcdserverpb::LeaseKeepAliveResponse;

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// What a member answers when the leader's lessor cannot be reached.
grpc::Status LeaderGone(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
      status.error_code() == grpc::StatusCode::OUT_OF_RANGE) {
    return status;
  }
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "etcdserver: leader changed");
}

grpc::Status NoLeader() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE, "etcdserver: no leader");
}

// What a stopping member answers instead of forwarding.
grpc::Status Stopping() {
  return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                      "etcdserver: server stopped");
}

// One LeaseKeepAlive stream: each request is renewed and answered before
// the next is read (clients send one every TTL/3).
class KeepAliveStream final
    : public rpc::ServerBidiReactor<LeaseKeepAliveRequest,
                                    LeaseKeepAliveResponse> {
 public:
  explicit KeepAliveStream(LeaseService& leases) : leases_(leases) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    const int64_t id = request_.id();
    leases_.Renew(id, [this, id](grpc::Status status, int64_t ttl) {
      if (!status.ok()) {
        Finish(status);
        return;
      }
      response_.Clear();
      leases_.context().FillHeader(response_.mutable_header());
      response_.set_id(id);
      response_.set_ttl(ttl);
      StartWrite(&response_);
    });
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed"));
      return;
    }
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  LeaseService& leases_;
  LeaseKeepAliveRequest request_;
  LeaseKeepAliveResponse response_;
};

}  // namespace

std::shared_ptr<grpc::ChannelCredentials> LeaderStubs::Credentials() {
  const KvServerOptions& o = context_.options;
  if (o.cert_file.empty()) return grpc::InsecureChannelCredentials();
  // Members reach each other's client port with the CA that signed the
  // client certificates (or the peer CA) and present their peer
  // certificate when clients must present one.
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadWholeFile(
      !o.trusted_ca_file.empty() ? o.trusted_ca_file : o.peer_trusted_ca_file);
  if (!o.peer_cert_file.empty()) {
    ssl.pem_cert_chain = ReadWholeFile(o.peer_cert_file);
    ssl.pem_private_key = ReadWholeFile(o.peer_key_file);
  }
  return grpc::SslCredentials(ssl);
}

std::shared_ptr<LeaseForwarding::Stub> LeaderStubs::Leader() {
  const uint64_t leader = context_.server->leader().value();
  if (leader == raft::kNoNode.value() || leader == context_.member_id) {
    return nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = stubs_.find(leader);
    if (it != stubs_.end()) return it->second;
  }
  // The leader's client URL, as it published it through the log.
  MvccQuery query;
  query.mutable_members();
  absl::StatusOr<std::string> out =
      context_.state_machine->Query(query.SerializeAsString());
  MvccResult result;
  if (!out.ok() || !result.ParseFromString(*out) || result.code() != 0) {
    return nullptr;
  }
  for (const etcdserverpb::Member& member : result.member_list().members()) {
    if (member.id() != leader || member.clienturls().empty()) continue;
    const std::string address = UrlHostPort(member.clienturls(0));
    if (address.empty()) return nullptr;
    auto stub = std::shared_ptr<LeaseForwarding::Stub>(
        LeaseForwarding::NewStub(grpc::CreateChannel(address, Credentials())));
    std::lock_guard<std::mutex> lock(mu_);
    stubs_[leader] = stub;
    return stub;
  }
  return nullptr;
}

bool LeaderStubs::Track(grpc::ClientContext* forwarded) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_) return false;
  forwarded_.insert(forwarded);
  return true;
}

void LeaderStubs::Untrack(grpc::ClientContext* forwarded) {
  std::lock_guard<std::mutex> lock(mu_);
  forwarded_.erase(forwarded);
}

void LeaderStubs::CancelForwarded() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  // Each call still completes on the call queue (CANCELLED), where its
  // callback untracks it.
  for (grpc::ClientContext* forwarded : forwarded_) forwarded->TryCancel();
}

void LeaseService::RenewAsPrimary(
    int64_t id, std::function<void(absl::StatusOr<int64_t>)> done) {
  absl::StatusOr<int64_t> ttl = context_.lessor->Renew(id);
  if (!ttl.ok() || *ttl > 0) {
    done(ttl);
    return;
  }
  MvccQuery barrier;
  barrier.mutable_lease_time_to_live()->set_id(id);
  context_.server->Read(
      barrier.SerializeAsString(), absl::Now() + kDefaultRequestTimeout,
      [this, id, done = std::move(done)](absl::StatusOr<std::string> read) {
        if (!read.ok()) {
          done(read.status());
          return;
        }
        done(context_.lessor->Renew(id));
      });
}

void LeaseService::Renew(int64_t id,
                         std::function<void(grpc::Status, int64_t ttl)> done) {
  if (context_.lessor->primary()) {
    RenewAsPrimary(id, [this, id, done = std::move(done)](
                           absl::StatusOr<int64_t> ttl) mutable {
      if (ttl.ok()) {
        done(grpc::Status::OK, *ttl);
        return;
      }
      // No longer the primary (or the barrier failed): ask the leader.
      RenewAtLeader(id, std::move(done));
    });
    return;
  }
  RenewAtLeader(id, std::move(done));
}

void LeaseService::RenewAtLeader(
    int64_t id, std::function<void(grpc::Status, int64_t ttl)> done) {
  std::shared_ptr<LeaseForwarding::Stub> stub = leader_.Leader();
  if (stub == nullptr) {
    done(context_.server->leader() == raft::kNoNode
             ? NoLeader()
             : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            "etcdserver: leader changed"),
         0);
    return;
  }
  struct Call {
    grpc::ClientContext context;
    LeaseKeepAliveRequest request;
    LeaseKeepAliveResponse response;
  };
  auto call = std::make_shared<Call>();
  call->request.set_id(id);
  call->context.set_deadline(std::chrono::system_clock::now() +
                             absl::ToChronoSeconds(kDefaultRequestTimeout));
  if (!leader_.Track(&call->context)) {
    done(Stopping(), 0);
    return;
  }
  rpc::StartUnaryCall<LeaseKeepAliveResponse>(
      stub->PrepareAsyncRenew(&call->context, call->request,
                              context_.call_queue->cq()),
      &call->response,
      [this, call, done = std::move(done)](grpc::Status status) {
        leader_.Untrack(&call->context);
        if (!status.ok()) {
          done(LeaderGone(status), 0);
          return;
        }
        done(grpc::Status::OK, call->response.ttl());
      });
}

rpc::UnaryReactor* LeaseService::LeaseGrant(
    rpc::UnaryServerContext* call,
    const etcdserverpb::LeaseGrantRequest* request,
    etcdserverpb::LeaseGrantResponse* response) {
  MvccCommand command;
  etcdserverpb::LeaseGrantRequest* grant = command.mutable_lease_grant();
  *grant = *request;
  if (grant->id() == 0) {
    std::lock_guard<std::mutex> lock(random_mu_);
    // A random positive ID; one already taken fails the grant with "lease
    // already exists" (one chance in 2^63 per lease).
    grant->set_id(static_cast<int64_t>(random_() >> 1) | 1);
  }
  grant->set_ttl(context_.lessor->GrantedTTL(request->ttl()));
  return context_.Propose(
      call, Method::kLeaseGrant, command, [this, response](MvccResult& result) {
        *response = std::move(*result.mutable_lease_grant());
        context_.FillHeader(response->mutable_header());
      });
}

rpc::UnaryReactor* LeaseService::LeaseRevoke(
    rpc::UnaryServerContext* call,
    const etcdserverpb::LeaseRevokeRequest* request,
    etcdserverpb::LeaseRevokeResponse* response) {
  MvccCommand command;
  *command.mutable_lease_revoke() = *request;
  return context_.Propose(call, Method::kLeaseRevoke, command,
                          [this, response](MvccResult& result) {
                            *response =
                                std::move(*result.mutable_lease_revoke());
                            context_.FillHeader(response->mutable_header());
                          });
}

rpc::UnaryReactor* LeaseService::LocalTimeToLive(
    rpc::UnaryServerContext* call,
    const etcdserverpb::LeaseTimeToLiveRequest* request,
    etcdserverpb::LeaseTimeToLiveResponse* response) {
  MvccQuery query;
  *query.mutable_lease_time_to_live() = *request;
  return context_.Read(
      call, Method::kLeaseTimeToLive, query, /*serializable=*/false,
      [this, response](MvccResult& result) {
        *response = std::move(*result.mutable_lease_time_to_live());
        context_.FillHeader(response->mutable_header());
        if (response->grantedttl() == 0) return;  // no such lease
        absl::StatusOr<std::optional<int64_t>> left =
            context_.lessor->Remaining(response->id());
        if (left.ok() && left->has_value()) response->set_ttl(**left);
      });
}

rpc::UnaryReactor* LeaseService::LeaseTimeToLive(
    rpc::UnaryServerContext* call,
    const etcdserverpb::LeaseTimeToLiveRequest* request,
    etcdserverpb::LeaseTimeToLiveResponse* response) {
  if (context_.lessor->primary()) {
    return LocalTimeToLive(call, request, response);
  }
  rpc::UnaryReactor* reactor = call->DefaultReactor();
  std::shared_ptr<LeaseForwarding::Stub> stub = leader_.Leader();
  if (stub == nullptr) {
    reactor->Finish(NoLeader());
    return reactor;
  }
  auto forwarded = std::make_shared<grpc::ClientContext>();
  forwarded->set_deadline(std::chrono::system_clock::now() +
                          absl::ToChronoSeconds(kDefaultRequestTimeout));
  if (!leader_.Track(forwarded.get())) {
    reactor->Finish(Stopping());
    return reactor;
  }
  rpc::StartUnaryCall<etcdserverpb::LeaseTimeToLiveResponse>(
      stub->PrepareAsyncTimeToLive(forwarded.get(), *request,
                                   context_.call_queue->cq()),
      response, [this, forwarded, reactor](grpc::Status status) {
        leader_.Untrack(forwarded.get());
        reactor->Finish(status.ok() ? status : LeaderGone(status));
      });
  return reactor;
}

rpc::UnaryReactor* LeaseService::LeaseLeases(
    rpc::UnaryServerContext* call, const etcdserverpb::LeaseLeasesRequest*,
    etcdserverpb::LeaseLeasesResponse* response) {
  MvccQuery query;
  query.mutable_leases();
  return context_.Read(
      call, Method::kLeaseLeases, query,
      /*serializable=*/false, [this, response](MvccResult& result) {
        for (const auto& lease : result.leases().leases()) {
          response->add_leases()->set_id(lease.id());
        }
        context_.FillHeader(response->mutable_header());
        response->mutable_header()->set_revision(result.leases().revision());
      });
}

void LeaseService::Serve(rpc::QueueServer& server) {
  using S = etcdserverpb::Lease::AsyncService;
  rpc::ServeUnaryMember(server, &async, &S::RequestLeaseGrant, this,
                        &LeaseService::LeaseGrant);
  rpc::ServeUnaryMember(server, &async, &S::RequestLeaseRevoke, this,
                        &LeaseService::LeaseRevoke);
  rpc::ServeUnaryMember(server, &async, &S::RequestLeaseTimeToLive, this,
                        &LeaseService::LeaseTimeToLive);
  rpc::ServeUnaryMember(server, &async, &S::RequestLeaseLeases, this,
                        &LeaseService::LeaseLeases);
  rpc::ServeBidi(
      server, &async, &S::RequestLeaseKeepAlive,
      [this](grpc::ServerContext* call) { return LeaseKeepAlive(call); });
}

void LeaseForwardingService::Serve(rpc::QueueServer& server) {
  using S = LeaseForwarding::AsyncService;
  rpc::ServeUnaryMember(server, &async, &S::RequestRenew, this,
                        &LeaseForwardingService::Renew);
  rpc::ServeUnaryMember(server, &async, &S::RequestTimeToLive, this,
                        &LeaseForwardingService::TimeToLive);
}

rpc::ServerBidiReactor<LeaseKeepAliveRequest, LeaseKeepAliveResponse>*
LeaseService::LeaseKeepAlive(grpc::ServerContext*) {
  return new KeepAliveStream(*this);
}

rpc::UnaryReactor* LeaseForwardingService::Renew(
    rpc::UnaryServerContext* call,
    const etcdserverpb::LeaseKeepAliveRequest* request,
    etcdserverpb::LeaseKeepAliveResponse* response) {
  rpc::UnaryReactor* reactor = call->DefaultReactor();
  const int64_t id = request->id();
  leases_.RenewAsPrimary(
      id, [this, reactor, response, id](absl::StatusOr<int64_t> ttl) {
        if (!ttl.ok()) {
          reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                       std::string(ttl.status().message())));
          return;
        }
        leases_.context().FillHeader(response->mutable_header());
        response->set_id(id);
        response->set_ttl(*ttl);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

rpc::UnaryReactor* LeaseForwardingService::TimeToLive(
    rpc::UnaryServerContext* call,
    const etcdserverpb::LeaseTimeToLiveRequest* request,
    etcdserverpb::LeaseTimeToLiveResponse* response) {
  if (!leases_.context().lessor->primary()) {
    rpc::UnaryReactor* reactor = call->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                 "lessor: this member is not the leader"));
    return reactor;
  }
  return leases_.LocalTimeToLive(call, request, response);
}

}  // namespace driftwood::kv
