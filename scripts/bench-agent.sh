#!/usr/bin/env bash
# Relaying through an outbound-only agent against relaying straight to the server, in the
# same run, on the same vsftpd.
#
#   scripts/bench-agent.sh [SIZE_MIB=256] [RUNS=5]
#
# Loopback only, files on tmpfs, bounded in time; not part of `cargo test`.
#
#   1. builds `cargo build --release` (root needed: vsftpd logs in the system user
#      `fxptest`; scripts/install-test-peers.sh is run if vsftpd/curl/the user are missing);
#   2. writes SIZE_MIB of /dev/urandom on tmpfs; starts vsftpd on 127.0.0.81;
#   3. starts fxprelay on 127.0.0.82 with three reverse listeners to that vsftpd in relay
#      mode: `plain` (the proxy connects to the server), `agent` (`via: bench`, through
#      an agents listener with a self-signed certificate) and `active` (the same agent in
#      active mode toward the server: it listens for vsftpd's data connection), then
#      `fxprelay agent` on the
#      same host (allow: 127.0.0.81 only), and waits for its link;
#   4. checks one download through each listener byte for byte;
#   5. RETR through each listener, RUNS times, interleaved with the order flipping every
#      run; speed = bytes / (curl's time_total - time_pretransfer), median per path; the
#      set-up time of a session up to the data flow (curl's time_pretransfer: connect,
#      login, PASV, the data connection, the 150) and the time of one more data
#      connection in a session (Python's ftplib: 20 listings, the mean), median per path;
#   6. prints a table with the ratio agent/plain (the issue's target: at least 0.8) and
#      the set-up times. Every process it started is killed by pid, every temporary file
#      removed on exit, including on errors and signals.
#
# Knobs (environment): FXPRELAY_BIN=PATH uses that binary and skips the build;
# FXP_BENCH_TIME_LIMIT=SECONDS replaces the overall time limit.
set -euo pipefail

PROG=bench-agent
# shellcheck source=SCRIPTDIR/lib/harness.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/harness.sh"

[[ ${1:-} == -h || ${1:-} == --help ]] && usage 2,4
[[ $# -le 2 ]] || usage 2,4
SIZE_MIB=${1:-256}
RUNS=${2:-5}
check_count SIZE_MIB "$SIZE_MIB" 4096
check_count RUNS "$RUNS" 50
SERVER_IP=127.0.0.81
PROXY_IP=127.0.0.82
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
CURL_MAX=$((30 + SIZE_MIB / 10))
TOTAL_MAX=${FXP_BENCH_TIME_LIMIT:-$((INSTALL_MAX + BUILD_MAX + 300 + (2 * RUNS + 4) * (CURL_MAX + 5)))}
[[ $(id -u) -eq 0 ]] || die "needs root (vsftpd logs in the system user $FTP_USER)"

trap_cleanup
LOG_FILES=(vsftpd.out vsftpd.log fxprelay.log agent.log)
WORK=$(mktemp -d /dev/shm/fxp-bench-agent.XXXXXX)
chmod 0755 "$WORK"
start_watchdog "$TOTAL_MAX"

ensure_peers vsftpd test -x /usr/sbin/vsftpd
build_fxprelay

cat <<EOF
# fxprelay agent benchmark
command:  scripts/bench-agent.sh $SIZE_MIB $RUNS
date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')
machine:  $(nproc) CPUs ($(cpu_model)), kernel $(uname -sr)
load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) at start
software: fxprelay $(git_rev) ($BIN), vsftpd $(pkg_ver vsftpd), $(curl --version | head -n 1 | cut -d' ' -f1-2)
paths:    plain  curl -> fxprelay (relay) -> vsftpd
          agent  curl -> fxprelay (relay, via) ==TLS==> fxprelay agent -> vsftpd
          active the same, active mode toward vsftpd (it connects to the agent's port)
EOF

FTP_ROOT=$WORK/root
mkdir -m 0755 "$FTP_ROOT"
log "writing $SIZE_MIB MiB of random bytes"
dd if=/dev/urandom of="$FTP_ROOT/big.bin" bs=1M count="$SIZE_MIB" iflag=fullblock status=none
chmod 0644 "$FTP_ROOT/big.bin"
chown -R "$FTP_USER:" "$FTP_ROOT"
start_vsftpd "$FTP_ROOT" 100 50

pick_proxy_ports
PLAIN_PORT=$PROXY_PORT
AGENT_PORT=$(free_port "$PROXY_IP")
ACTIVE_PORT=$(free_port "$PROXY_IP")
AGENTS_PORT=$(free_port "$PROXY_IP")
make_cert edge "$PROXY_IP"
TOKEN=$(openssl rand -hex 32)
cat >"$WORK/fxprelay.yaml" <<EOF
admin:
  bind: $PROXY_IP:$ADMIN_PORT
defense:
  enabled: false
data:
  ports: "51100-51199"
agents:
  bind: $PROXY_IP:$AGENTS_PORT
  cert: $WORK/edge.crt
  key: $WORK/edge.key
  tokens: {bench: $TOKEN}
listeners:
  - name: plain
    bind: $PROXY_IP:$PLAIN_PORT
    upstream: $SERVER_IP:$VSFTPD_PORT
    data: relay
    upstream_data: passive
  - name: agent
    bind: $PROXY_IP:$AGENT_PORT
    upstream: $SERVER_IP:$VSFTPD_PORT
    data: relay
    via: bench
  - name: active
    bind: $PROXY_IP:$ACTIVE_PORT
    upstream: $SERVER_IP:$VSFTPD_PORT
    data: relay
    via: bench
    upstream_data: active
EOF
start_fxprelay "$WORK/fxprelay.yaml"
cat >"$WORK/agent.yaml" <<EOF
agent:
  name: bench
  edge: $PROXY_IP:$AGENTS_PORT
  ca: $WORK/edge.crt
  token: $TOKEN
  allow: [$SERVER_IP]
EOF
"$BIN" agent -c "$WORK/agent.yaml" </dev/null >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
EXTRA_PIDS+=("$AGENT_PID")
for ((i = 0; i < 100; i++)); do
    alive "$AGENT_PID" || fail "the agent exited at start"
    curl -s --max-time 1 "http://$PROXY_IP:$ADMIN_PORT/metrics" | grep -q '^fxprelay_agent_up{agent="bench"} 1' && break
    sleep 0.1
done
((i < 100)) || fail "the agent did not link within 10 s"
log "fxprelay pid $PROXY_PID, agent pid $AGENT_PID linked"

url() { echo "ftp://$FTP_USER:$FTP_PASS@$PROXY_IP:$1"; }
PLAIN_URL=$(url "$PLAIN_PORT")
AGENT_URL=$(url "$AGENT_PORT")
# VIA -> the port of its listener.
port_of() {
    case $1 in plain) echo "$PLAIN_PORT" ;; agent) echo "$AGENT_PORT" ;; active) echo "$ACTIVE_PORT" ;; esac
}

# VIA [OUT] -> "BYTES_PER_S PRETRANSFER_S": one RETR of big.bin through listener VIA.
retr() {
    local u res size pre total
    u=$(url "$(port_of "$1")")
    res=$(timeout $((CURL_MAX + 5)) curl -sS --max-time "$CURL_MAX" -o "${2:-/dev/null}" \
        -w '%{size_download} %{time_pretransfer} %{time_total}' "$u/big.bin") ||
        fail "RETR through $1 failed (curl exit $?)"
    read -r size pre total <<<"$res"
    [[ $size == "$SIZE_BYTES" ]] || fail "RETR through $1 moved $size bytes"
    awk -v b="$size" -v p="$pre" -v t="$total" 'BEGIN { d = t - p; if (d < 1e-6) d = 1e-6; printf "%.0f %.6f\n", b / d, p }'
}

# VIA -> seconds per data connection in one session: Python's ftplib logs in once, then
# lists 20 times (each a PASV, a data connection through the path, the listing and its
# 226); the mean. (Not curl: 7.88 at times idles a second on its own after a quick 229.)
per_listing() {
    local port
    port=$(port_of "$1")
    timeout 60 "$PY" - "$PROXY_IP" "$port" "$FTP_USER" "$FTP_PASS" <<'PYEOF'
import ftplib, sys, time
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
f = ftplib.FTP()
f.connect(host, port, timeout=10)
f.login(user, password)
f.nlst()
t = time.monotonic()
for _ in range(20):
    f.nlst()
print("%.6f" % ((time.monotonic() - t) / 20))
f.quit()
PYEOF
}

for via in plain agent active; do
    retr "$via" "$WORK/check.bin" >/dev/null
    cmp -s "$FTP_ROOT/big.bin" "$WORK/check.bin" || fail "the download through $via differs"
    rm -f "$WORK/check.bin"
done

declare -a PLAIN AGENT ACTIVE PLAIN_DC AGENT_DC ACTIVE_DC
for ((run = 1; run <= RUNS; run++)); do
    case $((run % 3)) in
    1) order=(plain agent active) ;;
    2) order=(active plain agent) ;;
    *) order=(agent active plain) ;;
    esac
    for via in "${order[@]}"; do
        r=$(retr "$via")
        d=$(per_listing "$via") || fail "listings through $via failed"
        case $via in
        plain) PLAIN+=("$r"); PLAIN_DC+=("$d") ;;
        agent) AGENT+=("$r"); AGENT_DC+=("$d") ;;
        active) ACTIVE+=("$r"); ACTIVE_DC+=("$d") ;;
        esac
    done
    log "run $run/$RUNS: plain $(mbs "${PLAIN[-1]%% *}") MB/s, agent $(mbs "${AGENT[-1]%% *}") MB/s"
done

# VIA -> bytes/s of 4 RETRs at once through VIA (all the bytes over the wall time from
# the first start to the last end): streams side by side over one agent.
parallel4() {
    local u=$PLAIN_URL t0 t1 i pid
    local -a pids=()
    [[ $1 == agent ]] && u=$AGENT_URL
    t0=$(now)
    for i in 1 2 3 4; do
        timeout $((CURL_MAX + 5)) curl -sS --max-time "$CURL_MAX" -o /dev/null "$u/big.bin" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || fail "a parallel RETR through $1 failed"
    done
    t1=$(now)
    awk -v b=$((4 * SIZE_BYTES)) -v a="$t0" -v z="$t1" 'BEGIN { printf "%.0f\n", b / (z - a) }'
}
declare -a P4_PLAIN P4_AGENT
for ((run = 1; run <= (RUNS + 1) / 2; run++)); do
    P4_PLAIN+=("$(parallel4 plain)")
    P4_AGENT+=("$(parallel4 agent)")
done

med() { printf '%s\n' "$@" | col "${COL:-1}" | median; }
p_speed=$(med "${PLAIN[@]}")
a_speed=$(med "${AGENT[@]}")
p_pre=$(COL=2 med "${PLAIN[@]}")
a_pre=$(COL=2 med "${AGENT[@]}")
p_dc=$(printf '%s\n' "${PLAIN_DC[@]}" | median)
a_dc=$(printf '%s\n' "${AGENT_DC[@]}" | median)
v_speed=$(med "${ACTIVE[@]}")
v_pre=$(COL=2 med "${ACTIVE[@]}")
v_dc=$(printf '%s\n' "${ACTIVE_DC[@]}" | median)

echo
echo "median of $RUNS runs of ${SIZE_MIB} MiB RETR; MB/s = 10^6 bytes/s of the data flow (150 to 226)"
table -34 9 16 24
row path 'MB/s' 'to the 150 (ms)' 'per data connection (ms)'
rule
row 'plain relay' "$(mbs "$p_speed")" "$(ms "$p_pre")" "$(ms "$p_dc")"
row 'through the agent' "$(mbs "$a_speed")" "$(ms "$a_pre")" "$(ms "$a_dc")"
row 'agent, active toward vsftpd' "$(mbs "$v_speed")" "$(ms "$v_pre")" "$(ms "$v_dc")"
echo
p4=$(printf '%s\n' "${P4_PLAIN[@]}" | median)
a4=$(printf '%s\n' "${P4_AGENT[@]}" | median)
echo "ratio agent/plain: $(ratio "$a_speed" "$p_speed") (target: at least 0.8)"
echo "4 RETRs at once: plain $(mbs "$p4") MB/s, through the agent $(mbs "$a4") MB/s in all (ratio $(ratio "$a4" "$p4"))"
echo "set-up through the agent: +$(awk -v a="$a_pre" -v p="$p_pre" 'BEGIN { printf "%.1f", (a - p) * 1e3 }') ms per session (control and data connection), +$(awk -v a="$a_dc" -v p="$p_dc" 'BEGIN { printf "%.1f", (a - p) * 1e3 }') ms per further data connection"
echo "active mode through the agent: ratio to plain $(ratio "$v_speed" "$p_speed"), +$(awk -v a="$v_dc" -v p="$p_dc" 'BEGIN { printf "%.1f", (a - p) * 1e3 }') ms per further data connection"
