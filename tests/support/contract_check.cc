#include "tests/support/contract_check.h"

#include "absl/strings/str_cat.h"
#include "raft/core/describe.h"

namespace driftwood::testing {

using raft::AppendEntriesResponse;
using raft::Describe;
using raft::Message;
using raft::RequestVote;
using raft::RequestVoteResponse;

namespace {

bool IsPreVoteRequest(const Message& message) {
  const auto* request = std::get_if<RequestVote>(&message.payload);
  return request != nullptr && request->pre_vote;
}

bool IsGrantedPreVote(const Message& message) {
  const auto* response = std::get_if<RequestVoteResponse>(&message.payload);
  return response != nullptr && response->pre_vote && response->granted;
}

}  // namespace

std::vector<std::string> CheckBeforeWrite(const raft::LogReader& store,
                                          const raft::HardState& durable,
                                          const raft::Ready& ready) {
  std::vector<std::string> problems;
  const bool term_or_vote_changed =
      ready.hard_state.has_value() &&
      (ready.hard_state->term != durable.term ||
       ready.hard_state->voted_for != durable.voted_for);
  // Paper Figure 2: term, vote and entries are on stable storage before the
  // server answers; a commit-only change needs no sync.
  const bool sync_needed = term_or_vote_changed || ready.snapshot.has_value() ||
                           !ready.entries.empty();
  if (ready.must_sync != sync_needed) {
    problems.push_back(absl::StrCat("must_sync is ", ready.must_sync,
                                    " but the Ready ",
                                    sync_needed ? "changes" : "does not change",
                                    " term, vote, snapshot or entries"));
  }
  if (ready.hard_state && ready.hard_state->term < durable.term) {
    problems.push_back(absl::StrCat("the term goes back from ",
                                    durable.term.value(), " to ",
                                    ready.hard_state->term.value()));
  }
  for (const Message& message : ready.messages) {
    if (!raft::IsRequest(message)) {
      problems.push_back(absl::StrCat("a response left before the write: ",
                                      Describe(message)));
    }
    if (term_or_vote_changed) {
      problems.push_back(
          absl::StrCat("a message left before a term or vote change was "
                       "written: ",
                       Describe(message)));
    }
    if (IsPreVoteRequest(message)) {
      if (message.term != durable.term.next()) {
        problems.push_back(
            absl::StrCat("a pre-vote names a term other than the next: ",
                         Describe(message)));
      }
    } else if (message.term > durable.term) {
      problems.push_back(absl::StrCat("term not durable: ", Describe(message)));
    }
  }
  // The driver may apply committed entries before the write
  // (raft/core/ready.h): each must be stored already, with its term, and lie
  // before the first entry the write replaces.
  for (const raft::Entry& entry : ready.committed_entries) {
    absl::StatusOr<raft::Term> stored = store.TermAt(entry.index);
    if (!stored.ok() || *stored != entry.term) {
      problems.push_back(absl::StrCat(
          "committed entry not durable before the write: ", Describe(entry)));
    }
    if (!ready.entries.empty() && entry.index >= ready.entries.front().index) {
      problems.push_back(absl::StrCat(
          "the write replaces a committed entry: ", Describe(entry),
          " from index ", ready.entries.front().index.value()));
    }
  }
  return problems;
}

std::vector<std::string> CheckAfterWrite(raft::NodeId self,
                                         const raft::LogReader& store,
                                         const raft::HardState& durable,
                                         const raft::Ready& ready) {
  std::vector<std::string> problems;
  std::vector<const Message*> messages;
  for (const Message& message : ready.messages) messages.push_back(&message);
  for (const Message& message : ready.messages_after_persist) {
    messages.push_back(&message);
  }
  for (const Message* message : messages) {
    if (!IsPreVoteRequest(*message) && !IsGrantedPreVote(*message) &&
        message->term > durable.term) {
      problems.push_back(
          absl::StrCat("term not durable: ", Describe(*message)));
    }
    if (const auto* grant = std::get_if<RequestVoteResponse>(&message->payload);
        grant != nullptr && grant->granted && !grant->pre_vote) {
      // Durable once the vote is stored, or once a later term is (the node
      // can then never vote in the grant's term again).
      if (!(durable.term > message->term ||
            (durable.term == message->term &&
             durable.voted_for == message->to))) {
        problems.push_back(
            absl::StrCat("vote not durable: ", Describe(*message), " durable ",
                         Describe(durable)));
      }
    }
    if (const auto* vote = std::get_if<RequestVote>(&message->payload);
        vote != nullptr && !vote->pre_vote && message->term == durable.term &&
        durable.voted_for != self) {
      problems.push_back(
          absl::StrCat("own vote not durable: ", Describe(*message)));
    }
    // An acknowledgement to the leader of the durable term covers durable
    // entries. One to a leader of an older term may have been overtaken in
    // the same Ready by a newer leader truncating the entries it covers:
    // harmless, because that newer leader won votes from a majority whose
    // logs did not hold them, so the older leader cannot gather a majority
    // for them (paper §5.4.3).
    if (const auto* ack = std::get_if<AppendEntriesResponse>(&message->payload);
        ack != nullptr && ack->success && message->term == durable.term &&
        ack->index > store.LastIndex()) {
      problems.push_back(
          absl::StrCat("acknowledged entries not durable: ", Describe(*message),
                       " stored through ", store.LastIndex().value()));
    }
  }
  for (const raft::Entry& entry : ready.committed_entries) {
    absl::StatusOr<raft::Term> stored = store.TermAt(entry.index);
    if (!stored.ok() || *stored != entry.term) {
      problems.push_back(
          absl::StrCat("applied entry not durable: ", Describe(entry)));
    }
  }
  if (durable.commit > store.LastIndex()) {
    problems.push_back(absl::StrCat("stored commit ", durable.commit.value(),
                                    " past the stored log ",
                                    store.LastIndex().value()));
  }
  return problems;
}

}  // namespace driftwood::testing
