#include "raft/storage/memory_log_store.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {

MemoryLogStore::MemoryLogStore(Configuration configuration)
    : configuration_(std::move(configuration)) {}

absl::StatusOr<InitialState> MemoryLogStore::LoadInitialState() const {
  return InitialState{hard_state_, configuration_};
}

LogIndex MemoryLogStore::FirstIndex() const { return LogIndex(1); }

LogIndex MemoryLogStore::LastIndex() const { return LogIndex(entries_.size()); }

absl::StatusOr<Term> MemoryLogStore::TermAt(LogIndex index) const {
  if (index == LogIndex(0)) return Term(0);
  if (index > LastIndex()) {
    return absl::NotFoundError(absl::StrCat("index ", index.value(),
                                            " is past the last index ",
                                            LastIndex().value()));
  }
  return entries_[index.value() - 1].term;
}

absl::StatusOr<std::vector<Entry>> MemoryLogStore::Entries(
    LogIndex first, LogIndex last_exclusive, uint64_t max_bytes) const {
  if (first < FirstIndex() || first >= last_exclusive ||
      last_exclusive > LastIndex().next()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid entry range [", first.value(), ", ", last_exclusive.value(),
        ") of log [", FirstIndex().value(), ", ", LastIndex().value(), "]"));
  }
  std::vector<Entry> result;
  uint64_t bytes = 0;
  for (LogIndex index = first; index < last_exclusive; index = index.next()) {
    const Entry& entry = entries_[index.value() - 1];
    if (!result.empty() && bytes + entry.ByteSize() > max_bytes) break;
    bytes += entry.ByteSize();
    result.push_back(entry);
  }
  return result;
}

absl::Status MemoryLogStore::Persist(const PersistRequest& request) {
  if (!request.entries.empty()) {
    const LogIndex first = request.entries.front().index;
    if (first < FirstIndex() || first > LastIndex().next()) {
      return absl::InvalidArgumentError(
          absl::StrCat("entries starting at ", first.value(),
                       " would leave a gap after ", LastIndex().value()));
    }
    for (size_t i = 1; i < request.entries.size(); ++i) {
      if (request.entries[i].index != request.entries[i - 1].index.next()) {
        return absl::InvalidArgumentError("entries must be contiguous");
      }
    }
  }
  if (request.hard_state) hard_state_ = *request.hard_state;
  if (!request.entries.empty()) {
    entries_.resize(request.entries.front().index.value() - 1);
    entries_.insert(entries_.end(), request.entries.begin(),
                    request.entries.end());
  }
  if (request.sync) ++sync_count_;
  return absl::OkStatus();
}

}  // namespace driftwood::raft
