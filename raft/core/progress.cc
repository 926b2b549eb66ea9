#include "raft/core/progress.h"

#include <algorithm>
#include <limits>

namespace driftwood::raft {

const char* ProgressStateName(ProgressState state) {
  switch (state) {
    case ProgressState::kProbe:
      return "probe";
    case ProgressState::kReplicate:
      return "replicate";
    case ProgressState::kSnapshot:
      return "snapshot";
  }
  return "?";
}

namespace internal {

Progress::Progress(LogIndex next, uint64_t max_inflight_messages,
                   uint64_t max_inflight_bytes)
    : next_(next), inflights_(max_inflight_messages, max_inflight_bytes) {
  RAFT_CHECK(next_ > LogIndex(0), "next index starts at 1");
}

bool Progress::Paused() const {
  switch (state_) {
    case ProgressState::kProbe:
      return probe_sent_;
    case ProgressState::kReplicate:
      return inflights_.Full();
    case ProgressState::kSnapshot:
      return true;
  }
  return true;
}

void Progress::BecomeProbe() {
  sent_commit_ = LogIndex(0);
  state_ = ProgressState::kProbe;
  probe_sent_ = false;
  inflights_.Reset();
  next_ = match_.next();
}

void Progress::BecomeReplicate() {
  state_ = ProgressState::kReplicate;
  probe_sent_ = false;
  inflights_.Reset();
  next_ = match_.next();
}

void Progress::BecomeSnapshot(LogIndex snapshot_index) {
  sent_commit_ = LogIndex(0);
  state_ = ProgressState::kSnapshot;
  probe_sent_ = false;
  inflights_.Reset();
  pending_snapshot_ = snapshot_index;
  snapshot_ticks_ = 0;
}

void Progress::SnapshotDone(bool succeeded) {
  RAFT_CHECK(state_ == ProgressState::kSnapshot, "no snapshot in flight");
  const LogIndex resume =
      succeeded ? std::max(match_.next(), pending_snapshot_.next())
                : match_.next();
  BecomeProbe();
  next_ = resume;
  pending_snapshot_ = LogIndex(0);
  // Wait for a sign of life (any heartbeat response) before probing.
  probe_sent_ = true;
  probe_age_ticks_ = std::numeric_limits<uint64_t>::max();
}

void Progress::SentEntries(LogIndex last_index, uint64_t bytes,
                           bool had_entries) {
  if (state_ == ProgressState::kReplicate) {
    if (had_entries) {
      next_ = last_index.next();
      inflights_.Add(last_index, bytes);
    }
  } else if (state_ == ProgressState::kProbe) {
    probe_sent_ = true;
    probe_age_ticks_ = 0;
  }
}

bool Progress::MaybeUpdate(LogIndex index) {
  bool updated = false;
  if (index > match_) {
    match_ = index;
    updated = true;
    probe_sent_ = false;
  }
  next_ = std::max(next_, index.next());
  inflights_.FreeUpTo(index);
  return updated;
}

bool Progress::MaybeDecreaseTo(LogIndex rejected, LogIndex hint) {
  // Everything through match is durably on the follower and matches; a
  // rejection at or below it is a reordered or duplicated old answer. While a
  // snapshot is in flight, rejections of earlier probes are moot.
  if (rejected <= match_ || state_ == ProgressState::kSnapshot) return false;
  if (state_ == ProgressState::kReplicate) {
    next_ = match_.next();
    return true;
  }
  // In probe only the single outstanding AppendEntries (prev == next - 1)
  // counts.
  if (next_.prev() != rejected) return false;
  next_ = std::max(std::min(rejected, hint.next()), match_.next());
  probe_sent_ = false;
  return true;
}

void Progress::OnHeartbeatResponse(uint64_t min_probe_age_ticks) {
  // A burst of heartbeat responses (from a follower that was slow, or a queue
  // draining) must not resend the probe once per response: each resend is one
  // more message for the slow follower to work through.
  if (probe_age_ticks_ >= min_probe_age_ticks) probe_sent_ = false;
  if (state_ == ProgressState::kReplicate && inflights_.Full()) {
    inflights_.FreeFirst();
  }
}

void Progress::SetSelfMatch(LogIndex durable_last) {
  match_ = std::max(match_, durable_last);
  next_ = std::max(next_, durable_last.next());
}

}  // namespace internal
}  // namespace driftwood::raft
