#include "raft/storage/encoding.h"

#include <array>

#include "absl/strings/str_cat.h"

namespace driftwood::raft::storage {

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

constexpr uint8_t kEntryNormal = 1;
constexpr uint8_t kEntryNoOp = 2;

void PutIds(std::string* out, const std::vector<NodeId>& ids) {
  PutVarint64(out, ids.size());
  for (NodeId id : ids) PutVarint64(out, id.value());
}

bool GetIds(std::string_view* in, std::vector<NodeId>* ids) {
  uint64_t count = 0;
  if (!GetVarint64(in, &count) || count > in->size()) return false;
  ids->clear();
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t id = 0;
    if (!GetVarint64(in, &id)) return false;
    ids->emplace_back(id);
  }
  return true;
}

void PutConfiguration(std::string* out, const Configuration& configuration) {
  PutIds(out, configuration.voters);
  PutIds(out, configuration.voters_outgoing);
  PutIds(out, configuration.learners);
}

bool GetConfiguration(std::string_view* in, Configuration* configuration) {
  return GetIds(in, &configuration->voters) &&
         GetIds(in, &configuration->voters_outgoing) &&
         GetIds(in, &configuration->learners);
}

absl::Status Corrupt(const std::string& what) {
  return absl::DataLossError(absl::StrCat("corrupt ", what));
}

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

void PutVarint64(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

bool GetVarint64(std::string_view* in, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift <= 63 && !in->empty(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(in->front());
    in->remove_prefix(1);
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

void PutFixed64BigEndian(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

uint64_t DecodeFixed64BigEndian(const char* bytes) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  }
  return value;
}

std::string EncodeEntry(const Entry& entry) {
  std::string out;
  out.reserve(entry.data.size() + 24);
  out.push_back(static_cast<char>(
      entry.type == EntryType::kNoOp ? kEntryNoOp : kEntryNormal));
  PutVarint64(&out, entry.term.value());
  PutVarint64(&out, entry.index.value());
  PutVarint64(&out, entry.data.size());
  out.append(entry.data.view());
  AppendCrc(&out);
  return out;
}

absl::StatusOr<Entry> DecodeEntry(std::string_view bytes,
                                  LogIndex expected_index) {
  const std::string what =
      absl::StrCat("entry at index ", expected_index.value());
  if (!CheckCrc(&bytes)) return Corrupt(absl::StrCat(what, " (checksum)"));
  if (bytes.empty()) return Corrupt(what);
  const uint8_t kind = static_cast<uint8_t>(bytes.front());
  bytes.remove_prefix(1);
  uint64_t term = 0;
  uint64_t index = 0;
  uint64_t length = 0;
  if ((kind != kEntryNormal && kind != kEntryNoOp) ||
      !GetVarint64(&bytes, &term) || !GetVarint64(&bytes, &index) ||
      !GetVarint64(&bytes, &length) || length != bytes.size()) {
    return Corrupt(what);
  }
  if (index != expected_index.value()) {
    return Corrupt(absl::StrCat(what, " (holds index ", index, ")"));
  }
  Entry entry;
  entry.term = Term(term);
  entry.index = LogIndex(index);
  entry.type = kind == kEntryNoOp ? EntryType::kNoOp : EntryType::kNormal;
  entry.data = std::string(bytes);
  return entry;
}

std::string EncodeHardState(const HardState& state) {
  std::string out;
  PutVarint64(&out, state.term.value());
  PutVarint64(&out, state.voted_for.value());
  PutVarint64(&out, state.commit.value());
  AppendCrc(&out);
  return out;
}

absl::StatusOr<HardState> DecodeHardState(std::string_view bytes) {
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t commit = 0;
  if (!CheckCrc(&bytes) || !GetVarint64(&bytes, &term) ||
      !GetVarint64(&bytes, &vote) || !GetVarint64(&bytes, &commit) ||
      !bytes.empty()) {
    return Corrupt("hard state");
  }
  return HardState{Term(term), NodeId(vote), LogIndex(commit)};
}

std::string EncodeConfiguration(const Configuration& configuration) {
  std::string out;
  PutConfiguration(&out, configuration);
  AppendCrc(&out);
  return out;
}

absl::StatusOr<Configuration> DecodeConfiguration(std::string_view bytes) {
  Configuration configuration;
  if (!CheckCrc(&bytes) || !GetConfiguration(&bytes, &configuration) ||
      !bytes.empty()) {
    return Corrupt("configuration");
  }
  return configuration;
}

std::string EncodeSnapshotMeta(const SnapshotMeta& meta) {
  std::string out;
  PutVarint64(&out, meta.index.value());
  PutVarint64(&out, meta.term.value());
  PutConfiguration(&out, meta.configuration);
  AppendCrc(&out);
  return out;
}

absl::StatusOr<SnapshotMeta> DecodeSnapshotMeta(std::string_view bytes) {
  uint64_t index = 0;
  uint64_t term = 0;
  SnapshotMeta meta;
  if (!CheckCrc(&bytes) || !GetVarint64(&bytes, &index) ||
      !GetVarint64(&bytes, &term) ||
      !GetConfiguration(&bytes, &meta.configuration) || !bytes.empty()) {
    return Corrupt("snapshot metadata");
  }
  meta.index = LogIndex(index);
  meta.term = Term(term);
  return meta;
}

std::string EncodeLogStart(LogIndex first_index, Term previous_term) {
  std::string out;
  PutVarint64(&out, first_index.value());
  PutVarint64(&out, previous_term.value());
  AppendCrc(&out);
  return out;
}

absl::Status DecodeLogStart(std::string_view bytes, LogIndex* first_index,
                            Term* previous_term) {
  uint64_t first = 0;
  uint64_t term = 0;
  if (!CheckCrc(&bytes) || !GetVarint64(&bytes, &first) ||
      !GetVarint64(&bytes, &term) || !bytes.empty() || first == 0) {
    return Corrupt("log start (compaction point)");
  }
  *first_index = LogIndex(first);
  *previous_term = Term(term);
  return absl::OkStatus();
}

}  // namespace driftwood::raft::storage
