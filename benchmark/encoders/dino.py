"""The DINO family: Hugging Face ``facebook/dino-vits16`` (DINO-I).

The feature is the CLS token of ``last_hidden_state`` (after the final LayerNorm), not
``pooler_output``; the model is built without a pooler. Preprocessing is the model's own image
processor (docs/METRICS.md, "DINO-I"): PIL bilinear resize to 224×224 without cropping, [0, 1],
mean = std = 0.5 — read from ``preprocessor_config.json`` when the folder has one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmark.encoders.base import EncoderFamily, EncoderSpec, EncoderWeightsError, ImageEmbedder, image_arrays, quiet
from benchmark.data import read_text
from dualreal.engine.errors import cause_line

__all__ = ["DinoEncoder", "dino_config", "build_dino", "load_dino", "DINO", "SPECS"]


def dino_config(arch: str):
    """``transformers.ViTConfig`` of ``facebook/dino-vits16`` (``"full"``) or a 2-layer, 64-wide ViT."""
    from transformers import ViTConfig

    common = dict(patch_size=16, image_size=224, qkv_bias=True, layer_norm_eps=1e-12, hidden_act="gelu")
    if arch == "full":  # facebook/dino-vits16's config.json
        return ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, **common)
    return ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, **common)


def build_dino(arch: str) -> torch.nn.Module:
    """``ViTModel`` without pooler, architecture of :func:`dino_config`."""
    from transformers import ViTModel

    return ViTModel(dino_config(arch), add_pooling_layer=False)


def load_dino(path: Path) -> tuple[torch.nn.Module, dict]:
    """A Hugging Face model folder → ``ViTModel`` (local files only) and the preprocessing of its
    ``preprocessor_config.json`` (size, mean, std, PIL resample), if present."""
    from transformers import ViTModel

    try:
        with quiet("transformers"):
            model = ViTModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EncoderWeightsError(f"{path}: not a loadable ViTModel folder ({cause_line(exc)})") from None
    extra = {}
    pp = path / "preprocessor_config.json"
    if pp.is_file():
        cfg = json.loads(read_text(pp))
        size = cfg.get("size", 224)
        if isinstance(size, dict):
            size = (size.get("height", 224), size.get("width", 224))
        elif isinstance(size, int):
            size = (size, size)
        extra = dict(size=size, mean=cfg.get("image_mean", (0.5,) * 3), std=cfg.get("image_std", (0.5,) * 3), resample=cfg.get("resample", 2))
    return model, extra


class DinoEncoder(ImageEmbedder):
    """A Hugging Face ``ViTModel``; the feature is the CLS token of ``last_hidden_state``.

    Args:
        size: ``(height, width)`` of the resize (224, 224).
        mean, std: per-channel normalisation (0.5 each).
        resample: PIL resample filter (2 = bilinear).
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, *, size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, resample: int = 2, **kw):
        super().__init__(spec, model, **kw)
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
        arrs = [np.asarray(Image.fromarray(a).resize((w, h), resample=self.resample, reducing_gap=None)) for a in image_arrays(images)]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() * np.float32(1 / 255)
        return (x - self.mean) / self.std

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 224, 224)`` → CLS features ``(N, hidden)`` (384 for ViT-S/16)."""
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]


DINO = EncoderFamily(name="dino", build=build_dino, load=load_dino, wrapper=DinoEncoder, layout="hf_folder")

SPECS = (
    EncoderSpec(
        name="dino_vits16",
        family=DINO,
        description="DINO ViT-S/16 (Hugging Face facebook/dino-vits16), CLS of last_hidden_state",
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
)
