// Driftwood: a replica's durable state beyond its log (docs/design.md "State
// machines, snapshots, compaction and recovery"): the state machine and the
// snapshot store, kept consistent with the LogStore through restart, snapshot
// creation, compaction and follower snapshot installation.
//
// Ownership and threads: ReplicaState owns neither the state machine nor the
// log store. The runtime calls Apply, Capture, Install, RecoveryPoint and the
// recovery from the apply thread; WriteSnapshot, RetireUnneeded and the pins
// from the snapshot writer; BeginReceive and FinishReceive from a transport
// thread; CompactLogBehind from the raft thread, which owns the log store's
// write side. The snapshot store is guarded by an internal mutex, so those
// calls may overlap; everything touching the state machine must stay on one
// thread. Tests may call everything from one thread.
//
// Crash points (CrashPoint hook, for tests) are named in the order each
// operation passes them; FORMAT.md "Recovery" lists them with what recovery
// does after a crash at each.
#ifndef DRIFTWOOD_RAFT_SERVER_REPLICA_STATE_H_
#define DRIFTWOOD_RAFT_SERVER_REPLICA_STATE_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/types.h"
#include "raft/server/recovery.h"
#include "raft/state_machine.h"
#include "raft/storage/log_store.h"
#include "raft/storage/snapshot_store.h"

namespace driftwood::raft {

// When to snapshot and how far to compact. Defaults are for production;
// tests shrink them.
struct CompactionPolicy {
  // K: entries kept in the log behind the recovery point, so a follower a
  // little behind catches up from the log instead of a snapshot.
  uint64_t trailing_entries = 10'000;
  // N: an in-memory state machine is snapshotted once this many entries were
  // applied since its last snapshot...
  uint64_t snapshot_every_entries = 100'000;
  // M: ...or once this many payload bytes were.
  uint64_t snapshot_every_bytes = uint64_t{256} << 20;
  // A persistent state machine is synced and the log compacted behind its
  // durable applied point once this many entries were applied since the last
  // compaction. It is snapshotted only on demand (a follower needs one).
  uint64_t compact_every_entries = 100'000;
  // Published snapshots kept besides those the log still needs (see
  // CompactLog); older ones are retired.
  uint64_t snapshots_retained = 2;
};

struct ReplicaStateOptions {
  // The snapshot store's folder.
  std::filesystem::path snapshot_dir;
  CompactionPolicy policy;
  CrashPoint crash_point;  // tests only
};

class ReplicaState {
 public:
  // Opens the state machine and the snapshot store and carries out
  // PlanRecovery against `log`: retires discarded snapshots, records the
  // newest verified snapshot in the log store, restores the state machine
  // from a snapshot when the plan says so. DataLoss, with the plan's reason,
  // when the durable state is inconsistent; the node must not start then.
  static absl::StatusOr<std::unique_ptr<ReplicaState>> Recover(
      StateMachine& state_machine, LogStore& log, ReplicaStateOptions options);

  // What recovery found: Config.applied for Node::Create is applied(), and
  // the plan (its notes are worth logging).
  const RecoveryPlan& recovery() const { return recovery_; }
  LogIndex applied() const { return state_machine_.applied().index; }
  StateMachine& state_machine() { return state_machine_; }
  SnapshotStore& snapshots() { return *snapshots_; }

  // Applies committed entries. REQUIRES: they start at applied() + 1.
  absl::StatusOr<std::vector<std::string>> Apply(
      std::span<const Entry> entries, const Configuration& configuration);

  // Whether the policy wants an in-memory state machine snapshotted now.
  bool SnapshotDue() const;
  // Whether the policy wants a persistent state machine's log compacted now.
  bool CompactionDue() const;

  // Snapshot creation, step 1 (apply thread): a point-in-time capture.
  absl::StatusOr<std::unique_ptr<StateMachineSnapshot>> Capture();
  // Step 2 (background): writes the capture into the snapshot store and
  // publishes it durably. Crash points: "create:written",
  // "publish:before-rename", "publish:after-rename".
  absl::StatusOr<SnapshotManifest> WriteSnapshot(
      StateMachineSnapshot& captured);
  // Step 3 (raft thread): records the published snapshot in the log store so
  // a leader can send it, then compacts. Crash point: "create:recorded".
  absl::Status RecordSnapshot(LogStore& log, const SnapshotMeta& meta);
  // Steps 1-3 in sequence.
  absl::StatusOr<SnapshotMeta> CreateSnapshot(LogStore& log);

  // Compacts the log to the recovery point minus K trailing entries, never
  // past it: the durable applied index of a persistent state machine (after a
  // Sync), otherwise the newest published snapshot. Then retires snapshots
  // the log no longer needs: those older than the compaction point, beyond
  // the newest `snapshots_retained`. Crash points: "compact:synced" and
  // "compact:compacted". RecoveryPoint, CompactLogBehind and RetireUnneeded
  // in sequence.
  absl::Status CompactLog(LogStore& log);
  // The recovery point (apply thread): a persistent state machine is synced
  // first (crash point "compact:synced").
  absl::StatusOr<LogIndex> RecoveryPoint();
  // Compacts `log` to recovery_point minus K, never past its last index;
  // returns the compaction point (log.FirstIndex() - 1 afterwards). Crash
  // point "compact:compacted" when it compacted. REQUIRES: recovery_point
  // came from RecoveryPoint() or is a published snapshot this replica
  // captured itself.
  absl::StatusOr<LogIndex> CompactLogBehind(LogStore& log,
                                            LogIndex recovery_point);
  // Retires published snapshots the log no longer needs once it is compacted
  // through `compacted`: those older than it, beyond the newest
  // `snapshots_retained`. Pinned snapshots are kept until unpinned.
  absl::Status RetireUnneeded(LogIndex compacted);

  // A published snapshot held for sending: Retire of it waits until Unpin.
  struct PinnedSnapshot {
    SnapshotManifest manifest;
    std::filesystem::path dir;
  };
  // Pins the published snapshot at `index` after checking its manifest;
  // NotFound when none is published there.
  absl::StatusOr<PinnedSnapshot> Pin(LogIndex index);
  // Releases one Pin of `index`; a retirement that waited for it runs now.
  absl::Status Unpin(LogIndex index);

  // Follower installation (docs/design.md "Follower snapshot installation").
  // Step 1: a folder to receive the leader's snapshot files into.
  absl::StatusOr<PendingSnapshot> BeginReceive(const SnapshotMeta& meta);
  // Step 2: verifies the received files against the sender's manifest
  // (names, sizes, CRC32C) while publishing them durably; DataLoss, with the
  // received files removed, when they differ. Only after this returns OK may
  // the core be stepped with the InstallSnapshot message. Crash points:
  // "install:received" (on entry), "publish:before-rename",
  // "publish:after-rename".
  absl::Status FinishReceive(PendingSnapshot pending,
                             const SnapshotManifest& sent);
  // Drops a receive that will not finish.
  void AbandonReceive(PendingSnapshot pending);
  // Step 4, after the Ready carrying the snapshot was persisted (step 3:
  // LogStore::Persist dropped the covered log): verifies the published
  // snapshot and restores the state machine from it atomically; applied()
  // becomes meta.index. Crash points: "install:persisted" (on entry),
  // "install:restored".
  absl::Status Install(const SnapshotMeta& meta);

 private:
  ReplicaState(StateMachine& state_machine,
               std::unique_ptr<SnapshotStore> snapshots,
               ReplicaStateOptions options)
      : state_machine_(state_machine),
        snapshots_(std::move(snapshots)),
        options_(std::move(options)) {}
  void Crash(std::string_view point) const;
  // REQUIRES: store_mu_ is held.
  absl::Status RetireUnneededLocked(LogIndex compacted);

  StateMachine& state_machine_;
  // Guards the snapshot store's writes and the pins (see "Ownership and
  // threads" above).
  std::mutex store_mu_;
  std::unique_ptr<SnapshotStore> snapshots_;
  std::map<LogIndex, uint64_t> pins_;
  // The newest compaction point RetireUnneeded was told about, for the
  // retirements a pin deferred.
  LogIndex compacted_;
  ReplicaStateOptions options_;
  RecoveryPlan recovery_;
  uint64_t entries_since_snapshot_ = 0;
  uint64_t bytes_since_snapshot_ = 0;
  uint64_t entries_since_compaction_ = 0;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_REPLICA_STATE_H_
