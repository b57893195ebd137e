"""T-Cons: temporal consistency in CLIP space (docs/METRICS.md, "T-Cons").

Per video: the mean over t of cos(frame t, frame t+1), all frames embedded with the CLIP-I model
(open_clip ``ViT-B-32-quickgelu`` / ``laion400m_e32``); 49 frames give 48 pairs. DreamVideo uses
the OpenAI ViT-B/32 instead (a named variant, not the default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.metrics._common import check_embeddings

__all__ = ["temporal_consistency_per_pair", "temporal_consistency_score"]


def temporal_consistency_per_pair(frame_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine of each frame with the next.

    Args:
        frame_embeddings: float ``(F, D)`` in frame order, F >= 2.

    Returns:
        float64 ``(F - 1,)`` in [-1, 1].

    Raises:
        ValueError: shapes or dtypes wrong.
        MetricUndefined: fewer than 2 frames.
    """
    x = check_embeddings(frame_embeddings, name="frame_embeddings", min_rows=2).double()
    x = F.normalize(x, dim=-1)
    return (x[:-1] * x[1:]).sum(-1)


def temporal_consistency_score(frame_embeddings: torch.Tensor) -> float:
    """T-Cons of one video: mean of :func:`temporal_consistency_per_pair`.

    Range [-1, 1]; typically 0.95–0.99 with the real weights.
    """
    return float(temporal_consistency_per_pair(frame_embeddings).mean())
