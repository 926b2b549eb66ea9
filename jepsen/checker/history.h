// jepsen-check's history: parsing a Jepsen-style JSON Lines history, pairing
// invocations with completions, and validating it (the "history" checker).
//
// One line is one event: {"index", "time", "process", "type", "f", "key",
// "value", "node", "error"} with Jepsen's meaning of "type": ok took effect,
// fail did not, info is indeterminate (it may take effect at any later time,
// and its process never invokes again). Client ops that are still open at
// the end of the history are treated as info. Nemesis events (process
// "nemesis", type info, f "start-X" / "stop-X") delimit fault windows.
#ifndef DRIFTWOOD_JEPSEN_CHECKER_HISTORY_H_
#define DRIFTWOOD_JEPSEN_CHECKER_HISTORY_H_

#include <cstddef>
#include <cstdint>
#include <istream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace driftwood::jepsen {

// A time later than every event: the return time of an op that may take
// effect at any later time.
inline constexpr int64_t kInfinity = std::numeric_limits<int64_t>::max();

// The process id stored for the nemesis.
inline constexpr int64_t kNemesis = -1;

enum class Function : uint8_t { kRead, kWrite, kCas, kAppend };
enum class Outcome : uint8_t { kOk, kFail, kInfo };
enum class KeyKind : uint8_t { kRegister, kList };

const char* FunctionName(Function f);
const char* OutcomeName(Outcome outcome);

// The value an ok read returned: null (the key is absent), an integer (a
// register) or a list of integers (a list key; null reads of a list key are
// stored as empty lists).
struct ReadValue {
  enum class Kind : uint8_t { kNull, kInt, kList };
  Kind kind = Kind::kNull;
  int64_t integer = 0;
  std::vector<int64_t> list;
};

// One client operation: an invocation and its completion.
struct Operation {
  int64_t process = 0;
  Function f = Function::kRead;
  // kInfo for an info completion and for an op still open at the end.
  Outcome outcome = Outcome::kInfo;
  // True when the history ends before the op completes.
  bool open = false;
  // Index into History::keys.
  uint32_t key = 0;
  int64_t invoke_index = 0;
  int64_t invoke_time = 0;
  int64_t invoke_line = 0;
  // Unset (-1, kInfinity, 0) when `open`.
  int64_t complete_index = -1;
  int64_t complete_time = kInfinity;
  int64_t complete_line = 0;
  // write v: arg1 = v; cas [old, new]: arg1 = old, arg2 = new; append e:
  // arg1 = e. Taken from the invocation.
  int64_t arg1 = 0;
  int64_t arg2 = 0;
  // The value an ok read returned; unset for every other op.
  ReadValue read;
  // The invocation's node, else the completion's; may be empty.
  std::string node;
  // The completion's "error" field; may be empty.
  std::string error;
};

// A fault from a start-X to the next stop-X. A start-X while X is active, and
// a stop-X while it is not, change nothing.
struct FaultWindow {
  std::string kind;  // X, e.g. "partition"
  int64_t start_time = 0;
  int64_t start_index = 0;
  // kInfinity and -1 when the history ends before stop-X.
  int64_t stop_time = kInfinity;
  int64_t stop_index = -1;
};

// A validation failure, at a line of the history file.
struct HistoryError {
  int64_t line = 0;
  // The message names the line, and the index and process when known.
  std::string message;
};

struct History {
  // Client ops in invocation order. Ops whose lines were rejected by
  // validation are absent.
  std::vector<Operation> ops;
  std::vector<std::string> keys;
  // Parallel to `keys`.
  std::vector<KeyKind> key_kinds;
  // Op ids (indices into `ops`) per key, in invocation order.
  std::vector<std::vector<size_t>> ops_by_key;
  // In start order.
  std::vector<FaultWindow> faults;
  // Empty when the history is valid. At most kMaxStoredErrors are stored;
  // `error_count` counts them all.
  std::vector<HistoryError> errors;
  size_t error_count = 0;
  // Op ids of the ops open at the end of the history.
  std::vector<size_t> open_ops;
  int64_t lines = 0;
  int64_t nemesis_events = 0;
  // The largest time in the history (0 when empty).
  int64_t end_time = 0;

  static constexpr size_t kMaxStoredErrors = 100;

  bool valid() const { return error_count == 0; }
};

// Parses and validates a history. Never fails: every problem, including a
// line that is not JSON, is a HistoryError in the result.
History ParseHistory(std::istream& in);
History ParseHistoryText(std::string_view text);

// ParseHistory of the file at `path`. NotFound / PermissionDenied /
// InvalidArgument (a directory) / Internal when the file cannot be opened or
// read; the message names the file.
absl::StatusOr<History> ReadHistoryFile(const std::string& path);

// "write 3", "cas [3,4]", "read -> [1,2]", "append 7": an op's function and
// value as shown in reports.
std::string DescribeValue(const Operation& op);

// One line naming an op: its indices, process, node, times (seconds), key,
// function and value, outcome, and the fault kinds active during it.
std::string DescribeOp(const History& history, const Operation& op);

// The kinds of the fault windows overlapping [from, to], without repeats.
std::vector<std::string> ActiveFaults(const History& history, int64_t from,
                                      int64_t to);

}  // namespace driftwood::jepsen

#endif  // DRIFTWOOD_JEPSEN_CHECKER_HISTORY_H_
