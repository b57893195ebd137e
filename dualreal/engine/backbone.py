"""The one place that builds the CogVideoX backbone.

Two sources, the same classes and the same pipeline:

* a pretrained CogVideoX folder or hub id (``THUDM/CogVideoX-5b``), loaded with diffusers'
  ``from_pretrained`` offline-first (local folder → Hugging Face hub cache → a clear error naming
  the missing file);
* the named ``tiny`` preset: :class:`~diffusers.CogVideoXTransformer3DModel`,
  :class:`~diffusers.AutoencoderKLCogVideoX`, a T5 encoder and :class:`~diffusers.CogVideoXDPMScheduler`
  built from small configs with seeded random weights, and a byte-level tokenizer built locally,
  so that every code path (VAE 4k+1 frames, joint text/video attention, rotary embeddings,
  v-prediction with zero-terminal-SNR betas) runs in seconds on two CPU cores with no download.

Anything generated with the ``tiny`` preset is random-weights output; :class:`Backbone` carries
``random_weights=True`` so that every record and table says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "Backbone",
    "BackboneError",
    "TINY_PRESET",
    "DTYPES",
    "load_backbone",
    "default_geometry",
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
    "scheduler": dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=1.0,
        steps_offset=0,
        timestep_spacing="trailing",
    ),
    # Default video geometry for the preset (4k+1 frames; H, W multiples of 16; 2:3 as 480x720).
    # 128 px is the smallest size RAFT's 1/8-resolution correlation pyramid accepts, so the
    # dynamic degree is defined on smoke videos too.
    "defaults": dict(num_frames=9, height=128, width=192),
}

#: Defaults of the real CogVideoX-5B geometry (METHOD.md, "Backbone" and "Inference").
REAL_DEFAULTS: dict[str, int] = dict(num_frames=49, height=480, width=720)


def default_geometry(source: str) -> dict[str, int]:
    """The default ``num_frames``, ``height``, ``width`` of backbone ``source``, without loading it.

    Args:
        source: as :func:`load_backbone` takes it: ``"tiny"`` or a CogVideoX folder / hub id.

    Returns:
        A new dict: the ``tiny`` preset's geometry (9 frames, 128×192) for ``"tiny"``, the paper's
        (49 frames, 480×720) for any other source. :attr:`Backbone.defaults` of a loaded backbone.
    """
    return dict(TINY_PRESET["defaults"] if source == "tiny" else REAL_DEFAULTS)

_COMPONENT_FILES = {
    "transformer": "transformer/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "tokenizer": "tokenizer",
    "scheduler": "scheduler/scheduler_config.json",
}


class BackboneError(RuntimeError):
    """Raised when a backbone cannot be resolved or loaded; the message names what is missing."""


@dataclass
class Backbone:
    """The CogVideoX components every method shares.

    Attributes:
        transformer: ``CogVideoXTransformer3DModel``, frozen by :func:`load_backbone`.
        vae: ``AutoencoderKLCogVideoX`` (frozen).
        text_encoder: ``T5EncoderModel`` (frozen).
        tokenizer: a T5 tokenizer (real backbones) or a byte-level fast tokenizer (``tiny``).
        scheduler: ``CogVideoXDPMScheduler`` (v-prediction, zero terminal SNR, trailing spacing).
        source: ``"tiny"``, a local folder or a hub id.
        random_weights: ``True`` when any weight was randomly initialised (the ``tiny`` preset).
        dtype: compute dtype of the frozen modules.
        device: where the modules live.
        defaults: default ``num_frames``, ``height``, ``width`` for this backbone.
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
        """A JSON-able description of the backbone for result records."""
        return {
            "backbone": self.source,
            "backbone_random_weights": self.random_weights,
            "backbone_dtype": str(self.dtype).replace("torch.", ""),
            "backbone_fingerprint": self.fingerprint(),
        }

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
    """A byte-level fast tokenizer that needs no download (for the ``tiny`` preset).

    Every UTF-8 byte is one token (ids 3..258), with ``<pad>`` = 0, ``</s>`` = 1 (appended, as T5
    does) and ``<unk>`` = 2. It answers the calls ``CogVideoXPipeline`` makes of a T5 tokenizer.

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
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_tiny_tokenizer(TINY_PRESET["transformer"]["max_text_seq_length"])
    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(**TINY_PRESET["transformer"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(**TINY_PRESET["vae"])
    torch.manual_seed(seed + 2)
    t5_cfg = T5Config(vocab_size=len(tokenizer), **TINY_PRESET["text_encoder"])
    text_encoder = T5EncoderModel(t5_cfg)
    scheduler = CogVideoXDPMScheduler(**TINY_PRESET["scheduler"])
    return dict(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
    )


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
                f"fetch it), or pass --backbone tiny for the random-weights preset. [{type(exc).__name__}]"
            ) from None
    missing = [rel for rel in _COMPONENT_FILES.values() if not (root / rel).exists()]
    if missing:
        raise BackboneError(
            f"backbone folder {root} is incomplete: missing {', '.join(missing)} "
            "(a CogVideoX folder has transformer/, vae/, text_encoder/, tokenizer/, scheduler/)"
        )
    return root


def load_backbone(
    source: str = "tiny",
    *,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    seed: int = 0,
    vae_slicing: bool = False,
    vae_tiling: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Backbone:
    """Load a CogVideoX backbone, frozen, ready for any method.

    Args:
        source: ``"tiny"`` (seeded random weights, runs on CPU), a local CogVideoX folder, or a
            hub id such as ``"THUDM/CogVideoX-5b"`` already in the Hugging Face cache.
        dtype: ``fp32``/``bf16``/``fp16`` (or a ``torch.dtype``) for the frozen modules.
        device: target device of every module.
        seed: seed of the ``tiny`` preset's weights (ignored for pretrained weights).
        vae_slicing: decode one video of a batch at a time (``vae.enable_slicing``).
        vae_tiling: decode in spatial tiles (``vae.enable_tiling``), for 480×720 on small GPUs.
        cache_dir: Hugging Face cache folder to look in (default: the hub's standard cache).

    Returns:
        A :class:`Backbone`, every parameter with ``requires_grad=False``.

    Raises:
        BackboneError: unknown dtype, missing folder / cache entry / component file.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise BackboneError(f"unknown dtype {dtype!r}; choose one of {sorted(set(DTYPES))}")
        torch_dtype = DTYPES[dtype]
    else:
        torch_dtype = dtype
    device = torch.device(device)

    if source == "tiny":
        parts = _build_tiny(seed)
        random_weights = True
    else:
        from diffusers import (
            AutoencoderKLCogVideoX,
            CogVideoXDPMScheduler,
            CogVideoXTransformer3DModel,
        )
        from transformers import AutoTokenizer, T5EncoderModel

        root = _resolve_pretrained(source, cache_dir)
        try:
            parts = dict(
                transformer=CogVideoXTransformer3DModel.from_pretrained(
                    root, subfolder="transformer", torch_dtype=torch_dtype
                ),
                vae=AutoencoderKLCogVideoX.from_pretrained(root, subfolder="vae", torch_dtype=torch_dtype),
                text_encoder=T5EncoderModel.from_pretrained(
                    root, subfolder="text_encoder", torch_dtype=torch_dtype
                ),
                tokenizer=AutoTokenizer.from_pretrained(root, subfolder="tokenizer"),
                scheduler=CogVideoXDPMScheduler.from_pretrained(root, subfolder="scheduler"),
            )
        except (OSError, ValueError) as exc:
            raise BackboneError(f"backbone folder {root}: {exc}") from None
        random_weights = False

    for name in ("transformer", "vae", "text_encoder"):
        module = parts[name]
        module.requires_grad_(False)
        module.eval()
        if next(module.parameters()).dtype != torch_dtype:
            module.to(dtype=torch_dtype)
        module.to(device=device)
    if vae_slicing:
        parts["vae"].enable_slicing()
    if vae_tiling:
        parts["vae"].enable_tiling()
    return Backbone(
        **parts,
        source=source,
        random_weights=random_weights,
        dtype=torch_dtype,
        device=device,
        defaults=default_geometry(source),
    )
