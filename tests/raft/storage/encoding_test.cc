// Unit tests of the on-disk encodings (raft/storage/encoding.h, FORMAT.md).
#include "raft/storage/encoding.h"

#include <catch2/catch.hpp>
#include <string>

namespace driftwood::raft::storage {
namespace {

TEST_CASE("Crc32c matches the standard check value", "[storage][unit]") {
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

TEST_CASE("Varints round-trip and detect truncation", "[storage][unit]") {
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

TEST_CASE("Entries round-trip", "[storage][unit]") {
  const Entry normal{Term(7), LogIndex(12345), EntryType::kNormal,
                     std::string("payload\0with zero", 17)};
  auto decoded = DecodeEntry(EncodeEntry(normal), LogIndex(12345));
  REQUIRE(decoded.ok());
  CHECK(*decoded == normal);
  const Entry noop{Term(8), LogIndex(1), EntryType::kNoOp, ""};
  CHECK(*DecodeEntry(EncodeEntry(noop), LogIndex(1)) == noop);
}

TEST_CASE(
    "Every flipped bit or truncation of an entry is DataLoss naming its index",
    "[storage][unit]") {
  const Entry entry{Term(3), LogIndex(99), EntryType::kNormal, "some bytes"};
  const std::string encoded = EncodeEntry(entry);
  for (size_t byte = 0; byte < encoded.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string corrupt = encoded;
      corrupt[byte] = static_cast<char>(corrupt[byte] ^ (1 << bit));
      auto decoded = DecodeEntry(corrupt, LogIndex(99));
      INFO("byte " << byte << " bit " << bit);
      REQUIRE(absl::IsDataLoss(decoded.status()));
      CHECK(decoded.status().message().find("index 99") != std::string::npos);
    }
  }
  for (size_t length = 0; length < encoded.size(); ++length) {
    CHECK(absl::IsDataLoss(
        DecodeEntry(encoded.substr(0, length), LogIndex(99)).status()));
  }
  // An intact entry stored under the wrong key is also refused.
  CHECK(absl::IsDataLoss(DecodeEntry(encoded, LogIndex(100)).status()));
}

TEST_CASE("Metadata round-trips and rejects corruption", "[storage][unit]") {
  const HardState hard{Term(5), NodeId(3), LogIndex(17)};
  CHECK(*DecodeHardState(EncodeHardState(hard)) == hard);
  Configuration configuration;
  configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  configuration.learners = {NodeId(9)};
  CHECK(*DecodeConfiguration(EncodeConfiguration(configuration)) ==
        configuration);
  const SnapshotMeta meta{LogIndex(40), Term(6), configuration};
  CHECK(*DecodeSnapshotMeta(EncodeSnapshotMeta(meta)) == meta);
  LogIndex first;
  Term previous;
  REQUIRE(
      DecodeLogStart(EncodeLogStart(LogIndex(41), Term(6)), &first, &previous)
          .ok());
  CHECK(first == LogIndex(41));
  CHECK(previous == Term(6));

  std::string corrupt = EncodeHardState(hard);
  corrupt[0] ^= 1;
  CHECK(absl::IsDataLoss(DecodeHardState(corrupt).status()));
  corrupt = EncodeSnapshotMeta(meta);
  corrupt[2] ^= 4;
  CHECK(absl::IsDataLoss(DecodeSnapshotMeta(corrupt).status()));
}

}  // namespace
}  // namespace driftwood::raft::storage
