#include "jepsen/checker/register_checker.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace driftwood::jepsen {
namespace {

using Clock = std::chrono::steady_clock;

// The register: absent (null) or an integer.
struct State {
  bool present = false;
  int64_t value = 0;  // 0 when absent
  bool operator==(const State&) const = default;
};

std::string Describe(const State& state) {
  return state.present ? absl::StrCat(state.value) : std::string("null");
}

// An op as the search sees it. `finite` ops (ok) have a return event and an
// output; the others (info writes and cas) return at +infinity with any
// output.
struct SearchOp {
  size_t id = 0;
  Function f = Function::kRead;
  bool finite = true;
  int64_t call = 0;
  int64_t ret = kInfinity;
  int64_t arg1 = 0;
  int64_t arg2 = 0;
  State output;  // reads only
};

// The register's sequential specification.
bool Step(const SearchOp& op, const State& state, State* next) {
  switch (op.f) {
    case Function::kRead:
      *next = state;
      return state == op.output;
    case Function::kWrite:
      *next = State{true, op.arg1};
      return true;
    case Function::kCas:
      *next = State{true, op.arg2};
      return state.present && state.value == op.arg1;
    case Function::kAppend:
      break;
  }
  return false;
}

// SplitMix64's finalizer.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t StateHash(const State& state) {
  return Mix(static_cast<uint64_t>(state.value) ^
             (state.present ? 0x5bd1e9955bd1e995ULL : 0));
}

// The set of configurations (linearized ops, register state) the search has
// visited (Lowe 2017). Keyed by a hash; the bitsets are stored and compared
// exactly, so hash collisions cost time, never correctness.
class ConfigurationCache {
 public:
  explicit ConfigurationCache(size_t words) : words_(words) {}

  // Adds the configuration; false if it was already present.
  bool Insert(uint64_t hash, const std::vector<uint64_t>& bits,
              const State& state) {
    auto [it, inserted] = heads_.try_emplace(hash, kNone);
    for (uint32_t node = it->second; node != kNone; node = nodes_[node].next) {
      if (nodes_[node].state == state &&
          std::equal(bits.begin(), bits.end(),
                     pool_.begin() + static_cast<std::ptrdiff_t>(
                                         static_cast<size_t>(node) * words_))) {
        return false;
      }
    }
    const uint32_t node = static_cast<uint32_t>(nodes_.size());
    nodes_.push_back(Node{it->second, state});
    pool_.insert(pool_.end(), bits.begin(), bits.end());
    it->second = node;
    return true;
  }

  size_t size() const { return nodes_.size(); }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Node {
    uint32_t next;
    State state;
  };

  const size_t words_;
  absl::flat_hash_map<uint64_t, uint32_t> heads_;
  std::vector<Node> nodes_;
  // nodes_[i]'s bitset is pool_[i * words_, (i + 1) * words_).
  std::vector<uint64_t> pool_;
};

// One key's search: the Wing and Gong (1993) algorithm over a doubly linked
// list of call and return events, with memoisation (Lowe 2017), in the
// iterative form of Porcupine (Athalye 2017).
class Search {
 public:
  Search(std::vector<SearchOp> ops, const RegisterOptions& options)
      : ops_(std::move(ops)),
        options_(options),
        bits_((ops_.size() + 63) / 64, 0),
        cache_(bits_.size()) {
    BuildEntries();
  }

  // kValid, kInvalid (see deepest_*), or kUnknown (see unknown_reason()).
  Verdict Run();

  size_t configurations() const { return cache_.size(); }
  const std::string& unknown_reason() const { return unknown_reason_; }
  // The deepest partial linearization reached (search op indices, in
  // order), the state after it, and the op whose return it could not pass.
  const std::vector<uint32_t>& deepest() const { return deepest_; }
  const State& deepest_state() const { return deepest_state_; }
  uint32_t culprit() const { return culprit_; }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Entry {
    int64_t time;
    uint32_t op;
    bool is_call;
    // For a call of a finite op: the node of its return; else kNone.
    uint32_t match;
  };
  struct Frame {
    uint32_t node;  // the call's node
    State state;    // the state before the call was linearized
  };

  void BuildEntries();
  // Removes a call and its return from the list; Unlift undoes the latest
  // Lift still in effect.
  void Lift(uint32_t node) {
    Unlink(node);
    if (entries_[node].match != kNone) Unlink(entries_[node].match);
  }
  void Unlift(uint32_t node) {
    if (entries_[node].match != kNone) Relink(entries_[node].match);
    Relink(node);
  }
  void Unlink(uint32_t node) {
    next_[prev_[node]] = next_[node];
    prev_[next_[node]] = prev_[node];
  }
  void Relink(uint32_t node) {
    next_[prev_[node]] = node;
    prev_[next_[node]] = node;
  }
  void Flip(uint32_t op) { bits_[op / 64] ^= uint64_t{1} << (op % 64); }

  std::vector<SearchOp> ops_;
  const RegisterOptions& options_;
  // Node 0 is the head, node entries_.size() - 1 the tail; the nodes
  // between are the events sorted by time, calls before returns at equal
  // times.
  std::vector<Entry> entries_;
  std::vector<uint32_t> next_;
  std::vector<uint32_t> prev_;
  std::vector<uint64_t> bits_;
  // Zobrist hashing of the linearized set.
  std::vector<uint64_t> zobrist_;
  ConfigurationCache cache_;
  std::string unknown_reason_;
  std::vector<uint32_t> deepest_;
  State deepest_state_;
  uint32_t culprit_ = 0;
  bool have_deepest_ = false;
};

void Search::BuildEntries() {
  std::vector<Entry> events;
  events.reserve(ops_.size() * 2);
  for (uint32_t i = 0; i < ops_.size(); ++i) {
    events.push_back(Entry{ops_[i].call, i, true, kNone});
    if (ops_[i].finite) events.push_back(Entry{ops_[i].ret, i, false, kNone});
  }
  std::sort(events.begin(), events.end(), [](const Entry& a, const Entry& b) {
    if (a.time != b.time) return a.time < b.time;
    if (a.is_call != b.is_call) return a.is_call;
    return a.op < b.op;
  });
  entries_.clear();
  entries_.push_back(Entry{0, kNone, false, kNone});  // head
  std::vector<uint32_t> call_node(ops_.size(), kNone);
  for (const Entry& event : events) {
    const uint32_t node = static_cast<uint32_t>(entries_.size());
    if (event.is_call) {
      call_node[event.op] = node;
    } else {
      entries_[call_node[event.op]].match = node;
    }
    entries_.push_back(event);
  }
  entries_.push_back(Entry{kInfinity, kNone, false, kNone});  // tail
  const uint32_t count = static_cast<uint32_t>(entries_.size());
  next_.resize(count);
  prev_.resize(count);
  for (uint32_t node = 0; node < count; ++node) {
    next_[node] = node + 1 < count ? node + 1 : node;
    prev_[node] = node > 0 ? node - 1 : node;
  }
  zobrist_.resize(ops_.size());
  for (size_t i = 0; i < ops_.size(); ++i) zobrist_[i] = Mix(i);
}

Verdict Search::Run() {
  size_t remaining = 0;
  for (const SearchOp& op : ops_) remaining += op.finite ? 1 : 0;
  if (remaining == 0) return Verdict::kValid;
  const uint32_t tail = static_cast<uint32_t>(entries_.size() - 1);
  // Capped so that the conversion cannot overflow.
  const double budget = std::min(options_.key_budget_seconds, 1e9);
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(budget));
  std::vector<Frame> stack;
  State state;
  uint64_t linearized_hash = 0;
  uint32_t node = next_[0];
  uint64_t steps = 0;
  while (true) {
    if ((++steps & 0xfff) == 0 && Clock::now() > deadline) {
      unknown_reason_ = absl::StrFormat(
          "time budget of %g s exhausted after %d configurations",
          options_.key_budget_seconds, cache_.size());
      return Verdict::kUnknown;
    }
    if (node != tail && entries_[node].is_call) {
      const uint32_t op = entries_[node].op;
      State after;
      if (Step(ops_[op], state, &after)) {
        const uint64_t hash = linearized_hash ^ zobrist_[op];
        Flip(op);
        if (cache_.Insert(hash ^ StateHash(after), bits_, after)) {
          stack.push_back(Frame{node, state});
          state = after;
          linearized_hash = hash;
          Lift(node);
          if (ops_[op].finite && --remaining == 0) return Verdict::kValid;
          if (cache_.size() > options_.max_configurations) {
            unknown_reason_ = absl::StrCat(
                "more than ", options_.max_configurations, " configurations");
            return Verdict::kUnknown;
          }
          node = next_[0];
          continue;
        }
        Flip(op);
      }
      node = next_[node];
      continue;
    }
    // A return (or, defensively, the tail): the op returning must be
    // linearized before anything after it, and no candidate before it
    // worked from here, so backtrack.
    if (!have_deepest_ || stack.size() > deepest_.size()) {
      have_deepest_ = true;
      deepest_.clear();
      for (const Frame& frame : stack) {
        deepest_.push_back(entries_[frame.node].op);
      }
      deepest_state_ = state;
      culprit_ = node != tail ? entries_[node].op : 0;
    }
    if (stack.empty()) return Verdict::kInvalid;
    const Frame top = stack.back();
    stack.pop_back();
    const uint32_t op = entries_[top.node].op;
    state = top.state;
    Flip(op);
    linearized_hash ^= zobrist_[op];
    Unlift(top.node);
    if (ops_[op].finite) ++remaining;
    node = next_[top.node];
  }
}

// The value an op needs the register to hold, if any.
bool NeededValue(const SearchOp& op, int64_t* value) {
  if (op.f == Function::kRead && op.output.present) {
    *value = op.output.value;
    return true;
  }
  if (op.f == Function::kCas) {
    *value = op.arg1;
    return true;
  }
  return false;
}

}  // namespace

const char* VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kValid:
      return "valid";
    case Verdict::kInvalid:
      return "invalid";
    case Verdict::kUnknown:
      return "unknown";
  }
  return "?";
}

RegisterKeyResult CheckRegisterKey(const History& history, uint32_t key,
                                   const RegisterOptions& options) {
  const auto start = Clock::now();
  RegisterKeyResult result{.key = key};
  // Values some op observes: returned by an ok read, or expected by a cas
  // that may have taken effect.
  absl::flat_hash_set<int64_t> observed;
  for (size_t id : history.ops_by_key[key]) {
    const Operation& op = history.ops[id];
    if (op.f == Function::kRead && op.outcome == Outcome::kOk &&
        op.read.kind == ReadValue::Kind::kInt) {
      observed.insert(op.read.integer);
    } else if (op.f == Function::kCas && op.outcome != Outcome::kFail) {
      observed.insert(op.arg1);
    }
  }
  std::vector<SearchOp> ops;
  for (size_t id : history.ops_by_key[key]) {
    const Operation& op = history.ops[id];
    if (op.outcome == Outcome::kFail) continue;
    if (op.f == Function::kRead && op.outcome != Outcome::kOk) continue;
    // An info write or cas whose value no op observes is dropped: in any
    // linearization it is followed only by ops that do not look at the
    // value (writes), so removing it keeps the linearization valid, and an
    // info op may always be left out (it may never take effect). This is
    // exact, and it removes the exponential case of many crashed writes on
    // one key.
    if (op.outcome == Outcome::kInfo &&
        ((op.f == Function::kWrite && !observed.contains(op.arg1)) ||
         (op.f == Function::kCas && !observed.contains(op.arg2)))) {
      ++result.pruned;
      continue;
    }
    SearchOp search_op{
        .id = id,
        .f = op.f,
        .finite = op.outcome == Outcome::kOk,
        .call = op.invoke_time,
        .ret = op.outcome == Outcome::kOk ? op.complete_time : kInfinity,
        .arg1 = op.arg1,
        .arg2 = op.arg2};
    if (op.f == Function::kRead) {
      search_op.output = op.read.kind == ReadValue::Kind::kInt
                             ? State{true, op.read.integer}
                             : State{};
    }
    ops.push_back(search_op);
  }
  result.ops = ops.size();
  if (ops.size() > options.max_ops_per_key) {
    result.verdict = Verdict::kUnknown;
    result.reason = absl::StrCat("too many ops (", ops.size(), " > ",
                                 options.max_ops_per_key, ")");
    return result;
  }
  Search search(ops, options);
  result.verdict = search.Run();
  result.configurations = search.configurations();
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (result.verdict == Verdict::kUnknown) {
    result.reason = search.unknown_reason();
    return result;
  }
  if (result.verdict == Verdict::kValid) return result;

  const SearchOp& culprit = ops[search.culprit()];
  const Operation& culprit_op = history.ops[culprit.id];
  result.culprit = culprit.id;
  result.linearized = search.deepest().size();
  result.state_present = search.deepest_state().present;
  result.state_value = search.deepest_state().value;
  result.reason =
      absl::StrCat("after linearizing ", result.linearized, " of ", ops.size(),
                   " ops (register = ", Describe(search.deepest_state()), "), ",
                   DescribeValue(culprit_op), " (index ",
                   culprit_op.invoke_index, ") fits no order");
  // The last op invoked before the culprit returned that writes the value
  // the culprit needs, if the culprit needs one.
  int64_t needed = 0;
  const bool needs = NeededValue(culprit, &needed);
  const SearchOp* writer = nullptr;
  for (const SearchOp& op : ops) {
    const bool writes = (op.f == Function::kWrite && op.arg1 == needed) ||
                        (op.f == Function::kCas && op.arg2 == needed);
    if (needs && writes && op.call <= culprit.ret &&
        (writer == nullptr || op.call > writer->call)) {
      writer = &op;
    }
  }
  if (needs && writer == nullptr) {
    absl::StrAppend(&result.reason, "; no ok or info op writes ", needed,
                    " to ", history.keys[key], " before it returns");
  }

  auto show = [&](size_t id) {
    if (result.shown_ops.size() >= RegisterKeyResult::kMaxShownOps) return;
    if (std::find(result.shown_ops.begin(), result.shown_ops.end(), id) ==
        result.shown_ops.end()) {
      result.shown_ops.push_back(id);
    }
  };
  show(culprit.id);
  if (writer != nullptr) show(writer->id);
  const std::vector<uint32_t>& deepest = search.deepest();
  for (size_t i = deepest.size() > 3 ? deepest.size() - 3 : 0;
       i < deepest.size(); ++i) {
    show(ops[deepest[i]].id);
  }
  for (const SearchOp& op : ops) {
    if (op.call <= culprit.ret && op.ret >= culprit.call) show(op.id);
  }
  return result;
}

RegisterResult CheckRegisters(const History& history,
                              const RegisterOptions& options) {
  const auto start = Clock::now();
  RegisterResult result;
  for (uint32_t key = 0; key < history.keys.size(); ++key) {
    if (history.key_kinds[key] != KeyKind::kRegister) continue;
    ++result.keys;
    RegisterKeyResult key_result = CheckRegisterKey(history, key, options);
    result.max_configurations =
        std::max(result.max_configurations, key_result.configurations);
    result.max_ops = std::max(result.max_ops, key_result.ops);
    if (key_result.verdict != Verdict::kUnknown) {
      for (size_t id : history.ops_by_key[key]) {
        if (!history.ops[id].open) ++result.checked_ops;
      }
    }
    if (key_result.verdict == Verdict::kInvalid) {
      result.verdict = Verdict::kInvalid;
    } else if (key_result.verdict == Verdict::kUnknown &&
               result.verdict == Verdict::kValid) {
      result.verdict = Verdict::kUnknown;
    }
    if (key_result.verdict != Verdict::kValid) {
      result.failures.push_back(std::move(key_result));
    }
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

}  // namespace driftwood::jepsen
