#include "tests/support/datadriven.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace driftwood::testing {

std::vector<std::string> TestCase::Positional() const {
  std::vector<std::string> result;
  for (const Arg& arg : args) {
    if (arg.values.empty()) result.push_back(arg.key);
  }
  return result;
}

std::optional<std::vector<std::string>> TestCase::Values(
    const std::string& key) const {
  for (const Arg& arg : args) {
    if (arg.key == key && !arg.values.empty()) return arg.values;
  }
  return std::nullopt;
}

std::string TestCase::Value(const std::string& key,
                            const std::string& fallback) const {
  auto values = Values(key);
  return values && values->size() == 1 ? (*values)[0] : fallback;
}

bool RewriteMode() {
  const char* value = std::getenv("DRIFTWOOD_REWRITE");
  return value != nullptr && std::string(value) == "1";
}

namespace {

std::vector<Arg> ParseArgs(const std::vector<std::string>& tokens) {
  std::vector<Arg> args;
  for (const std::string& token : tokens) {
    Arg arg;
    const size_t eq = token.find('=');
    if (eq == std::string::npos) {
      arg.key = token;
    } else {
      arg.key = token.substr(0, eq);
      absl::string_view value = absl::string_view(token).substr(eq + 1);
      if (absl::ConsumePrefix(&value, "(") &&
          absl::ConsumeSuffix(&value, ")")) {
        for (absl::string_view part : absl::StrSplit(value, ',')) {
          arg.values.emplace_back(part);
        }
      } else {
        arg.values.emplace_back(value);
      }
    }
    args.push_back(std::move(arg));
  }
  return args;
}

std::string TrimTrailingNewlines(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

}  // namespace

std::vector<Mismatch> RunDataDrivenFile(
    const std::string& path,
    const std::function<std::string(const TestCase&)>& handler) {
  std::ifstream in(path);
  if (!in) return {{path, "", "", "cannot open the script"}};
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);

  std::vector<Mismatch> mismatches;
  std::string rewritten;
  size_t i = 0;
  while (i < lines.size()) {
    const std::string& line = lines[i];
    if (line.empty() || line[0] == '#') {
      rewritten += line + "\n";
      ++i;
      continue;
    }
    TestCase test_case;
    test_case.position = absl::StrCat(path, ":", i + 1);
    const std::string command_line = line;
    std::vector<std::string> tokens =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    test_case.command = tokens[0];
    tokens.erase(tokens.begin());
    test_case.args = ParseArgs(tokens);
    ++i;
    if (i >= lines.size() || lines[i] != "----") {
      mismatches.push_back({test_case.position, command_line, "----",
                            "missing '----' after the command"});
      return mismatches;
    }
    ++i;
    std::string expected;
    while (i < lines.size() && !lines[i].empty()) {
      expected += lines[i] + "\n";
      ++i;
    }
    test_case.expected = TrimTrailingNewlines(expected);
    std::string actual = TrimTrailingNewlines(handler(test_case));
    if (actual.empty()) actual = "ok";
    if (actual != test_case.expected) {
      mismatches.push_back(
          {test_case.position, command_line, test_case.expected, actual});
    }
    rewritten += command_line + "\n----\n" + actual + "\n";
  }
  if (RewriteMode()) {
    std::ofstream out(path, std::ios::trunc);
    out << rewritten;
    return {};
  }
  return mismatches;
}

}  // namespace driftwood::testing
