"""The one place that builds the CogVideoX backbone.

Three kinds of source, the same classes and the same pipeline:

* a pretrained CogVideoX folder or hub id (``THUDM/CogVideoX-5b``), loaded with diffusers'
  ``from_pretrained`` offline-first (local folder → Hugging Face hub cache → a clear error naming
  the missing file);
* the **real-architecture random presets** ``cogvideox-5b-random`` and ``cogvideox-2b-random``: the
  published CogVideoX-5B / -2B configurations (:data:`PUBLISHED_CONFIGS`, every value with its
  source) with seeded random weights, built on the ``meta`` device and materialised directly on the
  target device in the target dtype (:func:`load_backbone`, step 3) — for checking, before
  downloading ~20 GB of weights, that a job fits and how long it takes;
* the ``tiny`` preset: the same classes at toy sizes with seeded random weights, so that every code
  path (VAE 4k+1 frames, joint text/video attention, rotary embeddings, v-prediction with
  zero-terminal-SNR betas) runs in seconds on two CPU cores with no download.

The random presets use the offline byte-level tokenizer of :func:`build_tiny_tokenizer` (one token
per UTF-8 byte, ``</s>`` appended, 226 tokens): no tokenizer file can be downloaded, and with random
weights the token ids carry no meaning anyway. Prompt token counts therefore differ from the real
T5 SentencePiece tokenizer's (a byte per token: longer prompts are truncated at 226 bytes); the
shapes every model sees (226 text tokens of width 4096) are the real ones.

Anything generated with ``tiny`` or a random preset is random-weights output; :class:`Backbone`
carries ``random_weights=True`` so that every record and table says so.

:func:`backbone_memory_plan` answers "how much memory do the weights need, and does the device have
it?" without building anything (meta device, well under a second of compute); :func:`load_backbone`
runs the same check first and refuses a job that cannot fit (``allow_large=True`` overrides it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

__all__ = [
    "Backbone",
    "BackboneError",
    "MemoryPlan",
    "TINY_PRESET",
    "PUBLISHED_CONFIGS",
    "RANDOM_PRESETS",
    "REAL_DEFAULTS",
    "DTYPES",
    "TIMESTEP_SPACINGS",
    "SUPPORTED_SCHEDULERS",
    "TRAINED_PREDICTION",
    "GeometryRules",
    "geometry_rules",
    "scheduler_config_hash",
    "load_backbone",
    "default_geometry",
    "random_weights_source",
    "backbone_memory_plan",
    "count_parameters",
    "available_memory",
    "build_tiny_tokenizer",
]

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}

#: Sizes of the ``tiny`` preset. 42 blocks, as CogVideoX-5B, so that every StageBlender group
#: cardinality of the paper (n in {1, 2, 7, 42}) divides the block count; everything else is
#: shrunk. Rotary positional embeddings and ``snr_shift_scale=1.0`` as in the 5B model.
TINY_PRESET: dict[str, Any] = {
    "transformer": dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=16,
        text_embed_dim=32,
        num_layers=42,
        sample_width=24,
        sample_height=16,
        sample_frames=9,
        patch_size=2,
        patch_size_t=None,
        temporal_compression_ratio=4,
        max_text_seq_length=96,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    ),
    "vae": dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=128,
        sample_width=192,
    ),
    "text_encoder": dict(
        d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8
    ),
    "scheduler": None,  # CogVideoX-5B's (set below, from PUBLISHED_CONFIGS)
    # The preset's scheduler class: the sampler DualReal's release uses (TIMESTEP_SPACINGS comment).
    "scheduler_class": "CogVideoXDPMScheduler",
    # Default video geometry for the preset (4k+1 frames; H, W multiples of 16; 2:3 as 480x720).
    # 128 px is the smallest size RAFT's 1/8-resolution correlation pyramid accepts, so the
    # dynamic degree is defined on smoke videos too.
    "defaults": dict(num_frames=9, height=128, width=192),
}

#: Defaults of the real CogVideoX geometry (docs/METHOD.md, "Backbone" and "Inference"): 49 frames at
#: 480×720 → 13 latent frames of 60×90 → 17,550 video tokens (+226 text tokens).
REAL_DEFAULTS: dict[str, int] = dict(num_frames=49, height=480, width=720)


def random_weights_source(source: str) -> bool:
    """Whether backbone ``source`` builds random weights (``tiny``, the random presets), without loading it."""
    return source == "tiny" or source in RANDOM_PRESETS


def default_geometry(source: str) -> dict[str, int]:
    """The default ``num_frames``, ``height``, ``width`` of backbone ``source``, without loading it.

    Args:
        source: as :func:`load_backbone` takes it: ``"tiny"`` or a CogVideoX folder / hub id.

    Returns:
        A new dict: the ``tiny`` preset's geometry (9 frames, 128×192) for ``"tiny"``, the paper's
        (49 frames, 480×720) for any other source. :attr:`Backbone.defaults` of a loaded backbone.
    """
    return dict(TINY_PRESET["defaults"] if source == "tiny" else REAL_DEFAULTS)


# ---------------------------------------------------------------------------------------------
# The published CogVideoX configurations — the one table, every value with its source
# ---------------------------------------------------------------------------------------------
# Sources (Hugging Face repositories THUDM/CogVideoX-5b and THUDM/CogVideoX-2b, files as named):
#
# * transformer — <repo>/transformer/config.json. Both files hold diffusers'
#   ``CogVideoXTransformer3DModel`` defaults except three keys, which diffusers'
#   ``scripts/convert_cogvideox_to_diffusers.py`` (``get_args``, commit 01337da) documents:
#   "For CogVideoX-2B, num_layers is 30. For 5B, it is 42", "num_attention_heads is 30 … For 5B,
#   it is 48", "use_rotary_positional_embeddings is False. For 5B, it is True". Every key is spelt
#   out here so that a change of diffusers' defaults cannot change the preset.
# * vae — <repo>/vae/config.json (``AutoencoderKLCogVideoX``); the two differ only in
#   ``scaling_factor``: the convert script's "For CogVideoX-2B, scaling_factor is 1.15258426. For 5B,
#   it is 0.7".
# * text_encoder — <repo>/text_encoder/config.json: the T5 v1.1 XXL encoder the convert script loads
#   (``T5EncoderModel.from_pretrained("google/t5-v1_1-xxl")``): 24 layers, d_model 4096, 64 heads of
#   64, gated-GELU feed-forward of 10240, vocabulary 32128, untied output embedding.
# * tokenizer — the convert script's ``T5Tokenizer.from_pretrained("google/t5-v1_1-xxl",
#   model_max_length=226)`` (``TOKENIZER_MAX_LENGTH = 226``); the random presets use the offline
#   byte-level tokenizer with the same ``model_max_length`` (module docstring).
# * scheduler — <repo>/scheduler/scheduler_config.json. Both checkpoints ship a
#   ``CogVideoXDDIMScheduler`` with v-prediction, zero-terminal-SNR betas and trailing spacing;
#   ``snr_shift_scale`` is 1.0 for 5B and 3.0 for 2B (convert script: "For CogVideoX-2B,
#   snr_shift_scale is 3.0. For 5B, it is 1.0"). The class is the convert script's
#   ``scheduler = CogVideoXDDIMScheduler.from_config({...})`` (``main``, diffusers commit 0103783).
#   The inference scripts swap the class, keeping the config: THUDM/CogVideo
#   ``inference/cli_demo.py`` (commit e519ece) lines 134-142 ("We recommend using
#   CogVideoXDDIMScheduler for CogVideoX-2B, using CogVideoXDPMScheduler for CogVideoX-5B",
#   then ``CogVideoXDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")``)
#   and DualReal's ``inference/inference.py`` line 163 (the same call). :func:`load_backbone` uses
#   the class the configuration names (here the shipped DDIM class) unless ``scheduler=`` names
#   another supported one (:data:`SUPPORTED_SCHEDULERS`; ``dualbench run --scheduler``), as those
#   scripts do; either is recorded with the config's hash.
# * parameter counts these configurations build (tests/test_backbone.py checks them against the
#   repositories' safetensors sizes at 2 bytes per parameter): transformer 5,570,283,072 (5B:
#   9.93 + 1.22 GB) and 1,693,783,872 (2B: 3.39 GB); VAE 215,583,907 (431 MB); T5-XXL encoder
#   4,762,310,656 (4.99 + 4.53 GB).
_TRANSFORMER_SHARED: dict[str, Any] = dict(
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    ofs_embed_dim=None,
    text_embed_dim=4096,
    dropout=0.0,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    patch_size_t=None,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_learned_positional_embeddings=False,
    patch_bias=True,
)
_VAE_SHARED: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4,
    block_out_channels=(128, 256, 256, 512),
    latent_channels=16,
    layers_per_block=3,
    act_fn="silu",
    norm_eps=1e-6,
    norm_num_groups=32,
    temporal_compression_ratio=4,
    sample_height=480,
    sample_width=720,
    shift_factor=None,
    latents_mean=None,
    latents_std=None,
    force_upcast=True,
    use_quant_conv=False,
    use_post_quant_conv=False,
    invert_scale_latents=False,
)
_T5_V1_1_XXL: dict[str, Any] = dict(
    vocab_size=32128,
    d_model=4096,
    d_kv=64,
    d_ff=10240,
    num_layers=24,
    num_heads=64,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    initializer_factor=1.0,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=False,
    pad_token_id=0,
    eos_token_id=1,
)
_SCHEDULER_SHARED: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    clip_sample_range=1.0,
    sample_max_value=1.0,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="trailing",
)

#: Hub id → the published configuration of each component (sources in the comment above).
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "THUDM/CogVideoX-5b": {
        "transformer": {**_TRANSFORMER_SHARED, "num_attention_heads": 48, "num_layers": 42,
                        "use_rotary_positional_embeddings": True},
        "vae": {**_VAE_SHARED, "scaling_factor": 0.7},
        "text_encoder": dict(_T5_V1_1_XXL),
        "tokenizer": {"model_max_length": 226},
        "scheduler": {**_SCHEDULER_SHARED, "snr_shift_scale": 1.0},
        "shipped_scheduler": "CogVideoXDDIMScheduler",
    },
    "THUDM/CogVideoX-2b": {
        "transformer": {**_TRANSFORMER_SHARED, "num_attention_heads": 30, "num_layers": 30,
                        "use_rotary_positional_embeddings": False},
        "vae": {**_VAE_SHARED, "scaling_factor": 1.15258426},
        "text_encoder": dict(_T5_V1_1_XXL),
        "tokenizer": {"model_max_length": 226},
        "scheduler": {**_SCHEDULER_SHARED, "snr_shift_scale": 3.0},
        "shipped_scheduler": "CogVideoXDDIMScheduler",
    },
}

TINY_PRESET["scheduler"] = dict(PUBLISHED_CONFIGS["THUDM/CogVideoX-5b"]["scheduler"])

#: Random-weights preset name → the hub id whose published configuration it builds.
RANDOM_PRESETS: dict[str, str] = {
    "cogvideox-5b-random": "THUDM/CogVideoX-5b",
    "cogvideox-2b-random": "THUDM/CogVideoX-2b",
}

#: Values of ``timestep_spacing`` (diffusers' schedulers). ``trailing`` is the default of every backbone:
#: DualReal's inference script sets it explicitly — ``wenc-k/DualReal`` ``inference/inference.py``
#: (commit 2186cd1) line 163, ``CogVideoXDPMScheduler.from_config(pipe.scheduler.config,
#: timestep_spacing="trailing")`` — and the zero-terminal-SNR betas need it to start sampling at the
#: last training timestep (999).
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")

#: Scheduler classes every method can train and sample with: both add noise and give the
#: v-prediction target the trainer regresses on (``add_noise`` / ``get_velocity``,
#: :mod:`dualreal.engine.trainer.loop`), both carry CogVideoX's ``snr_shift_scale``, and diffusers'
#: ``CogVideoXPipeline`` steps both (``pipeline_cogvideox.py``: the DPM branch keeps the previous
#: prediction, the DDIM branch does not). Any other class is refused at load.
SUPPORTED_SCHEDULERS = ("CogVideoXDPMScheduler", "CogVideoXDDIMScheduler")

#: What the trainer trains the transformer to predict (``v_prediction_loss`` against
#: ``get_velocity``); a scheduler whose ``prediction_type`` differs would sample with a wrong
#: reading of every prediction, so it is refused.
TRAINED_PREDICTION = "v_prediction"

#: Components built as ``nn.Module`` (the others are a tokenizer and a scheduler).
MODULE_COMPONENTS = ("transformer", "vae", "text_encoder")

_COMPONENT_FILES = {
    "transformer": "transformer/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "tokenizer": "tokenizer",
    "scheduler": "scheduler/scheduler_config.json",
}


class BackboneError(RuntimeError):
    """Raised when a backbone cannot be resolved or loaded; the message names what is missing."""


# ---------------------------------------------------------------------------------------------
# Geometry a backbone generates exactly (from its configurations: no weights)
# ---------------------------------------------------------------------------------------------
#: Latent frames diffusers' ``AutoencoderKLCogVideoX`` decodes together
#: (``num_latent_frames_batch_size = 2`` in ``autoencoder_kl_cogvideox.py``, ``__init__``).
VAE_LATENT_FRAME_BATCH = 2


@dataclass(frozen=True)
class GeometryRules:
    """Which frame counts and sizes a CogVideoX backbone generates exactly.

    Frames: the pipeline makes ``L = (F - 1) // t + 1`` latent frames (``t`` the VAE's
    ``temporal_compression_ratio``; diffusers ``CogVideoXPipeline.prepare_latents``; CogVideoX-1.5's
    ``patch_size_t`` padding is dropped again before decoding, ``__call__``), and the VAE decodes
    them in batches of :data:`VAE_LATENT_FRAME_BATCH` (the first batch takes the remainder, ``_decode``),
    each of its ``log2 t`` temporal up-samplers turning ``n`` frames into ``1 + 2 (n - 1)`` when ``n``
    is odd and ``2 n`` when even (``CogVideoXUpsample3D``). So 2 latent frames decode to 8, and the
    ``t k + 1`` counts decoded exactly at ``t = 4`` are 8k+1 (1, 9, 17, …, 49): ``--frames 5`` would
    write 8 and ``--frames 13`` 16.

    Size: height and width are multiples of the VAE's spatial factor (``2 ** (len(block_out_channels)
    - 1)``, 8) times the transformer's ``patch_size`` (2): 16.

    Attributes:
        temporal_compression: the VAE's ``temporal_compression_ratio``.
        vae_spatial: the VAE's spatial factor.
        patch_size: the transformer's spatial patch size.
        patch_size_t: the transformer's temporal patch size (CogVideoX-1.5), ``None`` otherwise.
    """

    temporal_compression: int
    vae_spatial: int
    patch_size: int
    patch_size_t: int | None = None

    @classmethod
    def from_configs(cls, transformer: Mapping[str, Any], vae: Mapping[str, Any]) -> GeometryRules:
        """The rules of a transformer and a VAE configuration (dicts or diffusers ``FrozenDict``);
        a key a config file leaves out takes the diffusers class's default."""
        def get(cfg: Mapping[str, Any], model: str, key: str) -> Any:
            return cfg[key] if key in cfg else _init_defaults(model)[key]  # diffusers imported only then

        t, v = "CogVideoXTransformer3DModel", "AutoencoderKLCogVideoX"
        return cls(
            temporal_compression=int(get(vae, v, "temporal_compression_ratio")),
            vae_spatial=2 ** (len(get(vae, v, "block_out_channels")) - 1),
            patch_size=int(get(transformer, t, "patch_size")),
            patch_size_t=get(transformer, t, "patch_size_t"),
        )

    @property
    def size_multiple(self) -> int:
        """Height and width are multiples of this (16 on CogVideoX)."""
        return self.vae_spatial * self.patch_size

    def decoded_frames(self, latent_frames: int) -> int:
        """Frames the VAE decodes from ``latent_frames`` latent frames (class docstring)."""
        batch = VAE_LATENT_FRAME_BATCH
        first = latent_frames if latent_frames < batch else batch + latent_frames % batch
        sizes = [first] + [batch] * ((latent_frames - first) // batch)
        for _ in range(int(math.log2(self.temporal_compression))):
            sizes = [n if n == 1 else (1 + 2 * (n - 1) if n % 2 else 2 * n) for n in sizes]
        return sum(sizes)

    def generated_frames(self, num_frames: int) -> int:
        """Frames a request for ``num_frames`` (≥ 1) comes out with."""
        return self.decoded_frames((num_frames - 1) // self.temporal_compression + 1)

    def exact(self, num_frames: int) -> bool:
        """Whether ``num_frames`` is generated exactly, with the VAE's latent layout: ``t k + 1``
        frames (the first latent frame is the first frame alone, each other one ``t`` frames; the
        layout the encoder gives training clips) that decode back to ``num_frames``."""
        return (num_frames >= 1 and (num_frames - 1) % self.temporal_compression == 0
                and self.generated_frames(num_frames) == num_frames)

    def valid_frame_counts(self, upto: int) -> list[int]:
        """Every frame count in ``1..upto`` generated exactly (:meth:`exact`)."""
        return [n for n in range(1, upto + 1) if self.exact(n)]

    def check(self, num_frames: int, height: int, width: int, *, backbone: str = "the backbone") -> None:
        """Refuse a geometry this backbone cannot generate exactly.

        Raises:
            ValueError: one line naming the option (``--frames``, ``--height``, ``--width``), what
                would happen, and the valid values nearest the request.
        """
        if not self.exact(num_frames):
            t = self.temporal_compression
            step = t * VAE_LATENT_FRAME_BATCH
            valid = self.valid_frame_counts(max(num_frames, 1) + 4 * step)
            below, above = [n for n in valid if n < num_frames], [n for n in valid if n > num_frames]
            if num_frames < 1:
                why = "a video has at least 1"
            elif (num_frames - 1) % t:
                why = f"not {t}k+1: the first latent frame is one frame, each other one {t}"
            else:
                why = f"it would write {self.generated_frames(num_frames)}"
            raise ValueError(
                f"--frames {num_frames}: {backbone} does not generate {num_frames} frames exactly ({why}); its VAE "
                f"decodes {step}k+1 frames exactly ({', '.join(map(str, below[-3:] + above[:4]))}, …): use "
                f"{' or '.join(map(str, below[-1:] + above[:1]))}")
        m = self.size_multiple
        for name, value in (("--height", height), ("--width", width)):
            if value < m or value % m:
                lo, hi = max(m, value // m * m), max(m, -(-value // m) * m)
                near = str(lo) if lo == hi else f"{lo} or {hi}"
                raise ValueError(
                    f"{name} {value}: {backbone} needs a multiple of {m} (VAE factor {self.vae_spatial} × patch "
                    f"size {self.patch_size}): use {near}")


def _init_defaults(class_name: str) -> dict[str, Any]:
    """The keyword defaults of a diffusers class's ``__init__`` (what ``from_pretrained`` uses for a
    key its config file leaves out)."""
    import inspect

    import diffusers

    params = inspect.signature(getattr(diffusers, class_name).__init__).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def geometry_rules(source: str, cache_dir: str | os.PathLike | None = None) -> GeometryRules:
    """The :class:`GeometryRules` of backbone ``source`` without loading any weight.

    ``tiny`` and the random presets: their configuration tables; a CogVideoX folder or a hub id in
    the cache: its ``transformer/config.json`` and ``vae/config.json``; a hub id in
    :data:`PUBLISHED_CONFIGS` that is not downloaded: that table.

    Raises:
        BackboneError: a source that cannot be resolved (the error :func:`load_backbone` gives).
    """
    if source == "tiny":
        return GeometryRules.from_configs(TINY_PRESET["transformer"], TINY_PRESET["vae"])
    name = RANDOM_PRESETS.get(source, source)
    try:
        root = None if source in RANDOM_PRESETS else _resolve_pretrained(source, cache_dir)
    except BackboneError:
        if source not in PUBLISHED_CONFIGS:
            raise
        root = None
    if root is None:
        return GeometryRules.from_configs(PUBLISHED_CONFIGS[name]["transformer"], PUBLISHED_CONFIGS[name]["vae"])
    configs = {}
    for part in ("transformer", "vae"):
        try:
            configs[part] = json.loads((root / part / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackboneError(f"backbone folder {root}: {part}/config.json: {exc}") from None
    return GeometryRules.from_configs(configs["transformer"], configs["vae"])


# ---------------------------------------------------------------------------------------------
# The sampler's scheduler
# ---------------------------------------------------------------------------------------------
def scheduler_config_hash(config: Mapping[str, Any]) -> str:
    """12 hex digits of the sha256 of a scheduler's configuration as canonical JSON (sorted keys,
    diffusers' private ``_`` keys left out): the record's ``scheduler_config_hash``."""
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return hashlib.sha256(json.dumps(public, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _build_scheduler(config: Mapping[str, Any], class_name: str, *, timestep_spacing: str, where: str,
                     replace: str | None = None):
    """The sampler's scheduler: ``class_name`` (the class the configuration names) or ``replace``
    built from ``config`` with ``timestep_spacing``.

    Raises:
        BackboneError: a class outside :data:`SUPPORTED_SCHEDULERS`, or a ``prediction_type`` other
            than :data:`TRAINED_PREDICTION`; the message names ``where`` the configuration is from.
    """
    import diffusers

    supported = ", ".join(SUPPORTED_SCHEDULERS)
    if class_name is None:
        raise BackboneError(f"{where} names no scheduler class (no _class_name); supported: {supported}")
    for label, name in (("names", class_name), ("scheduler=", replace)):
        if name is not None and name not in SUPPORTED_SCHEDULERS:
            what = f"{where} names {name!r}" if label == "names" else f"scheduler {name!r} was asked for"
            raise BackboneError(f"{what}: the methods here train and sample with {supported} only "
                                "(v-prediction, CogVideoX's snr_shift_scale)")
    prediction = config.get("prediction_type", "epsilon")
    if prediction != TRAINED_PREDICTION:
        raise BackboneError(f"{where}: prediction_type {prediction!r}, but every method trains the transformer for "
                            f"{TRAINED_PREDICTION!r} (v_prediction_loss on get_velocity); supported: {supported} "
                            f"with prediction_type={TRAINED_PREDICTION!r}")
    public = {k: v for k, v in config.items() if not k.startswith("_")}
    return getattr(diffusers, replace or class_name).from_config({**public, "timestep_spacing": timestep_spacing})


@dataclass
class Backbone:
    """The CogVideoX components every method shares.

    Attributes:
        transformer: ``CogVideoXTransformer3DModel``, frozen by :func:`load_backbone`.
        vae: ``AutoencoderKLCogVideoX`` (frozen).
        text_encoder: ``T5EncoderModel`` (frozen).
        tokenizer: a T5 tokenizer (pretrained backbones) or a byte-level fast tokenizer (``tiny`` and
            the random presets).
        scheduler: one of :data:`SUPPORTED_SCHEDULERS` (v-prediction, zero terminal SNR; the class
            the configuration names unless :func:`load_backbone` was asked for another; timestep
            spacing as it was asked, ``trailing`` by default).
        source: ``"tiny"``, a random preset name, a local folder or a hub id.
        random_weights: ``True`` when any weight was randomly initialised (``tiny``, the random
            presets).
        dtype: compute dtype of the frozen modules.
        device: where the modules live (``meta``: architecture only, no weights).
        defaults: default ``num_frames``, ``height``, ``width`` for this backbone.
        overrides: per-component config values that replaced a random preset's (``{}`` normally;
            e.g. ``{"transformer": {"num_layers": 1}}`` for a one-block slice at full width).
        scheduler_named: the scheduler class the backbone's configuration names (``_class_name``);
            :attr:`scheduler` is of another class only when :func:`load_backbone` was asked for one.
    """

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    source: str
    random_weights: bool
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    defaults: dict[str, int] = field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduler_named: str | None = None

    @property
    def num_layers(self) -> int:
        return int(self.transformer.config.num_layers)

    @property
    def inner_dim(self) -> int:
        cfg = self.transformer.config
        return int(cfg.num_attention_heads * cfg.attention_head_dim)

    @property
    def time_embed_dim(self) -> int:
        return int(self.transformer.config.time_embed_dim)

    @property
    def max_text_seq_length(self) -> int:
        return int(self.transformer.config.max_text_seq_length)

    def pipeline(self, transformer: Any | None = None):
        """A stock diffusers ``CogVideoXPipeline`` over these components (no copy of weights).

        Args:
            transformer: optionally a different (e.g. adapted) transformer to put in the pipeline.
        """
        from diffusers import CogVideoXPipeline

        pipe = CogVideoXPipeline(
            tokenizer=self.tokenizer,
            text_encoder=self.text_encoder,
            vae=self.vae,
            transformer=transformer if transformer is not None else self.transformer,
            scheduler=self.scheduler,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def provenance(self) -> dict[str, Any]:
        """A JSON-able description of the backbone for result records: source, random weights,
        dtype, fingerprint, the sampler's scheduler class, timestep spacing and config hash
        (:func:`scheduler_config_hash`), the class its configuration named when another was asked
        for (``scheduler_replaces``), and overrides."""
        out = {
            "backbone": self.source,
            "backbone_random_weights": self.random_weights,
            "backbone_dtype": str(self.dtype).replace("torch.", ""),
            "backbone_fingerprint": self.fingerprint(),
            "scheduler": type(self.scheduler).__name__,
            "scheduler_timestep_spacing": self.scheduler.config.timestep_spacing,
            "scheduler_config_hash": scheduler_config_hash(self.scheduler.config),
        }
        if self.scheduler_named is not None and self.scheduler_named != out["scheduler"]:
            out["scheduler_replaces"] = self.scheduler_named
        if self.overrides:
            out["backbone_overrides"] = json.loads(json.dumps(self.overrides, default=str))
        return out

    def fingerprint(self) -> str:
        """A short hash of the transformer's config and first weights: tells backbones apart."""
        # diffusers' private config keys (e.g. ``_use_default_values``, a list in set order) vary
        # between processes; only the public architecture keys identify the backbone.
        public = {k: v for k, v in dict(self.transformer.config).items() if not k.startswith("_")}
        cfg = json.dumps(public, sort_keys=True, default=str)
        h = hashlib.sha256(cfg.encode())
        first = next(iter(self.transformer.parameters()))
        if first.device.type != "meta":
            h.update(first.detach().float().cpu().flatten()[:64].numpy().tobytes())
        return h.hexdigest()[:12]


def build_tiny_tokenizer(model_max_length: int = 96):
    """A byte-level fast tokenizer that needs no download (``tiny`` and the random presets).

    Every UTF-8 byte is one token (ids 3..258), with ``<pad>`` = 0, ``</s>`` = 1 (appended, as T5
    does) and ``<unk>`` = 2 — the ids T5's SentencePiece vocabulary gives these three specials. It
    answers the calls ``CogVideoXPipeline`` makes of a T5 tokenizer.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` with ``model_max_length`` set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def _build_tiny(seed: int) -> dict[str, Any]:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_tiny_tokenizer(TINY_PRESET["transformer"]["max_text_seq_length"])
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(**TINY_PRESET["transformer"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(**TINY_PRESET["vae"])
    torch.manual_seed(seed + 2)
    t5_cfg = T5Config(vocab_size=len(tokenizer), **TINY_PRESET["text_encoder"])
    text_encoder = T5EncoderModel(t5_cfg)
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


# ---------------------------------------------------------------------------------------------
# Architecture on the meta device, materialisation on the target device
# ---------------------------------------------------------------------------------------------
def _build_on_meta(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, nn.Module]:
    """The three modules with every parameter on the ``meta`` device (no memory, no init).

    Buffers computed in ``__init__`` (the sin-cos positional table of CogVideoX-2B's patch
    embedding) are kept with their real values on the CPU: accelerate's
    ``init_empty_weights(include_buffers=False)`` moves only parameters to ``meta``. It re-wraps
    every parameter as it is registered, which unties T5's ``encoder.embed_tokens`` from
    ``shared``; ``tie_weights()`` outside the context ties them again (one tensor, as published).
    """
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    with init_empty_weights(include_buffers=False):
        modules = {
            "transformer": CogVideoXTransformer3DModel(**configs["transformer"]),
            "vae": AutoencoderKLCogVideoX(**configs["vae"]),
            "text_encoder": T5EncoderModel(T5Config(**configs["text_encoder"])),
        }
    modules["text_encoder"].tie_weights()
    return modules


def _reset_parameters(module: nn.Module) -> None:
    """Initialise every parameter with its owner's ``reset_parameters`` (PyTorch's default init,
    which is what diffusers' CogVideoX models use: they add no init of their own)."""
    for sub in module.modules():
        if next(sub.parameters(recurse=False), None) is None:
            continue
        if not hasattr(sub, "reset_parameters"):
            raise BackboneError(f"{type(sub).__name__} holds parameters but has no reset_parameters(): no init rule")
        sub.reset_parameters()


def _transformers_init(module: nn.Module) -> None:
    """transformers' own init rule: ``_init_weights`` on every sub-module, children first (T5's
    rule sets q/k/v/o, gated feed-forward and embedding scales from ``initializer_factor``)."""
    module.apply(module._init_weights)


def _init_rule(name: str) -> Callable[[nn.Module], None]:
    return _transformers_init if name == "text_encoder" else _reset_parameters


def _param_dtypes(module: nn.Module, dtype: torch.dtype) -> dict[int, torch.dtype]:
    """Parameter id → dtype the parameter gets when ``module`` is loaded in ``dtype``.

    ``dtype`` for every floating parameter, except transformers' ``_keep_in_fp32_modules`` in fp16
    (T5's ``wo`` projections, which overflow in fp16), which ``from_pretrained`` keeps in float32.
    """
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or []) if dtype == torch.float16 else set()
    out: dict[int, torch.dtype] = {}
    for name, param in module.named_parameters():
        if not param.is_floating_point():
            out[id(param)] = param.dtype
        else:
            out[id(param)] = torch.float32 if keep & set(name.split(".")) else dtype
    return out


def _materialize(module: nn.Module, *, device: torch.device, dtype: torch.dtype, init: Callable[[nn.Module], None]) -> None:
    """Give every ``meta`` parameter storage on ``device`` in ``dtype``, then initialise it there.

    Steps: (1) each parameter is replaced by an uninitialised tensor allocated directly on
    ``device`` in its dtype (:func:`_param_dtypes`; one tensor at a time — never a full float32
    copy, never a host copy for a GPU target; tied parameters stay one tensor), filled with NaN;
    floating buffers move to ``device``/``dtype`` as ``module.to`` would move them; (2) ``init``
    runs the module's own rule in place; (3) any parameter still holding a NaN had no rule:
    :class:`BackboneError`.
    """
    dtypes = _param_dtypes(module, dtype)
    made: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for pname, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in made:
                if param.device.type != "meta":
                    raise BackboneError(f"{type(sub).__name__}.{pname} is not on the meta device")
                target = dtypes[id(param)]
                data = torch.empty(param.shape, device=device, dtype=target)
                if data.is_floating_point():
                    data.fill_(float("nan"))
                made[id(param)] = nn.Parameter(data, requires_grad=False)
            sub._parameters[pname] = made[id(param)]
        for bname, buf in list(sub._buffers.items()):
            if buf is None:
                continue
            if buf.device.type == "meta":
                raise BackboneError(f"buffer {type(sub).__name__}.{bname} was built on the meta device: its values are lost")
            sub._buffers[bname] = buf.to(device=device, dtype=dtype if buf.is_floating_point() else buf.dtype)
    with torch.no_grad():
        init(module)
    missing = [n for n, p in module.named_parameters() if p.is_floating_point() and bool(torch.isnan(p).any())]
    if missing:
        raise BackboneError(f"{type(module).__name__}: no init rule reached {missing[:5]}")


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameter elements of ``module`` (tied tensors counted once; works on
    the ``meta`` device)."""
    return sum(p.numel() for p in module.parameters())


def _module_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of ``module``'s parameters and buffers once loaded in ``dtype`` (:func:`_param_dtypes`)."""
    dtypes = _param_dtypes(module, dtype)
    size = torch.empty((), dtype=dtype).element_size()
    params = sum(p.numel() * torch.empty((), dtype=dtypes[id(p)]).element_size() for p in module.parameters())
    buffers = sum(b.numel() * (size if b.is_floating_point() else b.element_size()) for b in module.buffers())
    return params + buffers


# ---------------------------------------------------------------------------------------------
# Source resolution and configurations
# ---------------------------------------------------------------------------------------------
def _resolve_pretrained(source: str, cache_dir: str | os.PathLike | None) -> Path:
    """Local folder → Hugging Face hub cache → :class:`BackboneError` naming what is missing."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BackboneError(f"backbone {source!r} is a file; expected a CogVideoX folder")
        root = path
    else:
        try:
            from huggingface_hub import snapshot_download

            root = Path(
                snapshot_download(
                    repo_id=source,
                    cache_dir=cache_dir,
                    local_files_only=os.environ.get("HF_HUB_OFFLINE", "1") != "0",
                )
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear message
            raise BackboneError(
                f"backbone {source!r}: not a local folder and not in the Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}). Download it once with "
                f"`huggingface-cli download {source}` (or set HF_HUB_OFFLINE=0 to let diffusers "
                f"fetch it), or pass --backbone tiny / {' / '.join(RANDOM_PRESETS)} for a "
                f"random-weights backbone. [{type(exc).__name__}]"
            ) from None
    missing = [rel for rel in _COMPONENT_FILES.values() if not (root / rel).exists()]
    if missing:
        raise BackboneError(
            f"backbone folder {root} is incomplete: missing {', '.join(missing)} "
            "(a CogVideoX folder has transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    return root


def _folder_configs(root: Path) -> dict[str, dict[str, Any]]:
    """The three module configurations of a pretrained folder (config files only, no weights)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config

    def public(cfg: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in cfg.items() if not k.startswith("_")}

    return {
        "transformer": public(CogVideoXTransformer3DModel.load_config(root, subfolder="transformer")),
        "vae": public(AutoencoderKLCogVideoX.load_config(root, subfolder="vae")),
        "text_encoder": T5Config.from_pretrained(root / "text_encoder").to_dict(),
    }


def _tiny_configs() -> dict[str, dict[str, Any]]:
    vocab = len(build_tiny_tokenizer(TINY_PRESET["transformer"]["max_text_seq_length"]))
    return {
        "transformer": dict(TINY_PRESET["transformer"]),
        "vae": dict(TINY_PRESET["vae"]),
        "text_encoder": {"vocab_size": vocab, **TINY_PRESET["text_encoder"]},
    }


def _apply_overrides(source: str, configs: dict[str, dict[str, Any]], overrides: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """``configs`` with ``overrides`` applied; unknown components or keys are a :class:`BackboneError`."""
    if not overrides:
        return configs
    if source not in RANDOM_PRESETS:
        raise BackboneError(f"overrides apply to the random presets ({', '.join(RANDOM_PRESETS)}) only, not to {source!r}")
    out = {k: dict(v) for k, v in configs.items()}
    for component, values in overrides.items():
        if component not in MODULE_COMPONENTS:
            raise BackboneError(f"unknown component {component!r} in overrides; valid: {', '.join(MODULE_COMPONENTS)}")
        unknown = sorted(set(values) - set(out[component]))
        if unknown:
            raise BackboneError(
                f"unknown {component} config key(s) {unknown} in overrides; valid: {', '.join(sorted(out[component]))}"
            )
        out[component].update(values)
    return out


def _architecture(source: str, cache_dir, overrides) -> tuple[dict[str, dict[str, Any]], Path | None]:
    """The module configurations of ``source`` and, for a pretrained source, its folder.

    A pretrained hub id that is not downloaded but is in :data:`PUBLISHED_CONFIGS` is planned from
    that table (so the check runs before the download); its folder is then ``None``.
    """
    if source == "tiny":
        return _apply_overrides(source, _tiny_configs(), overrides), None
    if source in RANDOM_PRESETS:
        published = PUBLISHED_CONFIGS[RANDOM_PRESETS[source]]
        return _apply_overrides(source, {k: dict(published[k]) for k in MODULE_COMPONENTS}, overrides), None
    _apply_overrides(source, {}, overrides)
    try:
        root = _resolve_pretrained(source, cache_dir)
    except BackboneError:
        if source in PUBLISHED_CONFIGS:
            return {k: dict(PUBLISHED_CONFIGS[source][k]) for k in MODULE_COMPONENTS}, None
        raise
    return _folder_configs(root), root


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise BackboneError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
    return DTYPES[dtype]


# ---------------------------------------------------------------------------------------------
# Memory plan
# ---------------------------------------------------------------------------------------------
def available_memory(device: str | torch.device) -> int | None:
    """Bytes the device can still give: ``MemAvailable`` of ``/proc/meminfo`` for the CPU (free
    pages where that file does not exist), ``torch.cuda.mem_get_info`` for a GPU; ``None`` when
    unknown (``meta``, other devices)."""
    device = torch.device(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return None


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.1f} GiB"


@dataclass
class MemoryPlan:
    """What a backbone's weights need, computed on the ``meta`` device.

    Attributes:
        source: the backbone source planned.
        dtype: the dtype of the frozen modules.
        device: the target device.
        parameters: component → number of parameters (tied tensors once).
        weight_bytes: component → bytes of its parameters and buffers in ``dtype``.
        available_bytes: what the device can still give (:func:`available_memory`), ``None`` if
            unknown.
        random_weights: whether the source builds random weights.
        full_size: a published-size random preset (no ``overrides``) or a pretrained source.

    The weights are a lower bound of what a job needs: activations, gradients, optimizer states and
    the VAE decode come on top (``scripts/bench_scale.py`` measures them; docs/SCALE.md).
    """

    source: str
    dtype: torch.dtype
    device: torch.device
    parameters: dict[str, int]
    weight_bytes: dict[str, int]
    available_bytes: int | None
    random_weights: bool
    full_size: bool

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())

    @property
    def total_bytes(self) -> int:
        return sum(self.weight_bytes.values())

    @property
    def fits(self) -> bool | None:
        """``total_bytes <= available_bytes`` (``None`` when the device's memory is unknown)."""
        return None if self.available_bytes is None else self.total_bytes <= self.available_bytes

    def describe(self) -> str:
        """One line: total and per-component weight memory and what the device has."""
        parts = ", ".join(f"{k} {_gib(v)}" for k, v in self.weight_bytes.items())
        dtype = str(self.dtype).replace("torch.", "")
        return (
            f"{self.source} in {dtype} needs {_gib(self.total_bytes)} for its weights alone ({parts}; "
            f"{self.total_parameters / 1e9:.2f} B parameters; activations come on top), and {self.device} has "
            f"{_gib(self.available_bytes)} available"
        )


def backbone_memory_plan(
    source: str = "tiny",
    *,
    dtype: str | torch.dtype = "bf16",
    device: str | torch.device = "cpu",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> MemoryPlan:
    """Plan a backbone without building it: parameter counts and weight bytes per component.

    The transformer, VAE and T5 encoder are built on the ``meta`` device from their configurations
    (the random presets' table, a pretrained folder's config files, or — for a hub id in
    :data:`PUBLISHED_CONFIGS` that is not downloaded — that table), so nothing is allocated and no
    weight is read; it takes about a second for CogVideoX-5B.

    Args:
        source: as :func:`load_backbone`.
        dtype: dtype of the frozen modules (``fp32``/``bf16``/``fp16``).
        device: the device to compare against (its available memory).
        overrides: per-component config values (random presets only; see :func:`load_backbone`).
        cache_dir: Hugging Face cache to look in for a hub id.

    Returns:
        A :class:`MemoryPlan`.

    Raises:
        BackboneError: unknown dtype, bad overrides, a pretrained source without config files that
            is not in :data:`PUBLISHED_CONFIGS`.
    """
    configs, _root = _architecture(source, cache_dir, overrides)
    return _plan(source, _build_on_meta(configs), _torch_dtype(dtype), torch.device(device), overrides)


def _plan(source: str, modules: Mapping[str, nn.Module], dtype: torch.dtype, device: torch.device, overrides) -> MemoryPlan:
    return MemoryPlan(
        source=source,
        dtype=dtype,
        device=device,
        parameters={k: count_parameters(m) for k, m in modules.items()},
        weight_bytes={k: _module_bytes(m, dtype) for k, m in modules.items()},
        available_bytes=available_memory(device),
        random_weights=random_weights_source(source),
        full_size=source != "tiny" and not overrides,
    )


def _check_plan(plan: MemoryPlan) -> None:
    """Refuse what cannot (or should not) be built on the device; the message gives the numbers.

    Rules: a full-size random preset on the CPU is always refused (its only use there would be to
    exhaust the host: the planning, counting and the real-size slices of ``scripts/bench_scale.py``
    need no full model); any backbone whose weights exceed the device's available memory is refused.
    """
    on_cpu = plan.device.type == "cpu"
    if on_cpu and plan.random_weights and plan.full_size:
        why = "a full-size random preset is not built on the CPU"
    elif plan.fits is False:
        why = "the weights do not fit"
    else:
        return
    raise BackboneError(
        f"refusing to build {plan.source}: {why}. {plan.describe()}. Use a GPU (--device cuda), --backbone tiny "
        "for a CPU smoke run, or --allow-large to build it anyway (Python: load_backbone(..., allow_large=True); "
        "backbone_memory_plan(...) gives these figures without building anything)."
    )


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------
def _switch(name: str, value: bool | str, *, tiny: bool) -> bool:
    if isinstance(value, str) and value == "auto":
        return not tiny
    if isinstance(value, bool):
        return value
    raise BackboneError(f"{name} must be True, False or 'auto', got {value!r}")


def load_backbone(
    source: str = "tiny",
    *,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    seed: int = 0,
    vae_slicing: bool | str = "auto",
    vae_tiling: bool | str = "auto",
    cache_dir: str | os.PathLike | None = None,
    allow_large: bool = False,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    timestep_spacing: str = "trailing",
    scheduler: str | None = None,
) -> Backbone:
    """Load a CogVideoX backbone, frozen, ready for any method.

    Steps: (1) resolve the source and its configurations; (2) unless ``allow_large``, plan the
    memory on the meta device and refuse what cannot be built (:func:`backbone_memory_plan`);
    (3) build — ``tiny`` on the CPU, a random preset on the meta device then materialised directly
    on ``device`` in ``dtype`` (parameters are allocated there one at a time and initialised there
    with each module's own rule: PyTorch's ``reset_parameters`` for the diffusers models,
    transformers' ``_init_weights`` for T5; buffers computed at construction, such as the 2B's
    sin-cos positional table, are kept), a pretrained source with ``from_pretrained``; (4) freeze,
    cast, move; (5) VAE slicing and tiling; (6) the scheduler, built and checked in step 1 (class,
    ``prediction_type``, timestep spacing), before any weight is read.

    Args:
        source: ``"tiny"`` (seeded random weights, runs on CPU), ``"cogvideox-5b-random"`` /
            ``"cogvideox-2b-random"`` (the published architectures with seeded random weights;
            defaults 49 frames at 480×720), a local CogVideoX folder, or a hub id such as
            ``"THUDM/CogVideoX-5b"`` already in the Hugging Face cache.
        dtype: ``fp32``/``bf16``/``fp16`` (or a ``torch.dtype``) for the frozen modules.
        device: target device of every module; ``"meta"`` builds the architecture only (no
            memory, no weights: for counting and planning).
        seed: seed of the random weights (``tiny`` and the presets: transformer ``seed``, VAE
            ``seed + 1``, T5 ``seed + 2``; the same seed gives other numbers on another device
            type, whose generator differs). Ignored for pretrained weights.
        vae_slicing: decode one video of a batch at a time (``vae.enable_slicing``); ``"auto"``:
            on for every backbone except ``tiny``.
        vae_tiling: decode in overlapping spatial tiles (``vae.enable_tiling``), what 480×720
            decoding needs to stay within memory; ``"auto"``: on for every backbone except ``tiny``.
        cache_dir: Hugging Face cache folder to look in (default: the hub's standard cache).
        allow_large: skip the memory check of step 2 (build even a full-size random preset on the
            CPU, or weights larger than the device's available memory).
        overrides: random presets only — component → config values replacing the published ones,
            e.g. ``{"transformer": {"num_layers": 2}}`` for a two-block slice at the real width
            (recorded in :attr:`Backbone.overrides` and in :meth:`Backbone.provenance`).
        timestep_spacing: the sampler's timestep spacing, set on every backbone's scheduler
            (``CogVideoXDPMScheduler.from_config(config, timestep_spacing=…)``, as DualReal's
            inference script does, :data:`TIMESTEP_SPACINGS`): ``trailing`` (default; the released
            code's) — 50 steps then start at t = 999 —, ``leading`` or ``linspace``. Recorded in
            :meth:`Backbone.provenance`.
        scheduler: the sampler's class. ``None``: the class the backbone's scheduler configuration
            names (``_class_name`` of ``scheduler/scheduler_config.json``; ``tiny``:
            ``CogVideoXDPMScheduler``; the random presets: the class the published checkpoint ships,
            ``CogVideoXDDIMScheduler``); or one of :data:`SUPPORTED_SCHEDULERS`, built from the same
            configuration — the swap THUDM's and DualReal's inference scripts make to
            ``CogVideoXDPMScheduler`` (comment above :data:`PUBLISHED_CONFIGS`). Either way the class
            must be supported and ``prediction_type`` must be ``v_prediction``, or the load is
            refused. Recorded (:meth:`Backbone.provenance`: class, config hash, the class replaced).

    Returns:
        A :class:`Backbone`, every parameter with ``requires_grad=False``.

    Raises:
        BackboneError: unknown dtype, switch value or timestep spacing, bad overrides, missing folder / cache entry /
            component file, a scheduler class or ``prediction_type`` the methods cannot train and sample
            with (the class and the supported ones named), or (without ``allow_large``) a backbone that does not fit: the message
            gives the memory the weights need and what the device has.
    """
    # 1. Source, dtype, device, configurations, the sampler's scheduler
    torch_dtype = _torch_dtype(dtype)
    device = torch.device(device)
    tiny = source == "tiny"
    slicing = _switch("vae_slicing", vae_slicing, tiny=tiny)
    tiling = _switch("vae_tiling", vae_tiling, tiny=tiny)
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise BackboneError(f"timestep_spacing must be one of {', '.join(TIMESTEP_SPACINGS)}, got {timestep_spacing!r}")
    configs, root = _architecture(source, cache_dir, overrides)
    preset = source in RANDOM_PRESETS
    if not tiny and not preset and root is None:  # a hub id known to the table but not downloaded
        _resolve_pretrained(source, cache_dir)  # raises the error naming the missing download
    # The sampler, before any weight: the class its configuration names (or `scheduler`), refused
    # unless every method can train and sample with it; the timestep spacing on every backbone
    # (DualReal's inference script sets it).
    if tiny or preset:
        named = TINY_PRESET["scheduler_class"] if tiny else PUBLISHED_CONFIGS[RANDOM_PRESETS[source]]["shipped_scheduler"]
        table = TINY_PRESET["scheduler"] if tiny else PUBLISHED_CONFIGS[RANDOM_PRESETS[source]]["scheduler"]
        scheduler_config, where = {"_class_name": named, **table}, f"the {source} scheduler configuration"
    else:
        where = str(root / _COMPONENT_FILES["scheduler"])
        try:
            scheduler_config = json.loads(Path(where).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BackboneError(f"{where}: {exc}") from None
        if not isinstance(scheduler_config, dict):
            raise BackboneError(f"{where}: expected a JSON object, got {type(scheduler_config).__name__}")
    named = scheduler_config.get("_class_name")
    sampler = _build_scheduler(scheduler_config, named, timestep_spacing=timestep_spacing, where=where, replace=scheduler)

    # 2. Memory check (not for tiny: a few MB) on the meta-device architecture
    check = not tiny and not allow_large and device.type != "meta"
    meta = _build_on_meta(configs) if check or preset or (device.type == "meta" and not tiny) else None
    if check:
        _check_plan(_plan(source, meta, torch_dtype, device, overrides))

    # 3. Build
    if tiny:
        parts = _build_tiny(seed)
        random_weights = True
    elif preset:
        parts = dict(meta)
        if device.type != "meta":
            for offset, name in enumerate(MODULE_COMPONENTS):
                torch.manual_seed(seed + offset)
                _materialize(parts[name], device=device, dtype=torch_dtype, init=_init_rule(name))
        parts["tokenizer"] = build_tiny_tokenizer(int(configs["transformer"]["max_text_seq_length"]))
        random_weights = True
    else:
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
        from transformers import AutoTokenizer, T5EncoderModel

        if device.type == "meta":
            parts = dict(meta)
        else:
            try:
                parts = dict(
                    transformer=CogVideoXTransformer3DModel.from_pretrained(
                        root, subfolder="transformer", torch_dtype=torch_dtype
                    ),
                    vae=AutoencoderKLCogVideoX.from_pretrained(root, subfolder="vae", torch_dtype=torch_dtype),
                    text_encoder=T5EncoderModel.from_pretrained(
                        root, subfolder="text_encoder", torch_dtype=torch_dtype
                    ),
                )
            except (OSError, ValueError) as exc:
                raise BackboneError(f"backbone folder {root}: {exc}") from None
        try:
            parts["tokenizer"] = AutoTokenizer.from_pretrained(root, subfolder="tokenizer")
        except (OSError, ValueError) as exc:
            raise BackboneError(f"backbone folder {root}: {exc}") from None
        random_weights = False

    # 4. Freeze, cast, move
    for name in MODULE_COMPONENTS:
        module = parts[name]
        module.requires_grad_(False)
        module.eval()
        if device.type == "meta" and not tiny:
            continue
        if next(module.parameters()).dtype != torch_dtype:
            module.to(dtype=torch_dtype)
        module.to(device=device)

    # 5. VAE memory switches
    if slicing:
        parts["vae"].enable_slicing()
    if tiling:
        parts["vae"].enable_tiling()

    # 6. The sampler's scheduler (built in step 1)
    parts["scheduler"] = sampler
    return Backbone(
        **parts,
        source=source,
        random_weights=random_weights,
        dtype=torch_dtype,
        device=device,
        defaults=default_geometry(source),
        overrides={k: dict(v) for k, v in (overrides or {}).items()},
        scheduler_named=named,
    )
