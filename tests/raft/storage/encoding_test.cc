// Unit tests of the on-disk encodings (raft/storage/encoding.h, FORMAT.md).
#include "raft/storage/encoding.h"

#include <catch2/catch.hpp>
#include <string>

namespace driftwood::raft::storage {
namespace {

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
