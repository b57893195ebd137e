"""Shared pieces of the metric formulas: input checks, cosine matrices, centred padding.

Nothing here loads a model. Every function is pure (no state, no I/O).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = [
    "MetricUndefined",
    "check_frames",
    "check_embeddings",
    "cosine_matrix",
    "mean_pairwise_cosine",
    "pad_to_multiple",
    "padded_pair_batches",
    "unpad",
]


class MetricUndefined(ValueError):
    """The metric has no value for this input (too few frames, frames too small, no prompt...).

    The scorer turns it into ``NaN`` plus a one-line note; called directly, the formula raises it.
    """


def check_frames(frames: torch.Tensor, *, name: str = "frames", min_frames: int = 1) -> torch.Tensor:
    """Check decoded frames: uint8, shape ``(F, H, W, 3)``, at least ``min_frames`` frames.

    Raises:
        ValueError: wrong type, rank, channel count or dtype.
        MetricUndefined: fewer than ``min_frames`` frames.
    """
    if not isinstance(frames, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (F, H, W, 3), got {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {frames.dtype}")
    if frames.shape[0] < min_frames:
        raise MetricUndefined(f"needs at least {min_frames} frames, got {frames.shape[0]}")
    return frames


def check_embeddings(x: torch.Tensor, *, name: str = "embeddings", min_rows: int = 1) -> torch.Tensor:
    """Check an embedding matrix ``(N, D)`` (a single ``(D,)`` vector becomes ``(1, D)``).

    Raises:
        ValueError: not a floating tensor of rank 1 or 2, or non-finite values.
        MetricUndefined: fewer than ``min_rows`` rows.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating dtype, got {x.dtype}")
    if x.shape[0] < min_rows:
        raise MetricUndefined(f"{name}: needs at least {min_rows} rows, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every row of ``a`` with every row of ``b``.

    Args:
        a: ``(N, D)`` float embeddings (not necessarily normalised).
        b: ``(M, D)`` float embeddings, same ``D``.

    Returns:
        float64 ``(N, M)``: ``a_i · b_j / (|a_i| |b_j|)``, in [-1, 1].
    """
    a = check_embeddings(a, name="a").double()
    b = check_embeddings(b, name="b").double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def mean_pairwise_cosine(frame_embeddings: torch.Tensor, ref_embeddings: torch.Tensor) -> float:
    """Mean of the F×R cosine matrix of :func:`cosine_matrix` (every pair counts once): the
    CLIP-I / DINO-I formula. Raises :class:`MetricUndefined` with no frame or no reference."""
    frames = check_embeddings(frame_embeddings, name="frame_embeddings")
    refs = check_embeddings(ref_embeddings, name="ref_embeddings")
    return float(cosine_matrix(frames, refs).mean())


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad ``(B, C, H, W)`` so H and W are multiples of ``multiple``: replicate, centred.

    The extra row/column of an odd padding goes to the bottom/right, as in the ``InputPadder`` of
    RAFT (``sintel`` mode) and of AMT.

    Returns:
        ``(padded, pads)`` with ``pads = (left, right, top, bottom)`` for :func:`unpad`.
    """
    if multiple < 1:
        raise ValueError(f"pad multiple must be >= 1, got {multiple}")
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pads
    return F.pad(x, pads, mode="replicate"), pads


def padded_pair_batches(
    frames: torch.Tensor, *, pad_multiple: int, batch_size: int, device: str | torch.device, divisor: float = 1.0
) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]]:
    """Consecutive frame pairs ``(t, t+1)`` in batches, as padded float tensors.

    Args:
        frames: uint8 ``(F, H, W, 3)``, F >= 2.
        pad_multiple: see :func:`pad_to_multiple`.
        batch_size: pairs per batch.
        device: where the batches are put.
        divisor: the float pixel values are divided by it (255 for [0, 1], as AMT's ``img2tensor``;
            1 keeps [0, 255]).

    Yields:
        ``(first, second, pads)``: float32 ``(B, 3, H', W')`` each, frames t and t+1 of the batch.
    """
    for start in range(0, frames.shape[0] - 1, batch_size):
        stop = min(start + batch_size, frames.shape[0] - 1)
        chunk = frames[start : stop + 1].to(device).permute(0, 3, 1, 2).float()
        if divisor != 1.0:
            chunk = chunk / divisor
        chunk, pads = pad_to_multiple(chunk, pad_multiple)
        yield chunk[:-1], chunk[1:], pads


def unpad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on ``(..., H, W)``."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]
