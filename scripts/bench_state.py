#!/usr/bin/env python3
"""The state store under a queue of JOBS jobs, run by scripts/bench-state.sh.

For each store (in memory: `sqlite::memory:`, a SQLite file, PostgreSQL), one fxprelay
with `fxp.concurrency: 1`:

  1. a gate job (a throttled copy that outlasts the measurement) holds the one slot;
  2. JOBS - 1 small-file jobs are posted behind it (POST rate, one keep-alive
     connection), so JOBS jobs are queued or running;
  3. with them stored (after a warm-up round of 200 jobs, not reported): the proxy's RSS, and the latency of `GET /api/v1/transfers?limit=100`
     (the first page, and a page 5,000 jobs in, by cursor: 50 requests each);
  4. the gate is cancelled and `fxp.concurrency` raised to CONCURRENCY by SIGHUP: the
     queue drains (oldest first, so it has once the last job has ended); jobs per second
     started on small files (10 KB each), RSS after, and how many did not end `done`
     (every finished job is kept for this: `state.keep_finished` twice JOBS).

Prints a table, one row per store. Every process it started is stopped by pid on exit.
"""

import argparse
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER = PASS = "fxptest"
PROCS = []


def log(msg):
    print(f"bench-state: {msg}", file=sys.stderr, flush=True)


def free_port(ip):
    """A port free on `ip` now, outside fxprelay's default data ports (50000-50999),
    which its listeners may not use."""
    while True:
        with socket.socket() as s:
            s.bind((ip, 0))
            port = s.getsockname()[1]
        if not 50000 <= port <= 50999:
            return port


def wait(what, cond, within=30.0, every=0.05):
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-state: timed out waiting for {what}")
        time.sleep(every)


def start(cmd, log_path, **kw):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=open(log_path, "wb"), **kw)
    PROCS.append(p)
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def pyftpd(ip, root, work, name, throttle=None):
    port = free_port(ip)
    with socket.socket() as s:  # a passive range: 100 ports from a free one
        s.bind((ip, 0))
    cmd = [sys.executable, f"{ROOT}/tests/peers/pyftpd.py", "--ip", ip, "--port", str(port),
           "--root", root, "--user", USER, "--password", PASS, "--foreign",
           "--run-as", USER]
    if throttle:
        cmd += ["--throttle", str(throttle)]
    p = start(cmd, f"{work}/{name}.log")

    def up():
        try:
            with socket.create_connection((ip, port), 0.2) as c:
                return c.recv(100).startswith(b"220")
        except OSError:
            return False
    wait(f"pyftpdlib {name}", up)
    return f"{ip}:{port}", p


def postgres(ip, work):
    """initdb and start PostgreSQL as the postgres user; the URL of database fxprelay."""
    bins = sorted(d for d in os.listdir("/usr/lib/postgresql"))
    bin_dir = f"/usr/lib/postgresql/{bins[-1]}/bin"
    pw = pwd.getpwnam("postgres")
    pgdir = f"{work}/pg"
    os.mkdir(pgdir)
    os.chown(pgdir, pw.pw_uid, pw.pw_gid)

    def as_postgres():
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    subprocess.run([f"{bin_dir}/initdb", "-A", "trust", "-U", "postgres", "--no-sync",
                    "-D", f"{pgdir}/data"], check=True, preexec_fn=as_postgres,
                   stdout=subprocess.DEVNULL, cwd=pgdir)
    port = free_port(ip)
    start([f"{bin_dir}/postgres", "-D", f"{pgdir}/data", "-h", ip, "-p", str(port), "-k", pgdir],
          f"{work}/postgres.log", preexec_fn=as_postgres, cwd=pgdir)
    wait("postgres", lambda: subprocess.run(
        [f"{bin_dir}/pg_isready", "-q", "-h", ip, "-p", str(port)]).returncode == 0)
    subprocess.run([f"{bin_dir}/psql", "-h", ip, "-p", str(port), "-U", "postgres", "-qc",
                    "CREATE DATABASE fxprelay"], check=True)
    return f"postgres://postgres@{ip}:{port}/fxprelay"


class Api:
    """One keep-alive connection to the admin endpoint, made again when the proxy closed
    it (idle past admin.header_read_timeout)."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)

    def call(self, method, path, body=None):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                if attempt:
                    raise


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def order(src_addr, src, dst_addr, dst):
    return json.dumps({
        "source": f"ftp://{USER}:{PASS}@{src_addr}/{src}",
        "destination": f"ftp://{USER}:{PASS}@{dst_addr}/{dst}",
        "options": {"verify": "size", "retries": 0},
    })


def run_store(name, url, a, args, work, jobs=None):
    """One store's round (of `jobs`, else --jobs); the figures."""
    jobs = jobs or args.jobs
    ip = args.proxy_ip
    admin = f"{ip}:{free_port(ip)}"
    listen = f"{ip}:{free_port(ip)}"
    cfg = f"{work}/{name}.yaml"
    # Every finished job kept, so the drain can be read back whole.
    state = (f"state:\n  url: \"{url or 'sqlite::memory:'}\"\n  instance: bench\n"
             f"  keep_finished: {2 * args.jobs}\n")
    if url is not None:
        state += f"  key_file: \"{work}/{name}.key\"\n"

    def write(concurrency):
        with open(cfg, "w") as f:
            f.write(f"admin:\n  bind: \"{admin}\"\ndefense:\n  enabled: false\n"
                    f"fxp:\n  allow: [127.0.0.0/8]\n  concurrency: {concurrency}\n{state}"
                    f"listeners:\n  - name: bench\n    bind: \"{listen}\"\n    upstream: \"{a['src']}\"\n")
    write(1)
    proxy = start([args.bin, "run", "-c", cfg], f"{work}/{name}.fxprelay.log",
                  env={**os.environ, "RUST_LOG": "warn"})
    api = Api(admin)

    def healthy():
        try:
            return Api(admin).call("GET", "/healthz")[0] == 200
        except OSError:
            return False
    try:
        wait("fxprelay", healthy)
    except SystemExit:
        with open(f"{work}/{name}.fxprelay.log") as f:
            log(f.read()[-2000:])
        raise
    status, body = api.call("POST", "/api/v1/transfers",
                            order(a["gate"], "gate.bin", a["dst"], f"{name}-gate.bin"))
    assert status == 202, body
    gate = json.loads(body)["id"]
    wait("the gate to run", lambda: json.loads(api.call(
        "GET", f"/api/v1/transfers/{gate}")[1])["state"] == "running")
    n = jobs - 1
    t0 = time.monotonic()
    ids = []
    for i in range(n):
        status, body = api.call("POST", "/api/v1/transfers",
                                order(a["src"], "small.bin", a["dst"], f"{name}/d{i}.bin"))
        if status != 202:
            raise SystemExit(f"bench-state: POST {i}: {status} {body[:300]!r}")
        ids.append(json.loads(body)["id"])
    post_s = time.monotonic() - t0
    time.sleep(1)
    rss_queued = rss_kib(proxy.pid)

    def latency(path):
        times = []
        for _ in range(50):
            t = time.monotonic()
            status, body = api.call("GET", path)
            times.append(time.monotonic() - t)
            assert status == 200, body[:200]
        times.sort()
        return statistics.median(times) * 1000, times[int(len(times) * 0.95) - 1] * 1000
    first = latency("/api/v1/transfers?limit=100")
    deep = latency(f"/api/v1/transfers?limit=100&cursor={ids[min(5000, n - 1)]}")

    os.makedirs(f"{a['dst_root']}/{name}", exist_ok=True)  # the copies' directory
    os.chown(f"{a['dst_root']}/{name}", *a["owner"])
    t0 = time.monotonic()
    status, body = api.call("DELETE", f"/api/v1/transfers/{gate}")
    assert status == 200, body
    write(args.concurrency)
    proxy.send_signal(signal.SIGHUP)
    # Jobs are claimed oldest first: once the last has ended, the queue has drained.
    wait("the queue to drain", lambda: json.loads(api.call(
        "GET", f"/api/v1/transfers/{ids[-1]}")[1])["state"] in ("done", "failed"),
        within=args.time_limit, every=0.2)
    def count():
        states = {}
        cursor = gate
        while True:
            page = json.loads(api.call(
                "GET", f"/api/v1/transfers?limit=1000&cursor={cursor}")[1])
            for v in page["transfers"]:
                states[v["state"]] = states.get(v["state"], 0) + 1
            if not page["next_cursor"]:
                return states
            cursor = page["next_cursor"]
    # The few claimed just before the last (at most CONCURRENCY) may still be running.
    tail = ids[-4 * args.concurrency:]
    wait("the last jobs to end", lambda: all(json.loads(api.call(
        "GET", f"/api/v1/transfers/{i}")[1])["state"] in ("done", "failed") for i in tail),
        within=120, every=0.05)
    drain_s = time.monotonic() - t0
    rss_after = rss_kib(proxy.pid)
    states = count()
    failed = sum(c for st, c in states.items() if st != "done")
    if failed:
        log(f"{name}: jobs not done after the drain: {states}")
    stop(proxy)
    return {
        "store": name,
        "jobs": jobs,
        "post_per_s": n / post_s,
        "rss_queued_mib": rss_queued / 1024,
        "list_first_ms": first,
        "list_deep_ms": deep,
        "started_per_s": n / drain_s,
        "rss_after_mib": rss_after / 1024,
        "not_done": failed,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--jobs", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--stores", default="memory,sqlite,postgres")
    p.add_argument("--server-ip", default="127.0.0.75")
    p.add_argument("--proxy-ip", default="127.0.0.76")
    p.add_argument("--time-limit", type=float, default=900)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="bench-state-")
    os.chmod(work, 0o755)
    try:
        pw = pwd.getpwnam(USER)
        owner = (pw.pw_uid, pw.pw_gid)
        roots = {}
        for r in ("src", "gate", "dst"):
            roots[r] = f"{work}/{r}"
            os.mkdir(roots[r])
            os.chown(roots[r], *owner)
        with open(f"{roots['src']}/small.bin", "wb") as f:
            f.write(os.urandom(10_000))
        with open(f"{roots['gate']}/gate.bin", "wb") as f:
            f.write(os.urandom(64 << 20))
        for r in ("src", "gate"):
            for n in os.listdir(roots[r]):
                os.chown(f"{roots[r]}/{n}", *owner)
        a = {"dst_root": roots["dst"], "owner": owner}
        a["src"], _ = pyftpd(args.server_ip, roots["src"], work, "src")
        a["gate"], _ = pyftpd(args.server_ip, roots["gate"], work, "gate", throttle=16384)
        a["dst"], _ = pyftpd(args.server_ip, roots["dst"], work, "dst")
        # The first round ran slower on every store tried (the servers' first sessions):
        # a warm-up round in memory, not reported.
        log("warm-up: 200 jobs in memory")
        run_store("warmup", None, a, args, work, jobs=200)
        results = []
        for store in args.stores.split(","):
            if store == "memory":
                url = None
            elif store == "sqlite":
                url = f"sqlite://{work}/state.db"
            elif store == "postgres":
                url = postgres(args.server_ip, work)
            else:
                raise SystemExit(f"bench-state: unknown store {store}")
            log(f"{store}: {args.jobs} jobs")
            results.append(run_store(store, url, a, args, work))
        print(f"\n{args.jobs} jobs queued (1 running, fxp.concurrency 1), then drained with "
              f"fxp.concurrency {args.concurrency}; small files of 10 KB, FXP between two "
              f"pyftpdlib on {args.server_ip}; binary {args.bin}\n")
        print("| store | POST/s | RSS queued | GET ?limit=100 first page (median/p95) "
              "| a page 5,000 in (median/p95) | jobs/s started | RSS after |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r['store']} | {r['post_per_s']:.0f} | {r['rss_queued_mib']:.1f} MiB "
                  f"| {r['list_first_ms'][0]:.1f} / {r['list_first_ms'][1]:.1f} ms "
                  f"| {r['list_deep_ms'][0]:.1f} / {r['list_deep_ms'][1]:.1f} ms "
                  f"| {r['started_per_s']:.0f} | {r['rss_after_mib']:.1f} MiB |")
            if r["not_done"]:
                print(f"  ({r['store']}: {r['not_done']} jobs not done when the last ended: "
                      "transfers a server lost, which the engine's timeout ends)")
    finally:
        for p in reversed(PROCS):
            stop(p, signal.SIGINT if "postgres" in str(p.args[0]) else signal.SIGTERM)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
