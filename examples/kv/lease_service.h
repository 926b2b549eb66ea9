// Driftwood: etcd's Lease service for driftwood-kv (docs/design.md
// "Leases"), and LeaseForwarding, through which members that are not the
// leader hand keep-alives and TimeToLive to the leader's lessor.
//
//  * LeaseGrant: ID 0 gets a random positive ID; TTLs below the lessor's
//    minimum are raised to it; both are decided before proposing, so that
//    applying is deterministic. Existing ID: "lease already exists".
//  * LeaseRevoke: through the log; the keys go at one revision.
//  * LeaseKeepAlive: answered by the leader's lessor (forwarded from other
//    members); TTL 0 for a lease that does not exist or expired.
//  * LeaseTimeToLive: the granted TTL and keys from a linearizable read,
//    the remaining TTL from the leader; unknown ID: TTL -1, grantedTTL 0.
//  * LeaseLeases: a linearizable read.
#ifndef DRIFTWOOD_EXAMPLES_KV_LEASE_SERVICE_H_
#define DRIFTWOOD_EXAMPLES_KV_LEASE_SERVICE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>

#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "examples/kv/proto/lease_forwarding.grpc.pb.h"
#include "examples/kv/service_context.h"

namespace driftwood::kv {

// The leader's LeaseForwarding stub, or null when no leader is known or its
// client URL is not published yet.
class LeaderStubs {
 public:
  explicit LeaderStubs(const Context& context) : context_(context) {}
  std::shared_ptr<LeaseForwarding::Stub> Leader();

  // Calls forwarded to the leader and not answered yet. A stopping member
  // cancels them (CancelForwarded), so that its client server's shutdown,
  // which waits for every call in progress, does not wait up to a request
  // timeout for a leader that may never answer (one without a quorum).
  // Track is false, and registers nothing, once CancelForwarded ran.
  bool Track(grpc::ClientContext* forwarded);
  void Untrack(grpc::ClientContext* forwarded);
  void CancelForwarded();

 private:
  std::shared_ptr<grpc::ChannelCredentials> Credentials();

  const Context& context_;
  std::mutex mu_;
  std::map<uint64_t, std::shared_ptr<LeaseForwarding::Stub>> stubs_;  // mu_
  std::set<grpc::ClientContext*> forwarded_;                          // mu_
  bool cancelled_ = false;                                            // mu_
};

class LeaseService final {
 public:
  explicit LeaseService(const Context& context)
      : context_(context), leader_(context), random_(std::random_device()()) {}

  rpc::UnaryReactor* LeaseGrant(rpc::UnaryServerContext* call,
                                const etcdserverpb::LeaseGrantRequest* request,
                                etcdserverpb::LeaseGrantResponse* response);
  rpc::UnaryReactor* LeaseRevoke(
      rpc::UnaryServerContext* call,
      const etcdserverpb::LeaseRevokeRequest* request,
      etcdserverpb::LeaseRevokeResponse* response);
  rpc::UnaryReactor* LeaseTimeToLive(
      rpc::UnaryServerContext* call,
      const etcdserverpb::LeaseTimeToLiveRequest* request,
      etcdserverpb::LeaseTimeToLiveResponse* response);
  rpc::UnaryReactor* LeaseLeases(
      rpc::UnaryServerContext* call,
      const etcdserverpb::LeaseLeasesRequest* request,
      etcdserverpb::LeaseLeasesResponse* response);
  rpc::ServerBidiReactor<etcdserverpb::LeaseKeepAliveRequest,
                         etcdserverpb::LeaseKeepAliveResponse>*
  LeaseKeepAlive(grpc::ServerContext* call);

  etcdserverpb::Lease::AsyncService async;
  void Serve(rpc::QueueServer& server);

  // The leader's side of LeaseForwarding.
  rpc::UnaryReactor* LocalTimeToLive(
      rpc::UnaryServerContext* call,
      const etcdserverpb::LeaseTimeToLiveRequest* request,
      etcdserverpb::LeaseTimeToLiveResponse* response);

  // A keep-alive: here when this member is the leader, else at the leader.
  // `done` runs once, on any thread.
  void Renew(int64_t id, std::function<void(grpc::Status, int64_t ttl)> done);

  // A keep-alive on this member's lessor (Lessor::Renew's answer, or
  // FailedPrecondition when it is not the primary). A lease the lessor does
  // not know may be one whose grant this member has not applied yet: another
  // member can apply a committed entry, and answer the grant, first. So an
  // unknown lease is renewed again after a linearizable read, which
  // completes once this member has applied everything committed before the
  // keep-alive arrived; only then is it answered with TTL 0. `done` runs
  // once, on any thread.
  void RenewAsPrimary(int64_t id,
                      std::function<void(absl::StatusOr<int64_t>)> done);

  LeaderStubs& leader() { return leader_; }
  const Context& context() const { return context_; }

 private:
  // Renew through the leader's LeaseForwarding service.
  void RenewAtLeader(int64_t id,
                     std::function<void(grpc::Status, int64_t ttl)> done);

  const Context& context_;
  LeaderStubs leader_;
  std::mutex random_mu_;
  std::mt19937_64 random_;  // random_mu_
};

class LeaseForwardingService final {
 public:
  explicit LeaseForwardingService(LeaseService& leases) : leases_(leases) {}

  LeaseForwarding::AsyncService async;
  void Serve(rpc::QueueServer& server);

  rpc::UnaryReactor* Renew(rpc::UnaryServerContext* call,
                           const etcdserverpb::LeaseKeepAliveRequest* request,
                           etcdserverpb::LeaseKeepAliveResponse* response);
  rpc::UnaryReactor* TimeToLive(
      rpc::UnaryServerContext* call,
      const etcdserverpb::LeaseTimeToLiveRequest* request,
      etcdserverpb::LeaseTimeToLiveResponse* response);

 private:
  LeaseService& leases_;
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_LEASE_SERVICE_H_
