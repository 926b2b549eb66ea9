// Driftwood: Lessor, the time side of etcd's leases for one member of
// driftwood-kv (docs/design.md "Leases"). Which leases exist and which keys
// they hold is replicated state (statemachine/mvcc: grants, revokes and
// attachments go through the log); when a lease runs out is not. Only the
// leader's lessor (the primary) keeps expiry times, answers keep-alives and
// decides that a lease expired; it then proposes the revoke through the log,
// so every member deletes the lease's keys at the same revision.
//
// Rules (etcd's lessor):
//  * A lease granted while primary expires TTL seconds after it is applied;
//    a keep-alive moves its expiry to now + TTL.
//  * On becoming primary every lease's expiry is set to now + TTL before any
//    can expire: a lease outlives a leader change whatever the old leader
//    knew (Promote).
//  * An expired lease is reported once per retry interval until its revoke
//    is applied (a revoke lost with a leader change is proposed again).
//  * Time is the monotonic clock: a step of the wall clock moves no expiry.
//
// Thread-safe.
#ifndef DRIFTWOOD_EXAMPLES_KV_LESSOR_H_
#define DRIFTWOOD_EXAMPLES_KV_LESSOR_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"

namespace driftwood::kv {

class Lessor {
 public:
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `min_ttl` seconds: shorter TTLs are raised to it (etcd: 1.5 election
  // timeouts, rounded up). `clock`: the monotonic clock (tests pass their
  // own).
  explicit Lessor(
      int64_t min_ttl, Clock clock = nullptr,
      std::chrono::milliseconds revoke_retry = std::chrono::milliseconds(1000));

  // The TTL a grant of `ttl` seconds gets.
  int64_t GrantedTTL(int64_t ttl) const;

  // The replicated leases: the whole table (at start and after a snapshot
  // is restored), and each grant and revoke as it is applied.
  void Reset(const std::vector<std::pair<int64_t, int64_t>>& leases);
  void Granted(int64_t id, int64_t ttl);
  void Revoked(int64_t id);

  // This member became the leader (every lease is extended by its TTL), or
  // stopped being it.
  void Promote();
  void Demote();
  bool primary() const;

  // A keep-alive: the lease's TTL (its expiry is now + TTL), 0 when no such
  // lease exists or it already expired (etcd answers TTL 0 then).
  // FailedPrecondition when not primary.
  absl::StatusOr<int64_t> Renew(int64_t id);
  // Seconds left (rounded up, at least 0); nullopt when no such lease.
  // FailedPrecondition when not primary.
  absl::StatusOr<std::optional<int64_t>> Remaining(int64_t id) const;

  // The primary's expired leases whose revoke was not proposed within the
  // retry interval; each is marked as proposed now. Empty when not primary.
  std::vector<int64_t> TakeExpired(size_t limit);

  size_t size() const;

 private:
  struct Lease {
    int64_t ttl = 0;
    std::chrono::steady_clock::time_point expiry;
    std::chrono::steady_clock::time_point revoke_proposed;
  };

  const int64_t min_ttl_;
  const Clock clock_;
  const std::chrono::milliseconds revoke_retry_;
  mutable std::mutex mu_;
  std::map<int64_t, Lease> leases_;  // mu_
  bool primary_ = false;             // mu_
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_LESSOR_H_
