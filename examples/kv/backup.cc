#include "examples/kv/backup.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "statemachine/mvcc/mvcc_state_machine.h"

namespace driftwood::kv {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[] = "DWKVBAK1";
constexpr size_t kMagicBytes = 8;
constexpr size_t kDigestBytes = 32;
constexpr uint64_t kAlignment = 512;

void AppendBigEndian(uint64_t value, int bytes, std::string* out) {
  for (int i = bytes - 1; i >= 0; --i) {
    out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  }
}

uint64_t ReadBigEndian(const char* bytes, int count) {
  uint64_t value = 0;
  for (int i = 0; i < count; ++i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  }
  return value;
}

class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new()) {
    EVP_DigestInit_ex(context_, EVP_sha256(), nullptr);
  }
  ~Sha256() { EVP_MD_CTX_free(context_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const char* data, size_t size) {
    EVP_DigestUpdate(context_, data, size);
  }
  std::string Final() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int size = 0;
    EVP_DigestFinal_ex(context_, digest.data(), &size);
    return std::string(reinterpret_cast<const char*>(digest.data()), size);
  }

 private:
  EVP_MD_CTX* context_;
};

}  // namespace

struct BackupWriter::Hasher {
  Sha256 sha;
  uint64_t bytes = 0;
};

BackupWriter::~BackupWriter() = default;

absl::StatusOr<std::unique_ptr<BackupWriter>> BackupWriter::Open(
    const fs::path& folder) {
  std::unique_ptr<BackupWriter> writer(new BackupWriter());
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end;
       it.increment(error)) {
    if (!it->is_regular_file(error)) continue;
    File file;
    file.name = it->path().filename().string();
    file.path = it->path();
    file.size = it->file_size(error);
    if (error) break;
    writer->files_.push_back(std::move(file));
  }
  if (error) {
    return absl::InternalError(absl::StrCat("backup: listing ", folder.string(),
                                            ": ", error.message()));
  }
  std::sort(writer->files_.begin(), writer->files_.end(),
            [](const File& a, const File& b) { return a.name < b.name; });
  uint64_t bytes = kMagicBytes + 8;
  for (const File& file : writer->files_) {
    bytes += 4 + file.name.size() + 8 + file.size;
  }
  bytes += (kAlignment - bytes % kAlignment) % kAlignment;
  writer->total_bytes_ = bytes + kDigestBytes;
  writer->hasher_ = std::make_unique<Hasher>();
  return writer;
}

absl::Status BackupWriter::Produce(size_t max_bytes, std::string* out) {
  const size_t start = out->size();
  switch (part_) {
    case Part::kHeader:
      out->append(kMagic, kMagicBytes);
      AppendBigEndian(files_.size(), 8, out);
      part_ = files_.empty() ? Part::kPadding : Part::kFileHeader;
      break;
    case Part::kFileHeader: {
      const File& file = files_[file_];
      AppendBigEndian(file.name.size(), 4, out);
      out->append(file.name);
      AppendBigEndian(file.size, 8, out);
      in_ = std::ifstream(file.path, std::ios::binary);
      if (!in_) {
        return absl::InternalError(
            absl::StrCat("backup: cannot open ", file.path.string()));
      }
      file_left_ = file.size;
      part_ = Part::kFileData;
      if (file_left_ > 0) break;
      [[fallthrough]];
    }
    case Part::kFileData: {
      const size_t chunk =
          static_cast<size_t>(std::min<uint64_t>(file_left_, max_bytes));
      out->resize(start + chunk);
      in_.read(out->data() + start, static_cast<std::streamsize>(chunk));
      if (static_cast<size_t>(in_.gcount()) != chunk) {
        return absl::InternalError(
            absl::StrCat("backup: ", files_[file_].path.string(),
                         " ended early (it changed while being read)"));
      }
      file_left_ -= chunk;
      if (file_left_ == 0) {
        in_.close();
        ++file_;
        part_ = file_ < files_.size() ? Part::kFileHeader : Part::kPadding;
      }
      break;
    }
    case Part::kPadding: {
      const uint64_t before = hasher_->bytes + (out->size() - start);
      out->append((kAlignment - before % kAlignment) % kAlignment, '\0');
      part_ = Part::kDigest;
      break;
    }
    case Part::kDigest: {
      part_ = Part::kEnd;
      out->append(hasher_->sha.Final());
      return absl::OkStatus();  // the digest is not hashed
    }
    case Part::kEnd:
      return absl::OkStatus();
  }
  hasher_->sha.Update(out->data() + start, out->size() - start);
  hasher_->bytes += out->size() - start;
  return absl::OkStatus();
}

absl::StatusOr<std::string> BackupWriter::Next(size_t max_bytes) {
  std::string out;
  while (out.size() < max_bytes && part_ != Part::kEnd) {
    if (absl::Status status = Produce(max_bytes - out.size(), &out);
        !status.ok()) {
      return status;
    }
  }
  written_ += out.size();
  return out;
}

absl::Status UnpackBackup(const fs::path& backup, const fs::path& folder) {
  const auto bad = [&](const std::string& what) {
    return absl::DataLossError(
        absl::StrCat("backup ", backup.string(), ": ", what));
  };
  std::error_code error;
  const uint64_t size = fs::file_size(backup, error);
  if (error) {
    return absl::NotFoundError(
        absl::StrCat("backup ", backup.string(), ": ", error.message()));
  }
  if (size % kAlignment != kDigestBytes || size < kAlignment + kDigestBytes) {
    return bad(absl::StrCat("its size, ", size,
                            " bytes, is not a multiple of 512 plus a 32-byte "
                            "SHA-256 digest"));
  }
  std::ifstream in(backup, std::ios::binary);
  // The digest first, over the whole file, before anything is written.
  {
    Sha256 sha;
    std::string buffer(1 << 20, '\0');
    uint64_t left = size - kDigestBytes;
    while (left > 0) {
      const size_t chunk =
          static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
      in.read(buffer.data(), static_cast<std::streamsize>(chunk));
      if (static_cast<size_t>(in.gcount()) != chunk) return bad("short read");
      sha.Update(buffer.data(), chunk);
      left -= chunk;
    }
    std::string digest(kDigestBytes, '\0');
    in.read(digest.data(), kDigestBytes);
    if (digest != sha.Final()) {
      return bad("its SHA-256 digest does not match: the file is corrupt");
    }
  }
  in.seekg(0);
  std::string header(kMagicBytes + 8, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header.size()));
  if (header.compare(0, kMagicBytes, kMagic) != 0) {
    return bad(
        "it is not a driftwood-kv backup (an etcd snapshot file cannot be "
        "restored by driftwood-kv)");
  }
  const uint64_t count = ReadBigEndian(header.data() + kMagicBytes, 8);
  if (!fs::create_directories(folder, error) || error) {
    return absl::InternalError(
        absl::StrCat("cannot create ", folder.string(), ": ", error.message()));
  }
  uint64_t offset = header.size();
  std::string buffer(1 << 20, '\0');
  for (uint64_t i = 0; i < count; ++i) {
    char length_bytes[4];
    in.read(length_bytes, 4);
    const uint64_t length = ReadBigEndian(length_bytes, 4);
    if (!in || length == 0 || length > 255 || offset + 12 + length > size) {
      return bad(absl::StrCat("file ", i, " has a bad name length"));
    }
    std::string name(length, '\0');
    in.read(name.data(), static_cast<std::streamsize>(length));
    if (name.find('/') != std::string::npos || name == "." || name == "..") {
      return bad(absl::StrCat("file ", i, " has a bad name"));
    }
    char size_bytes[8];
    in.read(size_bytes, 8);
    uint64_t left = ReadBigEndian(size_bytes, 8);
    offset += 12 + length;
    if (!in || offset + left > size - kDigestBytes) {
      return bad(absl::StrCat("file ", name, " runs past the end"));
    }
    offset += left;
    std::ofstream out(folder / name, std::ios::binary | std::ios::trunc);
    while (left > 0) {
      const size_t chunk =
          static_cast<size_t>(std::min<uint64_t>(left, buffer.size()));
      in.read(buffer.data(), static_cast<std::streamsize>(chunk));
      if (static_cast<size_t>(in.gcount()) != chunk) return bad("short read");
      out.write(buffer.data(), static_cast<std::streamsize>(chunk));
      left -= chunk;
    }
    out.close();
    if (!out) {
      return absl::InternalError(
          absl::StrCat("cannot write ", (folder / name).string()));
    }
  }
  return absl::OkStatus();
}

absl::Status RestoreBackup(const fs::path& backup, const fs::path& data_dir) {
  std::error_code error;
  if (fs::exists(data_dir, error) && !fs::is_empty(data_dir, error)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the data folder ", data_dir.string(),
                     " exists and is not empty: restore makes a new member"));
  }
  const fs::path files = data_dir / "restore-files";
  if (absl::Status status = UnpackBackup(backup, files); !status.ok()) {
    fs::remove_all(data_dir, error);
    return status;
  }
  statemachine::RocksDbKvStateMachineOptions options;
  options.path = data_dir / "mvcc";
  absl::Status status;
  {
    mvcc::MvccStateMachine store(options);
    absl::StatusOr<raft::AppliedState> opened = store.Open();
    status = opened.status();
    // Index 0: the data is the new cluster's initial state; the log starts
    // empty on every member alike.
    if (status.ok()) status = store.Restore(raft::SnapshotMeta{}, files);
  }
  fs::remove_all(files, error);
  if (!status.ok()) {
    fs::remove_all(data_dir, error);
    return status;
  }
  return absl::OkStatus();
}

}  // namespace driftwood::kv
