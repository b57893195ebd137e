"""The CI regression subset: the smoke grid, run with random weights, compared with stored values.

``dualbench regression`` runs each method of :data:`DEFAULT_METHODS` on the ``smoke`` grid with
the ``tiny`` backbone and random-weights metric encoders (everything seeded), then compares every
metric of every video with ``results/regression/smoke.json``. A difference beyond the tolerance
fails with a readable diff; ``dualbench regression --update`` rewrites the file deliberately.

Tolerances: see :data:`TOLERANCE_REASON` (written into the stored file too).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from benchmark.metrics import metric_columns
from benchmark.store import load_records, write_json

__all__ = ["DEFAULT_METHODS", "TOLERANCE", "DEFAULT_TOLERANCE", "REGRESSION_FILE", "run_subset", "compare", "regression"]

DEFAULT_METHODS = ["dualreal", "lora"]
REGRESSION_FILE = Path(__file__).resolve().parents[1] / "results" / "regression" / "smoke.json"
#: metric → (absolute tolerance, relative tolerance); a value passes if within either. Columns not
#: named here (metrics in [0, 1] or [-1, 1]) use :data:`DEFAULT_TOLERANCE`.
DEFAULT_TOLERANCE = (1e-3, 0.0)
TOLERANCE: dict[str, tuple[float, float]] = {
    "dynamic_degree": (1e-3, 1e-2),
    "dynamic_degree_delta": (1e-2, 1e-2),
    "dynamic_degree_ref": (1e-3, 1e-2),
}
TOLERANCE_REASON = (
    "On one machine a CPU run is bit-for-bit repeatable (tests check it). Across CPUs the float32 "
    "kernels may sum in another order (AVX2 vs AVX-512 paths), which moves results by ~1e-6 relative "
    "per operation; through training and 10 denoising steps this stays far below 1e-3 on metrics in "
    "[0, 1] and below 1 % on the dynamic degree (pixels). A change of the method, the sampler or a "
    "metric formula moves these numbers by far more (two prompts of one method already differ by "
    "~0.1 in CLIP-T), so the tolerance still catches it."
)
_KEY = ("method", "case", "prompt_index", "seed")


def run_subset(out: Path, methods: list[str], *, progress=None, log=print) -> list[dict[str, Any]]:
    """Run the smoke grid for ``methods`` into ``out``; return the rows to compare."""
    from benchmark.runner import RunConfig, run

    for method in methods:
        summary = run(RunConfig(method=method, grid="smoke", backbone="tiny", out=out, random_metric_weights=True),
                      progress=progress, log=log)
        if summary.failed:
            raise RuntimeError(f"regression run of {method} failed: {summary.errors}")
    df = load_records(out, status="ok")
    rows = []
    for rec in df.to_dict("records"):
        row = {k: rec[k] for k in _KEY}
        row["seed"] = int(row["seed"])
        row["prompt_index"] = int(row["prompt_index"])
        for m in metric_columns():
            v = rec.get(m)
            row[m] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
        rows.append(row)
    return sorted(rows, key=lambda r: tuple(r[k] for k in _KEY))


def compare(stored: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[str]:
    """Readable differences between stored and current rows (empty list: they agree)."""
    def index(rows):
        return {tuple(r[k] for k in _KEY): r for r in rows}

    s, c = index(stored), index(current)
    diffs = [f"missing now: {k}" for k in sorted(s.keys() - c.keys())]
    diffs += [f"new now (not stored): {k}" for k in sorted(c.keys() - s.keys())]
    for key in sorted(s.keys() & c.keys()):
        for m in metric_columns():
            a, b = s[key].get(m), c[key].get(m)
            if a is None and b is None:
                continue
            if a is None or b is None:
                diffs.append(f"{'/'.join(map(str, key))} {m}: stored {a} → now {b}")
                continue
            atol, rtol = TOLERANCE.get(m, DEFAULT_TOLERANCE)
            if abs(a - b) > max(atol, rtol * abs(a)):
                diffs.append(f"{'/'.join(map(str, key))} {m}: stored {a:.6g} → now {b:.6g} (Δ {b - a:+.3g}, tolerance {max(atol, rtol * abs(a)):.3g})")
    return diffs


def regression(*, update: bool = False, methods: list[str] | None = None, out: Path | None = None,
               file: Path = REGRESSION_FILE, progress=None, log=print) -> list[str]:
    """Run the subset and compare (or, with ``update``, rewrite ``file``). Returns the differences."""
    methods = methods or DEFAULT_METHODS
    with tempfile.TemporaryDirectory(prefix="dualbench-regression-") as tmp:
        rows = run_subset(Path(out) if out else Path(tmp), methods, progress=progress, log=log)
    if update:
        write_json(file, {
            "produced_by": f"dualbench regression --update (methods: {', '.join(methods)}; grid smoke; "
                           "backbone tiny; random-weights metric encoders; CPU, fp32)",
            "random_weights": True,
            "tolerance": {m: dict(zip(("abs", "rel"), TOLERANCE.get(m, DEFAULT_TOLERANCE))) for m in metric_columns()},
            "tolerance_reason": TOLERANCE_REASON,
            "rows": rows,
        })
        return []
    if not Path(file).exists():
        return [f"{file} does not exist; create it with `dualbench regression --update`"]
    stored = json.loads(Path(file).read_text(encoding="utf-8"))["rows"]
    stored = [r for r in stored if r["method"] in methods]
    return compare(stored, rows)
