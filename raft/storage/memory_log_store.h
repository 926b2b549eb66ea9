// Driftwood: a LogStore in memory, for tests and simulations. Nothing survives
// the process; "durable" means "written to this object". Not thread-safe.
#ifndef DRIFTWOOD_RAFT_STORAGE_MEMORY_LOG_STORE_H_
#define DRIFTWOOD_RAFT_STORAGE_MEMORY_LOG_STORE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "raft/storage/log_store.h"

namespace driftwood::raft {

class MemoryLogStore : public LogStore {
 public:
  // An empty log whose stored configuration is `configuration`.
  explicit MemoryLogStore(Configuration configuration);

  absl::StatusOr<InitialState> LoadInitialState() const override;
  LogIndex FirstIndex() const override;
  LogIndex LastIndex() const override;
  absl::StatusOr<Term> TermAt(LogIndex index) const override;
  absl::StatusOr<std::vector<Entry>> Entries(LogIndex first,
                                             LogIndex last_exclusive,
                                             uint64_t max_bytes) const override;
  absl::StatusOr<SnapshotMeta> Snapshot() const override;
  absl::Status Persist(const PersistRequest& request) override;

  absl::Status SetSnapshot(const SnapshotMeta& snapshot) override;
  absl::Status Compact(LogIndex index) override;
  // While set, Snapshot() answers Unavailable (a snapshot is being produced).
  void set_snapshot_unavailable(bool unavailable) {
    snapshot_unavailable_ = unavailable;
  }

  const HardState& hard_state() const { return hard_state_; }
  // Number of Persist calls with sync set.
  uint64_t sync_count() const { return sync_count_; }

 private:
  HardState hard_state_;
  Configuration configuration_;
  std::optional<SnapshotMeta> snapshot_;
  bool snapshot_unavailable_ = false;
  // The log holds entries [first_index_, first_index_ + entries_.size()); the
  // entry before first_index_ (compacted, or the snapshot's) has term
  // compacted_term_.
  LogIndex first_index_{1};
  Term compacted_term_;
  std::vector<Entry> entries_;
  uint64_t sync_count_ = 0;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_MEMORY_LOG_STORE_H_
