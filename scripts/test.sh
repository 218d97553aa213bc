#!/usr/bin/env bash
# Runs every test. Installs what is missing (scripts/setup.sh), builds the policy components,
# starts a real llama.cpp server with a real small model (or uses DISCEDGE_TEST_LLAMA_URL, to
# check a real deployment), then runs the Rust tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# First the layering: no crate's modules may import each other in a cycle (seconds, no build).
scripts/check-layers.py
scripts/setup.sh
scripts/build-plugins.sh
source scripts/llama.sh
start_llama "${DISCEDGE_TEST_LLAMA_URL:-}"
export DISCEDGE_TEST_LLAMA_URL="$LLAMA_URL"
echo "tests use llama-server at $DISCEDGE_TEST_LLAMA_URL"
scripts/fuzz.sh 20
log="$(mktemp)"
cargo test -p discedge -p discedge-core -p discedge-fred -p discedge-server -p discedge-lab -p discedge-kit \
    -p discedge-tokenizer -p discedge-policy-sdk -p fred-testnode -p delay-relay 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
