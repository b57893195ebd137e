"""Tables 1–3 of the DualReal paper from a runs folder: aggregation, confidence intervals, rendering.

Every column, label, decimal count and direction comes from the metric table
(:data:`benchmark.metrics.METRICS`): a metric whose record lists table ``n`` in ``tables`` is a
column of Table ``n``; every metric column of the records is aggregated.

Aggregation (:func:`aggregate`, docs/METRICS.md "Aggregation"): per method, only records with
``status == "ok"`` count (``failed`` and ``missing`` records — a video ``dualbench score`` did not
find — are counted apart and named in a note under the table); each metric is averaged over the videos of a case, then over cases with
equal weight (a case with more videos does not weigh more). A case without a value for a metric
(NaN) is left out of that metric's mean only.

Confidence intervals: 95 % percentile bootstrap over cases. For each method
``rng = numpy.random.default_rng(seed)``; ``idx = rng.integers(0, n_cases, (n_boot, n_cases))``
resamples the method's cases (sorted by name) with replacement — the same resample for every
metric; each resample's value is the NaN-ignoring mean of its case means; the interval is
``numpy.nanpercentile(..., [2.5, 97.5])`` (linear interpolation). Every method starts from the same
seed, so a row's interval does not change when other methods are added. With fewer than two cases
there is no interval (NaN).

Marking (:func:`rank_marks`): per column, best in bold and second best underlined, as the paper
does, in the direction of the metric's record; a metric with a ``deviation`` column (Dynamic Degree:
Δ = DD − DD_ref) is ranked by that column's direction instead (the smallest ``|Δ|`` is best). Ranks are taken on the *displayed* (rounded) values, so cells that read the same
get the same mark: every row tied for the best value is bold, and the second mark goes to every row
holding the next distinct value (dense ranking: two tied winners do not use up "second"). NaN cells
are never marked. With ``--paper`` the paper's rows form a separate group, marked among themselves.

Formats: ``markdown`` (``**best**``, ``<u>second</u>``), ``latex`` (booktabs; ``\\textbf{}``,
``\\underline{}``), ``csv`` (the aggregate, one row per method), and ``html`` (used by ``dualbench
report``); the terminal rendering lives with the command (:mod:`benchmark.cli`). Cells read
``value ±h`` where ``h`` is half the width of the 95 % interval; a cell with a deviation reads
``value (Δ ±h)`` with the interval of Δ. Rows computed with any random weights carry a † and a
footnote. Under every table a footnote lists each method's training budget (:func:`budget_text`,
from the records' ``training_budget``), so that a row's training steps and data are never hidden.
"""

from __future__ import annotations

import html
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from benchmark.media import DEGENERATE_RULE
from benchmark.metrics import METRICS, metric_columns, table_metrics

__all__ = [
    "TableFormat",
    "TIMING_COLUMNS",
    "random_rows",
    "ci_columns",
    "count_columns",
    "aggregate_columns",
    "ABLATION_METHODS",
    "aggregate",
    "budget_text",
    "bootstrap_ci",
    "rank_marks",
    "load_paper_table",
    "table_rows",
    "check_table_request",
    "Cell",
    "Row",
    "Group",
    "TableSpec",
    "build_table",
    "count_text",
    "render",
    "render_table",
]

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"

TIMING_COLUMNS = ["fit_seconds", "generate_seconds", "score_seconds"]


def ci_columns() -> list[str]:
    """``<metric>_ci_low``, ``<metric>_ci_high`` for every metric column, in column order."""
    return [f"{m}_ci_{side}" for m in metric_columns() for side in ("low", "high")]


def count_columns() -> list[str]:
    """``<metric>_videos`` for every metric column: how many ok videos have a value (the mean covers them)."""
    return [f"{m}_videos" for m in metric_columns()]


def aggregate_columns() -> list[str]:
    """Column order of :func:`aggregate` (and of ``--format csv``)."""
    return ["method", "videos", "cases", *metric_columns(), *ci_columns(), *count_columns(), *TIMING_COLUMNS,
            "random_weights", "failed", "missing", "degenerate", "ref_images_min", "ref_images_max", "training_budget"]


#: Table 1 row order of the paper (then other methods alphabetically, then ``dualreal``).
PAPER_ORDER = ["motionbooth", "lora", "cogvideox", "dreamvideo"]
TABLE2_SETTINGS = {
    "dualreal-no-joint": "w/o Dual-aware Adaptation",
    "dualreal-no-controller": "w/o StageBlender Controller",
    "dualreal-no-mask": "w/o gradient mask (not in the paper)",
    "dualreal": "DualReal (full)",
}
_GROUPS_RE = re.compile(r"^dualreal-groups-(\d+)$")
#: Ablation-only method names (``dualreal-groups-<n>`` for any n also counts); they are left out of Table 1.
ABLATION_METHODS = ["dualreal-no-joint", "dualreal-no-controller", "dualreal-no-mask",
                    "dualreal-groups-1", "dualreal-groups-2", "dualreal-groups-7", "dualreal-groups-42"]

RANDOM_MARK = "†"
RANDOM_NOTE = "† computed with random weights — not comparable to the paper"
PAPER_SOURCE = "Wang et al., DualReal, ICCV 2025 (arXiv 2505.02192)"


class TableFormat(str, Enum):
    """Output formats of ``dualbench table`` (``rich`` is rendered by the command itself)."""

    rich = "rich"
    markdown = "markdown"
    latex = "latex"
    csv = "csv"
    html = "html"


# ------------------------------------------------------------------------------------------------
# 1. Aggregation
# ------------------------------------------------------------------------------------------------


def _truthy(series: pd.Series) -> pd.Series:
    """True/1/"true" → True; False, None, NaN, anything else → False."""

    def one(v: Any) -> bool:
        if isinstance(v, str):
            return v.strip().lower() in {"true", "1", "yes"}
        try:
            if pd.isna(v):
                return False
        except (TypeError, ValueError):
            return False
        return bool(v)

    return series.map(one).astype(bool)


def _plural(n: str, word: str) -> str:
    return f"{n} {word}" if n == "1" else f"{n} {word}s"


def _span(values: Iterable[Any], fmt=lambda v: f"{v:g}") -> str:
    """``"4"`` for one distinct value, ``"3–10"`` for several (budgets that depend on the case)."""
    uniq = sorted(set(values))
    return fmt(uniq[0]) if len(uniq) == 1 else f"{fmt(uniq[0])}–{fmt(uniq[-1])}"


def _params(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.{2 if unit == 'B' else 1}f} {unit}"
    return f"{n:g}"


def budget_text(budgets: Iterable[Any]) -> str | None:
    """One line describing a method's training budget from its records' ``training_budget`` fields.

    Per run (in order): ``<name> <steps> steps × <data per step> (lr <lr>, <n> params)`` where the
    data is ``k images``, ``k clips``, ``(k images + m clips)`` for steps that see both, or
    ``a × k images, b × m clips`` for a mixed schedule (``a``, ``b``: image and clip steps, expected
    values for a random sampler). A value that differs between cases shows as a range (``3–10``).

    Args:
        budgets: the records' ``training_budget`` values (lists of
            :class:`~dualreal.engine.protocol.TrainingRun` dicts; anything else — a record without
            the field — is ignored).

    Returns:
        The line, ``"no training"`` for a method that learns nothing, or ``None`` when no record
        carries a budget.
    """
    lists = [b for b in budgets if isinstance(b, list)]
    if not lists:
        return None
    runs: dict[str, list[dict[str, Any]]] = {}
    for budget in lists:
        for run in budget:
            runs.setdefault(str(run["name"]), []).append(run)
    if not runs:
        return "no training"
    parts = []
    for name, rs in runs.items():
        steps = _span(r["steps"] for r in rs)
        imgs = _span(r["images_per_step"] for r in rs)
        clips = _span(r["clips_per_step"] for r in rs)
        first = rs[0]
        if not first["clip_steps"]:
            data = f"{steps} steps × {_plural(imgs, 'image')}"
        elif not first["image_steps"]:
            data = f"{steps} steps × {_plural(clips, 'clip')}"
        elif first["image_steps"] == first["clip_steps"] == first["steps"]:
            data = f"{steps} steps × ({_plural(imgs, 'image')} + {_plural(clips, 'clip')})"
        else:
            data = (f"{steps} steps: {_span(r['image_steps'] for r in rs)} × {_plural(imgs, 'image')}, "
                    f"{_span(r['clip_steps'] for r in rs)} × {_plural(clips, 'clip')}")
        lr = _span((r["learning_rate"] for r in rs), lambda v: f"{v:g}".replace("e-0", "e-"))
        params = _span((r["trainable_parameters"] for r in rs), _params)
        parts.append(f"{name} {data} (lr {lr}, {params} params)")
    return "; ".join(parts)


def bootstrap_ci(case_values: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over cases.

    Args:
        case_values: ``(n_cases, n_metrics)`` float array of per-case means (NaN = no value).
        n_boot: number of resamples.
        seed: seed of ``numpy.random.default_rng``.
        level: coverage of the interval.

    Returns:
        ``(low, high)``, each ``(n_metrics,)``; all NaN when there are fewer than two cases.
    """
    values = np.asarray(case_values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"case_values: expected (n_cases, n_metrics), got shape {values.shape}")
    n_cases, n_metrics = values.shape
    if n_cases < 2 or n_boot < 1:
        nan = np.full(n_metrics, np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_cases, size=(n_boot, n_cases))
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN resamples / columns
        boot = np.nanmean(values[idx], axis=1)  # (n_boot, n_metrics)
        low, high = np.nanpercentile(boot, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def random_rows(records: pd.DataFrame) -> np.ndarray:
    """bool per record: computed with random weights (``random_weights``, ``backbone_random_weights``
    or ``metric_random_weights`` true) — the one rule behind every ``†`` of tables and plots."""
    out = np.zeros(len(records), dtype=bool)
    for col in ("random_weights", "backbone_random_weights", "metric_random_weights"):
        if col in records.columns:
            out |= _truthy(records[col]).to_numpy()
    return out


def aggregate(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per method: per-case means averaged over cases, bootstrap CIs, counts, timings.

    Args:
        df: records, one row per video (:func:`benchmark.store.load_records`). Needs ``method`` and
            ``case``; every other column is optional (a missing metric gives NaN).
        n_boot: bootstrap resamples (0 → no intervals).
        seed: bootstrap seed (the same for every method).

    Returns:
        A DataFrame with columns :func:`aggregate_columns`: ``method``, ``videos`` and ``cases``
        (counted over ``status == "ok"`` records), the mean of every metric column
        (:func:`benchmark.metrics.metric_columns`), ``<metric>_ci_low`` / ``<metric>_ci_high``,
        mean timings over ok videos, ``random_weights`` (any record of the method, ok or failed, has
        ``random_weights``, ``backbone_random_weights`` or ``metric_random_weights`` true),
        ``missing`` (records ``missing``: videos ``dualbench score`` did not find) and ``failed``
        (records with any other status), ``<metric>_videos`` (ok videos with a value for the metric:
        the videos its mean covers), ``degenerate`` (ok videos flagged blank or frozen,
        :func:`benchmark.media.degenerate_note`; in the means), ``ref_images_min`` /
        ``ref_images_max`` (reference images CLIP-I and DINO-I compared each video with; missing
        in records of older versions), ``training_budget``. Methods are sorted by name; a method
        with only failed or missing records has ``videos == 0`` and NaN values.
    """
    for col in ("method", "case"):
        if col not in df.columns:
            raise ValueError(f"records need a {col!r} column; got {sorted(map(str, df.columns))}")
    df = df.copy()
    metrics = metric_columns()
    value_cols = [*metrics, *TIMING_COLUMNS]
    for col in value_cols:
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
    df["_random"] = random_rows(df)
    ok = df["status"].eq("ok") if "status" in df.columns else pd.Series(True, index=df.index)

    rows = []
    for method in sorted(df["method"].dropna().unique(), key=str):
        mine = df[df["method"] == method]
        good = mine[ok.loc[mine.index]]
        missing = int(mine["status"].eq("missing").sum()) if "status" in mine.columns else 0
        row: dict[str, Any] = {
            "method": method,
            "videos": int(len(good)),
            "cases": int(good["case"].nunique()),
            "random_weights": bool(mine["_random"].any()),
            "failed": int(len(mine) - len(good) - missing),
            "missing": missing,
        }
        per_case = good.groupby("case", sort=True)[metrics].mean()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = per_case.mean(axis=0, skipna=True) if len(per_case) else pd.Series(dtype=float)
        low, high = bootstrap_ci(per_case.to_numpy(dtype=np.float64).reshape(-1, len(metrics)), n_boot=n_boot, seed=seed)
        for i, m in enumerate(metrics):
            row[m] = float(means.get(m, np.nan))
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = float(low[i]), float(high[i])
        for m in metrics:
            row[f"{m}_videos"] = int(good[m].notna().sum())
        for t in TIMING_COLUMNS:
            row[t] = float(good[t].mean()) if good[t].notna().any() else np.nan
        row["degenerate"] = int(_truthy(good["degenerate"]).sum()) if "degenerate" in good else 0
        refs = pd.to_numeric(good["num_ref_images"], errors="coerce").dropna() if "num_ref_images" in good else []
        row["ref_images_min"] = int(refs.min()) if len(refs) else None
        row["ref_images_max"] = int(refs.max()) if len(refs) else None
        row["training_budget"] = budget_text(good["training_budget"]) if "training_budget" in good else None
        rows.append(row)
    out = pd.DataFrame(rows, columns=aggregate_columns())
    ints = {c: "int64" for c in ("videos", "cases", "failed", "missing", "degenerate", *count_columns())}
    return out.astype({**ints, "ref_images_min": "Int64", "ref_images_max": "Int64", "random_weights": "bool"})


# ------------------------------------------------------------------------------------------------
# 2. Best / second-best marks
# ------------------------------------------------------------------------------------------------


def rank_marks(values: Sequence[float], *, higher_is_better: bool = True, decimals: int | None = None,
               by_abs: bool = False) -> list[str | None]:
    """``"best"`` / ``"second"`` / ``None`` per value (dense ranking on displayed values).

    Args:
        values: one value per row (NaN/None: never marked).
        higher_is_better: direction of the column.
        decimals: round to the displayed precision before comparing (ties as the reader sees them).
        by_abs: rank ``|value|`` (Dynamic Degree's Δ: smallest ``|Δ|`` is best, with
            ``higher_is_better=False``).
    """
    keys: list[float | None] = []
    for v in values:
        if v is None or not math.isfinite(float(v)):
            keys.append(None)
            continue
        k = float(v)
        if decimals is not None:
            k = round(k, decimals)
        if by_abs:
            k = abs(k)
        keys.append(k if higher_is_better else -k)
    distinct = sorted({k for k in keys if k is not None}, reverse=True)
    marks: dict[float, str] = {}
    if distinct:
        marks[distinct[0]] = "best"
    if len(distinct) > 1:
        marks[distinct[1]] = "second"
    return [None if k is None else marks.get(k) for k in keys]


# ------------------------------------------------------------------------------------------------
# 3. The paper's rows
# ------------------------------------------------------------------------------------------------


def load_paper_table(table: int) -> pd.DataFrame:
    """The paper's Table 1, 2 or 3 from ``results/paper_table<N>.csv`` (see ``results/README.md``)."""
    if table not in (1, 2, 3):
        raise ValueError(f"table must be 1, 2 or 3, got {table}")
    path = RESULTS_DIR / f"paper_table{table}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the paper's Table {table} is missing (it ships in the repository's results/)")
    return pd.read_csv(path)


# ------------------------------------------------------------------------------------------------
# 4. Which methods go into which table
# ------------------------------------------------------------------------------------------------


def _is_ablation(method: str) -> bool:
    return method in ABLATION_METHODS or bool(_GROUPS_RE.match(method))


def table_rows(methods: Iterable[str], table: int) -> list[tuple[str, str]]:
    """``(method, setting label)`` of the rows of ``table``, in display order.

    Table 1: every method except the ablation variants, paper order first (MotionBooth, LoRA,
    CogVideoX, DreamVideo), then others alphabetically, then ``dualreal``. Table 2: no-joint,
    no-controller, no-mask, full. Table 3: ``dualreal-groups-<n>`` by n, then ``dualreal`` (full,
    n = 7 by default).
    """
    methods = sorted(set(methods))
    if table == 1:
        rest = [m for m in methods if not _is_ablation(m)]
        order = [m for m in PAPER_ORDER if m in rest]
        order += [m for m in rest if m not in PAPER_ORDER and m != "dualreal"]
        order += ["dualreal"] if "dualreal" in rest else []
        return [(m, m) for m in order]
    if table == 2:
        return [(m, label) for m, label in TABLE2_SETTINGS.items() if m in methods]
    if table == 3:
        groups = sorted((int(g.group(1)), m) for m in methods if (g := _GROUPS_RE.match(m)))
        rows = [(m, "w/o weight groups (n = 1)" if n == 1 else f"n = {n}") for n, m in groups]
        if "dualreal" in methods:
            rows.append(("dualreal", "full (n = 7)"))
        return rows
    raise ValueError(f"table must be 1, 2 or 3, got {table}")


# ------------------------------------------------------------------------------------------------
# 5. The table as data: rows of cells with marks, independent of the output format
# ------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    value: float
    decimals: int
    delta: float | None = None  # Dynamic Degree: Δ vs the motion reference
    ci_half: float | None = None  # half width of the 95 % interval (of Δ for Dynamic Degree)
    mark: str | None = None  # "best" | "second" | None
    delta_decimals: int = 2
    n: int | None = None  # videos the mean covers, shown when fewer than the row's videos

    @property
    def missing(self) -> bool:
        return not math.isfinite(self.value)

    def text(self, *, minus: str = "-", pm: str = "±", two_lines: bool = False) -> str:
        """``0.323 ±0.004``, ``14.96 (+2.94 ±1.10)``, ``0.950 ±0.010 [n=8]``; ``two_lines``: one part per line."""
        if self.missing:
            return "–"
        s = f"{self.value:.{self.decimals}f}"
        ci = f"{pm}{self.ci_half:.{self.decimals}f}" if self.ci_half is not None and math.isfinite(self.ci_half) else ""
        has_delta = self.delta is not None and math.isfinite(self.delta)
        d = f"{self.delta:+.{self.delta_decimals}f}".replace("-", minus) if has_delta else ""
        n = f"n={self.n}" if self.n is not None else ""
        if two_lines:  # narrow cells for the terminal: value, (Δ), ±h, n on lines of their own
            return "\n".join(x for x in (s, f"({d})" if has_delta else "", ci, n) if x)
        if has_delta:
            s = f"{s} ({d}{' ' + ci if ci else ''})"
        elif ci:
            s = f"{s} {ci}"
        return f"{s} [{n}]" if n else s


@dataclass
class Row:
    labels: list[str]
    cells: list[Cell]
    cases: int | None = None
    videos: int | None = None
    random_weights: bool = False

    @property
    def shown_labels(self) -> list[str]:
        """The labels as printed: the last one carries † when random weights were involved."""
        labels = list(self.labels)
        if self.random_weights:
            labels[-1] = f"{labels[-1]} {RANDOM_MARK}"
        return labels


@dataclass
class Group:
    name: str  # "ours" | "paper"
    rows: list[Row]


@dataclass
class TableSpec:
    title: str
    label_headers: list[str]
    metric_headers: list[str]
    metric_arrows: list[str]  # the direction of each metric column ("↑", "|Δ| ↓", …)
    groups: list[Group]
    notes: list[str] = field(default_factory=list)


def _arrow(metric: str) -> str:
    """The header arrow of a metric column: its deviation's rule, else its own direction."""
    m = METRICS[metric]
    if m.deviation is not None:
        return "|Δ| ↓" if METRICS[m.deviation].direction == "zero" else f"Δ {METRICS[m.deviation].arrow}"
    return {"zero": "|·| ↓"}.get(m.direction, m.arrow)


def _rule(metric: str) -> str:
    """How a column is ranked, for the table's note."""
    m = METRICS[metric]
    if m.deviation is not None:
        return f"{m.label}: smallest |Δ|" if METRICS[m.deviation].direction == "zero" else f"{m.label}: by Δ"
    return {"higher": "", "lower": f"{m.label}: lower is better", "zero": f"{m.label}: closest to 0",
            "none": f"{m.label}: not ranked"}[m.direction]


def _marks(values: Sequence[float], metric: str) -> list[str | None]:
    """Best / second marks of a column of values of ``metric`` in its direction (none: no marks)."""
    m = METRICS[metric]
    if m.direction == "none":
        return [None] * len(values)
    return rank_marks(values, higher_is_better=m.direction == "higher", decimals=m.decimals, by_abs=m.direction == "zero")


def _half(low: float, high: float) -> float | None:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    return (high - low) / 2.0


def _make_rows(frame: pd.DataFrame, metrics: list[str], labels: list[list[str]], *, with_ci: bool,
               random_col: bool) -> list[Row]:
    def number(r: pd.Series, col: str) -> float:
        v = r.get(col, np.nan)
        return float(v) if pd.notna(v) else np.nan

    rows: list[Row] = []
    for (_, r), lab in zip(frame.iterrows(), labels):
        cells = []
        for m in metrics:
            info = METRICS[m]
            dev = info.deviation  # the cell shows the deviation and its interval
            ci_src = dev or m
            ci = _half(r.get(f"{ci_src}_ci_low", np.nan), r.get(f"{ci_src}_ci_high", np.nan)) if with_ci else None
            cells.append(Cell(value=number(r, m), decimals=info.decimals, delta=number(r, dev) if dev else None, ci_half=ci,
                              delta_decimals=METRICS[dev].decimals if dev else 2))
        rnd = bool(r.get("random_weights", False)) if random_col else False
        cases = r.get("cases")
        videos = r.get("videos")
        for m, cell in zip(metrics, cells):
            n = r.get(f"{m}_videos")
            if n is not None and pd.notna(n) and pd.notna(videos) and int(n) != int(videos) and not cell.missing:
                cell.n = int(n)
        rows.append(Row(labels=lab, cells=cells, random_weights=rnd,
                        cases=int(cases) if pd.notna(cases) else None,
                        videos=int(videos) if pd.notna(videos) else None))
    # marks, per column, within this group
    for j, m in enumerate(metrics):
        dev = METRICS[m].deviation
        if dev is not None:
            marks = _marks([np.nan if (c := row.cells[j]).missing or c.delta is None else c.delta for row in rows], dev)
        else:
            marks = _marks([row.cells[j].value for row in rows], m)
        for row, mark in zip(rows, marks):
            row.cells[j].mark = mark
    return rows


def _incomplete_note(rows: pd.DataFrame) -> str:
    """``Not in the means: mine 3 missing, lora 1 failed.`` for rows with videos that were not scored
    (``missing``: not found by ``dualbench score``); empty when every planned video is in."""
    parts = []
    for _, r in rows.iterrows():
        counts = [f"{int(r[c])} {c}" for c in ("missing", "failed") if c in r and pd.notna(r[c]) and int(r[c])]
        if counts:
            parts.append(f"{r['method']} {', '.join(counts)}")
    return f"Not in the means: {'; '.join(parts)} (of the videos planned)." if parts else ""


def _reference_and_flag_notes(rows: pd.DataFrame) -> list[str]:
    """The reference-image counts of the rows (``CLIP-I / DINO-I references per video: 3 images``,
    per method when they differ) and the videos flagged degenerate per method."""
    notes = []
    refs = {}
    for _, r in rows.iterrows():
        lo, hi = r.get("ref_images_min"), r.get("ref_images_max")
        if lo is not None and pd.notna(lo):
            refs[r["method"]] = f"{int(lo)}" if int(lo) == int(hi) else f"{int(lo)}–{int(hi)}"
    if refs:
        if len(set(refs.values())) == 1:
            notes.append(f"CLIP-I / DINO-I references per video: {next(iter(refs.values()))} image(s) (every row).")
        else:
            notes.append("CLIP-I / DINO-I references per video differ between rows, which then do not compare like "
                         "with like: " + ", ".join(f"{m} {v}" for m, v in refs.items()) + ".")
    flagged = [f"{r['method']} {int(r['degenerate'])} of {int(r['videos'])}" for _, r in rows.iterrows()
               if "degenerate" in r and pd.notna(r["degenerate"]) and int(r["degenerate"])]
    if flagged:
        notes.append(f"Flagged degenerate videos (in the means): {'; '.join(flagged)} — {DEGENERATE_RULE}.")
    return notes


def build_table(agg: pd.DataFrame, *, table: int = 1, paper: bool = False, n_boot: int = 1000,
                seed: int = 0, extra_notes: Sequence[str] = ()) -> TableSpec:
    """Table ``table`` from :func:`aggregate`'s output (only that table's methods), plus the paper's
    rows; ``extra_notes`` are the caller's lines under the table, after the table's own (e.g. the
    records skipped as unreadable, :func:`benchmark.store.unreadable_note`)."""
    metrics = table_metrics(table)
    headers = [METRICS[m].label + (" (Δ)" if METRICS[m].deviation else "") for m in metrics]
    chosen = table_rows(agg["method"], table)
    by_method = agg.set_index("method")
    ours = by_method.loc[[m for m, _ in chosen]].reset_index() if chosen else agg.iloc[0:0]
    if table == 1:
        label_headers = ["method"]
        labels = [[m] for m, _ in chosen]
    else:
        label_headers = ["setting", "method"]
        labels = [[s, m] for m, s in chosen]
    groups = [Group("ours", _make_rows(ours, metrics, labels, with_ci=True, random_col=True))]
    title = {1: "Table 1: comparison with baselines",
             2: "Table 2: ablation of DualReal's components",
             3: "Table 3: number of weight groups n of the StageBlender Controller"}[table]
    deviations = ""
    for m in (METRICS[m] for m in metrics if METRICS[m].deviation):
        dev, ref = METRICS[m.deviation], m.reference
        values = agg.loc[agg["method"].isin([m for m, _ in chosen]), ref].dropna() if ref in agg else pd.Series(dtype=float)
        deviations += (f"; for {m.label} it is the interval of Δ. Δ = {dev.description}"
                       + (f" (mean {values.mean():.{METRICS[ref].decimals}f} here)" if len(values) else ""))
    rules = "; ".join(r for r in map(_rule, metrics) if r)
    notes = [
        "Mean over the videos of each case, then over cases (equal weight). ± is half the width of the "
        f"95 % bootstrap interval over cases ({n_boot} resamples, seed {seed}){deviations}.",
        f"Bold: best, underlined: second best per column (higher is better{'; ' + rules if rules else ''}), "
        "ranked on the displayed values: ties all get the mark, and the next distinct value is second.",
    ]
    budgets = [(m, by_method.loc[m].get("training_budget")) for m, _ in chosen]
    if any(isinstance(b, str) for _, b in budgets):  # records of this version: every row's budget, or a gap
        notes.append("Training budget per run: optimiser steps × data per step (learning rate, trainable parameters).")
        notes += [f"{m}: {b if isinstance(b, str) else 'not recorded'}" for m, b in budgets]
    if paper:
        p = load_paper_table(table)
        if table == 1:
            plabels = [[f"{lab} (paper)"] for lab in p["label"]]
        else:
            plabels = [[lab, "paper"] for lab in p["label"]]
        groups.append(Group("paper", _make_rows(p, metrics, plabels, with_ci=False, random_col=False)))
        subset = "50 cases, CogVideoX-5B" if table == 1 else "10-case subset, DD_ref 9.04"
        notes.append(f"paper: {PAPER_SOURCE}, Table {table} ({subset}); marked among the paper's rows.")
    incomplete = _incomplete_note(ours)
    if incomplete:
        notes.append(incomplete)
    if any(c.n is not None for r in groups[0].rows for c in r.cells):
        notes.append("[n=…]: the videos a mean covers where the metric is undefined for some of the row's videos "
                     "(docs/METRICS.md gives each metric's undefined cases).")
    notes += _reference_and_flag_notes(ours)
    if any(r.random_weights for g in groups for r in g.rows):
        notes.append(RANDOM_NOTE)
    notes += extra_notes
    return TableSpec(title=title, label_headers=label_headers, metric_headers=headers,
                     metric_arrows=[_arrow(m) for m in metrics], groups=groups, notes=notes)


# ------------------------------------------------------------------------------------------------
# 6. Renderers
# ------------------------------------------------------------------------------------------------


def count_text(v: int | None) -> str:
    return "" if v is None else str(v)


def _md(s: str) -> str:
    """Escape a markdown table cell (a bare ``|`` would end the cell)."""
    return s.replace("|", "\\|")


def render_markdown(spec: TableSpec) -> str:
    head = [*spec.label_headers, *(f"{h} {a}" for h, a in zip(spec.metric_headers, spec.metric_arrows)), "cases", "videos"]
    head = [_md(h) for h in head]
    lines = [f"**{spec.title}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":--"] * len(spec.label_headers) + ["--:"] * (len(head) - len(spec.label_headers))) + "|"]
    for g in spec.groups:
        for row in g.rows:
            cells = []
            for c in row.cells:
                t = _md(c.text())
                cells.append(f"**{t}**" if c.mark == "best" else f"<u>{t}</u>" if c.mark == "second" else t)
            labels = [_md(lab) for lab in row.shown_labels]
            lines.append("| " + " | ".join([*labels, *cells, count_text(row.cases), count_text(row.videos)]) + " |")
    lines += ["", "  \n".join(spec.notes)]
    return "\n".join(lines) + "\n"


_LATEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(s: str) -> str:
    s = "".join(_LATEX_ESC.get(ch, ch) for ch in s)
    return (s.replace("†", r"$^\dagger$").replace("Δ", r"$\Delta$").replace("−", "$-$")
            .replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("—", "---").replace("–", "--"))


_TEX_ARROWS = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "|Δ| ↓": r"$|\Delta|\downarrow$"}


def render_latex(spec: TableSpec) -> str:
    n_lab, n_met = len(spec.label_headers), len(spec.metric_headers)
    ncol = n_lab + n_met + 2
    head = [_tex(h.capitalize()) for h in spec.label_headers]
    head += [f"{_tex(h)} {_TEX_ARROWS.get(a) or _tex(a)}" for h, a in zip(spec.metric_headers, spec.metric_arrows)]
    head += ["Cases", "Videos"]
    lines = [f"% {spec.title} (dualbench table; requires \\usepackage{{booktabs}})",
             r"\begin{tabular}{" + "l" * n_lab + "c" * n_met + "rr}", r"\toprule", " & ".join(head) + r" \\",
             r"\midrule"]
    for gi, g in enumerate(spec.groups):
        if gi:
            lines.append(r"\midrule")
        for row in g.rows:
            cells = []
            for c in row.cells:
                t = _tex(c.text(minus="−", pm="±")).replace("±", r"$\pm$")
                cells.append(rf"\textbf{{{t}}}" if c.mark == "best" else rf"\underline{{{t}}}" if c.mark == "second" else t)
            lines.append(" & ".join([*map(_tex, row.shown_labels), *cells, count_text(row.cases), count_text(row.videos)]) + r" \\")
    lines.append(r"\bottomrule")
    if any(r.random_weights for g in spec.groups for r in g.rows):
        lines.append(rf"\multicolumn{{{ncol}}}{{l}}{{\footnotesize {_tex(RANDOM_NOTE)}}} \\")
    lines.append(r"\end{tabular}")
    lines += [f"% {n}" for n in spec.notes]
    return "\n".join(lines) + "\n"


def render_html(spec: TableSpec) -> str:
    """An HTML ``<table class="results">`` (``<b>`` best, ``<u>`` second) with the notes below it."""
    e = html.escape
    head = [*spec.label_headers, *(f"{h} {a}" for h, a in zip(spec.metric_headers, spec.metric_arrows)), "cases", "videos"]
    out = [f'<table class="results"><caption>{e(spec.title)}</caption>',
           "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr></thead>"]
    for g in spec.groups:
        out.append(f'<tbody class="{e(g.name)}">')
        for row in g.rows:
            tds = [f'<th scope="row">{e(lab)}</th>' for lab in row.shown_labels]
            for c in row.cells:
                t = e(c.text())
                t = f"<b>{t}</b>" if c.mark == "best" else f"<u>{t}</u>" if c.mark == "second" else t
                tds.append(f"<td>{t}</td>")
            tds += [f"<td>{count_text(row.cases)}</td>", f"<td>{count_text(row.videos)}</td>"]
            cls = ' class="random"' if row.random_weights else ""
            out.append(f"<tr{cls}>" + "".join(tds) + "</tr>")
        out.append("</tbody>")
    out.append("</table>")
    out += [f'<p class="note">{e(n)}</p>' for n in spec.notes]
    return "\n".join(out) + "\n"


def _csv(agg: pd.DataFrame, table: int, paper: bool) -> str:
    """The aggregate's rows of ``table`` (columns :func:`aggregate_columns`; Tables 2–3 add ``setting``;
    ``paper`` adds the paper's rows and a ``source`` column, ``ours`` or ``paper``)."""
    chosen = table_rows(agg["method"], table)
    ours = agg.set_index("method").loc[[m for m, _ in chosen]].reset_index() if chosen else agg.iloc[0:0].copy()
    if table != 1:
        ours["setting"] = [s for _, s in chosen]
    if paper:
        p = load_paper_table(table)
        p = p.rename(columns={"label": "setting"}) if table != 1 else p.drop(columns=["label"])
        ours["source"] = "ours"
        p["source"] = "paper"
        ours = pd.concat([ours, p[[c for c in p.columns if c in ours.columns]]], ignore_index=True)
    buf = io.StringIO()
    ours.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()


def render(spec: TableSpec, format: TableFormat | str) -> str:
    """Render a :class:`TableSpec` as markdown, latex or html.

    Raises:
        ValueError: ``csv`` (use :func:`render_table`) or ``rich`` (rendered by ``dualbench table``).
    """
    fmt = TableFormat(format)
    if fmt is TableFormat.markdown:
        return render_markdown(spec)
    if fmt is TableFormat.latex:
        return render_latex(spec)
    if fmt is TableFormat.html:
        return render_html(spec)
    raise ValueError(f"render: {fmt.value} is not a text format here (csv: render_table; rich: dualbench table)")


def render_table(records: pd.DataFrame, *, table: int = 1, format: TableFormat | str = "markdown",
                 paper: bool = False, n_boot: int = 1000, seed: int = 0, extra_notes: Sequence[str] = ()) -> str:
    """Records → aggregated Table ``table`` as text in ``format`` (markdown, latex, csv, html);
    ``extra_notes``: the caller's lines under it (:func:`build_table`; CSV has no notes)."""
    fmt = TableFormat(format)
    agg = aggregate(records, n_boot=n_boot, seed=seed)
    if fmt is TableFormat.csv:
        return _csv(agg, table, paper)
    return render(build_table(agg, table=table, paper=paper, n_boot=n_boot, seed=seed, extra_notes=extra_notes), fmt)


def check_table_request(records: pd.DataFrame, table: int) -> None:
    """Raise ``ValueError`` naming what is missing when ``records`` hold no method of Table ``table``."""
    methods = sorted(records["method"].dropna().unique())
    if not table_rows(methods, table):
        need = {1: "a method other than the ablation variants",
                2: "dualreal, dualreal-no-joint, dualreal-no-controller or dualreal-no-mask",
                3: "dualreal-groups-<n> or dualreal"}[table]
        raise ValueError(f"Table {table} needs runs of {need}; the runs have: {', '.join(methods)}")
