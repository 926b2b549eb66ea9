// Corruption tests: random bytes flipped in the real RocksDB files (WAL, SST,
// MANIFEST, CURRENT). Every case must end with the store open and every synced
// entry intact (reads of a damaged entry may fail with DataLoss), or with the
// open failing with DataLoss; never wrong data, never a crash.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/storage/rocksdb_log_store.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

namespace fs = std::filesystem;

RocksDbLogStoreOptions OptionsFor(const std::string& path) {
  RocksDbLogStoreOptions options;
  options.path = path;
  options.cluster_id = 42;
  options.node_id = NodeId(1);
  options.create_if_missing = true;
  options.initial_configuration.voters = {NodeId(1), NodeId(2), NodeId(3)};
  return options;
}

Entry MakeEntry(uint64_t index, uint64_t term) {
  return Entry{
      Term(term), LogIndex(index), EntryType::kNormal,
      absl::StrCat("entry-", index, "-", std::string(index % 97, 'x'))};
}

enum class FileKind { kWal, kSst, kManifest, kCurrent };

const char* Name(FileKind kind) {
  switch (kind) {
    case FileKind::kWal:
      return "WAL";
    case FileKind::kSst:
      return "SST";
    case FileKind::kManifest:
      return "MANIFEST";
    case FileKind::kCurrent:
      return "CURRENT";
  }
  return "?";
}

std::vector<fs::path> FilesOf(const std::string& dir, FileKind kind) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    const bool match =
        (kind == FileKind::kWal && entry.path().extension() == ".log") ||
        (kind == FileKind::kSst && entry.path().extension() == ".sst") ||
        (kind == FileKind::kManifest && name.rfind("MANIFEST-", 0) == 0) ||
        (kind == FileKind::kCurrent && name == "CURRENT");
    if (match && fs::file_size(entry.path()) > 0) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

uint64_t Seed() {
  const char* seed = std::getenv("DRIFTWOOD_SEED");
  return seed != nullptr ? std::strtoull(seed, nullptr, 10) : 20261125;
}

uint64_t Cases() {
  const char* cases = std::getenv("DRIFTWOOD_CORRUPTION_CASES");
  return cases != nullptr ? std::strtoull(cases, nullptr, 10) : 120;
}

TEST_CASE("corrupted files give DataLoss or intact data, never wrong data",
          "[storage][corruption]") {
  const uint64_t seed = Seed();
  std::mt19937_64 rng(seed);
  uint64_t opened_intact = 0;
  uint64_t refused = 0;
  uint64_t reads_refused = 0;
  for (uint64_t c = 0; c < Cases(); ++c) {
    const FileKind kind = static_cast<FileKind>(c % 4);
    testing::TempDir dir;
    const std::string path = dir.path() + "/log";
    uint64_t last = 0;
    {
      auto store = RocksDbLogStore::Open(OptionsFor(path));
      REQUIRE(store.ok());
      // Some entries reach an SST (flushed), later ones stay in the WAL.
      for (int batch = 0; batch < 12; ++batch) {
        PersistRequest request;
        for (int i = 0; i < 5; ++i) {
          ++last;
          request.entries.push_back(MakeEntry(last, 1 + last / 20));
        }
        request.hard_state =
            HardState{Term(1 + last / 20), NodeId(1), LogIndex(last - 5)};
        request.sync = true;
        REQUIRE((*store)->Persist(request).ok());
        if (batch == 6) REQUIRE((*store)->FlushForTesting().ok());
      }
    }
    std::vector<fs::path> files = FilesOf(path, kind);
    INFO("seed " << seed << " case " << c << " " << Name(kind));
    REQUIRE(!files.empty());
    const fs::path victim = files[rng() % files.size()];
    {
      std::fstream file(victim,
                        std::ios::in | std::ios::out | std::ios::binary);
      const uint64_t size = fs::file_size(victim);
      const int flips = 1 + static_cast<int>(rng() % 3);
      for (int f = 0; f < flips; ++f) {
        const auto offset = static_cast<std::streamoff>(rng() % size);
        char byte = 0;
        file.seekg(offset);
        file.read(&byte, 1);
        byte = static_cast<char>(byte ^ static_cast<char>(1 + rng() % 255));
        file.seekp(offset);
        file.write(&byte, 1);
      }
    }
    INFO("corrupted " << victim.filename().string());

    auto store = RocksDbLogStore::Open(OptionsFor(path));
    if (!store.ok()) {
      ++refused;
      if (std::getenv("DRIFTWOOD_VERBOSE") != nullptr) {
        std::printf("case %llu %s: %s\n", static_cast<unsigned long long>(c),
                    Name(kind), store.status().ToString().c_str());
      }
      INFO(store.status().ToString());
      CHECK(absl::IsDataLoss(store.status()));
      continue;
    }
    const RocksDbLogStore& log = **store;
    // Every synced entry is still there...
    CHECK(log.FirstIndex() == LogIndex(1));
    CHECK(log.LastIndex() == LogIndex(last));
    // ...and reads either return exactly what was written or DataLoss.
    bool intact = true;
    for (uint64_t index = 1; index <= last; ++index) {
      auto entries =
          log.Entries(LogIndex(index), LogIndex(index + 1), UINT64_MAX);
      if (!entries.ok()) {
        INFO(entries.status().ToString());
        CHECK(absl::IsDataLoss(entries.status()));
        intact = false;
        continue;
      }
      REQUIRE(entries->size() == 1);
      CHECK(entries->front() == MakeEntry(index, 1 + index / 20));
    }
    intact ? ++opened_intact : ++reads_refused;
  }
  std::printf(
      "corruption: seed %llu, %llu cases: %llu opened intact, %llu opened with "
      "DataLoss on read, %llu refused with DataLoss\n",
      static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(Cases()),
      static_cast<unsigned long long>(opened_intact),
      static_cast<unsigned long long>(reads_refused),
      static_cast<unsigned long long>(refused));
}

}  // namespace
}  // namespace driftwood::raft
