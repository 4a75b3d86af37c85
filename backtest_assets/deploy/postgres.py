"""A PostgreSQL cluster on this machine, on loopback only: for the Dagster instance of real work
(and, later, a lake catalog) where no managed database is at hand, and for the tests.

``LocalPostgres(directory, port).start()`` creates the cluster on first use (``initdb``, trust
authentication, listening on 127.0.0.1 and a socket in the directory), starts it and creates
the database; ``stop()`` shuts it down fast. Debian's ``postgresql`` package provides the
programs (``/usr/lib/postgresql/<major>/bin``). PostgreSQL refuses to run as root: as root, the
cluster belongs to the ``postgres`` user the package creates, and its programs run as that user.

No Dagster import here: the CLI, ``make`` and the tests share it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SERVICE_USER = "postgres"


class PostgresError(RuntimeError):
    """A cluster could not be created, started or reached (the message says which and why)."""


def postgres_bin(name: str) -> str:
    """Path of PostgreSQL program ``name``: on PATH, else the newest Debian major version's."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]))
    if not candidates:
        raise PostgresError(f"{name} not found: install Debian's postgresql package "
                            "(apt-get install postgresql)")
    return candidates[-1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


@dataclass
class LocalPostgres:
    """One cluster in ``directory`` (data in ``directory/data``, socket and log beside it)."""

    directory: Path
    port: int = 5433
    database: str = "dagster"
    user: str = SERVICE_USER
    # tests: no fsync (a crash may lose the cluster, which holds nothing to keep)
    disposable: bool = False

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    def url(self, database: str | None = None) -> str:
        """SQLAlchemy URL (psycopg2 driver, as dagster-postgres needs with SQLAlchemy 2.1)."""
        return (f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/"
                f"{database or self.database}")

    def lake_catalog(self, database: str = "lake") -> str:
        """The catalog string of a DuckLake whose metadata live in ``database`` here."""
        return f"postgres:dbname={database} host=127.0.0.1 port={self.port} user={self.user}"

    # ------------------------------------------------------------------ processes

    def _as_owner(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program as the cluster's owner (``postgres`` when we are root)."""
        kwargs: dict = {}
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam(SERVICE_USER)
            except KeyError as exc:
                raise PostgresError(f"running as root and no user {SERVICE_USER!r}: install "
                                    "Debian's postgresql package, or run as another user") \
                    from exc
            kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        proc = subprocess.run(args, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"},
                              **kwargs)
        if check and proc.returncode != 0:
            raise PostgresError(f"{Path(args[0]).name} failed ({proc.returncode}): "
                                f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def _own_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SERVICE_USER)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.directory.chmod(0o700)

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").is_file():
            return False
        status = self._as_owner(postgres_bin("pg_ctl"), "-D", str(self.data), "status",
                                check=False)
        return status.returncode == 0

    def start(self) -> LocalPostgres:
        """Create the cluster if it is new, start it unless it runs, create the database."""
        if not (self.data / "PG_VERSION").is_file():
            self._own_directory()
            self._as_owner(postgres_bin("initdb"), "-D", str(self.data), "-A", "trust",
                           "-U", self.user, "-E", "UTF8", "--no-instructions")
        if not self.running():
            if port_in_use(self.port):
                raise PostgresError(f"port {self.port} on 127.0.0.1 is taken by another "
                                    "program: choose another port")
            options = (f"-k {self.directory} -h 127.0.0.1 -p {self.port} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                       if self.disposable else
                       f"-k {self.directory} -h 127.0.0.1 -p {self.port}")
            self._as_owner(postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                           "-o", options, "-w", "-t", "60", "start")
        self.create_database(self.database)
        return self

    def stop(self) -> None:
        if self.running():
            self._as_owner(postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                           "-t", "60", "stop")

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = self._as_owner(postgres_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port),
                             "-U", self.user, "-d", database, "-v", "ON_ERROR_STOP=1",
                             "-XAtc", sql)
        return out.stdout.strip()

    def create_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; its URL."""
        if not name.replace("_", "").isalnum():
            raise PostgresError(f"database name {name!r}: letters, digits and _ only")
        deadline = time.monotonic() + 30
        while True:  # the server may still be finishing its start
            try:
                exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")  # noqa: S608 (name checked above)
                break
            except PostgresError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)
