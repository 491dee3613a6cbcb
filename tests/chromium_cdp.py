"""Open a page in headless Chromium over the DevTools protocol (``--remote-debugging-pipe``) and report what a
browser saw: console messages, uncaught exceptions, log entries (failed loads), every URL requested, and the
value of a script evaluated in the page once it has loaded.

The pipe protocol: Chromium reads JSON commands from fd 3 and writes responses and events to fd 4, each
message ended by a NUL byte. No third-party client is needed for the few commands used here.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageReport:
    console: list[dict] = field(default_factory=list)  # Runtime.consoleAPICalled: {"type", "text"}
    exceptions: list[str] = field(default_factory=list)  # Runtime.exceptionThrown
    log: list[dict] = field(default_factory=list)  # Log.entryAdded: {"level", "text", "url"}
    requests: list[str] = field(default_factory=list)  # Network.requestWillBeSent URLs
    failed: list[str] = field(default_factory=list)  # Network.loadingFailed
    value: object = None  # what the evaluated expression returned

    def errors(self) -> list[str]:
        """Everything a reader would call an error in the browser's console."""
        out = [f"console.{c['type']}: {c['text']}" for c in self.console if c["type"] in ("error", "assert")]
        out += [f"exception: {e}" for e in self.exceptions]
        out += [f"log {e['level']}: {e['text']} {e.get('url', '')}".strip() for e in self.log if e["level"] == "error"]
        out += [f"load failed: {u}" for u in self.failed]
        return out


class Chromium:
    """A headless Chromium driven over its DevTools pipe; use as a context manager."""

    def __init__(self, binary: str, timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="report-chromium-")
        cmd_r, self._cmd_w = os.pipe()  # we write commands, Chromium reads them on fd 3
        self._res_r, res_w = os.pipe()  # Chromium writes on fd 4, we read

        def child_fds():
            # move both ends above 4 first, so placing one on fd 3 cannot overwrite the other
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--mute-audio",
                "--disable-extensions", "--disable-background-networking", f"--user-data-dir={self._profile}",
                "about:blank"]
        # stderr to a file: Chromium is chatty there (D-Bus), and a full pipe would stall it
        self._stderr = open(os.path.join(self._profile, "stderr.log"), "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict] = []

    # ----- protocol
    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        return self._id

    def _read_one(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    with open(self._stderr.name, "rb") as f:
                        err = f.read().decode(errors="replace")
                    raise RuntimeError(f"Chromium closed its DevTools pipe: {err[-2000:]}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        mid = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout_s
        while True:
            msg = self._read_one(deadline)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._events.append(msg)

    def _wait_event(self, method: str, session: str, deadline: float) -> None:
        for i, ev in enumerate(self._events):
            if ev.get("method") == method and ev.get("sessionId") == session:
                return
        while True:
            msg = self._read_one(deadline)
            self._events.append(msg)
            if msg.get("method") == method and msg.get("sessionId") == session:
                return

    # ----- what the tests use
    def open(self, url: str, expression: str, settle_s: float = 0.3) -> PageReport:
        """Load ``url`` in a new tab; after its load event (and ``settle_s``), evaluate ``expression``
        (returning JSON-able data) and return what the browser saw."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", session=session)
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self._wait_event("Page.loadEventFired", session, time.monotonic() + self.timeout_s)
        time.sleep(settle_s)
        value = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                               "awaitPromise": True}, session=session)
        rep = PageReport()
        if "exceptionDetails" in value:
            rep.exceptions.append(json.dumps(value["exceptionDetails"])[:500])
        rep.value = value.get("result", {}).get("value")
        for ev in self._events:
            if ev.get("sessionId") != session:
                continue
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
                rep.console.append({"type": p.get("type"), "text": text})
            elif m == "Runtime.exceptionThrown":
                rep.exceptions.append(p.get("exceptionDetails", {}).get("text", "exception"))
            elif m == "Log.entryAdded":
                e = p.get("entry", {})
                rep.log.append({"level": e.get("level"), "text": e.get("text"), "url": e.get("url", "")})
            elif m == "Network.requestWillBeSent":
                rep.requests.append(p.get("request", {}).get("url", ""))
            elif m == "Network.loadingFailed":
                rep.failed.append(f"{p.get('errorText')} ({p.get('requestId')})")
        self.call("Target.closeTarget", {"targetId": target})
        return rep

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.call("Browser.close")
                except (RuntimeError, TimeoutError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            for fd in (self._cmd_w, self._res_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._stderr.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
