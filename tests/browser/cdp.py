#!/usr/bin/env python3
"""Drives headless Chromium for the console test over the DevTools protocol.

    cdp.py URL        (then one command per line on stdin, one JSON answer per line)

Commands: `eval JS` (the expression's value, awaited if it is a promise),
`screenshot PATH` (a PNG of the page), `quit`. The first line printed is
{"pid": N}: Chromium's pid, for the caller to kill should this script die first.
Chromium is started with its own profile in a temporary directory and stopped on quit,
on end of input and on any error.
"""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # python3-websocket


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    url = sys.argv[1]
    profile = tempfile.mkdtemp(prefix="fxprelay-chromium-")
    browser = subprocess.Popen(
        [
            shutil.which("chromium") or "chromium",
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            url,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        say({"pid": browser.pid})
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = browser.stderr.readline()
            if not line:
                break
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise RuntimeError("chromium did not open its DevTools port")
        page = None
        while page is None and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                targets = json.load(r)
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page is None:
                time.sleep(0.1)
        ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        ids = iter(range(1, 1 << 30))

        def call(method, **params):
            mid = next(ids)
            ws.send(json.dumps({"id": mid, "method": method, "params": params}))
            while True:
                msg = json.loads(ws.recv())
                if msg.get("id") == mid:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg.get("result", {})

        for line in sys.stdin:
            command, _, arg = line.rstrip("\n").partition(" ")
            if command == "eval":
                r = call("Runtime.evaluate", expression=arg, returnByValue=True, awaitPromise=True)
                if "exceptionDetails" in r:
                    say({"error": r["exceptionDetails"].get("text", "exception"),
                         "detail": r["exceptionDetails"].get("exception", {}).get("description")})
                else:
                    say({"value": r.get("result", {}).get("value")})
            elif command == "screenshot":
                r = call("Page.captureScreenshot", format="png")
                with open(arg, "wb") as f:
                    f.write(base64.b64decode(r["data"]))
                say({"value": arg})
            elif command == "quit":
                break
            else:
                say({"error": f"unknown command {command}"})
    finally:
        try:
            os.killpg(browser.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
