#include "raft/server/recovery.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "raft/storage/snapshot_store.h"

namespace driftwood::raft {
namespace {

std::string Point(LogIndex index, Term term) {
  return absl::StrCat(index.value(), " (term ", term.value(), ")");
}

}  // namespace

absl::StatusOr<RecoveryPlan> PlanRecovery(
    const LogReader& log, const AppliedState& applied,
    const std::vector<SnapshotCandidate>& snapshots) {
  RecoveryPlan plan;
  absl::StatusOr<InitialState> initial = log.LoadInitialState();
  if (!initial.ok()) return initial.status();
  const LogIndex first = log.FirstIndex();
  const LogIndex last = log.LastIndex();
  // P: the compaction point, the last index the log no longer holds. Its term
  // stays answerable (LogReader contract).
  const LogIndex compacted = first.prev();
  const LogIndex commit = initial->hard_state.commit;
  absl::StatusOr<SnapshotMeta> recorded = log.Snapshot();
  if (!recorded.ok() && !absl::IsNotFound(recorded.status())) {
    return recorded.status();
  }
  const LogIndex recorded_index = recorded.ok() ? recorded->index : LogIndex(0);

  // Step 1: the commit index is stored in the same atomic write as (or after)
  // the entries it covers, so it can never pass the log's end.
  if (commit > last) {
    return absl::DataLossError(
        absl::StrCat("recovery: the stored commit index ", commit.value(),
                     " is past the last log index ", last.value(),
                     ": committed entries are missing from the log"));
  }

  // Step 2: keep only snapshots that belong to this log's history.
  std::vector<const SnapshotCandidate*> kept;
  std::string corrupt_errors;
  for (const SnapshotCandidate& candidate : snapshots) {
    if (!candidate.meta.ok()) {
      plan.discard.push_back(candidate.index);
      plan.notes.push_back(
          absl::StrCat("snapshot ", candidate.index.value(),
                       " is unreadable: ", candidate.meta.status().message()));
      absl::StrAppend(&corrupt_errors, "; ", candidate.meta.status().message());
      continue;
    }
    if (candidate.index > last) {
      // Received and published, but the crash came before its metadata
      // reached the log (docs/design.md "Follower snapshot installation"):
      // the log never accepted it, the leader will send it again.
      plan.discard.push_back(candidate.index);
      plan.notes.push_back(absl::StrCat(
          "snapshot ", Point(candidate.index, candidate.term),
          " is past the log's end ", last.value(),
          ": an installation interrupted before it reached the log"));
      continue;
    }
    if (candidate.index >= compacted) {
      absl::StatusOr<Term> term = log.TermAt(candidate.index);
      if (!term.ok()) return term.status();
      if (*term != candidate.term) {
        if (candidate.index == recorded_index) {
          return absl::DataLossError(absl::StrCat(
              "recovery: the log records snapshot ",
              Point(candidate.index, candidate.term), " but holds term ",
              term->value(), " at that index"));
        }
        plan.discard.push_back(candidate.index);
        plan.notes.push_back(
            absl::StrCat("snapshot ", Point(candidate.index, candidate.term),
                         " contradicts the log's term ", term->value(),
                         " at that index: an interrupted installation"));
        continue;
      }
    }
    kept.push_back(&candidate);
  }
  const LogIndex newest_snapshot =
      kept.empty() ? LogIndex(0) : kept.front()->index;

  // Step 3: the state machine cannot have applied what neither the log nor a
  // snapshot holds (A > max(L, S)).
  if (applied.index > std::max(last, newest_snapshot)) {
    return absl::DataLossError(absl::StrCat(
        "recovery: the state machine has applied through ",
        applied.index.value(), " but the log ends at ", last.value(),
        " and the newest snapshot is at ", newest_snapshot.value(),
        ": the log lost committed entries"));
  }
  // Step 4: where the log still knows the term at A, it must be the term the
  // state machine applied (Log Matching, paper §5.3).
  if (applied.index >= compacted && applied.index <= last) {
    absl::StatusOr<Term> term = log.TermAt(applied.index);
    if (!term.ok()) return term.status();
    if (*term != applied.term) {
      return absl::DataLossError(absl::StrCat(
          "recovery: the state machine applied ",
          Point(applied.index, applied.term), " but the log holds term ",
          term->value(), " at that index: they belong to different histories"));
    }
  }

  // Step 5: choose the base. A snapshot newer than A is restored when it
  // verifies; an older snapshot (or A itself) may stand in for a corrupt
  // newer one only while the log still holds every entry after it.
  std::optional<SnapshotMeta> base;
  for (const SnapshotCandidate* candidate : kept) {
    if (candidate->index <= applied.index) break;
    absl::Status verified =
        candidate->verify ? candidate->verify() : absl::OkStatus();
    if (verified.ok()) {
      base = *candidate->meta;
      break;
    }
    plan.discard.push_back(candidate->index);
    plan.notes.push_back(
        absl::StrCat("snapshot ", Point(candidate->index, candidate->term),
                     " fails verification: ", verified.message()));
    absl::StrAppend(&corrupt_errors, "; ", verified.message());
  }
  const LogIndex base_index = base ? base->index : applied.index;
  if (base_index < compacted) {
    return absl::DataLossError(absl::StrCat(
        "recovery: the log starts at ", first.value(), " but ",
        base ? absl::StrCat("the newest usable snapshot is at ",
                            base_index.value())
             : absl::StrCat("the state machine has applied only through ",
                            applied.index.value(),
                            " and no usable snapshot covers the rest"),
        ": entries ", base_index.next().value(), "..", compacted.value(),
        " are gone", corrupt_errors));
  }
  if (base) {
    plan.restore = base;
    plan.notes.push_back(
        absl::StrCat("restore the state machine from snapshot ",
                     Point(base->index, base->term),
                     " (it had applied through ", applied.index.value(), ")"));
  }
  plan.applied = base_index;
  plan.commit = std::max(commit, base_index);

  // Step 6: the newest verified snapshot is what a leader should send.
  if (base && base->index > recorded_index) plan.record = base;
  const bool recorded_discarded =
      recorded.ok() && std::find(plan.discard.begin(), plan.discard.end(),
                                 recorded_index) != plan.discard.end();
  const bool recorded_missing =
      recorded.ok() && std::none_of(snapshots.begin(), snapshots.end(),
                                    [&](const SnapshotCandidate& candidate) {
                                      return candidate.index == recorded_index;
                                    });
  if ((recorded_discarded || recorded_missing) &&
      !(plan.record && plan.record->index > recorded_index)) {
    plan.snapshot_needed = true;
    plan.notes.push_back(absl::StrCat("the log records snapshot ",
                                      recorded_index.value(),
                                      " but it is missing or corrupt"));
  }
  return plan;
}

std::vector<SnapshotCandidate> SnapshotCandidates(const SnapshotStore& store) {
  std::vector<SnapshotCandidate> candidates;
  for (SnapshotListing& listing : store.List()) {
    SnapshotCandidate candidate;
    candidate.index = listing.index;
    candidate.term = listing.term;
    if (listing.manifest.ok()) {
      candidate.meta = listing.manifest->meta;
    } else {
      candidate.meta = listing.manifest.status();
    }
    const LogIndex index = listing.index;
    candidate.verify = [&store, index]() {
      return store.Verify(index).status();
    };
    candidates.push_back(std::move(candidate));
  }
  return candidates;
}

}  // namespace driftwood::raft
