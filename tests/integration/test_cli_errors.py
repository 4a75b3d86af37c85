"""A failed run prints one line per root cause and where its log is; tracebacks on request."""

import pytest

from backtest_assets.cli import Runner, register_study
from backtest_assets.defs.backtest import assets as backtest_assets


def broken_catalog(*_args, **_kwargs):
    raise ValueError("the catalog is broken\n  on two lines")


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_a_failed_run_prints_one_line_per_cause(data_root, instance, monkeypatch, capsys,
                                                 verbose):
    monkeypatch.setattr(backtest_assets, "catalog", broken_catalog)
    runner = Runner(instance, verbose=verbose)
    assert register_study(runner, "default")  # the study's record, which the catalog checks
    capsys.readouterr()
    assert not runner.execute("blueprints_job", "strategy_blueprints", partition_key="default")
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert lines[0].startswith("run ") and lines[0].endswith("FAILED in " + lines[0].split()[-1])
    assert lines[1].startswith("  strategy_blueprints; partition default; "
                               "tests/integration/test_cli_errors.py:"), \
        out.out
    assert lines[1].endswith("ValueError: the catalog is broken on two lines"), out.out
    assert f"runs/{runner.failed_runs[0]}" in lines[-1], out.out
    if verbose:
        assert "Traceback" in out.out or "File " in out.out, out.out
    else:
        assert len(lines) == 3, out.out
        assert "Traceback" not in out.out + out.err and "File " not in out.out + out.err
