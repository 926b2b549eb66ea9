#include "raft/storage/memory_log_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {

MemoryLogStore::MemoryLogStore(Configuration configuration)
    : configuration_(std::move(configuration)) {}

absl::StatusOr<InitialState> MemoryLogStore::LoadInitialState() const {
  return InitialState{hard_state_, configuration_};
}

LogIndex MemoryLogStore::FirstIndex() const { return first_index_; }

LogIndex MemoryLogStore::LastIndex() const {
  return first_index_ + entries_.size() - 1;
}

absl::StatusOr<Term> MemoryLogStore::TermAt(LogIndex index) const {
  if (index < first_index_.prev()) {
    return absl::OutOfRangeError(absl::StrCat("index ", index.value(),
                                              " is compacted (first index ",
                                              first_index_.value(), ")"));
  }
  if (index == first_index_.prev()) return compacted_term_;
  if (index > LastIndex()) {
    return absl::NotFoundError(absl::StrCat("index ", index.value(),
                                            " is past the last index ",
                                            LastIndex().value()));
  }
  return entries_[Distance(first_index_, index)].term;
}

absl::StatusOr<std::vector<Entry>> MemoryLogStore::Entries(
    LogIndex first, LogIndex last_exclusive, uint64_t max_bytes) const {
  if (first < first_index_) {
    return absl::OutOfRangeError(absl::StrCat("index ", first.value(),
                                              " is compacted (first index ",
                                              first_index_.value(), ")"));
  }
  if (first >= last_exclusive || last_exclusive > LastIndex().next()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid entry range [", first.value(), ", ", last_exclusive.value(),
        ") of log [", first_index_.value(), ", ", LastIndex().value(), "]"));
  }
  std::vector<Entry> result;
  uint64_t bytes = 0;
  for (LogIndex index = first; index < last_exclusive; index = index.next()) {
    const Entry& entry = entries_[Distance(first_index_, index)];
    if (!result.empty() && bytes + entry.ByteSize() > max_bytes) break;
    bytes += entry.ByteSize();
    result.push_back(entry);
  }
  return result;
}

absl::StatusOr<SnapshotMeta> MemoryLogStore::Snapshot() const {
  if (snapshot_unavailable_) {
    return absl::UnavailableError("a snapshot is being produced");
  }
  if (!snapshot_) return absl::NotFoundError("no snapshot");
  return *snapshot_;
}

absl::Status MemoryLogStore::Persist(const PersistRequest& request) {
  if (absl::Status status = ValidatePersist(request, first_index_, LastIndex());
      !status.ok()) {
    return status;
  }
  if (request.snapshot) {
    entries_.clear();
    first_index_ = request.snapshot->index.next();
    compacted_term_ = request.snapshot->term;
    snapshot_ = *request.snapshot;
    configuration_ = request.snapshot->configuration;
  }
  if (request.hard_state) hard_state_ = *request.hard_state;
  if (!request.entries.empty()) {
    entries_.resize(Distance(first_index_, request.entries.front().index));
    entries_.insert(entries_.end(), request.entries.begin(),
                    request.entries.end());
  }
  if (request.sync) ++sync_count_;
  return absl::OkStatus();
}

absl::Status MemoryLogStore::SetSnapshot(const SnapshotMeta& snapshot) {
  if (absl::Status status = ValidateSnapshot(*this, snapshot, snapshot_);
      !status.ok()) {
    return status;
  }
  snapshot_ = snapshot;
  return absl::OkStatus();
}

absl::Status MemoryLogStore::Compact(LogIndex index) {
  if (absl::Status status =
          ValidateCompaction(index, first_index_, LastIndex());
      !status.ok()) {
    return status;
  }
  if (index == first_index_.prev()) return absl::OkStatus();
  compacted_term_ = entries_[Distance(first_index_, index)].term;
  entries_.erase(entries_.begin(),
                 entries_.begin() + static_cast<std::ptrdiff_t>(
                                        Distance(first_index_, index.next())));
  first_index_ = index.next();
  return absl::OkStatus();
}

}  // namespace driftwood::raft
