// Small hand-written histories for jepsen-check's tests: ops are declared as
// intervals and rendered as JSON Lines in time order.
#ifndef DRIFTWOOD_TESTS_JEPSEN_CHECKER_HISTORY_BUILDER_H_
#define DRIFTWOOD_TESTS_JEPSEN_CHECKER_HISTORY_BUILDER_H_

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "jepsen/checker/history.h"
#include "tests/jepsen/checker/random_history.h"

namespace driftwood::jepsen::testing {

class HistoryBuilder {
 public:
  // A client op invoked at `invoke` and completing at `complete` with
  // `type` (ok, fail or info; "" leaves it open). `value` is the
  // invocation's value; the completion carries `output`, or `value` when
  // `output` is empty.
  HistoryBuilder& Add(int64_t process, const std::string& f,
                      const std::string& key, int64_t invoke, int64_t complete,
                      const std::string& type, const std::string& value,
                      const std::string& output = "") {
    events_.push_back(Event{invoke, process, "invoke", f, key, value,
                            absl::StrCat("n", process % 3 + 1), ops_});
    if (!type.empty()) {
      events_.push_back(Event{complete, process, type, f, key,
                              output.empty() ? value : output,
                              absl::StrCat("n", process % 3 + 1), ops_});
    }
    ++ops_;
    return *this;
  }
  HistoryBuilder& Read(int64_t process, const std::string& key, int64_t invoke,
                       int64_t complete, const std::string& output,
                       const std::string& type = "ok") {
    return Add(process, "read", key, invoke, complete, type, "null", output);
  }
  HistoryBuilder& Write(int64_t process, const std::string& key, int64_t invoke,
                        int64_t complete, int64_t value,
                        const std::string& type = "ok") {
    return Add(process, "write", key, invoke, complete, type,
               absl::StrCat(value));
  }
  HistoryBuilder& Cas(int64_t process, const std::string& key, int64_t invoke,
                      int64_t complete, int64_t old_value, int64_t new_value,
                      const std::string& type = "ok") {
    return Add(process, "cas", key, invoke, complete, type,
               absl::StrCat("[", old_value, ",", new_value, "]"));
  }
  HistoryBuilder& Append(int64_t process, const std::string& key,
                         int64_t invoke, int64_t complete, int64_t element,
                         const std::string& type = "ok") {
    return Add(process, "append", key, invoke, complete, type,
               absl::StrCat(element));
  }
  // A fault window; `stop` < 0 leaves it open.
  HistoryBuilder& Fault(const std::string& kind, int64_t start, int64_t stop) {
    events_.push_back(
        Event{start, -1, "info", "start-" + kind, "", "null", "", -1});
    if (stop >= 0) {
      events_.push_back(
          Event{stop, -1, "info", "stop-" + kind, "", "null", "", -1});
    }
    return *this;
  }

  std::string Text() const {
    std::vector<Event> sorted = events_;
    std::stable_sort(
        sorted.begin(), sorted.end(),
        [](const Event& a, const Event& b) { return a.time < b.time; });
    return ToJsonLines(sorted);
  }
  History Build() const { return ParseHistoryText(Text()); }

 private:
  std::vector<Event> events_;
  int64_t ops_ = 0;
};

}  // namespace driftwood::jepsen::testing

#endif  // DRIFTWOOD_TESTS_JEPSEN_CHECKER_HISTORY_BUILDER_H_
