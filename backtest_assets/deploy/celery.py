"""Steps on a distributed executor, tested on one machine: a Redis broker on loopback and
Celery workers that run Dagster's steps (``dagster-celery``).

``LocalRedis(directory, port).start()`` runs Debian's ``redis-server`` on 127.0.0.1 without
persistence (a broker's queue, nothing to keep); ``stop()`` shuts it down. ``Workers`` starts
worker processes (``celery -A dagster_celery.app worker``), one task at a time each, named
``w1@host``, ``w2@host``...; each runs a step in its own process, importing the code location
once and keeping it (restart them after a code change). Every worker needs the environment
the step's run needs: the instance (``DAGSTER_HOME``, ``DAGSTER_PG_URL``) and the warehouse
(``BACKTEST_WAREHOUSE=ducklake``, ``BACKTEST_LAKE_CATALOG``, ``BACKTEST_DATA_ROOT``), which
``Workers`` passes on from its own.

No Dagster import here: the CLI and the tests share it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from backtest_assets.deploy.postgres import port_in_use

# The executor the jobs use (jobs.py): in_process (default) or celery, and its broker.
EXECUTOR_ENV = "BACKTEST_EXECUTOR"
BROKER_ENV = "BACKTEST_CELERY_BROKER"
BACKEND_ENV = "BACKTEST_CELERY_BACKEND"
QUEUE = "dagster"  # dagster-celery's default queue


class CeleryError(RuntimeError):
    """The broker or a worker could not be started or reached (the message says which)."""


def redis_server() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise CeleryError("redis-server not found: install Debian's redis-server package "
                          "(apt-get install redis-server)")
    return found


def broker_from_env() -> tuple[str, str]:
    """(broker, result backend) from the environment; the backend defaults to the broker's
    Redis, database 1."""
    broker = os.environ.get(BROKER_ENV)
    if not broker:
        raise CeleryError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV}, e.g. "
                          "redis://127.0.0.1:6390/0 (python -m backtest_assets celery up)")
    backend = os.environ.get(BACKEND_ENV) or broker.rsplit("/", 1)[0] + "/1"
    return broker, backend


@dataclass
class LocalRedis:
    """One ``redis-server`` on 127.0.0.1:``port``, its pid and log in ``directory``."""

    directory: Path
    port: int = 6390

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def running(self) -> bool:
        return _alive(self.pidfile) and port_in_use(self.port)

    def start(self) -> LocalRedis:
        if self.running():
            return self
        if port_in_use(self.port):
            raise CeleryError(f"port {self.port} on 127.0.0.1 is taken by another program: "
                              "choose another port")
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run([redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--daemonize", "yes",
                        "--pidfile", str(self.pidfile), "--dir", str(self.directory),
                        "--logfile", str(self.directory / "redis.log")],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        _wait(lambda: self.running(), 20, f"redis-server on port {self.port} did not start "
              f"(log {self.directory / 'redis.log'})")
        return self

    def stop(self) -> None:
        _terminate(self.pidfile)


@dataclass
class Workers:
    """``count`` Celery worker processes for ``broker``, logs and pids in ``directory``."""

    directory: Path
    broker: str
    backend: str
    count: int = 2
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()

    @property
    def names(self) -> list[str]:
        return [f"w{i}@{socket.gethostname()}" for i in range(1, self.count + 1)]

    def _files(self, i: int) -> tuple[Path, Path]:
        """Worker ``i``'s pid file and log."""
        return self.directory / f"w{i}.pid", self.directory / f"w{i}.log"

    def _config_module(self) -> Path:
        """dagster-celery's app reads its settings from a module ``dagster_celery_config``."""
        conf = self.directory / "config"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "dagster_celery_config.py").write_text(
            f"broker_url = {self.broker!r}\nresult_backend = {self.backend!r}\n"
            "worker_prefetch_multiplier = 1\n")
        return conf

    def start(self, timeout_s: float = 120) -> Workers:
        conf = self._config_module()
        celery = Path(sys.executable).with_name("celery")
        env = {**os.environ, **self.env,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(conf),
                                                           os.environ.get("PYTHONPATH")]))}
        for i, name in enumerate(self.names, start=1):
            pidfile, log = self._files(i)
            if _alive(pidfile):
                continue
            # a new log: the wait below reads it for this start's "ready", not an old one's
            log.unlink(missing_ok=True)
            subprocess.run([str(celery), "-A", "dagster_celery.app", "worker", "-n", name,
                            "-Q", QUEUE, "--concurrency", "1", "--prefetch-multiplier", "1",
                            "--loglevel", "INFO", "--detach", f"--pidfile={pidfile}",
                            f"--logfile={log}"],
                           env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
        ready = [self._files(i)[1] for i in range(1, self.count + 1)]
        _wait(lambda: all(p.is_file() and " ready." in p.read_text(errors="replace")
                          for p in ready), timeout_s,
              f"the workers did not come up (logs in {self.directory})")
        return self

    def alive(self) -> list[str]:
        return [name for i, name in enumerate(self.names, start=1)
                if _alive(self._files(i)[0])]

    def stop(self) -> None:
        for i in range(1, self.count + 1):
            _terminate(self._files(i)[0])


def _alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _terminate(pidfile: Path, timeout_s: float = 30) -> None:
    """SIGTERM the process of ``pidfile`` (a Celery worker finishes its task, then exits)
    and wait for it; SIGKILL after ``timeout_s``."""
    if not _alive(pidfile):
        return
    pid = int(pidfile.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _wait(ready, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise CeleryError(message)
        time.sleep(0.1)
