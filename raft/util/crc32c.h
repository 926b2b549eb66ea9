// Driftwood: CRC-32C (Castagnoli), the checksum of every stored entry,
// metadata value and snapshot file. Pure functions, thread-safe.
#ifndef DRIFTWOOD_RAFT_UTIL_CRC32C_H_
#define DRIFTWOOD_RAFT_UTIL_CRC32C_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace driftwood::raft {

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

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_UTIL_CRC32C_H_
