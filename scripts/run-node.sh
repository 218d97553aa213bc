#!/usr/bin/env bash
# Runs one edge node on the embedded store: a real llama.cpp server with the small test model
# (unless DISCEDGE_LLAMA_URL is set) and the proxy, listening on $DISCEDGE_LISTEN (127.0.0.1:8080).
# Extra arguments go to `discedge serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-plugins.sh
source scripts/llama.sh
start_llama "${DISCEDGE_LLAMA_URL:-}"
cargo build --release -p discedge
"${CARGO_TARGET_DIR:-target}/release/discedge" serve --llama-url "$LLAMA_URL" --store embedded "$@"
