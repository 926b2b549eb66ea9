// What the MVCC tests of leases and watches share (mvcc_lease_test.cc,
// watch_hub_test.cc): a put command, and comparing lists of watch events.
#ifndef DRIFTWOOD_TESTS_STATEMACHINE_MVCC_EVENTS_CHECK_H_
#define DRIFTWOOD_TESTS_STATEMACHINE_MVCC_EVENTS_CHECK_H_

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "statemachine/mvcc/mvcc_store.h"

namespace driftwood::mvcc {

inline MvccCommand PutCommand(const std::string& key, const std::string& value,
                              int64_t lease = 0) {
  MvccCommand command;
  command.mutable_put()->set_key(key);
  command.mutable_put()->set_value(value);
  command.mutable_put()->set_lease(lease);
  return command;
}

inline std::string DescribeEvents(const std::vector<mvccpb::Event>& events) {
  std::string out;
  for (const mvccpb::Event& event : events) {
    absl::StrAppend(&out, event.ShortDebugString(), "\n");
  }
  return out;
}

// The same events, in the same order, field for field.
inline void CheckSameEvents(const std::vector<mvccpb::Event>& actual,
                            const std::vector<mvccpb::Event>& expected) {
  INFO("actual:\n"
       << DescribeEvents(actual) << "expected:\n"
       << DescribeEvents(expected));
  REQUIRE(actual.size() == expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    INFO("event " << i);
    CHECK(actual[i].SerializeAsString() == expected[i].SerializeAsString());
  }
}

}  // namespace driftwood::mvcc

#endif  // DRIFTWOOD_TESTS_STATEMACHINE_MVCC_EVENTS_CHECK_H_
