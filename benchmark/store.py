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
from typing import Any

import pandas as pd

from dualreal.engine.errors import cause_line
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
    "RecordError",
    "read_record",
    "scan_records",
    "load_records",
    "UNREADABLE_ATTR",
    "unreadable_note",
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


class RecordError(ValueError):
    """A record file that cannot be read as a record: not JSON (truncated, emptied), not a JSON
    object, or not readable. The message is one line, ``"<path>: unreadable record (<cause>)"``;
    ``path`` and ``cause`` are kept as attributes."""

    def __init__(self, path: Path, cause: str):
        super().__init__(f"{path}: unreadable record ({cause})")
        self.path, self.cause = Path(path), cause


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; ``None`` when there is no file there.

    The one reader of record files: ``table``, ``report`` and ``plots`` skip and name a record it
    refuses (:func:`scan_records`), ``run`` and ``score`` redo its video and say so.

    Raises:
        RecordError: the file exists but is not a JSON object (a truncated or 0-byte file, a list,
            a folder), with the cause (:func:`dualreal.engine.errors.cause_line`).
    """
    path = Path(path)
    try:
        rec = read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        cause = "empty file (0 bytes)" if path.is_file() and path.stat().st_size == 0 else cause_line(exc)
        raise RecordError(path, cause) from None
    if not isinstance(rec, dict):
        raise RecordError(path, f"a JSON {type(rec).__name__}, not an object")
    return rec


def scan_records(runs: Path) -> tuple[list[dict[str, Any]], list[RecordError]]:
    """Every record file under ``runs`` (``<method>/<case>/records/*.json``), sorted by path.

    Returns:
        ``(records, unreadable)``: the readable records, and one :class:`RecordError` per file
        :func:`read_record` refuses (skipped, never silently: callers name them).
    """
    records, unreadable = [], []
    for path in sorted(Path(runs).glob("*/*/records/*.json")):
        try:
            rec = read_record(path)
        except RecordError as exc:
            unreadable.append(exc)
            continue
        if rec is not None:  # None: removed since the glob
            records.append(rec)
    return records, unreadable


#: Where :func:`load_records` keeps the records it skipped (``DataFrame.attrs``): ``(path, cause)``
#: pairs of strings.
UNREADABLE_ATTR = "unreadable_records"
#: Skipped records named in :func:`unreadable_note`; the rest are counted.
_NAMED = 10


def load_records(runs: Path, *, status: str | None = None) -> pd.DataFrame:
    """All readable records under ``runs`` as a DataFrame (one row per video); every metric column
    of the metric table (:func:`benchmark.metrics.metric_columns`) is present and numeric.

    A record file that cannot be read (:func:`read_record`: truncated, emptied) is skipped, and
    listed in ``df.attrs["unreadable_records"]`` (:data:`UNREADABLE_ATTR`) for the caller to name
    (:func:`unreadable_note`): one bad file does not hide the others.

    Args:
        runs: a runs folder (``--out`` of ``dualbench run``).
        status: keep only rows of this status, one of :data:`RECORD_STATUSES` (default: all).

    Raises:
        ValueError: an unknown ``status``.
    """
    if status is not None and status not in RECORD_STATUSES:
        raise ValueError(f"status must be one of {', '.join(RECORD_STATUSES)}, got {status!r}")
    rows, unreadable = scan_records(runs)
    df = pd.DataFrame(rows)
    metrics = metric_columns()
    for col in ["method", "case", "prompt", "seed", "status", *metrics]:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64" if col in metrics else "object")
    for col in metrics:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if status is not None and len(df):
        df = df[df["status"] == status]
    df = df.reset_index(drop=True)
    df.attrs[UNREADABLE_ATTR] = [(str(exc.path), exc.cause) for exc in unreadable]
    return df


def unreadable_note(records: pd.DataFrame) -> str:
    """``"1 unreadable record skipped: <path> (<cause>)"`` for the records :func:`load_records`
    skipped (the first 10 named, the rest counted); ``""`` when none was."""
    lines = [f"{path} ({cause})" for path, cause in records.attrs.get(UNREADABLE_ATTR, [])]
    if not lines:
        return ""
    more = f"; … {len(lines) - _NAMED} more" if len(lines) > _NAMED else ""
    return (f"{len(lines)} unreadable record{'s' if len(lines) != 1 else ''} skipped: "
            + "; ".join(lines[:_NAMED]) + more)


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
