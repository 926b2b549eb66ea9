// Driftwood: what the runtime's step functions hand each other
// (docs/design.md "The runtime").
//
// The server runs three single-threaded step functions: the raft loop
// (RaftLoop, raft/server/raft_loop.h), the apply loop (ApplyLoop,
// raft/server/apply_loop.h) and the snapshot writer (SnapshotWriter,
// raft/server/snapshot_writer.h). They never share mutable state; each
// consumes the values below from its own queue. In production a thread pumps
// each queue; the simulation calls the same step functions from one
// deterministic scheduler.
#ifndef DRIFTWOOD_RAFT_SERVER_RUNTIME_TYPES_H_
#define DRIFTWOOD_RAFT_SERVER_RUNTIME_TYPES_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "raft/core/message.h"
#include "raft/core/status.h"
#include "raft/core/types.h"
#include "raft/state_machine.h"
#include "raft/transport.h"

namespace driftwood::raft {

// Completes a proposal with the state machine's response, or a read with the
// query's result, or either with the status of docs/design.md's outcome
// table. Runs on the apply thread (or on the caller's thread when the request
// is refused at once); must not block.
using ResultCallback = absl::AnyInvocable<void(absl::StatusOr<std::string>)>;

// A request waiting for its outcome.
struct PendingRequest {
  absl::Time deadline;
  ResultCallback done;
};

struct ProposalInput {
  EntryData command;
  PendingRequest request;
};

struct ReadInput {
  std::string query;
  PendingRequest request;
};

// --- The apply loop's inputs ------------------------------------------------

// Step 4 of the driver contract: what one Ready hands to the apply side.
struct HandOverTask {
  std::optional<SnapshotMeta> snapshot;
  std::vector<Entry> committed_entries;
  std::vector<ReadState> read_states;
  bool snapshot_wanted = false;
  // The configuration as of the last committed entry.
  Configuration configuration;
};

// Proposals the local core appended at first.index, first.index + 1, ...,
// all in term first.term.
struct TrackProposalsTask {
  EntryId first;
  std::vector<PendingRequest> proposals;
};

// Proposals forwarded to `leader` under `forward_id`; ForwardAnsweredTask
// tells where they went.
struct TrackForwardTask {
  uint64_t forward_id = 0;
  std::vector<PendingRequest> proposals;
  NodeId leader;
};

// The node now knows `leader` (kNoNode: none) as the leader of `term`.
// Proposals forwarded to another node and not yet answered complete with
// DeadlineExceeded: their outcome is unknown (the old leader may have
// appended them), and waiting for their deadline would tell the client
// nothing more.
struct LeaderChangedTask {
  NodeId leader;
  Term term;
};

struct ForwardAnsweredTask {
  ForwardResponse response;
};

// Reads waiting for the ReadState of `read_id` (Node::ReadIndex).
struct TrackReadsTask {
  uint64_t read_id = 0;
  std::vector<ReadInput> reads;
};

// Requests whose outcome is already known (for example Unavailable: never
// appended).
struct CompleteTask {
  std::vector<PendingRequest> requests;
  absl::Status status;
  // Which counter the outcome belongs to.
  bool reads = false;
};

// Fails every request whose deadline is at or before `now`.
struct DeadlineTask {
  absl::Time now;
};

// A serializable read of the local state.
struct LocalReadTask {
  ReadInput read;
};

using ApplyTask =
    std::variant<HandOverTask, TrackProposalsTask, TrackForwardTask,
                 ForwardAnsweredTask, TrackReadsTask, CompleteTask,
                 DeadlineTask, LocalReadTask, LeaderChangedTask>;

// --- The snapshot writer's inputs -------------------------------------------

// Write a captured image into the snapshot store and publish it.
struct WriteSnapshotJob {
  std::shared_ptr<StateMachineSnapshot> capture;
};

// Stream the published snapshot an InstallSnapshot message refers to.
struct SendSnapshotJob {
  Message message;
};

// The log was compacted through `compacted`: retire what it no longer needs.
struct RetireSnapshotsJob {
  LogIndex compacted;
};

using SnapshotJob =
    std::variant<WriteSnapshotJob, SendSnapshotJob, RetireSnapshotsJob>;

// --- The raft loop's inputs -------------------------------------------------

// A snapshot this node captured was published: record it in the log store
// and compact behind it.
struct SnapshotPublishedEvent {
  SnapshotMeta meta;
};

// A persistent state machine is durable through `recovery_point`: compact
// behind it.
struct CompactEvent {
  LogIndex recovery_point;
};

// The transport finished streaming a snapshot to `peer`.
struct SnapshotReportEvent {
  NodeId peer;
  bool succeeded = false;
};

struct UnreachableEvent {
  NodeId peer;
};

struct TransferEvent {
  NodeId to;
  absl::AnyInvocable<void(absl::Status)> done;
};

using ControlEvent =
    std::variant<SnapshotPublishedEvent, CompactEvent, SnapshotReportEvent,
                 UnreachableEvent, TransferEvent>;

// Everything queued for the raft loop since its last turn; it drains all of
// it into the core before taking a Ready (group commit).
struct RaftInput {
  uint64_t ticks = 0;
  // The clock's reading (Clock::Now) when the latest of `ticks` was queued;
  // InfinitePast when none was. The raft loop stops re-sending a read's
  // ReadIndex request once this passes the read's deadline.
  absl::Time now = absl::InfinitePast();
  std::vector<Message> messages;
  std::vector<ServerMessage> server_messages;
  std::vector<ControlEvent> controls;
  std::vector<ProposalInput> proposals;
  std::vector<ReadInput> reads;

  bool empty() const {
    return ticks == 0 && messages.empty() && server_messages.empty() &&
           controls.empty() && proposals.empty() && reads.empty();
  }
};

// RuntimeCounters (raft/core/status.h), updated by several threads.
struct AtomicCounters {
  std::atomic<uint64_t> elections{0};
  std::atomic<uint64_t> leader_changes{0};
  std::atomic<uint64_t> snapshots_created{0};
  std::atomic<uint64_t> snapshots_sent{0};
  std::atomic<uint64_t> snapshots_send_failures{0};
  std::atomic<uint64_t> snapshots_received{0};
  std::atomic<uint64_t> proposals_ok{0};
  std::atomic<uint64_t> proposals_aborted{0};
  std::atomic<uint64_t> proposals_unavailable{0};
  std::atomic<uint64_t> proposals_resource_exhausted{0};
  std::atomic<uint64_t> proposals_deadline_exceeded{0};
  std::atomic<uint64_t> proposals_cancelled{0};
  std::atomic<uint64_t> proposals_invalid{0};
  std::atomic<uint64_t> proposals_forwarded{0};
  std::atomic<uint64_t> reads_ok{0};
  std::atomic<uint64_t> reads_failed{0};
  std::atomic<uint64_t> read_index_retries{0};
  std::atomic<uint64_t> messages_dropped{0};
  std::atomic<uint64_t> apply_batches{0};
  std::atomic<uint64_t> entries_applied{0};

  // Counts one completed proposal (reads: one read) by its outcome.
  void CountOutcome(const absl::Status& status, bool read);
  // Copies every counter into `counters` (the log and apply counters are
  // the raft loop's and are filled in separately).
  void LoadInto(RuntimeCounters& counters) const;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_SERVER_RUNTIME_TYPES_H_
