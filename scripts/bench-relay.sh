#!/usr/bin/env bash
# End-to-end throughput of fxprelay's `data: relay` mode against curl -> vsftpd directly.
#
#   scripts/bench-relay.sh [SIZE_MIB=1024] [RUNS=5]
#
# Loopback only, files on tmpfs, bounded in time; not part of `cargo test`.
#
#   1. builds `cargo build --release` (root needed: vsftpd logs in the system user
#      `fxptest` from scripts/install-test-peers.sh, which is run if vsftpd/curl/the user
#      are missing);
#   2. creates a SIZE_MIB file of /dev/urandom bytes on tmpfs (/dev/shm when it is tmpfs
#      with room, else a tmpfs mounted under a temporary directory);
#   3. starts vsftpd in the foreground (own session, killed as a process group) on
#      127.0.0.71 and a free port, user fxptest chrooted to the tmpfs directory;
#   4. starts target/release/fxprelay on 127.0.0.72 (reverse listener to vsftpd,
#      `data: relay`, `upstream_data: passive`, data ports 51000-51099) and waits for
#      `GET /healthz` = 200;
#   5. downloads the file once through the proxy and `cmp`s it with the source, uploads
#      once through the proxy and `cmp`s the server's copy (no speed for broken transfers);
#   6. RETR then STOR, RUNS times each, interleaved (direct, proxy, proxy, direct, direct,
#      ...: the order flips every run) so machine noise hits both alike;
#      speed = bytes / (curl's time_total - time_pretransfer): for FTP curl's pretransfer
#      mark falls after login, PWD, PASV/EPSV, the data connection and the 150 reply, so
#      this is the data flow itself (vsftpd's PAM login alone takes ~30 ms, 10% of a 1 GiB
#      transfer); median per path; curl's own whole-run average and the time to the 150
#      are printed too; the proxy's CPU time (utime+stime of its pid, all threads) over
#      its runs of each kind, per GiB moved; its peak RSS;
#   7. prints a table. Every process it started is killed by pid (vsftpd: its group) and
#      every temporary file/mount removed on exit, including on errors and signals.
#
# Knobs (environment): FXP_BENCH_DATA=passthrough benchmarks passthrough instead (plumbing
# check only: the data then bypasses the proxy); FXPRELAY_BIN=PATH uses that binary and
# skips the build; FXP_BENCH_SERVER_IP / FXP_BENCH_PROXY_IP change the two addresses;
# FXP_BENCH_PIN=1 pins vsftpd and curl to CPU 0 and fxprelay to CPU 1 (needs 2 CPUs):
# a diagnostic that takes CPU contention out of the comparison, to tell the relay's own
# cost (latency, buffering) from the CPU it takes away from the peers on a small machine;
# FXP_BENCH_TIME_LIMIT=SECONDS replaces the overall time limit (default: generous, from
# SIZE_MIB and RUNS, build included).
set -euo pipefail

PROG=bench-relay
# shellcheck source=SCRIPTDIR/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,4
[[ $# -le 2 ]] || usage 2,4
SIZE_MIB=${1:-1024}
RUNS=${2:-5}
check_count SIZE_MIB "$SIZE_MIB" 16384
check_count RUNS "$RUNS" 50

DATA_MODE=${FXP_BENCH_DATA:-relay}
[[ $DATA_MODE == relay || $DATA_MODE == passthrough ]] ||
    die "FXP_BENCH_DATA must be relay or passthrough, got '$DATA_MODE'"
PIN=${FXP_BENCH_PIN:-0}
[[ $PIN == 0 || $PIN == 1 ]] || die "FXP_BENCH_PIN must be 0 or 1, got '$PIN'"
PEER_CPU=()
PROXY_CPU=()
if [[ $PIN == 1 ]]; then
    (($(nproc) >= 2)) || die "FXP_BENCH_PIN=1 needs at least 2 CPUs"
    PEER_CPU=(taskset -c 0)
    PROXY_CPU=(taskset -c 1)
fi
SERVER_IP=${FXP_BENCH_SERVER_IP:-127.0.0.71}
PROXY_IP=${FXP_BENCH_PROXY_IP:-127.0.0.72}
check_addresses "$SERVER_IP" "$PROXY_IP"
PROXY_DATA_PORTS=51000-51099

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
# Time bounds (seconds), besides INSTALL_MAX, BUILD_MAX and STEP_MAX from lib/harness.sh.
# A transfer may run at 10 MiB/s before it counts as hung.
CURL_MAX=$((30 + SIZE_MIB / 10))
TOTAL_MAX=${FXP_BENCH_TIME_LIMIT:-$((INSTALL_MAX + BUILD_MAX + 300 + SIZE_MIB / 5 + (4 * RUNS + 3) * (CURL_MAX + 5)))}
[[ $TOTAL_MAX =~ ^[1-9][0-9]*$ ]] || die "FXP_BENCH_TIME_LIMIT must be a positive number of seconds"

if [[ $(id -u) -ne 0 ]]; then
    die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"
fi

trap_cleanup # from here on every process started is stopped, WORK removed, on any exit
LOG_FILES=(vsftpd.out vsftpd.log fxprelay.log)

# --- tmpfs work directory -----------------------------------------------------------------
NEED_MIB=$((3 * SIZE_MIB + 64)) # source, uploaded copy, verified download
shm_avail_mib=0
if [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]]; then
    shm_avail_mib=$(($(df -k --output=avail /dev/shm | tail -n 1) / 1024))
fi
if ((shm_avail_mib >= NEED_MIB)); then
    WORK=$(mktemp -d /dev/shm/fxp-bench.XXXXXX)
    TMPFS_DESC="/dev/shm (tmpfs, ${shm_avail_mib} MiB free)"
else
    WORK=$(mktemp -d /tmp/fxp-bench.XXXXXX)
    mount -t tmpfs -o "size=${NEED_MIB}m,mode=0755" fxp-bench "$WORK"
    WORK_MOUNTED=1
    TMPFS_DESC="tmpfs mounted at $WORK (${NEED_MIB} MiB)"
fi
# Root-owned 0755: vsftpd refuses configs in group/world-writable places, and fxptest must
# be able to reach its root below.
chmod 0755 "$WORK"

start_watchdog "$TOTAL_MAX"

# --- prerequisites and build --------------------------------------------------------------
ensure_peers vsftpd test -x /usr/sbin/vsftpd
[[ -x $PY ]] || die "$PY is needed to find free ports"
build_fxprelay
START=$SECONDS

# --- header: how the numbers were made ----------------------------------------------------
git_rev=$(git_rev)
cat <<EOF
# fxprelay relay benchmark
command:  scripts/bench-relay.sh $SIZE_MIB $RUNS${FXP_BENCH_DATA:+  (FXP_BENCH_DATA=$FXP_BENCH_DATA)}${FXP_BENCH_PIN:+  (FXP_BENCH_PIN=$FXP_BENCH_PIN)}
date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:  $(nproc) CPUs ($(cpu_model)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -sr) $(uname -m)
load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start
software: fxprelay $git_rev ($BIN), vsftpd $(pkg_ver vsftpd), $(curl --version | head -n 1 | cut -d' ' -f1-2)
files:    ${SIZE_MIB} MiB of /dev/urandom on $TMPFS_DESC
cpus:     $(if [[ $PIN == 1 ]]; then echo "pinned: vsftpd and curl on CPU 0, fxprelay on CPU 1"; else echo "not pinned (all processes share all CPUs)"; fi)
paths:    direct  curl -> vsftpd $SERVER_IP (PASV, --disable-epsv)
          proxy   curl -> fxprelay $PROXY_IP (data: $DATA_MODE) -> vsftpd
EOF

# --- vsftpd ---------------------------------------------------------------------------------
FTP_ROOT=$WORK/root
SRC=$FTP_ROOT/big.bin
mkdir -m 0755 "$FTP_ROOT"
log "writing $SIZE_MIB MiB of random bytes"
timeout $((STEP_MAX + SIZE_MIB / 20)) \
    dd if=/dev/urandom of="$SRC" bs=1M count="$SIZE_MIB" iflag=fullblock status=none ||
    die "could not create the source file"
chmod 0644 "$SRC"
chown -R "$FTP_USER:" "$FTP_ROOT"

start_vsftpd "$FTP_ROOT" 100 50 "${PEER_CPU[@]}"

# --- fxprelay -------------------------------------------------------------------------------
pick_proxy_ports
CONFIG=$WORK/fxprelay.yaml
fxprelay_config bench "$SERVER_IP:$VSFTPD_PORT" "$DATA_MODE" "$PROXY_DATA_PORTS" >"$CONFIG"
start_fxprelay "$CONFIG" "${PROXY_CPU[@]}"
PROXY_URL=ftp://$FTP_USER:$FTP_PASS@$PROXY_IP:$PROXY_PORT
log "fxprelay pid $PROXY_PID on $PROXY_IP:$PROXY_PORT, admin $PROXY_IP:$ADMIN_PORT"

# --- transfers ------------------------------------------------------------------------------
curl_opts() { # VIA -> curl options for that path
    local -a o=(-sS --max-time "$CURL_MAX")
    if [[ $1 == direct ]]; then
        o+=(--disable-epsv)
    elif [[ $DATA_MODE == passthrough ]]; then
        # The data connection goes to the server: EPSV's 229 would send curl to the proxy's
        # address, and curl ignores 227 addresses unless told not to.
        o+=(--disable-epsv --no-ftp-skip-pasv-ip)
    fi
    printf '%s\n' "${o[@]}"
}

# KIND VIA [OUT]: one transfer; prints "DATA WHOLE READY": bytes/s of the data flow
# (curl's time_total - time_pretransfer; for FTP pretransfer comes after greeting, login,
# PWD, PASV/EPSV, the data connection, TYPE, RETR/STOR and its 150), curl's own average
# over the whole run, and time_pretransfer in seconds. (curl's time_connect is no use
# here: the data connection overwrites it.) RETR writes to OUT (default /dev/null); STOR
# uploads SRC as up.bin, checks its size and removes it (OUT=keep keeps it).
transfer() {
    local kind=$1 via=$2 out=${3:-/dev/null} url opts res whole size pre total
    url=$DIRECT_URL
    [[ $via == proxy ]] && url=$PROXY_URL
    mapfile -t opts < <(curl_opts "$via")
    if [[ $kind == RETR ]]; then
        res=$(timeout $((CURL_MAX + 5)) "${PEER_CPU[@]}" curl "${opts[@]}" -o "$out" \
            -w '%{speed_download} %{size_download} %{time_pretransfer} %{time_total}' \
            "$url/big.bin") || fail "RETR $via failed (curl exit $?)"
    else
        res=$(timeout $((CURL_MAX + 5)) "${PEER_CPU[@]}" curl "${opts[@]}" -T "$SRC" \
            -w '%{speed_upload} %{size_upload} %{time_pretransfer} %{time_total}' \
            "$url/up.bin") || fail "STOR $via failed (curl exit $?)"
        size=$(stat -c %s "$FTP_ROOT/up.bin" 2>/dev/null || echo missing)
        [[ $size == "$SIZE_BYTES" ]] ||
            fail "STOR $via: the server holds $size bytes, expected $SIZE_BYTES"
        [[ $out == keep ]] || rm -f "$FTP_ROOT/up.bin"
    fi
    read -r whole size pre total <<<"$res"
    [[ $size == "$SIZE_BYTES" ]] || fail "$kind $via moved $size bytes, expected $SIZE_BYTES"
    awk -v b="$size" -v w="$whole" -v p="$pre" -v t="$total" \
        'BEGIN { d = t - p; if (d < 1e-6) d = 1e-6; printf "%.0f %.0f %.6f\n", b / d, w, p }'
}

log "checking a download and an upload through the proxy byte for byte"
transfer RETR proxy "$WORK/check.bin" >/dev/null
timeout $((STEP_MAX + SIZE_MIB / 20)) cmp "$SRC" "$WORK/check.bin" ||
    fail "the file downloaded through the proxy differs from the source"
rm -f "$WORK/check.bin"
transfer STOR proxy keep >/dev/null
timeout $((STEP_MAX + SIZE_MIB / 20)) cmp "$SRC" "$FTP_ROOT/up.bin" ||
    fail "the file uploaded through the proxy differs from the source"
rm -f "$FTP_ROOT/up.bin"
transfer RETR direct >/dev/null # warm-up, as the checks were for the proxy path

CLK_TCK=$(getconf CLK_TCK)
GIB_PER_KIND=$(awk -v r="$RUNS" -v m="$SIZE_MIB" 'BEGIN { print r * m / 1024 }')
declare -A MED CPU_PER_GIB PAIRED
for kind in RETR STOR; do
    direct=()
    proxy=()
    ticks0=$(cpu_ticks "$PROXY_PID")
    for ((run = 1; run <= RUNS; run++)); do
        # Interleaved, and the order flips every run (direct first on odd runs, proxy first
        # on even ones) so neither path always runs right after the other.
        if ((run % 2)); then
            direct+=("$(transfer "$kind" direct)")
            proxy+=("$(transfer "$kind" proxy)")
        else
            proxy+=("$(transfer "$kind" proxy)")
            direct+=("$(transfer "$kind" direct)")
        fi
        awk -v k="$kind" -v r="$run" -v n="$RUNS" -v d="${direct[-1]}" -v p="${proxy[-1]}" 'BEGIN {
            split(d, a, " "); split(p, b, " ")
            printf "%s run %d/%d: direct %5.0f MB/s (whole run %5.0f, 150 after %5.1f ms)   " \
                "proxy %5.0f MB/s (whole run %5.0f, 150 after %5.1f ms)\n", k, r, n,
                a[1] / 1e6, a[2] / 1e6, a[3] * 1e3, b[1] / 1e6, b[2] / 1e6, b[3] * 1e3
        }' >&2
    done
    ticks1=$(cpu_ticks "$PROXY_PID")
    # Each run's proxy/direct ratio: the two transfers of a run ran back to back, so
    # slow drifts of the machine cancel out; the spread shows how noisy it was.
    ratios=$(for ((i = 0; i < RUNS; i++)); do
        awk -v d="${direct[i]%% *}" -v p="${proxy[i]%% *}" 'BEGIN { printf "%.4f\n", p / d }'
    done | sort -g)
    PAIRED[$kind]=$(printf 'median %.2f (%.2f to %.2f)' "$(median <<<"$ratios")" \
        "$(head -n 1 <<<"$ratios")" "$(tail -n 1 <<<"$ratios")")
    for via in direct proxy; do
        declare -n runs=$via
        for f in 1 2 3; do
            MED[$kind.$via.$f]=$(printf '%s\n' "${runs[@]}" | col "$f" | median)
        done
        unset -n runs
    done
    CPU_PER_GIB[$kind]=$(awk -v t=$((ticks1 - ticks0)) -v hz="$CLK_TCK" -v g="$GIB_PER_KIND" \
        'BEGIN { printf "%.3f", t / hz / g }')
done
hwm=$(awk '/^VmHWM/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$PROXY_PID/status")

# --- report ---------------------------------------------------------------------------------
table -42 9 9 -25
PROXY_LABEL="curl -> fxprelay ($DATA_MODE) -> vsftpd"
echo
echo "median of $RUNS runs of ${SIZE_MIB} MiB; MB/s = 10^6 bytes/s of the data flow (150 to 226)"
row path 'RETR MB/s' 'STOR MB/s' 'proxy CPU s/GiB RETR/STOR'
rule
row 'curl -> vsftpd (direct)' "$(mbs "${MED[RETR.direct.1]}")" "$(mbs "${MED[STOR.direct.1]}")" '-'
row "$PROXY_LABEL" "$(mbs "${MED[RETR.proxy.1]}")" "$(mbs "${MED[STOR.proxy.1]}")" \
    "${CPU_PER_GIB[RETR]} / ${CPU_PER_GIB[STOR]}"
row 'ratio proxy/direct' "$(ratio "${MED[RETR.proxy.1]}" "${MED[RETR.direct.1]}")" \
    "$(ratio "${MED[STOR.proxy.1]}" "${MED[STOR.direct.1]}")" ''
echo
echo "ratio of each run's two transfers (proxy/direct, back to back):"
echo "  RETR ${PAIRED[RETR]}; STOR ${PAIRED[STOR]}"
# curl 7.88 at times idles ~150 ms between reading the 227/229 and connecting (strace: a
# poll on its wakeup socket alone), seen only through the proxy; that lands in these two.
echo "curl's own average over the whole run (login and data setup included), MB/s, median:"
echo "  RETR direct $(mbs "${MED[RETR.direct.2]}"), proxy $(mbs "${MED[RETR.proxy.2]}");" \
    "STOR direct $(mbs "${MED[STOR.direct.2]}"), proxy $(mbs "${MED[STOR.proxy.2]}")"
echo "connect to 150 (login, PWD, PASV/EPSV, data connection, RETR/STOR), median ms:"
echo "  RETR direct $(ms "${MED[RETR.direct.3]}"), proxy $(ms "${MED[RETR.proxy.3]}");" \
    "STOR direct $(ms "${MED[STOR.direct.3]}"), proxy $(ms "${MED[STOR.proxy.3]}")"
echo "proxy peak RSS (VmHWM): $hwm; load at end: $(cut -d' ' -f1-3 /proc/loadavg); took $((SECONDS - START)) s"
if [[ $DATA_MODE == passthrough ]]; then
    echo "note: passthrough moves the data directly between curl and vsftpd; only the control"
    echo "      channel crosses the proxy, so these figures check the plumbing, not the relay."
fi
