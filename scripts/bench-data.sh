#!/usr/bin/env bash
# The data path against its anchors, in one run: curl -> vsftpd directly, through fxprelay
# copying in user space, through fxprelay splicing, and through SUSE's ftp-proxy.
#
#   scripts/bench-data.sh [SIZE_MIB=256] [RUNS=5]
#
# Loopback only, files on tmpfs, bounded in count and time; not part of `cargo test`.
#
#   1. builds `cargo build --release` (root needed: vsftpd logs in the system user
#      `fxptest` of scripts/install-test-peers.sh, which is run if vsftpd/curl/the user
#      are missing); SUSE's proxy takes part when /usr/sbin/ftp-proxy is installed
#      (Debian: `apt-get install ftp-proxy`; its package does not start it);
#   2. writes a SIZE_MIB file and a 64 MiB file of /dev/urandom bytes on tmpfs;
#   3. starts vsftpd on 127.0.0.73 and, in front of it (each in passive mode towards it):
#      fxprelay with FXPRELAY_SPLICE=0 (copy) on 127.0.0.74, fxprelay with
#      FXPRELAY_SPLICE=1 (splice) on 127.0.0.75, ftp-proxy (forking, standalone, its own
#      config listening on 127.0.0.76 only) on 127.0.0.76;
#   4. memory, while every proxy is fresh: after one 1 MiB download, 64 downloads of the
#      SIZE_MIB file through the proxy at once, each limited by curl to 1 MiB/s; once all
#      64 are moving (and 2 s later), the proxy's PSS (ftp-proxy: its master and every
#      child) minus the PSS before, per transfer; the 64 are then stopped;
#   5. one RETR and one STOR through each proxy, `cmp`ed with the source;
#   6. RETR then STOR of the SIZE_MIB file, RUNS rounds, each round every path once in an
#      order that rotates every round; MB/s of the data flow (curl's time_total -
#      time_pretransfer, as in bench-relay.sh), median per path; each proxy's CPU per GiB
#      moved (fxprelay: utime+stime of its process; ftp-proxy: the master's own plus the
#      cutime+cstime of the session processes it reaped);
#   7. 8 and then 32 simultaneous RETRs of the 64 MiB file per path, 3 rounds, rotating:
#      aggregate MB/s = all bytes / the wall time from the first start to the last end;
#   8. prints one table and the ratios the project is judged by. Every process it started
#      is stopped by pid (vsftpd and ftp-proxy: their process groups), every temporary
#      file removed, on every exit.
#
# Knobs (environment): FXPRELAY_BIN=PATH uses that binary and skips the build;
# FXP_BENCH_BASELINE=PATH adds a row for another fxprelay binary (an older build, with its
# own defaults) on 127.0.0.77, for before/after figures from one run;
# FXP_BENCH_TIME_LIMIT=SECONDS replaces the overall time limit; FXP_BENCH_SUSE=0 leaves
# ftp-proxy out even when installed.
set -euo pipefail

PROG=bench-data
# shellcheck source=SCRIPTDIR/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 4,6
[[ $# -le 2 ]] || usage 4,6
SIZE_MIB=${1:-256}
RUNS=${2:-5}
check_count SIZE_MIB "$SIZE_MIB" 4096
check_count RUNS "$RUNS" 25
(( SIZE_MIB >= 16 )) || die "SIZE_MIB below 16 is too short to time"

SERVER_IP=127.0.0.73
COPY_IP=127.0.0.74
SPLICE_IP=127.0.0.75
SUSE_IP=127.0.0.76
BASE_IP=127.0.0.77
SUSE_BIN=/usr/sbin/ftp-proxy
PAR_MIB=64          # the file of the parallel rounds
PAR_SIZES=(8 32)    # simultaneous transfers
PAR_RUNS=3
MEM_N=64            # rate-limited downloads held at once
MEM_RATE=1M         # curl --limit-rate, bytes/s (M = MiB)
MEM_MOVING=$((256 * 1024)) # bytes every download must have before memory is read
MEM_SETTLE=2        # seconds between "all moving" and the reading

SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
PAR_BYTES=$((PAR_MIB * 1024 * 1024))
# A transfer may run at 10 MiB/s before it counts as hung.
CURL_MAX=$((30 + SIZE_MIB / 10))
PAR_MAX=$((30 + 32 * PAR_MIB / 10))
TOTAL_MAX=${FXP_BENCH_TIME_LIMIT:-$((INSTALL_MAX + BUILD_MAX + 600 + 4 * (2 * RUNS + 2) * (CURL_MAX + 5) + 8 * PAR_RUNS * PAR_MAX))}
[[ $TOTAL_MAX =~ ^[1-9][0-9]*$ ]] || die "FXP_BENCH_TIME_LIMIT must be a positive number of seconds"

[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"

trap_cleanup # from here on every process started is stopped, WORK removed, on any exit
LOG_FILES=(vsftpd.out vsftpd.log fxprelay-copy.log fxprelay-splice.log fxprelay-base.log ftp-proxy.out suse/ftp-proxy.log)

# --- tmpfs work directory -----------------------------------------------------------------
NEED_MIB=$((3 * SIZE_MIB + PAR_MIB + 64)) # sources, an uploaded copy, a verified download
shm_avail_mib=0
if [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]]; then
    shm_avail_mib=$(($(df -k --output=avail /dev/shm | tail -n 1) / 1024))
fi
if ((shm_avail_mib >= NEED_MIB)); then
    WORK=$(mktemp -d /dev/shm/fxp-bench.XXXXXX)
else
    WORK=$(mktemp -d /tmp/fxp-bench.XXXXXX)
    mount -t tmpfs -o "size=${NEED_MIB}m,mode=0755" fxp-bench "$WORK"
    WORK_MOUNTED=1
fi
chmod 0755 "$WORK" # root-owned 0755: vsftpd refuses group/world-writable places

start_watchdog "$TOTAL_MAX"

# --- prerequisites and build --------------------------------------------------------------
ensure_peers vsftpd test -x /usr/sbin/vsftpd
[[ -x $PY ]] || die "$PY is needed to find free ports"
build_fxprelay
START=$SECONDS

PATHS=(direct copy splice)
if [[ -n ${FXP_BENCH_BASELINE:-} ]]; then
    [[ -x $FXP_BENCH_BASELINE ]] || die "FXP_BENCH_BASELINE=$FXP_BENCH_BASELINE is not an executable"
    PATHS+=(base)
fi
if [[ ${FXP_BENCH_SUSE:-1} != 0 && -x $SUSE_BIN ]]; then
    PATHS+=(suse)
    SUSE_DESC="ftp-proxy $(dpkg-query -W -f='${Version}' ftp-proxy 2>/dev/null || echo '?')"
else
    SUSE_DESC="not run ($SUSE_BIN $([[ -x $SUSE_BIN ]] && echo "left out: FXP_BENCH_SUSE=0" || echo "not installed: apt-get install ftp-proxy"))"
fi
declare -A LABEL=(
    [direct]='curl -> vsftpd (direct)'
    [copy]='fxprelay, user-space copy'
    [splice]='fxprelay, splice(2)'
    [suse]='SUSE ftp-proxy (fork per session)'
    [base]='fxprelay baseline, its defaults'
)
# What this build does when FXPRELAY_SPLICE is not set.
DEFAULT_PATH=splice
LABEL[$DEFAULT_PATH]+=' (default)'

# --- header -------------------------------------------------------------------------------
git_rev=$(git_rev)
cat <<EOF
# fxprelay data path benchmark
command:  scripts/bench-data.sh $SIZE_MIB $RUNS
date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:  $(nproc) CPUs ($(cpu_model)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -sr) $(uname -m)
load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start
software: fxprelay $git_rev ($BIN), vsftpd $(dpkg-query -W -f='${Version}' vsftpd 2>/dev/null || echo '?'), $SUSE_DESC, $(curl --version | head -n 1 | cut -d' ' -f1-2)
files:    ${SIZE_MIB} MiB and ${PAR_MIB} MiB of /dev/urandom on tmpfs ($WORK)
EOF

# --- files and vsftpd ---------------------------------------------------------------------
FTP_ROOT=$WORK/root
SRC=$FTP_ROOT/big.bin
mkdir -m 0755 "$FTP_ROOT" "$WORK/mem"
log "writing $SIZE_MIB + $PAR_MIB + 1 MiB of random bytes"
for f in big:$SIZE_MIB mid:$PAR_MIB warm:1; do
    timeout $((STEP_MAX + ${f#*:} / 20)) dd if=/dev/urandom of="$FTP_ROOT/${f%:*}.bin" bs=1M \
        count="${f#*:}" iflag=fullblock status=none || die "could not create ${f%:*}.bin"
done
chmod 0644 "$FTP_ROOT"/*.bin
chown -R "$FTP_USER:" "$FTP_ROOT"
# Passive ports for the 64 held downloads plus the 32 parallel ones, with room to spare.
start_vsftpd "$FTP_ROOT" 200 150

# --- the proxies --------------------------------------------------------------------------
declare -A URL PID ADMIN
URL[direct]=$DIRECT_URL
start_proxy() { # NAME IP DATA_PORTS PREFIX...: fxprelay NAME, run by PREFIX (env ...)
    local name=$1 ip=$2 ports=$3
    shift 3
    PROXY_IP=$ip
    pick_proxy_ports
    fxprelay_config "$name" "$SERVER_IP:$VSFTPD_PORT" relay "$ports" 'max_sessions_per_ip: 256' \
        >"$WORK/fxprelay-$name.yaml"
    FXPRELAY_LOG=fxprelay-$name.log start_fxprelay "$WORK/fxprelay-$name.yaml" "$@"
    PID[$name]=$PROXY_PID
    ADMIN[$name]=$ip:$ADMIN_PORT
    EXTRA_PIDS+=("$PROXY_PID")
    PROXY_PID=
    URL[$name]=ftp://$FTP_USER:$FTP_PASS@$ip:$PROXY_PORT
    log "fxprelay ($name) pid ${PID[$name]} on $ip:$PROXY_PORT"
}
check_addresses "$SERVER_IP" "$COPY_IP"
check_addresses "$SPLICE_IP" "$SUSE_IP"
start_proxy copy "$COPY_IP" 51100-51299 env FXPRELAY_SPLICE=0
start_proxy splice "$SPLICE_IP" 51300-51499 env FXPRELAY_SPLICE=1
if [[ -n ${FXP_BENCH_BASELINE:-} ]]; then
    check_addresses "$SERVER_IP" "$BASE_IP"
    BIN=$FXP_BENCH_BASELINE start_proxy base "$BASE_IP" 51500-51699 env -u FXPRELAY_SPLICE
fi

if [[ " ${PATHS[*]} " == *" suse "* ]]; then
    SUSE_PORT=$(free_port "$SUSE_IP")
    # ftp-proxy gives up after a few ports in use (one retry budget for the whole range),
    # so it gets a range wide enough for random picks to rarely collide.
    range=$(free_range "$SUSE_IP" 2000) || die "no free passive port range on $SUSE_IP"
    read -r suse_lo suse_hi <<<"$range"
    # Listen on the benchmark's loopback address only, the same limits as the others;
    # ForkLimit counts connections per minute (default 40, below what this run makes).
    cat >"$WORK/ftp-proxy.conf" <<EOF
ServerType standalone
Listen $SUSE_IP
Port $SUSE_PORT
DestinationAddress $SERVER_IP
DestinationPort $VSFTPD_PORT
DestinationTransferMode passive
PassiveMinDataPort $suse_lo
PassiveMaxDataPort $suse_hi
SockBindRand yes
MaxClients 256
ForkLimit 100000
TimeOut 120
User nobody
Group nogroup
LogDestination $WORK/suse/ftp-proxy.log
LogLevel WRN
PidFile $WORK/suse/ftp-proxy.pid
EOF
    # It (re)creates its log and pid file after switching to nobody: a directory of its own.
    mkdir -m 0755 "$WORK/suse"
    chown nobody:nogroup "$WORK/suse"
    # -d standalone, -n in the foreground; setsid: it leads a group with its sessions.
    setsid "$SUSE_BIN" -d -n -f "$WORK/ftp-proxy.conf" </dev/null >"$WORK/ftp-proxy.out" 2>&1 &
    PID[suse]=$!
    EXTRA_PIDS+=("${PID[suse]}:group")
    URL[suse]=ftp://$FTP_USER:$FTP_PASS@$SUSE_IP:$SUSE_PORT
    wait_ftp_login "${PID[suse]}" "ftp-proxy on $SUSE_IP:$SUSE_PORT" "${URL[suse]}" --disable-epsv
    log "ftp-proxy pid ${PID[suse]} on $SUSE_IP:$SUSE_PORT"
fi

# --- measuring helpers ----------------------------------------------------------------------
descendants() { # PID -> the pids of its children, grandchildren, ...
    local c
    for c in $(ps -o pid= --ppid "$1" || true); do
        echo "$c"
        descendants "$c"
    done
}
pss_kib() { # PATH -> PSS in KiB of that proxy (ftp-proxy: master and every session)
    local p sum=0 v
    for p in "${PID[$1]}" $([[ $1 == suse ]] && descendants "${PID[$1]}"); do
        v=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null) || v=0
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}
proxy_ticks() { # PATH -> CPU ticks that proxy has used (ftp-proxy: with its reaped sessions)
    local t
    t=$(cpu_ticks "${PID[$1]}")
    [[ $1 == suse ]] && t=$((t + $(cpu_ticks "${PID[$1]}" 1)))
    echo "$t"
}
sessions_gone() { # PATH: waits until the proxy holds no session (bounded)
    local i n
    for ((i = 0; i < 150; i++)); do
        if [[ $1 == suse ]]; then
            n=$({ ps -o pid= --ppid "${PID[suse]}" || true; } | wc -l)
        else
            n=$(fxprelay_sessions "$1")
        fi
        [[ $n == 0 ]] && return 0
        sleep 0.1
    done
    fail "$1: sessions still open 15 s after their clients finished"
}
fxprelay_sessions() { # PATH -> fxprelay_sessions_active of that instance
    curl -s --max-time 2 "http://${ADMIN[$1]}/metrics" |
        awk '/^fxprelay_sessions_active/ { s += $2 } END { print s + 0 }'
}

# KIND URL [OUT]: one transfer; prints "DATA WHOLE" in bytes/s: the data flow (curl's
# time_total - time_pretransfer: after login, PASV, the data connection and the 150) and
# curl's own average. RETR writes to OUT (default /dev/null); STOR uploads SRC as up.bin,
# checks its size and removes it (OUT=keep keeps it).
transfer() {
    local kind=$1 url=$2 out=${3:-/dev/null} res size pre total
    local -a opts=(-sS --disable-epsv --max-time "$CURL_MAX")
    if [[ $kind == RETR ]]; then
        res=$(timeout $((CURL_MAX + 5)) curl "${opts[@]}" -o "$out" \
            -w '%{size_download} %{time_pretransfer} %{time_total}' "$url/big.bin") ||
            fail "RETR via ${url##*@} failed (curl exit $?)"
    else
        res=$(timeout $((CURL_MAX + 5)) curl "${opts[@]}" -T "$SRC" \
            -w '%{size_upload} %{time_pretransfer} %{time_total}' "$url/up.bin") ||
            fail "STOR via ${url##*@} failed (curl exit $?)"
        size=$(stat -c %s "$FTP_ROOT/up.bin" 2>/dev/null || echo missing)
        [[ $size == "$SIZE_BYTES" ]] ||
            fail "STOR via ${url##*@}: the server holds $size bytes, expected $SIZE_BYTES"
        [[ $out == keep ]] || rm -f "$FTP_ROOT/up.bin"
    fi
    read -r size pre total <<<"$res"
    [[ $size == "$SIZE_BYTES" ]] || fail "$kind via ${url##*@} moved $size bytes, expected $SIZE_BYTES"
    awk -v b="$size" -v p="$pre" -v t="$total" \
        'BEGIN { d = t - p; if (d < 1e-6) d = 1e-6; printf "%.0f %.0f\n", b / d, b / t }'
}

rotated() { # ROUND NAME... -> the names, starting at ROUND modulo their count
    local r=$1
    shift
    local -a n=("$@")
    local i
    for ((i = 0; i < ${#n[@]}; i++)); do echo "${n[(r + i) % ${#n[@]}]}"; done
}

CURL_PIDS=()
stop_clients() {
    local p
    for p in "${CURL_PIDS[@]}"; do stop_pid "$p"; done
    CURL_PIDS=()
}

# --- 1. memory per active transfer, fresh proxies -------------------------------------------
declare -A MEM
for p in "${PATHS[@]}"; do
    [[ $p == direct ]] && continue
    curl -sS --disable-epsv --max-time 30 -o /dev/null "${URL[$p]}/warm.bin" ||
        fail "warm-up download through $p failed"
    sessions_gone "$p"
    before=$(pss_kib "$p")
    rm -f "$WORK"/mem/*
    for ((i = 0; i < MEM_N; i++)); do
        curl -sS --disable-epsv --max-time 300 --limit-rate "$MEM_RATE" -o "$WORK/mem/$i" \
            "${URL[$p]}/big.bin" 2>>"$WORK/mem.err" &
        CURL_PIDS+=($!)
    done
    moving=0
    for ((t = 0; t < 10 * STEP_MAX; t++)); do
        moving=0
        for ((i = 0; i < MEM_N; i++)); do
            (($(stat -c %s "$WORK/mem/$i" 2>/dev/null || echo 0) >= MEM_MOVING)) && moving=$((moving + 1))
        done
        ((moving == MEM_N)) && break
        sleep 0.1
    done
    ((moving == MEM_N)) || { cat "$WORK/mem.err" >&2; fail "$p: only $moving of $MEM_N limited downloads got going"; }
    sleep "$MEM_SETTLE"
    during=$(pss_kib "$p")
    stop_clients
    sessions_gone "$p"
    MEM[$p]=$(awk -v a="$before" -v b="$during" -v n="$MEM_N" 'BEGIN { printf "%.1f", (b - a) / n }')
    log "memory $p: PSS $before KiB idle, $during KiB with $MEM_N downloads at $MEM_RATE/s: ${MEM[$p]} KiB each"
done

# --- 2. byte identity -----------------------------------------------------------------------
for p in "${PATHS[@]}"; do
    [[ $p == direct ]] && continue
    log "checking a download and an upload through $p byte for byte"
    transfer RETR "${URL[$p]}" "$WORK/check.bin" >/dev/null
    timeout $((STEP_MAX + SIZE_MIB / 20)) cmp "$SRC" "$WORK/check.bin" ||
        fail "the file downloaded through $p differs from the source"
    rm -f "$WORK/check.bin"
    transfer STOR "${URL[$p]}" keep >/dev/null
    timeout $((STEP_MAX + SIZE_MIB / 20)) cmp "$SRC" "$FTP_ROOT/up.bin" ||
        fail "the file uploaded through $p differs from the source"
    rm -f "$FTP_ROOT/up.bin"
done
transfer RETR "$DIRECT_URL" >/dev/null # warm-up, as the checks were for the proxies

# --- 3. single stream: MB/s and CPU per GiB -------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
declare -A MBS CPU RUNS_OF
for kind in RETR STOR; do
    declare -A T0=()
    for p in "${PATHS[@]}"; do
        [[ $p == direct ]] || T0[$p]=$(proxy_ticks "$p")
        RUNS_OF[$kind.$p]=
    done
    for ((run = 0; run < RUNS; run++)); do
        line="$kind round $((run + 1))/$RUNS:"
        for p in $(rotated "$run" "${PATHS[@]}"); do
            r=$(transfer "$kind" "${URL[$p]}")
            RUNS_OF[$kind.$p]+="${r%% *} "
            line+=$(awk -v p="$p" -v r="${r%% *}" 'BEGIN { printf "  %s %5.0f", p, r / 1e6 }')
        done
        log "$line MB/s"
    done
    for p in "${PATHS[@]}"; do
        MBS[$kind.$p]=$(tr ' ' '\n' <<<"${RUNS_OF[$kind.$p]}" | grep . | median)
        [[ $p == direct ]] && continue
        sessions_gone "$p" # ftp-proxy: every session reaped, its CPU in cutime
        CPU[$kind.$p]=$(awk -v t=$(($(proxy_ticks "$p") - T0[$p])) -v hz="$CLK_TCK" \
            -v g="$(awk -v r="$RUNS" -v m="$SIZE_MIB" 'BEGIN { print r * m / 1024 }')" \
            'BEGIN { printf "%.3f", t / hz / g }')
    done
done

# --- 4. parallel transfers: aggregate MB/s --------------------------------------------------
declare -A PAR
for n in "${PAR_SIZES[@]}"; do
    declare -A AGG=()
    for ((run = 0; run < PAR_RUNS; run++)); do
        line="$n x RETR ${PAR_MIB} MiB, round $((run + 1))/$PAR_RUNS:"
        for p in $(rotated "$run" "${PATHS[@]}"); do
            rm -f "$WORK"/mem/*
            t0=$(now)
            for ((i = 0; i < n; i++)); do
                curl -sS --disable-epsv --max-time "$PAR_MAX" -o /dev/null \
                    -w '%{size_download}\n' "${URL[$p]}/mid.bin" >"$WORK/mem/$i" 2>>"$WORK/par.err" &
                CURL_PIDS+=($!)
            done
            failed=0
            for c in "${CURL_PIDS[@]}"; do wait "$c" || failed=$((failed + 1)); done
            t1=$(now)
            CURL_PIDS=()
            ((failed == 0)) || { cat "$WORK/par.err" >&2; fail "$failed of $n parallel downloads through $p failed"; }
            moved=$(cat "$WORK"/mem/* | awk '{ s += $1 } END { printf "%.0f", s }')
            [[ $moved == $((n * PAR_BYTES)) ]] || fail "$n parallel through $p moved $moved bytes"
            agg=$(awk -v b="$moved" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.0f", b / (z - a) }')
            AGG[$p]+="$agg "
            line+=$(awk -v p="$p" -v r="$agg" 'BEGIN { printf "  %s %5.0f", p, r / 1e6 }')
            [[ $p == direct ]] || sessions_gone "$p"
        done
        log "$line MB/s"
    done
    for p in "${PATHS[@]}"; do
        PAR[$n.$p]=$(tr ' ' '\n' <<<"${AGG[$p]}" | grep . | median)
    done
done

# --- report ---------------------------------------------------------------------------------
table -40 9 9 15 8 8 14
echo
echo "single stream: median of $RUNS rounds of ${SIZE_MIB} MiB, MB/s = 10^6 bytes/s of the data flow;"
echo "parallel: median of $PAR_RUNS rounds, all bytes over the wall time of the round;"
echo "memory: PSS with $MEM_N downloads held at $MEM_RATE/s each, minus PSS idle, per download"
row path 'RETR MB/s' 'STOR MB/s' 'CPU s/GiB R / S' "${PAR_SIZES[0]}x MB/s" "${PAR_SIZES[1]}x MB/s" 'KiB / transfer'
rule
for p in "${PATHS[@]}"; do
    cpu=-
    [[ $p == direct ]] || cpu="${CPU[RETR.$p]} / ${CPU[STOR.$p]}"
    row "${LABEL[$p]}" "$(mbs "${MBS[RETR.$p]}")" "$(mbs "${MBS[STOR.$p]}")" "$cpu" \
        "$(mbs "${PAR[${PAR_SIZES[0]}.$p]}")" "$(mbs "${PAR[${PAR_SIZES[1]}.$p]}")" "${MEM[$p]:--}"
done
echo
for p in copy splice $([[ " ${PATHS[*]} " == *" base "* ]] && echo base); do
    echo "fxprelay ($p) / direct: RETR $(ratio "${MBS[RETR.$p]}" "${MBS[RETR.direct]}"), STOR $(ratio "${MBS[STOR.$p]}" "${MBS[STOR.direct]}"), ${PAR_SIZES[0]}x $(ratio "${PAR[${PAR_SIZES[0]}.$p]}" "${PAR[${PAR_SIZES[0]}.direct]}"), ${PAR_SIZES[1]}x $(ratio "${PAR[${PAR_SIZES[1]}.$p]}" "${PAR[${PAR_SIZES[1]}.direct]}")"
done
paired() { # KIND A B -> median (min to max) of A/B over the rounds (same round, back to back)
    local -a a b
    read -r -a a <<<"${RUNS_OF[$1.$2]}"
    read -r -a b <<<"${RUNS_OF[$1.$3]}"
    local r
    r=$(for ((i = 0; i < ${#a[@]}; i++)); do ratio "${a[i]}" "${b[i]}"; echo; done | sort -g)
    printf '%.2f (%.2f to %.2f)' "$(median <<<"$r")" "$(head -n 1 <<<"$r")" "$(tail -n 1 <<<"$r")"
}
if [[ " ${PATHS[*]} " == *" suse "* ]]; then
    for p in copy splice; do
        echo "fxprelay ($p) / SUSE ftp-proxy: CPU per GiB RETR $(ratio "${CPU[RETR.$p]}" "${CPU[RETR.suse]}"), STOR $(ratio "${CPU[STOR.$p]}" "${CPU[STOR.suse]}");" \
            "MB/s RETR $(ratio "${MBS[RETR.$p]}" "${MBS[RETR.suse]}"), STOR $(ratio "${MBS[STOR.$p]}" "${MBS[STOR.suse]}")"
        echo "  per round: RETR $(paired RETR "$p" suse), STOR $(paired STOR "$p" suse)"
    done
fi
echo "fxprelay splice / copy per round: RETR $(paired RETR splice copy), STOR $(paired STOR splice copy)"
if [[ " ${PATHS[*]} " == *" base "* ]]; then
    echo "fxprelay splice / baseline: CPU per GiB RETR $(ratio "${CPU[RETR.splice]}" "${CPU[RETR.base]}"), STOR $(ratio "${CPU[STOR.splice]}" "${CPU[STOR.base]}");" \
        "memory per transfer $(ratio "${MEM[splice]}" "${MEM[base]}"); per round RETR $(paired RETR splice base), STOR $(paired STOR splice base)"
fi
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg); took $((SECONDS - START)) s"
