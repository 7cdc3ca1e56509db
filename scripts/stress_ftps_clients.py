#!/usr/bin/python3
"""FTPS upload sessions for scripts/stress-ftps.sh.

  stress_ftps_clients.py HOST PORT CA SESSIONS UPLOADS PYTHON...

Runs SESSIONS sessions in parallel, each with Python's ftplib.FTP_TLS (AUTH TLS, PROT P,
data connections resuming the control session; session i runs under PYTHON[i % n], so
every interpreter given takes part), each uploading UPLOADS files one after the other and
sending NOOP after each. Every reply must come within --reply-timeout seconds (5): the
226 that ends an upload (FTP_TLS.storbinary unwraps the data connection first, so the
proxy's close_notify is needed too) and the NOOP's 200. Prints one line per session and a
summary; exits 1 if any reply was late or missing, or any upload failed.

The files are named s<session>-<n>.bin, of sizes cycling through a few values (an empty
file, a few bytes, a TLS record, 300 KiB); the script that runs this compares them with
the sources afterwards.
"""
import argparse
import os
import subprocess
import sys
import time

SIZES = [0, 7, 16 * 1024, 300 * 1024 + 3]

SESSION = r"""
import ftplib, ssl, sys, time
sys.path.insert(0, sys.argv[1])
from ftplib_client import ReusingFTP_TLS
host, port, ca, sid, uploads, limit, src = sys.argv[2:9]
port, uploads, limit = int(port), int(uploads), float(limit)
ctx = ssl.create_default_context(cafile=ca)
ftp = ReusingFTP_TLS(context=ctx, timeout=limit)
worst = 0.0
done = 0
try:
    ftp.connect(host, port)
    ftp.login("fxptest", "fxptest")
    ftp.prot_p()
    for n in range(uploads):
        name = "s%s-%d.bin" % (sid, n)
        with open("%s/%d.bin" % (src, n % 4), "rb") as f:
            ftp.storbinary("STOR " + name, f)
        start = time.monotonic()
        ftp.voidcmd("NOOP")
        worst = max(worst, time.monotonic() - start)
        done += 1
    ftp.quit()
except Exception as e:
    print("session %s: %s after %d uploads: %s: %s" % (sid, sys.version.split()[0], done,
          type(e).__name__, e))
    sys.exit(1)
print("session %s: %s, %d uploads, slowest NOOP %.3f s" % (sid, sys.version.split()[0],
      done, worst))
"""


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port")
    p.add_argument("ca")
    p.add_argument("sessions", type=int)
    p.add_argument("uploads", type=int)
    p.add_argument("pythons", nargs="+")
    p.add_argument("--reply-timeout", type=float, default=5.0)
    p.add_argument("--src", required=True, help="directory for the source files")
    a = p.parse_args()
    for i, size in enumerate(SIZES):
        with open(os.path.join(a.src, "%d.bin" % i), "wb") as f:
            f.write(os.urandom(size))
    peers = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "peers")
    started = time.monotonic()
    procs = []
    for sid in range(a.sessions):
        python = a.pythons[sid % len(a.pythons)]
        args = [python, "-c", SESSION, peers, a.host, a.port, a.ca, str(sid),
                str(a.uploads), str(a.reply_timeout), a.src]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    failed = 0
    for proc in procs:
        # Bounded: every reply has its own timeout, so a session ends on its own; this is
        # the backstop.
        out, _ = proc.communicate(timeout=60 + a.uploads * 4 * a.reply_timeout)
        sys.stdout.write(out)
        failed += proc.returncode != 0
    took = time.monotonic() - started
    print("%d sessions x %d uploads in %.1f s, %d failed" % (a.sessions, a.uploads, took,
                                                           failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
