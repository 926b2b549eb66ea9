#!/usr/bin/env bash
# etcdctl over TLS against a 3-member driftwood-kv cluster whose members also
# talk mutual TLS to each other: a throwaway CA and certificates made here
# with openssl; a put through one member is read through the others (so peer
# TLS works); a client without a certificate, and a plaintext client, are
# refused. Usage: tls_test.sh path/to/driftwood-kv
set -euo pipefail
binary=$(realpath "$1")
export ETCDCTL_API=3
dir=$(mktemp -d /tmp/driftwood-kv-tls-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for log in "$dir"/*.log; do echo "== $log" >&2; tail -n 20 "$log" >&2; done
  exit 1
}

cd "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.pem -days 1 -subj /CN=driftwood-test-ca 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >san.ext
for name in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out "$name.pem" -days 1 -extfile san.ext 2>/dev/null
done

read -r -a ports <<<"$(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
cluster="n0=https://127.0.0.1:${ports[3]},n1=https://127.0.0.1:${ports[4]},n2=https://127.0.0.1:${ports[5]}"
for i in 0 1 2; do
  "$binary" --name "n$i" --data-dir "$dir/n$i" \
    --listen-client-urls "https://127.0.0.1:${ports[$i]}" \
    --listen-peer-urls "https://127.0.0.1:${ports[$((i + 3))]}" \
    --initial-cluster "$cluster" --initial-cluster-token tls \
    --cert-file server.pem --key-file server.key --trusted-ca-file ca.pem \
    --client-cert-auth \
    --peer-cert-file server.pem --peer-key-file server.key \
    --peer-trusted-ca-file ca.pem >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done
tls=(--cacert ca.pem --cert client.pem --key client.key)
endpoint() { echo "https://127.0.0.1:${ports[$1]}"; }

deadline=$((SECONDS + 30))
until etcdctl --endpoints="$(endpoint 0)" "${tls[@]}" --command-timeout=1s \
    put tls/key secret >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || fail "no put succeeded over TLS within 30 s"
  sleep 0.2
done
for i in 1 2; do
  got=$(etcdctl --endpoints="$(endpoint "$i")" "${tls[@]}" get tls/key --print-value-only)
  [ "$got" = secret ] || fail "member n$i read '$got' over TLS, expected 'secret'"
done
if etcdctl --endpoints="$(endpoint 0)" --cacert ca.pem --command-timeout=2s \
    get tls/key >/dev/null 2>&1; then
  fail "a client without a certificate was served despite --client-cert-auth"
fi
if etcdctl --endpoints="127.0.0.1:${ports[0]}" --command-timeout=2s \
    get tls/key >/dev/null 2>&1; then
  fail "a plaintext client was served by a TLS member"
fi
echo "PASS: etcdctl over TLS (client certificates required), members over mutual TLS"
