// The coordination workloads of driftwood-jepsen-client (jepsen/README.md
// "Watch and lock workloads"), run beside the register and list-append
// processes:
//
//  * watch: `watchers` threads each watch the whole key space from revision
//    1, each starting on a different node. When a stream breaks (a killed,
//    paused or partitioned node, or "etcdserver: no leader"), the watcher
//    reconnects to the next node and resumes after the last revision it
//    saw, as etcd clients do. Every event received is logged as it came,
//    duplicates included. At the end, after the final reads, the final
//    revision R is read, every watcher is asked for progress until it is
//    synced through R, and a fresh watch from revision 1 on a healthy
//    cluster is logged as the truth the checker compares them with.
//  * lock: `lock_processes` threads take turns holding one lock through the
//    server-side Lock service, each with its own lease (TTL lease_ttl_s,
//    kept alive over a KeepAlive stream). A holder writes the key "fence"
//    with a Txn guarded by its lock key's create revision, and the key
//    "unfenced" without a guard, a few times, then unlocks and revokes its
//    lease. The checker reads both keys' histories from the truth: fenced
//    writes of different holders must never interleave; unfenced ones may
//    (a paused holder whose lease expired keeps writing), which the report
//    shows without failing the run.
//
// Both logs are JSON lines (watch.jsonl: events, reconnects and the final
// line; lock.jsonl: each lock operation and its outcome).
#ifndef DRIFTWOOD_JEPSEN_CLIENT_COORDINATION_H_
#define DRIFTWOOD_JEPSEN_CLIENT_COORDINATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace driftwood::jepsen {

struct CoordinationOptions {
  std::vector<std::pair<std::string, std::string>> nodes;  // name, host:port
  int watchers = 0;
  int lock_processes = 0;
  int lease_ttl_s = 2;
  int request_timeout_ms = 1000;
  uint64_t seed = 1;
  std::string watch_log;
  std::string lock_log;
};

class Coordination {
 public:
  explicit Coordination(CoordinationOptions options);
  ~Coordination();

  // Starts the watchers and the lock processes.
  void Start();
  // The main phase is over: lock processes release what they hold and stop.
  void StopLocks();
  // After the final reads: syncs every watcher through the final revision,
  // logs the truth, stops the watchers. Returns "watch-done ..." fields.
  std::string Finish(double timeout_s);
  // "locks: acquired=N ..." for the main-done line.
  std::string LockSummary() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CLIENT_COORDINATION_H_
