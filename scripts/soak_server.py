#!/usr/bin/python3
"""The FTP server behind fxprelay in scripts/soak.sh: pyftpdlib, in the foreground.

Run with /usr/bin/python3 (Debian's python3-pyftpdlib). Unlike tests/peers/pyftpd.py it
takes thousands of concurrent sessions: no connection limits (max_cons=0,
max_cons_per_ip=0), a long listen backlog, pyftpdlib's single-threaded epoll loop, and
quiet logging (WARNING). One virtual user with full permissions on --root; passive
replies announce the address it listens on (loopback). Drops root privileges to
--run-as after binding. Raise RLIMIT_NOFILE before starting it (one fd per session,
plus one per data connection). The set-up it shares with tests/peers/pyftpd.py
(options, user, handler, privileges) is imported from there.
"""
import logging
import os
import sys

# Root runs this: no __pycache__ of root's in the repository.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peers"))
import pyftpd  # noqa: E402

from pyftpdlib.servers import FTPServer  # noqa: E402


def main():
    def own_options(p):
        p.add_argument("--backlog", type=int, default=1024)
        p.add_argument("--idle-timeout", type=int, default=600,
                       help="seconds without a command before the server closes a session")

    a = pyftpd.parse_args(own_options, description=__doc__.splitlines()[0])
    pyftpd.log_to_stderr("soak-pyftpd", logging.WARNING)

    Handler = pyftpd.make_handler(a, "fxprelay soak pyftpdlib ready.")
    Handler.timeout = a.idle_timeout

    server = FTPServer((a.ip, a.port), Handler, backlog=a.backlog)
    server.max_cons = 0
    server.max_cons_per_ip = 0
    pyftpd.drop_privileges(a.run_as)
    print(f"soak-pyftpd: listening on {a.ip}:{a.port}, poller "
          f"{type(server.ioloop).__name__}", file=sys.stderr, flush=True)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
