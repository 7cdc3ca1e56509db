#!/usr/bin/python3
"""A pyftpdlib server for the integration tests, in the foreground.

Run with /usr/bin/python3 (Debian's python3-pyftpdlib). One virtual user with full
permissions on --root. Logs to stderr. Drops root privileges to --run-as after binding.

scripts/soak_server.py imports the set-up both servers share: parse_args, log_to_stderr,
make_handler, drop_privileges.
"""
import argparse
import hashlib
import logging
import os
import pwd
import sys
import time
import zlib

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer


def parse_args(add_options, description=None):
    """The options every server here takes, with add_options(parser) adding its own
    between --password and --run-as."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--user", default="fxptest")
    p.add_argument("--password", default="fxptest")
    add_options(p)
    p.add_argument("--run-as", help="system user to switch to after binding")
    return p.parse_args()


def log_to_stderr(name, level):
    logging.basicConfig(stream=sys.stderr, level=level,
                        format=f"%(asctime)s {name}[%(process)d] %(message)s")


def make_handler(a, banner, base=FTPHandler):
    """A `base` (FTPHandler) subclass for the one user a.user / a.password, full
    permissions on a.root."""
    authorizer = DummyAuthorizer()
    authorizer.add_user(a.user, a.password, a.root, perm="elradfmwMT")

    class Handler(base):
        pass

    Handler.authorizer = authorizer
    Handler.banner = banner
    # Names that are not UTF-8 (Latin-1 fixtures) round-trip as bytes, like os.fsdecode.
    Handler.unicode_errors = "surrogateescape"
    return Handler


def eager_tls_dtp(base):
    """pyftpdlib's TLS data handler polls its socket only once a transfer command came, so a
    client that starts the data connection's TLS handshake before sending RETR/LIST (curl
    does) stalls and is reset. This subclass also reads while the handshake is under way."""

    class EagerTLS(base):
        def readable(self):
            return self._ssl_accepting or super().readable()

    return EagerTLS


# Hash commands pyftpdlib lacks, for the verification tests: (FEAT name, hashlib name).
DIGESTS = {"SHA-256": "sha256", "SHA-1": "sha1", "MD5": "md5", "CRC32": None}
LEGACY = {"XSHA256": "SHA-256", "XSHA1": "SHA-1", "XMD5": "MD5", "XCRC": "CRC32"}


def file_digest(path, alg):
    """Hex digest of the file at `path` with `alg` (a key of DIGESTS)."""
    name = DIGESTS[alg]
    h = hashlib.new(name) if name else None
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            if h:
                h.update(chunk)
            else:
                crc = zlib.crc32(chunk, crc)
    return h.hexdigest() if h else "%08x" % crc


def with_digests(base, mode, delay=0.0):
    """`base` with `HASH` + `OPTS HASH` (draft-bryan-ftpext-hash, mode "hash") or the
    one-algorithm XSHA256/XSHA1/XMD5/XCRC commands (mode "legacy", answered `250 HEX`
    like proftpd's mod_digest), listed in FEAT. Each answer waits `delay` seconds first
    (a server hashing a large file)."""
    verbs = ["HASH"] if mode == "hash" else list(LEGACY)
    cmds = dict(base.proto_cmds)
    for v in verbs:
        cmds[v] = dict(perm="r", auth=True, arg=True, help="Syntax: %s <SP> file-name" % v)

    class Digests(base):
        proto_cmds = cmds
        hash_alg = "SHA-256"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if mode == "hash":
                algs = ["%s*" % a if a == self.hash_alg else a for a in DIGESTS]
                self._extra_feats.append("HASH " + ";".join(algs))
            else:
                self._extra_feats.extend(LEGACY)

        def ftp_OPTS(self, line):
            cmd, _, arg = line.partition(" ")
            if mode != "hash" or cmd.upper() != "HASH":
                return super().ftp_OPTS(line)
            if not arg:
                self.respond("200 " + self.hash_alg)
            elif arg.upper() in DIGESTS:
                self.hash_alg = arg.upper()
                self.respond("200 " + self.hash_alg)
            else:
                self.respond("501 Unknown algorithm")

        def answer(self, path, alg, layout):
            if not self.fs.isfile(self.fs.realpath(path)):
                self.respond("550 %s: not a plain file." % self.fs.fs2ftp(path))
                return
            if delay:
                time.sleep(delay)
            hexd = self.run_as_current_user(file_digest, path, alg)
            size = self.run_as_current_user(self.fs.getsize, path)
            self.respond(layout.format(alg=alg, size=size, hex=hexd,
                                       path=self.fs.fs2ftp(path)))

        def ftp_HASH(self, path):
            self.answer(path, self.hash_alg, "213 {alg} 0-{size} {hex} {path}")

    for verb, alg in LEGACY.items():
        setattr(Digests, "ftp_" + verb,
                lambda self, path, alg=alg: self.answer(path, alg, "250 {hex}"))
    return Digests


def corrupting(base):
    """`base` that flips the first byte of every file it receives, once the upload is
    complete: a destination whose copy differs from what was sent, at the same size."""

    class Corrupting(base):
        def on_file_received(self, file):
            with open(file, "r+b") as f:
                first = f.read(1)
                if first:
                    f.seek(0)
                    f.write(bytes([first[0] ^ 0xFF]))

    return Corrupting


def with_host(base):
    """`base` that takes RFC 7151 HOST before login, lists it in FEAT, logs each one
    (`HOST <name>`) and refuses a login without one: a server with name-based virtual
    hosts only (no default host), as far as a proxy can tell."""
    cmds = dict(base.proto_cmds)
    cmds["HOST"] = dict(perm=None, auth=False, arg=True,
                        help="Syntax: HOST <SP> host-name (virtual host).")

    class Host(base):
        proto_cmds = cmds

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._extra_feats.append("HOST")

        def ftp_HOST(self, name):
            if self.authenticated or self.username:
                self.respond("503 HOST must come before USER.")
                return
            logging.info("HOST %s", name)
            self.virtual_host = name
            self.respond("220 Host %s accepted." % name)

        def ftp_USER(self, line):
            if getattr(self, "virtual_host", None) is None:
                self.respond("530 Send HOST first: this server has virtual hosts only.")
                return
            super().ftp_USER(line)

    return Host


def drop_privileges(user):
    """Switches to the system user `user` (if given and running as root): after binding."""
    if user and os.geteuid() == 0:
        pw = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


def main():
    def own_options(p):
        p.add_argument("--masquerade", help="address to announce in 227")
        p.add_argument("--passive-ports", help="MIN-MAX")
        p.add_argument("--no-passive", action="store_true", help="refuse PASV and EPSV")
        p.add_argument("--foreign", action="store_true",
                       help="permit foreign data addresses (FXP)")
        p.add_argument("--throttle", type=int, metavar="BYTES_PER_SECOND",
                       help="limit every data connection, for transfers that must still "
                            "be running when a test acts on them")
        p.add_argument("--tls-cert", help="PEM certificate: require explicit FTPS "
                                          "(AUTH TLS) on login and PROT P on data")
        p.add_argument("--tls-key", help="PEM private key of --tls-cert")
        p.add_argument("--digest", choices=["hash", "legacy"],
                       help="offer HASH (draft-bryan-ftpext-hash) or XSHA256/XSHA1/XMD5/XCRC")
        p.add_argument("--hash-delay", type=float, default=0.0, metavar="SECONDS",
                       help="wait this long before answering a hash command")
        p.add_argument("--auth-failed-delay", type=float, metavar="SECONDS",
                       help="how long a failed login's 530 waits (pyftpdlib's default: 3)")
        p.add_argument("--corrupt-uploads", action="store_true",
                       help="flip the first byte of every uploaded file once it is stored")
        p.add_argument("--host-command", action="store_true",
                       help="take RFC 7151 HOST (listed in FEAT, logged when received)")

    a = parse_args(own_options)
    log_to_stderr("pyftpd", logging.INFO)

    base = FTPHandler
    if a.tls_cert:
        from pyftpdlib.handlers import TLS_FTPHandler  # needs python3-openssl
        base = TLS_FTPHandler
    Handler = make_handler(a, "fxprelay test pyftpdlib ready.", base)
    if a.tls_cert:
        Handler.certfile = a.tls_cert
        Handler.keyfile = a.tls_key
        Handler.tls_control_required = True
        Handler.tls_data_required = True
        # Loaded now, while still root: the key file is readable by root only.
        Handler.get_ssl_context()
        Handler.dtp_handler = eager_tls_dtp(Handler.dtp_handler)
    Handler.permit_foreign_addresses = a.foreign
    if a.auth_failed_delay is not None:
        Handler.auth_failed_timeout = a.auth_failed_delay
    if a.masquerade:
        Handler.masquerade_address = a.masquerade
    if a.passive_ports:
        lo, hi = (int(x) for x in a.passive_ports.split("-"))
        Handler.passive_ports = list(range(lo, hi + 1))
    if a.throttle:
        class Throttled(ThrottledDTPHandler):
            read_limit = a.throttle
            write_limit = a.throttle
        Handler.dtp_handler = Throttled
    if a.no_passive:
        Handler.proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items()
                              if k not in ("PASV", "EPSV")}

    if a.digest:
        Handler = with_digests(Handler, a.digest, a.hash_delay)
    if a.corrupt_uploads:
        Handler = corrupting(Handler)
    if a.host_command:
        Handler = with_host(Handler)

    server = FTPServer((a.ip, a.port), Handler)
    server.max_cons = 256
    drop_privileges(a.run_as)
    server.serve_forever()


if __name__ == "__main__":
    main()
