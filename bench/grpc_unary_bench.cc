// grpc_unary_bench: the server CPU that gRPC alone spends on one etcd Put,
// by server threading model. The server answers KV.Put at once, with no Raft
// and no state machine behind it; bench/kvload drives it over loopback, as
// compare-etcd drives driftwood-kv. Each run forks a fresh server process, so
// no gRPC thread of one model lingers into the next.
//
// Models:
//   callback          gRPC's callback API, answered in the handler.
//   callback-handoff  the callback API, answered by another thread of ours
//                     (driftwood-kv's shape: the apply thread finishes calls).
//   async             the asynchronous API on one completion-queue thread of
//                     ours, answered on it.
//   async-handoff     the asynchronous API on one completion-queue thread,
//                     answered by another thread of ours.
//   callback-alarm    the callback API; another thread of ours hands each
//                     batch of answers back to a gRPC thread (a grpc::Alarm
//                     due at once), which finishes the calls.
//   async-mixed,      async and async-handoff in a server that also has a
//   async-handoff-mixed  callback service (idle), as a server converted one
//                     service at a time would: gRPC's callback threads
//                     then poll beside the queue's thread.
//   async-alarm       the asynchronous API on one completion-queue thread;
//                     another thread of ours posts each batch of answers to
//                     the queue (a grpc::Alarm due at once) and the queue's
//                     thread finishes the calls.
//
// It prints calls/s, the server's CPU and context switches per call (user +
// system time of the server process over the measured run, which includes
// the warmup's share), and kvload's own figures. Figures only; nothing is
// asserted.
//
//   grpc_unary_bench --in-flight 64 --duration 5 --repetitions 3
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "examples/kv/proto/etcd_service.grpc.pb.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"

namespace {

constexpr const char* kModels[] = {"callback",       "callback-handoff",
                                   "callback-alarm", "async",
                                   "async-handoff",  "async-alarm",
                                   "async-mixed",    "async-handoff-mixed"};

struct Options {
  std::vector<std::string> models = {std::begin(kModels), std::end(kModels)};
  int in_flight = 64;
  double duration = 5;
  int repetitions = 3;
  int value_size = 256;
  std::string kvload;
};

// Another thread of ours that runs answers, in batches, as driftwood-kv's
// apply thread finishes the calls of each applied batch.
class Responder {
 public:
  Responder() : thread_([this] { Run(); }) {}
  ~Responder() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    ready_.notify_one();
    thread_.join();
  }
  void Push(std::function<void()> answer) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(std::move(answer));
    }
    ready_.notify_one();
  }

 private:
  void Run() {
    std::deque<std::function<void()>> batch;
    while (true) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        ready_.wait(lock, [this] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) return;
        batch.swap(queue_);
      }
      for (auto& answer : batch) answer();
      batch.clear();
    }
  }

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool closed_ = false;                      // guarded by mu_
  std::thread thread_;
};

// Answers a Responder hands back to gRPC in batches: the first answer of a
// batch sets an Alarm due at once; the batch runs where the Alarm fires (a
// gRPC callback thread, or the completion queue's thread).
class HandBack {
 public:
  // Callback models: the Alarm runs the batch on a gRPC thread.
  HandBack() = default;
  // Async models: the Alarm's tag comes out of `cq`; its thread calls Run.
  HandBack(grpc::CompletionQueue* cq, void* tag) : cq_(cq), tag_(tag) {}

  void Post(std::function<void()> answer) {
    bool arm = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back(std::move(answer));
      arm = !armed_;
      armed_ = true;
    }
    if (!arm) return;
    const gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    if (cq_ != nullptr) {
      alarm_.Set(cq_, now, tag_);
    } else {
      alarm_.Set(now, [this](bool) { Run(); });
    }
  }

  void Run() {
    std::deque<std::function<void()>> batch;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(pending_);
      armed_ = false;
    }
    for (auto& answer : batch) answer();
  }

 private:
  grpc::CompletionQueue* cq_ = nullptr;
  void* tag_ = nullptr;
  grpc::Alarm alarm_;
  std::mutex mu_;
  std::deque<std::function<void()>> pending_;  // guarded by mu_
  bool armed_ = false;                         // guarded by mu_
};

void FillHeader(etcdserverpb::PutResponse* response) {
  etcdserverpb::ResponseHeader* header = response->mutable_header();
  header->set_cluster_id(1);
  header->set_member_id(1);
  header->set_revision(1);
  header->set_raft_term(1);
}

// Runs `finish` where the model says: here (no responder), on the
// responder's thread, or handed back from there to gRPC.
template <typename Finish>
void Answer(Responder* responder, HandBack* hand_back, Finish finish) {
  if (responder == nullptr) {
    finish();
  } else if (hand_back == nullptr) {
    responder->Push(std::move(finish));
  } else {
    responder->Push(
        [hand_back, finish = std::move(finish)] { hand_back->Post(finish); });
  }
}

class CallbackKv final : public etcdserverpb::KV::CallbackService {
 public:
  CallbackKv(Responder* responder, HandBack* hand_back)
      : responder_(responder), hand_back_(hand_back) {}

  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* context,
                                const etcdserverpb::PutRequest* /*request*/,
                                etcdserverpb::PutResponse* response) override {
    FillHeader(response);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    Answer(responder_, hand_back_,
           [reactor] { reactor->Finish(grpc::Status::OK); });
    return reactor;
  }

 private:
  Responder* responder_;
  HandBack* hand_back_;
};

// The asynchronous API on one completion queue and one thread.
class AsyncKv {
 public:
  AsyncKv(etcdserverpb::KV::AsyncService& service,
          grpc::ServerCompletionQueue& cq, Responder* responder, bool hand_back)
      : service_(service), cq_(cq), responder_(responder) {
    if (hand_back) hand_back_.emplace(&cq_, &hand_back_tag_);
  }

  // Serves until the queue shuts down.
  void Run() {
    Arm();
    void* tag = nullptr;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
      if (tag == &hand_back_tag_) {
        hand_back_->Run();
        continue;
      }
      auto* call = static_cast<Call*>(tag);
      if (call->answered || !ok) {
        delete call;
        continue;
      }
      Arm();
      FillHeader(&call->response);
      call->answered = true;
      Answer(responder_, hand_back_ ? &*hand_back_ : nullptr, [call] {
        call->writer.Finish(call->response, grpc::Status::OK, call);
      });
    }
  }

 private:
  struct Call {
    grpc::ServerContext context;
    etcdserverpb::PutRequest request;
    etcdserverpb::PutResponse response;
    grpc::ServerAsyncResponseWriter<etcdserverpb::PutResponse> writer{&context};
    bool answered = false;
  };

  void Arm() {
    auto* call = new Call;
    service_.RequestPut(&call->context, &call->request, &call->writer, &cq_,
                        &cq_, call);
  }

  etcdserverpb::KV::AsyncService& service_;
  grpc::ServerCompletionQueue& cq_;
  Responder* responder_;
  char hand_back_tag_ = 0;
  std::optional<HandBack> hand_back_;
};

double Seconds(const timeval& t) {
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
}

// Runs kvload against `port`; returns its JSON line ("" on failure).
std::string RunKvload(const Options& options, int port) {
  const std::string command = absl::StrFormat(
      "'%s' --endpoints 127.0.0.1:%d --op put --json --in-flight %d "
      "--duration %g --value-size %d",
      options.kvload, port, options.in_flight, options.duration,
      options.value_size);
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string output;
  char buffer[4096];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) return "";
  std::vector<std::string> lines =
      absl::StrSplit(output, '\n', absl::SkipEmpty());
  return lines.empty() ? "" : lines.back();
}

// A number field of kvload's flat JSON line.
double Field(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  const size_t at = json.find(key);
  if (at == std::string::npos) return 0;
  const size_t end = json.find_first_of(",}", at + key.size());
  double value = 0;
  if (!absl::SimpleAtod(json.substr(at + key.size(), end - at - key.size()),
                        &value)) {
    return 0;
  }
  return value;
}

// One run in this (forked) process: serve, drive, print one result line.
int ServeOnce(const Options& options, const std::string& model) {
  const bool mixed = model.ends_with("-mixed");
  const bool alarm = model.ends_with("-alarm");
  const bool handoff = alarm || model.find("-handoff") != std::string::npos;
  const bool async = model.starts_with("async");
  std::unique_ptr<Responder> responder;
  if (handoff) responder = std::make_unique<Responder>();
  std::optional<HandBack> callback_hand_back;
  if (alarm && !async) callback_hand_back.emplace();
  CallbackKv callback_kv(responder.get(),
                         callback_hand_back ? &*callback_hand_back : nullptr);
  etcdserverpb::KV::AsyncService async_service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  etcdserverpb::Maintenance::CallbackService idle_callback_service;
  if (async) {
    builder.RegisterService(&async_service);
    cq = builder.AddCompletionQueue();
    if (mixed) builder.RegisterService(&idle_callback_service);
  } else {
    builder.RegisterService(&callback_kv);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    absl::FPrintF(stderr, "grpc_unary_bench: cannot listen on 127.0.0.1\n");
    return 1;
  }
  std::thread cq_thread;
  std::unique_ptr<AsyncKv> async_kv;
  if (async) {
    async_kv =
        std::make_unique<AsyncKv>(async_service, *cq, responder.get(), alarm);
    cq_thread = std::thread([&] { async_kv->Run(); });
  }

  rusage before{};
  getrusage(RUSAGE_SELF, &before);
  const std::string json = RunKvload(options, port);
  rusage after{};
  getrusage(RUSAGE_SELF, &after);

  server->Shutdown();
  if (async) {
    cq->Shutdown();
    cq_thread.join();
  }
  responder.reset();
  if (json.empty()) {
    absl::FPrintF(stderr, "grpc_unary_bench: kvload failed (%s)\n",
                  options.kvload);
    return 1;
  }
  const double requests = Field(json, "requests");
  if (requests <= 0) return 1;
  const double cpu = Seconds(after.ru_utime) - Seconds(before.ru_utime) +
                     Seconds(after.ru_stime) - Seconds(before.ru_stime);
  const double switches = static_cast<double>(
      after.ru_nvcsw - before.ru_nvcsw + after.ru_nivcsw - before.ru_nivcsw);
  absl::PrintF("%s %.1f %.2f %.3f %.2f %.1f\n", model, Field(json, "ops_per_s"),
               cpu * 1e6 / requests, switches / requests, Field(json, "p99_ms"),
               Field(json, "client_cpu_us_per_op"));
  return 0;
}

struct Result {
  double calls_per_s = 0;
  double server_us = 0;
  double switches = 0;
  double p99_ms = 0;
  double client_us = 0;
};

template <typename F>
double Median(std::vector<Result> results, F field) {
  std::vector<double> values;
  for (const Result& r : results) values.push_back(field(r));
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app(
      "grpc_unary_bench: server CPU per etcd Put spent by gRPC alone, by "
      "server threading model (an answer-at-once KV.Put driven by kvload)");
  app.add_option("--models", options.models, "models to run")
      ->check(CLI::IsMember(
          std::vector<std::string>(std::begin(kModels), std::end(kModels))));
  app.add_option("--in-flight", options.in_flight,
                 "kvload's requests in flight")
      ->check(CLI::PositiveNumber);
  app.add_option("--duration", options.duration, "seconds per run")
      ->check(CLI::PositiveNumber);
  app.add_option("--repetitions", options.repetitions,
                 "runs per model, interleaved; the median is printed")
      ->check(CLI::PositiveNumber);
  app.add_option("--value-size", options.value_size, "bytes per put value")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--kvload", options.kvload,
                 "the kvload binary (default: the one beside this binary)");
  CLI11_PARSE(app, argc, argv);
  if (options.kvload.empty()) {
    options.kvload =
        (std::filesystem::path(argv[0]).parent_path() / "kvload").string();
  }
  if (!std::filesystem::exists(options.kvload)) {
    absl::FPrintF(stderr,
                  "grpc_unary_bench: no kvload at %s (build bench/kvload, or "
                  "pass --kvload)\n",
                  options.kvload);
    return 2;
  }

  std::vector<std::vector<Result>> results(options.models.size());
  for (int repetition = 0; repetition < options.repetitions; ++repetition) {
    for (size_t m = 0; m < options.models.size(); ++m) {
      int fds[2];
      if (pipe(fds) != 0) return 1;
      std::fflush(stdout);
      const pid_t pid = fork();
      if (pid < 0) return 1;
      if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[1]);
        const int rc = ServeOnce(options, options.models[m]);
        std::fflush(stdout);
        _exit(rc);
      }
      close(fds[1]);
      std::string line;
      char buffer[512];
      ssize_t n = 0;
      while ((n = read(fds[0], buffer, sizeof(buffer))) > 0) {
        line.append(buffer, static_cast<size_t>(n));
      }
      close(fds[0]);
      int status = 0;
      waitpid(pid, &status, 0);
      std::vector<std::string> fields =
          absl::StrSplit(line, absl::ByAnyChar(" \n"), absl::SkipEmpty());
      Result r;
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
          fields.size() != 6 || !absl::SimpleAtod(fields[1], &r.calls_per_s) ||
          !absl::SimpleAtod(fields[2], &r.server_us) ||
          !absl::SimpleAtod(fields[3], &r.switches) ||
          !absl::SimpleAtod(fields[4], &r.p99_ms) ||
          !absl::SimpleAtod(fields[5], &r.client_us)) {
        absl::FPrintF(stderr, "grpc_unary_bench: the %s run failed\n",
                      options.models[m]);
        return 1;
      }
      absl::FPrintF(stderr, "  %s #%d: %.0f calls/s, %.1f us server CPU\n",
                    options.models[m], repetition + 1, r.calls_per_s,
                    r.server_us);
      results[m].push_back(r);
    }
  }
  absl::PrintF(
      "grpc_unary_bench: %d in flight, %g s x %d, %d-byte values (medians)\n",
      options.in_flight, options.duration, options.repetitions,
      options.value_size);
  absl::PrintF("%-18s %10s %18s %16s %8s %14s\n", "model", "calls/s",
               "server CPU us/call", "switches/call", "p99 ms",
               "client us/call");
  for (size_t m = 0; m < options.models.size(); ++m) {
    absl::PrintF(
        "%-18s %10.0f %18.1f %16.2f %8.2f %14.1f\n", options.models[m],
        Median(results[m], [](const Result& r) { return r.calls_per_s; }),
        Median(results[m], [](const Result& r) { return r.server_us; }),
        Median(results[m], [](const Result& r) { return r.switches; }),
        Median(results[m], [](const Result& r) { return r.p99_ms; }),
        Median(results[m], [](const Result& r) { return r.client_us; }));
  }
  return 0;
}
