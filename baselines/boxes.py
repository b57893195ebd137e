"""Box paths for MotionBooth-style motion control, derived from the motion clips by optical flow.

MotionBooth steers the subject along a user-drawn box per frame; it never learns motion from
reference clips. Our cases come with motion clips instead, so the box path is *derived* from them
(docs/BASELINES.md, "MotionBooth-style", boxes). The box must cover the **subject** — the person
doing the action — not only its fastest-moving part (a strumming hand), so each frame's box is the
region the moving pixels sweep over a window of frames, and never smaller than MotionBooth's own
boxes:

1. **Flow.** OpenCV Farnebäck dense optical flow between consecutive frames of a clip, on frames
   scaled to at most ``max_side`` pixels (grey). Chosen over torchvision RAFT because RAFT's
   weights cannot be downloaded here and Farnebäck needs none; it is deterministic on CPU.
2. **Camera compensation.** The median flow vector of the frame (the dominant, mostly background
   motion in UCF clips filmed with a panning camera) is subtracted before taking magnitudes.
3. **Moving pixels.** Pixels whose residual magnitude exceeds ``mean + k·std`` (``k = 1``) of the
   frame's magnitudes and an absolute floor (``min_flow`` pixels); then the speckle is removed — a
   3 × 3 morphological opening, and of the connected moving regions only those at least ``keep`` (20 %)
   as large as the largest are kept (the actor and its limbs, not compression noise scattered over
   the frame, which a union over frames would otherwise spread over the whole frame).
4. **Union over a window** (the rule). Frame ``j``'s box bounds the union of the moving pixels of
   the frame pairs ``j − window//2 … j + window//2`` (``window = 9``: about a third of a second of
   UCF-101's 25 fps), as the 2nd–98th percentile of their coordinates so isolated outliers do not
   blow it up. A union needs at least ``min_fraction`` of the frame; frames without one take the
   box of the nearest frame that has one.
5. **Minimum size** (the rule). Every box is grown about its centre to at least ``min_side`` of the
   frame's width and of its height (0.3: the size of the boxes MotionBooth ships,
   ``data/scripts/customized_subject/jump_stairs.json`` lines 7–8 and
   ``data/scripts/customized_both/swim_coral.json`` lines 7–8, all 0.3 × 0.3), then moved inside
   the frame.
6. **Smoothing.** A centred moving average over ``smooth`` frames of every coordinate.
7. **Latent frames.** CogVideoX's VAE maps frame 0 to latent frame 0 and frames ``4k-3 … 4k`` to
   latent frame ``k``; a latent frame's box is the mean of its frames' boxes
   (:func:`latent_box_path`). At inference the path is resampled to the number of latent frames of
   the generated video (:func:`resample_path`), so a 49-frame clip can steer a 9-frame video.

A clip in which no frame has moving pixels gives **no** path (:attr:`ClipBoxes.path` is ``None``):
the caller generates without box control and records that fallback.

Boxes are ``(x1, y1, x2, y2)`` as fractions of width and height in ``[0, 1]``.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

__all__ = ["ClipBoxes", "main_regions", "clip_box_path", "latent_box_path", "resample_path", "box_path_from_clips", "box_token_mask"]


class ClipBoxes(NamedTuple):
    """A box path and how it was derived.

    Attributes:
        path: float32 ``(F, 4)`` per-frame boxes (``(L, 4)`` per latent frame from
            :func:`box_path_from_clips`), or ``None`` when no frame of the clip has moving pixels.
        detected_frames: frames whose box came from their own window (the rest took a neighbour's).
        frames: frames of the clip.
    """

    path: torch.Tensor | None
    detected_frames: int
    frames: int


def _grow(box: np.ndarray, min_side: float) -> np.ndarray:
    """``box`` grown about its centre to at least ``min_side`` per dimension, moved inside [0, 1]."""
    out = box.copy()
    for lo, hi in ((0, 2), (1, 3)):
        side = out[hi] - out[lo]
        if side < min_side:
            centre = (out[lo] + out[hi]) / 2
            out[lo], out[hi] = centre - min_side / 2, centre + min_side / 2
        shift = max(0.0, -out[lo]) - max(0.0, out[hi] - 1.0)
        out[lo], out[hi] = max(0.0, out[lo] + shift), min(1.0, out[hi] + shift)
    return out


def main_regions(mask: np.ndarray, *, keep: float = 0.2) -> np.ndarray:
    """The main moving regions of a bool ``(H, W)`` mask (step 3 of the module docstring): a 3 × 3
    morphological opening removes specks, then connected regions (8-connectivity) smaller than
    ``keep`` × the largest one are dropped. Returns a bool mask (all false when nothing is left)."""
    import cv2

    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if count < 2:  # label 0 is the background
        return np.zeros(mask.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return np.isin(labels, 1 + np.flatnonzero(areas >= keep * areas.max()))


def clip_box_path(
    clip: torch.Tensor,
    *,
    max_side: int = 128,
    k: float = 1.0,
    min_flow: float = 0.5,
    min_fraction: float = 0.002,
    keep: float = 0.2,
    window: int = 9,
    min_side: float = 0.3,
    smooth: int = 5,
) -> ClipBoxes:
    """Per-frame boxes covering the moving subject of one clip (module docstring, steps 1–6).

    Args:
        clip: uint8 ``(F, H, W, 3)``, F ≥ 1.
        max_side: frames are downscaled so that their longer side is at most this (speed).
        k: moving pixels: magnitude > mean + k·std of the camera-compensated flow.
        min_flow: absolute magnitude floor in (downscaled) pixels per frame.
        min_fraction: a window's union must cover at least this fraction of the frame.
        keep: connected moving regions smaller than this fraction of the largest one are dropped.
        window: frame pairs whose moving pixels are united per frame (odd; 1: the frame's own pair).
        min_side: smallest box width and height, as fractions of the frame (0: no minimum).
        smooth: moving-average window (frames) over the path; 1 disables smoothing.

    Returns:
        :class:`ClipBoxes` with ``path`` float32 ``(F, 4)`` in ``[0, 1]`` (``None`` when nothing
        moves); the pair ``i`` is the flow between frames ``i`` and ``i + 1``.

    Raises:
        ValueError: wrong shape or dtype, or bad settings.
    """
    import cv2

    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"clip_box_path expects uint8 (F, H, W, 3), got {tuple(clip.shape)} {clip.dtype}")
    if window < 1 or not 0.0 <= min_side <= 1.0:
        raise ValueError(f"window must be >= 1 and min_side in [0, 1], got {window}, {min_side}")
    frames = clip.cpu().numpy()
    n, h, w = frames.shape[:3]
    scale = min(1.0, max_side / max(h, w))
    sh, sw = max(8, int(round(h * scale))), max(8, int(round(w * scale)))
    grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (sw, sh), interpolation=cv2.INTER_AREA) for f in frames]
    moving = np.zeros((max(n - 1, 0), sh, sw), dtype=bool)
    for i in range(n - 1):
        flow = cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        flow = flow - np.median(flow.reshape(-1, 2), axis=0)  # camera compensation
        mag = np.linalg.norm(flow, axis=-1)
        moving[i] = main_regions((mag > mag.mean() + k * mag.std()) & (mag > min_flow), keep=keep)
    ys, xs = np.mgrid[0:sh, 0:sw]
    half = window // 2
    boxes: list[np.ndarray | None] = []
    for j in range(n):
        lo, hi = max(0, j - half), min(n - 1, j + half + 1)  # pairs j-half … j+half that exist
        union = moving[lo:hi].any(axis=0) if hi > lo else np.zeros((sh, sw), dtype=bool)
        if union.sum() >= max(1, min_fraction * sh * sw):
            x1, x2 = np.percentile(xs[union], [2, 98])
            y1, y2 = np.percentile(ys[union], [2, 98])
            boxes.append(np.clip(np.array([x1 / sw, y1 / sh, (x2 + 1) / sw, (y2 + 1) / sh]), 0.0, 1.0))
        else:
            boxes.append(None)
    found = [j for j, b in enumerate(boxes) if b is not None]
    if not found:
        return ClipBoxes(None, 0, n)
    filled = [boxes[j] if boxes[j] is not None else boxes[min(found, key=lambda f: (abs(f - j), f))] for j in range(n)]
    path = np.stack([_grow(b, min_side) for b in filled])
    if smooth > 1 and len(path) > 1:
        pad = smooth // 2
        padded = np.concatenate([np.repeat(path[:1], pad, 0), path, np.repeat(path[-1:], pad, 0)])
        kernel = np.ones(smooth) / smooth
        path = np.stack([np.convolve(padded[:, c], kernel, mode="valid")[: len(path)] for c in range(4)], axis=1)
    return ClipBoxes(torch.from_numpy(path.astype(np.float32)), len(found), n)


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


def box_path_from_clips(
    clips: Sequence[torch.Tensor], *, clip_index: int = 0, temporal_compression: int = 4, **kwargs
) -> ClipBoxes:
    """The latent-frame box path of one motion clip (default: the first clip of the case).

    One clip rather than an average over clips: averaging boxes of different clips blurs every path
    towards the centre. ``clip_index`` is taken modulo the number of clips; ``kwargs`` go to
    :func:`clip_box_path`.

    Returns:
        :class:`ClipBoxes` whose ``path`` is ``(L, 4)`` per latent frame (``None``: nothing moves).
    """
    if not clips:
        raise ValueError("box_path_from_clips needs at least one clip")
    clip = clips[clip_index % len(clips)]
    boxes = clip_box_path(clip, **kwargs)
    if boxes.path is None:
        return boxes
    return boxes._replace(path=latent_box_path(boxes.path, temporal_compression))


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
