"""Schedules, sensors and automation conditions, ticked with Dagster's test APIs on a real
instance: the right run requests for a given time and cursor, nothing new on a repeated tick,
and the requests run."""

import datetime as dt
import json
import os
import socket
import subprocess

import dagster as dg
import pytest

from backtest_assets import recovery
from backtest_assets.cli import Runner
from backtest_assets.core.schedule import keys_of_tags, range_tags, rectangles
from backtest_assets.definitions import defs
from backtest_assets.defs import automation
from backtest_assets.partitions import (
    BLUEPRINT_PARTITIONS,
    REGISTRY,
    SYMBOL_PARTITIONS,
    daily_partitions_def,
    register_listed_symbols,
    registered_symbols,
    universe_listings,
)
from backtest_assets.resources import MarketSourceResource, SpecRegistryResource, WarehouseResource
from tests.support.archive import daily_klines_path, write_zip
from tests.support.http_server import ArchiveServer

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START, END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture
def instance(tmp_path):
    """A fresh instance with the spec's three listed symbols as its symbol partitions (as
    with the binance source, which serves no generated symbol): these tests are about the
    schedule's and sensors' mechanics; the generated cross-section has its own below."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        assert register_listed_symbols(inst, source="binance") == SYMBOLS
        yield inst


def mark_ingested(instance, day: dt.date, symbol: str) -> None:
    """Record (runless) that every ingest asset holds (day, symbol)."""
    for name in automation.INGEST_ASSETS:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            name, partition=dg.MultiPartitionKey({"date": day.isoformat(), "symbol": symbol})))


def requests_of(result) -> list[dg.RunRequest]:
    if isinstance(result, dg.SkipReason):
        return []
    if isinstance(result, dg.SensorResult):
        return list(result.run_requests or [])
    return list(result)


# ------------------------------------------------------------------ daily ingest schedule

def tick_schedule(instance, when: dt.datetime):
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=when)
    return automation.daily_ingest_schedule.evaluate_tick(context)


def test_schedule_requests_yesterday_as_one_range_run_and_nothing_once_ingested(
        instance, data_root):
    assert automation.daily_ingest_schedule.cron_schedule == "0 3 * * *"
    assert automation.daily_ingest_schedule.execution_timezone == "UTC"
    when = dt.datetime(2024, 1, 5, 3, 0, tzinfo=dt.UTC)
    (req,) = tick_schedule(instance, when).run_requests
    assert req.job_name == "market_data_job"
    assert {k: req.tags[k] for k in (START, END)} == range_tags(
        dt.date(2024, 1, 4), dt.date(2024, 1, 4), SYMBOLS)
    assert req.run_key == "ingest 2024-01-04 x BTCUSDT,ETHUSDT,SOLUSDT"
    # the request runs as it is: one run, three keys
    runner = Runner(instance, quiet=True)
    assert runner.execute("market_data_job", "scheduled", tags=dict(req.tags))
    for name in automation.INGEST_ASSETS:
        assert {str(k) for k in instance.get_materialized_partitions(dg.AssetKey(name))} == {
            f"2024-01-04|{s}" for s in SYMBOLS}
    # repeated tick: nothing new
    again = tick_schedule(instance, when)
    assert again.run_requests == []
    assert "already ingested" in again.skip_message


def test_schedule_leaves_out_ingested_and_running_keys(instance):
    mark_ingested(instance, dt.date(2024, 3, 1), "BTCUSDT")
    # a run not yet started that already covers SOLUSDT that day counts as pending
    instance.create_run_for_job(
        defs.resolve_job_def("market_data_job"), status=dg.DagsterRunStatus.NOT_STARTED,
        tags=range_tags(dt.date(2024, 3, 1), dt.date(2024, 3, 1), ["SOLUSDT"]))
    (req,) = tick_schedule(instance, dt.datetime(2024, 3, 2, 3, tzinfo=dt.UTC)).run_requests
    assert (req.tags[START], req.tags[END]) == ("2024-03-01|ETHUSDT", "2024-03-01|ETHUSDT")


def test_symbols_become_partitions_as_they_list_and_the_schedule_asks_for_the_trading_ones(
        tmp_path):
    """The synthetic source's generated cross-section: a symbol is a partition from its
    listing day on (the listings sensor adds it), stays one after it delists, and the
    schedule asks for the symbols trading that day only."""
    calendar = universe_listings("synthetic")
    late = next(x for x in calendar if x.first_day > REGISTRY.universe.start_date)
    gone = next(x for x in calendar if x.last_day and x.last_day < dt.date(2024, 4, 1))
    sensor = automation.symbol_listings_sensor
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        def tick(day: dt.date):
            context = dg.build_sensor_context(instance=inst, resources={
                "market_source": MarketSourceResource(market_source="synthetic",
                                                      generated_symbols=True)})
            with patch_last_day(day):
                return sensor.evaluate_tick(context)

        first = tick(late.first_day - dt.timedelta(days=1))
        (added,) = first.dynamic_partitions_requests
        assert added.partitions_def_name == SYMBOL_PARTITIONS
        assert late.symbol not in added.partition_keys
        assert set(added.partition_keys) == {
            x.symbol for x in calendar if x.first_day < late.first_day}
        inst.add_dynamic_partitions(SYMBOL_PARTITIONS, list(added.partition_keys))
        (more,) = tick(late.first_day).dynamic_partitions_requests
        assert late.symbol in more.partition_keys
        inst.add_dynamic_partitions(SYMBOL_PARTITIONS, list(more.partition_keys))
        with patch_last_day(gone.last_day + dt.timedelta(days=30)):
            register_listed_symbols(inst, source="synthetic", generated=True)
        assert gone.symbol in registered_symbols(inst)  # delisted: kept, with its history
        assert tick(dt.date(2024, 6, 1)).dynamic_partitions_requests == []  # nothing new
        # the schedule the day after the delisting: every trading symbol, not the delisted one
        day = gone.last_day + dt.timedelta(days=1)
        reqs = tick_schedule(inst, dt.datetime.combine(day + dt.timedelta(days=1),
                                                       dt.time(3), dt.UTC)).run_requests
        asked = {k for r in reqs for k in keys_of_tags(dict(r.tags), registered_symbols(inst))}
        assert asked == {(day, x.symbol) for x in calendar if x.trades_on(day)}
        assert (day, gone.symbol) not in asked and len(asked) > 20


def test_the_generated_cross_section_is_registered_only_when_asked_for(tmp_path):
    """Without BACKTEST_GENERATED_SYMBOLS the listings sensor registers the spec's listed
    symbols only (23 more would multiply every date x symbol asset's partitions)."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as inst:
        context = dg.build_sensor_context(instance=inst, resources={
            "market_source": MarketSourceResource(market_source="synthetic",
                                                  generated_symbols=False)})
        (added,) = automation.symbol_listings_sensor.evaluate_tick(
            context).dynamic_partitions_requests
        assert list(added.partition_keys) == SYMBOLS
        assert register_listed_symbols(inst, source="synthetic",
                                       generated=["S03USDT"]) == [*SYMBOLS, "S03USDT"]


def patch_last_day(day: dt.date):
    """``last_partition_day`` as if today were the day after ``day``."""
    from unittest import mock

    return mock.patch("backtest_assets.partitions.last_partition_day", return_value=day)


def test_schedule_skips_days_outside_the_partitions(instance):
    result = tick_schedule(instance, dt.datetime(2023, 12, 31, 3, tzinfo=dt.UTC))
    assert result.run_requests == [] and "outside" in result.skip_message


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def cli_run(instance, day: dt.date, symbol: str, pid: int, host: str | None = None) -> str:
    """A STARTED market-data run of ``day`` x ``symbol`` tagged as the CLI tags its runs,
    holding a ``duckdb`` pool slot; its run id."""
    tags = {**range_tags(day, day, [symbol]), recovery.HOST_TAG: host or socket.gethostname(),
            recovery.PID_TAG: str(pid)}
    run = instance.create_run_for_job(defs.resolve_job_def("market_data_job"),
                                      status=dg.DagsterRunStatus.STARTED, tags=tags)
    storage = instance.event_log_storage
    storage.set_concurrency_slots("duckdb", 3)  # room for the runs of a test
    assert storage.claim_concurrency_slot("duckdb", run.run_id, "raw_perp_klines_1m").is_claimed
    return run.run_id


def test_schedule_fails_a_dead_cli_run_instead_of_waiting_for_it(instance):
    day = dt.date(2024, 3, 1)
    dead = cli_run(instance, day, "BTCUSDT", dead_pid())
    alive = cli_run(instance, day, "ETHUSDT", os.getpid())  # this process: still running
    elsewhere = cli_run(instance, day, "SOLUSDT", dead_pid(), host="another-host")
    (req,) = tick_schedule(instance, dt.datetime(2024, 3, 2, 3, tzinfo=dt.UTC)).run_requests
    # the dead run's key is requested again; the live one and another host's stay pending
    assert (req.tags[START], req.tags[END]) == ("2024-03-01|BTCUSDT", "2024-03-01|BTCUSDT")
    status = {r: instance.get_run_by_id(r).status for r in (dead, alive, elsewhere)}
    assert status == {dead: dg.DagsterRunStatus.FAILURE, alive: dg.DagsterRunStatus.STARTED,
                      elsewhere: dg.DagsterRunStatus.STARTED}
    (failure,) = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "is gone" in failure.message
    info = instance.event_log_storage.get_concurrency_info("duckdb")
    assert sorted(s.run_id for s in info.claimed_slots) == sorted([alive, elsewhere])
    # repeated tick: nothing more to reclaim, the same request
    (again,) = tick_schedule(instance, dt.datetime(2024, 3, 2, 3, tzinfo=dt.UTC)).run_requests
    assert again.run_key == req.run_key


def test_reclaim_frees_the_slot_an_ended_run_still_holds(instance):
    # failed from outside its process (the code server, when its worker died): slot kept
    ended = cli_run(instance, dt.date(2024, 3, 1), "BTCUSDT", os.getpid(), host="daemon-host")
    instance.report_run_failed(instance.get_run_by_id(ended), "worker killed")
    alive = cli_run(instance, dt.date(2024, 3, 1), "ETHUSDT", os.getpid())
    (freed,) = recovery.reclaim_dead_runs(instance)
    assert freed.line() == f"run {ended[:8]} ended (FAILURE) holding its duckdb slot: freed"
    info = instance.event_log_storage.get_concurrency_info("duckdb")
    assert [s.run_id for s in info.claimed_slots] == [alive]
    assert recovery.reclaim_dead_runs(instance) == []


def test_archive_sensor_does_not_count_a_dead_cli_run_as_pending(tmp_path, instance,
                                                                  data_root):
    root = tmp_path / "archive"
    y = dt.date.fromisoformat(daily_partitions_def.get_last_partition_key())
    for symbol in SYMBOLS:
        publish(root, y, symbol)
        if symbol != "BTCUSDT":
            mark_ingested(instance, y, symbol)
    dead = cli_run(instance, y, "BTCUSDT", dead_pid())
    with ArchiveServer(root) as server:
        result, _ = tick_archive(instance, server, data_root,
                                 cursor=json.dumps({s: str(y - dt.timedelta(days=1))
                                                    for s in SYMBOLS}))
    (req,) = requests_of(result)
    assert (req.tags[START], req.tags[END]) == (f"{y}|BTCUSDT", f"{y}|BTCUSDT")
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE


# ------------------------------------------------------------------ binance archive sensor

def publish(root, day: dt.date, symbol: str) -> None:
    """The day's daily archive files of ``symbol`` (zip + CHECKSUM, as Binance lays them)."""
    for market in ("perp", "spot"):
        write_zip(root, daily_klines_path(market, symbol, day), "1,2,3\n")
    for folder in ("markPriceKlines", "premiumIndexKlines"):  # the sensor waits for them too
        write_zip(root, daily_klines_path("perp", symbol, day).replace("/klines/", f"/{folder}/"),
                  "1,2,3\n")
    write_zip(root, f"data/futures/um/daily/metrics/{symbol}/{symbol}-metrics-{day}.zip",
              "create_time,symbol\n")


def tick_archive(instance, server, data_root, cursor=None, kind="binance"):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "market_source": MarketSourceResource(market_source=kind, base_url=server.base_url,
                                              max_retries=0),
        "warehouse": WarehouseResource(data_root=str(data_root))})
    result = automation.binance_archive_sensor(context)
    return result, getattr(result, "cursor", None)


def test_archive_sensor_requests_only_published_and_missing_keys(tmp_path, instance, data_root):
    root = tmp_path / "archive"
    y = dt.date.fromisoformat(daily_partitions_def.get_last_partition_key())  # yesterday UTC
    d2, d1 = y - dt.timedelta(days=2), y - dt.timedelta(days=1)
    for symbol in SYMBOLS:
        publish(root, d2, symbol)
        publish(root, d1, symbol)
    mark_ingested(instance, d2, "BTCUSDT")
    with ArchiveServer(root) as server:
        result, cursor = tick_archive(instance, server, data_root)
        got = sorted((r.tags[START], r.tags[END]) for r in requests_of(result))
        assert got == [(f"{d2}|ETHUSDT", f"{d1}|SOLUSDT"), (f"{d1}|BTCUSDT", f"{d1}|BTCUSDT")]
        assert json.loads(cursor) == {s: d1.isoformat() for s in SYMBOLS}

        # repeated tick with the new cursor: probes only days after it, requests nothing
        before = len(server.requests)
        result, cursor2 = tick_archive(instance, server, data_root, cursor)
        assert requests_of(result) == [] and cursor2 == cursor
        probed = {r.path for r in server.requests[before:]}
        assert probed and all(str(y) in p for p in probed)

        # the archive publishes yesterday for BTCUSDT: only that key is requested
        publish(root, y, "BTCUSDT")
        result, cursor3 = tick_archive(instance, server, data_root, cursor2)
        (req,) = requests_of(result)
        assert (req.tags[START], req.tags[END]) == (f"{y}|BTCUSDT", f"{y}|BTCUSDT")
        assert json.loads(cursor3)["BTCUSDT"] == y.isoformat()

        # the synthetic source publishes nothing: the sensor skips and says why
        result, _ = tick_archive(instance, server, data_root, kind="synthetic")
        assert isinstance(result, dg.SkipReason) and "synthetic" in result.skip_message


# ------------------------------------------------------------------ downstream automation

def requested(result, name: str) -> list[str]:
    return sorted(str(k) for k in result.get_requested_partitions(dg.AssetKey(name)))


def run_requested(instance, result) -> None:
    """Execute what an evaluation requested, as the sensor's backfills would: range runs."""
    runner = Runner(instance, quiet=True)
    for key in [k for k in defs.resolve_asset_graph().toposorted_asset_keys
                if result.get_num_requested(k)]:
        keys = [(dt.date.fromisoformat(str(k).split("|")[0]), str(k).split("|")[1])
                for k in result.get_requested_partitions(key)]
        job = "market_data_job" if key.to_user_string().startswith("bars") else "research_job"
        for rect in rectangles(keys, SYMBOLS):
            assert runner.execute(job, rect.label, tags=rect.tags,
                                  assets=[key.to_user_string()])


def test_downstream_layers_follow_landed_ingest_and_nothing_on_repeat(instance, data_root):
    selection = dg.AssetSelection.groups(*automation.AUTOMATED_GROUPS)

    def tick(previous=None):
        return dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=selection,
            cursor=previous.cursor if previous else None)

    def got(result):
        names = ["bars_1m", "bars_5m", "bars_15m", "pit_features", "forward_labels",
                 "event_table"]
        return {n: requested(result, n) for n in names if requested(result, n)}

    first = tick()
    assert first.total_requested == 0  # nothing ingested yet: nothing to build
    # ingest alone lands for 2024-01-01..03 x BTCUSDT (the rest is left to the automation)
    runner = Runner(instance, quiet=True)
    assert runner.execute("market_data_job", "ingest only", assets=list(automation.INGEST_ASSETS),
                          tags=range_tags(dt.date(2024, 1, 1), dt.date(2024, 1, 3), ["BTCUSDT"]))
    days = [f"2024-01-0{i}|BTCUSDT" for i in (1, 2, 3)]
    # each layer follows once its inputs landed; labels of the 3rd wait for the 4th's bars
    second = tick(first)
    assert got(second) == {"bars_1m": days, "bars_5m": days, "bars_15m": days}
    assert tick(second).total_requested == 0  # repeated tick: nothing new
    run_requested(instance, second)
    third = tick(second)
    assert got(third) == {"pit_features": days, "forward_labels": days[:2]}
    run_requested(instance, third)
    fourth = tick(third)
    assert got(fourth) == {"event_table": days}
    run_requested(instance, fourth)
    assert tick(fourth).total_requested == 0
    # the 4th day lands: its bars, then the 3rd's labels and the 4th's features follow
    assert runner.execute("market_data_job", "ingest only", assets=list(automation.INGEST_ASSETS),
                          tags=range_tags(dt.date(2024, 1, 4), dt.date(2024, 1, 4), ["BTCUSDT"]))
    fifth = tick(fourth)
    assert got(fifth) == {n: ["2024-01-04|BTCUSDT"] for n in ("bars_1m", "bars_5m", "bars_15m")}
    run_requested(instance, fifth)
    assert got(tick(fifth)) == {"pit_features": ["2024-01-04|BTCUSDT"],
                                "forward_labels": ["2024-01-03|BTCUSDT"]}


def test_downstream_automation_sensor_targets_the_daily_layers():
    sensor = automation.downstream_automation
    graph = defs.resolve_asset_graph()
    targeted = sorted(k.to_user_string() for k in sensor.asset_selection.resolve(graph))
    assert targeted == ["bars_15m", "bars_1m", "bars_5m", "demo_days", "event_table",
                        "forward_labels", "pit_features"]
    for name in targeted:
        assert graph.get(dg.AssetKey(name)).automation_condition is not None, name
    for name in automation.INGEST_ASSETS:  # ingest is driven by the schedule and sensor
        assert graph.get(dg.AssetKey(name)).automation_condition is None, name


# ------------------------------------------------------------------ blueprint partitions

def survivor(hyp: str, event_type: str, horizon: str, symbol: str) -> dict:
    return {"hypothesis_id": hyp, "event_type": event_type, "rule_template": "continuation",
            "horizon": horizon, "symbol": symbol, "n": 31, "mean": 0.004, "q": 0.001}


def fdr_lands(instance, event_type: str, rows: list[dict]) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "phase2_fdr", partition=f"{event_type}|default",  # study x event type
        metadata={"survivors": len(rows), "survivor_rows": dg.MetadataValue.json(rows)}))


def tick_blueprints(instance, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                      resources={"specs": SpecRegistryResource()})
    result = automation.blueprint_partitions_sensor(context)
    if isinstance(result, dg.SensorResult):
        for req in result.dynamic_partitions_requests or []:  # as the daemon applies them
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_blueprint_sensor_registers_new_survivors_once(instance):
    event_types = sorted(REGISTRY.events)[:2]
    assert tick_blueprints(instance).skip_message == "no new phase2_fdr materialization"
    fdr_lands(instance, event_types[0], [survivor("h_1", event_types[0], "60m", "ALL")])
    fdr_lands(instance, event_types[1], [])
    result = tick_blueprints(instance)
    (add,) = result.dynamic_partitions_requests
    baselines = sorted(REGISTRY.strategies)
    new_name = f"p2_{event_types[0]}_continuation_60m_all"
    assert sorted(add.partition_keys) == sorted([*baselines, new_name])
    (req,) = result.run_requests
    assert req.job_name == "blueprints_job" and req.partition_key == "default"
    # repeated tick, and a new materialization with the same survivors: nothing new
    again = tick_blueprints(instance, result.cursor)
    assert not requests_of(again) and not getattr(again, "dynamic_partitions_requests", None)
    fdr_lands(instance, event_types[0], [survivor("h_1", event_types[0], "60m", "ALL")])
    same = tick_blueprints(instance, result.cursor)
    assert not same.dynamic_partitions_requests and not same.run_requests
    assert same.cursor != result.cursor
    # a second event type produces a survivor: only its blueprint is added
    fdr_lands(instance, event_types[1], [survivor("h_2", event_types[1], "15m", "ETHUSDT")])
    more = tick_blueprints(instance, same.cursor)
    (add,) = more.dynamic_partitions_requests
    assert list(add.partition_keys) == [f"p2_{event_types[1]}_continuation_15m_ethusdt"]
    assert more.run_requests[0].run_key != req.run_key
    assert len(instance.get_dynamic_partitions(BLUEPRINT_PARTITIONS)) == len(baselines) + 2


def test_study_sensor_registers_every_study_of_the_specs_once(instance):
    context = dg.build_sensor_context(instance=instance,
                                      resources={"specs": SpecRegistryResource()})
    result = automation.study_partitions_sensor(context)
    (add,) = result.dynamic_partitions_requests
    assert sorted(add.partition_keys) == sorted(REGISTRY.studies)
    instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys))
    again = automation.study_partitions_sensor(dg.build_sensor_context(
        instance=instance, resources={"specs": SpecRegistryResource()}))
    assert isinstance(again, dg.SkipReason)


# ------------------------------------------------------------------ freshness and failures

def test_freshness_deadline_is_six_utc():
    def at(h, m):
        return dt.datetime(2024, 5, 10, h, m, tzinfo=dt.UTC)
    assert automation.freshness_expectation(at(5, 59)) == dt.date(2024, 5, 8)
    assert automation.freshness_expectation(at(6, 0)) == dt.date(2024, 5, 9)
    # a local clock is converted: 01:00 in New York is 06:00 UTC
    ny = dt.timezone(dt.timedelta(hours=-5))
    assert automation.freshness_expectation(
        dt.datetime(2024, 5, 10, 1, 0, tzinfo=ny)) == dt.date(2024, 5, 9)


def freshness_results(instance) -> dict[str, dg.AssetCheckEvaluation]:
    result = defs.resolve_job_def("freshness_job").execute_in_process(instance=instance)
    assert result.success
    return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}


def test_freshness_checks_warn_until_the_due_day_is_ingested(instance):
    assert sorted(freshness_results(instance)) == sorted(automation.INGEST_ASSETS)
    due = automation.freshness_expectation(dt.datetime.now(dt.UTC))
    for name, ev in freshness_results(instance).items():
        assert not ev.passed and ev.severity == dg.AssetCheckSeverity.WARN, name
        assert ev.description == f"{name}: {due} missing for BTCUSDT, ETHUSDT, SOLUSDT"
    for symbol in SYMBOLS[:2]:
        mark_ingested(instance, due, symbol)
    assert {e.description for e in freshness_results(instance).values()} == {
        f"{name}: {due} missing for SOLUSDT" for name in automation.INGEST_ASSETS}
    mark_ingested(instance, due, "SOLUSDT")
    assert all(e.passed for e in freshness_results(instance).values())
    # the checks judge the instance, so ingest runs (and backfills of old days) leave them out
    checks = defs.resolve_job_def("market_data_job").asset_layer.asset_graph.asset_check_keys
    assert {k.name for k in checks} >= {"schema", "unique_keys"}
    assert automation.FRESHNESS_CHECK not in {k.name for k in checks}


@pytest.fixture
def failed_run(instance, data_root):
    """A real failed run: events of a day whose features were never built."""
    result = defs.resolve_job_def("research_job").execute_in_process(
        instance=instance, raise_on_error=False, asset_selection=[dg.AssetKey("event_table")],
        tags=range_tags(dt.date(2024, 1, 2), dt.date(2024, 1, 2), ["ETHUSDT"]))
    assert not result.success
    return instance.get_run_by_id(result.run_id)


def test_run_failure_sensor_records_the_run_and_its_error(instance, data_root, failed_run):
    failure = next(e for e in instance.all_logs(failed_run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_recorder", dagster_instance=instance, dagster_run=failed_run,
        dagster_event=failure.dagster_event,
        resources={"warehouse": WarehouseResource(data_root=str(data_root))},
    ).for_run_failure()
    automation.run_failure_recorder(context)
    lines = (data_root / automation.RUN_FAILURES_FILE).read_text().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert record["run_id"] == failed_run.run_id
    assert record["job"] == "research_job"
    assert record["partition_range"] == ["2024-01-02|ETHUSDT", "2024-01-02|ETHUSDT"]
    (step,) = record["steps"]
    assert step["step"] == "event_table"
    # the root cause, not Dagster's wrapper ("Error occurred while loading input ...")
    assert step["error"].startswith("backtest_assets.warehouse.WarehouseError: warehouse ")
    assert step["error"].endswith("does not exist yet: materialize first")
