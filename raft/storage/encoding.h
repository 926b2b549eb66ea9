// Driftwood: the on-disk encodings of the log store (documented in FORMAT.md):
// entries, hard state, configuration and snapshot metadata, each with a
// trailing CRC32C (raft/util/crc32c.h) and varints (raft/util/coding.h).
// Pure functions, thread-safe.
#ifndef DRIFTWOOD_RAFT_STORAGE_ENCODING_H_
#define DRIFTWOOD_RAFT_STORAGE_ENCODING_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "raft/core/types.h"
#include "raft/util/coding.h"
#include "raft/util/crc32c.h"

namespace driftwood::raft::storage {

// Entry value: u8 kind, varint term, varint index, varint length, data, then
// the CRC32C of all preceding bytes (4 bytes, little endian).
std::string EncodeEntry(const Entry& entry);
// DataLoss naming `expected_index` when the bytes are corrupt (bad checksum,
// truncated, unknown kind) or hold another index.
absl::StatusOr<Entry> DecodeEntry(std::string_view bytes,
                                  LogIndex expected_index);

// Metadata values carry the same trailing CRC32C.
std::string EncodeHardState(const HardState& state);
absl::StatusOr<HardState> DecodeHardState(std::string_view bytes);
std::string EncodeConfiguration(const Configuration& configuration);
absl::StatusOr<Configuration> DecodeConfiguration(std::string_view bytes);
std::string EncodeSnapshotMeta(const SnapshotMeta& meta);
absl::StatusOr<SnapshotMeta> DecodeSnapshotMeta(std::string_view bytes);
// The compaction point: the first stored index and the term of the entry
// before it.
std::string EncodeLogStart(LogIndex first_index, Term previous_term);
absl::Status DecodeLogStart(std::string_view bytes, LogIndex* first_index,
                            Term* previous_term);

}  // namespace driftwood::raft::storage

#endif  // DRIFTWOOD_RAFT_STORAGE_ENCODING_H_
