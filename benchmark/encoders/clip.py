"""The CLIP family: OpenAI CLIP ViT-B/32 (CLIP-T) and open_clip ViT-B-32-quickgelu / LAION-400M
(CLIP-I, T-Cons), both built by open_clip.

Loading trap (docs/METRICS.md, "CLIP-T"): the OpenAI ViT-B/32 weights use QuickGELU. open_clip's
``openai`` tag switches it on implicitly, but ``create_model("ViT-B-32", pretrained=<local file>)``
builds GELU and the embeddings drift by about 0.6 % without any error. The architecture here always
passes ``force_quick_gelu=True``; a test checks the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from benchmark.encoders.base import EncoderFamily, EncoderSpec, EncoderWeightsError, ImageEmbedder, image_arrays, quiet
from dualreal.engine.errors import cause_line
from dualreal.engine.weights import checkpoint_metadata_allowed

__all__ = ["ClipEncoder", "build_clip", "load_clip", "CLIP", "SPECS"]

#: open_clip's text context length (longer prompts are truncated, end-of-text token kept).
CONTEXT_LENGTH = 77


def build_clip(arch: str) -> torch.nn.Module:
    """open_clip ViT-B-32 with QuickGELU (``"full"``), or a 2-layer, 64-wide CLIP (``"small"``)."""
    import open_clip

    if arch == "full":
        with quiet("root", "open_clip"):
            return open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=dict(image_size=224, layers=2, width=64, head_width=32, patch_size=32),
        text_cfg=dict(context_length=CONTEXT_LENGTH, vocab_size=49408, width=64, heads=2, layers=2),
        quick_gelu=True,
    )


def load_clip(path: Path) -> tuple[torch.nn.Module, dict]:
    """ViT-B-32 + QuickGELU with an open_clip checkpoint (``.bin`` or ``.safetensors``), strictly."""
    import open_clip

    model = build_clip("full")  # a local file never implies QuickGELU: always force it
    try:
        with checkpoint_metadata_allowed():  # numpy metadata allowed, no code unpickled
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EncoderWeightsError(f"{path}: not an open_clip ViT-B-32 checkpoint ({cause_line(exc)})") from None
    return model, {}


class ClipEncoder(ImageEmbedder):
    """An open_clip model with its image transform and tokenizer.

    ``encode_images`` / ``encode_text`` return float32 embeddings (not normalised); the metric
    formulas normalise. Preprocessing: ``open_clip.image_transform(224, is_train=False)`` — PIL
    bicubic resize of the short side to 224, centre crop, [0, 1], CLIP mean/std.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, **kw):
        import open_clip

        super().__init__(spec, model, **kw)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.preprocess = open_clip.image_transform(
            size, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
        )
        self.context_length = CONTEXT_LENGTH

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """open_clip's SimpleTokenizer, context 77; longer prompts are truncated (EOT kept last)."""
        import open_clip

        return open_clip.tokenize(list(texts), context_length=self.context_length)

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` with the start and end tokens, before truncation to :attr:`context_length`."""
        import open_clip

        # A context no text can fill (at most 4 byte tokens per character): nothing is truncated.
        return int((open_clip.tokenize([text], context_length=4 * len(text) + 2) != 0).sum())

    def preprocess_images(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` (or a list of ``(H, W, 3)``) → float32 ``(N, 3, 224, 224)``."""
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(a)) for a in image_arrays(images)])

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(N, 3, 224, 224)`` → image embeddings ``(N, D)`` (D = 512 for ViT-B/32)."""
        return self.model.encode_image(pixels)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings: float32 ``(N, D)`` on CPU. Texts are used as given (clean first)."""
        tokens = self.tokenize(texts).to(self.device)
        with torch.inference_mode():
            return self.model.encode_text(tokens).float().cpu()


CLIP = EncoderFamily(name="clip", build=build_clip, load=load_clip, wrapper=ClipEncoder)

_PREPROCESS = (
    "PIL bicubic resize of the short side to 224, centre crop 224, [0, 1], CLIP mean/std "
    "(open_clip.image_transform(224, is_train=False))"
)

SPECS = (
    EncoderSpec(
        name="clip_openai",
        family=CLIP,
        description="OpenAI CLIP ViT-B/32 (open_clip 'ViT-B-32' + QuickGELU, 'openai' weights)",
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
        preprocessing=_PREPROCESS,
        random_seed=1001,
    ),
    EncoderSpec(
        name="clip_laion400m",
        family=CLIP,
        description="open_clip ViT-B-32-quickgelu, 'laion400m_e32' weights",
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
        preprocessing=_PREPROCESS,
        random_seed=1002,
    ),
)
