#!/usr/bin/env bash
# The edge defense under a credential-stuffing spray: the proxy's memory against its ban
# table's bound, and what the spray does to a legitimate client's login.
#
#   scripts/bench-defense.sh [CONNECTIONS=20000] [ADDRESSES=200] [LOGINS=50]
#
# Loopback only, bounded in count and time; root needed (vsftpd logs in the system user
# fxptest of scripts/install-test-peers.sh, run when vsftpd or curl is missing).
#
#   1. builds `cargo build --release` (or uses FXPRELAY_BIN=PATH); starts vsftpd on
#      127.0.0.93 and fxprelay on 127.0.0.94 (one reverse listener, the defense with its
#      defaults: threshold 10 in 10m, ban 15m, connect_rate 20/10s);
#   2. baseline: LOGINS logins one after the other with the right password, each from its
#      own address (127.67.0.x), timed from connect to 230 (scripts/bench_defense_clients.py);
#   3. the spray: CONNECTIONS connections round robin over ADDRESSES source addresses
#      (127.66.0.x), 100 at once, each trying a wrong password unless refused at once;
#      while it runs, the same LOGINS logins again (from 127.68.0.x), and the proxy's RSS
#      sampled every 0.2 s;
#   4. prints what the spray got (421 at once, 530 from the server, other), how many
#      attempts reached the server, the bans, the proxy's RSS before, peak and after,
#      against the ban table's bound (defense::MAX_KEYS keys x the bytes per key that
#      tests/defense_memory.rs measures), and the login round trip during the spray as a
#      ratio to the baseline (the issue asks for at most 1.5x). Exits non-zero if a
#      legitimate login failed or the spray did not finish within its bound.
#
# Knobs (environment): FXPRELAY_BIN=PATH (skip the build); FXP_BENCH_SERVER_IP and
# FXP_BENCH_PROXY_IP (127.x.y.z).
set -euo pipefail

PROG=bench-defense
# shellcheck source=lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,5
[[ $# -le 3 ]] || usage 2,5
CONNECTIONS=${1:-20000}
ADDRESSES=${2:-200}
LOGINS=${3:-50}
check_count CONNECTIONS "$CONNECTIONS" 200000
check_count ADDRESSES "$ADDRESSES" 2000
check_count LOGINS "$LOGINS" 240
SERVER_IP=${FXP_BENCH_SERVER_IP:-127.0.0.93}
PROXY_IP=${FXP_BENCH_PROXY_IP:-127.0.0.94}
check_addresses "$SERVER_IP" "$PROXY_IP"
[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"
CONCURRENCY=100
# The spray may take 5 ms a connection before it counts as stuck (it took 2.6 ms here:
# the server's PAM logins and the Python client set the pace, not the proxy).
SPRAY_MAX=$((60 + CONNECTIONS / 200))
# The bound of one ban table, from src/defense/mod.rs and tests/defense_memory.rs.
MAX_KEYS=100000
BYTES_PER_KEY=286

SPRAY_PID=
stop_clients() { [[ -z $SPRAY_PID ]] || stop_pid "$SPRAY_PID"; }
LOG_FILES=(vsftpd.out vsftpd.log fxprelay.log spray.out)
trap_cleanup
WORK=$(mktemp -d /dev/shm/fxp-bench-defense.XXXXXX)
chmod 0755 "$WORK"
start_watchdog $((INSTALL_MAX + BUILD_MAX + 300 + SPRAY_MAX))
ulimit -n $((CONCURRENCY * 8 + 4096)) 2>/dev/null || die "cannot raise RLIMIT_NOFILE"

ensure_peers vsftpd test -x /usr/sbin/vsftpd
build_fxprelay

FTP_ROOT=$WORK/root
mkdir -m 0755 "$FTP_ROOT"
chown "$FTP_USER:" "$FTP_ROOT"
# vsftpd's own 1 s delay on a failed login would only hold the spray's connections open.
VSFTPD_EXTRA=delay_failed_login=0 start_vsftpd "$FTP_ROOT" 10 400
pick_proxy_ports
DEFENSE=on fxprelay_config bench "$SERVER_IP:$VSFTPD_PORT" passthrough "" >"$WORK/fxprelay.yaml"
start_fxprelay "$WORK/fxprelay.yaml"
CLIENTS=("$PY" "$ROOT/scripts/bench_defense_clients.py" --host "$PROXY_IP" --port "$PROXY_PORT")
metric() { # NAME -> its value (the sum of its series) from /metrics
    curl -s --max-time 5 "http://$PROXY_IP:$ADMIN_PORT/metrics" |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }'
}
field() { # JSON KEY -> the value
    "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# --- baseline ---------------------------------------------------------------------------------
BASELINE=$(timeout "$STEP_MAX" "${CLIENTS[@]}" logins --base 67.0 --count "$LOGINS") ||
    fail "the baseline logins failed"
RSS_BEFORE=$(rss_kib "$PROXY_PID")
SERVER_LOGINS_BEFORE=$(grep -c 'FAIL LOGIN\|OK LOGIN' "$WORK/vsftpd.log" || true)

# --- the spray, and the same logins during it -----------------------------------------------
timeout "$SPRAY_MAX" "${CLIENTS[@]}" spray --base 66.0 --connections "$CONNECTIONS" \
    --addresses "$ADDRESSES" --concurrency "$CONCURRENCY" --time-limit "$SPRAY_MAX" \
    >"$WORK/spray.out" 2>&1 &
SPRAY_PID=$!
peak=$RSS_BEFORE
sample() {
    local now
    now=$(rss_kib "$PROXY_PID")
    ((now > peak)) && peak=$now
    return 0
}
# Let the spray get going, so the logins meet it in full flow.
for ((i = 0; i < 10; i++)); do sleep 0.1 && sample; done
"${CLIENTS[@]}" logins --base 68.0 --count "$LOGINS" >"$WORK/logins.out" 2>&1 &
LOGINS_PID=$!
EXTRA_PIDS+=("$LOGINS_PID")
while alive "$SPRAY_PID" || alive "$LOGINS_PID"; do
    sample
    sleep 0.2
done
wait "$LOGINS_PID" || fail "a legitimate login failed during the spray: $(cat "$WORK/logins.out")"
DURING=$(cat "$WORK/logins.out")
wait "$SPRAY_PID" || fail "the spray did not finish: $(cat "$WORK/spray.out")"
SPRAY=$(tail -n 1 "$WORK/spray.out")
sleep 1
RSS_AFTER=$(rss_kib "$PROXY_PID")
SERVER_ATTEMPTS=$(($(grep -c 'FAIL LOGIN\|OK LOGIN' "$WORK/vsftpd.log" || true) - SERVER_LOGINS_BEFORE))

BASE_MS=$(field "$BASELINE" median_ms)
DURING_MS=$(field "$DURING" median_ms)
BOUND_KIB=$((MAX_KEYS * BYTES_PER_KEY / 1024))
cat <<EOF

fxprelay edge defense under a spray, $(cpu_model), $(nproc) CPUs, fxprelay $(git_rev)
  spray: $CONNECTIONS connections from $ADDRESSES addresses, $CONCURRENCY at once, a wrong password each: $(field "$SPRAY" seconds) s
    refused at once (421 banned): $(field "$SPRAY" refused_421)   wrong password answered (530): $(field "$SPRAY" failed_530)   cut by a ban mid-session: $(field "$SPRAY" cut_421)   closed/other: $(($(field "$SPRAY" closed) + $(field "$SPRAY" other)))
    logins that reached the server (vsftpd's log, legitimate ones included): $SERVER_ATTEMPTS
    bans: $(metric fxprelay_bans_total) imposed, $(metric fxprelay_bans_active) active; refused connections counted: $(metric 'fxprelay_rejected_total{listener="bench",reason="banned"}')
  proxy RSS: before $(mib "$RSS_BEFORE"), peak $(mib "$peak"), after $(mib "$RSS_AFTER"); growth $(mib $((peak - RSS_BEFORE))) against the ban table bound $(mib "$BOUND_KIB") ($MAX_KEYS keys x $BYTES_PER_KEY bytes)
  legitimate login round trip (connect to 230, median of $LOGINS): baseline $BASE_MS ms, during the spray $DURING_MS ms: ratio $(ratio "$DURING_MS" "$BASE_MS")
    baseline $BASELINE
    during   $DURING
EOF
