// The "append" checker: list keys, where clients append unique integers and
// read the whole list. A strictly serializable list is one order of appends
// that every read sees a prefix of, consistent with real time. The anomaly
// names follow Elle (Kingsbury and Alvaro 2020) where Elle has one.
//
// Per list key, with L the longest ok read (of equally long ones, the one
// completing last):
// - garbage: a read holds an element no op appended;
// - aborted-read: a read holds an element whose append failed;
// - duplicate: a read holds an element twice;
// - incompatible-order: a read is not a prefix of L;
// - lost-write: an ok append is missing from the last completed read (by
//   completion time) among the reads invoked after the append completed;
// - stale-read: a read misses an ok append that completed before the read
//   was invoked (and that is not lost), or is shorter than a read that
//   completed before it was invoked;
// - realtime-order: an ok append a completed before an append b was invoked,
//   both are in L, and L holds b before a (also reported when L holds b and
//   a is absent from L and unverified).
// Ok appends that no read invoked after their completion could see are
// "unverified", not errors; ok appends found in that last read are
// "confirmed". Cost: O(n log n + sum of read lengths) per key.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_APPEND_CHECKER_H_
#define DRIFTWOOD_JEPSEN_CHECKER_APPEND_CHECKER_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "jepsen/checker/history.h"
#include "jepsen/checker/register_checker.h"

namespace driftwood::jepsen {

enum class AppendAnomalyKind : uint8_t {
  kGarbage,
  kAbortedRead,
  kDuplicate,
  kIncompatibleOrder,
  kLostWrite,
  kStaleRead,
  kRealtimeOrder,
  // A read holds an element whose append began only after the read ended.
  kFutureRead,
};
inline constexpr size_t kAppendAnomalyKinds = 8;

// "garbage", "aborted-read", "duplicate", "incompatible-order",
// "lost-write", "stale-read", "realtime-order", "future-read".
const char* AnomalyName(AppendAnomalyKind kind);

struct AppendAnomaly {
  AppendAnomalyKind kind = AppendAnomalyKind::kGarbage;
  uint32_t key = 0;
  std::string message;
  // Op ids of the ops involved.
  std::vector<size_t> ops;
};

struct AppendResult {
  Verdict verdict = Verdict::kValid;
  size_t keys = 0;
  size_t appends_ok = 0;
  size_t appends_info = 0;  // open appends included
  size_t appends_fail = 0;
  size_t reads = 0;  // ok reads
  size_t confirmed = 0;
  size_t unverified = 0;
  // Completed ops (ok, fail, info) of the list keys.
  size_t checked_ops = 0;
  double seconds = 0;
  // Anomalies found, by kind: garbage, aborted-read and duplicate count
  // distinct (key, element) pairs, incompatible-order and stale-read count
  // reads, lost-write counts appends, realtime-order counts later appends.
  std::array<size_t, kAppendAnomalyKinds> counts{};
  // The first kMaxStoredPerKind anomalies of each kind, in key order.
  std::vector<AppendAnomaly> anomalies;

  static constexpr size_t kMaxStoredPerKind = 20;
};

// Checks every list key of `history`. REQUIRES: history.valid().
AppendResult CheckAppends(const History& history);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_APPEND_CHECKER_H_
