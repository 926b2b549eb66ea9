// Driftwood: a seeded simulation of a Raft cluster running the server's own
// runtime, for finding safety bugs.
//
// Each node is a raft::NodeRuntime (NodeRuntime::Open is Server::Start
// without its threads) over a fault-injecting log store, a hash-chain state
// machine whose durable state survives crashes, and a raft::Transport that
// feeds a simulated network. One seeded scheduler pumps each node's three step
// functions (docs/design.md "The runtime") instead of threads: the raft loop
// (a turn drains its inbox, then performs each Ready as separately scheduled
// driver steps: take, send now, persist, send after persist, hand over,
// advance), the apply loop (one task at a time: applies, proposal and read
// tracking, deadlines, snapshots) and the snapshot writer (one job at a time).
// A node crashes between any two steps, loses its memory, its queues and the
// unsynced part of its disk (a persistent state machine keeps a prefix of its
// unsynced applies), and restarts through the server's start path. The
// network drops, duplicates, reorders and delays Raft messages, carries
// forwarded proposals (server messages, at most once and in order per link)
// and snapshot streams, and is cut by partitions (an isolated leader,
// asymmetric and flapping cuts). Clients propose and read at the leader and
// at followers, with deadlines on the simulated clock; snapshots and
// compaction happen often, so lagging followers need InstallSnapshot.
//
// After every step an all-seeing checker verifies Election Safety, Log
// Matching, Leader Completeness, State Machine Safety, votes, the driver
// contract, and that no node's commit index passes what is really committed.
// It checks the runtime's outcomes: each proposal completes exactly once with
// an outcome of the outcome table (raft/server/server.h); an acknowledged one
// is committed and applied on every replica with the response it was
// acknowledged with; an Aborted or never-appended one is never applied; a
// read reflects every write acknowledged before it began; forwarded proposals
// obey the same rules; every request a live node holds completes by its
// deadline. After the last fault heals, a write and a read must complete and
// the cluster settle within bounded election timeouts. The same seed replays
// the same run, byte for byte. Node folders live under /dev/shm and are
// removed when the run ends.
#ifndef DRIFTWOOD_TESTS_SIM_SIMULATION_H_
#define DRIFTWOOD_TESTS_SIM_SIMULATION_H_

#include <array>
#include <cstdint>
#include <string>

namespace driftwood::sim {

struct SimOptions {
  uint64_t seed = 1;
  // 3 or 5; 0 picks from the seed.
  int nodes = 0;
  // Events in the fault phase (the liveness phase follows).
  uint64_t events = 3000;
  // Print every event and Ready.
  bool verbose = false;
  // Record every event and Ready in SimResult::trace.
  bool trace = false;
};

// How often each interesting thing happened; a run of seeds must see each.
struct Coverage {
  uint64_t elections = 0;
  uint64_t leader_changes = 0;
  // Crashes by the driver step that was due (raft::ReadyProcessor::Step):
  // 0 take (idle), 1 send now, 2 persist, 3 send after persist, 4 hand over,
  // 5 advance.
  std::array<uint64_t, 6> crashes_at_step{};
  // Crashes while the apply loop had tasks queued, and while the snapshot
  // writer had jobs queued (lost with the node's memory).
  uint64_t crashes_with_apply_tasks = 0;
  uint64_t crashes_with_snapshot_jobs = 0;
  uint64_t truncations = 0;
  // Snapshot streams started (Transport::SendSnapshot).
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_installed = 0;
  // Snapshot streams the receiver accepted (files verified and published).
  uint64_t snapshot_streams = 0;
  uint64_t read_rounds = 0;
  // ReadIndex requests the raft loop sent again, unanswered (lost, or held
  // by a leader that stepped down).
  uint64_t read_index_retries = 0;
  uint64_t transfers = 0;
  uint64_t prevote_rejections = 0;
  uint64_t partitions = 0;
  uint64_t writes_acknowledged = 0;
  // Proposals acknowledged by a follower that forwarded them to the leader.
  uint64_t forwarded_acknowledged = 0;
  // Proposal outcomes: Aborted (another entry committed at the index),
  // DeadlineExceeded (unknown), Unavailable (never appended).
  uint64_t proposals_aborted = 0;
  uint64_t proposals_deadline_exceeded = 0;
  uint64_t proposals_unavailable = 0;
  // Injected disk write failures, each stopping its node.
  uint64_t write_failures = 0;
  // Disk stalls: a node's writes hang while it keeps ticking and receiving.
  uint64_t disk_stalls = 0;
  // A crash rolled a persistent state machine's applied point back to its
  // durable point.
  uint64_t state_machine_rollbacks = 0;
  // A restart restored the state machine from a snapshot (recovery).
  uint64_t restores_on_restart = 0;
  // Snapshots made because the leader asked (Ready::snapshot_wanted).
  uint64_t snapshots_on_demand = 0;
  // Seeds whose configuration has learners, or is joint.
  uint64_t configurations_with_learners = 0;
  uint64_t joint_configurations = 0;

  void Add(const Coverage& other);
  std::string ToString() const;
  // The names of the counters that are still zero.
  std::string Missing() const;
};

struct SimResult {
  bool ok = true;
  // What broke and where, when !ok.
  std::string failure;
  Coverage coverage;
  uint64_t events = 0;
  int nodes = 0;
  // With SimOptions::trace: every event and Ready, one per line.
  std::string trace;
};

// Runs one seeded simulation to completion.
SimResult RunSimulation(const SimOptions& options);

}  // namespace driftwood::sim

#endif  // DRIFTWOOD_TESTS_SIM_SIMULATION_H_
