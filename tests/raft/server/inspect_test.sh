#!/usr/bin/env bash
# driftwood_inspect on a node that replica_scenario wrote: a healthy restart
# plan, DataLoss without the snapshots, and DataLoss naming the corrupt file.
# Usage: inspect_test.sh REPLICA_SCENARIO DRIFTWOOD_INSPECT
set -uo pipefail
scenario=$1
inspect=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAILED: $*"; exit 1; }

"$scenario" --scenario create --kind 2 --root "$dir" || fail "scenario"
args=(--log "$dir/log" --cluster-id 7 --node-id 1)

out=$("$inspect" "${args[@]}" --snapshots "$dir/snapshots" --verify-all)
code=$?
echo "$out"
[ $code -eq 0 ] || fail "healthy node: exit $code"
grep -q "entries: 116..120" <<<"$out" || fail "log range"
grep -q "restore the state machine from snapshot 120" <<<"$out" || fail "plan"

out=$("$inspect" "${args[@]}")
code=$?
echo "$out"
[ $code -eq 3 ] || fail "without snapshots: exit $code, expected 3"
grep -q "REFUSED: DATA_LOSS" <<<"$out" || fail "without snapshots: no DataLoss"

# Flip a byte of snapshot 120's data file.
data=$(find "$dir/snapshots" -path '*snap-*120-*' -type f ! -name SNAPSHOT_META | head -1)
[ -n "$data" ] || fail "no data file for snapshot 120"
printf '\xff' | dd of="$data" bs=1 seek=10 conv=notrunc status=none
out=$("$inspect" "${args[@]}" --snapshots "$dir/snapshots")
code=$?
echo "$out"
[ $code -eq 3 ] || fail "corrupt snapshot: exit $code, expected 3"
grep -q "kv.data is corrupt" <<<"$out" || fail "corrupt snapshot file not named"

"$inspect" --log "$dir/log" >/dev/null 2>&1
[ $? -eq 2 ] || fail "missing flags must exit 2"
echo "inspect_test passed"
