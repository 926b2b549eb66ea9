// driftwood-lazyfs (jepsen/lazyfs/README.md) mounted for real: what a crash
// (SIGUSR1) keeps and drops, renames, appends, overwrites, truncation, locks,
// the unsynced cap, RocksDB on the mount, and the command line.
//
// Every test mounts its own instance on fresh folders under /tmp and
// unmounts it at the end, also when it fails. The RocksDB test forks its
// writer before this process opens RocksDB (tests/support/child_process.h).
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "tests/jepsen/lazyfs/mounted_lazyfs.h"
#include "tests/support/child_process.h"

namespace driftwood::jepsen::lazyfs {
namespace {

using driftwood::testing::Child;
using driftwood::testing::DescribeWaitStatus;
using testing::Clock;
using testing::Exists;
using testing::Fd;
using testing::FileSize;
using testing::kDeadline;
using testing::MountedLazyFs;
using testing::ReadFile;
using testing::RunToExit;
using testing::WriteSynced;

TEST_CASE("lazyfs: a crash keeps fsynced data and drops the rest", "[lazyfs]") {
  MountedLazyFs fs;
  const std::string path = fs.Path("file");
  {
    Fd file(path, O_WRONLY | O_CREAT | O_EXCL);
    file.Write("synced-");
    file.Fsync();
    file.Write("UNSYNCED");
    CHECK(ReadFile(path) == "synced-UNSYNCED");
    CHECK(FileSize(path) == 15);
    CHECK(file.Size() == 15);
  }
  // close(2) makes nothing durable.
  CHECK(ReadFile(path) == "synced-UNSYNCED");
  CHECK(ReadFile(fs.BackingPath("file")) == "synced-");

  // A descriptor opened before the crash reads the durable data after it:
  // nothing is served from the kernel's page cache.
  Fd reader(path, O_RDONLY);
  CHECK(reader.ReadAt(64, 0) == "synced-UNSYNCED");
  fs.Crash();
  CHECK(ReadFile(path) == "synced-");
  CHECK(FileSize(path) == 7);
  CHECK(reader.ReadAt(64, 0) == "synced-");
  CHECK(reader.Size() == 7);
  reader.Close();

  fs.Crash();
  CHECK(fs.Crashes() == 2);
  CHECK(ReadFile(path) == "synced-");

  const int status = fs.Stop();
  INFO(DescribeWaitStatus(status));
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  CHECK_FALSE(testing::IsMountPoint(fs.mountpoint()));
}

TEST_CASE(
    "lazyfs: fdatasync makes data durable, an unsynced new file "
    "survives empty",
    "[lazyfs]") {
  MountedLazyFs fs;
  REQUIRE(mkdir(fs.Path("dir").c_str(), 0755) == 0);
  {
    Fd file(fs.Path("dir/data"), O_RDWR | O_CREAT);
    file.Write("durable");
    file.Fdatasync();
    file.Write(" lost");
  }
  {
    Fd file(fs.Path("dir/never-synced"), O_WRONLY | O_CREAT);
    file.Write("gone");
  }
  CHECK(ReadFile(fs.Path("dir/never-synced")) == "gone");
  fs.Crash();
  CHECK(ReadFile(fs.Path("dir/data")) == "durable");
  // Creation is metadata, durable at once; the contents were not.
  REQUIRE(Exists(fs.Path("dir/never-synced")));
  CHECK(FileSize(fs.Path("dir/never-synced")) == 0);
  CHECK(ReadFile(fs.Path("dir/never-synced")).empty());

  std::set<std::string> names;
  for (const auto& entry :
       std::filesystem::directory_iterator(fs.Path("dir"))) {
    names.insert(entry.path().filename().string());
  }
  CHECK(names == std::set<std::string>{"data", "never-synced"});
}

TEST_CASE("lazyfs: unsynced data follows a rename", "[lazyfs]") {
  MountedLazyFs fs;

  SECTION("fsync under the new name makes it durable") {
    {
      Fd file(fs.Path("before"), O_WRONLY | O_CREAT);
      file.Write("moved with the inode");
    }
    REQUIRE(rename(fs.Path("before").c_str(), fs.Path("after").c_str()) == 0);
    CHECK(ReadFile(fs.Path("after")) == "moved with the inode");
    Fd synced(fs.Path("after"), O_RDONLY);
    synced.Fsync();
    synced.Close();
    fs.Crash();
    CHECK_FALSE(Exists(fs.Path("before")));
    CHECK(ReadFile(fs.Path("after")) == "moved with the inode");
  }

  SECTION("a crash drops a renamed file's unsynced data") {
    WriteSynced(fs.Path("old-name"), "durable");
    Fd file(fs.Path("old-name"), O_WRONLY | O_APPEND);
    file.Write(" and not");
    REQUIRE(rename(fs.Path("old-name").c_str(), fs.Path("new-name").c_str()) ==
            0);
    file.Write(" at all");
    CHECK(ReadFile(fs.Path("new-name")) == "durable and not at all");
    fs.Crash();
    CHECK_FALSE(Exists(fs.Path("old-name")));
    CHECK(ReadFile(fs.Path("new-name")) == "durable");
  }

  SECTION("rename over a file replaces its unsynced data") {
    {
      Fd target(fs.Path("target"), O_WRONLY | O_CREAT);
      target.Write("replaced, never synced");
      Fd source(fs.Path("source"), O_WRONLY | O_CREAT);
      source.Write("source");
      source.Fsync();
    }
    REQUIRE(rename(fs.Path("source").c_str(), fs.Path("target").c_str()) == 0);
    CHECK(ReadFile(fs.Path("target")) == "source");
    fs.Crash();
    CHECK(ReadFile(fs.Path("target")) == "source");
  }
}

TEST_CASE("lazyfs: O_APPEND, overwrites and truncation", "[lazyfs]") {
  MountedLazyFs fs;

  SECTION("appends go to the logical end") {
    WriteSynced(fs.Path("log"), "abc");
    Fd first(fs.Path("log"), O_WRONLY | O_APPEND);
    Fd second(fs.Path("log"), O_WRONLY | O_APPEND);
    first.Write("def");
    second.Write("gh");
    // O_APPEND ignores pwrite's offset on Linux.
    first.WriteAt("ij", 0);
    CHECK(ReadFile(fs.Path("log")) == "abcdefghij");
    CHECK(FileSize(fs.Path("log")) == 10);
    first.Fsync();
    second.Write("kl");
    fs.Crash();
    CHECK(ReadFile(fs.Path("log")) == "abcdefghij");
  }

  SECTION("an overwrite in the middle is undone by a crash") {
    WriteSynced(fs.Path("middle"), "0123456789");
    // Held across the crash: the size does not change, so only the absence
    // of a page cache keeps it from reading the dropped bytes.
    Fd reader(fs.Path("middle"), O_RDONLY);
    {
      Fd file(fs.Path("middle"), O_RDWR);
      file.WriteAt("XY", 4);
      CHECK(file.ReadAt(10, 0) == "0123XY6789");
    }
    CHECK(reader.ReadAt(10, 0) == "0123XY6789");
    CHECK(ReadFile(fs.Path("middle")) == "0123XY6789");
    fs.Crash();
    CHECK(reader.ReadAt(10, 0) == "0123456789");
    CHECK(ReadFile(fs.Path("middle")) == "0123456789");
  }

  SECTION("truncation is unsynced until fsync") {
    WriteSynced(fs.Path("cut"), "0123456789");
    {
      Fd file(fs.Path("cut"), O_RDWR);
      file.Truncate(4);
      CHECK(file.Size() == 4);
      CHECK(ReadFile(fs.Path("cut")) == "0123");
      // Growing again shows zeros, not the cut-off bytes.
      file.Truncate(8);
      CHECK(ReadFile(fs.Path("cut")) == std::string("0123\0\0\0\0", 8));
      file.WriteAt("Z", 10);
      CHECK(ReadFile(fs.Path("cut")) == std::string("0123\0\0\0\0\0\0Z", 11));
    }
    fs.Crash();
    CHECK(ReadFile(fs.Path("cut")) == "0123456789");

    REQUIRE(truncate(fs.Path("cut").c_str(), 3) == 0);
    CHECK(FileSize(fs.Path("cut")) == 3);
    {
      Fd file(fs.Path("cut"), O_RDONLY);
      file.Fsync();
    }
    fs.Crash();
    CHECK(ReadFile(fs.Path("cut")) == "012");
    CHECK(ReadFile(fs.Path("cut")) == ReadFile(fs.BackingPath("cut")));

    // O_TRUNC is a truncation like any other.
    {
      Fd file(fs.Path("cut"), O_WRONLY | O_TRUNC);
      CHECK(file.Size() == 0);
      file.Write("new");
    }
    CHECK(ReadFile(fs.Path("cut")) == "new");
    fs.Crash();
    CHECK(ReadFile(fs.Path("cut")) == "012");
  }

  SECTION("fallocate: KEEP_SIZE passes through, mode 0 grows the size") {
    WriteSynced(fs.Path("alloc"), "abc");
    Fd file(fs.Path("alloc"), O_RDWR);
    REQUIRE(fallocate(file.get(), FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0);
    CHECK(file.Size() == 3);
    REQUIRE(fallocate(file.get(), 0, 0, 100) == 0);
    CHECK(file.Size() == 100);
    CHECK(file.ReadAt(200, 0) == std::string("abc") + std::string(97, '\0'));
    fs.Crash();
    CHECK(file.Size() == 3);
  }
}

TEST_CASE("lazyfs: an unlinked file's unsynced data goes with it", "[lazyfs]") {
  MountedLazyFs fs;
  {
    Fd file(fs.Path("doomed"), O_RDWR | O_CREAT);
    file.Write("still readable");
    REQUIRE(unlink(fs.Path("doomed").c_str()) == 0);
    CHECK_FALSE(Exists(fs.Path("doomed")));
    CHECK(file.ReadAt(64, 0) == "still readable");
    file.Write(" after unlink");
    CHECK(file.ReadAt(64, 0) == "still readable after unlink");
    file.Fsync();
  }
  // New files (which may reuse the inode numbers) start empty.
  for (int i = 0; i < 8; ++i) {
    const std::string path = fs.Path(absl::StrCat("fresh-", i));
    {
      Fd file(path, O_WRONLY | O_CREAT);
      file.Write("x");
    }
    REQUIRE(unlink(path.c_str()) == 0);
    Fd file(path, O_RDWR | O_CREAT | O_EXCL);
    CHECK(file.Size() == 0);
  }
}

TEST_CASE("lazyfs: fcntl locks conflict between processes", "[lazyfs]") {
  MountedLazyFs fs;
  const std::string path = fs.Path("LOCK");
  auto try_lock = [&path](FILE*) {
    const int fd = open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0) return 10;
    struct flock lock = {};
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (fcntl(fd, F_SETLK, &lock) == 0) return 0;
    return errno == EAGAIN || errno == EACCES ? 1 : 11;
  };
  Fd holder(path, O_RDWR | O_CREAT);
  struct flock lock = {};
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  REQUIRE(fcntl(holder.get(), F_SETLK, &lock) == 0);
  {
    const int status = Child::Fork(try_lock)->Reap();
    INFO(DescribeWaitStatus(status) << " (1: the lock was refused)");
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 1));
  }
  holder.Close();
  {
    const int status = Child::Fork(try_lock)->Reap();
    INFO(DescribeWaitStatus(status) << " (0: the lock was granted)");
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
  }
}

TEST_CASE("lazyfs: past the cap a file is written through", "[lazyfs]") {
  MountedLazyFs fs({"--max-unsynced-mib", "1"});
  const std::string chunk(64 << 10, 'c');
  {
    Fd file(fs.Path("big"), O_WRONLY | O_CREAT);
    for (int i = 0; i < 24; ++i) file.Write(chunk);
  }
  CHECK(FileSize(fs.Path("big")) == 24 * chunk.size());
  fs.Crash();
  // The data up to the write that crossed 1 MiB reached the backing file.
  const uint64_t kept = FileSize(fs.Path("big"));
  CHECK(kept > (uint64_t{1} << 20));
  CHECK(kept < 24 * chunk.size());
  CHECK(ReadFile(fs.Path("big")) == std::string(kept, 'c'));
}

TEST_CASE("lazyfs: RocksDB keeps every synced write across a crash",
          "[lazyfs][rocksdb]") {
  MountedLazyFs fs;
  const std::string db_path = fs.Path("db");
  // Keys [0, kSynced) end with a synced write (which syncs the WAL up to
  // it); keys [kSynced, kSynced + kUnsynced) are never synced.
  constexpr int kSynced = 300;
  constexpr int kUnsynced = 100;
  auto key = [](int i) { return absl::StrFormat("key-%06d", i); };
  auto value = [](int i) {
    return absl::StrCat("value-", i, "-", std::string(100, 'v'));
  };

  auto writer = Child::Fork([&](FILE* out) {
    rocksdb::Options options;
    options.create_if_missing = true;
    rocksdb::DB* opened = nullptr;
    rocksdb::Status status = rocksdb::DB::Open(options, db_path, &opened);
    if (!status.ok()) {
      std::fprintf(out, "open: %s\n", status.ToString().c_str());
      return 1;
    }
    rocksdb::WriteOptions synced;
    synced.sync = true;
    const rocksdb::WriteOptions unsynced;
    for (int i = 0; i < kSynced + kUnsynced; ++i) {
      const bool sync = i < kSynced && (i % 7 == 6 || i == kSynced - 1);
      status = opened->Put(sync ? synced : unsynced, key(i), value(i));
      if (!status.ok()) {
        std::fprintf(out, "put %d: %s\n", i, status.ToString().c_str());
        return 1;
      }
    }
    std::fprintf(out, "written\n");
    std::fflush(out);
    // Killed with the database open.
    while (true) pause();
  });
  std::string line;
  REQUIRE(writer->NextLine(Clock::now() + kDeadline, &line) ==
          Child::Read::kLine);
  REQUIRE(line == "written");
  writer->Kill();
  fs.Crash();

  rocksdb::DB* opened = nullptr;
  const rocksdb::Status status =
      rocksdb::DB::Open(rocksdb::Options(), db_path, &opened);
  INFO(status.ToString());
  REQUIRE(status.ok());
  std::unique_ptr<rocksdb::DB> db(opened);
  for (int i = 0; i < kSynced; ++i) {
    std::string read;
    const rocksdb::Status got = db->Get(rocksdb::ReadOptions(), key(i), &read);
    INFO("synced key " << i << ": " << got.ToString());
    REQUIRE(got.ok());
    REQUIRE(read == value(i));
  }
  int survived = 0;
  for (int i = kSynced; i < kSynced + kUnsynced; ++i) {
    std::string read;
    if (db->Get(rocksdb::ReadOptions(), key(i), &read).ok()) ++survived;
  }
  // Not a failure either way: RocksDB may have synced the WAL on its own.
  WARN(survived << " of " << kUnsynced
                << " keys written after the last sync survived the crash "
                   "(expected: 0)");
  rocksdb::WriteOptions synced;
  synced.sync = true;
  REQUIRE(db->Put(synced, "after-crash", "ok").ok());
  REQUIRE(db->Close().ok());
}

TEST_CASE("lazyfs: command line", "[lazyfs]") {
  std::string out, err;
  SECTION("--help") {
    const int status =
        RunToExit({DRIFTWOOD_LAZYFS_BINARY, "--help"}, &out, &err);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    CHECK(absl::StrContains(out, "usage: driftwood-lazyfs"));
    CHECK(absl::StrContains(out, "--control"));
  }
  SECTION("a missing backing folder") {
    const int status = RunToExit(
        {DRIFTWOOD_LAZYFS_BINARY, "/tmp/driftwood-lazyfs-no-such-folder",
         "/tmp", "--control", "/tmp/driftwood-lazyfs-unused", "--foreground"},
        &out, &err);
    INFO(err);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));
    CHECK(absl::StrContains(err,
                            "backing folder "
                            "/tmp/driftwood-lazyfs-no-such-folder: No such "
                            "file or directory"));
  }
  SECTION("no --control") {
    const int status =
        RunToExit({DRIFTWOOD_LAZYFS_BINARY, "/tmp", "/tmp"}, &out, &err);
    INFO(err);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));
    CHECK(absl::StrContains(err, "--control is required"));
  }
  SECTION("an unknown flag") {
    const int status =
        RunToExit({DRIFTWOOD_LAZYFS_BINARY, "--bogus"}, &out, &err);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 2));
    CHECK(absl::StrContains(err, "unknown flag --bogus"));
  }
}

}  // namespace
}  // namespace driftwood::jepsen::lazyfs
