#include "raft/storage/encoding.h"

#include "absl/strings/str_cat.h"

namespace driftwood::raft::storage {

namespace {

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
  // Built only for an error: this runs for every entry read from disk.
  const auto what = [expected_index] {
    return absl::StrCat("entry at index ", expected_index.value());
  };
  if (!CheckCrc(&bytes)) return Corrupt(absl::StrCat(what(), " (checksum)"));
  if (bytes.empty()) return Corrupt(what());
  const uint8_t kind = static_cast<uint8_t>(bytes.front());
  bytes.remove_prefix(1);
  uint64_t term = 0;
  uint64_t index = 0;
  uint64_t length = 0;
  if ((kind != kEntryNormal && kind != kEntryNoOp) ||
      !GetVarint64(&bytes, &term) || !GetVarint64(&bytes, &index) ||
      !GetVarint64(&bytes, &length) || length != bytes.size()) {
    return Corrupt(what());
  }
  if (index != expected_index.value()) {
    return Corrupt(absl::StrCat(what(), " (holds index ", index, ")"));
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
