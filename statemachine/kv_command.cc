#include "statemachine/kv_command.h"

#include <limits>
#include <type_traits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "raft/util/coding.h"
#include "raft/util/overloaded.h"

namespace driftwood::statemachine {
namespace {

enum CommandOp : uint8_t {
  kPutOp = 1,
  kDeleteOp = 2,
  kCompareAndSwapOp = 3,
  kIncrementOp = 4,
};
enum QueryOp : uint8_t { kGetOp = 1, kCountOp = 2 };
enum ResponseFlag : uint8_t {
  kExisted = 1,
  kSwapped = 2,
  kHasValue = 4,
  kHasCounter = 8,
};
constexpr uint8_t kAllFlags = kExisted | kSwapped | kHasValue | kHasCounter;

void PutString(std::string* out, std::string_view bytes) {
  raft::PutVarint64(out, bytes.size());
  out->append(bytes);
}

uint64_t ZigZag(int64_t value) {
  const auto bits = static_cast<uint64_t>(value);
  return (bits << 1) ^ (value < 0 ? ~uint64_t{0} : uint64_t{0});
}

int64_t UnZigZag(uint64_t value) {
  const uint64_t bits = (value >> 1) ^ (~(value & 1) + 1);
  return static_cast<int64_t>(bits);
}

// Reads fields from the front of a byte string, remembering the first
// problem with its offset. `what` names the kind of record in messages.
class Reader {
 public:
  Reader(std::string_view bytes, const char* what)
      : bytes_(bytes), what_(what) {}

  bool ReadByte(const char* field, uint8_t* value) {
    if (offset_ >= bytes_.size()) return Fail(field, "is missing");
    *value = static_cast<uint8_t>(bytes_[offset_++]);
    return true;
  }

  bool ReadVarint(const char* field, uint64_t* value) {
    uint64_t result = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
      if (offset_ >= bytes_.size()) return Fail(field, "is truncated");
      const auto byte = static_cast<uint8_t>(bytes_[offset_++]);
      // The tenth byte may only hold the top bit of a 64-bit value.
      if (shift == 63 && byte > 1) return Fail(field, "overflows 64 bits");
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return true;
      }
    }
    return Fail(field, "overflows 64 bits");
  }

  bool ReadString(const char* field, std::string* value) {
    const size_t start = offset_;
    uint64_t length = 0;
    if (!ReadVarint(field, &length)) return false;
    const size_t remaining = bytes_.size() - offset_;
    if (length > remaining) {
      offset_ = start;
      return Fail(field, absl::StrCat("has length ", length, " but only ",
                                      remaining, " bytes follow its length"));
    }
    value->assign(bytes_.substr(offset_, static_cast<size_t>(length)));
    offset_ += static_cast<size_t>(length);
    return true;
  }

  bool ReadFlag(const char* field, bool* value) {
    uint8_t byte = 0;
    if (!ReadByte(field, &byte)) return false;
    if (byte > 1) {
      --offset_;
      return Fail(field, absl::StrCat("is ", byte, ", not 0 or 1"));
    }
    *value = byte == 1;
    return true;
  }

  bool ExpectEnd() {
    if (offset_ == bytes_.size()) return true;
    return Fail("end", absl::StrCat("expected, but ", bytes_.size() - offset_,
                                    " trailing bytes follow"));
  }

  bool Fail(const char* field, const std::string& problem) {
    if (error_.empty()) {
      error_ = absl::StrCat("malformed ", what_, ": ", field, " ", problem,
                            " (at byte offset ", offset_, " of ", bytes_.size(),
                            ")");
    }
    return false;
  }

  absl::Status status() const { return absl::InvalidArgumentError(error_); }

 private:
  std::string_view bytes_;
  const char* what_;
  size_t offset_ = 0;
  std::string error_;
};

}  // namespace

std::string EncodeCommand(const KvCommand& command) {
  std::string out;
  std::visit(Overloaded{
                 [&](const PutCommand& put) {
                   out.push_back(static_cast<char>(kPutOp));
                   PutString(&out, put.key);
                   PutString(&out, put.value);
                 },
                 [&](const DeleteCommand& del) {
                   out.push_back(static_cast<char>(kDeleteOp));
                   PutString(&out, del.key);
                 },
                 [&](const CompareAndSwapCommand& cas) {
                   out.push_back(static_cast<char>(kCompareAndSwapOp));
                   PutString(&out, cas.key);
                   out.push_back(cas.expected.has_value() ? 1 : 0);
                   if (cas.expected.has_value()) {
                     PutString(&out, *cas.expected);
                   }
                   PutString(&out, cas.new_value);
                 },
                 [&](const IncrementCommand& increment) {
                   out.push_back(static_cast<char>(kIncrementOp));
                   PutString(&out, increment.key);
                   raft::PutVarint64(&out, ZigZag(increment.delta));
                 },
             },
             command);
  return out;
}

absl::StatusOr<KvCommand> DecodeCommand(std::string_view bytes) {
  Reader in(bytes, "command");
  uint8_t op = 0;
  if (!in.ReadByte("op code", &op)) return in.status();
  switch (op) {
    case kPutOp: {
      PutCommand put;
      if (in.ReadString("Put key", &put.key) &&
          in.ReadString("Put value", &put.value) && in.ExpectEnd()) {
        return KvCommand(std::move(put));
      }
      return in.status();
    }
    case kDeleteOp: {
      DeleteCommand del;
      if (in.ReadString("Delete key", &del.key) && in.ExpectEnd()) {
        return KvCommand(std::move(del));
      }
      return in.status();
    }
    case kCompareAndSwapOp: {
      CompareAndSwapCommand cas;
      bool has_expected = false;
      if (!in.ReadString("CompareAndSwap key", &cas.key) ||
          !in.ReadFlag("CompareAndSwap has_expected", &has_expected)) {
        return in.status();
      }
      if (has_expected) {
        cas.expected.emplace();
        if (!in.ReadString("CompareAndSwap expected", &*cas.expected)) {
          return in.status();
        }
      }
      if (in.ReadString("CompareAndSwap new_value", &cas.new_value) &&
          in.ExpectEnd()) {
        return KvCommand(std::move(cas));
      }
      return in.status();
    }
    case kIncrementOp: {
      IncrementCommand increment;
      uint64_t delta = 0;
      if (in.ReadString("Increment key", &increment.key) &&
          in.ReadVarint("Increment delta", &delta) && in.ExpectEnd()) {
        increment.delta = UnZigZag(delta);
        return KvCommand(std::move(increment));
      }
      return in.status();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("malformed command: unknown op code ", op,
                       " (at byte offset 0 of ", bytes.size(), ")"));
  }
}

std::string EncodeResponse(const KvResponse& response) {
  std::string out;
  out.push_back(static_cast<char>(response.code));
  if (!response.ok()) {
    PutString(&out, response.error);
    return out;
  }
  uint8_t flags = 0;
  if (response.existed) flags |= kExisted;
  if (response.swapped) flags |= kSwapped;
  if (response.value.has_value()) flags |= kHasValue;
  if (response.counter.has_value()) flags |= kHasCounter;
  out.push_back(static_cast<char>(flags));
  if (response.value.has_value()) PutString(&out, *response.value);
  if (response.counter.has_value())
    raft::PutVarint64(&out, ZigZag(*response.counter));
  return out;
}

absl::StatusOr<KvResponse> DecodeResponse(std::string_view bytes) {
  Reader in(bytes, "response");
  KvResponse response;
  uint8_t code = 0;
  if (!in.ReadByte("code", &code)) return in.status();
  if (code > static_cast<uint8_t>(KvResponseCode::kOverflow)) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed response: unknown code ", code,
                     " (at byte offset 0 of ", bytes.size(), ")"));
  }
  response.code = static_cast<KvResponseCode>(code);
  if (!response.ok()) {
    if (in.ReadString("error message", &response.error) && in.ExpectEnd()) {
      return response;
    }
    return in.status();
  }
  uint8_t flags = 0;
  if (!in.ReadByte("flags", &flags)) return in.status();
  if ((flags & ~kAllFlags) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed response: unknown flags ", flags,
                     " (at byte offset 1 of ", bytes.size(), ")"));
  }
  response.existed = (flags & kExisted) != 0;
  response.swapped = (flags & kSwapped) != 0;
  if ((flags & kHasValue) != 0) {
    response.value.emplace();
    if (!in.ReadString("value", &*response.value)) return in.status();
  }
  if ((flags & kHasCounter) != 0) {
    uint64_t counter = 0;
    if (!in.ReadVarint("counter", &counter)) return in.status();
    response.counter = UnZigZag(counter);
  }
  if (!in.ExpectEnd()) return in.status();
  return response;
}

std::string EncodeQuery(const KvQuery& query) {
  std::string out;
  std::visit(Overloaded{
                 [&](const GetQuery& get) {
                   out.push_back(static_cast<char>(kGetOp));
                   PutString(&out, get.key);
                 },
                 [&](const CountQuery&) {
                   out.push_back(static_cast<char>(kCountOp));
                 },
             },
             query);
  return out;
}

absl::StatusOr<KvQuery> DecodeQuery(std::string_view bytes) {
  Reader in(bytes, "query");
  uint8_t op = 0;
  if (!in.ReadByte("op code", &op)) return in.status();
  switch (op) {
    case kGetOp: {
      GetQuery get;
      if (in.ReadString("Get key", &get.key) && in.ExpectEnd()) {
        return KvQuery(std::move(get));
      }
      return in.status();
    }
    case kCountOp:
      if (in.ExpectEnd()) return KvQuery(CountQuery{});
      return in.status();
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("malformed query: unknown op code ", op,
                       " (at byte offset 0 of ", bytes.size(), ")"));
  }
}

std::string EncodeGetResult(const std::optional<std::string>& value) {
  std::string out;
  out.push_back(value.has_value() ? 1 : 0);
  if (value.has_value()) PutString(&out, *value);
  return out;
}

absl::StatusOr<std::optional<std::string>> DecodeGetResult(
    std::string_view bytes) {
  Reader in(bytes, "Get result");
  bool found = false;
  if (!in.ReadFlag("found", &found)) return in.status();
  std::optional<std::string> value;
  if (found) {
    value.emplace();
    if (!in.ReadString("value", &*value)) return in.status();
  }
  if (!in.ExpectEnd()) return in.status();
  return value;
}

std::string EncodeCountResult(uint64_t count) {
  std::string out;
  raft::PutVarint64(&out, count);
  return out;
}

absl::StatusOr<uint64_t> DecodeCountResult(std::string_view bytes) {
  Reader in(bytes, "Count result");
  uint64_t count = 0;
  if (in.ReadVarint("count", &count) && in.ExpectEnd()) return count;
  return in.status();
}

std::string FormatCounter(int64_t value) { return absl::StrCat(value); }

std::optional<int64_t> ParseCounter(std::string_view text) {
  // Canonical form only, checked by hand so that the accepted set does not
  // depend on a library's leniency (whitespace, '+', leading zeros):
  // determinism across builds is part of the state machine contract.
  size_t i = 0;
  const bool negative = !text.empty() && text[0] == '-';
  if (negative) i = 1;
  if (i == text.size()) return std::nullopt;
  if (text[i] == '0' && (negative || text.size() > 1)) return std::nullopt;
  // Accumulate as a negative number: its range includes INT64_MIN.
  int64_t value = 0;
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  for (; i < text.size(); ++i) {
    const char c = text[i];
    if (c < '0' || c > '9') return std::nullopt;
    const int64_t digit = c - '0';
    if (value < (kMin + digit) / 10) return std::nullopt;
    value = value * 10 - digit;
  }
  if (!negative) {
    if (value == kMin) return std::nullopt;
    value = -value;
  }
  return value;
}

absl::StatusOr<KvResponse> ExecuteCommand(const KvCommand& command,
                                          KvStore* store) {
  return std::visit(
      Overloaded{
          [&](const PutCommand& put) -> absl::StatusOr<KvResponse> {
            auto previous = store->Get(put.key);
            if (!previous.ok()) return previous.status();
            if (absl::Status s = store->Put(put.key, put.value); !s.ok()) {
              return s;
            }
            KvResponse response;
            response.existed = previous->has_value();
            return response;
          },
          [&](const DeleteCommand& del) -> absl::StatusOr<KvResponse> {
            auto previous = store->Get(del.key);
            if (!previous.ok()) return previous.status();
            KvResponse response;
            response.existed = previous->has_value();
            if (response.existed) {
              if (absl::Status s = store->Delete(del.key); !s.ok()) return s;
            }
            return response;
          },
          [&](const CompareAndSwapCommand& cas) -> absl::StatusOr<KvResponse> {
            auto current = store->Get(cas.key);
            if (!current.ok()) return current.status();
            KvResponse response;
            if (*current == cas.expected) {
              if (absl::Status s = store->Put(cas.key, cas.new_value);
                  !s.ok()) {
                return s;
              }
              response.swapped = true;
              response.value = cas.new_value;
            } else {
              response.value = std::move(*current);
            }
            return response;
          },
          [&](const IncrementCommand& increment) -> absl::StatusOr<KvResponse> {
            auto current = store->Get(increment.key);
            if (!current.ok()) return current.status();
            int64_t value = 0;
            KvResponse response;
            if (current->has_value()) {
              std::optional<int64_t> parsed = ParseCounter(**current);
              if (!parsed.has_value()) {
                response.code = KvResponseCode::kNotACounter;
                response.error = absl::StrCat(
                    "Increment: the value of key \"", increment.key,
                    "\" is not a decimal 64-bit integer");
                return response;
              }
              value = *parsed;
            }
            int64_t sum = 0;
            if (__builtin_add_overflow(value, increment.delta, &sum)) {
              response.code = KvResponseCode::kOverflow;
              response.error = absl::StrCat(
                  "Increment: ", value, " + ", increment.delta, " at key \"",
                  increment.key, "\" overflows a 64-bit integer");
              return response;
            }
            if (absl::Status s = store->Put(increment.key, FormatCounter(sum));
                !s.ok()) {
              return s;
            }
            response.counter = sum;
            return response;
          },
      },
      command);
}

absl::StatusOr<std::string> ApplyEntryData(std::string_view data,
                                           KvStore* store) {
  absl::StatusOr<KvCommand> command = DecodeCommand(data);
  if (!command.ok()) {
    KvResponse response;
    response.code = KvResponseCode::kMalformedCommand;
    response.error = std::string(command.status().message());
    return EncodeResponse(response);
  }
  absl::StatusOr<KvResponse> response = ExecuteCommand(*command, store);
  if (!response.ok()) return response.status();
  return EncodeResponse(*response);
}

}  // namespace driftwood::statemachine
