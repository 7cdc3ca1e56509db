#!/usr/bin/env bash
# FTPS throughput: curl --ssl-reqd directly to a TLS-only vsftpd, through fxprelay (TLS on
# both legs) and, when Debian's proftpd-mod-proxy is there, through ProFTPD mod_proxy
# (TLS on both legs), interleaved in one run.
#
#   scripts/bench-tls.sh [SIZE_MIB=1024] [RUNS=3]
#
# Loopback only, files on tmpfs, bounded in count and time; not part of `cargo test`.
#
#   1. builds `cargo build --release` (root needed: vsftpd logs in the system user
#      `fxptest` of scripts/install-test-peers.sh, which is run when vsftpd, curl, the
#      user or .peers/usr/lib/proftpd/mod_proxy.so are missing);
#   2. makes self-signed certificates (openssl req -x509, subjectAltName IP) for the three
#      servers and a SIZE_MIB file of /dev/urandom bytes, on tmpfs (/dev/shm when it has
#      room, else a tmpfs mounted under a temporary directory);
#   3. starts vsftpd on 127.0.0.91 requiring TLS on login and data and session reuse
#      (ssl_enable force_local_logins_ssl force_local_data_ssl require_ssl_reuse),
#      fxprelay on 127.0.0.92 (tls.client explicit, tls.upstream mirror, data: relay) and
#      proftpd + mod_tls + mod_proxy on 127.0.0.93 (TLSEngine/TLSRequired on the client
#      side, ProxyRole reverse, ProxyTLSEngine on and protected data toward vsftpd), each
#      in a session of its own (with sched_autogroup the kernel shares CPU per session);
#   4. downloads and uploads the file once through each proxy and compares it byte for
#      byte (no speed is reported for broken transfers);
#   5. RETR then STOR, RUNS times each per path, the order of the paths rotating every
#      run; speed = bytes / (curl's time_total - time_pretransfer), the data flow from
#      the 150 to the 226; medians per path; CPU time of each proxy over its runs of each
#      kind, per GiB: fxprelay's utime+stime (all threads), mod_proxy's
#      utime+stime+cutime+cstime of its master (each session is a child process, reaped
#      before the reading); the endpoints' CPU per transfer (curl's, vsftpd's sessions);
#   6. prints a table, the ratio each proxied path would reach if CPU were the only limit
#      (direct path's CPU per GiB over the proxied path's), and the issue's targets
#      (fxprelay >= 0.6x direct TLS, goal 0.8x; >= 1.2x mod_proxy), and fxprelay's CPU per
#      GiB as a multiple of the floor, `openssl speed -evp aes-256-gcm` measured in the same
#      run (decrypting and encrypting every byte once; target <= 1.3x), and how often
#      fxprelay's threads were woken per MiB moved (voluntary context switches: the cost
#      that scales with the number of batches the relay handles). Every process it
#      started is killed by pid (vsftpd and proftpd: their process groups) and every
#      temporary file/mount removed on exit, including on errors and signals.
#
# Uploads run with curl --tls-max 1.2 on every path: over TLS 1.3 vsftpd and mod_tls send
# a session ticket on the data connection, curl closes with it unread, the kernel answers
# with a reset and the server loses the upload's tail (fxprelay sends no ticket on data
# connections; its check upload in step 4 runs over TLS 1.3 to show it). mod_proxy talks
# TLS 1.2 to vsftpd for the same reason (ProxyTLSProtocol TLSv1.2).
#
# Knobs (environment): FXPRELAY_BIN=PATH uses that binary and skips the build;
# FXP_BENCH_MODPROXY=0 leaves mod_proxy out; FXP_BENCH_PIN=1 pins vsftpd and curl to CPU 0
# and the proxies to CPU 1 (needs 2 CPUs): a diagnostic that takes CPU contention out of
# the comparison (unpinned on 2 CPUs, a proxy's decrypt + encrypt competes with the
# endpoints' for the same cores); FXP_BENCH_COMPARE_BIN=PATH runs a second fxprelay binary
# ("fxprelay B", on FXP_BENCH_COMPARE_IP, default 127.0.0.94) as one more path of the same
# run, for A/B comparisons of builds; FXP_BENCH_SERVER_IP, FXP_BENCH_PROXY_IP and
# FXP_BENCH_MODPROXY_IP change the three addresses; FXP_BENCH_TIME_LIMIT=SECONDS replaces
# the overall time limit (default: generous, from SIZE_MIB and RUNS, build included).
set -euo pipefail

PROG=bench-tls
# shellcheck source=lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"
PEERS=$ROOT/.peers

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 6
[[ $# -le 2 ]] || usage 6
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
check_count SIZE_MIB "$SIZE_MIB" 8192
check_count RUNS "$RUNS" 25
SERVER_IP=${FXP_BENCH_SERVER_IP:-127.0.0.91}
PROXY_IP=${FXP_BENCH_PROXY_IP:-127.0.0.92}
MP_IP=${FXP_BENCH_MODPROXY_IP:-127.0.0.93}
WANT_MP=${FXP_BENCH_MODPROXY:-1}
BIN_B=${FXP_BENCH_COMPARE_BIN:-}
PROXY_B_IP=${FXP_BENCH_COMPARE_IP:-127.0.0.94}
if [[ -n $BIN_B ]]; then
    [[ -x $BIN_B ]] || die "FXP_BENCH_COMPARE_BIN=$BIN_B is not an executable"
    [[ $PROXY_B_IP =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ && $PROXY_B_IP != "$SERVER_IP" &&
        $PROXY_B_IP != "$PROXY_IP" && $PROXY_B_IP != "$MP_IP" ]] ||
        die "FXP_BENCH_COMPARE_IP must be a loopback address of its own, got '$PROXY_B_IP'"
fi
[[ $WANT_MP == 0 || $WANT_MP == 1 ]] || die "FXP_BENCH_MODPROXY must be 0 or 1, got '$WANT_MP'"
PIN=${FXP_BENCH_PIN:-0}
[[ $PIN == 0 || $PIN == 1 ]] || die "FXP_BENCH_PIN must be 0 or 1, got '$PIN'"
PEER_CPU=()
PROXY_CPU=()
if [[ $PIN == 1 ]]; then
    (($(nproc) >= 2)) || die "FXP_BENCH_PIN=1 needs at least 2 CPUs"
    PEER_CPU=(taskset -c 0)
    PROXY_CPU=(taskset -c 1)
fi
for ip in "$SERVER_IP" "$PROXY_IP" "$MP_IP"; do
    [[ $ip =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "$ip is not a loopback (127.x.y.z) address"
done
[[ $SERVER_IP != "$PROXY_IP" && $SERVER_IP != "$MP_IP" && $PROXY_IP != "$MP_IP" ]] ||
    die "vsftpd, fxprelay and mod_proxy need three different addresses"
[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
# Time bounds in seconds. A transfer may run at 10 MiB/s before it counts as hung.
CURL_MAX=$((30 + SIZE_MIB / 10))
TOTAL_MAX=${FXP_BENCH_TIME_LIMIT:-$((900 + 1800 + 300 + SIZE_MIB / 5 + (8 * RUNS + 8) * (CURL_MAX + 5)))}
[[ $TOTAL_MAX =~ ^[1-9][0-9]*$ ]] || die "FXP_BENCH_TIME_LIMIT must be a positive number of seconds"

# --- processes and cleanup ------------------------------------------------------------------
# vsftpd is the harness's SERVER_PID (its process group); the proxies go in EXTRA_PIDS.
SERVER_GROUP=1
declare -A FXP_PID=()
MP_PID=
LOG_FILES=(vsftpd.out vsftpd.log fxprelay.log fxprelay-b.log mp/proftpd.out mp/proftpd.log mp/proxy.log mp/tls.log)
trap_cleanup

# --- tmpfs work directory and the overall bound ---------------------------------------------
NEED_MIB=$((3 * SIZE_MIB + 64)) # source, uploaded copy, checked download
shm_avail_mib=0
if [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]]; then
    shm_avail_mib=$(($(df -k --output=avail /dev/shm | tail -n 1) / 1024))
fi
if ((shm_avail_mib >= NEED_MIB)); then
    WORK=$(mktemp -d /dev/shm/fxp-bench-tls.XXXXXX)
    TMPFS_DESC="/dev/shm (tmpfs, ${shm_avail_mib} MiB free)"
else
    WORK=$(mktemp -d /tmp/fxp-bench-tls.XXXXXX)
    mount -t tmpfs -o "size=${NEED_MIB}m,mode=0755" fxp-bench-tls "$WORK"
    WORK_MOUNTED=1
    TMPFS_DESC="tmpfs mounted at $WORK (${NEED_MIB} MiB)"
fi
chmod 0755 "$WORK" # vsftpd wants a root-owned config path; fxptest must reach its root
start_watchdog "$TOTAL_MAX"

# --- prerequisites and build ----------------------------------------------------------------
tls_peers_there() { [[ -x /usr/sbin/vsftpd ]] && { [[ $WANT_MP == 0 ]] || [[ -f $PEERS/usr/lib/proftpd/mod_proxy.so ]]; }; }
ensure_peers "vsftpd or mod_proxy" tls_peers_there
[[ -x $PY ]] || die "$PY is needed to find free ports"
command -v openssl >/dev/null || die "openssl (the command) is needed to make certificates"
MP_WHY=
if [[ $WANT_MP == 0 ]]; then
    MP_WHY="left out (FXP_BENCH_MODPROXY=0)"
elif [[ ! -x $PEERS/usr/sbin/proftpd || ! -f $PEERS/usr/lib/proftpd/mod_tls.so ||
    ! -f $PEERS/usr/lib/proftpd/mod_proxy.so ]]; then
    MP_WHY="not available ($PEERS/usr/sbin/proftpd, mod_tls.so or mod_proxy.so missing)"
fi
build_fxprelay
START=$SECONDS

# --- helpers --------------------------------------------------------------------------------
cpu_ticks_tree() { # PID -> utime + stime + cutime + cstime (children it has reaped included)
    echo $(($(cpu_ticks "$1") + $(cpu_ticks "$1" 1)))
}
wait_no_children() { # PID: until it has no child processes (sessions ended and reaped), 10 s
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -z $(ps -o pid= --ppid "$1") ]] && return 0
        sleep 0.1
    done
    fail "pid $1 still has session processes 10 s after the last transfer"
}
CURL_TLS=(--ssl-reqd) # + --cacert per path
wait_login() { # PID WHAT URL CA: until a TLS login at URL lists the root (10 s)
    local i
    for ((i = 0; i < 50; i++)); do
        alive "$1" || fail "$2 exited at start"
        curl -sS --max-time 3 "${CURL_TLS[@]}" --cacert "$4" -o /dev/null "$3/" 2>/dev/null && return 0
        sleep 0.2
    done
    curl -sS --max-time 3 "${CURL_TLS[@]}" --cacert "$4" -o /dev/null "$3/" || true
    fail "$2 did not let $FTP_USER log in over TLS within 10 s"
}
peer_ver() { awk -v p="$1" '$1 == p { print $2 }' "$PEERS/.stamp" 2>/dev/null || echo '?'; }

# --- certificates and the file --------------------------------------------------------------
FTP_ROOT=$WORK/root
SRC=$FTP_ROOT/big.bin
mkdir -m 0755 "$FTP_ROOT" "$WORK/empty"
make_cert vsftpd "$SERVER_IP"
make_cert fxprelay "$PROXY_IP"
[[ -z $BIN_B ]] || make_cert fxprelay-b "$PROXY_B_IP"
[[ -n $MP_WHY ]] || make_cert modproxy "$MP_IP"
log "writing $SIZE_MIB MiB of random bytes"
timeout $((STEP_MAX + SIZE_MIB / 20)) \
    dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" iflag=fullblock status=none ||
    fail "could not create the source file"
chmod 0644 "$SRC"
chown -R "$FTP_USER:" "$FTP_ROOT"

# --- vsftpd: TLS required on login and data, session reuse required -------------------------
VSFTPD_EXTRA=$(vsftpd_tls_lines "$WORK/vsftpd.crt" "$WORK/vsftpd.key")
VSFTPD_LOGIN_CHECK="${CURL_TLS[*]} --cacert $WORK/vsftpd.crt" start_vsftpd "$FTP_ROOT" 100 50 "${PEER_CPU[@]}"
VSFTPD_PID=$SERVER_PID
# The proof that TLS is required: a plain login is refused.
if curl -sS --max-time 5 -o /dev/null "$DIRECT_URL/" 2>/dev/null; then
    fail "vsftpd let a plaintext login in; the benchmark needs a TLS-only server"
fi
log "vsftpd requires TLS"

# --- fxprelay: TLS on both legs -------------------------------------------------------------
declare -A FXP_URL
start_fxprelay() { # NAME BIN IP: a reverse listener to vsftpd, TLS on both legs, data: relay
    local name=$1 bin=$2 ip=$3 admin port lo hi
    admin=$(free_port "$ip")
    port=$(free_port "$ip")
    while [[ $port == "$admin" ]]; do port=$(free_port "$ip"); done
    read -r lo hi < <(free_range "$ip" 100) || fail "no free data port range on $ip"
    cat >"$WORK/$name.yaml" <<EOF
admin:
  bind: $ip:$admin
limits:
  shutdown_grace: 2s
data:
  ports: "$lo-$hi"
listeners:
  - name: bench-tls
    bind: $ip:$port
    mode: reverse
    upstream: $SERVER_IP:$VSFTPD_PORT
    data: relay
    upstream_data: passive
    tls:
      client: {mode: explicit, cert: $WORK/$name.crt, key: $WORK/$name.key}
      upstream: {mode: mirror, ca: $WORK/vsftpd.crt}
EOF
    timeout "$STEP_MAX" "$bin" check -c "$WORK/$name.yaml" >"$WORK/check.out" 2>&1 ||
        fail "$bin rejects the generated config: $(cat "$WORK/check.out")"
    # A session of its own, as vsftpd and proftpd have: with sched_autogroup the kernel
    # shares CPU between sessions first, and a proxy in the script's session would share
    # one slice with curl.
    setsid "${PROXY_CPU[@]}" "$bin" run -c "$WORK/$name.yaml" </dev/null >"$WORK/$name.log" 2>&1 &
    FXP_PID[$name]=$!
    EXTRA_PIDS+=("${FXP_PID[$name]}")
    FXP_URL[$name]=ftp://$FTP_USER:$FTP_PASS@$ip:$port
    wait_login "${FXP_PID[$name]}" "$name on $ip:$port" "${FXP_URL[$name]}" "$WORK/$name.crt"
    log "$name ($bin) pid ${FXP_PID[$name]} on $ip:$port, data ports $lo-$hi"
}
start_fxprelay fxprelay "$BIN" "$PROXY_IP"
[[ -z $BIN_B ]] || start_fxprelay fxprelay-b "$BIN_B" "$PROXY_B_IP"

# --- ProFTPD mod_proxy: TLS on both legs ----------------------------------------------------
MP_URL=
if [[ -z $MP_WHY ]]; then
    mkdir -m 0755 "$WORK/mp" "$WORK/mp/tables"
    chown "$FTP_USER:" "$WORK/mp/tables"
    MP_PORT=$(free_port "$MP_IP")
    read -r MP_LO MP_HI < <(free_range "$MP_IP" 100) || fail "no free passive port range on $MP_IP"
    # Standalone and in the foreground (-n): each session is a child of this master.
    # mod_tls on the client side; mod_proxy as a reverse proxy doing AUTH TLS and PROT P
    # toward vsftpd (ProxyTLSTransferProtectionPolicy required), verifying its certificate.
    # ProxyTLSProtocol TLSv1.2: over TLS 1.3 mod_proxy 0.9.2 closes an upload's data
    # connection with vsftpd's session ticket unread, and vsftpd loses the tail (426).
    (
        umask 077
        cat >"$WORK/mp/proftpd.conf" <<EOF
ServerType standalone
ServerName "bench mod_proxy"
DefaultAddress $MP_IP
SocketBindTight on
Port $MP_PORT
UseIPv6 off
User $FTP_USER
Group $(id -gn "$FTP_USER")
PidFile $WORK/mp/proftpd.pid
ScoreboardFile $WORK/mp/proftpd.scoreboard
DelayTable $WORK/mp/proftpd.delay
SystemLog $WORK/mp/proftpd.log
WtmpLog off
UseReverseDNS off
MaxInstances 50
TimeoutIdle 120
TimeoutNoTransfer 120
TimeoutStalled 60
PassivePorts $MP_LO $MP_HI
ModulePath $PEERS/usr/lib/proftpd
LoadModule mod_tls.c
LoadModule mod_proxy.c
TLSEngine on
TLSRequired on
TLSProtocol TLSv1.2 TLSv1.3
TLSRSACertificateFile $WORK/modproxy.crt
TLSRSACertificateKeyFile $WORK/modproxy.key
TLSVerifyClient off
TLSLog $WORK/mp/tls.log
ProxyEngine on
ProxyLog $WORK/mp/proxy.log
ProxyTables $WORK/mp/tables
ProxyRole reverse
ProxyReverseServers ftp://$SERVER_IP:$VSFTPD_PORT
ProxyTLSEngine on
ProxyTLSProtocol TLSv1.2
ProxyTLSCACertificateFile $WORK/vsftpd.crt
ProxyTLSVerifyServer on
ProxyTLSTransferProtectionPolicy required
EOF
    )
    setsid "${PROXY_CPU[@]}" "$PEERS/usr/sbin/proftpd" -n -c "$WORK/mp/proftpd.conf" </dev/null >"$WORK/mp/proftpd.out" 2>&1 &
    MP_PID=$!
    EXTRA_PIDS+=("$MP_PID:group")
    MP_URL=ftp://$FTP_USER:$FTP_PASS@$MP_IP:$MP_PORT
    wait_login "$MP_PID" "proftpd mod_proxy on $MP_IP:$MP_PORT" "$MP_URL" "$WORK/modproxy.crt"
    log "proftpd mod_proxy pid $MP_PID on $MP_IP:$MP_PORT, passive ports $MP_LO-$MP_HI"
fi

# --- transfers ------------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
PATHS=(direct fxprelay)
[[ -z $BIN_B ]] || PATHS+=(fxprelay-b)
[[ -n $MP_URL ]] && PATHS+=(modproxy)
declare -A URL=([direct]=$DIRECT_URL [fxprelay]=${FXP_URL[fxprelay]} [fxprelay-b]=${FXP_URL[fxprelay-b]:-} [modproxy]=$MP_URL)
declare -A CA=([direct]=$WORK/vsftpd.crt [fxprelay]=$WORK/fxprelay.crt [fxprelay-b]=$WORK/fxprelay-b.crt [modproxy]=$WORK/modproxy.crt)
STOR_TLS=(--tls-max 1.2)

# KIND PATH [OUT] [TLS-OPTION...]: one transfer; prints "DATA WHOLE READY PEERS": bytes/s
# of the data flow (time_total - time_pretransfer; for FTP curl's pretransfer mark falls
# after login, PASV/EPSV, the data connection and the 150), curl's own average over the
# whole run, time_pretransfer in s, and the CPU seconds of the two endpoints (curl's, from
# `times`, plus vsftpd's: its listener's utime+stime+cutime+cstime, the session reaped). RETR writes OUT (default /dev/null); STOR uploads SRC as
# up.bin, checks its size and removes it (OUT=keep keeps it). TLS options replace the
# kind's default (STOR: --tls-max 1.2).
transfer() {
    local kind=$1 via=$2 out=${3:-/dev/null} res whole size pre total v0 v1 curl_cpu
    local -a tls=("${@:4}")
    local -a opts=(-sS --max-time "$CURL_MAX" "${CURL_TLS[@]}" --cacert "${CA[$via]}")
    wait_no_children "$VSFTPD_PID"
    v0=$(cpu_ticks_tree "$VSFTPD_PID")
    if [[ $kind == RETR ]]; then
        res=$(timeout $((CURL_MAX + 5)) "${PEER_CPU[@]}" curl "${opts[@]}" "${tls[@]}" -o "$out" \
            -w '%{speed_download} %{size_download} %{time_pretransfer} %{time_total}' \
            "${URL[$via]}/big.bin" && times) || fail "RETR via $via failed (curl exit $?)"
    else
        [[ $# -ge 4 ]] || tls=("${STOR_TLS[@]}")
        res=$(timeout $((CURL_MAX + 5)) "${PEER_CPU[@]}" curl "${opts[@]}" "${tls[@]}" -T "$SRC" \
            -w '%{speed_upload} %{size_upload} %{time_pretransfer} %{time_total}' \
            "${URL[$via]}/up.bin" && times) || fail "STOR via $via failed (curl exit $?)"
        size=$(stat -c %s "$FTP_ROOT/up.bin" 2>/dev/null || echo missing)
        [[ $size == "$SIZE_BYTES" ]] ||
            fail "STOR via $via: the server holds $size bytes, expected $SIZE_BYTES"
        [[ $out == keep ]] || rm -f "$FTP_ROOT/up.bin"
    fi
    wait_no_children "$VSFTPD_PID"
    v1=$(cpu_ticks_tree "$VSFTPD_PID")
    # -w's line, then `times`: the subshell's own times, then its children's ("0m1.2s 0m0.3s").
    read -r whole size pre total <<<"$(head -n 1 <<<"$res")"
    curl_cpu=$(tail -n 1 <<<"$res" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } print s }')
    [[ $size == "$SIZE_BYTES" ]] || fail "$kind via $via moved $size bytes, expected $SIZE_BYTES"
    awk -v b="$size" -v w="$whole" -v p="$pre" -v t="$total" -v c="$curl_cpu" -v v=$((v1 - v0)) -v hz="$CLK_TCK" \
        'BEGIN { d = t - p; if (d < 1e-6) d = 1e-6; printf "%.0f %.0f %.6f %.3f\n", b / d, w, p, c + v / hz }'
}
tls_of() { # PATH [TLS-OPTION...] -> "TLSv1.3 / TLS_AES_256_GCM_SHA384": what curl negotiated
    curl -sS -v --max-time "$STEP_MAX" "${CURL_TLS[@]}" --cacert "${CA[$1]}" "${@:2}" \
        -o /dev/null "${URL[$1]}/" 2>&1 | sed -n 's/^\* SSL connection using //p' | head -n 1
}

for via in "${PATHS[@]:1}"; do
    log "checking a download and an upload through $via byte for byte"
    transfer RETR "$via" "$WORK/check.bin" >/dev/null
    timeout $((STEP_MAX + SIZE_MIB / 20)) cmp "$SRC" "$WORK/check.bin" ||
        fail "the file downloaded through $via differs from the source"
    rm -f "$WORK/check.bin"
    if [[ $via == fxprelay* ]]; then
        transfer STOR "$via" keep --tls-max 1.3 >/dev/null # no ticket on its data connections
    else
        transfer STOR "$via" keep >/dev/null
    fi
    timeout $((STEP_MAX + SIZE_MIB / 20)) cmp "$SRC" "$FTP_ROOT/up.bin" ||
        fail "the file uploaded through $via differs from the source"
    rm -f "$FTP_ROOT/up.bin"
done
transfer RETR direct >/dev/null # warm-up, as the checks were for the proxies
declare -A NEGOTIATED
for via in "${PATHS[@]}"; do
    NEGOTIATED[$via]="RETR $(tls_of "$via"), STOR $(tls_of "$via" "${STOR_TLS[@]}")"
done

GIB_PER_KIND=$(awk -v r="$RUNS" -v m="$SIZE_MIB" 'BEGIN { print r * m / 1024 }')
declare -A RES MED CPU PAIRED PEERS_CPU
proxy_ticks() { # PATH -> its CPU ticks so far
    case $1 in
    fxprelay*) cpu_ticks "${FXP_PID[$1]}" ;;
    modproxy)
        wait_no_children "$MP_PID"
        cpu_ticks_tree "$MP_PID"
        ;;
    esac
}
wakeups() { # PID -> how often its threads have slept and been woken so far (voluntary
    # context switches): the wake-ups a relay pays per batch of records it handles
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'
}
declare -A WAKE
n=${#PATHS[@]}
for kind in RETR STOR; do
    declare -A t0=() w0=()
    for via in "${PATHS[@]:1}"; do t0[$via]=$(proxy_ticks "$via"); done
    for via in "${PATHS[@]:1}"; do [[ $via == fxprelay* ]] && w0[$via]=$(wakeups "${FXP_PID[$via]}"); done
    for via in "${PATHS[@]}"; do RES[$kind.$via]=; done
    for ((run = 1; run <= RUNS; run++)); do
        # The order rotates every run (direct first, then fxprelay first, ...) so no
        # path always runs right after the same other one.
        line="$kind run $run/$RUNS:"
        for ((i = 0; i < n; i++)); do
            via=${PATHS[(i + run - 1) % n]}
            r=$(transfer "$kind" "$via")
            RES[$kind.$via]+="$r"$'\n'
            line+=$(awk -v v="$via" -v r="$r" 'BEGIN { split(r, a, " "); printf "  %s %5.0f MB/s", v, a[1] / 1e6 }')
        done
        log "$line"
    done
    for via in "${PATHS[@]:1}"; do
        t1=$(proxy_ticks "$via")
        CPU[$kind.$via]=$(awk -v t=$((t1 - t0[$via])) -v hz="$CLK_TCK" -v g="$GIB_PER_KIND" \
            'BEGIN { printf "%.2f", t / hz / g }')
        [[ $via == fxprelay* ]] && WAKE[$kind.$via]=$(awk -v w=$(($(wakeups "${FXP_PID[$via]}") - w0[$via])) \
            -v g="$GIB_PER_KIND" 'BEGIN { printf "%.1f", w / g / 1024 }')
    done
    for via in "${PATHS[@]}"; do
        MED[$kind.$via]=$(awk 'NF { print $1 }' <<<"${RES[$kind.$via]}" | median)
        PEERS_CPU[$kind.$via]=$(awk -v m="$SIZE_MIB" 'NF { print $4 * 1024 / m }' <<<"${RES[$kind.$via]}" | median)
    done
    # Each run's fxprelay/other ratio: the transfers of a run ran back to back, so slow
    # drifts of the machine cancel out; the spread shows how noisy it was.
    for other in "${PATHS[@]}"; do
        [[ $other == fxprelay ]] && continue
        ratios=$(paste <(awk 'NF { print $1 }' <<<"${RES[$kind.fxprelay]}") \
            <(awk 'NF { print $1 }' <<<"${RES[$kind.$other]}") | awk '{ printf "%.4f\n", $1 / $2 }' | sort -g)
        PAIRED[$kind.$other]=$(printf '%.2f (%.2f to %.2f)' "$(median <<<"$ratios")" \
            "$(head -n 1 <<<"$ratios")" "$(tail -n 1 <<<"$ratios")")
    done
done
hwm=$(awk '/^VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/${FXP_PID[fxprelay]}/status")

# --- the cipher's own cost, measured now ----------------------------------------------------
# The least a TLS relay can spend: every byte decrypted once and encrypted once, at the speed
# of one core's AES-256-GCM on full-size (16 KiB) records. openssl speed prints kB/s (1000s of
# bytes) for that block size in its last line.
log "openssl speed -evp aes-256-gcm -bytes 16384 (the floor)"
aes_kbs=$(timeout "$STEP_MAX" openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3 2>/dev/null |
    awk '/^AES-256-GCM/ { v = $2 } END { sub(/k$/, "", v); print v }')
[[ $aes_kbs =~ ^[0-9.]+$ ]] || fail "could not read openssl speed's AES-256-GCM figure"
FLOOR=$(awk -v k="$aes_kbs" 'BEGIN { printf "%.3f", 2 * 1073741824 / (k * 1000) }')

# --- report ---------------------------------------------------------------------------------
git_rev=$(git_rev)
table -38 9 9 -19 -19
declare -A LABEL=([direct]='curl -> vsftpd (direct TLS)'
    [fxprelay]='curl -> fxprelay -> vsftpd'
    [fxprelay-b]='curl -> fxprelay B -> vsftpd'
    [modproxy]='curl -> proftpd mod_proxy -> vsftpd')
declare -A NAME=([direct]=direct [fxprelay]=fxprelay [fxprelay-b]='fxprelay B' [modproxy]=mod_proxy)
cat <<EOF

# fxprelay FTPS benchmark
command:  scripts/bench-tls.sh $SIZE_MIB $RUNS${FXP_BENCH_COMPARE_BIN:+  (FXP_BENCH_COMPARE_BIN=$FXP_BENCH_COMPARE_BIN)}${FXP_BENCH_PIN:+  (FXP_BENCH_PIN=$FXP_BENCH_PIN)}${FXP_BENCH_MODPROXY:+  (FXP_BENCH_MODPROXY=$FXP_BENCH_MODPROXY)}
date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:  $(nproc) CPUs ($(cpu_model)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -sr)
load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at the end
software: fxprelay $git_rev (rustls, aws-lc-rs)$([[ -z $BIN_B ]] || echo "; fxprelay B = $BIN_B"), vsftpd $(pkg_ver vsftpd), $(curl --version | head -n 1 | cut -d' ' -f1-2), $(openssl version | cut -d' ' -f1-2)$([[ -z $MP_URL ]] || echo ", proftpd $(peer_ver proftpd-core) + mod_proxy $(peer_ver proftpd-mod-proxy)")
files:    ${SIZE_MIB} MiB of /dev/urandom on $TMPFS_DESC
cpus:     $(if [[ $PIN == 1 ]]; then echo "pinned: vsftpd and curl on CPU 0, the proxies on CPU 1"; else echo "not pinned (all processes share all CPUs)"; fi); sched_autogroup $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo '?')
          (vsftpd and each proxy run in sessions of their own, curl in this script's:
          with autogroup on, the kernel shares CPU between sessions before processes)
TLS:      every path requires TLS on control and data (PROT P) on both legs; vsftpd
          requires session reuse. curl uploads with --tls-max 1.2 on every path (over TLS
          1.3 vsftpd's and mod_tls's data-connection session ticket, left unread by curl,
          makes the kernel reset the connection and lose the upload's tail; fxprelay's own
          check upload ran over TLS 1.3). Negotiated on the client leg:
EOF
for via in "${PATHS[@]}"; do printf '          %-10s %s\n' "${NAME[$via]}" "${NEGOTIATED[$via]}"; done
[[ -z $MP_WHY ]] || echo "mod_proxy: $MP_WHY"
echo
echo "median of $RUNS runs of ${SIZE_MIB} MiB; MB/s = 10^6 bytes/s of the data flow (150 to 226)"
row path 'RETR MB/s' 'STOR MB/s' 'proxy CPU s/GiB' 'curl+vsftpd s/GiB'
row '' '' '' 'RETR / STOR' 'RETR / STOR'
rule
for via in "${PATHS[@]}"; do
    cpu=-
    [[ $via == direct ]] || cpu="${CPU[RETR.$via]} / ${CPU[STOR.$via]}"
    row "${LABEL[$via]}" "$(mbs "${MED[RETR.$via]}")" "$(mbs "${MED[STOR.$via]}")" "$cpu" \
        "$(printf '%.2f / %.2f' "${PEERS_CPU[RETR.$via]}" "${PEERS_CPU[STOR.$via]}")"
done
for via in "${PATHS[@]:1}"; do
    row "ratio ${NAME[$via]} / direct" "$(ratio "${MED[RETR.$via]}" "${MED[RETR.direct]}")" \
        "$(ratio "${MED[STOR.$via]}" "${MED[STOR.direct]}")" '' ''
done
if [[ -n $BIN_B ]]; then
    row "ratio fxprelay / fxprelay B" "$(ratio "${MED[RETR.fxprelay]}" "${MED[RETR.fxprelay-b]}")" \
        "$(ratio "${MED[STOR.fxprelay]}" "${MED[STOR.fxprelay-b]}")" '' ''
fi
if [[ -n $MP_URL ]]; then
    row "ratio fxprelay / mod_proxy" "$(ratio "${MED[RETR.fxprelay]}" "${MED[RETR.modproxy]}")" \
        "$(ratio "${MED[STOR.fxprelay]}" "${MED[STOR.modproxy]}")" '' ''
fi
echo
echo "ratio of each run's back-to-back transfers, median (min to max):"
for other in "${PATHS[@]}"; do
    [[ $other == fxprelay ]] && continue
    echo "  fxprelay / ${NAME[$other]}: RETR ${PAIRED[RETR.$other]}; STOR ${PAIRED[STOR.$other]}"
done
# When the machine's CPU is the limit (2 cores, or other work on them), throughput goes
# as 1 / (CPU per byte of every process on the path): that ratio is the expectation.
echo "CPU-bound expectation (direct path's CPU / this path's CPU, curl + vsftpd + proxy):"
for via in "${PATHS[@]:1}"; do
    exp_ratio() { # KIND
        awk -v d="${PEERS_CPU[$1.direct]}" -v e="${PEERS_CPU[$1.$via]}" -v p="${CPU[$1.$via]}" \
            'BEGIN { printf "%.2f (%.2f / %.2f s/GiB)", d / (e + p), d, e + p }'
    }
    echo "  ${NAME[$via]}: RETR $(exp_ratio RETR); STOR $(exp_ratio STOR)"
done
echo "CPU per GiB moved: fxprelay utime+stime of its process; mod_proxy utime+stime+cutime+cstime"
echo "     of its master (its session processes included); curl+vsftpd: the two endpoints"
echo "     together, median per transfer (on $(nproc) CPUs a proxy's decrypt + encrypt competes"
echo "     with theirs for the same cores)."
for via in "${PATHS[@]:1}"; do
    [[ $via == fxprelay* ]] || continue
    echo "${NAME[$via]} wake-ups per MiB moved (its threads' voluntary context switches): RETR ${WAKE[RETR.$via]}; STOR ${WAKE[STOR.$via]}"
done
echo "fxprelay peak RSS (VmHWM): $hwm; took $((SECONDS - START)) s"
echo
echo "the floor: one core's AES-256-GCM (openssl speed, 16 KiB blocks) $(awk -v k="$aes_kbs" 'BEGIN { printf "%.0f", k / 1000 }') MB/s;"
echo "     decrypting and encrypting each byte once costs $FLOOR CPU s/GiB"
for via in "${PATHS[@]:1}"; do
    [[ $via == modproxy ]] && continue
    echo "  ${NAME[$via]} CPU / floor: RETR $(ratio "${CPU[RETR.$via]}" "$FLOOR"); STOR $(ratio "${CPU[STOR.$via]}" "$FLOOR")"
done
echo
verdict() { # NAME VALUE LIMIT [GOAL]
    local v
    v=$(awk -v x="$2" -v l="$3" -v g="${4:-0}" 'BEGIN {
        if (x < l) print "BELOW"; else if (g > 0 && x < g) print "ok, below the goal"; else print "ok" }')
    printf '  %-34s %s (minimum %s%s): %s\n' "$1" "$2" "$3" "${4:+, goal $4}" "$v"
}
echo "targets (issue 10): fxprelay >= 0.6x direct TLS (goal 0.8x), >= 1.2x mod_proxy;"
echo "         (issue 26): fxprelay CPU per GiB <= 1.3x the floor"
for kind in RETR STOR; do
    v=$(ratio "${CPU[$kind.fxprelay]}" "$FLOOR")
    printf '  %-34s %s (at most 1.3): %s\n' "$kind fxprelay CPU / floor" "$v" \
        "$(awk -v x="$v" 'BEGIN { print (x <= 1.3) ? "ok" : "ABOVE" }')"
done
for kind in RETR STOR; do
    verdict "$kind fxprelay / direct TLS" "$(ratio "${MED[$kind.fxprelay]}" "${MED[$kind.direct]}")" 0.6 0.8
    [[ -z $MP_URL ]] ||
        verdict "$kind fxprelay / mod_proxy" "$(ratio "${MED[$kind.fxprelay]}" "${MED[$kind.modproxy]}")" 1.2
done
