// Driftwood: a LogStore that loses what a power cut would lose, for the
// simulation. Writes land in a visible store at once; only synced writes (and
// everything before them) reach the durable store. PowerCut() throws away the
// unsynced writes, keeping some prefix of them (a disk may have written part
// of what it was given, in order). FailNextWrite() makes the next Persist fail
// without effect, as a full or broken disk would. Not thread-safe.
#ifndef DRIFTWOOD_TESTS_SUPPORT_FAULT_INJECTING_LOG_STORE_H_
#define DRIFTWOOD_TESTS_SUPPORT_FAULT_INJECTING_LOG_STORE_H_

#include <cstdint>
#include <vector>

#include "raft/storage/memory_log_store.h"

namespace driftwood::testing {

class FaultInjectingLogStore : public raft::LogStore {
 public:
  explicit FaultInjectingLogStore(raft::Configuration configuration)
      : visible_(configuration), durable_(configuration) {}

  absl::StatusOr<raft::InitialState> LoadInitialState() const override {
    return visible_.LoadInitialState();
  }
  raft::LogIndex FirstIndex() const override { return visible_.FirstIndex(); }
  raft::LogIndex LastIndex() const override { return visible_.LastIndex(); }
  absl::StatusOr<raft::Term> TermAt(raft::LogIndex index) const override {
    return visible_.TermAt(index);
  }
  absl::StatusOr<std::vector<raft::Entry>> Entries(
      raft::LogIndex first, raft::LogIndex last_exclusive,
      uint64_t max_bytes) const override {
    return visible_.Entries(first, last_exclusive, max_bytes);
  }
  absl::StatusOr<raft::SnapshotMeta> Snapshot() const override {
    return visible_.Snapshot();
  }

  absl::Status Persist(const raft::PersistRequest& request) override;
  // Snapshot metadata and compaction are synced writes here.
  absl::Status SetSnapshot(const raft::SnapshotMeta& snapshot) override;
  absl::Status Compact(raft::LogIndex index) override;

  // Loses every unsynced write except the first `keep` of them.
  void PowerCut(uint64_t keep);
  void FailNextWrite() { fail_next_ = true; }

  uint64_t unsynced_writes() const { return pending_.size(); }
  uint64_t sync_count() const { return syncs_; }
  const raft::HardState& hard_state() const { return visible_.hard_state(); }

 private:
  void FlushPending();

  raft::MemoryLogStore visible_;
  raft::MemoryLogStore durable_;
  // Unsynced writes, in order, not yet in durable_.
  std::vector<raft::PersistRequest> pending_;
  bool fail_next_ = false;
  uint64_t syncs_ = 0;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_FAULT_INJECTING_LOG_STORE_H_
