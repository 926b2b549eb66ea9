// SyncFolderFiles: every file a folder holds is fsynced, a file that its
// owner removes while the folder is being synced is skipped, and any other
// failure is reported (the RocksDB state machine syncs its database folder
// while RocksDB purges obsolete write-ahead logs in the background).
#include "raft/storage/file_util.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <string>

#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;

void WriteFile(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

// The real file system, except that List removes `vanishing` after it
// has listed it (a background purge racing with the sync), SyncFile fails
// with an IO error for `failing`, and the synced paths are recorded.
class RacingFileSystem : public FileSystem {
 public:
  absl::Status CreateDirs(const fs::path& path) override {
    return real_.CreateDirs(path);
  }
  absl::Status WriteFile(const fs::path& path,
                         std::string_view contents) override {
    return real_.WriteFile(path, contents);
  }
  absl::Status ReadFile(
      const fs::path& path,
      const std::function<void(std::string_view)>& consume) const override {
    return real_.ReadFile(path, consume);
  }
  absl::Status SyncFile(const fs::path& path) override {
    if (path.filename() == failing) {
      return absl::InternalError("fsync " + path.string() + ": I/O error");
    }
    absl::Status status = real_.SyncFile(path);
    if (status.ok()) synced_files.insert(path.filename().string());
    return status;
  }
  absl::Status SyncDir(const fs::path& path) override {
    absl::Status status = real_.SyncDir(path);
    if (status.ok()) synced_dirs.insert(path.string());
    return status;
  }
  absl::Status Rename(const fs::path& from, const fs::path& to) override {
    return real_.Rename(from, to);
  }
  absl::Status RemoveAll(const fs::path& path) override {
    return real_.RemoveAll(path);
  }
  absl::StatusOr<std::vector<DirEntry>> List(
      const fs::path& path) const override {
    absl::StatusOr<std::vector<DirEntry>> entries = real_.List(path);
    if (entries.ok() && !vanishing.empty()) {
      std::error_code error;
      fs::remove(path / vanishing, error);
    }
    return entries;
  }

  std::string vanishing;
  std::string failing;
  std::set<std::string> synced_files;
  std::set<std::string> synced_dirs;

 private:
  FileSystem& real_ = DefaultFileSystem();
};

TEST_CASE("SyncFolderFiles syncs every file and then the folder", "[storage]") {
  testing::TempDir temp;
  const fs::path dir = temp.path();
  WriteFile(dir / "000004.log", "wal");
  WriteFile(dir / "000009.sst", "table");
  fs::create_directory(dir / "nested");
  RacingFileSystem files;
  REQUIRE(SyncFolderFiles(files, dir).ok());
  CHECK(files.synced_files ==
        std::set<std::string>{"000004.log", "000009.sst"});
  CHECK(files.synced_dirs.count(dir.string()) == 1);
}

TEST_CASE("SyncFolderFiles skips a file removed while the folder is synced",
          "[storage]") {
  testing::TempDir temp;
  const fs::path dir = temp.path();
  WriteFile(dir / "000004.log", "wal");
  WriteFile(dir / "000009.sst", "table");
  WriteFile(dir / "MANIFEST-000005", "manifest");
  RacingFileSystem files;
  files.vanishing = "000004.log";
  const absl::Status synced = SyncFolderFiles(files, dir);
  INFO(synced.ToString());
  REQUIRE(synced.ok());
  CHECK(files.synced_files ==
        std::set<std::string>{"000009.sst", "MANIFEST-000005"});
  CHECK(files.synced_dirs.count(dir.string()) == 1);
}

TEST_CASE("SyncFolderFiles reports a failed fsync and a missing folder",
          "[storage]") {
  testing::TempDir temp;
  const fs::path dir = temp.path();
  WriteFile(dir / "000009.sst", "table");
  RacingFileSystem files;
  files.failing = "000009.sst";
  const absl::Status failed = SyncFolderFiles(files, dir);
  CHECK(absl::IsInternal(failed));
  CHECK(failed.message().find("000009.sst") != std::string_view::npos);
  CHECK(files.synced_dirs.empty());

  const absl::Status missing = SyncFolderFiles(files, dir / "absent");
  CHECK(absl::IsNotFound(missing));
}

}  // namespace
}  // namespace driftwood::raft
