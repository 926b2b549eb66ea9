// Driftwood: a small StateMachine for tests whose whole state is a hash chain
// over the entries it applied, so two instances agree iff they applied the
// same entries. It runs in memory, or "persistent" in a folder: every Apply
// replaces a state file (atomic, not synced), Sync fsyncs it.
#ifndef DRIFTWOOD_TESTS_SUPPORT_HASH_STATE_MACHINE_H_
#define DRIFTWOOD_TESTS_SUPPORT_HASH_STATE_MACHINE_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>

#include "raft/state_machine.h"

namespace driftwood::testing {

// The chain value after `previous` and then `entry`.
uint64_t ChainHash(uint64_t previous, const raft::Entry& entry);

class HashStateMachine : public raft::StateMachine {
 public:
  // In memory when `dir` is empty.
  explicit HashStateMachine(std::filesystem::path dir = {});

  absl::StatusOr<raft::AppliedState> Open() override;
  absl::StatusOr<std::vector<std::string>> Apply(
      const raft::ApplyBatch& batch) override;
  raft::AppliedState applied() const override { return applied_; }
  absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> Capture()
      override;
  absl::Status Restore(const raft::SnapshotMeta& meta,
                       const std::filesystem::path& dir) override;
  // Any query returns the hash as decimal text.
  absl::StatusOr<std::string> Query(std::string_view query) const override;
  bool persistent() const override { return !dir_.empty(); }
  absl::StatusOr<raft::LogIndex> Sync() override;

  uint64_t hash() const { return hash_; }

 private:
  absl::Status WriteState(bool sync);

  std::filesystem::path dir_;
  raft::AppliedState applied_;
  uint64_t hash_ = 0;
};

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_HASH_STATE_MACHINE_H_
