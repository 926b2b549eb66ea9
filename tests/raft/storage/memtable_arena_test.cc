// MemtableArena (raft/storage/memtable_arena.h): allocations are aligned,
// disjoint and counted; large ones get memory of their own; and the blocks
// of a destroyed arena serve the next one instead of new mappings.
#include "raft/storage/memtable_arena.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace driftwood::raft {
namespace {

struct Piece {
  char* memory;
  size_t bytes;
  char fill;
};

// Allocates pieces of the given sizes in turn until `total` bytes are
// handed out, filling each with its own byte.
std::vector<Piece> Fill(MemtableArena& arena, size_t total,
                        const std::vector<size_t>& sizes) {
  std::vector<Piece> pieces;
  size_t handed_out = 0;
  for (size_t i = 0; handed_out < total; ++i) {
    const size_t bytes = sizes[i % sizes.size()];
    const char fill = static_cast<char>('a' + i % 26);
    char* memory = arena.Allocate(bytes);
    std::memset(memory, fill, bytes);
    pieces.push_back({memory, bytes, fill});
    handed_out += bytes;
  }
  return pieces;
}

TEST_CASE(
    "memtable arena: allocations are aligned, disjoint and counted, and "
    "a large one gets memory of its own",
    "[storage]") {
  MemtableArena arena;
  const std::vector<size_t> sizes = {1, 7, 8, 13, 300, 4096, 100'000};
  std::vector<Piece> pieces = Fill(arena, size_t{6} << 20, sizes);
  const size_t oversized = MemtableArena::kBlockBytes / 2;
  char* large = arena.Allocate(oversized);
  std::memset(large, 'L', oversized);
  pieces.push_back({large, oversized, 'L'});

  size_t expected_used = 0;
  for (const Piece& piece : pieces) {
    REQUIRE(reinterpret_cast<uintptr_t>(piece.memory) %
                MemtableArena::kAlignment ==
            0);
    expected_used += (piece.bytes + MemtableArena::kAlignment - 1) /
                     MemtableArena::kAlignment * MemtableArena::kAlignment;
    // Every piece still holds its own fill: none overlaps another.
    for (size_t i = 0; i < piece.bytes; ++i) {
      if (piece.memory[i] != piece.fill) FAIL("piece overwritten at " << i);
    }
  }
  REQUIRE(arena.used_bytes() == expected_used);

  // Empty allocations are distinct too.
  char* empty = arena.Allocate(0);
  REQUIRE(empty != nullptr);
  REQUIRE(arena.Allocate(0) != empty);
}

TEST_CASE(
    "memtable arena: the blocks of a destroyed arena serve the next one "
    "without new mappings",
    "[storage]") {
  constexpr size_t kBytes = size_t{12} << 20;
  auto first = std::make_unique<MemtableArena>();
  Fill(*first, kBytes, {1000});
  std::vector<char*> first_blocks = first->pool_blocks();
  // 12 MiB past the first heap block takes at least five 2 MiB blocks.
  REQUIRE(first_blocks.size() >= 5);
  for (char* block : first_blocks) {
    REQUIRE(reinterpret_cast<uintptr_t>(block) % MemtableArena::kBlockBytes ==
            0);
  }
  // The refiller has its spares, so taking the returned blocks below leaves
  // at least kSpareBlocks idle and wakes nothing.
  MemtableArena::WaitForSpareBlocks();
  const MemtableArena::PoolStats before = MemtableArena::pool_stats();
  REQUIRE(before.blocks_idle >=
          static_cast<int64_t>(MemtableArena::kSpareBlocks));
  first.reset();
  const MemtableArena::PoolStats returned = MemtableArena::pool_stats();
  REQUIRE(returned.blocks_idle ==
          before.blocks_idle + static_cast<int64_t>(first_blocks.size()));

  MemtableArena second;
  std::vector<Piece> pieces = Fill(second, kBytes, {1000});
  std::vector<char*> second_blocks = second.pool_blocks();
  std::sort(first_blocks.begin(), first_blocks.end());
  std::sort(second_blocks.begin(), second_blocks.end());
  CHECK(second_blocks == first_blocks);
  const MemtableArena::PoolStats reused = MemtableArena::pool_stats();
  CHECK(reused.blocks_mapped == returned.blocks_mapped);
  for (const Piece& piece : pieces) {
    REQUIRE(piece.memory[0] == piece.fill);
    REQUIRE(piece.memory[piece.bytes - 1] == piece.fill);
  }
}

TEST_CASE("memtable arena: the pool maps spare blocks ahead of need",
          "[storage]") {
  MemtableArena arena;
  Fill(arena, size_t{4} << 20, {1000});
  MemtableArena::WaitForSpareBlocks();
  CHECK(MemtableArena::pool_stats().blocks_idle >=
        static_cast<int64_t>(MemtableArena::kSpareBlocks));
}

}  // namespace
}  // namespace driftwood::raft
