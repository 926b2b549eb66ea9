// jepsen-check's history parsing and validation (jepsen/checker/history.h):
// well-formed histories pair into ops, and every broken rule is an error
// naming its line.
#include "jepsen/checker/history.h"

#include <string>

#include "catch2/catch.hpp"

namespace driftwood::jepsen {
namespace {

// The first stored error's message, or "" when the history is valid.
std::string FirstError(const History& history) {
  return history.errors.empty() ? "" : history.errors.front().message;
}

TEST_CASE("history: ops pair up with their values, nodes and faults",
          "[jepsen]") {
  const History history = ParseHistoryText(
      R"({"index":17,"time":5123456789,"process":3,"type":"invoke","f":"cas","key":"r12","value":[3,4],"node":"n2"}
{"index":18,"time":5130456789,"process":3,"type":"ok","f":"cas","key":"r12","value":[3,4],"node":"n2"}
{"index":19,"time":5200000000,"process":"nemesis","type":"info","f":"start-partition","value":{"n1":["n2","n3"]}}

{"index":20,"time":5300000000,"process":4,"type":"invoke","f":"write","key":"r7","value":9,"extra":[1,{"x":2}]}
{"index":42,"time":6100000000,"process":4,"type":"info","f":"write","key":"r7","value":9,"error":"deadline-exceeded"}
{"index":43,"time":6200000000,"process":"nemesis","type":"info","f":"stop-partition","value":null}
{"index":44,"time":6300000000,"process":5,"type":"invoke","f":"append","key":"l1","value":7}
{"index":45,"time":6400000000,"process":6,"type":"invoke","f":"read","key":"l1","value":null}
{"index":46,"time":6500000000,"process":6,"type":"ok","f":"read","key":"l1","value":null}
{"index":47,"time":6600000000,"process":"nemesis","type":"info","f":"start-kill","value":"n1"}
{"index":48,"time":6700000000,"process":7,"type":"invoke","f":"read","key":"r7","value":null}
{"index":49,"time":6800000000,"process":7,"type":"ok","f":"read","key":"r7","value":null}
)");
  INFO(FirstError(history));
  REQUIRE(history.valid());
  CHECK(history.lines == 13);
  REQUIRE(history.ops.size() == 5);

  const Operation& cas = history.ops[0];
  CHECK(cas.f == Function::kCas);
  CHECK(cas.outcome == Outcome::kOk);
  CHECK(cas.arg1 == 3);
  CHECK(cas.arg2 == 4);
  CHECK(cas.node == "n2");
  CHECK(cas.invoke_index == 17);
  CHECK(cas.complete_index == 18);
  CHECK(cas.invoke_line == 1);
  CHECK(cas.complete_line == 2);
  CHECK(history.keys[cas.key] == "r12");

  const Operation& write = history.ops[1];
  CHECK(write.outcome == Outcome::kInfo);
  CHECK_FALSE(write.open);
  CHECK(write.error == "deadline-exceeded");
  CHECK(write.arg1 == 9);

  const Operation& append = history.ops[2];
  CHECK(append.open);
  CHECK(append.outcome == Outcome::kInfo);
  REQUIRE(history.open_ops.size() == 1);
  CHECK(history.open_ops[0] == 2);

  const Operation& read = history.ops[3];
  CHECK(read.read.kind == ReadValue::Kind::kList);  // null on a list key
  CHECK(read.read.list.empty());
  CHECK(history.ops[4].read.kind == ReadValue::Kind::kNull);

  CHECK(history.key_kinds[cas.key] == KeyKind::kRegister);
  CHECK(history.key_kinds[append.key] == KeyKind::kList);
  CHECK(history.ops_by_key[write.key].size() == 2);

  REQUIRE(history.faults.size() == 2);
  CHECK(history.faults[0].kind == "partition");
  CHECK(history.faults[0].start_time == 5200000000);
  CHECK(history.faults[0].stop_time == 6200000000);
  CHECK(history.faults[1].kind == "kill");
  CHECK(history.faults[1].stop_time == kInfinity);
  CHECK(ActiveFaults(history, write.invoke_time, write.complete_time) ==
        std::vector<std::string>{"partition"});
  CHECK(ActiveFaults(history, 6'900'000'000, 7'000'000'000) ==
        std::vector<std::string>{"kill"});
  CHECK(history.end_time == 6800000000);

  const std::string described = DescribeOp(history, write);
  CHECK(described ==
        "index 20-42 process 4 5.300000-6.100000 s r7 write 9 info "
        "(deadline-exceeded) faults: partition");
}

struct BadHistory {
  const char* name;
  const char* text;
  // Expected in the first error's message.
  const char* line;
  const char* says;
};

TEST_CASE("history: every broken rule is an error naming its line",
          "[jepsen]") {
  const BadHistory cases[] = {
      {"not JSON", "{\"index\":1,\"time\":0\n", "line 1", "not a JSON object"},
      {"not an object", "[1,2]\n", "line 1", "not a JSON object"},
      {"index missing",
       R"({"time":0,"process":1,"type":"invoke","f":"read","key":"a","value":null})",
       "line 1", "\"index\" is missing"},
      {"time a float",
       R"({"index":1,"time":0.5,"process":1,"type":"invoke","f":"read","key":"a","value":null})",
       "line 1 (index 1, process 1)", "\"time\" is missing or not an integer"},
      {"negative process",
       R"({"index":1,"time":0,"process":-2,"type":"invoke","f":"read","key":"a","value":null})",
       "line 1", "non-negative integer or \"nemesis\""},
      {"unknown type",
       R"({"index":1,"time":0,"process":1,"type":"done","f":"read","key":"a","value":null})",
       "line 1", "not invoke, ok, fail or info"},
      {"unknown f",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"incr","key":"a","value":1})",
       "line 1", "not read, write, cas or append"},
      {"key missing",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"read","value":null})",
       "line 1", "\"key\" is missing"},
      {"cas value not a pair",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"cas","key":"a","value":[1]})",
       "line 1", "[old, new]"},
      {"non-increasing index",
       R"({"index":5,"time":0,"process":1,"type":"invoke","f":"read","key":"a","value":null}
{"index":5,"time":1,"process":1,"type":"ok","f":"read","key":"a","value":null})",
       "line 2 (index 5, process 1)", "index 5 does not increase (line 1"},
      {"decreasing time",
       R"({"index":1,"time":10,"process":1,"type":"invoke","f":"read","key":"a","value":null}
{"index":2,"time":9,"process":1,"type":"ok","f":"read","key":"a","value":null})",
       "line 2", "time 9 decreases"},
      {"two open ops on one process",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"read","key":"a","value":null}
{"index":2,"time":1,"process":1,"type":"invoke","f":"write","key":"a","value":3})",
       "line 2 (index 2, process 1)",
       "process 1 invokes while its read invoked on line 1 is still open"},
      {"completion without invoke",
       R"({"index":1,"time":0,"process":1,"type":"ok","f":"write","key":"a","value":3})",
       "line 1",
       "an ok completion of write a without an open invocation on process 1"},
      {"mismatched f",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"write","key":"a","value":3}
{"index":2,"time":1,"process":1,"type":"ok","f":"cas","key":"a","value":[3,4]})",
       "line 2",
       "completes cas a but the open invocation on line 1 is write a"},
      {"mismatched key",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"write","key":"a","value":3}
{"index":2,"time":1,"process":1,"type":"ok","f":"write","key":"b","value":3})",
       "line 2",
       "completes write b but the open invocation on line 1 is write a"},
      {"invoke after info",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"write","key":"a","value":3}
{"index":2,"time":1,"process":1,"type":"info","f":"write","key":"a","value":3}
{"index":3,"time":2,"process":1,"type":"invoke","f":"read","key":"a","value":null})",
       "line 3", "process 1 invokes after its info completion on line 2"},
      {"nemesis not info",
       R"({"index":1,"time":0,"process":"nemesis","type":"invoke","f":"start-kill"})",
       "line 1 (index 1, process nemesis)", "must have type info"},
      {"ok read of a bad value",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"read","key":"a","value":null}
{"index":2,"time":1,"process":1,"type":"ok","f":"read","key":"a","value":"x"})",
       "line 2", "must be null, an integer or an array of integers"},
      {"element appended twice",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"append","key":"l","value":3}
{"index":2,"time":1,"process":1,"type":"ok","f":"append","key":"l","value":3}
{"index":3,"time":2,"process":2,"type":"invoke","f":"append","key":"l","value":3})",
       "line 3", "appends 3 to l, which line 1 already appends"},
      {"write on a list key",
       R"({"index":1,"time":0,"process":1,"type":"invoke","f":"append","key":"l","value":3}
{"index":2,"time":1,"process":1,"type":"ok","f":"append","key":"l","value":3}
{"index":3,"time":2,"process":2,"type":"invoke","f":"write","key":"l","value":4})",
       "line 3", "write on list key l"},
  };
  for (const BadHistory& bad : cases) {
    INFO(bad.name);
    const History history = ParseHistoryText(bad.text);
    CHECK_FALSE(history.valid());
    REQUIRE(history.errors.size() >= 1);
    const std::string message = FirstError(history);
    INFO(message);
    CHECK(message.rfind(bad.line, 0) == 0);
    CHECK(message.find(bad.says) != std::string::npos);
  }
}

TEST_CASE("history: errors are counted past the stored ones", "[jepsen]") {
  std::string text;
  for (int i = 0; i < 150; ++i) text += "garbage\n";
  const History history = ParseHistoryText(text);
  CHECK(history.error_count == 150);
  CHECK(history.errors.size() == History::kMaxStoredErrors);
  CHECK(history.errors.back().line == 100);
}

TEST_CASE("history: an unreadable file is an error, not a history",
          "[jepsen]") {
  const absl::StatusOr<History> history =
      ReadHistoryFile("/nonexistent/driftwood/history.jsonl");
  REQUIRE_FALSE(history.ok());
  CHECK(absl::IsNotFound(history.status()));
  CHECK(std::string(history.status().message())
            .find("/nonexistent/driftwood/history.jsonl") != std::string::npos);
}

}  // namespace
}  // namespace driftwood::jepsen
