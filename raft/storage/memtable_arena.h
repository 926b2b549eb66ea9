// Memory for the entries of one memtable (raft/storage/sequential_skiplist.h),
// in blocks that a process-wide pool hands back out once the memtable is
// destroyed.
//
// Why: a memtable fills fresh memory at the rate entries arrive, and every
// first write to a fresh 4 KiB page is a page fault. On the VM of
// bench/README.md a fault cost about 11 us, and at 256-byte puts the log
// store and the state machine each touched about 0.3 new pages per put: a
// tenth of a follower's CPU. So:
//  * A memtable's first kFirstBlockBytes come from the heap, so that an idle
//    or small memtable costs no more than before.
//  * After that it takes kBlockBytes blocks, aligned to their size, from the
//    pool. A new block is mapped, marked for transparent huge pages and
//    populated in one call (MADV_POPULATE_WRITE; where the kernel lacks
//    either, the block is faulted in as it is touched, as before).
//  * A thread of the pool ("dw-memtable") keeps kSpareBlocks blocks mapped
//    and populated ahead of need, so that a memtable's writer (the Raft
//    thread, for the log) does not wait for a block to be populated: done
//    in line, that raised the p99 of puts at 64 in flight by a third.
//  * Destroying the memtable returns its blocks to the pool, which keeps up
//    to kMaxIdleBlocks of them for the next memtables (a log flush frees one
//    memtable as the next one fills) and unmaps the rest.
//  * An allocation larger than kBlockBytes / 4 gets memory of its own from
//    the heap.
//
// Contract: one thread allocates at a time (the memtable's writer);
// used_bytes() may be read from any thread. Memory handed out stays valid
// until the arena is destroyed, which must not overlap any access to it.
#ifndef DRIFTWOOD_RAFT_STORAGE_MEMTABLE_ARENA_H_
#define DRIFTWOOD_RAFT_STORAGE_MEMTABLE_ARENA_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace driftwood::raft {

class MemtableArena {
 public:
  static constexpr size_t kFirstBlockBytes = size_t{256} << 10;
  static constexpr size_t kBlockBytes = size_t{2} << 20;
  static constexpr size_t kMaxIdleBlocks = 128;
  static constexpr size_t kSpareBlocks = 4;
  // Every allocation is aligned to this.
  static constexpr size_t kAlignment = 8;

  MemtableArena() = default;
  MemtableArena(const MemtableArena&) = delete;
  MemtableArena& operator=(const MemtableArena&) = delete;
  ~MemtableArena();

  // `bytes` of memory aligned to kAlignment. Throws std::bad_alloc when the
  // system has no memory left, as operator new does.
  char* Allocate(size_t bytes);

  // The bytes handed out so far, with their alignment padding: what the
  // memtable holds. The memory the arena keeps is up to one block more.
  size_t used_bytes() const {
    return used_bytes_.load(std::memory_order_relaxed);
  }

  // The pool's blocks this arena holds, in the order it took them (tests).
  const std::vector<char*>& pool_blocks() const { return pool_blocks_; }

  // The pool's counters (tests and benchmarks).
  struct PoolStats {
    // Blocks mapped since the process started.
    int64_t blocks_mapped = 0;
    // Blocks in the pool now, waiting for a memtable.
    int64_t blocks_idle = 0;
  };
  static PoolStats pool_stats();
  // Waits until the pool's refiller has kSpareBlocks idle (tests).
  static void WaitForSpareBlocks();

 private:
  char* NewBlock(size_t bytes_needed);
  // The arena has one writer at a time, so a plain load and store suffice:
  // the atomic only lets readers on other threads see a whole value.
  void AddUsed(size_t bytes) {
    used_bytes_.store(used_bytes_.load(std::memory_order_relaxed) + bytes,
                      std::memory_order_relaxed);
  }

  // The block being filled, and where its free space starts and ends.
  char* next_ = nullptr;
  char* end_ = nullptr;
  std::unique_ptr<char[]> first_block_;
  std::vector<char*> pool_blocks_;
  std::vector<std::unique_ptr<char[]>> oversized_;
  std::atomic<size_t> used_bytes_{0};
};

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_MEMTABLE_ARENA_H_
