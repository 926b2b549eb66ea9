// Driftwood: a LogStore in memory, for tests and simulations. Nothing survives
// the process; "durable" means "written to this object". Not thread-safe.
#ifndef DRIFTWOOD_RAFT_STORAGE_MEMORY_LOG_STORE_H_
#define DRIFTWOOD_RAFT_STORAGE_MEMORY_LOG_STORE_H_

#include <cstdint>
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
  absl::Status Persist(const PersistRequest& request) override;

  const HardState& hard_state() const { return hard_state_; }
  // Number of Persist calls with sync set.
  uint64_t sync_count() const { return sync_count_; }

 private:
  HardState hard_state_;
  Configuration configuration_;
  // entries_[i] has index i + 1.
  std::vector<Entry> entries_;
  uint64_t sync_count_ = 0;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_MEMORY_LOG_STORE_H_
