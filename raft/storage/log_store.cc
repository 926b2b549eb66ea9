#include "raft/storage/log_store.h"

#include "absl/strings/str_cat.h"

namespace driftwood::raft {

absl::Status ValidatePersist(const PersistRequest& request, LogIndex first,
                             LogIndex last) {
  if (request.snapshot) {
    first = request.snapshot->index.next();
    last = request.snapshot->index;
  }
  if (request.entries.empty()) return absl::OkStatus();
  const LogIndex from = request.entries.front().index;
  if (from < first || from > last.next()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "entries starting at ", from.value(), " do not fit the log [",
        first.value(), ", ", last.value(), "]"));
  }
  for (size_t i = 1; i < request.entries.size(); ++i) {
    if (request.entries[i].index != request.entries[i - 1].index.next()) {
      return absl::InvalidArgumentError("entries must be contiguous");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSnapshot(const LogReader& log,
                              const SnapshotMeta& snapshot,
                              const std::optional<SnapshotMeta>& current) {
  absl::StatusOr<Term> term = log.TermAt(snapshot.index);
  if (term.ok() && *term != snapshot.term) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot ", snapshot.term.value(), "/", snapshot.index.value(),
        " does not match the log's term ", term->value()));
  }
  if (absl::IsNotFound(term.status())) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot index ", snapshot.index.value(),
                     " is past the last index ", log.LastIndex().value()));
  }
  if (!term.ok() && !absl::IsOutOfRange(term.status())) return term.status();
  if (current && current->index > snapshot.index) {
    return absl::InvalidArgumentError("snapshots must not move backwards");
  }
  return absl::OkStatus();
}

absl::Status ValidateCompaction(LogIndex index, LogIndex first, LogIndex last) {
  if (index < first.prev() || index > last) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot compact through ", index.value(), " a log of [",
                     first.value(), ", ", last.value(), "]"));
  }
  return absl::OkStatus();
}

}  // namespace driftwood::raft
