// MemtableArena (raft/storage/memtable_arena.h): allocations are aligned,
// disjoint and counted; large ones get memory of their own; and the blocks
// of a destroyed arena serve the next one instead of new mappings.
#include "raft/storage/memtable_arena.h"

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
    "memtable arena: allocations are aligned\\, disjoint and counted; a large "
    "one gets memory of its own",
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
}

TEST_CASE(
    "memtable arena: the blocks of a destroyed arena serve the next one "
    "without new mappings",
    "[storage]") {
  constexpr size_t kBytes = size_t{12} << 20;
  const MemtableArena::PoolStats start = MemtableArena::pool_stats();
  auto first = std::make_unique<MemtableArena>();
  Fill(*first, kBytes, {1000});
  const MemtableArena::PoolStats filled = MemtableArena::pool_stats();
  // 12 MiB past the first heap block takes at least five 2 MiB blocks.
  const int64_t taken = (filled.blocks_mapped - start.blocks_mapped) +
                        (start.blocks_idle - filled.blocks_idle);
  REQUIRE(taken >= 5);
  first.reset();
  const MemtableArena::PoolStats returned = MemtableArena::pool_stats();
  REQUIRE(returned.blocks_idle == filled.blocks_idle + taken);

  MemtableArena second;
  std::vector<Piece> pieces = Fill(second, kBytes, {1000});
  const MemtableArena::PoolStats reused = MemtableArena::pool_stats();
  CHECK(reused.blocks_mapped == returned.blocks_mapped);
  CHECK(reused.blocks_idle == returned.blocks_idle - taken);
  for (const Piece& piece : pieces) {
    REQUIRE(piece.memory[0] == piece.fill);
    REQUIRE(piece.memory[piece.bytes - 1] == piece.fill);
  }
}

}  // namespace
}  // namespace driftwood::raft
