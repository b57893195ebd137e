"""DINO-I: identity fidelity in DINO space (docs/METRICS.md, "DINO-I").

Per video: the mean of the F×R cosine matrix between frames and reference images, embedded with the
Hugging Face ``facebook/dino-vits16`` ``ViTModel``; the feature is the CLS token of
``last_hidden_state`` (after the final LayerNorm), not ``pooler_output``. Preprocessing is that
model's image processor: bilinear resize to 224×224 (aspect squashed, no crop), [0, 1], mean = std =
0.5 (:mod:`benchmark.encoders`). DreamVideo's variant (resize 256, crop 224, ImageNet statistics)
gives different numbers and is not the default.
"""

from __future__ import annotations

import torch

from benchmark.metrics._common import mean_pairwise_cosine

__all__ = ["dino_i_score"]


def dino_i_score(frame_embeddings: torch.Tensor, ref_embeddings: torch.Tensor) -> float:
    """DINO-I of one video.

    Args:
        frame_embeddings: float ``(F, 384)`` DINO CLS features of all frames (F >= 1).
        ref_embeddings: float ``(R, 384)`` of every reference image (R >= 1).

    Returns:
        ``mean_{f, r} cos(frame_f, ref_r)`` in [-1, 1]; typically 0.25–0.8 with real weights.

    Raises:
        ValueError: shapes or dtypes wrong.
        MetricUndefined: no frame or no reference.
    """
    return mean_pairwise_cosine(frame_embeddings, ref_embeddings)
