// Driftwood: the window of AppendEntries in flight to one follower.
//
// In the replicate state the leader sends optimistically (pipelining) and
// records each message's last index and byte size here. Acknowledgements free
// every message up to the acknowledged index. The window is full when it holds
// `max_messages` messages or `max_bytes` bytes, but an empty window always
// admits one message, however large, so that one big entry cannot wedge
// replication. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_INFLIGHTS_H_
#define DRIFTWOOD_RAFT_CORE_INFLIGHTS_H_

#include <cstdint>
#include <deque>

#include "raft/core/types.h"

namespace driftwood::raft::internal {

class Inflights {
 public:
  // `max_bytes` == 0 means no byte limit. REQUIRES: max_messages >= 1.
  Inflights(uint64_t max_messages, uint64_t max_bytes);

  // True when no further message may be sent.
  bool Full() const;
  // Records a sent message whose last entry is `last_index`.
  // REQUIRES: !Full(); last_index greater than every recorded index.
  void Add(LogIndex last_index, uint64_t bytes);
  // Frees every message whose last index is <= `index`.
  void FreeUpTo(LogIndex index);
  // Frees the oldest message (a heartbeat response proves the follower is alive
  // while the window is stuck full).
  void FreeFirst();
  void Reset();

  uint64_t count() const { return entries_.size(); }
  uint64_t bytes() const { return bytes_; }

 private:
  struct Inflight {
    LogIndex last_index;
    uint64_t bytes;
  };

  uint64_t max_messages_;
  uint64_t max_bytes_;
  // Ordered by last_index, strictly increasing.
  std::deque<Inflight> entries_;
  // Invariant: the sum of entries_[i].bytes.
  uint64_t bytes_ = 0;
};

}  // namespace driftwood::raft::internal

#endif  // DRIFTWOOD_RAFT_CORE_INFLIGHTS_H_
