"""Rebuild the compact demo copies in this folder from the original files.

    python data/build.py ORIGINALS_DIR

ORIGINALS_DIR holds ``ecommerce_shipping/Train.csv``, ``store_item_demand/train.csv`` and
``walmart_weekly/Walmart.csv`` (the files each SOURCE.md names, checked against their sha256).
Every row and column is kept with its original name and value; only the storage changes: Parquet
(zstd) and dates as timestamps; every other column keeps the dtype pandas reads from the CSV
(int64 stays int64, so model signatures are the same as from the CSV).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent

# name -> (original file, its sha256, read options, date column and its format)
ORIGINALS = {
    "ecommerce_shipping": (
        "ecommerce_shipping/Train.csv",
        "7f4d81e18f762de35c411f8003fe4a0565dd886a50e311729041c1aa41b076f6",
        {"encoding": "utf-8-sig"},
        None,
    ),
    "store_item_demand": (
        "store_item_demand/train.csv",
        "038f25690a65149c94f86ddd3deceda20c037a5cfd754cafdfc539a72992f2ed",
        {},
        ("date", "%Y-%m-%d"),
    ),
    "walmart_weekly": (
        "walmart_weekly/Walmart.csv",
        "0846b6941217dd938ceba6ae04650ccbbd01f4877a5f88bfa4dbecda54806c8f",
        {},
        ("Date", "%d-%m-%Y"),
    ),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compact(df: pd.DataFrame, date: tuple[str, str] | None) -> pd.DataFrame:
    out = df.copy()
    if date:
        col, fmt = date
        out[col] = pd.to_datetime(out[col], format=fmt)
    return out


def build(originals: Path) -> None:
    for name, (rel, digest, read_opts, date) in ORIGINALS.items():
        src = originals / rel
        if sha256(src) != digest:
            raise SystemExit(f"{src}: sha256 differs from {digest} (not the documented file)")
        df = pd.read_csv(src, **read_opts)
        target = HERE / name / f"{name}.parquet"
        target.parent.mkdir(exist_ok=True)
        compact(df, date).to_parquet(target, compression="zstd", index=False)
        back = pd.read_parquet(target)
        if date:
            back[date[0]] = pd.to_datetime(back[date[0]]).dt.strftime(date[1])
        pd.testing.assert_frame_equal(back, df, check_dtype=False)
        print(
            f"{target.relative_to(HERE)}: {len(df)} rows, {target.stat().st_size} bytes, "
            f"sha256 {sha256(target)}"
        )


if __name__ == "__main__":
    build(Path(sys.argv[1]))
