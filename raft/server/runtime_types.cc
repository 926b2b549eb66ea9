#include "raft/server/runtime_types.h"

namespace driftwood::raft {

void AtomicCounters::CountOutcome(const absl::Status& status, bool read) {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  if (read) {
    (status.ok() ? reads_ok : reads_failed).fetch_add(1, kRelaxed);
    return;
  }
  switch (status.code()) {
    case absl::StatusCode::kOk:
      proposals_ok.fetch_add(1, kRelaxed);
      break;
    case absl::StatusCode::kAborted:
      proposals_aborted.fetch_add(1, kRelaxed);
      break;
    case absl::StatusCode::kResourceExhausted:
      proposals_resource_exhausted.fetch_add(1, kRelaxed);
      break;
    case absl::StatusCode::kDeadlineExceeded:
      proposals_deadline_exceeded.fetch_add(1, kRelaxed);
      break;
    case absl::StatusCode::kCancelled:
      proposals_cancelled.fetch_add(1, kRelaxed);
      break;
    case absl::StatusCode::kInvalidArgument:
      proposals_invalid.fetch_add(1, kRelaxed);
      break;
    default:
      proposals_unavailable.fetch_add(1, kRelaxed);
      break;
  }
}

void AtomicCounters::LoadInto(RuntimeCounters& counters) const {
  constexpr auto kRelaxed = std::memory_order_relaxed;
  counters.elections = elections.load(kRelaxed);
  counters.leader_changes = leader_changes.load(kRelaxed);
  counters.snapshots_created = snapshots_created.load(kRelaxed);
  counters.snapshots_sent = snapshots_sent.load(kRelaxed);
  counters.snapshots_send_failures = snapshots_send_failures.load(kRelaxed);
  counters.snapshots_received = snapshots_received.load(kRelaxed);
  counters.proposals_ok = proposals_ok.load(kRelaxed);
  counters.proposals_aborted = proposals_aborted.load(kRelaxed);
  counters.proposals_unavailable = proposals_unavailable.load(kRelaxed);
  counters.proposals_resource_exhausted =
      proposals_resource_exhausted.load(kRelaxed);
  counters.proposals_deadline_exceeded =
      proposals_deadline_exceeded.load(kRelaxed);
  counters.proposals_cancelled = proposals_cancelled.load(kRelaxed);
  counters.proposals_invalid = proposals_invalid.load(kRelaxed);
  counters.proposals_forwarded = proposals_forwarded.load(kRelaxed);
  counters.reads_ok = reads_ok.load(kRelaxed);
  counters.reads_failed = reads_failed.load(kRelaxed);
  counters.read_index_retries = read_index_retries.load(kRelaxed);
  counters.messages_dropped = messages_dropped.load(kRelaxed);
  counters.apply_batches = apply_batches.load(kRelaxed);
  counters.entries_applied = entries_applied.load(kRelaxed);
}

}  // namespace driftwood::raft
