// Driftwood: helpers shared by the key-value state machine tests.
#ifndef DRIFTWOOD_TESTS_STATEMACHINE_KV_TEST_UTIL_H_
#define DRIFTWOOD_TESTS_STATEMACHINE_KV_TEST_UTIL_H_

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "raft/state_machine.h"
#include "statemachine/kv_command.h"

namespace driftwood::statemachine::testing {

// Calls Sync() until it reports `index` durable (a state machine may make its
// state durable in the background), within a generous deadline; returns the
// last answer, or its error.
inline absl::StatusOr<raft::LogIndex> SyncThrough(raft::StateMachine& machine,
                                                  raft::LogIndex index) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (true) {
    absl::StatusOr<raft::LogIndex> durable = machine.Sync();
    if (!durable.ok() || *durable >= index ||
        std::chrono::steady_clock::now() > deadline) {
      return durable;
    }
    std::this_thread::yield();
  }
}

inline raft::Configuration Voters(std::vector<uint64_t> ids) {
  raft::Configuration configuration;
  for (uint64_t id : ids) configuration.voters.emplace_back(id);
  return configuration;
}

inline raft::Entry CommandEntry(uint64_t index, uint64_t term,
                                const KvCommand& command) {
  return raft::Entry{raft::Term(term), raft::LogIndex(index),
                     raft::EntryType::kNormal, EncodeCommand(command)};
}

inline raft::Entry RawEntry(uint64_t index, uint64_t term, std::string data) {
  return raft::Entry{raft::Term(term), raft::LogIndex(index),
                     raft::EntryType::kNormal, std::move(data)};
}

inline raft::Entry NoOpEntry(uint64_t index, uint64_t term) {
  return raft::Entry{raft::Term(term), raft::LogIndex(index),
                     raft::EntryType::kNoOp, raft::EntryData()};
}

// Applies `entries` with `configuration` and returns the raw responses.
inline std::vector<std::string> ApplyRaw(
    raft::StateMachine& machine, const std::vector<raft::Entry>& entries,
    const raft::Configuration& configuration = Voters({1, 2, 3})) {
  auto responses = machine.Apply(raft::ApplyBatch{entries, configuration});
  INFO("Apply: " << responses.status().ToString());
  REQUIRE(responses.ok());
  REQUIRE(responses->size() == entries.size());
  return *responses;
}

inline KvResponse Decode(const std::string& bytes) {
  auto response = DecodeResponse(bytes);
  INFO("DecodeResponse: " << response.status().ToString());
  REQUIRE(response.ok());
  return *response;
}

// Applies commands one entry each, in one batch, from the next index after
// applied() with `term`; returns the decoded responses.
inline std::vector<KvResponse> ApplyCommands(
    raft::StateMachine& machine, const std::vector<KvCommand>& commands,
    uint64_t term = 1,
    const raft::Configuration& configuration = Voters({1, 2, 3})) {
  std::vector<raft::Entry> entries;
  uint64_t index = machine.applied().index.value();
  for (const KvCommand& command : commands) {
    entries.push_back(CommandEntry(++index, term, command));
  }
  std::vector<KvResponse> decoded;
  for (const std::string& bytes : ApplyRaw(machine, entries, configuration)) {
    decoded.push_back(Decode(bytes));
  }
  return decoded;
}

inline std::optional<std::string> Get(const raft::StateMachine& machine,
                                      const std::string& key) {
  auto answer = machine.Query(EncodeQuery(GetQuery{key}));
  INFO("Query Get " << key << ": " << answer.status().ToString());
  REQUIRE(answer.ok());
  auto value = DecodeGetResult(*answer);
  REQUIRE(value.ok());
  return *value;
}

inline uint64_t Count(const raft::StateMachine& machine) {
  auto answer = machine.Query(EncodeQuery(CountQuery{}));
  INFO("Query Count: " << answer.status().ToString());
  REQUIRE(answer.ok());
  auto count = DecodeCountResult(*answer);
  REQUIRE(count.ok());
  return *count;
}

// Captures `machine` and writes the snapshot into `dir` (created empty).
inline raft::SnapshotMeta CaptureTo(raft::StateMachine& machine,
                                    const std::filesystem::path& dir) {
  auto snapshot = machine.Capture();
  INFO("Capture: " << snapshot.status().ToString());
  REQUIRE(snapshot.ok());
  std::filesystem::create_directories(dir);
  absl::Status written = (*snapshot)->WriteTo(dir);
  INFO("WriteTo: " << written.ToString());
  REQUIRE(written.ok());
  return (*snapshot)->meta();
}

}  // namespace driftwood::statemachine::testing

#endif  // DRIFTWOOD_TESTS_STATEMACHINE_KV_TEST_UTIL_H_
