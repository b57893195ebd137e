"""Box paths for MotionBooth-style motion control, derived from the motion clips by optical flow.

MotionBooth steers the subject along a user-drawn box per frame; it never learns motion from
reference clips. Our cases come with motion clips instead, so the box path is *derived* from them
(docs/BASELINES.md, "MotionBooth-style", boxes):

1. **Flow.** OpenCV Farnebäck dense optical flow between consecutive frames of a clip, on frames
   scaled to at most ``max_side`` pixels (grey). Chosen over torchvision RAFT because RAFT's
   weights cannot be downloaded here and Farnebäck needs none; it is deterministic on CPU.
2. **Camera compensation.** The median flow vector of the frame (the dominant, mostly background
   motion in UCF clips filmed with a panning camera) is subtracted before taking magnitudes.
3. **Moving region.** Pixels whose residual magnitude exceeds ``mean + k·std`` (``k = 1``) of the
   frame's magnitudes and an absolute floor (``min_flow`` pixels) move; the box is the 2nd–98th
   percentile of their coordinates, so isolated outliers do not blow it up. A frame without enough
   moving pixels (< ``min_fraction`` of the frame) keeps the previous box (the first frames fall
   back to a centred box covering ``default_extent`` of each side).
4. **Smoothing.** A centred moving average over ``smooth`` frames of every coordinate.
5. **Latent frames.** CogVideoX's VAE maps frame 0 to latent frame 0 and frames ``4k-3 … 4k`` to
   latent frame ``k``; a latent frame's box is the mean of its frames' boxes
   (:func:`latent_box_path`). At inference the path is resampled to the number of latent frames of
   the generated video (:func:`resample_path`), so a 49-frame clip can steer a 9-frame video.

Boxes are ``(x1, y1, x2, y2)`` as fractions of width and height in ``[0, 1]``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["clip_box_path", "latent_box_path", "resample_path", "box_path_from_clips", "box_token_mask"]


def _centred_box(extent: float) -> np.ndarray:
    lo = (1.0 - extent) / 2
    return np.array([lo, lo, 1.0 - lo, 1.0 - lo], dtype=np.float64)


def clip_box_path(
    clip: torch.Tensor,
    *,
    max_side: int = 128,
    k: float = 1.0,
    min_flow: float = 0.5,
    min_fraction: float = 0.002,
    smooth: int = 5,
    default_extent: float = 0.6,
) -> torch.Tensor:
    """Per-frame box of the moving region of one clip.

    Args:
        clip: uint8 ``(F, H, W, 3)``, F ≥ 1.
        max_side: frames are downscaled so that their longer side is at most this (speed).
        k: threshold = mean + k·std of the camera-compensated flow magnitude.
        min_flow: absolute magnitude floor in (downscaled) pixels per frame.
        min_fraction: fewer moving pixels than this fraction of the frame → keep the previous box.
        smooth: moving-average window (frames) over the path; 1 disables smoothing.
        default_extent: side fraction of the centred box used before any motion is found.

    Returns:
        float32 ``(F, 4)`` boxes ``(x1, y1, x2, y2)`` in ``[0, 1]``; box ``i`` comes from the flow
        between frames ``i`` and ``i + 1`` (the last frame repeats the previous box).

    Raises:
        ValueError: wrong shape or dtype.
    """
    import cv2

    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"clip_box_path expects uint8 (F, H, W, 3), got {tuple(clip.shape)} {clip.dtype}")
    frames = clip.cpu().numpy()
    n, h, w = frames.shape[:3]
    scale = min(1.0, max_side / max(h, w))
    sh, sw = max(8, int(round(h * scale))), max(8, int(round(w * scale)))
    grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (sw, sh), interpolation=cv2.INTER_AREA) for f in frames]
    ys, xs = np.mgrid[0:sh, 0:sw]
    prev_box = _centred_box(default_extent)
    boxes = []
    for i in range(max(n - 1, 0)):
        flow = cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        flow = flow - np.median(flow.reshape(-1, 2), axis=0)  # camera compensation
        mag = np.linalg.norm(flow, axis=-1)
        moving = (mag > mag.mean() + k * mag.std()) & (mag > min_flow)
        if moving.sum() >= max(1, min_fraction * sh * sw):
            mx, my = xs[moving], ys[moving]
            x1, x2 = np.percentile(mx, [2, 98])
            y1, y2 = np.percentile(my, [2, 98])
            box = np.array([x1 / sw, y1 / sh, (x2 + 1) / sw, (y2 + 1) / sh], dtype=np.float64)
            prev_box = np.clip(box, 0.0, 1.0)
        boxes.append(prev_box.copy())
    boxes.append(prev_box.copy())  # last frame (or the only frame)
    path = np.stack(boxes)
    if smooth > 1 and len(path) > 1:
        pad = smooth // 2
        padded = np.concatenate([np.repeat(path[:1], pad, 0), path, np.repeat(path[-1:], pad, 0)])
        kernel = np.ones(smooth) / smooth
        path = np.stack([np.convolve(padded[:, c], kernel, mode="valid")[: len(path)] for c in range(4)], axis=1)
    return torch.from_numpy(path.astype(np.float32))


def latent_box_path(path: torch.Tensor, temporal_compression: int = 4) -> torch.Tensor:
    """Per-latent-frame boxes: latent 0 ← frame 0, latent k ← mean of frames ``4k-3 … 4k``.

    Args:
        path: ``(F, 4)`` per-frame boxes, ``F = 4k + 1``.
        temporal_compression: the VAE's temporal factor (4 for CogVideoX).

    Returns:
        ``(1 + (F - 1) // temporal_compression, 4)``.
    """
    r = temporal_compression
    out = [path[0]]
    for k in range(1, 1 + (path.shape[0] - 1) // r):
        out.append(path[(k - 1) * r + 1 : k * r + 1].mean(0))
    return torch.stack(out)


def resample_path(path: torch.Tensor, n: int) -> torch.Tensor:
    """Linear resampling of a ``(T, 4)`` path to ``n`` points over normalised time."""
    if path.shape[0] == n:
        return path.clone()
    if path.shape[0] == 1:
        return path.expand(n, 4).clone()
    src = torch.linspace(0, 1, path.shape[0])
    dst = torch.linspace(0, 1, n)
    idx = torch.searchsorted(src, dst).clamp(1, path.shape[0] - 1)
    t0, t1 = src[idx - 1], src[idx]
    wgt = ((dst - t0) / (t1 - t0)).unsqueeze(1)
    return path[idx - 1] * (1 - wgt) + path[idx] * wgt


def box_path_from_clips(clips: Sequence[torch.Tensor], *, clip_index: int = 0, temporal_compression: int = 4, **kwargs) -> torch.Tensor:
    """The latent-frame box path of one motion clip (default: the first clip of the case).

    One clip rather than an average over clips: averaging boxes of different clips blurs every path
    towards the centre. ``clip_index`` is taken modulo the number of clips.
    """
    if not clips:
        raise ValueError("box_path_from_clips needs at least one clip")
    clip = clips[clip_index % len(clips)]
    return latent_box_path(clip_box_path(clip, **kwargs), temporal_compression)


def box_token_mask(boxes: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Rasterise ``(T, 4)`` fractional boxes onto a ``(T, grid_h, grid_w)`` bool token grid.

    A token is inside when its cell centre is inside the box; a box that covers no centre still
    marks the cell containing its centre, so every frame has at least one token inside.
    """
    cy = (torch.arange(grid_h, dtype=torch.float32) + 0.5) / grid_h
    cx = (torch.arange(grid_w, dtype=torch.float32) + 0.5) / grid_w
    x1, y1, x2, y2 = (boxes[:, i].float().view(-1, 1, 1) for i in range(4))
    inside = (cx.view(1, 1, -1) >= x1) & (cx.view(1, 1, -1) <= x2) & (cy.view(1, -1, 1) >= y1) & (cy.view(1, -1, 1) <= y2)
    for t in range(boxes.shape[0]):
        if not inside[t].any():
            mx = float((boxes[t, 0] + boxes[t, 2]) / 2)
            my = float((boxes[t, 1] + boxes[t, 3]) / 2)
            inside[t, min(grid_h - 1, int(my * grid_h)), min(grid_w - 1, int(mx * grid_w))] = True
    return inside
