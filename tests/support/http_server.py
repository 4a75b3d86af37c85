"""A local stand-in for data.binance.vision and the Binance REST API, for tests.

``ArchiveServer(root)`` serves the files under ``root`` on 127.0.0.1 (ephemeral port) from a
daemon thread, logs every request, and can inject faults::

    with ArchiveServer(root) as server:
        server.fail("BTCUSDT-1m-2022-05-06.zip", 503, times=2)
        server.override("/data/.../x.zip", tampered_bytes)
        server.json("/fapi/v1/klines", lambda query: rows_for(query))
        source = BinanceSource(base_url=server.base_url, ...)
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

JsonResponder = Callable[[dict[str, str]], object] | Mapping[str, object]


@dataclass(frozen=True)
class LoggedRequest:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class _Fault:
    suffix: str
    status: int
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)


class ArchiveServer:
    """Serve ``root`` (laid out like the archive's URL paths) over HTTP on 127.0.0.1.

    Answers, in this order: an injected fault (:meth:`fail`), an override (:meth:`override`),
    a JSON route (:meth:`json`), then the file under ``root``; anything else is 404.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root.resolve() if root is not None else None
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        self._overrides: dict[str, tuple[int, bytes]] = {}
        self._routes: dict[str, JsonResponder] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------- lifecycle

    def start(self) -> ArchiveServer:
        """Bind an ephemeral port and serve from a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler, owner=self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = self._thread = None

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("ArchiveServer is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ configuration

    def fail(
        self,
        path_suffix: str,
        status: int,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests to paths ending in ``path_suffix`` with ``status``."""
        with self._lock:
            self._faults.append(_Fault(path_suffix, status, times, dict(headers or {})))

    def override(self, path: str, data: bytes, *, status: int = 200) -> None:
        """Serve ``data`` for exactly ``path`` instead of the file under ``root``."""
        with self._lock:
            self._overrides[path] = (status, data)

    def json(self, path: str, responder: JsonResponder) -> None:
        """Serve JSON at ``path``.

        ``responder`` is either a callable taking the query (``{name: value}``) and
        returning a JSON-serialisable object, or a mapping from the raw query string
        (as sent, after ``?``) to such an object (unknown queries are 404).
        """
        with self._lock:
            self._routes[path] = responder

    def clear_faults(self) -> None:
        """Lift every injected fault, used up or not."""
        with self._lock:
            self._faults.clear()

    # ---------------------------------------------------------------------- inspection

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request answered so far, oldest first."""
        with self._lock:
            return list(self._log)

    def paths(self, suffix: str = "") -> list[str]:
        """Paths of the requests answered so far that end with ``suffix``."""
        return [r.path for r in self.requests if r.path.endswith(suffix)]

    def clear_log(self) -> None:
        """Forget the requests answered so far."""
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------------ serving

    def _answer(self, path: str, raw_query: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and path.endswith(fault.suffix):
                    fault.remaining -= 1
                    return fault.status, dict(fault.headers), b"injected fault"
            override = self._overrides.get(path)
            route = self._routes.get(path)
        if override is not None:
            return override[0], {}, override[1]
        if route is not None:
            return self._json_answer(route, raw_query)
        return self._file_answer(path)

    @staticmethod
    def _json_answer(route: JsonResponder, raw_query: str) -> tuple[int, dict[str, str], bytes]:
        if callable(route):
            query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
            payload = route(query)
        elif raw_query in route:
            payload = route[raw_query]
        else:
            return 404, {}, b"no such query"
        return 200, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _file_answer(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if self.root is None:
            return 404, {}, b"not found"
        target = (self.root / urllib.parse.unquote(path).lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return 404, {}, b"not found"
        return 200, {}, target.read_bytes()

    def _record(self, method: str, path: str, raw_query: str, status: int) -> None:
        query = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        with self._lock:
            self._log.append(LoggedRequest(method, path, query, status))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        owner: ArchiveServer,
    ) -> None:
        super().__init__(address, handler)
        self.owner = owner


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        status, headers, body = self.server.owner._answer(split.path, split.query)
        self.server.owner._record("GET", split.path, split.query, status)
        self.send_response(status)
        headers.setdefault("Content-Type", "application/octet-stream")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: tests read the request log instead of stderr."""
