// Driftwood: the scenarios of the ReplicaState crash tests, shared by the test
// (which restarts and checks) and replica_scenario (the child process that
// runs a scenario and dies at a crash point). The child is a fresh process
// (fork + exec): a fork alone would inherit RocksDB's background thread pool
// without its threads, and a flush in the child would wait forever.
#ifndef DRIFTWOOD_TESTS_RAFT_SERVER_REPLICA_SCENARIO_H_
#define DRIFTWOOD_TESTS_RAFT_SERVER_REPLICA_SCENARIO_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/server/replica_state.h"
#include "raft/storage/rocksdb_log_store.h"

namespace driftwood::raft::scenario {

// A child that reached its crash point exits with this code.
inline constexpr int kCrashedExit = 77;

Configuration Voters();

// The one true history: entry i has term 1 up to index 60, then term 2. Odd
// entries increment "counter", even ones put "value-i" at "key-(i % 13)".
Entry Truth(uint64_t index);
std::vector<Entry> TruthRange(uint64_t first, uint64_t last);
uint64_t TruthHash(uint64_t through);

// The state machines under test: the test hash chain and the two reference
// key-value state machines, each in memory and persistent.
enum class Kind { kHashMemory, kHashPersistent, kKvMemory, kKvRocksDb };
inline constexpr Kind kKinds[] = {Kind::kHashMemory, Kind::kHashPersistent,
                                  Kind::kKvMemory, Kind::kKvRocksDb};
const char* KindName(Kind kind);
bool IsPersistent(Kind kind);
std::unique_ptr<StateMachine> MakeStateMachine(Kind kind,
                                               const std::filesystem::path& dir,
                                               CrashPoint crash_point);

// Empty when `state_machine` holds exactly the history's state through
// `index`; otherwise what differs.
std::string DiffFromTruth(Kind kind, const StateMachine& state_machine,
                          uint64_t index);

struct Node {
  std::filesystem::path root;
  Kind kind = Kind::kHashMemory;
  // Small thresholds: snapshots every 20 entries, K = 5.
  CompactionPolicy policy = {.trailing_entries = 5,
                             .snapshot_every_entries = 20,
                             .compact_every_entries = 20,
                             .snapshots_retained = 2};

  absl::StatusOr<std::unique_ptr<RocksDbLogStore>> OpenLog(bool create) const;
  std::unique_ptr<StateMachine> MakeStateMachine(
      CrashPoint crash_point = nullptr) const;
  ReplicaStateOptions Options(CrashPoint crash_point) const;
};

// A hook that ends the process with kCrashedExit the `occurrence`-th time it
// passes `target`.
CrashPoint CrashAt(std::string target, int occurrence);

// Appends and applies the history from `first` through `last` in batches of
// ten, as a node that is told each batch is committed; snapshots and
// compacts when the policy says so, and a persistent state machine snapshots
// every 30 entries as if a follower asked.
absl::Status WriteAndApply(LogStore& log, ReplicaState& replica, uint64_t first,
                           uint64_t last);

// Creation and compaction: a fresh node writes and applies 1..120.
absl::Status CreationScenario(const Node& node, CrashPoint crash_point);

// The leader's snapshot at 150, as a state machine of `kind` (working in
// `work`) writes it into `out`, with the manifest the leader would send.
absl::StatusOr<SnapshotManifest> LeaderSnapshot(
    Kind kind, const std::filesystem::path& work,
    const std::filesystem::path& out);
// The manifest of the files in `dir` for snapshot `meta`.
absl::StatusOr<SnapshotManifest> ManifestOf(const std::filesystem::path& dir,
                                            const SnapshotMeta& meta);
// The metadata of the leader's snapshot at 150.
SnapshotMeta LeaderSnapshotMeta();

// Installation: a follower holding 1..30 receives the leader's snapshot at
// 150 (files in `sent_dir`), installs it in the order of docs/design.md
// "Follower snapshot installation", then goes on with 151..170.
absl::Status InstallScenario(const Node& node,
                             const std::filesystem::path& sent_dir,
                             CrashPoint crash_point);

}  // namespace driftwood::raft::scenario

#endif  // DRIFTWOOD_TESTS_RAFT_SERVER_REPLICA_SCENARIO_H_
