// Driftwood: the core's view of the replicated log: the durable part, read
// through LogReader, plus the unstable tail of entries not yet persisted.
//
//   [first_index ........ durable_last] [unstable tail ........ last_index]
//                                        ^ unstable_offset
//   entries <= persisting: handed to the driver in a Ready, not yet advanced.
//
// Invariants: durable_last() == unstable_offset - 1; durable_last() <= the
// reader's LastIndex() (the reader may still hold stale entries beyond it that
// a pending write will replace); commit_index <= last_index(); commit never
// decreases; applied <= commit. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_RAFT_LOG_H_
#define DRIFTWOOD_RAFT_CORE_RAFT_LOG_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/core/log_reader.h"
#include "raft/core/types.h"

namespace driftwood::raft::internal {

class RaftLog {
 public:
  // `durable` must outlive the RaftLog. Starts with an empty unstable tail,
  // commit `commit` and applied `applied`.
  RaftLog(const LogReader& durable, LogIndex commit, LogIndex applied);

  LogIndex first_index() const;
  LogIndex last_index() const;
  Term last_term() const;
  EntryId last_id() const { return {last_term(), last_index()}; }
  // The last index whose entry is durable on this node and part of this log.
  LogIndex durable_last() const { return unstable_offset_.prev(); }
  LogIndex commit_index() const { return commit_; }
  LogIndex applied() const { return applied_; }

  // The term at `index`: OutOfRange when compacted, NotFound past the end.
  absl::StatusOr<Term> TermAt(LogIndex index) const;
  // The term at `index`, or nullopt when there is none (compacted or past the
  // end). Storage corruption aborts: the core cannot continue without its log.
  std::optional<Term> MaybeTermAt(LogIndex index) const;
  bool Matches(LogIndex index, Term term) const;

  // Entries in [first, last_index()], at most `max_bytes` (at least one entry).
  // Empty when first > last_index(). OutOfRange when `first` is compacted.
  absl::StatusOr<std::vector<Entry>> EntriesFrom(LogIndex first,
                                                 uint64_t max_bytes) const;

  // Paper §5.4.1: is a log ending at (last_term, last_index) at least as
  // up-to-date as ours? Compare last terms, then lengths.
  bool IsUpToDate(LogIndex last_index, Term last_term) const;

  // Appends entries as the leader. REQUIRES: contiguous after last_index().
  void Append(std::vector<Entry> entries);

  // Follower side of AppendEntries (paper Figure 2, receiver steps 3-4): given
  // entries that follow a matching prev_log_index, skips those already present
  // with the same term, truncates at the first conflict and appends the rest. A
  // stale or duplicated message whose entries all match truncates nothing.
  // REQUIRES: the log matches at entries.front().index - 1.
  void AppendAfterMatch(std::vector<Entry> entries);

  // Largest index <= `index` whose term is <= `term` (fast backtracking hint).
  LogIndex FindConflictByTerm(LogIndex index, Term term) const;

  // Entries to hand to the driver in the next Ready: those after `persisting`.
  std::vector<Entry> EntriesToPersist() const;
  bool HasEntriesToPersist() const;
  // The entries of EntriesToPersist() are now being written.
  void MarkPersisting(LogIndex last);
  // A write through `id` has completed: drop the unstable entries up to it if
  // the log still holds that entry (a later truncation may have replaced it).
  void StableTo(EntryId id);

  // Advances commit to `index` if higher. REQUIRES: index <= last_index().
  void CommitTo(LogIndex index);

  // Replaces the whole log with `snapshot` (paper §7, Figure 13 step 7): the
  // log becomes empty after snapshot.index, commit and applied jump to it.
  // REQUIRES: snapshot.index > commit_index() (a snapshot at or below the
  // commit index is ignored by the caller, docs/design.md "The driver
  // contract").
  void RestoreSnapshot(const SnapshotMeta& snapshot);
  // The restored snapshot not yet handed to the driver, if any.
  std::optional<SnapshotMeta> SnapshotToPersist() const;
  void MarkSnapshotPersisting() { snapshot_persisting_ = true; }
  // A write of the snapshot at `index` completed.
  void StableSnapshotTo(LogIndex index);

  // Committed, durable entries not yet handed out, up to `max_bytes`.
  std::vector<Entry> NextCommittedEntries(uint64_t max_bytes) const;
  bool HasNextCommittedEntries() const;
  // Committed entries through `index` were handed out.
  void MarkApplying(LogIndex index);
  // The driver applied them (Advance).
  void AppliedTo(LogIndex index);

 private:
  const LogReader& durable_;
  // A snapshot restored from the leader and not yet durable. While set, it
  // answers for everything up to its index instead of the reader.
  std::optional<SnapshotMeta> unstable_snapshot_;
  bool snapshot_persisting_ = false;
  // Entries at and after unstable_offset_, contiguous.
  std::vector<Entry> unstable_;
  LogIndex unstable_offset_;
  // Last index handed to the driver for writing. durable_last() <= persisting_.
  LogIndex persisting_;
  LogIndex commit_;
  // Last index handed out for applying; applied_ <= applying_ <= commit_.
  LogIndex applying_;
  LogIndex applied_;

  void TruncateAndAppend(std::vector<Entry> entries);
};

}  // namespace driftwood::raft::internal

#endif  // DRIFTWOOD_RAFT_CORE_RAFT_LOG_H_
