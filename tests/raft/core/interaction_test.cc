// Scripted interaction tests: every file in testdata/ is a scenario with its
// exact expected trace. DRIFTWOOD_REWRITE=1 regenerates the expectations.
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/datadriven.h"
#include "tests/support/interaction_env.h"

namespace driftwood::testing {
namespace {

std::vector<std::string> Scripts() {
  std::vector<std::string> paths;
  for (const auto& entry :
       std::filesystem::directory_iterator(DRIFTWOOD_TESTDATA_DIR)) {
    if (entry.path().extension() == ".txt") paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

TEST_CASE("interaction scripts reproduce their traces", "[interaction]") {
  const std::vector<std::string> scripts = Scripts();
  // The issue asks for at least ten scenarios; losing files must not pass.
  CHECK(scripts.size() >= 10);
  for (const std::string& path : scripts) {
    SECTION(std::filesystem::path(path).filename().string()) {
      InteractionEnv env;
      const std::vector<Mismatch> mismatches = RunDataDrivenFile(
          path, [&env](const TestCase& tc) { return env.Handle(tc); });
      for (const Mismatch& mismatch : mismatches) {
        INFO(mismatch.position << ": " << mismatch.command_line
                               << "\n--- expected\n"
                               << mismatch.expected << "\n--- actual\n"
                               << mismatch.actual);
        CHECK(mismatch.actual == mismatch.expected);
        break;  // Later cases depend on earlier ones; the first diff matters.
      }
    }
  }
}

}  // namespace
}  // namespace driftwood::testing
