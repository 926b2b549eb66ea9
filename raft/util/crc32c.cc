#include "raft/util/crc32c.h"

#include <array>

namespace driftwood::raft {
namespace {

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) {
      crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
    }
    table[i] = crc;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

}  // namespace

void AppendCrc(std::string* out) {
  const uint32_t crc = Crc32c(*out);
  for (int shift = 0; shift < 32; shift += 8) {
    out->push_back(static_cast<char>((crc >> shift) & 0xff));
  }
}

bool CheckCrc(std::string_view* bytes) {
  if (bytes->size() < 4) return false;
  const std::string_view body = bytes->substr(0, bytes->size() - 4);
  uint32_t stored = 0;
  for (int i = 0; i < 4; ++i) {
    stored |= static_cast<uint32_t>(static_cast<uint8_t>(
                  (*bytes)[body.size() + static_cast<size_t>(i)]))
              << (8 * i);
  }
  if (stored != Crc32c(body)) return false;
  *bytes = body;
  return true;
}

namespace {

uint32_t Crc32cTable(std::string_view data, uint32_t crc) {
  for (char c : data) {
    crc = kCrcTable[(crc ^ static_cast<uint8_t>(c)) & 0xff] ^ (crc >> 8);
  }
  return crc;
}

#if defined(__x86_64__)
// The SSE4.2 crc32 instruction computes CRC-32C (the same polynomial as the
// table), 8 bytes per instruction.
__attribute__((target("sse4.2"))) uint32_t Crc32cSse42(std::string_view data,
                                                       uint32_t crc) {
  const char* p = data.data();
  size_t n = data.size();
  uint64_t crc64 = crc;
  while (n >= 8) {
    uint64_t word;
    __builtin_memcpy(&word, p, 8);
    crc64 = __builtin_ia32_crc32di(crc64, word);
    p += 8;
    n -= 8;
  }
  uint32_t crc32 = static_cast<uint32_t>(crc64);
  while (n > 0) {
    crc32 = __builtin_ia32_crc32qi(crc32, static_cast<uint8_t>(*p));
    ++p;
    --n;
  }
  return crc32;
}

bool HasSse42() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") != 0;
  }();
  return has;
}
#endif

}  // namespace

uint32_t Crc32cPortable(std::string_view data, uint32_t crc) {
  return ~Crc32cTable(data, ~crc);
}

uint32_t Crc32c(std::string_view data, uint32_t crc) {
#if defined(__x86_64__)
  if (HasSse42()) return ~Crc32cSse42(data, ~crc);
#endif
  return ~Crc32cTable(data, ~crc);
}

}  // namespace driftwood::raft
