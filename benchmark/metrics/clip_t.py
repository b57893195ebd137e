"""CLIP-T: text–video alignment (docs/METRICS.md, "CLIP-T").

Per video: the mean over all frames of cos(text embedding, frame embedding), with the OpenAI CLIP
ViT-B/32 (open_clip ``ViT-B-32`` + QuickGELU, ``openai`` weights). Raw cosine: no ×100 (torchmetrics),
no ×2.5 and no clamp at 0 (CLIPScore).

Prompt handling (the authors' script): cut to 300 characters, *then* remove the identity token
``" *"``; the tokenizer (context 77) truncates longer prompts instead of failing
(:mod:`benchmark.encoders`).
"""

from __future__ import annotations

import torch

from benchmark.metrics._common import check_embeddings, cosine_matrix

__all__ = ["MAX_PROMPT_CHARS", "IDENTITY_TOKEN", "clean_prompt", "prompt_cut_note", "clip_t_per_frame", "clip_t_score"]

#: Prompts are cut to this many characters before tokenising (the authors' script).
MAX_PROMPT_CHARS = 300
#: The identity placeholder of the training prompts ("dog * wearing a cape").
IDENTITY_TOKEN = " *"


def clean_prompt(prompt: str, *, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """Prepare a prompt for CLIP-T: cut to ``max_chars`` characters, then remove every ``" *"``.

    >>> clean_prompt("dog * wearing a cape")
    'dog wearing a cape'

    The order matters and is the authors': a ``" *"`` straddling character 300 is cut first.

    Raises:
        ValueError: ``prompt`` is not a string.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected str, got {type(prompt).__name__}")
    return prompt[:max_chars].replace(IDENTITY_TOKEN, "")


def prompt_cut_note(prompt: str, tokens: int, context_length: int, *, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """What CLIP-T did not read of ``prompt``, or ``""``: the characters after ``max_chars`` and the
    tokens after ``context_length``.

    Args:
        prompt: the raw prompt.
        tokens: token count of :func:`clean_prompt` (``prompt``) with start and end tokens.
        context_length: the text encoder's context (77 for CLIP).

    Returns:
        ``"prompt cut to 300 of its 412 characters; to 77 of its 95 CLIP tokens"`` (either part alone).
    """
    parts = []
    if len(prompt) > max_chars:
        parts.append(f"prompt cut to {max_chars} of its {len(prompt)} characters")
    if tokens > context_length:
        parts.append(f"{'to' if parts else 'prompt cut to'} {context_length} of its {tokens} CLIP tokens")
    return "; ".join(parts)


def clip_t_per_frame(text_embedding: torch.Tensor, frame_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine of the prompt with each frame.

    Args:
        text_embedding: float ``(D,)`` or ``(1, D)``, the CLIP text embedding of the cleaned prompt.
        frame_embeddings: float ``(F, D)``, CLIP image embeddings of all frames (F >= 1).

    Returns:
        float64 ``(F,)`` in [-1, 1].

    Raises:
        ValueError: shapes or dtypes wrong, or more than one text embedding.
    """
    text = check_embeddings(text_embedding, name="text_embedding")
    if text.shape[0] != 1:
        raise ValueError(f"text_embedding: expected one prompt, got {text.shape[0]}")
    frames = check_embeddings(frame_embeddings, name="frame_embeddings")
    return cosine_matrix(frames, text)[:, 0]


def clip_t_score(text_embedding: torch.Tensor, frame_embeddings: torch.Tensor) -> float:
    """CLIP-T of one video: mean over frames of :func:`clip_t_per_frame`.

    Range [-1, 1]; typically 0.25–0.35 with the real weights (Table 1: 0.278–0.336).
    """
    return float(clip_t_per_frame(text_embedding, frame_embeddings).mean())
