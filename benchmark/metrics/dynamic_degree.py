"""Dynamic Degree (docs/METRICS.md, "Dynamic Degree"; VBench ``dynamic_degree.py``).

Continuous value, as Table 1 reports it, per video:

1. sample every k-th frame, ``k = max(1, round(fps / 8))`` (Python rounding, as VBench): all frames
   at 8 fps, every 3rd at 25 fps;
2. for each consecutive sampled pair, pad both frames to a multiple of ``pad_multiple``
   (replicate, centred) — 16 by default (:data:`DEFAULT_PAD_MULTIPLE`), what the authors' script
   effectively does, its RAFT padder being shadowed by AMT's; 8 is VBench's (identical at 480×720
   and 320×240, not at e.g. 720×404, so Table 1's DD_ref of the UCF Sports clips needs 16);
3. optical flow (RAFT-large, 20 refinement iterations, inputs scaled to [-1, 1] — done by the flow
   function), the final full-resolution flow;
4. per-pixel magnitude; mean of the largest ``int(0.05·H·W)`` values of the *padded* flow;
5. the video's value is the mean over pairs, in pixels at native resolution (it depends on
   resolution and fps — report both).

VBench's boolean (optional column ``dynamic_degree_vbench``): a video is dynamic if at least
``round(4·N/16)`` pairs (N sampled frames) have a top-5% magnitude above ``6·min(H, W)/256``; the
benchmark-level score is the fraction of dynamic videos.

Fewer than 2 sampled frames → :class:`MetricUndefined`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from benchmark.metrics._common import MetricUndefined, check_frames, padded_pair_batches

__all__ = [
    "FlowFn",
    "TOP_FRACTION",
    "PAD_MULTIPLES",
    "DEFAULT_PAD_MULTIPLE",
    "sample_interval",
    "sample_frames",
    "top_fraction_magnitude",
    "dynamic_degree_per_pair",
    "dynamic_degree_score",
    "vbench_thresholds",
    "dynamic_degree_vbench",
]

#: ``flow(img1, img2) -> flow``: float32 ``(B, 3, H, W)`` with pixel values in [0, 255] (H, W
#: multiples of the pad multiple); returns the final flow ``(B, 2, H, W)`` in pixels.
FlowFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Share of the largest flow magnitudes averaged per pair.
TOP_FRACTION = 0.05
#: Valid RAFT input paddings: 8 (VBench) or 16 (the authors' script; docs/METRICS.md, "Dynamic Degree").
PAD_MULTIPLES = (8, 16)
#: The default padding everywhere (``dualbench run`` / ``eval`` / ``score``, the scorer, these
#: functions): 16, as the evaluation behind Table 1 (docs/METRICS.md, "Dynamic Degree").
DEFAULT_PAD_MULTIPLE = 16


def sample_interval(fps: float) -> int:
    """Frame step k = ``max(1, round(fps / 8))`` (Python's round: 20 fps → 2, 25 fps → 3).

    Raises:
        ValueError: fps not a positive finite number.
    """
    if fps is None or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    return max(1, round(fps / 8))


def sample_frames(frames: torch.Tensor, fps: float) -> torch.Tensor:
    """Frames 0, k, 2k, … with k = :func:`sample_interval` (``fps``)."""
    return frames[:: sample_interval(fps)]


def top_fraction_magnitude(flow: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """Mean of the largest ``int(fraction·H·W)`` flow magnitudes of each flow field.

    Args:
        flow: float ``(B, 2, H, W)`` (u, v) in pixels.
        fraction: share of pixels kept (0.05).

    Returns:
        float64 ``(B,)``; magnitudes are computed in float32 as VBench does.

    Raises:
        MetricUndefined: ``int(fraction·H·W) == 0`` (fewer than 20 pixels at 5 %).
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow: expected (B, 2, H, W), got {tuple(flow.shape)}")
    h, w = flow.shape[-2:]
    k = int(h * w * fraction)  # VBench's expression, float product then truncation
    if k < 1:
        raise MetricUndefined(f"a {h}x{w} flow has no top {fraction:.0%} pixels")
    mag = flow.float().square().sum(dim=1).sqrt().flatten(1)
    return mag.topk(k, dim=1, sorted=False).values.double().mean(dim=1)


def dynamic_degree_per_pair(
    frames: torch.Tensor,
    fps: float,
    flow: FlowFn,
    *,
    pad_multiple: int = DEFAULT_PAD_MULTIPLE,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Steps 1–4: the top-5 % flow magnitude of each consecutive sampled pair.

    Args:
        frames: uint8 ``(F, H, W, 3)``.
        fps: the video's frame rate (sets the sampling step).
        flow: see :data:`FlowFn` (:class:`benchmark.encoders.RaftFlow` for RAFT-large).
        pad_multiple: 16 (the authors' script; default) or 8 (VBench).
        batch_size: pairs per call of ``flow`` (does not change the result beyond float noise).
        device: where the padded frames are put before calling ``flow``.

    Returns:
        float64 ``(P,)``, P = number of sampled frames − 1, in pixels.

    Raises:
        MetricUndefined: fewer than 2 sampled frames, or frames too small for the flow model.
    """
    frames = check_frames(frames, min_frames=1)
    sampled = sample_frames(frames, fps)
    if sampled.shape[0] < 2:
        raise MetricUndefined(
            f"needs at least 2 sampled frames; {frames.shape[0]} frame(s) at {fps:g} fps "
            f"(every {sample_interval(fps)}) give {sampled.shape[0]}"
        )
    values = []
    for first, second, _ in padded_pair_batches(sampled, pad_multiple=pad_multiple, batch_size=batch_size, device=device):
        with torch.inference_mode():
            field = flow(first, second)
        if not torch.isfinite(field).all():
            raise MetricUndefined("the flow model returned NaN or infinite values")
        values.append(top_fraction_magnitude(field).cpu())
    return torch.cat(values)


def dynamic_degree_score(
    frames: torch.Tensor,
    fps: float,
    flow: FlowFn,
    *,
    pad_multiple: int = DEFAULT_PAD_MULTIPLE,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
) -> float:
    """Dynamic degree of one video: mean of :func:`dynamic_degree_per_pair`, in pixels.

    Range [0, ∞); typically 5–30 px at 480×720 / 8 fps (Table 1 reference clips: 12.02). Neither
    direction is better: the deviation from the reference motion (``dynamic_degree_delta``) is
    what says the motion intensity was reproduced.
    """
    per_pair = dynamic_degree_per_pair(
        frames, fps, flow, pad_multiple=pad_multiple, batch_size=batch_size, device=device
    )
    return float(per_pair.mean())


def vbench_thresholds(num_sampled: int, height: int, width: int) -> tuple[float, int]:
    """VBench's ``set_params``: ``(6·min(H, W)/256, round(4·N/16))`` on the unpadded size."""
    return 6.0 * (min(height, width) / 256.0), round(4 * (num_sampled / 16.0))


def dynamic_degree_vbench(per_pair: Sequence[float] | torch.Tensor, *, num_sampled: int, height: int, width: int) -> bool:
    """VBench's boolean dynamic degree of one video (its ``check_move``).

    Args:
        per_pair: the top-5 % magnitudes of :func:`dynamic_degree_per_pair`.
        num_sampled: N, the number of sampled frames (= len(per_pair) + 1).
        height, width: the unpadded frame size.

    Returns:
        True if at least ``round(4·N/16)`` pairs exceed ``6·min(H, W)/256`` pixels (and there is
        at least one pair — VBench's loop returns False on an empty list).
    """
    values = [float(v) for v in per_pair]
    thres, count_num = vbench_thresholds(num_sampled, height, width)
    return bool(values) and sum(v > thres for v in values) >= count_num
