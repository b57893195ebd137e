"""Temporal Flickering (docs/METRICS.md, "Temporal Flickering"; VBench ``temporal_flickering.py``).

Per video: ``(255 - mean_t MAE(f_{t+1}, f_t)) / 255`` on all frames at native resolution, no
resampling, the MAE taken over H, W and channels. VBench computes each MAE as ``np.mean`` of a
float32 ``cv2.absdiff``; here the absolute differences are summed exactly as integers, which is the
value float32 approximates (they agree to about 1e-7 relative). No model.

The DualReal protocol scores every video; VBench's official protocol keeps only videos its static
filter accepts — that filter is not applied.
"""

from __future__ import annotations

import torch

from benchmark.metrics._common import check_frames

__all__ = ["temporal_flickering_per_pair", "temporal_flickering_score"]

# Frames per chunk: bounds the int16 difference tensor (about 2 × chunk × H × W × 3 bytes).
_CHUNK = 16


def temporal_flickering_per_pair(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of each consecutive frame pair.

    Args:
        frames: uint8 ``(F, H, W, 3)``, F >= 2, any H and W.

    Returns:
        float64 ``(F - 1,)``, each in [0, 255].

    Raises:
        ValueError: not uint8 ``(F, H, W, 3)``.
        MetricUndefined: fewer than 2 frames.
    """
    frames = check_frames(frames, min_frames=2)
    n = frames.shape[0]
    per_pixel = frames.shape[1] * frames.shape[2] * frames.shape[3]
    sums = []
    for start in range(0, n - 1, _CHUNK):
        stop = min(start + _CHUNK, n - 1)
        a = frames[start:stop].to(torch.int16)
        b = frames[start + 1 : stop + 1].to(torch.int16)
        sums.append((b - a).abs_().sum(dim=(1, 2, 3), dtype=torch.int64))
    return torch.cat(sums).double() / per_pixel


def temporal_flickering_score(frames: torch.Tensor) -> float:
    """Temporal flickering of one video: ``(255 - mean(per-pair MAE)) / 255``.

    Range [0, 1], higher = steadier; typically 0.94–0.97 for generated videos.
    """
    mae = temporal_flickering_per_pair(frames)
    return float((255.0 - mae.mean()) / 255.0)
