// Driftwood: the SST files of a RocksDbKvStateMachine's live database, for
// tests of how its compactions lay out keys.
#ifndef DRIFTWOOD_TESTS_STATEMACHINE_LIVE_TABLES_H_
#define DRIFTWOOD_TESTS_STATEMACHINE_LIVE_TABLES_H_

#include <catch2/catch.hpp>
#include <memory>
#include <vector>

#include "rocksdb/db.h"
#include "rocksdb/metadata.h"
#include "rocksdb/options.h"
#include "statemachine/rocksdb_kv_state_machine.h"

namespace driftwood::statemachine::testing {

// Read through a read-only instance, which takes no lock, so the machine
// stays open.
inline std::vector<rocksdb::LiveFileMetaData> LiveTables(
    const RocksDbKvStateMachine& machine) {
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::OpenForReadOnly(
      rocksdb::Options(), machine.live_folder().string(), &raw);
  INFO(opened.ToString());
  REQUIRE(opened.ok());
  std::unique_ptr<rocksdb::DB> read_only(raw);
  std::vector<rocksdb::LiveFileMetaData> tables;
  read_only->GetLiveFilesMetaData(&tables);
  return tables;
}

}  // namespace driftwood::statemachine::testing

#endif  // DRIFTWOOD_TESTS_STATEMACHINE_LIVE_TABLES_H_
