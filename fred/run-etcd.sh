#!/usr/bin/env bash
# Runs one etcd member as FReD's naming service (NaSe), in the foreground, with TLS and client
# certificate authentication, using the layout of fred/make-certs.sh.
#
# Usage: fred/run-etcd.sh [options] DATA_DIR
#   --certs DIR        folder with ca.crt, NAME.crt, NAME.key (default: $FRED_CERTS)
#   --cert-name NAME   certificate etcd serves with (default: etcd). It needs an IP SAN (or DNS
#                      SAN) for the address in --client-url; make-certs.sh always adds 127.0.0.1.
#   --client-url URL   where clients (frednodes) connect (default: https://127.0.0.1:2379)
#   --peer-url URL     etcd's own peer port, unused by FReD (default: http://127.0.0.1:2380)
#   --name NAME        member name (default: nase)
#   --log-level LEVEL  debug|info|warn|error (default: warn)
# Extra arguments after `--` go to etcd unchanged. The etcd binary is $ETCD or `etcd` on PATH.
#
# Every frednode must then get --nase-host CLIENT_URL and a certificate from the same CA.
# Checked with Debian 12's etcd 3.4.23 (apt-get install etcd-server etcd-client); the flags are
# the same in etcd 3.5, which FReD's own examples use.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
die() { echo "run-etcd: $*" >&2; exit 1; }

certs="${FRED_CERTS:-}" cert_name=etcd client_url=https://127.0.0.1:2379
peer_url=http://127.0.0.1:2380 name=nase log_level=warn
while [ $# -gt 0 ]; do
  case "$1" in
    --certs) certs="${2:?}"; shift 2 ;;
    --cert-name) cert_name="${2:?}"; shift 2 ;;
    --client-url) client_url="${2:?}"; shift 2 ;;
    --peer-url) peer_url="${2:?}"; shift 2 ;;
    --name) name="${2:?}"; shift 2 ;;
    --log-level) log_level="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    --) break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "${data_dir:-}" ] || die "one DATA_DIR only"; data_dir="$1"; shift ;;
  esac
done
[ "${1:-}" != -- ] || shift
[ -n "${data_dir:-}" ] || usage
[ -n "$certs" ] || die "say where the certificates are: --certs DIR or FRED_CERTS=DIR (make them with fred/make-certs.sh)"
[[ "$client_url" == https://* ]] || die "--client-url must be https:// (FReD talks to etcd over TLS only)"

etcd_bin="${ETCD:-etcd}"
if ! command -v "$etcd_bin" >/dev/null; then
  die "etcd not found (looked for '${etcd_bin}'). On Debian 12: apt-get install etcd-server etcd-client
(etcd 3.4.23), or put an etcd v3.4/v3.5 release binary on PATH or in ETCD=/path/to/etcd."
fi

ca="$certs/ca.crt" crt="$certs/$cert_name.crt" key="$certs/$cert_name.key"
for f in "$ca" "$crt" "$key"; do [ -r "$f" ] || die "missing $f (fred/make-certs.sh $certs $cert_name)"; done
openssl verify -CAfile "$ca" "$crt" >/dev/null 2>&1 || die "$crt is not signed by $ca"

# The certificate must name the host clients dial, or their TLS check of etcd fails.
hostport="${client_url#https://}"; host="${hostport%:*}"; host="${host#[}"; host="${host%]}"
if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then
  openssl verify -CAfile "$ca" -verify_ip "$host" "$crt" >/dev/null 2>&1 \
    || die "$crt has no IP SAN $host; remake it: fred/make-certs.sh --force $certs $cert_name=$host"
elif [ "$host" != localhost ]; then
  openssl verify -CAfile "$ca" -verify_hostname "$host" "$crt" >/dev/null 2>&1 \
    || die "$crt has no DNS SAN $host; remake it: fred/make-certs.sh --force $certs $cert_name=DNS:$host"
fi

mkdir -p "$data_dir"
chmod 700 "$data_dir"

cat >&2 <<EOF
run-etcd: starting etcd '$name' for clients at $client_url (data in $data_dir)
run-etcd: check it is healthy with:
  ETCDCTL_API=3 etcdctl --endpoints $client_url --cacert $ca --cert $crt --key $key endpoint health
EOF

exec "$etcd_bin" \
  --name "$name" \
  --data-dir "$data_dir" \
  --listen-client-urls "$client_url" \
  --advertise-client-urls "$client_url" \
  --listen-peer-urls "$peer_url" \
  --initial-advertise-peer-urls "$peer_url" \
  --initial-cluster "$name=$peer_url" \
  --initial-cluster-token discedge-nase \
  --initial-cluster-state new \
  --cert-file "$crt" \
  --key-file "$key" \
  --trusted-ca-file "$ca" \
  --client-cert-auth \
  --logger zap --log-outputs stderr --log-level "$log_level" \
  "$@"
