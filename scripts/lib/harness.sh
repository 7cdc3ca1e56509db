# shellcheck shell=bash disable=SC2034,SC2153 # variables shared with the sourcing script
# What scripts/bench-*.sh, scripts/soak.sh and scripts/stress-ftps.sh share: logging,
# stopping processes, the EXIT trap and the watchdog, free ports, installing the peers,
# building fxprelay, starting vsftpd, waiting for an FTP login, starting fxprelay, CPU
# ticks and medians, and the report's pieces (times, rates, ratios, versions, table
# rows). Sourced, not run; the script sets PROG first.
#
# Contract with the script:
#   - it sets PROG (log prefix), SERVER_IP and PROXY_IP, and WORK (its temporary directory)
#     before anything is started; WORK_MOUNTED=1 if WORK is a mount of its own;
#   - it records what it starts in SERVER_PID (SERVER_GROUP=1 to kill its whole process
#     group), and may define stop_clients, run on exit before the proxy and the server stop;
#     more processes (a second proxy) go in EXTRA_PIDS ("PID" or "PID:group"), stopped
#     after stop_clients;
#   - the library sets BIN, ADMIN_PORT, PROXY_PORT and PROXY_PID;
#   - LOG_FILES (names in WORK) and LOG_LINES choose what `fail` shows.
# Every function that can fail exits the script through die/fail, so it works the same
# whether or not the caller tests its status (set -e is off inside `if` and `||`).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=/usr/bin/python3
# The system user of scripts/install-test-peers.sh: vsftpd logs it in, pyftpdlib runs as it.
FTP_USER=fxptest
FTP_PASS=fxptest
# Time bounds (seconds) of the steps every script takes.
INSTALL_MAX=900
BUILD_MAX=1800
STEP_MAX=30

# Undone by cleanup; empty until started.
WORK=
WORK_MOUNTED=0
WATCHDOG_PID=
WATCHDOG_MAX=
SERVER_PID=
SERVER_GROUP=0
EXTRA_PIDS=()
PROXY_PID=
LOG_FILES=()
LOG_LINES=30

# --- messages ---------------------------------------------------------------------------
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
usage() { # LINES ("2,4"): prints those lines of the script's header comment, exits 2
    sed -n "${1}p" "${BASH_SOURCE[-1]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
show_logs() {
    local f
    for f in "${LOG_FILES[@]}"; do
        f=$WORK/$f
        if [[ -s $f ]]; then
            printf -- '--- %s (last %d lines)\n' "${f##*/}" "$LOG_LINES" >&2
            tail -n "$LOG_LINES" "$f" >&2
        fi
    done
}
fail() { # like die, with the servers' logs
    show_logs
    die "$*"
}

check_count() { # NAME VALUE MAX: VALUE must be a whole number from 1 to MAX
    [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
    (($2 <= $3)) || die "$1 above $3 is not supported"
}
check_addresses() { # SERVER_IP PROXY_IP: two different loopback addresses
    local ip
    for ip in "$1" "$2"; do
        [[ $ip =~ ^127\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "$ip is not a loopback (127.x.y.z) address"
    done
    [[ $1 != "$2" ]] || die "server and proxy need different addresses"
}

# --- processes and cleanup ------------------------------------------------------------
alive() { # PID -> true while the process exists and is not a zombie
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

stop_pid() { # PID [GROUP=0]: TERM, up to 5 s, KILL; reaps it. GROUP=1: its process group
    local pid=$1 group=${2:-0} target i
    target=$pid
    [[ $group -eq 1 ]] && target=-$pid
    kill -TERM -- "$target" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    # The group's other members (vsftpd's session processes) get the KILL regardless.
    kill -KILL -- "$target" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    # A subshell (the watchdog) forked just before a signal can run the parent's trap
    # until it installs its own; only the script itself cleans up.
    [[ $BASHPID == "$$" ]] || exit "$rc"
    set +e
    trap - EXIT INT TERM
    # The watchdog first: its TERM would cut this cleanup short.
    [[ -n $WATCHDOG_PID ]] && stop_pid "$WATCHDOG_PID"
    declare -F stop_clients >/dev/null && stop_clients
    local extra
    for extra in "${EXTRA_PIDS[@]}"; do
        if [[ $extra == *:group ]]; then stop_pid "${extra%:group}" 1; else stop_pid "$extra"; fi
    done
    [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
    [[ -n $SERVER_PID ]] && stop_pid "$SERVER_PID" "$SERVER_GROUP"
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ -f $WORK/.timed-out ]]; then
            log "overall time limit (${WATCHDOG_MAX}s) reached"
            rc=124
        fi
        if [[ $WORK_MOUNTED -eq 1 ]]; then
            umount "$WORK" 2>/dev/null || umount -l "$WORK"
        fi
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap_cleanup() { # runs cleanup on every exit, including errors and signals
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

start_watchdog() { # SECONDS: the overall bound (needs WORK)
    WATCHDOG_MAX=$1
    # The watchdog TERMs the script, whose trap cleans up. Bash runs the trap once the
    # current step returns, and every step has its own bound.
    (
        exec >/dev/null 2>&1
        sleep "$WATCHDOG_MAX" &
        s=$!
        trap 'kill "$s"; exit 0' TERM
        wait "$s"
        touch "$WORK/.timed-out"
        kill -TERM "$$"
    ) &
    WATCHDOG_PID=$!
}

# --- prerequisites ----------------------------------------------------------------------
ensure_peers() { # SERVER CHECK...: runs install-test-peers.sh unless CHECK, curl and FTP_USER pass
    local server=$1
    shift
    if ! "$@" >/dev/null 2>&1 || ! command -v curl >/dev/null || ! id "$FTP_USER" >/dev/null 2>&1; then
        log "$server, curl or user $FTP_USER missing: running scripts/install-test-peers.sh"
        timeout "$INSTALL_MAX" "$ROOT/scripts/install-test-peers.sh" || die "scripts/install-test-peers.sh failed"
    fi
}

build_fxprelay() { # sets BIN: FXPRELAY_BIN if given, else a fresh release build
    if [[ -n ${FXPRELAY_BIN:-} ]]; then
        BIN=$FXPRELAY_BIN
        log "using FXPRELAY_BIN=$BIN (no build)"
    else
        log "cargo build --release"
        (cd "$ROOT" && timeout "$BUILD_MAX" cargo build --release) || die "cargo build --release failed"
        BIN=$ROOT/target/release/fxprelay
    fi
    [[ -x $BIN ]] || die "$BIN is not an executable"
}

cpu_model() { awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo; }

# A control or admin port comes from 20000-29999: below the kernel's ephemeral ports
# (32768 on), so no outgoing connection holds it, and apart from the data port ranges
# (free_range's 40000-49999, the fixed 51000-51199 of bench-relay and bench-agent), so
# fxprelay never finds a listener inside its own `data.ports` (it refuses that config).
free_port() { # IP -> a port free on IP now
    "$PY" -c 'import random, socket, sys
for _ in range(200):
    s = socket.socket()
    try:
        s.bind((sys.argv[1], random.randrange(20000, 30000)))
        print(s.getsockname()[1]); sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
sys.exit("no free port on " + sys.argv[1])' "$1"
}

free_range() { # IP LEN -> "LO HI", LEN consecutive ports in 40000-49999 free on IP now
    "$PY" -c 'import random, socket, sys
ip, n = sys.argv[1], int(sys.argv[2])
for _ in range(50):
    lo = random.randrange(40000, 50000 - n)
    socks = []
    try:
        for p in range(lo, lo + n):
            s = socket.socket(); socks.append(s); s.bind((ip, p))
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    print(lo, lo + n - 1); sys.exit(0)
sys.exit("no free port range on " + ip)' "$1" "$2"
}

# --- measuring ----------------------------------------------------------------------------
cpu_ticks() { # PID [CHILDREN=0] -> utime + stime of the whole process (all threads), in
    # clock ticks; CHILDREN=1: cutime + cstime instead, the CPU of the children it reaped
    local stat
    stat=$(cat "/proc/$1/stat")
    stat=${stat##*) } # fields from 3 (state) on; the name may contain spaces
    awk -v c="${2:-0}" '{ print c ? $14 + $15 : $12 + $13 }' <<<"$stat"
}

fd_count() { # PID -> open fds
    local fds
    fds=$(ls "/proc/$1/fd" 2>/dev/null) || { echo 0; return; }
    wc -l <<<"$fds" | tr -d ' '
}
rss_kib() { # PID -> VmRSS in KiB
    awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}
pss_kib() { # PID -> Pss in KiB, or "n/a"
    if [[ -r /proc/$1/smaps_rollup ]]; then
        awk '/^Pss:/ { print $2; f = 1 } END { if (!f) print "n/a" }' "/proc/$1/smaps_rollup"
    elif [[ -r /proc/$1/smaps ]]; then
        awk '/^Pss:/ { s += $2; f = 1 } END { if (f) print s; else print "n/a" }' "/proc/$1/smaps"
    else
        echo n/a
    fi
}
mib() { awk -v k="$1" 'BEGIN { if (k == "n/a") print k; else printf "%.1f MiB", k / 1024 }'; }
per_session() { # NOW BASE N -> KiB per session
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN {
        if (a == "n/a" || b == "n/a" || n == 0) print "n/a"; else printf "%.1f", (a - b) / n }'
}
median() { # numbers on stdin -> their median
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

now() { date +%s.%N; } # -> seconds since the epoch, to the nanosecond

col() { # N -> field N of each line on stdin
    awk -v n="$1" '{ print $n }'
}

# --- reporting ------------------------------------------------------------------------------
mbs() { # BYTES_PER_SECOND -> MB/s (10^6 bytes), whole
    awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'
}

ms() { # SECONDS -> milliseconds, one decimal
    awk -v s="$1" 'BEGIN { printf "%.1f", s * 1e3 }'
}

ratio() { # A B -> A / B to two decimals; "-" when B is 0 or empty (a path that did not run)
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}

pkg_ver() { # PACKAGE -> its installed Debian version, or ?
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'
}

git_rev() { # -> the repository's commit, "+uncommitted changes" when src/ or Cargo.* differ
    local rev
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
    if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        rev="$rev+uncommitted changes"
    fi
    printf '%s\n' "$rev"
}

# A Markdown table: `table -40 9 9` sets the columns (a negative width left-aligns), `row`
# prints one row, `rule` the line under the header. A script with a table of another
# shape sets ROW_FORMAT (a printf format) itself and uses `row` alone.
ROW_FORMAT=
TABLE_WIDTHS=()
table() { # WIDTH...
    local w
    TABLE_WIDTHS=("$@")
    ROW_FORMAT='|'
    for w in "$@"; do ROW_FORMAT+=" %${w}s |"; done
    ROW_FORMAT+='\n'
}
row() { # CELL...: one row, in ROW_FORMAT
    [[ -n $ROW_FORMAT ]] || die "row before table (or ROW_FORMAT)"
    # shellcheck disable=SC2059 # the format is the script's own, made by `table`
    printf "$ROW_FORMAT" "$@"
}
rule() { # the |---|---| line of the table's widths
    local w line='|'
    for w in "${TABLE_WIDTHS[@]}"; do
        w=${w#-}
        line+=$(printf -- '-%.0s' $(seq $((w + 2))))'|'
    done
    printf '%s\n' "$line"
}

# --- certificates ---------------------------------------------------------------------------
make_cert() { # NAME IP: WORK/NAME.crt + WORK/NAME.key, self-signed, subjectAltName IP
    timeout "$STEP_MAX" openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
        -addext "subjectAltName=IP:$2" -keyout "$WORK/$1.key" -out "$WORK/$1.crt" 2>"$WORK/openssl.err" ||
        fail "openssl could not make a certificate for $1: $(cat "$WORK/openssl.err")"
}

# CERT KEY -> on stdout, the vsftpd.conf lines (for VSFTPD_EXTRA) of a server that requires
# TLS on login and data and data connections that resume the control session.
# ssl_ciphers: vsftpd's default (DES-CBC3-SHA) is offered by no modern client.
vsftpd_tls_lines() {
    printf '%s\n' ssl_enable=YES "rsa_cert_file=$1" "rsa_private_key_file=$2" \
        force_local_logins_ssl=YES force_local_data_ssl=YES require_ssl_reuse=YES \
        ssl_tlsv1=YES ssl_sslv2=NO ssl_sslv3=NO ssl_ciphers=HIGH debug_ssl=YES
}

# --- the FTP server and fxprelay --------------------------------------------------------
# ROOT PASV_PORTS MAX_CLIENTS [PREFIX...]: vsftpd in the foreground on SERVER_IP and a free
# port, user FTP_USER chrooted to ROOT (on WORK), PASV_PORTS passive ports, its config and
# logs in WORK. Sets VSFTPD_PORT, DIRECT_URL, SERVER_PID (leading its own process group,
# SERVER_GROUP=1: cleanup kills the session processes too). PREFIX runs it (taskset ...).
# VSFTPD_FXP=1 lets it take part in FXP (port_promiscuous, pasv_promiscuous);
# VSFTPD_EXTRA holds more vsftpd.conf lines (TLS, say) and VSFTPD_LOGIN_CHECK the curl
# options the login check needs then (default --disable-epsv; no spaces inside one).
start_vsftpd() {
    local root=$1 pasv=$2 clients=$3 range lo hi fxp=NO
    local -a check=(--disable-epsv)
    shift 3
    [[ -n ${VSFTPD_LOGIN_CHECK:-} ]] && read -ra check <<<"$VSFTPD_LOGIN_CHECK"
    [[ ${VSFTPD_FXP:-0} == 1 ]] && fxp=YES
    mkdir -p -m 0755 "$WORK/empty"
    VSFTPD_PORT=$(free_port "$SERVER_IP")
    range=$(free_range "$SERVER_IP" "$pasv") || die "no free passive port range on $SERVER_IP"
    read -r lo hi <<<"$range"
    (
        umask 077 # vsftpd wants its config root-owned and private
        cat >"$WORK/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
background=NO
listen_address=$SERVER_IP
listen_port=$VSFTPD_PORT
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
local_root=$root
chroot_local_user=YES
allow_writeable_chroot=YES
secure_chroot_dir=$WORK/empty
pam_service_name=vsftpd
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
userlist_enable=NO
tcp_wrappers=NO
dirmessage_enable=NO
connect_from_port_20=NO
max_clients=$clients
max_per_ip=$clients
idle_session_timeout=120
data_connection_timeout=60
accept_timeout=15
connect_timeout=15
syslog_enable=NO
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$WORK/vsftpd.log
pasv_enable=YES
pasv_min_port=$lo
pasv_max_port=$hi
port_enable=YES
port_promiscuous=$fxp
pasv_promiscuous=$fxp
${VSFTPD_EXTRA:-}
EOF
    )
    # Without job control a background child is not a group leader, so setsid(1) calls
    # setsid() in place and execs vsftpd: $! is vsftpd and leads its own process group.
    SERVER_GROUP=1
    setsid "$@" /usr/sbin/vsftpd "$WORK/vsftpd.conf" </dev/null >"$WORK/vsftpd.out" 2>&1 &
    SERVER_PID=$!
    sleep 0.1
    [[ $(ps -o pgid= -p "$SERVER_PID" | tr -d ' ') == "$SERVER_PID" ]] ||
        fail "vsftpd (pid $SERVER_PID) is not leading its own process group"
    DIRECT_URL=ftp://$FTP_USER:$FTP_PASS@$SERVER_IP:$VSFTPD_PORT
    wait_ftp_login "$SERVER_PID" "vsftpd on $SERVER_IP:$VSFTPD_PORT" "$DIRECT_URL" "${check[@]}"
    log "vsftpd pid $SERVER_PID on $SERVER_IP:$VSFTPD_PORT, passive ports $lo-$hi"
}

wait_ftp_login() { # PID WHAT URL [CURL-OPTION...]: until a login at URL works (10 s), or fail
    local pid=$1 what=$2 url=$3 i
    shift 3
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || fail "$what exited at start"
        curl -sS --max-time 2 "$@" -o /dev/null "$url/" 2>/dev/null && return 0
        sleep 0.2
    done
    fail "$what did not let $FTP_USER log in within 10 s"
}

pick_proxy_ports() { # sets ADMIN_PORT and PROXY_PORT: two different free ports on PROXY_IP
    ADMIN_PORT=$(free_port "$PROXY_IP")
    PROXY_PORT=$(free_port "$PROXY_IP")
    while [[ $PROXY_PORT == "$ADMIN_PORT" ]]; do PROXY_PORT=$(free_port "$PROXY_IP"); done
}

# NAME UPSTREAM DATA DATA_PORTS [LIMIT...] -> on stdout, a config with the admin listener
# on PROXY_IP:ADMIN_PORT and one reverse listener NAME on PROXY_IP:PROXY_PORT to UPSTREAM.
# DATA=relay: data.ports DATA_PORTS, upstream in passive; DATA=passthrough: DATA_PORTS is
# unused. Each LIMIT ("max_sessions: 100") joins shutdown_grace under limits. The edge
# defense is off (soak and stress runs open thousands of sessions from one address, which
# it would rightly ban) unless the script sets DEFENSE=on.
fxprelay_config() {
    local name=$1 upstream=$2 data=$3 ports=$4 limit
    shift 4
    printf 'admin:\n  bind: %s\nlimits:\n  shutdown_grace: 2s\n' "$PROXY_IP:$ADMIN_PORT"
    for limit in "$@"; do printf '  %s\n' "$limit"; done
    [[ ${DEFENSE:-off} == on ]] || printf 'defense:\n  enabled: false\n'
    [[ $data != relay ]] || printf 'data:\n  ports: "%s"\n' "$ports"
    cat <<EOF
listeners:
  - name: $name
    bind: $PROXY_IP:$PROXY_PORT
    mode: reverse
    upstream: $upstream
    data: $data
EOF
    [[ $data != relay ]] || printf '    upstream_data: passive\n'
}

# CONFIG [PREFIX...]: `fxprelay check`, then run (PROXY_PID) until healthy; its output goes
# to WORK/$FXPRELAY_LOG (default fxprelay.log).
start_fxprelay() {
    local config=$1 i code
    shift
    timeout "$STEP_MAX" "$BIN" check -c "$config" >"$WORK/check.out" 2>&1 || {
        cat "$WORK/check.out" >&2
        die "fxprelay rejects the generated config:"$'\n'"$(cat "$config")"
    }
    "$@" "$BIN" run -c "$config" </dev/null >"$WORK/${FXPRELAY_LOG:-fxprelay.log}" 2>&1 &
    PROXY_PID=$!
    for ((i = 0; i < 100; i++)); do
        alive "$PROXY_PID" || fail "fxprelay exited at start"
        code=$(curl -s --max-time 1 -o /dev/null -w '%{http_code}' "http://$PROXY_IP:$ADMIN_PORT/healthz" || true)
        [[ $code == 200 ]] && return 0
        sleep 0.1
    done
    fail "fxprelay's GET /healthz did not answer 200 within 10 s"
}
