#include "jepsen/checker/history.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace driftwood::jepsen {
namespace {

using Json = nlohmann::json;

// Where an event sits in the file, for error messages.
struct Where {
  int64_t line = 0;
  bool has_index = false;
  int64_t index = 0;
  std::string process;  // empty until known
};

std::string Locate(const Where& where) {
  std::string text = absl::StrCat("line ", where.line);
  if (where.has_index && !where.process.empty()) {
    absl::StrAppend(&text, " (index ", where.index, ", process ", where.process,
                    ")");
  } else if (where.has_index) {
    absl::StrAppend(&text, " (index ", where.index, ")");
  }
  return text;
}

// Integers that fit int64_t; JSON floats are not integers here.
bool AsInt64(const Json& value, int64_t* out) {
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return false;
    }
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (value.is_number_integer()) {
    *out = value.get<int64_t>();
    return true;
  }
  return false;
}

bool AsIntList(const Json& value, std::vector<int64_t>* out) {
  if (!value.is_array()) return false;
  out->clear();
  out->reserve(value.size());
  for (const Json& element : value) {
    int64_t v = 0;
    if (!AsInt64(element, &v)) return false;
    out->push_back(v);
  }
  return true;
}

bool ParseFunction(const std::string& name, Function* f) {
  if (name == "read") {
    *f = Function::kRead;
  } else if (name == "write") {
    *f = Function::kWrite;
  } else if (name == "cas") {
    *f = Function::kCas;
  } else if (name == "append") {
    *f = Function::kAppend;
  } else {
    return false;
  }
  return true;
}

std::string ProcessName(int64_t process) {
  return process == kNemesis ? std::string("nemesis") : absl::StrCat(process);
}

std::string Seconds(int64_t ns) {
  return absl::StrFormat("%.6f", static_cast<double>(ns) / 1e9);
}

// "[1,2,3]", or "[1,2,3,...,97,98,99 (99 elements)]" for long lists.
std::string DescribeList(const std::vector<int64_t>& list) {
  constexpr size_t kShown = 6;
  if (list.size() <= kShown + 2) {
    return absl::StrCat("[", absl::StrJoin(list, ","), "]");
  }
  std::vector<int64_t> head(list.begin(), list.begin() + kShown / 2);
  std::vector<int64_t> tail(list.end() - kShown / 2, list.end());
  return absl::StrCat("[", absl::StrJoin(head, ","), ",...,",
                      absl::StrJoin(tail, ","), " (", list.size(),
                      " elements)]");
}

// An event's known fields; null when absent. Other fields are ignored.
struct Fields {
  const Json* index = nullptr;
  const Json* time = nullptr;
  const Json* process = nullptr;
  const Json* type = nullptr;
  const Json* f = nullptr;
  const Json* key = nullptr;
  const Json* value = nullptr;
  const Json* node = nullptr;
  const Json* error = nullptr;
};

// One pass over the members, cheaper than a lookup per field.
Fields FindFields(const Json& event) {
  Fields fields;
  for (auto it = event.begin(); it != event.end(); ++it) {
    const std::string& name = it.key();
    const Json* value = &it.value();
    if (name == "index") {
      fields.index = value;
    } else if (name == "time") {
      fields.time = value;
    } else if (name == "process") {
      fields.process = value;
    } else if (name == "type") {
      fields.type = value;
    } else if (name == "f") {
      fields.f = value;
    } else if (name == "key") {
      fields.key = value;
    } else if (name == "value") {
      fields.value = value;
    } else if (name == "node") {
      fields.node = value;
    } else if (name == "error") {
      fields.error = value;
    }
  }
  return fields;
}

class Parser {
 public:
  void AddLine(std::string_view text, int64_t line);
  History Finish() &&;

 private:
  struct ProcessState {
    // Op id of the open invocation, or -1.
    int64_t open_op = -1;
    // The line of the process's info completion, or 0.
    int64_t info_line = 0;
  };

  void Error(const Where& where, const std::string& message);
  void AddNemesis(const Where& where, const std::string& type,
                  const std::string& f, int64_t index, int64_t time);
  void AddClient(const Fields& fields, const Where& where, int64_t process,
                 const std::string& type, const std::string& f_name,
                 int64_t index, int64_t time);
  void Invoke(const Fields& fields, const Where& where, int64_t process,
              Function f, uint32_t key, int64_t index, int64_t time,
              std::string node);
  void Complete(const Fields& fields, const Where& where, int64_t process,
                Function f, Outcome outcome, uint32_t key, int64_t index,
                int64_t time, std::string node);
  uint32_t InternKey(const std::string& key);
  void ValidateKeys();

  History history_;
  absl::flat_hash_map<std::string, uint32_t> key_ids_;
  absl::flat_hash_map<int64_t, ProcessState> processes_;
  // Fault kind -> index into history_.faults of its active window.
  absl::flat_hash_map<std::string, size_t> active_faults_;
  bool have_previous_ = false;
  // The largest index and time so far, and their lines.
  int64_t previous_index_ = 0;
  int64_t previous_time_ = 0;
  int64_t previous_line_ = 0;
  int64_t previous_time_line_ = 0;
};

void Parser::Error(const Where& where, const std::string& message) {
  ++history_.error_count;
  if (history_.errors.size() < History::kMaxStoredErrors) {
    history_.errors.push_back(
        HistoryError{where.line, absl::StrCat(Locate(where), ": ", message)});
  }
}

uint32_t Parser::InternKey(const std::string& key) {
  auto [it, inserted] =
      key_ids_.try_emplace(key, static_cast<uint32_t>(history_.keys.size()));
  if (inserted) history_.keys.push_back(key);
  return it->second;
}

void Parser::AddLine(std::string_view text, int64_t line) {
  history_.lines = line;
  if (std::all_of(text.begin(), text.end(), [](char c) {
        return absl::ascii_isspace(static_cast<unsigned char>(c));
      })) {
    return;
  }
  Where where{.line = line};
  const Json event = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (event.is_discarded() || !event.is_object()) {
    Error(where, "not a JSON object");
    return;
  }
  const Fields fields = FindFields(event);
  int64_t index = 0;
  if (fields.index == nullptr || !AsInt64(*fields.index, &index)) {
    Error(where, "\"index\" is missing or not an integer");
    return;
  }
  where.has_index = true;
  where.index = index;

  int64_t process = 0;
  if (fields.process != nullptr && fields.process->is_string() &&
      *fields.process == "nemesis") {
    process = kNemesis;
  } else if (fields.process == nullptr || !AsInt64(*fields.process, &process) ||
             process < 0) {
    Error(where, "\"process\" must be a non-negative integer or \"nemesis\"");
    return;
  }
  where.process = ProcessName(process);

  int64_t time = 0;
  if (fields.time == nullptr || !AsInt64(*fields.time, &time)) {
    Error(where, "\"time\" is missing or not an integer");
    return;
  }
  if (fields.type == nullptr || !fields.type->is_string()) {
    Error(where, "\"type\" is missing or not a string");
    return;
  }
  const std::string& type = fields.type->get_ref<const std::string&>();
  if (type != "invoke" && type != "ok" && type != "fail" && type != "info") {
    Error(where, absl::StrCat("\"type\" is \"", type,
                              "\", not invoke, ok, fail or info"));
    return;
  }
  if (fields.f == nullptr || !fields.f->is_string()) {
    Error(where, "\"f\" is missing or not a string");
    return;
  }
  const std::string& f = fields.f->get_ref<const std::string&>();

  if (have_previous_ && index <= previous_index_) {
    Error(where,
          absl::StrCat("index ", index, " does not increase (line ",
                       previous_line_, " has index ", previous_index_, ")"));
  }
  if (have_previous_ && time < previous_time_) {
    Error(where,
          absl::StrCat("time ", time, " decreases (line ", previous_time_line_,
                       " has time ", previous_time_, ")"));
  }
  if (!have_previous_ || index > previous_index_) {
    previous_index_ = index;
    previous_line_ = line;
  }
  if (!have_previous_ || time >= previous_time_) {
    previous_time_ = time;
    previous_time_line_ = line;
  }
  have_previous_ = true;
  history_.end_time = std::max(history_.end_time, time);

  if (process == kNemesis) {
    AddNemesis(where, type, f, index, time);
  } else {
    AddClient(fields, where, process, type, f, index, time);
  }
}

void Parser::AddNemesis(const Where& where, const std::string& type,
                        const std::string& f, int64_t index, int64_t time) {
  ++history_.nemesis_events;
  if (type != "info") {
    Error(where, absl::StrCat("a nemesis event has type ", type,
                              "; nemesis events must have type info"));
    return;
  }
  if (absl::StartsWith(f, "start-") && f.size() > 6) {
    const std::string kind = f.substr(6);
    if (!active_faults_.contains(kind)) {
      active_faults_[kind] = history_.faults.size();
      history_.faults.push_back(
          FaultWindow{.kind = kind, .start_time = time, .start_index = index});
    }
  } else if (absl::StartsWith(f, "stop-") && f.size() > 5) {
    auto active = active_faults_.find(f.substr(5));
    if (active != active_faults_.end()) {
      FaultWindow& window = history_.faults[active->second];
      window.stop_time = time;
      window.stop_index = index;
      active_faults_.erase(active);
    }
  }
}

void Parser::AddClient(const Fields& fields, const Where& where,
                       int64_t process, const std::string& type,
                       const std::string& f_name, int64_t index, int64_t time) {
  Function f = Function::kRead;
  if (!ParseFunction(f_name, &f)) {
    Error(where, absl::StrCat("\"f\" is \"", f_name,
                              "\", not read, write, cas or append"));
    return;
  }
  if (fields.key == nullptr || !fields.key->is_string()) {
    Error(where, "\"key\" is missing or not a string");
    return;
  }
  const uint32_t key = InternKey(fields.key->get_ref<const std::string&>());
  std::string node;
  if (fields.node != nullptr && fields.node->is_string()) {
    node = fields.node->get<std::string>();
  } else if (fields.node != nullptr && !fields.node->is_null()) {
    Error(where, "\"node\" is not a string");
    return;
  }
  if (type == "invoke") {
    Invoke(fields, where, process, f, key, index, time, std::move(node));
    return;
  }
  const Outcome outcome = type == "ok"     ? Outcome::kOk
                          : type == "fail" ? Outcome::kFail
                                           : Outcome::kInfo;
  Complete(fields, where, process, f, outcome, key, index, time,
           std::move(node));
}

void Parser::Invoke(const Fields& fields, const Where& where, int64_t process,
                    Function f, uint32_t key, int64_t index, int64_t time,
                    std::string node) {
  Operation op{.process = process,
               .f = f,
               .key = key,
               .invoke_index = index,
               .invoke_time = time,
               .invoke_line = where.line,
               .node = std::move(node)};
  const Json* value = fields.value;
  const bool has_value = value != nullptr;
  std::vector<int64_t> pair;
  switch (f) {
    case Function::kRead:
      if (has_value && !value->is_null()) {
        Error(where, "a read's invocation must have a null value");
        return;
      }
      break;
    case Function::kWrite:
    case Function::kAppend:
      if (!has_value || !AsInt64(*value, &op.arg1)) {
        Error(where,
              absl::StrCat("a", f == Function::kWrite ? " write" : "n append",
                           "'s invocation must have an integer value"));
        return;
      }
      break;
    case Function::kCas:
      if (!has_value || !AsIntList(*value, &pair) || pair.size() != 2) {
        Error(where,
              "a cas's invocation must have a value [old, new] of integers");
        return;
      }
      op.arg1 = pair[0];
      op.arg2 = pair[1];
      break;
  }
  ProcessState& state = processes_[process];
  if (state.info_line != 0) {
    Error(where, absl::StrCat("process ", process,
                              " invokes after its info completion on line ",
                              state.info_line));
    return;
  }
  if (state.open_op >= 0) {
    const Operation& open = history_.ops[static_cast<size_t>(state.open_op)];
    Error(where, absl::StrCat("process ", process, " invokes while its ",
                              FunctionName(open.f), " invoked on line ",
                              open.invoke_line, " is still open"));
    return;
  }
  state.open_op = static_cast<int64_t>(history_.ops.size());
  history_.ops.push_back(std::move(op));
}

void Parser::Complete(const Fields& fields, const Where& where, int64_t process,
                      Function f, Outcome outcome, uint32_t key, int64_t index,
                      int64_t time, std::string node) {
  auto state = processes_.find(process);
  if (state == processes_.end() || state->second.open_op < 0) {
    Error(where,
          absl::StrCat("an ", OutcomeName(outcome), " completion of ",
                       FunctionName(f), " ", history_.keys[key],
                       " without an open invocation on process ", process));
    return;
  }
  Operation& op = history_.ops[static_cast<size_t>(state->second.open_op)];
  if (op.f != f || op.key != key) {
    Error(where,
          absl::StrCat("completes ", FunctionName(f), " ", history_.keys[key],
                       " but the open invocation on line ", op.invoke_line,
                       " is ", FunctionName(op.f), " ", history_.keys[op.key]));
    return;
  }
  if (outcome == Outcome::kOk && f == Function::kRead) {
    const Json* value = fields.value;
    if (value == nullptr) {
      Error(where, "an ok read has no value");
      return;
    }
    if (value->is_null()) {
      op.read.kind = ReadValue::Kind::kNull;
    } else if (AsInt64(*value, &op.read.integer)) {
      op.read.kind = ReadValue::Kind::kInt;
    } else if (AsIntList(*value, &op.read.list)) {
      op.read.kind = ReadValue::Kind::kList;
    } else {
      Error(where,
            "an ok read's value must be null, an integer or an array of "
            "integers");
      return;
    }
  }
  const Json* error = fields.error;
  if (error != nullptr && error->is_string()) {
    op.error = error->get<std::string>();
  } else if (error != nullptr && !error->is_null()) {
    op.error = error->dump(-1, ' ', false, Json::error_handler_t::replace);
  }
  if (op.node.empty()) op.node = std::move(node);
  op.outcome = outcome;
  op.complete_index = index;
  op.complete_time = time;
  op.complete_line = where.line;
  state->second.open_op = -1;
  if (outcome == Outcome::kInfo) state->second.info_line = where.line;
}

void Parser::ValidateKeys() {
  const size_t key_count = history_.keys.size();
  history_.key_kinds.assign(key_count, KeyKind::kRegister);
  history_.ops_by_key.assign(key_count, {});
  for (size_t id = 0; id < history_.ops.size(); ++id) {
    const Operation& op = history_.ops[id];
    history_.ops_by_key[op.key].push_back(id);
    if (op.f == Function::kAppend ||
        (op.outcome == Outcome::kOk && op.f == Function::kRead &&
         op.read.kind == ReadValue::Kind::kList)) {
      history_.key_kinds[op.key] = KeyKind::kList;
    }
  }
  for (size_t key = 0; key < key_count; ++key) {
    if (history_.key_kinds[key] != KeyKind::kList) continue;
    // Appended element -> the line appending it.
    absl::flat_hash_map<int64_t, int64_t> appended;
    for (size_t id : history_.ops_by_key[key]) {
      Operation& op = history_.ops[id];
      const Where where{.line = op.invoke_line,
                        .has_index = true,
                        .index = op.invoke_index,
                        .process = ProcessName(op.process)};
      switch (op.f) {
        case Function::kWrite:
        case Function::kCas:
          Error(where, absl::StrCat(FunctionName(op.f), " on list key ",
                                    history_.keys[key],
                                    " (a key is either a register or a "
                                    "list)"));
          break;
        case Function::kAppend: {
          auto [it, inserted] = appended.try_emplace(op.arg1, op.invoke_line);
          if (!inserted) {
            Error(where,
                  absl::StrCat("appends ", op.arg1, " to ", history_.keys[key],
                               ", which line ", it->second,
                               " already appends (elements must be "
                               "unique per key)"));
          }
          break;
        }
        case Function::kRead:
          if (op.outcome != Outcome::kOk) break;
          if (op.read.kind == ReadValue::Kind::kInt) {
            Error(Where{.line = op.complete_line,
                        .has_index = true,
                        .index = op.complete_index,
                        .process = ProcessName(op.process)},
                  absl::StrCat("a read of list key ", history_.keys[key],
                               " returned an integer"));
          } else if (op.read.kind == ReadValue::Kind::kNull) {
            op.read.kind = ReadValue::Kind::kList;
          }
          break;
      }
    }
  }
}

History Parser::Finish() && {
  for (auto& [process, state] : processes_) {
    if (state.open_op < 0) continue;
    const size_t id = static_cast<size_t>(state.open_op);
    history_.ops[id].open = true;
    history_.ops[id].outcome = Outcome::kInfo;
    history_.open_ops.push_back(id);
  }
  std::sort(history_.open_ops.begin(), history_.open_ops.end());
  ValidateKeys();
  std::stable_sort(history_.errors.begin(), history_.errors.end(),
                   [](const HistoryError& a, const HistoryError& b) {
                     return a.line < b.line;
                   });
  return std::move(history_);
}

}  // namespace

const char* FunctionName(Function f) {
  switch (f) {
    case Function::kRead:
      return "read";
    case Function::kWrite:
      return "write";
    case Function::kCas:
      return "cas";
    case Function::kAppend:
      return "append";
  }
  return "?";
}

const char* OutcomeName(Outcome outcome) {
  switch (outcome) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kFail:
      return "fail";
    case Outcome::kInfo:
      return "info";
  }
  return "?";
}

History ParseHistory(std::istream& in) {
  Parser parser;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    parser.AddLine(line, ++number);
  }
  return std::move(parser).Finish();
}

History ParseHistoryText(std::string_view text) {
  std::istringstream in{std::string(text)};
  return ParseHistory(in);
}

absl::StatusOr<History> ReadHistoryFile(const std::string& path) {
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    return absl::InvalidArgumentError(
        absl::StrCat("history file ", path, " is a directory"));
  }
  std::ifstream in(path);
  if (!in.is_open()) {
    const int error = errno;
    const std::string message = absl::StrCat("cannot open history file ", path,
                                             ": ", std::strerror(error));
    if (error == ENOENT) return absl::NotFoundError(message);
    if (error == EACCES) return absl::PermissionDeniedError(message);
    return absl::InternalError(message);
  }
  History history = ParseHistory(in);
  if (in.bad()) {
    return absl::InternalError(absl::StrCat("cannot read history file ", path,
                                            " after line ", history.lines));
  }
  return history;
}

std::string DescribeValue(const Operation& op) {
  switch (op.f) {
    case Function::kRead:
      if (op.outcome != Outcome::kOk) return "read";
      switch (op.read.kind) {
        case ReadValue::Kind::kNull:
          return "read -> null";
        case ReadValue::Kind::kInt:
          return absl::StrCat("read -> ", op.read.integer);
        case ReadValue::Kind::kList:
          return absl::StrCat("read -> ", DescribeList(op.read.list));
      }
      return "read";
    case Function::kWrite:
      return absl::StrCat("write ", op.arg1);
    case Function::kCas:
      return absl::StrCat("cas [", op.arg1, ",", op.arg2, "]");
    case Function::kAppend:
      return absl::StrCat("append ", op.arg1);
  }
  return "?";
}

std::string DescribeOp(const History& history, const Operation& op) {
  std::string text =
      absl::StrCat("index ", op.invoke_index, "-",
                   op.open ? std::string("?") : absl::StrCat(op.complete_index),
                   " process ", op.process);
  if (!op.node.empty()) absl::StrAppend(&text, " node ", op.node);
  absl::StrAppend(&text, " ", Seconds(op.invoke_time), "-",
                  op.open ? std::string("?") : Seconds(op.complete_time), " s ",
                  history.keys[op.key], " ", DescribeValue(op), " ",
                  op.open ? std::string("info (open)")
                          : std::string(OutcomeName(op.outcome)));
  if (!op.error.empty()) absl::StrAppend(&text, " (", op.error, ")");
  const std::vector<std::string> faults =
      ActiveFaults(history, op.invoke_time, op.complete_time);
  if (!faults.empty()) {
    absl::StrAppend(&text, " faults: ", absl::StrJoin(faults, ","));
  }
  return text;
}

std::vector<std::string> ActiveFaults(const History& history, int64_t from,
                                      int64_t to) {
  std::vector<std::string> kinds;
  for (const FaultWindow& window : history.faults) {
    if (window.start_time > to || window.stop_time < from) continue;
    if (std::find(kinds.begin(), kinds.end(), window.kind) == kinds.end()) {
      kinds.push_back(window.kind);
    }
  }
  return kinds;
}

}  // namespace driftwood::jepsen
