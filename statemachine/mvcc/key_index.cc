#include "statemachine/mvcc/key_index.h"

#include <algorithm>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "statemachine/ordered_kv.h"

namespace driftwood::mvcc {

namespace {

// The btree's string comparator takes absl's string_view, which this abseil
// build does not alias to std::string_view.
absl::string_view Lookup(std::string_view key) {
  return absl::string_view(key.data(), key.size());
}

// The first of `changes` after `revision`.
template <typename Changes>
auto FirstAfter(const Changes& changes, int64_t revision) {
  return std::upper_bound(changes.begin(), changes.end(), revision,
                          [](int64_t r, const KeyIndex::Change& change) {
                            return r < change.revision;
                          });
}

}  // namespace

size_t KeyIndex::CachedBytes(const mvccpb::KeyValue& kv) {
  // The value, plus what the message and the map entry cost besides.
  return kv.value().size() + 96;
}

void KeyIndex::Uncache(KeyState& state) {
  if (state.cached == nullptr) return;
  value_cache_bytes_ -= CachedBytes(*state.cached);
  state.cached.reset();
}

void KeyIndex::Record(std::string_view key, Change change,
                      const mvccpb::KeyValue* put) {
  std::unique_lock lock(mutex_);
  auto it = keys_.find(Lookup(key));
  if (it == keys_.end()) {
    it = keys_.try_emplace(std::string(key)).first;
    order_.insert(&*it);
  }
  KeyState& state = it->second;
  state.changes.push_back(change);
  if (put == nullptr) {
    Uncache(state);
    return;
  }
  const size_t bytes = CachedBytes(*put);
  const size_t held =
      state.cached != nullptr ? CachedBytes(*state.cached) : size_t{0};
  if (value_cache_bytes_ - held + bytes > value_cache_budget_) {
    // Over budget: this key is read back from its record when needed.
    Uncache(state);
    return;
  }
  if (state.cached == nullptr) {
    state.cached = std::make_unique<mvccpb::KeyValue>();
  }
  value_cache_bytes_ = value_cache_bytes_ - held + bytes;
  mvccpb::KeyValue& cached = *state.cached;
  cached.set_create_revision(put->create_revision());
  cached.set_mod_revision(put->mod_revision());
  cached.set_version(put->version());
  cached.set_value(put->value());
  cached.set_lease(put->lease());
}

size_t KeyIndex::CompactedPrefix(const Changes& changes, int64_t revision) {
  auto count =
      static_cast<size_t>(FirstAfter(changes, revision) - changes.begin());
  // The newest put at or before `revision` is what reads at `revision` and
  // later see until the key changes again: it stays.
  if (count > 0 && !changes[count - 1].deleted) --count;
  return count;
}

void KeyIndex::Prune(int64_t revision) {
  std::unique_lock lock(mutex_);
  for (auto it = order_.begin(); it != order_.end();) {
    // The map's nodes are its own; the order only points at them.
    auto& entry = const_cast<Entry&>(**it);
    Changes& changes = entry.second.changes;
    const size_t removed = CompactedPrefix(changes, revision);
    changes.erase(changes.begin(),
                  changes.begin() + static_cast<std::ptrdiff_t>(removed));
    if (changes.empty()) {
      Uncache(entry.second);
      it = order_.erase(it);
      keys_.erase(keys_.find(Lookup(entry.first)));
    } else {
      ++it;
    }
  }
  pruned_through_ = std::max(pruned_through_, revision);
}

void KeyIndex::Clear() {
  std::unique_lock lock(mutex_);
  order_.clear();
  keys_.clear();
  pruned_through_ = 0;
  value_cache_bytes_ = 0;
}

std::optional<KeyIndex::Visible> KeyIndex::Newest(std::string_view key) const {
  mvccpb::KeyValue cached;
  bool from_cache = false;
  std::optional<Change> change = NewestInto(key, &cached, &from_cache);
  if (!change.has_value()) return std::nullopt;
  Visible newest{.key = std::string(key), .change = *change};
  if (from_cache) newest.cached = std::move(cached);
  return newest;
}

std::optional<KeyIndex::Change> KeyIndex::NewestInto(std::string_view key,
                                                     mvccpb::KeyValue* cached,
                                                     bool* from_cache) const {
  std::shared_lock lock(mutex_);
  auto it = keys_.find(Lookup(key));
  *from_cache = it != keys_.end() && it->second.cached != nullptr;
  if (it == keys_.end()) return std::nullopt;
  // Only a put's key-value is cached (Record uncaches on a deletion).
  if (*from_cache) *cached = *it->second.cached;
  return it->second.changes.back();
}

std::optional<KeyIndex::Change> KeyIndex::TakeNewest(std::string_view key,
                                                     mvccpb::KeyValue* cached,
                                                     bool* from_cache) {
  std::unique_lock lock(mutex_);
  auto it = keys_.find(Lookup(key));
  *from_cache = it != keys_.end() && it->second.cached != nullptr;
  if (it == keys_.end()) return std::nullopt;
  KeyState& state = it->second;
  if (*from_cache) {
    value_cache_bytes_ -= CachedBytes(*state.cached);
    *cached = std::move(*state.cached);
    state.cached.reset();
  }
  return state.changes.back();
}

void KeyIndex::Prefetch(const std::vector<std::string_view>& keys) const {
  std::shared_lock lock(mutex_);
  for (std::string_view key : keys) keys_.prefetch(Lookup(key));
  // Each find waits for its own node only; the loads of different keys are
  // independent, so the CPU overlaps them.
  std::vector<const KeyState*> found;
  found.reserve(keys.size());
  for (std::string_view key : keys) {
    auto it = keys_.find(Lookup(key));
    if (it == keys_.end()) continue;
    const KeyState& state = it->second;
    if (!state.changes.empty()) __builtin_prefetch(&state.changes.back());
    if (state.cached != nullptr) {
      __builtin_prefetch(state.cached.get());
      found.push_back(&state);
    }
  }
  // The cached value's string object (its characters are moved, not read).
  for (const KeyState* state : found) {
    __builtin_prefetch(&state->cached->value());
  }
}

template <typename Visit>
void KeyIndex::ForRange(std::string_view key, std::string_view range_end,
                        Visit visit) const {
  if (range_end.empty()) {
    auto it = keys_.find(Lookup(key));
    if (it != keys_.end()) visit(*it);
    return;
  }
  const bool to_end = range_end == std::string_view("\0", 1);
  if (!to_end && range_end <= key) return;
  for (auto it = order_.lower_bound(key);
       it != order_.end() &&
       (to_end || std::string_view((*it)->first) < range_end);
       ++it) {
    if (!visit(**it)) return;
  }
}

absl::Status KeyIndex::VisibleAt(std::string_view key,
                                 std::string_view range_end, int64_t revision,
                                 std::vector<Visible>* out) const {
  std::shared_lock lock(mutex_);
  if (revision < pruned_through_) {
    return statemachine::QueryAgainError(absl::StrCat(
        "mvcc: the key index is pruned through revision ", pruned_through_,
        ", after the read's revision ", revision));
  }
  ForRange(key, range_end, [&](const Entry& entry) {
    const Changes& changes = entry.second.changes;
    const auto after = FirstAfter(changes, revision);
    if (after == changes.begin() || std::prev(after)->deleted) return true;
    Visible& visible = out->emplace_back(
        Visible{.key = entry.first, .change = *std::prev(after)});
    if (after == changes.end() && entry.second.cached != nullptr) {
      visible.cached = *entry.second.cached;
    }
    return true;
  });
  return absl::OkStatus();
}

absl::StatusOr<std::optional<KeyIndex::Change>> KeyIndex::Before(
    std::string_view key, const Change& change) const {
  std::shared_lock lock(mutex_);
  if (change.revision <= pruned_through_) {
    return statemachine::QueryAgainError(absl::StrCat(
        "mvcc: the key index is pruned through revision ", pruned_through_,
        ", the change asked about is at revision ", change.revision));
  }
  auto it = keys_.find(Lookup(key));
  const auto same = [&](const Change& held) {
    return held.revision == change.revision && held.sub == change.sub;
  };
  if (it != keys_.end()) {
    const Changes& changes = it->second.changes;
    auto at =
        std::lower_bound(changes.begin(), changes.end(), change,
                         [](const Change& a, const Change& b) {
                           return a.revision < b.revision ||
                                  (a.revision == b.revision && a.sub < b.sub);
                         });
    if (at != changes.end() && same(*at)) {
      if (at == changes.begin()) return std::optional<Change>();
      return std::optional<Change>(*std::prev(at));
    }
  }
  return absl::DataLossError(absl::StrCat(
      "mvcc: the key index holds no change of revision ", change.revision,
      " (sub ", change.sub, ") to a key of ", key.size(), " bytes"));
}

void KeyIndex::ForEachCompacted(
    int64_t revision,
    const std::function<void(std::string_view key, const Change&)>& visit)
    const {
  std::shared_lock lock(mutex_);
  for (const Entry* entry : order_) {
    const auto& [key, state] = *entry;
    const size_t removed = CompactedPrefix(state.changes, revision);
    for (size_t i = 0; i < removed; ++i) visit(key, state.changes[i]);
  }
}

int64_t KeyIndex::pruned_through() const {
  std::shared_lock lock(mutex_);
  return pruned_through_;
}

size_t KeyIndex::key_count() const {
  std::shared_lock lock(mutex_);
  return keys_.size();
}

size_t KeyIndex::value_cache_bytes() const {
  std::shared_lock lock(mutex_);
  return value_cache_bytes_;
}

}  // namespace driftwood::mvcc
