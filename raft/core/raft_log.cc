#include "raft/core/raft_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace driftwood::raft::internal {

RaftLog::RaftLog(const LogReader& durable, LogIndex commit, LogIndex applied)
    : durable_(durable),
      unstable_offset_(durable.LastIndex().next()),
      persisting_(durable.LastIndex()),
      commit_(commit),
      applying_(applied),
      applied_(applied) {
  RAFT_CHECK(commit_ <= last_index(),
             absl::StrCat("commit ", commit_.value(), " beyond last index ",
                          last_index().value()));
  RAFT_CHECK(applied_ <= commit_, "applied beyond commit");
}

LogIndex RaftLog::first_index() const {
  if (unstable_snapshot_) return unstable_snapshot_->index.next();
  return durable_.FirstIndex();
}

LogIndex RaftLog::last_index() const {
  if (!unstable_.empty()) return unstable_.back().index;
  return durable_last();
}

Term RaftLog::last_term() const {
  std::optional<Term> term = MaybeTermAt(last_index());
  RAFT_CHECK(term.has_value(), "the last entry's term must be readable");
  return *term;
}

absl::StatusOr<Term> RaftLog::TermAt(LogIndex index) const {
  if (unstable_snapshot_ && index <= unstable_snapshot_->index) {
    if (index == unstable_snapshot_->index) return unstable_snapshot_->term;
    return absl::OutOfRangeError(
        absl::StrCat("index ", index.value(), " is compacted"));
  }
  if (index >= unstable_offset_) {
    if (index > last_index()) {
      return absl::NotFoundError(
          absl::StrCat("index ", index.value(), " is past the last index"));
    }
    return unstable_[Distance(unstable_offset_, index)].term;
  }
  return durable_.TermAt(index);
}

std::optional<Term> RaftLog::MaybeTermAt(LogIndex index) const {
  absl::StatusOr<Term> term = TermAt(index);
  if (term.ok()) return *term;
  RAFT_CHECK(
      absl::IsOutOfRange(term.status()) || absl::IsNotFound(term.status()),
      absl::StrCat("reading the log failed: ", term.status().ToString()));
  return std::nullopt;
}

bool RaftLog::Matches(LogIndex index, Term term) const {
  std::optional<Term> stored = MaybeTermAt(index);
  return stored.has_value() && *stored == term;
}

absl::StatusOr<std::vector<Entry>> RaftLog::EntriesFrom(
    LogIndex first, uint64_t max_bytes) const {
  std::vector<Entry> result;
  if (first > last_index()) return result;
  if (first < first_index()) {
    return absl::OutOfRangeError(
        absl::StrCat("index ", first.value(), " is compacted"));
  }
  uint64_t bytes = 0;
  if (first < unstable_offset_) {
    absl::StatusOr<std::vector<Entry>> stored =
        durable_.Entries(first, unstable_offset_, max_bytes);
    if (!stored.ok()) return stored.status();
    RAFT_CHECK(!stored->empty() && stored->front().index == first,
               "LogReader::Entries must start at the requested index");
    for (const Entry& entry : *stored) bytes += entry.ByteSize();
    result = *std::move(stored);
    // Stop unless the stored range was read in full.
    if (result.back().index.next() != unstable_offset_) return result;
  }
  for (const Entry& entry : unstable_) {
    if (entry.index < first) continue;
    if (!result.empty() && bytes + entry.ByteSize() > max_bytes) break;
    bytes += entry.ByteSize();
    result.push_back(entry);
  }
  return result;
}

bool RaftLog::IsUpToDate(LogIndex last_index_other,
                         Term last_term_other) const {
  const Term our_last_term = last_term();
  return last_term_other > our_last_term ||
         (last_term_other == our_last_term && last_index_other >= last_index());
}

void RaftLog::Append(std::vector<Entry> entries) {
  if (entries.empty()) return;
  RAFT_CHECK(entries.front().index == last_index().next(),
             "leader appends must be contiguous");
  for (Entry& entry : entries) unstable_.push_back(std::move(entry));
}

void RaftLog::AppendAfterMatch(std::vector<Entry> entries) {
  // Paper Figure 2, AppendEntries receiver step 3: "If an existing entry
  // conflicts with a new one (same index but different terms), delete the
  // existing entry and all that follow it". Entries that match are kept, so a
  // stale or duplicated AppendEntries never truncates (paper §5.3).
  size_t first_new = 0;
  while (first_new < entries.size()) {
    const Entry& entry = entries[first_new];
    if (!Matches(entry.index, entry.term)) break;
    ++first_new;
  }
  if (first_new == entries.size()) return;
  entries.erase(entries.begin(),
                entries.begin() + static_cast<std::ptrdiff_t>(first_new));
  TruncateAndAppend(std::move(entries));
}

void RaftLog::TruncateAndAppend(std::vector<Entry> entries) {
  const LogIndex from = entries.front().index;
  RAFT_CHECK(from <= last_index().next(), "append would leave a gap");
  // Paper §5.4 (Leader Completeness / State Machine Safety): a committed entry
  // is never overwritten.
  RAFT_CHECK(from > commit_,
             absl::StrCat("truncating committed entry ", from.value(),
                          " (commit ", commit_.value(), ")"));
  if (from >= unstable_offset_) {
    unstable_.resize(Distance(unstable_offset_, from));
  } else {
    // The conflict is in the durable part: the new tail replaces it from
    // `from`.
    unstable_.clear();
    unstable_offset_ = from;
  }
  persisting_ = std::min(persisting_, from.prev());
  for (Entry& entry : entries) unstable_.push_back(std::move(entry));
}

LogIndex RaftLog::FindConflictByTerm(LogIndex index, Term term) const {
  index = std::min(index, last_index());
  while (index > LogIndex(0)) {
    std::optional<Term> stored = MaybeTermAt(index);
    if (!stored.has_value() || *stored <= term) break;
    index = index.prev();
  }
  return index;
}

std::vector<Entry> RaftLog::EntriesToPersist() const {
  std::vector<Entry> result;
  for (const Entry& entry : unstable_) {
    if (entry.index > persisting_) result.push_back(entry);
  }
  return result;
}

bool RaftLog::HasEntriesToPersist() const {
  return !unstable_.empty() && unstable_.back().index > persisting_;
}

void RaftLog::MarkPersisting(LogIndex last) {
  persisting_ = std::max(persisting_, last);
}

void RaftLog::StableTo(EntryId id) {
  if (id.index < unstable_offset_ || id.index > last_index()) return;
  if (unstable_[Distance(unstable_offset_, id.index)].term != id.term) return;
  unstable_.erase(unstable_.begin(),
                  unstable_.begin() + static_cast<std::ptrdiff_t>(Distance(
                                          unstable_offset_, id.index.next())));
  unstable_offset_ = id.index.next();
}

void RaftLog::RestoreSnapshot(const SnapshotMeta& snapshot) {
  RAFT_CHECK(snapshot.index > commit_,
             absl::StrCat("restoring snapshot ", snapshot.index.value(),
                          " at or below commit ", commit_.value()));
  unstable_snapshot_ = snapshot;
  snapshot_persisting_ = false;
  unstable_.clear();
  unstable_offset_ = snapshot.index.next();
  persisting_ = snapshot.index;
  commit_ = snapshot.index;
  // Everything through the snapshot reaches the state machine by restoring it.
  applying_ = snapshot.index;
}

std::optional<SnapshotMeta> RaftLog::SnapshotToPersist() const {
  if (snapshot_persisting_) return std::nullopt;
  return unstable_snapshot_;
}

void RaftLog::StableSnapshotTo(LogIndex index) {
  if (unstable_snapshot_ && unstable_snapshot_->index == index) {
    unstable_snapshot_.reset();
    snapshot_persisting_ = false;
  }
  applied_ = std::max(applied_, std::min(index, applying_));
}

void RaftLog::CommitTo(LogIndex index) {
  if (index <= commit_) return;  // Commit never moves backwards.
  RAFT_CHECK(index <= last_index(),
             absl::StrCat("commit ", index.value(), " beyond last index ",
                          last_index().value()));
  commit_ = index;
}

std::vector<Entry> RaftLog::NextCommittedEntries(uint64_t max_bytes) const {
  // Only entries durable on this node are applied (docs/design.md "The driver
  // contract", step 4): a follower may learn of a commit before its own write
  // completes.
  const LogIndex upto = std::min(commit_, durable_last());
  if (upto <= applying_) return {};
  absl::StatusOr<std::vector<Entry>> entries =
      EntriesFrom(applying_.next(), max_bytes);
  RAFT_CHECK(entries.ok(), absl::StrCat("reading committed entries failed: ",
                                        entries.status().ToString()));
  while (!entries->empty() && entries->back().index > upto) entries->pop_back();
  return *std::move(entries);
}

bool RaftLog::HasNextCommittedEntries() const {
  return std::min(commit_, durable_last()) > applying_;
}

void RaftLog::MarkApplying(LogIndex index) {
  applying_ = std::max(applying_, index);
}

void RaftLog::AppliedTo(LogIndex index) {
  RAFT_CHECK(index <= applying_, "applied beyond what was handed out");
  applied_ = std::max(applied_, index);
}

}  // namespace driftwood::raft::internal
