#!/usr/bin/env bash
# FXP queue speed: `fxprelay fxp --recursive` against lftp `mirror --parallel=4` (FXP), in
# the same run, on the same two servers and the same tree.
#
#   scripts/bench-fxp.sh [FILES=200] [ROUNDS=5]
#
# Loopback only, files on tmpfs, bounded in count and time; not part of `cargo test`.
#
#   1. builds `cargo build --release` (root needed: vsftpd logs in the system user
#      `fxptest` from scripts/install-test-peers.sh, which is run if a peer is missing);
#   2. writes a tree of FILES files of 100 KB of /dev/urandom bytes (4 subdirectories) on
#      tmpfs (/dev/shm when it is tmpfs with room, else a tmpfs mounted under a temporary
#      directory);
#   3. starts vsftpd on 127.0.0.73 (the source, FXP allowed: port_promiscuous and
#      pasv_promiscuous) and pyftpdlib on 127.0.0.74 (the destination,
#      permit_foreign_addresses), each on a free port;
#   4. ROUNDS rounds, the order flipping every round (fxprelay first on odd rounds, lftp
#      first on even ones) so machine noise hits both alike:
#      - `fxprelay fxp --recursive SRC/tree DST/fxprelay-copy` with default settings;
#      - `lftp -c 'set ftp:use-fxp true; set ftp:fxp-force true; mirror --parallel=4
#        SRC/tree DST/lftp-copy'` (fxp-force: lftp fails rather than copy through itself);
#      each copy is checked file by file against the source (`diff -r`, and the file
#      count), fxprelay's summary must say every file went by plain FXP; then removed;
#   5. prints each round's times, the medians, the ratio fxprelay/lftp (issue 26's target:
#      at most 0.75), the logins each tool made on vsftpd (its log), pyftpdlib's CPU time
#      during each copy and the transfers fxprelay gave up and ran again (a server lost
#      them); an lftp copy that outlasts
#      the copy limit (it waits out transfers pyftpdlib lost) counts at the limit. Every process it
#      started is stopped by pid (vsftpd: its group) and every temporary file or mount
#      removed on exit, including on errors and signals.
#
# Knobs (environment): FXPRELAY_BIN=PATH uses that binary and skips the build;
# FXP_BENCH_ARGS="--concurrency 8" adds options to fxprelay's command line (to compare
# settings; the figures then are not the default's); FXP_BENCH_LOG=debug keeps fxprelay's
# `--log debug` output of each round in ./bench-fxp-fxprelay.ROUND.log (0: the warm-up); FXP_BENCH_SERVER_IP /
# FXP_BENCH_DEST_IP change the two addresses; FXP_BENCH_TIME_LIMIT=SECONDS replaces the
# overall time limit.
set -euo pipefail

PROG=bench-fxp
# shellcheck source=SCRIPTDIR/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,4
[[ $# -le 2 ]] || usage 2,4
FILES=${1:-200}
ROUNDS=${2:-5}
check_count FILES "$FILES" 5000
check_count ROUNDS "$ROUNDS" 20
FILE_KB=100
SUBDIRS=4

SERVER_IP=${FXP_BENCH_SERVER_IP:-127.0.0.73}
PROXY_IP=${FXP_BENCH_DEST_IP:-127.0.0.74} # the harness's second address: here pyftpdlib
check_addresses "$SERVER_IP" "$PROXY_IP"
DEST_IP=$PROXY_IP
read -r -a EXTRA_ARGS <<<"${FXP_BENCH_ARGS:-}"
LOG_LEVEL=${FXP_BENCH_LOG:-}
[[ -z $LOG_LEVEL || $LOG_LEVEL == debug ]] || die "FXP_BENCH_LOG must be empty or debug"

# A copy may take this long before it counts as hung (the issue's slow case was 92 s).
COPY_MAX=$((60 + FILES / 2))
TOTAL_MAX=${FXP_BENCH_TIME_LIMIT:-$((INSTALL_MAX + BUILD_MAX + 120 + 2 * ROUNDS * (COPY_MAX + 10)))}
[[ $TOTAL_MAX =~ ^[1-9][0-9]*$ ]] || die "FXP_BENCH_TIME_LIMIT must be a positive number of seconds"

[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER and switches to it)"

trap_cleanup # from here on every process started is stopped, WORK removed, on any exit
LOG_FILES=(vsftpd.out pyftpd.log fxprelay.log lftp.log)

# --- tmpfs work directory -----------------------------------------------------------------
NEED_MIB=$((3 * FILES * FILE_KB / 1024 + 64)) # the tree and two copies, logs
shm_avail_mib=0
if [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs ]]; then
    shm_avail_mib=$(($(df -k --output=avail /dev/shm | tail -n 1) / 1024))
fi
if ((shm_avail_mib >= NEED_MIB)); then
    WORK=$(mktemp -d /dev/shm/fxp-bench.XXXXXX)
    TMPFS_DESC="/dev/shm (tmpfs)"
else
    WORK=$(mktemp -d /tmp/fxp-bench.XXXXXX)
    mount -t tmpfs -o "size=${NEED_MIB}m,mode=0755" fxp-bench "$WORK"
    WORK_MOUNTED=1
    TMPFS_DESC="tmpfs mounted at $WORK (${NEED_MIB} MiB)"
fi
chmod 0755 "$WORK" # vsftpd refuses configs in group/world-writable places

start_watchdog "$TOTAL_MAX"

# --- prerequisites and build --------------------------------------------------------------
ensure_peers vsftpd test -x /usr/sbin/vsftpd
ensure_peers pyftpdlib "$PY" -c 'import pyftpdlib'
command -v lftp >/dev/null || ensure_peers lftp false
command -v lftp >/dev/null || die "lftp is missing after scripts/install-test-peers.sh"
build_fxprelay
START=$SECONDS

git_rev=$(git_rev)
cat <<EOF
# fxprelay FXP queue benchmark
command:  scripts/bench-fxp.sh $FILES $ROUNDS${FXP_BENCH_ARGS:+  (FXP_BENCH_ARGS=$FXP_BENCH_ARGS)}
date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:  $(nproc) CPUs ($(cpu_model)), kernel $(uname -sr) $(uname -m)
load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start
software: fxprelay $git_rev ($BIN), vsftpd $(pkg_ver vsftpd), pyftpdlib $(pkg_ver python3-pyftpdlib), lftp $(pkg_ver lftp)
tree:     $FILES files of $FILE_KB KB (/dev/urandom) in $SUBDIRS directories on $TMPFS_DESC
servers:  vsftpd $SERVER_IP (source) -> pyftpdlib $DEST_IP (destination), FXP allowed on both
EOF

# --- the tree -------------------------------------------------------------------------------
SRC_ROOT=$WORK/src
DST_ROOT=$WORK/dst
mkdir -m 0755 "$SRC_ROOT" "$DST_ROOT"
log "writing $FILES files of $FILE_KB KB"
for ((d = 0; d < SUBDIRS; d++)); do mkdir -p "$SRC_ROOT/tree/d$d"; done
# One read of /dev/urandom, split into the files (200 dd processes would dominate).
timeout "$STEP_MAX" head -c $((FILES * FILE_KB * 1000)) /dev/urandom |
    (cd "$SRC_ROOT/tree" && split -a 5 -d -b $((FILE_KB * 1000)) - f.)
i=0
for f in "$SRC_ROOT"/tree/f.*; do
    mv "$f" "$SRC_ROOT/tree/d$((i % SUBDIRS))/${f##*/}.bin"
    i=$((i + 1))
done
((i == FILES)) || die "wrote $i files, expected $FILES"
chown -R "$FTP_USER:" "$SRC_ROOT" "$DST_ROOT"

# --- servers --------------------------------------------------------------------------------
VSFTPD_FXP=1 start_vsftpd "$SRC_ROOT" 100 50
SRC_URL=$DIRECT_URL

DST_PORT=$(free_port "$DEST_IP")
range=$(free_range "$DEST_IP" 100) || die "no free passive port range on $DEST_IP"
read -r dlo dhi <<<"$range"
"$PY" "$ROOT/tests/peers/pyftpd.py" --ip "$DEST_IP" --port "$DST_PORT" --root "$DST_ROOT" \
    --user "$FTP_USER" --password "$FTP_PASS" --passive-ports "$dlo-$dhi" --foreign \
    --run-as "$FTP_USER" </dev/null >"$WORK/pyftpd.log" 2>&1 &
DST_PID=$!
EXTRA_PIDS+=("$DST_PID")
DST_URL=ftp://$FTP_USER:$FTP_PASS@$DEST_IP:$DST_PORT
wait_ftp_login "$DST_PID" "pyftpdlib on $DEST_IP:$DST_PORT" "$DST_URL"
log "pyftpdlib pid $DST_PID on $DEST_IP:$DST_PORT, passive ports $dlo-$dhi"

# --- the copies -----------------------------------------------------------------------------
logins() { grep -c 'OK LOGIN' "$WORK/vsftpd.log" 2>/dev/null || true; }
# pyftpdlib's CPU time so far, in clock ticks (one process: every session's commands and
# every byte it stores cost it; the tool sending fewer commands costs it less).
dst_ticks() { awk '{ print $14 + $15 }' "/proc/$DST_PID/stat"; }
TICK_HZ=$(getconf CLK_TCK)

check_copy() { # NAME: the copy DST_ROOT/NAME holds every file of the tree, byte for byte
    local name=$1 n
    n=$(find "$DST_ROOT/$name" -type f | wc -l)
    ((n == FILES)) || fail "$name: $n files copied, expected $FILES"
    timeout "$STEP_MAX" diff -r "$SRC_ROOT/tree" "$DST_ROOT/$name" >"$WORK/diff.out" 2>&1 ||
        fail "$name differs from the source: $(head -n 5 "$WORK/diff.out")"
    rm -rf "${DST_ROOT:?}/$name"
}

# KIND ROUND -> "SECONDS LOGINS LOST": one copy of the tree, checked, then removed. LOST: the
# transfers fxprelay gave up and ran again (a server lost them; lftp's count is not known).
copy_with() {
    local kind=$1 tag=$2 t0 t1 l0 l1 c0 c1 rc=0 summary lost=0
    l0=$(logins)
    c0=$(dst_ticks)
    t0=$(now)
    if [[ $kind == fxprelay ]]; then
        local -a log=()
        [[ -n $LOG_LEVEL ]] && log=(--log "$LOG_LEVEL")
        timeout "$COPY_MAX" "$BIN" "${log[@]}" fxp --recursive "${EXTRA_ARGS[@]}" \
            "$SRC_URL/tree" "$DST_URL/fxprelay-copy" >"$WORK/fxprelay.out" 2>"$WORK/fxprelay.log" || rc=$?
        t1=$(now)
        ((rc == 0)) || fail "fxprelay fxp exited $rc: $(tail -n 3 "$WORK/fxprelay.out")"
        [[ -n $LOG_LEVEL ]] && cp "$WORK/fxprelay.log" "$PWD/bench-fxp-fxprelay.$tag.log"
        summary=$(tail -n 1 "$WORK/fxprelay.out")
        # Every file by plain FXP: no reverse FXP, no relay, no failure.
        # (Counted per method, so `fxp $FILES` leaves no file to any other.)
        [[ $summary == *"copied $FILES files"*"methods: fxp $FILES"* && $summary != *FAILED* ]] ||
            fail "fxprelay did not copy every file by plain FXP: $summary"
        check_copy fxprelay-copy
        lost=$(grep -c ': fxp failed: ' "$WORK/fxprelay.log" || true)
    else
        local -a debug=()
        [[ -n $LOG_LEVEL ]] && debug=(-d)
        timeout "$COPY_MAX" lftp "${debug[@]}" -c "set ftp:use-fxp true; set ftp:fxp-force true; \
            set net:max-retries 3; set net:timeout 10; set cmd:fail-exit true; \
            mirror --parallel=4 $SRC_URL/tree $DST_URL/lftp-copy" >"$WORK/lftp.log" 2>&1 || rc=$?
        t1=$(now)
        [[ -n $LOG_LEVEL ]] && cp "$WORK/lftp.log" "$PWD/bench-fxp-lftp.$tag.log"
        if ((rc == 124)); then
            # lftp hung (it waits out a transfer pyftpdlib lost): its time is at least
            # this, the copy is incomplete.
            log "round $tag: lftp did not finish within ${COPY_MAX}s; counted as ${COPY_MAX}s"
            rm -rf "${DST_ROOT:?}/lftp-copy"
        else
            ((rc == 0)) || fail "lftp mirror exited $rc"
            check_copy lftp-copy
        fi
    fi
    l1=$(logins)
    c1=$(dst_ticks)
    awk -v a="$t0" -v b="$t1" -v l=$((l1 - l0)) -v x="$lost" -v c=$((c1 - c0)) -v hz="$TICK_HZ" \
        'BEGIN { printf "%.3f %d %d %.0f\n", b - a, l, x, 1000 * c / hz }'
}

log "warm-up: one copy each (not counted)"
copy_with fxprelay 0 >/dev/null
copy_with lftp 0 >/dev/null

fx=()
lf=()
for ((round = 1; round <= ROUNDS; round++)); do
    if ((round % 2)); then
        fx+=("$(copy_with fxprelay "$round")")
        lf+=("$(copy_with lftp "$round")")
    else
        lf+=("$(copy_with lftp "$round")")
        fx+=("$(copy_with fxprelay "$round")")
    fi
    awk -v r="$round" -v n="$ROUNDS" -v f="${fx[-1]}" -v l="${lf[-1]}" 'BEGIN {
        split(f, a, " "); split(l, b, " ")
        printf "round %d/%d: fxprelay %.3f s (%d vsftpd logins, %d lost and run again, pyftpdlib CPU %d ms)   lftp %.3f s (%d logins, pyftpdlib CPU %d ms)   ratio %.2f\n",
            r, n, a[1], a[2], a[3], a[4], b[1], b[2], b[4], a[1] / b[1]
    }' >&2
done

# --- report ---------------------------------------------------------------------------------
med_fx=$(printf '%s\n' "${fx[@]}" | col 1 | median)
med_lf=$(printf '%s\n' "${lf[@]}" | col 1 | median)
log_fx=$(printf '%s\n' "${fx[@]}" | col 2 | median)
log_lf=$(printf '%s\n' "${lf[@]}" | col 2 | median)
cpu_fx=$(printf '%s\n' "${fx[@]}" | col 4 | median)
cpu_lf=$(printf '%s\n' "${lf[@]}" | col 4 | median)
ratios=$(for ((i = 0; i < ROUNDS; i++)); do
    awk -v f="${fx[i]%% *}" -v l="${lf[i]%% *}" 'BEGIN { printf "%.4f\n", f / l }'
done | sort -g)
echo
echo "$FILES files of $FILE_KB KB, vsftpd -> pyftpdlib, median of $ROUNDS rounds (every copy checked byte for byte):"
printf '  fxprelay fxp --recursive%s  %7.3f s  (%s logins on the source, pyftpdlib CPU %s ms)\n' \
    "${FXP_BENCH_ARGS:+ $FXP_BENCH_ARGS}" "$med_fx" "$log_fx" "$cpu_fx"
printf '  lftp mirror --parallel=4 (FXP)  %7.3f s  (%s logins on the source, pyftpdlib CPU %s ms)\n' "$med_lf" "$log_lf" "$cpu_lf"
awk -v f="$med_fx" -v l="$med_lf" -v lo="$(head -n 1 <<<"$ratios")" -v hi="$(tail -n 1 <<<"$ratios")" \
    -v m="$(median <<<"$ratios")" 'BEGIN {
        printf "  ratio fxprelay/lftp: %.2f of the medians; per round median %.2f (%.2f to %.2f); target <= 0.75\n",
            f / l, m, lo, hi
    }'
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg); took $((SECONDS - START)) s"
