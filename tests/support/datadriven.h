// Driftwood: a runner for data-driven test scripts (etcd's datadriven style).
//
// A script is a sequence of cases separated by blank lines:
//
//   # a comment
//   command arg key=value key=(a,b)
//   ----
//   expected output, one or more lines
//
// The handler turns each command into output text, which must equal the
// expected text exactly. With DRIFTWOOD_REWRITE=1 in the environment the file
// is rewritten with the actual outputs instead, to be reviewed as a diff.
// Output must not contain blank lines; an empty output is written as "ok".
#ifndef DRIFTWOOD_TESTS_SUPPORT_DATADRIVEN_H_
#define DRIFTWOOD_TESTS_SUPPORT_DATADRIVEN_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace driftwood::testing {

// One argument: a bare word ("3"), key=value or key=(v1,v2,...).
struct Arg {
  std::string key;
  std::vector<std::string> values;
};

struct TestCase {
  // "file:line" of the command, for failure messages.
  std::string position;
  std::string command;
  std::vector<Arg> args;
  std::string expected;

  // Positional (bare) arguments, in order.
  std::vector<std::string> Positional() const;
  // The values of key=..., or nullopt.
  std::optional<std::vector<std::string>> Values(const std::string& key) const;
  // A single value of key=..., or `fallback`.
  std::string Value(const std::string& key, const std::string& fallback) const;
};

struct Mismatch {
  std::string position;
  std::string command_line;
  std::string expected;
  std::string actual;
};

// Runs every case of `path` through `handler`. Returns the mismatches (none in
// rewrite mode, where the file is rewritten). A file that cannot be read or
// parsed is reported as a mismatch at its position.
std::vector<Mismatch> RunDataDrivenFile(
    const std::string& path,
    const std::function<std::string(const TestCase&)>& handler);

bool RewriteMode();

}  // namespace driftwood::testing

#endif  // DRIFTWOOD_TESTS_SUPPORT_DATADRIVEN_H_
