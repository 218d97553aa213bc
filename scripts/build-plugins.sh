#!/usr/bin/env bash
# Builds the policy components and installs them where the proxy and its tests look:
#   plugins/dist/MODE.wasm        the shipped policies (the proxy watches this folder; the file
#                                 stem is the mode name)
#   testdata/policies/faulty.wasm the misbehaving fixture for the host's sandboxing tests
# Each file is copied to a temporary name next to its destination and then renamed, so a
# watching proxy never loads a half-written component.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
out="$target_dir/wasm32-wasip2/release"

cd "$repo"
cargo build --release --target wasm32-wasip2 \
    -p policy-raw -p policy-tokenized -p policy-truncate -p policy-summarize -p policy-client-side -p policy-faulty -p policy-future-version

# install_atomically SOURCE DEST: atomically replace DEST with SOURCE.
install_atomically() {
    local dest_dir
    dest_dir="$(dirname "$2")"
    mkdir -p "$dest_dir"
    local tmp
    tmp="$(mktemp "$dest_dir/.$(basename "$2").XXXXXX")"
    cp "$1" "$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$2"
    echo "installed $2 ($(stat -c %s "$2") bytes)"
}

for mode in raw tokenized truncate summarize client-side; do
    install_atomically "$out/policy_${mode//-/_}.wasm" "$repo/plugins/dist/$mode.wasm"
done
install_atomically "$out/policy_faulty.wasm" "$repo/testdata/policies/faulty.wasm"
install_atomically "$out/policy_future_version.wasm" "$repo/testdata/policies/future-version.wasm"
