// Driftwood: snapshots on disk (docs/design.md "Snapshots and compaction";
// the layout is in raft/storage/FORMAT.md).
//
// A snapshot is a folder of files a StateMachineSnapshot wrote, plus a
// SNAPSHOT_META file holding the SnapshotMeta (index, term, configuration),
// the name, size and CRC32C of every data file, the total size, and a CRC32C
// of the record itself. Publishing is crash-atomic: files are written into a
// temporary folder, every file and the folder are fsynced, the folder is
// renamed to its final name and the store's folder is fsynced. After a crash a
// snapshot is either published whole or absent; temporary folders are removed
// on Open.
//
// Thread safety: one writer at a time (Begin/Publish/Abandon/Retire); List and
// Verify may run from any thread while no Retire of the same snapshot runs.
#ifndef DRIFTWOOD_RAFT_STORAGE_SNAPSHOT_STORE_H_
#define DRIFTWOOD_RAFT_STORAGE_SNAPSHOT_STORE_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "raft/core/types.h"
#include "raft/util/file_system.h"

namespace driftwood::raft {

// One data file of a snapshot.
struct SnapshotFile {
  std::string name;
  uint64_t size = 0;
  uint32_t crc32c = 0;

  bool operator==(const SnapshotFile&) const = default;
};

// Everything SNAPSHOT_META records.
struct SnapshotManifest {
  SnapshotMeta meta;
  std::vector<SnapshotFile> files;  // sorted by name
  uint64_t total_bytes = 0;

  bool operator==(const SnapshotManifest&) const = default;
};

// A published snapshot as List() sees it.
struct SnapshotListing {
  std::filesystem::path dir;
  // OK with the manifest when SNAPSHOT_META reads and checks; otherwise the
  // error (DataLoss naming the file) and the index and term parsed from the
  // folder name.
  absl::StatusOr<SnapshotManifest> manifest;
  LogIndex index;
  Term term;
};

// A snapshot being written; the files go into dir().
class PendingSnapshot {
 public:
  const SnapshotMeta& meta() const { return meta_; }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  friend class SnapshotStore;
  PendingSnapshot(SnapshotMeta meta, std::filesystem::path dir)
      : meta_(std::move(meta)), dir_(std::move(dir)) {}
  SnapshotMeta meta_;
  std::filesystem::path dir_;
};

// Test hook: called with the name of each crash point a store operation
// passes; a crash test makes it end the process there.
using CrashPoint = std::function<void(std::string_view point)>;

class SnapshotStore {
 public:
  static constexpr char kMetaFileName[] = "SNAPSHOT_META";

  // Opens (creating when missing) the store in folder `root` and removes
  // temporary folders left by an interrupted Begin. `file_system` (not owned,
  // default DefaultFileSystem()) is for tests; a state machine's WriteTo
  // writes to the real one, so only the default works with state machines.
  static absl::StatusOr<std::unique_ptr<SnapshotStore>> Open(
      std::filesystem::path root, CrashPoint crash_point = nullptr,
      FileSystem* file_system = nullptr);

  const std::filesystem::path& root() const { return root_; }

  // Starts a snapshot for `meta` in a fresh temporary folder.
  // AlreadyExists when a snapshot with that index is published.
  absl::StatusOr<PendingSnapshot> Begin(const SnapshotMeta& meta);

  // Checksums the files the pending folder holds, writes SNAPSHOT_META,
  // fsyncs every file and the folder, renames it to its published name and
  // fsyncs the store's folder. Durable when it returns OK. With `expected`
  // (a received snapshot: the sender's manifest), the files must match it
  // exactly (names, sizes, CRC32C), checked in the same pass; otherwise the
  // pending folder is removed and the result is DataLoss naming the
  // difference. Crash points: "publish:before-rename", "publish:after-rename".
  absl::StatusOr<SnapshotManifest> Publish(
      PendingSnapshot pending, const SnapshotManifest* expected = nullptr);

  // Removes a pending snapshot's folder.
  void Abandon(PendingSnapshot pending);

  // Published snapshots, newest (highest index) first. Reads only the
  // manifests: a listing with an OK manifest may still hold corrupt data.
  std::vector<SnapshotListing> List() const;

  // Reads and checks the snapshot at `index` completely: the manifest's own
  // checksum, that the folder holds exactly the listed files, and each file's
  // size and CRC32C. DataLoss naming the file and what is wrong; NotFound when
  // no snapshot with that index is published.
  absl::StatusOr<SnapshotManifest> Verify(LogIndex index) const;

  // The folder of the published snapshot at `index` (whether or not it
  // exists).
  std::filesystem::path DirFor(LogIndex index, Term term) const;

  // Durably removes the published snapshot at `index`: renamed to a
  // temporary name first, so a crash never leaves a half-deleted snapshot
  // that looks published. Crash point: "retire:after-rename".
  absl::Status Retire(LogIndex index);

 private:
  SnapshotStore(std::filesystem::path root, CrashPoint crash_point,
                FileSystem& files)
      : root_(std::move(root)),
        crash_point_(std::move(crash_point)),
        files_(files) {}
  void Crash(std::string_view point) const;
  absl::StatusOr<std::filesystem::path> FindDir(LogIndex index) const;

  std::filesystem::path root_;
  CrashPoint crash_point_;
  FileSystem& files_;
  uint64_t next_temporary_ = 0;
};

// SNAPSHOT_META's encoding (FORMAT.md).
std::string EncodeSnapshotManifest(const SnapshotManifest& manifest);
// DataLoss naming `source` when the bytes are truncated, corrupt or of
// another format version.
absl::StatusOr<SnapshotManifest> DecodeSnapshotManifest(
    std::string_view bytes, std::string_view source);

// CRC32C and size of the file at `path`; DataLoss when it is missing.
absl::StatusOr<SnapshotFile> ChecksumFile(
    const std::filesystem::path& path,
    const FileSystem& file_system = DefaultFileSystem());

}  // namespace driftwood::raft

#endif  // DRIFTWOOD_RAFT_STORAGE_SNAPSHOT_STORE_H_
