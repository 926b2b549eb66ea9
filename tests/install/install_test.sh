#!/usr/bin/env bash
# Installs a Driftwood build tree into a temporary prefix, checks what was
# installed, then configures, builds and runs tests/install/consumer against
# the installed package only. Removes every folder it made. Exit 0 on success.
# Usage: install_test.sh BUILD_DIR CONSUMER_DIR CMAKE CXX CXX_FLAGS LINKER_FLAGS
set -euo pipefail
build_dir=$1
consumer_dir=$2
cmake=$3
cxx=$4
cxx_flags=$5
linker_flags=$6

work=$(mktemp -d "${TMPDIR:-/tmp}/driftwood-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
fail() { echo "FAILED: $*"; exit 1; }
start_ns=$(date +%s%N)

"$cmake" --install "$build_dir" --prefix "$prefix" >"$work/install.log" ||
  { cat "$work/install.log"; fail "cmake --install"; }

# The package and the three targets the README names.
config=$(find "$prefix" -name DriftwoodConfig.cmake)
[ -n "$config" ] || fail "no DriftwoodConfig.cmake installed"
for target in raft grpc_transport statemachine; do
  grep -q "Driftwood::$target " "$(dirname "$config")/DriftwoodTargets.cmake" ||
    fail "Driftwood::$target is not exported"
done

# Every Driftwood header an installed header includes is installed too.
include_dir=$prefix/include
while IFS= read -r header; do
  while IFS= read -r included; do
    [ -f "$include_dir/$included" ] ||
      fail "$header includes $included, which is not installed"
  done < <(sed -n 's/^#include "\(\(raft\|rpc\|statemachine\)\/[^"]*\)".*/\1/p' \
    "$include_dir/$header")
done < <(cd "$include_dir" && find raft rpc statemachine -name '*.h' | sort)
# Internals stay internal: no codec, no generated code, no test support.
for private in rpc/codec.h rpc/proto tests bench tools; do
  [ ! -e "$include_dir/$private" ] || fail "$private was installed"
done
echo "installed $(find "$include_dir" -name '*.h' | wc -l) headers and" \
  "$(find "$prefix" -name '*.a' | wc -l) libraries"

# The consumer sees the installed package only.
"$cmake" -S "$consumer_dir" -B "$work/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_CXX_FLAGS="$cxx_flags" -DCMAKE_EXE_LINKER_FLAGS="$linker_flags" \
  >"$work/configure.log" || { cat "$work/configure.log"; fail "configure"; }
ninja -C "$work/build" -j2 || fail "build"
"$work/build/replicated_counter" "$work/data" 100 || fail "replicated_counter"
echo "install_test passed in $(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
