// Driftwood: the backup file of driftwood-kv (docs/design.md "Backups"):
// what Maintenance.Snapshot streams and `driftwood-kv restore` reads.
//
// Layout (all integers big endian):
//   "DWKVBAK1"                         8 bytes, the format and its version
//   u64 number of files
//   per file: u32 name length, name, u64 size, the file's bytes
//   zero bytes up to a multiple of 512
//   SHA-256 of everything before it    32 bytes
// The files are the SST files of the store's data at one consistent point
// (RocksDbKvStateMachine::CaptureData). The padding and the trailing digest
// are what `etcdctl snapshot save` checks (size % 512 == 32), so it stores
// the stream as it came; etcd's own `snapshot status` and `snapshot restore`
// expect etcd's bbolt file and do not read this one.
#ifndef DRIFTWOOD_EXAMPLES_KV_BACKUP_H_
#define DRIFTWOOD_EXAMPLES_KV_BACKUP_H_

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace driftwood::kv {

// Produces a backup of the files in a folder, in pieces.
class BackupWriter {
 public:
  // The regular files of `folder` (sorted by name).
  static absl::StatusOr<std::unique_ptr<BackupWriter>> Open(
      const std::filesystem::path& folder);
  ~BackupWriter();

  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t remaining_bytes() const { return total_bytes_ - written_; }
  // The next at most `max_bytes` bytes; empty once everything was produced.
  absl::StatusOr<std::string> Next(size_t max_bytes);

 private:
  struct File {
    std::string name;
    std::filesystem::path path;
    uint64_t size = 0;
  };
  struct Hasher;
  BackupWriter() = default;
  // Appends up to max_bytes of the next part to `out`.
  absl::Status Produce(size_t max_bytes, std::string* out);

  std::vector<File> files_;
  uint64_t total_bytes_ = 0;
  uint64_t written_ = 0;
  std::unique_ptr<Hasher> hasher_;
  // Where Produce is: the header, file i's header or data, padding, digest.
  enum class Part { kHeader, kFileHeader, kFileData, kPadding, kDigest, kEnd };
  Part part_ = Part::kHeader;
  size_t file_ = 0;
  std::ifstream in_;
  uint64_t file_left_ = 0;
};

// Checks a backup (size, digest, format) and writes its files into
// `folder` (which must not exist). DataLoss naming what is wrong.
absl::Status UnpackBackup(const std::filesystem::path& backup,
                          const std::filesystem::path& folder);

// `driftwood-kv restore`: a new member's data folder whose store starts
// from the backup: every member of the new cluster is restored from the
// same file, then started with --initial-cluster-state new. FailedPrecondition
// when data_dir exists and is not empty.
absl::Status RestoreBackup(const std::filesystem::path& backup,
                           const std::filesystem::path& data_dir);

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_BACKUP_H_
