// UnsyncedFile (jepsen/lazyfs/unsynced_file.h): the overlay of unsynced
// writes and truncations over a backing file, checked against a byte-vector
// model, and the write-back order LazyFs uses at fsync.
#include "jepsen/lazyfs/unsynced_file.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>

namespace driftwood::jepsen::lazyfs {
namespace {

// The file as the mount shows it over `backing`.
std::string View(const std::string& backing, const UnsyncedFile& file) {
  std::string view(file.size(), '\0');
  const uint64_t shown = std::min<uint64_t>(
      backing.size(), std::min(file.visible_backing(), file.size()));
  std::copy_n(backing.begin(), shown, view.begin());
  file.Overlay(0, view.data(), view.size());
  return view;
}

// The backing file after LazyFs::WriteBack: cut to the visible prefix, the
// extents written, the size set.
std::string WrittenBack(std::string backing, const UnsyncedFile& file) {
  if (file.visible_backing() < backing.size()) {
    backing.resize(file.visible_backing());
  }
  for (const auto& [offset, data] : file.extents()) {
    if (backing.size() < offset + data.size()) {
      backing.resize(offset + data.size(), '\0');
    }
    backing.replace(offset, data.size(), data);
  }
  backing.resize(file.size(), '\0');
  return backing;
}

void CheckInvariants(const UnsyncedFile& file) {
  uint64_t previous_end = 0;
  uint64_t total = 0;
  bool first = true;
  for (const auto& [offset, data] : file.extents()) {
    REQUIRE(!data.empty());
    // Disjoint and not touching: Write merges neighbours.
    if (!first) REQUIRE(offset > previous_end);
    first = false;
    previous_end = offset + data.size();
    total += data.size();
  }
  REQUIRE(previous_end <= file.size());
  REQUIRE(file.visible_backing() <= file.size());
  REQUIRE(total == file.unsynced_bytes());
}

TEST_CASE("lazyfs: UnsyncedFile: writes overlay the backing file",
          "[lazyfs][unsynced_file]") {
  const std::string backing = "0123456789";
  UnsyncedFile file(backing.size());
  file.Write(4, "XY");
  CHECK(View(backing, file) == "0123XY6789");
  file.Write(12, "Z");
  CHECK(file.size() == 13);
  CHECK(View(backing, file) == std::string("0123XY6789\0\0Z", 13));
  file.Write(5, "abcdefgh");
  CHECK(View(backing, file) == "0123Xabcdefgh");
  CHECK(file.extents().size() == 1);
  CHECK(file.unsynced_bytes() == 9);
  CheckInvariants(file);
}

TEST_CASE("lazyfs: UnsyncedFile: truncation hides the backing tail for good",
          "[lazyfs][unsynced_file]") {
  const std::string backing = "0123456789";
  UnsyncedFile file(backing.size());
  file.Write(2, "ab");
  file.Truncate(3);
  CHECK(View(backing, file) == "01a");
  file.Truncate(6);
  CHECK(View(backing, file) == std::string("01a\0\0\0", 6));
  file.Extend(8);
  CHECK(View(backing, file) == std::string("01a\0\0\0\0\0", 8));
  CHECK(WrittenBack(backing, file) == View(backing, file));
  CheckInvariants(file);
}

TEST_CASE("lazyfs: UnsyncedFile: random writes and truncations match a model",
          "[lazyfs][unsynced_file]") {
  std::mt19937_64 random(20240601);
  for (int round = 0; round < 200; ++round) {
    std::string backing(random() % 64, 'b');
    for (char& c : backing) c = static_cast<char>('a' + random() % 26);
    std::string model = backing;
    UnsyncedFile file(backing.size());
    for (int step = 0; step < 40; ++step) {
      const uint64_t offset = random() % 96;
      switch (random() % 4) {
        case 0:
        case 1: {
          std::string data(random() % 20, '\0');
          for (char& c : data) c = static_cast<char>('A' + random() % 26);
          file.Write(offset, data);
          if (data.empty()) break;
          if (model.size() < offset + data.size()) {
            model.resize(offset + data.size(), '\0');
          }
          model.replace(offset, data.size(), data);
          break;
        }
        case 2:
          file.Truncate(offset);
          model.resize(offset, '\0');
          break;
        default:
          file.Extend(offset);
          if (model.size() < offset) model.resize(offset, '\0');
          break;
      }
      INFO("round " << round << " step " << step);
      CheckInvariants(file);
      REQUIRE(View(backing, file) == model);
      REQUIRE(WrittenBack(backing, file) == model);
      // A window read at an arbitrary offset agrees with the whole view.
      if (!model.empty()) {
        const uint64_t from = random() % model.size();
        const size_t length =
            static_cast<size_t>(std::min<uint64_t>(7, model.size() - from));
        std::string window(length, '?');
        for (size_t i = 0; i < length; ++i) {
          const uint64_t x = from + i;
          if (x < std::min<uint64_t>(file.visible_backing(), backing.size())) {
            window[i] = backing[x];
          } else {
            window[i] = '\0';
          }
        }
        file.Overlay(from, window.data(), length);
        REQUIRE(window == model.substr(from, length));
      }
    }
  }
}

}  // namespace
}  // namespace driftwood::jepsen::lazyfs
