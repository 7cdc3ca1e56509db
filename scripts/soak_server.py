#!/usr/bin/python3
"""The FTP server behind fxprelay in scripts/soak.sh: pyftpdlib, in the foreground.

Run with /usr/bin/python3 (Debian's python3-pyftpdlib). Unlike tests/peers/pyftpd.py it
takes thousands of concurrent sessions: no connection limits (max_cons=0,
max_cons_per_ip=0), a long listen backlog, pyftpdlib's single-threaded epoll loop, and
quiet logging (WARNING). One virtual user with full permissions on --root; passive
replies announce the address it listens on (loopback). Drops root privileges to
--run-as after binding. Raise RLIMIT_NOFILE before starting it (one fd per session,
plus one per data connection).
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ip", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--user", default="fxptest")
    p.add_argument("--password", default="fxptest")
    p.add_argument("--backlog", type=int, default=1024)
    p.add_argument("--idle-timeout", type=int, default=600,
                   help="seconds without a command before the server closes a session")
    p.add_argument("--run-as", help="system user to switch to after binding")
    a = p.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s soak-pyftpd[%(process)d] %(message)s")

    authorizer = DummyAuthorizer()
    authorizer.add_user(a.user, a.password, a.root, perm="elradfmwMT")

    class Handler(FTPHandler):
        pass

    Handler.authorizer = authorizer
    Handler.banner = "fxprelay soak pyftpdlib ready."
    Handler.timeout = a.idle_timeout
    Handler.unicode_errors = "surrogateescape"

    server = FTPServer((a.ip, a.port), Handler, backlog=a.backlog)
    server.max_cons = 0
    server.max_cons_per_ip = 0
    if a.run_as and os.geteuid() == 0:
        pw = pwd.getpwnam(a.run_as)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    print(f"soak-pyftpd: listening on {a.ip}:{a.port}, poller "
          f"{type(server.ioloop).__name__}", file=sys.stderr, flush=True)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
