#include "statemachine/memory_kv_state_machine.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "raft/storage/encoding.h"
#include "raft/util/crc32c.h"
#include "statemachine/kv_command.h"

namespace driftwood::statemachine {
namespace {

constexpr char kMagic[] = "DWKVMEM1";
constexpr size_t kMagicSize = sizeof(kMagic) - 1;
constexpr size_t kBufferSize = 1 << 20;

absl::Status ErrnoError(const char* call, const std::filesystem::path& path,
                        int error) {
  const std::string message =
      absl::StrCat(call, " ", path.string(), ": ", std::strerror(error));
  return error == ENOENT ? absl::NotFoundError(message)
                         : absl::InternalError(message);
}

void AppendFixed(std::string* out, uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

uint64_t DecodeFixed(const char* bytes, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; ++i) {
    value |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  }
  return value;
}

void AppendVarint(std::string* out, uint64_t value) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Buffered writing of one new file with a running CRC32C. Does not fsync: the
// snapshot store syncs snapshot files before publishing them.
class DataFileWriter {
 public:
  ~DataFileWriter() {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Open(std::filesystem::path path) {
    path_ = std::move(path);
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd_ < 0) return ErrnoError("open", path_, errno);
    buffer_.reserve(kBufferSize);
    return absl::OkStatus();
  }

  // Appends to the buffer; call MaybeFlush between records.
  std::string* buffer() { return &buffer_; }

  absl::Status MaybeFlush() {
    return buffer_.size() >= kBufferSize ? Flush() : absl::OkStatus();
  }

  // Appends the CRC32C of everything written, flushes and closes.
  absl::Status Finish() {
    crc_ = raft::Crc32c(buffer_, crc_);
    AppendFixed(&buffer_, crc_, 4);
    if (absl::Status s = WriteAll(); !s.ok()) return s;
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return ErrnoError("close", path_, errno);
    return absl::OkStatus();
  }

 private:
  absl::Status Flush() {
    crc_ = raft::Crc32c(buffer_, crc_);
    return WriteAll();
  }

  absl::Status WriteAll() {
    size_t written = 0;
    while (written < buffer_.size()) {
      const ssize_t n =
          ::write(fd_, buffer_.data() + written, buffer_.size() - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("write", path_, errno);
      }
      written += static_cast<size_t>(n);
    }
    buffer_.clear();
    return absl::OkStatus();
  }

  std::filesystem::path path_;
  int fd_ = -1;
  std::string buffer_;
  uint32_t crc_ = 0;
};

// Buffered reading of a data file with a running CRC32C over the bytes
// consumed, reporting problems as DataLoss naming the file and byte offset.
class DataFileReader {
 public:
  ~DataFileReader() {
    if (fd_ >= 0) ::close(fd_);
  }

  absl::Status Open(std::filesystem::path path) {
    path_ = std::move(path);
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      const int error = errno;
      if (error == ENOENT) {
        return absl::DataLossError(
            absl::StrCat("snapshot file ", path_.string(), " is missing"));
      }
      return ErrnoError("open", path_, error);
    }
    return absl::OkStatus();
  }

  uint64_t offset() const { return offset_; }

  absl::Status Corrupt(const std::string& problem) const {
    return absl::DataLossError(absl::StrCat("corrupt snapshot file ",
                                            path_.string(), " at byte offset ",
                                            offset_, ": ", problem));
  }

  // Reads exactly `count` bytes into `*out` (replacing its contents).
  absl::Status Read(size_t count, const char* what, std::string* out) {
    out->clear();
    while (out->size() < count) {
      if (position_ == buffer_.size()) {
        if (absl::Status s = Fill(); !s.ok()) return s;
        if (buffer_.empty()) {
          return Corrupt(absl::StrCat("truncated ", what, ": needs ", count,
                                      " bytes, the file ends after ",
                                      out->size()));
        }
      }
      const size_t take =
          std::min(count - out->size(), buffer_.size() - position_);
      out->append(buffer_, position_, take);
      Consume(take);
    }
    return absl::OkStatus();
  }

  absl::Status ReadVarint(const char* what, uint64_t* value) {
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (position_ == buffer_.size()) {
        if (absl::Status s = Fill(); !s.ok()) return s;
        if (buffer_.empty()) {
          return Corrupt(absl::StrCat("truncated ", what));
        }
      }
      const auto byte = static_cast<uint8_t>(buffer_[position_]);
      if (shift == 63 && byte > 1) {
        return Corrupt(absl::StrCat(what, " overflows 64 bits"));
      }
      Consume(1);
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return absl::OkStatus();
      }
    }
    return Corrupt(absl::StrCat(what, " overflows 64 bits"));
  }

  // Checks the trailing CRC32C and that nothing follows it.
  absl::Status ReadChecksumAndEnd() {
    crc_ = raft::Crc32c(std::string_view(buffer_).substr(
                            crc_position_, position_ - crc_position_),
                        crc_);
    crc_position_ = position_;
    const uint32_t expected = crc_;
    std::string stored;
    if (absl::Status s = Read(4, "checksum", &stored); !s.ok()) return s;
    const auto actual = static_cast<uint32_t>(DecodeFixed(stored.data(), 4));
    if (actual != expected) {
      offset_ -= 4;
      return Corrupt(absl::StrCat("checksum mismatch (stored ", actual,
                                  ", computed ", expected, ")"));
    }
    if (position_ == buffer_.size()) {
      if (absl::Status s = Fill(); !s.ok()) return s;
    }
    if (!buffer_.empty()) return Corrupt("bytes follow the checksum");
    return absl::OkStatus();
  }

 private:
  void Consume(size_t count) {
    position_ += count;
    offset_ += count;
  }

  // Refills the buffer; leaves it empty at end of file.
  absl::Status Fill() {
    crc_ = raft::Crc32c(std::string_view(buffer_).substr(
                            crc_position_, position_ - crc_position_),
                        crc_);
    buffer_.resize(kBufferSize);
    while (true) {
      const ssize_t n = ::read(fd_, buffer_.data(), buffer_.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        const int error = errno;
        buffer_.clear();
        return ErrnoError("read", path_, error);
      }
      buffer_.resize(static_cast<size_t>(n));
      break;
    }
    position_ = 0;
    crc_position_ = 0;
    return absl::OkStatus();
  }

  std::filesystem::path path_;
  int fd_ = -1;
  std::string buffer_;
  size_t position_ = 0;      // next unread byte of buffer_
  size_t crc_position_ = 0;  // first byte of buffer_ not yet in crc_
  uint64_t offset_ = 0;      // file offset of buffer_[position_]
  uint32_t crc_ = 0;
};

}  // namespace

// A captured state: references to the shards as they were at Capture.
class MemoryKvStateMachine::Snapshot : public raft::StateMachineSnapshot {
 public:
  Snapshot(std::array<std::shared_ptr<const Shard>, kShards> shards,
           uint64_t size, raft::SnapshotMeta meta)
      : shards_(std::move(shards)), size_(size), meta_(std::move(meta)) {}

  raft::SnapshotMeta meta() const override { return meta_; }

  absl::Status WriteTo(const std::filesystem::path& dir) override {
    DataFileWriter writer;
    if (absl::Status s = writer.Open(dir / kDataFileName); !s.ok()) return s;
    std::string* out = writer.buffer();
    out->append(kMagic, kMagicSize);
    AppendFixed(out, meta_.index.value(), 8);
    AppendFixed(out, meta_.term.value(), 8);
    AppendFixed(out, size_, 8);
    for (const std::shared_ptr<const Shard>& shard : shards_) {
      for (const auto& [key, value] : *shard) {
        AppendVarint(out, key.size());
        out->append(key);
        AppendVarint(out, value.size());
        out->append(value);
        if (absl::Status s = writer.MaybeFlush(); !s.ok()) return s;
      }
    }
    return writer.Finish();
  }

 private:
  const std::array<std::shared_ptr<const Shard>, kShards> shards_;
  const uint64_t size_;
  const raft::SnapshotMeta meta_;
};

// The KvStore view of the shards while the apply thread holds the writer
// lock.
class MemoryKvStateMachine::BatchStore : public KvStore {
 public:
  explicit BatchStore(MemoryKvStateMachine* machine) : machine_(machine) {}

  absl::StatusOr<std::optional<std::string>> Get(
      const std::string& key) override {
    const Shard& shard = *machine_->shards_[ShardOf(key)];
    auto it = shard.find(key);
    if (it == shard.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }

  absl::Status Put(const std::string& key, const std::string& value) override {
    Shard* shard = machine_->MutableShard(ShardOf(key));
    auto [it, inserted] = shard->try_emplace(key, value);
    if (inserted) {
      ++machine_->size_;
    } else {
      it->second = value;
    }
    return absl::OkStatus();
  }

  absl::Status Delete(const std::string& key) override {
    Shard* shard = machine_->MutableShard(ShardOf(key));
    machine_->size_ -= shard->erase(key);
    return absl::OkStatus();
  }

 private:
  MemoryKvStateMachine* machine_;
};

MemoryKvStateMachine::MemoryKvStateMachine() {
  for (auto& shard : shards_) shard = std::make_shared<Shard>();
}

MemoryKvStateMachine::~MemoryKvStateMachine() = default;

size_t MemoryKvStateMachine::ShardOf(std::string_view key) {
  // FNV-1a: fixed across builds and runs (unlike std::hash or absl::Hash), so
  // a key's shard, and hence the order of kv.data, is reproducible.
  uint64_t hash = 14695981039346656037ull;
  for (char c : key) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 1099511628211ull;
  }
  return static_cast<size_t>(hash % kShards);
}

MemoryKvStateMachine::Shard* MemoryKvStateMachine::MutableShard(size_t index) {
  std::shared_ptr<Shard>& shard = shards_[index];
  // Only the apply thread makes new references (Capture), so a count of 1
  // cannot grow behind our back. A snapshot dropping its reference on
  // another thread decrements with release ordering; the acquire fence makes
  // its last reads of the map happen before our writes.
  if (shard.use_count() == 1) {
    std::atomic_thread_fence(std::memory_order_acquire);
    return shard.get();
  }
  // Copy-on-write: a snapshot shares this shard.
  shard = std::make_shared<Shard>(*shard);
  return shard.get();
}

absl::StatusOr<raft::AppliedState> MemoryKvStateMachine::Open() {
  return applied_;
}

absl::StatusOr<std::vector<std::string>> MemoryKvStateMachine::Apply(
    const raft::ApplyBatch& batch) {
  std::vector<std::string> responses;
  if (batch.entries.empty()) return responses;
  if (absl::Status s = raft::CheckBatchFollows(applied_, batch,
                                               "MemoryKvStateMachine::Apply");
      !s.ok()) {
    return s;
  }
  responses.reserve(batch.entries.size());
  std::unique_lock lock(mutex_);
  BatchStore store(this);
  for (const raft::Entry& entry : batch.entries) {
    if (entry.type == raft::EntryType::kNoOp) {
      responses.emplace_back();
      continue;
    }
    absl::StatusOr<std::string> response =
        ApplyEntryData(entry.data.view(), &store);
    if (!response.ok()) return response.status();  // never: memory cannot fail
    responses.push_back(std::move(*response));
  }
  const raft::Entry& last = batch.entries.back();
  applied_ = raft::AppliedState{last.index, last.term, batch.configuration};
  return responses;
}

absl::StatusOr<std::unique_ptr<raft::StateMachineSnapshot>>
MemoryKvStateMachine::Capture() {
  if (applied_.index == raft::LogIndex(0)) {
    return absl::FailedPreconditionError(
        "MemoryKvStateMachine::Capture: nothing has been applied");
  }
  // Only the apply thread changes shards_, so no lock is needed to read it.
  std::array<std::shared_ptr<const Shard>, kShards> shards;
  for (size_t i = 0; i < kShards; ++i) shards[i] = shards_[i];
  return std::unique_ptr<raft::StateMachineSnapshot>(
      new Snapshot(std::move(shards), size_,
                   raft::SnapshotMeta{applied_.index, applied_.term,
                                      applied_.configuration}));
}

absl::Status MemoryKvStateMachine::Restore(const raft::SnapshotMeta& meta,
                                           const std::filesystem::path& dir) {
  DataFileReader in;
  if (absl::Status s = in.Open(dir / kDataFileName); !s.ok()) return s;
  std::string bytes;
  if (absl::Status s = in.Read(kMagicSize + 24, "header", &bytes); !s.ok()) {
    return s;
  }
  if (bytes.compare(0, kMagicSize, kMagic) != 0) {
    return absl::DataLossError(
        absl::StrCat("corrupt snapshot file ", (dir / kDataFileName).string(),
                     " at byte offset 0: not a MemoryKvStateMachine data file "
                     "(bad magic)"));
  }
  const uint64_t index = DecodeFixed(bytes.data() + kMagicSize, 8);
  const uint64_t term = DecodeFixed(bytes.data() + kMagicSize + 8, 8);
  const uint64_t count = DecodeFixed(bytes.data() + kMagicSize + 16, 8);
  if (index != meta.index.value() || term != meta.term.value()) {
    return absl::DataLossError(absl::StrCat(
        "snapshot file ", (dir / kDataFileName).string(), " holds index ",
        index, " term ", term, " but the snapshot metadata says index ",
        meta.index.value(), " term ", meta.term.value()));
  }

  std::array<std::shared_ptr<Shard>, kShards> shards;
  for (auto& shard : shards) shard = std::make_shared<Shard>();
  std::string key;
  std::string value;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t record_offset = in.offset();
    uint64_t length = 0;
    if (absl::Status s = in.ReadVarint("key length", &length); !s.ok()) {
      return s;
    }
    // A length beyond any file this process could hold is corruption, not a
    // reason to try a huge allocation.
    if (length > (uint64_t{1} << 40)) return in.Corrupt("absurd key length");
    if (absl::Status s = in.Read(static_cast<size_t>(length), "key", &key);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = in.ReadVarint("value length", &length); !s.ok()) {
      return s;
    }
    if (length > (uint64_t{1} << 40)) return in.Corrupt("absurd value length");
    if (absl::Status s = in.Read(static_cast<size_t>(length), "value", &value);
        !s.ok()) {
      return s;
    }
    Shard& shard = *shards[ShardOf(key)];
    if (!shard.try_emplace(key, value).second) {
      return absl::DataLossError(
          absl::StrCat("corrupt snapshot file ", (dir / kDataFileName).string(),
                       " at byte offset ", record_offset, ": key \"", key,
                       "\" appears twice"));
    }
  }
  if (absl::Status s = in.ReadChecksumAndEnd(); !s.ok()) return s;

  std::unique_lock lock(mutex_);
  shards_ = std::move(shards);
  size_ = count;
  applied_ = raft::AppliedState{meta.index, meta.term, meta.configuration};
  return absl::OkStatus();
}

absl::StatusOr<std::string> MemoryKvStateMachine::Query(
    std::string_view query) const {
  absl::StatusOr<KvQuery> decoded = DecodeQuery(query);
  if (!decoded.ok()) return decoded.status();
  std::shared_lock lock(mutex_);
  if (const auto* get = std::get_if<GetQuery>(&*decoded)) {
    const Shard& shard = *shards_[ShardOf(get->key)];
    auto it = shard.find(get->key);
    if (it == shard.end()) return EncodeGetResult(std::nullopt);
    return EncodeGetResult(it->second);
  }
  return EncodeCountResult(size_);
}

}  // namespace driftwood::statemachine
