#!/usr/bin/env bash
# Runs the FReD conformance suite (fred/testnode/tests/conformance) against REAL FReD: it starts
# one TLS etcd (fred/run-etcd.sh) and two frednodes, nodeA and nodeB (fred/run-frednode.sh,
# memory adaptor), on free loopback ports with throw-away certificates (the trigger cases serve
# their mTLS trigger nodes from the test process), runs every case, then kills them all and
# removes their temporary folder. Without FREDNODE the same suite runs
# against our test node in `cargo test -p fred-testnode`; this script is for the real thing.
#
# Usage: FREDNODE=/path/to/frednode fred/conformance.sh [NAME_FILTER]
#   FREDNODE   the frednode program of FReD v0.2.19 (required)
#   ETCD       the etcd program (default: etcd on PATH; Debian: apt-get install etcd-server)
#   CARGO_TARGET_DIR, CARGO_* are passed to cargo as usual.
# Prints one line per case and "test result: ... N passed; N failed"; exits 1 if any failed.
set -euo pipefail
case "${1:-}" in -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;; esac
die() { echo "conformance: $*" >&2; exit 1; }

[ -n "${FREDNODE:-}" ] || die "set FREDNODE=/path/to/frednode (FReD v0.2.19); see fred/README.md"
[ -x "$FREDNODE" ] || die "FREDNODE=$FREDNODE is not an executable file"
command -v "${ETCD:-etcd}" >/dev/null || die "etcd not found (apt-get install etcd-server, or ETCD=/path/to/etcd)"
command -v openssl >/dev/null || die "openssl not found (the run-*.sh scripts check certificates with it)"

FREDNODE="$(cd "$(dirname "$FREDNODE")" && pwd)/$(basename "$FREDNODE")"
export FREDNODE
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
exec cargo test -p fred-testnode --test conformance -- "$@"
