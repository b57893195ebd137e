"""Results store: one JSON record per finished (method, case, prompt, seed).

Layout under a runs folder (docs/ARCHITECTURE.md)::

    <runs>/<method>/<case>/records/p003_s42.json

Each record is written atomically (temp file in the same folder, ``fsync``, ``os.replace``), so a
crash never leaves a half record, and several processes — or nodes on a shared filesystem — can
write into one runs folder at once: they never write the same file name unless they do the same
work, and then the last complete write wins. A record is the proof that its video is finished.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from dualreal.engine.io import atomic_path, atomic_write_text
from benchmark.metrics import metric_columns

__all__ = [
    "video_stem",
    "record_path",
    "video_path",
    "OUTPUT_FORMATS",
    "RECORD_STATUSES",
    "write_json",
    "read_json",
    "write_record",
    "iter_records",
    "load_records",
    "export_records",
    "output_format",
]

#: Formats of :func:`export_records`, chosen by the file's extension.
OUTPUT_FORMATS = (".csv", ".parquet", ".json")
#: A record's ``status``: ``ok`` (scored), ``failed`` (an error, in ``error``), ``missing`` (a video
#: ``dualbench score`` did not find). Only ``ok`` records enter the means; the others are counted.
RECORD_STATUSES = ("ok", "failed", "missing")

def video_stem(prompt_index: int, seed: int) -> str:
    """``p003_s42``: the file stem shared by a video, its extras and its record."""
    return f"p{prompt_index:03d}_s{seed}"


def record_path(runs: Path, method: str, case: str, prompt_index: int, seed: int) -> Path:
    return Path(runs) / method / case / "records" / f"{video_stem(prompt_index, seed)}.json"


def video_path(runs: Path, method: str, case: str, prompt_index: int, seed: int) -> Path:
    return Path(runs) / method / case / "videos" / f"{video_stem(prompt_index, seed)}.mp4"


def _clean(value: Any) -> Any:
    """JSON has no NaN: store missing metrics as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    """Atomic, strict JSON (NaN/inf written as ``null``)."""
    return atomic_write_text(path, json.dumps(_clean(data), indent=1, sort_keys=False, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_record(runs: Path, record: dict[str, Any]) -> Path:
    """Write one record at its canonical place; ``record`` must have method, case, prompt_index, seed."""
    path = record_path(runs, record["method"], record["case"], record["prompt_index"], record["seed"])
    return write_json(path, record)


def iter_records(runs: Path) -> Iterator[dict[str, Any]]:
    """Every readable record under ``runs`` (unreadable files are reported, not silently dropped)."""
    runs = Path(runs)
    for path in sorted(runs.glob("*/*/records/*.json")):
        try:
            yield read_json(path)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: unreadable record ({exc})") from None


def load_records(runs: Path, *, status: str | None = None) -> pd.DataFrame:
    """All records under ``runs`` as a DataFrame (one row per video); every metric column of the
    metric table (:func:`benchmark.metrics.metric_columns`) is present and numeric.

    Args:
        runs: a runs folder (``--out`` of ``dualbench run``).
        status: keep only rows of this status, one of :data:`RECORD_STATUSES` (default: all).

    Raises:
        ValueError: an unreadable record; an unknown ``status``.
    """
    if status is not None and status not in RECORD_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RECORD_STATUSES)}, got {status!r}")
    rows = list(iter_records(runs))
    df = pd.DataFrame(rows)
    metrics = metric_columns()
    for col in ["method", "case", "prompt", "seed", "status", *metrics]:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64" if col in metrics else "object")
    for col in metrics:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if status is not None and len(df):
        df = df[df["status"] == status]
    return df.reset_index(drop=True)


def output_format(out: str | os.PathLike, formats: tuple[str, ...] = OUTPUT_FORMATS, what: str = "format") -> str:
    """The lower-case extension of ``out`` when it is one of ``formats``.

    Raises:
        ValueError: ``"<out>: unknown <what> <ext>; use one of <formats>"``.
    """
    ext = Path(out).suffix.lower()
    if ext not in formats:
        raise ValueError(f"{out}: unknown {what} {ext or '(none)'}; use one of {', '.join(formats)}")
    return ext


def export_records(df: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write rows (records, ``eval`` rows) as CSV, parquet or JSON (a list of objects), chosen by
    ``out``'s extension, atomically.

    Raises:
        ValueError: an extension other than :data:`OUTPUT_FORMATS`.
    """
    out = Path(out)
    ext = output_format(out)
    with atomic_path(out, suffix=ext) as tmp:
        if ext == ".csv":
            df.to_csv(tmp, index=False)
        elif ext == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            tmp.write_text(df.to_json(orient="records", indent=1, double_precision=15), encoding="utf-8")
    return out
