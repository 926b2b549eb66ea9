#include "tests/sim/simulation.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <system_error>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "raft/core/describe.h"
#include "raft/core/node.h"
#include "raft/server/node_runtime.h"
#include "raft/server/ready_processor.h"
#include "raft/server/runtime_types.h"
#include "raft/state_machine.h"
#include "raft/storage/file_util.h"
#include "raft/transport.h"
#include "spdlog/spdlog.h"
#include "tests/support/contract_check.h"
#include "tests/support/fault_injecting_log_store.h"

namespace driftwood::sim {

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
  crashes_with_apply_tasks += o.crashes_with_apply_tasks;
  crashes_with_snapshot_jobs += o.crashes_with_snapshot_jobs;
  truncations += o.truncations;
  snapshots_sent += o.snapshots_sent;
  snapshots_installed += o.snapshots_installed;
  snapshot_streams += o.snapshot_streams;
  read_rounds += o.read_rounds;
  read_index_retries += o.read_index_retries;
  transfers += o.transfers;
  prevote_rejections += o.prevote_rejections;
  partitions += o.partitions;
  writes_acknowledged += o.writes_acknowledged;
  forwarded_acknowledged += o.forwarded_acknowledged;
  proposals_aborted += o.proposals_aborted;
  proposals_deadline_exceeded += o.proposals_deadline_exceeded;
  proposals_unavailable += o.proposals_unavailable;
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
      {"crashes_with_apply_tasks", c.crashes_with_apply_tasks},
      {"crashes_with_snapshot_jobs", c.crashes_with_snapshot_jobs},
      {"truncations", c.truncations},
      {"snapshots_sent", c.snapshots_sent},
      {"snapshots_installed", c.snapshots_installed},
      {"snapshot_streams", c.snapshot_streams},
      {"read_rounds", c.read_rounds},
      {"read_index_retries", c.read_index_retries},
      {"transfers", c.transfers},
      {"prevote_rejections", c.prevote_rejections},
      {"partitions", c.partitions},
      {"writes_acknowledged", c.writes_acknowledged},
      {"forwarded_acknowledged", c.forwarded_acknowledged},
      {"proposals_aborted", c.proposals_aborted},
      {"proposals_deadline_exceeded", c.proposals_deadline_exceeded},
      {"proposals_unavailable", c.proposals_unavailable},
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

// The simulated clock: one tick is 10 ms of absl::Time, so that deadlines
// are drawn in ticks and compared by the apply loop.
absl::Time TimeAt(uint64_t ticks) {
  return absl::FromUnixMillis(static_cast<int64_t>(ticks) * 10);
}

// A state machine's applied point with the prefix hash of everything it
// applied through it (ChainHash over every committed entry, so that it equals
// the log mirror's prefix hash at that index).
struct AppliedPoint {
  LogIndex index;
  Term term;
  Configuration configuration;
  uint64_t hash = 0;
};

// What a node's state machine keeps on its disk; it survives crashes. A
// persistent state machine (docs/design.md "State machines") is durable
// through `durable`; its applies since the last Sync reach the disk in order,
// and a crash keeps a prefix of them (`unsynced`). An in-memory one keeps
// nothing.
struct StateMachineDisk {
  bool persistent = false;
  AppliedPoint durable;
  std::vector<AppliedPoint> unsynced;
};

// Sees every apply and restore, for the checker.
class ApplyObserver {
 public:
  virtual ~ApplyObserver() = default;
  virtual void OnApply(NodeId node, const Entry& entry, uint64_t hash,
                       const std::string& response) = 0;
  virtual void OnRestore(NodeId node, const SnapshotMeta& meta,
                         uint64_t hash) = 0;
};

constexpr char kStateFile[] = "state";
constexpr char kPadFile[] = "pad";

// The response to a normal entry: "index:term:hash:command", so that a client
// can tell which entry its acknowledgement is for.
std::string ResponseFor(const Entry& entry, uint64_t hash) {
  return absl::StrCat(entry.index.value(), ":", entry.term.value(), ":", hash,
                      ":", entry.data.str());
}

class SimSnapshot : public raft::StateMachineSnapshot {
 public:
  explicit SimSnapshot(AppliedPoint point) : point_(std::move(point)) {}
  SnapshotMeta meta() const override {
    return {point_.index, point_.term, point_.configuration};
  }
  // Two small files: the state, and 0 to 6 filler bytes (an empty file now
  // and then, which a stream may skip).
  absl::Status WriteTo(const std::filesystem::path& dir) override {
    if (absl::Status status = raft::WriteFileDurably(
            dir / kStateFile,
            absl::StrCat(point_.index.value(), ":", point_.term.value(), ":",
                         point_.hash));
        !status.ok()) {
      return status;
    }
    return raft::WriteFileDurably(dir / kPadFile,
                                  std::string(point_.index.value() % 7, 'p'));
  }

 private:
  AppliedPoint point_;
};

// The simulation's state machine: its state is the hash chain of what it
// applied. Query returns "applied index:hash".
class SimStateMachine : public raft::StateMachine {
 public:
  SimStateMachine(NodeId id, StateMachineDisk& disk, ApplyObserver& observer)
      : id_(id), disk_(disk), observer_(observer) {}

  absl::StatusOr<raft::AppliedState> Open() override {
    if (disk_.persistent) point_ = disk_.durable;
    return applied();
  }

  absl::StatusOr<std::vector<std::string>> Apply(
      const raft::ApplyBatch& batch) override {
    if (absl::Status status =
            raft::CheckBatchFollows(applied(), batch, "SimStateMachine");
        !status.ok()) {
      return status;
    }
    std::vector<std::string> responses;
    responses.reserve(batch.entries.size());
    for (const Entry& entry : batch.entries) {
      point_.hash = ChainHash(point_.hash, entry);
      point_.index = entry.index;
      point_.term = entry.term;
      responses.push_back(entry.type == raft::EntryType::kNormal
                              ? ResponseFor(entry, point_.hash)
                              : std::string());
      observer_.OnApply(id_, entry, point_.hash, responses.back());
    }
    point_.configuration = batch.configuration;
    if (disk_.persistent && !batch.entries.empty()) {
      disk_.unsynced.push_back(point_);
    }
    return responses;
  }

  raft::AppliedState applied() const override {
    return {point_.index, point_.term, point_.configuration};
  }
  uint64_t hash() const { return point_.hash; }

  absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>> Capture()
      override {
    if (point_.index == LogIndex(0)) {
      return absl::FailedPreconditionError("nothing applied yet");
    }
    return std::make_unique<SimSnapshot>(point_);
  }

  absl::Status Restore(const SnapshotMeta& meta,
                       const std::filesystem::path& dir) override {
    absl::StatusOr<std::string> state =
        raft::ReadFileToString(dir / kStateFile);
    if (!state.ok()) return state.status();
    std::vector<absl::string_view> parts = absl::StrSplit(*state, ':');
    uint64_t index = 0;
    uint64_t term = 0;
    uint64_t hash = 0;
    if (parts.size() != 3 || !absl::SimpleAtoi(parts[0], &index) ||
        !absl::SimpleAtoi(parts[1], &term) ||
        !absl::SimpleAtoi(parts[2], &hash) || index != meta.index.value() ||
        term != meta.term.value()) {
      return absl::DataLossError(absl::StrCat("snapshot state '", *state,
                                              "' does not match ",
                                              raft::Describe(meta)));
    }
    point_ = {meta.index, meta.term, meta.configuration, hash};
    if (disk_.persistent) {
      // A restore is durable when it returns (raft/state_machine.h).
      disk_.durable = point_;
      disk_.unsynced.clear();
    }
    observer_.OnRestore(id_, meta, hash);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Query(std::string_view) const override {
    return absl::StrCat(point_.index.value(), ":", point_.hash);
  }

  bool persistent() const override { return disk_.persistent; }

  absl::StatusOr<LogIndex> Sync() override {
    if (!disk_.persistent) return raft::StateMachine::Sync();
    disk_.durable = point_;
    disk_.unsynced.clear();
    return point_.index;
  }

 private:
  NodeId id_;
  StateMachineDisk& disk_;
  ApplyObserver& observer_;
  AppliedPoint point_;
};

// A snapshot stream in flight: the files of a published snapshot and the
// InstallSnapshot that follows them (raft/transport.h).
struct Stream {
  raft::OutgoingSnapshot snapshot;
  std::function<void(absl::Status)> done;
  // The sender's incarnation: a stream of a crashed sender dies with it, and
  // its `done` (which refers to the dead runtime) is destroyed uncalled.
  uint64_t sender_generation = 0;
  // Lost on the way: the sender learns it failed.
  bool lost = false;
};

struct InFlight {
  NodeId from;
  NodeId to;
  std::variant<Message, raft::ServerMessage, std::shared_ptr<Stream>> item;
  uint64_t deliver_at = 0;
};

// A client proposal waiting for its outcome.
struct PendingProposal {
  NodeId node;
  uint64_t generation = 0;
  std::string value;
  bool after_heal = false;
  // The node forwarded it to the leader (RaftLoop: a ServerMessage).
  bool forwarded = false;
  absl::Time deadline;
};

struct PendingRead {
  NodeId node;
  uint64_t generation = 0;
  // The highest index of any write acknowledged before the read began.
  LogIndex floor;
  bool after_heal = false;
  absl::Time deadline;
};

class Simulation : public ApplyObserver {
 public:
  explicit Simulation(const SimOptions& options);
  ~Simulation() override;
  SimResult Run();

  void OnApply(NodeId node, const Entry& entry, uint64_t hash,
               const std::string& response) override;
  void OnRestore(NodeId node, const SnapshotMeta& meta, uint64_t hash) override;

 private:
  struct SimNode;

  // The node's raft::Transport: feeds the simulated network.
  class SimTransport : public raft::Transport {
   public:
    SimTransport(Simulation& sim, SimNode& node) : sim_(sim), node_(node) {}
    absl::Status Start(NodeId, raft::TransportHandler*) override {
      return absl::OkStatus();
    }
    void Stop() override {}
    void Send(std::vector<Message>& messages) override {
      for (const Message& message : messages) sim_.Send(node_, message);
    }
    void SendServerMessage(raft::ServerMessage message) override {
      sim_.SendServerMessage(node_, std::move(message));
    }
    void SendSnapshot(raft::OutgoingSnapshot snapshot,
                      std::function<void(absl::Status)> done) override {
      sim_.SendSnapshot(node_, std::move(snapshot), std::move(done));
    }

   private:
    Simulation& sim_;
    SimNode& node_;
  };

  struct SimNode {
    NodeId id;
    raft::ServerOptions options;
    std::unique_ptr<testing::FaultInjectingLogStore> store;
    StateMachineDisk disk;
    std::unique_ptr<SimTransport> transport;
    // The incarnation: bumped by every crash.
    uint64_t generation = 0;
    // The runtime's queues (raft::RuntimeQueues), pumped by the scheduler.
    raft::RaftInput inbox;
    std::deque<raft::ApplyTask> apply_queue;
    std::deque<raft::SnapshotJob> snapshot_queue;
    // The raft loop is in a turn: it drained its inbox and performs Readies
    // until the core has none (as Server's raft thread does).
    bool in_turn = false;
    // Null while crashed. Destroyed before the state machine it uses.
    std::unique_ptr<SimStateMachine> state_machine;
    std::unique_ptr<raft::NodeRuntime> runtime;

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

    bool up() const { return runtime != nullptr; }
    const Node& node() const { return runtime->node(); }
    raft::ReadyProcessor& processor() {
      return runtime->raft_loop().processor();
    }
  };

  // --- randomness
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool Chance(uint64_t per_mille) { return Rand(1000) < per_mille; }

  // --- events
  void Step();
  bool NodeStep(SimNode& n);
  bool RaftStep(SimNode& n);
  bool TakeReady(SimNode& n);
  void Drain(SimNode& n);
  void DrainOne(SimNode& n, raft::RaftInput input);
  bool DeliverOne();
  void Deliver(InFlight& in_flight);
  void DeliverStream(InFlight& in_flight);
  void TickAll();
  void ClientPropose();
  void ClientRead();
  void Crash(SimNode& n);
  void Restart(SimNode& n);
  void ChangePartition();
  void HealAll();
  void MaybeTransfer();

  // --- the transport
  void Send(SimNode& from, const Message& message);
  void SendServerMessage(SimNode& from, raft::ServerMessage message);
  void SendSnapshot(SimNode& from, raft::OutgoingSnapshot snapshot,
                    std::function<void(absl::Status)> done);
  void Persist(SimNode& n);

  // --- client outcomes
  void ProposalDone(uint64_t id, absl::StatusOr<std::string> result);
  void ReadDone(uint64_t id, absl::StatusOr<std::string> result);
  void NeverApplied(const std::string& value, const std::string& why);
  void CheckAllCompleted();

  // --- checks
  void AfterEvent();
  bool Converged(std::string& why);
  void CheckNode(SimNode& n);
  void UpdateGroundTruth(const SimNode& writer, LogIndex index);
  void SyncMirror(SimNode& n);
  void SyncMirrorIfFlushed(SimNode& n);
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

  // The clock a node's runtime reads when it starts (its request id base,
  // raft::RequestIdBase): the simulated time plus a microsecond per event,
  // so that it advances across every crash and restart.
  class StartClock : public raft::Clock {
   public:
    explicit StartClock(const Simulation& sim) : sim_(sim) {}
    absl::Time Now() const override {
      return TimeAt(sim_.now_) +
             absl::Microseconds(static_cast<int64_t>(sim_.event_));
    }

   private:
    const Simulation& sim_;
  };

  SimOptions options_;
  std::mt19937_64 rng_;
  StartClock clock_{*this};
  // The run's data folders (one per node), removed when the run ends.
  std::filesystem::path data_root_;
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
  // Per index: the state hash and the response of the first apply (or
  // restore) there; every other replica must agree (State Machine Safety).
  std::map<uint64_t, uint64_t> applied_hash_;
  std::map<uint64_t, std::string> applied_response_;
  // (voter, candidate, term, pre_vote) of every vote request stepped ->
  // for each such request (duplicates and retries included), the candidate's
  // last entry, and whether it was at least as up-to-date as the voter's
  // durable log then.
  std::map<std::tuple<uint64_t, uint64_t, uint64_t, bool>,
           std::vector<std::pair<raft::EntryId, bool>>>
      vote_requests_;
  // (voter, term) -> candidate of every vote granted, across crashes.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> votes_granted_;

  // Client operations waiting for their outcome, by id (the proposal's value
  // is "v<id>"). A crash erases those of the crashed node: their callbacks
  // died with it, their outcome is unknown.
  std::map<uint64_t, PendingProposal> proposals_;
  std::map<uint64_t, PendingRead> reads_;
  LogIndex acknowledged_;  // highest index of an acknowledged write
  uint64_t next_value_ = 1;
  uint64_t next_read_id_ = 1;
  // Every client value applied so far, with its index: a value is applied at
  // one index only (exactly once).
  std::map<std::string, uint64_t> applied_values_;
  // Values whose proposal completed as known not committed (Aborted, or
  // refused as never appended), with the outcome: never applied anywhere.
  std::map<std::string, std::string> never_applied_;
  // Acknowledged writes: index -> the response the client received. Every
  // replica applies that index with that response.
  std::map<uint64_t, std::string> acknowledged_responses_;

  // Liveness after healing: a write and a read issued after the heal
  // complete (the write acknowledged, the read served).
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
  // One run at a time per seed and process (a determinism check runs a seed
  // twice, one after the other): the name depends on nothing else, so that
  // messages naming files are the same in both runs.
  data_root_ = std::filesystem::path("/dev/shm") /
               absl::StrCat("driftwood-sim-", getpid(), "-", options.seed);
  std::error_code error;
  std::filesystem::remove_all(data_root_, error);
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
  // Snapshots (in-memory state machines) and compactions (persistent ones)
  // every few dozen entries, keeping 5 behind the recovery point, so that
  // lagging followers often need InstallSnapshot.
  raft::CompactionPolicy compaction;
  compaction.trailing_entries = 5;
  compaction.snapshot_every_entries = 10 + Rand(40);
  compaction.snapshot_every_bytes = 1 << 20;
  compaction.compact_every_entries = compaction.snapshot_every_entries;
  compaction.snapshots_retained = 1 + Rand(2);
  const bool pre_vote = Rand(5) != 0;
  const bool check_quorum = Rand(5) != 0;
  // Now and then a tight apply-lag limit, so that proposals are refused
  // with ResourceExhausted.
  const uint64_t max_apply_lag = Chance(200) ? 2 + Rand(10) : 5'000;
  forced_crash_at_ = 200 + Rand(options_.events / 2);
  forced_partition_at_ = 200 + Rand(options_.events / 2);
  std::vector<NodeId> members;
  for (int i = 1; i <= count; ++i) members.emplace_back(i);
  nodes_.reserve(static_cast<size_t>(count));
  for (int i = 1; i <= count; ++i) {
    SimNode& n = nodes_.emplace_back();
    n.id = NodeId(static_cast<uint64_t>(i));
    raft::ServerOptions& o = n.options;
    o.id = n.id;
    // Only the cluster id derives from `members`; the configuration comes
    // from the log store.
    o.members = members;
    o.data_dir = data_root_ / absl::StrCat("node", i);
    o.seed = options.seed;
    o.election_ticks = 10;
    o.heartbeat_ticks = 2;
    o.pre_vote = pre_vote;
    o.check_quorum = check_quorum;
    o.max_inflight_messages = 1 + Rand(8);
    o.max_message_bytes = 64 + Rand(512);
    o.max_uncommitted_bytes = 1024 + Rand(4096);
    o.snapshot_timeout_ticks = 30;
    o.max_apply_lag = max_apply_lag;
    // Both places of the hand-over are valid schedules; the runtime's
    // default (before the write) is the likelier.
    o.hand_over_before_persist = Rand(4) != 0;
    o.compaction = compaction;
    n.store = std::make_unique<testing::FaultInjectingLogStore>(configuration_);
    o.log_store = n.store.get();
    o.clock = &clock_;
    n.disk.persistent = Rand(2) == 0;
    n.transport = std::make_unique<SimTransport>(*this, n);
  }
  for (SimNode& n : nodes_) Restart(n);
}

Simulation::~Simulation() {
  // Runtimes first: they use the stores, state machines and folders.
  for (SimNode& n : nodes_) {
    n.runtime.reset();
    n.state_machine.reset();
  }
  std::error_code error;
  std::filesystem::remove_all(data_root_, error);
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
    if (n.up() && n.node().role() == Role::kLeader &&
        (leader == nullptr || n.node().term() > leader->node().term())) {
      leader = &n;
    }
  }
  return leader;
}

// ---------------------------------------------------------------------------
// Crashes and restarts.

void Simulation::Crash(SimNode& n) {
  if (!n.up()) return;
  raft::ReadyProcessor::Step step = n.processor().next_step();
  // A failed write stops the node where the write was due.
  if (step == raft::ReadyProcessor::Step::kFailed) {
    step = raft::ReadyProcessor::Step::kPersist;
  }
  coverage_.crashes_at_step[static_cast<size_t>(step)]++;
  Log(absl::StrCat("crash node ", n.id.value(), " before driver step ",
                   raft::ReadyStepName(step), " (", n.inbox.messages.size(),
                   " inbox messages, ", n.apply_queue.size(), " apply tasks, ",
                   n.snapshot_queue.size(), " snapshot jobs queued)"));
  if (!n.apply_queue.empty()) coverage_.crashes_with_apply_tasks++;
  if (!n.snapshot_queue.empty()) coverage_.crashes_with_snapshot_jobs++;
  const LogIndex applied = n.state_machine->applied().index;
  // Everything in memory is lost: the runtime, its queues and the callbacks
  // of the requests it was to complete (their outcome is unknown).
  n.runtime.reset();
  n.state_machine.reset();
  n.inbox = raft::RaftInput();
  n.apply_queue.clear();
  n.snapshot_queue.clear();
  n.in_turn = false;
  ++n.generation;
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
  if (n.disk.persistent) {
    // The state machine's unsynced applies: a prefix reached the disk.
    const uint64_t applies_kept = Rand(n.disk.unsynced.size() + 1);
    if (applies_kept > 0) n.disk.durable = n.disk.unsynced[applies_kept - 1];
    if (n.disk.durable.index < applied) coverage_.state_machine_rollbacks++;
    n.disk.unsynced.clear();
  }
  for (auto it = proposals_.begin(); it != proposals_.end();) {
    it = it->second.node == n.id ? proposals_.erase(it) : std::next(it);
  }
  for (auto it = reads_.begin(); it != reads_.end();) {
    it = it->second.node == n.id ? reads_.erase(it) : std::next(it);
  }
  n.restart_at = event_ + 20 + Rand(150);
}

void Simulation::Restart(SimNode& n) {
  // The server's start path (NodeRuntime::Open is Server::Start without its
  // threads): recovery (FORMAT.md "Recovery") decides where the state machine
  // resumes, from its durable point or a snapshot.
  n.state_machine = std::make_unique<SimStateMachine>(n.id, n.disk, *this);
  SimNode* node = &n;
  absl::StatusOr<std::unique_ptr<raft::NodeRuntime>> runtime =
      raft::NodeRuntime::Open(
          n.options, *n.state_machine, *n.transport,
          raft::RuntimeQueues{
              .apply =
                  [node](raft::ApplyTask task) {
                    node->apply_queue.push_back(std::move(task));
                  },
              .snapshot =
                  [node](raft::SnapshotJob job) {
                    node->snapshot_queue.push_back(std::move(job));
                  },
              .raft_control =
                  [node](raft::ControlEvent event) {
                    node->inbox.controls.push_back(std::move(event));
                  },
              .raft_message =
                  [node](Message message) {
                    node->inbox.messages.push_back(std::move(message));
                  },
              .applied_index =
                  [node] { return node->state_machine->applied().index; }});
  if (!runtime.ok()) {
    n.state_machine.reset();
    Fail(absl::StrCat("node ", n.id.value(),
                      " cannot restart: ", runtime.status().ToString()));
    return;
  }
  n.runtime = *std::move(runtime);
  // Recording the recovered snapshot flushed the log store's writes.
  SyncMirrorIfFlushed(n);
  if (n.runtime->replica().recovery().restore) coverage_.restores_on_restart++;
  // State Machine Safety across restarts: what it resumes from is what every
  // node applied at that index.
  const LogIndex applied = n.state_machine->applied().index;
  if (applied > LogIndex(0)) {
    auto known = applied_hash_.find(applied.value());
    if (known != applied_hash_.end() &&
        known->second != n.state_machine->hash()) {
      Fail(absl::StrCat("State Machine Safety: node ", n.id.value(),
                        " recovered a different state at ", applied.value()));
      return;
    }
  }
  n.role = n.node().role();
  n.term = n.node().term();
  if (n.term < n.term_written) {
    Fail(absl::StrCat("node ", n.id.value(), " restarted in term ",
                      n.term.value(), " after writing term ",
                      n.term_written.value(),
                      ": a term change was not durable"));
  }
  Log(absl::StrCat("start ", n.node().DebugString(), " applied ",
                   applied.value()));
}

// ---------------------------------------------------------------------------
// The transport.

void Simulation::Send(SimNode& from, const Message& message) {
  if (std::holds_alternative<raft::InstallSnapshot>(message.payload)) {
    // The raft loop hands InstallSnapshot to the snapshot writer, which
    // streams the files first (docs/design.md "The runtime").
    Fail(absl::StrCat(
        "node ", from.id.value(),
        " sent InstallSnapshot without its files: ", raft::Describe(message)));
    return;
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
    if (LinkCut(message.from, message.to) && Chance(100)) {
      // TransportHandler::ReportUnreachable, queued like Server does.
      from.inbox.controls.push_back(raft::UnreachableEvent{message.to});
    }
    return;
  }
  network_.push_back(
      InFlight{message.from, message.to, message, now_ + Rand(max_delay_ + 1)});
  if (faults_enabled_ && Chance(duplicate_per_mille_)) {
    network_.push_back(network_.back());
    // Usually a quick retransmission, sometimes a copy that surfaces long
    // after the original.
    network_.back().deliver_at += Chance(100) ? Rand(30) : Rand(3);
  }
}

void Simulation::SendServerMessage(SimNode& from, raft::ServerMessage message) {
  // Server messages are delivered at most once and in order per link, as
  // the Transport contract promises (a duplicated ForwardRequest would be
  // appended twice).
  const bool dropped = (faults_enabled_ && Chance(drop_per_mille_)) ||
                       LinkCut(message.from, message.to);
  Log(absl::StrCat(dropped ? "drop" : "send", " server message ",
                   message.from.value(), "->", message.to.value(),
                   std::holds_alternative<raft::ForwardRequest>(message.payload)
                       ? " forward request"
                       : " forward response"));
  if (dropped) return;
  if (from.id != message.from) {
    Fail(absl::StrCat("node ", from.id.value(), " sent a server message from ",
                      message.from.value()));
    return;
  }
  const NodeId to = message.to;
  network_.push_back(
      InFlight{from.id, to, std::move(message), now_ + Rand(max_delay_ + 1)});
}

void Simulation::SendSnapshot(SimNode& from, raft::OutgoingSnapshot snapshot,
                              std::function<void(absl::Status)> done) {
  coverage_.snapshots_sent++;
  const NodeId to = snapshot.message.to;
  auto stream = std::make_shared<Stream>();
  stream->lost =
      (faults_enabled_ && Chance(drop_per_mille_)) || LinkCut(from.id, to);
  Log(absl::StrCat("stream snapshot ", raft::Describe(snapshot.manifest.meta),
                   " ", from.id.value(), "->", to.value(),
                   stream->lost ? " (lost)" : ""));
  stream->snapshot = std::move(snapshot);
  stream->done = std::move(done);
  stream->sender_generation = from.generation;
  network_.push_back(
      InFlight{from.id, to, std::move(stream), now_ + Rand(max_delay_ + 1)});
}

void Simulation::Persist(SimNode& n) {
  raft::ReadyProcessor& processor = n.processor();
  // Now and then the disk fails the write (full, broken): the driver must
  // stop the node rather than go on (fail-stop, docs/design.md "Storage").
  const Ready& taken = processor.ready();
  const bool writes =
      taken.hard_state || taken.snapshot || !taken.entries.empty();
  if (faults_enabled_ && writes && Chance(2)) n.store->FailNextWrite();
  if (absl::Status status = processor.Persist(); !status.ok()) {
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
  const Ready& ready = processor.ready();
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
    // The snapshot's state is one some node captured at its applied point.
    auto captured = applied_hash_.find(ready.snapshot->index.value());
    if (captured == applied_hash_.end()) {
      Fail(absl::StrCat("node ", n.id.value(), " installs snapshot ",
                        raft::Describe(*ready.snapshot),
                        " of a state no node applied"));
      return;
    }
    n.mirror.ResetTo(ready.snapshot->index, ready.snapshot->term,
                     captured->second);
    // Log Matching across snapshots: the snapshot's prefix hash must agree
    // with every log that holds its last entry.
    auto key = std::make_pair(ready.snapshot->index.value(),
                              ready.snapshot->term.value());
    auto [known, inserted] = hash_of_entry_.emplace(key, captured->second);
    if (!inserted && known->second != captured->second) {
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

// The log store flushes every unsynced write when the runtime records a
// snapshot or compacts (FaultInjectingLogStore): the mirror follows.
void Simulation::SyncMirrorIfFlushed(SimNode& n) {
  if (n.store->unsynced_writes() == 0 &&
      n.mirror.unsynced_from() != LogIndex(UINT64_MAX)) {
    SyncMirror(n);
  }
}

// ---------------------------------------------------------------------------
// The runtime's step functions, one scheduled step at a time.

// Feeds one part of a raft loop turn's input to RaftLoop::Drain. Draining a
// RaftInput in parts in its own order (ticks, each message, then the rest)
// makes the same core calls as draining it at once; the parts let the checker
// look at the core after each message.
void Simulation::DrainOne(SimNode& n, raft::RaftInput input) {
  if (absl::Status status = n.runtime->raft_loop().Drain(std::move(input));
      !status.ok()) {
    Fail(absl::StrCat("raft loop of node ", n.id.value(),
                      " failed: ", status.ToString()));
    return;
  }
  SyncMirrorIfFlushed(n);
}

void Simulation::Drain(SimNode& n) {
  raft::RaftInput input = std::move(n.inbox);
  n.inbox = raft::RaftInput();
  if (input.ticks > 0) {
    raft::RaftInput ticks;
    ticks.ticks = input.ticks;
    ticks.now = input.now;
    const uint64_t retries_before = n.runtime->counters().read_index_retries;
    DrainOne(n, std::move(ticks));
    if (n.up()) {
      coverage_.read_index_retries +=
          n.runtime->counters().read_index_retries - retries_before;
    }
  }
  for (Message& message : input.messages) {
    if (!failure_.empty() || !n.up()) return;
    Log(absl::StrCat("step node ", n.id.value(), " ", raft::Describe(message)));
    if (const auto* request =
            std::get_if<raft::RequestVote>(&message.payload)) {
      // Remember the candidate's log and whether it is at least as
      // up-to-date as the voter's durable log (paper §5.4.1), judged from the
      // checker's mirror rather than the voter's own code, to check any
      // grant the voter sends for it.
      vote_requests_[{n.id.value(), message.from.value(), message.term.value(),
                      request->pre_vote}]
          .emplace_back(
              raft::EntryId{request->last_log_term, request->last_log_index},
              MirrorUpToDate(n.mirror, request->last_log_index,
                             request->last_log_term));
    }
    if (const auto* response =
            std::get_if<raft::RequestVoteResponse>(&message.payload)) {
      if (response->pre_vote && !response->granted) {
        coverage_.prevote_rejections++;
      }
    }
    std::vector<EntryId> appended;
    if (const auto* append =
            std::get_if<raft::AppendEntries>(&message.payload)) {
      for (const Entry& entry : append->entries) {
        if (entry.term == message.term) appended.push_back(entry.id());
      }
    }
    const Term term = message.term;
    raft::RaftInput one;
    one.messages.push_back(std::move(message));
    DrainOne(n, std::move(one));
    if (!n.up() || n.node().term() != term) continue;
    for (const EntryId& id : appended) {
      if (raft::internal::NodeInternals::Log(n.node()).MaybeTermAt(id.index) ==
          id.term) {
        n.accepted_from_own_leader.insert({id.index.value(), id.term.value()});
      }
    }
  }
  if (!failure_.empty() || !n.up()) return;
  // The proposals' ids, to learn whether the raft loop forwarded them.
  std::vector<uint64_t> proposal_ids;
  for (const raft::ProposalInput& proposal : input.proposals) {
    uint64_t id = 0;
    if (absl::SimpleAtoi(absl::string_view(proposal.command.str()).substr(1),
                         &id)) {
      proposal_ids.push_back(id);
    }
  }
  const uint64_t forwarded_before = n.runtime->counters().proposals_forwarded;
  raft::RaftInput rest;
  rest.controls = std::move(input.controls);
  rest.server_messages = std::move(input.server_messages);
  rest.proposals = std::move(input.proposals);
  rest.reads = std::move(input.reads);
  if (!rest.empty()) DrainOne(n, std::move(rest));
  if (n.up() && n.runtime->counters().proposals_forwarded > forwarded_before) {
    for (uint64_t id : proposal_ids) {
      auto proposal = proposals_.find(id);
      if (proposal != proposals_.end()) proposal->second.forwarded = true;
    }
  }
}

bool Simulation::TakeReady(SimNode& n) {
  raft::ReadyProcessor& processor = n.processor();
  if (!processor.Take()) return false;
  const Ready& ready = processor.ready();
  n.leading_term = n.node().role() == Role::kLeader
                       ? std::optional<Term>(n.node().term())
                       : std::nullopt;
  if (ready.snapshot_wanted) coverage_.snapshots_on_demand++;
  if (options_.verbose || options_.trace) {
    Log(absl::StrCat("node ", n.id.value(), " ", raft::Describe(ready)));
  }
  for (const std::string& problem :
       testing::CheckBeforeWrite(*n.store, n.store->hard_state(), ready)) {
    Fail(absl::StrCat("driver contract on node ", n.id.value(), ": ", problem));
  }
  return true;
}

// One step of the raft loop: a turn drains the inbox, then performs Readies
// one contract step at a time until the core has none (group commit, as
// Server's raft thread does).
bool Simulation::RaftStep(SimNode& n) {
  raft::ReadyProcessor& processor = n.processor();
  switch (processor.next_step()) {
    case raft::ReadyProcessor::Step::kTake:
      if (n.in_turn) {
        if (TakeReady(n)) return true;
        n.in_turn = false;
      }
      if (!n.inbox.empty()) {
        Drain(n);
        n.in_turn = true;
        return true;
      }
      if (TakeReady(n)) {
        n.in_turn = true;
        return true;
      }
      return false;
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

// One step of one of the node's three pumps, chosen at random among those
// with work: the raft loop, the apply loop (one task), the snapshot writer
// (one job).
bool Simulation::NodeStep(SimNode& n) {
  if (!n.up()) return false;
  const uint64_t first = Rand(3);
  for (uint64_t i = 0; i < 3; ++i) {
    switch ((first + i) % 3) {
      case 0:
        if (RaftStep(n)) return true;
        break;
      case 1: {
        if (n.apply_queue.empty()) break;
        raft::ApplyTask task = std::move(n.apply_queue.front());
        n.apply_queue.pop_front();
        if (absl::Status status =
                n.runtime->apply_loop().Handle(std::move(task));
            !status.ok()) {
          Fail(absl::StrCat("apply loop of node ", n.id.value(),
                            " failed: ", status.ToString()));
        }
        return true;
      }
      case 2: {
        if (n.snapshot_queue.empty()) break;
        raft::SnapshotJob job = std::move(n.snapshot_queue.front());
        n.snapshot_queue.pop_front();
        // The snapshot an InstallSnapshot refers to, when the log still
        // needs it: one at or past the compaction point is never retired
        // (ReplicaState::RetireUnneeded), so the writer must be able to send
        // it. An older one may be gone: the log no longer covers the gap
        // behind it (a persistent state machine compacts without snapshots).
        std::optional<LogIndex> needed;
        if (const auto* send = std::get_if<raft::SendSnapshotJob>(&job)) {
          const LogIndex index =
              std::get<raft::InstallSnapshot>(send->message.payload)
                  .snapshot.index;
          if (index >= n.store->FirstIndex().prev()) needed = index;
        }
        const uint64_t streams = coverage_.snapshots_sent;
        n.runtime->snapshot_writer().Handle(std::move(job));
        if (needed && coverage_.snapshots_sent == streams) {
          Fail(absl::StrCat("node ", n.id.value(), " could not send snapshot ",
                            needed->value(), ", which its log still needs"));
        }
        return true;
      }
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Network, clients and faults.

bool Simulation::DeliverOne() {
  std::vector<size_t> ready_items;
  // Under faults any deliverable Raft message or stream may go next (the
  // network reorders freely). A healed network keeps each link's order, as
  // the Transport contract promises: only the oldest item of each link is
  // deliverable. Server messages keep their link's order always.
  std::set<std::pair<uint64_t, uint64_t>> links_seen;
  std::set<std::pair<uint64_t, uint64_t>> server_links_seen;
  for (size_t i = 0; i < network_.size(); ++i) {
    const InFlight& in_flight = network_[i];
    const std::pair<uint64_t, uint64_t> link{in_flight.from.value(),
                                             in_flight.to.value()};
    const bool first_of_link = links_seen.insert(link).second;
    if (!faults_enabled_ && !first_of_link) continue;
    if (std::holds_alternative<raft::ServerMessage>(in_flight.item) &&
        !server_links_seen.insert(link).second) {
      continue;
    }
    if (in_flight.deliver_at <= now_) ready_items.push_back(i);
  }
  if (ready_items.empty()) return false;
  const size_t pick = ready_items[Rand(ready_items.size())];
  InFlight in_flight = std::move(network_[pick]);
  network_.erase(network_.begin() + static_cast<std::ptrdiff_t>(pick));
  Deliver(in_flight);
  return true;
}

void Simulation::Deliver(InFlight& in_flight) {
  if (std::holds_alternative<std::shared_ptr<Stream>>(in_flight.item)) {
    DeliverStream(in_flight);
    return;
  }
  SimNode& to = Get(in_flight.to);
  if (!to.up()) return;
  if (auto* message = std::get_if<Message>(&in_flight.item)) {
    // TransportHandler::HandleMessages: queued for the raft loop.
    to.inbox.messages.push_back(std::move(*message));
    return;
  }
  Log(absl::StrCat("deliver server message ", in_flight.from.value(), "->",
                   in_flight.to.value()));
  to.inbox.server_messages.push_back(
      std::move(std::get<raft::ServerMessage>(in_flight.item)));
}

// A snapshot stream ends: the receiver's runtime gets the files and then the
// InstallSnapshot (NodeRuntime::ReceiveSnapshot, as Server's
// TransportHandler), and the sender learns the outcome through `done`,
// exactly once, unless the sender's incarnation died meanwhile.
void Simulation::DeliverStream(InFlight& in_flight) {
  std::shared_ptr<Stream> stream =
      std::move(std::get<std::shared_ptr<Stream>>(in_flight.item));
  SimNode& from = Get(in_flight.from);
  SimNode& to = Get(in_flight.to);
  const raft::OutgoingSnapshot& outgoing = stream->snapshot;
  if (!from.up() || from.generation != stream->sender_generation) {
    Log(absl::StrCat("stream of snapshot ",
                     outgoing.manifest.meta.index.value(), " from node ",
                     from.id.value(), " died with its sender"));
    return;
  }
  auto finish = [&](absl::Status status) {
    Log(absl::StrCat("stream of snapshot ",
                     outgoing.manifest.meta.index.value(), " ", from.id.value(),
                     "->", to.id.value(), ": ", status.ToString()));
    if (status.ok()) coverage_.snapshot_streams++;
    std::function<void(absl::Status)> done = std::move(stream->done);
    stream->done = nullptr;
    done(std::move(status));
  };
  if (stream->lost || !to.up() || LinkCut(from.id, to.id)) {
    finish(absl::UnavailableError("the stream was lost"));
    return;
  }
  absl::StatusOr<std::unique_ptr<raft::SnapshotSink>> sink =
      to.runtime->ReceiveSnapshot(outgoing.message, outgoing.manifest);
  if (!sink.ok()) {
    finish(sink.status());
    return;
  }
  for (const raft::SnapshotFile& file : outgoing.manifest.files) {
    // The sender pinned the snapshot: its files stay until `done`.
    absl::StatusOr<std::string> bytes =
        raft::ReadFileToString(outgoing.dir / file.name);
    if (!bytes.ok()) {
      Fail(absl::StrCat(
          "node ", from.id.value(), " streams snapshot ",
          outgoing.manifest.meta.index.value(),
          " whose pinned file is gone: ", bytes.status().ToString()));
      finish(bytes.status());
      return;
    }
    // In two chunks, to exercise the sink's appends.
    const size_t half = bytes->size() / 2;
    const std::string_view view(*bytes);
    for (std::string_view chunk : {view.substr(0, half), view.substr(half)}) {
      if (chunk.empty()) continue;
      if (absl::Status status = (*sink)->Write(file.name, chunk);
          !status.ok()) {
        finish(status);
        return;
      }
    }
  }
  finish((*sink)->Finish());
}

void Simulation::TickAll() {
  ++now_;
  for (SimNode& n : nodes_) {
    if (!n.up()) continue;
    // Server's timer: a tick for the raft loop, and the deadlines for the
    // apply loop while it has requests waiting.
    ++n.inbox.ticks;
    n.inbox.now = TimeAt(now_);
    if (n.runtime->apply_loop().pending() > 0) {
      n.apply_queue.push_back(raft::DeadlineTask{TimeAt(now_)});
    }
  }
}

void Simulation::ClientPropose() {
  // Usually to the leader; sometimes to any node, which forwards it
  // (docs/design.md "The runtime": forwarding) or refuses it.
  SimNode* target = Leader();
  if (target == nullptr || Chance(150)) target = &nodes_[Rand(nodes_.size())];
  if (!target->up()) return;
  const uint64_t batch = Chance(200) ? 1 + Rand(4) : 1;
  const absl::Time deadline =
      TimeAt(now_ + (faults_enabled_ ? 20 + Rand(100) : 150));
  for (uint64_t i = 0; i < batch; ++i) {
    const uint64_t id = next_value_++;
    const std::string value = absl::StrCat("v", id);
    Log(absl::StrCat("propose ", value, " at node ", target->id.value()));
    proposals_[id] = PendingProposal{target->id,
                                     target->generation,
                                     value,
                                     !faults_enabled_,
                                     /*forwarded=*/false,
                                     deadline};
    target->inbox.proposals.push_back(raft::ProposalInput{
        value, raft::PendingRequest{
                   deadline, [this, id](absl::StatusOr<std::string> result) {
                     ProposalDone(id, std::move(result));
                   }}});
  }
}

void Simulation::ClientRead() {
  SimNode* target = Leader();
  if (target == nullptr || Chance(400)) target = &nodes_[Rand(nodes_.size())];
  if (!target->up()) return;
  const uint64_t id = next_read_id_++;
  const absl::Time deadline =
      TimeAt(now_ + (faults_enabled_ ? 20 + Rand(100) : 150));
  Log(absl::StrCat("read ", id, " at node ", target->id.value()));
  reads_[id] = PendingRead{target->id, target->generation, acknowledged_,
                           !faults_enabled_, deadline};
  target->inbox.reads.push_back(raft::ReadInput{
      "q", raft::PendingRequest{deadline,
                                [this, id](absl::StatusOr<std::string> result) {
                                  ReadDone(id, std::move(result));
                                }}});
}

// A proposal completes exactly once, with an outcome of the outcome table
// (docs/design.md "The runtime"): OK with the response of its own committed
// entry; Aborted, Unavailable, FailedPrecondition or ResourceExhausted only
// when it is never applied; DeadlineExceeded when the outcome is unknown.
void Simulation::ProposalDone(uint64_t id, absl::StatusOr<std::string> result) {
  auto pending = proposals_.find(id);
  if (pending == proposals_.end()) {
    Fail(absl::StrCat("proposal v", id,
                      " completed twice, or after its node crashed (",
                      result.status().ToString(), ")"));
    return;
  }
  const PendingProposal proposal = std::move(pending->second);
  proposals_.erase(pending);
  const std::string& value = proposal.value;
  Log(absl::StrCat(
      "proposal ", value, " at node ", proposal.node.value(),
      proposal.forwarded ? " (forwarded)" : "", ": ",
      result.ok() ? absl::StrCat("OK ", *result) : result.status().ToString()));
  if (result.ok()) {
    std::vector<absl::string_view> parts = absl::StrSplit(*result, ':');
    uint64_t index = 0;
    uint64_t term = 0;
    if (parts.size() != 4 || !absl::SimpleAtoi(parts[0], &index) ||
        !absl::SimpleAtoi(parts[1], &term) || parts[3] != value) {
      Fail(absl::StrCat("proposal ", value,
                        " was acknowledged with the response '", *result,
                        "' of another entry"));
      return;
    }
    auto committed = committed_log_.find(index);
    if (index > committed_.value() || (committed != committed_log_.end() &&
                                       committed->second.first != Term(term))) {
      Fail(absl::StrCat("proposal ", value, " was acknowledged at index ",
                        index, " term ", term, ", which is not committed"));
      return;
    }
    auto applied = applied_values_.find(value);
    if (applied == applied_values_.end() || applied->second != index) {
      Fail(absl::StrCat("proposal ", value, " was acknowledged at index ",
                        index, " but not applied there"));
      return;
    }
    if (applied_response_[index] != *result) {
      Fail(absl::StrCat("proposal ", value, " was acknowledged with '", *result,
                        "' but index ", index, " was applied with '",
                        applied_response_[index], "'"));
      return;
    }
    acknowledged_responses_[index] = *result;
    acknowledged_ = std::max(acknowledged_, LogIndex(index));
    coverage_.writes_acknowledged++;
    if (proposal.forwarded) coverage_.forwarded_acknowledged++;
    if (proposal.after_heal) write_after_heal_done_ = true;
    return;
  }
  const absl::Status& status = result.status();
  switch (status.code()) {
    case absl::StatusCode::kAborted:
      coverage_.proposals_aborted++;
      NeverApplied(value, status.ToString());
      return;
    case absl::StatusCode::kUnavailable:
      coverage_.proposals_unavailable++;
      NeverApplied(value, status.ToString());
      return;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
      NeverApplied(value, status.ToString());
      return;
    case absl::StatusCode::kDeadlineExceeded:
      coverage_.proposals_deadline_exceeded++;
      return;
    default:
      Fail(absl::StrCat("proposal ", value,
                        " completed with an outcome the outcome table does "
                        "not list: ",
                        status.ToString()));
  }
}

// The proposal of `value` is known not committed: it must never be applied.
void Simulation::NeverApplied(const std::string& value,
                              const std::string& why) {
  auto applied = applied_values_.find(value);
  if (applied != applied_values_.end()) {
    Fail(absl::StrCat("proposal ", value, " completed with ", why,
                      " but was applied at index ", applied->second));
    return;
  }
  never_applied_[value] = why;
}

// Thesis §6.4: a read observes every write acknowledged before it began.
void Simulation::ReadDone(uint64_t id, absl::StatusOr<std::string> result) {
  auto pending = reads_.find(id);
  if (pending == reads_.end()) {
    Fail(absl::StrCat("read ", id,
                      " completed twice, or after its node crashed (",
                      result.status().ToString(), ")"));
    return;
  }
  const PendingRead read = pending->second;
  reads_.erase(pending);
  if (!result.ok()) {
    switch (result.status().code()) {
      case absl::StatusCode::kUnavailable:
      case absl::StatusCode::kFailedPrecondition:
      case absl::StatusCode::kResourceExhausted:
      case absl::StatusCode::kDeadlineExceeded:
        return;
      default:
        Fail(absl::StrCat("read ", id, " failed with an unexpected status: ",
                          result.status().ToString()));
        return;
    }
  }
  std::vector<absl::string_view> parts = absl::StrSplit(*result, ':');
  uint64_t index = 0;
  uint64_t hash = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &index) ||
      !absl::SimpleAtoi(parts[1], &hash)) {
    Fail(absl::StrCat("read ", id, " returned '", *result, "'"));
    return;
  }
  if (LogIndex(index) < read.floor) {
    Fail(absl::StrCat("linearizability: read ", id, " on node ",
                      read.node.value(), " saw applied index ", index,
                      " but write ", read.floor.value(),
                      " was acknowledged before it began"));
    return;
  }
  auto known = applied_hash_.find(index);
  if (index > 0 && (known == applied_hash_.end() || known->second != hash)) {
    Fail(absl::StrCat("read ", id, " on node ", read.node.value(),
                      " saw a state at index ", index,
                      " that no node applied"));
    return;
  }
  coverage_.read_rounds++;
  if (read.after_heal) read_after_heal_done_ = true;
}

void Simulation::OnApply(NodeId node, const Entry& entry, uint64_t hash,
                         const std::string& response) {
  // Paper §5.4.3 State Machine Safety: every node applies the same entry at
  // each index.
  auto [known, inserted] = applied_hash_.emplace(entry.index.value(), hash);
  if (!inserted && known->second != hash) {
    Fail(absl::StrCat("State Machine Safety: node ", node.value(), " applied ",
                      raft::Describe(entry),
                      " where another node applied a different entry"));
    return;
  }
  auto [first_response, first] =
      applied_response_.emplace(entry.index.value(), response);
  if (!first && first_response->second != response) {
    Fail(absl::StrCat("node ", node.value(), " applied index ",
                      entry.index.value(), " with response '", response,
                      "' where another node's was '", first_response->second,
                      "'"));
    return;
  }
  auto acknowledged = acknowledged_responses_.find(entry.index.value());
  if (acknowledged != acknowledged_responses_.end() &&
      acknowledged->second != response) {
    Fail(absl::StrCat("node ", node.value(), " applied acknowledged index ",
                      entry.index.value(), " with response '", response,
                      "', not '", acknowledged->second, "'"));
    return;
  }
  if (entry.type != raft::EntryType::kNormal) return;
  const std::string& value = entry.data.str();
  auto [seen, new_value] = applied_values_.emplace(value, entry.index.value());
  if (!new_value && seen->second != entry.index.value()) {
    Fail(absl::StrCat("exactly once: value ", value, " applied at ",
                      seen->second, " and at ", entry.index.value()));
    return;
  }
  auto never = never_applied_.find(value);
  if (never != never_applied_.end()) {
    Fail(absl::StrCat("proposal ", value, " completed with ", never->second,
                      " but node ", node.value(), " applied it at index ",
                      entry.index.value()));
  }
}

void Simulation::OnRestore(NodeId node, const SnapshotMeta& meta,
                           uint64_t hash) {
  auto [known, inserted] = applied_hash_.emplace(meta.index.value(), hash);
  if (!inserted && known->second != hash) {
    Fail(absl::StrCat("State Machine Safety: node ", node.value(),
                      " restored a different state at ", meta.index.value()));
  }
}

// Every request a live node holds completes by its deadline: the server
// fails it with DeadlineExceeded at the latest.
void Simulation::CheckAllCompleted() {
  for (SimNode& n : nodes_) {
    // Let each live node finish what it has queued (no new input arrives).
    for (int i = 0; i < 100'000 && failure_.empty() && n.up(); ++i) {
      if (!NodeStep(n)) break;
    }
    if (!n.up() || !failure_.empty()) continue;
    n.apply_queue.push_back(raft::DeadlineTask{TimeAt(now_)});
    while (!n.apply_queue.empty() && failure_.empty() && n.up()) {
      raft::ApplyTask task = std::move(n.apply_queue.front());
      n.apply_queue.pop_front();
      if (absl::Status status = n.runtime->apply_loop().Handle(std::move(task));
          !status.ok()) {
        Fail(absl::StrCat("apply loop of node ", n.id.value(),
                          " failed: ", status.ToString()));
      }
    }
  }
  for (const auto& [id, proposal] : proposals_) {
    if (!failure_.empty()) return;
    if (proposal.deadline <= TimeAt(now_)) {
      Fail(absl::StrCat("proposal ", proposal.value, " at node ",
                        proposal.node.value(),
                        " never completed although its deadline passed"));
    }
  }
  for (const auto& [id, read] : reads_) {
    if (!failure_.empty()) return;
    if (read.deadline <= TimeAt(now_)) {
      Fail(absl::StrCat("read ", id, " at node ", read.node.value(),
                        " never completed although its deadline passed"));
    }
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
  Log(absl::StrCat("transfer leadership ", leader->id.value(), " -> ",
                   to.value()));
  leader->inbox.controls.push_back(raft::TransferEvent{to, nullptr});
}

// ---------------------------------------------------------------------------
// Checks.

void Simulation::CheckNode(SimNode& n) {
  if (!n.up()) return;
  const Node& node = n.runtime->node();
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
    if (!n.up() && event_ >= n.restart_at) Restart(n);
  }
  // Time advances slowly against message handling (one tick per ~40 events)
  // so that a round trip fits well inside an election timeout.
  auto driver_step = [this] {
    const size_t start = Rand(nodes_.size());
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (NodeStep(nodes_[(start + i) % nodes_.size()])) return true;
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
        if (!n.up() || !n.processor().busy()) continue;
        if (victim == nullptr || (n.processor().next_step() ==
                                      raft::ReadyProcessor::Step::kPersist &&
                                  (n.processor().ready().hard_state ||
                                   !n.processor().ready().entries.empty()))) {
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
  const Node& lead = leader->node();
  const raft::NodeStatus status = lead.Status();
  const LogIndex last = status.last_index;
  if (status.lead_transferee != raft::kNoNode) {
    why = absl::StrCat("transfer to ", status.lead_transferee.value(),
                       " still pending");
    return false;
  }
  for (SimNode& n : nodes_) {
    if (!n.up()) {
      why = absl::StrCat("node ", n.id.value(), " is down");
      return false;
    }
    const Node& node = n.node();
    const LogIndex applied = n.state_machine->applied().index;
    if (node.leader_id() != leader->id || node.term() != lead.term() ||
        node.commit_index() != last || applied != last ||
        applied < acknowledged_) {
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
      if (!n.up()) Restart(n);
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
        if (n.id != leader->id) {
          leader->inbox.controls.push_back(raft::UnreachableEvent{n.id});
        }
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
      const Term term = leader->node().term();
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
        // One acknowledged write shows the leader commits; the clients then
        // stop, so that the clock (which advances when the cluster is idle)
        // reaches the end of the phase quickly.
        clients_enabled_ = !write_after_heal_done_;
        Step();
        SimNode* now_leader = Leader();
        if (now_leader == nullptr || now_leader->id != leader_id ||
            now_leader->node().term() != term) {
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
  // Every request a live node still holds completes by its deadline.
  if (failure_.empty()) CheckAllCompleted();
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
  // With --verbose the runtime's own log joins the trace on the terminal.
  spdlog::set_level(options.verbose ? spdlog::level::debug
                                    : spdlog::level::off);
  Simulation simulation(options);
  return simulation.Run();
}

}  // namespace driftwood::sim
