#!/usr/bin/env python3
"""The two kinds of client scripts/bench-defense.sh runs against fxprelay.

  spray:  CONNECTIONS connections, round robin over ADDRESSES source addresses
          (127.A.B.1 upward), at most CONCURRENCY at once; each reads the greeting and,
          if it is a 220, tries a wrong password and quits. Prints one JSON line: how
          many were refused at once (421), got 530, ended otherwise, and the seconds.
  logins: COUNT logins one after the other with the right password, each from its own
          source address (127.A.B.1 upward); prints one JSON line with the login round
          trips (connect to 230) in milliseconds: median, p90, max.

Raw sockets, no ftplib: the spray must not wait on a library's timeouts, and the login
time measured is the protocol's own (connect, 220, USER, 331, PASS, 230).
"""

import argparse
import asyncio
import json
import statistics
import sys
import time

TIMEOUT = 10.0


def addresses(base, count):
    a, b = (int(x) for x in base.split("."))
    return [f"127.{a}.{b + i // 250}.{1 + i % 250}" for i in range(count)]


async def reply(reader):
    """The final line of one FTP reply (multi-line replies read to their end)."""
    first = await asyncio.wait_for(reader.readline(), TIMEOUT)
    if not first:
        raise ConnectionError("closed")
    line = first
    if len(first) > 3 and first[3:4] == b"-":
        code = first[:3]
        while not (line.startswith(code) and line[3:4] == b" "):
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            if not line:
                raise ConnectionError("closed in a multi-line reply")
    return line.decode("latin-1").rstrip("\r\n")


async def one_try(host, port, source, user, password, counts):
    writer = None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source, 0)), TIMEOUT)
        greeting = await reply(reader)
        if greeting.startswith("421"):
            counts["refused_421"] += 1
            return
        if not greeting.startswith("220"):
            counts["other"] += 1
            return
        writer.write(f"USER {user}\r\n".encode())
        await writer.drain()
        r = await reply(reader)
        if r.startswith("331"):
            writer.write(f"PASS {password}\r\n".encode())
            await writer.drain()
            r = await reply(reader)
        if r.startswith("530"):
            counts["failed_530"] += 1
        elif r.startswith("421"):
            counts["cut_421"] += 1
        else:
            counts["other"] += 1
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (OSError, ConnectionError, asyncio.TimeoutError):
        counts["closed"] += 1
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def spray(a):
    sources = addresses(a.base, a.addresses)
    counts = {"refused_421": 0, "failed_530": 0, "cut_421": 0, "closed": 0, "other": 0}
    gate = asyncio.Semaphore(a.concurrency)
    started = time.monotonic()

    async def run(i):
        async with gate:
            await one_try(a.host, a.port, sources[i % len(sources)], a.user, "wrong", counts)

    await asyncio.wait_for(asyncio.gather(*(run(i) for i in range(a.connections))), a.time_limit)
    counts["seconds"] = round(time.monotonic() - started, 2)
    counts["connections"] = a.connections
    print(json.dumps(counts), flush=True)


async def login(host, port, source, user, password):
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(source, 0)), TIMEOUT)
    try:
        if not (await reply(reader)).startswith("220"):
            raise RuntimeError("no 220 greeting")
        writer.write(f"USER {user}\r\n".encode())
        await writer.drain()
        if not (await reply(reader)).startswith("331"):
            raise RuntimeError("no 331 to USER")
        writer.write(f"PASS {password}\r\n".encode())
        await writer.drain()
        r = await reply(reader)
        if not r.startswith("230"):
            raise RuntimeError(f"login refused: {r}")
        took = time.monotonic() - started
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return took
    finally:
        writer.close()


async def logins(a):
    took = []
    for source in addresses(a.base, a.count):
        took.append(await login(a.host, a.port, source, a.user, a.password) * 1000)
    took.sort()
    print(json.dumps({
        "logins": len(took),
        "median_ms": round(statistics.median(took), 2),
        "p90_ms": round(took[int(len(took) * 0.9) - 1], 2),
        "max_ms": round(took[-1], 2),
    }), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["spray", "logins"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="fxptest")
    p.add_argument("--password", default="fxptest")
    p.add_argument("--base", required=True, help="A.B: source addresses 127.A.B.1 upward")
    p.add_argument("--connections", type=int, default=20000)
    p.add_argument("--addresses", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--time-limit", type=float, default=300.0)
    a = p.parse_args()
    try:
        asyncio.run(spray(a) if a.mode == "spray" else logins(a))
    except Exception as e:  # noqa: BLE001 - the script reports and fails
        print(f"{a.mode}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
