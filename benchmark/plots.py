"""Plots of a runs folder (matplotlib, Agg canvas, no pyplot state): PNG and SVG of each figure.

1. :func:`plot_controller_traces` — the identity weight of each block group against the denoising
   step (the paper's Figure 7), averaged over the videos of a method.
2. :func:`plot_metric_bars` — one panel per Table 1 metric of the metric table (and per deviation
   column), one bar per method from zero (or points on a stated, zoomed axis when bars could not
   show the differences: :func:`metric_axis`), 95 % bootstrap intervals as error bars (from
   :func:`benchmark.tables.aggregate`).
3. :func:`plot_dd_vs_ref` — per motion, the reference clips' dynamic degree next to each method's.

``dualbench plots`` draws all three (:func:`make_plots`); ``dualbench report`` embeds them.

Controller trace schema (read by :func:`read_controller_trace`): the method writes one JSON file
beside each video, ``<runs>/<method>/<case>/videos/pNNN_sSEED.json``, holding (other keys are
ignored)::

    {"controller_trace": {
        "timesteps": [t_0, t_1, ..., t_{S-1}],        # scheduler timesteps in denoising order
                                                      # (t_0 the noisiest), numbers, S >= 1
        "w_id": [[g_0, ..., g_{n-1}], ...],           # S rows (one per step) × n groups (group 0 =
                                                      # the shallowest blocks): identity weight
        "w_mo": [[g_0, ..., g_{n-1}], ...]            # optional, same shape: motion weight
    }}

Values are finite numbers. A trace may instead record every guidance branch, as DualReal's
pipeline does: ``"branches": ["unconditional", "conditional"]`` and ``w_id[step][branch][group]``;
the plots then use the ``conditional`` branch (the controller is per sample, so the branches can
differ). Values are averaged over the batch when a call generates several videos. Files without ``controller_trace`` (methods
without a controller) are skipped; a malformed trace raises ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.metrics import METRICS, table_metrics
from benchmark.store import load_records
from benchmark.tables import RANDOM_MARK, RANDOM_NOTE, aggregate, random_rows

__all__ = [
    "ControllerTrace",
    "read_controller_trace",
    "load_controller_traces",
    "plot_controller_traces",
    "plot_metric_bars",
    "metric_axis",
    "plot_dd_vs_ref",
    "make_plots",
]


# ------------------------------------------------------------------------------------------------
# 1. Controller traces
# ------------------------------------------------------------------------------------------------


@dataclass
class ControllerTrace:
    """Controller weights of one method, averaged over its videos.

    Attributes:
        method: registry name.
        timesteps: ``(S,)`` scheduler timesteps of the first trace (denoising order).
        w_id_mean, w_id_std: ``(S, n)`` identity weight per step and group, mean and std over videos.
        w_mo_mean: ``(S, n)`` or ``None`` when no trace had ``w_mo``.
        videos: traces averaged; ``skipped``: traces left out because their (S, n) differs from
            the most common shape.
    """

    method: str
    timesteps: np.ndarray
    w_id_mean: np.ndarray
    w_id_std: np.ndarray
    w_mo_mean: np.ndarray | None
    videos: int
    skipped: int = 0


def _matrix(path: Path, trace: dict, key: str, steps: int) -> np.ndarray:
    rows = trace.get(key)
    branches = trace.get("branches")
    if branches is not None:
        # DualReal's pipeline records every guidance branch: rows[step][branch][group]. The plot
        # shows the conditional branch (the one that carries the prompt).
        if not isinstance(branches, list) or not branches:
            raise ValueError(f"{path}: controller_trace.branches must be a non-empty list of names")
        pick = branches.index("conditional") if "conditional" in branches else len(branches) - 1
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == len(branches) for r in rows):
            raise ValueError(f"{path}: controller_trace.{key} must hold one list per branch {branches} at every step")
        rows = [r[pick] for r in rows]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
        raise ValueError(f"{path}: controller_trace.{key} must be a non-empty list of per-step lists of group weights")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{path}: controller_trace.{key} rows have different group counts {sorted(widths)}")
    if len(rows) != steps:
        raise ValueError(f"{path}: controller_trace.{key} has {len(rows)} rows but there are {steps} timesteps")
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: controller_trace.{key} holds non-numbers") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: controller_trace.{key} holds NaN or infinite values")
    return arr


def read_controller_trace(path: Path) -> dict[str, np.ndarray] | None:
    """One trace file → ``{"timesteps": (S,), "w_id": (S, n)[, "w_mo": (S, n)]}``; ``None`` without a trace.

    Raises:
        ValueError: the file is not JSON or the trace breaks the schema (module docstring).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or "controller_trace" not in data:
        return None
    trace = data["controller_trace"]
    if not isinstance(trace, dict):
        raise ValueError(f"{path}: controller_trace must be an object with timesteps and w_id")
    ts = trace.get("timesteps")
    if not isinstance(ts, list) or not ts:
        raise ValueError(f"{path}: controller_trace.timesteps must be a non-empty list")
    try:
        timesteps = np.asarray(ts, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: controller_trace.timesteps holds non-numbers") from None
    out = {"timesteps": timesteps, "w_id": _matrix(path, trace, "w_id", len(ts))}
    if trace.get("w_mo") is not None:
        out["w_mo"] = _matrix(path, trace, "w_mo", len(ts))
        if out["w_mo"].shape != out["w_id"].shape:
            raise ValueError(f"{path}: controller_trace.w_mo has shape {out['w_mo'].shape}, w_id {out['w_id'].shape}")
    return out


def load_controller_traces(runs: Path) -> dict[str, ControllerTrace]:
    """Every method's traces under ``runs``, averaged over videos (see :class:`ControllerTrace`)."""
    found: dict[str, list[dict[str, np.ndarray]]] = {}
    for path in sorted(Path(runs).glob("*/*/videos/*.json")):
        trace = read_controller_trace(path)
        if trace is not None:
            found.setdefault(path.parents[2].name, []).append(trace)
    result = {}
    for method, traces in found.items():
        shapes = pd.Series([t["w_id"].shape for t in traces]).value_counts()
        shape = shapes.index[0]
        keep = [t for t in traces if t["w_id"].shape == shape]
        skipped = len(traces) - len(keep)
        if skipped:
            warnings.warn(f"{method}: {skipped} controller trace(s) with a shape other than {shape} left out", stacklevel=2)
        w_id = np.stack([t["w_id"] for t in keep])
        mos = [t["w_mo"] for t in keep if "w_mo" in t]
        result[method] = ControllerTrace(
            method=method, timesteps=keep[0]["timesteps"], w_id_mean=w_id.mean(0), w_id_std=w_id.std(0),
            w_mo_mean=np.stack(mos).mean(0) if mos else None, videos=len(keep), skipped=skipped)
    return dict(sorted(result.items()))


# ------------------------------------------------------------------------------------------------
# Saving
# ------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg`` (SVG without a date, fixed ids: reproducible files)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    fig.savefig(png, format="png", metadata={"Software": None})
    with matplotlib.rc_context({"svg.hashsalt": "dualbench", "svg.fonttype": "none"}):
        fig.savefig(svg, format="svg", metadata={"Date": None})
    return [png, svg]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_controller_traces(runs: Path, out_dir: Path, *, random_methods: frozenset[str] = frozenset()) -> list[Path]:
    """``controller_<method>.png/.svg`` per method with traces: w_id per group vs denoising step.

    Args:
        random_methods: methods whose records were computed with random weights: their titles carry
            ``†`` and the random-weights note.

    Returns the written files (empty when no method saved a trace).
    """
    files: list[Path] = []
    for method, tr in load_controller_traces(runs).items():
        steps, groups = tr.w_id_mean.shape
        x = np.arange(1, steps + 1)
        fig = _figure(7.0, 4.2)
        ax = fig.add_subplot()
        cmap = matplotlib.colormaps["viridis"]
        colours = [cmap(i / max(groups - 1, 1)) for i in range(groups)]
        for g in range(groups):
            ax.plot(x, tr.w_id_mean[:, g], color=colours[g], lw=1.6, label=f"group {g + 1}")
            if tr.videos > 1 and groups <= 8:
                ax.fill_between(x, tr.w_id_mean[:, g] - tr.w_id_std[:, g], tr.w_id_mean[:, g] + tr.w_id_std[:, g],
                                color=colours[g], alpha=0.12, lw=0)
        t0, t1 = tr.timesteps[0], tr.timesteps[-1]
        ax.set_xlabel(f"denoising step (1 = noisiest; t = {t0:g} → {t1:g})")
        ax.set_ylabel("identity weight w_id")
        mark = f" {RANDOM_MARK}" if method in random_methods else ""
        ax.set_title(f"{method}{mark}: StageBlender identity weight per block group "
                     f"(mean over {tr.videos} video{'s' if tr.videos != 1 else ''})", fontsize=10)
        if mark:
            fig.suptitle(RANDOM_NOTE, fontsize=9)
        ax.grid(alpha=0.3)
        if groups <= 8:
            ax.legend(title="block group (1 = shallowest)", fontsize=8, title_fontsize=8, loc="best")
        else:
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize

            sm = ScalarMappable(norm=Normalize(1, groups), cmap=cmap)
            fig.colorbar(sm, ax=ax, label="block group (1 = shallowest)")
        files += _save(fig, out_dir, f"controller_{_safe(method)}")
    return files


# ------------------------------------------------------------------------------------------------
# 2. Metric bars
# ------------------------------------------------------------------------------------------------


def bar_metrics() -> list[str]:
    """The panels of :func:`plot_metric_bars`: Table 1's metrics, each followed by its deviation column."""
    out: list[str] = []
    for name in table_metrics(1):
        out.append(name)
        if METRICS[name].deviation is not None:
            out.append(METRICS[name].deviation)
    return out


#: Below this spread (the values and their intervals, relative to their magnitude) bars from zero
#: would all look the same: :func:`metric_axis` then asks for points on a zoomed axis.
POINTS_BELOW_SPREAD = 0.05


def metric_axis(mean: np.ndarray, low: np.ndarray, high: np.ndarray, info) -> tuple[float, float] | None:
    """How a metric panel of :func:`plot_metric_bars` is drawn honestly.

    Bars start at zero (their length is the value). When every value and interval lies within a
    spread under :data:`POINTS_BELOW_SPREAD` of their magnitude (CLIP-I 0.9446–0.9454), bars from
    zero would hide the differences and a bar cut above zero would exaggerate them, so the panel is
    drawn as points on a zoomed axis whose range the title states.

    Args:
        mean, low, high: per method: value and 95 % interval (NaN: none).
        info: the metric's record (a bounded metric's zoomed axis stays within its range).

    Returns:
        None for bars from zero; ``(bottom, top)`` of the zoomed axis for points.
    """
    lo = float(np.nanmin(np.where(np.isfinite(low), low, mean)))
    hi = float(np.nanmax(np.where(np.isfinite(high), high, mean)))
    scale = max(abs(lo), abs(hi))
    if not (math.isfinite(scale) and scale > 0) or hi - lo >= POINTS_BELOW_SPREAD * scale:
        return None
    pad = max(hi - lo, 1e-3 * scale) * 0.5
    bottom, top = lo - pad, hi + pad
    if info.bounded:
        bottom, top = max(info.range[0], bottom), min(info.range[1], top)
    return bottom, top


def plot_metric_bars(agg: pd.DataFrame, out_dir: Path, *, stem: str = "metrics") -> list[Path]:
    """One panel per metric of :func:`bar_metrics`, a bar per method, 95 % CI error bars.

    A panel's title is the metric's label (``→ 0`` added for a closest-to-zero column). Bars start
    at zero, with a zero line; a panel whose values differ too little to see as bars is drawn as
    points on a zoomed axis, its range stated in the title (:func:`metric_axis`). Returns ``[]``
    (no files) when no method has a scored video.

    Args:
        agg: :func:`benchmark.tables.aggregate` output.
        out_dir: folder for ``<stem>.png`` / ``<stem>.svg``.
    """
    metrics = bar_metrics()
    agg = agg[agg["videos"] > 0].reset_index(drop=True) if "videos" in agg else agg
    present = [m for m in metrics if m in agg]
    if agg.empty or not np.isfinite(agg[present].to_numpy(dtype=float)).any():
        return []  # nothing scored
    names = [f"{m}{' ' + RANDOM_MARK if r else ''}" for m, r in zip(agg["method"], agg.get("random_weights", [False] * len(agg)))]
    cols = 4
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(max(10.0, 1.1 * cols * max(3, len(agg))), 3.2 * rows + 0.4)
    x = np.arange(len(agg))
    colours = [matplotlib.colormaps["tab10"](i % 10) for i in range(len(agg))]
    for k, m in enumerate(metrics):
        info = METRICS[m]
        title = info.label + (" (→ 0)" if info.direction == "zero" else "")
        ax = fig.add_subplot(rows, cols, k + 1)
        mean = agg[m].to_numpy(dtype=float) if m in agg else np.full(len(agg), np.nan)
        if not np.isfinite(mean).any():
            ax.set_title(title, fontsize=10)
            ax.text(0.5, 0.5, "not scored", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        low = agg.get(f"{m}_ci_low", pd.Series(np.nan, index=agg.index)).to_numpy(dtype=float)
        high = agg.get(f"{m}_ci_high", pd.Series(np.nan, index=agg.index)).to_numpy(dtype=float)
        err = np.vstack([np.where(np.isfinite(low), mean - low, 0.0), np.where(np.isfinite(high), high - mean, 0.0)])
        err = np.clip(np.nan_to_num(err), 0, None)
        randoms = list(agg.get("random_weights", [False] * len(agg)))
        axis = metric_axis(mean, low, high, info)
        if axis is None:  # bars, from zero
            bars = ax.bar(x, np.nan_to_num(mean), yerr=err, capsize=3, color=colours, edgecolor="black", lw=0.5)
            for bar, rnd, val in zip(bars, randoms, mean):
                if rnd:
                    bar.set_hatch("//")
                if not math.isfinite(val):
                    bar.set_alpha(0.0)
            bottom, top = ax.get_ylim()
            ax.set_ylim(min(bottom, 0.0), max(top, 0.0))
        else:  # points on a zoomed axis, its range stated in the title
            for xi, val, e, colour, rnd in zip(x, mean, err.T, colours, randoms):
                if math.isfinite(val):
                    ax.errorbar([xi], [val], yerr=e.reshape(2, 1), fmt="D" if rnd else "o", color=colour, capsize=3,
                                mec="black", mew=0.5)
            ax.set_ylim(*axis)
            d = info.decimals + 1
            title += f"\npoints; axis {axis[0]:.{d}f}–{axis[1]:.{d}f}, not from 0"
        if info.direction == "zero" or axis is None:
            ax.axhline(0, color="black", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(agg) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    note = "error bars: 95 % bootstrap interval over cases"
    if "random_weights" in agg and agg["random_weights"].any():
        note += f"; hatched {RANDOM_NOTE}"
    fig.suptitle(note, fontsize=9)
    return _save(fig, out_dir, stem)


# ------------------------------------------------------------------------------------------------
# 3. Dynamic degree vs the motion reference
# ------------------------------------------------------------------------------------------------


def dd_by_motion(records: pd.DataFrame, metric: str = "dynamic_degree") -> pd.DataFrame:
    """Rows = motions, columns = ``reference`` + methods: the mean of ``metric`` (per case, then over
    the motion's cases) and of its reference column (:attr:`~benchmark.metrics.Metric.reference`)."""
    ref_col = METRICS[metric].reference
    if records.empty or "motion" not in records or metric not in records:
        return pd.DataFrame()
    ok = records[records["status"].eq("ok")] if "status" in records else records
    ok = ok.assign(**{metric: pd.to_numeric(ok[metric], errors="coerce"),
                      ref_col: pd.to_numeric(ok.get(ref_col, np.nan), errors="coerce")})
    if ok[metric].isna().all():
        return pd.DataFrame()
    per_case = ok.groupby(["method", "motion", "case"])[metric].mean().reset_index()
    table = per_case.groupby(["motion", "method"])[metric].mean().unstack("method")
    ref = ok.groupby("motion")[ref_col].mean()
    table.insert(0, "reference", ref.reindex(table.index))
    return table.sort_index()


def plot_dd_vs_ref(records: pd.DataFrame, out_dir: Path, *, metric: str = "dynamic_degree", stem: str = "dd_vs_ref") -> list[Path]:
    """Grouped bars per motion: the reference clips' value of ``metric`` (grey, hatched) and each
    method's mean (:func:`dd_by_motion`); methods computed with random weights carry ``†`` in the
    legend and the figure the random-weights note."""
    table = dd_by_motion(records, metric)
    if table.empty:
        return []
    info = METRICS[metric]
    random = _random_methods(records)
    motions, series = list(table.index), list(table.columns)
    width = 0.8 / len(series)
    fig = _figure(max(7.0, 0.35 * len(motions) * len(series) + 2), 4.2)
    ax = fig.add_subplot()
    x = np.arange(len(motions))
    for i, name in enumerate(series):
        vals = table[name].to_numpy(dtype=float)
        kw = dict(color="0.75", hatch="..", edgecolor="0.3") if name == "reference" else \
            dict(color=matplotlib.colormaps["tab10"]((i - 1) % 10), edgecolor="black")
        label = f"{name} {RANDOM_MARK}" if name in random else name
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(vals), width, label=label, lw=0.5, **kw)
    ax.set_xticks(x, motions, rotation=30 if len(motions) > 3 else 0, ha="right" if len(motions) > 3 else "center")
    ax.set_ylabel(f"{info.label} ({info.unit})")
    ax.set_title(f"{info.label} per motion: reference clips vs generated videos", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    if random:
        fig.suptitle(RANDOM_NOTE, fontsize=9)
    return _save(fig, out_dir, stem)


def _random_methods(records: pd.DataFrame) -> frozenset[str]:
    """Methods with any record computed with random weights (:func:`benchmark.tables.random_rows`)."""
    if records.empty or "method" not in records:
        return frozenset()
    return frozenset(records.loc[random_rows(records), "method"].unique())


# ------------------------------------------------------------------------------------------------
# All plots
# ------------------------------------------------------------------------------------------------


def make_plots(runs: Path, out_dir: Path, *, records: pd.DataFrame | None = None,
               agg: pd.DataFrame | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, list[Path]]:
    """All plots of a runs folder into ``out_dir``: ``{"metrics": [...], "dd_vs_ref": [...], "controller": [...]}``."""
    if records is None:
        records = load_records(runs)
    if agg is None:
        agg = aggregate(records, n_boot=n_boot, seed=seed) if not records.empty else pd.DataFrame()
    return {
        "metrics": plot_metric_bars(agg, out_dir) if not agg.empty else [],
        "dd_vs_ref": plot_dd_vs_ref(records, out_dir),
        "controller": plot_controller_traces(runs, out_dir, random_methods=_random_methods(records)),
    }
