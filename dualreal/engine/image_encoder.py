"""The reference-image encoder that conditions DualReal's motion adapters (docs/METHOD.md §1).

During motion training ``c`` is the embedding of a random frame of the training clip; at inference it
is the embedding of the identity's reference image. The encoder is swappable: anything with
``embed_dim``, ``random_weights``, ``name`` and ``encode(images) → (N, e)`` works
(:class:`ReferenceImageEncoder`).

Built-in encoders (:func:`build_image_encoder`):

* ``"ViT-H-14"`` — OpenCLIP ViT-H-14 ``laion2b_s32b_b79k`` (``e = 1024``), the released code's
  encoder: the **unnormalised** output of ``encode_image`` (as released). Weights are resolved, never
  downloaded: explicit path (file or folder) → ``$DUALREAL_OPENCLIP`` → the Hugging Face hub cache
  (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``: ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin``, the latter read with ``weights_only=True``) → a
  :class:`ImageEncoderError` naming the file and where to put it. Only the vision tower is kept.
* ``"ViT-H-14-random"`` — the same ViT-H-14 vision tower (``e = 1024``, 224 px) with seeded random
  weights: the encoder of the full-size random backbones (``cogvideox-5b-random``), so that a
  paper-scale job runs, at its real size, before any weight is downloaded; ``random_weights=True``.
* ``"tiny-random"`` — a seeded random OpenCLIP ``CLIP`` at toy size (``e = 64``) for tests and the
  ``tiny`` backbone; ``random_weights=True``.

One preprocessing for training frames and reference images alike (the released code normalises
them differently — a quirk not copied): uint8 ``(N, H, W, 3)`` → the encoder's square input size
(bicubic, antialiased) → CLIP mean/std normalisation, in torch. The geometry is the released
code's by default (``resize="stretch"``): the image is resized to 224 × 224 **without cropping**,
whatever its aspect ratio —

* training, ``wenc-k/DualReal`` ``train/train_adapter.py`` (commit 2186cd1), lines 657 and 849:
  ``decord.VideoReader(uri=…, width=224, height=224)`` reads the conditioning frames of the identity
  and motion clips at 224 × 224;
* inference, ``inference/inference.py`` lines 25-29 (``data.Resize([224, 224])`` before
  ``ToTensor`` and the CLIP normalisation) and ``train/train_adapter.py`` line 1346 (the same
  transform for the validation videos).

``resize="crop"`` resizes the short side to 224 and centre-crops (CLIP's own preprocessing): it
keeps the aspect ratio but drops a third of a 3:2 frame.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from dualreal.engine.config import ImageConditionedConfig
from dualreal.engine.errors import cause_line
from dualreal.engine.protocol import CustomizationMethod
from dualreal.engine.weights import WeightsFileError, checkpoint_metadata_allowed

__all__ = [
    "RESIZES",
    "ImageConditionedMethod",
    "ReferenceImageEncoder",
    "OpenCLIPImageEncoder",
    "ImageEncoderError",
    "build_image_encoder",
    "resolve_openclip_weights",
    "OPENCLIP_HF_REPOS",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Hugging Face repositories holding the open_clip checkpoints (looked up in the local cache only).
OPENCLIP_HF_REPOS: dict[tuple[str, str], str] = {
    ("ViT-H-14", "laion2b_s32b_b79k"): "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
}
_CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: How an image reaches the encoder's square input: ``stretch`` (the released code's) or ``crop``.
RESIZES = ("stretch", "crop")

#: Size of the ``tiny-random`` encoder.
TINY_ENCODER = dict(
    embed_dim=64,
    vision_cfg=dict(image_size=32, layers=2, width=32, head_width=16, patch_size=8),
    text_cfg=dict(context_length=8, vocab_size=64, width=16, heads=2, layers=1),
)


class ImageEncoderError(RuntimeError):
    """The reference-image encoder's weights cannot be found; the message says where to put them."""


@runtime_checkable
class ReferenceImageEncoder(Protocol):
    """What DualReal needs of a reference-image encoder."""

    name: str
    embed_dim: int
    random_weights: bool

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` → float32 ``(N, embed_dim)`` on CPU."""
        ...


class OpenCLIPImageEncoder(nn.Module):
    """An OpenCLIP vision tower with CLIP preprocessing in torch.

    Args:
        visual: the open_clip vision tower (``model.visual``).
        embed_dim (`int`): its output width ``e``.
        image_size (`int`): its square input size.
        name (`str`): a label for records (``"ViT-H-14/laion2b_s32b_b79k"``).
        random_weights (`bool`): whether the weights are random.
        batch_size (`int`, defaults to `32`): images per forward pass in :meth:`encode`.
        resize (`str`, defaults to `"stretch"`): ``"stretch"`` — resize to ``image_size`` ×
            ``image_size`` without cropping (the released code; module docstring) — or ``"crop"`` —
            short side to ``image_size``, then centre crop.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        embed_dim: int,
        image_size: int,
        name: str,
        random_weights: bool,
        batch_size: int = 32,
        resize: str = "stretch",
    ) -> None:
        super().__init__()
        if resize not in RESIZES:
            raise ValueError(f"resize must be one of {RESIZES}, got {resize!r}")
        self.visual = visual.eval().requires_grad_(False)
        self.embed_dim = int(embed_dim)
        self.image_size = int(image_size)
        self.name = name
        self.random_weights = bool(random_weights)
        self.batch_size = int(batch_size)
        self.resize = resize
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` → normalised float ``(N, 3, S, S)``, ``S = image_size``.

        ``resize="stretch"``: one bicubic (antialiased) resize to ``S × S``, the aspect ratio not
        kept, nothing cut (the released code's geometry, module docstring); ``"crop"``: the short
        side to ``S``, then the centre ``S × S``. Then [0, 1] and the CLIP mean/std.

        Raises:
            ValueError: not uint8 ``(N, H, W, 3)``.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        h, w = x.shape[-2:]
        s = self.image_size
        if self.resize == "stretch":
            nh, nw = s, s
        else:
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top : top + s, left : left + s]
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Args:
            images: uint8 ``(N, H, W, 3)`` (or ``(H, W, 3)`` for one image), any device.

        Returns:
            float32 ``(N, embed_dim)`` on CPU: the unnormalised image embedding.
        """
        if images.ndim == 3:
            images = images.unsqueeze(0)
        param = next(self.visual.parameters())
        out = []
        for start in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[start : start + self.batch_size].to(param.device))
            out.append(self.visual(x.to(param.dtype)).float().cpu())
        return torch.cat(out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encode(images)


def resolve_openclip_weights(
    model_name: str = "ViT-H-14",
    pretrained: str = "laion2b_s32b_b79k",
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Find an OpenCLIP checkpoint: explicit path → ``$DUALREAL_OPENCLIP`` → HF hub cache → error.

    Args:
        model_name, pretrained: the open_clip architecture and tag.
        path: a checkpoint file, or a folder holding ``open_clip_model.safetensors`` /
            ``open_clip_pytorch_model.bin``.
        cache_dir: Hugging Face hub cache to look in (default: the hub's standard cache).

    Raises:
        ImageEncoderError: nothing found; the message names the file and the places searched.
    """
    searched: list[str] = []
    for candidate in (path, os.environ.get("DUALREAL_OPENCLIP")):
        if not candidate:
            continue
        p = Path(candidate).expanduser()
        if p.is_file():
            return p
        if p.is_dir():
            for name in _CHECKPOINT_NAMES:
                if (p / name).is_file():
                    return p / name
        searched.append(str(p))
    repo = OPENCLIP_HF_REPOS.get((model_name, pretrained))
    if repo is not None:
        try:
            from huggingface_hub import try_to_load_from_cache

            for name in _CHECKPOINT_NAMES:
                hit = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=cache_dir)
                if isinstance(hit, str) and Path(hit).is_file():
                    return Path(hit)
        except ImportError:  # pragma: no cover - huggingface_hub ships with diffusers
            pass
        searched.append(f"Hugging Face cache: {repo}")
    raise ImageEncoderError(
        f"OpenCLIP {model_name} ({pretrained}) weights not found (searched: {'; '.join(searched) or 'nothing'}). "
        f"Download `{_CHECKPOINT_NAMES[1]}` (or `{_CHECKPOINT_NAMES[0]}`) from "
        f"https://huggingface.co/{repo or 'laion'} and pass its path as the DualReal option "
        f"image_encoder_path, or set DUALREAL_OPENCLIP to it; the tiny backbone uses "
        f"image_encoder='tiny-random'."
    )


def build_image_encoder(
    name: str = "ViT-H-14",
    *,
    path: str | os.PathLike | None = None,
    pretrained: str = "laion2b_s32b_b79k",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    resize: str = "stretch",
) -> OpenCLIPImageEncoder:
    """Build a reference-image encoder.

    Args:
        name: ``"ViT-H-14"`` (or any open_clip architecture with a local checkpoint),
            ``"<architecture>-random"`` (that architecture's vision tower with seeded random weights,
            e.g. ``"ViT-H-14-random"``) or ``"tiny-random"``.
        path: explicit checkpoint file or folder (real encoders).
        pretrained: open_clip pretrained tag, used to find the checkpoint in the hub cache.
        device, dtype: where the vision tower lives.
        seed: seed of the random weights (``*-random``).
        resize: ``"stretch"`` (the released code's) or ``"crop"``
            (:meth:`OpenCLIPImageEncoder.preprocess`).

    Raises:
        ImageEncoderError: weights of a real encoder not found.
        ValueError: an unknown ``resize``.
    """
    import open_clip

    if name.endswith("-random"):
        arch = name.removesuffix("-random")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            if arch == "tiny":
                cfg = TINY_ENCODER
                visual = open_clip.model.CLIP(**TINY_ENCODER).visual
            else:  # the vision tower alone, built where it will run (ViT-H-14's is 632 M parameters)
                cfg = open_clip.get_model_config(arch)
                if cfg is None:
                    raise ValueError(f"unknown open_clip architecture {arch!r} for image encoder {name!r}")
                with torch.device(device):
                    visual = open_clip.model._build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
        finally:
            torch.random.set_rng_state(gen_state)
        image_size = cfg["vision_cfg"]["image_size"]
        return OpenCLIPImageEncoder(
            visual,
            embed_dim=int(cfg["embed_dim"]),
            image_size=int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size),
            name=name,
            random_weights=True,
            resize=resize,
        ).to(device=device, dtype=dtype)

    weights = resolve_openclip_weights(name, pretrained, path)
    try:
        with checkpoint_metadata_allowed():  # numpy metadata allowed, no code unpickled (dualreal.engine.weights)
            model = open_clip.create_model(name, pretrained=str(weights), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a refused pickle, a truncated file, a mismatched state dict
        raise WeightsFileError(f"{weights}: not an open_clip {name} checkpoint ({cause_line(exc)})") from None
    cfg = open_clip.get_model_config(name)
    image_size = cfg["vision_cfg"]["image_size"]
    if isinstance(image_size, (tuple, list)):
        image_size = image_size[0]
    encoder = OpenCLIPImageEncoder(
        model.visual,
        embed_dim=int(cfg["embed_dim"]),
        image_size=int(image_size),
        name=f"{name}/{pretrained}",
        random_weights=False,
        resize=resize,
    )
    del model
    return encoder.to(device=device, dtype=dtype)


class ImageConditionedMethod(CustomizationMethod):
    """A method whose motion adapters take a reference-image embedding (DualReal, DreamVideo-style).

    Its config is an :class:`~dualreal.engine.config.ImageConditionedConfig`. Construction checks
    that a real encoder's weights exist (so a missing file fails before any training), the encoder
    itself is built on first use (:attr:`image_encoder`), and the checkpoint config records which
    encoder conditioned the adapters and its width.

    Raises:
        ImageEncoderError: the OpenCLIP weights of a real encoder are not found.
    """

    config_class = ImageConditionedConfig

    def __init__(self, backbone: Any, **options: Any) -> None:
        super().__init__(backbone, **options)
        if not self.config.image_encoder.endswith("-random"):
            resolve_openclip_weights(self.config.image_encoder, path=self.config.image_encoder_path)
        self._image_encoder: OpenCLIPImageEncoder | None = None

    @property
    def image_encoder(self) -> OpenCLIPImageEncoder:
        """The reference-image encoder named by the config (built on first use, seeded by ``seed``,
        resizing as ``reference_resize`` says)."""
        if self._image_encoder is None:
            cfg = self.config
            self._image_encoder = build_image_encoder(
                cfg.image_encoder, path=cfg.image_encoder_path, device=self.backbone.device, seed=cfg.seed,
                resize=cfg.reference_resize,
            )
        return self._image_encoder

    def checkpoint_config(self, *, exclude: tuple[str, ...] = (), **metadata: Any) -> dict[str, Any]:
        """:meth:`CustomizationMethod.checkpoint_config` plus ``_image_encoder`` and ``_condition_dim``."""
        enc = self.image_encoder
        return super().checkpoint_config(
            exclude=exclude, **metadata, _image_encoder=enc.name, _condition_dim=int(enc.embed_dim)
        )
