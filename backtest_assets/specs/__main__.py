"""``python -m backtest_assets.specs lint [DIR]``: report every problem in the spec files."""

import argparse
import sys
from pathlib import Path

from backtest_assets.specs.registry import SpecRegistry, default_specs_dir, lint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backtest_assets.specs")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("lint", help="check every spec file; exit 1 on any problem")
    p.add_argument("specs_dir", nargs="?", type=Path, default=None)
    args = parser.parse_args(argv)
    specs_dir = (args.specs_dir or default_specs_dir()).resolve()
    errors = lint(specs_dir)
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} problem(s) in {specs_dir}", file=sys.stderr)
        return 1
    reg = SpecRegistry.load(specs_dir)
    print(f"{specs_dir}: {len(reg.spec_hashes)} files, {len(reg.features)} features, "
          f"{len(reg.events)} events, {len(reg.studies)} studies, {len(reg.strategies)} "
          "strategies: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
