#include "tests/support/hash_state_machine.h"

#include "absl/strings/str_cat.h"
#include "raft/storage/encoding.h"
#include "raft/storage/file_util.h"
#include "raft/util/coding.h"
#include "raft/util/crc32c.h"

namespace driftwood::testing {
namespace {

using raft::AppliedState;
namespace storage = raft::storage;

constexpr char kStateFile[] = "hash.state";

std::string EncodeState(const AppliedState& applied, uint64_t hash) {
  std::string out;
  raft::PutVarint64(&out, applied.index.value());
  raft::PutVarint64(&out, applied.term.value());
  raft::PutVarint64(&out, hash);
  out += storage::EncodeConfiguration(applied.configuration);
  raft::AppendCrc(&out);
  return out;
}

absl::Status DecodeState(std::string_view bytes, const std::string& source,
                         AppliedState* applied, uint64_t* hash) {
  uint64_t index = 0;
  uint64_t term = 0;
  if (!raft::CheckCrc(&bytes) || !raft::GetVarint64(&bytes, &index) ||
      !raft::GetVarint64(&bytes, &term) || !raft::GetVarint64(&bytes, hash)) {
    return absl::DataLossError(absl::StrCat("corrupt state file ", source));
  }
  absl::StatusOr<raft::Configuration> configuration =
      storage::DecodeConfiguration(bytes);
  if (!configuration.ok()) return configuration.status();
  *applied = {raft::LogIndex(index), raft::Term(term), *configuration};
  return absl::OkStatus();
}

class HashSnapshot : public raft::StateMachineSnapshot {
 public:
  HashSnapshot(AppliedState applied, uint64_t hash)
      : applied_(std::move(applied)), hash_(hash) {}
  raft::SnapshotMeta meta() const override {
    return {applied_.index, applied_.term, applied_.configuration};
  }
  absl::Status WriteTo(const std::filesystem::path& dir) override {
    return raft::WriteFileDurably(dir / kStateFile,
                                  EncodeState(applied_, hash_));
  }

 private:
  AppliedState applied_;
  uint64_t hash_;
};

}  // namespace

uint64_t ChainHash(uint64_t previous, const raft::Entry& entry) {
  // FNV-1a over the previous value, the entry's id and its bytes.
  uint64_t hash = previous ^ 0xcbf29ce484222325ULL;
  auto mix = [&hash](uint64_t byte) {
    hash ^= byte;
    hash *= 0x100000001b3ULL;
  };
  for (uint64_t value : {entry.index.value(), entry.term.value(),
                         static_cast<uint64_t>(entry.type)}) {
    for (int shift = 0; shift < 64; shift += 8) mix((value >> shift) & 0xff);
  }
  for (char c : entry.data.view()) mix(static_cast<uint8_t>(c));
  return hash;
}

HashStateMachine::HashStateMachine(std::filesystem::path dir)
    : dir_(std::move(dir)) {}

absl::StatusOr<AppliedState> HashStateMachine::Open() {
  if (dir_.empty()) return applied_;
  std::error_code error;
  std::filesystem::create_directories(dir_, error);
  absl::StatusOr<std::string> bytes = raft::ReadFileToString(dir_ / kStateFile);
  if (absl::IsNotFound(bytes.status())) return applied_;
  if (!bytes.ok()) return bytes.status();
  if (absl::Status status =
          DecodeState(*bytes, (dir_ / kStateFile).string(), &applied_, &hash_);
      !status.ok()) {
    return status;
  }
  return applied_;
}

absl::Status HashStateMachine::WriteState(bool sync) {
  if (dir_.empty()) return absl::OkStatus();
  if (sync) {
    return raft::WriteFileDurably(dir_ / kStateFile,
                                  EncodeState(applied_, hash_));
  }
  // Atomic in the page cache (rename), durable only at the next Sync.
  const std::filesystem::path temporary = dir_ / "hash.state.apply";
  {
    FILE* file = std::fopen(temporary.c_str(), "wb");
    if (file == nullptr) return absl::InternalError("open state file");
    const std::string bytes = EncodeState(applied_, hash_);
    const bool written =
        std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
    if (std::fclose(file) != 0 || !written) {
      return absl::InternalError("write state file");
    }
  }
  std::error_code error;
  std::filesystem::rename(temporary, dir_ / kStateFile, error);
  if (error) return absl::InternalError("rename state file");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> HashStateMachine::Apply(
    const raft::ApplyBatch& batch) {
  if (absl::Status status =
          raft::CheckBatchFollows(applied_, batch, "HashStateMachine::Apply");
      !status.ok()) {
    return status;
  }
  std::vector<std::string> responses;
  for (const raft::Entry& entry : batch.entries) {
    hash_ = ChainHash(hash_, entry);
    applied_.index = entry.index;
    applied_.term = entry.term;
    responses.push_back(absl::StrCat(hash_));
  }
  applied_.configuration = batch.configuration;
  if (absl::Status status = WriteState(/*sync=*/false); !status.ok()) {
    return status;
  }
  return responses;
}

absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>>
HashStateMachine::Capture() {
  if (applied_.index == raft::LogIndex(0)) {
    return absl::FailedPreconditionError("nothing applied yet");
  }
  return std::make_unique<HashSnapshot>(applied_, hash_);
}

absl::Status HashStateMachine::Restore(const raft::SnapshotMeta& meta,
                                       const std::filesystem::path& dir) {
  absl::StatusOr<std::string> bytes = raft::ReadFileToString(dir / kStateFile);
  if (!bytes.ok()) return bytes.status();
  AppliedState restored;
  uint64_t hash = 0;
  if (absl::Status status =
          DecodeState(*bytes, (dir / kStateFile).string(), &restored, &hash);
      !status.ok()) {
    return status;
  }
  if (restored.index != meta.index || restored.term != meta.term) {
    return absl::DataLossError("snapshot state does not match its metadata");
  }
  applied_ = restored;
  hash_ = hash;
  return WriteState(/*sync=*/true);
}

absl::StatusOr<std::string> HashStateMachine::Query(std::string_view) const {
  return absl::StrCat(hash_);
}

absl::StatusOr<raft::LogIndex> HashStateMachine::Sync() {
  if (dir_.empty()) return StateMachine::Sync();
  if (absl::Status status = WriteState(/*sync=*/true); !status.ok()) {
    return status;
  }
  return applied_.index;
}

}  // namespace driftwood::testing
