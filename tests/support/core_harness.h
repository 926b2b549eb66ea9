// Driftwood: the harness of the paper and pitfall tests: one Node over a
// MemoryLogStore driven through the ReadyProcessor, and helpers to build
// messages and pick them out of Readies. Uses Catch2 assertions; include only
// from Catch2 test files.
#ifndef DRIFTWOOD_TESTS_SUPPORT_CORE_HARNESS_H_
#define DRIFTWOOD_TESTS_SUPPORT_CORE_HARNESS_H_

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/core/node.h"
#include "raft/server/ready_processor.h"
#include "raft/storage/memory_log_store.h"
#include "tests/support/contract_check.h"

namespace driftwood::raft {

using Ids = std::vector<uint64_t>;

inline Configuration MakeConfiguration(const Ids& voters,
                                       const Ids& learners = {},
                                       const Ids& voters_outgoing = {}) {
  Configuration configuration;
  for (uint64_t id : voters) configuration.voters.emplace_back(id);
  for (uint64_t id : voters_outgoing) {
    configuration.voters_outgoing.emplace_back(id);
  }
  for (uint64_t id : learners) configuration.learners.emplace_back(id);
  return configuration;
}

inline std::vector<Entry> EntriesWithTerms(const std::vector<uint64_t>& terms,
                                           uint64_t first_index = 1) {
  std::vector<Entry> entries;
  for (size_t i = 0; i < terms.size(); ++i) {
    entries.push_back(Entry{Term(terms[i]), LogIndex(first_index + i),
                            EntryType::kNormal,
                            absl::StrCat("e", first_index + i)});
  }
  return entries;
}

template <typename T>
std::vector<std::pair<Message, T>> OfType(
    const std::vector<Message>& messages) {
  std::vector<std::pair<Message, T>> result;
  for (const Message& message : messages) {
    if (const T* payload = std::get_if<T>(&message.payload)) {
      result.emplace_back(message, *payload);
    }
  }
  return result;
}

template <typename T>
std::pair<Message, T> Only(const std::vector<Message>& messages) {
  auto matching = OfType<T>(messages);
  INFO("messages: " << messages.size());
  REQUIRE(matching.size() == 1);
  return matching.front();
}

inline std::vector<Message> To(const std::vector<Message>& messages,
                               uint64_t to) {
  std::vector<Message> result;
  for (const Message& message : messages) {
    if (message.to == NodeId(to)) result.push_back(message);
  }
  return result;
}

inline std::vector<Message> AllMessages(const Ready& ready) {
  std::vector<Message> messages = ready.messages;
  messages.insert(messages.end(), ready.messages_after_persist.begin(),
                  ready.messages_after_persist.end());
  return messages;
}

// One node over its own MemoryLogStore, driven by the ReadyProcessor (the one
// implementation of the driver contract), checking the contract on every Ready
// (tests/support/contract_check.h) and recording what it applied, the read
// states, the snapshots it installed and the messages it sent.
class TestNode {
 public:
  struct Options {
    Ids voters = {1, 2, 3};
    Ids voters_outgoing;
    Ids learners;
    bool pre_vote = false;
    bool check_quorum = false;
    std::vector<uint64_t> log_terms;  // entry i+1 has term log_terms[i]
    HardState hard_state;
    uint64_t election_ticks = 10;
    uint64_t heartbeat_ticks = 1;
    uint64_t max_message_bytes = 1 << 20;
    uint64_t max_uncommitted_bytes = 64 << 20;
    uint64_t max_committed_bytes_per_ready = 64 << 20;
    uint64_t snapshot_timeout_ticks = 100;
    uint64_t seed = 7;
    // Config::applied of the first start.
    uint64_t applied = 0;
  };

  TestNode(uint64_t id, const Options& options)
      : store_(MakeConfiguration(options.voters, options.learners,
                                 options.voters_outgoing)),
        voters_(options.voters) {
    for (uint64_t outgoing : options.voters_outgoing) {
      if (std::find(voters_.begin(), voters_.end(), outgoing) ==
          voters_.end()) {
        voters_.push_back(outgoing);
      }
    }
    PersistRequest request;
    request.entries = EntriesWithTerms(options.log_terms);
    request.hard_state = options.hard_state;
    REQUIRE(store_.Persist(request).ok());
    config_.id = NodeId(id);
    config_.pre_vote = options.pre_vote;
    config_.check_quorum = options.check_quorum;
    config_.election_ticks = options.election_ticks;
    config_.heartbeat_ticks = options.heartbeat_ticks;
    config_.max_message_bytes = options.max_message_bytes;
    config_.max_uncommitted_bytes = options.max_uncommitted_bytes;
    config_.max_committed_bytes_per_ready =
        options.max_committed_bytes_per_ready;
    config_.snapshot_timeout_ticks = options.snapshot_timeout_ticks;
    config_.seed = options.seed;
    config_.applied = LogIndex(options.applied);
    Start();
  }

  Node* operator->() { return node_.get(); }
  const Node* operator->() const { return node_.get(); }
  MemoryLogStore& store() { return store_; }
  NodeId id() const { return config_.id; }

  // A crash and restart: a new Node over the same store, with the state
  // machine as applied so far. A Ready in progress is lost.
  void Restart() {
    config_.applied = node_->applied_index();
    Start();
  }

  // Takes a Ready without performing it.
  Ready Take() {
    sent_.clear();
    REQUIRE(processor_->Take());
    return processor_->ready();
  }
  // Performs the Ready taken last (`ready` is that Ready) through the
  // ReadyProcessor and checks the driver contract on the way.
  void Finish(const Ready& ready) {
    REQUIRE(processor_->busy());
    REQUIRE(ready.number == processor_->ready().number);
    for (const std::string& problem : testing::CheckBeforeWrite(
             store_, store_.hard_state(), processor_->ready())) {
      FAIL_CHECK("driver contract: " << problem);
    }
    processor_->SendNow();
    if (processor_->hands_over_before_persist()) processor_->HandOver();
    REQUIRE(processor_->Persist().ok());
    for (const std::string& problem : testing::CheckAfterWrite(
             config_.id, store_, store_.hard_state(), processor_->ready())) {
      FAIL_CHECK("driver contract: " << problem);
    }
    REQUIRE(processor_->Finish().ok());
  }
  // Performs every pending Ready; returns all messages they carried.
  std::vector<Message> Drain() {
    std::vector<Message> messages;
    while (node_->HasReady()) {
      Finish(Take());
      messages.insert(messages.end(), sent_.begin(), sent_.end());
      sent_.clear();
    }
    return messages;
  }
  void Step(const Message& message) { REQUIRE(node_->Step(message).ok()); }
  void TickN(uint64_t n) {
    for (uint64_t i = 0; i < n; ++i) node_->Tick();
  }
  const std::vector<Entry>& applied() const { return applied_; }
  const std::vector<ReadState>& reads() const { return reads_; }
  const std::vector<SnapshotMeta>& snapshots() const { return snapshots_; }

  // Makes this node leader of the next term through an election (with
  // PreVote when configured) in which every voter grants its vote. Drains
  // the resulting Readies, so the leader's no-op is durable.
  void BecomeLeader() {
    node_->Campaign();
    for (int round = 0; round < 2 && node_->role() != Role::kLeader; ++round) {
      for (const auto& [message, request] : OfType<RequestVote>(Drain())) {
        Step(Message{message.to, config_.id, message.term,
                     RequestVoteResponse{true, request.pre_vote}});
      }
    }
    REQUIRE(node_->role() == Role::kLeader);
    Drain();
  }

  // Every voter acknowledges the leader's whole log (moving them to the
  // replicate state); drains the resulting Readies.
  void AckAll() {
    const LogIndex last = node_->Status().last_index;
    for (uint64_t peer : voters_) {
      if (NodeId(peer) == config_.id) continue;
      Step(Message{NodeId(peer), config_.id, node_->term(),
                   AppendEntriesResponse{true, last, {}, {}}});
    }
    Drain();
  }

 private:
  void Start() {
    processor_.reset();
    sent_.clear();
    auto node = Node::Create(config_, store_);
    REQUIRE(node.ok());
    node_ = *std::move(node);
    processor_ = std::make_unique<ReadyProcessor>(
        *node_, store_,
        ReadyProcessor::Callbacks{
            .send =
                [this](std::vector<Message>& messages) {
                  sent_.insert(sent_.end(), messages.begin(), messages.end());
                },
            .hand_over =
                [this](const Ready& ready) {
                  if (ready.snapshot) snapshots_.push_back(*ready.snapshot);
                  applied_.insert(applied_.end(),
                                  ready.committed_entries.begin(),
                                  ready.committed_entries.end());
                  reads_.insert(reads_.end(), ready.read_states.begin(),
                                ready.read_states.end());
                }});
  }

  MemoryLogStore store_;
  Ids voters_;
  Config config_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<ReadyProcessor> processor_;
  std::vector<Message> sent_;
  std::vector<Entry> applied_;
  std::vector<ReadState> reads_;
  std::vector<SnapshotMeta> snapshots_;
};

inline Message Msg(uint64_t from, uint64_t to, uint64_t term, Payload payload) {
  return Message{NodeId(from), NodeId(to), Term(term), std::move(payload)};
}

inline AppendEntries Append(uint64_t prev_index, uint64_t prev_term,
                            const std::vector<uint64_t>& entry_terms,
                            uint64_t commit) {
  return AppendEntries{LogIndex(prev_index), Term(prev_term),
                       EntriesWithTerms(entry_terms, prev_index + 1),
                       LogIndex(commit)};
}

inline AppendEntriesResponse Ack(uint64_t index) {
  return AppendEntriesResponse{true, LogIndex(index), {}, {}};
}

// Makes `n` (node 1 of {1,2,3}) leader of term 1 with entries 1 (its no-op)
// to 4 committed through follower 2, while follower 3 matched only the no-op.
inline void CommitFourWithoutFollower3(TestNode& n) {
  n.BecomeLeader();
  n.AckAll();
  for (const char* command : {"a", "b", "c"}) {
    REQUIRE(n->Propose(command).ok());
    n.Drain();
  }
  n.Step(Message{NodeId(2), NodeId(1), Term(1),
                 AppendEntriesResponse{true, LogIndex(4), {}, {}}});
  n.Drain();
  REQUIRE(n->commit_index() == LogIndex(4));
}

// Follower 3 (matched at 1) answers a heartbeat and rejects the AppendEntries
// that follows with a hint at the no-op, so the leader must reach back to
// index 2. Returns what the leader then sends to 3 (an InstallSnapshot when
// its log was compacted past 1).
inline std::vector<Message> Follower3RejectsBackToTheNoOp(TestNode& n) {
  n.Step(Message{NodeId(3), NodeId(1), Term(1), HeartbeatResponse{0}});
  std::vector<Message> sent = To(n.Drain(), 3);
  auto probes = OfType<AppendEntries>(sent);
  REQUIRE(probes.size() == 1);
  n.Step(
      Message{NodeId(3), NodeId(1), Term(1),
              AppendEntriesResponse{false, probes.front().second.prev_log_index,
                                    LogIndex(1), Term(1)}});
  return To(n.Drain(), 3);
}

// The read rounds carried by the heartbeats in `messages`, one per heartbeat.
inline std::vector<uint64_t> HeartbeatRounds(
    const std::vector<Message>& messages) {
  std::vector<uint64_t> rounds;
  for (const auto& [message, heartbeat] : OfType<Heartbeat>(messages)) {
    rounds.push_back(heartbeat.read_round);
  }
  return rounds;
}

// Takes the Ready that starts a read round and returns the round's id, after
// checking every follower got a heartbeat carrying it.
inline uint64_t TakeReadRound(TestNode& n, size_t followers) {
  Ready ready = n.Take();
  const std::vector<uint64_t> rounds = HeartbeatRounds(ready.messages);
  n.Finish(ready);
  REQUIRE(rounds.size() == followers);
  for (uint64_t round : rounds) CHECK(round == rounds.front());
  CHECK(rounds.front() > 0);
  return rounds.front();
}

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_TESTS_SUPPORT_CORE_HARNESS_H_
