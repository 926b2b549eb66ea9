// Driftwood lazyfs: the writes to one file that are not yet durable, kept as
// an overlay over the file's backing (durable) contents. See
// jepsen/lazyfs/README.md for the model.
#ifndef DRIFTWOOD_JEPSEN_LAZYFS_UNSYNCED_FILE_H_
#define DRIFTWOOD_JEPSEN_LAZYFS_UNSYNCED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace driftwood::jepsen::lazyfs {

// The unsynced state of one file: a logical size, the prefix of the backing
// file that is still shown, and the unsynced writes as extents.
//
// Invariants:
//   - extents are non-empty, pairwise disjoint and lie within [0, size());
//   - visible_backing() <= size(): backing bytes at or beyond
//     visible_backing() were cut off by a truncation and read as zeros, as do
//     bytes past the backing file's end;
//   - unsynced_bytes() is the sum of the extents' lengths.
//
// The file as the mount shows it: byte x < size() is the extent byte covering
// x if any, else the backing byte x if x < visible_backing() and the backing
// file has it, else zero.
//
// Not thread-safe; the file system's mutex guards every instance.
class UnsyncedFile {
 public:
  // Extents keyed by their first byte's offset.
  using Extents = std::map<uint64_t, std::string>;

  // A file with no unsynced changes over a backing file of `backing_size`
  // bytes.
  explicit UnsyncedFile(uint64_t backing_size)
      : size_(backing_size), visible_backing_(backing_size) {}

  uint64_t size() const { return size_; }
  uint64_t visible_backing() const { return visible_backing_; }
  uint64_t unsynced_bytes() const { return unsynced_bytes_; }
  const Extents& extents() const { return extents_; }

  // Records `data` at `offset`, replacing what the range showed; the size
  // grows to cover it. Adjacent and overlapping extents are merged.
  void Write(uint64_t offset, std::string_view data);

  // Sets the logical size: extents are cut at `size`, and backing bytes at or
  // beyond it stay hidden even if the file grows again.
  void Truncate(uint64_t size);

  // Grows the logical size to at least `size` (fallocate mode 0); the new
  // range reads as zeros.
  void Extend(uint64_t size);

  // Copies the extents' bytes over `buf`, which holds the `len` bytes at
  // `offset` as shown without extents.
  void Overlay(uint64_t offset, char* buf, size_t len) const;

 private:
  Extents extents_;
  uint64_t size_;
  uint64_t visible_backing_;
  uint64_t unsynced_bytes_ = 0;
};

}  // namespace driftwood::jepsen::lazyfs

#endif  // DRIFTWOOD_JEPSEN_LAZYFS_UNSYNCED_FILE_H_
