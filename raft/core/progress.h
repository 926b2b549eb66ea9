// Driftwood: the leader's view of one follower's replication (paper Figure 2's
// nextIndex and matchIndex, with etcd's probe/replicate/snapshot states).
//
// kProbe: the leader does not know where the follower's log diverges; it sends
// one
//   AppendEntries at a time and waits for the answer (or a heartbeat response).
// kReplicate: the follower matched at `match`; the leader pipelines
// AppendEntries
//   up to the inflight window, advancing `next` optimistically.
// kSnapshot: the follower needs a snapshot; nothing is sent until it is
// reported. Invariant: match < next. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_PROGRESS_H_
#define DRIFTWOOD_RAFT_CORE_PROGRESS_H_

#include <algorithm>
#include <cstdint>
#include <limits>

#include "raft/core/inflights.h"
#include "raft/core/status.h"
#include "raft/core/types.h"

namespace driftwood::raft::internal {

class Progress {
 public:
  Progress(LogIndex next, uint64_t max_inflight_messages,
           uint64_t max_inflight_bytes);

  // The highest index known to be replicated (durably) on the follower.
  LogIndex match() const { return match_; }
  // The next index to send.
  LogIndex next() const { return next_; }
  ProgressState state() const { return state_; }
  const Inflights& inflights() const { return inflights_; }
  // Whether the follower answered anything since the last CheckQuorum round
  // (thesis §6.2).
  bool recent_active() const { return recent_active_; }
  void set_recent_active(bool active) { recent_active_ = active; }
  // kProbe only: an AppendEntries is outstanding and no other will be sent.
  bool probe_sent() const { return probe_sent_; }

  // True when the leader must not send AppendEntries now.
  bool Paused() const;

  void BecomeProbe();
  void BecomeReplicate();
  // A snapshot at `snapshot_index` was sent; nothing else is sent until it is
  // reported (SnapshotDone), acknowledged, or times out.
  void BecomeSnapshot(LogIndex snapshot_index);
  // kSnapshot only: the transfer ended. On success probing resumes after the
  // snapshot, on failure after match; either way the next probe waits for a
  // heartbeat response.
  void SnapshotDone(bool succeeded);
  // kSnapshot only: counts one tick; returns the ticks since the snapshot was
  // sent.
  uint64_t TickSnapshot() { return ++snapshot_ticks_; }
  // kSnapshot only: the index of the snapshot in flight.
  LogIndex pending_snapshot() const { return pending_snapshot_; }

  // The newest read-confirmation round (thesis §6.4) the follower answered.
  uint64_t acked_read_round() const { return acked_read_round_; }
  void AckReadRound(uint64_t round) {
    if (round > acked_read_round_) acked_read_round_ = round;
  }

  // Records that entries through `last_index` (carrying `bytes`) were sent.
  // In kReplicate advances next optimistically; in kProbe pauses until
  // answered.
  void SentEntries(LogIndex last_index, uint64_t bytes, bool had_entries);

  // A successful acknowledgement through `index`. Returns true when it taught
  // the leader something new (match grew). Never moves match or next backwards.
  bool MaybeUpdate(LogIndex index);

  // A rejection of the AppendEntries with prev_log_index == `rejected`, with
  // the follower's hint that its log may match up to `hint`. Returns false (and
  // changes nothing) when the rejection is stale: stale rejections never move
  // progress backwards.
  bool MaybeDecreaseTo(LogIndex rejected, LogIndex hint);

  // A heartbeat response: the follower is alive, so probing may resume and a
  // window stuck full frees its oldest slot.
  // A probe is resent only once it has been outstanding for
  // `min_probe_age_ticks` ticks (see TickProbe).
  void OnHeartbeatResponse(uint64_t min_probe_age_ticks = 0);
  // Counts one tick of the outstanding probe's age.
  void TickProbe() {
    if (probe_age_ticks_ != std::numeric_limits<uint64_t>::max()) {
      ++probe_age_ticks_;
    }
  }

  // The highest commit index sent to the follower in an AppendEntries; reset
  // to 0 when the follower falls back to probe or snapshot (it may have
  // restarted, or lost what was sent). A hint only: heartbeats carry the
  // commit index whatever it says.
  LogIndex sent_commit() const { return sent_commit_; }
  void SentCommit(LogIndex commit) {
    sent_commit_ = std::max(sent_commit_, commit);
  }

  // Used by the leader for itself: its durable last index.
  void SetSelfMatch(LogIndex durable_last);

 private:
  LogIndex match_;
  LogIndex next_;
  ProgressState state_ = ProgressState::kProbe;
  bool probe_sent_ = false;
  bool recent_active_ = false;
  LogIndex pending_snapshot_;
  uint64_t snapshot_ticks_ = 0;
  uint64_t probe_age_ticks_ = 0;
  uint64_t acked_read_round_ = 0;
  LogIndex sent_commit_;
  Inflights inflights_;
};

}  // namespace driftwood::raft::internal

#endif  // DRIFTWOOD_RAFT_CORE_PROGRESS_H_
