"""Prompt embeddings are computed once per prompt and reused by every generation path
(dualreal.engine.prompts), without changing a single pixel, and never served stale."""

from __future__ import annotations

import pytest
import torch

from _baselines_support import tiny_case
from dualreal.engine.prompts import PROMPT_EMBEDDINGS, PromptEmbeddingCache, prompt_embeddings
from dualreal.engine.protocol import GenerationSettings

SETTINGS = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=2)


class EncoderCalls:
    """Counts forward passes of a text encoder (a forward pre-hook)."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def remove(self):
        self._handle.remove()


@pytest.fixture
def counted(tiny_backbone):
    PROMPT_EMBEDDINGS.clear()
    calls = EncoderCalls(tiny_backbone.text_encoder)
    yield calls
    calls.remove()
    PROMPT_EMBEDDINGS.clear()


def test_cogvideox_encodes_each_prompt_once_and_the_videos_are_unchanged(tiny_backbone, counted):
    from baselines.cogvideox import CogVideoXMethod, strip_identity_token

    method = CogVideoXMethod(tiny_backbone)
    a = method.generate("dog * on the beach", 1, SETTINGS)
    assert counted.calls == 2  # the prompt and the empty negative prompt
    b = method.generate("dog * on the beach", 2, SETTINGS)
    c = method.generate("dog * in the snow", 1, SETTINGS)
    assert counted.calls == 3  # only the new prompt was encoded
    assert (PROMPT_EMBEDDINGS.encoder_calls, PROMPT_EMBEDDINGS.hits) == (3, 3)
    assert not torch.equal(a.frames, b.frames) and not torch.equal(a.frames, c.frames)
    # the stock pipeline encoding its prompts itself gives the same pixels
    direct = tiny_backbone.pipeline()(
        prompt=strip_identity_token("dog * on the beach"), num_frames=9, height=32, width=48, num_inference_steps=2,
        guidance_scale=SETTINGS.guidance_scale, generator=torch.Generator("cpu").manual_seed(1), output_type="pt",
        max_sequence_length=tiny_backbone.max_text_seq_length,
    ).frames[0]
    assert torch.equal(a.frames, (direct.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1))


def test_dualreal_generation_and_training_share_the_cache(tiny_backbone, counted, tmp_path):
    from dualreal.method import DualRealMethod

    method = DualRealMethod(tiny_backbone, train_steps=1, train_frames=5)
    method.fit(tiny_case(), tmp_path / "ckpt")
    fit_calls = counted.calls
    assert fit_calls == 2  # "dog *" and the motion prompt, once each for 2 images and 2 clips
    method.generate("dog * is waving", 42, SETTINGS)
    method.generate("dog * is waving", 43, SETTINGS)
    assert counted.calls == fit_calls + 2  # the prompt and "" once, for two videos


def test_keys_separate_sequence_lengths_and_encoders(tiny_backbone, counted):
    from dualreal.engine.backbone import load_backbone

    pipe = tiny_backbone.pipeline()
    full = prompt_embeddings(pipe, "dog", max_sequence_length=tiny_backbone.max_text_seq_length)
    short = prompt_embeddings(pipe, "dog", max_sequence_length=8)
    assert counted.calls == 2 and full.shape[1] == tiny_backbone.max_text_seq_length and short.shape[1] == 8
    other = load_backbone("tiny", seed=5)  # another text encoder, same tokenizer settings
    theirs = prompt_embeddings(other.pipeline(), "dog", max_sequence_length=tiny_backbone.max_text_seq_length)
    assert not torch.allclose(theirs, full)
    again = prompt_embeddings(pipe, "dog", max_sequence_length=tiny_backbone.max_text_seq_length)
    assert torch.equal(again, full) and counted.calls == 2


def test_a_recycled_encoder_address_never_hits_an_old_entry(tiny_backbone):
    """Entries hold weak references: an encoder freed and replaced at the same id is a miss."""
    cache = PromptEmbeddingCache(max_entries=2)
    pipe = tiny_backbone.pipeline()
    cache.get(pipe, "a", max_sequence_length=8)
    key = next(iter(cache._entries))
    encoder_ref, tokenizer_ref, value = cache._entries[key]
    cache._entries[key] = (lambda: None, tokenizer_ref, value + 1)  # as after the encoder was freed
    assert torch.equal(cache.get(pipe, "a", max_sequence_length=8), value)
    assert cache.encoder_calls == 2
    cache.get(pipe, "b", max_sequence_length=8)
    cache.get(pipe, "c", max_sequence_length=8)
    assert len(cache) == 2 and ("a" not in {k[3] for k in cache._entries})  # least recently used dropped
