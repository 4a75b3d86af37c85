"""Write Binance-archive-format files (zip + CHECKSUM) for tests, from canonical frames."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

KLINE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore")


def kline_lines(frame: pl.DataFrame) -> list[str]:
    """Canonical klines as Binance CSV lines (epoch ms, 12 columns, no header)."""
    out = []
    for r in frame.iter_rows(named=True):
        t = int(r["ts_open"].replace(tzinfo=dt.UTC).timestamp() * 1000)
        out.append(f"{t},{r['open']!r},{r['high']!r},{r['low']!r},{r['close']!r},"
                   f"{r['volume']!r},{t + 59_999},{r['quote_volume']!r},{r['trade_count']},"
                   f"{r['taker_buy_volume']!r},{r['taker_buy_quote_volume']!r},0")
    return out


def daily_klines_path(market: str, symbol: str, day: dt.date) -> str:
    base = "data/futures/um" if market == "perp" else "data/spot"
    return f"{base}/daily/klines/{symbol}/1m/{symbol}-1m-{day.isoformat()}.zip"


def write_zip(root: Path, rel: str, csv_text: str, *, checksum_of: bytes | None = None) -> bytes:
    """Write ``rel`` (a zip holding one CSV) and its CHECKSUM; return the zip bytes."""
    buf = io.BytesIO()
    name = Path(rel).name
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name.removesuffix(".zip") + ".csv", csv_text)
    data = buf.getvalue()
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    digest = hashlib.sha256(checksum_of if checksum_of is not None else data).hexdigest()
    (root / f"{rel}.CHECKSUM").write_text(f"{digest}  {name}\n")
    return data


def write_klines_day(root: Path, market: str, symbol: str, day: dt.date, frame: pl.DataFrame,
                     *, header: bool = False,
                     edit: Callable[[list[str]], list[str]] | None = None) -> str:
    """A daily 1m klines zip from ``frame``; ``edit`` may change the CSV lines first."""
    lines = kline_lines(frame)
    if edit is not None:
        lines = edit(lines)
    text = "\n".join(([KLINE_HEADER] if header else []) + lines) + "\n"
    rel = daily_klines_path(market, symbol, day)
    write_zip(root, rel, text)
    return rel
