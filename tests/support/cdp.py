"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
no port, so nothing to collide with other tests), for pages that must be looked at after a
script ran: evaluate JavaScript in the page, read what the console said, take screenshots,
cut the network.

Messages are JSON, NUL-terminated; Chromium reads commands on fd 3 and writes replies and
events on fd 4 (a shell ``exec`` puts the pipes there).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import subprocess
import time
from pathlib import Path

from tests.conftest import subprocess_env
from tests.support.chromium import FLAGS


class CdpError(RuntimeError):
    pass


class Browser:
    """One Chromium process with one page (a flat session attached to its target).

    ``console`` collects every console message, uncaught exception and log entry of level
    warning or error (``(kind, text)``); ``requests`` every URL the page asked for.
    """

    def __init__(self, chromium: str, tmp: Path, *, width: int = 1280, height: int = 900,
                 offline: bool = True):
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        profile = tmp / f"cdp-profile-{len(list(tmp.glob('cdp-profile-*')))}"
        args = [chromium, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", "about:blank"]
        shell = f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w}'
        self.proc = subprocess.Popen(["bash", "-c", shell, "chromium", *args],
                                     pass_fds=(to_chrome_r, from_chrome_w),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=subprocess_env(HOME=str(tmp)))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.send("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            if offline:
                self.send("Network.emulateNetworkConditions", offline=True, latency=0,
                          downloadThroughput=-1, uploadThroughput=-1)
        except Exception:
            self.close()
            raise

    # ---- protocol ---------------------------------------------------------------------------
    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise CdpError(f"no message from chromium in {timeout} s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CdpError("chromium closed the pipe: "
                               + (self.proc.stderr.read() or b"").decode()[-2000:])
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _event(self, msg: dict) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            self.console.append((f"console.{p['type']}", text))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.console.append(("exception", d.get("exception", {}).get("description")
                                 or d.get("text", "")))
        elif method == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            self.console.append((f"log.{p['entry']['level']}", p["entry"]["text"]))
        elif method == "Network.requestWillBeSent":
            self.requests.append(p["request"]["url"])

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def pump(self, seconds: float) -> None:
        """Handle events for ``seconds`` (console messages arriving after a command)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._event(self._read(left))
            except CdpError:
                return

    # ---- page ----------------------------------------------------------------------------------
    def open(self, url: str, timeout: float = 60) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=timeout)

    def eval(self, expression: str, timeout: float = 60):
        """The value of ``expression`` (awaited when it is a promise), JSON-serializable."""
        out = self.send("Runtime.evaluate", timeout=timeout, expression=expression,
                        returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            d = out["exceptionDetails"]
            raise CdpError(d.get("exception", {}).get("description") or d.get("text"))
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.eval(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                raise CdpError(f"{expression} still false after {timeout} s")
            self.pump(0.05)

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params = {"format": "png"}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, "
                             "document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.send("Page.captureScreenshot", **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(OSError):  # chromium exits when its command pipe closes
            os.close(self._to_chrome)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._from_chrome)
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
