// Driftwood: a seeded simulation of a Raft cluster, for finding safety bugs.
//
// N cores run on a simulated network that drops, duplicates, reorders and
// delays messages and is cut by partitions (an isolated leader, asymmetric and
// flapping cuts). Each node's driver performs every Ready as separately
// scheduled steps with a crash point between each: send `messages`, persist,
// send `messages_after_persist`, apply and Advance. A crash loses everything
// not persisted (and, half the time, an unsynced commit-only write); messages
// already sent stay in flight. Clients propose and read throughout; nodes take
// snapshots and compact their logs, so lagging followers need InstallSnapshot.
//
// After every step an all-seeing checker verifies Election Safety, Log
// Matching, Leader Completeness, State Machine Safety, that no node's commit
// index passes what is really committed, and that every confirmed read returns
// an index at or above every write acknowledged before the read began. After
// the last fault heals, a leader must commit a new proposal within 10 election
// timeouts. The same seed replays the same run, byte for byte.
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
  uint64_t truncations = 0;
  uint64_t snapshots_sent = 0;
  uint64_t snapshots_installed = 0;
  uint64_t read_rounds = 0;
  uint64_t transfers = 0;
  uint64_t prevote_rejections = 0;
  uint64_t partitions = 0;
  uint64_t writes_acknowledged = 0;
  // Injected disk write failures, each stopping its node.
  uint64_t write_failures = 0;
  // Disk stalls: a node's writes hang while it keeps ticking and receiving.
  uint64_t disk_stalls = 0;
  // A crash rolled a persistent state machine's applied point back to its
  // durable point.
  uint64_t state_machine_rollbacks = 0;
  // A restart restored the state machine from a snapshot (PlanRecovery).
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
