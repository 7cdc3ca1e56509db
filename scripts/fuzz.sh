#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (the sans-IO parsers and the session machine) for
# a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
#
# Installs the pinned cargo-fuzz if it is missing, builds every target once, then runs
# each for SECONDS_PER_TARGET with its corpus in fuzz/corpus/<target> (grown run after
# run, not committed) seeded from fuzz/seeds/<target> (committed), and prints one line
# per target: executions, speed, crashes. Exits non-zero if any target crashed; the
# input that did it is in fuzz/artifacts/<target>/ and the full log in
# fuzz/logs/<target>.log. Reproduce with
#   fuzz/target/none/<host triple>/release/<target> fuzz/artifacts/<target>/crash-...
#
# Only stable Rust exists here. cargo-fuzz's default AddressSanitizer needs a `-Z` flag,
# so the default is `FUZZ_SANITIZER=none`: libFuzzer's coverage instrumentation uses
# stable `-C` flags only, and the targets are safe Rust, where panics, overflow checks
# and debug assertions (all on) are what finds bugs. `FUZZ_SANITIZER=address` works too,
# through RUSTC_BOOTSTRAP=1, at about a fifth of the speed. Not part of scripts/test.sh:
# CI time is limited.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-60}
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(command reply addr rewrite portspec session)
fi
sanitizer=${FUZZ_SANITIZER:-none}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "usage: $0 [SECONDS_PER_TARGET=60] [TARGET...]" >&2
    exit 2
fi

if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
if [[ $sanitizer != none ]]; then
    # `-Zsanitizer` on the stable compiler. Cargo caches what rustc said about the flags,
    # a refusal included, so the cache is off for this build.
    export RUSTC_BOOTSTRAP=1 CARGO_CACHE_RUSTC_INFO=0
fi
# One target dir per sanitizer, so switching does not rebuild everything.
build_flags=(--fuzz-dir fuzz --sanitizer "$sanitizer" --target-dir "fuzz/target/$sanitizer")

cargo fuzz build "${build_flags[@]}"
# The targets run from the binaries just built, not through `cargo fuzz run`, which
# would rebuild whenever the crate changed in between.
bin_dir=fuzz/target/$sanitizer/$(rustc -vV | sed -n 's/^host: //p')/release
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

mkdir -p fuzz/logs
failed=0
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    artifacts=fuzz/artifacts/$target
    log=fuzz/logs/$target.log
    mkdir -p "$corpus" "$artifacts"
    seeds=()
    if [[ -d fuzz/seeds/$target ]]; then
        seeds=("fuzz/seeds/$target")
    fi
    before=$(find "$artifacts" -type f ! -name 'slow-unit-*' | wc -l)
    status=0
    "$bin_dir/$target" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -dict=fuzz/ftp.dict -artifact_prefix="$artifacts/" \
        "$corpus" "${seeds[@]}" >"$log" 2>&1 || status=$?
    crashes=$(($(find "$artifacts" -type f ! -name 'slow-unit-*' | wc -l) - before))
    # Final stats when libFuzzer got that far, else its last progress line (`#N ...`).
    execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log")
    speed=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log")
    if [[ -z $execs ]]; then
        execs=$(grep -aoE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#' || true)
    fi
    units=$(find "$corpus" -type f | wc -l)
    if ((status != 0 || crashes > 0)); then
        failed=1
        echo "$target: FAILED (exit $status) after ${execs:-?} execs, $crashes crash(es)" \
            "in $artifacts/, log $log"
    else
        echo "$target: ${execs:-?} execs in ${seconds}s (${speed:-?}/s), 0 crashes," \
            "corpus $units inputs"
    fi
done
exit "$failed"
