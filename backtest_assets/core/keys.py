"""Validation of symbols and partition keys before they reach a path or SQL."""

from __future__ import annotations

import datetime as dt
import re

_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class InvalidKeyError(ValueError):
    """A symbol or partition key that is not a plain ticker or ISO date."""


def validate_symbol(symbol: object) -> str:
    """Return ``symbol`` if it is a plain upper-case ticker, else raise ``InvalidKeyError``."""
    if not isinstance(symbol, str) or not _SYMBOL.fullmatch(symbol):
        raise InvalidKeyError(
            f"invalid symbol {symbol!r}: expected 2-30 characters of A-Z and 0-9 (e.g. BTCUSDT)"
        )
    return symbol


def validate_date(value: object) -> dt.date:
    """Parse an ISO ``YYYY-MM-DD`` partition date, raising ``InvalidKeyError`` otherwise."""
    if isinstance(value, dt.datetime):
        raise InvalidKeyError(f"invalid date {value!r}: expected a date, not a datetime")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise InvalidKeyError(f"invalid date {value!r}: expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidKeyError(f"invalid date {value!r}: {exc}") from None
