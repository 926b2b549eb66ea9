// Driftwood: KeyIndex, the MVCC store's index in memory from each key to the
// revisions that changed it (docs/design.md "The etcd-compatible store"; the
// idea is etcd's treeIndex). The store keeps only the changes in RocksDB, in
// revision order; the index says which change holds a key's value at a
// revision, so neither a put nor a read at the current revision touches a
// record per key.
//
// Contract:
//  * One writer (the apply thread) calls Record, Prune and Clear. Readers on
//    any thread may run concurrently with it: each reading call holds the
//    index's shared lock and answers from one state.
//  * Changes of a key are recorded in increasing (revision, sub) order.
//  * Prune(C) leaves, for each key, its changes after C and its newest change
//    at or before C when that change is a put (the value a read at C or later
//    sees): what reads at revisions >= C need. Readers asking for a revision
//    below the prune point get QueryAgainError (statemachine/ordered_kv.h):
//    their state is older than the index, and a newer state answers them.
#ifndef DRIFTWOOD_STATEMACHINE_MVCC_KEY_INDEX_H_
#define DRIFTWOOD_STATEMACHINE_MVCC_KEY_INDEX_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/btree_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "statemachine/mvcc/proto/mvccpb/kv.pb.h"

namespace driftwood::mvcc {

class KeyIndex {
 public:
  // Default budget of the value cache: 256 MiB.
  static constexpr size_t kDefaultValueCacheBytes = size_t{256} << 20;

  // One change of a key: the event record at (revision, sub).
  struct Change {
    int64_t revision = 0;
    uint32_t sub = 0;
    bool deleted = false;

    bool operator==(const Change&) const = default;
  };
  // A key and the change that holds its value, with that value when the
  // cache had it (its key left empty).
  struct Visible {
    std::string key;
    Change change;
    std::optional<mvccpb::KeyValue> cached;
  };

  // The index also keeps, within `value_cache_bytes`, the key-value of each
  // key whose newest change is a put, so that the writer (and readers at the
  // newest revision) need not read it back. 0 turns the cache off.
  explicit KeyIndex(size_t value_cache_bytes = kDefaultValueCacheBytes)
      : value_cache_budget_(value_cache_bytes) {}
  KeyIndex(const KeyIndex&) = delete;
  KeyIndex& operator=(const KeyIndex&) = delete;

  // Writer only. `put` is the key-value a put wrote (its key ignored), null
  // for a deletion. REQUIRES: `change` follows every change recorded for
  // `key`.
  void Record(std::string_view key, Change change, const mvccpb::KeyValue* put);
  // Writer only: drops the changes no read at `revision` or later needs (see
  // the file comment); reads below `revision` are refused afterwards.
  void Prune(int64_t revision);
  // Writer only: forgets everything (before the index is rebuilt).
  void Clear();

  // The newest change of `key`, if the index holds one, with its key-value
  // when it is a put and cached.
  std::optional<Visible> Newest(std::string_view key) const;
  // The same without building a Visible: the newest change of `key`, and
  // when it is a cached put its key-value copied into *cached (with an
  // empty key) and *from_cache set; *cached is untouched otherwise.
  std::optional<Change> NewestInto(std::string_view key,
                                   mvccpb::KeyValue* cached,
                                   bool* from_cache) const;
  // Writer only, for a put or deletion of `key` that the writer records
  // next: NewestInto, except that a cached key-value is moved into *cached
  // instead of copied, and the key stays uncached until that Record (readers
  // meanwhile read its value from the store). Saves a put one copy of the
  // value it replaces.
  std::optional<Change> TakeNewest(std::string_view key,
                                   mvccpb::KeyValue* cached, bool* from_cache);
  // Writer only, a hint before changes of `keys`: starts loading into the
  // CPU's caches what TakeNewest and Record read for each (the map's slot,
  // the key's node, its newest change and cached value), a level at a time
  // for all of them, so that the cache misses of a batch overlap. Changes
  // nothing.
  void Prefetch(const std::vector<std::string_view>& keys) const;
  // Appends, in key order, the keys of etcd's range [key, range_end) (empty
  // range_end: the key alone; "\0": every key >= key) that hold a value at
  // `revision`, each with the put that set it. QueryAgainError when
  // `revision` is below the prune point.
  absl::Status VisibleAt(std::string_view key, std::string_view range_end,
                         int64_t revision, std::vector<Visible>* out) const;
  // The change of `key` just before `change` (nullopt when the key has none:
  // `change` created it, or followed a deletion that compaction removed).
  // QueryAgainError when `change` is at or below the prune point; DataLoss
  // when the index does not hold `change`.
  absl::StatusOr<std::optional<Change>> Before(std::string_view key,
                                               const Change& change) const;
  // Calls `visit` with each change that Compact at `revision` removes from
  // the store, on top of what earlier prunes removed: for each key, its
  // changes at or before `revision` except the newest when it is a put.
  void ForEachCompacted(int64_t revision,
                        const std::function<void(std::string_view key,
                                                 const Change&)>& visit) const;

  int64_t pruned_through() const;
  size_t key_count() const;
  // What the value cache holds, in bytes of its own accounting.
  size_t value_cache_bytes() const;

 private:
  using Changes = absl::InlinedVector<Change, 1>;
  struct KeyState {
    Changes changes;
    // The newest change's key-value (key left empty), when it is a put and
    // fits the cache's budget.
    std::unique_ptr<mvccpb::KeyValue> cached;
  };
  // Point lookups (every put does two) go to a hash map whose nodes never
  // move; range reads walk a B-tree of pointers to those nodes in key order,
  // small enough to keep dozens of keys per node.
  using Map = absl::node_hash_map<std::string, KeyState>;
  using Entry = Map::value_type;
  struct EntryLess {
    using is_transparent = void;
    bool operator()(const Entry* a, const Entry* b) const {
      return a->first < b->first;
    }
    bool operator()(const Entry* a, std::string_view b) const {
      return std::string_view(a->first) < b;
    }
    bool operator()(std::string_view a, const Entry* b) const {
      return a < std::string_view(b->first);
    }
  };
  using Order = absl::btree_set<const Entry*, EntryLess>;

  // Visits the map's entries of etcd's range [key, range_end) until `visit`
  // returns false.
  template <typename Visit>
  void ForRange(std::string_view key, std::string_view range_end,
                Visit visit) const;
  // How many of `changes` compaction at `revision` removes (a prefix).
  static size_t CompactedPrefix(const Changes& changes, int64_t revision);
  static size_t CachedBytes(const mvccpb::KeyValue& kv);
  void Uncache(KeyState& state);

  const size_t value_cache_budget_;
  mutable std::shared_mutex mutex_;
  Map keys_;
  Order order_;
  int64_t pruned_through_ = 0;
  size_t value_cache_bytes_ = 0;
};

}  // namespace driftwood::mvcc

#endif  // DRIFTWOOD_STATEMACHINE_MVCC_KEY_INDEX_H_
