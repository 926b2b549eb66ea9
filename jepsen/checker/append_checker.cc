#include "jepsen/checker/append_checker.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace driftwood::jepsen {
namespace {

constexpr size_t kAbsent = std::numeric_limits<size_t>::max();

// One list key's check.
class KeyCheck {
 public:
  KeyCheck(const History& history, uint32_t key, AppendResult* result)
      : history_(history), key_(key), result_(*result) {}

  void Run();

 private:
  const Operation& Op(size_t id) const { return history_.ops[id]; }
  const std::vector<int64_t>& List(size_t read) const {
    return Op(reads_[read]).read.list;
  }
  // Position of `element` in the longest read, or kAbsent.
  size_t PositionInLongest(int64_t element) const {
    auto it = position_.find(element);
    return it == position_.end() ? kAbsent : it->second;
  }
  bool Contains(size_t read, int64_t element);
  void Report(AppendAnomalyKind kind, std::string message,
              std::vector<size_t> ops);
  std::string ReadName(size_t read) const {
    return absl::StrCat("read (index ", Op(reads_[read]).invoke_index, ")");
  }

  void CheckPrefixes();
  void CheckElements();
  void ReportElement(AppendAnomalyKind kind, int64_t element, size_t read);
  void CheckLostAndStale();
  void CheckRealtimeOrder();
  void CheckFutureReads();

  const History& history_;
  const uint32_t key_;
  AppendResult& result_;
  // Op ids of the key's appends and ok reads, in invocation order.
  std::vector<size_t> appends_;
  std::vector<size_t> reads_;
  // Appended element -> op id of its append.
  absl::flat_hash_map<int64_t, size_t> appended_;
  // The longest read (an index into reads_) and each element's first
  // position in it.
  size_t longest_ = 0;
  absl::flat_hash_map<int64_t, size_t> position_;
  // Per read: whether it is a prefix of the longest read.
  std::vector<bool> prefix_;
  // Element sets of the reads that are not prefixes, built on demand.
  absl::flat_hash_map<size_t, absl::flat_hash_set<int64_t>> sets_;
  // (kind, element) pairs already reported.
  absl::flat_hash_set<std::pair<int, int64_t>> reported_elements_;
  // Per read: whether a stale-read was reported for it.
  std::vector<bool> stale_;
  // Ok appends no read invoked after their completion could see.
  absl::flat_hash_set<size_t> unverified_;
};

void KeyCheck::Report(AppendAnomalyKind kind, std::string message,
                      std::vector<size_t> ops) {
  const size_t slot = static_cast<size_t>(kind);
  if (result_.counts[slot]++ >= AppendResult::kMaxStoredPerKind) return;
  result_.anomalies.push_back(
      AppendAnomaly{kind, key_, std::move(message), std::move(ops)});
}

bool KeyCheck::Contains(size_t read, int64_t element) {
  if (prefix_[read]) return PositionInLongest(element) < List(read).size();
  auto [it, inserted] = sets_.try_emplace(read);
  if (inserted) it->second.insert(List(read).begin(), List(read).end());
  return it->second.contains(element);
}

void KeyCheck::Run() {
  for (size_t id : history_.ops_by_key[key_]) {
    const Operation& op = Op(id);
    if (!op.open) ++result_.checked_ops;
    if (op.f == Function::kAppend) {
      appends_.push_back(id);
      appended_.try_emplace(op.arg1, id);
      switch (op.outcome) {
        case Outcome::kOk:
          ++result_.appends_ok;
          break;
        case Outcome::kFail:
          ++result_.appends_fail;
          break;
        case Outcome::kInfo:
          ++result_.appends_info;
          break;
      }
    } else if (op.f == Function::kRead && op.outcome == Outcome::kOk) {
      reads_.push_back(id);
    }
  }
  result_.reads += reads_.size();
  if (reads_.empty()) {
    for (size_t id : appends_) {
      if (Op(id).outcome == Outcome::kOk) ++result_.unverified;
    }
    return;
  }
  // Among equally long reads, the one completing last.
  for (size_t read = 1; read < reads_.size(); ++read) {
    const size_t size = List(read).size();
    const size_t best = List(longest_).size();
    if (size > best ||
        (size == best && Op(reads_[read]).complete_index >
                             Op(reads_[longest_]).complete_index)) {
      longest_ = read;
    }
  }
  const std::vector<int64_t>& longest = List(longest_);
  for (size_t i = 0; i < longest.size(); ++i)
    position_.try_emplace(longest[i], i);
  stale_.assign(reads_.size(), false);
  CheckPrefixes();
  CheckElements();
  CheckLostAndStale();
  CheckRealtimeOrder();
  CheckFutureReads();
}

// An element can be read only after its append began (real-time order,
// Herlihy & Wing): a read ending before the append's invocation saw the
// future.
void KeyCheck::CheckFutureReads() {
  const std::vector<int64_t>& longest = List(longest_);
  // latest[i]: the element among the longest read's first i + 1 whose append
  // began last.
  std::vector<size_t> latest(longest.size());
  int64_t latest_time = std::numeric_limits<int64_t>::min();
  size_t latest_at = 0;
  for (size_t i = 0; i < longest.size(); ++i) {
    auto append = appended_.find(longest[i]);
    if (append != appended_.end() &&
        Op(append->second).invoke_time > latest_time) {
      latest_time = Op(append->second).invoke_time;
      latest_at = i;
    }
    latest[i] = latest_at;
  }
  for (size_t read = 0; read < reads_.size(); ++read) {
    const std::vector<int64_t>& list = List(read);
    const int64_t end = Op(reads_[read]).complete_time;
    std::optional<int64_t> future;
    if (prefix_[read]) {
      if (list.empty()) continue;
      const int64_t element = longest[latest[list.size() - 1]];
      auto append = appended_.find(element);
      if (append != appended_.end() && Op(append->second).invoke_time > end) {
        future = element;
      }
    } else {
      for (int64_t element : list) {
        auto append = appended_.find(element);
        if (append != appended_.end() && Op(append->second).invoke_time > end) {
          future = element;
          break;
        }
      }
    }
    if (!future.has_value()) continue;
    const size_t append = appended_.at(*future);
    Report(AppendAnomalyKind::kFutureRead,
           absl::StrCat(ReadName(read), " holds ", *future,
                        ", whose append (index ", Op(append).invoke_index,
                        ") began after the read ended"),
           {reads_[read], append});
  }
}

void KeyCheck::CheckPrefixes() {
  const std::vector<int64_t>& longest = List(longest_);
  prefix_.assign(reads_.size(), true);
  for (size_t read = 0; read < reads_.size(); ++read) {
    const std::vector<int64_t>& list = List(read);
    const auto mismatch =
        std::mismatch(list.begin(), list.end(), longest.begin());
    if (mismatch.first == list.end()) continue;
    prefix_[read] = false;
    const size_t at = static_cast<size_t>(mismatch.first - list.begin());
    Report(AppendAnomalyKind::kIncompatibleOrder,
           absl::StrCat(ReadName(read),
                        " is not a prefix of the longest read (index ",
                        Op(reads_[longest_]).invoke_index, "): position ", at,
                        " holds ", *mismatch.first, " there and ",
                        *mismatch.second, " in the longest"),
           {reads_[read], reads_[longest_]});
  }
}

void KeyCheck::ReportElement(AppendAnomalyKind kind, int64_t element,
                             size_t read) {
  if (!reported_elements_.emplace(static_cast<int>(kind), element).second) {
    return;
  }
  std::vector<size_t> ops = {reads_[read]};
  std::string message;
  switch (kind) {
    case AppendAnomalyKind::kGarbage:
      message = absl::StrCat(ReadName(read), " holds ", element,
                             ", which no op appended (read of a value "
                             "nobody wrote)");
      break;
    case AppendAnomalyKind::kAbortedRead: {
      const size_t append = appended_.at(element);
      ops.push_back(append);
      message = absl::StrCat(ReadName(read), " holds ", element,
                             ", whose append failed (index ",
                             Op(append).invoke_index, ")");
      break;
    }
    case AppendAnomalyKind::kDuplicate:
      message = absl::StrCat(ReadName(read), " holds ", element,
                             " more than once (duplicate apply)");
      break;
    default:
      return;
  }
  Report(kind, std::move(message), std::move(ops));
}

void KeyCheck::CheckElements() {
  // The anomalous positions of the longest read: a prefix read has exactly
  // those below its length.
  std::vector<std::pair<size_t, AppendAnomalyKind>> in_longest;
  const std::vector<int64_t>& longest = List(longest_);
  for (size_t i = 0; i < longest.size(); ++i) {
    auto append = appended_.find(longest[i]);
    if (position_.at(longest[i]) != i) {
      in_longest.emplace_back(i, AppendAnomalyKind::kDuplicate);
    } else if (append == appended_.end()) {
      in_longest.emplace_back(i, AppendAnomalyKind::kGarbage);
    } else if (Op(append->second).outcome == Outcome::kFail) {
      in_longest.emplace_back(i, AppendAnomalyKind::kAbortedRead);
    }
  }
  size_t covered = 0;  // positions below it were reported
  size_t next = 0;     // into in_longest
  for (size_t read = 0; read < reads_.size(); ++read) {
    const std::vector<int64_t>& list = List(read);
    if (prefix_[read]) {
      covered = std::max(covered, list.size());
      for (; next < in_longest.size() && in_longest[next].first < covered;
           ++next) {
        ReportElement(in_longest[next].second, longest[in_longest[next].first],
                      read);
      }
      continue;
    }
    absl::flat_hash_set<int64_t> seen;
    for (int64_t element : list) {
      auto append = appended_.find(element);
      if (!seen.insert(element).second) {
        ReportElement(AppendAnomalyKind::kDuplicate, element, read);
      } else if (append == appended_.end()) {
        ReportElement(AppendAnomalyKind::kGarbage, element, read);
      } else if (Op(append->second).outcome == Outcome::kFail) {
        ReportElement(AppendAnomalyKind::kAbortedRead, element, read);
      }
    }
  }
}

void KeyCheck::CheckLostAndStale() {
  const size_t n = reads_.size();
  // reads_ is sorted by invocation time. last[i]: the read of reads_[i..]
  // completing last.
  std::vector<size_t> last(n);
  for (size_t i = n; i-- > 0;) {
    last[i] = i;
    if (i + 1 < n) {
      const Operation& candidate = Op(reads_[last[i + 1]]);
      const Operation& here = Op(reads_[i]);
      if (candidate.complete_index > here.complete_index) last[i] = last[i + 1];
    }
  }
  std::vector<int64_t> invoke_times(n);
  for (size_t i = 0; i < n; ++i) invoke_times[i] = Op(reads_[i]).invoke_time;

  // Ok appends found in the last read after them, by completion time.
  std::vector<size_t> confirmed;
  for (size_t id : appends_) {
    const Operation& append = Op(id);
    if (append.outcome != Outcome::kOk) continue;
    const size_t first = static_cast<size_t>(
        std::upper_bound(invoke_times.begin(), invoke_times.end(),
                         append.complete_time) -
        invoke_times.begin());
    if (first == n) {
      ++result_.unverified;
      unverified_.insert(id);
      continue;
    }
    const size_t final_read = last[first];
    if (!Contains(final_read, append.arg1)) {
      Report(AppendAnomalyKind::kLostWrite,
             absl::StrCat("append ", append.arg1, " (ok, index ",
                          append.invoke_index, ") is missing from ",
                          ReadName(final_read),
                          ", the last to complete of the reads invoked after "
                          "it completed"),
             {id, reads_[final_read]});
      continue;
    }
    ++result_.confirmed;
    if (PositionInLongest(append.arg1) != kAbsent) confirmed.push_back(id);
  }
  std::sort(confirmed.begin(), confirmed.end(), [&](size_t a, size_t b) {
    return Op(a).complete_time < Op(b).complete_time;
  });

  auto stale = [&](size_t read, std::string message, std::vector<size_t> ops) {
    if (stale_[read]) return;
    stale_[read] = true;
    Report(AppendAnomalyKind::kStaleRead, std::move(message), std::move(ops));
  };
  // A read must hold every confirmed append completed before it began.
  size_t next = 0;
  size_t need = 0;
  size_t needed_append = 0;
  for (size_t read = 0; read < n; ++read) {
    const int64_t begin = invoke_times[read];
    for (; next < confirmed.size() && Op(confirmed[next]).complete_time < begin;
         ++next) {
      const size_t position = PositionInLongest(Op(confirmed[next]).arg1);
      if (position + 1 > need) {
        need = position + 1;
        needed_append = confirmed[next];
      }
    }
    if (prefix_[read] && List(read).size() < need) {
      stale(read,
            absl::StrCat(ReadName(read), " misses ", Op(needed_append).arg1,
                         ", appended by an ok op (index ",
                         Op(needed_append).invoke_index,
                         ") completed before the read began"),
            {reads_[read], needed_append});
    }
  }
  // Monotonic reads: a read is at least as long as every read completed
  // before it began.
  std::vector<size_t> by_completion(n);
  for (size_t i = 0; i < n; ++i) by_completion[i] = i;
  std::sort(by_completion.begin(), by_completion.end(),
            [&](size_t a, size_t b) {
              return Op(reads_[a]).complete_time < Op(reads_[b]).complete_time;
            });
  next = 0;
  size_t longest_before = 0;
  size_t longest_read = 0;
  for (size_t read = 0; read < n; ++read) {
    for (; next < n &&
           Op(reads_[by_completion[next]]).complete_time < invoke_times[read];
         ++next) {
      const size_t earlier = by_completion[next];
      if (prefix_[earlier] && List(earlier).size() > longest_before) {
        longest_before = List(earlier).size();
        longest_read = earlier;
      }
    }
    if (prefix_[read] && List(read).size() < longest_before) {
      stale(read,
            absl::StrCat(ReadName(read), " has ", List(read).size(),
                         " elements, but ", ReadName(longest_read),
                         ", completed before it began, had ", longest_before),
            {reads_[read], reads_[longest_read]});
    }
  }
}

void KeyCheck::CheckRealtimeOrder() {
  const std::vector<int64_t>& longest = List(longest_);
  // The appends of the longest read's elements, by invocation time (their
  // op ids are in invocation order).
  std::vector<std::pair<size_t, size_t>> later;  // (op id, position)
  for (size_t i = 0; i < longest.size(); ++i) {
    auto append = appended_.find(longest[i]);
    if (append == appended_.end() || position_.at(longest[i]) != i) continue;
    later.emplace_back(append->second, i);
  }
  std::sort(later.begin(), later.end());
  // Ok appends in the longest read or unverified, by completion time.
  std::vector<size_t> earlier;
  for (size_t id : appends_) {
    if (Op(id).outcome != Outcome::kOk) continue;
    if (PositionInLongest(Op(id).arg1) != kAbsent || unverified_.contains(id)) {
      earlier.push_back(id);
    }
  }
  std::sort(earlier.begin(), earlier.end(), [&](size_t a, size_t b) {
    return Op(a).complete_time < Op(b).complete_time;
  });
  size_t next = 0;
  size_t latest = 0;  // the largest position (kAbsent: missing) so far
  size_t latest_append = 0;
  bool any = false;
  for (const auto& [id, position] : later) {
    const int64_t begin = Op(id).invoke_time;
    for (; next < earlier.size() && Op(earlier[next]).complete_time < begin;
         ++next) {
      const size_t at = PositionInLongest(Op(earlier[next]).arg1);
      if (!any || at > latest) {
        any = true;
        latest = at;
        latest_append = earlier[next];
      }
    }
    if (!any || latest <= position) continue;
    const Operation& a = Op(latest_append);
    const Operation& b = Op(id);
    Report(AppendAnomalyKind::kRealtimeOrder,
           absl::StrCat("append ", a.arg1, " (index ", a.invoke_index,
                        ") completed before append ", b.arg1, " (index ",
                        b.invoke_index, ") began, but the longest read (index ",
                        Op(reads_[longest_]).invoke_index, ") has ", b.arg1,
                        latest == kAbsent ? absl::StrCat(" and not ", a.arg1)
                                          : absl::StrCat(" before ", a.arg1)),
           {latest_append, id, reads_[longest_]});
  }
}

}  // namespace

const char* AnomalyName(AppendAnomalyKind kind) {
  switch (kind) {
    case AppendAnomalyKind::kGarbage:
      return "garbage";
    case AppendAnomalyKind::kAbortedRead:
      return "aborted-read";
    case AppendAnomalyKind::kDuplicate:
      return "duplicate";
    case AppendAnomalyKind::kIncompatibleOrder:
      return "incompatible-order";
    case AppendAnomalyKind::kLostWrite:
      return "lost-write";
    case AppendAnomalyKind::kStaleRead:
      return "stale-read";
    case AppendAnomalyKind::kRealtimeOrder:
      return "realtime-order";
    case AppendAnomalyKind::kFutureRead:
      return "future-read";
  }
  return "?";
}

AppendResult CheckAppends(const History& history) {
  const auto start = std::chrono::steady_clock::now();
  AppendResult result;
  for (uint32_t key = 0; key < history.keys.size(); ++key) {
    if (history.key_kinds[key] != KeyKind::kList) continue;
    ++result.keys;
    KeyCheck(history, key, &result).Run();
  }
  for (size_t count : result.counts) {
    if (count > 0) result.verdict = Verdict::kInvalid;
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return result;
}

}  // namespace driftwood::jepsen
