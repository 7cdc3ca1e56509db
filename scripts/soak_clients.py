#!/usr/bin/python3
"""Many concurrent logged-in FTP control sessions, for scripts/soak.sh.

Opens --sessions control connections to --host:--port (at most --concurrency logins in
flight), each: read the 220 greeting, USER, PASS, wait for 230. Then writes
"ready ESTABLISHED FAILED" to --status (atomically) and holds every session, sending
NOOP every --noop-interval seconds (random phase) and expecting 200. On SIGTERM/SIGINT
(or when --hold-max passes) it sends QUIT to every live session, expects 221, closes
them all, writes "done ..." to --status and a report to --report: lines "KEY VALUE"
(established, failed, dropped, noops_ok, quit_ok, quit_failed, ramp_seconds) and
"reason COUNT TEXT" for every distinct failure. Every step has a timeout; the exit code
is 0 whenever the report was written (soak.sh judges the numbers). With --tls-ca every
session does AUTH TLS after the greeting (scripts/mem-tls.sh).
"""
import argparse
import asyncio
import collections
import os
import random
import re
import signal
import ssl
import sys
import time

REPLY_END = re.compile(rb"^(\d{3}) ")


class FtpError(Exception):
    """A failure with a short, aggregatable reason."""


async def read_reply(reader, timeout):
    """One complete (possibly multi-line) reply -> (code, last line as text)."""
    first = None
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except asyncio.TimeoutError:
            raise FtpError("timeout waiting for a reply") from None
        except (ConnectionError, OSError) as e:
            raise FtpError(f"read: {type(e).__name__}") from None
        if not line:
            raise FtpError("connection closed by peer")
        if first is None:
            first = line[:3]
        m = REPLY_END.match(line)
        if m and m.group(1) == first:
            return int(m.group(1)), line.decode("latin-1").rstrip("\r\n")


async def command(reader, writer, cmd, timeout):
    try:
        writer.write(cmd.encode("latin-1") + b"\r\n")
        await asyncio.wait_for(writer.drain(), timeout)
    except asyncio.TimeoutError:
        raise FtpError(f"{cmd.split()[0]}: timeout writing") from None
    except (ConnectionError, OSError) as e:
        raise FtpError(f"{cmd.split()[0]}: write: {type(e).__name__}") from None
    return await read_reply(reader, timeout)


def expect(what, got, codes):
    code, text = got
    if code not in codes:
        # Keep the reason short and aggregatable: code plus the first words.
        raise FtpError(f"{what}: unexpected reply {text[:60]!r}")


class Session:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer


class Soak:
    def __init__(self, a):
        self.a = a
        self.reasons = collections.Counter()
        self.sessions = []
        self.established = 0
        self.failed = 0
        self.dropped = 0
        self.noops_ok = 0
        self.quit_ok = 0
        self.quit_failed = 0
        self.stop = asyncio.Event()
        # Explicit FTPS: the context every session's AUTH TLS handshake uses.
        self.tls = ssl.create_default_context(cafile=a.tls_ca) if a.tls_ca else None

    def write_status(self, text):
        tmp = self.a.status + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, self.a.status)

    async def open_one(self, sem):
        a = self.a
        async with sem:
            if self.stop.is_set():
                self.failed += 1
                self.reasons["not attempted: stopped during the ramp"] += 1
                return
            writer = None
            try:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(a.host, a.port, limit=65536), a.timeout)
                except asyncio.TimeoutError:
                    raise FtpError("connect: timeout") from None
                except OSError as e:
                    raise FtpError(f"connect: {type(e).__name__} {e.strerror or ''}".strip()) from None
                expect("greeting", await read_reply(reader, a.timeout), (220,))
                if self.tls is not None:
                    expect("AUTH TLS", await command(reader, writer, "AUTH TLS", a.timeout), (234,))
                    try:
                        await asyncio.wait_for(
                            writer.start_tls(self.tls, server_hostname=a.host), a.timeout)
                    except (asyncio.TimeoutError, OSError) as e:
                        raise FtpError(f"TLS handshake: {type(e).__name__}") from None
                got = await command(reader, writer, f"USER {a.user}", a.timeout)
                if got[0] == 331:
                    got = await command(reader, writer, f"PASS {a.password}", a.timeout)
                expect("login", got, (230,))
            except FtpError as e:
                self.failed += 1
                self.reasons[f"login failed: {e}"] += 1
                if writer is not None:
                    writer.close()
                return
            self.established += 1
            self.sessions.append(Session(reader, writer))

    async def hold(self, s):
        """NOOP every interval until stop; a failure drops the session."""
        a = self.a
        # Random phase, so the NOOPs of thousands of sessions do not arrive together.
        delay = random.uniform(0, a.noop_interval)
        while True:
            try:
                await asyncio.wait_for(self.stop.wait(), delay)
                return True
            except asyncio.TimeoutError:
                pass
            delay = a.noop_interval
            try:
                expect("NOOP", await command(s.reader, s.writer, "NOOP", a.timeout), (200,))
                self.noops_ok += 1
            except FtpError as e:
                self.dropped += 1
                self.reasons[f"dropped while held: {e}"] += 1
                s.writer.close()
                return False

    async def quit(self, s):
        try:
            expect("QUIT", await command(s.reader, s.writer, "QUIT", self.a.timeout), (221,))
            self.quit_ok += 1
        except FtpError as e:
            self.quit_failed += 1
            self.reasons[f"quit failed: {e}"] += 1
        finally:
            s.writer.close()
            try:
                await asyncio.wait_for(s.writer.wait_closed(), self.a.timeout)
            except (asyncio.TimeoutError, OSError):
                pass

    async def run(self):
        a = self.a
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        sem = asyncio.Semaphore(a.concurrency)
        t0 = time.monotonic()
        ramp = asyncio.gather(*(self.open_one(sem) for _ in range(a.sessions)))
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(ramp), 1.0)
                break
            except asyncio.TimeoutError:
                pass
            now = time.monotonic() - t0
            if now - last >= 5:
                last = now
                print(f"soak-clients: {self.established} established, {self.failed} failed "
                      f"after {now:.0f} s", file=sys.stderr, flush=True)
            if now > a.ramp_timeout:
                # Bounded: whatever has not logged in by now is not waited for.
                self.stop.set()
                try:
                    await asyncio.wait_for(ramp, a.timeout + 5)
                except asyncio.TimeoutError:
                    pass
                break
        ramp_s = time.monotonic() - t0
        print(f"soak-clients: ramp done in {ramp_s:.1f} s: {self.established} established, "
              f"{self.failed} failed", file=sys.stderr, flush=True)
        self.write_status(f"ready {self.established} {self.failed}")

        holders = [asyncio.ensure_future(self.hold(s)) for s in self.sessions]
        try:
            await asyncio.wait_for(self.stop.wait(), a.hold_max)
        except asyncio.TimeoutError:
            self.reasons["hold-max reached before the stop signal"] += 1
            self.stop.set()
        alive = await asyncio.gather(*holders)
        live = [s for s, ok in zip(self.sessions, alive) if ok]
        qsem = asyncio.Semaphore(max(a.concurrency, 256))

        async def quit_one(s):
            async with qsem:
                await self.quit(s)

        await asyncio.gather(*(quit_one(s) for s in live))
        with open(a.report, "w") as f:
            for k in ("established", "failed", "dropped", "noops_ok", "quit_ok", "quit_failed"):
                f.write(f"{k} {getattr(self, k)}\n")
            f.write(f"ramp_seconds {ramp_s:.1f}\n")
            for text, n in self.reasons.most_common():
                f.write(f"reason {n} {text}\n")
        self.write_status(f"done {self.quit_ok} {self.quit_failed}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="fxptest")
    p.add_argument("--password", default="fxptest")
    p.add_argument("--sessions", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=64, help="logins in flight at once")
    p.add_argument("--noop-interval", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=15.0, help="per connect/reply")
    p.add_argument("--ramp-timeout", type=float, default=120.0)
    p.add_argument("--hold-max", type=float, default=3600.0)
    p.add_argument("--tls-ca", help="explicit FTPS (AUTH TLS before USER), trusting this CA")
    p.add_argument("--status", required=True)
    p.add_argument("--report", required=True)
    a = p.parse_args()
    asyncio.run(Soak(a).run())


if __name__ == "__main__":
    main()
