"""The DuckLake warehouse on a real Postgres catalog: the file warehouse's guarantees (rows
once, refusals, all-or-nothing writes), writers in several processes at once, and reads
pinned to a snapshot."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from backtest_assets.warehouse import LakeWarehouse, PartitionLayout, WarehouseError
from tests.conftest import REPO
from tests.integration.test_warehouse import LAYOUT, D, frame, keys
from tests.support.postgres import lake_catalog


@pytest.fixture
def lake(postgres_cluster, tmp_path, request) -> LakeWarehouse:
    return LakeWarehouse(lake_catalog(postgres_cluster, request), tmp_path / "lake")


def test_replace_twice_holds_rows_once_refuses_outside_rows_and_writes_parquet(lake):
    lake.replace("t", frame(D), LAYOUT, LAYOUT.boxes(keys(D)))
    sub = [D[2], D[4]]
    for _ in range(2):
        lake.replace("t", frame(sub, value=2.0), LAYOUT, LAYOUT.boxes(keys(sub)))
    rows = lake.read("t", LAYOUT, order_by=["symbol", "ts_open"])
    assert rows.height == 7 * 24 * 2
    assert rows.filter(pl.col("x") == 2.0)["ts_open"].dt.date().unique().sort().to_list() == sub
    with pytest.raises(WarehouseError, match=r"fall outside.*nothing was written"):
        lake.replace("t", frame(D[:2], value=9.0), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    assert lake.read("t", LAYOUT, order_by=["symbol", "ts_open"]).equals(rows)
    assert list(lake.data_path.rglob("*.parquet")), "the rows live in Parquet files"
    assert lake.tables() == {"t"}  # not the catalog's own tables


def test_failure_mid_transaction_leaves_the_lake_as_it_was(lake, monkeypatch):
    lake.replace("t", frame(D[:1]), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    before = lake.snapshot()

    def boom(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(LakeWarehouse, "_insert", boom)  # after the DELETE ran
    with pytest.raises(RuntimeError, match="disk on fire"):
        lake.replace("t", frame(D[:1], value=5.0), LAYOUT, LAYOUT.boxes(keys(D[:1])))
    monkeypatch.undo()
    assert lake.read("t", LAYOUT)["x"].unique().to_list() == [1.0]
    assert lake.snapshot() == before  # no commit


def test_pinned_reads_see_market_tables_at_the_snapshot_and_study_tables_now(lake):
    lake.replace("t", frame(D[:2]), LAYOUT, LAYOUT.boxes(keys(D[:2])))
    study = PartitionLayout(value_dims={"_key": "study"})
    lake.replace("results", pl.DataFrame({"study": ["s"], "v": [1]}), study, None)
    snap = lake.snapshot()
    lake.replace("t", frame(D[:3], value=2.0), LAYOUT, LAYOUT.boxes(keys(D[:3])))
    lake.replace("results", pl.DataFrame({"study": ["s"], "v": [2]}), study, None)
    pinned = lake.pinned(snap)
    then = pinned.read("t", LAYOUT, LAYOUT.boxes(keys(D[:3])))
    assert then.height == 2 * 24 * 2 and then["x"].unique().to_list() == [1.0]
    assert lake.read("t", LAYOUT)["x"].unique().to_list() == [2.0]
    # a table with a study column holds the study's own results: read as they are now
    assert pinned.study_rows("results", "s")["v"].to_list() == [2]
    assert f"at snapshot {snap}" in pinned.location


WRITER = textwrap.dedent("""
    import json, pathlib, sys, time
    sys.path.insert(0, {repo!r})
    from tests.integration.test_warehouse import frame, keys, LAYOUT, D
    from backtest_assets.warehouse import LakeWarehouse, WarehouseError

    catalog, data, symbol, value, retries, gate = sys.argv[1:7]
    gate = pathlib.Path(gate)

    me = f"{{symbol}}-{{value}}"

    class Gated(LakeWarehouse):
        # inside the transaction, after DELETE and INSERT: wait until the other writer is
        # inside its own (or done), so both transactions overlap before either commits
        def _insert(self, conn, table, source):
            super()._insert(conn, table, source)
            (gate / f"{{me}}.inside").touch()
            deadline = time.monotonic() + 60
            while not any(not f.name.startswith(me) for f in gate.iterdir()):
                assert time.monotonic() < deadline, "the other writer never came"
                time.sleep(0.01)

    wh = Gated(catalog, data, retries=int(retries))
    days = D if symbol != "BOTH" else D[:3]
    symbols = [symbol] if symbol != "BOTH" else ["BTCUSDT", "ETHUSDT"]
    try:
        for day in days:
            try:
                wh.replace("t", frame([day], symbols, value=float(value)), LAYOUT,
                           LAYOUT.boxes(keys([day], symbols)))
            finally:
                (gate / f"{{me}}.inside").unlink(missing_ok=True)
        print(json.dumps({{"ok": True}}))
    except WarehouseError as exc:
        print(json.dumps({{"ok": False, "error": str(exc)}}))
    finally:
        (gate / f"{{me}}.done").touch()
""").format(repo=str(REPO))


def _writers(lake, tmp_path, jobs):
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, lake.catalog, str(lake.data_path),
                               symbol, str(value), str(retries), str(gate)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for symbol, value, retries in jobs]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        outs.append(__import__("json").loads(out.strip().splitlines()[-1]))
    return outs


def test_two_processes_writing_different_keys_at_once_lose_and_duplicate_nothing(
        lake, tmp_path):
    """Two writers, BTC and ETH, seven daily transactions each into the same table, each
    transaction held open until the other's is too: every commit lands, rows once."""
    lake.replace("t", frame(D, value=0.0), LAYOUT, LAYOUT.boxes(keys(D)))  # rows to replace
    t0 = time.monotonic()
    outs = _writers(lake, tmp_path, [("BTCUSDT", 1, 20), ("ETHUSDT", 2, 20)])
    assert all(o["ok"] for o in outs), outs
    rows = lake.read("t", LAYOUT)
    assert rows.height == 7 * 24 * 2
    assert rows.select("symbol", "ts_open").is_unique().all()
    assert rows.filter(pl.col("symbol") == "BTCUSDT")["x"].unique().to_list() == [1.0]
    assert rows.filter(pl.col("symbol") == "ETHUSDT")["x"].unique().to_list() == [2.0]
    assert time.monotonic() - t0 < 240


def test_two_processes_writing_the_same_keys_one_fails_cleanly_or_waits(lake, tmp_path):
    """The same keys from two overlapping transactions: without retries exactly one commit
    fails with a clear error and writes nothing; with retries both land, one after the
    other, and the table holds one writer's rows, once."""
    lake.replace("t", frame(D[:3], value=0.0), LAYOUT, LAYOUT.boxes(keys(D[:3])))
    outs = _writers(lake, tmp_path, [("BOTH", 1, 0), ("BOTH", 2, 0)])
    failed = [o for o in outs if not o["ok"]]
    assert len(failed) >= 1 and "conflicted with other writers; nothing was written" in \
        failed[0]["error"], outs
    rows = lake.read("t", LAYOUT)
    assert rows.height == 3 * 24 * 2 and rows.select("symbol", "ts_open").is_unique().all()
    # each day is wholly one writer's (or still the seed's where both lost): never mixed
    per_day = rows.group_by(pl.col("ts_open").dt.date()).agg(pl.col("x").n_unique())
    assert per_day["x"].to_list() == [1, 1, 1]

    (tmp_path / "gate").rename(tmp_path / "gate0")
    outs = _writers(lake, tmp_path, [("BOTH", 3, 20), ("BOTH", 4, 20)])
    assert all(o["ok"] for o in outs), outs
    rows = lake.read("t", LAYOUT)
    assert rows.height == 3 * 24 * 2 and rows.select("symbol", "ts_open").is_unique().all()
    per_day = rows.group_by(pl.col("ts_open").dt.date()).agg(pl.col("x").unique())
    assert all(len(v) == 1 and v[0] in (3.0, 4.0) for v in per_day["x"].to_list())


def test_a_bad_backend_or_missing_catalog_is_named(monkeypatch, tmp_path):
    from backtest_assets.resources.warehouse import make_warehouse

    with pytest.raises(WarehouseError, match="backend 'lakehouse': choose one of duckdb, "
                                             "ducklake"):
        make_warehouse(str(tmp_path), backend="lakehouse")
    monkeypatch.delenv("BACKTEST_LAKE_CATALOG", raising=False)
    with pytest.raises(WarehouseError, match="needs a catalog: set BACKTEST_LAKE_CATALOG"):
        make_warehouse(str(tmp_path), backend="ducklake")
    wh = make_warehouse(str(tmp_path), backend="ducklake", lake_catalog="postgres:dbname=x")
    assert wh.data_path == tmp_path / "lake"


@pytest.fixture
def object_store(tmp_path, monkeypatch):
    """A local S3-compatible store (moto's server) on loopback with one bucket, and the AWS
    variables that point DuckDB at it."""
    import urllib.request

    from backtest_assets.deploy.postgres import free_port, port_in_use

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                               "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not port_in_use(port):
        assert server.poll() is None and time.monotonic() < deadline, "moto_server did not start"
        time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/lake-bucket", method="PUT"))
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    yield endpoint
    server.terminate()
    server.wait(timeout=30)


def test_a_lake_in_object_storage_keeps_its_files_there(postgres_cluster, object_store,
                                                         request):
    """The deployment's layout (deploy/kubernetes): catalog in Postgres, Parquet files in an
    S3 bucket, here a local S3-compatible server."""
    import urllib.request

    lake = LakeWarehouse(lake_catalog(postgres_cluster, request), "s3://lake-bucket/lake/")
    lake.replace("t", frame(D[:2]), LAYOUT, LAYOUT.boxes(keys(D[:2])))
    snap = lake.snapshot()
    lake.replace("t", frame(D[:2], value=3.0), LAYOUT, LAYOUT.boxes(keys(D[:2])))
    assert lake.read("t", LAYOUT)["x"].unique().to_list() == [3.0]
    assert lake.pinned(snap).read("t", LAYOUT)["x"].unique().to_list() == [1.0]
    listing = urllib.request.urlopen(f"{object_store}/lake-bucket?list-type=2").read().decode()
    assert listing.count(".parquet</Key>") >= 2 and "<Key>lake/" in listing
    assert "s3://lake-bucket/lake/" in lake.location
