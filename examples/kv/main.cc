// driftwood-kv: one member of an etcd v3-compatible replicated key-value
// store (examples/kv/kv_server.h). Flags follow etcd's names:
//
//   driftwood-kv --name n1 --data-dir /tmp/n1
//     --listen-client-urls http://127.0.0.1:2379
//     --listen-peer-urls http://127.0.0.1:2380
//     --initial-cluster n1=http://127.0.0.1:2380,n2=...,n3=...
//     --initial-cluster-state new --initial-cluster-token demo
//
//   driftwood-kv restore BACKUP --data-dir DIR
//     makes a new member's data folder from a backup (etcdctl snapshot save)
//
// Runs until SIGINT or SIGTERM, then stops cleanly (a leader hands over
// first). Exit codes: 0 after a clean stop, 1 when the member cannot start
// (the reason is printed), 2 for bad flags.
#include <sched.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "examples/kv/backup.h"
#include "examples/kv/kv_server.h"
#include "spdlog/spdlog.h"

namespace {

int Usage(const std::string& message) {
  std::fprintf(stderr, "driftwood-kv: %s (see --help)\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Abseil's mutex deadlock detection (on in Debian's build) records a lock
  // graph on every gRPC mutex acquisition: a few percent of the server's CPU.
  // The tests keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  CLI::App app{
      "driftwood-kv: a member of an etcd v3-compatible replicated key-value "
      "store on Driftwood's Raft. etcdctl and etcd clients talk to it "
      "unchanged."};
  std::string name = "default";
  std::string data_dir;
  std::string listen_client = "http://127.0.0.1:2379";
  std::string advertise_client;
  std::string listen_peer = "http://127.0.0.1:2380";
  std::string listen_metrics;
  std::string initial_advertise_peer;
  std::string initial_cluster;
  std::string cluster_state = "new";
  std::string token = "etcd-cluster";
  driftwood::kv::KvServerOptions options;
  int heartbeat_ms = 100;
  int election_ms = 1000;
  std::string log_level = "info";
  std::string compaction_retention;
  app.set_config("--config-file", "",
                 "Read flags from a TOML or INI file (name = value lines)");
  app.add_option("--name", name, "This member's name")->capture_default_str();
  app.add_option("--data-dir", data_dir,
                 "Folder of this member's data (default: <name>.etcd)");
  app.add_option("--listen-client-urls", listen_client,
                 "URL to serve clients on (http:// or https://)")
      ->capture_default_str();
  app.add_option("--advertise-client-urls", advertise_client,
                 "Client URL to tell others (default: the listen URL)");
  app.add_option("--listen-peer-urls", listen_peer,
                 "URL to talk to other members on")
      ->capture_default_str();
  app.add_option("--listen-metrics-urls", listen_metrics,
                 "URL to serve /metrics (Prometheus) and /health on "
                 "(http://host:port)");
  app.add_option("--initial-advertise-peer-urls", initial_advertise_peer,
                 "Accepted for etcd compatibility; --initial-cluster names "
                 "the peer URLs");
  app.add_option("--initial-cluster", initial_cluster,
                 "Every member as name=peer-url, comma separated (default: "
                 "<name>=<listen-peer-urls>)");
  app.add_option("--initial-cluster-state", cluster_state,
                 "new: first start of a new cluster; existing: a member that "
                 "has started before")
      ->check(CLI::IsMember({"new", "existing"}))
      ->capture_default_str();
  app.add_option("--initial-cluster-token", token,
                 "Distinguishes clusters with the same members")
      ->capture_default_str();
  app.add_option("--cert-file", options.cert_file, "Client TLS certificate");
  app.add_option("--key-file", options.key_file, "Client TLS key");
  app.add_option("--trusted-ca-file", options.trusted_ca_file,
                 "CA for client certificates");
  app.add_flag("--client-cert-auth", options.client_cert_auth,
               "Require client certificates signed by --trusted-ca-file");
  app.add_option("--peer-cert-file", options.peer_cert_file,
                 "Peer TLS certificate (mutual TLS between members)");
  app.add_option("--peer-key-file", options.peer_key_file, "Peer TLS key");
  app.add_option("--peer-trusted-ca-file", options.peer_trusted_ca_file,
                 "The cluster CA for peer certificates");
  app.add_option("--heartbeat-interval", heartbeat_ms,
                 "Milliseconds between leader heartbeats")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--election-timeout", election_ms,
                 "Milliseconds before a follower starts an election")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--snapshot-count", options.snapshot_count,
                 "Compact the log after this many applied entries")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--experimental-snapshot-catchup-entries",
                 options.snapshot_catchup_entries,
                 "Entries kept behind a compaction for slow followers")
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--quota-backend-bytes", options.quota_backend_bytes,
                 "Refuse writes (NOSPACE alarm) once the store exceeds this "
                 "many bytes (0: 2 GiB)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--auto-compaction-mode", options.auto_compaction_mode,
                 "periodic or revision (with --auto-compaction-retention)")
      ->check(CLI::IsMember({"periodic", "revision"}));
  app.add_option("--auto-compaction-retention", compaction_retention,
                 "periodic: history to keep, as 1h or 30m or hours (\"2\"); "
                 "revision: the number of revisions to keep");
  app.add_option("--experimental-value-cache-bytes", options.value_cache_bytes,
                 "Memory for each key's newest value, so that puts and "
                 "reads of the newest revision need not read them back "
                 "from disk (0: none)")
      ->capture_default_str();
  app.add_option("--experimental-log-background-write-bytes-per-second",
                 options.log_background_write_bytes_per_second,
                 "The most the Raft log's RocksDB writes per second in "
                 "memtable flushes and compactions, so that they leave the "
                 "disk to the log's synced appends (0: no limit)")
      ->capture_default_str();
  app.add_option("--experimental-store-background-write-bytes-per-second",
                 options.store_background_write_bytes_per_second,
                 "The same for the key-value store's RocksDB (0: no limit)")
      ->capture_default_str();
  bool pipeline_proposals = false;
  app.add_flag("--experimental-pipeline-proposals", pipeline_proposals,
               "Append each proposal as soon as it arrives, even while a "
               "replication round is in flight (by default the leader holds "
               "such proposals for the next round and appends them as one "
               "batch: fewer, larger writes under load)");
  bool apply_after_persist = false;
  app.add_flag("--experimental-apply-after-persist", apply_after_persist,
               "Hand committed entries to the state machine only after the "
               "raft loop's write of newer entries (by default they are "
               "applied while that write runs: they are durable already)");
  std::string scheduling = "batch";
  app.add_option(
         "--scheduling", scheduling,
         "CPU scheduling policy of the member's threads: batch (Linux "
         "SCHED_BATCH: a woken thread does not preempt the one that woke "
         "it, so the gRPC, raft and apply threads that hand work to each "
         "other each finish their batch first; fewer context switches and "
         "less CPU per request when the CPUs are busy) or normal")
      ->check(CLI::IsMember({"batch", "normal"}))
      ->capture_default_str();
  std::string progress_notify_interval = "10m";
  app.add_option("--experimental-watch-progress-notify-interval",
                 progress_notify_interval,
                 "How long a watcher that asked for progress notifications "
                 "waits without events before it is told the revision (a "
                 "duration such as 10m or 5s)")
      ->capture_default_str();
  std::string restore_from;
  std::string restore_data_dir;
  CLI::App* restore = app.add_subcommand(
      "restore",
      "Make a new member's data folder from a backup (etcdctl snapshot save); "
      "restore every member of the new cluster from the same file, then "
      "start each with --initial-cluster-state new");
  restore->add_option("backup", restore_from, "The backup file")->required();
  restore
      ->add_option("--data-dir", restore_data_dir,
                   "The new member's data folder (must not exist, or be "
                   "empty)")
      ->required();
  app.add_option("--log-level", log_level, "debug, info, warn or error")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (restore->parsed()) {
    absl::Status status =
        driftwood::kv::RestoreBackup(restore_from, restore_data_dir);
    if (!status.ok()) {
      std::fprintf(stderr, "driftwood-kv restore: %s\n",
                   std::string(status.message()).c_str());
      return 1;
    }
    std::printf("restored %s into %s\n", restore_from.c_str(),
                restore_data_dir.c_str());
    return 0;
  }

  bool client_tls = false;
  options.name = name;
  options.data_dir = data_dir.empty() ? name + ".etcd" : data_dir;
  options.client_address =
      driftwood::kv::UrlHostPort(listen_client, &client_tls);
  if (options.client_address.empty()) {
    return Usage(
        "--listen-client-urls must be http://host:port or "
        "https://host:port, not '" +
        listen_client + "'");
  }
  if (client_tls && (options.cert_file.empty() || options.key_file.empty())) {
    return Usage("an https:// client URL needs --cert-file and --key-file");
  }
  options.advertise_client_url =
      advertise_client.empty() ? listen_client : advertise_client;
  bool peer_tls = false;
  options.peer_address = driftwood::kv::UrlHostPort(listen_peer, &peer_tls);
  if (options.peer_address.empty()) {
    return Usage(
        "--listen-peer-urls must be http://host:port or "
        "https://host:port, not '" +
        listen_peer + "'");
  }
  if (!listen_metrics.empty()) {
    bool metrics_tls = false;
    options.metrics_address =
        driftwood::kv::UrlHostPort(listen_metrics, &metrics_tls);
    if (options.metrics_address.empty() || metrics_tls) {
      return Usage("--listen-metrics-urls must be http://host:port, not '" +
                   listen_metrics + "'");
    }
  }
  if (initial_cluster.empty()) initial_cluster = name + "=" + listen_peer;
  for (absl::string_view member : absl::StrSplit(initial_cluster, ',')) {
    std::vector<std::string> parts = absl::StrSplit(member, '=');
    bool tls = false;
    if (parts.size() != 2 || parts[0].empty() ||
        driftwood::kv::UrlHostPort(parts[1], &tls).empty()) {
      return Usage("--initial-cluster: '" + std::string(member) +
                   "' is not name=http://host:port");
    }
    if (!options.initial_cluster.emplace(parts[0], parts[1]).second) {
      return Usage("--initial-cluster names '" + parts[0] + "' twice");
    }
  }
  if (!compaction_retention.empty()) {
    if (options.auto_compaction_mode.empty()) {
      options.auto_compaction_mode = "periodic";
    }
    if (options.auto_compaction_mode == "revision") {
      if (!absl::SimpleAtoi(compaction_retention,
                            &options.retention_revisions) ||
          options.retention_revisions < 0) {
        return Usage(
            "--auto-compaction-retention must be a number of "
            "revisions in revision mode, not '" +
            compaction_retention + "'");
      }
    } else {
      int64_t hours = 0;
      if (absl::SimpleAtoi(compaction_retention, &hours) && hours >= 0) {
        options.retention_period = absl::Hours(hours);
      } else if (!absl::ParseDuration(compaction_retention,
                                      &options.retention_period) ||
                 options.retention_period < absl::ZeroDuration()) {
        return Usage("--auto-compaction-retention: '" + compaction_retention +
                     "' is neither hours nor a duration such as 30m");
      }
    }
  }
  if (!absl::ParseDuration(progress_notify_interval,
                           &options.watch_progress_notify_interval) ||
      options.watch_progress_notify_interval <= absl::ZeroDuration()) {
    return Usage("--experimental-watch-progress-notify-interval: '" +
                 progress_notify_interval +
                 "' is not a positive duration such as 10m");
  }
  options.hold_proposals_in_flight = !pipeline_proposals;
  options.hand_over_before_persist = !apply_after_persist;
  options.new_cluster = cluster_state == "new";
  options.cluster_token = token;
  if (election_ms < 2 * heartbeat_ms) {
    return Usage(
        "--election-timeout must be at least twice "
        "--heartbeat-interval");
  }
  options.tick_interval = absl::Milliseconds(heartbeat_ms);
  options.election_ticks = election_ms / heartbeat_ms;

  // SIGINT and SIGTERM are taken by sigwait below, in this thread only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Before the server starts any thread: threads inherit the policy.
  if (scheduling == "batch") {
    sched_param param{};
    if (sched_setscheduler(0, SCHED_BATCH, &param) != 0) {
      spdlog::warn(
          "--scheduling batch: sched_setscheduler failed ({}); the member "
          "runs under the normal policy",
          std::strerror(errno));
    }
  }
  absl::StatusOr<std::unique_ptr<driftwood::kv::KvServer>> server =
      driftwood::kv::KvServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "driftwood-kv: member %s cannot start: %s\n",
                 name.c_str(), server.status().ToString().c_str());
    return 1;
  }
  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("member {} stopping ({})", name,
               signal == SIGINT ? "SIGINT" : "SIGTERM");
  (*server)->Stop();
  return 0;
}
