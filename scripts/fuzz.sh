#!/usr/bin/env bash
# Fuzzes request parsing and the policy boundary for a bounded time with cargo fuzz (libFuzzer).
#
#   scripts/fuzz.sh [SECONDS]     SECONDS of fuzzing per target (default 30)
#
# Targets (fuzz/fuzz_targets): parse_request (any bytes as a /completion body) and
# policy_boundary (any stored records and request through each shipped policy, in wasmtime).
# Each run starts from the committed seeds (fuzz/seeds/TARGET) and crash regressions
# (fuzz/regressions/TARGET), which libFuzzer replays first, plus a corpus kept between runs
# outside the repository ($DISCEDGE_CACHE/fuzz-corpus/TARGET). The two targets run at the same
# time, one per core. Exits non-zero if any target crashes; the log then shows the input
# (Base64 and Debug) and libFuzzer leaves it in fuzz/artifacts/TARGET/. A crash that is fixed
# becomes a file in fuzz/regressions/TARGET (also replayed by `cargo test --manifest-path
# fuzz/Cargo.toml`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
seconds="${1:-30}"
cache="${DISCEDGE_CACHE:-$HOME/.cache/discedge}"
# AddressSanitizer (cargo fuzz's default) works with wasmtime and costs little build time here
# (cold build on 2 cores: about 7 min with it, 5.5 min without), so it stays on: it watches the
# unsafe code on the host side of the boundary (wasmtime's runtime, the host calls), which no
# panic would reveal. It does make runs 5 to 6 times slower (policy_boundary about 1,200
# against 7,400 runs/s; parse_request 40,000 against 230,000). DISCEDGE_FUZZ_SANITIZER=none
# trades that watch for runs (its own build folder, so switching rebuilds nothing).
sanitizer="${DISCEDGE_FUZZ_SANITIZER:-address}"
if [ "$sanitizer" = address ]; then
    target_dir="${DISCEDGE_FUZZ_TARGET_DIR:-$cache/fuzz-target}"
else
    target_dir="${DISCEDGE_FUZZ_TARGET_DIR:-$cache/fuzz-target-$sanitizer}"
fi
corpus_root="$cache/fuzz-corpus"
logs="$cache/fuzz-logs"
targets=(parse_request policy_boundary)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# libFuzzer needs unstable rustc flags: the nightly toolchain if there is one, else the
# stable one with RUSTC_BOOTSTRAP=1 (cargo fuzz supports both).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz_cargo=(cargo +nightly fuzz)
else
    fuzz_cargo=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

if ! compgen -G "plugins/dist/*.wasm" >/dev/null; then
    scripts/build-plugins.sh
fi

# The fuzz crate is a workspace of its own; it takes the root's lock file, so that it builds
# the proxy with the versions the proxy ships with.
cp Cargo.lock fuzz/Cargo.lock

# First the committed seeds and regressions, and the regressions too large for a fuzz input
# (fuzz/tests), as plain tests on the ordinary toolchain, sharing the root's build.
started=$(date +%s)
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}" cargo test --manifest-path fuzz/Cargo.toml
echo "fuzz: plain tests in $(($(date +%s) - started)) s"

# `cargo fuzz build` builds both targets at once; the runs below then find them built.
build=(--sanitizer "$sanitizer" --target-dir "$target_dir")
started=$(date +%s)
"${fuzz_cargo[@]}" build "${build[@]}"
echo "fuzz: built in $(($(date +%s) - started)) s"

mkdir -p "$logs"
pids=()
for target in "${targets[@]}"; do
    corpus="$corpus_root/$target"
    mkdir -p "$corpus" "fuzz/regressions/$target"
    (
        started=$(date +%s)
        status=0
        "${fuzz_cargo[@]}" run "${build[@]}" "$target" \
            "$corpus" "fuzz/seeds/$target" "fuzz/regressions/$target" -- \
            -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 \
            >"$logs/$target.log" 2>&1 || status=$?
        echo "$(($(date +%s) - started))" >"$logs/$target.seconds"
        exit "$status"
    ) &
    pids+=($!)
done

failed=0
for i in "${!targets[@]}"; do
    target="${targets[$i]}"
    log="$logs/$target.log"
    if wait "${pids[$i]}"; then
        result=ok
    elif grep -q 'SUMMARY: \|Failing input' "$log"; then
        result=CRASHED
        failed=1
    else
        result=FAILED
        failed=1
    fi
    runs=$(grep -oP 'stat::number_of_executed_units: \K[0-9]+' "$log" | tail -1 || true)
    cov=$(grep -oP '^#[0-9]+\s+\w+\s+cov: \K[0-9]+' "$log" | tail -1 || true)
    corpus_size=$(find "$corpus_root/$target" -type f | wc -l)
    printf 'fuzz: %-16s %-7s runs %-9s time %ss  coverage %s  corpus %s\n' \
        "$target" "$result" "${runs:-?}" "$(cat "$logs/$target.seconds")" "${cov:-?}" "$corpus_size"
    if [ "$result" != ok ]; then
        echo "---- $target: end of $log ----"
        tail -n 80 "$log"
        echo "---- the input: $repo/fuzz/artifacts/$target/ (Base64 and Debug above) ----"
    fi
done
exit "$failed"
