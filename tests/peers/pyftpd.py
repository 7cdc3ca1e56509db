#!/usr/bin/python3
"""A pyftpdlib server for the integration tests, in the foreground.

Run with /usr/bin/python3 (Debian's python3-pyftpdlib). One virtual user with full
permissions on --root. Logs to stderr. Drops root privileges to --run-as after binding.

scripts/soak_server.py imports the set-up both servers share: parse_args, log_to_stderr,
make_handler, drop_privileges.
"""
import argparse
import logging
import os
import pwd
import sys

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

    server = FTPServer((a.ip, a.port), Handler)
    server.max_cons = 256
    drop_privileges(a.run_as)
    server.serve_forever()


if __name__ == "__main__":
    main()
