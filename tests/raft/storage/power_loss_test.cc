// Power-loss tests: the RocksDB log store runs on PowerLossFs; the power is cut
// at random points. Every Persist acknowledged as synced must be there, the
// stored state must be what some prefix of the Persist calls produced, and the
// store must open.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "raft/storage/rocksdb_log_store.h"
#include "rocksdb/env.h"
#include "tests/raft/storage/power_loss_fs.h"
#include "tests/support/temp_dir.h"

namespace driftwood::raft {
namespace {

struct ModelState {
  std::vector<Entry> entries;
  HardState hard;
};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::strtoull(value, nullptr, 10) : fallback;
}

TEST_CASE("power loss keeps every synced Persist and a prefix of the rest",
          "[storage][power]") {
  const uint64_t seed = EnvOr("DRIFTWOOD_SEED", 20261125);
  const uint64_t cases = EnvOr("DRIFTWOOD_POWER_CASES", 60);
  std::mt19937_64 rng(seed);
  uint64_t total_persists = 0;
  uint64_t total_synced = 0;
  uint64_t lost_unsynced = 0;
  for (uint64_t c = 0; c < cases; ++c) {
    INFO("seed " << seed << " case " << c);
    testing::TempDir dir;
    auto fs =
        std::make_shared<testing::PowerLossFs>(rocksdb::FileSystem::Default());
    std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(fs);
    RocksDbLogStoreOptions options;
    options.path = dir.path() + "/log";
    options.cluster_id = 7;
    options.node_id = NodeId(1);
    options.create_if_missing = true;
    options.initial_configuration.voters = {NodeId(1)};
    options.env = env.get();

    // Several power cuts per case, each followed by a reopen and a check.
    ModelState model;
    for (int life = 0; life < 3; ++life) {
      auto opened = RocksDbLogStore::Open(options);
      INFO("life " << life << ": " << opened.status().ToString());
      REQUIRE(opened.ok());
      std::unique_ptr<RocksDbLogStore> store = *std::move(opened);
      std::vector<ModelState> states{model};
      size_t last_synced = 0;
      uint64_t syncs_requested = 0;
      const uint64_t syncs_before = fs->syncs();
      const int persists = 1 + static_cast<int>(rng() % 30);
      for (int p = 0; p < persists; ++p) {
        ModelState next = states.back();
        PersistRequest request;
        const uint64_t last = next.entries.size();
        if (rng() % 4 != 0) {
          const uint64_t from =
              last == 0 ? 1 : last + 1 - rng() % std::min<uint64_t>(last, 3);
          next.entries.resize(from - 1);
          for (uint64_t i = 0; i < 1 + rng() % 8; ++i) {
            Entry entry{Term(1 + c), LogIndex(from + i), EntryType::kNormal,
                        absl::StrCat("c", c, "l", life, "p", p, "i", i,
                                     std::string(rng() % 300, 'z'))};
            next.entries.push_back(entry);
            request.entries.push_back(entry);
          }
        }
        next.hard = HardState{
            Term(1 + c), NodeId(1),
            LogIndex(std::min<uint64_t>(rng() % 50, next.entries.size()))};
        request.hard_state = next.hard;
        request.sync = rng() % 3 != 0;
        REQUIRE(store->Persist(request).ok());
        states.push_back(next);
        if (request.sync) {
          last_synced = states.size() - 1;
          ++syncs_requested;
        }
      }
      total_persists += static_cast<uint64_t>(persists);
      total_synced += syncs_requested;
      // Every synced Persist synced the WAL at least once.
      CHECK(fs->syncs() - syncs_before >= syncs_requested);

      fs->PowerCut();
      store.reset();
      fs->Restore();

      auto reopened = RocksDbLogStore::Open(options);
      INFO(reopened.status().ToString());
      REQUIRE(reopened.ok());
      ModelState found;
      if ((*reopened)->LastIndex() >= LogIndex(1)) {
        auto entries = (*reopened)->Entries(
            LogIndex(1), (*reopened)->LastIndex().next(), UINT64_MAX);
        REQUIRE(entries.ok());
        found.entries = *entries;
      }
      found.hard = (*reopened)->LoadInitialState()->hard_state;
      // The state on disk is what a prefix of the Persist calls produced, and
      // that prefix includes every synced call.
      size_t match = states.size();
      for (size_t k = last_synced; k < states.size(); ++k) {
        if (states[k].entries == found.entries &&
            states[k].hard == found.hard) {
          match = k;
        }
      }
      INFO("last synced " << last_synced << " of " << states.size() - 1
                          << "; found " << found.entries.size() << " entries");
      REQUIRE(match < states.size());
      if (match + 1 < states.size()) ++lost_unsynced;
      model = states[match];
    }
  }
  std::printf(
      "power loss: seed %llu, %llu cases x 3 cuts, %llu Persist calls "
      "(%llu synced), %llu cuts lost unsynced writes\n",
      static_cast<unsigned long long>(seed),
      static_cast<unsigned long long>(cases),
      static_cast<unsigned long long>(total_persists),
      static_cast<unsigned long long>(total_synced),
      static_cast<unsigned long long>(lost_unsynced));
}

}  // namespace
}  // namespace driftwood::raft
