#!/usr/bin/python3
"""A pyftpdlib server for the integration tests, in the foreground.

Run with /usr/bin/python3 (Debian's python3-pyftpdlib). One virtual user with full
permissions on --root. Logs to stderr. Drops root privileges to --run-as after binding.
"""
import argparse
import logging
import os
import pwd
import sys

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--user", default="fxptest")
    p.add_argument("--password", default="fxptest")
    p.add_argument("--masquerade", help="address to announce in 227")
    p.add_argument("--passive-ports", help="MIN-MAX")
    p.add_argument("--no-passive", action="store_true", help="refuse PASV and EPSV")
    p.add_argument("--foreign", action="store_true", help="permit foreign data addresses (FXP)")
    p.add_argument("--run-as", help="system user to switch to after binding")
    a = p.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s pyftpd[%(process)d] %(message)s")

    authorizer = DummyAuthorizer()
    authorizer.add_user(a.user, a.password, a.root, perm="elradfmwMT")

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.banner = "fxprelay test pyftpdlib ready."
    Handler.permit_foreign_addresses = a.foreign
    if a.masquerade:
        Handler.masquerade_address = a.masquerade
    if a.passive_ports:
        lo, hi = (int(x) for x in a.passive_ports.split("-"))
        Handler.passive_ports = list(range(lo, hi + 1))
    if a.no_passive:
        Handler.proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items()
                              if k not in ("PASV", "EPSV")}
    # Names that are not UTF-8 (Latin-1 fixtures) round-trip as bytes, like os.fsdecode.
    Handler.unicode_errors = "surrogateescape"

    server = FTPServer((a.ip, a.port), Handler)
    server.max_cons = 256
    if a.run_as and os.geteuid() == 0:
        pw = pwd.getpwnam(a.run_as)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    server.serve_forever()


if __name__ == "__main__":
    main()
