"""The one loader of metric encoders: CLIP (OpenAI and LAION), DINO, RAFT, AMT.

One record (:class:`EncoderSpec`, in the spirit of timm's ``PretrainedCfg``) per encoder says where
its weights come from, how inputs are preprocessed, its licence and the reference it reproduces;
it names its family (:class:`EncoderFamily`), whose module keeps the architecture, the checkpoint
layout (key mapping) and the wrapper together:

=================== ================ ====================================================
family module        encoders          metrics (see :data:`benchmark.metrics.METRICS`)
=================== ================ ====================================================
:mod:`.clip`         clip_openai,      CLIP-T; CLIP-I and T-Cons
                     clip_laion400m
:mod:`.dino`         dino_vits16       DINO-I
:mod:`.raft`         raft_large        dynamic degree (and VBench's boolean)
:mod:`.amt`          amt_s             motion smoothness
=================== ================ ====================================================

:func:`load_encoder` builds the real architecture and loads the weights, resolved in this order:

1. ``weights_dir``, laid out by upstream names (:attr:`EncoderSpec.weights`), e.g.
   ``weights_dir/timm/vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin``,
   ``weights_dir/facebook/dino-vits16/``, ``weights_dir/raft-things.pth``, ``weights_dir/amt-s.pth``;
2. the standard caches: the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), torch hub's
   ``$TORCH_HOME/hub/checkpoints``, and VBench's cache (``VBENCH_CACHE_DIR``, default
   ``~/.cache/vbench``) — read only, nothing is ever downloaded;
3. otherwise :class:`EncoderWeightsError`, naming the file and where to get it.

``random_weights=True`` builds the same architectures with seeded random weights (tests, smoke
runs); ``random_arch="small"`` builds narrower networks of the same families for fast CPU smoke
runs (AMT-S stays full size: it is already the smallest AMT). Every loaded encoder carries
``random_weights`` and a ``fingerprint`` (sha256 of the weight file, or of the random state dict),
which the scorer writes into every result row.

Checkpoints are read with ``torch.load(weights_only=True)`` or safetensors; never unpickled.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

from benchmark.encoders import amt, clip, dino, raft
from benchmark.encoders.amt import VBENCH_REQUIREMENT, AmtInterpolator, vbench_module
from benchmark.encoders.base import (
    RANDOM_ARCHS,
    EncoderFamily,
    EncoderSpec,
    EncoderWeightsError,
    LoadedEncoder,
    file_fingerprint,
    find_weights,
    seeded,
    state_fingerprint,
    weight_file,
)
from benchmark.encoders.clip import ClipEncoder
from benchmark.encoders.dino import DinoEncoder
from benchmark.encoders.raft import RaftFlow, raft_original_to_torchvision, raft_torchvision_to_original

__all__ = [
    "EncoderWeightsError",
    "EncoderFamily",
    "EncoderSpec",
    "ENCODERS",
    "RANDOM_ARCHS",
    "VBENCH_REQUIREMENT",
    "encoder_spec",
    "resolve_weights",
    "build_random_model",
    "load_encoder",
    "get_encoder",
    "LoadedEncoder",
    "ClipEncoder",
    "DinoEncoder",
    "RaftFlow",
    "AmtInterpolator",
    "raft_original_to_torchvision",
    "raft_torchvision_to_original",
    "vbench_module",
]

#: Every metric encoder by name, in provenance order (``metric_weights`` lists them this way).
ENCODERS: dict[str, EncoderSpec] = {s.name: s for s in (*clip.SPECS, *dino.SPECS, *raft.SPECS, *amt.SPECS)}


def encoder_spec(name: str) -> EncoderSpec:
    """The record of encoder ``name``.

    Raises:
        KeyError: unknown encoder; the message lists the known ones.
    """
    try:
        return ENCODERS[name]
    except KeyError:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}") from None


def resolve_weights(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Find the weights of encoder ``name``: ``weights_dir`` → standard caches → error.

    Returns:
        A file, or for ``dino_vits16`` a folder holding ``config.json`` and the weights.

    Raises:
        KeyError: unknown encoder.
        EncoderWeightsError: nothing found; the message lists where it looked and the source.
    """
    return find_weights(encoder_spec(name), weights_dir)


def build_random_model(name: str, arch: str = "full") -> torch.nn.Module:
    """The architecture of encoder ``name`` (``arch`` in :data:`RANDOM_ARCHS`) with its seeded random
    weights (no wrapper). The caller's RNG state is untouched.

    Raises:
        KeyError: unknown encoder.
        ValueError: unknown ``arch``.
    """
    spec = encoder_spec(name)
    if arch not in RANDOM_ARCHS:
        raise ValueError(f"random_arch must be one of {RANDOM_ARCHS}, got {arch!r}")
    with seeded(spec.random_seed):
        return spec.family.build(arch)


def load_encoder(
    name: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
    random_arch: str = "full",
    device: str | torch.device = "cpu",
) -> LoadedEncoder:
    """Build encoder ``name`` (see :data:`ENCODERS`) with real or seeded random weights.

    Args:
        name: ``clip_openai``, ``clip_laion400m``, ``dino_vits16``, ``raft_large`` or ``amt_s``.
        weights_dir: folder laid out by upstream names (first place looked at).
        random_weights: build the architecture with the encoder's fixed seed instead of loading.
        random_arch: with ``random_weights``: ``"full"`` (the real architecture) or ``"small"``
            (same family, narrow — for fast CPU smoke runs).
        device: torch device for the network.

    Returns:
        The family's wrapper: :class:`ClipEncoder`, :class:`DinoEncoder`, :class:`RaftFlow` or
        :class:`AmtInterpolator`.

    Raises:
        KeyError: unknown encoder.
        EncoderWeightsError: weights not found or not loadable (message names file and source).
        ValueError: ``random_weights`` together with ``weights_dir``, or an unknown ``random_arch``.
    """
    spec = encoder_spec(name)
    if random_weights:
        if weights_dir is not None:
            raise ValueError("random_weights=True and weights_dir are mutually exclusive")
        model = build_random_model(name, random_arch)
        fp = f"random-{random_arch}:seed={spec.random_seed}:{state_fingerprint(model)}"
        return spec.family.wrapper(spec, model, random_weights=True, source=f"random ({random_arch}, seed {spec.random_seed})",
                                   fingerprint=fp, device=device)
    path = find_weights(spec, weights_dir)
    model, extra = spec.family.load(path)
    return spec.family.wrapper(spec, model, random_weights=False, source=str(path),
                               fingerprint=file_fingerprint(weight_file(path)), device=device, **extra)


_CACHE: dict[tuple, LoadedEncoder] = {}
_CACHE_LOCK = threading.Lock()


def get_encoder(name: str, **kwargs) -> LoadedEncoder:
    """:func:`load_encoder` with the same arguments, loaded once per process (the scorer's entry
    point: every Scorer and the run loop share the loaded networks)."""
    wd, rw = kwargs.get("weights_dir"), bool(kwargs.get("random_weights", False))
    key = (
        name,
        str(Path(wd).resolve()) if wd is not None else None,
        rw,
        kwargs.get("random_arch", "full") if rw else None,
        str(torch.device(kwargs.get("device", "cpu"))),
    )
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = load_encoder(name, **kwargs)
        return _CACHE[key]
