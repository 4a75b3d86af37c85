"""Typed, strict YAML-to-dataclass loading with errors that name the file and field.

Pass one (here) checks the shape: known fields only, required fields present, each value of
the declared type. Pass two (each model's ``validate``) checks cross-field rules. Both raise
:class:`SpecError` with ``<file>: <field path>: <problem>``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")


class SpecError(ValueError):
    """A spec file that cannot be loaded, naming the file and the field."""

    def __init__(self, file: str | Path, field: str, problem: str) -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.file}: {field or '<root>'}: {problem}")


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning syntax errors into :class:`SpecError`."""
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise SpecError(path, "", "file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise SpecError(path, where, f"invalid YAML: {exc}") from None


def build(cls: type[T], data: Any, *, file: str | Path, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from parsed YAML ``data``, strictly."""
    if not isinstance(data, dict):
        raise SpecError(file, path, f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(file, _join(path, unknown[0]), f"unknown field (known: {sorted(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required:
                raise SpecError(file, _join(path, name), "required field is missing")
            continue
        kwargs[name] = _coerce(hints[name], data[name], file=file, path=_join(path, name))
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except SpecError:
            raise
        except ValueError as exc:
            field, _, problem = str(exc).partition(": ")
            raise SpecError(file, _join(path, field), problem or str(exc)) from None
    return obj


def _join(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _coerce(tp: Any, value: Any, *, file: str | Path, path: str) -> Any:  # noqa: C901
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, file=file, path=path)
    if origin is Literal:
        if value not in get_args(tp):
            raise SpecError(file, path, f"must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise SpecError(file, path, f"expected a non-empty mapping, got {value!r}")
        (_, inner) = get_args(tp)
        for key in value:
            if not isinstance(key, str):
                raise SpecError(file, path, f"expected string keys, got {key!r}")
        return {k: _coerce(inner, v, file=file, path=f"{path}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise SpecError(file, path, f"expected a list, got {type(value).__name__}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: any length
            return tuple(
                _coerce(args[0], v, file=file, path=f"{path}[{i}]") for i, v in enumerate(value)
            )
        if len(value) != len(args):  # tuple[X, Y, Z]: exactly these
            raise SpecError(file, path, f"expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, file=file, path=f"{path}[{i}]")
                     for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, file=file, path=path)
    if tp is dt.date:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise SpecError(file, path, f"expected a date YYYY-MM-DD, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise SpecError(file, path, f"expected a number, got {value!r}")
    if tp in (int, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise SpecError(file, path, f"expected {tp.__name__}, got {value!r}")
    raise TypeError(f"unsupported spec field type {tp!r} at {path}")  # a bug in a model


def to_plain(obj: Any) -> Any:
    """A dataclass tree as JSON-ready plain data (dates as ISO strings, tuples as lists).
    A field marked ``omit_if_default`` in its metadata is left out while at its default (a
    field added later does not change the hash of specs that do not use it)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_if_default")
                        and getattr(obj, f.name) == f.default)}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, dt.date):
        return obj.isoformat()
    return obj


def canonical_json(obj: Any) -> str:
    """Canonical JSON of a spec: sorted keys, no whitespace, so formatting never changes it."""
    return json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def spec_hash(obj: Any) -> str:
    """sha256 of the spec's canonical JSON: the spec's identity in reports."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()
