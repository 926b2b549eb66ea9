// Driftwood: the on-disk encodings of the log store (documented in FORMAT.md):
// CRC32C, varints, entries, hard state, configuration and snapshot metadata.
// Pure functions, thread-safe.
#ifndef DRIFTWOOD_RAFT_STORAGE_ENCODING_H_
#define DRIFTWOOD_RAFT_STORAGE_ENCODING_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "raft/core/types.h"

namespace driftwood::raft::storage {

// CRC-32C (Castagnoli), as used by iSCSI and RocksDB; `crc` chains calls.
// Uses the SSE4.2 crc32 instruction when the CPU has it.
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);
// The table-driven version, for tests that compare the two.
uint32_t Crc32cPortable(std::string_view data, uint32_t crc = 0);

// Appends the CRC32C of all of `*out` (4 bytes, little endian).
void AppendCrc(std::string* out);
// Checks the trailing CRC32C of `*bytes` and strips it; false when it is
// missing or does not match.
bool CheckCrc(std::string_view* bytes);

void PutVarint64(std::string* out, uint64_t value);
// Reads a varint from the front of `in`, advancing it. False on truncation.
bool GetVarint64(std::string_view* in, uint64_t* value);
void PutFixed64BigEndian(std::string* out, uint64_t value);
uint64_t DecodeFixed64BigEndian(const char* bytes);

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
