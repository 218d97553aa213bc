#!/usr/bin/env bash
# Checks this folder's scripts on loopback, without FReD:
#  1. make-certs.sh: chain, CN, key usages, SANs, keep-the-CA, refuse-to-overwrite, --skip-existing
#  2. a real mutual-TLS handshake (openssl s_server -Verify / s_client -cert): accepted with a
#     certificate from our CA, refused without one and with one from another CA
#  3. if etcd and etcdctl are installed: run-etcd.sh serves TLS with client-certificate auth
#     (healthy with a node's certificate, refused without one)
# Prints one line per check and "N passed, N failed" at the end; exits 1 if any check failed.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;; esac

fred_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0 failed=0
check() { # check NAME CMD...: CMD must succeed
  local name="$1"; shift
  if "$@" >"$work/out" 2>&1; then passed=$((passed + 1)); echo "ok    $name"
  else failed=$((failed + 1)); echo "FAIL  $name"; sed 's/^/      /' "$work/out" | tail -n 5; fi
}
refuse() { # refuse NAME CMD...: CMD must fail
  local name="$1"; shift
  if "$@" >"$work/out" 2>&1; then failed=$((failed + 1)); echo "FAIL  $name (it succeeded)"
  else passed=$((passed + 1)); echo "ok    $name"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
has() { grep -q -- "$2" <<<"$(openssl x509 -in "$1" -noout -text)"; }

c="$work/certs"
# --- 1. certificates ---------------------------------------------------------------------------
check "make-certs makes a CA and three certificates" "$fred_dir/make-certs.sh" "$c" etcd nodeA nodeB=10.20.30.40
for n in etcd nodeA nodeB; do
  check "$n.crt chains to ca.crt" openssl verify -CAfile "$c/ca.crt" "$c/$n.crt"
  check "$n.crt has CN=$n" bash -c "openssl x509 -in '$c/$n.crt' -noout -subject -nameopt multiline | grep -q 'commonName *= *$n\$'"
  check "$n.crt is valid for TLS client auth from 127.0.0.1" openssl verify -CAfile "$c/ca.crt" -purpose sslclient -verify_ip 127.0.0.1 "$c/$n.crt"
  check "$n.crt is valid for TLS server auth as localhost" openssl verify -CAfile "$c/ca.crt" -purpose sslserver -verify_hostname localhost "$c/$n.crt"
  check "$n.crt key usages" has "$c/$n.crt" "Digital Signature, Key Encipherment"
  check "$n.crt extended key usages" has "$c/$n.crt" "TLS Web Server Authentication, TLS Web Client Authentication"
done
check "nodeB.crt carries the extra IP SAN" openssl verify -CAfile "$c/ca.crt" -verify_ip 10.20.30.40 "$c/nodeB.crt"
refuse "nodeA.crt is not valid for another IP" openssl verify -CAfile "$c/ca.crt" -verify_ip 10.20.30.40 "$c/nodeA.crt"
check "keys are private (mode 600)" bash -c "[ \"\$(stat -c %a '$c/ca.key' '$c/nodeA.key' | sort -u)\" = 600 ]"
ca_before="$(openssl x509 -in "$c/ca.crt" -noout -fingerprint)"
refuse "an existing certificate is not overwritten" "$fred_dir/make-certs.sh" "$c" nodeA
check "--skip-existing keeps nodeA and adds discedge" "$fred_dir/make-certs.sh" --skip-existing "$c" nodeA discedge
refuse "--skip-existing refuses a certificate that lacks an asked-for IP" "$fred_dir/make-certs.sh" --skip-existing "$c" nodeA=10.9.9.9
check "--force makes nodeA anew" "$fred_dir/make-certs.sh" --force "$c" nodeA=10.9.9.9
check "the CA was kept" test "$ca_before" = "$(openssl x509 -in "$c/ca.crt" -noout -fingerprint)"
check "other CA for the negative tests" "$fred_dir/make-certs.sh" "$work/other" intruder

# --- 2. mutual TLS handshake --------------------------------------------------------------------
port="$(free_port)"
timeout 60 openssl s_server -accept "127.0.0.1:$port" -cert "$c/nodeA.crt" -key "$c/nodeA.key" \
  -CAfile "$c/ca.crt" -Verify 1 -verify_return_error -www >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
client() { echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -CAfile "$c/ca.crt" -verify_return_error "$@" 2>&1; }
mtls_ok() { client -cert "$c/discedge.crt" -key "$c/discedge.key" -verify_hostname localhost | grep -q "Verification: OK" && grep -q "CN = discedge" "$work/server.log"; }
check "mTLS handshake with a certificate from our CA (server sees CN=discedge)" mtls_ok
# With TLS 1.3 the client learns of the refusal only when it reads; the server log is the judge.
no_cert() { client >/dev/null; grep -q "peer did not return a certificate" "$work/server.log"; }
check "handshake without a client certificate is refused" no_cert
other_ca() { client -cert "$work/other/intruder.crt" -key "$work/other/intruder.key" >/dev/null; grep -q "certificate verify failed" "$work/server.log"; }
check "handshake with a certificate from another CA is refused" other_ca
kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""

# --- 3. etcd with TLS client-certificate auth -----------------------------------------------
if command -v "${ETCD:-etcd}" >/dev/null && command -v etcdctl >/dev/null; then
  cport="$(free_port)" pport="$(free_port)"
  "$fred_dir/run-etcd.sh" --certs "$c" --client-url "https://127.0.0.1:$cport" \
    --peer-url "http://127.0.0.1:$pport" "$work/etcd" >"$work/etcd.log" 2>&1 &
  server_pid=$!
  ctl() { ETCDCTL_API=3 etcdctl --endpoints "https://127.0.0.1:$cport" --cacert "$c/ca.crt" \
    --dial-timeout 2s --command-timeout 3s "$@"; }
  healthy() { for _ in $(seq 1 50); do ctl --cert "$c/nodeA.crt" --key "$c/nodeA.key" endpoint health && return 0; sleep 0.2; done; return 1; }
  check "run-etcd.sh: etcd healthy for a client with a node certificate" healthy
  check "etcd stores and returns a key over mTLS" bash -c "$(declare -f ctl); cport=$cport c=$c; ctl --cert \$c/nodeB.crt --key \$c/nodeB.key put selftest 1 && ctl --cert \$c/nodeB.crt --key \$c/nodeB.key get selftest | grep -qx 1"
  refuse "etcd refuses a client without a certificate" ctl endpoint health
  refuse "etcd refuses a client certificate from another CA" ctl --cert "$work/other/intruder.crt" --key "$work/other/intruder.key" endpoint health
  kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""
else
  echo "skip  etcd checks (no etcd/etcdctl; Debian: apt-get install etcd-server etcd-client)"
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
