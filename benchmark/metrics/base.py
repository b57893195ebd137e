"""The metric record and what its compute entry may ask of the scorer.

A :class:`Metric` is one row of the metric table (:data:`benchmark.metrics.METRICS`): how the
column is named, printed and ranked, which encoders it needs, which optional inputs, and a
``compute`` callable that turns one video's :class:`MetricInputs` into a float. The scorer, ``eval``,
``table``, ``report`` and the plots read everything about a metric from its record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

__all__ = ["Metric", "MetricInputs", "DIRECTIONS", "OPTIONAL_INPUTS"]

#: ``direction`` values: higher is better, lower is better, closest to 0 is better, none.
DIRECTIONS = ("higher", "lower", "zero", "none")

#: Optional per-video inputs a metric may require, with the note written when one is missing.
OPTIONAL_INPUTS: dict[str, str] = {
    "prompt": "no prompt",
    "ref_images": "no reference images",
    "dd_ref": "no reference motion",
}


class MetricInputs(Protocol):
    """What a compute entry receives for one video (the scorer's implementation caches each piece).

    Attributes:
        frames: uint8 ``(F, H, W, 3)``, the decoded video on CPU.
        fps: frame rate (> 0).
        prompt: the generation prompt with the identity token, or None.
        ref_images: the identity's reference images, uint8 ``(H, W, 3)`` each (may be empty).
        dd_ref: the reference motion's dynamic degree in pixels, or None.
        device: where the encoders run.
        pair_batch_size: frame pairs per call of a pairwise model (RAFT, AMT).
        dd_pad_multiple: RAFT input padding, 8 (VBench) or 16 (the authors' script).
    """

    frames: torch.Tensor
    fps: float
    prompt: str | None
    ref_images: list[torch.Tensor]
    dd_ref: float | None
    device: torch.device
    pair_batch_size: int
    dd_pad_multiple: int

    def encoder(self, name: str) -> Any:
        """The loaded encoder ``name`` (one the metric declares in :attr:`Metric.encoders`)."""

    def frame_embeddings(self, encoder: str) -> torch.Tensor:
        """float32 ``(F, D)`` embeddings of every frame; computed once per video and encoder."""

    def ref_embeddings(self, encoder: str) -> torch.Tensor:
        """float32 ``(R, D)`` embeddings of the reference images; computed once per identity."""

    def text_embedding(self, encoder: str, text: str) -> torch.Tensor:
        """float32 ``(1, D)`` embedding of ``text`` as given; computed once per text."""

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per video under ``key`` (work several metrics share, such as one RAFT
        pass feeding two columns); a :class:`MetricUndefined` it raises is raised again each time."""

    def value(self, metric: str) -> float:
        """The value already computed in this row for ``metric`` (NaN when undefined)."""

    def note(self, text: str) -> None:
        """Add a note to the metric being computed (``metric_notes``), for a value that is defined but
        was computed on a changed input (a prompt cut to the text encoder's length)."""


@dataclass(frozen=True)
class Metric:
    """One row of the metric table.

    Attributes:
        name: column name in results (``clip_t``…).
        label: as printed in tables, ``eval`` output, the report and plots (the paper's Table 1
            heading where there is one).
        description: one line: what the number is.
        unit: ``"cosine"``, ``"score"`` (fraction of 255 grey levels), ``"px"`` or ``"fraction"``.
        decimals: decimals shown (tables, report, ``eval``).
        direction: one of :data:`DIRECTIONS`.
        range: (low, high) of possible values (``math.inf`` for unbounded).
        compute: ``compute(inputs) -> float`` for one video; raises ``MetricUndefined`` when the
            video has no value (the scorer writes NaN and the reason).
        encoders: names in :data:`benchmark.encoders.ENCODERS` the compute entry uses.
        requires: optional inputs (keys of :data:`OPTIONAL_INPUTS`) without which the metric is NaN.
        default: computed when no metric list is given.
        derived_from: a metric whose request brings this column along (``dynamic_degree_delta``
            comes with ``dynamic_degree``); such a column cannot be requested on its own and is
            computed after the requested metrics.
        deviation: a column holding this metric's deviation from a reference; tables show
            ``value (deviation)`` and rank by the deviation's direction.
        reference: a column holding the reference value this metric is compared with.
        tables: ``dualbench table`` numbers whose columns include this metric (1: Table 1;
            2 and 3: the ablations).
        typical: values seen with the real weights, or None.
        info: extra per-video columns written beside the metric, ``{column: fn(inputs)}``.
        source: where the definition comes from (paper section, upstream file).
    """

    name: str
    label: str
    description: str
    unit: str
    decimals: int
    direction: str
    range: tuple[float, float]
    compute: Callable[[MetricInputs], float]
    encoders: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    default: bool = False
    derived_from: str | None = None
    deviation: str | None = None
    reference: str | None = None
    tables: tuple[int, ...] = ()
    typical: tuple[float, float] | None = None
    info: Mapping[str, Callable[[MetricInputs], Any]] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        unknown = [r for r in self.requires if r not in OPTIONAL_INPUTS]
        if unknown:
            raise ValueError(f"metric {self.name}: unknown required input(s) {unknown}; known: {', '.join(OPTIONAL_INPUTS)}")
        if not self.range[0] < self.range[1]:
            raise ValueError(f"metric {self.name}: range {self.range} is empty")

    @property
    def higher_is_better(self) -> bool | None:
        """True / False for ``higher`` / ``lower``, None otherwise (torchmetrics' attribute)."""
        return {"higher": True, "lower": False}.get(self.direction)

    @property
    def arrow(self) -> str:
        """``↑``, ``↓``, ``→0`` or ``""`` for the direction."""
        return {"higher": "↑", "lower": "↓", "zero": "→0", "none": ""}[self.direction]

    @property
    def bounded(self) -> bool:
        """Both ends of :attr:`range` are finite."""
        return math.isfinite(self.range[0]) and math.isfinite(self.range[1])

    def format(self, value: float) -> str:
        """``value`` with :attr:`decimals` decimals; ``"–"`` when it is NaN or missing."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            return "–"
        return "–" if not math.isfinite(v) else f"{v:.{self.decimals}f}"
