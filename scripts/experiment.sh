#!/usr/bin/env bash
# The paper's comparison as one command: runs scenario files in every mode (raw, tokenized,
# truncate, client-side) against a real llama.cpp server, then writes the report (report.md
# and SVG plots) and prints its table.
#
#   scripts/experiment.sh [OUT_DIR] [SCENARIO.yml ...]
#
# OUT_DIR defaults to experiment-out; the scenarios default to the short ones in
# testdata/scenarios. Starts a llama.cpp server with the small test model unless
# DISCEDGE_LLAMA_URL points at one.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-experiment-out}"
shift || true
scenarios=("$@")
if [ ${#scenarios[@]} -eq 0 ]; then
  scenarios=(testdata/scenarios/houseplants.yml testdata/scenarios/sourdough.yml
             testdata/scenarios/lisbon-trip.yml testdata/scenarios/rust-ownership.yml)
fi
scripts/setup.sh
scripts/build-plugins.sh
source scripts/llama.sh
start_llama "${DISCEDGE_LLAMA_URL:-}"
cargo build --release -p discedge
bin="${CARGO_TARGET_DIR:-target}/release/discedge"
for scenario in "${scenarios[@]}"; do
  "$bin" scenario "$scenario" --mode all --llama-url "$LLAMA_URL" --out "$out"
done
"$bin" report "$out"
