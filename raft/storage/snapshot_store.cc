#include "raft/storage/snapshot_store.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "raft/storage/encoding.h"
#include "raft/storage/file_util.h"
#include "raft/util/crc32c.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kManifestMagic = "DWSNAP01";
constexpr uint64_t kManifestVersion = 1;
constexpr std::string_view kPublishedPrefix = "snap-";
constexpr char kTemporaryPrefixText[] = "tmp-";
constexpr std::string_view kTemporaryPrefix = "tmp-";

std::string PublishedName(LogIndex index, Term term) {
  return absl::StrFormat("snap-%020d-%020d", index.value(), term.value());
}

// Parses "snap-<index>-<term>"; false for any other name.
bool ParsePublishedName(const std::string& name, LogIndex* index, Term* term) {
  if (name.size() != kPublishedPrefix.size() + 20 + 1 + 20 ||
      name.compare(0, kPublishedPrefix.size(), kPublishedPrefix) != 0 ||
      name[kPublishedPrefix.size() + 20] != '-') {
    return false;
  }
  uint64_t parsed[2] = {0, 0};
  for (int part = 0; part < 2; ++part) {
    const size_t begin =
        kPublishedPrefix.size() + static_cast<size_t>(part) * 21;
    for (size_t i = begin; i < begin + 20; ++i) {
      if (name[i] < '0' || name[i] > '9') return false;
      parsed[part] = parsed[part] * 10 + static_cast<uint64_t>(name[i] - '0');
    }
  }
  *index = LogIndex(parsed[0]);
  *term = Term(parsed[1]);
  return true;
}

void PutString(std::string* out, std::string_view value) {
  PutVarint64(out, value.size());
  out->append(value);
}

bool GetString(std::string_view* in, std::string_view* value) {
  uint64_t size = 0;
  if (!GetVarint64(in, &size) || size > in->size()) return false;
  *value = in->substr(0, size);
  in->remove_prefix(size);
  return true;
}

void PutFixed32(std::string* out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

bool GetFixed32(std::string_view* in, uint32_t* value) {
  if (in->size() < 4) return false;
  *value = 0;
  for (size_t i = 0; i < 4; ++i) {
    *value |= static_cast<uint32_t>(static_cast<uint8_t>((*in)[i])) << (8 * i);
  }
  in->remove_prefix(4);
  return true;
}

}  // namespace

std::string EncodeSnapshotManifest(const SnapshotManifest& manifest) {
  std::string out(kManifestMagic);
  PutVarint64(&out, kManifestVersion);
  PutString(&out, storage::EncodeSnapshotMeta(manifest.meta));
  PutVarint64(&out, manifest.files.size());
  for (const SnapshotFile& file : manifest.files) {
    PutString(&out, file.name);
    PutVarint64(&out, file.size);
    PutFixed32(&out, file.crc32c);
  }
  PutVarint64(&out, manifest.total_bytes);
  AppendCrc(&out);
  return out;
}

absl::StatusOr<SnapshotManifest> DecodeSnapshotManifest(
    std::string_view bytes, std::string_view source) {
  auto corrupt = [&](std::string_view what) {
    return absl::DataLossError(absl::StrCat(
        "snapshot metadata ", std::string(source), ": ", std::string(what)));
  };
  if (bytes.size() < kManifestMagic.size() ||
      bytes.substr(0, kManifestMagic.size()) != kManifestMagic) {
    return corrupt("not a snapshot metadata file (bad magic)");
  }
  if (!CheckCrc(&bytes)) return corrupt("checksum mismatch");
  bytes.remove_prefix(kManifestMagic.size());
  uint64_t version = 0;
  if (!GetVarint64(&bytes, &version)) return corrupt("truncated");
  if (version != kManifestVersion) {
    return corrupt(absl::StrCat("format version ", version, ", expected ",
                                kManifestVersion));
  }
  SnapshotManifest manifest;
  std::string_view meta_bytes;
  if (!GetString(&bytes, &meta_bytes)) return corrupt("truncated metadata");
  absl::StatusOr<SnapshotMeta> meta = storage::DecodeSnapshotMeta(meta_bytes);
  if (!meta.ok()) return corrupt(std::string(meta.status().message()));
  manifest.meta = *std::move(meta);
  uint64_t count = 0;
  if (!GetVarint64(&bytes, &count) || count > bytes.size()) {
    return corrupt("truncated file list");
  }
  uint64_t sum = 0;
  for (uint64_t i = 0; i < count; ++i) {
    std::string_view name;
    SnapshotFile file;
    if (!GetString(&bytes, &name) || !GetVarint64(&bytes, &file.size) ||
        !GetFixed32(&bytes, &file.crc32c)) {
      return corrupt("truncated file list");
    }
    file.name = std::string(name);
    if (file.name.empty() || file.name.find('/') != std::string::npos ||
        file.name == SnapshotStore::kMetaFileName || file.name == "." ||
        file.name == "..") {
      return corrupt(absl::StrCat("invalid file name '", file.name, "'"));
    }
    sum += file.size;
    manifest.files.push_back(std::move(file));
  }
  if (!GetVarint64(&bytes, &manifest.total_bytes) || !bytes.empty()) {
    return corrupt("trailing or missing bytes");
  }
  if (sum != manifest.total_bytes) return corrupt("total size does not add up");
  return manifest;
}

absl::StatusOr<SnapshotFile> ChecksumFile(const fs::path& path,
                                          const FileSystem& file_system) {
  SnapshotFile file;
  file.name = path.filename().string();
  absl::Status read = file_system.ReadFile(path, [&](std::string_view chunk) {
    file.crc32c = Crc32c(chunk, file.crc32c);
    file.size += chunk.size();
  });
  if (absl::IsNotFound(read)) {
    return absl::DataLossError(
        absl::StrCat("snapshot file ", path.string(), " is missing"));
  }
  if (!read.ok()) return read;
  return file;
}

absl::StatusOr<std::unique_ptr<SnapshotStore>> SnapshotStore::Open(
    fs::path root, CrashPoint crash_point, FileSystem* file_system) {
  FileSystem& files =
      file_system != nullptr ? *file_system : DefaultFileSystem();
  if (absl::Status status = CreateDirsDurably(files, root); !status.ok()) {
    return status;
  }
  absl::StatusOr<std::vector<DirEntry>> entries = files.List(root);
  if (!entries.ok()) return entries.status();
  bool removed = false;
  for (const DirEntry& entry : *entries) {
    if (entry.name.starts_with(kTemporaryPrefix)) {
      if (absl::Status status = files.RemoveAll(root / entry.name);
          !status.ok()) {
        return status;
      }
      removed = true;
    }
  }
  if (removed) {
    if (absl::Status status = files.SyncDir(root); !status.ok()) return status;
  }
  return std::unique_ptr<SnapshotStore>(
      new SnapshotStore(std::move(root), std::move(crash_point), files));
}

void SnapshotStore::Crash(std::string_view point) const {
  if (crash_point_) crash_point_(point);
}

fs::path SnapshotStore::DirFor(LogIndex index, Term term) const {
  return root_ / PublishedName(index, term);
}

absl::StatusOr<PendingSnapshot> SnapshotStore::Begin(const SnapshotMeta& meta) {
  if (FindDir(meta.index).ok()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a snapshot at index ", meta.index.value(), " is already published"));
  }
  const fs::path dir =
      root_ / absl::StrCat(kTemporaryPrefixText, meta.index.value(), "-",
                           ::getpid(), "-", next_temporary_++);
  if (absl::Status status = files_.RemoveAll(dir); !status.ok()) return status;
  if (absl::Status status = files_.CreateDirs(dir); !status.ok()) {
    return status;
  }
  return PendingSnapshot(meta, dir);
}

namespace {

// Empty when `got` matches what the sender listed; otherwise the first
// difference.
std::string ManifestDifference(const SnapshotManifest& got,
                               const SnapshotManifest& sent) {
  if (got.meta != sent.meta) {
    return "the sender's manifest describes another snapshot";
  }
  std::map<std::string, const SnapshotFile*> listed;
  for (const SnapshotFile& file : sent.files) listed[file.name] = &file;
  for (const SnapshotFile& file : got.files) {
    auto it = listed.find(file.name);
    if (it == listed.end()) return absl::StrCat("unexpected file ", file.name);
    if (it->second->size != file.size || it->second->crc32c != file.crc32c) {
      return absl::StrCat("file ", file.name, " has ", file.size,
                          " bytes with CRC32C ", file.crc32c,
                          ", the sender's manifest says ", it->second->size,
                          " bytes with ", it->second->crc32c);
    }
    listed.erase(it);
  }
  if (!listed.empty()) {
    return absl::StrCat("file ", listed.begin()->first, " is missing");
  }
  return "";
}

}  // namespace

absl::StatusOr<SnapshotManifest> SnapshotStore::Publish(
    PendingSnapshot pending, const SnapshotManifest* expected) {
  SnapshotManifest manifest;
  manifest.meta = pending.meta();
  absl::StatusOr<std::vector<DirEntry>> entries = files_.List(pending.dir());
  if (!entries.ok()) return entries.status();
  for (const DirEntry& entry : *entries) {
    if (entry.is_dir) {
      return absl::InvalidArgumentError(absl::StrCat(
          "snapshot folder ", pending.dir().string(),
          " holds something other than a regular file: ", entry.name));
    }
    if (entry.name == kMetaFileName) {
      return absl::InvalidArgumentError(
          absl::StrCat("a state machine wrote a file named ", kMetaFileName));
    }
    const fs::path path = pending.dir() / entry.name;
    absl::StatusOr<SnapshotFile> file = ChecksumFile(path, files_);
    if (!file.ok()) return file.status();
    if (absl::Status status = files_.SyncFile(path); !status.ok()) {
      return status;
    }
    manifest.total_bytes += file->size;
    manifest.files.push_back(*std::move(file));
  }
  std::sort(manifest.files.begin(), manifest.files.end(),
            [](const SnapshotFile& a, const SnapshotFile& b) {
              return a.name < b.name;
            });
  if (expected != nullptr) {
    if (std::string difference = ManifestDifference(manifest, *expected);
        !difference.empty()) {
      const LogIndex index = pending.meta().index;
      Abandon(std::move(pending));
      return absl::DataLossError(
          absl::StrCat("received snapshot ", index.value(), ": ", difference));
    }
  }
  // WriteFileDurably fsyncs the metadata file and the pending folder, so the
  // folder's entries are durable before it is renamed.
  if (absl::Status status =
          WriteFileDurably(files_, pending.dir() / kMetaFileName,
                           EncodeSnapshotManifest(manifest));
      !status.ok()) {
    return status;
  }
  Crash("publish:before-rename");
  const fs::path published = DirFor(pending.meta().index, pending.meta().term);
  if (absl::Status status = RenameDurably(files_, pending.dir(), published);
      !status.ok()) {
    return status;
  }
  Crash("publish:after-rename");
  return manifest;
}

void SnapshotStore::Abandon(PendingSnapshot pending) {
  (void)files_.RemoveAll(pending.dir());
}

std::vector<SnapshotListing> SnapshotStore::List() const {
  std::vector<SnapshotListing> listings;
  absl::StatusOr<std::vector<DirEntry>> entries = files_.List(root_);
  if (!entries.ok()) return listings;
  for (const DirEntry& entry : *entries) {
    LogIndex index;
    Term term;
    if (!ParsePublishedName(entry.name, &index, &term)) continue;
    SnapshotListing listing{root_ / entry.name, absl::UnknownError(""), index,
                            term};
    const fs::path meta_path = listing.dir / kMetaFileName;
    absl::StatusOr<std::string> bytes = ReadFileToString(files_, meta_path);
    if (!bytes.ok()) {
      listing.manifest = absl::DataLossError(
          absl::StrCat("snapshot metadata ", meta_path.string(),
                       " is unreadable: ", bytes.status().message()));
    } else {
      listing.manifest = DecodeSnapshotManifest(*bytes, meta_path.string());
      if (listing.manifest.ok() && (listing.manifest->meta.index != index ||
                                    listing.manifest->meta.term != term)) {
        listing.manifest = absl::DataLossError(absl::StrCat(
            "snapshot metadata ", meta_path.string(), " describes index ",
            listing.manifest->meta.index.value(), " term ",
            listing.manifest->meta.term.value(),
            ", not the index and term of its folder"));
      }
    }
    listings.push_back(std::move(listing));
  }
  std::sort(listings.begin(), listings.end(),
            [](const SnapshotListing& a, const SnapshotListing& b) {
              return a.index > b.index;
            });
  return listings;
}

absl::StatusOr<fs::path> SnapshotStore::FindDir(LogIndex index) const {
  for (const SnapshotListing& listing : List()) {
    if (listing.index == index) return listing.dir;
  }
  return absl::NotFoundError(absl::StrCat(
      "no snapshot at index ", index.value(), " in ", root_.string()));
}

absl::StatusOr<SnapshotManifest> SnapshotStore::Verify(LogIndex index) const {
  for (SnapshotListing& listing : List()) {
    if (listing.index != index) continue;
    if (!listing.manifest.ok()) return listing.manifest.status();
    SnapshotManifest& manifest = *listing.manifest;
    absl::StatusOr<std::vector<DirEntry>> entries = files_.List(listing.dir);
    if (!entries.ok()) return entries.status();
    size_t present = 0;
    for (const DirEntry& entry : *entries) {
      if (entry.name != kMetaFileName) ++present;
    }
    if (present != manifest.files.size()) {
      return absl::DataLossError(absl::StrCat(
          "snapshot ", listing.dir.string(), " holds ", present,
          " data files, its metadata lists ", manifest.files.size()));
    }
    for (const SnapshotFile& expected : manifest.files) {
      const fs::path path = listing.dir / expected.name;
      absl::StatusOr<SnapshotFile> actual = ChecksumFile(path, files_);
      if (!actual.ok()) return actual.status();
      if (actual->size != expected.size) {
        return absl::DataLossError(
            absl::StrCat("snapshot file ", path.string(), " is ", actual->size,
                         " bytes, its metadata says ", expected.size));
      }
      if (actual->crc32c != expected.crc32c) {
        return absl::DataLossError(absl::StrCat(
            "snapshot file ", path.string(), " is corrupt: CRC32C ",
            actual->crc32c, ", its metadata says ", expected.crc32c));
      }
    }
    return manifest;
  }
  return absl::NotFoundError(absl::StrCat(
      "no snapshot at index ", index.value(), " in ", root_.string()));
}

absl::Status SnapshotStore::Retire(LogIndex index) {
  absl::StatusOr<fs::path> dir = FindDir(index);
  if (!dir.ok()) return dir.status();
  const fs::path doomed =
      root_ / absl::StrCat(kTemporaryPrefixText, "retired-", index.value(), "-",
                           ::getpid(), "-", next_temporary_++);
  if (absl::Status status = RenameDurably(files_, *dir, doomed); !status.ok()) {
    return status;
  }
  Crash("retire:after-rename");
  return files_.RemoveAll(doomed);
}

}  // namespace driftwood::raft
