// Driftwood: integer encodings of the on-disk formats: LEB128 varints and
// big-endian fixed 64-bit integers (which sort bytewise in numeric order).
// Pure functions, thread-safe.
#ifndef DRIFTWOOD_RAFT_UTIL_CODING_H_
#define DRIFTWOOD_RAFT_UTIL_CODING_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace driftwood::raft {

void PutVarint64(std::string* out, uint64_t value);
// Reads a varint from the front of `in`, advancing it. False on truncation.
bool GetVarint64(std::string_view* in, uint64_t* value);
void PutFixed64BigEndian(std::string* out, uint64_t value);
uint64_t DecodeFixed64BigEndian(const char* bytes);

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_UTIL_CODING_H_
