// jepsen-check: the offline checker of the Jepsen-style harness (jepsen/).
// See jepsen/checker/cli.h for the command line and the exit codes.
#include <iostream>
#include <string>
#include <vector>

#include "jepsen/checker/cli.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  return driftwood::jepsen::RunCheck(args, std::cout, std::cerr);
}
