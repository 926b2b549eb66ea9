#include "raft/storage/wal_prefill.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/util/crc32c.h"

namespace driftwood::raft {
namespace {

// RocksDB's log format (db/log_format.h, db/log_writer.cc).
constexpr uint64_t kBlockSize = 32768;
constexpr uint64_t kHeaderSize = 7;  // masked CRC-32C (4), length (2), type
constexpr uint8_t kFullType = 1;
constexpr uint8_t kLastType = 4;
constexpr uint8_t kSetCompressionType = 9;

uint32_t DecodeFixed32(const char* p) {
  uint32_t value;
  std::memcpy(&value, p, sizeof(value));  // little endian, as RocksDB writes
  return value;
}

uint32_t UnmaskCrc(uint32_t masked) {
  const uint32_t rotated = masked - 0xa282ead8u;
  return (rotated >> 17) | (rotated << 15);
}

const std::string& Zeros() {
  static const std::string* const zeros =
      new std::string(WalPrefillFileSystem::kChunkBytes, '\0');
  return *zeros;
}

// A WAL file that writes zeros ahead of its end (see the header).
class PrefilledWal final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  PrefilledWal(std::unique_ptr<rocksdb::FSWritableFile> file,
               std::unique_ptr<rocksdb::FSRandomRWFile> zero_writer)
      : FSWritableFileOwnerWrapper(std::move(file)),
        zero_writer_(std::move(zero_writer)) {}

  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
    return Appending(std::nullopt, data.size(),
                     [&] { return target()->Append(data, options, dbg); });
  }
  rocksdb::IOStatus Append(const rocksdb::Slice& data,
                           const rocksdb::IOOptions& options,
                           const rocksdb::DataVerificationInfo& info,
                           rocksdb::IODebugContext* dbg) override {
    return Appending(std::nullopt, data.size(), [&] {
      return target()->Append(data, options, info, dbg);
    });
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data,
                                     uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     rocksdb::IODebugContext* dbg) override {
    return Appending(offset, data.size(), [&] {
      return target()->PositionedAppend(data, offset, options, dbg);
    });
  }
  rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data,
                                     uint64_t offset,
                                     const rocksdb::IOOptions& options,
                                     const rocksdb::DataVerificationInfo& info,
                                     rocksdb::IODebugContext* dbg) override {
    return Appending(offset, data.size(), [&] {
      return target()->PositionedAppend(data, offset, options, info, dbg);
    });
  }
  rocksdb::IOStatus Truncate(uint64_t size, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> lock(mu_);
    rocksdb::IOStatus status = target()->Truncate(size, options, dbg);
    if (status.ok()) {
      appended_ = size;
      filled_ = std::min(filled_, size);
    }
    return status;
  }
  rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                         rocksdb::IODebugContext* dbg) override {
    Prefill(options, dbg);
    return target()->Sync(options, dbg);
  }
  rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    Prefill(options, dbg);
    return target()->Fsync(options, dbg);
  }
  rocksdb::IOStatus Close(const rocksdb::IOOptions& options,
                          rocksdb::IODebugContext* dbg) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (zero_writer_ != nullptr) {
      zero_writer_->Close(options, dbg).PermitUncheckedError();
      zero_writer_.reset();
    }
    if (filled_ > appended_) {
      // The zeros past the last record go; the records stay as written.
      rocksdb::IOStatus status = target()->Truncate(appended_, options, dbg);
      if (!status.ok()) return status;
    }
    return target()->Close(options, dbg);
  }

 private:
  // Writes the next chunk of zeros when fewer than kLowWaterBytes are left
  // past the appended end; the caller's sync then makes them durable.
  void Prefill(const rocksdb::IOOptions& options,
               rocksdb::IODebugContext* dbg) {
    std::lock_guard<std::mutex> lock(mu_);
    if (zero_writer_ == nullptr) return;
    // Appends past the zeros wrote real data there.
    filled_ = std::max(filled_, appended_);
    if (filled_ - appended_ >= WalPrefillFileSystem::kLowWaterBytes) return;
    rocksdb::IOStatus status =
        zero_writer_->Write(filled_, Zeros(), options, dbg);
    if (!status.ok()) {
      // Out of space, say: the appends go on without zeros ahead.
      zero_writer_->Close(options, dbg).PermitUncheckedError();
      zero_writer_.reset();
      return;
    }
    filled_ += Zeros().size();
  }

  // Runs `write`, an append of `bytes` at `offset` (at the end when none),
  // and counts what it appended.
  template <typename Write>
  rocksdb::IOStatus Appending(std::optional<uint64_t> offset, size_t bytes,
                              Write write) {
    std::lock_guard<std::mutex> lock(mu_);
    rocksdb::IOStatus status = write();
    if (status.ok()) {
      appended_ = std::max(appended_, offset.value_or(appended_) + bytes);
    }
    return status;
  }

  std::mutex mu_;
  // Null once the prefill stopped (an error, or Close).
  std::unique_ptr<rocksdb::FSRandomRWFile> zero_writer_;  // mu_
  // Bytes appended by RocksDB, and the end of the zeros written after them.
  uint64_t appended_ = 0;  // mu_
  uint64_t filled_ = 0;    // mu_
};

}  // namespace

bool IsWalFileName(std::string_view path) {
  const size_t slash = path.rfind('/');
  const std::string_view name =
      slash == std::string_view::npos ? path : path.substr(slash + 1);
  constexpr std::string_view kSuffix = ".log";
  if (name.size() <= kSuffix.size() ||
      name.substr(name.size() - kSuffix.size()) != kSuffix) {
    return false;
  }
  return std::all_of(name.begin(), name.end() - kSuffix.size(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

rocksdb::IOStatus WalPrefillFileSystem::NewWritableFile(
    const std::string& name, const rocksdb::FileOptions& options,
    std::unique_ptr<rocksdb::FSWritableFile>* result,
    rocksdb::IODebugContext* dbg) {
  rocksdb::IOStatus status =
      target()->NewWritableFile(name, options, result, dbg);
  if (!status.ok() || !IsWalFileName(name)) return status;
  std::unique_ptr<rocksdb::FSRandomRWFile> zero_writer;
  if (!target()->NewRandomRWFile(name, options, &zero_writer, dbg).ok()) {
    return status;  // no prefill: the WAL grows as it would without
  }
  *result = std::make_unique<PrefilledWal>(std::move(*result),
                                           std::move(zero_writer));
  return status;
}

WalTail ScanWal(std::string_view bytes) {
  WalTail tail;
  uint64_t position = 0;
  const uint64_t size = bytes.size();
  while (position < size) {
    const uint64_t left_in_block = kBlockSize - position % kBlockSize;
    if (left_in_block < kHeaderSize) {
      // The writer pads a block's last bytes when no header fits.
      position += left_in_block;
      continue;
    }
    if (size - position < kHeaderSize) break;
    const char* header = bytes.data() + position;
    const uint64_t length =
        static_cast<uint8_t>(header[4]) |
        (static_cast<uint64_t>(static_cast<uint8_t>(header[5])) << 8);
    const uint8_t type = static_cast<uint8_t>(header[6]);
    const bool known_type =
        (type >= kFullType && type <= kLastType) || type == kSetCompressionType;
    if (!known_type || kHeaderSize + length > left_in_block ||
        kHeaderSize + length > size - position) {
      break;
    }
    // The CRC covers the type byte and the payload.
    const uint32_t crc = Crc32c(bytes.substr(position + kHeaderSize, length),
                                Crc32c(bytes.substr(position + 6, 1)));
    if (crc != UnmaskCrc(DecodeFixed32(header))) break;
    position += kHeaderSize + length;
    tail.records_end = position;
  }
  const auto last_nonzero = std::find_if(bytes.rbegin(), bytes.rend(),
                                         [](char c) { return c != '\0'; });
  const auto nonzero_end =
      static_cast<uint64_t>(bytes.rend() - last_nonzero);  // 0: all zeros
  tail.zeros_after = nonzero_end <= tail.records_end;
  tail.data_end = std::max(tail.records_end, nonzero_end);
  return tail;
}

absl::StatusOr<int> TrimWalZeroTails(rocksdb::FileSystem& fs,
                                     const std::string& folder) {
  const rocksdb::IOOptions io;
  std::vector<std::string> children;
  rocksdb::IOStatus listed = fs.GetChildren(folder, io, &children, nullptr);
  if (listed.IsNotFound() || listed.IsPathNotFound()) return 0;
  if (!listed.ok()) {
    return absl::InternalError(absl::StrCat("listing the log store's folder ",
                                            folder, ": ", listed.ToString()));
  }
  int trimmed = 0;
  for (const std::string& child : children) {
    if (!IsWalFileName(child)) continue;
    const std::string path = absl::StrCat(folder, "/", child);
    std::string bytes;
    rocksdb::IOStatus read = rocksdb::ReadFileToString(&fs, path, &bytes);
    if (!read.ok()) {
      return absl::InternalError(absl::StrCat("reading the write-ahead log ",
                                              path, ": ", read.ToString()));
    }
    const WalTail tail = ScanWal(bytes);
    if (tail.data_end == bytes.size()) continue;
    std::unique_ptr<rocksdb::FSWritableFile> file;
    rocksdb::IOStatus truncated =
        fs.ReopenWritableFile(path, rocksdb::FileOptions(), &file, nullptr);
    if (truncated.ok()) truncated = file->Truncate(tail.data_end, io, nullptr);
    if (truncated.ok()) truncated = file->Fsync(io, nullptr);
    if (file != nullptr) {
      rocksdb::IOStatus closed = file->Close(io, nullptr);
      if (truncated.ok()) truncated = closed;
    }
    if (!truncated.ok()) {
      return absl::InternalError(
          absl::StrCat("cutting the zeros after the last record of ", path,
                       ": ", truncated.ToString()));
    }
    ++trimmed;
  }
  return trimmed;
}

}  // namespace driftwood::raft
