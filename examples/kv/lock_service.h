// Driftwood: etcd's server-side Lock (v3lockpb) and Election (v3electionpb)
// services for driftwood-kv (docs/design.md "Locks and elections"). They
// run etcd's client recipe (clientv3/concurrency) inside the server, on the
// same log, reads and watch hub as every client request:
//
//  * Lock(name, lease): key = name + "/" + lease in hex, created with the
//    lease if absent (one Txn that also reads the oldest key of the
//    prefix). The lock is held once no key of the prefix with a smaller
//    create revision is left: the caller waits for the deletion of the
//    newest older key, then looks again. If its own key is gone by then
//    (the lease expired) the call fails with "session expired" instead of
//    reporting a lock that is not held. The lease is required.
//  * Unlock(key): deletes the key.
//  * Election: Campaign (the same wait, with a value; an existing key with
//    another value is proclaimed), Proclaim and Resign (only while the
//    leader key still has its create revision: else "election: not
//    leader"), Leader (the oldest key of the prefix, else "election: no
//    leader") and Observe (every leader value as it changes).
//
// Waiting calls run on a thread each, end when the client cancels, and
// delete their key when the wait fails. Errors other than etcd's own are
// plain (code Unknown), as etcd's services return them.
#ifndef DRIFTWOOD_EXAMPLES_KV_LOCK_SERVICE_H_
#define DRIFTWOOD_EXAMPLES_KV_LOCK_SERVICE_H_

#include "examples/kv/proto/v3election.grpc.pb.h"
#include "examples/kv/proto/v3lock.grpc.pb.h"
#include "examples/kv/service_context.h"

namespace driftwood::kv {

class LockService final {
 public:
  explicit LockService(const Context& context) : context_(context) {}

  v3lockpb::Lock::AsyncService async;
  void Serve(rpc::QueueServer& server);

  rpc::UnaryReactor* Lock(rpc::UnaryServerContext* call,
                          const v3lockpb::LockRequest* request,
                          v3lockpb::LockResponse* response);
  rpc::UnaryReactor* Unlock(rpc::UnaryServerContext* call,
                            const v3lockpb::UnlockRequest* request,
                            v3lockpb::UnlockResponse* response);

 private:
  const Context& context_;
};

class ElectionService final {
 public:
  explicit ElectionService(const Context& context) : context_(context) {}

  v3electionpb::Election::AsyncService async;
  void Serve(rpc::QueueServer& server);

  rpc::UnaryReactor* Campaign(rpc::UnaryServerContext* call,
                              const v3electionpb::CampaignRequest* request,
                              v3electionpb::CampaignResponse* response);
  rpc::UnaryReactor* Proclaim(rpc::UnaryServerContext* call,
                              const v3electionpb::ProclaimRequest* request,
                              v3electionpb::ProclaimResponse* response);
  rpc::UnaryReactor* Leader(rpc::UnaryServerContext* call,
                            const v3electionpb::LeaderRequest* request,
                            v3electionpb::LeaderResponse* response);
  rpc::ServerWriteReactor<v3electionpb::LeaderResponse>* Observe(
      grpc::ServerContext* call, const v3electionpb::LeaderRequest* request);
  rpc::UnaryReactor* Resign(rpc::UnaryServerContext* call,
                            const v3electionpb::ResignRequest* request,
                            v3electionpb::ResignResponse* response);

 private:
  const Context& context_;
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_LOCK_SERVICE_H_
