"""The metric table: the seven metrics of Table 1, the dynamic-degree reference columns and VBench's
boolean dynamic degree — one :class:`Metric` record each, the single source for the scorer,
``eval``, ``table``, ``report`` and the plots.

Each formula lives in its own module as a pure per-video function on decoded frames or embeddings
(``<metric>_score``; models are arguments). The records below connect them to the scorer: a
``compute`` entry asks the scorer's :class:`MetricInputs` for the frames, cached embeddings or a
loaded encoder and calls the formula. Work several metrics share is requested, never repeated:
CLIP-I and T-Cons read the same cached LAION-CLIP frame embeddings, and dynamic degree and its
VBench boolean read the same cached RAFT pass (``inputs.shared``).

Adding a metric is one :func:`register_metric` call (a record with a ``compute`` entry); the
scorer computes it, ``eval`` prints it, and with ``tables=(1,)`` ``dualbench table`` shows it.

Definitions, models, preprocessing and the undefined cases: ``docs/METRICS.md``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch

from benchmark.metrics._common import MetricUndefined
from benchmark.metrics.base import DIRECTIONS, OPTIONAL_INPUTS, Metric, MetricInputs
from benchmark.metrics.clip_i import clip_i_score
from benchmark.metrics.clip_t import clean_prompt, clip_t_score, prompt_cut_note
from benchmark.metrics.dino_i import dino_i_score
from benchmark.metrics.dynamic_degree import dynamic_degree_per_pair, dynamic_degree_vbench, sample_frames, sample_interval
from benchmark.metrics.motion_smoothness import motion_smoothness_score
from benchmark.metrics.temporal_consistency import temporal_consistency_score
from benchmark.metrics.temporal_flickering import temporal_flickering_score

__all__ = [
    "Metric",
    "MetricInputs",
    "MetricUndefined",
    "DIRECTIONS",
    "OPTIONAL_INPUTS",
    "METRICS",
    "register_metric",
    "metric_info",
    "requestable_metrics",
    "default_metrics",
    "resolve_metrics",
    "output_columns",
    "metric_columns",
    "table_metrics",
]

#: Every metric and derived column by name, in column order (the order of the paper's Table 1).
METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (at the end of the column order) and return it.

    Raises:
        ValueError: the name is taken; ``derived_from`` names no registered metric, or names a
            derived column; a derived column marked ``default``.
    """
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    if metric.derived_from is not None:
        parent = METRICS.get(metric.derived_from)
        if parent is None or parent.derived_from is not None:
            raise ValueError(f"metric {metric.name!r}: derived_from {metric.derived_from!r} is not a registered metric")
        if metric.default:
            raise ValueError(f"metric {metric.name!r}: a derived column comes with {metric.derived_from}; it cannot be a default")
    METRICS[metric.name] = metric
    return metric


def metric_info(name: str) -> Metric:
    """The record of a metric or derived column.

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def requestable_metrics() -> list[str]:
    """Names that can be asked for (every metric but the derived columns), in column order."""
    return [n for n, m in METRICS.items() if m.derived_from is None]


def default_metrics() -> list[str]:
    """Computed when no metric list is given: the seven metrics of Table 1."""
    return [n for n, m in METRICS.items() if m.default]


def resolve_metrics(metrics: Sequence[str] | str | None) -> list[str]:
    """Validate a metric list (``None`` → :func:`default_metrics`; a comma-separated string is fine).

    Returns:
        The names, each once, in column order.

    Raises:
        ValueError: an unknown name (with the closest known names), a derived column (it comes
            with its parent), or an empty list.
    """
    if metrics is None:
        return default_metrics()
    if isinstance(metrics, str):
        metrics = [m for m in (s.strip() for s in metrics.split(",")) if m]
    known = requestable_metrics()
    wanted: set[str] = set()
    for m in metrics:
        if m in METRICS and METRICS[m].derived_from is not None:
            raise ValueError(f"{m} is computed with {METRICS[m].derived_from}; request that instead")
        if m not in METRICS:
            close = difflib.get_close_matches(m, known, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown metric {m!r}{hint}; known: {', '.join(known)}")
        wanted.add(m)
    if not wanted:
        raise ValueError(f"no metric requested; known: {', '.join(known)}")
    return [m for m in known if m in wanted]


def output_columns(metrics: Sequence[str]) -> list[str]:
    """The requested metrics plus the derived columns they bring along, in column order."""
    wanted = set(metrics)
    return [n for n, m in METRICS.items() if n in wanted or m.derived_from in wanted]


def metric_columns() -> list[str]:
    """Every column a scorer can write (metrics and derived columns), in column order."""
    return list(METRICS)


def table_metrics(table: int) -> list[str]:
    """The metric columns of ``dualbench table`` number ``table`` (1, 2 or 3), in column order."""
    return [n for n, m in METRICS.items() if table in m.tables]


# ------------------------------------------------------------------------------------------------
# Compute entries: from the scorer's cached inputs to the pure formulas
# ------------------------------------------------------------------------------------------------


def _clip_t(x: MetricInputs) -> float:
    text = clean_prompt(x.prompt)
    enc = x.encoder("clip_openai")
    note = prompt_cut_note(x.prompt, enc.token_count(text), enc.context_length)
    if note:
        x.note(note)
    return clip_t_score(x.text_embedding("clip_openai", text), x.frame_embeddings("clip_openai"))


def _clip_i(x: MetricInputs) -> float:
    return clip_i_score(x.frame_embeddings("clip_laion400m"), x.ref_embeddings("clip_laion400m"))


def _dino_i(x: MetricInputs) -> float:
    return dino_i_score(x.frame_embeddings("dino_vits16"), x.ref_embeddings("dino_vits16"))


def _temporal_flickering(x: MetricInputs) -> float:
    return temporal_flickering_score(x.frames)


def _temporal_consistency(x: MetricInputs) -> float:
    return temporal_consistency_score(x.frame_embeddings("clip_laion400m"))


def _motion_smoothness(x: MetricInputs) -> float:
    return motion_smoothness_score(
        x.frames, x.encoder("amt_s"), pad_multiple=16, batch_size=x.pair_batch_size, device=x.device
    )


def _flow_magnitudes(x: MetricInputs) -> torch.Tensor:
    """The top-5 % flow magnitude of each sampled pair: one RAFT pass per video, shared."""
    return x.shared("dynamic_degree_per_pair", lambda: dynamic_degree_per_pair(
        x.frames, x.fps, x.encoder("raft_large"), pad_multiple=x.dd_pad_multiple,
        batch_size=x.pair_batch_size, device=x.device,
    ))


def _dynamic_degree(x: MetricInputs) -> float:
    return float(_flow_magnitudes(x).mean())


def _dynamic_degree_vbench(x: MetricInputs) -> float:
    _, h, w, _ = x.frames.shape
    num_sampled = sample_frames(x.frames, x.fps).shape[0]
    return float(dynamic_degree_vbench(_flow_magnitudes(x), num_sampled=num_sampled, height=h, width=w))


def _dynamic_degree_ref(x: MetricInputs) -> float:
    return float(x.dd_ref)


def _dynamic_degree_delta(x: MetricInputs) -> float:
    return x.value("dynamic_degree") - float(x.dd_ref)


# ------------------------------------------------------------------------------------------------
# The table, in the column order of the paper's Table 1
# ------------------------------------------------------------------------------------------------

_INF = math.inf
_TABLE1 = "DualReal (ICCV 2025) Table 1; docs/METRICS.md"

for _metric in (
    Metric(
        name="clip_t", label="CLIP-T", unit="cosine", decimals=3, direction="higher", range=(-1.0, 1.0),
        description="mean cosine of the prompt (identity token removed) with each frame, OpenAI CLIP ViT-B/32",
        compute=_clip_t, encoders=("clip_openai",), requires=("prompt",), default=True, tables=(1, 2, 3),
        typical=(0.25, 0.35), source=_TABLE1 + ' "CLIP-T"',
    ),
    Metric(
        name="clip_i", label="CLIP-I", unit="cosine", decimals=3, direction="higher", range=(-1.0, 1.0),
        description="mean cosine of every frame with every reference image, LAION-400M CLIP ViT-B/32",
        compute=_clip_i, encoders=("clip_laion400m",), requires=("ref_images",), default=True, tables=(1, 2, 3),
        typical=(0.4, 0.8), source=_TABLE1 + ' "CLIP-I"',
    ),
    Metric(
        name="dino_i", label="DINO-I", unit="cosine", decimals=3, direction="higher", range=(-1.0, 1.0),
        description="mean cosine of every frame with every reference image, DINO ViT-S/16 CLS token",
        compute=_dino_i, encoders=("dino_vits16",), requires=("ref_images",), default=True, tables=(1, 2, 3),
        typical=(0.25, 0.8), source=_TABLE1 + ' "DINO-I"',
    ),
    Metric(
        name="temporal_flickering", label="T.Flickering", unit="score", decimals=3, direction="higher", range=(0.0, 1.0),
        description="(255 - mean absolute difference of consecutive frames) / 255",
        compute=_temporal_flickering, default=True, tables=(1,),
        typical=(0.94, 0.97), source=_TABLE1 + ' "Temporal Flickering"; VBench temporal_flickering.py',
    ),
    Metric(
        name="temporal_consistency", label="T.Cons", unit="cosine", decimals=3, direction="higher", range=(-1.0, 1.0),
        description="mean cosine of consecutive frames, LAION-400M CLIP ViT-B/32",
        compute=_temporal_consistency, encoders=("clip_laion400m",), default=True, tables=(1,),
        typical=(0.95, 0.99), source=_TABLE1 + ' "T-Cons"',
    ),
    Metric(
        name="motion_smoothness", label="Motion Smoothness", unit="score", decimals=3, direction="higher", range=(0.0, 1.0),
        description="(255 - mean error of AMT-S midpoints against the odd frames) / 255",
        compute=_motion_smoothness, encoders=("amt_s",), default=True, tables=(1,),
        typical=(0.96, 0.98), source=_TABLE1 + ' "Motion Smoothness"; VBench motion_smoothness.py',
    ),
    Metric(
        name="dynamic_degree", label="Dynamic Degree", unit="px", decimals=2, direction="none", range=(0.0, _INF),
        description="mean over sampled frame pairs of the top-5 % RAFT flow magnitude",
        compute=_dynamic_degree, encoders=("raft_large",), default=True, tables=(1, 2, 3),
        deviation="dynamic_degree_delta", reference="dynamic_degree_ref",
        info={"dd_interval": lambda x: sample_interval(x.fps), "dd_pad_multiple": lambda x: x.dd_pad_multiple},
        typical=(5.0, 30.0), source=_TABLE1 + ' "Dynamic Degree"; VBench dynamic_degree.py',
    ),
    Metric(
        name="dynamic_degree_ref", label="DD_ref", unit="px", decimals=2, direction="none", range=(0.0, _INF),
        description="dynamic degree of the case's reference motion clips (mean over clips)",
        compute=_dynamic_degree_ref, requires=("dd_ref",), derived_from="dynamic_degree",
        typical=(5.0, 30.0), source=_TABLE1 + ' "Dynamic Degree" (12.02 over all motion data)',
    ),
    Metric(
        name="dynamic_degree_delta", label="DD Δ", unit="px", decimals=2, direction="zero", range=(-_INF, _INF),
        description="DD − DD_ref, DD_ref = the case's motion reference clips",
        compute=_dynamic_degree_delta, requires=("dd_ref",), derived_from="dynamic_degree",
        source=_TABLE1 + ' "Dynamic Degree" (printed in brackets)',
    ),
    Metric(
        name="dynamic_degree_vbench", label="Dynamic Degree (VBench)", unit="fraction", decimals=3, direction="higher",
        range=(0.0, 1.0), description="VBench's boolean per video (1 = dynamic); averaged: the dynamic share",
        compute=_dynamic_degree_vbench, encoders=("raft_large",),
        source="VBench dynamic_degree.py (check_move); docs/METRICS.md",
    ),
):
    register_metric(_metric)
del _metric
