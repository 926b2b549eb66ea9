// Driftwood: KvServer, one member of the etcd v3-compatible replicated store
// (docs/design.md "The etcd-compatible store"): a raft::Server with an
// MvccStateMachine (statemachine/mvcc) replicated over GrpcTransport, and the
// etcd v3 gRPC services for clients.
//
// What is built: KV (Range, Put, DeleteRange, Txn, Compact), Watch
// (watch_service.h), Lease (lease_service.h), Lock and Election
// (lock_service.h), Maintenance (Status, HashKV, Alarm, Defragment, Snapshot
// as a backup.h stream), Cluster.MemberList and Auth.Authenticate
// ("authentication is not enabled"). Member changes, Hash and MoveLeader
// answer UNIMPLEMENTED with a message saying so. Any member accepts
// writes (a follower forwards them) and linearizable reads (ReadIndex);
// serializable reads are local.
#ifndef DRIFTWOOD_EXAMPLES_KV_KV_SERVER_H_
#define DRIFTWOOD_EXAMPLES_KV_KV_SERVER_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace driftwood::kv {

struct KvServerOptions {
  // This member's name; it must appear in initial_cluster.
  std::string name;
  // raft/ (the log and snapshots) and mvcc/ (the store) live here.
  std::filesystem::path data_dir;
  // host:port for clients and for peers.
  std::string client_address = "127.0.0.1:2379";
  std::string advertise_client_url = "http://127.0.0.1:2379";
  std::string peer_address = "127.0.0.1:2380";
  // host:port for /metrics (Prometheus text) and /health over HTTP; empty:
  // none (etcd's --listen-metrics-urls).
  std::string metrics_address;
  // Every member's name and peer URL (http://host:port), this one's too.
  std::map<std::string, std::string> initial_cluster;
  // True: this is the first start of a new cluster (etcd's
  // --initial-cluster-state new). False: join an existing one, which needs
  // a data folder written before.
  bool new_cluster = true;
  std::string cluster_token = "etcd-cluster";

  // TLS for clients (all three files, or none) and whether clients must
  // present a certificate the CA signed.
  std::string cert_file, key_file, trusted_ca_file;
  bool client_cert_auth = false;
  // TLS between members: mutual, all three files or none.
  std::string peer_cert_file, peer_key_file, peer_trusted_ca_file;

  // etcd's --quota-backend-bytes: once the store's files exceed this, writes
  // are refused with "etcdserver: mvcc: database space exceeded" and the
  // NOSPACE alarm is raised (cleared by `etcdctl alarm disarm` after
  // compaction and defragmentation). 0: etcd's default, 2 GiB.
  int64_t quota_backend_bytes = 0;
  // etcd's --auto-compaction-mode and --auto-compaction-retention. The
  // leader compacts: "revision" keeps the last `retention_revisions`
  // revisions (checked every auto_compaction_interval); "periodic" keeps
  // `retention_period` of history. Empty mode, or zero retention: off.
  std::string auto_compaction_mode;
  int64_t retention_revisions = 0;
  absl::Duration retention_period = absl::ZeroDuration();
  absl::Duration auto_compaction_interval = absl::Minutes(5);

  // Raft timing: etcd's defaults (100 ms heartbeats, 1 s election timeout).
  absl::Duration tick_interval = absl::Milliseconds(100);
  int election_ticks = 10;

  // raft::ServerOptions::hold_proposals_in_flight: proposals that arrive
  // while a replication round is in flight join the next round as one batch.
  bool hold_proposals_in_flight = true;
  // raft::ServerOptions::hand_over_before_persist: committed entries are
  // applied while the raft loop writes newer ones.
  bool hand_over_before_persist = true;

  // Log compaction (etcd's --snapshot-count and
  // --experimental-snapshot-catchup-entries): the state machine is synced and
  // the log compacted once this many entries were applied since the last
  // compaction, keeping `snapshot_catchup_entries` entries behind it for
  // followers that are a little behind; one further behind gets a snapshot.
  uint64_t snapshot_count = 100'000;
  uint64_t snapshot_catchup_entries = 5'000;

  // etcd's --experimental-watch-progress-notify-interval: how long a watcher
  // created with progress_notify waits without events before it is told
  // the current revision.
  absl::Duration watch_progress_notify_interval = absl::Minutes(10);
  // How many of the newest applied events the watch hub keeps for watchers
  // (statemachine/mvcc/watch_hub.h); a watcher further behind reads the
  // store's history instead.
  size_t watch_ring_events = 100'000;
  // The store's cache of each key's newest value, in bytes
  // (statemachine/mvcc/key_index.h; 256 MiB, as KeyIndex's default); 0
  // reads every value from disk.
  size_t value_cache_bytes = size_t{256} << 20;
  // The most the Raft log's and the store's RocksDB databases write per
  // second in flushes and compactions, so that they leave the disk to the
  // log's synced appends (raft/storage/rocksdb_background_io.h); 0: not
  // limited.
  uint64_t log_background_write_bytes_per_second = 128 << 20;
  uint64_t store_background_write_bytes_per_second = 0;

  // Tests only; default none. Called on the apply thread after each applied
  // batch is written and before the lessor and the watchers hear of it: a
  // test delays one member here to make it the last to learn of a change.
  std::function<void()> before_observing_applied;
};

// "http://host:port" or "https://host:port" -> "host:port" (empty for
// anything else); *tls (when given) says whether it was https.
std::string UrlHostPort(const std::string& url, bool* tls = nullptr);

// The member id of `name` (the same on every member): a hash of the name.
uint64_t MemberIdFor(const std::string& name);

class KvServer {
 public:
  // Checks the options, opens (or creates) the data folder, starts the
  // replica and the client service. InvalidArgument for bad options;
  // FailedPrecondition for a data folder of another member or cluster, or an
  // empty one when joining; Unavailable when a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<KvServer>> Start(
      const KvServerOptions& options);
  ~KvServer();

  int client_port() const;
  // 0 without a metrics address.
  int metrics_port() const;
  int peer_port() const;
  uint64_t member_id() const;

  // Stops serving clients, then the replica (a leader hands over first).
  void Stop();

 private:
  class Impl;
  explicit KvServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace driftwood::kv

#endif  // DRIFTWOOD_EXAMPLES_KV_KV_SERVER_H_
