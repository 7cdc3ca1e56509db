#!/usr/bin/env bash
# Installs the real FTP peers and clients the integration tests run (Debian 12).
#
#   - with apt: vsftpd, lftp, curl, python3-pyftpdlib (+ python3-openssl for its FTPS),
#     iptables, iproute2, haproxy, tmux (drives `fxprelay fxp` on a terminal in a test),
#     prometheus (for `promtool`: ~22 MB, checks the metrics and alert rules), systemd
#     (for `systemd-analyze verify` of the shipped unit), chromium and python3-websocket
#     (the console's test drives the page in headless Chromium), postgresql (the state
#     store's fleet tests start their own server on loopback), and the runtime
#     libraries of pure-ftpd and proftpd;
#   - pure-ftpd and proftpd-core conflict with vsftpd in apt (virtual `ftp-server`), so they
#     are fetched with `apt-get download` and unpacked with `dpkg -x` into `.peers/` at the
#     repository root (gitignored), never installed system-wide; proftpd's `mod_tls` (from
#     proftpd-mod-crypto, for the FTPS tests) and `mod_proxy` (proftpd-mod-proxy, the
#     reference proxy of scripts/bench-tls.sh) are unpacked beside it; proftpd-core itself
#     ships `mod_digest` (HASH, XSHA256, ...: the hash verification tests);
#   - a system user `fxptest` (password `fxptest`) for vsftpd's PAM login and as the owner
#     of the servers' per-test directories.
#
# Idempotent and quick when everything is already there: `apt-get update` runs only when
# something has to be installed. No daemon is started (policy-rc.d answers 101).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    exec sudo -E -- "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEERS="$ROOT/.peers"
export DEBIAN_FRONTEND=noninteractive

APT_PACKAGES=(vsftpd lftp curl python3-pyftpdlib python3-openssl iptables iproute2 libpam-modules haproxy prometheus systemd tmux chromium python3-websocket postgresql)
EXTRACTED=(pure-ftpd proftpd-core proftpd-mod-crypto proftpd-mod-proxy)

log() { printf 'install-test-peers: %s\n' "$*" >&2; }

installed() { # PKG -> true when dpkg has it installed
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
}

# apt must not start daemons (vsftpd would grab port 21 on every address).
POLICY=/usr/sbin/policy-rc.d
POLICY_CREATED=0
cleanup() {
    if [[ $POLICY_CREATED -eq 1 ]]; then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT
ensure_policy() {
    if [[ ! -e $POLICY ]]; then
        printf '#!/bin/sh\n# temporary, from install-test-peers.sh\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        POLICY_CREATED=1
    fi
}

apt_install() { # PKG... (only the missing ones are passed)
    [[ $# -gt 0 ]] || return 0
    apt_update_once
    ensure_policy
    log "apt-get install $*"
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The `lib*` packages a package depends on (its runtime libraries).
lib_deps() {
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$@" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^lib/ && $2 !~ /^</ { print $2 }' | sort -u
}

# 1. Packages installed with apt.
missing=()
for p in "${APT_PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done
apt_install "${missing[@]}"

# 2. pure-ftpd and proftpd-core unpacked into .peers/.
stamp="$PEERS/.stamp"
need_extract=1
if [[ -x $PEERS/usr/sbin/pure-ftpd && -x $PEERS/usr/bin/pure-pw && -x $PEERS/usr/sbin/proftpd &&
    -f $PEERS/usr/lib/proftpd/mod_tls.so && -f $PEERS/usr/lib/proftpd/mod_proxy.so &&
    -f $PEERS/usr/lib/proftpd/mod_digest.so && -f $stamp ]]; then
    need_extract=0
fi
if [[ $need_extract -eq 1 ]]; then
    # The candidate may be unknown (or stale) before an update.
    if ! apt-cache show "${EXTRACTED[@]}" >/dev/null 2>&1; then apt_update_once; fi
    dl=$(mktemp -d)
    chmod 755 "$dl"
    chown _apt "$dl" 2>/dev/null || true # apt-get download drops to _apt when it can
    log "downloading ${EXTRACTED[*]}"
    if ! (cd "$dl" && apt-get download -qq "${EXTRACTED[@]}" >/dev/null 2>&1); then
        apt_update_once
        (cd "$dl" && apt-get download -qq "${EXTRACTED[@]}" >/dev/null 2>&1)
    fi
    rm -rf "$PEERS.new"
    mkdir -p "$PEERS.new"
    for deb in "$dl"/*.deb; do
        dpkg -x "$deb" "$PEERS.new"
        printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$PEERS.new/.stamp"
    done
    rm -rf "$dl" "$PEERS"
    mv "$PEERS.new" "$PEERS"
fi

# Their runtime libraries, installed with apt (the `lib*` packages they declare), then
# checked with ldd; stale or missing package lists get one `apt-get update` and a retry.
BINS=("$PEERS/usr/sbin/pure-ftpd" "$PEERS/usr/bin/pure-pw" "$PEERS/usr/sbin/proftpd"
    "$PEERS/usr/lib/proftpd/mod_tls.so" "$PEERS/usr/lib/proftpd/mod_proxy.so"
    "$PEERS/usr/lib/proftpd/mod_digest.so")
install_libs() {
    local missing=() p
    for p in $(lib_deps "${EXTRACTED[@]}"); do
        installed "$p" || missing+=("$p")
    done
    apt_install "${missing[@]}"
}
libs_ok() {
    local bin
    for bin in "${BINS[@]}"; do
        if ldd "$bin" | grep -q 'not found'; then return 1; fi
    done
}
install_libs
if ! libs_ok; then
    apt_update_once
    install_libs
fi
if ! libs_ok; then
    for bin in "${BINS[@]}"; do
        ldd "$bin" | grep 'not found' | sed "s|^|$bin: |" >&2 || true
    done
    log "libraries still missing for the unpacked servers (see above)"
    exit 1
fi

# 3. The test user: vsftpd logs it in through PAM; the other servers run sessions as it.
if ! id fxptest >/dev/null 2>&1; then
    log "creating user fxptest"
    useradd --system --create-home --home-dir /var/lib/fxptest --shell /bin/sh fxptest
    echo 'fxptest:fxptest' | chpasswd
fi
if [[ $(getent passwd fxptest | cut -d: -f7) != /bin/sh ]]; then
    usermod --shell /bin/sh fxptest
fi
# vsftpd checks the shell against /etc/shells through PAM (pam_shells).
grep -qx /bin/sh /etc/shells || echo /bin/sh >>/etc/shells

# 4. Summary.
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
{
    echo "test peers ready:"
    echo "  vsftpd       $(ver vsftpd)"
    while read -r pkg v; do
        printf '  %-12s %s (in .peers/)\n' "$pkg" "$v"
    done <"$stamp"
    echo "  pyftpdlib    $(ver python3-pyftpdlib) (/usr/bin/python3 $(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'))"
    echo "  lftp         $(ver lftp)"
    echo "  curl         $(ver curl)"
    echo "  iptables     $(ver iptables), iproute2 $(ver iproute2)"
    echo "  chromium     $(ver chromium) (headless, the console test)"
    echo "  postgresql   $(ver postgresql) (a server per state-store test binary)"
} >&2
