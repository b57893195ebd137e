"""Subject masks for the MotionBooth-style baseline: shipped masks, else OpenCV GrabCut.

MotionBooth trains with a segmentation mask per subject image (its subject-region loss and its
subject-token attention loss both need one). No segmentation model can be downloaded here, so the
sources are, in order (docs/BASELINES.md, "MotionBooth-style"):

1. ``data`` — masks shipped with the identity: an identity folder's ``masks/`` (one mask per image,
   same stems; :func:`benchmark.data.list_identity_masks`) reaches
   :attr:`~dualreal.engine.protocol.CaseData.identity_masks`, one ``(H, W)`` tensor per identity image
   (bool, or uint8/float where > 0 marks the subject). The ``dualreal-bench`` identities ship none
   (their PNGs are fully opaque), so GrabCut is their fallback.
2. ``grabcut`` — the classical fallback: OpenCV GrabCut initialised from a centred rectangle
   (``margin`` of the side on each border), 5 iterations; "probably/definitely foreground" pixels
   are the subject. A GrabCut result that is empty (or a degenerate image) falls back to the
   initial rectangle, and the count of such images is reported.
3. ``ones`` — the whole frame is the subject. Only an ablation: it turns the subject-region loss
   into the plain loss and the attention loss into "attend everywhere".

Which source was used is returned beside the masks so that it lands in the method's checkpoint
config and in every generated video's extras.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MASK_SOURCES", "grabcut_mask", "subject_masks", "resize_mask"]

#: Accepted values of the ``mask_source`` option; ``auto`` = ``data`` when present, else ``grabcut``.
MASK_SOURCES = ("auto", "data", "grabcut", "ones")


def grabcut_mask(image: torch.Tensor, *, margin: float = 0.1, iterations: int = 5, seed: int = 0) -> tuple[torch.Tensor, bool]:
    """Foreground mask of one image by GrabCut from a centred rectangle.

    Args:
        image: uint8 ``(H, W, 3)`` RGB.
        margin: fraction of each side left outside the initial rectangle (``0 <= margin < 0.5``).
        iterations: GrabCut iterations.
        seed: seeds OpenCV's RNG (GrabCut's GMM initialisation uses k-means) for repeatable masks.

    Returns:
        ``(mask, fell_back)``: bool ``(H, W)``, and ``True`` when GrabCut found no foreground and the
        initial rectangle is returned instead.

    Raises:
        ValueError: wrong shape/dtype or margin.
    """
    import cv2

    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"grabcut_mask expects uint8 (H, W, 3), got {tuple(image.shape)} {image.dtype}")
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5), got {margin}")
    h, w = image.shape[:2]
    x0, y0 = int(round(w * margin)), int(round(h * margin))
    rect = (x0, y0, max(1, w - 2 * x0), max(1, h - 2 * y0))
    fallback = np.zeros((h, w), dtype=bool)
    fallback[rect[1] : rect[1] + rect[3], rect[0] : rect[0] + rect[2]] = True
    bgr = np.ascontiguousarray(image.cpu().numpy()[..., ::-1])
    gc_mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    try:
        cv2.grabCut(bgr, gc_mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    except cv2.error:
        return torch.from_numpy(fallback), True
    fg = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
    if not fg.any():
        return torch.from_numpy(fallback), True
    return torch.from_numpy(fg), False


def subject_masks(
    images: Sequence[torch.Tensor],
    shipped: Sequence[torch.Tensor] | None = None,
    *,
    source: str = "auto",
    margin: float = 0.1,
    iterations: int = 5,
) -> tuple[list[torch.Tensor], dict]:
    """One bool ``(H, W)`` subject mask per identity image, and a record of where they came from.

    Args:
        images: uint8 ``(H, W, 3)`` identity images.
        shipped: masks shipped with the data (``case.identity_masks``) or ``None``.
        source: one of :data:`MASK_SOURCES`.
        margin, iterations: GrabCut settings (see :func:`grabcut_mask`).

    Returns:
        ``(masks, info)`` with ``info = {"mask_source": "data"|"grabcut"|"ones",
        "mask_fallbacks": n, "mask_coverage": mean foreground fraction}``.

    Raises:
        ValueError: unknown source; ``source="data"`` without shipped masks; count or size mismatch.
    """
    if source not in MASK_SOURCES:
        raise ValueError(f"unknown mask_source {source!r}; choose one of {MASK_SOURCES}")
    if source == "data" and not shipped:
        raise ValueError("mask_source='data' but the case ships no identity masks")
    if source == "auto":
        source = "data" if shipped else "grabcut"
    fallbacks = 0
    masks: list[torch.Tensor] = []
    if source == "data":
        if len(shipped) != len(images):
            raise ValueError(f"{len(shipped)} shipped masks for {len(images)} identity images")
        for img, m in zip(images, shipped):
            m = m[..., 0] if m.ndim == 3 else m
            if tuple(m.shape) != tuple(img.shape[:2]):
                raise ValueError(f"shipped mask {tuple(m.shape)} does not match image {tuple(img.shape[:2])}")
            masks.append(m > 0 if m.dtype != torch.bool else m.clone())
    elif source == "grabcut":
        for img in images:
            m, fell = grabcut_mask(img, margin=margin, iterations=iterations)
            masks.append(m)
            fallbacks += int(fell)
    else:
        masks = [torch.ones(img.shape[:2], dtype=torch.bool) for img in images]
    coverage = float(np.mean([m.float().mean().item() for m in masks])) if masks else 0.0
    return masks, {"mask_source": source, "mask_fallbacks": fallbacks, "mask_coverage": round(coverage, 4)}


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(..., H, W)`` masks to ``size`` (as MotionBooth resizes its masks).

    Returns float in ``[0, 1]`` of shape ``(..., *size)``; binarise with ``> 0`` where a hard mask is
    wanted (MotionBooth's subject-region loss does, its attention loss keeps the soft values).
    """
    lead = mask.shape[:-2]
    m = mask.float().reshape(-1, 1, *mask.shape[-2:])
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return m.reshape(*lead, *size).clamp(0.0, 1.0)
