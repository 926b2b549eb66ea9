// Driftwood: OrderedKv, a sorted byte map as a state machine's application
// logic sees it (the MVCC store, statemachine/mvcc/mvcc_store.h, keeps its
// data in one), and MemoryOrderedKv.
//
// Keys compare as unsigned bytes. Every write is visible to the reads that
// follow it through the same object.
#ifndef DRIFTWOOD_STATEMACHINE_ORDERED_KV_H_
#define DRIFTWOOD_STATEMACHINE_ORDERED_KV_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"

namespace driftwood::statemachine {

class OrderedKv {
 public:
  // Returns false to stop a scan.
  using Visitor =
      std::function<bool(std::string_view key, std::string_view value)>;

  virtual ~OrderedKv() = default;
  // A non-OK status is a storage failure, never "absent".
  virtual absl::StatusOr<std::optional<std::string>> Get(
      std::string_view key) const = 0;
  virtual absl::Status Put(std::string_view key, std::string_view value) = 0;
  // Put for a key the caller knows is absent from the state that earlier
  // commands left (the current command may have written it already): a
  // store may then skip reading the key first. Breaking that promise is a
  // caller bug; the stores check it where they can afford to
  // (RocksDbKvStateMachine: builds without NDEBUG).
  virtual absl::Status PutNew(std::string_view key, std::string_view value) {
    return Put(key, value);
  }
  virtual absl::Status Delete(std::string_view key) = 0;
  // Visits the keys in [start, end) in ascending order. The visitor must not
  // write.
  virtual absl::Status Scan(std::string_view start, std::string_view end,
                            const Visitor& visitor) const = 0;
};

// What a reader of one consistent OrderedKv state returns when the state is
// older than what the application derived in memory since (the MVCC store's
// key index, pruned by a compaction committed after the state was taken): the
// host asks again with a newer state (RocksDbKvStateMachine::Query).
inline absl::Status QueryAgainError(const std::string& why) {
  absl::Status status = absl::UnavailableError(why);
  status.SetPayload("driftwood.statemachine.query-again", absl::Cord("1"));
  return status;
}

inline bool IsQueryAgain(const absl::Status& status) {
  return status.GetPayload("driftwood.statemachine.query-again").has_value();
}

// An OrderedKv in memory (tests).
class MemoryOrderedKv : public OrderedKv {
 public:
  absl::StatusOr<std::optional<std::string>> Get(
      std::string_view key) const override {
    auto it = map_.find(key);
    if (it == map_.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
  absl::Status Put(std::string_view key, std::string_view value) override {
    map_.insert_or_assign(std::string(key), std::string(value));
    return absl::OkStatus();
  }
  absl::Status Delete(std::string_view key) override {
    auto it = map_.find(key);
    if (it != map_.end()) map_.erase(it);
    return absl::OkStatus();
  }
  absl::Status Scan(std::string_view start, std::string_view end,
                    const Visitor& visitor) const override {
    for (auto it = map_.lower_bound(start);
         it != map_.end() && std::string_view(it->first) < end; ++it) {
      if (!visitor(it->first, it->second)) break;
    }
    return absl::OkStatus();
  }
  size_t size() const { return map_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> map_;
};

}  // namespace driftwood::statemachine

#endif  // DRIFTWOOD_STATEMACHINE_ORDERED_KV_H_
