#include "examples/kv/lessor.h"

#include <algorithm>
#include <utility>

namespace driftwood::kv {

namespace {

using SteadyTime = std::chrono::steady_clock::time_point;

absl::Status NotPrimary() {
  return absl::FailedPreconditionError("lessor: this member is not the leader");
}

}  // namespace

Lessor::Lessor(int64_t min_ttl, Clock clock,
               std::chrono::milliseconds revoke_retry)
    : min_ttl_(min_ttl),
      clock_(clock ? std::move(clock)
                   : Clock([] { return std::chrono::steady_clock::now(); })),
      revoke_retry_(revoke_retry) {}

int64_t Lessor::GrantedTTL(int64_t ttl) const {
  return std::max(ttl, min_ttl_);
}

void Lessor::Reset(const std::vector<std::pair<int64_t, int64_t>>& leases) {
  const SteadyTime now = clock_();
  std::lock_guard<std::mutex> lock(mu_);
  std::map<int64_t, Lease> fresh;
  for (const auto& [id, ttl] : leases) {
    Lease& lease = fresh[id];
    lease.ttl = ttl;
    // A lease the primary already timed keeps its expiry; one it did not
    // know starts a full TTL now (it cannot have been renewed here).
    auto it = leases_.find(id);
    if (it != leases_.end()) {
      lease.expiry = it->second.expiry;
      lease.revoke_proposed = it->second.revoke_proposed;
    } else {
      lease.expiry = now + std::chrono::seconds(ttl);
    }
  }
  leases_ = std::move(fresh);
}

void Lessor::Granted(int64_t id, int64_t ttl) {
  const SteadyTime now = clock_();
  std::lock_guard<std::mutex> lock(mu_);
  Lease& lease = leases_[id];
  lease.ttl = ttl;
  lease.expiry = now + std::chrono::seconds(ttl);
  lease.revoke_proposed = SteadyTime();
}

void Lessor::Revoked(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  leases_.erase(id);
}

void Lessor::Promote() {
  const SteadyTime now = clock_();
  std::lock_guard<std::mutex> lock(mu_);
  primary_ = true;
  // etcd's lessor.Promote: a new leader cannot know when the old one last
  // renewed a lease, so every lease gets a full TTL from now.
  for (auto& [id, lease] : leases_) {
    lease.expiry = now + std::chrono::seconds(lease.ttl);
    lease.revoke_proposed = SteadyTime();
  }
}

void Lessor::Demote() {
  std::lock_guard<std::mutex> lock(mu_);
  primary_ = false;
}

bool Lessor::primary() const {
  std::lock_guard<std::mutex> lock(mu_);
  return primary_;
}

absl::StatusOr<int64_t> Lessor::Renew(int64_t id) {
  const SteadyTime now = clock_();
  std::lock_guard<std::mutex> lock(mu_);
  if (!primary_) return NotPrimary();
  auto it = leases_.find(id);
  // An expired lease stays expired: its revoke is on the way.
  if (it == leases_.end() || it->second.expiry <= now) return int64_t{0};
  it->second.expiry = now + std::chrono::seconds(it->second.ttl);
  return it->second.ttl;
}

absl::StatusOr<std::optional<int64_t>> Lessor::Remaining(int64_t id) const {
  const SteadyTime now = clock_();
  std::lock_guard<std::mutex> lock(mu_);
  if (!primary_) return NotPrimary();
  auto it = leases_.find(id);
  if (it == leases_.end()) return std::optional<int64_t>();
  const auto left = it->second.expiry - now;
  if (left <= std::chrono::steady_clock::duration::zero()) {
    return std::optional<int64_t>(0);
  }
  // Rounded up, as etcd prints it.
  const int64_t seconds = std::chrono::ceil<std::chrono::seconds>(left).count();
  return std::optional<int64_t>(seconds);
}

std::vector<int64_t> Lessor::TakeExpired(size_t limit) {
  const SteadyTime now = clock_();
  std::vector<int64_t> expired;
  std::lock_guard<std::mutex> lock(mu_);
  if (!primary_) return expired;
  for (auto& [id, lease] : leases_) {
    if (expired.size() >= limit) break;
    if (lease.expiry > now) continue;
    if (lease.revoke_proposed != SteadyTime() &&
        now - lease.revoke_proposed < revoke_retry_) {
      continue;
    }
    lease.revoke_proposed = now;
    expired.push_back(id);
  }
  return expired;
}

size_t Lessor::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leases_.size();
}

}  // namespace driftwood::kv
