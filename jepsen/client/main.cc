// driftwood-jepsen-client: the client side of a Jepsen-style run
// (jepsen/README.md). It drives a workload against the cluster's etcd v3 API
// from `--concurrency` logical processes and records every operation as JSON
// lines (jepsen/README.md "History format", without indices: run.py merges
// this file with the nemesis' operations and numbers them).
//
// Each logical process is one thread with at most one operation open, and
// records invoke before sending and its completion after the answer:
//   ok    the operation took effect (or the read returned this value);
//   fail  it certainly did not take effect (a read that failed, a compare
//         that did not hold, a request the server refused as invalid);
//   info  it may or may not have taken effect, now or later (a write whose
//         answer is a timeout, a lost connection or any other error after it
//         was sent). The process then retires and its thread continues as a
//         new process (id + concurrency), as Jepsen does. Writes are never
//         retried.
//
// Protocol with run.py: after the main phase the client prints
// "main-done ..." and waits for a line on stdin: "final" reads every key it
// used from every node (linearizably, retrying failed reads until
// --final-timeout-s) and prints "final-done ok=N missing=M"; "quit" or end of
// input exits.
#include <grpcpp/grpcpp.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "jepsen/client/coordination.h"
#include "jepsen/client/json_log.h"

namespace {

using nlohmann::json;

struct Options {
  std::string workload = "register";
  std::vector<std::pair<std::string, std::string>> nodes;  // name, host:port
  int concurrency = 10;
  int processes_per_key = 2;
  double rate = 200;
  double duration_s = 60;
  int64_t start_ns = 0;
  uint64_t seed = 1;
  bool serializable_reads = false;
  int request_timeout_ms = 1000;
  int ops_per_key = 200;
  double final_timeout_s = 30;
  std::string history;
  // The coordination workloads (coordination.h).
  int watchers = 0;
  int lock_processes = 0;
  int lease_ttl_s = 2;
  std::string watch_log;
  std::string lock_log;
};

int64_t MonotonicNs() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return int64_t{now.tv_sec} * 1'000'000'000 + now.tv_nsec;
}

// One history file, written a line at a time (flushed, so a run that dies
// keeps what was recorded).
class History {
 public:
  History(const std::string& path, int64_t start_ns)
      : log_(path), start_ns_(start_ns) {}
  bool ok() const { return log_.ok(); }

  void Record(int64_t process, const char* type, const std::string& f,
              const std::string& key, const json& value,
              const std::string& node, const std::string& error = "") {
    json op = {{"time", MonotonicNs() - start_ns_},
               {"process", process},
               {"type", type},
               {"f", f},
               {"key", key},
               {"value", value},
               {"node", node}};
    if (!error.empty()) op["error"] = error;
    log_.Write(op);
  }

 private:
  driftwood::jepsen::JsonLog log_;
  const int64_t start_ns_;
};

// A rotating key shared by `processes_per_key` processes: after
// `ops_per_key` operations it is retired and a fresh key takes its place,
// which bounds the checker's work per key (jepsen/README.md "Checker").
// Written values and appended elements are unique per key.
struct KeySlot {
  std::mutex mu;
  bool append = false;  // a list key ("a<id>") or a register ("r<id>")
  int64_t key_id = -1;
  int ops = 0;
  int64_t next_value = 1;
  std::vector<int64_t> recent_values;
};

struct Outcome {
  const char* type;  // "ok", "fail" or "info"
  json value;
  std::string error;
};

class Cluster {
 public:
  explicit Cluster(const Options& options) : options_(options) {
    for (const auto& [name, address] : options.nodes) {
      grpc::ChannelArguments args;
      // Reconnect quickly to a restarted node instead of gRPC's default
      // backoff of up to two minutes.
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
      auto channel = grpc::CreateCustomChannel(
          address, grpc::InsecureChannelCredentials(), args);
      stubs_.push_back(etcdserverpb::KV::NewStub(channel));
      names_.push_back(name);
    }
  }

  size_t size() const { return stubs_.size(); }
  const std::string& name(size_t node) const { return names_[node]; }

  // Reads `key` as a register (an integer or null) or a list (an array).
  Outcome Read(size_t node, const std::string& key, bool as_list,
               bool serializable) {
    etcdserverpb::RangeRequest request;
    request.set_key(key);
    request.set_serializable(serializable);
    etcdserverpb::RangeResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status =
        stubs_[node]->Range(&context, request, &response);
    // A read has no effect, so every error is a definite fail.
    if (!status.ok()) return {"fail", nullptr, ErrorName(status)};
    if (response.kvs_size() == 0) {
      return {"ok", as_list ? json::array() : json(nullptr), ""};
    }
    std::optional<json> value = Parse(response.kvs(0).value(), as_list);
    if (!value.has_value()) {
      return {"fail", nullptr,
              "unparsable value '" + response.kvs(0).value() + "'"};
    }
    return {"ok", *value, ""};
  }

  Outcome Write(size_t node, const std::string& key, int64_t value) {
    etcdserverpb::PutRequest request;
    request.set_key(key);
    request.set_value(std::to_string(value));
    etcdserverpb::PutResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status = stubs_[node]->Put(&context, request, &response);
    if (!status.ok()) return WriteError(status, value);
    return {"ok", value, ""};
  }

  // Compare-and-set through Txn: put `to` if the value is `from`.
  Outcome Cas(size_t node, const std::string& key, int64_t from, int64_t to) {
    etcdserverpb::TxnRequest request;
    etcdserverpb::Compare* compare = request.add_compare();
    compare->set_key(key);
    compare->set_result(etcdserverpb::Compare::EQUAL);
    compare->set_target(etcdserverpb::Compare::VALUE);
    compare->set_value(std::to_string(from));
    etcdserverpb::PutRequest* put =
        request.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(std::to_string(to));
    const json value = json::array({from, to});
    etcdserverpb::TxnResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status = stubs_[node]->Txn(&context, request, &response);
    if (!status.ok()) return WriteError(status, value);
    if (!response.succeeded()) return {"fail", value, "compare-failed"};
    return {"ok", value, ""};
  }

  // Appends `element` to the list at `key`: reads the list, then writes it
  // back extended, guarded by the key's mod revision (create revision 0 when
  // absent), so a concurrent append makes this one fail instead of being
  // overwritten.
  Outcome Append(size_t node, const std::string& key, int64_t element) {
    etcdserverpb::RangeRequest read;
    read.set_key(key);
    etcdserverpb::RangeResponse current;
    {
      grpc::ClientContext context;
      SetDeadline(context);
      const grpc::Status status = stubs_[node]->Range(&context, read, &current);
      if (!status.ok()) {
        return {"fail", element, "read-before-append: " + ErrorName(status)};
      }
    }
    etcdserverpb::TxnRequest request;
    etcdserverpb::Compare* compare = request.add_compare();
    compare->set_key(key);
    compare->set_result(etcdserverpb::Compare::EQUAL);
    std::string list;
    if (current.kvs_size() == 0) {
      compare->set_target(etcdserverpb::Compare::CREATE);
      compare->set_create_revision(0);
      list = std::to_string(element);
    } else {
      compare->set_target(etcdserverpb::Compare::MOD);
      compare->set_mod_revision(current.kvs(0).mod_revision());
      list = absl::StrCat(current.kvs(0).value(), ",", element);
    }
    etcdserverpb::PutRequest* put =
        request.add_success()->mutable_request_put();
    put->set_key(key);
    put->set_value(list);
    etcdserverpb::TxnResponse response;
    grpc::ClientContext context;
    SetDeadline(context);
    const grpc::Status status = stubs_[node]->Txn(&context, request, &response);
    if (!status.ok()) return WriteError(status, element);
    if (!response.succeeded()) return {"fail", element, "compare-failed"};
    return {"ok", element, ""};
  }

 private:
  void SetDeadline(grpc::ClientContext& context) const {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::milliseconds(options_.request_timeout_ms));
  }

  static std::string ErrorName(const grpc::Status& status) {
    static const char* const kNames[] = {"ok",
                                         "cancelled",
                                         "unknown",
                                         "invalid-argument",
                                         "deadline",
                                         "not-found",
                                         "already-exists",
                                         "permission-denied",
                                         "exhausted",
                                         "failed-precondition",
                                         "aborted",
                                         "out-of-range",
                                         "unimplemented",
                                         "internal",
                                         "unavailable",
                                         "data-loss",
                                         "unauthenticated"};
    const auto code = static_cast<size_t>(status.error_code());
    const std::string name =
        code < std::size(kNames) ? kNames[code] : std::to_string(code);
    return status.error_message().empty()
               ? name
               : absl::StrCat(name, ": ", status.error_message());
  }

  // Certainly without effect, hence fail:
  //   - a request gRPC never sent, because the channel had no connection;
  //   - a proposal the server says was never appended: driftwood-kv answers
  //     "no leader" or "leader changed" only for the runtime's Unavailable
  //     and FailedPrecondition, and "too many requests" only for
  //     ResourceExhausted, which raft/server/server.h's outcome table
  //     defines as never appended (this run checks that promise);
  //   - a request refused as invalid.
  // Any other error ("request timed out", "server stopped", a deadline, a
  // lost connection) may follow a proposal that commits later: info.
  static Outcome WriteError(const grpc::Status& status, json value) {
    const std::string& message = status.error_message();
    const bool never_sent =
        status.error_code() == grpc::StatusCode::UNAVAILABLE &&
        absl::StartsWith(message, "failed to connect to all addresses");
    const bool never_appended =
        (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
         (message == "etcdserver: no leader" ||
          message == "etcdserver: leader changed")) ||
        (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED &&
         message == "etcdserver: too many requests");
    if (never_sent || never_appended) {
      return {"fail", std::move(value), ErrorName(status)};
    }
    switch (status.error_code()) {
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::OUT_OF_RANGE:
      case grpc::StatusCode::PERMISSION_DENIED:
      case grpc::StatusCode::UNAUTHENTICATED:
      case grpc::StatusCode::UNIMPLEMENTED:
        return {"fail", std::move(value), ErrorName(status)};
      default:
        return {"info", std::move(value), ErrorName(status)};
    }
  }

  static std::optional<json> Parse(const std::string& text, bool as_list) {
    if (!as_list) {
      int64_t value = 0;
      if (!absl::SimpleAtoi(text, &value)) return std::nullopt;
      return json(value);
    }
    json list = json::array();
    if (text.empty()) return list;
    for (absl::string_view part : absl::StrSplit(text, ',')) {
      int64_t element = 0;
      if (!absl::SimpleAtoi(part, &element)) return std::nullopt;
      list.push_back(element);
    }
    return list;
  }

  const Options& options_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs_;
  std::vector<std::string> names_;
};

class Workload {
 public:
  Workload(const Options& options, Cluster& cluster, History& history)
      : options_(options),
        cluster_(cluster),
        history_(history),
        slots_(static_cast<size_t>(
            (options.concurrency + options.processes_per_key - 1) /
            options.processes_per_key)),
        next_process_(options.concurrency) {
    // "both" alternates register and list slots.
    for (size_t i = 0; i < slots_.size(); ++i) {
      slots_[i].append = options.workload == "append" ||
                         (options.workload == "both" && i % 2 == 1);
    }
  }

  // The main phase: every process runs until the deadline, pacing itself so
  // that the processes together invoke about `rate` operations a second.
  void RunMain() {
    const int64_t end_ns =
        MonotonicNs() + static_cast<int64_t>(options_.duration_s * 1e9);
    std::vector<std::thread> threads;
    for (int thread = 0; thread < options_.concurrency; ++thread) {
      threads.emplace_back(
          [this, thread, end_ns] { RunProcess(thread, end_ns); });
    }
    for (std::thread& t : threads) t.join();
  }

  // Reads every key used from every node, one process per node, retrying a
  // failed read until it succeeds or the deadline passes. Returns the number
  // of (node, key) pairs never read.
  int RunFinalReads(int* ok_reads) {
    std::vector<std::string> keys;
    {
      std::lock_guard<std::mutex> lock(keys_mu_);
      keys = used_keys_;
    }
    const int64_t deadline_ns =
        MonotonicNs() + static_cast<int64_t>(options_.final_timeout_s * 1e9);
    std::atomic<int> missing{0};
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (size_t node = 0; node < cluster_.size(); ++node) {
      const int64_t process = next_process_.fetch_add(1);
      threads.emplace_back([&, node, process] {
        for (const std::string& key : keys) {
          bool done = false;
          while (!done && MonotonicNs() < deadline_ns) {
            history_.Record(process, "invoke", "read", key, nullptr,
                            cluster_.name(node));
            Outcome outcome = cluster_.Read(node, key, key[0] == 'a', false);
            history_.Record(process, outcome.type, "read", key, outcome.value,
                            cluster_.name(node), outcome.error);
            done = std::string(outcome.type) == "ok";
            if (!done) {
              std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
          }
          ++(done ? ok : missing);
        }
      });
    }
    for (std::thread& t : threads) t.join();
    *ok_reads = ok.load();
    return missing.load();
  }

  std::string Summary() const {
    return absl::StrCat("invoked=", invoked_.load(), " ok=", ok_.load(),
                        " fail=", fail_.load(), " info=", info_.load(),
                        " keys=", used_keys_.size());
  }

 private:
  void RunProcess(int thread, int64_t end_ns) {
    std::mt19937_64 random(options_.seed * 1'000'003 +
                           static_cast<uint64_t>(thread));
    int64_t process = thread;
    const size_t node = static_cast<size_t>(thread) % cluster_.size();
    KeySlot& slot =
        slots_[static_cast<size_t>(thread / options_.processes_per_key)];
    const auto interval = std::chrono::nanoseconds(
        static_cast<int64_t>(1e9 * options_.concurrency / options_.rate));
    // Processes start spread over one interval.
    auto next = std::chrono::steady_clock::now() +
                std::chrono::nanoseconds(static_cast<int64_t>(
                    random() % static_cast<uint64_t>(interval.count() + 1)));
    while (MonotonicNs() < end_ns) {
      std::this_thread::sleep_until(next);
      next += interval;
      if (next < std::chrono::steady_clock::now()) {
        next = std::chrono::steady_clock::now();
      }
      if (MonotonicNs() >= end_ns) break;
      if (!RunOne(process, node, slot, random)) {
        process += options_.concurrency;
        ReserveProcess(process);
      }
    }
  }

  void ReserveProcess(int64_t process) {
    int64_t seen = next_process_.load();
    while (seen <= process &&
           !next_process_.compare_exchange_weak(seen, process + 1)) {
    }
  }

  // One operation; false when it ended as info (the process retires).
  bool RunOne(int64_t process, size_t node, KeySlot& slot,
              std::mt19937_64& random) {
    const bool append = slot.append;
    std::string key;
    std::string f;
    int64_t a = 0;
    int64_t b = 0;
    {
      std::lock_guard<std::mutex> lock(slot.mu);
      if (slot.key_id < 0 || slot.ops >= options_.ops_per_key) {
        slot.key_id = next_key_.fetch_add(1);
        slot.ops = 0;
        slot.next_value = 1;
        slot.recent_values.clear();
        key = absl::StrCat(append ? "a" : "r", slot.key_id);
        std::lock_guard<std::mutex> keys_lock(keys_mu_);
        used_keys_.push_back(key);
      }
      key = absl::StrCat(append ? "a" : "r", slot.key_id);
      ++slot.ops;
      const uint64_t dice = random() % 4;
      if (dice < 2) {
        f = "read";
      } else if (append) {
        f = "append";
        a = slot.next_value++;
      } else if (dice == 2 || slot.recent_values.empty()) {
        f = "write";
        a = slot.next_value++;
        slot.recent_values.push_back(a);
      } else {
        f = "cas";
        a = slot.recent_values[random() % slot.recent_values.size()];
        b = slot.next_value++;
        slot.recent_values.push_back(b);
      }
      if (slot.recent_values.size() > 3) {
        slot.recent_values.erase(slot.recent_values.begin());
      }
    }
    const std::string& node_name = cluster_.name(node);
    Outcome outcome;
    if (f == "read") {
      history_.Record(process, "invoke", f, key, nullptr, node_name);
      outcome = cluster_.Read(node, key, append, options_.serializable_reads);
    } else if (f == "write") {
      history_.Record(process, "invoke", f, key, a, node_name);
      outcome = cluster_.Write(node, key, a);
    } else if (f == "cas") {
      history_.Record(process, "invoke", f, key, json::array({a, b}),
                      node_name);
      outcome = cluster_.Cas(node, key, a, b);
    } else {
      history_.Record(process, "invoke", f, key, a, node_name);
      outcome = cluster_.Append(node, key, a);
    }
    history_.Record(process, outcome.type, f, key, outcome.value, node_name,
                    outcome.error);
    ++invoked_;
    const std::string type = outcome.type;
    if (type == "ok") {
      ++ok_;
    } else if (type == "fail") {
      ++fail_;
    } else {
      ++info_;
      return false;
    }
    return true;
  }

  const Options& options_;
  Cluster& cluster_;
  History& history_;
  std::vector<KeySlot> slots_;
  std::atomic<int64_t> next_key_{0};
  std::atomic<int64_t> next_process_;
  std::mutex keys_mu_;
  std::vector<std::string> used_keys_;
  std::atomic<int64_t> invoked_{0}, ok_{0}, fail_{0}, info_{0};
};

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string nodes;
  CLI::App app(
      "driftwood-jepsen-client: runs a Jepsen workload (register or append) "
      "against a driftwood-kv cluster and records the history as JSON lines. "
      "Driven by jepsen/run.py.");
  app.add_option("--workload", options.workload,
                 "register, append, or both (half the keys each)")
      ->check(CLI::IsMember({"register", "append", "both"}))
      ->capture_default_str();
  app.add_option("--nodes", nodes,
                 "The cluster's client addresses: name=host:port,...")
      ->required();
  app.add_option("--concurrency", options.concurrency, "Logical processes")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--processes-per-key", options.processes_per_key,
                 "Processes sharing each rotating key")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--rate", options.rate, "Operations a second, all processes")
      ->check(CLI::Range(0.1, 1e6))
      ->capture_default_str();
  app.add_option("--duration", options.duration_s, "Seconds of the main phase")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--ops-per-key", options.ops_per_key,
                 "Operations on a key before it is retired")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--request-timeout-ms", options.request_timeout_ms,
                 "Deadline of each request")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  app.add_option("--final-timeout-s", options.final_timeout_s,
                 "How long final reads are retried")
      ->capture_default_str();
  app.add_option("--start-ns", options.start_ns,
                 "CLOCK_MONOTONIC nanoseconds of the run's start (times in "
                 "the history are relative to it)")
      ->required();
  app.add_option("--seed", options.seed, "Random seed")->capture_default_str();
  app.add_flag("--serializable-reads", options.serializable_reads,
               "Read with serializable=true (a local, possibly stale read: "
               "the negative control)");
  app.add_option("--watchers", options.watchers,
                 "Watchers of the whole key space (the watch workload)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--lock-processes", options.lock_processes,
                 "Processes taking turns on one lock (the lock workload)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  app.add_option("--lease-ttl", options.lease_ttl_s,
                 "TTL in seconds of the lock processes' leases")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--watch-log", options.watch_log,
                 "Where the watchers' events go (JSON lines)");
  app.add_option("--lock-log", options.lock_log,
                 "Where the lock operations go (JSON lines)");
  app.add_option("--history", options.history,
                 "Where to append the operations (JSON lines)")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (absl::string_view entry : absl::StrSplit(nodes, ',')) {
    std::pair<std::string, std::string> node =
        absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (node.first.empty() || node.second.empty()) {
      std::cerr << "driftwood-jepsen-client: --nodes: '" << entry
                << "' is not name=host:port\n";
      return 2;
    }
    options.nodes.push_back(node);
  }

  History history(options.history, options.start_ns);
  if (!history.ok()) {
    std::cerr << "driftwood-jepsen-client: cannot write " << options.history
              << "\n";
    return 1;
  }
  if ((options.watchers > 0 && options.watch_log.empty()) ||
      (options.lock_processes > 0 && options.lock_log.empty())) {
    std::cerr << "driftwood-jepsen-client: --watchers needs --watch-log and "
                 "--lock-processes needs --lock-log\n";
    return 2;
  }
  driftwood::jepsen::Coordination coordination(
      {.nodes = options.nodes,
       .watchers = options.watchers,
       .lock_processes = options.lock_processes,
       .lease_ttl_s = options.lease_ttl_s,
       .request_timeout_ms = options.request_timeout_ms,
       .seed = options.seed,
       .watch_log = options.watch_log.empty() ? "/dev/null" : options.watch_log,
       .lock_log = options.lock_log.empty() ? "/dev/null" : options.lock_log});
  coordination.Start();
  Cluster cluster(options);
  Workload workload(options, cluster, history);
  workload.RunMain();
  coordination.StopLocks();
  std::cout << "main-done " << workload.Summary() << " "
            << coordination.LockSummary() << std::endl;

  std::string command;
  while (std::getline(std::cin, command)) {
    if (command == "final") {
      int ok = 0;
      const int missing = workload.RunFinalReads(&ok);
      const std::string watched = coordination.Finish(options.final_timeout_s);
      std::cout << "final-done ok=" << ok << " missing=" << missing << " "
                << watched << std::endl;
    } else if (command == "quit") {
      break;
    }
  }
  return 0;
}
