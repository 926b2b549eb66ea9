// replica_scenario: runs one ReplicaState crash-test scenario in a fresh
// process and dies at a named crash point (exit 77), for
// replica_crash_test.cc.
//
//   replica_scenario --scenario create|install --kind 0..3 --root DIR
//                    [--sent DIR] [--crash POINT --occurrence N]
//                    [--snapshot-every N]
//
// Exit codes: 0 the scenario finished, 77 it crashed at the point, 1 it
// failed (the reason on stderr), 2 bad arguments.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tests/raft/server/replica_scenario.h"

namespace {

int Usage(const char* why) {
  std::fprintf(stderr,
               "replica_scenario: %s\n"
               "usage: replica_scenario --scenario create|install --kind 0..3 "
               "--root DIR [--sent DIR] [--crash POINT --occurrence N] "
               "[--snapshot-every N]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace driftwood::raft;
  std::string scenario_name, root, sent, crash;
  int kind = -1;
  int occurrence = 1;
  uint64_t snapshot_every = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help") {
      Usage("runs one crash-test scenario");
      return 0;
    }
    if (i + 1 >= argc) return Usage(("missing value for " + flag).c_str());
    const char* value = argv[++i];
    if (flag == "--scenario") {
      scenario_name = value;
    } else if (flag == "--kind") {
      kind = std::atoi(value);
    } else if (flag == "--root") {
      root = value;
    } else if (flag == "--sent") {
      sent = value;
    } else if (flag == "--crash") {
      crash = value;
    } else if (flag == "--occurrence") {
      occurrence = std::atoi(value);
    } else if (flag == "--snapshot-every") {
      snapshot_every = std::strtoull(value, nullptr, 10);
    } else {
      return Usage(("unknown flag " + flag).c_str());
    }
  }
  if (kind < 0 || kind > 3) return Usage("--kind must be 0..3");
  if (root.empty()) return Usage("--root is required");
  scenario::Node node;
  node.root = root;
  node.kind = static_cast<scenario::Kind>(kind);
  if (snapshot_every != 0) node.policy.snapshot_every_entries = snapshot_every;
  const CrashPoint crash_point =
      crash.empty() ? CrashPoint() : scenario::CrashAt(crash, occurrence);
  absl::Status status;
  if (scenario_name == "create") {
    status = scenario::CreationScenario(node, crash_point);
  } else if (scenario_name == "install") {
    if (sent.empty()) return Usage("install needs --sent");
    status = scenario::InstallScenario(node, sent, crash_point);
  } else {
    return Usage("--scenario must be create or install");
  }
  if (!status.ok()) {
    std::fprintf(stderr, "replica_scenario: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
