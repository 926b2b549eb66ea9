// Driftwood: the options of a one-voter RocksDbLogStore created on first
// open, for storage tests.
#ifndef DRIFTWOOD_TESTS_RAFT_STORAGE_LOG_STORE_OPTIONS_H_
#define DRIFTWOOD_TESTS_RAFT_STORAGE_LOG_STORE_OPTIONS_H_

#include <string>

#include "raft/storage/rocksdb_log_store.h"

namespace driftwood::testing {

// A store of cluster 7 at `path`, node 1 its only voter; `env` as in
// RocksDbLogStoreOptions::env.
inline raft::RocksDbLogStoreOptions SingleVoterStoreOptions(
    const std::string& path, rocksdb::Env* env = nullptr) {
  raft::RocksDbLogStoreOptions options;
  options.path = path;
  options.cluster_id = 7;
  options.node_id = raft::NodeId(1);
  options.create_if_missing = true;
  options.initial_configuration.voters = {raft::NodeId(1)};
  options.env = env;
  return options;
}

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_RAFT_STORAGE_LOG_STORE_OPTIONS_H_
