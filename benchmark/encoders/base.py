"""What every metric-encoder family shares: the spec and family records, weight resolution,
weights-only checkpoint reading, fingerprints, seeded builds and the loaded-encoder base class.

Nothing here knows a particular network: each family module (:mod:`.clip`, :mod:`.dino`,
:mod:`.raft`, :mod:`.amt`) describes its own architecture, checkpoint layout and wrapper in an
:class:`EncoderFamily` record, and each encoder's :class:`EncoderSpec` names its family — as timm's
``PretrainedCfg`` names the architecture it configures (``timm/models/_pretrained.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.media import file_sha256
from dualreal.engine.errors import cause_line
from dualreal.engine.weights import WeightsFileError, load_weights_only

__all__ = [
    "EncoderWeightsError",
    "EncoderFamily",
    "EncoderSpec",
    "LoadedEncoder",
    "ImageEmbedder",
    "RANDOM_ARCHS",
    "find_weights",
    "weight_file",
    "file_fingerprint",
    "state_fingerprint",
    "read_checkpoint",
    "read_state_dict",
    "load_state_dict_strict",
    "seeded",
    "quiet",
    "image_arrays",
]

#: ``random_arch`` values: the real architecture, or a narrow one of the same family (fast on CPU).
RANDOM_ARCHS = ("full", "small")


class EncoderWeightsError(FileNotFoundError):
    """Weights for a metric encoder are missing or unusable. The message names the file and source."""


@dataclass(frozen=True)
class EncoderFamily:
    """How one family of networks is built, loaded and wrapped.

    Attributes:
        name: ``"clip"``, ``"dino"``, ``"raft"`` or ``"amt"``.
        build: ``build(arch) -> nn.Module``: the architecture (``arch`` in :data:`RANDOM_ARCHS`) with
            weights drawn from torch's current RNG (the caller seeds it).
        load: ``load(path) -> (model, wrapper_kwargs)``: the real architecture with the weights found
            at ``path``; raises :class:`EncoderWeightsError` for an unusable file.
        wrapper: the :class:`LoadedEncoder` subclass the scorer calls (``wrapper(spec, model, **kw)``).
        layout: ``"file"`` (one checkpoint file) or ``"hf_folder"`` (a Hugging Face model folder
            with ``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``).
    """

    name: str
    build: Callable[[str], torch.nn.Module]
    load: Callable[[Path], tuple[torch.nn.Module, dict[str, Any]]]
    wrapper: type
    layout: str = "file"


@dataclass(frozen=True)
class EncoderSpec:
    """Where an encoder's weights come from and what it reproduces.

    Attributes:
        name: key in :data:`benchmark.encoders.ENCODERS`.
        family: how the network is built, loaded and wrapped.
        description: one line.
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
    family: EncoderFamily
    description: str
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


# --------------------------------------------------------------------------------------------
# Weight resolution: weights_dir → Hugging Face cache → torch hub → VBench cache → error
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


_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _usable(path: Path, layout: str) -> bool:
    if layout == "hf_folder":
        return path.is_dir() and (path / "config.json").is_file() and any((path / f).is_file() for f in _HF_WEIGHT_FILES)
    return path.is_file()


def _candidates(spec: EncoderSpec, weights_dir: str | os.PathLike | None) -> list[tuple[Path | None, str]]:
    """Every place looked at, in order: ``(path or None if not cached, description)``."""
    out: list[tuple[Path | None, str]] = []
    if weights_dir is not None:
        out += [(Path(weights_dir) / rel, str(Path(weights_dir) / rel)) for rel in spec.weights]
    if spec.hf_hub:
        from huggingface_hub import try_to_load_from_cache

        cache = _hf_cache_dir()
        for repo, filename in spec.hf_hub:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache)
            path = Path(found) if isinstance(found, str) else None
            if path is not None and spec.family.layout == "hf_folder":
                path = path.parent  # the snapshot folder
            out.append((path, f"Hugging Face cache {cache} ({repo}/{filename})"))
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    out += [(hub / filename, str(hub / filename)) for filename in spec.torch_hub]
    vb = _vbench_cache_dir()
    out += [(vb / rel, str(vb / rel)) for rel in spec.vbench_cache]
    return out


def find_weights(spec: EncoderSpec, weights_dir: str | os.PathLike | None = None) -> Path:
    """The weights of ``spec``: ``weights_dir`` → standard caches → error (nothing is downloaded).

    Returns:
        A file, or for the ``hf_folder`` layout a folder holding ``config.json`` and the weights.

    Raises:
        EncoderWeightsError: ``weights_dir`` is not a folder, or nothing usable was found; the
            message lists where it looked and where to get the file.
    """
    if weights_dir is not None and not Path(weights_dir).is_dir():
        raise EncoderWeightsError(f"weights_dir {weights_dir} is not a folder")
    looked = []
    for path, desc in _candidates(spec, weights_dir):
        looked.append(desc)
        if path is not None and _usable(path, spec.family.layout):
            return path
    raise EncoderWeightsError(
        f"no weights for {spec.name} ({spec.description}): put {spec.weights[0]} under --weights-dir "
        f"(get it from {spec.source}); looked in: {'; '.join(looked) or 'nowhere (no weights_dir given)'}. "
        "To try the pipeline without weights: --random-weights (the numbers are then meaningless)"
    )


def weight_file(path: Path) -> Path:
    """The file holding the tensors of a resolved weights path (itself, or the model file of an
    ``hf_folder``)."""
    if not path.is_dir():
        return path
    return next(p for p in (path / f for f in _HF_WEIGHT_FILES) if p.is_file())


# --------------------------------------------------------------------------------------------
# Checkpoints and fingerprints
# --------------------------------------------------------------------------------------------

def file_fingerprint(path: Path) -> str:
    """``sha256:<16 hex>`` of a file's bytes (:func:`benchmark.media.file_sha256`, memoised)."""
    return "sha256:" + file_sha256(path)[:16]


def state_fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of the sha256 of a module's state dict (names and raw bytes, sorted by name)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def read_checkpoint(path: Path) -> object:
    """A checkpoint as tensors and plain containers: safetensors, or a weights-only ``torch.load``
    that allows numpy metadata (:func:`dualreal.engine.weights.load_weights_only`; never unpickles code).

    Raises:
        EncoderWeightsError: a pickle the weights-only reader refuses, a truncated file, another
            format — one line naming the file and the cause (:func:`dualreal.engine.errors.cause_line`).
    """
    if path.suffix != ".safetensors":
        try:
            return load_weights_only(path)
        except WeightsFileError as exc:
            raise EncoderWeightsError(str(exc)) from None
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - truncated files, wrong formats
        raise EncoderWeightsError(f"{path}: cannot be read as a safetensors file ({cause_line(exc)})") from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """:func:`read_checkpoint`, unwrapping a ``{"state_dict": ...}`` checkpoint (AMT's, some RAFTs').

    Raises:
        EncoderWeightsError: unreadable, or not a dict of tensors.
    """
    ckpt = read_checkpoint(path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise EncoderWeightsError(f"{path}: expected a state dict (or a dict with 'state_dict'), got {type(ckpt).__name__}")
    return sd


def load_state_dict_strict(model: torch.nn.Module, state_dict: dict, path: Path, what: str) -> torch.nn.Module:
    """``model.load_state_dict(state_dict, strict=True)``; a mismatch becomes an
    :class:`EncoderWeightsError` saying the file is not ``what``."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise EncoderWeightsError(f"{path}: not {what} ({cause_line(exc, with_type=False)})") from None
    return model


@contextlib.contextmanager
def seeded(seed: int):
    """Seed torch's RNG for a model build without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def quiet(*names: str):
    """Raise the named loggers to ERROR for the duration (libraries that chat while loading)."""
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
# Loaded encoders
# --------------------------------------------------------------------------------------------


def image_arrays(images: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    """uint8 ``(N, H, W, 3)`` / ``(H, W, 3)`` or a list of ``(H, W, 3)`` tensors → numpy arrays.

    Raises:
        ValueError: not uint8 RGB, channels last.
    """
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


class LoadedEncoder:
    """A network ready for the metrics, with the provenance the scorer writes into every row.

    Args:
        spec: the encoder's record.
        model: the network (moved to ``device``, eval mode, no gradients).
        random_weights: True for seeded random weights.
        source: where the weights came from (a path, or ``random (arch, seed)``).
        fingerprint: ``sha256:…`` of the weight file, or ``random-<arch>:seed=…:<state hash>``.
        device: torch device.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, *, random_weights: bool, source: str,
                 fingerprint: str, device: str | torch.device):
        self.spec = spec
        self.name = spec.name
        self.random_weights = random_weights
        self.source = source
        self.fingerprint = fingerprint
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, {self.fingerprint}, random_weights={self.random_weights})"


class ImageEmbedder(LoadedEncoder):
    """An image encoder: ``preprocess_images`` (uint8 → model input) and ``embed`` (input → features)
    are the family's; batching and the float32-on-CPU output are shared."""

    def preprocess_images(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor | Sequence[torch.Tensor], *, batch_size: int = 32) -> torch.Tensor:
        """Image features, float32 ``(N, D)`` on CPU, ``batch_size`` images per forward pass.

        Args:
            images: uint8 ``(N, H, W, 3)`` or a list of ``(H, W, 3)`` tensors (any sizes).
        """
        arrays = image_arrays(images)
        out = []
        for i in range(0, len(arrays), batch_size):
            x = self.preprocess_images([torch.from_numpy(a) for a in arrays[i : i + batch_size]]).to(self.device)
            with torch.inference_mode():
                out.append(self.embed(x).float().cpu())
        return torch.cat(out)
