"""The spec registry: every spec file loaded once, typed, frozen, cross-checked and hashed.

Layout under ``specs/``: ``universe.yaml``, ``labels.yaml``, ``gates.yaml``, ``fees.yaml``,
``walkforward.yaml``, ``multiplicity/families.yaml``, ``features/*.yaml`` (a ``features:``
list each),
``events/*.yaml`` (one event each), ``studies/*.yaml`` (one study each),
``overlays/*.yaml`` (one overlay each), ``strategies/*.yaml`` (one blueprint each; its
``overlays`` list names overlays, resolved here to their specs), ``portfolios/*.yaml``
(one book each), ``universes/*.yaml`` (liquid universes) and ``alpha/*.yaml`` (combined
models, each naming its universe). :func:`lint`
reports every problem; loading raises the first. Both name the file and the field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from backtest_assets.specs.loader import SpecError, build, read_yaml, spec_hash, to_plain
from backtest_assets.specs.models import (
    FAMILY_INPUTS,
    PRICE_COLUMNS,
    PRINT_FAMILIES,
    AlphaModelSpec,
    CodeEntry,
    Entry,
    EventSpec,
    FamiliesSpec,
    FeatureFile,
    FeatureSpec,
    FeesSpec,
    GatesSpec,
    LabelsSpec,
    LiquidUniverseSpec,
    OverlaySpec,
    Phase2Gate,
    PortfolioSpec,
    StrategySpec,
    StudySpec,
    UniverseSpec,
    WalkForwardSpec,
    interval_minutes,
)

SPECS_DIR_ENV = "BACKTEST_SPECS_DIR"
T = TypeVar("T")
# Funding prints are 8-hourly on the synthetic source and usually on Binance; warm-up of
# print-based features is sized for that (a 4 h or 1 h symbol only needs less).
FUNDING_PRINT_MINUTES = 8 * 60
OI_PRINT_MINUTES = 5
_PRINT_MINUTES = {"funding": FUNDING_PRINT_MINUTES, "oi": OI_PRINT_MINUTES}
# The only spec files Phase 2 may read (its report stamps exactly these hashes).
PHASE2_FILES = ("multiplicity/families.yaml", "gates.yaml", "fees.yaml")


@dataclass(frozen=True, kw_only=True)
class Phase2Specs:
    """Everything Phase 2 reads: its families, its gate, the fees, and their hashes."""

    families: FamiliesSpec
    gate: Phase2Gate
    fees: FeesSpec
    horizon_bars: dict[str, int]  # label column -> horizon in base bars, families' horizons
    spec_hashes: dict[str, str]


def default_specs_dir() -> Path:
    """``$BACKTEST_SPECS_DIR``, else the repository's ``specs/``."""
    env = os.environ.get(SPECS_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "specs"


@dataclass(frozen=True, kw_only=True)
class SpecRegistry:
    specs_dir: Path
    universe: UniverseSpec
    labels: LabelsSpec
    gates: GatesSpec
    features: dict[str, FeatureSpec]  # in dependency order
    events: dict[str, EventSpec]
    studies: dict[str, StudySpec]
    families: FamiliesSpec
    fees: FeesSpec
    strategies: dict[str, StrategySpec]
    walkforward: WalkForwardSpec
    hashes: dict[str, str]
    portfolios: dict[str, PortfolioSpec] = dataclasses.field(default_factory=dict)
    overlays: dict[str, OverlaySpec] = dataclasses.field(default_factory=dict)
    universes: dict[str, LiquidUniverseSpec] = dataclasses.field(default_factory=dict)
    alpha: dict[str, AlphaModelSpec] = dataclasses.field(default_factory=dict)

    def phase2(self) -> Phase2Specs:
        """The read-only view Phase 2 is given: nothing else of the registry reaches it."""
        labels = self.label_bars()
        return Phase2Specs(
            families=self.families, gate=self.gates.phase2, fees=self.fees,
            horizon_bars={f"fwd_ret_{h}": labels[f"fwd_ret_{h}"]
                          for h in self.families.horizons},
            spec_hashes={f: self.hashes[f] for f in PHASE2_FILES})

    @property
    def spec_hashes(self) -> dict[str, str]:
        """sha256 of each spec file's canonical JSON, keyed by its path under ``specs/``."""
        return dict(self.hashes)

    @property
    def base_minutes(self) -> int:
        return interval_minutes(self.universe.base_interval)

    @property
    def bars_per_day(self) -> int:
        return 24 * 60 // self.base_minutes

    @property
    def feature_warmup_days(self) -> int:
        """Whole days of history the features of one day read before it."""
        most = max((f.warmup_bars for f in self.features.values()), default=0)
        return math.ceil(most / self.bars_per_day)

    @property
    def event_lookback_bars(self) -> int:
        return max((e.lookback_bars for e in self.events.values()), default=0)

    def label_bars(self) -> dict[str, int]:
        """Label column name -> horizon in base bars, e.g. ``fwd_ret_15m`` -> 3."""
        return {f"fwd_ret_{h}": interval_minutes(h) // self.base_minutes
                for h in self.labels.horizons}

    @property
    def default_study(self) -> StudySpec:
        return self.studies["default"]

    def study_event_types(self, study: StudySpec) -> list[str]:
        return list(study.event_types) or list(self.events)

    @classmethod
    def load(cls, specs_dir: Path) -> SpecRegistry:
        """Load and cross-check ``specs_dir``; raise the first :class:`SpecError`."""
        reg, errors = _load(specs_dir)
        if errors:
            raise errors[0]
        assert reg is not None
        return reg


def lint(specs_dir: Path) -> list[SpecError]:
    """Every problem in ``specs_dir``, each naming its file and field (empty when clean)."""
    return _load(specs_dir)[1]


def _load(specs_dir: Path) -> tuple[SpecRegistry | None, list[SpecError]]:  # noqa: C901
    errors: list[SpecError] = []
    hashes: dict[str, str] = {}

    def one(path: Path, cls: type[T], wrap: Callable[[Any], Any] = lambda x: x) -> T | None:
        try:
            obj = build(cls, wrap(read_yaml(path)), file=path)
        except SpecError as exc:
            errors.append(exc)
            return None
        hashes[path.relative_to(specs_dir).as_posix()] = spec_hash(obj)
        return obj

    universe = one(specs_dir / "universe.yaml", UniverseSpec)
    labels = one(specs_dir / "labels.yaml", LabelsSpec)
    gates = one(specs_dir / "gates.yaml", GatesSpec)
    families = one(specs_dir / "multiplicity" / "families.yaml", FamiliesSpec)
    fees = one(specs_dir / "fees.yaml", FeesSpec)
    walkforward = one(specs_dir / "walkforward.yaml", WalkForwardSpec)
    features: dict[str, tuple[Path, int, FeatureSpec]] = {}
    for path in _yaml_files(specs_dir / "features"):
        ff = one(path, FeatureFile)
        for i, f in enumerate(ff.features if ff else ()):
            if f.name in features:
                errors.append(SpecError(path, f"features[{i}].name",
                                        f"duplicate feature {f.name!r} (also in "
                                        f"{features[f.name][0].name})"))
            features.setdefault(f.name, (path, i, f))
    def named(folder: str, cls: type[T], kind: str,
              wrap: Callable[[Path, Any], Any] = lambda _, x: x) -> dict[str, tuple[Path, T]]:
        """One spec per file under ``folder``, by name; a second file with a name is an error."""
        out: dict[str, tuple[Path, T]] = {}
        for path in _yaml_files(specs_dir / folder):
            spec = one(path, cls, functools.partial(wrap, path))
            if spec is None:
                continue
            name = spec.name  # type: ignore[attr-defined]
            if name in out:
                errors.append(SpecError(path, "name", f"duplicate {kind} {name!r} (also in "
                                                      f"{out[name][0].name})"))
            out.setdefault(name, (path, spec))
        return out

    events = named("events", EventSpec, "event")
    studies = named("studies", StudySpec, "study")
    overlays = named("overlays", OverlaySpec, "overlay")
    for path, o in overlays.values():
        if path.stem != o.name:
            errors.append(SpecError(path, "name", f"{o.name!r} differs from the file's name "
                                                  f"({path.stem}): a version is one file"))
    strategies = named("strategies", StrategySpec, "strategy",
                       functools.partial(_resolve_overlays, overlays, errors))
    portfolios = named("portfolios", PortfolioSpec, "portfolio")
    universes = named("universes", LiquidUniverseSpec, "universe")
    alpha = named("alpha", AlphaModelSpec, "alpha model")
    for path, a in alpha.values():
        if a.universe not in universes:
            errors.append(SpecError(path, "universe", f"unknown universe {a.universe!r} "
                                                      f"(specs/universes: {sorted(universes)})"))
    if universe is None:  # every cross-check needs the base interval and the symbols
        return None, errors
    base = interval_minutes(universe.base_interval)
    errors += _check_features(features, base)
    errors += _check_events(events, features, base)
    errors += _check_studies(studies, universe, events, specs_dir)
    for h in labels.horizons if labels else ():
        if interval_minutes(h) % base:
            errors.append(SpecError(specs_dir / "labels.yaml", "horizons",
                                    f"{h} is not a multiple of the base interval"))
    families_file = specs_dir / "multiplicity" / "families.yaml"
    for i, h in enumerate(families.horizons if families and labels else ()):
        if h not in labels.horizons:
            errors.append(SpecError(families_file, f"horizons[{i}]",
                                    f"{h} is not a horizon of labels.yaml {list(labels.horizons)}"))
    for path, o in overlays.values():
        for feature in o.features:
            if feature not in features:
                errors.append(SpecError(path, "feature", f"unknown feature {feature!r}"))
    errors += _check_strategies(strategies, universe, events, features, fees, alpha)
    if gates is not None and gates.phase2.stability.regime_feature not in features:
        errors.append(SpecError(specs_dir / "gates.yaml", "phase2.stability.regime_feature",
                                f"unknown feature {gates.phase2.stability.regime_feature!r}"))
    if walkforward is not None and labels is not None:
        longest = max(interval_minutes(h) for h in labels.horizons) // base
        if walkforward.purge_bars < longest:
            errors.append(SpecError(specs_dir / "walkforward.yaml", "purge_bars",
                                    f"{walkforward.purge_bars} is shorter than the longest "
                                    f"label horizon ({longest} bars)"))
    if (errors or labels is None or gates is None or families is None or fees is None
            or walkforward is None):
        return None, errors
    order = _dependency_order({n: f for n, (_, _, f) in features.items()})
    return SpecRegistry(
        specs_dir=specs_dir, universe=universe, labels=labels, gates=gates,
        features={n: features[n][2] for n in order},
        events={n: e for n, (_, e) in sorted(events.items())},
        studies={n: s for n, (_, s) in sorted(studies.items())},
        families=families, fees=fees,
        strategies={n: b for n, (_, b) in sorted(strategies.items())},
        walkforward=walkforward,
        hashes=dict(sorted(hashes.items())),
        portfolios={n: p for n, (_, p) in sorted(portfolios.items())},
        overlays={n: o for n, (_, o) in sorted(overlays.items())},
        universes={n: u for n, (_, u) in sorted(universes.items())},
        alpha={n: a for n, (_, a) in sorted(alpha.items())},
    ), []


def _resolve_overlays(overlays: dict[str, tuple[Path, OverlaySpec]], errors: list[SpecError],
                      path: Path, data: Any) -> Any:
    """A blueprint file's YAML with each overlay name replaced by that overlay's spec (an
    unknown name, or an overlay written inline instead of named, is an error and dropped)."""
    if not isinstance(data, dict) or "overlays" not in data:
        return data
    names = data["overlays"]
    if not isinstance(names, list):
        errors.append(SpecError(path, "overlays", "expected a list of overlay names"))
        return {**data, "overlays": []}
    resolved = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            errors.append(SpecError(path, f"overlays[{i}]", "name an overlay of "
                                    "specs/overlays (pinned and versioned), not a mapping"))
        elif name not in overlays:
            errors.append(SpecError(path, f"overlays[{i}]", f"unknown overlay {name!r} "
                                    f"(known: {sorted(overlays)})"))
        else:
            resolved.append(to_plain(overlays[name][1]))
    return {**data, "overlays": resolved}


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def _check_features(features: dict[str, tuple[Path, int, FeatureSpec]], base: int
                    ) -> Iterator[SpecError]:
    specs = {n: f for n, (_, _, f) in features.items()}
    for name, (path, i, f) in features.items():
        where = f"features[{i}]"
        kinds = FAMILY_INPUTS[f.family]
        expected = [] if kinds == ("bars",) else list(kinds)
        if len(f.inputs) != len(expected):
            yield SpecError(path, f"{where}.inputs", f"family {f.family} takes "
                            f"{len(expected)} input(s) {expected}, got {list(f.inputs)}")
            continue
        for j, (ref, kind) in enumerate(zip(f.inputs, expected, strict=True)):
            source, _, column = ref.partition(".")
            if source == "feature" and column not in specs:
                yield SpecError(path, f"{where}.inputs[{j}]", f"unknown feature {column!r}")
            elif kind == "price" and not (source in ("perp", "spot")
                                          and column in PRICE_COLUMNS):
                yield SpecError(path, f"{where}.inputs[{j}]",
                                f"family {f.family} needs a perp/spot price column, got {ref}")
            elif kind not in ("price", "any") and ref != kind:
                yield SpecError(path, f"{where}.inputs[{j}]",
                                f"family {f.family} needs {kind}, got {ref}")
        try:
            need = required_warmup(name, specs, base)
        except RecursionError:
            yield SpecError(path, f"{where}.inputs", f"feature {name!r} depends on itself")
            continue
        except KeyError:
            continue  # a dangling reference, reported above
        if f.warmup_bars < need:
            yield SpecError(path, f"{where}.warmup_bars",
                            f"{f.warmup_bars} is less than the {need} bars {name} needs")


def required_warmup(name: str, specs: dict[str, FeatureSpec], base: int,
                    _seen: frozenset[str] = frozenset()) -> int:
    """Base bars of history feature ``name`` needs for its first valid value."""
    if name in _seen:
        raise RecursionError(name)
    f = specs[name]
    own = f.window + (f.z_window or 0)
    if f.family in PRINT_FAMILIES:
        own = math.ceil(own * _PRINT_MINUTES[PRINT_FAMILIES[f.family]] / base)
    upstream = [required_warmup(ref.split(".", 1)[1], specs, base, _seen | {name})
                for ref in f.inputs if ref.startswith("feature.")]
    return own + max(upstream, default=0)


def _dependency_order(specs: dict[str, FeatureSpec]) -> list[str]:
    order: list[str] = []

    def visit(n: str) -> None:
        if n in order:
            return
        for ref in specs[n].inputs:
            if ref.startswith("feature."):
                visit(ref.split(".", 1)[1])
        order.append(n)

    for n in sorted(specs):
        visit(n)
    return order


def _check_events(events: dict[str, tuple[Path, EventSpec]],
                  features: dict[str, tuple[Path, int, FeatureSpec]], base: int
                  ) -> Iterator[SpecError]:
    bars_per_day = 24 * 60 // base
    for path, ev in events.values():
        for field, feature in ev.features():
            if feature not in features:
                yield SpecError(path, field, f"unknown feature {feature!r}")
        for i, c in enumerate(ev.conditions):
            family = features[c.feature][2].family if c.feature in features else None
            if family in ("zscore", "volume_zscore", "funding_zscore", "oi_change_zscore") \
                    and abs(c.threshold) > 10:
                yield SpecError(path, f"conditions[{i}].threshold",
                                f"{c.threshold} is out of range for a z-score ([-10, 10])")
        if ev.lookback_bars > bars_per_day:
            yield SpecError(path, "cooldown_bars", f"cooldown plus the largest lag "
                            f"({ev.lookback_bars} bars) exceeds one day ({bars_per_day} bars)")


def _check_studies(studies: dict[str, tuple[Path, StudySpec]], universe: UniverseSpec,
                   events: dict[str, tuple[Path, EventSpec]], specs_dir: Path
                   ) -> Iterator[SpecError]:
    if "default" not in studies:
        yield SpecError(specs_dir / "studies", "", "a study named 'default' is required")
    for path, st in studies.values():
        for i, s in enumerate(st.symbols):
            if s not in universe.symbol_names:
                yield SpecError(path, f"symbols[{i}]", f"{s} is not in universe.yaml")
        for i, e in enumerate(st.event_types):
            if e not in events:
                yield SpecError(path, f"event_types[{i}]", f"unknown event type {e!r}")
        if st.start < universe.start_date:
            yield SpecError(path, "start", f"{st.start} is before the universe's start_date")
        for i, other in enumerate(st.compare_with):
            if other not in studies:
                yield SpecError(path, f"compare_with[{i}]", f"no study {other!r} in "
                                f"{specs_dir / 'studies'}")


def _check_strategies(strategies: dict[str, tuple[Path, StrategySpec]],
                      universe: UniverseSpec, events: dict[str, tuple[Path, EventSpec]],
                      features: dict[str, tuple[Path, int, FeatureSpec]],
                      fees: FeesSpec | None, alpha_models: Collection[str] = ()
                      ) -> Iterator[SpecError]:
    for path, bp in strategies.values():
        for field, problem in blueprint_problems(bp, universe.symbol_names, events, features,
                                                 fees, alpha_models):
            yield SpecError(path, field, problem)


def blueprint_problems(bp: StrategySpec, symbols: Collection[str], events: Collection[str],
                       features: Collection[str], fees: FeesSpec | None,
                       alpha_models: Collection[str] = ()) -> Iterator[tuple[str, str]]:
    """(field, problem) for every reference of ``bp`` the specs do not know: a symbol outside
    the universe, an unknown event type, feature or venue, a leverage above the venue's cap.
    Used by the linter on specs/strategies and by ``strategy_blueprints`` on generated ones.
    """
    for i, s in enumerate(bp.symbols):
        if s not in symbols:
            yield f"symbols[{i}]", f"{s} is not in universe.yaml"
    yield from _entry_problems(bp.entry, events, features, alpha_models)
    for i, o in enumerate(bp.overlays):
        for feature in o.features:
            if feature not in features:
                yield f"overlays[{i}]", f"{o.name}: unknown feature {feature!r}"
    if fees is None:
        return
    venue = bp.venue or fees.default_venue
    if venue not in fees.venues:
        yield "venue", f"unknown venue {venue!r} (fees.yaml has {sorted(fees.venues)})"
    elif bp.leverage > fees.venues[venue].max_leverage:
        yield "leverage", (f"{bp.leverage} is above {venue}'s cap of "
                           f"{fees.venues[venue].max_leverage}")


def _entry_problems(entry: Entry, events: Collection[str], features: Collection[str],
                    alpha_models: Collection[str]) -> Iterator[tuple[str, str]]:
    """An unknown event type, condition feature or alpha model; a code entry's problems."""
    if entry.event is not None and entry.event not in events:
        yield "entry.event", f"unknown event type {entry.event!r}"
    if entry.condition is not None and entry.condition.feature not in features:
        yield "entry.condition.feature", f"unknown feature {entry.condition.feature!r}"
    if entry.alpha is not None and entry.alpha.model not in alpha_models:
        yield "entry.alpha.model", (f"unknown alpha model {entry.alpha.model!r} "
                                    f"(specs/alpha: {sorted(alpha_models)})")
    if entry.code is not None:
        yield from _code_problems(entry.code, events, features)


def _code_problems(code: CodeEntry, events: Collection[str], features: Collection[str]
                   ) -> Iterator[tuple[str, str]]:
    """A code entry's class that does not import, and its unknown features and events."""
    from backtest_assets.strategies.code import strategy_class  # the sim: imported on use
    try:
        strategy_class(code.strategy)
    except ValueError as exc:
        yield "entry.code.strategy", str(exc)
    for i, f in enumerate(code.features):
        if f not in features:
            yield f"entry.code.features[{i}]", f"unknown feature {f!r}"
    for i, e in enumerate(code.events):
        if e not in events:
            yield f"entry.code.events[{i}]", f"unknown event type {e!r}"


@functools.cache
def _load_cached(specs_dir: Path) -> SpecRegistry:
    return SpecRegistry.load(specs_dir)


def reload_registries() -> None:
    """Forget every loaded registry: the next :func:`load_registry` reads the files again
    (after a spec file was written, e.g. a new study)."""
    _load_cached.cache_clear()


def load_registry(specs_dir: Path | str | None = None) -> SpecRegistry:
    """The registry for ``specs_dir`` (default: :func:`default_specs_dir`), loaded once."""
    return _load_cached(Path(specs_dir or default_specs_dir()).resolve())
