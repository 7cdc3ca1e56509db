#!/usr/bin/env bash
# Memory of FTPS through fxprelay: per idle TLS control session and per running TLS
# transfer (TLS on both legs), measured on the proxy's PSS.
#
#   scripts/mem-tls.sh [SESSIONS=500] [TRANSFERS=8]
#
# Loopback only, bounded in count and time; root needed (vsftpd logs in the system user
# fxptest of scripts/install-test-peers.sh, run when vsftpd or curl is missing).
#
#   1. builds `cargo build --release` (or uses FXPRELAY_BIN=PATH); makes self-signed
#      certificates; starts vsftpd on 127.0.0.97 requiring TLS on login and data and session
#      reuse, and fxprelay on 127.0.0.98 (tls.client explicit, tls.upstream mirror, relay);
#      a 256 MiB file on tmpfs;
#   2. takes the proxy's PSS after one TLS download (its baseline);
#   3. holds SESSIONS logged-in FTPS control sessions (scripts/soak_clients.py --tls-ca:
#      AUTH TLS, USER, PASS) and measures again: KiB per idle TLS session;
#   4. runs TRANSFERS downloads at once, each limited to 20 MB/s so they overlap, samples
#      the PSS while they run and takes the peak: KiB per running TLS transfer;
#   5. prints both and exits non-zero if a session or a transfer failed.
#
# Knobs (environment): FXPRELAY_BIN=PATH (skip the build); FXP_MEM_SERVER_IP and
# FXP_MEM_PROXY_IP (127.x.y.z).
set -euo pipefail

PROG=mem-tls
# shellcheck source=lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,5
[[ $# -le 2 ]] || usage 2,5
SESSIONS=${1:-500}
TRANSFERS=${2:-8}
check_count SESSIONS "$SESSIONS" 5000
check_count TRANSFERS "$TRANSFERS" 64
SERVER_IP=${FXP_MEM_SERVER_IP:-127.0.0.97}
PROXY_IP=${FXP_MEM_PROXY_IP:-127.0.0.98}
check_addresses "$SERVER_IP" "$PROXY_IP"
[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"
FILE_MIB=256
RATE=20M

CLIENTS_PID=
DOWNLOAD_PIDS=()
stop_clients() {
    local pid
    for pid in "${DOWNLOAD_PIDS[@]}"; do stop_pid "$pid"; done
    [[ -z $CLIENTS_PID ]] || stop_pid "$CLIENTS_PID"
}
LOG_FILES=(vsftpd.out vsftpd.log fxprelay.log clients.out)
trap_cleanup
WORK=$(mktemp -d /dev/shm/fxp-mem-tls.XXXXXX)
chmod 0755 "$WORK"
start_watchdog $((INSTALL_MAX + BUILD_MAX + 300 + SESSIONS / 10))
ulimit -n $((SESSIONS * 4 + 1024)) 2>/dev/null || die "cannot raise RLIMIT_NOFILE for $SESSIONS sessions"

ensure_peers vsftpd test -x /usr/sbin/vsftpd
command -v openssl >/dev/null || die "openssl (the command) is needed to make certificates"
build_fxprelay

FTP_ROOT=$WORK/root
mkdir -m 0755 "$FTP_ROOT"
head -c $((FILE_MIB * 1024 * 1024)) /dev/urandom >"$FTP_ROOT/big.bin"
chown -R "$FTP_USER:" "$FTP_ROOT"
make_cert vsftpd "$SERVER_IP"
make_cert fxprelay "$PROXY_IP"
VSFTPD_EXTRA=$(vsftpd_tls_lines "$WORK/vsftpd.crt" "$WORK/vsftpd.key")
VSFTPD_LOGIN_CHECK="--ssl-reqd --cacert $WORK/vsftpd.crt" start_vsftpd "$FTP_ROOT" 100 $((SESSIONS + TRANSFERS + 20))
pick_proxy_ports
read -r lo hi < <(free_range "$PROXY_IP" 200) || fail "no free data port range on $PROXY_IP"
{
    fxprelay_config mem "$SERVER_IP:$VSFTPD_PORT" relay "$lo-$hi" \
        "max_sessions: $((SESSIONS + 100))" "max_sessions_per_ip: $((SESSIONS + 100))" \
        "max_pre_login_sessions: $((SESSIONS + 100))" "max_pre_login_sessions_per_ip: $((SESSIONS + 100))"
    cat <<EOF
    tls:
      client: {mode: explicit, cert: $WORK/fxprelay.crt, key: $WORK/fxprelay.key}
      upstream: {mode: mirror, ca: $WORK/vsftpd.crt}
EOF
} >"$WORK/fxprelay.yaml"
start_fxprelay "$WORK/fxprelay.yaml"
URL=ftp://$FTP_USER:$FTP_PASS@$PROXY_IP:$PROXY_PORT
CURL_TLS=(--ssl-reqd --cacert "$WORK/fxprelay.crt")

# --- baseline: after one TLS download ---------------------------------------------------------
curl -sS --max-time 120 "${CURL_TLS[@]}" -o "$WORK/check.bin" "$URL/big.bin" ||
    fail "a TLS download through the proxy failed"
cmp -s "$WORK/check.bin" "$FTP_ROOT/big.bin" || fail "the TLS download differs"
rm -f "$WORK/check.bin"
sleep 1
BASE=$(pss_kib "$PROXY_PID")

# --- idle TLS control sessions ----------------------------------------------------------------
"$PY" "$ROOT/scripts/soak_clients.py" --host "$PROXY_IP" --port "$PROXY_PORT" \
    --tls-ca "$WORK/fxprelay.crt" --sessions "$SESSIONS" --noop-interval 30 \
    --status "$WORK/clients.status" --report "$WORK/clients.report" >"$WORK/clients.out" 2>&1 &
CLIENTS_PID=$!
for ((i = 0; i < 600; i++)); do
    alive "$CLIENTS_PID" || fail "soak_clients.py exited during the ramp"
    [[ $(cat "$WORK/clients.status" 2>/dev/null) == ready* ]] && break
    sleep 0.2
done
read -r _ established failed <"$WORK/clients.status" || fail "no status from soak_clients.py"
((failed == 0 && established == SESSIONS)) || fail "$failed of $SESSIONS TLS sessions failed to log in"
sleep 1
HELD=$(pss_kib "$PROXY_PID")

# --- running TLS transfers --------------------------------------------------------------------
for ((n = 0; n < TRANSFERS; n++)); do
    curl -sS --max-time 120 --limit-rate "$RATE" "${CURL_TLS[@]}" -o /dev/null "$URL/big.bin" &
    DOWNLOAD_PIDS+=($!)
done
peak=$HELD
for ((i = 0; i < 50; i++)); do
    sleep 0.2
    now=$(pss_kib "$PROXY_PID")
    ((now > peak)) && peak=$now
done
ok=0
for pid in "${DOWNLOAD_PIDS[@]}"; do wait "$pid" && ok=$((ok + 1)); done
DOWNLOAD_PIDS=()
((ok == TRANSFERS)) || fail "$((TRANSFERS - ok)) of $TRANSFERS TLS downloads failed"

cat <<EOF

fxprelay FTPS memory, $(cpu_model), $(nproc) CPUs, fxprelay $(git_rev)
  proxy PSS: baseline $(mib "$BASE"), $SESSIONS idle TLS sessions $(mib "$HELD"), with $TRANSFERS running TLS downloads (peak) $(mib "$peak")
  per idle TLS control session: $(per_session "$HELD" "$BASE" "$SESSIONS") KiB
  per running TLS transfer (TLS on both legs, $RATE/s each): $(per_session "$peak" "$HELD" "$TRANSFERS") KiB
EOF
