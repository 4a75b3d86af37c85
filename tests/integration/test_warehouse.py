"""The DuckDB warehouse on disk: atomic partition replaces, refusals, and a killed writer."""

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time

import polars as pl
import pytest

from backtest_assets.warehouse import PartitionLayout, SideWrite, Warehouse, WarehouseError

LAYOUT = PartitionLayout(time_col="ts_open", time_dim="date", value_dims={"symbol": "symbol"})
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def frame(days, symbols=SYMBOLS, value=1.0, freq="1h"):
    start = dt.datetime.combine(days[0], dt.time())
    end = dt.datetime.combine(days[-1], dt.time(23, 59))
    ts = pl.datetime_range(start, end, freq, eager=True, time_unit="us")
    f = pl.DataFrame({"ts_open": ts}).join(pl.DataFrame({"symbol": symbols}), how="cross")
    f = f.filter(pl.col("ts_open").dt.date().is_in(days))
    return f.with_columns(x=pl.lit(value)).select("symbol", "ts_open", "x")


def keys(days, symbols=SYMBOLS):
    return [{"date": d.isoformat(), "symbol": s} for d in days for s in symbols]


D = [dt.date(2024, 1, i) for i in range(1, 8)]


@pytest.fixture
def wh(tmp_path):
    return Warehouse(tmp_path / "w.duckdb", lock_timeout_s=2)


def test_replace_twice_holds_rows_once_and_leaves_other_partitions(wh):
    wh.replace("t", frame(D), LAYOUT, LAYOUT.boxes(keys(D)))
    sub = [D[2], D[4]]  # a selection with a hole: two boxes per symbol
    wh.replace("t", frame(sub, value=2.0), LAYOUT, LAYOUT.boxes(keys(sub)))
    wh.replace("t", frame(sub, value=2.0), LAYOUT, LAYOUT.boxes(keys(sub)))
    all_rows = wh.read("t", LAYOUT)
    assert all_rows.height == 7 * 24 * 2
    assert all_rows.filter(pl.col("x") == 2.0)["ts_open"].dt.date().unique().sort().to_list() \
        == sub
    back = wh.read("t", LAYOUT, LAYOUT.boxes(keys(sub, ["ETHUSDT"])), order_by=["ts_open"])
    assert back.height == 48 and back["symbol"].unique().to_list() == ["ETHUSDT"]
    assert back["ts_open"].is_sorted()


def test_rows_outside_the_keys_are_refused_and_nothing_written(wh):
    wh.replace("t", frame(D[:2]), LAYOUT, LAYOUT.boxes(keys(D[:2])))
    with pytest.raises(WarehouseError, match=r"48 row\(s\) fall outside.*2024-01-02"):
        wh.replace("t", frame(D[:2], value=9.0), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    assert wh.read("t", LAYOUT)["x"].unique().to_list() == [1.0]


def test_column_mismatch_is_refused(wh):
    wh.replace("t", frame(D[:1]), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    with pytest.raises(WarehouseError, match="columns of the frame"):
        wh.replace("t", frame(D[:1]).rename({"x": "y"}), LAYOUT, LAYOUT.boxes(keys(D[:1])))


def test_failure_mid_transaction_rolls_back_data_and_side_tables(wh, monkeypatch):
    side_keys = pl.DataFrame({"asset": ["t"], "symbol": ["BTCUSDT"], "date": [D[0]]})
    side = [SideWrite("q", side_keys.with_columns(reason=pl.lit("old")), side_keys)]
    wh.replace("t", frame(D[:1]), LAYOUT, LAYOUT.boxes(keys(D[:1])), side=side)

    def boom(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Warehouse, "_insert", boom)  # after the DELETE ran
    new_side = [SideWrite("q", side_keys.with_columns(reason=pl.lit("new")), side_keys)]
    with pytest.raises(RuntimeError, match="disk on fire"):
        wh.replace("t", frame(D[:1], value=5.0), LAYOUT, LAYOUT.boxes(keys(D[:1])),
                   side=new_side)
    monkeypatch.undo()
    assert wh.read("t", LAYOUT)["x"].unique().to_list() == [1.0]
    assert wh.read("t", LAYOUT).height == 48
    assert wh.read("q", PartitionLayout())["reason"].to_list() == ["old"]


def test_killed_writer_leaves_previous_partition_whole(wh, tmp_path):
    """SIGKILL a real process after its DELETE, inside the transaction: old rows survive."""
    wh.replace("t", frame(D[:3], freq="1m"), LAYOUT, LAYOUT.boxes(keys(D[:3])))
    before = wh.read("t", LAYOUT, order_by=["symbol", "ts_open"])
    marker = tmp_path / "deleted"
    child = textwrap.dedent(f"""
        import datetime as dt, time, pathlib, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from test_warehouse import frame, keys, LAYOUT, D
        from backtest_assets.warehouse import Warehouse

        class Slow(Warehouse):
            def _insert(self, conn, table, source):
                pathlib.Path({str(marker)!r}).write_text("x")
                time.sleep(60)

        Slow({str(wh.path)!r}).replace("t", frame(D[:3], value=7.0, freq="1m"), LAYOUT,
                                        LAYOUT.boxes(keys(D[:3])))
    """)
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "writer exited before its DELETE"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # The DELETE of 3 days x 2 symbols has run but not committed: kill the writer now.
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    after = wh.read("t", LAYOUT, order_by=["symbol", "ts_open"])
    assert after.equals(before)


def _lock_holder(path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})
        print("locked", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_writer_waits_for_a_lock_saying_who_holds_it_then_fails_clearly(wh):
    wh.replace("t", frame(D[:1]), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    notices: list[str] = []
    waiting = Warehouse(wh.path, lock_timeout_s=2, notify=notices.append)
    holder = _lock_holder(wh.path)
    try:
        t0 = time.monotonic()
        with pytest.raises(WarehouseError) as err:
            waiting.replace("t", frame(D[:1]), LAYOUT, LAYOUT.boxes(keys(D[:1])))
        assert time.monotonic() - t0 >= 1.9  # it waited lock_timeout_s before giving up
        # At once, who holds the lock and how long it will wait; then one line to end on.
        who = f"is locked by PID {holder.pid} ("
        assert len(notices) == 1 and who in notices[0] and "2 s left" in notices[0], notices
        assert "BACKTEST_LOCK_TIMEOUT_S=0 fails at once" in notices[0]
        message = str(err.value)
        assert who in message and "import duckdb" in message  # the holder's command line
        assert "gave up after 2 s" in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert wh.read("t", LAYOUT).height == 48


def test_a_bad_lock_timeout_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKTEST_LOCK_TIMEOUT_S", "soon")
    with pytest.raises(WarehouseError, match="BACKTEST_LOCK_TIMEOUT_S='soon' is not a number"):
        Warehouse(tmp_path / "w.duckdb")


def test_a_lock_timeout_of_0_fails_at_once(wh, monkeypatch):
    wh.replace("t", frame(D[:1]), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    monkeypatch.setenv("BACKTEST_LOCK_TIMEOUT_S", "0")
    fast = Warehouse(wh.path, notify=lambda line: pytest.fail(f"waited: {line}"))
    holder = _lock_holder(wh.path)
    try:
        t0 = time.monotonic()
        with pytest.raises(WarehouseError, match=f"locked by PID {holder.pid}"):
            fast.read("t", LAYOUT)
        assert time.monotonic() - t0 < 1.0
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_identifiers_are_checked_and_values_are_parameters(wh):
    with pytest.raises(WarehouseError, match="invalid SQL identifier"):
        wh.replace("t; DROP TABLE t", frame(D[:1]), LAYOUT, None)
    evil = frame(D[:1], symbols=["BTC'; DROP TABLE t; --"])
    wh.replace("t", evil, LAYOUT, LAYOUT.boxes(keys(D[:1], ["BTC'; DROP TABLE t; --"])))
    assert wh.read("t", LAYOUT)["symbol"].unique().to_list() == ["BTC'; DROP TABLE t; --"]


def test_side_rows_replaced_on_their_own_and_a_new_column_added(wh):
    """A rejected file's manifest row is written without the data table; a manifest written
    before the ``reason`` column existed gains it (nulls for the old rows)."""
    old = pl.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"], "status": ["ok", "ok"]})
    wh.replace_side(SideWrite("files", old, old.select("symbol", "status")))
    rejected = pl.DataFrame({"symbol": ["BTCUSDT"], "status": ["rejected"],
                             "reason": ["ChecksumMismatchError: x"]})
    for _ in range(2):  # the same rejection recorded again replaces its row
        wh.replace_side(SideWrite("files", rejected, rejected.select("symbol", "status")))
    got = wh.read("files", PartitionLayout(), order_by=["symbol", "status"])
    assert got.rows() == [("BTCUSDT", "ok", None),
                          ("BTCUSDT", "rejected", "ChecksumMismatchError: x"),
                          ("ETHUSDT", "ok", None)]
    assert wh.tables() == {"files"}


def test_study_rows_filter_in_the_database_and_say_when_a_table_is_missing(wh):
    assert wh.study_rows("t", "a") is None  # no warehouse file yet
    by_study = PartitionLayout(value_dims={"study": "study"})
    rows = pl.DataFrame({"study": ["a", "b", "c", "a"], "x": [1, 2, 3, 4]})
    for s in ("a", "b", "c"):
        wh.replace("t", rows.filter(pl.col("study") == s), by_study,
                   by_study.boxes([{"study": s}]))
    assert wh.study_rows("missing", "a") is None
    assert sorted(wh.study_rows("t", "a")["x"]) == [1, 4]
    assert sorted(wh.study_rows("t", "a", "c")["x"]) == [1, 3, 4]
    assert wh.study_rows("t").height == 4
    assert wh.study_rows("t", "x' OR 1=1 --").height == 0  # a value, never SQL


def test_deleting_by_a_column_an_old_table_lacks_is_refused_naming_it(wh):
    by_study = PartitionLayout(value_dims={"study": "study"})
    wh.replace("new", pl.DataFrame({"study": ["a"], "x": [1]}), by_study,
               by_study.boxes([{"study": "a"}]))
    wh.replace("old", pl.DataFrame({"x": [1]}), PartitionLayout(), None)
    with pytest.raises(WarehouseError, match=r"old: no column 'study'.*nothing deleted"):
        wh.delete_rows(["new", "old"], "study", "a")
    assert wh.study_rows("new", "a").height == 1  # nothing deleted anywhere
    assert wh.delete_rows(["new", "missing"], "study", "a") == {"new": 1}
