// Driftwood: the plain value types of the Raft core.
//
// Term, LogIndex and NodeId are distinct strong types so that the classic
// index/term mix-up (TermAt(term)) does not compile. Everything here is a plain
// value: copyable, comparable, no hidden state. Thread-compatible.
#ifndef DRIFTWOOD_RAFT_CORE_TYPES_H_
#define DRIFTWOOD_RAFT_CORE_TYPES_H_

#include <compare>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace driftwood::raft {

// RAFT_CHECK(condition, message): an invariant that stays on in release builds.
// A violation prints the message with the source location and aborts: a
// consensus core that keeps running after an invariant broke can lose
// acknowledged data.
[[noreturn]] void CheckFailed(const char* file, int line, const char* condition,
                              const std::string& message);
#define RAFT_CHECK(condition, message)                               \
  do {                                                               \
    if (!(condition)) [[unlikely]] {                                 \
      ::driftwood::raft::CheckFailed(__FILE__, __LINE__, #condition, \
                                     (message));                     \
    }                                                                \
  } while (false)

// A tagged unsigned 64-bit value. Comparable with its own kind only; arithmetic
// is limited to next()/prev() and offsets by a plain count, never to mixing
// kinds.
template <typename Tag>
class StrongU64 {
 public:
  constexpr StrongU64() = default;
  constexpr explicit StrongU64(uint64_t value) : value_(value) {}

  constexpr uint64_t value() const { return value_; }
  constexpr StrongU64 next() const { return StrongU64(value_ + 1); }
  // REQUIRES: value() > 0.
  constexpr StrongU64 prev() const { return StrongU64(value_ - 1); }

  constexpr auto operator<=>(const StrongU64&) const = default;

 private:
  uint64_t value_ = 0;
};

struct TermTag {};
struct LogIndexTag {};
struct NodeIdTag {};

// A Raft term (paper §5.1). Term 0 precedes every election.
using Term = StrongU64<TermTag>;
// A position in the replicated log (paper §5.3). Index 0 is the empty log.
using LogIndex = StrongU64<LogIndexTag>;
// A server's identity. 0 means "nobody" (kNoNode): no vote, no known leader.
using NodeId = StrongU64<NodeIdTag>;

inline constexpr NodeId kNoNode{};

// `index` shifted by `count` positions; used for log arithmetic.
constexpr LogIndex operator+(LogIndex index, uint64_t count) {
  return LogIndex(index.value() + count);
}
// REQUIRES: index.value() >= count.
constexpr LogIndex operator-(LogIndex index, uint64_t count) {
  return LogIndex(index.value() - count);
}
// The number of positions from `from` to `to`. REQUIRES: from <= to.
constexpr uint64_t Distance(LogIndex from, LogIndex to) {
  return to.value() - from.value();
}

// Identifies one log entry: by Log Matching (paper §5.3) two logs holding the
// same (term, index) hold the same entry and the same prefix.
struct EntryId {
  Term term;
  LogIndex index;

  auto operator<=>(const EntryId&) const = default;
};

enum class EntryType : uint8_t {
  // Opaque application data, handed to the state machine.
  kNormal = 0,
  // The empty entry a new leader appends to commit its term (paper §5.4.2,
  // thesis §6.4). Never carries data.
  kNoOp = 1,
};

// The bytes of an entry: immutable and shared, so that copying an Entry (into
// a Ready, into each follower's AppendEntries, into the unstable log) costs a
// reference count, not an allocation and a copy of the payload.
class EntryData {
 public:
  EntryData() = default;
  EntryData(std::string bytes)  // NOLINT(google-explicit-constructor)
      : bytes_(bytes.empty()
                   ? nullptr
                   : std::make_shared<const std::string>(std::move(bytes))) {}
  EntryData(const char* bytes)  // NOLINT(google-explicit-constructor)
      : EntryData(std::string(bytes)) {}

  const std::string& str() const { return bytes_ ? *bytes_ : Empty(); }
  std::string_view view() const { return str(); }
  size_t size() const { return bytes_ ? bytes_->size() : 0; }
  bool empty() const { return size() == 0; }

  friend bool operator==(const EntryData& a, const EntryData& b) {
    return a.bytes_ == b.bytes_ || a.view() == b.view();
  }
  friend bool operator==(const EntryData& a, std::string_view b) {
    return a.view() == b;
  }
  friend bool operator==(const EntryData& a, const std::string& b) {
    return a.view() == b;
  }
  friend bool operator==(const EntryData& a, const char* b) {
    return a.view() == b;
  }

 private:
  static const std::string& Empty() {
    static const std::string* const kEmpty = new std::string();
    return *kEmpty;
  }
  std::shared_ptr<const std::string> bytes_;
};

// One log entry as the core sees it.
struct Entry {
  Term term;
  LogIndex index;
  EntryType type = EntryType::kNormal;
  EntryData data;

  EntryId id() const { return {term, index}; }
  // The size charged against message and inflight byte limits.
  uint64_t ByteSize() const { return data.size() + kOverheadBytes; }

  bool operator==(const Entry&) const = default;

  // Fixed per-entry cost (term, index, type) so that empty entries are not
  // free.
  static constexpr uint64_t kOverheadBytes = 24;
};

// Raft's persistent state on all servers (paper Figure 2), plus the commit
// index, which is stored without sync so that a restart need not wait for a
// leader to learn how far the log is committed.
struct HardState {
  Term term;
  NodeId voted_for;
  LogIndex commit;

  bool operator==(const HardState&) const = default;
};

// The cluster configuration: who votes and who only replicates. `voters` is the
// current majority config; `voters_outgoing` is non-empty only during a joint
// configuration (thesis §4.3), in which case a decision needs a majority of
// each. All lists are sorted and free of duplicates; a node is in at most one
// of voters ∪ voters_outgoing and learners.
struct Configuration {
  std::vector<NodeId> voters;
  std::vector<NodeId> voters_outgoing;
  std::vector<NodeId> learners;

  bool operator==(const Configuration&) const = default;

  bool joint() const { return !voters_outgoing.empty(); }
  bool IsVoter(NodeId id) const;
  bool IsLearner(NodeId id) const;
  // Every node that receives the log: voters of both halves and learners,
  // sorted.
  std::vector<NodeId> AllNodes() const;
  // Sorts, deduplicates and checks the invariants above; empty string when
  // valid, otherwise what is wrong.
  std::string Validate() const;
};

// Describes a snapshot: the state machine after applying every entry through
// `index`, whose term is `term`, with the configuration as of that index.
struct SnapshotMeta {
  LogIndex index;
  Term term;
  Configuration configuration;

  bool operator==(const SnapshotMeta&) const = default;
};

// A confirmed linearizable read (thesis §6.4): once the state machine has
// applied through `index`, a read for `request_id` may be served.
struct ReadState {
  uint64_t request_id = 0;
  LogIndex index;

  bool operator==(const ReadState&) const = default;
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_CORE_TYPES_H_
