// Driftwood: an in-memory key-value state machine (the commands and queries of
// statemachine/kv_command.h), the reference for applications whose state fits
// in memory and is rebuilt from the newest snapshot plus the log on restart.
//
// Capture is O(number of shards), not O(data): the keys are split by a fixed
// hash into kShards shards, each an immutable std::map shared by reference
// with the snapshots that captured it. The first write to a shard after a
// Capture copies that shard (copy-on-write): O(keys in the shard) once per
// shard per snapshot, so the total copying cost of one snapshot is at most one
// copy of the whole map, spread over the writes that follow it; shards that
// are not written while a snapshot is alive are never copied.
//
// Snapshot files: WriteTo writes one file, kv.data:
//
//   "DWKVMEM1" (8 bytes magic), fixed64 LE index, fixed64 LE term,
//   fixed64 LE key count, then per key: varint key length, key, varint value
//   length, value; then fixed32 LE CRC32C of every preceding byte.
//
// Keys are written in shard order, each shard sorted. Restore rejects a
// missing, truncated or corrupt file, or one whose index or term differs from
// the snapshot metadata, with DataLoss naming the file and the byte offset.
//
// Not persistent: Open reports index 0, Sync is Unimplemented.
//
// Thread safety: the StateMachine contract (serial calls on the apply thread);
// Query may also run on any thread concurrently with everything
// (ConcurrentQueries() is true): Apply and Restore hold a writer lock for the
// duration of a batch, Query a reader lock. Snapshots may be written on any
// thread, concurrently with the state machine, and may outlive it.
#ifndef DRIFTWOOD_STATEMACHINE_MEMORY_KV_STATE_MACHINE_H_
#define DRIFTWOOD_STATEMACHINE_MEMORY_KV_STATE_MACHINE_H_

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/state_machine.h"

namespace driftwood::statemachine {

class MemoryKvStateMachine : public raft::StateMachine {
 public:
  static constexpr size_t kShards = 64;
  static constexpr char kDataFileName[] = "kv.data";

  using Shard = std::map<std::string, std::string, std::less<>>;

  MemoryKvStateMachine();
  ~MemoryKvStateMachine() override;
  MemoryKvStateMachine(const MemoryKvStateMachine&) = delete;
  MemoryKvStateMachine& operator=(const MemoryKvStateMachine&) = delete;

  // Always reports index 0: nothing survives a restart.
  absl::StatusOr<raft::AppliedState> Open() override;

  // Applies Put/Delete/CompareAndSwap/Increment commands (kv_command.h).
  // REQUIRES: the entries are contiguous and start at applied().index + 1
  // (FailedPrecondition otherwise, changing nothing).
  absl::StatusOr<std::vector<std::string>> Apply(
      const raft::ApplyBatch& batch) override;

  raft::AppliedState applied() const override { return applied_; }

  // O(kShards): copies kShards references. FailedPrecondition when nothing
  // has been applied.
  absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> Capture()
      override;

  // Reads dir/kv.data completely before changing anything, then swaps the
  // whole state in (atomic: on error the state is unchanged).
  absl::Status Restore(const raft::SnapshotMeta& meta,
                       const std::filesystem::path& dir) override;

  // Get and Count (kv_command.h); InvalidArgument for a malformed query.
  absl::StatusOr<std::string> Query(std::string_view query) const override;

  bool ConcurrentQueries() const override { return true; }

 private:
  class Snapshot;
  class BatchStore;

  static size_t ShardOf(std::string_view key);
  // The shard to write, copied first when a snapshot shares it.
  Shard* MutableShard(size_t index);

  // Guards the shard pointers and the maps against Query threads; the apply
  // thread reads them without it.
  mutable std::shared_mutex mutex_;
  std::array<std::shared_ptr<Shard>, kShards> shards_;
  uint64_t size_ = 0;  // number of keys in all shards
  raft::AppliedState applied_;
};

}  // namespace driftwood::statemachine

#endif  // DRIFTWOOD_STATEMACHINE_MEMORY_KV_STATE_MACHINE_H_
