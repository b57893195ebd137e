"""The one loader of metric encoders: CLIP (OpenAI and LAION), DINO, RAFT, AMT.

One record (:class:`EncoderSpec`, in the spirit of timm's ``PretrainedCfg``) per encoder says where
its weights come from, how inputs are preprocessed, its licence and the reference it reproduces.
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

AMT-S's network code comes from the ``vbench`` wheel (CC BY-NC 4.0, not copied here), installed
without its dependencies::

    pip install --no-deps vbench==0.1.5

Its package ``__init__`` imports ``decord`` and more; :func:`vbench_module` imports just the network
modules without running it. Its downloaders are never called.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmark.metrics._common import MetricUndefined

__all__ = [
    "EncoderWeightsError",
    "EncoderSpec",
    "ENCODERS",
    "VBENCH_REQUIREMENT",
    "resolve_weights",
    "load_encoder",
    "get_encoder",
    "clear_encoder_cache",
    "ClipEncoder",
    "DinoEncoder",
    "RaftFlow",
    "AmtInterpolator",
    "raft_original_to_torchvision",
    "raft_torchvision_to_original",
    "vbench_module",
    "build_random_model",
]

log = logging.getLogger(__name__)

#: The vbench release whose wheel ships the AMT network code used here (``--no-deps``).
VBENCH_REQUIREMENT = "vbench==0.1.5"


class EncoderWeightsError(FileNotFoundError):
    """Weights for a metric encoder are missing or unusable. The message names the file and source."""


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's weights come from and what it reproduces.

    Attributes:
        name: key in :data:`ENCODERS`.
        description: one line.
        metrics: metric columns that use it.
        architecture: the network, as built.
        weights: paths under ``weights_dir``, first existing wins (a folder for Hugging Face models).
        hf_hub: ``(repo_id, filename)`` pairs looked up in the Hugging Face hub cache.
        torch_hub: file names under ``$TORCH_HOME/hub/checkpoints``.
        vbench_cache: paths under ``$VBENCH_CACHE_DIR`` (VBench's own layout).
        source: where to download the weights by hand.
        license: of the weights (and code where it matters).
        reproduces: the reference computation it matches.
        preprocessing: what happens to a uint8 frame before the network.
        random_seed: seed of ``random_weights=True``.
    """

    name: str
    description: str
    metrics: tuple[str, ...]
    architecture: str
    weights: tuple[str, ...]
    hf_hub: tuple[tuple[str, str], ...]
    torch_hub: tuple[str, ...]
    vbench_cache: tuple[str, ...]
    source: str
    license: str
    reproduces: str
    preprocessing: str
    random_seed: int


_CLIP_PREPROCESS = (
    "PIL bicubic resize of the short side to 224, centre crop 224, [0, 1], CLIP mean/std "
    "(open_clip.image_transform(224, is_train=False))"
)

ENCODERS: dict[str, EncoderSpec] = {
    s.name: s
    for s in (
        EncoderSpec(
            name="clip_openai",
            description="OpenAI CLIP ViT-B/32 (open_clip 'ViT-B-32' + QuickGELU, 'openai' weights)",
            metrics=("clip_t",),
            architecture="open_clip ViT-B-32, force_quick_gelu=True",
            weights=(
                "timm/vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin",
                "timm/vit_base_patch32_clip_224.openai/open_clip_model.safetensors",
            ),
            hf_hub=(
                ("timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors"),
                ("timm/vit_base_patch32_clip_224.openai", "open_clip_pytorch_model.bin"),
            ),
            torch_hub=(),
            vbench_cache=(),
            source="https://huggingface.co/timm/vit_base_patch32_clip_224.openai (open_clip_pytorch_model.bin)",
            license="MIT (OpenAI CLIP)",
            reproduces="the authors' CLIP-T: open_clip ViT-B-32 'openai', raw cosine (they ran fp16 on GPU)",
            preprocessing=_CLIP_PREPROCESS,
            random_seed=1001,
        ),
        EncoderSpec(
            name="clip_laion400m",
            description="open_clip ViT-B-32-quickgelu, 'laion400m_e32' weights",
            metrics=("clip_i", "temporal_consistency"),
            architecture="open_clip ViT-B-32-quickgelu (ViT-B-32 + QuickGELU)",
            weights=(
                "timm/vit_base_patch32_clip_224.laion400m_e32/open_clip_pytorch_model.bin",
                "timm/vit_base_patch32_clip_224.laion400m_e32/open_clip_model.safetensors",
            ),
            hf_hub=(
                ("timm/vit_base_patch32_clip_224.laion400m_e32", "open_clip_model.safetensors"),
                ("timm/vit_base_patch32_clip_224.laion400m_e32", "open_clip_pytorch_model.bin"),
            ),
            torch_hub=(),
            vbench_cache=(),
            source="https://huggingface.co/timm/vit_base_patch32_clip_224.laion400m_e32 (open_clip_pytorch_model.bin)",
            license="MIT (open_clip); trained on LAION-400M",
            reproduces="the authors' CLIP-I and T-Cons",
            preprocessing=_CLIP_PREPROCESS,
            random_seed=1002,
        ),
        EncoderSpec(
            name="dino_vits16",
            description="DINO ViT-S/16 (Hugging Face facebook/dino-vits16), CLS of last_hidden_state",
            metrics=("dino_i",),
            architecture="transformers ViTModel (add_pooling_layer=False), 384-d CLS after the final LayerNorm",
            weights=("facebook/dino-vits16",),
            hf_hub=(("facebook/dino-vits16", "config.json"),),
            torch_hub=(),
            vbench_cache=(),
            source="https://huggingface.co/facebook/dino-vits16 (config.json, model.safetensors or pytorch_model.bin)",
            license="Apache-2.0",
            reproduces="the authors' DINO-I (HF image processor, CLS token)",
            preprocessing="PIL bilinear resize to 224x224 (no crop), [0, 1], mean = std = 0.5 (the model's image processor)",
            random_seed=1003,
        ),
        EncoderSpec(
            name="raft_large",
            description="RAFT-large, Chairs+Things weights (raft-things.pth = torchvision C_T_V1)",
            metrics=("dynamic_degree", "dynamic_degree_vbench"),
            architecture="torchvision raft_large, 20 flow updates, inputs 2*(x/255)-1",
            weights=("raft-things.pth", "raft_large_C_T_V1-22a6c225.pth"),
            hf_hub=(),
            torch_hub=("raft_large_C_T_V1-22a6c225.pth", "raft-things.pth"),
            vbench_cache=("raft_model/models/raft-things.pth",),
            source=(
                "https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth (torchvision "
                "Raft_Large_Weights.C_T_V1), or raft-things.pth from the princeton-vl/RAFT models.zip"
            ),
            license="BSD-3-Clause (RAFT)",
            reproduces="VBench dynamic_degree (its vendored RAFT gives identical flows with these weights)",
            preprocessing="none: native resolution, replicate-padded (centred) to a multiple of 8 (16 for the authors' quirk)",
            random_seed=1004,
        ),
        EncoderSpec(
            name="amt_s",
            description="AMT-S frame interpolation (network code from the vbench wheel)",
            metrics=("motion_smoothness",),
            architecture="vbench.third_party.amt.networks.AMT-S.Model(corr_radius=3, corr_lvls=4, num_flows=3)",
            weights=("amt-s.pth",),
            hf_hub=(("lalala125/AMT", "amt-s.pth"),),
            torch_hub=("amt-s.pth",),
            vbench_cache=("amt_model/amt-s.pth",),
            source="https://huggingface.co/lalala125/AMT (amt-s.pth)",
            license="CC BY-NC 4.0 (AMT code and weights)",
            reproduces="VBench motion_smoothness (t = 0.5, one pass, scale 1)",
            preprocessing="even frames in [0, 1], replicate-padded (centred) to a multiple of 16",
            random_seed=1005,
        ),
    )
}

RANDOM_ARCHS = ("full", "small")


# --------------------------------------------------------------------------------------------
# Weight resolution
# --------------------------------------------------------------------------------------------


def _hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _vbench_cache_dir() -> Path:
    return Path(os.environ.get("VBENCH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vbench"))


def _hf_folder_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")
    )


def _candidates(spec: EncoderSpec, weights_dir: str | os.PathLike | None) -> list[tuple[str, Path | None, str]]:
    """Every place looked at, in order: ``(kind, path or None if not cached, description)``."""
    out: list[tuple[str, Path | None, str]] = []
    if weights_dir is not None:
        for rel in spec.weights:
            out.append(("weights_dir", Path(weights_dir) / rel, f"{Path(weights_dir) / rel}"))
    if spec.hf_hub:
        from huggingface_hub import try_to_load_from_cache

        cache = _hf_cache_dir()
        for repo, filename in spec.hf_hub:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache)
            path = Path(found) if isinstance(found, str) else None
            if path is not None and spec.name == "dino_vits16":
                path = path.parent  # the snapshot folder
            out.append(("hf_hub", path, f"Hugging Face cache {cache} ({repo}/{filename})"))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    for filename in spec.torch_hub:
        out.append(("torch_hub", hub / filename, str(hub / filename)))
    vb = _vbench_cache_dir()
    for rel in spec.vbench_cache:
        out.append(("vbench_cache", vb / rel, str(vb / rel)))
    return out


def resolve_weights(name: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Find the weights of encoder ``name``: ``weights_dir`` → standard caches → error.

    Returns:
        A file, or for ``dino_vits16`` a folder holding ``config.json`` and the weights.

    Raises:
        KeyError: unknown encoder.
        EncoderWeightsError: nothing found; the message lists where it looked and the source.
    """
    spec = _spec(name)
    if weights_dir is not None and not Path(weights_dir).is_dir():
        raise EncoderWeightsError(f"weights_dir {weights_dir} is not a folder")
    looked = []
    for _kind, path, desc in _candidates(spec, weights_dir):
        looked.append(desc)
        if path is None:
            continue
        if spec.name == "dino_vits16":
            if path.is_dir() and _hf_folder_complete(path):
                return path
        elif path.is_file():
            return path
    wanted = spec.weights[0]
    raise EncoderWeightsError(
        f"no weights for {spec.name} ({spec.description}): put {wanted} under --weights-dir "
        f"(get it from {spec.source}); looked in: {'; '.join(looked) or 'nowhere (no weights_dir given)'}"
    )


def _spec(name: str) -> EncoderSpec:
    try:
        return ENCODERS[name]
    except KeyError:
        raise KeyError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}") from None


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _file_fingerprint(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = "sha256:" + h.hexdigest()[:16]
    return _SHA_CACHE[key]


def _state_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``: tensors and plain containers only."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle refusals, truncated files, wrong formats
        raise EncoderWeightsError(
            f"{path}: cannot be read as a weights-only checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})"
        ) from None


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's RNG for a model build without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _quiet(*names: str):
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


# --------------------------------------------------------------------------------------------
# Encoders (loaded)
# --------------------------------------------------------------------------------------------


class _Loaded:
    """What every loaded encoder carries for provenance."""

    spec: EncoderSpec
    random_weights: bool
    source: str
    fingerprint: str
    device: torch.device

    def _init(self, spec: EncoderSpec, model: torch.nn.Module, *, random_weights: bool, source: str, fingerprint: str, device):
        self.spec = spec
        self.name = spec.name
        self.random_weights = random_weights
        self.source = source
        self.fingerprint = fingerprint
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.fingerprint}, random_weights={self.random_weights})"


def _as_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise ValueError(f"images: expected uint8 (N, H, W, 3), got {tuple(images.shape)} {images.dtype}")
        return [im.numpy() for im in images.cpu()]
    out = []
    for im in images:
        if not isinstance(im, torch.Tensor) or im.ndim != 3 or im.shape[-1] != 3 or im.dtype != torch.uint8:
            raise ValueError("images: expected uint8 (H, W, 3) tensors")
        out.append(im.cpu().numpy())
    return out


class ClipEncoder(_Loaded):
    """An open_clip model with its image transform and tokenizer.

    ``encode_images`` / ``encode_text`` return float32 embeddings (not normalised); the metric
    formulas normalise.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, **kw):
        import open_clip

        self._init(spec, model, **kw)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.preprocess = open_clip.image_transform(
            size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
        )
        self.context_length = 77

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """open_clip's SimpleTokenizer, context 77; longer prompts are truncated (EOT kept last)."""
        import open_clip

        return open_clip.tokenize(list(texts), context_length=self.context_length)

    def preprocess_images(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` (or a list of ``(H, W, 3)``) → float32 ``(N, 3, 224, 224)``."""
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(a)) for a in _as_list(images)])

    def encode_images(self, images: torch.Tensor | Sequence[torch.Tensor], *, batch_size: int = 32) -> torch.Tensor:
        """CLIP image embeddings: float32 ``(N, D)`` on CPU (D = 512 for ViT-B/32)."""
        arrays = _as_list(images)
        out = []
        for i in range(0, len(arrays), batch_size):
            x = self.preprocess_images([torch.from_numpy(a) for a in arrays[i : i + batch_size]]).to(self.device)
            with torch.inference_mode():
                out.append(self.model.encode_image(x).float().cpu())
        return torch.cat(out)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings: float32 ``(N, D)`` on CPU. Texts are used as given (clean first)."""
        tokens = self.tokenize(texts).to(self.device)
        with torch.inference_mode():
            return self.model.encode_text(tokens).float().cpu()


class DinoEncoder(_Loaded):
    """A Hugging Face ``ViTModel``; the feature is the CLS token of ``last_hidden_state``."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, *, size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, resample: int = 2, **kw):
        self._init(spec, model, **kw)
        self.size = tuple(size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.resample = int(resample)

    def preprocess_images(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 images → float32 ``(N, 3, 224, 224)``: PIL resize (no crop), /255, (x - mean)/std.

        This is what the model's PIL image processor does (transformers' ``ViTImageProcessor`` of
        4.x, ``ViTImageProcessorPil`` of 5.x), independent of the installed transformers' default.
        """
        from PIL import Image

        h, w = self.size
        arrs = [np.asarray(Image.fromarray(a).resize((w, h), resample=self.resample, reducing_gap=None)) for a in _as_list(images)]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() * np.float32(1 / 255)
        return (x - self.mean) / self.std

    def encode_images(self, images: torch.Tensor | Sequence[torch.Tensor], *, batch_size: int = 32) -> torch.Tensor:
        """DINO CLS features: float32 ``(N, hidden)`` on CPU (384 for ViT-S/16)."""
        arrays = _as_list(images)
        out = []
        for i in range(0, len(arrays), batch_size):
            x = self.preprocess_images([torch.from_numpy(a) for a in arrays[i : i + batch_size]]).to(self.device)
            with torch.inference_mode():
                out.append(self.model(pixel_values=x).last_hidden_state[:, 0].float().cpu())
        return torch.cat(out)


class RaftFlow(_Loaded):
    """``flow(img1, img2)``: RAFT on pixel values in [0, 255] → the final flow ``(B, 2, H, W)``.

    Inputs are scaled to [-1, 1] as ``2 * (x / 255) - 1`` (the arithmetic of the original RAFT's
    forward) and run with ``num_flow_updates`` (20) refinement iterations; only the last flow is kept.
    H and W must be multiples of 8 and at least 128 for RAFT-large's 4-level correlation pyramid.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, *, num_flow_updates: int = 20, **kw):
        self._init(spec, model, **kw)
        self.num_flow_updates = num_flow_updates
        levels = getattr(model.corr_block, "num_levels", 4)
        self.min_size = 8 * 2 * 2 ** (levels - 1)

    def __call__(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        h, w = img1.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise MetricUndefined(f"{h}x{w} (padded) is smaller than RAFT's minimum {self.min_size}x{self.min_size}")
        a = 2 * (img1.float() / 255.0) - 1.0
        b = 2 * (img2.float() / 255.0) - 1.0
        with torch.inference_mode():
            return self.model(a.to(self.device), b.to(self.device), num_flow_updates=self.num_flow_updates)[-1]


class AmtInterpolator(_Loaded):
    """``interpolate(img0, img1)``: AMT's midpoint (t = 0.5, scale 1, one pass) of [0, 1] frames.

    H and W must be multiples of 16 and at least 128: AMT-S's 4-level correlation pyramid at 1/8
    resolution needs 2 cells on its coarsest level, else its bilinear sampler divides by zero and the
    prediction is NaN (VBench's own code then silently casts NaN to 0).
    """

    min_size = 128

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, **kw):
        self._init(spec, model, **kw)

    def __call__(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        h, w = img0.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise MetricUndefined(f"{h}x{w} (padded) is smaller than AMT-S's minimum {self.min_size}x{self.min_size}")
        embt = torch.full((img0.shape[0], 1, 1, 1), 0.5, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            return self.model(img0.to(self.device), img1.to(self.device), embt, scale_factor=1.0, eval=True)["imgt_pred"]


# --------------------------------------------------------------------------------------------
# RAFT: original (princeton-vl, raft-things.pth) <-> torchvision state-dict layouts
# --------------------------------------------------------------------------------------------

# (original, torchvision) key patterns, used in both directions; each rule applies at most once per
# key, in order. Placeholders: <enc> an encoder (either naming), <layer> "layerN.i", <n> a digit,
# <g> a GRU gate.
_RAFT_KEYS = [
    ("fnet.", "feature_encoder."),
    ("cnet.", "context_encoder."),
    ("<enc>.conv1.", "<enc>.convnormrelu.0."),
    ("<enc>.norm1.", "<enc>.convnormrelu.1."),
    ("<enc>.conv2.", "<enc>.conv."),
    ("<enc>.<layer>.conv1.", "<enc>.<layer>.convnormrelu1.0."),
    ("<enc>.<layer>.norm1.", "<enc>.<layer>.convnormrelu1.1."),
    ("<enc>.<layer>.conv2.", "<enc>.<layer>.convnormrelu2.0."),
    ("<enc>.<layer>.norm2.", "<enc>.<layer>.convnormrelu2.1."),
    ("update_block.encoder.convc<n>.", "update_block.motion_encoder.convcorr<n>.0."),
    ("update_block.encoder.convf<n>.", "update_block.motion_encoder.convflow<n>.0."),
    ("update_block.encoder.conv.", "update_block.motion_encoder.conv.0."),
    ("update_block.gru.conv<g><n>.", "update_block.recurrent_block.convgru<n>.conv<g>."),
    ("update_block.mask.0.", "mask_predictor.convrelu.0."),
    ("update_block.mask.2.", "mask_predictor.conv."),
]
_PLACEHOLDERS = {"enc": r"fnet|cnet|feature_encoder|context_encoder", "layer": r"layer\d\.\d", "n": r"\d", "g": r"[zrq]"}


def _compile_rules(pairs) -> list[tuple[re.Pattern, str]]:
    rules = []
    for src, dst in pairs:
        pattern = "^" + re.sub(r"<(\w+)>", lambda m: f"(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})", re.escape(src).replace(r"\<", "<").replace(r"\>", ">"))
        rules.append((re.compile(pattern), re.sub(r"<(\w+)>", r"\\g<\1>", dst)))
    return rules


_RAFT_TO_TV = _compile_rules(_RAFT_KEYS)
_RAFT_TO_ORIG = _compile_rules([(tv, orig) for orig, tv in _RAFT_KEYS])
# In the original ResidualBlock, ``norm3`` *is* ``downsample[1]``: the same tensors under two names.
_RAFT_NORM3 = re.compile(r"^(fnet|cnet)\.(layer\d\.\d)\.norm3\.")
_RAFT_DOWNSAMPLE_NORM = re.compile(r"^(fnet|cnet)\.(layer\d\.\d)\.downsample\.1\.(.+)$")


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key, count=1)
    return key


def raft_original_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original RAFT state dict (``raft-things.pth``; ``module.`` prefix allowed) to
    torchvision's ``raft_large`` keys. ``norm3`` duplicates of ``downsample.1`` are dropped."""
    out = {}
    for k, v in state_dict.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        if _RAFT_NORM3.match(k):
            continue
        out[_rename(k, _RAFT_TO_TV)] = v
    return out


def raft_torchvision_to_original(state_dict: dict[str, torch.Tensor], *, module_prefix: bool = True) -> dict[str, torch.Tensor]:
    """The inverse of :func:`raft_original_to_torchvision`, adding ``norm3`` aliases and (as the
    released ``raft-things.pth``, saved from ``DataParallel``) a ``module.`` prefix."""
    out = {}
    for k, v in state_dict.items():
        k = _rename(k, _RAFT_TO_ORIG)
        out[k] = v
        m = _RAFT_DOWNSAMPLE_NORM.match(k)
        if m:
            out[f"{m.group(1)}.{m.group(2)}.norm3.{m.group(3)}"] = v
    if module_prefix:
        out = {"module." + k: v for k, v in out.items()}
    return out


# --------------------------------------------------------------------------------------------
# vbench (AMT-S network code)
# --------------------------------------------------------------------------------------------

_VBENCH_LOCK = threading.Lock()


def vbench_module(name: str):
    """Import ``vbench.<...>`` without executing ``vbench/__init__.py``.

    vbench's package init imports ``decord`` and the whole VBench stack; the AMT network modules
    need only torch. When ``vbench`` is not already imported, an empty package module (its
    ``__path__`` only) stands in for it, so ``import vbench.third_party...`` works.

    Raises:
        ImportError: the wheel is not installed (the message gives the install line).
    """
    with _VBENCH_LOCK:
        if "vbench" not in sys.modules:
            spec = importlib.util.find_spec("vbench")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(
                    f"AMT-S (motion_smoothness) needs the vbench wheel's network code: "
                    f"pip install --no-deps {VBENCH_REQUIREMENT}"
                )
            sys.modules["vbench"] = importlib.util.module_from_spec(spec)  # not executed
        return importlib.import_module(name)


def _amt_s_model() -> torch.nn.Module:
    model_cls = vbench_module("vbench.third_party.amt.networks.AMT-S").Model
    return model_cls(corr_radius=3, corr_lvls=4, num_flows=3)


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------


def _clip_model(arch: str) -> torch.nn.Module:
    import open_clip

    if arch == "full":
        with _quiet("root", "open_clip"):
            return open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=dict(image_size=224, layers=2, width=64, head_width=32, patch_size=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
        quick_gelu=True,
    )


def _dino_config(arch: str):
    from transformers import ViTConfig

    if arch == "full":  # facebook/dino-vits16's config.json
        return ViTConfig(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
            patch_size=16, image_size=224, qkv_bias=True, layer_norm_eps=1e-12, hidden_act="gelu",
        )
    return ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        patch_size=16, image_size=224, qkv_bias=True, layer_norm_eps=1e-12, hidden_act="gelu",
    )


def _raft_model(arch: str) -> torch.nn.Module:
    from torchvision.models.optical_flow import raft_large

    if arch == "full":
        return raft_large(weights=None)
    # Same family and procedure (4-level pyramid, radius 4, convex upsampling), narrow layers.
    from torchvision.models.optical_flow import raft as tv

    feature = tv.FeatureEncoder(block=tv.ResidualBlock, layers=(16, 16, 24, 32, 32), norm_layer=torch.nn.InstanceNorm2d)
    context = tv.FeatureEncoder(block=tv.ResidualBlock, layers=(16, 16, 24, 32, 48), norm_layer=torch.nn.BatchNorm2d)
    corr = tv.CorrBlock(num_levels=4, radius=4)
    motion = tv.MotionEncoder(in_channels_corr=corr.out_channels, corr_layers=(32, 32), flow_layers=(16, 16), out_channels=32)
    recurrent = tv.RecurrentBlock(input_size=motion.out_channels + 16, hidden_size=32)
    update = tv.UpdateBlock(motion_encoder=motion, recurrent_block=recurrent, flow_head=tv.FlowHead(in_channels=32, hidden_size=32))
    mask = tv.MaskPredictor(in_channels=32, hidden_size=32, multiplier=0.25)
    return tv.RAFT(feature_encoder=feature, context_encoder=context, corr_block=corr, update_block=update, mask_predictor=mask)


def build_random_model(name: str, arch: str = "full") -> torch.nn.Module:
    """The architecture of encoder ``name`` with its seeded random weights (no wrapper)."""
    spec = _spec(name)
    if arch not in RANDOM_ARCHS:
        raise ValueError(f"random_arch must be one of {RANDOM_ARCHS}, got {arch!r}")
    with _seeded(spec.random_seed):
        if name in ("clip_openai", "clip_laion400m"):
            return _clip_model(arch)
        if name == "dino_vits16":
            from transformers import ViTModel

            return ViTModel(_dino_config(arch), add_pooling_layer=False)
        if name == "raft_large":
            return _raft_model(arch)
        return _amt_s_model()  # amt_s: AMT-S is the smallest AMT; "small" keeps it


def _wrap(spec: EncoderSpec, model: torch.nn.Module, **kw):
    if spec.name in ("clip_openai", "clip_laion400m"):
        return ClipEncoder(spec, model, **kw)
    if spec.name == "dino_vits16":
        return DinoEncoder(spec, model, **kw)
    if spec.name == "raft_large":
        return RaftFlow(spec, model, **kw)
    return AmtInterpolator(spec, model, **kw)


def _load_real(spec: EncoderSpec, path: Path):
    """Build the architecture and load the file at ``path``; returns (model, extra wrapper kwargs)."""
    if spec.name in ("clip_openai", "clip_laion400m"):
        import open_clip

        model = _clip_model("full")  # ViT-B-32 with QuickGELU: a local file never implies it
        try:
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise EncoderWeightsError(f"{path}: not an open_clip ViT-B-32 checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None
        return model, {}
    if spec.name == "dino_vits16":
        import json

        from transformers import ViTModel

        try:
            with _quiet("transformers"):
                model = ViTModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
        except Exception as exc:  # noqa: BLE001
            raise EncoderWeightsError(f"{path}: not a loadable ViTModel folder ({exc.__class__.__name__}: {str(exc)[:200]})") from None
        extra = {}
        pp = path / "preprocessor_config.json"
        if pp.is_file():
            cfg = json.loads(pp.read_text())
            size = cfg.get("size", 224)
            if isinstance(size, dict):
                size = (size.get("height", 224), size.get("width", 224))
            elif isinstance(size, int):
                size = (size, size)
            extra = dict(size=size, mean=cfg.get("image_mean", (0.5,) * 3), std=cfg.get("image_std", (0.5,) * 3), resample=cfg.get("resample", 2))
        return model, extra
    if spec.name == "raft_large":
        sd = _torch_load(path)
        if not isinstance(sd, dict):
            raise EncoderWeightsError(f"{path}: expected a state dict, got {type(sd).__name__}")
        if "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        keys = [k[len("module.") :] if k.startswith("module.") else k for k in sd]
        if any(k.startswith("fnet.") for k in keys):
            sd = raft_original_to_torchvision(sd)
        model = _raft_model("full")
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise EncoderWeightsError(f"{path}: not a RAFT-large checkpoint, original or torchvision layout ({str(exc)[:200]})") from None
        return model, {}
    # amt_s
    ckpt = _torch_load(path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise EncoderWeightsError(f"{path}: expected a dict with 'state_dict', got {type(ckpt).__name__}")
    model = _amt_s_model()
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise EncoderWeightsError(f"{path}: not an AMT-S checkpoint ({str(exc)[:200]})") from None
    return model, {}


def load_encoder(
    name: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
    random_arch: str = "full",
    device: str | torch.device = "cpu",
):
    """Build encoder ``name`` (see :data:`ENCODERS`) with real or seeded random weights.

    Args:
        name: ``clip_openai``, ``clip_laion400m``, ``dino_vits16``, ``raft_large`` or ``amt_s``.
        weights_dir: folder laid out by upstream names (first place looked at).
        random_weights: build the architecture with the encoder's fixed seed instead of loading.
        random_arch: with ``random_weights``: ``"full"`` (the real architecture) or ``"small"``
            (same family, narrow — for fast CPU smoke runs).
        device: torch device for the network.

    Returns:
        :class:`ClipEncoder`, :class:`DinoEncoder`, :class:`RaftFlow` or :class:`AmtInterpolator`.

    Raises:
        EncoderWeightsError: weights not found or not loadable (message names file and source).
        ValueError: ``random_weights`` together with ``weights_dir``, or an unknown ``random_arch``.
    """
    spec = _spec(name)
    if random_weights:
        if weights_dir is not None:
            raise ValueError("random_weights=True and weights_dir are mutually exclusive")
        model = build_random_model(name, random_arch)
        fp = f"random-{random_arch}:seed={spec.random_seed}:{_state_fingerprint(model)}"
        return _wrap(spec, model, random_weights=True, source=f"random ({random_arch}, seed {spec.random_seed})", fingerprint=fp, device=device)
    path = resolve_weights(name, weights_dir)
    model, extra = _load_real(spec, path)
    weight_file = path
    if path.is_dir():
        weight_file = next(p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.is_file())
    return _wrap(spec, model, random_weights=False, source=str(path), fingerprint=_file_fingerprint(weight_file), device=device, **extra)


_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()


def get_encoder(name: str, **kwargs):
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


def clear_encoder_cache() -> None:
    """Forget the encoders loaded by :func:`get_encoder` (tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()
