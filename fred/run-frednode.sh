#!/usr/bin/env bash
# Runs one real FReD node (the `frednode` program of FReD v0.2.19) in the foreground, with one
# certificate from fred/make-certs.sh for all of its TLS connections: the client API (where our
# proxy connects), the peering API (other frednodes), etcd (the naming service) and triggers.
#
# Usage: fred/run-frednode.sh NODE_ID [options] [-- extra frednode flags]
#   --certs DIR                 uses DIR/NODE_ID.crt, DIR/NODE_ID.key, DIR/ca.crt (default: $FRED_CERTS)
#   --cert F / --key F / --ca F override those three files
#   --nase URL                  etcd client URL (default: https://127.0.0.1:2379)
#   --host ADDR:PORT            client API listen address (default: 127.0.0.1:9001)
#   --peer-host ADDR:PORT       peering listen address (default: 127.0.0.1:5555)
#   --advertise-host H:P        client API address registered in etcd, if it differs from --host
#                               (e.g. --host 0.0.0.0:9001 --advertise-host 10.0.0.2:9001)
#   --peer-advertise-host H:P   peering address other nodes dial, if it differs from --peer-host
#                               (e.g. a fred/delay-relay in front of it). Prefer these two to
#                               FReD's --peer-host-proxy: v0.2.19 then registers --host-proxy as
#                               the client address, empty unless given, and GetKeygroupInfo
#                               fails with "no such node with nodeId=NODE_ID"
#   --adaptor badgerdb|memory   storage (default: badgerdb)
#   --db DIR                    badgerdb folder (default: ./frednode-NODE_ID-db)
#   --log-level LEVEL           debug|info|warn|error|fatal|panic (default: info)
#   --handler dev|prod          log format: dev = coloured console, prod = JSON (default: dev)
#   --nase-cached               cache naming-service answers (faster; stale if config changes)
#   --skip-verify               turn off FReD's certificate checks on the client API, peering
#                               and etcd connections. Test use only. (--trigger-skip-verify is
#                               passed too, but v0.2.19 ignores it: trigger nodes are always
#                               checked against the CA.)
#
# Trigger nodes (registered with AddTrigger) are dialled over TLS with the node's certificate
# as client certificate (--trigger-cert/--trigger-key); their own certificate must chain to the
# CA (--trigger-ca) or to a system root, for the HOST part of the trigger's HOST:PORT.
#
# The program is $FREDNODE, else `frednode` on PATH, else `fred` on PATH (FReD's release archives
# name the same program `fred`). It is NOT shipped with DisCEdge-rs: build it from FReD's own
# source or take it from FReD's own release, following FReD's README.
#
# Flag names: confirmed in FReD's cmd/frednode/main.go (the version with --advertise-host and
# --nase-skip-verify) and in the original DisCEdge's node scripts, which ran v0.2.19 with exactly
# these flags. See fred/README.md.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
die() { echo "run-frednode: $*" >&2; exit 1; }

[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; -*) die "the first argument is the NODE_ID" ;; esac
node_id="$1"; shift
[[ "$node_id" =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ ]] || die "NODE_ID '$node_id': letters, digits, _ and - only"

certs="${FRED_CERTS:-}" cert="" key="" ca="" nase=https://127.0.0.1:2379
host=127.0.0.1:9001 peer_host=127.0.0.1:5555 adv_host="" peer_adv_host=""
adaptor=badgerdb db="" log_level=info handler=dev nase_cached=0 skip_verify=0
while [ $# -gt 0 ]; do
  case "$1" in
    --certs) certs="${2:?}"; shift 2 ;;
    --cert) cert="${2:?}"; shift 2 ;;
    --key) key="${2:?}"; shift 2 ;;
    --ca) ca="${2:?}"; shift 2 ;;
    --nase) nase="${2:?}"; shift 2 ;;
    --host) host="${2:?}"; shift 2 ;;
    --peer-host) peer_host="${2:?}"; shift 2 ;;
    --advertise-host) adv_host="${2:?}"; shift 2 ;;
    --peer-advertise-host) peer_adv_host="${2:?}"; shift 2 ;;
    --adaptor) adaptor="${2:?}"; shift 2 ;;
    --db) db="${2:?}"; shift 2 ;;
    --log-level) log_level="${2:?}"; shift 2 ;;
    --handler) handler="${2:?}"; shift 2 ;;
    --nase-cached) nase_cached=1; shift ;;
    --skip-verify) skip_verify=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$adaptor" in badgerdb|memory) ;; *) die "--adaptor: badgerdb or memory (FReD also has remote and dynamo; pass those yourself after --)" ;; esac
case "$log_level" in debug|info|warn|error|fatal|panic) ;; *) die "--log-level: debug|info|warn|error|fatal|panic" ;; esac
case "$handler" in dev|prod) ;; *) die "--handler: dev or prod" ;; esac

if [ -n "${FREDNODE:-}" ]; then
  [ -x "$FREDNODE" ] || die "FREDNODE=$FREDNODE is not an executable file"
  bin="$FREDNODE"
elif command -v frednode >/dev/null; then
  bin="$(command -v frednode)"
elif command -v fred >/dev/null; then
  bin="$(command -v fred)"
else
  die "no frednode program found (looked at \$FREDNODE, then frednode and fred on PATH).
DisCEdge-rs does not ship FReD. The operator builds it from FReD's own source (the program in
FReD's cmd/frednode; version v0.2.19 is the one DisCEdge was measured with) or takes it from
FReD's own release, following FReD's README, and then either puts it on PATH or sets
FREDNODE=/path/to/frednode.
To try DisCEdge-rs without FReD, use the FReD-compatible test node: fred/run-testbed.sh --test-node"
fi

if [ -n "$certs" ]; then
  cert="${cert:-$certs/$node_id.crt}" key="${key:-$certs/$node_id.key}" ca="${ca:-$certs/ca.crt}"
fi
if [ -z "$cert" ] || [ -z "$key" ] || [ -z "$ca" ]; then
  die "say where the certificates are: --certs DIR (or --cert/--key/--ca)"
fi
for f in "$cert" "$key" "$ca"; do [ -r "$f" ] || die "missing $f (make it: fred/make-certs.sh DIR $node_id)"; done
openssl verify -CAfile "$ca" "$cert" >/dev/null 2>&1 || die "$cert is not signed by $ca"
cn="$(openssl x509 -in "$cert" -noout -subject -nameopt multiline | sed -n 's/^ *commonName *= *//p')"
[ "$cn" = "$node_id" ] || echo "run-frednode: warning: certificate CN is '$cn', not the node id '$node_id' (FReD's docs ask for CN = node id)" >&2
[[ "$nase" == https://* ]] || echo "run-frednode: warning: --nase $nase has no https:// (FReD's examples use https://HOST:2379)" >&2

flags=(
  --nodeID "$node_id"
  --host "$host"
  --peer-host "$peer_host"
  --cert "$cert" --key "$key" --ca-file "$ca"
  --peer-cert "$cert" --peer-key "$key" --peer-ca "$ca"
  --nase-host "$nase" --nase-cert "$cert" --nase-key "$key" --nase-ca "$ca"
  --trigger-cert "$cert" --trigger-key "$key" --trigger-ca "$ca"
  --adaptor "$adaptor"
  --log-level "$log_level" --handler "$handler"
)
[ -z "$adv_host" ] || flags+=(--advertise-host "$adv_host")
[ -z "$peer_adv_host" ] || flags+=(--peer-advertise-host "$peer_adv_host")
if [ "$adaptor" = badgerdb ]; then
  db="${db:-./frednode-$node_id-db}"
  mkdir -p "$db"
  flags+=(--badgerdb-path "$db")
fi
[ "$nase_cached" = 0 ] || flags+=(--nase-cached)
[ "$skip_verify" = 0 ] || flags+=(--skip-verify --peer-skip-verify --nase-skip-verify --trigger-skip-verify)

# frednode reads its settings from environment variables too, and they WIN over the flags. Their
# names are generic (HOST, KEY, CERT, PROXY, LOG_LEVEL, ...), so a stray one in the caller's
# environment would silently change the node. Start it without any of them.
fred_env=(NODEID LAT LONG HOST ADVERTISE_HOST PROXY CERT KEY CA_FILE SKIP_VERIFY STORAGE_ADAPTOR
  PEERING_HOST PEERING_ADVERTISE_HOST PEERING_PROXY PEERING_CERT PEERING_KEY PEERING_CA
  PEERING_ASYNC_REPLICATION PEERING_SKIP_VERIFY LOG_LEVEL LOG_HANDLER NASE_HOST NASE_CERT NASE_KEY
  NASE_CA NASE_SKIP_VERIFY NASE_CACHED REMOTE_STORAGE_HOST REMOTE_STORAGE_CERT REMOTE_STORAGE_KEY
  REMOTE_STORAGE_CA REMOTE_STORAGE_SKIP_VERIFY DYNAMODB_TABLE DYNAMODB_REGION DYNAMODB_PUBLIC_KEY
  DYNAMODB_PRIVATE_KEY DYNAMODB_ENDPOINT DYNAMODB_CREATETABLE BADGERDB_PATH TRIGGER_CERT TRIGGER_KEY
  TRIGGER_CA TRIGGER_SKIP_VERIFY TRIGGER_ASYNC PROFILING_CPU_PATH PROFILING_MEM_PATH)
unset_args=()
for v in "${fred_env[@]}"; do unset_args+=(-u "$v"); done

echo "run-frednode: $bin ${flags[*]} $*" >&2
exec env "${unset_args[@]}" "$bin" "${flags[@]}" "$@"
