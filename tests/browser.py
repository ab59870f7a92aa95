"""Open a page in a real headless Chromium and record what it did: DOM, requests, console, screenshot.

The browser is driven over the DevTools protocol through `--remote-debugging-pipe`: the child reads JSON
commands on fd 3 and writes JSON replies and events on fd 4, each message terminated by a NUL byte, so no
websocket library is needed. Only the events of the page's own sessions are recorded (the page target and
any frame or worker it starts, attached automatically), never the browser's own background traffic.

    page = open_page(tmp_path / "report.html", screenshot=tmp_path / "report.png")
    assert external_requests(page) == []
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]
QUIET_S = 0.3  # after the load event: wait until no request has been pending for this long


@dataclass
class Page:
    url: str
    dom: str = ""
    requests: list[str] = field(default_factory=list)  # every URL the page requested, its own document first
    failed: list[str] = field(default_factory=list)  # URLs of Network.loadingFailed
    console: list[str] = field(default_factory=list)  # console calls, exceptions and Log entries (CSP reports)
    screenshot: Path | None = None
    values: dict = field(default_factory=dict)  # the results of open_page's ``evaluate`` expressions


def external_requests(page: Page) -> list[str]:
    """The requests other than the page's own file:// document and data: URLs."""
    return [u for u in page.requests if u != page.url and not u.startswith("data:")]


class _Browser:
    """A Chromium child process and the protocol pipe to it."""

    def __init__(self, width: int, height: int, timeout: float):
        if not os.path.exists(CHROMIUM):
            raise RuntimeError(f"Chromium is not installed ({CHROMIUM} is missing): run `make chromium`")
        self.deadline = time.monotonic() + timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="frugalml-chromium-"))
        self.stderr = open(self.tmp / "stderr.log", "wb")
        self.next_id, self.buf, self.handlers = 0, b"", []
        self.waiting_for = lambda: ""  # said in the timeout error
        cmd_r, self.cmd_w = os.pipe()  # we write commands, the child reads them on fd 3
        self.msg_r, msg_w = os.pipe()  # the child writes messages on fd 4, we read them

        def child_fds():  # in the child, before exec: dup away from 3 and 4 first so no dup2 clobbers its source
            a, b = os.dup(cmd_r), os.dup(msg_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [CHROMIUM, *FLAGS, f"--user-data-dir={self.tmp / 'profile'}", f"--window-size={width},{height}",
                "--remote-debugging-pipe", "about:blank"]
        try:
            # fds 3 and 4 are open here (os.pipe took the lowest free ones), so pass_fds may keep them
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
                                         pass_fds=(3, 4), preexec_fn=child_fds, start_new_session=True)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(cmd_r)
            os.close(msg_w)

    def fail(self, why: str) -> RuntimeError:
        self.stderr.flush()
        tail = (self.tmp / "stderr.log").read_bytes()[-3000:].decode(errors="replace")
        return RuntimeError(f"Chromium ({CHROMIUM}): {why}\n--- chromium stderr (tail) ---\n{tail}")

    def _read(self) -> dict | None:
        """Next message, or None after a short wait with nothing to read."""
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise self.fail(f"timed out {self.waiting_for()}")
            if not select.select([self.msg_r], [], [], min(left, 0.05))[0]:
                return None
            chunk = os.read(self.msg_r, 1 << 20)
            if not chunk:
                raise self.fail(f"the browser closed its pipe (exit status {self.proc.poll()})")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def pump(self) -> dict | None:
        """Read one message, hand it to the event handlers if it is an event; None if none came."""
        msg = self._read()
        if msg is not None and "method" in msg:
            for handle in self.handlers:
                handle(msg)
        return msg

    def send(self, method: str, session: str | None = None, wait: bool = True, check: bool = True,
             **params) -> dict:
        """Send a command; wait for its reply unless told not to. check=False: an error reply gives {}."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while wait:
            reply = self.pump()
            if reply is not None and reply.get("id") == self.next_id:
                if "error" in reply and check:
                    raise self.fail(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
        return {}

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                self.send("Browser.close", wait=False)
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if proc.poll() is None:  # still not reaped, so its group id is its own: kill renderers and all
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for fd in (self.cmd_w, self.msg_r):
            os.close(fd)
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def open_page(path_or_url: str | Path, screenshot: Path | None = None, width: int = 1280, height: int = 900,
              timeout: float = 60, media: str | None = None, evaluate: dict[str, str] | None = None) -> Page:
    """Load a file (or URL) in headless Chromium; return its DOM, requests, console and an optional full-page PNG.
    ``media``: emulate a CSS media type ("print"); ``evaluate``: name -> JavaScript expression, each evaluated
    once the page has loaded, its value in ``page.values[name]``."""
    url = str(path_or_url)
    if "://" not in url and not url.startswith(("about:", "data:")):
        url = Path(url).resolve().as_uri()
    page = Page(url=url)
    browser = _Browser(width, height, timeout)
    sessions: set[str] = set()
    pending: set[str] = set()
    urls: dict[str, str] = {}  # requestId -> URL
    main = ""  # the page's session
    state = {"loaded": False, "quiet_since": time.monotonic(), "new": []}

    def on_event(msg: dict) -> None:
        if msg.get("sessionId") not in sessions:
            return  # the browser's own targets and traffic
        method, p = msg["method"], msg.get("params", {})
        if method == "Network.requestWillBeSent":
            page.requests.append(p["request"]["url"])
            urls[p["requestId"]] = p["request"]["url"]
            pending.add(p["requestId"])
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            pending.discard(p["requestId"])
            if not pending:
                state["quiet_since"] = time.monotonic()
            if method == "Network.loadingFailed":
                page.failed.append(urls.get(p["requestId"], p["requestId"]))
        elif method == "Page.loadEventFired" and msg["sessionId"] == main:
            state["loaded"], state["quiet_since"] = True, time.monotonic()
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", a.get("type")))) for a in p.get("args", []))
            page.console.append(f"console.{p['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            page.console.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded":
            e = p["entry"]
            page.console.append(f"log.{e['level']} ({e['source']}): {e['text']}")
        elif method == "Target.attachedToTarget":  # an iframe or worker of the page: watch it too
            sessions.add(p["sessionId"])
            state["new"].append(p["sessionId"])

    browser.handlers.append(on_event)

    def watch(session: str, domains: tuple[str, ...], check: bool) -> None:
        # Without auto-attach a cross-site iframe (its own process) or a worker is invisible, and the wait for
        # its pending document request never ends. Paused at start, so that no request of it is missed.
        for domain in domains:
            browser.send(f"{domain}.enable", session, check=check)
        browser.send("Target.setAutoAttach", session, check=check, autoAttach=True, waitForDebuggerOnStart=True,
                     flatten=True)
        browser.send("Runtime.runIfWaitingForDebugger", session, check=check)

    def watch_new() -> None:  # a child target may be gone already, or lack a domain (a worker has no Page)
        while state["new"]:
            watch(state["new"].pop(), ("Network", "Runtime", "Log"), check=False)

    try:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        main = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        sessions.add(main)
        watch(main, ("Network", "Page", "Runtime", "Log"), check=True)
        # --window-size sizes the window; the page's viewport would be 87 px shorter (the headless window's chrome)
        browser.send("Emulation.setDeviceMetricsOverride", main, width=width, height=height, deviceScaleFactor=1,
                     mobile=False)
        if media:
            browser.send("Emulation.setEmulatedMedia", main, media=media)
        browser.waiting_for = lambda: (f"waiting for {url}: load event {'fired' if state['loaded'] else 'not yet'}"
                                       f", requests pending: {sorted(urls[r] for r in pending)}")
        nav = browser.send("Page.navigate", main, url=url)
        if nav.get("errorText"):
            raise browser.fail(f"could not open {url}: {nav['errorText']}")
        while not (state["loaded"] and not pending and time.monotonic() - state["quiet_since"] >= QUIET_S):
            watch_new()
            browser.pump()
        watch_new()
        browser.waiting_for = lambda: "after the page loaded"
        page.dom = browser.send("Runtime.evaluate", main, expression="document.documentElement.outerHTML",
                                returnByValue=True)["result"]["value"]
        for name, expression in (evaluate or {}).items():
            page.values[name] = browser.send("Runtime.evaluate", main, expression=expression,
                                             returnByValue=True)["result"].get("value")
        if screenshot is not None:
            size = browser.send("Page.getLayoutMetrics", main)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            shot = browser.send("Page.captureScreenshot", main, format="png", captureBeyondViewport=True, clip=clip)
            screenshot = Path(screenshot)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            page.screenshot = screenshot
    finally:
        browser.close()
    return page
