"""Motion Smoothness (docs/METRICS.md, "Motion Smoothness"; VBench ``motion_smoothness.py``).

Procedure, per video of F frames (uint8 RGB):

1. keep the even frames 0, 2, 4, … as float in [0, 1];
2. pad them to a multiple of 16 (replicate, centred);
3. the frame interpolator (AMT-S) predicts the midpoint of each consecutive kept pair
   (t = 0.5, one pass, scale 1);
4. unpad; convert each prediction to uint8 by *truncation* (``x·255`` clipped to [0, 255], then
   cast — not rounded);
5. compare prediction k with the real odd frame 2k+1: uint8 absolute difference, mean over pixels
   and channels;
6. score = ``(255 - mean over comparisons) / 255``.

49 frames → 25 kept → 24 comparisons; 16 frames → 7 comparisons (frame 15 unused). Fewer than 3
frames → no comparison → :class:`MetricUndefined`. VBench may downscale the frames on a small GPU
(``scale < 1``); this implementation never does.

The interpolator is an argument (:class:`benchmark.encoders.AmtInterpolator` for AMT-S), so the
formula is testable with any callable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from benchmark.metrics._common import MetricUndefined, check_frames, padded_pair_batches, unpad

__all__ = [
    "Interpolator",
    "predictions_to_uint8",
    "motion_smoothness_from_predictions",
    "motion_smoothness_predictions",
    "motion_smoothness_score",
]

#: ``interpolate(img0, img1) -> midpoint``: float32 ``(B, 3, H, W)`` in [0, 1] each (H, W already
#: multiples of the pad multiple); returns float ``(B, 3, H, W)``.
Interpolator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def predictions_to_uint8(predictions: torch.Tensor) -> torch.Tensor:
    """Float predictions in [0, 1] → uint8 by truncation, as VBench/AMT's ``tensor2img``.

    ``(x * 255).clip(0, 255)`` then a cast toward zero: 0.999 → 254, not 255.

    Args:
        predictions: float ``(N, 3, H, W)`` (channels first, as the interpolator returns them).

    Returns:
        uint8 ``(N, H, W, 3)``.
    """
    if not predictions.is_floating_point() or predictions.ndim != 4 or predictions.shape[1] != 3:
        raise ValueError(f"predictions: expected float (N, 3, H, W), got {tuple(predictions.shape)} {predictions.dtype}")
    return (predictions.float() * 255.0).clamp_(0.0, 255.0).to(torch.uint8).permute(0, 2, 3, 1)


def motion_smoothness_from_predictions(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-comparison mean absolute error between predicted and real in-between frames.

    Args:
        predicted: uint8 ``(N, H, W, 3)`` (already truncated, see :func:`predictions_to_uint8`).
        real: uint8 ``(N, H, W, 3)``, the real odd frames 1, 3, … in the same order.

    Returns:
        float64 ``(N,)``, each in [0, 255].
    """
    predicted = check_frames(predicted, name="predicted", min_frames=1)
    real = check_frames(real, name="real", min_frames=1)
    if predicted.shape != real.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and real {tuple(real.shape)} differ in shape")
    per_pixel = real.shape[1] * real.shape[2] * real.shape[3]
    diff = (predicted.to(torch.int16) - real.to(torch.int16)).abs_()
    return diff.sum(dim=(1, 2, 3), dtype=torch.int64).double() / per_pixel


def motion_smoothness_predictions(
    frames: torch.Tensor,
    interpolate: Interpolator,
    *,
    pad_multiple: int = 16,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Steps 1–4: the uint8 midpoint predictions between consecutive even frames.

    Args:
        frames: uint8 ``(F, H, W, 3)``, F >= 3.
        interpolate: see :data:`Interpolator`.
        pad_multiple: 16 for AMT.
        batch_size: frame pairs per call of ``interpolate`` (does not change the result beyond
            floating-point noise).
        device: where the padded inputs are put before calling ``interpolate``.

    Returns:
        uint8 ``(K - 1, H, W, 3)`` with K = ceil(F / 2) kept frames; prediction k sits between
        frames 2k and 2k + 2.
    """
    frames = check_frames(frames, min_frames=1)
    if frames.shape[0] < 3:
        raise MetricUndefined(f"needs at least 3 frames (one interpolated frame), got {frames.shape[0]}")
    out = []
    kept = frames[0::2]
    for first, second, pads in padded_pair_batches(kept, pad_multiple=pad_multiple, batch_size=batch_size, device=device, divisor=255.0):
        with torch.inference_mode():
            pred = interpolate(first, second)
        if not torch.isfinite(pred).all():
            raise MetricUndefined("the interpolator returned NaN or infinite values")
        out.append(predictions_to_uint8(unpad(pred, pads)).cpu())
    return torch.cat(out)


def motion_smoothness_score(
    frames: torch.Tensor,
    interpolate: Interpolator,
    *,
    pad_multiple: int = 16,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> float:
    """Motion smoothness of one video (steps 1–6 above).

    Args:
        frames: uint8 ``(F, H, W, 3)``, F >= 3, any H and W (padded internally).
        interpolate: the frame interpolator (AMT-S for the benchmark).

    Returns:
        ``(255 - mean MAE) / 255`` in [0, 1]; typically 0.96–0.98 with AMT-S weights.

    Raises:
        ValueError: not uint8 ``(F, H, W, 3)``.
        MetricUndefined: fewer than 3 frames, frames too small for the interpolator, or
            non-finite predictions.
    """
    predicted = motion_smoothness_predictions(
        frames, interpolate, pad_multiple=pad_multiple, batch_size=batch_size, device=device
    )
    real = frames[1::2][: predicted.shape[0]]
    mae = motion_smoothness_from_predictions(predicted, real)
    return float((255.0 - mae.mean()) / 255.0)
