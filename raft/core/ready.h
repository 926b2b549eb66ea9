// Driftwood: Ready, everything the core asks its driver to do, and the driver
// contract (docs/design.md "The driver contract").
//
// At most one Ready is outstanding. The driver takes it with Node::TakeReady()
// and, in this order:
//   1. sends `messages`: requests whose term is already durable (the leader's
//      AppendEntries and heartbeats, PreVote requests). The leader persists its
//      own entries in parallel with replicating them (thesis §10.2.1);
//   2. persists `snapshot` (when set, it replaces the whole stored log),
//      `hard_state` and `entries` in one atomic write, synced iff `must_sync`
//      (term, vote, snapshot or entries changed; a commit-only change is not
//      synced). Writing `entries` replaces every stored entry from
//      entries.front().index on;
//   3. sends `messages_after_persist`: every response (vote grants, append
//      acknowledgements) and every message of a Ready that changed term or
//      vote;
//   4. restores the state machine from `snapshot` if set, then hands
//      `committed_entries` to it, strictly in order (each is already durable
//      on this node), and serves the reads of `read_states` once applied
//      through their index;
//   5. calls Node::Advance(ready).
// A Ready without a snapshot may perform step 4 before step 2 (right after
// step 1): its committed entries were durable before it was taken, and its
// write replaces stored entries only from the first one not yet durable, so
// applying them does not depend on the write (the state machine may even
// record an applied index past the stored commit index, which recovery
// reconciles: docs/design.md "Recovery").
// raft/server/ready_processor.h is the one implementation of these steps;
// drivers use it rather than performing them by hand.
#ifndef DRIFTWOOD_RAFT_CORE_READY_H_
#define DRIFTWOOD_RAFT_CORE_READY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "raft/core/message.h"
#include "raft/core/status.h"
#include "raft/core/types.h"

namespace driftwood::raft {

// Volatile state worth reporting when it changes: who leads, what we are.
struct SoftState {
  Role role = Role::kFollower;
  NodeId leader;
  Term term;

  bool operator==(const SoftState&) const = default;
};

struct Ready {
  // Numbered from 1 in the order produced.
  uint64_t number = 0;
  // Set when role, leader or term changed since the last Ready.
  std::optional<SoftState> soft_state;
  // Set when term, vote or commit changed since the last Ready.
  std::optional<HardState> hard_state;
  // A snapshot received from the leader (paper §7): persist it in place of the
  // whole log, then restore the state machine from it before applying
  // anything later.
  std::optional<SnapshotMeta> snapshot;
  // Entries to append; the first one's index replaces the stored tail from
  // there.
  std::vector<Entry> entries;
  // Whether the write of step 2 must be durable before step 3.
  bool must_sync = false;
  // Step 1: may go out before the write.
  std::vector<Message> messages;
  // Step 3: only after the write is durable.
  std::vector<Message> messages_after_persist;
  // Step 4: committed, durable entries to apply, in order, without gaps.
  std::vector<Entry> committed_entries;
  // Step 4: confirmed linearizable reads.
  std::vector<ReadState> read_states;
  // A follower needs a snapshot and LogReader::Snapshot() has none newer than
  // the compaction point: the driver should have the state machine produce
  // one (at its applied point) and record it with LogStore::SetSnapshot. The
  // leader retries on its own; nothing else waits for this.
  bool snapshot_wanted = false;

  bool Empty() const {
    return !soft_state && !hard_state && !snapshot && entries.empty() &&
           messages.empty() && messages_after_persist.empty() &&
           committed_entries.empty() && read_states.empty() && !snapshot_wanted;
  }
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_READY_H_
