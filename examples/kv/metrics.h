// Driftwood: the metrics driftwood-kv serves in Prometheus' text format:
// request counts, errors and latency histograms by gRPC method, and the
// runtime's and transport's counters from NodeStatus.
#ifndef DRIFTWOOD_EXAMPLES_KV_METRICS_H_
#define DRIFTWOOD_EXAMPLES_KV_METRICS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "raft/core/status.h"

namespace driftwood::kv {

enum class Method {
  kRange,
  kPut,
  kDeleteRange,
  kTxn,
  kCompact,
  kStatus,
  kHashKV,
  kAlarm,
  kDefragment,
  kMemberList,
  kLeaseGrant,
  kLeaseRevoke,
  kLeaseTimeToLive,
  kLeaseLeases,
  kSnapshot,
  kLock,
  kUnlock,
  kCount,  // not a method: the number of them
};

class RequestMetrics {
 public:
  // Upper bounds of the latency buckets, in seconds (+Inf is implied).
  static constexpr std::array<double, 14> kBucketSeconds = {
      0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
      0.1,    0.25,  0.5,   1,     2.5,  5,     10};

  // Thread-safe and lock-free.
  void Record(Method method, absl::Duration latency, bool ok);

  // Every metric in Prometheus' text exposition format (version 0.0.4).
  std::string Render(const raft::NodeStatus& status) const;

 private:
  struct PerMethod {
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> errors{0};
    std::atomic<uint64_t> latency_micros{0};
    // Non-cumulative counts per bucket; the last is +Inf.
    std::array<std::atomic<uint64_t>, kBucketSeconds.size() + 1> buckets{};
  };
  std::array<PerMethod, static_cast<size_t>(Method::kCount)> methods_;
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_METRICS_H_
