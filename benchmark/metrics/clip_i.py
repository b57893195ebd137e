"""CLIP-I: identity fidelity in CLIP space (docs/METRICS.md, "CLIP-I").

Per video: the mean of the F×R cosine matrix between every frame and every reference image of the
identity, embedded with open_clip ``ViT-B-32-quickgelu`` / ``laion400m_e32`` (the authors' code;
the paper text names an "enhanced CLIP", kept as an optional variant, not implemented here).
Same CLIP preprocessing for frames and references (:mod:`benchmark.encoders`).
"""

from __future__ import annotations

import torch

from benchmark.metrics._common import mean_pairwise_cosine

__all__ = ["clip_i_score"]


def clip_i_score(frame_embeddings: torch.Tensor, ref_embeddings: torch.Tensor) -> float:
    """CLIP-I of one video.

    Args:
        frame_embeddings: float ``(F, D)``, all frames (F >= 1).
        ref_embeddings: float ``(R, D)``, every reference image of the identity (R >= 1).

    Returns:
        ``mean_{f, r} cos(frame_f, ref_r)`` in [-1, 1]; typically 0.4–0.8 with real weights.

    Raises:
        ValueError: shapes or dtypes wrong.
        MetricUndefined: no frame or no reference.
    """
    return mean_pairwise_cosine(frame_embeddings, ref_embeddings)
