#include "raft/server/ready_processor.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"

namespace driftwood::raft {

const char* ReadyStepName(ReadyProcessor::Step step) {
  switch (step) {
    case ReadyProcessor::Step::kTake:
      return "take";
    case ReadyProcessor::Step::kSendNow:
      return "send-now";
    case ReadyProcessor::Step::kPersist:
      return "persist";
    case ReadyProcessor::Step::kSendAfterPersist:
      return "send-after-persist";
    case ReadyProcessor::Step::kHandOver:
      return "hand-over";
    case ReadyProcessor::Step::kAdvance:
      return "advance";
    case ReadyProcessor::Step::kFailed:
      return "failed";
  }
  return "?";
}

ReadyProcessor::ReadyProcessor(Node& node, LogStore& store, Callbacks callbacks,
                               HandOverTiming timing)
    : node_(node),
      store_(store),
      callbacks_(std::move(callbacks)),
      timing_(timing) {
  RAFT_CHECK(callbacks_.send && callbacks_.hand_over,
             "ReadyProcessor needs both callbacks");
}

void ReadyProcessor::Expect(Step step) const {
  RAFT_CHECK(next_ == step, absl::StrCat("driver step ", ReadyStepName(step),
                                         " out of order: the next step is ",
                                         ReadyStepName(next_)));
}

const Ready& ReadyProcessor::ready() const {
  RAFT_CHECK(ready_.has_value(), "no Ready in progress");
  return *ready_;
}

bool ReadyProcessor::Take() {
  Expect(Step::kTake);
  if (!node_.HasReady()) return false;
  ready_ = node_.TakeReady();
  ++stats_.readies;
  next_ = Step::kSendNow;
  return true;
}

bool ReadyProcessor::hands_over_before_persist() const {
  RAFT_CHECK(ready_.has_value(), "no Ready in progress");
  return timing_ == HandOverTiming::kBeforePersist && !ready_->snapshot;
}

void ReadyProcessor::SendNow() {
  Expect(Step::kSendNow);
  // Step 1: only requests whose term is already durable are in `messages`
  // (the core sorts them); the leader's own write runs in parallel with
  // replication (thesis §10.2.1).
  if (!ready_->messages.empty()) callbacks_.send(ready_->messages);
  next_ = hands_over_before_persist() ? Step::kHandOver : Step::kPersist;
}

absl::Status ReadyProcessor::Persist() {
  Expect(Step::kPersist);
  Ready& ready = *ready_;
  // Step 2: one atomic write. Paper Figure 2: term, vote and log entries are
  // on stable storage before the server answers any RPC (step 3).
  if (ready.hard_state || ready.snapshot || !ready.entries.empty()) {
    PersistRequest request;
    request.hard_state = ready.hard_state;
    request.snapshot = ready.snapshot;
    request.entries = std::move(ready.entries);
    request.sync = ready.must_sync;
    const auto started = std::chrono::steady_clock::now();
    absl::Status status = store_.Persist(request);
    ready.entries = std::move(request.entries);
    if (!status.ok()) {
      next_ = Step::kFailed;
      return status;
    }
    ++stats_.writes;
    if (request.sync) {
      ++stats_.syncs;
      stats_.sync_micros += static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::steady_clock::now() - started)
              .count());
    }
    stats_.entries_persisted += ready.entries.size();
  }
  next_ = Step::kSendAfterPersist;
  return absl::OkStatus();
}

void ReadyProcessor::SendAfterPersist() {
  Expect(Step::kSendAfterPersist);
  if (!ready_->messages_after_persist.empty()) {
    callbacks_.send(ready_->messages_after_persist);
  }
  next_ = hands_over_before_persist() ? Step::kAdvance : Step::kHandOver;
}

void ReadyProcessor::HandOver() {
  Expect(Step::kHandOver);
  // Every committed entry is durable on this node already: the core hands
  // over nothing past its durable index (raft/core/ready.h), so applying
  // them never waits for this Ready's write.
  stats_.entries_handed_over += ready_->committed_entries.size();
  callbacks_.hand_over(*ready_);
  next_ = hands_over_before_persist() ? Step::kPersist : Step::kAdvance;
}

void ReadyProcessor::Advance() {
  Expect(Step::kAdvance);
  node_.Advance(*ready_);
  ready_.reset();
  next_ = Step::kTake;
}

absl::StatusOr<bool> ReadyProcessor::StepOnce() {
  switch (next_) {
    case Step::kTake:
      return Take();
    case Step::kSendNow:
      SendNow();
      return true;
    case Step::kPersist:
      if (absl::Status status = Persist(); !status.ok()) return status;
      return true;
    case Step::kSendAfterPersist:
      SendAfterPersist();
      return true;
    case Step::kHandOver:
      HandOver();
      return true;
    case Step::kAdvance:
      Advance();
      return true;
    case Step::kFailed:
      break;
  }
  return absl::FailedPreconditionError(
      "a write failed earlier: the node must be stopped");
}

absl::Status ReadyProcessor::Finish() {
  while (busy()) {
    if (absl::StatusOr<bool> stepped = StepOnce(); !stepped.ok()) {
      return stepped.status();
    }
  }
  return absl::OkStatus();
}

absl::Status ReadyProcessor::Process() {
  if (absl::Status status = Finish(); !status.ok()) return status;
  while (Take()) {
    if (absl::Status status = Finish(); !status.ok()) return status;
  }
  return absl::OkStatus();
}

}  // namespace driftwood::raft
