"""The DuckDB warehouse: atomic partition writes and reads over sets of partition keys.

No Dagster here. A *box* is one rectangle of partition keys: equal values on some columns
(e.g. ``symbol = 'BTCUSDT'``) and a half-open time range ``[start, end)`` on the time column.
Any set of ``date x symbol`` keys (a range, or a selection with holes) becomes a short list of
boxes: adjacent days of one symbol merge into one box.

Writes are one transaction: check every incoming row falls inside the boxes, ``DELETE``
the boxes' rows, ``INSERT BY NAME`` the frame, and replace the rows of any side tables
(quarantine, file manifests) keyed by the same partitions. A killed or failed write leaves
the previous partition contents whole. Values reach SQL only as registered Arrow tables or
parameters; identifiers are checked against a strict pattern first.

A frame whose columns differ from its table's is refused ("drop or migrate the table"),
except for the columns :data:`ADDED_COLUMNS` lists: a table written before they existed gains
them (null in the rows it keeps) in the same transaction as the write that brings them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from backtest_assets.core.bars import ADDED_COLUMNS as _BAR_COLUMNS_ADDED
from backtest_assets.core.lineage import (
    LINEAGE_SCHEMA,
    LINEAGE_TABLE,
    NO_RECORD,
    LineageSpec,
    LineageWrite,
)

_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Columns a table gained after warehouses were written with it, by table: an older table gains
# them on its next write instead of refusing it (its other rows read null there until rebuilt).
ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("bars_1m", "bars_5m", "bars_15m"), _BAR_COLUMNS_ADDED),
    # issue 20: the lake snapshot a study reads
    "study_record": ("lake_snapshot",),
    # issue 18's venue rules (engine.core.REJECT_REASONS and ORDER_EVENTS; a test keeps this
    # list and the metrics' columns in step)
    "backtest_metrics": ("rejected_leverage_bracket", "rejected_daily_loss",
                         "rejected_max_position", "rejected_max_total", "rejected_max_leverage",
                         "rejected_no_volume", "ledger_residual", "limit_placed",
                         "limit_filled", "limit_expired", "limit_cancelled", "limit_open",
                         "partial_fills", "mark_fallback_bars"),
}
_LOCK_ERROR = "Could not set lock"
# This warehouse's own tables: a DuckLake connection also lists its catalog's tables.
_OWN = "database_name = current_database() AND schema_name = current_schema()"
# DuckDB names the holder: "Conflicting lock is held in /usr/bin/python3 (PID 2563)".
_LOCK_HOLDER = re.compile(r"held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")
# How long a connection waits for another process's lock (seconds; 0 fails at once).
LOCK_TIMEOUT_ENV = "BACKTEST_LOCK_TIMEOUT_S"
LOCK_NOTICE_EVERY_S = 10.0
THREADS_ENV = "BACKTEST_DUCKDB_THREADS"
# Which backend the resources build (``duckdb``: one file; ``ducklake``: see LakeWarehouse).
BACKEND_ENV = "BACKTEST_WAREHOUSE"


class WarehouseError(RuntimeError):
    """A write or read the warehouse refused, naming the table and the offending row."""


def _lock_holder(message: str) -> str:
    """``PID 2563 (python3 -m backtest_assets run ...)`` from DuckDB's lock error: the pid it
    names and that process's command line (from /proc, when it can be read here)."""
    found = _LOCK_HOLDER.search(message)
    if found is None:
        return "another process"
    pid = found["pid"]
    try:
        cmd = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace").replace("\0", " ").split())  # one line, whatever the arguments
    except OSError:
        cmd = found["program"]
    return f"PID {pid} ({cmd[:120]})"


def _thread_config() -> dict[str, int]:
    """DuckDB's thread count from ``BACKTEST_DUCKDB_THREADS`` (default: DuckDB's own, one per
    core it sees): a worker given one core of a shared machine, or a pod with a CPU limit,
    says so here (and to polars with ``POLARS_MAX_THREADS``)."""
    raw = os.environ.get(THREADS_ENV)
    if not raw:
        return {}
    if not raw.isdigit() or int(raw) < 1:
        raise WarehouseError(f"{THREADS_ENV}={raw!r} is not a thread count >= 1")
    return {"threads": int(raw)}


def _lock_timeout_from_env() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "120")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise WarehouseError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds >= 0")
    return value


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ident(name: str) -> str:
    """Return ``name`` quoted for SQL if it is a plain lower-case identifier, else raise."""
    if not _IDENT.fullmatch(name):
        raise WarehouseError(f"invalid SQL identifier {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class Box:
    """A rectangle of partition keys: column equalities and an optional ``[start, end)``."""

    equals: tuple[tuple[str, str], ...] = ()
    start: dt.datetime | None = None
    end: dt.datetime | None = None


@dataclass(frozen=True)
class PartitionLayout:
    """How partition dimensions map onto table columns.

    ``time_dim``/``time_col``: the daily dimension and the timestamp column it bounds.
    ``value_dims``: other dimensions and the column each equals (e.g. symbol -> symbol).
    """

    time_col: str | None = None
    time_dim: str | None = None
    value_dims: Mapping[str, str] = field(default_factory=dict)

    def boxes(self, keys: Iterable[Mapping[str, str]]) -> list[Box]:
        """Merge partition keys (dimension -> value) into as few boxes as possible."""
        days: dict[tuple[tuple[str, str], ...], set[dt.date]] = {}
        for key in keys:
            equals = tuple((col, key[dim]) for dim, col in sorted(self.value_dims.items()))
            day = dt.date.fromisoformat(key[self.time_dim]) if self.time_dim else None
            days.setdefault(equals, set()).add(day)  # type: ignore[arg-type]
        boxes = []
        for equals, ds in sorted(days.items()):
            if self.time_dim is None:
                boxes.append(Box(equals=equals))
                continue
            for first, last in _runs(sorted(ds)):
                start = dt.datetime.combine(first, dt.time())
                end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time())
                boxes.append(Box(equals=equals, start=start, end=end))
        return boxes

    def columns(self) -> list[str]:
        return [*self.value_dims.values(), *([self.time_col] if self.time_col else [])]


def _runs(days: Sequence[dt.date]) -> Iterator[tuple[dt.date, dt.date]]:
    first = prev = days[0]
    for day in days[1:]:
        if day != prev + dt.timedelta(days=1):
            yield first, prev
            first = day
        prev = day
    yield first, prev


@dataclass(frozen=True)
class SideWrite:
    """Rows of a side table replaced in the same transaction, keyed by ``key_cols``.

    ``keys`` holds the key tuples being replaced (so a partition whose new side rows are
    empty still loses its stale ones); ``frame`` holds the new rows.
    """

    table: str
    frame: pl.DataFrame
    keys: pl.DataFrame

    @property
    def key_cols(self) -> list[str]:
        return list(self.keys.columns)


class Warehouse:
    """One DuckDB file; connections are held only for the read or the write itself."""

    def __init__(self, path: Path | str, *, lock_timeout_s: float | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s if lock_timeout_s is not None else \
            _lock_timeout_from_env()
        self.notify = notify or _to_stderr

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file, waiting for another process's lock for up to ``lock_timeout_s``.

        While it waits it says, at once and then every ``LOCK_NOTICE_EVERY_S``, which process
        holds the lock and how long it will still wait (``notify``, stderr by default); when
        the wait is over it raises ``WarehouseError`` naming the holder.
        """
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise WarehouseError(f"warehouse {self.path} does not exist yet: materialize first")
        t0 = time.monotonic()
        delay, next_notice = 0.05, 0.0
        while True:
            try:
                conn = duckdb.connect(str(self.path), read_only=read_only,
                                      config=_thread_config())
                break
            except duckdb.IOException as exc:
                if _LOCK_ERROR not in str(exc):
                    raise
                waited = time.monotonic() - t0
                holder = _lock_holder(str(exc))
                if waited >= self.lock_timeout_s:
                    raise WarehouseError(
                        f"warehouse {self.path} is locked by {holder}: gave up after "
                        f"{waited:.0f} s (stop that process, or set {LOCK_TIMEOUT_ENV} to "
                        "wait longer)") from None
                if waited >= next_notice:
                    left = self.lock_timeout_s - waited
                    self.notify(f"warehouse {self.path} is locked by {holder}: waiting, "
                                f"{left:.0f} s left ({LOCK_TIMEOUT_ENV}=0 fails at once)")
                    next_notice = waited + LOCK_NOTICE_EVERY_S
                time.sleep(min(delay, max(self.lock_timeout_s - waited, 0.0)))
                delay = min(delay * 2, 2.0)
        try:
            # A Python variable must never stand in for a missing table.
            conn.execute("SET python_enable_replacements = false")
            yield conn
        finally:
            conn.close()

    @property
    def location(self) -> str:
        """Where the warehouse is, for messages and metadata."""
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def snapshot(self) -> int | None:
        """The snapshot a read sees now: None, a DuckDB file keeps no history."""
        return None

    def pinned(self, snapshot: int | None) -> Warehouse:
        """This warehouse with its market tables read as they were at ``snapshot``."""
        if snapshot is None:
            return self
        raise WarehouseError(
            f"warehouse {self.location} keeps no snapshots, and the study read snapshot "
            f"{snapshot} of a DuckLake: point the warehouse at that lake "
            f"({BACKEND_ENV}=ducklake)")

    def _source(self, table: str, columns: Collection[str]) -> str:
        """How a read names ``table`` (a pinned lake adds its snapshot)."""
        return ident(table)

    def _transaction(self, conn: duckdb.DuckDBPyConnection, body: Callable[[], None],
                     what: str) -> None:
        """``body`` in one transaction: all of it or, on any error, none of it."""
        conn.begin()
        try:
            body()
            conn.commit()
        except BaseException:
            with contextlib.suppress(duckdb.TransactionException):  # a failed commit ended it
                conn.rollback()
            raise

    # ---- reads -------------------------------------------------------------------------

    def tables(self) -> set[str]:
        if not self.exists():
            return set()
        with self.connect(read_only=True) as conn:
            return _tables(conn)

    def read(
        self,
        table: str,
        layout: PartitionLayout,
        boxes: Sequence[Box] | None = None,
        *,
        order_by: Sequence[str] = (),
    ) -> pl.DataFrame:
        """Rows of ``table`` inside ``boxes`` (all rows when ``boxes`` is None)."""
        order = f" ORDER BY {', '.join(ident(c) for c in order_by)}" if order_by else ""
        with self.connect(read_only=True) as conn:
            cols = _columns(conn, table)
            if not cols:
                raise WarehouseError(
                    f"table {table!r} is not in the warehouse {self.location}: "
                    "materialize it first")
            source = self._source(table, cols)
            if boxes is None:
                return conn.sql(f"SELECT * FROM {source}{order}").pl()  # noqa: S608
            if not boxes:
                return conn.sql(f"SELECT * FROM {source} LIMIT 0").pl()  # noqa: S608
            conn.register("_keys", _boxes_arrow(boxes, layout))
            match = _box_match("t", "k", layout)
            sql = (
                f"SELECT t.* FROM {source} t "  # noqa: S608
                f"WHERE EXISTS (SELECT 1 FROM _keys k WHERE {match}){order}"
            )
            return conn.sql(sql).pl()

    def study_rows(self, table: str, *studies: str) -> pl.DataFrame | None:
        """The rows of ``studies`` in ``table`` (every row when it has no ``study`` column or
        no study is named), filtered in the database; None before the table exists."""
        if not self.exists():
            return None
        with self.connect(read_only=True) as conn:
            cols = _columns(conn, table)
            if not cols:
                return None
            source = self._source(table, cols)
            if "study" not in cols or not studies:
                return conn.sql(f"SELECT * FROM {source}").pl()  # noqa: S608
            marks = ", ".join("?" for _ in studies)
            return conn.execute(f"SELECT * FROM {source} "  # noqa: S608
                                f"WHERE study IN ({marks})", list(studies)).pl()

    # ---- writes ------------------------------------------------------------------------

    def replace(
        self,
        table: str,
        frame: pl.DataFrame,
        layout: PartitionLayout,
        boxes: Sequence[Box] | None,
        *,
        side: Sequence[SideWrite] = (),
        lineage: LineageWrite | None = None,
    ) -> int:
        """Replace the rows of ``boxes`` (the whole table when None) by ``frame``, atomically.

        ``lineage``: record, in the same transaction, what each key was built from
        (``core.lineage``). Returns the number of rows inserted. Raises
        :class:`WarehouseError` (and writes nothing) when a row of ``frame`` falls outside
        ``boxes`` or the columns do not match the existing table.
        """
        ident(table)
        incoming = frame.to_arrow()
        with self.connect() as conn:
            conn.register("_incoming", incoming)
            if boxes is not None:
                conn.register("_keys", _boxes_arrow(boxes, layout))
                self._check_inside(conn, table, layout)

            def write() -> None:
                self._add_columns(conn, table, "_incoming", ADDED_COLUMNS.get(table, ()))
                self._ensure_table(conn, table, "_incoming")
                self._delete(conn, table, layout, boxes)
                self._insert(conn, table, "_incoming")
                for i, sw in enumerate(side):
                    self._replace_side(conn, sw, i)
                if lineage is not None:
                    self._record_lineage(conn, table, lineage)

            self._transaction(conn, write, table)
        return incoming.num_rows

    def replace_side(self, side: SideWrite) -> int:
        """Replace the rows of ``side.keys`` in ``side.table`` by ``side.frame``, on its own.

        For records that must outlive a step that writes nothing else (a rejected file's
        manifest row before the step fails). Returns the number of rows inserted.
        """
        with self.connect() as conn:
            self._transaction(conn, lambda: self._replace_side(conn, side, 0), side.table)
        return side.frame.height

    def lineage_status(self, spec: LineageSpec, keys: Sequence[tuple[dt.date, str]]
                       ) -> pl.DataFrame:
        """Per key of ``spec.asset``: what it was built from (``stored_inputs``,
        ``stored_version``, ``complete``; ``recorded`` false when never built) and what it
        would be built from now (``current_inputs``). See ``core.lineage.classify``."""
        frame = pl.DataFrame({"date": [d for d, _ in keys], "symbol": [s for _, s in keys]},
                             schema={"date": pl.Date, "symbol": pl.String})
        if not self.exists():
            with duckdb.connect() as conn:
                return self._status(conn, spec, frame, have_lineage=False)
        with self.connect(read_only=True) as conn:
            return self._status(conn, spec, frame,
                                have_lineage=LINEAGE_TABLE in _tables(conn))

    def _status(self, conn: duckdb.DuckDBPyConnection, spec: LineageSpec, keys: pl.DataFrame,
                *, have_lineage: bool) -> pl.DataFrame:
        conn.register("_lkeys", keys.to_arrow())
        self._current_inputs(conn, spec, keys, have_lineage=have_lineage)
        stored = (f"SELECT date, symbol, inputs, version, complete "  # noqa: S608
                  f"FROM {ident(LINEAGE_TABLE)} WHERE asset = $asset") if have_lineage else \
            ("SELECT NULL::DATE AS date, NULL::VARCHAR AS symbol, NULL::VARCHAR AS inputs, "
             "NULL::VARCHAR AS version, NULL::BOOLEAN AS complete LIMIT 0")
        return conn.execute(
            f"SELECT k.date, k.symbol, s.inputs AS stored_inputs, "  # noqa: S608
            f"c.inputs AS current_inputs, s.version AS stored_version, "
            f"coalesce(s.complete, false) AS complete, s.date IS NOT NULL AS recorded "
            f"FROM _lkeys k JOIN _current c USING (date, symbol) "
            f"LEFT JOIN ({stored}) s USING (date, symbol) ORDER BY k.symbol, k.date",
            {"asset": spec.asset} if have_lineage else {}).pl()

    def _current_inputs(self, conn: duckdb.DuckDBPyConnection, spec: LineageSpec,
                        keys: pl.DataFrame, *, have_lineage: bool) -> None:
        """Temp view ``_current(date, symbol, inputs)``: each key's upstream keys with their
        data versions as recorded now (``asset@day=hash``, sorted; ``-`` for no record)."""
        needs = spec.needs(keys.iter_rows())
        conn.register("_needs", needs.to_arrow())
        version = f"coalesce(l.data_hash, '{NO_RECORD}')" if have_lineage else f"'{NO_RECORD}'"
        join = (f"LEFT JOIN {ident(LINEAGE_TABLE)} l ON l.asset = n.up_asset "
                "AND l.date = n.up_date AND l.symbol = n.symbol") if have_lineage else ""
        conn.execute(
            "CREATE OR REPLACE TEMP VIEW _current AS "  # noqa: S608
            "SELECT k.date, k.symbol, coalesce(i.inputs, '') AS inputs FROM _lkeys k "
            "LEFT JOIN (SELECT n.date, n.symbol, string_agg(n.up_asset || '@' || "
            f"strftime(n.up_date, '%Y-%m-%d') || '=' || {version}, ',' "
            f"ORDER BY n.up_asset, n.up_date) AS inputs FROM _needs n {join} "
            "GROUP BY n.date, n.symbol) i USING (date, symbol)")

    def _record_lineage(self, conn: duckdb.DuckDBPyConnection, table: str,
                        lineage: LineageWrite) -> None:
        """Replace the lineage rows of the keys just written (inside the write's transaction):
        the hash of each key's rows as they now are in ``table``, and its inputs now."""
        spec = lineage.spec
        keys = pl.DataFrame({"date": [d for d, _ in lineage.keys],
                             "symbol": [s for _, s in lineage.keys]},
                            schema={"date": pl.Date, "symbol": pl.String})
        conn.register("_lkeys", keys.to_arrow())
        conn.register("_lincomplete", pl.DataFrame(
            {"date": [d for d, _ in lineage.incomplete],
             "symbol": [s for _, s in lineage.incomplete]},
            schema={"date": pl.Date, "symbol": pl.String}).to_arrow())
        conn.execute(_create_lineage_sql())
        self._current_inputs(conn, spec, keys, have_lineage=True)
        tc, sc = ident(spec.time_col), ident(spec.symbol_col)
        lt = ident(LINEAGE_TABLE)
        conn.execute(
            f"DELETE FROM {lt} USING _lkeys k WHERE {lt}.asset = $asset "  # noqa: S608
            f"AND {lt}.date = k.date AND {lt}.symbol = k.symbol", {"asset": spec.asset})
        conn.execute(
            f"INSERT INTO {ident(LINEAGE_TABLE)} BY NAME "  # noqa: S608
            "SELECT $asset AS asset, k.date, k.symbol, coalesce(h.n, 0) AS rows, "
            "coalesce(h.data_hash, 'empty') AS data_hash, c.inputs, $version AS version, "
            "NOT EXISTS (SELECT 1 FROM _lincomplete x WHERE x.date = k.date "
            "AND x.symbol = k.symbol) AS complete, $run_id AS run_id, "
            "timezone('UTC', now()) AS built_at FROM _lkeys k JOIN _current c USING (date, symbol) "
            f"LEFT JOIN (SELECT CAST(t.{tc} AS DATE) AS date, t.{sc} AS symbol, "
            "count(*) AS n, left(md5(CAST(sum(hash(t)) AS VARCHAR) || ':' || count(*)), 16) "
            f"AS data_hash FROM {ident(table)} t JOIN _lkeys k2 "
            # an equi-join on the day (a hash join): the same rows as ts in [day, day + 1),
            # which DuckDB plans as a range join, 5-8x slower on a symbol-year's keys
            f"ON t.{sc} = k2.symbol AND CAST(t.{tc} AS DATE) = k2.date "
            "GROUP BY ALL) h USING (date, symbol)",
            {"asset": spec.asset, "version": spec.version, "run_id": lineage.run_id})

    def delete_rows(self, tables: Sequence[str], column: str, value: str) -> dict[str, int]:
        """Delete the rows whose ``column`` equals ``value`` from each of ``tables`` that
        exists, in one transaction; returns the rows deleted per table."""
        out: dict[str, int] = {}
        with self.connect() as conn:
            have = _tables(conn)
            for table in (t for t in tables if t in have):
                cols = _columns(conn, table)
                if column not in cols:
                    raise WarehouseError(
                        f"{table}: no column {column!r} (the table was written by an older "
                        f"version): its rows cannot be chosen by {column}; nothing deleted "
                        f"(drop the table, or make clean, and build it again)")

            def delete() -> None:
                for table in tables:
                    if table in have:
                        (n,) = conn.execute(
                            f"DELETE FROM {ident(table)} WHERE {ident(column)} = ?",  # noqa: S608
                            [value]).fetchone()
                        out[table] = int(n)

            self._transaction(conn, delete, ", ".join(t for t in tables if t in have))
        return out

    def _check_inside(self, conn: duckdb.DuckDBPyConnection, table: str, layout: PartitionLayout
                      ) -> None:
        match = _box_match("i", "k", layout)
        cols = ", ".join(f"i.{ident(c)}" for c in layout.columns())
        bad = conn.execute(
            f"SELECT {cols}, count(*) OVER () FROM _incoming i "  # noqa: S608
            f"WHERE NOT EXISTS (SELECT 1 FROM _keys k WHERE {match}) LIMIT 1"
        ).fetchall()
        if bad:
            *row, n = bad[0]
            shown = ", ".join(f"{c}={v}" for c, v in zip(layout.columns(), row, strict=True))
            raise WarehouseError(
                f"{table}: {n} row(s) fall outside the partitions being written, "
                f"first: {shown}; nothing was written"
            )

    def _ensure_table(self, conn: duckdb.DuckDBPyConnection, table: str, source: str) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {ident(table)} AS "  # noqa: S608
            f"SELECT * FROM {source} LIMIT 0"
        )
        have = conn.execute(
            f"SELECT column_name, data_type FROM duckdb_columns() WHERE {_OWN} "  # noqa: S608
            "AND table_name = ? "
            "ORDER BY column_index", [table]
        ).fetchall()
        described = conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()  # noqa: S608
        want = [tuple(r[:2]) for r in described]
        if sorted(have) != sorted(want):
            have, want = dict(have), dict(want)
            raise WarehouseError(
                f"{table}: columns of the frame {want} differ from the table's {have}; "
                "nothing was written (drop or migrate the table)"
            )

    def _add_columns(self, conn: duckdb.DuckDBPyConnection, table: str, source: str,
                     only: Collection[str] | None = None) -> None:
        """Add to an existing table the (nullable) columns ``source`` has and it lacks: every
        such column of a side table, and of a partitioned table those in ``only``
        (:data:`ADDED_COLUMNS`).

        Side tables (manifests) only ever gain columns, and a warehouse written before a
        column existed keeps its rows, with nulls there.
        """
        have = _columns(conn, table)
        if not have:
            return
        for name, dtype, *_ in conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall():  # noqa: S608
            if name not in have and (only is None or name in only):
                conn.execute(f"ALTER TABLE {ident(table)} ADD COLUMN {ident(name)} {dtype}")

    def _delete(self, conn: duckdb.DuckDBPyConnection, table: str, layout: PartitionLayout,
                boxes: Sequence[Box] | None) -> None:
        if boxes is None:
            conn.execute(f"DELETE FROM {ident(table)}")  # noqa: S608
            return
        match = _box_match(ident(table), "k", layout)
        conn.execute(f"DELETE FROM {ident(table)} USING _keys k WHERE {match}")  # noqa: S608

    def _insert(self, conn: duckdb.DuckDBPyConnection, table: str, source: str) -> None:
        conn.execute(f"INSERT INTO {ident(table)} BY NAME SELECT * FROM {source}")  # noqa: S608

    def _replace_side(self, conn: duckdb.DuckDBPyConnection, sw: SideWrite, i: int) -> None:
        rows, keys = f"_side_rows_{i}", f"_side_keys_{i}"
        conn.register(rows, sw.frame.to_arrow())
        conn.register(keys, sw.keys.unique().to_arrow())
        self._add_columns(conn, sw.table, rows)
        self._ensure_table(conn, sw.table, rows)
        match = " AND ".join(f"{ident(sw.table)}.{ident(c)} = k.{ident(c)}" for c in sw.key_cols)
        conn.execute(f"DELETE FROM {ident(sw.table)} USING {keys} k WHERE {match}")  # noqa: S608
        self._insert(conn, sw.table, rows)


# A DuckLake commit that lost a race to another writer's (the same table's rows, or a table
# both created): DuckDB says "conflict" in these errors.
_CONFLICT = re.compile(r"conflict", re.IGNORECASE)
LAKE_ALIAS = "lake"
_ATTACHED: dict[tuple[int, str, str], duckdb.DuckDBPyConnection] = {}
_ATTACHED_LOCK = threading.Lock()


def extension_directory() -> Path:
    """Where the ``duckdb-ext-*`` packages from PyPI put DuckDB's extensions (DuckDB would
    download them from its own site otherwise, which machines here do not reach)."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        raise WarehouseError("the DuckLake warehouse needs the packages duckdb-ext-ducklake "
                             "and duckdb-ext-postgres (project dependencies: make env)")
    return Path(next(iter(spec.submodule_search_locations))) / "extensions"


def _object_storage(conn: duckdb.DuckDBPyConnection) -> None:
    """Let ``conn`` read and write ``s3://`` paths: DuckDB's httpfs, and an S3 secret from
    the standard AWS variables (an endpoint of its own for a store other than AWS's)."""
    conn.execute("LOAD httpfs")
    env = os.environ
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        raise WarehouseError("a lake in object storage needs AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY (and AWS_REGION; AWS_ENDPOINT_URL for a "
                             "store other than AWS's)")
    parts = [f"KEY_ID {_literal(env['AWS_ACCESS_KEY_ID'])}",
             f"SECRET {_literal(env['AWS_SECRET_ACCESS_KEY'])}",
             f"REGION {_literal(env.get('AWS_REGION') or 'us-east-1')}"]
    endpoint = env.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        parts += [f"ENDPOINT {_literal(host.rstrip('/'))}", "URL_STYLE 'path'",
                  f"USE_SSL {'true' if scheme == 'https' else 'false'}"]
    conn.execute(f"CREATE OR REPLACE SECRET lake_s3 (TYPE s3, {', '.join(parts)})")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class LakeWarehouse(Warehouse):
    """A DuckLake: the catalog in Postgres (``postgres:dbname=lake host=... port=...``; a
    ``.ducklake`` file works for one process), the rows as Parquet files under ``data_path``:
    a directory, or object storage (``s3://bucket/prefix/``, credentials from the
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` and, for a store other
    than AWS's, ``AWS_ENDPOINT_URL`` variables).

    Several processes read and write it at once, each write one transaction (one snapshot).
    A write whose commit loses a race with another's on the same table is rolled back whole
    and run again, up to ``retries`` times, so neither is lost nor half-written; writes of
    different tables do not conflict. :meth:`pinned` reads the market tables (those without
    a ``study`` column) as a snapshot left them: a study re-run after newer data landed reads
    what it read the first time.
    """

    def __init__(self, catalog: str, data_path: Path | str, *, retries: int = 20,
                 notify: Callable[[str], None] | None = None,
                 pinned_at: int | None = None) -> None:
        if not catalog:
            raise WarehouseError("a DuckLake warehouse needs a catalog (BACKTEST_LAKE_CATALOG)")
        self.catalog = catalog
        text = str(data_path)
        self.remote = "://" in text
        # object storage keeps its URL; a directory is made absolute (one lake, any cwd)
        self.data_url = text.rstrip("/") + "/" if self.remote \
            else str(Path(text).resolve()) + "/"
        self.data_path = Path(text) if not self.remote else Path(text.split("://", 1)[1])
        self.path = self.data_path  # messages, and the CLI's summary
        self.retries = retries
        self.notify = notify or _to_stderr
        self.lock_timeout_s = 0.0
        self.pinned_at = pinned_at

    @property
    def location(self) -> str:
        pin = f" at snapshot {self.pinned_at}" if self.pinned_at is not None else ""
        return f"ducklake:{self.catalog} (data {self.data_url}){pin}"

    def exists(self) -> bool:
        return True  # attaching creates an empty lake

    def _attached(self) -> duckdb.DuckDBPyConnection:
        """This process's in-memory DuckDB with the lake attached, made once (loading the
        extensions and attaching take about half a second; a cursor takes microseconds)."""
        key = (os.getpid(), self.catalog, self.data_url)
        with _ATTACHED_LOCK:
            base = _ATTACHED.get(key)
            if base is None:
                if not self.remote:
                    self.data_path.mkdir(parents=True, exist_ok=True)
                base = _ATTACHED[key] = self._attach()
        return base

    def _attach(self) -> duckdb.DuckDBPyConnection:
        data = self.data_url
        for attempt in range(5):
            base = duckdb.connect(config={"extension_directory": str(extension_directory()),
                                          "autoinstall_known_extensions": False,
                                          **_thread_config()})
            try:
                base.execute("LOAD ducklake")
                if self.catalog.startswith("postgres:"):
                    base.execute("LOAD postgres")
                if self.remote:
                    _object_storage(base)
                base.execute(f"ATTACH {_literal('ducklake:' + self.catalog)} AS {LAKE_ALIAS} "
                             f"(DATA_PATH {_literal(data)})")
                return base
            except duckdb.Error as exc:
                base.close()
                # two processes creating a new lake at once: one makes the catalog's tables,
                # the other fails on them and, attaching again, finds them
                if "initialize DuckLake" not in str(exc) or attempt == 4:
                    raise WarehouseError(f"cannot attach the lake {self.location}: "
                                         f"{str(exc).splitlines()[0]}") from None
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of its own (a cursor: its own transactions and registered frames) to
        the attached lake, with the lake as its default database."""
        conn = self._attached().cursor()
        try:
            conn.execute(f"USE {LAKE_ALIAS}")
            conn.execute("SET python_enable_replacements = false")
            yield conn
        finally:
            conn.close()

    def snapshot(self) -> int:
        """The lake's latest snapshot id (every commit makes one)."""
        with self.connect(read_only=True) as conn:
            (sid, *_) = conn.execute(
                f"SELECT * FROM {LAKE_ALIAS}.current_snapshot()").fetchone()  # noqa: S608
        return int(sid)

    def pinned(self, snapshot: int | None) -> LakeWarehouse:
        if snapshot is None:
            return self
        return LakeWarehouse(self.catalog, self.data_url, retries=self.retries,
                             notify=self.notify, pinned_at=int(snapshot))

    def _source(self, table: str, columns: Collection[str]) -> str:
        if self.pinned_at is None or "study" in columns:
            return ident(table)
        return f"(SELECT * FROM {ident(table)} AT (VERSION => {int(self.pinned_at)}))"  # noqa: S608

    def _transaction(self, conn: duckdb.DuckDBPyConnection, body: Callable[[], None],
                     what: str) -> None:
        for attempt in range(self.retries + 1):
            try:
                super()._transaction(conn, body, what)
                return
            except duckdb.Error as exc:
                if not _CONFLICT.search(str(exc)):
                    raise
                if attempt == self.retries:
                    raise WarehouseError(
                        f"{what}: {attempt + 1} commits to {self.location} conflicted with "
                        f"other writers; nothing was written ({str(exc).splitlines()[0]})"
                    ) from None
                time.sleep(min(0.05 * 2 ** attempt, 2.0) * (0.5 + random.random()))


def _create_lineage_sql() -> str:
    types = {pl.String: "VARCHAR", pl.Date: "DATE", pl.Int64: "BIGINT", pl.Boolean: "BOOLEAN",
             pl.Datetime("us"): "TIMESTAMP"}
    cols = ", ".join(f"{ident(n)} {types[t]}" for n, t in LINEAGE_SCHEMA.items())
    return f"CREATE TABLE IF NOT EXISTS {ident(LINEAGE_TABLE)} ({cols})"


def _columns(conn: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    """The column names of ``table`` in this warehouse (empty when it has no such table)."""
    return {r[0] for r in conn.execute(
        f"SELECT column_name FROM duckdb_columns() WHERE {_OWN} AND table_name = ?",  # noqa: S608
        [table]).fetchall()}


def _tables(conn: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in conn.execute(
        f"SELECT table_name FROM duckdb_tables() WHERE {_OWN}").fetchall()}  # noqa: S608


def _boxes_arrow(boxes: Sequence[Box], layout: PartitionLayout) -> pa.Table:
    data: dict[str, list] = {col: [] for col in layout.value_dims.values()}
    for box in boxes:
        for col, value in box.equals:
            data[col].append(value)
    arrays = {col: pa.array(vals, pa.string()) for col, vals in data.items()}
    if layout.time_col:
        arrays["_start"] = pa.array([b.start for b in boxes], pa.timestamp("us"))
        arrays["_end"] = pa.array([b.end for b in boxes], pa.timestamp("us"))
    if not arrays:
        arrays["_all"] = pa.array([True] * len(boxes))
    return pa.table(arrays)


def _box_match(row: str, key: str, layout: PartitionLayout) -> str:
    terms = [f"{row}.{ident(c)} = {key}.{ident(c)}" for c in layout.value_dims.values()]
    if layout.time_col:
        tc = ident(layout.time_col)
        terms += [f"{row}.{tc} >= {key}._start", f"{row}.{tc} < {key}._end"]
    return " AND ".join(terms) or "TRUE"
