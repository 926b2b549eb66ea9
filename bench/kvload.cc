// kvload: a load generator for etcd's v3 KV API (etcdserverpb.KV/Put and
// /Range, Watch), so that one binary measures etcd and driftwood-kv alike.
//
// Closed loop by default: --in-flight requests are outstanding at all times,
// each new one issued from the previous one's completion, over --connections
// HTTP/2 connections driven by --threads completion-queue threads. With
// --rate the loop is open: requests are scheduled at a fixed rate and a
// request's latency counts from its scheduled time, so a stall shows up in
// the latency of everything scheduled during it.
//
//   kvload --endpoints 127.0.0.1:2379 --leader-only --op put --in-flight 64
//
// Prints ops/s, latency percentiles, errors and the client's own CPU per
// operation; --json prints the same as one JSON object for scripts
// (bench/compare-etcd), --log writes one line per request (bench/failover).
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "proto/etcd_service.grpc.pb.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::vector<std::string> endpoints;
  bool leader_only = false;
  std::string op = "put";  // put, get, mix, watch, fill, compact
  bool serializable = false;
  double get_fraction = 0.9;
  int in_flight = 64;
  int connections = 1;
  int threads = 1;
  int key_size = 8;
  int value_size = 256;
  int64_t key_space = 100000;
  int64_t ops = 0;
  double duration_s = 0;
  int64_t warmup = 1000;
  double rate = 0;
  double timeout_s = 5;
  int watchers = 1000;
  int watch_streams = 10;
  int64_t watch_keys = 100;
  uint64_t seed = 1;
  bool json = false;
  std::string log_path;
  std::string label;
};

std::string Key(const Options& options, int64_t index) {
  std::string digits = absl::StrCat(index);
  if (static_cast<int>(digits.size()) >= options.key_size) return digits;
  return std::string(static_cast<size_t>(options.key_size) - digits.size(),
                     '0') +
         digits;
}

int64_t CpuMicros() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000LL +
         usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
}

int64_t WallMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             Clock::now().time_since_epoch())
      .count();
}

std::shared_ptr<grpc::Channel> Connect(const std::string& endpoint,
                                       int connection) {
  grpc::ChannelArguments args;
  // A distinct argument per connection keeps gRPC from sharing one
  // subchannel (one TCP connection) between channels.
  args.SetInt("kvload.connection", connection);
  args.SetMaxReceiveMessageSize(-1);
  return grpc::CreateCustomChannel(endpoint, grpc::InsecureChannelCredentials(),
                                   args);
}

// The endpoint whose member is the leader, by Maintenance.Status.
std::string FindLeader(const std::vector<std::string>& endpoints) {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    for (const std::string& endpoint : endpoints) {
      auto stub = etcdserverpb::Maintenance::NewStub(Connect(endpoint, -1));
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(1));
      etcdserverpb::StatusResponse response;
      if (stub->Status(&context, etcdserverpb::StatusRequest(), &response)
              .ok() &&
          response.leader() != 0 &&
          response.leader() == response.header().member_id()) {
        return endpoint;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return "";
}

// Latencies in microseconds; percentiles by sorting once at the end.
struct Latencies {
  std::vector<uint32_t> micros;
  void Add(int64_t nanos) {
    micros.push_back(
        static_cast<uint32_t>(std::min<int64_t>(nanos / 1000, UINT32_MAX)));
  }
  void Merge(const Latencies& other) {
    micros.insert(micros.end(), other.micros.begin(), other.micros.end());
  }
  double PercentileMs(double p) {
    if (micros.empty()) return 0;
    std::sort(micros.begin(), micros.end());
    size_t index =
        static_cast<size_t>(p * static_cast<double>(micros.size() - 1) + 0.5);
    return micros[std::min(index, micros.size() - 1)] / 1000.0;
  }
};

// What the workers share: the request budget, the warmup still to go, and
// when measuring began (steady clock ns, 0 until the warmup is over) with
// the process CPU at that moment.
struct Shared {
  std::atomic<int64_t> budget{0};
  std::atomic<int64_t> warmup_left{0};
  std::atomic<int64_t> measure_start_ns{0};
  std::atomic<int64_t> cpu_start_us{0};

  void StartMeasuring() {
    cpu_start_us.store(CpuMicros());
    measure_start_ns.store(SteadyNanos());
  }
};

struct RequestRecord {
  int64_t issued_wall_us;
  int64_t latency_us;
  // The gRPC status code (0: the request succeeded) and the endpoint's
  // index.
  int code;
  size_t endpoint;
};

// One completion-queue thread: its share of the requests in flight, over
// its share of the connections.
class Worker {
 public:
  // `stubs` holds the same number of stubs for each of `endpoints`
  // endpoints, in endpoint order.
  Worker(const Options& options, int index,
         std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs,
         size_t endpoints, int in_flight, double rate, Shared* shared)
      : options_(options),
        stubs_(std::move(stubs)),
        stubs_per_endpoint_(std::max<size_t>(stubs_.size() / endpoints, 1)),
        in_flight_(in_flight),
        rate_(rate),
        shared_(shared),
        rng_(options.seed * 7919 + static_cast<uint64_t>(index)),
        value_(static_cast<size_t>(options.value_size), 'v') {}

  // Runs until the budget is used up or --duration has passed since the
  // warmup ended, and every request has completed. Requests completing
  // after the warmup are measured.
  void Run() {
    if (rate_ > 0) {
      next_scheduled_ = Clock::now();
      IssueDue();
    } else {
      for (int i = 0; i < in_flight_; ++i) Issue(Clock::now());
    }
    void* tag = nullptr;
    bool ok = false;
    while (outstanding_ > 0 || alarm_armed_) {
      if (!cq_.Next(&tag, &ok)) break;
      if (tag == &alarm_) {
        alarm_armed_ = false;
        IssueDue();
        continue;
      }
      Complete(static_cast<Call*>(tag));
    }
    cq_.Shutdown();
    while (cq_.Next(&tag, &ok)) {
    }
  }

  Latencies& latencies() { return latencies_; }
  int64_t measured() const { return measured_; }
  // Measured requests that were also issued after the warmup (the puts
  // whose events --op watch awaits).
  int64_t measured_issued() const { return measured_issued_; }
  int64_t errors() const { return errors_; }
  int64_t late() const { return late_; }
  Clock::time_point last_completion() const { return last_completion_; }
  const std::vector<RequestRecord>& records() const { return records_; }
  const std::string& first_error() const { return first_error_; }

 private:
  struct Call {
    grpc::ClientContext context;
    Clock::time_point scheduled;
    int64_t issued_wall_us = 0;
    int64_t issued_ns = 0;
    size_t stub = 0;
    bool is_get = false;
    etcdserverpb::PutResponse put_response;
    etcdserverpb::RangeResponse range_response;
    std::unique_ptr<grpc::ClientAsyncResponseReader<etcdserverpb::PutResponse>>
        put;
    std::unique_ptr<
        grpc::ClientAsyncResponseReader<etcdserverpb::RangeResponse>>
        range;
    grpc::Status status;
  };

  bool Stopping() const {
    if (options_.duration_s <= 0) return shared_->budget.load() <= 0;
    const int64_t since = shared_->measure_start_ns.load();
    return since != 0 && SteadyNanos() - since >=
                             static_cast<int64_t>(options_.duration_s * 1e9);
  }

  // The number of requests left before this one (>= 0), or -1 when there
  // are none left. --op fill uses it as the key.
  int64_t TakeBudget() {
    if (Stopping()) return -1;
    const int64_t left = shared_->budget.fetch_sub(1);
    return left > 0 ? left - 1 : -1;
  }

  // An endpoint that just refused a connection is skipped for a second,
  // as a client's balancer would; with one endpoint there is no choice.
  size_t PickStub() {
    const auto now = Clock::now();
    for (size_t tries = 0; tries < stubs_.size(); ++tries) {
      size_t index = next_stub_++ % stubs_.size();
      if (skip_until_.size() <= index || skip_until_[index] <= now) {
        return index;
      }
    }
    return next_stub_++ % stubs_.size();
  }

  // False when the budget or the duration is used up.
  bool Issue(Clock::time_point scheduled) {
    const int64_t left = TakeBudget();
    if (left < 0) return false;
    auto* call = new Call;
    call->scheduled = scheduled;
    call->issued_wall_us = WallMicros();
    call->issued_ns = SteadyNanos();
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::microseconds(static_cast<int64_t>(
                                   options_.timeout_s * 1e6)));
    call->stub = PickStub();
    bool is_get =
        options_.op == "get" ||
        (options_.op == "mix" && std::uniform_real_distribution<double>(
                                     0, 1)(rng_) < options_.get_fraction);
    const int64_t key_space =
        options_.op == "watch" ? options_.watch_keys : options_.key_space;
    int64_t key_index =
        options_.op == "fill"
            ? left
            : std::uniform_int_distribution<int64_t>(0, key_space - 1)(rng_);
    call->is_get = is_get;
    if (is_get) {
      etcdserverpb::RangeRequest request;
      request.set_key(Key(options_, key_index));
      request.set_serializable(options_.serializable);
      call->range =
          stubs_[call->stub]->AsyncRange(&call->context, request, &cq_);
      call->range->Finish(&call->range_response, &call->status, call);
    } else {
      etcdserverpb::PutRequest request;
      request.set_key(Key(options_, key_index));
      if (options_.op == "watch") {
        // The watchers measure delivery from the time in the value.
        std::string value = value_;
        int64_t now = SteadyNanos();
        std::memcpy(value.data(), &now, std::min(sizeof(now), value.size()));
        request.set_value(std::move(value));
      } else {
        request.set_value(value_);
      }
      call->put = stubs_[call->stub]->AsyncPut(&call->context, request, &cq_);
      call->put->Finish(&call->put_response, &call->status, call);
    }
    ++outstanding_;
    return true;
  }

  void Complete(Call* call) {
    --outstanding_;
    const auto now = Clock::now();
    const int64_t nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              now - call->scheduled)
                              .count();
    const bool ok = call->status.ok();
    if (!ok) {
      if (first_error_.empty()) {
        first_error_ = absl::StrCat(call->status.error_code(), " ",
                                    call->status.error_message());
      }
      // A refused connection (not a server's "etcdserver: ..." answer).
      if (call->status.error_code() == grpc::StatusCode::UNAVAILABLE &&
          call->status.error_message().rfind("etcdserver", 0) != 0) {
        if (skip_until_.size() < stubs_.size()) {
          skip_until_.resize(stubs_.size());
        }
        skip_until_[call->stub] = now + std::chrono::seconds(1);
      }
    }
    if (!options_.log_path.empty()) {
      records_.push_back({call->issued_wall_us, nanos / 1000,
                          static_cast<int>(call->status.error_code()),
                          call->stub / stubs_per_endpoint_});
    }
    if (shared_->warmup_left.load() > 0) {
      if (shared_->warmup_left.fetch_sub(1) == 1) shared_->StartMeasuring();
    } else {
      if (ok) {
        ++measured_;
        latencies_.Add(nanos);
        if (call->issued_ns >= shared_->measure_start_ns.load()) {
          ++measured_issued_;
        }
      } else {
        ++errors_;
      }
      last_completion_ = now;
    }
    delete call;
    if (rate_ <= 0) {
      Issue(Clock::now());
    } else {
      IssueDue();
    }
  }

  // Open loop: the alarm fires at the next scheduled time, unless the
  // requests already due wait for a free slot (Complete issues them).
  void ArmAlarm() {
    if (alarm_armed_ || Stopping()) return;
    alarm_armed_ = true;
    // gRPC's alarms take the system clock.
    alarm_.Set(&cq_,
               std::chrono::system_clock::now() +
                   std::chrono::duration_cast<std::chrono::nanoseconds>(
                       next_scheduled_ - Clock::now()),
               &alarm_);
  }

  // Open loop: issues, in order, every request scheduled up to now while
  // fewer than --in-flight are outstanding. A request that had to wait for a
  // free slot counts as late; its latency still counts from its scheduled
  // time, so the wait is charged to it.
  void IssueDue() {
    const auto now = Clock::now();
    const auto interval =
        std::chrono::nanoseconds(static_cast<int64_t>(1e9 / rate_));
    while (next_scheduled_ <= now && outstanding_ < in_flight_) {
      if (now - next_scheduled_ > std::chrono::milliseconds(1)) ++late_;
      if (!Issue(next_scheduled_)) return;
      next_scheduled_ += interval;
    }
    if (next_scheduled_ > now) ArmAlarm();
  }

  const Options& options_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs_;
  const size_t stubs_per_endpoint_;
  std::vector<Clock::time_point> skip_until_;
  const int in_flight_;
  const double rate_;
  Shared* shared_;
  std::mt19937_64 rng_;
  const std::string value_;
  grpc::CompletionQueue cq_;
  grpc::Alarm alarm_;
  bool alarm_armed_ = false;
  Clock::time_point next_scheduled_;
  Clock::time_point last_completion_;
  int outstanding_ = 0;
  size_t next_stub_ = 0;
  int64_t measured_ = 0;
  int64_t measured_issued_ = 0;
  int64_t errors_ = 0;
  int64_t late_ = 0;
  Latencies latencies_;
  std::vector<RequestRecord> records_;
  std::string first_error_;
};

// Watchers for --op watch: streams of watchers on single keys of the watch
// key space, measuring each event's delivery from the put's issue time
// (which the put carries in its value).
class WatchStream final
    : public grpc::ClientBidiReactor<etcdserverpb::WatchRequest,
                                     etcdserverpb::WatchResponse> {
 public:
  WatchStream(const Options& options, const Shared& shared,
              std::shared_ptr<grpc::Channel> channel, std::vector<int64_t> keys)
      : options_(options),
        shared_(shared),
        stub_(etcdserverpb::Watch::NewStub(std::move(channel))),
        keys_(std::move(keys)) {}

  void Start() {
    stub_->async()->Watch(&context_, this);
    StartRead(&response_);
    WriteNext();
    StartCall();
  }

  void OnWriteDone(bool ok) override {
    if (ok) WriteNext();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    const int64_t now = SteadyNanos();
    const int64_t measure_start = shared_.measure_start_ns.load();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (response_.created()) ++created_;
      for (const auto& event : response_.events()) {
        int64_t sent = 0;
        if (event.kv().value().size() >= sizeof(sent)) {
          std::memcpy(&sent, event.kv().value().data(), sizeof(sent));
        }
        if (measure_start != 0 && sent >= measure_start) {
          ++measured_events_;
          latencies_.Add(now - sent);
        }
      }
    }
    StartRead(&response_);
  }

  void OnDone(const grpc::Status&) override {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    done_cv_.notify_all();
  }

  int64_t created() {
    std::lock_guard<std::mutex> lock(mu_);
    return created_;
  }
  bool done() {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  int64_t measured_events() {
    std::lock_guard<std::mutex> lock(mu_);
    return measured_events_;
  }
  Latencies TakeLatencies() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(latencies_);
  }
  void Stop() {
    context_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [this] { return done_; });
  }

 private:
  void WriteNext() {
    if (next_ >= keys_.size()) return;
    request_.Clear();
    request_.mutable_create_request()->set_key(Key(options_, keys_[next_++]));
    StartWrite(&request_);
  }

  const Options& options_;
  const Shared& shared_;
  std::unique_ptr<etcdserverpb::Watch::Stub> stub_;
  grpc::ClientContext context_;
  std::vector<int64_t> keys_;
  size_t next_ = 0;
  etcdserverpb::WatchRequest request_;
  etcdserverpb::WatchResponse response_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  bool done_ = false;
  int64_t created_ = 0;
  int64_t measured_events_ = 0;
  Latencies latencies_;
};

// Compacts the store at its current revision (physical), as the baseline's
// method does between repetitions.
int Compact(const std::string& endpoint) {
  auto stub = etcdserverpb::KV::NewStub(Connect(endpoint, -1));
  grpc::ClientContext range_context;
  range_context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(10));
  etcdserverpb::RangeRequest range;
  range.set_key("kvload-compact");
  etcdserverpb::RangeResponse range_response;
  grpc::Status status = stub->Range(&range_context, range, &range_response);
  if (!status.ok()) {
    absl::FPrintF(stderr, "kvload: Range on %s failed: %s\n", endpoint,
                  status.error_message());
    return 1;
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  etcdserverpb::CompactionRequest request;
  request.set_revision(range_response.header().revision());
  request.set_physical(true);
  etcdserverpb::CompactionResponse response;
  status = stub->Compact(&context, request, &response);
  if (!status.ok() &&
      status.error_message().find("compacted") == std::string::npos) {
    absl::FPrintF(stderr, "kvload: Compact on %s failed: %s\n", endpoint,
                  status.error_message());
    return 1;
  }
  absl::PrintF("compacted at revision %lld\n",
               static_cast<long long>(range_response.header().revision()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As in driftwood-kv: no lock graph on every gRPC mutex acquisition.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Options options;
  std::string endpoints = "127.0.0.1:2379";
  CLI::App app{
      "kvload: puts, gets and watches against etcd's v3 API (etcd or "
      "driftwood-kv), with many requests in flight; prints ops/s, latency "
      "percentiles, errors and client CPU per op"};
  app.add_option("--endpoints", endpoints,
                 "comma-separated host:port list; requests go round-robin "
                 "over them")
      ->capture_default_str();
  app.add_flag("--leader-only", options.leader_only,
               "send KV requests only to the leader (found by "
               "Maintenance.Status); watch streams still spread over all "
               "endpoints");
  app.add_option("--op", options.op,
                 "put, get, mix (gets and puts), watch (watchers plus puts), "
                 "fill (put every key of the key space once), compact")
      ->check(CLI::IsMember({"put", "get", "mix", "watch", "fill", "compact"}))
      ->capture_default_str();
  app.add_flag("--serializable", options.serializable,
               "serializable gets (default linearizable)");
  app.add_option("--get-fraction", options.get_fraction,
                 "share of gets in --op mix")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  app.add_option("--in-flight", options.in_flight,
                 "requests outstanding at once (closed loop), or at most "
                 "(with --rate)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--connections", options.connections,
                 "HTTP/2 connections per endpoint")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--threads", options.threads, "completion-queue threads")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--key-size", options.key_size,
                 "key length (zero-padded decimal)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  app.add_option("--value-size", options.value_size, "value length in bytes")
      ->check(CLI::Range(0, 1 << 24))
      ->capture_default_str();
  app.add_option("--key-space", options.key_space,
                 "keys are drawn uniformly from this many")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--ops", options.ops,
                 "measured requests (after the warmup); default 100000 "
                 "unless --duration is given")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--duration", options.duration_s,
                 "measure for this many seconds (after the warmup)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--warmup", options.warmup, "unmeasured requests first")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--rate", options.rate,
                 "open loop: requests per second (0: closed loop); a "
                 "request issued over 1 ms after its scheduled time (waiting "
                 "for a free --in-flight slot) counts as late, and its "
                 "latency includes the wait")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--timeout", options.timeout_s, "per-request deadline, s")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--watchers", options.watchers, "watchers for --op watch")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  app.add_option("--watch-streams", options.watch_streams,
                 "gRPC watch streams the watchers are spread over")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--watch-keys", options.watch_keys,
                 "--op watch puts and watches keys 0..N-1 (watchers per key "
                 "= watchers / N)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  app.add_option("--seed", options.seed, "random seed")->capture_default_str();
  app.add_flag("--json", options.json, "print the result as one JSON object");
  app.add_option("--log", options.log_path,
                 "write 'issued_unix_us latency_us ok grpc_code "
                 "endpoint_index' per request to FILE");
  app.add_option("--label", options.label, "a name printed with the result");
  CLI11_PARSE(app, argc, argv);

  options.endpoints = absl::StrSplit(endpoints, ',', absl::SkipEmpty());
  if (options.endpoints.empty()) {
    absl::FPrintF(stderr, "kvload: --endpoints is empty\n");
    return 2;
  }
  if (options.op == "compact") return Compact(options.endpoints.front());
  if (options.op == "fill") {
    options.ops = options.key_space;
    options.warmup = 0;
    options.duration_s = 0;
  } else if (options.ops == 0 && options.duration_s == 0) {
    options.ops = 100000;
  }
  if (options.op == "watch" && options.watchers < options.watch_keys) {
    options.watch_keys = options.watchers;
  }

  std::vector<std::string> kv_endpoints = options.endpoints;
  if (options.leader_only) {
    std::string leader = FindLeader(options.endpoints);
    if (leader.empty()) {
      absl::FPrintF(stderr, "kvload: no leader among %s within 10 s\n",
                    endpoints);
      return 1;
    }
    kv_endpoints = {leader};
  }

  Shared shared;
  // Watchers first, all created before any put.
  std::vector<std::unique_ptr<WatchStream>> streams;
  if (options.op == "watch") {
    const int stream_count = std::min(options.watch_streams, options.watchers);
    std::vector<std::vector<int64_t>> keys(static_cast<size_t>(stream_count));
    for (int w = 0; w < options.watchers; ++w) {
      keys[static_cast<size_t>(w % stream_count)].push_back(w %
                                                            options.watch_keys);
    }
    for (size_t s = 0; s < keys.size(); ++s) {
      const std::string& endpoint =
          options.endpoints[s % options.endpoints.size()];
      streams.push_back(std::make_unique<WatchStream>(
          options, shared, Connect(endpoint, 1000 + static_cast<int>(s)),
          std::move(keys[s])));
      streams.back()->Start();
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    int64_t created = 0;
    while (Clock::now() < deadline) {
      created = 0;
      for (auto& stream : streams) created += stream->created();
      if (created >= options.watchers) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (created < options.watchers) {
      absl::FPrintF(stderr,
                    "kvload: only %lld of %d watchers created in 30 s\n",
                    static_cast<long long>(created), options.watchers);
      for (auto& stream : streams) stream->Stop();
      return 1;
    }
  }

  const int threads = std::min(options.threads, options.in_flight);
  shared.budget.store(options.ops > 0 ? options.ops + options.warmup
                                      : INT64_MAX);
  shared.warmup_left.store(options.warmup);
  if (options.warmup == 0) shared.StartMeasuring();
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < threads; ++t) {
    std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> stubs;
    for (const std::string& endpoint : kv_endpoints) {
      if (options.connections >= threads) {
        for (int c = t; c < options.connections; c += threads) {
          stubs.push_back(etcdserverpb::KV::NewStub(Connect(endpoint, c)));
        }
      } else {
        stubs.push_back(etcdserverpb::KV::NewStub(
            Connect(endpoint, t % options.connections)));
      }
    }
    const int share =
        options.in_flight / threads + (t < options.in_flight % threads ? 1 : 0);
    workers.push_back(std::make_unique<Worker>(
        options, t, std::move(stubs), kv_endpoints.size(), share,
        options.rate / threads, &shared));
  }

  std::vector<std::thread> running;
  for (auto& worker : workers) {
    running.emplace_back([w = worker.get()] { w->Run(); });
  }
  for (auto& thread : running) thread.join();
  const int64_t cpu_used = CpuMicros() - shared.cpu_start_us.load();

  Latencies latencies;
  int64_t measured = 0, measured_issued = 0, errors = 0, late = 0;
  auto last = Clock::time_point::min();
  std::string first_error;
  for (auto& worker : workers) {
    latencies.Merge(worker->latencies());
    measured += worker->measured();
    measured_issued += worker->measured_issued();
    errors += worker->errors();
    late += worker->late();
    last = std::max(last, worker->last_completion());
    if (first_error.empty()) first_error = worker->first_error();
  }
  const int64_t measure_start_ns = shared.measure_start_ns.load();
  const double seconds =
      measure_start_ns == 0
          ? 0
          : std::max(1e-9,
                     static_cast<double>(
                         std::chrono::duration_cast<std::chrono::nanoseconds>(
                             last.time_since_epoch())
                             .count() -
                         measure_start_ns) /
                         1e9);
  const double cpu_us_per_op = measured + errors > 0 && measure_start_ns != 0
                                   ? static_cast<double>(cpu_used) /
                                         static_cast<double>(measured + errors)
                                   : 0;

  // Events of the measured puts still on their way are awaited for up to
  // 10 s; any missing after that are reported as missing.
  Latencies event_latencies;
  int64_t events = 0;
  int64_t expected_events = 0;
  if (!streams.empty()) {
    expected_events = measured_issued * (options.watchers / options.watch_keys);
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < deadline) {
      events = 0;
      for (auto& stream : streams) events += stream->measured_events();
      if (events >= expected_events) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    for (auto& stream : streams) {
      event_latencies.Merge(stream->TakeLatencies());
      stream->Stop();
    }
  }

  if (!options.log_path.empty()) {
    std::ofstream log(options.log_path);
    for (auto& worker : workers) {
      for (const RequestRecord& record : worker->records()) {
        log << record.issued_wall_us << ' ' << record.latency_us << ' '
            << (record.code == 0 ? 1 : 0) << ' ' << record.code << ' '
            << record.endpoint << '\n';
      }
    }
    if (!log) {
      absl::FPrintF(stderr, "kvload: cannot write %s\n", options.log_path);
      return 1;
    }
  }

  const double ops_per_s =
      seconds > 0 ? static_cast<double>(measured) / seconds : 0;
  const double events_per_s =
      seconds > 0 ? static_cast<double>(events) / seconds : 0;
  const double p50 = latencies.PercentileMs(0.50);
  const double p90 = latencies.PercentileMs(0.90);
  const double p99 = latencies.PercentileMs(0.99);
  const double p999 = latencies.PercentileMs(0.999);
  const double max = latencies.PercentileMs(1.0);
  if (options.json) {
    std::string extra;
    if (!streams.empty()) {
      extra = absl::StrFormat(
          ",\"events\":%d,\"expected_events\":%d,\"events_per_s\":%.1f,\"event_"
          "p50_ms\":%.3f,"
          "\"event_p99_ms\":%.3f,\"event_max_ms\":%.3f",
          events, expected_events, events_per_s,
          event_latencies.PercentileMs(0.5), event_latencies.PercentileMs(0.99),
          event_latencies.PercentileMs(1));
    }
    absl::PrintF(
        "{\"label\":\"%s\",\"op\":\"%s\",\"in_flight\":%d,\"ops\":%d,"
        "\"seconds\":%.3f,\"ops_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
        "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"errors\":%d,"
        "\"late\":%d,\"requests\":%d,\"client_cpu_us_per_op\":%.1f,\"target\":"
        "\"%s\"%s}\n",
        options.label, options.op, options.in_flight, measured, seconds,
        ops_per_s, p50, p90, p99, p999, max, errors, late,
        measured + errors + options.warmup, cpu_us_per_op,
        absl::StrJoin(kv_endpoints, ","), extra);
  } else {
    absl::PrintF("kvload %s%s: %s, %d in flight, %d connection(s) to %s%s\n",
                 options.label, options.label.empty() ? "" : " ", options.op,
                 options.in_flight, options.connections,
                 absl::StrJoin(kv_endpoints, ","),
                 options.leader_only ? " (leader)" : "");
    absl::PrintF(
        "  %lld ops in %.2f s: %.0f ops/s  p50 %.3f  p90 %.3f  p99 %.3f  "
        "p99.9 %.3f  max %.3f ms  errors %lld  client CPU %.1f us/op\n",
        static_cast<long long>(measured), seconds, ops_per_s, p50, p90, p99,
        p999, max, static_cast<long long>(errors), cpu_us_per_op);
    if (late > 0) {
      absl::PrintF(
          "  %lld requests issued over 1 ms late (--in-flight was "
          "outstanding, or the client fell behind)\n",
          static_cast<long long>(late));
    }
    if (!streams.empty()) {
      absl::PrintF(
          "  watch: %d watchers on %lld keys, %lld of %lld events (%.0f/s), "
          "delivery p50 %.3f  p99 %.3f  max %.3f ms\n",
          options.watchers, static_cast<long long>(options.watch_keys),
          static_cast<long long>(events),
          static_cast<long long>(expected_events), events_per_s,
          event_latencies.PercentileMs(0.5), event_latencies.PercentileMs(0.99),
          event_latencies.PercentileMs(1));
    }
  }
  if (errors > 0 && !first_error.empty()) {
    absl::FPrintF(stderr, "kvload: %lld errors; the first: %s\n",
                  static_cast<long long>(errors), first_error);
  }
  return measured > 0 ? 0 : 1;
}
