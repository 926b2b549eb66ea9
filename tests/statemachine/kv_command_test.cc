// Unit tests of the key-value command encoding (statemachine/kv_command.h):
// round trips, malformed input, counter text and command semantics.
#include "statemachine/kv_command.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <string>

namespace driftwood::statemachine {
namespace {

using namespace std::string_literals;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

// A KvStore over a std::map, for testing command semantics alone.
class MapStore : public KvStore {
 public:
  absl::StatusOr<std::optional<std::string>> Get(
      const std::string& key) override {
    auto it = map.find(key);
    if (it == map.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }
  absl::Status Put(const std::string& key, const std::string& value) override {
    map[key] = value;
    return absl::OkStatus();
  }
  absl::Status Delete(const std::string& key) override {
    map.erase(key);
    return absl::OkStatus();
  }
  std::map<std::string, std::string> map;
};

void RequireInvalid(const absl::Status& status, const std::string& needle) {
  INFO("status: " << status.ToString());
  REQUIRE(absl::IsInvalidArgument(status));
  REQUIRE(std::string(status.message()).find(needle) != std::string::npos);
}

TEST_CASE("Commands round trip through their encoding", "[statemachine]") {
  const std::vector<KvCommand> commands = {
      PutCommand{"key", "value"},
      PutCommand{"", ""},
      PutCommand{"nul\0key"s, std::string(300, '\xff')},
      DeleteCommand{"gone"},
      CompareAndSwapCommand{"k", std::nullopt, "new"},
      CompareAndSwapCommand{"k", "", ""},
      CompareAndSwapCommand{"k", "old", "new"},
      IncrementCommand{"counter", 1},
      IncrementCommand{"counter", -1},
      IncrementCommand{"counter", kMax},
      IncrementCommand{"counter", kMin},
      IncrementCommand{"counter", 0},
  };
  for (const KvCommand& command : commands) {
    const std::string bytes = EncodeCommand(command);
    auto decoded = DecodeCommand(bytes);
    INFO("command index " << command.index() << ": "
                          << decoded.status().ToString());
    REQUIRE(decoded.ok());
    REQUIRE(*decoded == command);
  }
}

TEST_CASE("Responses round trip through their encoding", "[statemachine]") {
  std::vector<KvResponse> responses(7);
  responses[1].existed = true;
  responses[2].swapped = true;
  responses[2].value = "current";
  responses[3].value = ""s;
  responses[4].counter = kMin;
  responses[5].code = KvResponseCode::kMalformedCommand;
  responses[5].error = "malformed command: op code is missing";
  responses[6].code = KvResponseCode::kOverflow;
  responses[6].error = "overflow";
  for (const KvResponse& response : responses) {
    auto decoded = DecodeResponse(EncodeResponse(response));
    INFO(decoded.status().ToString());
    REQUIRE(decoded.ok());
    REQUIRE(*decoded == response);
  }
}

TEST_CASE("Queries and their results round trip", "[statemachine]") {
  for (const KvQuery& query :
       {KvQuery(GetQuery{"k"}), KvQuery(GetQuery{""}), KvQuery(CountQuery{})}) {
    auto decoded = DecodeQuery(EncodeQuery(query));
    REQUIRE(decoded.ok());
    REQUIRE(*decoded == query);
  }
  for (const std::optional<std::string>& value :
       {std::optional<std::string>(), std::optional<std::string>(""),
        std::optional<std::string>("v\0v"s)}) {
    auto decoded = DecodeGetResult(EncodeGetResult(value));
    REQUIRE(decoded.ok());
    REQUIRE(*decoded == value);
  }
  for (uint64_t count : {uint64_t{0}, uint64_t{127}, uint64_t{128},
                         std::numeric_limits<uint64_t>::max()}) {
    auto decoded = DecodeCountResult(EncodeCountResult(count));
    REQUIRE(decoded.ok());
    REQUIRE(*decoded == count);
  }
}

TEST_CASE("Malformed commands are InvalidArgument naming the problem",
          "[statemachine]") {
  RequireInvalid(DecodeCommand("").status(), "op code is missing");
  RequireInvalid(DecodeCommand("\x09"s).status(), "unknown op code 9");
  RequireInvalid(DecodeCommand("\x01"s).status(), "Put key is truncated");
  RequireInvalid(DecodeCommand("\x01\x05"
                               "ab"s)
                     .status(),
                 "Put key has length 5 but only 2 bytes follow");
  RequireInvalid(DecodeCommand("\x01\x01"
                               "a"s)
                     .status(),
                 "Put value is truncated");
  RequireInvalid(
      DecodeCommand(EncodeCommand(PutCommand{"a", "b"}) + "x").status(),
      "1 trailing bytes");
  RequireInvalid(DecodeCommand("\x02"s).status(), "Delete key");
  RequireInvalid(DecodeCommand("\x03\x01"
                               "k\x02"s)
                     .status(),
                 "CompareAndSwap has_expected is 2");
  RequireInvalid(DecodeCommand("\x03\x01"
                               "k\x01"s)
                     .status(),
                 "CompareAndSwap expected");
  RequireInvalid(DecodeCommand("\x03\x01"
                               "k\x00"s)
                     .status(),
                 "CompareAndSwap new_value");
  RequireInvalid(DecodeCommand("\x04\x01"
                               "k"s)
                     .status(),
                 "Increment delta is truncated");
  RequireInvalid(
      DecodeCommand("\x04\x01k" + std::string(10, '\xff') + "\x01").status(),
      "Increment delta overflows 64 bits");
  // The offset is part of the message.
  RequireInvalid(DecodeCommand("\x01\x05"
                               "ab"s)
                     .status(),
                 "byte offset 1");
}

TEST_CASE("Malformed responses and query results are InvalidArgument",
          "[statemachine]") {
  RequireInvalid(DecodeResponse("").status(), "code is missing");
  RequireInvalid(DecodeResponse("\x07"s).status(), "unknown code 7");
  RequireInvalid(DecodeResponse("\x00"s).status(), "flags is missing");
  RequireInvalid(DecodeResponse("\x00\x10"s).status(), "unknown flags 16");
  RequireInvalid(DecodeResponse("\x00\x04"s).status(), "value is truncated");
  RequireInvalid(DecodeResponse("\x01"s).status(), "error message");
  RequireInvalid(DecodeQuery("").status(), "op code is missing");
  RequireInvalid(DecodeQuery("\x03"s).status(), "unknown op code 3");
  RequireInvalid(DecodeQuery("\x02x"s).status(), "trailing");
  RequireInvalid(DecodeGetResult("\x02"s).status(), "found is 2");
  RequireInvalid(DecodeGetResult("\x01"s).status(), "value");
  RequireInvalid(DecodeCountResult("").status(), "count is truncated");
  RequireInvalid(DecodeCountResult("\x80"s).status(), "count is truncated");
}

TEST_CASE("Counters are canonical decimal text", "[statemachine]") {
  REQUIRE(FormatCounter(0) == "0");
  REQUIRE(FormatCounter(-12) == "-12");
  REQUIRE(FormatCounter(kMin) == "-9223372036854775808");
  for (int64_t value :
       {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{4096}, kMax, kMin}) {
    REQUIRE(ParseCounter(FormatCounter(value)) == value);
  }
  for (const char* text : {"", "-", "+1", "01", "-0", "00", " 1", "1 ", "1a",
                           "9223372036854775808", "-9223372036854775809",
                           "99999999999999999999"}) {
    INFO("text \"" << text << "\"");
    REQUIRE_FALSE(ParseCounter(text).has_value());
  }
}

TEST_CASE("Command semantics on a plain store", "[statemachine]") {
  MapStore store;
  auto run = [&](const KvCommand& command) {
    auto response = ExecuteCommand(command, &store);
    REQUIRE(response.ok());
    return *response;
  };
  REQUIRE_FALSE(run(PutCommand{"a", "1"}).existed);
  REQUIRE(run(PutCommand{"a", "2"}).existed);

  KvResponse cas = run(CompareAndSwapCommand{"a", "1", "3"});
  REQUIRE_FALSE(cas.swapped);
  REQUIRE(cas.value == "2");
  cas = run(CompareAndSwapCommand{"a", "2", "3"});
  REQUIRE(cas.swapped);
  REQUIRE(cas.value == "3");
  cas = run(CompareAndSwapCommand{"b", std::nullopt, "x"});
  REQUIRE(cas.swapped);
  cas = run(CompareAndSwapCommand{"b", std::nullopt, "y"});
  REQUIRE_FALSE(cas.swapped);
  REQUIRE(cas.value == "x");
  cas = run(CompareAndSwapCommand{"missing", "x", "y"});
  REQUIRE_FALSE(cas.swapped);
  REQUIRE_FALSE(cas.value.has_value());

  REQUIRE(run(DeleteCommand{"a"}).existed);
  REQUIRE_FALSE(run(DeleteCommand{"a"}).existed);

  REQUIRE(run(IncrementCommand{"c", 5}).counter == 5);
  REQUIRE(run(IncrementCommand{"c", -7}).counter == -2);
  REQUIRE(store.map["c"] == "-2");

  KvResponse failed = run(IncrementCommand{"b", 1});
  REQUIRE(failed.code == KvResponseCode::kNotACounter);
  REQUIRE(store.map["b"] == "x");

  REQUIRE(run(IncrementCommand{"big", kMax}).counter == kMax);
  failed = run(IncrementCommand{"big", 1});
  REQUIRE(failed.code == KvResponseCode::kOverflow);
  REQUIRE(store.map["big"] == FormatCounter(kMax));
}

TEST_CASE("A malformed entry is an error response that changes nothing",
          "[statemachine]") {
  MapStore store;
  store.map["k"] = "v";
  auto response = ApplyEntryData("\x01\x09"s, &store);
  REQUIRE(response.ok());
  auto decoded = DecodeResponse(*response);
  REQUIRE(decoded.ok());
  REQUIRE(decoded->code == KvResponseCode::kMalformedCommand);
  REQUIRE(decoded->error.find("malformed command") != std::string::npos);
  REQUIRE(store.map == std::map<std::string, std::string>{{"k", "v"}});
}

}  // namespace
}  // namespace driftwood::statemachine
