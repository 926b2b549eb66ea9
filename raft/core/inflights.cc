#include "raft/core/inflights.h"

namespace driftwood::raft::internal {

Inflights::Inflights(uint64_t max_messages, uint64_t max_bytes)
    : max_messages_(max_messages), max_bytes_(max_bytes) {
  RAFT_CHECK(max_messages_ >= 1, "the inflight window must admit a message");
}

bool Inflights::Full() const {
  if (entries_.empty()) return false;
  if (entries_.size() >= max_messages_) return true;
  return max_bytes_ != 0 && bytes_ >= max_bytes_;
}

void Inflights::Add(LogIndex last_index, uint64_t bytes) {
  RAFT_CHECK(!Full(), "adding to a full inflight window");
  RAFT_CHECK(entries_.empty() || entries_.back().last_index < last_index,
             "inflight indexes must increase");
  entries_.push_back({last_index, bytes});
  bytes_ += bytes;
}

void Inflights::FreeUpTo(LogIndex index) {
  while (!entries_.empty() && entries_.front().last_index <= index) {
    bytes_ -= entries_.front().bytes;
    entries_.pop_front();
  }
}

void Inflights::FreeFirst() {
  if (entries_.empty()) return;
  bytes_ -= entries_.front().bytes;
  entries_.pop_front();
}

void Inflights::Reset() {
  entries_.clear();
  bytes_ = 0;
}

}  // namespace driftwood::raft::internal
