#!/usr/bin/env bash
# FTPS under load, for stalls: uploads through fxprelay (TLS on both legs) to a TLS-only
# vsftpd while two CPU burners compete for the cores, every reply timed.
#
#   scripts/stress-ftps.sh [SESSIONS=4] [UPLOADS=100] [LFTP_PUTS=200]
#
# Loopback only, bounded in count and time; root needed (vsftpd logs in the system user
# fxptest of scripts/install-test-peers.sh, which is run when vsftpd, lftp or curl is
# missing); not part of `cargo test`.
#
#   1. builds `cargo build --release` (or uses FXPRELAY_BIN=PATH);
#   2. makes self-signed certificates, starts vsftpd on 127.0.0.95 requiring TLS on login
#      and data and session reuse, and fxprelay on 127.0.0.96 (tls.client explicit,
#      tls.upstream mirror, data: relay);
#   3. starts two CPU burners (busy loops, one per core here), stopped at the end;
#   4. SESSIONS parallel Python ftplib.FTP_TLS sessions (scripts/stress_ftps_clients.py;
#      Debian's /usr/bin/python3 and any other python3 on PATH, alternating), each
#      uploading UPLOADS files and sending NOOP after each: every 226 and every NOOP's 200
#      must come within 5 s, and every file must arrive byte for byte;
#   5. LFTP_PUTS runs of lftp `put` over FTPS (ftp:ssl-force, ftp:ssl-protect-data, a new
#      lftp each time), each bounded by 30 s: one that takes over 10 s is a stall;
#   6. prints the slowest reply, the lftp put times (median, slowest) and exits non-zero on
#      any stall, late reply, failed or differing upload.
#
# Knobs (environment): FXPRELAY_BIN=PATH (skip the build); FXP_STRESS_SERVER_IP and
# FXP_STRESS_PROXY_IP (127.x.y.z); FXP_STRESS_BURNERS=N CPU burners (0-8, default 2).
set -euo pipefail

PROG=stress-ftps
# shellcheck source=lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,6
[[ $# -le 3 ]] || usage 2,6
SESSIONS=${1:-4}
UPLOADS=${2:-100}
LFTP_PUTS=${3:-200}
check_count SESSIONS "$SESSIONS" 32
check_count UPLOADS "$UPLOADS" 2000
check_count LFTP_PUTS "$LFTP_PUTS" 2000
BURNERS=${FXP_STRESS_BURNERS:-2}
[[ $BURNERS =~ ^[0-8]$ ]] || die "FXP_STRESS_BURNERS must be 0-8, got '$BURNERS'"
SERVER_IP=${FXP_STRESS_SERVER_IP:-127.0.0.95}
PROXY_IP=${FXP_STRESS_PROXY_IP:-127.0.0.96}
check_addresses "$SERVER_IP" "$PROXY_IP"
[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"
REPLY_LIMIT=5
PUT_LIMIT=30
STALL=10

BURNER_PIDS=()
stop_clients() {
    local pid
    for pid in "${BURNER_PIDS[@]}"; do stop_pid "$pid"; done
}
LOG_FILES=(vsftpd.out vsftpd.log fxprelay.log lftp.err)
trap_cleanup
WORK=$(mktemp -d /tmp/fxp-stress-ftps.XXXXXX)
chmod 0755 "$WORK"
start_watchdog $((INSTALL_MAX + BUILD_MAX + 120 + SESSIONS * UPLOADS * 2 + LFTP_PUTS * PUT_LIMIT))

ensure_peers "vsftpd or lftp" test -x /usr/sbin/vsftpd -a -x /usr/bin/lftp
command -v openssl >/dev/null || die "openssl (the command) is needed to make certificates"
build_fxprelay

# --- vsftpd and fxprelay, TLS on both legs ------------------------------------------------
FTP_ROOT=$WORK/root
mkdir -m 0755 "$FTP_ROOT" "$WORK/src"
chown "$FTP_USER:" "$FTP_ROOT"
make_cert vsftpd "$SERVER_IP"
make_cert fxprelay "$PROXY_IP"
VSFTPD_EXTRA=$(vsftpd_tls_lines "$WORK/vsftpd.crt" "$WORK/vsftpd.key")
VSFTPD_LOGIN_CHECK="--ssl-reqd --cacert $WORK/vsftpd.crt" start_vsftpd "$FTP_ROOT" 100 100
pick_proxy_ports
read -r lo hi < <(free_range "$PROXY_IP" 200) || fail "no free data port range on $PROXY_IP"
{
    fxprelay_config stress "$SERVER_IP:$VSFTPD_PORT" relay "$lo-$hi"
    cat <<EOF
    tls:
      client: {mode: explicit, cert: $WORK/fxprelay.crt, key: $WORK/fxprelay.key}
      upstream: {mode: mirror, ca: $WORK/vsftpd.crt}
EOF
} >"$WORK/fxprelay.yaml"
start_fxprelay "$WORK/fxprelay.yaml"
log "fxprelay ($BIN) pid $PROXY_PID on $PROXY_IP:$PROXY_PORT"

# --- the load -------------------------------------------------------------------------------
for ((i = 0; i < BURNERS; i++)); do
    "$PY" -c 'while True: pass' &
    BURNER_PIDS+=($!)
done
log "$BURNERS CPU burners running"

# Every Python here: Debian's, and the python3 on PATH when it is another build.
PYTHONS=("$PY")
other=$(python3 -c 'import ftplib, ssl, sys; print(sys.executable)' 2>/dev/null || true)
if [[ -n $other && $(readlink -f "$other") != $(readlink -f "$PY") ]]; then
    PYTHONS+=("$other")
fi

# --- 1: parallel ftplib.FTP_TLS upload sessions -----------------------------------------------
log "$SESSIONS ftplib sessions x $UPLOADS uploads (${PYTHONS[*]})"
rc=0
timeout $((60 + UPLOADS * 4 * REPLY_LIMIT)) "$PY" "$ROOT/scripts/stress_ftps_clients.py" \
    --src "$WORK/src" --reply-timeout "$REPLY_LIMIT" \
    "$PROXY_IP" "$PROXY_PORT" "$WORK/fxprelay.crt" "$SESSIONS" "$UPLOADS" "${PYTHONS[@]}" \
    >"$WORK/ftplib.out" 2>&1 || rc=$?
cat "$WORK/ftplib.out" >&2
((rc == 0)) || fail "an ftplib session failed (a reply later than ${REPLY_LIMIT} s, or an upload refused)"
differ=0
for ((s = 0; s < SESSIONS; s++)); do
    for ((n = 0; n < UPLOADS; n++)); do
        cmp -s "$FTP_ROOT/s$s-$n.bin" "$WORK/src/$((n % 4)).bin" || differ=$((differ + 1))
    done
done
((differ == 0)) || fail "$differ uploaded files differ from their sources"
log "all $((SESSIONS * UPLOADS)) uploads arrived byte for byte"

# --- 2: lftp put, a new lftp each time ----------------------------------------------------------
head -c 200000 /dev/urandom >"$WORK/src/lftp.bin"
: >"$WORK/lftp.times"
stalls=0
log "$LFTP_PUTS lftp puts over FTPS"
for ((n = 0; n < LFTP_PUTS; n++)); do
    started=$(date +%s.%N)
    if ! timeout "$PUT_LIMIT" lftp -c "set ftp:ssl-force true; set ftp:ssl-protect-data true
set ssl:ca-file $WORK/fxprelay.crt; set net:max-retries 1; set net:timeout $PUT_LIMIT
open -u $FTP_USER,$FTP_PASS ftp://$PROXY_IP:$PROXY_PORT
put $WORK/src/lftp.bin -o lftp-$n.bin" </dev/null >/dev/null 2>>"$WORK/lftp.err"; then
        fail "lftp put $n failed or hung for ${PUT_LIMIT} s"
    fi
    took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    echo "$took" >>"$WORK/lftp.times"
    if awk -v t="$took" -v s="$STALL" 'BEGIN { exit !(t > s) }'; then
        stalls=$((stalls + 1))
        log "lftp put $n took $took s (a stall)"
    fi
    cmp -s "$FTP_ROOT/lftp-$n.bin" "$WORK/src/lftp.bin" || fail "lftp put $n: the stored file differs"
done
median_put=$(median <"$WORK/lftp.times")
slowest_put=$(sort -g "$WORK/lftp.times" | tail -n 1)

# --- report ---------------------------------------------------------------------------------
slowest_noop=$(grep -o 'slowest NOOP [0-9.]*' "$WORK/ftplib.out" | awk '{ print $3 }' | sort -g | tail -n 1)
cat <<EOF

fxprelay FTPS stress, $(cpu_model), $(nproc) CPUs, $BURNERS CPU burners
  ftplib.FTP_TLS: $SESSIONS sessions x $UPLOADS uploads, every reply within ${REPLY_LIMIT} s;
                  slowest NOOP after an upload ${slowest_noop:-?} s; all files byte for byte
  lftp put:       $LFTP_PUTS runs, median ${median_put} s, slowest ${slowest_put} s, $stalls over ${STALL} s
EOF
((stalls == 0)) || fail "$stalls lftp puts stalled"
