"""The seven metrics of Table 1 (plus VBench's boolean dynamic degree) — one module each.

Each module holds a pure per-video function on decoded frames or embeddings
(``<metric>_score``); models are arguments, loaded by :mod:`benchmark.encoders`; the one scorer
(:mod:`benchmark.scorer`) decodes once and feeds them all. This file is the metric table:
direction, range and unit live here so tables can mark the best value.

Spec: ``shared/docs/METRICS.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmark.metrics._common import MetricUndefined

__all__ = [
    "MetricInfo",
    "METRICS",
    "DEFAULT_METRICS",
    "OPTIONAL_METRICS",
    "DERIVED_COLUMNS",
    "MetricUndefined",
    "metric_info",
]


@dataclass(frozen=True)
class MetricInfo:
    """One row of the metric table.

    Attributes:
        name: column name in results (``clip_t``…).
        label: as printed in the paper's Table 1.
        higher_is_better: True / False, or None when neither (dynamic degree: the deviation from
            the reference motion matters; for ``dynamic_degree_delta`` closer to 0 is better).
        range: (low, high) of possible values (``math.inf`` for unbounded).
        unit: ``"cosine"``, ``"score"`` (fraction of 255 grey levels), ``"px"`` or ``"fraction"``.
        typical: range of values seen with the real weights (METRICS.md), or None.
        encoders: names in :data:`benchmark.encoders.ENCODERS` the metric needs.
        module: the module holding its formula.
    """

    name: str
    label: str
    higher_is_better: bool | None
    range: tuple[float, float]
    unit: str
    typical: tuple[float, float] | None
    encoders: tuple[str, ...]
    module: str


_INF = math.inf

#: The seven Table 1 metrics, then the optional VBench boolean, in column order.
METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("clip_t", "CLIP-T", True, (-1.0, 1.0), "cosine", (0.25, 0.35), ("clip_openai",), "clip_t"),
        MetricInfo("clip_i", "CLIP-I", True, (-1.0, 1.0), "cosine", (0.4, 0.8), ("clip_laion400m",), "clip_i"),
        MetricInfo("dino_i", "DINO-I", True, (-1.0, 1.0), "cosine", (0.25, 0.8), ("dino_vits16",), "dino_i"),
        MetricInfo(
            "temporal_consistency", "T.Cons", True, (-1.0, 1.0), "cosine", (0.95, 0.99), ("clip_laion400m",),
            "temporal_consistency",
        ),
        MetricInfo(
            "temporal_flickering", "T.Flickering", True, (0.0, 1.0), "score", (0.94, 0.97), (), "temporal_flickering"
        ),
        MetricInfo(
            "motion_smoothness", "Motion Smoothness", True, (0.0, 1.0), "score", (0.96, 0.98), ("amt_s",),
            "motion_smoothness",
        ),
        MetricInfo(
            "dynamic_degree", "Dynamic Degree", None, (0.0, _INF), "px", (5.0, 30.0), ("raft_large",), "dynamic_degree"
        ),
        MetricInfo(
            "dynamic_degree_vbench", "Dynamic Degree (VBench)", True, (0.0, 1.0), "fraction", None, ("raft_large",),
            "dynamic_degree",
        ),
    )
}

#: Computed when no metric list is given: the seven metrics of Table 1.
DEFAULT_METRICS: tuple[str, ...] = (
    "clip_t",
    "clip_i",
    "dino_i",
    "temporal_consistency",
    "temporal_flickering",
    "motion_smoothness",
    "dynamic_degree",
)
#: Computed only when asked for.
OPTIONAL_METRICS: tuple[str, ...] = ("dynamic_degree_vbench",)

#: Columns derived from ``dynamic_degree`` and the reference motion (not requestable on their own).
DERIVED_COLUMNS: dict[str, MetricInfo] = {
    "dynamic_degree_ref": MetricInfo(
        "dynamic_degree_ref", "DD (reference)", None, (0.0, _INF), "px", (5.0, 30.0), ("raft_large",), "dynamic_degree"
    ),
    "dynamic_degree_delta": MetricInfo(
        "dynamic_degree_delta", "DD deviation", None, (-_INF, _INF), "px", None, ("raft_large",), "dynamic_degree"
    ),
}


def metric_info(name: str) -> MetricInfo:
    """The table row of a metric or derived column.

    Raises:
        KeyError: unknown name; the message lists the known ones.
    """
    if name in METRICS:
        return METRICS[name]
    if name in DERIVED_COLUMNS:
        return DERIVED_COLUMNS[name]
    known = ", ".join([*METRICS, *DERIVED_COLUMNS])
    raise KeyError(f"unknown metric {name!r}; known: {known}")
