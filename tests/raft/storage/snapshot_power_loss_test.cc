// Power loss under the snapshot store and WriteFileDurably (docs/design.md
// "Storage": the plain-file counterpart of the RocksDB power-loss test). A
// process crash cannot show a missing fsync, because the page cache survives
// it; this file system forgets everything not synced. For every possible cut
// point of a run that publishes and retires snapshots, after the power comes
// back: every snapshot whose Publish returned is there and verifies, every
// snapshot listed verifies (none half-published), nothing whose Retire
// returned comes back, and no temporary folder survives Open.
#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <set>

#include "raft/storage/file_util.h"
#include "raft/storage/snapshot_store.h"
#include "tests/support/power_loss_file_system.h"

namespace driftwood::raft {
namespace {

using testing::PowerLossFileSystem;

constexpr char kRoot[] = "/node/snapshots";

struct Outcome {
  // Snapshots whose Publish returned OK, by index, with their manifests.
  std::map<uint64_t, SnapshotManifest> published;
  // Indexes whose Retire returned OK.
  std::set<uint64_t> retired;
  // The index whose Retire the power cut interrupted: it may be either
  // there or gone, but if it is there it is whole.
  std::optional<uint64_t> retiring;
};

// Publishes six snapshots of 1-3 files each and retires some older ones,
// stopping at the first failure (the power went off).
Outcome Run(PowerLossFileSystem& files, uint64_t seed) {
  Outcome outcome;
  std::mt19937_64 random(seed);
  auto store = SnapshotStore::Open(kRoot, nullptr, &files);
  if (!store.ok()) return outcome;
  for (uint64_t round = 1; round <= 6; ++round) {
    const SnapshotMeta meta{LogIndex(round * 10),
                            Term(1 + round / 3),
                            {{NodeId(1), NodeId(2), NodeId(3)}, {}, {}}};
    absl::StatusOr<PendingSnapshot> pending = (*store)->Begin(meta);
    if (!pending.ok()) return outcome;
    const uint64_t file_count = 1 + random() % 3;
    for (uint64_t f = 0; f < file_count; ++f) {
      std::string contents(static_cast<size_t>(random() % 9000), '\0');
      for (char& c : contents) c = static_cast<char>(random());
      if (!files
               .WriteFile(pending->dir() / ("part-" + std::to_string(f)),
                          contents)
               .ok()) {
        return outcome;
      }
    }
    absl::StatusOr<SnapshotManifest> manifest =
        (*store)->Publish(*std::move(pending));
    if (!manifest.ok()) return outcome;
    outcome.published[meta.index.value()] = *manifest;
    if (round >= 3 && random() % 2 == 0) {
      const uint64_t victim = (round - 2) * 10;
      if (outcome.published.count(victim) != 0 &&
          outcome.retired.count(victim) == 0) {
        if (!(*store)->Retire(LogIndex(victim)).ok()) {
          outcome.retiring = victim;
          return outcome;
        }
        outcome.retired.insert(victim);
      }
    }
  }
  return outcome;
}

void CheckAfterPowerLoss(PowerLossFileSystem& files, const Outcome& outcome) {
  files.PowerCycle();
  auto store = SnapshotStore::Open(kRoot, nullptr, &files);
  // The store's folder itself may be gone if the power went off before it
  // was made durable; then nothing was published either.
  REQUIRE(store.ok());
  std::set<uint64_t> listed;
  for (const SnapshotListing& listing : (*store)->List()) {
    INFO("listed snapshot " << listing.index.value());
    listed.insert(listing.index.value());
    absl::StatusOr<SnapshotManifest> verified = (*store)->Verify(listing.index);
    CHECK(verified.ok());
    CHECK(outcome.retired.count(listing.index.value()) == 0);
  }
  for (const auto& [index, manifest] : outcome.published) {
    if (outcome.retired.count(index) != 0 || outcome.retiring == index) {
      continue;
    }
    INFO("published snapshot " << index);
    REQUIRE(listed.count(index) == 1);
    absl::StatusOr<SnapshotManifest> verified =
        (*store)->Verify(LogIndex(index));
    REQUIRE(verified.ok());
    CHECK(*verified == manifest);
  }
  absl::StatusOr<std::vector<DirEntry>> entries = files.List(kRoot);
  REQUIRE(entries.ok());
  for (const DirEntry& entry : *entries) {
    CHECK(entry.name.rfind("tmp-", 0) != 0);
  }
}

TEST_CASE("Snapshot store power loss: every cut point of publish and retire",
          "[storage][snapshot][power]") {
  uint64_t cuts = 0;
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    // A run without a cut counts the mutating calls, so every cut point
    // from "before the first" to "after the last" is tried.
    PowerLossFileSystem dry;
    const Outcome full = Run(dry, seed);
    REQUIRE(full.published.size() == 6);
    const uint64_t total = dry.mutations();
    for (uint64_t cut = 0; cut <= total; ++cut) {
      INFO("seed " << seed << " cut after " << cut << " of " << total
                   << " calls");
      PowerLossFileSystem files;
      REQUIRE(files.CreateDirs("/node").ok());
      REQUIRE(files.SyncDir("/").ok());
      files.CutPowerAfter(cut);
      const Outcome outcome = Run(files, seed);
      CheckAfterPowerLoss(files, outcome);
      ++cuts;
    }
  }
  std::printf("snapshot store power loss: %llu cut points over 6 runs\n",
              static_cast<unsigned long long>(cuts));
  CHECK(cuts > 300);
}

TEST_CASE("WriteFileDurably power loss: the old contents or the new ones",
          "[storage][power]") {
  PowerLossFileSystem dry;
  REQUIRE(dry.CreateDirs("/d").ok());
  REQUIRE(dry.SyncDir("/").ok());
  REQUIRE(WriteFileDurably(dry, "/d/f", "old").ok());
  const uint64_t before = dry.mutations();
  REQUIRE(WriteFileDurably(dry, "/d/f", "new contents").ok());
  const uint64_t steps = dry.mutations() - before;
  for (uint64_t cut = 0; cut <= steps; ++cut) {
    INFO("cut after " << cut << " of " << steps);
    PowerLossFileSystem files;
    REQUIRE(files.CreateDirs("/d").ok());
    REQUIRE(files.SyncDir("/").ok());
    REQUIRE(WriteFileDurably(files, "/d/f", "old").ok());
    files.CutPowerAfter(cut);
    const bool returned = WriteFileDurably(files, "/d/f", "new contents").ok();
    files.PowerCycle();
    absl::StatusOr<std::string> read = ReadFileToString(files, "/d/f");
    REQUIRE(read.ok());
    if (returned) {
      CHECK(*read == "new contents");
    } else {
      CHECK((*read == "old" || *read == "new contents"));
    }
  }
}

// The file system itself: what is not synced is gone after a power cycle.
TEST_CASE("PowerLossFileSystem forgets unsynced bytes and names",
          "[storage][power]") {
  PowerLossFileSystem files;
  REQUIRE(files.CreateDirs("/a").ok());
  REQUIRE(files.WriteFile("/a/synced", "x").ok());
  REQUIRE(files.SyncFile("/a/synced").ok());
  REQUIRE(files.WriteFile("/a/unsynced-bytes", "y").ok());
  REQUIRE(files.SyncDir("/a").ok());
  REQUIRE(files.SyncDir("/").ok());
  REQUIRE(files.WriteFile("/a/unsynced-name", "z").ok());
  REQUIRE(files.SyncFile("/a/unsynced-name").ok());
  REQUIRE(files.Rename("/a/synced", "/a/renamed").ok());
  files.PowerCycle();
  CHECK(ReadFileToString(files, "/a/synced").value() == "x");
  CHECK(absl::IsNotFound(ReadFileToString(files, "/a/renamed").status()));
  CHECK(ReadFileToString(files, "/a/unsynced-bytes").value() == "");
  CHECK(absl::IsNotFound(ReadFileToString(files, "/a/unsynced-name").status()));
  files.CutPowerAfter(0);
  CHECK(absl::IsUnavailable(files.WriteFile("/a/late", "w")));
}

}  // namespace
}  // namespace driftwood::raft
