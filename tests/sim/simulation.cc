#include "tests/sim/simulation.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "raft/core/describe.h"
#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/server/recovery.h"
#include "tests/support/contract_check.h"
#include "tests/support/fault_injecting_log_store.h"

namespace driftwood::sim {

using raft::Config;
using raft::Configuration;
using raft::Entry;
using raft::EntryId;
using raft::HardState;
using raft::LogIndex;
using raft::Message;
using raft::Node;
using raft::NodeId;
using raft::Ready;
using raft::Role;
using raft::SnapshotMeta;
using raft::Term;

void Coverage::Add(const Coverage& o) {
  elections += o.elections;
  leader_changes += o.leader_changes;
  for (size_t i = 0; i < crashes_at_step.size(); ++i) {
    crashes_at_step[i] += o.crashes_at_step[i];
  }
  truncations += o.truncations;
  snapshots_sent += o.snapshots_sent;
  snapshots_installed += o.snapshots_installed;
  read_rounds += o.read_rounds;
  transfers += o.transfers;
  prevote_rejections += o.prevote_rejections;
  partitions += o.partitions;
  writes_acknowledged += o.writes_acknowledged;
  write_failures += o.write_failures;
  disk_stalls += o.disk_stalls;
  state_machine_rollbacks += o.state_machine_rollbacks;
  restores_on_restart += o.restores_on_restart;
  snapshots_on_demand += o.snapshots_on_demand;
  configurations_with_learners += o.configurations_with_learners;
  joint_configurations += o.joint_configurations;
}

namespace {

std::vector<std::pair<std::string, uint64_t>> Counters(const Coverage& c) {
  std::vector<std::pair<std::string, uint64_t>> counters = {
      {"elections", c.elections},
      {"leader_changes", c.leader_changes},
      {"truncations", c.truncations},
      {"snapshots_sent", c.snapshots_sent},
      {"snapshots_installed", c.snapshots_installed},
      {"read_rounds", c.read_rounds},
      {"transfers", c.transfers},
      {"prevote_rejections", c.prevote_rejections},
      {"partitions", c.partitions},
      {"writes_acknowledged", c.writes_acknowledged},
      {"write_failures", c.write_failures},
      {"disk_stalls", c.disk_stalls},
      {"state_machine_rollbacks", c.state_machine_rollbacks},
      {"restores_on_restart", c.restores_on_restart},
      {"snapshots_on_demand", c.snapshots_on_demand},
      {"configurations_with_learners", c.configurations_with_learners},
      {"joint_configurations", c.joint_configurations},
  };
  for (size_t i = 0; i < c.crashes_at_step.size(); ++i) {
    counters.emplace_back(absl::StrCat("crashes_at_step", i),
                          c.crashes_at_step[i]);
  }
  return counters;
}

}  // namespace

std::string Coverage::ToString() const {
  return absl::StrJoin(Counters(*this), " ", [](std::string* out, auto& kv) {
    absl::StrAppend(out, kv.first, "=", kv.second);
  });
}

std::string Coverage::Missing() const {
  std::vector<std::string> missing;
  for (const auto& [name, value] : Counters(*this)) {
    if (value == 0) missing.push_back(name);
  }
  return absl::StrJoin(missing, " ");
}

namespace {

uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

uint64_t DataHash(const std::string& data) {
  uint64_t h = 1469598103934665603ULL;
  for (char c : data) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ULL;
  }
  return h;
}

// The hash of a log prefix ending with `entry`, given the prefix before it.
// Two logs with equal prefix hashes at an index hold the same entries up to it.
uint64_t ChainHash(uint64_t previous, const Entry& entry) {
  return Mix(previous ^ Mix(entry.term.value() * 31 + entry.index.value()) ^
             DataHash(entry.data.str()) ^ static_cast<uint64_t>(entry.type));
}

// What the simulated state machine hands over in a snapshot: its state is the
// prefix hash of everything it applied.
struct SnapshotData {
  SnapshotMeta meta;
  uint64_t hash = 0;
};

// The checker's copy of one node's log store: per index its term, prefix
// hash, and whether it was written while the node's durable term equalled the
// entry's term (accepted from the leader of the entry's own term), plus the
// stored hard state. Unsynced writes are kept apart (as undo records) so that
// a power cut removes exactly what was not synced, independently of the store
// under test; only synced entries count toward commitment.
class LogMirror {
 public:
  struct Record {
    Term term;
    uint64_t hash = 0;
    bool own_term = false;
  };

  void ResetTo(LogIndex base, Term base_term, uint64_t base_hash) {
    base_ = base;
    base_term_ = base_term;
    base_hash_ = base_hash;
    records_.clear();
  }
  LogIndex base() const { return base_; }
  LogIndex last() const { return base_ + records_.size(); }
  // nullptr when `index` is not held (past the end, or before the base).
  const Record* At(LogIndex index) const {
    if (index <= base_ || index > last()) return nullptr;
    return &records_[index.value() - base_.value() - 1];
  }
  std::optional<Term> TermAt(LogIndex index) const {
    if (index == base_) return base_term_;
    const Record* record = At(index);
    if (record == nullptr) return std::nullopt;
    return record->term;
  }
  std::optional<uint64_t> HashAt(LogIndex index) const {
    if (index == base_) return base_hash_;
    const Record* record = At(index);
    if (record == nullptr) return std::nullopt;
    return record->hash;
  }
  const raft::HardState& hard_state() const { return hard_state_; }
  // Whether the record at `index` is durable (no unsynced write touched it).
  bool Synced(LogIndex index) const { return index < unsynced_from_; }
  // The first index an unsynced write touched (the maximum when none).
  LogIndex unsynced_from() const { return unsynced_from_; }

  // Starts the write of one Ready. An unsynced write remembers what it
  // overwrites (the hard state, and the records from `first_entry`, or all
  // of them when a snapshot `resets` the log) so that a power cut can undo
  // it.
  void BeginWrite(bool sync, bool resets, std::optional<LogIndex> first_entry,
                  const std::optional<raft::HardState>& hard_state) {
    if (!sync) {
      Undo undo;
      undo.hard_state = hard_state_;
      undo.reset = resets;
      undo.base = base_;
      undo.base_term = base_term_;
      undo.base_hash = base_hash_;
      undo.from =
          resets ? base_.next()
                 : std::min(first_entry.value_or(last().next()), last().next());
      undo.tail.assign(
          records_.begin() + static_cast<std::ptrdiff_t>(undo.from.value() -
                                                         base_.value() - 1),
          records_.end());
      unsynced_from_ =
          std::min(unsynced_from_, resets ? LogIndex(0) : undo.from);
      pending_.push_back(std::move(undo));
    }
    if (hard_state) hard_state_ = *hard_state;
  }
  // A synced write made every earlier write durable.
  void Sync() {
    pending_.clear();
    unsynced_from_ = LogIndex(UINT64_MAX);
  }
  // Power loss: the first `keep` unsynced writes reached the disk, the rest
  // are undone, newest first.
  void PowerCut(uint64_t keep) {
    while (pending_.size() > keep) {
      Undo& undo = pending_.back();
      if (undo.reset) {
        base_ = undo.base;
        base_term_ = undo.base_term;
        base_hash_ = undo.base_hash;
        records_.clear();
      } else {
        records_.resize(undo.from.value() - base_.value() - 1);
      }
      records_.insert(records_.end(), undo.tail.begin(), undo.tail.end());
      hard_state_ = undo.hard_state;
      pending_.pop_back();
    }
    Sync();
  }
  // Writes `entry`, replacing everything from its index on.
  void Write(const Entry& entry, bool own_term) {
    records_.resize(entry.index.value() - base_.value() - 1);
    const uint64_t previous =
        records_.empty() ? base_hash_ : records_.back().hash;
    records_.push_back({entry.term, ChainHash(previous, entry), own_term});
  }

 private:
  struct Undo {
    raft::HardState hard_state;
    bool reset = false;
    LogIndex base;
    Term base_term;
    uint64_t base_hash = 0;
    // Records from this index on were replaced by `tail`'s successors.
    LogIndex from;
    std::vector<Record> tail;
  };

  LogIndex base_;
  Term base_term_;
  uint64_t base_hash_ = 0;
  std::vector<Record> records_;
  raft::HardState hard_state_;
  std::vector<Undo> pending_;
  LogIndex unsynced_from_{UINT64_MAX};
};

// Paper §5.4.1, computed from the checker's mirror: a log ending at
// (last_term, last_index) is at least as up-to-date as the mirrored one.
bool MirrorUpToDate(const LogMirror& mirror, LogIndex last_index,
                    Term last_term) {
  const LogIndex mirror_last = mirror.last();
  const Term mirror_term = mirror.TermAt(mirror_last).value_or(Term(0));
  return last_term > mirror_term ||
         (last_term == mirror_term && last_index >= mirror_last);
}

struct InFlight {
  Message message;
  // InstallSnapshot carries the snapshot's data beside the core message.
  std::optional<SnapshotData> snapshot;
  uint64_t deliver_at = 0;
};

struct PendingWrite {
  NodeId node;
  EntryId id;
  std::string value;
  bool after_heal = false;
};

struct PendingRead {
  NodeId node;
  // The highest index of any write acknowledged before the read began.
  LogIndex floor;
  bool after_heal = false;
  // Set once leadership confirmed the read: it is served when the node has
  // applied through `index`.
  std::optional<LogIndex> index;
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& options);
  SimResult Run();

 private:
  struct SimNode {
    NodeId id;
    Config config;
    std::unique_ptr<testing::FaultInjectingLogStore> store;
    std::unique_ptr<Node> node;  // null while crashed
    // The driver: performs each Ready step by step, so a crash can fall
    // between any two steps.
    std::unique_ptr<raft::ReadyProcessor> processor;

    // Durable snapshot data (matching store->Snapshot()) and snapshot data
    // received from a leader, durable before the core is stepped.
    std::optional<SnapshotData> snapshot;
    // Older durable snapshots stay until newer ones replace them (a Ready may
    // still send one taken before the newest).
    std::map<uint64_t, SnapshotData> snapshots;
    std::map<uint64_t, SnapshotData> received;
    // The state machine: applied index, the term of that entry, and the
    // prefix hash of what it applied.
    LogIndex applied;
    Term applied_term;
    uint64_t state_hash = 0;
    // A persistent state machine (docs/design.md "State machines") keeps its
    // state across crashes up to its durable point; applies since the last
    // sync reach the disk in order, and a crash keeps a prefix of them.
    bool persistent = false;
    struct AppliedPoint {
      LogIndex index;
      Term term;
      uint64_t hash = 0;
    };
    AppliedPoint durable;
    std::vector<AppliedPoint> unsynced;
    uint64_t applied_since_sync = 0;
    LogMirror mirror;
    // Entries (index, term) this node accepted from the leader of their own
    // term; they count toward commitment once durable.
    std::set<std::pair<uint64_t, uint64_t>> accepted_from_own_leader;
    Role role = Role::kFollower;
    Term term;
    // The term this node led when it took the Ready in progress, if any: the
    // entries of that term in it are its own appends.
    std::optional<Term> leading_term;
    // The highest term this node ever wrote to its log store: a restart must
    // not come back in an older one (a term change is synced before anything
    // depends on it).
    Term term_written;
    uint64_t restart_at = 0;  // event number at which a crashed node restarts
    // A stalled disk: the write of the Ready in progress waits until then.
    uint64_t disk_stalled_until = 0;
  };

  // --- randomness
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool Chance(uint64_t per_mille) { return Rand(1000) < per_mille; }

  // --- events
  void Step();
  bool DriverStep(SimNode& n);
  bool DeliverOne();
  void TickAll();
  void ClientPropose();
  void ClientRead();
  void Crash(SimNode& n);
  void Restart(SimNode& n);
  void ChangePartition();
  void HealAll();
  void MaybeTransfer();

  // --- driver helpers
  void Send(SimNode& from, const Message& message);
  void Persist(SimNode& n);
  void Apply(SimNode& n, const Ready& ready);
  void ServeReads(SimNode& n);
  void MaybeSnapshot(SimNode& n, bool wanted);
  void TakeSnapshot(SimNode& n);

  // --- checks
  void AfterEvent();
  bool Converged(std::string& why);
  void CheckNode(SimNode& n);
  void UpdateGroundTruth(const SimNode& writer, LogIndex index);
  void SyncMirror(SimNode& n);
  void CheckVoteGrant(const Message& message,
                      const raft::RequestVoteResponse& response);
  void Fail(const std::string& what);
  void Log(const std::string& line);

  SimNode& Get(NodeId id) { return nodes_.at(id.value() - 1); }
  SimNode* Leader();
  // Whether `ids` hold a quorum of the configuration: a majority of the
  // voters and, in a joint configuration, of the outgoing voters too
  // (thesis §4.3); learners never count. Computed here, not by the core.
  bool IsQuorum(const std::set<uint64_t>& ids) const {
    auto majority = [&ids](const std::vector<NodeId>& voters) {
      size_t present = 0;
      for (NodeId voter : voters) present += ids.count(voter.value());
      return voters.empty() || present > voters.size() / 2;
    };
    return majority(configuration_.voters) &&
           majority(configuration_.voters_outgoing);
  }
  bool LinkCut(NodeId from, NodeId to) const {
    return cut_.count({from.value(), to.value()}) != 0;
  }

  SimOptions options_;
  std::mt19937_64 rng_;
  std::vector<SimNode> nodes_;
  Configuration configuration_;
  std::vector<InFlight> network_;
  std::set<std::pair<uint64_t, uint64_t>> cut_;
  uint64_t now_ = 0;  // ticks
  uint64_t event_ = 0;
  bool faults_enabled_ = true;

  // Fault parameters drawn per seed.
  uint64_t drop_per_mille_ = 0;
  uint64_t duplicate_per_mille_ = 0;
  uint64_t max_delay_ = 0;
  uint64_t snapshot_every_ = 0;
  uint64_t forced_crash_at_ = 0;
  uint64_t forced_partition_at_ = 0;
  uint64_t heal_at_ = 0;
  uint64_t flaps_left_ = 0;

  // All-seeing state.
  std::map<uint64_t, NodeId> leader_of_term_;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> hash_of_entry_;
  // What is really committed (an entry of term t durable on a quorum that
  // accepted it in term t, and everything before it): per index term and hash.
  LogIndex committed_;
  std::map<uint64_t, std::pair<Term, uint64_t>> committed_log_;
  // Each advance of committed_, with the term of the entry that established
  // it. Terms never decrease along this list (they never do along a log).
  std::vector<std::pair<Term, LogIndex>> commit_marks_;
  std::map<uint64_t, uint64_t> applied_hash_;
  // (voter, candidate, term, pre_vote) of every vote request delivered ->
  // for each such request (duplicates and retries included), the candidate's
  // last entry, and whether it was at least as up-to-date as the voter's
  // durable log then.
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, bool>,
           std::vector<std::pair<raft::EntryId, bool>>>
      vote_requests_;
  // (voter, term) -> candidate of every vote granted, across crashes.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> votes_granted_;
  std::map<std::pair<uint64_t, uint64_t>, PendingWrite> writes_;
  std::map<uint64_t, PendingRead> reads_;
  LogIndex acknowledged_;  // highest index of an acknowledged write
  uint64_t next_value_ = 1;
  uint64_t next_read_id_ = 1;

  // Every client value applied so far, with its index: a value is applied at
  // one index only (exactly once), and never when its proposal was aborted.
  std::map<std::string, uint64_t> applied_values_;
  std::set<std::string> aborted_values_;

  // Liveness after healing: a write and a read issued after the heal
  // complete (the write applied by its leader in the term it was proposed
  // in, the read served).
  bool clients_enabled_ = true;
  bool write_after_heal_done_ = false;
  bool read_after_heal_done_ = false;
  bool liveness_done() const {
    return write_after_heal_done_ && read_after_heal_done_;
  }

  Coverage coverage_;
  std::string failure_;
  std::string trace_;
};

Simulation::Simulation(const SimOptions& options)
    : options_(options), rng_(Mix(options.seed) ^ 0x5eed) {
  // Drawn even when the size is forced, so a replay with --nodes follows the
  // same random sequence as the original run.
  const int drawn = Rand(2) == 0 ? 3 : 5;
  const int size = options.nodes != 0 ? options.nodes : drawn;
  // The configuration: usually every node votes; otherwise three voters with
  // learners beside them, or a joint configuration (thesis §4.3) whose halves
  // share some voters. It reaches restarted nodes through their log stores
  // and snapshots.
  const uint64_t shape = Rand(4);
  int count = size;
  if (shape <= 1) {
    for (int i = 1; i <= size; ++i) configuration_.voters.emplace_back(i);
  } else if (shape == 2) {
    configuration_.voters = {NodeId(1), NodeId(2), NodeId(3)};
    count = size == 3 ? 4 : 5;
    for (int i = 4; i <= count; ++i) configuration_.learners.emplace_back(i);
    coverage_.configurations_with_learners++;
  } else {
    configuration_.voters = {NodeId(1), NodeId(2), NodeId(3)};
    if (size == 3) {
      configuration_.voters_outgoing = {NodeId(1), NodeId(2), NodeId(4)};
      count = 4;
    } else {
      configuration_.voters_outgoing = {NodeId(3), NodeId(4), NodeId(5)};
    }
    coverage_.joint_configurations++;
  }
  drop_per_mille_ = Rand(80);
  duplicate_per_mille_ = Rand(40);
  max_delay_ = Rand(4);
  snapshot_every_ = 10 + Rand(40);
  const bool pre_vote = Rand(5) != 0;
  const bool check_quorum = Rand(5) != 0;
  forced_crash_at_ = 200 + Rand(options_.events / 2);
  forced_partition_at_ = 200 + Rand(options_.events / 2);
  for (int i = 1; i <= count; ++i) {
    SimNode n;
    n.id = NodeId(static_cast<uint64_t>(i));
    n.config.id = n.id;
    n.config.seed = options.seed;
    n.config.election_ticks = 10;
    n.config.heartbeat_ticks = 2;
    n.config.pre_vote = pre_vote;
    n.config.check_quorum = check_quorum;
    n.config.max_inflight_messages = 1 + Rand(8);
    n.config.max_message_bytes = 64 + Rand(512);
    n.config.max_uncommitted_bytes = 1024 + Rand(4096);
    n.config.snapshot_timeout_ticks = 30;
    n.store = std::make_unique<testing::FaultInjectingLogStore>(configuration_);
    n.persistent = Rand(2) == 0;
    nodes_.push_back(std::move(n));
  }
  for (SimNode& n : nodes_) Restart(n);
}

void Simulation::Log(const std::string& line) {
  if (options_.verbose) {
    std::printf("[%llu t=%llu] %s\n", static_cast<unsigned long long>(event_),
                static_cast<unsigned long long>(now_), line.c_str());
  }
  if (options_.trace) {
    absl::StrAppend(&trace_, "[", event_, " t=", now_, "] ", line, "\n");
  }
}

void Simulation::Fail(const std::string& what) {
  if (failure_.empty()) {
    failure_ = absl::StrCat("event ", event_, " tick ", now_, ": ", what);
  }
}

Simulation::SimNode* Simulation::Leader() {
  SimNode* leader = nullptr;
  for (SimNode& n : nodes_) {
    if (n.node != nullptr && n.node->role() == Role::kLeader &&
        (leader == nullptr || n.node->term() > leader->node->term())) {
      leader = &n;
    }
  }
  return leader;
}

// ---------------------------------------------------------------------------
// Crashes and restarts.

void Simulation::Crash(SimNode& n) {
  if (n.node == nullptr) return;
  raft::ReadyProcessor::Step step = n.processor->next_step();
  // A failed write stops the node where the write was due.
  if (step == raft::ReadyProcessor::Step::kFailed) {
    step = raft::ReadyProcessor::Step::kPersist;
  }
  coverage_.crashes_at_step[static_cast<size_t>(step)]++;
  Log(absl::StrCat("crash node ", n.id.value(), " before driver step ",
                   raft::ReadyStepName(step)));
  n.processor.reset();
  n.node.reset();
  // Acceptances not yet written are lost with the node's memory.
  n.accepted_from_own_leader.clear();
  // The power cut loses unsynced (commit-only) writes, except some prefix
  // of them the disk happened to write.
  const uint64_t kept = Rand(n.store->unsynced_writes() + 1);
  n.store->PowerCut(kept);
  n.mirror.PowerCut(kept);
  if (n.store->LastIndex() != n.mirror.last() ||
      n.store->hard_state() != n.mirror.hard_state()) {
    Fail(absl::StrCat("power cut on node ", n.id.value(), ": the store holds ",
                      raft::Describe(n.store->hard_state()), " through ",
                      n.store->LastIndex().value(), ", the synced writes ",
                      raft::Describe(n.mirror.hard_state()), " through ",
                      n.mirror.last().value()));
  }
  if (n.persistent) {
    // The state machine's unsynced applies: a prefix reached the disk.
    const uint64_t applies_kept = Rand(n.unsynced.size() + 1);
    if (applies_kept > 0) n.durable = n.unsynced[applies_kept - 1];
    if (n.durable.index < n.applied) coverage_.state_machine_rollbacks++;
    n.unsynced.clear();
  }
  // Messages addressed to it are lost with its memory; the pending client
  // operations it was to answer have an unknown outcome.
  for (auto it = writes_.begin(); it != writes_.end();) {
    it = it->second.node == n.id ? writes_.erase(it) : std::next(it);
  }
  for (auto it = reads_.begin(); it != reads_.end();) {
    it = it->second.node == n.id ? reads_.erase(it) : std::next(it);
  }
  n.restart_at = event_ + 20 + Rand(150);
}

void Simulation::Restart(SimNode& n) {
  // The recovery algorithm (FORMAT.md) decides where the state machine
  // resumes: a persistent one from its durable point, an in-memory one from
  // nothing; either from a newer snapshot. Received snapshot files are on
  // disk too, installed or not.
  std::map<uint64_t, SnapshotData> on_disk = n.received;
  for (const auto& [index, data] : n.snapshots) on_disk[index] = data;
  std::vector<raft::SnapshotCandidate> candidates;
  for (auto it = on_disk.rbegin(); it != on_disk.rend(); ++it) {
    candidates.push_back({it->second.meta.index, it->second.meta.term,
                          it->second.meta, nullptr});
  }
  raft::AppliedState applied;
  if (n.persistent) {
    applied = {n.durable.index, n.durable.term, configuration_};
  }
  absl::StatusOr<raft::RecoveryPlan> plan =
      raft::PlanRecovery(*n.store, applied, candidates);
  if (!plan.ok()) {
    Fail(absl::StrCat("node ", n.id.value(),
                      " cannot recover: ", plan.status().ToString()));
    return;
  }
  for (LogIndex index : plan->discard) {
    n.snapshots.erase(index.value());
    n.received.erase(index.value());
  }
  if (plan->restore) {
    const SnapshotData& data = on_disk.at(plan->restore->index.value());
    n.applied = data.meta.index;
    n.applied_term = data.meta.term;
    n.state_hash = data.hash;
    n.durable = {n.applied, n.applied_term, n.state_hash};
    coverage_.restores_on_restart++;
  } else {
    n.applied = applied.index;
    n.applied_term = applied.term;
    n.state_hash = n.persistent ? n.durable.hash : 0;
  }
  if (n.applied != plan->applied) {
    Fail(absl::StrCat("node ", n.id.value(), " recovery planned applied ",
                      plan->applied.value(), " but resumes at ",
                      n.applied.value()));
    return;
  }
  if (plan->record) {
    absl::Status recorded = n.store->SetSnapshot(*plan->record);
    if (recorded.ok()) SyncMirror(n);
    if (absl::Status status = recorded; !status.ok()) {
      Fail(absl::StrCat("node ", n.id.value(),
                        " records snapshot: ", status.ToString()));
      return;
    }
    n.snapshot = on_disk.at(plan->record->index.value());
    n.snapshots[plan->record->index.value()] = *n.snapshot;
  }
  // State Machine Safety across restarts: what it resumes from is what every
  // node applied at that index.
  if (n.applied > LogIndex(0)) {
    auto known = applied_hash_.find(n.applied.value());
    if (known != applied_hash_.end() && known->second != n.state_hash) {
      Fail(absl::StrCat("State Machine Safety: node ", n.id.value(),
                        " recovered a different state at ", n.applied.value()));
      return;
    }
  }
  n.config.applied = n.applied;
  auto node = Node::Create(n.config, *n.store);
  if (!node.ok()) {
    Fail(absl::StrCat("node ", n.id.value(),
                      " cannot restart: ", node.status().ToString()));
    return;
  }
  n.node = *std::move(node);
  n.processor = std::make_unique<raft::ReadyProcessor>(
      *n.node, *n.store,
      raft::ReadyProcessor::Callbacks{
          .send =
              [this, &n](std::vector<Message>& messages) {
                for (const Message& message : messages) Send(n, message);
              },
          .hand_over = [this, &n](const Ready& ready) { Apply(n, ready); }});
  n.role = n.node->role();
  n.term = n.node->term();
  if (n.term < n.term_written) {
    Fail(absl::StrCat("node ", n.id.value(), " restarted in term ",
                      n.term.value(), " after writing term ",
                      n.term_written.value(),
                      ": a term change was not durable"));
  }
  Log(absl::StrCat("start ", n.node->DebugString()));
}

// ---------------------------------------------------------------------------
// The driver: one Ready in separately scheduled steps.

void Simulation::Send(SimNode& from, const Message& message) {
  if (std::holds_alternative<raft::InstallSnapshot>(message.payload)) {
    coverage_.snapshots_sent++;
  }
  if (const auto* response =
          std::get_if<raft::RequestVoteResponse>(&message.payload);
      response != nullptr && response->granted) {
    CheckVoteGrant(message, *response);
  }
  if (std::holds_alternative<raft::TimeoutNow>(message.payload)) {
    coverage_.transfers++;
  }
  const bool dropped = (faults_enabled_ && Chance(drop_per_mille_)) ||
                       LinkCut(message.from, message.to);
  if (dropped) {
    Log(absl::StrCat("drop ", raft::Describe(message)));
    if (std::holds_alternative<raft::InstallSnapshot>(message.payload)) {
      // The transport reports a failed snapshot stream to the sender.
      from.node->ReportSnapshot(message.to, false);
    } else if (LinkCut(message.from, message.to) && Chance(100)) {
      from.node->ReportUnreachable(message.to);
    }
    return;
  }
  InFlight in_flight{message, std::nullopt, now_ + Rand(max_delay_ + 1)};
  if (const auto* install =
          std::get_if<raft::InstallSnapshot>(&message.payload)) {
    auto held = from.snapshots.find(install->snapshot.index.value());
    if (held == from.snapshots.end() ||
        held->second.meta != install->snapshot) {
      Fail(absl::StrCat(
          "node ", from.id.value(),
          " sent a snapshot it does not hold: ", raft::Describe(message)));
      return;
    }
    in_flight.snapshot = held->second;
  }
  network_.push_back(std::move(in_flight));
  if (faults_enabled_ && Chance(duplicate_per_mille_)) {
    network_.push_back(network_.back());
    // Usually a quick retransmission, sometimes a copy that surfaces long
    // after the original.
    network_.back().deliver_at += Chance(100) ? Rand(30) : Rand(3);
  }
}

void Simulation::Persist(SimNode& n) {
  // Now and then the disk fails the write (full, broken): the driver must
  // stop the node rather than go on (fail-stop, docs/design.md "Storage").
  const Ready& taken = n.processor->ready();
  const bool writes =
      taken.hard_state || taken.snapshot || !taken.entries.empty();
  if (faults_enabled_ && writes && Chance(2)) n.store->FailNextWrite();
  if (absl::Status status = n.processor->Persist(); !status.ok()) {
    if (!absl::IsResourceExhausted(status)) {
      Fail(absl::StrCat("persist failed on node ", n.id.value(), ": ",
                        status.ToString()));
      return;
    }
    Log(absl::StrCat("node ", n.id.value(), " write failed (",
                     status.ToString(), "): stopping it"));
    coverage_.write_failures++;
    Crash(n);
    return;
  }
  const Ready& ready = n.processor->ready();
  if (ready.hard_state) {
    n.term_written = std::max(n.term_written, ready.hard_state->term);
  }
  if (ready.hard_state || ready.snapshot || !ready.entries.empty()) {
    n.mirror.BeginWrite(ready.must_sync, ready.snapshot.has_value(),
                        ready.entries.empty()
                            ? std::nullopt
                            : std::optional(ready.entries.front().index),
                        ready.hard_state);
  }
  if (ready.must_sync) SyncMirror(n);
  for (const std::string& problem :
       testing::CheckAfterWrite(n.id, *n.store, n.store->hard_state(), ready)) {
    Fail(absl::StrCat("driver contract on node ", n.id.value(), ": ", problem));
  }
  if (ready.snapshot) {
    auto it = n.received.find(ready.snapshot->index.value());
    if (it == n.received.end() || it->second.meta != *ready.snapshot) {
      Fail(absl::StrCat("node ", n.id.value(), " installs snapshot ",
                        raft::Describe(*ready.snapshot),
                        " whose data it never received"));
      return;
    }
    n.snapshot = it->second;
    n.snapshots[it->first] = it->second;
    n.mirror.ResetTo(ready.snapshot->index, ready.snapshot->term,
                     it->second.hash);
    // Log Matching across snapshots: the snapshot's prefix hash must agree
    // with every log that holds its last entry.
    auto key = std::make_pair(ready.snapshot->index.value(),
                              ready.snapshot->term.value());
    auto [known, inserted] = hash_of_entry_.emplace(key, it->second.hash);
    if (!inserted && known->second != it->second.hash) {
      Fail(absl::StrCat("Log Matching: snapshot ",
                        raft::Describe(*ready.snapshot), " on node ",
                        n.id.value(), " disagrees with the logs"));
    }
    coverage_.snapshots_installed++;
  }
  if (ready.entries.empty()) return;
  if (ready.entries.front().index <= n.mirror.last()) coverage_.truncations++;
  auto own_term = [&](const Entry& entry) {
    // Appended by this node as leader of the entry's term (it led that term
    // when the Ready was taken), or accepted from that leader while in that
    // term. A former leader that later receives its own term's entries from
    // a newer leader holds copies that do not count (they were not accepted
    // in the entry's term: seed 1164994).
    return n.leading_term == entry.term ||
           n.accepted_from_own_leader.count(
               {entry.index.value(), entry.term.value()}) != 0;
  };
  for (const Entry& entry : ready.entries) {
    n.mirror.Write(entry, own_term(entry));
    // An acceptance counts once, for the write that made it durable; a later
    // copy of the same entry (after a truncation) is accepted anew or not.
    n.accepted_from_own_leader.erase({entry.index.value(), entry.term.value()});
    const uint64_t hash = n.mirror.HashAt(entry.index).value();
    auto [known, inserted] = hash_of_entry_.emplace(
        std::make_pair(entry.index.value(), entry.term.value()), hash);
    if (!inserted && known->second != hash) {
      // Paper §5.3 Log Matching: same index and term, same prefix.
      Fail(absl::StrCat("Log Matching: node ", n.id.value(), " holds ",
                        raft::Describe(entry),
                        " with a prefix different from another node's"));
      return;
    }
  }
  for (const Entry& entry : ready.entries) {
    if (n.mirror.At(entry.index)->own_term && n.mirror.Synced(entry.index)) {
      UpdateGroundTruth(n, entry.index);
    }
  }
}

// Votes are checked where they leave the voter, so that a wrong grant is
// caught even when it changes no election's outcome.
void Simulation::CheckVoteGrant(const Message& message,
                                const raft::RequestVoteResponse& response) {
  // Paper §5.4.1 and thesis §9.6: a vote or pre-vote goes only to a candidate
  // whose log is at least as up-to-date as the voter's.
  // The voter decides on its log in memory, which lies between its durable
  // log when the request arrived and its durable log when the grant leaves
  // (after the write of the Ready that carries it): the candidate must be up
  // to date against one of them.
  auto request = vote_requests_.find({message.from.value(), message.to.value(),
                                      message.term.value(), response.pre_vote});
  bool up_to_date = false;
  if (request != vote_requests_.end()) {
    for (const auto& [last, then] : request->second) {
      up_to_date =
          up_to_date || then ||
          MirrorUpToDate(Get(message.from).mirror, last.index, last.term);
    }
  }
  if (!up_to_date) {
    Fail(absl::StrCat(
        response.pre_vote ? "§9.6 PreVote" : "§5.4.1 election", ": node ",
        message.from.value(), " granted node ", message.to.value(), " a ",
        response.pre_vote ? "pre-vote" : "vote", " in term ",
        message.term.value(), " although the candidate's log is behind"));
    return;
  }
  if (response.pre_vote) return;
  // Paper §5.2: at most one vote per term, even across crashes (the vote is
  // durable before the grant leaves).
  auto [vote, inserted] = votes_granted_.emplace(
      std::make_pair(message.from.value(), message.term.value()),
      message.to.value());
  if (!inserted && vote->second != message.to.value()) {
    Fail(absl::StrCat("§5.2 one vote per term: node ", message.from.value(),
                      " voted for ", vote->second, " and for ",
                      message.to.value(), " in term ", message.term.value()));
  }
}

// A synced write (or snapshot record, or compaction) made every earlier
// unsynced write of `n` durable: entries they wrote may complete a quorum.
void Simulation::SyncMirror(SimNode& n) {
  const LogIndex from = n.mirror.unsynced_from();
  n.mirror.Sync();
  for (LogIndex i = std::max(from, n.mirror.base().next());
       i <= n.mirror.last(); i = i.next()) {
    if (n.mirror.At(i)->own_term) UpdateGroundTruth(n, i);
  }
}

// An entry of term t durable on a quorum of nodes that accepted it from the
// leader of term t is committed, with everything before it (the premise of
// the Leader Completeness proof, paper §5.4.3).
void Simulation::UpdateGroundTruth(const SimNode& writer, LogIndex index) {
  if (index <= committed_) return;
  const LogMirror::Record* written = writer.mirror.At(index);
  std::set<uint64_t> holders;
  for (const SimNode& n : nodes_) {
    const LogMirror::Record* record = n.mirror.At(index);
    if (record != nullptr && record->own_term && n.mirror.Synced(index) &&
        record->term == written->term && record->hash == written->hash) {
      holders.insert(n.id.value());
    }
  }
  if (!IsQuorum(holders)) return;
  for (LogIndex i = committed_.next(); i <= index; i = i.next()) {
    std::optional<Term> term = writer.mirror.TermAt(i);
    std::optional<uint64_t> hash = writer.mirror.HashAt(i);
    if (term && hash) committed_log_[i.value()] = {*term, *hash};
  }
  committed_ = index;
  commit_marks_.emplace_back(written->term, index);
}

// Serves the confirmed reads of `n` whose read index it has applied through.
// Thesis §6.4: a read observes every write acknowledged before it began; the
// node serves it from its state machine once applied through the read index.
void Simulation::ServeReads(SimNode& n) {
  for (auto it = reads_.begin(); it != reads_.end();) {
    PendingRead& read = it->second;
    if (read.node != n.id || !read.index || *read.index > n.applied) {
      ++it;
      continue;
    }
    if (n.applied < read.floor) {
      Fail(absl::StrCat("linearizability: read ", it->first, " on node ",
                        n.id.value(), " served at applied index ",
                        n.applied.value(), " (read index ", read.index->value(),
                        ") misses acknowledged write ", read.floor.value()));
      return;
    }
    coverage_.read_rounds++;
    if (read.after_heal) read_after_heal_done_ = true;
    it = reads_.erase(it);
  }
}

void Simulation::Apply(SimNode& n, const Ready& ready) {
  if (ready.snapshot) {
    // The state machine is replaced atomically by the snapshot's state.
    if (ready.snapshot->index <= n.applied) {
      Fail(absl::StrCat("node ", n.id.value(), " restores snapshot ",
                        ready.snapshot->index.value(),
                        " at or below its applied index ", n.applied.value()));
      return;
    }
    n.applied = ready.snapshot->index;
    n.applied_term = ready.snapshot->term;
    n.state_hash = n.snapshot->hash;
    // A restore is durable when it returns (raft/state_machine.h).
    n.durable = {n.applied, n.applied_term, n.state_hash};
    n.unsynced.clear();
    auto [known, inserted] =
        applied_hash_.emplace(n.applied.value(), n.state_hash);
    if (!inserted && known->second != n.state_hash) {
      Fail(absl::StrCat("State Machine Safety: node ", n.id.value(),
                        " restored a different state at ", n.applied.value()));
      return;
    }
  }
  for (const Entry& entry : ready.committed_entries) {
    if (entry.index != n.applied.next()) {
      Fail(absl::StrCat("node ", n.id.value(), " applies ",
                        raft::Describe(entry), " after ", n.applied.value()));
      return;
    }
    n.applied = entry.index;
    n.applied_term = entry.term;
    n.state_hash = ChainHash(n.state_hash, entry);
    // Paper §5.4.3 State Machine Safety: every node applies the same entry at
    // each index.
    auto [known, inserted] =
        applied_hash_.emplace(entry.index.value(), n.state_hash);
    if (!inserted && known->second != n.state_hash) {
      Fail(absl::StrCat("State Machine Safety: node ", n.id.value(),
                        " applied ", raft::Describe(entry),
                        " where another node applied a different entry"));
      return;
    }
    if (entry.type == raft::EntryType::kNormal) {
      const std::string& value = entry.data.str();
      auto [seen, first] = applied_values_.emplace(value, entry.index.value());
      if (!first && seen->second != entry.index.value()) {
        Fail(absl::StrCat("exactly once: value ", value, " applied at ",
                          seen->second, " and at ", entry.index.value()));
        return;
      }
      if (aborted_values_.count(value) != 0) {
        Fail(absl::StrCat("an aborted proposal (", value, ") was applied at ",
                          entry.index.value(), " on node ", n.id.value()));
        return;
      }
    }
    auto write = writes_.find({n.id.value(), entry.index.value()});
    if (write != writes_.end()) {
      if (write->second.id.term == entry.term) {
        acknowledged_ = std::max(acknowledged_, entry.index);
        coverage_.writes_acknowledged++;
        if (write->second.after_heal) write_after_heal_done_ = true;
      } else {
        // Another term's entry took the index: the proposal is known not
        // to be committed (Aborted) and must never be applied anywhere.
        aborted_values_.insert(write->second.value);
      }
      writes_.erase(write);
    }
  }
  for (const raft::ReadState& read_state : ready.read_states) {
    auto read = reads_.find(read_state.request_id);
    if (read == reads_.end() || read->second.node != n.id) continue;
    read->second.index = read_state.index;
  }
  ServeReads(n);
  if (n.persistent && !ready.committed_entries.empty()) {
    n.unsynced.push_back({n.applied, n.applied_term, n.state_hash});
    n.applied_since_sync += ready.committed_entries.size();
  }
  MaybeSnapshot(n, ready.snapshot_wanted);
}

// Compaction never passes the recovery point minus K trailing entries
// (docs/design.md "Snapshots and compaction"): the newest snapshot for an
// in-memory state machine, the durable applied point for a persistent one,
// which snapshots only when the leader asks.
void Simulation::MaybeSnapshot(SimNode& n, bool wanted) {
  const uint64_t keep = 5;
  if (wanted && n.applied > LogIndex(0) &&
      (!n.snapshot || n.snapshot->meta.index < n.applied)) {
    coverage_.snapshots_on_demand++;
    TakeSnapshot(n);
  }
  if (n.persistent) {
    if (n.applied_since_sync < snapshot_every_) return;
    n.applied_since_sync = 0;
    n.durable = {n.applied, n.applied_term, n.state_hash};
    n.unsynced.clear();
    if (n.durable.index.value() <= keep) return;
    const LogIndex compact_to = n.durable.index - keep;
    if (compact_to >= n.store->FirstIndex() &&
        compact_to <= n.store->LastIndex()) {
      absl::Status compacted = n.store->Compact(compact_to);
      if (compacted.ok()) SyncMirror(n);
      if (absl::Status status = compacted; !status.ok()) {
        Fail(absl::StrCat("compaction on node ", n.id.value(), ": ",
                          status.ToString()));
      }
    }
    return;
  }
  const LogIndex last_snapshot =
      n.snapshot ? n.snapshot->meta.index : LogIndex(0);
  if (n.applied.value() < last_snapshot.value() + snapshot_every_) return;
  TakeSnapshot(n);
  if (n.applied.value() > keep) {
    const LogIndex compact_to = n.applied - keep;
    if (compact_to >= n.store->FirstIndex()) {
      absl::Status compacted = n.store->Compact(compact_to);
      if (compacted.ok()) SyncMirror(n);
      if (absl::Status status = compacted; !status.ok()) {
        Fail(absl::StrCat("compaction on node ", n.id.value(), ": ",
                          status.ToString()));
      }
    }
  }
}

void Simulation::TakeSnapshot(SimNode& n) {
  SnapshotData data{{n.applied, n.applied_term, n.node->configuration()},
                    n.state_hash};
  absl::Status recorded = n.store->SetSnapshot(data.meta);
  if (recorded.ok()) SyncMirror(n);
  if (absl::Status status = recorded; !status.ok()) {
    Fail(absl::StrCat("snapshot on node ", n.id.value(), ": ",
                      status.ToString()));
    return;
  }
  n.snapshot = data;
  n.snapshots[data.meta.index.value()] = data;
  while (n.snapshots.size() > 3) n.snapshots.erase(n.snapshots.begin());
}

bool Simulation::DriverStep(SimNode& n) {
  if (n.node == nullptr) return false;
  raft::ReadyProcessor& processor = *n.processor;
  switch (processor.next_step()) {
    case raft::ReadyProcessor::Step::kTake:
      if (!processor.Take()) return false;
      n.leading_term = n.node->role() == Role::kLeader
                           ? std::optional<Term>(n.node->term())
                           : std::nullopt;
      if (options_.verbose || options_.trace) {
        Log(absl::StrCat("node ", n.id.value(), " ",
                         raft::Describe(processor.ready())));
      }
      for (const std::string& problem : testing::CheckBeforeWrite(
               n.store->hard_state(), processor.ready())) {
        Fail(absl::StrCat("driver contract on node ", n.id.value(), ": ",
                          problem));
      }
      return true;
    case raft::ReadyProcessor::Step::kSendNow:
      processor.SendNow();
      return true;
    case raft::ReadyProcessor::Step::kPersist:
      if (event_ < n.disk_stalled_until) return false;
      Persist(n);
      return true;
    case raft::ReadyProcessor::Step::kSendAfterPersist:
      processor.SendAfterPersist();
      return true;
    case raft::ReadyProcessor::Step::kHandOver:
      processor.HandOver();
      return true;
    case raft::ReadyProcessor::Step::kAdvance:
      processor.Advance();
      return true;
    case raft::ReadyProcessor::Step::kFailed:
      return false;
  }
  return false;
}

// ---------------------------------------------------------------------------
// Network, clients and faults.

bool Simulation::DeliverOne() {
  std::vector<size_t> ready_messages;
  // Under faults any deliverable message may go next (the network reorders
  // freely). A healed network keeps each link's order, as the Transport
  // contract promises: only the oldest message of each link is deliverable.
  std::set<std::pair<uint64_t, uint64_t>> links_seen;
  for (size_t i = 0; i < network_.size(); ++i) {
    const Message& m = network_[i].message;
    if (!faults_enabled_ &&
        !links_seen.insert({m.from.value(), m.to.value()}).second) {
      continue;
    }
    if (network_[i].deliver_at <= now_) ready_messages.push_back(i);
  }
  if (ready_messages.empty()) return false;
  const size_t pick = ready_messages[Rand(ready_messages.size())];
  InFlight in_flight = std::move(network_[pick]);
  network_.erase(network_.begin() + static_cast<std::ptrdiff_t>(pick));
  SimNode& to = Get(in_flight.message.to);
  if (to.node == nullptr) return true;
  const Message& message = in_flight.message;
  Log(absl::StrCat("deliver ", raft::Describe(message)));
  if (const auto* request = std::get_if<raft::RequestVote>(&message.payload)) {
    // Remember the candidate's log and whether it is at least as up-to-date
    // as the voter's durable log (paper §5.4.1), judged from the checker's
    // mirror rather than the voter's own code, to check any grant the voter
    // sends for it.
    vote_requests_[{to.id.value(), message.from.value(), message.term.value(),
                    request->pre_vote}]
        .emplace_back(
            raft::EntryId{request->last_log_term, request->last_log_index},
            MirrorUpToDate(to.mirror, request->last_log_index,
                           request->last_log_term));
  }
  if (const auto* response =
          std::get_if<raft::RequestVoteResponse>(&message.payload)) {
    if (response->pre_vote && !response->granted)
      coverage_.prevote_rejections++;
  }
  if (in_flight.snapshot) {
    // The snapshot's data is received and made durable before the core sees
    // the message (docs/design.md "Follower snapshot installation": files to
    // a temporary folder, fsync, rename).
    to.received[in_flight.snapshot->meta.index.value()] = *in_flight.snapshot;
  }
  if (absl::Status status = to.node->Step(message); !status.ok()) {
    Fail(absl::StrCat("Step rejected ", raft::Describe(message), ": ",
                      status.ToString()));
  }
  if (const auto* append = std::get_if<raft::AppendEntries>(&message.payload);
      append != nullptr && to.node->term() == message.term) {
    for (const Entry& entry : append->entries) {
      if (entry.term == message.term &&
          raft::internal::NodeInternals::Log(*to.node).MaybeTermAt(
              entry.index) == entry.term) {
        to.accepted_from_own_leader.insert(
            {entry.index.value(), entry.term.value()});
      }
    }
  }
  if (in_flight.snapshot) {
    SimNode& from = Get(message.from);
    if (from.node != nullptr) from.node->ReportSnapshot(message.to, true);
  }
  return true;
}

void Simulation::TickAll() {
  ++now_;
  for (SimNode& n : nodes_) {
    if (n.node != nullptr) n.node->Tick();
  }
}

void Simulation::ClientPropose() {
  SimNode* target = Leader();
  if (target == nullptr || Chance(100)) target = &nodes_[Rand(nodes_.size())];
  if (target->node == nullptr) return;
  const uint64_t batch = Chance(200) ? 1 + Rand(4) : 1;
  std::vector<std::string> commands;
  for (uint64_t i = 0; i < batch; ++i) {
    commands.push_back(absl::StrCat("v", next_value_++));
  }
  auto id = target->node->ProposeBatch(std::move(commands));
  if (!id.ok()) return;
  // The batch's last entry holds the last value drawn.
  for (uint64_t i = 0; i < batch; ++i) {
    const LogIndex index = id->index - i;
    writes_[{target->id.value(), index.value()}] =
        PendingWrite{target->id, EntryId{id->term, index},
                     absl::StrCat("v", next_value_ - 1 - i), !faults_enabled_};
  }
}

void Simulation::ClientRead() {
  SimNode* target = Leader();
  if (target == nullptr || Chance(400)) target = &nodes_[Rand(nodes_.size())];
  if (target->node == nullptr) return;
  const uint64_t id = next_read_id_++;
  if (target->node->ReadIndex(id).ok()) {
    reads_[id] = PendingRead{target->id, acknowledged_, !faults_enabled_, {}};
  }
}

void Simulation::ChangePartition() {
  coverage_.partitions++;
  cut_.clear();
  const uint64_t kind = Rand(4);
  const uint64_t size = nodes_.size();
  if (kind == 0) {
    // Isolate the leader (or a random node).
    SimNode* leader = Leader();
    const uint64_t victim =
        leader != nullptr ? leader->id.value() : 1 + Rand(size);
    for (uint64_t other = 1; other <= size; ++other) {
      if (other == victim) continue;
      cut_.insert({victim, other});
      cut_.insert({other, victim});
    }
    Log(absl::StrCat("partition: isolate ", victim));
  } else if (kind == 1) {
    // A random split into two sides.
    std::vector<bool> side(size + 1);
    for (uint64_t i = 1; i <= size; ++i) side[i] = Rand(2) == 0;
    for (uint64_t a = 1; a <= size; ++a) {
      for (uint64_t b = 1; b <= size; ++b) {
        if (side[a] != side[b]) cut_.insert({a, b});
      }
    }
    Log("partition: split");
  } else if (kind == 2) {
    // Asymmetric: some directed links only.
    for (uint64_t a = 1; a <= size; ++a) {
      for (uint64_t b = 1; b <= size; ++b) {
        if (a != b && Chance(300)) cut_.insert({a, b});
      }
    }
    Log("partition: asymmetric");
  } else {
    // Flapping: one link toggles several times before healing.
    flaps_left_ = 3 + Rand(6);
    const uint64_t a = 1 + Rand(size);
    const uint64_t b = 1 + (a + Rand(size - 1)) % size;
    cut_.insert({a, b});
    cut_.insert({b, a});
    Log(absl::StrCat("partition: flapping ", a, "-", b));
  }
  heal_at_ = event_ + 50 + Rand(400);
}

void Simulation::HealAll() {
  if (!cut_.empty()) Log("heal");
  cut_.clear();
  flaps_left_ = 0;
}

void Simulation::MaybeTransfer() {
  SimNode* leader = Leader();
  if (leader == nullptr) return;
  const NodeId to(1 + Rand(nodes_.size()));
  if (leader->node->TransferLeadership(to).ok()) {
    Log(absl::StrCat("transfer leadership ", leader->id.value(), " -> ",
                     to.value()));
  }
}

// ---------------------------------------------------------------------------
// Checks.

void Simulation::CheckNode(SimNode& n) {
  if (n.node == nullptr) return;
  const Node& node = *n.node;
  const Role role = node.role();
  if (role != n.role || node.term() != n.term) {
    if (role == Role::kCandidate &&
        (n.role != Role::kCandidate || node.term() != n.term)) {
      coverage_.elections++;
    }
    if (role == Role::kLeader &&
        (n.role != Role::kLeader || node.term() != n.term)) {
      coverage_.leader_changes++;
      Log(absl::StrCat("node ", n.id.value(), " became leader of term ",
                       node.term().value()));
      // Paper §5.2 Election Safety: at most one leader per term.
      auto [leader, inserted] =
          leader_of_term_.emplace(node.term().value(), n.id);
      if (!inserted && leader->second != n.id) {
        Fail(absl::StrCat("Election Safety: nodes ", leader->second.value(),
                          " and ", n.id.value(), " both lead term ",
                          node.term().value()));
        return;
      }
      // Paper §5.4 Leader Completeness: a leader of term T holds every entry
      // committed in a term before T (a leader of an older term may still be
      // elected after a newer term committed).
      LogIndex must_hold;
      for (auto mark = commit_marks_.rbegin(); mark != commit_marks_.rend();
           ++mark) {
        if (mark->first < node.term()) {
          must_hold = mark->second;
          break;
        }
      }
      if (must_hold > LogIndex(0)) {
        auto known = committed_log_.find(must_hold.value());
        std::optional<Term> term =
            raft::internal::NodeInternals::Log(node).MaybeTermAt(must_hold);
        const raft::internal::RaftLog& log =
            raft::internal::NodeInternals::Log(node);
        const bool compacted = must_hold < log.first_index();
        if (log.last_index() < must_hold ||
            (!compacted && known != committed_log_.end() &&
             term != known->second.first)) {
          Fail(absl::StrCat("Leader Completeness: node ", n.id.value(),
                            " leads term ", node.term().value(),
                            " without committed entry ", must_hold.value()));
          return;
        }
      }
    }
    n.role = role;
    n.term = node.term();
  }
  // A node's commit index claims entries are committed: they must be, and be
  // the committed entries.
  const LogIndex commit = node.commit_index();
  if (commit > committed_) {
    Fail(absl::StrCat("node ", n.id.value(), " commit index ", commit.value(),
                      " passes the really committed index ",
                      committed_.value()));
    return;
  }
  if (commit >= raft::internal::NodeInternals::Log(node).first_index()) {
    auto known = committed_log_.find(commit.value());
    std::optional<Term> term =
        raft::internal::NodeInternals::Log(node).MaybeTermAt(commit);
    if (known != committed_log_.end() && term != known->second.first) {
      Fail(absl::StrCat("node ", n.id.value(), " commit index ", commit.value(),
                        " covers an entry that is not the committed one"));
    }
  }
}

void Simulation::AfterEvent() {
  for (SimNode& n : nodes_) {
    if (!failure_.empty()) return;
    CheckNode(n);
  }
}

// ---------------------------------------------------------------------------
// The event loop.

void Simulation::Step() {
  ++event_;
  // Scheduled faults: each seed has at least one crash-restart and one
  // partition.
  if (faults_enabled_) {
    if (event_ == forced_crash_at_) Crash(nodes_[Rand(nodes_.size())]);
    if (event_ == forced_partition_at_) ChangePartition();
    if (!cut_.empty() && event_ >= heal_at_) HealAll();
    if (flaps_left_ > 0 && Chance(30)) {
      --flaps_left_;
      auto link = *cut_.begin();
      Log("flap");
      if (flaps_left_ % 2 == 0) {
        cut_.clear();
        cut_.insert(link);
        cut_.insert({link.second, link.first});
      } else {
        cut_.erase(link);
        cut_.erase({link.second, link.first});
        cut_.insert(link);  // one direction stays cut while flapping
      }
    }
  }
  for (SimNode& n : nodes_) {
    if (n.node == nullptr && event_ >= n.restart_at) Restart(n);
  }
  // Time advances slowly against message handling (one tick per ~40 events)
  // so that a round trip fits well inside an election timeout.
  auto driver_step = [this] {
    const size_t start = Rand(nodes_.size());
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (DriverStep(nodes_[(start + i) % nodes_.size()])) return true;
    }
    return false;
  };
  const uint64_t roll = Rand(1000);
  if (roll < 460) {
    if (!driver_step() && !DeliverOne()) TickAll();
  } else if (roll < 900) {
    if (!DeliverOne() && !driver_step()) TickAll();
  } else if (roll < 925) {
    // Under faults time may outrun a slow node. A healed cluster is not
    // slow: the clock advances only once nothing else is left to do, so
    // the liveness checks judge the protocol, not an unlucky schedule.
    if (faults_enabled_ || (!driver_step() && !DeliverOne())) TickAll();
  } else if (roll < 945) {
    if (clients_enabled_) ClientPropose();
  } else if (roll < 960) {
    if (clients_enabled_) ClientRead();
  } else if (faults_enabled_) {
    if (roll < 961) {
      Crash(nodes_[Rand(nodes_.size())]);
    } else if (roll < 963 && cut_.empty()) {
      ChangePartition();
    } else if (roll < 965) {
      MaybeTransfer();
    } else if (roll < 966) {
      // A disk stall: one node's writes hang for a while (docs/design.md
      // pitfall 13); the rest of the node (ticks, messages) goes on.
      SimNode& n = nodes_[Rand(nodes_.size())];
      n.disk_stalled_until = event_ + 50 + Rand(400);
      coverage_.disk_stalls++;
      Log(absl::StrCat("disk stall on node ", n.id.value()));
    } else if (roll < 968) {
      // A crash exactly between driver steps of a node with a Ready in
      // progress, preferring the window where messages have left but the
      // write (a new term, a vote, entries) has not happened.
      SimNode* victim = nullptr;
      for (SimNode& n : nodes_) {
        if (n.node == nullptr || !n.processor->busy()) continue;
        if (victim == nullptr ||
            (n.processor->next_step() == raft::ReadyProcessor::Step::kPersist &&
             (n.processor->ready().hard_state ||
              !n.processor->ready().entries.empty()))) {
          victim = &n;
        }
      }
      if (victim != nullptr) Crash(*victim);
    }
  }
  AfterEvent();
}

// Whether the healed cluster has settled: one leader that every live node
// follows, everything in its log committed and applied everywhere (so every
// acknowledged write is applied on every replica), no transfer pending and
// every follower replicating through the leader's last index. Sets `why` to
// what is still missing.
bool Simulation::Converged(std::string& why) {
  SimNode* leader = Leader();
  if (leader == nullptr) {
    why = "no leader";
    return false;
  }
  const Node& lead = *leader->node;
  const raft::NodeStatus status = lead.Status();
  const LogIndex last = status.last_index;
  if (status.lead_transferee != raft::kNoNode) {
    why = absl::StrCat("transfer to ", status.lead_transferee.value(),
                       " still pending");
    return false;
  }
  for (SimNode& n : nodes_) {
    if (n.node == nullptr) {
      why = absl::StrCat("node ", n.id.value(), " is down");
      return false;
    }
    const Node& node = *n.node;
    if (node.leader_id() != leader->id || node.term() != lead.term() ||
        node.commit_index() != last || n.applied != last ||
        n.applied < acknowledged_) {
      why = absl::StrCat("node ", n.id.value(), ": ", node.DebugString(),
                         " (leader's last index ", last.value(), ")");
      return false;
    }
    if (&n == leader) continue;
    const std::optional<raft::PeerStatus> progress = status.Peer(n.id);
    if (!progress.has_value() || progress->match != last ||
        progress->state != raft::ProgressState::kReplicate) {
      why = absl::StrCat(
          "leader's progress of node ", n.id.value(), ": ",
          !progress.has_value()
              ? "none"
              : absl::StrCat(raft::ProgressStateName(progress->state),
                             " match=", progress->match.value()));
      return false;
    }
  }
  return true;
}

SimResult Simulation::Run() {
  while (failure_.empty() && event_ < options_.events) Step();
  // Liveness: heal everything, restart every node, stop dropping messages.
  if (failure_.empty()) {
    faults_enabled_ = false;
    max_delay_ = 0;  // a healed network: no loss, no duplicates, no delay
    // Late duplicates still in flight surface now rather than hold up their
    // link (a healed link delivers in order).
    for (InFlight& in_flight : network_) {
      in_flight.deliver_at = std::min(in_flight.deliver_at, now_);
    }
    HealAll();
    for (SimNode& n : nodes_) {
      n.disk_stalled_until = 0;  // stalled disks recover with the rest
      if (n.node == nullptr) Restart(n);
    }
    // 1. A write and a read issued after the heal complete within 10
    // election timeouts.
    uint64_t deadline = now_ + 10 * 10;
    // Each phase is bounded in ticks and, as a backstop, in events.
    uint64_t event_cap = event_ + 1'000'000;
    while (failure_.empty() && !liveness_done() && now_ <= deadline &&
           event_ < event_cap) {
      Step();
    }
    if (failure_.empty() && !liveness_done()) {
      Fail(absl::StrCat(
          "liveness: ", write_after_heal_done_ ? "no read" : "no write",
          " issued after the faults healed completed within 10 "
          "election timeouts"));
    }
    // 2. Without new client operations, the cluster settles within 5 more:
    // entries pending before the heal commit, every node reaches the same
    // commit and applied index, transfers end, no follower stays in the
    // snapshot state.
    clients_enabled_ = false;
    // The leader's transport reconnects to every follower once (as after a
    // network blip), which moves replicating followers to probe: they must
    // return to replicate without any new proposal.
    if (SimNode* leader = Leader(); leader != nullptr) {
      for (const SimNode& n : nodes_) {
        if (n.id != leader->id) leader->node->ReportUnreachable(n.id);
      }
    }
    deadline = now_ + 5 * 10;
    std::string why;
    event_cap = event_ + 1'000'000;
    while (failure_.empty() && !Converged(why) && now_ <= deadline &&
           event_ < event_cap) {
      Step();
    }
    if (failure_.empty() && !Converged(why)) {
      Fail(absl::StrCat(
          "liveness: the cluster did not settle within 5 election timeouts "
          "after the heal: ",
          why));
    }
    // 3. A leader holding a bare majority keeps its office across 8
    // CheckQuorum rounds and still commits.
    if (failure_.empty()) {
      SimNode* leader = Leader();
      const NodeId leader_id = leader->id;
      const Term term = leader->node->term();
      // Stop every node whose loss still leaves a quorum of each half.
      std::set<uint64_t> live;
      for (const SimNode& n : nodes_) live.insert(n.id.value());
      for (SimNode& n : nodes_) {
        if (n.id == leader_id) continue;
        live.erase(n.id.value());
        if (!IsQuorum(live)) {
          live.insert(n.id.value());
          continue;
        }
        Crash(n);
        n.restart_at = UINT64_MAX;
      }
      clients_enabled_ = true;
      write_after_heal_done_ = false;
      deadline = now_ + 8 * 10;
      event_cap = event_ + 1'000'000;
      while (failure_.empty() && now_ <= deadline && event_ < event_cap) {
        Step();
        SimNode* now_leader = Leader();
        if (now_leader == nullptr || now_leader->id != leader_id ||
            now_leader->node->term() != term) {
          Fail(absl::StrCat("liveness: leader ", leader_id.value(), " of term ",
                            term.value(),
                            " lost its office while holding a bare majority"));
        }
      }
      if (failure_.empty() && !write_after_heal_done_) {
        Fail("liveness: a leader holding a bare majority committed nothing");
      }
    }
  }
  SimResult result;
  result.ok = failure_.empty();
  result.failure = failure_;
  result.coverage = coverage_;
  result.events = event_;
  result.nodes = static_cast<int>(nodes_.size());
  result.trace = std::move(trace_);
  return result;
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation simulation(options);
  return simulation.Run();
}

}  // namespace driftwood::sim
