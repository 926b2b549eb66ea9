#include "tests/support/fault_injecting_log_store.h"

#include "raft/core/types.h"

namespace driftwood::testing {

absl::Status FaultInjectingLogStore::Persist(
    const raft::PersistRequest& request) {
  if (fail_next_) {
    fail_next_ = false;
    return absl::ResourceExhaustedError("injected write failure (disk full)");
  }
  if (absl::Status status = visible_.Persist(request); !status.ok()) {
    return status;
  }
  pending_.push_back(request);
  if (request.sync) {
    ++syncs_;
    FlushPending();  // a sync makes this write and every earlier one durable
  }
  return absl::OkStatus();
}

void FaultInjectingLogStore::FlushPending() {
  for (const raft::PersistRequest& write : pending_) {
    absl::Status status = durable_.Persist(write);
    RAFT_CHECK(status.ok(), status.ToString());
  }
  pending_.clear();
}

absl::Status FaultInjectingLogStore::SetSnapshot(
    const raft::SnapshotMeta& snapshot) {
  if (absl::Status status = visible_.SetSnapshot(snapshot); !status.ok()) {
    return status;
  }
  FlushPending();  // earlier writes reach the disk first, in order
  return durable_.SetSnapshot(snapshot);
}

absl::Status FaultInjectingLogStore::Compact(raft::LogIndex index) {
  if (absl::Status status = visible_.Compact(index); !status.ok()) {
    return status;
  }
  FlushPending();
  return durable_.Compact(index);
}

void FaultInjectingLogStore::PowerCut(uint64_t keep) {
  for (uint64_t i = 0; i < keep && i < pending_.size(); ++i) {
    absl::Status status = durable_.Persist(pending_[i]);
    RAFT_CHECK(status.ok(), status.ToString());
  }
  pending_.clear();
  visible_ = durable_;
}

}  // namespace driftwood::testing
