#!/usr/bin/env bash
# Makes the TLS material a FReD test bed needs: one CA and, per NAME, a key and a certificate
# signed by that CA. Needs only openssl.
#
# Usage: fred/make-certs.sh [--force | --skip-existing] [--days N] OUT_DIR NAME[=ADDR[,ADDR...]] ...
#
#   NAME   the certificate's Common Name. FReD takes the user name of a client from the CN of
#          its certificate, so NAME is the node id for a frednode and the FReD user for a proxy.
#          Letters, digits, '.', '_' and '-' only (it is also the file name).
#   ADDR   an extra IPv4/IPv6 address (becomes an IP SAN) or DNS:host (a DNS SAN). Every
#          certificate always carries DNS:localhost and IP:127.0.0.1. Unless a frednode runs with
#          --skip-verify it checks that the address a client connects FROM is an IP SAN of the
#          client's certificate, so list every address the holder connects from.
#
# Writes OUT_DIR/ca.crt, OUT_DIR/ca.key, OUT_DIR/NAME.crt and OUT_DIR/NAME.key (keys are PKCS#8
# PEM, mode 600). Every certificate has keyUsage digitalSignature+keyEncipherment and
# extendedKeyUsage serverAuth+clientAuth, so one certificate serves a node as server (client
# API, peering) and as client (etcd, peers).
#
# An existing CA (ca.crt + ca.key) is kept and used. A NAME whose .crt or .key already exists is
# refused (nothing is written) unless --force (make it anew) or --skip-existing (keep it, after
# checking it is signed by this CA and already has the asked-for IPv4 SANs).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
die() { echo "make-certs: $*" >&2; exit 1; }

command -v openssl >/dev/null || die "openssl not found (Debian: apt-get install openssl)"

force=0 skip=0 days=825
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1; shift ;;
    --skip-existing) skip=1; shift ;;
    --days) [ $# -ge 2 ] || usage; days="$2"; shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
[ "$force" = 1 ] && [ "$skip" = 1 ] && die "--force and --skip-existing exclude each other"
[[ "$days" =~ ^[1-9][0-9]*$ ]] || die "--days wants a positive number, got '$days'"
[ $# -ge 2 ] || usage
out="$1"; shift

is_ipv4() {
  local IFS=. o
  [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
  # shellcheck disable=SC2086 # split on dots on purpose
  for o in $1; do [ "$((10#$o))" -le 255 ] || return 1; done
}
is_ipv6() { [[ "$1" == *:* && "$1" =~ ^[0-9A-Fa-f:.]+$ ]]; }

# Parse and check every argument before writing anything.
names=() sans=()
for arg in "$@"; do
  name="${arg%%=*}"
  [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad NAME '$name' (letters, digits, . _ - only)"
  [ "$name" != ca ] || die "NAME 'ca' is reserved for the CA's files"
  san="DNS:localhost,IP:127.0.0.1"
  if [[ "$arg" == *=* ]]; then
    IFS=, read -r -a addrs <<<"${arg#*=}"
    for a in "${addrs[@]}"; do
      [ -n "$a" ] || continue
      if [[ "$a" == DNS:* ]]; then
        [[ "${a#DNS:}" =~ ^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]] || die "bad DNS name in '$a'"
        san+=",$a"
      elif is_ipv4 "$a" || is_ipv6 "$a"; then
        [ "$a" = 127.0.0.1 ] || san+=",IP:$a"
      else
        die "'$a' (for $name) is neither an IP address nor DNS:host"
      fi
    done
  fi
  for n in "${names[@]+"${names[@]}"}"; do [ "$n" != "$name" ] || die "NAME '$name' given twice"; done
  names+=("$name"); sans+=("$san")
done

mkdir -p "$out"
umask 077
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# --- the CA -------------------------------------------------------------------------------
if [ -e "$out/ca.crt" ] || [ -e "$out/ca.key" ]; then
  if [ ! -s "$out/ca.crt" ] || [ ! -s "$out/ca.key" ]; then
    die "$out has only one of ca.crt / ca.key; restore the other or remove both"
  fi
  # The key must belong to the certificate.
  [ "$(openssl x509 -in "$out/ca.crt" -noout -pubkey)" = "$(openssl pkey -in "$out/ca.key" -pubout)" ] \
    || die "$out/ca.key does not match $out/ca.crt"
  echo "make-certs: keeping the existing CA $out/ca.crt ($(openssl x509 -in "$out/ca.crt" -noout -subject))"
else
  cat >"$tmp/ca.cnf" <<'EOF'
[req]
prompt = no
distinguished_name = dn
x509_extensions = ext
[dn]
O = DisCEdge-rs test bed
CN = DisCEdge-rs test CA
[ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/ca.key" 2>/dev/null
  openssl req -new -x509 -config "$tmp/ca.cnf" -key "$tmp/ca.key" -sha256 \
    -days "$((days * 2))" -out "$tmp/ca.crt"
  mv "$tmp/ca.key" "$out/ca.key"
  chmod 644 "$tmp/ca.crt"
  mv "$tmp/ca.crt" "$out/ca.crt"
  echo "make-certs: new CA $out/ca.crt"
fi

# --- decide per NAME before writing -------------------------------------------------------
todo=()
for i in "${!names[@]}"; do
  name="${names[$i]}"
  if [ -e "$out/$name.crt" ] || [ -e "$out/$name.key" ]; then
    if [ "$force" = 1 ]; then
      todo+=("$i")
    elif [ "$skip" = 1 ]; then
      if [ ! -s "$out/$name.crt" ] || [ ! -s "$out/$name.key" ]; then
        die "$name: only one of $name.crt / $name.key exists; use --force"
      fi
      openssl verify -CAfile "$out/ca.crt" "$out/$name.crt" >/dev/null 2>&1 \
        || die "$name: existing $out/$name.crt is not signed by $out/ca.crt; use --force"
      have="$(openssl x509 -in "$out/$name.crt" -noout -ext subjectAltName 2>/dev/null || true)"
      IFS=, read -r -a want <<<"${sans[$i]}"
      for w in "${want[@]}"; do
        if [[ "$w" != IP:* ]] || ! is_ipv4 "${w#IP:}"; then continue; fi
        grep -Eq "IP Address:${w#IP:}(,|$)" <<<"$have" \
          || die "$name: existing certificate lacks ${w}; use --force to make it anew"
      done
      echo "make-certs: keeping $out/$name.crt"
    else
      die "$out/$name.crt or .key exists; refusing to overwrite it (use --force, or --skip-existing to keep it)"
    fi
  else
    todo+=("$i")
  fi
done

# --- issue --------------------------------------------------------------------------------
for i in "${todo[@]+"${todo[@]}"}"; do
  name="${names[$i]}"
  cat >"$tmp/$name.cnf" <<EOF
[req]
prompt = no
distinguished_name = dn
[dn]
O = DisCEdge-rs test bed
CN = $name
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = ${sans[$i]}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/$name.key" 2>/dev/null
  openssl req -new -config "$tmp/$name.cnf" -key "$tmp/$name.key" -out "$tmp/$name.csr"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$days" \
    -extfile "$tmp/$name.cnf" -extensions leaf -out "$tmp/$name.crt" 2>/dev/null
  openssl verify -CAfile "$out/ca.crt" "$tmp/$name.crt" >/dev/null
  mv -f "$tmp/$name.key" "$out/$name.key"
  chmod 644 "$tmp/$name.crt"
  mv -f "$tmp/$name.crt" "$out/$name.crt"
  echo "make-certs: $out/$name.crt  CN=$name  SAN=${sans[$i]}"
done
