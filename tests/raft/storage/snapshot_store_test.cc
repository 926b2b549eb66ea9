// The snapshot store: publish, list, verify, retire, and detection of every
// kind of corruption before a restore (issue 5: flipped byte, truncated file,
// missing metadata).
#include "raft/storage/snapshot_store.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <optional>

#include "raft/storage/file_util.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;

SnapshotMeta Meta(uint64_t index, uint64_t term) {
  return {
      LogIndex(index), Term(term), {{NodeId(1), NodeId(2), NodeId(3)}, {}, {}}};
}

void WriteFile(const fs::path& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

std::unique_ptr<SnapshotStore> OpenStore(const fs::path& root) {
  absl::StatusOr<std::unique_ptr<SnapshotStore>> store =
      SnapshotStore::Open(root);
  REQUIRE(store.ok());
  return *std::move(store);
}

SnapshotManifest PublishTwoFiles(SnapshotStore& store, uint64_t index,
                                 uint64_t term) {
  absl::StatusOr<PendingSnapshot> pending = store.Begin(Meta(index, term));
  REQUIRE(pending.ok());
  WriteFile(pending->dir() / "a.data", std::string(5000, 'a'));
  WriteFile(pending->dir() / "b.data", "bbbbbbbb");
  absl::StatusOr<SnapshotManifest> manifest =
      store.Publish(*std::move(pending));
  REQUIRE(manifest.ok());
  return *manifest;
}

TEST_CASE("Snapshot store: publish then list and verify",
          "[storage][snapshot]") {
  testing::TempDir dir;
  auto store = OpenStore(dir.path());
  const SnapshotManifest manifest = PublishTwoFiles(*store, 10, 2);
  CHECK(manifest.meta == Meta(10, 2));
  REQUIRE(manifest.files.size() == 2);
  CHECK(manifest.files[0].name == "a.data");
  CHECK(manifest.total_bytes == 5008);
  PublishTwoFiles(*store, 20, 3);

  std::vector<SnapshotListing> listed = store->List();
  REQUIRE(listed.size() == 2);
  CHECK(listed[0].index == LogIndex(20));
  CHECK(listed[1].index == LogIndex(10));
  REQUIRE(listed[1].manifest.ok());
  CHECK(*listed[1].manifest == manifest);
  absl::StatusOr<SnapshotManifest> verified = store->Verify(LogIndex(10));
  REQUIRE(verified.ok());
  CHECK(*verified == manifest);
  CHECK(absl::IsNotFound(store->Verify(LogIndex(11)).status()));
  CHECK(absl::IsAlreadyExists(store->Begin(Meta(10, 2)).status()));

  REQUIRE(store->Retire(LogIndex(10)).ok());
  CHECK(store->List().size() == 1);
  CHECK(!fs::exists(store->DirFor(LogIndex(10), Term(2))));
}

TEST_CASE("Snapshot store: an unpublished snapshot is gone after reopening",
          "[storage][snapshot]") {
  testing::TempDir dir;
  {
    auto store = OpenStore(dir.path());
    absl::StatusOr<PendingSnapshot> pending = store->Begin(Meta(5, 1));
    REQUIRE(pending.ok());
    WriteFile(pending->dir() / "x", "half written");
  }
  auto store = OpenStore(dir.path());
  CHECK(store->List().empty());
  size_t entries = 0;
  for ([[maybe_unused]] const auto& entry :
       fs::directory_iterator(dir.path())) {
    ++entries;
  }
  CHECK(entries == 0);
}

TEST_CASE("Snapshot store: a state machine may not write SNAPSHOT_META",
          "[storage][snapshot]") {
  testing::TempDir dir;
  auto store = OpenStore(dir.path());
  absl::StatusOr<PendingSnapshot> pending = store->Begin(Meta(5, 1));
  REQUIRE(pending.ok());
  WriteFile(pending->dir() / SnapshotStore::kMetaFileName, "x");
  CHECK(absl::IsInvalidArgument(store->Publish(*std::move(pending)).status()));
}

// Each corruption must be reported as DataLoss naming the file before any
// restore reads the data.
TEST_CASE("Snapshot store: corruption is detected by Verify",
          "[storage][snapshot]") {
  struct Case {
    const char* name;
    std::function<void(const fs::path&)> damage;
    const char* names;  // a substring the error must contain
  };
  const std::vector<Case> cases = {
      {"flipped byte in a data file",
       [](const fs::path& snap) {
         std::fstream file(snap / "a.data",
                           std::ios::in | std::ios::out | std::ios::binary);
         file.seekp(1234);
         file.put('A' ^ 0x01);
       },
       "a.data"},
      {"truncated data file",
       [](const fs::path& snap) { fs::resize_file(snap / "a.data", 4000); },
       "a.data"},
      {"extended data file",
       [](const fs::path& snap) { fs::resize_file(snap / "b.data", 9); },
       "b.data"},
      {"missing data file",
       [](const fs::path& snap) { fs::remove(snap / "b.data"); }, "data files"},
      {"extra data file",
       [](const fs::path& snap) { WriteFile(snap / "c.data", "c"); },
       "data files"},
      {"missing metadata",
       [](const fs::path& snap) {
         fs::remove(snap / SnapshotStore::kMetaFileName);
       },
       "SNAPSHOT_META"},
      {"truncated metadata",
       [](const fs::path& snap) {
         fs::resize_file(snap / SnapshotStore::kMetaFileName, 20);
       },
       "SNAPSHOT_META"},
      {"flipped byte in the metadata",
       [](const fs::path& snap) {
         std::fstream file(snap / SnapshotStore::kMetaFileName,
                           std::ios::in | std::ios::out | std::ios::binary);
         file.seekg(12);
         const char c = static_cast<char>(file.get());
         file.seekp(12);
         file.put(static_cast<char>(c ^ 0x40));
       },
       "SNAPSHOT_META"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      testing::TempDir dir;
      auto store = OpenStore(dir.path());
      PublishTwoFiles(*store, 7, 1);
      c.damage(store->DirFor(LogIndex(7), Term(1)));
      absl::StatusOr<SnapshotManifest> verified = store->Verify(LogIndex(7));
      INFO(verified.status().ToString());
      CHECK(absl::IsDataLoss(verified.status()));
      CHECK(verified.status().message().find(c.names) !=
            absl::string_view::npos);
    }
  }
}

TEST_CASE("Snapshot store: metadata in a folder of another index is refused",
          "[storage][snapshot]") {
  testing::TempDir dir;
  auto store = OpenStore(dir.path());
  PublishTwoFiles(*store, 7, 1);
  fs::rename(store->DirFor(LogIndex(7), Term(1)),
             store->DirFor(LogIndex(8), Term(1)));
  std::vector<SnapshotListing> listed = store->List();
  REQUIRE(listed.size() == 1);
  CHECK(absl::IsDataLoss(listed[0].manifest.status()));
  CHECK(absl::IsDataLoss(store->Verify(LogIndex(8)).status()));
}

TEST_CASE(
    "Snapshot manifest: every truncation and every flipped byte is caught",
    "[storage][snapshot]") {
  SnapshotManifest manifest;
  manifest.meta = Meta(99, 4);
  manifest.files = {{"one", 10, 0x1234}, {"two", 20, 0xabcdef}};
  manifest.total_bytes = 30;
  const std::string bytes = EncodeSnapshotManifest(manifest);
  absl::StatusOr<SnapshotManifest> decoded =
      DecodeSnapshotManifest(bytes, "test");
  REQUIRE(decoded.ok());
  CHECK(*decoded == manifest);
  for (size_t length = 0; length < bytes.size(); ++length) {
    CHECK(absl::IsDataLoss(
        DecodeSnapshotManifest(bytes.substr(0, length), "test").status()));
  }
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x10);
    CHECK(absl::IsDataLoss(DecodeSnapshotManifest(flipped, "test").status()));
  }
}

}  // namespace
}  // namespace driftwood::raft

namespace driftwood::raft {
namespace {

// A received snapshot is published only when its files are exactly what the
// sender listed; otherwise nothing of it stays.
TEST_CASE(
    "Snapshot store: a received snapshot must match the sender's manifest",
    "[storage][snapshot]") {
  testing::TempDir sender_dir;
  auto sender = OpenStore(sender_dir.path());
  const SnapshotManifest sent = PublishTwoFiles(*sender, 30, 2);
  const fs::path sent_folder = sender->DirFor(LogIndex(30), Term(2));

  struct Case {
    const char* name;
    std::function<void(const fs::path&)> damage;
    std::optional<SnapshotMeta> other_meta;
    const char* names;
  };
  const std::vector<Case> cases = {
      {"intact", [](const fs::path&) {}, std::nullopt, ""},
      {"flipped byte",
       [](const fs::path& dir) {
         std::fstream file(dir / "b.data",
                           std::ios::in | std::ios::out | std::ios::binary);
         file.put('c');
       },
       std::nullopt, "b.data"},
      {"missing file", [](const fs::path& dir) { fs::remove(dir / "a.data"); },
       std::nullopt, "a.data is missing"},
      {"extra file", [](const fs::path& dir) { WriteFile(dir / "extra", "x"); },
       std::nullopt, "unexpected file extra"},
      {"another snapshot", [](const fs::path&) {}, Meta(30, 3),
       "another snapshot"},
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.name) {
      testing::TempDir dir;
      auto store = OpenStore(dir.path());
      auto pending = store->Begin(c.other_meta.value_or(sent.meta));
      REQUIRE(pending.ok());
      for (const SnapshotFile& file : sent.files) {
        fs::copy_file(sent_folder / file.name, pending->dir() / file.name);
      }
      c.damage(pending->dir());
      const fs::path pending_dir = pending->dir();
      absl::StatusOr<SnapshotManifest> published =
          store->Publish(*std::move(pending), &sent);
      INFO(published.status().ToString());
      if (std::string_view(c.names).empty()) {
        REQUIRE(published.ok());
        CHECK(store->Verify(LogIndex(30)).ok());
      } else {
        CHECK(absl::IsDataLoss(published.status()));
        CHECK(published.status().message().find(c.names) !=
              absl::string_view::npos);
        CHECK(store->List().empty());
        CHECK(!fs::exists(pending_dir));
      }
    }
  }
}

}  // namespace
}  // namespace driftwood::raft
