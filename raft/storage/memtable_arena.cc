#include "raft/storage/memtable_arena.h"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <new>
#include <thread>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define DRIFTWOOD_POISON(addr, size) ASAN_POISON_MEMORY_REGION(addr, size)
#define DRIFTWOOD_UNPOISON(addr, size) ASAN_UNPOISON_MEMORY_REGION(addr, size)
#else
#define DRIFTWOOD_POISON(addr, size) ((void)(addr), (void)(size))
#define DRIFTWOOD_UNPOISON(addr, size) ((void)(addr), (void)(size))
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace driftwood::raft {
namespace {

constexpr size_t kBlockBytes = MemtableArena::kBlockBytes;

// Blocks mapped for memtables and returned by them. Never destroyed: RocksDB
// may destroy a memtable from its own threads during static destruction.
class BlockPool {
 public:
  static BlockPool& Instance() {
    static BlockPool* const pool = new BlockPool();
    return *pool;
  }

  char* Take() {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!idle_.empty()) {
        char* block = idle_.back();
        idle_.pop_back();
        if (idle_.size() < MemtableArena::kSpareBlocks) Refill(lock);
        DRIFTWOOD_UNPOISON(block, kBlockBytes);
        return block;
      }
      Refill(lock);
    }
    // The spares ran out faster than the refiller maps them.
    char* block = Map();
    std::lock_guard<std::mutex> lock(mutex_);
    ++mapped_;
    return block;
  }

  void Give(char* block) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_.size() < MemtableArena::kMaxIdleBlocks) {
        // Memory a destroyed memtable left is never read again before a new
        // memtable writes it: a sanitizer build reports any access meanwhile.
        DRIFTWOOD_POISON(block, kBlockBytes);
        idle_.push_back(block);
        return;
      }
    }
    munmap(block, kBlockBytes);
  }

  // Waits until the pool holds at least kSpareBlocks idle blocks or the
  // refiller has stopped trying (tests).
  void WaitForSpares() {
    std::unique_lock<std::mutex> lock(mutex_);
    spares_ready_.wait(lock, [this] {
      return idle_.size() >= MemtableArena::kSpareBlocks || !refilling_;
    });
  }

  MemtableArena::PoolStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {.blocks_mapped = mapped_,
            .blocks_idle = static_cast<int64_t>(idle_.size())};
  }

 private:
  BlockPool() = default;

  // A block aligned to its size (so that it can be backed by huge pages),
  // populated when the kernel can.
  static char* Map() {
    const size_t span = 2 * kBlockBytes;
    void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kBlockBytes - 1) & ~(kBlockBytes - 1);
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t tail = aligned + kBlockBytes;
    if (tail < start + span) {
      munmap(reinterpret_cast<void*>(tail), start + span - tail);
    }
    auto* block = reinterpret_cast<char*>(aligned);
    // Both are hints: a kernel without transparent huge pages or
    // MADV_POPULATE_WRITE leaves the block to be faulted in page by page.
    madvise(block, kBlockBytes, MADV_HUGEPAGE);
    madvise(block, kBlockBytes, MADV_POPULATE_WRITE);
    return block;
  }

  // Wakes the refiller, started on first use. REQUIRES: `lock` holds mutex_.
  void Refill(std::unique_lock<std::mutex>& lock) {
    (void)lock;
    if (refilling_) return;
    refilling_ = true;
    if (!refiller_started_) {
      refiller_started_ = true;
      // Never joined: the pool outlives every memtable.
      std::thread([this] { RefillLoop(); }).detach();
    } else {
      refill_wanted_.notify_one();
    }
  }

  // Maps and populates blocks until kSpareBlocks are idle, each time a Take
  // leaves fewer: the writer of a growing memtable then takes a ready block
  // instead of waiting for 2 MiB to be populated.
  void RefillLoop() {
    pthread_setname_np(pthread_self(), "dw-memtable");
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      refill_wanted_.wait(lock, [this] { return refilling_; });
      while (idle_.size() < MemtableArena::kSpareBlocks) {
        lock.unlock();
        char* block = nullptr;
        try {
          block = Map();
        } catch (const std::bad_alloc&) {
          // Out of memory: the writer maps its own block and fails there.
        }
        lock.lock();
        if (block == nullptr) break;
        ++mapped_;
        DRIFTWOOD_POISON(block, kBlockBytes);
        idle_.push_back(block);
      }
      refilling_ = false;
      spares_ready_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable refill_wanted_;
  std::condition_variable spares_ready_;
  std::vector<char*> idle_;
  int64_t mapped_ = 0;
  bool refiller_started_ = false;
  bool refilling_ = false;
};

}  // namespace

MemtableArena::~MemtableArena() {
  BlockPool& pool = BlockPool::Instance();
  for (char* block : pool_blocks_) pool.Give(block);
}

MemtableArena::PoolStats MemtableArena::pool_stats() {
  return BlockPool::Instance().stats();
}

void MemtableArena::WaitForSpareBlocks() {
  BlockPool::Instance().WaitForSpares();
}

char* MemtableArena::Allocate(size_t bytes) {
  // Distinct allocations get distinct addresses, even of 0 bytes.
  const size_t rounded =
      bytes == 0 ? kAlignment : (bytes + kAlignment - 1) & ~(kAlignment - 1);
  if (rounded > static_cast<size_t>(end_ - next_)) {
    if (rounded > kBlockBytes / 4) {
      oversized_.push_back(std::make_unique_for_overwrite<char[]>(rounded));
      AddUsed(rounded);
      return oversized_.back().get();
    }
    next_ = NewBlock(rounded);
  }
  char* memory = next_;
  next_ += rounded;
  AddUsed(rounded);
  return memory;
}

char* MemtableArena::NewBlock(size_t bytes_needed) {
  if (first_block_ == nullptr && bytes_needed <= kFirstBlockBytes) {
    // new[] of char is aligned for any fundamental type.
    first_block_ = std::make_unique_for_overwrite<char[]>(kFirstBlockBytes);
    end_ = first_block_.get() + kFirstBlockBytes;
    return first_block_.get();
  }
  // Room for the block before it is taken, so that recording it cannot
  // throw and lose it; grown geometrically, not once per block.
  if (pool_blocks_.size() == pool_blocks_.capacity()) {
    pool_blocks_.reserve(std::max<size_t>(8, 2 * pool_blocks_.capacity()));
  }
  char* block = BlockPool::Instance().Take();
  pool_blocks_.push_back(block);
  end_ = block + kBlockBytes;
  return block;
}

}  // namespace driftwood::raft
