"""A blueprint's parameter grid as concrete blueprints (pure; no Dagster).

``StrategySpec.grid`` maps parameter paths (``specs.models.GRID_PARAMS``, or a code
entry's ``entry.code.params.<name>``) to the values to try; the combinations are the
Cartesian product in sorted-path order, so combination k is the same for the same spec.
Each combination is the blueprint with those values set and no grid of its own, validated
like a spec file.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

from backtest_assets.specs.models import CODE_PARAM, GRID_PARAMS, StrategySpec


def combinations(bp: StrategySpec) -> list[dict[str, float]]:
    """Every combination of the grid (one empty combination when there is no grid)."""
    grid = bp.grid or {}
    keys = sorted(grid)
    return [{k: (int(v) if GRID_PARAMS.get(k) is int else float(v))
             for k, v in zip(keys, vs, strict=True)}
            for vs in itertools.product(*(grid[k] for k in keys))]


def variant(bp: StrategySpec, params: dict[str, float]) -> StrategySpec:
    """``bp`` with ``params`` set (paths of ``GRID_PARAMS``) and no grid, validated.

    Raises ``ValueError`` naming the blueprint and the combination when it is not a valid
    blueprint (e.g. a weight above the leverage).
    """
    out = dataclasses.replace(bp, grid=None)
    for path, value in params.items():
        if path not in GRID_PARAMS and not path.startswith(CODE_PARAM):
            raise ValueError(f"{bp.name}: {path!r} is not a grid parameter")
        out = _set(out, path.split("."), value)
    try:
        for spec in (out, out.entry, out.entry.condition, out.entry.alpha, out.entry.code,
                     out.exits):
            if spec is not None:
                spec.validate()
    except ValueError as exc:
        raise ValueError(f"{bp.name}: combination {params_json(params)} is not a valid "
                         f"blueprint: {exc}") from None
    return out


def variants(bp: StrategySpec) -> list[tuple[dict[str, float], StrategySpec]]:
    """(params, blueprint) for every combination of ``bp``'s grid, in combination order."""
    return [(p, variant(bp, p)) for p in combinations(bp)]


def params_json(params: dict[str, float]) -> str:
    """A combination as canonical JSON (sorted keys): how results name it."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _set(obj, path: list[str], value: float):
    if isinstance(obj, dict):  # a code entry's params
        if len(path) != 1 or path[0] not in obj:
            raise ValueError(f"no parameter {'.'.join(path)!r} in {sorted(obj)}")
        return {**obj, path[0]: value}
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _set(getattr(obj, path[0]), path[1:], value)})
