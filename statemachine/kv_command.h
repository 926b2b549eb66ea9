// Driftwood: the commands, queries and responses of the reference key-value
// state machines (MemoryKvStateMachine, RocksDbKvStateMachine), their binary
// encoding, and the one function that executes a command, so that both state
// machines answer every command identically.
//
// Encoding (our own; every integer is a LEB128 varint unless noted, every
// string is a varint length followed by the bytes):
//
//   command  := u8 op, fields
//     Put            op 1: key, value
//     Delete         op 2: key
//     CompareAndSwap op 3: key, u8 has_expected (0 or 1), [expected], new_value
//     Increment      op 4: key, zigzag varint delta
//   response := u8 code, then
//     code 0 (ok):   u8 flags (1 existed, 2 swapped, 4 has value, 8 has
//                    counter), [value], [zigzag varint counter]
//     code != 0:     message (a string)
//   query    := u8 op, fields
//     Get            op 1: key
//     Count          op 2: nothing
//   Get result   := u8 found (0 or 1), [value]
//   Count result := varint number of keys
//
// Nothing may follow the last field. Decoding malformed bytes returns
// InvalidArgument naming what is wrong and where.
//
// Counters (Increment) are stored as the canonical decimal text of a signed
// 64-bit integer ("0", "-12", never "+1" or "007"), so that Get shows them.
//
// Pure functions, thread-safe.
#ifndef DRIFTWOOD_STATEMACHINE_KV_COMMAND_H_
#define DRIFTWOOD_STATEMACHINE_KV_COMMAND_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace driftwood::statemachine {

// Sets `key` to `value`. Response: existed = the key had a value before.
struct PutCommand {
  std::string key;
  std::string value;
  bool operator==(const PutCommand&) const = default;
};

// Removes `key`. Response: existed = the key had a value before.
struct DeleteCommand {
  std::string key;
  bool operator==(const DeleteCommand&) const = default;
};

// Sets `key` to `new_value` when its current value equals `expected`
// (std::nullopt: when the key is absent). Response: swapped = whether it did;
// value = the key's value after the command (absent when the key is absent).
struct CompareAndSwapCommand {
  std::string key;
  std::optional<std::string> expected;
  std::string new_value;
  bool operator==(const CompareAndSwapCommand&) const = default;
};

// Adds `delta` to the counter at `key` (an absent key counts as 0).
// Response: counter = the new value. Error responses, leaving the key
// unchanged: kNotACounter when the value is not canonical decimal int64 text,
// kOverflow when the sum does not fit in int64.
struct IncrementCommand {
  std::string key;
  int64_t delta = 0;
  bool operator==(const IncrementCommand&) const = default;
};

using KvCommand = std::variant<PutCommand, DeleteCommand, CompareAndSwapCommand,
                               IncrementCommand>;

std::string EncodeCommand(const KvCommand& command);
// InvalidArgument naming the problem (unknown op, truncated field, trailing
// bytes) and its byte offset.
absl::StatusOr<KvCommand> DecodeCommand(std::string_view bytes);

enum class KvResponseCode : uint8_t {
  kOk = 0,
  // The entry's bytes did not decode as a command; it was applied as a no-op.
  kMalformedCommand = 1,
  kNotACounter = 2,
  kOverflow = 3,
};

// The reply to one applied command. Which fields are meaningful depends on
// the command (see each command above); the others keep their defaults.
struct KvResponse {
  KvResponseCode code = KvResponseCode::kOk;
  // What went wrong, when code != kOk.
  std::string error;
  bool existed = false;
  bool swapped = false;
  std::optional<std::string> value;
  std::optional<int64_t> counter;

  bool ok() const { return code == KvResponseCode::kOk; }
  bool operator==(const KvResponse&) const = default;
};

std::string EncodeResponse(const KvResponse& response);
absl::StatusOr<KvResponse> DecodeResponse(std::string_view bytes);

// Queries: read-only, answered by StateMachine::Query.
struct GetQuery {
  std::string key;
  bool operator==(const GetQuery&) const = default;
};
struct CountQuery {
  bool operator==(const CountQuery&) const = default;
};
using KvQuery = std::variant<GetQuery, CountQuery>;

std::string EncodeQuery(const KvQuery& query);
absl::StatusOr<KvQuery> DecodeQuery(std::string_view bytes);

// Get result: the value, std::nullopt when the key is absent.
std::string EncodeGetResult(const std::optional<std::string>& value);
absl::StatusOr<std::optional<std::string>> DecodeGetResult(
    std::string_view bytes);
// Count result: the number of keys.
std::string EncodeCountResult(uint64_t count);
absl::StatusOr<uint64_t> DecodeCountResult(std::string_view bytes);

// The canonical decimal text of a counter, and its parse (std::nullopt when
// `text` is not canonical decimal int64 text).
std::string FormatCounter(int64_t value);
std::optional<int64_t> ParseCounter(std::string_view text);

// The keys a command reads and writes, as a state machine provides them while
// it applies a batch. Reads must see the writes made earlier in the same
// batch. A non-OK status is a storage failure (fatal to the state machine),
// never an application-level outcome.
class KvStore {
 public:
  virtual ~KvStore() = default;
  virtual absl::StatusOr<std::optional<std::string>> Get(
      const std::string& key) = 0;
  virtual absl::Status Put(const std::string& key,
                           const std::string& value) = 0;
  virtual absl::Status Delete(const std::string& key) = 0;
};

// Executes `command` against `store` and returns its response. Deterministic:
// the result depends only on the store's contents and the command.
absl::StatusOr<KvResponse> ExecuteCommand(const KvCommand& command,
                                          KvStore* store);

// Decodes the data of one committed entry and executes it; returns the
// encoded response. Malformed bytes are not an error: the entry changes
// nothing and the response has code kMalformedCommand naming the problem
// (Apply must be deterministic and must not fail for application-level
// reasons). Errors are only the store's.
absl::StatusOr<std::string> ApplyEntryData(std::string_view data,
                                           KvStore* store);

}  // namespace driftwood::statemachine

#endif  // DRIFTWOOD_STATEMACHINE_KV_COMMAND_H_
