#include "raft/server/replica_state.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {

absl::StatusOr<std::unique_ptr<ReplicaState>> ReplicaState::Recover(
    StateMachine& state_machine, LogStore& log, ReplicaStateOptions options) {
  absl::StatusOr<std::unique_ptr<SnapshotStore>> snapshots =
      SnapshotStore::Open(options.snapshot_dir, options.crash_point);
  if (!snapshots.ok()) return snapshots.status();
  absl::StatusOr<AppliedState> applied = state_machine.Open();
  if (!applied.ok()) return applied.status();
  absl::StatusOr<RecoveryPlan> plan =
      PlanRecovery(log, *applied, SnapshotCandidates(**snapshots));
  if (!plan.ok()) return plan.status();

  std::unique_ptr<ReplicaState> replica(new ReplicaState(
      state_machine, *std::move(snapshots), std::move(options)));
  replica->recovery_ = *std::move(plan);
  const RecoveryPlan& recovery = replica->recovery_;
  for (LogIndex index : recovery.discard) {
    if (absl::Status status = replica->snapshots_->Retire(index);
        !status.ok() && !absl::IsNotFound(status)) {
      return status;
    }
  }
  if (recovery.restore) {
    const SnapshotMeta& meta = *recovery.restore;
    if (absl::Status status = state_machine.Restore(
            meta, replica->snapshots_->DirFor(meta.index, meta.term));
        !status.ok()) {
      return status;
    }
  }
  if (state_machine.applied().index != recovery.applied) {
    return absl::InternalError(
        absl::StrCat("recovery: the state machine reports applied index ",
                     state_machine.applied().index.value(),
                     " after recovery planned ", recovery.applied.value()));
  }
  if (recovery.record) {
    if (absl::Status status = log.SetSnapshot(*recovery.record); !status.ok()) {
      return status;
    }
  }
  return replica;
}

void ReplicaState::Crash(std::string_view point) const {
  if (options_.crash_point) options_.crash_point(point);
}

absl::StatusOr<std::vector<std::string>> ReplicaState::Apply(
    std::span<const Entry> entries, const Configuration& configuration) {
  if (entries.empty()) return std::vector<std::string>();
  // Exactly once, in order (raft/state_machine.h contract).
  RAFT_CHECK(entries.front().index == applied().next(),
             absl::StrCat("apply of index ", entries.front().index.value(),
                          " after applied index ", applied().value()));
  absl::StatusOr<std::vector<std::string>> responses =
      state_machine_.Apply(ApplyBatch{entries, configuration});
  if (!responses.ok()) return responses.status();
  for (const Entry& entry : entries) bytes_since_snapshot_ += entry.data.size();
  entries_since_snapshot_ += entries.size();
  entries_since_compaction_ += entries.size();
  return responses;
}

bool ReplicaState::SnapshotDue() const {
  if (state_machine_.persistent() || applied() == LogIndex(0)) return false;
  return entries_since_snapshot_ >= options_.policy.snapshot_every_entries ||
         bytes_since_snapshot_ >= options_.policy.snapshot_every_bytes;
}

bool ReplicaState::CompactionDue() const {
  return state_machine_.persistent() &&
         entries_since_compaction_ >= options_.policy.compact_every_entries;
}

absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> ReplicaState::Capture() {
  absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> captured =
      state_machine_.Capture();
  if (captured.ok()) {
    entries_since_snapshot_ = 0;
    bytes_since_snapshot_ = 0;
  }
  return captured;
}

absl::StatusOr<SnapshotManifest> ReplicaState::WriteSnapshot(
    StateMachineSnapshot& captured) {
  const SnapshotMeta meta = captured.meta();
  std::lock_guard<std::mutex> lock(store_mu_);
  absl::StatusOr<PendingSnapshot> pending = snapshots_->Begin(meta);
  if (absl::IsAlreadyExists(pending.status())) {
    // The same applied point was published before: the same state, when it
    // still verifies and describes the same entry.
    absl::StatusOr<SnapshotManifest> held = snapshots_->Verify(meta.index);
    if (held.ok() && held->meta == meta) return held;
    if (pins_.contains(meta.index)) {
      return absl::FailedPreconditionError(
          absl::StrCat("a different snapshot at index ", meta.index.value(),
                       " is being sent; try again later"));
    }
    if (absl::Status status = snapshots_->Retire(meta.index); !status.ok()) {
      return status;
    }
    pending = snapshots_->Begin(meta);
  }
  if (!pending.ok()) return pending.status();
  if (absl::Status status = captured.WriteTo(pending->dir()); !status.ok()) {
    snapshots_->Abandon(*std::move(pending));
    return status;
  }
  Crash("create:written");
  return snapshots_->Publish(*std::move(pending));
}

absl::Status ReplicaState::RecordSnapshot(LogStore& log,
                                          const SnapshotMeta& meta) {
  absl::StatusOr<SnapshotMeta> recorded = log.Snapshot();
  if (!recorded.ok() || recorded->index < meta.index) {
    if (absl::Status status = log.SetSnapshot(meta); !status.ok()) {
      return status;
    }
  }
  Crash("create:recorded");
  return CompactLog(log);
}

absl::StatusOr<SnapshotMeta> ReplicaState::CreateSnapshot(LogStore& log) {
  absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> captured = Capture();
  if (!captured.ok()) return captured.status();
  absl::StatusOr<SnapshotManifest> manifest = WriteSnapshot(**captured);
  if (!manifest.ok()) return manifest.status();
  if (absl::Status status = RecordSnapshot(log, manifest->meta); !status.ok()) {
    return status;
  }
  return manifest->meta;
}

absl::Status ReplicaState::CompactLog(LogStore& log) {
  absl::StatusOr<LogIndex> recovery_point = RecoveryPoint();
  if (!recovery_point.ok()) return recovery_point.status();
  absl::StatusOr<LogIndex> compacted = CompactLogBehind(log, *recovery_point);
  if (!compacted.ok()) return compacted.status();
  return RetireUnneeded(*compacted);
}

absl::StatusOr<LogIndex> ReplicaState::RecoveryPoint() {
  // The recovery point: what a restart resumes from without the log's
  // compacted prefix (docs/design.md "Snapshots and compaction"). Compacting
  // past it would make the next restart a DataLoss (docs/design.md
  // pitfall 14, braft #462).
  if (state_machine_.persistent()) {
    absl::StatusOr<LogIndex> durable = state_machine_.Sync();
    if (!durable.ok()) return durable.status();
    entries_since_compaction_ = 0;
    Crash("compact:synced");
    return *durable;
  }
  // Only a snapshot the state machine has applied past belongs to this log's
  // accepted history: a received one whose installation has not reached the
  // log yet would be discarded by a restart (FORMAT.md "Recovery" step 2),
  // so compacting behind it would lose entries.
  std::lock_guard<std::mutex> lock(store_mu_);
  for (const SnapshotListing& listing : snapshots_->List()) {
    if (listing.manifest.ok() && listing.index <= applied()) {
      return listing.index;
    }
  }
  return LogIndex(0);
}

absl::StatusOr<LogIndex> ReplicaState::CompactLogBehind(
    LogStore& log, LogIndex recovery_point) {
  const uint64_t keep = options_.policy.trailing_entries;
  const LogIndex current = log.FirstIndex().prev();
  if (recovery_point.value() <= keep) return current;
  const LogIndex target = std::min(recovery_point - keep, log.LastIndex());
  if (target <= current) return current;
  if (absl::Status status = log.Compact(target); !status.ok()) return status;
  Crash("compact:compacted");
  return target;
}

absl::Status ReplicaState::RetireUnneeded(LogIndex compacted) {
  std::lock_guard<std::mutex> lock(store_mu_);
  return RetireUnneededLocked(compacted);
}

absl::Status ReplicaState::RetireUnneededLocked(LogIndex compacted) {
  compacted_ = std::max(compacted_, compacted);
  // A snapshot older than the compaction point can no longer stand in for a
  // newer one (the log does not cover the gap), so only the newest few are
  // kept. A pinned one is being sent; its retirement waits for Unpin.
  uint64_t seen = 0;
  for (const SnapshotListing& listing : snapshots_->List()) {
    if (!listing.manifest.ok()) continue;
    if (++seen <= std::max<uint64_t>(1, options_.policy.snapshots_retained)) {
      continue;
    }
    if (listing.index >= compacted_ || pins_.contains(listing.index)) continue;
    if (absl::Status status = snapshots_->Retire(listing.index); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ReplicaState::PinnedSnapshot> ReplicaState::Pin(LogIndex index) {
  std::lock_guard<std::mutex> lock(store_mu_);
  for (SnapshotListing& listing : snapshots_->List()) {
    if (listing.index != index) continue;
    if (!listing.manifest.ok()) return listing.manifest.status();
    ++pins_[index];
    return PinnedSnapshot{*std::move(listing.manifest), listing.dir};
  }
  return absl::NotFoundError(
      absl::StrCat("no snapshot is published at index ", index.value()));
}

absl::Status ReplicaState::Unpin(LogIndex index) {
  std::lock_guard<std::mutex> lock(store_mu_);
  auto pin = pins_.find(index);
  RAFT_CHECK(pin != pins_.end(),
             absl::StrCat("Unpin of unpinned snapshot ", index.value()));
  if (--pin->second > 0) return absl::OkStatus();
  pins_.erase(pin);
  return RetireUnneededLocked(compacted_);
}

absl::StatusOr<PendingSnapshot> ReplicaState::BeginReceive(
    const SnapshotMeta& meta) {
  std::lock_guard<std::mutex> lock(store_mu_);
  absl::StatusOr<SnapshotManifest> held = snapshots_->Verify(meta.index);
  if (held.ok()) {
    if (held->meta == meta) {
      return absl::AlreadyExistsError(absl::StrCat(
          "snapshot ", meta.index.value(), " is already published here"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "a different snapshot at index ", meta.index.value(),
        " is already published here (term ", held->meta.term.value(), ")"));
  }
  if (!absl::IsNotFound(held.status()) && !pins_.contains(meta.index)) {
    // A corrupt copy from an earlier attempt; nothing refers to it yet
    // unless the log recorded it, and then the new copy replaces it.
    if (absl::Status status = snapshots_->Retire(meta.index); !status.ok()) {
      return status;
    }
  }
  return snapshots_->Begin(meta);
}

absl::Status ReplicaState::FinishReceive(PendingSnapshot pending,
                                         const SnapshotManifest& sent) {
  Crash("install:received");
  std::lock_guard<std::mutex> lock(store_mu_);
  // One pass over the files both checks them against the sender's manifest
  // and checksums them for our own.
  return snapshots_->Publish(std::move(pending), &sent).status();
}

void ReplicaState::AbandonReceive(PendingSnapshot pending) {
  std::lock_guard<std::mutex> lock(store_mu_);
  snapshots_->Abandon(std::move(pending));
}

absl::Status ReplicaState::Install(const SnapshotMeta& meta) {
  Crash("install:persisted");
  std::lock_guard<std::mutex> lock(store_mu_);
  absl::StatusOr<SnapshotManifest> verified = snapshots_->Verify(meta.index);
  if (!verified.ok()) return verified.status();
  if (verified->meta != meta) {
    return absl::DataLossError(absl::StrCat(
        "install: the published snapshot at index ", meta.index.value(),
        " does not describe the snapshot the log recorded"));
  }
  if (absl::Status status = state_machine_.Restore(
          meta, snapshots_->DirFor(meta.index, meta.term));
      !status.ok()) {
    return status;
  }
  entries_since_snapshot_ = 0;
  bytes_since_snapshot_ = 0;
  entries_since_compaction_ = 0;
  Crash("install:restored");
  // The log was dropped through meta.index, so older snapshots can no longer
  // stand in for this one.
  return RetireUnneededLocked(meta.index);
}

}  // namespace driftwood::raft
