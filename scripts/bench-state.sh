#!/usr/bin/env bash
# The state store under a queue: 10,000 jobs queued in memory (`sqlite::memory:`, what
# a configuration without `state:` runs), in a SQLite file and in PostgreSQL, in the
# same run; for each: POST rate, RSS with the queue stored, `GET
# /api/v1/transfers?limit=100` latency (first page and a page 5,000 in), jobs per second
# started on small files once the queue drains, RSS after.
#
#   scripts/bench-state.sh [JOBS=10000] [CONCURRENCY=8]
#
# Loopback only (two addresses, 127.0.0.75 and .76), three pyftpdlib servers and one
# PostgreSQL started here and stopped by pid on exit; not part of `cargo test`. Builds
# `cargo build --release` unless FXPRELAY_BIN=PATH names a binary; runs
# scripts/install-test-peers.sh if a peer is missing. STATE_BENCH_STORES=memory,sqlite
# leaves PostgreSQL out.
set -euo pipefail

PROG=bench-state
# shellcheck source=SCRIPTDIR/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,16
[[ $# -le 2 ]] || usage 2,16
JOBS=${1:-10000}
CONCURRENCY=${2:-8}
check_count JOBS "$JOBS" 10000
check_count CONCURRENCY "$CONCURRENCY" 64
[[ $(id -u) -eq 0 ]] || die "run as root (pyftpdlib runs as fxptest, PostgreSQL as postgres)"
if ! command -v pg_isready >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    "$ROOT/scripts/install-test-peers.sh"
fi
id fxptest >/dev/null 2>&1 || "$ROOT/scripts/install-test-peers.sh"
build_fxprelay
exec "$PY" "$ROOT/scripts/bench_state.py" --bin "$BIN" --jobs "$JOBS" \
    --concurrency "$CONCURRENCY" --stores "${STATE_BENCH_STORES:-memory,sqlite,postgres}"
