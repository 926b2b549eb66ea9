#include "raft/storage/sequential_skiplist.h"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "raft/storage/memtable_arena.h"
#include "rocksdb/slice.h"
#include "rocksdb/version.h"

// RocksDB gives MemTableRep::GetIterator the arena of the read that wants the
// iterator and later destroys the iterator in place, without freeing it: the
// iterator must live in that arena. RocksDB's Arena class has no installed
// header, but its AllocateAligned is an exported member function of the
// library. The declaration below names that function and nothing else of the
// class, for the RocksDB version it was checked against.
#if ROCKSDB_MAJOR != 7 || ROCKSDB_MINOR != 8
#error \
    "check rocksdb::Arena::AllocateAligned (declared below) against this RocksDB version"
#endif
namespace rocksdb {
class Arena {
 public:
  char* AllocateAligned(size_t bytes, size_t huge_page_size, Logger* logger);
};
}  // namespace rocksdb

namespace driftwood::raft {
namespace {

// Heap-allocated iterators not yet destroyed (tests).
std::atomic<int64_t> heap_iterators{0};

using rocksdb::KeyHandle;
using rocksdb::MemTableRep;

constexpr int kMaxHeight = 12;
// A node reaches each next level with probability 1/4.
constexpr uint64_t kBranchingMask = 3;

// A node is followed in memory by its `height` links (links()[0] is the
// bottom list) and then by the entry's bytes as RocksDB encodes them. The
// entry is written before the node is linked and never changes afterwards.
struct alignas(8) Node {
  int32_t height;

  std::atomic<Node*>* links() {
    return reinterpret_cast<std::atomic<Node*>*>(reinterpret_cast<char*>(this) +
                                                 sizeof(Node));
  }
  const std::atomic<Node*>* links() const {
    return reinterpret_cast<const std::atomic<Node*>*>(
        reinterpret_cast<const char*>(this) + sizeof(Node));
  }
  const char* key() const {
    return reinterpret_cast<const char*>(links() + height);
  }
  // Readers: the acquire pairs with the writer's release when it linked the
  // next node, so the next node's links and entry are visible.
  Node* Next(int level) const {
    return links()[level].load(std::memory_order_acquire);
  }
};
static_assert(sizeof(Node) == 8);

class SequentialSkipList final : public MemTableRep {
 public:
  SequentialSkipList(const MemTableRep::KeyComparator& compare,
                     rocksdb::Allocator* allocator)
      : MemTableRep(allocator),
        compare_(compare),
        random_(reinterpret_cast<uintptr_t>(this) | 1),
        head_(NewNode(kMaxHeight, 0, nullptr)) {
    std::fill(std::begin(previous_), std::end(previous_), head_);
  }

  KeyHandle Allocate(const size_t len, char** buf) override {
    return NewNode(RandomHeight(), len, buf);
  }

  void Insert(KeyHandle handle) override { InsertKey(handle); }

  bool InsertKey(KeyHandle handle) override {
    Node* node = static_cast<Node*>(handle);
    const char* key = node->key();
    const int list_height = height_.load(std::memory_order_relaxed);
    Node* before[kMaxHeight];
    // previous_[0] is the last node inserted and previous_[i] the last node of
    // level i at or before it. When the key falls between that node and its
    // successor, no node lies between the key and any previous_[i], so they
    // are the key's predecessors on every level.
    Node* last = previous_[0];
    Node* after_last = last->links()[0].load(std::memory_order_relaxed);
    if ((last == head_ || compare_(last->key(), key) < 0) &&
        (after_last == nullptr || compare_(key, after_last->key()) < 0)) {
      std::copy(std::begin(previous_), std::end(previous_), before);
    } else {
      for (int level = kMaxHeight - 1; level >= list_height; --level) {
        before[level] = head_;
      }
      Node* x = head_;
      for (int level = list_height - 1; level >= 0; --level) {
        for (Node* next = x->links()[level].load(std::memory_order_relaxed);
             next != nullptr && compare_(next->key(), key) < 0;
             next = x->links()[level].load(std::memory_order_relaxed)) {
          x = next;
        }
        before[level] = x;
      }
      Node* next = before[0]->links()[0].load(std::memory_order_relaxed);
      if (next != nullptr && compare_(next->key(), key) == 0) return false;
    }
    const int height = node->height;
    // A reader that sees the new height before the node finds the head's
    // links on the new levels still empty and moves down.
    if (height > list_height) {
      height_.store(height, std::memory_order_relaxed);
    }
    for (int level = 0; level < height; ++level) {
      node->links()[level].store(
          before[level]->links()[level].load(std::memory_order_relaxed),
          std::memory_order_relaxed);
      // Publishes the node (its entry and lower links) to readers of this
      // level.
      before[level]->links()[level].store(node, std::memory_order_release);
    }
    for (int level = 0; level < height; ++level) previous_[level] = node;
    for (int level = height; level < kMaxHeight; ++level) {
      previous_[level] = before[level];
    }
    return true;
  }

  bool InsertKeyWithHint(KeyHandle handle, void** /*hint*/) override {
    return InsertKey(handle);
  }
  void InsertWithHint(KeyHandle handle, void** /*hint*/) override {
    InsertKey(handle);
  }

  bool Contains(const char* key) const override {
    const Node* found = FindGreaterOrEqual(key);
    return found != nullptr && compare_(found->key(), key) == 0;
  }

  // The nodes and entries, which are in this list's own arena: RocksDB adds
  // this to its arena's bytes to decide when the memtable is full.
  size_t ApproximateMemoryUsage() override { return arena_.used_bytes(); }

  class ListIterator final : public MemTableRep::Iterator {
   public:
    ListIterator(const SequentialSkipList* list, bool on_heap)
        : list_(list), on_heap_(on_heap) {
      if (on_heap_) heap_iterators.fetch_add(1, std::memory_order_relaxed);
    }
    ~ListIterator() override {
      if (on_heap_) heap_iterators.fetch_sub(1, std::memory_order_relaxed);
    }
    ListIterator(const ListIterator&) = delete;
    ListIterator& operator=(const ListIterator&) = delete;

    bool Valid() const override { return node_ != nullptr; }
    const char* key() const override { return node_->key(); }
    void Next() override { node_ = node_->Next(0); }
    void Prev() override { node_ = list_->FindLessThan(node_->key()); }
    void Seek(const rocksdb::Slice& internal_key,
              const char* memtable_key) override {
      node_ = memtable_key != nullptr ? list_->FindGreaterOrEqual(memtable_key)
                                      : list_->FindGreaterOrEqual(internal_key);
    }
    void SeekForPrev(const rocksdb::Slice& internal_key,
                     const char* memtable_key) override {
      node_ = memtable_key != nullptr ? list_->FindLessOrEqual(memtable_key)
                                      : list_->FindLessOrEqual(internal_key);
    }
    void SeekToFirst() override { node_ = list_->head_->Next(0); }
    void SeekToLast() override { node_ = list_->FindLast(); }

   private:
    const SequentialSkipList* list_;
    const Node* node_ = nullptr;
    const bool on_heap_;
  };

  Iterator* GetIterator(rocksdb::Arena* arena) override {
    if (arena == nullptr) return new ListIterator(this, /*on_heap=*/true);
    void* memory = arena->AllocateAligned(sizeof(ListIterator), 0, nullptr);
    return new (memory) ListIterator(this, /*on_heap=*/false);
  }

  // RocksDB 7.8 asks for this iterator without an arena only from
  // MemTableRep::Get (a point read), which never destroys or frees it. A
  // heap iterator would leak on every read that reaches the memtable, so
  // that one lives in storage of the reading thread, rebuilt by each call.
  // Get is not re-entered while it walks (its callback only reads the
  // entry), so one per thread is enough.
  Iterator* GetDynamicPrefixIterator(rocksdb::Arena* arena) override {
    if (arena != nullptr) return GetIterator(arena);
    alignas(ListIterator) thread_local unsigned char
        point_read_storage[sizeof(ListIterator)];
    return new (point_read_storage) ListIterator(this, /*on_heap=*/false);
  }

 private:
  // The first node whose key is at least `target` (an encoded entry, or an
  // internal key as a Slice), or null.
  template <typename Target>
  const Node* FindGreaterOrEqual(const Target& target) const {
    const Node* x = head_;
    int level = height_.load(std::memory_order_relaxed) - 1;
    // A node already found not to precede the target on the level above.
    const Node* not_before = nullptr;
    while (true) {
      const Node* next = x->Next(level);
      if (next != nullptr && next != not_before &&
          compare_(next->key(), target) < 0) {
        x = next;
      } else {
        if (level == 0) return next;
        not_before = next;
        --level;
      }
    }
  }

  // The last node whose key is below `target` (or at most `target`, with
  // `or_equal`), or null.
  template <typename Target>
  const Node* FindBefore(const Target& target, bool or_equal) const {
    const Node* x = head_;
    int level = height_.load(std::memory_order_relaxed) - 1;
    const Node* not_before = nullptr;
    while (true) {
      const Node* next = x->Next(level);
      bool advance = false;
      if (next != nullptr && next != not_before) {
        const int order = compare_(next->key(), target);
        advance = order < 0 || (or_equal && order == 0);
      }
      if (advance) {
        x = next;
      } else {
        if (level == 0) return x == head_ ? nullptr : x;
        not_before = next;
        --level;
      }
    }
  }
  template <typename Target>
  const Node* FindLessThan(const Target& target) const {
    return FindBefore(target, false);
  }
  template <typename Target>
  const Node* FindLessOrEqual(const Target& target) const {
    return FindBefore(target, true);
  }

  const Node* FindLast() const {
    const Node* x = head_;
    int level = height_.load(std::memory_order_relaxed) - 1;
    while (true) {
      const Node* next = x->Next(level);
      if (next != nullptr) {
        x = next;
      } else {
        if (level == 0) return x == head_ ? nullptr : x;
        --level;
      }
    }
  }

  // A node of `height` levels with room for `entry_bytes` after them; *entry
  // (when not null) is set to that room.
  Node* NewNode(int height, size_t entry_bytes, char** entry) {
    const size_t bytes =
        sizeof(Node) +
        static_cast<size_t>(height) * sizeof(std::atomic<Node*>) + entry_bytes;
    static_assert(alignof(Node) <= MemtableArena::kAlignment);
    Node* node = new (arena_.Allocate(bytes)) Node{height};
    for (int level = 0; level < height; ++level) {
      new (&node->links()[level]) std::atomic<Node*>(nullptr);
    }
    if (entry != nullptr) *entry = const_cast<char*>(node->key());
    return node;
  }

  int RandomHeight() {
    int height = 1;
    while (height < kMaxHeight && (NextRandom() & kBranchingMask) == 0) {
      ++height;
    }
    return height;
  }

  // xorshift64*: only the writer draws.
  uint64_t NextRandom() {
    random_ ^= random_ >> 12;
    random_ ^= random_ << 25;
    random_ ^= random_ >> 27;
    return (random_ * 0x2545F4914F6CDD1DULL) >> 32;
  }

  const MemTableRep::KeyComparator& compare_;
  // Holds every node, the head's first; destroyed after them.
  MemtableArena arena_;
  uint64_t random_;
  Node* const head_;
  // The highest level any node has; only grows.
  std::atomic<int> height_{1};
  // The writer's own: where the last insert went (see InsertKey).
  Node* previous_[kMaxHeight];
};

class SequentialSkipListFactory final : public rocksdb::MemTableRepFactory {
 public:
  using rocksdb::MemTableRepFactory::CreateMemTableRep;
  MemTableRep* CreateMemTableRep(const MemTableRep::KeyComparator& compare,
                                 rocksdb::Allocator* allocator,
                                 const rocksdb::SliceTransform* /*prefix*/,
                                 rocksdb::Logger* /*logger*/) override {
    return new SequentialSkipList(compare, allocator);
  }
  const char* Name() const override { return "DriftwoodSequentialSkipList"; }
  // InsertKey refuses a key already present.
  bool CanHandleDuplicatedKey() const override { return true; }
};

}  // namespace

int64_t SequentialSkipListHeapIteratorsForTesting() {
  return heap_iterators.load(std::memory_order_relaxed);
}

std::shared_ptr<rocksdb::MemTableRepFactory> NewSequentialSkipListFactory() {
  return std::make_shared<SequentialSkipListFactory>();
}

}  // namespace driftwood::raft
