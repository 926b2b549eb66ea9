// Driftwood: ReadyProcessor, the one implementation of the driver contract
// (raft/core/ready.h, docs/design.md "The driver contract").
//
// Every program that drives a Node (the server runtime, the simulation, the
// interaction and paper tests, the examples and benchmarks) performs its
// Readies through this class; no other copy of the contract exists. The
// contract's steps are exposed one by one so that a simulation can crash the
// node between any two of them:
//
//   Take             takes the next Ready (at most one is outstanding);
//   SendNow          step 1: `messages`, requests whose term is durable;
//   Persist          step 2: one atomic LogStore::Persist of the snapshot
//                    metadata, hard state and entries, synced iff must_sync;
//   SendAfterPersist step 3: `messages_after_persist`;
//   HandOver         step 4: the snapshot to restore, then the committed
//                    entries and read states, to the apply side;
//   Advance          step 5: acknowledges the Ready to the Node.
//
// Step 4 comes right after step 1, before the write, when the Ready carries
// no snapshot and the processor was built with kBeforePersist (the default):
// the core hands over only entries that were durable before the Ready was
// taken (raft/core/ready.h), and the write cannot remove them (it replaces
// stored entries only from the first one not yet durable), so the apply side
// need not wait for an fsync that concerns newer entries. A Ready with a
// snapshot keeps the order above: the state machine restores the snapshot once
// it is stored.
//
// Each step REQUIRES that the previous one was performed (next_step() says
// which is due); Process performs them all. A failed Persist leaves the
// processor failed: the driver must stop the node (fail-stop, docs/design.md
// "Storage"), because Raft's safety assumes acknowledged writes survive.
//
// Not thread-safe: the raft loop owns the Node, the LogStore's write side and
// this processor. The callbacks run on the calling thread; they must not call
// back into the Node.
#ifndef DRIFTWOOD_RAFT_SERVER_READY_PROCESSOR_H_
#define DRIFTWOOD_RAFT_SERVER_READY_PROCESSOR_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/message.h"
#include "raft/core/node.h"
#include "raft/core/ready.h"
#include "raft/storage/log_store.h"

namespace driftwood::raft {

class ReadyProcessor {
 public:
  struct Callbacks {
    // Steps 1 and 3: hands messages to the transport, in order (best effort:
    // losing a message is not an error). The callee may move from them.
    std::function<void(std::vector<Message>& messages)> send;
    // Step 4: hands the Ready to the apply side, which restores
    // `ready.snapshot` (when set) before applying `ready.committed_entries`
    // strictly in order, serves `ready.read_states` once applied through
    // their index, and produces a snapshot when `ready.snapshot_wanted`.
    // Everything handed over is durable on this node.
    std::function<void(const Ready& ready)> hand_over;
  };

  // Where step 4 falls in a Ready without a snapshot (see the file comment).
  enum class HandOverTiming {
    kBeforePersist,
    kAfterPersist,
  };

  // The step a driver performs next.
  enum class Step {
    kTake,
    kSendNow,
    kPersist,
    kSendAfterPersist,
    kHandOver,
    kAdvance,
    // Persist failed; the node must be stopped.
    kFailed,
  };

  // Counters for status reporting.
  struct Stats {
    uint64_t readies = 0;
    uint64_t writes = 0;
    uint64_t syncs = 0;
    // Wall time spent in synced writes (measured; not used by any decision,
    // so a simulation stays deterministic).
    uint64_t sync_micros = 0;
    uint64_t entries_persisted = 0;
    uint64_t entries_handed_over = 0;
  };

  // `node` and `store` must outlive the processor; `store` is the LogReader
  // the node was created over.
  ReadyProcessor(Node& node, LogStore& store, Callbacks callbacks,
                 HandOverTiming timing = HandOverTiming::kBeforePersist);

  ReadyProcessor(const ReadyProcessor&) = delete;
  ReadyProcessor& operator=(const ReadyProcessor&) = delete;

  Step next_step() const { return next_; }
  // True while a Ready is taken and not yet advanced.
  bool busy() const { return next_ != Step::kTake && next_ != Step::kFailed; }
  // The Ready in progress. REQUIRES: busy(). Messages already handed to
  // `send` are in whatever state the callee left them (it may move from
  // them).
  const Ready& ready() const;
  const Stats& stats() const { return stats_; }

  // REQUIRES: next_step() == kTake. Takes the node's next Ready; false when it
  // has none.
  bool Take();
  // Step 1. REQUIRES: next_step() == kSendNow.
  void SendNow();
  // Step 2. REQUIRES: next_step() == kPersist. A non-OK status is the store's
  // failure; next_step() becomes kFailed.
  absl::Status Persist();
  // Step 3. REQUIRES: next_step() == kSendAfterPersist.
  void SendAfterPersist();
  // Step 4. REQUIRES: next_step() == kHandOver (after SendNow when
  // hands_over_before_persist(), after SendAfterPersist otherwise).
  void HandOver();
  // Whether the Ready in progress hands over before its write. REQUIRES:
  // busy().
  bool hands_over_before_persist() const;
  // Step 5. REQUIRES: next_step() == kAdvance.
  void Advance();

  // Performs the step that is due (Take included); returns false when there
  // was nothing to do (no Ready to take).
  absl::StatusOr<bool> StepOnce();
  // Performs the remaining steps of the Ready in progress, if any.
  absl::Status Finish();
  // Finishes the Ready in progress, if any, then performs every Ready the
  // node has until it has none. Stops at the first failed write.
  absl::Status Process();

 private:
  void Expect(Step step) const;

  Node& node_;
  LogStore& store_;
  Callbacks callbacks_;
  HandOverTiming timing_;
  Step next_ = Step::kTake;
  std::optional<Ready> ready_;
  Stats stats_;
};

const char* ReadyStepName(ReadyProcessor::Step step);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_READY_PROCESSOR_H_
