// Unit tests of CRC32C and the integer encodings (raft/util).
#include "raft/util/coding.h"

#include <catch2/catch.hpp>
#include <string>

#include "raft/util/crc32c.h"

namespace driftwood::raft {
namespace {

TEST_CASE("Crc32c matches the standard check value", "[util][unit]") {
  CHECK(Crc32c("123456789") == 0xE3069283u);
  CHECK(Crc32c("") == 0u);
  CHECK(Crc32c("6789", Crc32c("12345")) == 0xE3069283u);
  CHECK(Crc32cPortable("123456789") == 0xE3069283u);
  // The hardware path (8 bytes at a time, then a byte tail) agrees with the
  // table at every length and alignment, chained or not.
  std::string bytes;
  for (int i = 0; i < 300; ++i) bytes.push_back(static_cast<char>(i * 37 + 11));
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t length = 0; offset + length <= bytes.size(); length += 7) {
      const std::string_view piece(bytes.data() + offset, length);
      CHECK(Crc32c(piece) == Crc32cPortable(piece));
      CHECK(Crc32c(piece, 0x1234u) == Crc32cPortable(piece, 0x1234u));
    }
  }
}

TEST_CASE("Varints round-trip and detect truncation", "[util][unit]") {
  for (uint64_t value : {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{128},
                         uint64_t{300}, uint64_t{1} << 35, ~uint64_t{0}}) {
    std::string encoded;
    PutVarint64(&encoded, value);
    std::string_view in = encoded;
    uint64_t decoded = 0;
    REQUIRE(GetVarint64(&in, &decoded));
    CHECK(decoded == value);
    CHECK(in.empty());
    std::string_view truncated(encoded.data(), encoded.size() - 1);
    CHECK_FALSE(GetVarint64(&truncated, &decoded));
  }
}

TEST_CASE(
    "Fixed 64-bit big-endian integers append their bytes most significant "
    "first, sort bytewise in numeric order and round-trip",
    "[util][unit]") {
  std::string encoded = "e";
  PutFixed64BigEndian(&encoded, 0x0102030405060708u);
  CHECK(encoded == std::string("e\x01\x02\x03\x04\x05\x06\x07\x08", 9));
  CHECK(DecodeFixed64BigEndian(encoded.data() + 1) == 0x0102030405060708u);
  const uint64_t values[] = {
      0, 1, 255, 256, 300, 65536, uint64_t{1} << 40, ~uint64_t{0}};
  std::string previous;
  for (uint64_t value : values) {
    std::string key;
    PutFixed64BigEndian(&key, value);
    REQUIRE(key.size() == 8);
    CHECK(DecodeFixed64BigEndian(key.data()) == value);
    if (!previous.empty()) CHECK(previous < key);
    previous = key;
  }
}

}  // namespace
}  // namespace driftwood::raft
