#include "jepsen/lazyfs/unsynced_file.h"

#include <algorithm>
#include <cstring>
#include <iterator>

namespace driftwood::jepsen::lazyfs {

void UnsyncedFile::Write(uint64_t offset, std::string_view data) {
  if (data.empty()) return;
  const uint64_t end = offset + data.size();
  // The first extent that overlaps or touches [offset, end).
  auto it = extents_.upper_bound(offset);
  if (it != extents_.begin()) {
    auto before = std::prev(it);
    if (before->first + before->second.size() >= offset) it = before;
  }
  // Grow the extent that starts at or before `offset` and reaches it, so a
  // run of sequential writes stays one string; otherwise start a new one.
  uint64_t start = offset;
  std::string* merged = nullptr;
  if (it != extents_.end() && it->first <= offset) {
    start = it->first;
    merged = &it->second;
    unsynced_bytes_ -= merged->size();
    ++it;
  } else {
    merged = &extents_.emplace(offset, std::string()).first->second;
  }
  const size_t at = static_cast<size_t>(offset - start);
  if (merged->size() < at + data.size()) merged->resize(at + data.size());
  std::memcpy(merged->data() + at, data.data(), data.size());
  // Absorb the later extents that overlap or touch the merged one.
  while (it != extents_.end() && it->first <= start + merged->size()) {
    const uint64_t merged_end = start + merged->size();
    if (it->first + it->second.size() > merged_end) {
      merged->append(it->second, static_cast<size_t>(merged_end - it->first));
    }
    unsynced_bytes_ -= it->second.size();
    it = extents_.erase(it);
  }
  unsynced_bytes_ += merged->size();
  size_ = std::max(size_, end);
}

void UnsyncedFile::Truncate(uint64_t size) {
  if (size < size_) {
    for (auto it = extents_.lower_bound(size); it != extents_.end();) {
      unsynced_bytes_ -= it->second.size();
      it = extents_.erase(it);
    }
    if (!extents_.empty()) {
      auto& [last_start, last] = *std::prev(extents_.end());
      if (last_start + last.size() > size) {
        unsynced_bytes_ -= last_start + last.size() - size;
        last.resize(static_cast<size_t>(size - last_start));
      }
    }
    visible_backing_ = std::min(visible_backing_, size);
  }
  size_ = size;
}

void UnsyncedFile::Extend(uint64_t size) { size_ = std::max(size_, size); }

void UnsyncedFile::Overlay(uint64_t offset, char* buf, size_t len) const {
  const uint64_t end = offset + len;
  auto it = extents_.upper_bound(offset);
  if (it != extents_.begin() &&
      std::prev(it)->first + std::prev(it)->second.size() > offset) {
    --it;
  }
  for (; it != extents_.end() && it->first < end; ++it) {
    const uint64_t from = std::max(offset, it->first);
    const uint64_t to = std::min(end, it->first + it->second.size());
    std::memcpy(buf + (from - offset), it->second.data() + (from - it->first),
                static_cast<size_t>(to - from));
  }
}

}  // namespace driftwood::jepsen::lazyfs
