"""Prompt embeddings, computed once per prompt and reused: the one cache of T5 outputs.

A CogVideoX pipeline call encodes its prompt *and* its negative prompt (``""`` by default) with the
T5 encoder — at 5B a 4.8 B-parameter model over 226 tokens — every time it is called. Every place
that needs prompt embeddings asks :func:`prompt_embeddings` instead: the generation paths of every
method (:func:`dualreal.pipeline.DualRealPipeline` for DualReal and the DreamVideo-style baseline,
:func:`baselines.cogvideox.generate_with_pipeline` for ``cogvideox``, LoRA and MotionBooth, which hand
the embeddings to diffusers' ``CogVideoXPipeline`` as ``prompt_embeds`` / ``negative_prompt_embeds``)
and training (:func:`dualreal.engine.trainer.encode_case`, the DreamVideo-style empty prompt).

The embeddings are exactly what the pipeline would compute itself (its own ``encode_prompt``, same
tokenizer call, same dtype), so a video is bit-identical with and without the cache.

Keys. An entry is keyed by the text encoder and the tokenizer *objects* (checked by identity through
weak references, so a new model at a recycled address can never hit an old entry), the
``max_sequence_length`` and the prompt text. Values live on the CPU in the encoder's output dtype
(226 × 4096 bf16 = 1.8 MB per prompt at 5B) and are moved to the requested device per call; the
cache keeps the :data:`DEFAULT_MAX_ENTRIES` most recently used prompts.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

import torch

__all__ = ["PromptEmbeddingCache", "PROMPT_EMBEDDINGS", "DEFAULT_MAX_ENTRIES", "prompt_embeddings", "pipeline_prompt_kwargs"]

#: Prompts kept (least recently used dropped first): the 50 evaluation prompts of a case, the
#: training prompts and the empty negative prompt fit many times over.
DEFAULT_MAX_ENTRIES = 256


def _ref(obj: Any) -> Any:
    """A weak reference to ``obj`` where the type allows one, else a strong one (a callable either way)."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


class PromptEmbeddingCache:
    """A least-recently-used cache of prompt embeddings (module docstring).

    Args:
        max_entries (`int`, defaults to :data:`DEFAULT_MAX_ENTRIES`): prompts kept.

    Attributes:
        encoder_calls: how many prompts were run through a text encoder (misses).
        hits: how many requests were answered from the cache.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.max_entries = int(max_entries)
        self._entries: OrderedDict[tuple, tuple[Any, Any, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self.encoder_calls = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.encoder_calls = self.hits = 0

    def get(self, pipe: Any, prompt: str, *, max_sequence_length: int, device: str | torch.device | None = None) -> torch.Tensor:
        """The embeddings of ``prompt`` as ``pipe`` would compute them.

        Args:
            pipe: a diffusers ``CogVideoXPipeline`` (its ``text_encoder``, ``tokenizer`` and
                ``encode_prompt`` are used).
            prompt: the text (``""`` for the empty negative prompt).
            max_sequence_length: T5 tokens (226 for CogVideoX; the prompt is padded / truncated to it).
            device: where the result goes (default: the text encoder's device).

        Returns:
            ``(1, max_sequence_length, D)`` in the text encoder's dtype, on ``device``.
        """
        encoder, tokenizer = pipe.text_encoder, pipe.tokenizer
        key = (id(encoder), id(tokenizer), int(max_sequence_length), prompt)
        device = torch.device(device) if device is not None else next(encoder.parameters()).device
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is encoder and entry[1]() is tokenizer:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[2].to(device)
        embeds, _ = pipe.encode_prompt(
            prompt,
            do_classifier_free_guidance=False,
            num_videos_per_prompt=1,
            max_sequence_length=int(max_sequence_length),
            device=next(encoder.parameters()).device,
        )
        value = embeds.detach().to("cpu")
        with self._lock:
            self.encoder_calls += 1
            self._entries[key] = (_ref(encoder), _ref(tokenizer), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value.to(device)


#: The process's one cache.
PROMPT_EMBEDDINGS = PromptEmbeddingCache()


def prompt_embeddings(pipe: Any, prompt: str, *, max_sequence_length: int, device: str | torch.device | None = None) -> torch.Tensor:
    """:meth:`PromptEmbeddingCache.get` on the process's cache (:data:`PROMPT_EMBEDDINGS`)."""
    return PROMPT_EMBEDDINGS.get(pipe, prompt, max_sequence_length=max_sequence_length, device=device)


def pipeline_prompt_kwargs(
    pipe: Any, prompt: str, *, guidance_scale: float, max_sequence_length: int, negative_prompt: str | None = None
) -> dict[str, torch.Tensor | None]:
    """The text inputs of one ``CogVideoXPipeline`` call, from the cache: pass them instead of
    ``prompt`` / ``negative_prompt``.

    Args:
        pipe: the pipeline that will be called.
        prompt: the prompt.
        guidance_scale: the call's guidance scale; the negative prompt is only encoded when the
            pipeline will use it (``guidance_scale > 1``, diffusers' rule).
        max_sequence_length: T5 tokens.
        negative_prompt: the unconditional branch's prompt (``None``: ``""``, the pipeline's default).

    Returns:
        ``{"prompt_embeds": (1, L, D), "negative_prompt_embeds": (1, L, D) or None}`` on the
        pipeline's execution device.
    """
    device = pipe._execution_device
    embeds = prompt_embeddings(pipe, prompt, max_sequence_length=max_sequence_length, device=device)
    negative = None
    if guidance_scale > 1.0:
        negative = prompt_embeddings(pipe, negative_prompt or "", max_sequence_length=max_sequence_length, device=device)
    return {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
