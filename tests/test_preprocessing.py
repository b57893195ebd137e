"""The DualReal release's preprocessing as every backbone's default, each an option: the reference
image stretched to the image encoder's 224 × 224, trailing timestep spacing, RAFT padding to 16.
(Motion clips and identity images: tests/test_grid.py, tests/test_media.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.scorer import Scorer
from dualreal.engine.backbone import BackboneError, load_backbone
from dualreal.engine.image_encoder import CLIP_MEAN, CLIP_STD, OpenCLIPImageEncoder, build_image_encoder


def _three_bands(h: int = 240, w: int = 360) -> torch.Tensor:
    """uint8 ``(h, w, 3)``: red left eighth, green right eighth, blue between (a 3:2 image)."""
    img = torch.zeros(h, w, 3, dtype=torch.uint8)
    img[..., 2] = 255
    img[:, : w // 8] = torch.tensor([255, 0, 0], dtype=torch.uint8)
    img[:, -w // 8 :] = torch.tensor([0, 255, 0], dtype=torch.uint8)
    return img


def _pixels(encoder, images: torch.Tensor) -> torch.Tensor:
    """The encoder's input back in [0, 1]: ``(N, S, S, 3)``."""
    x = encoder.preprocess(images)
    return (x * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)).permute(0, 2, 3, 1)


def _encoder(resize: str) -> OpenCLIPImageEncoder:
    """ViT-H-14's input geometry (224 px) around a stand-in tower: only the preprocessing runs."""
    return OpenCLIPImageEncoder(torch.nn.Identity(), embed_dim=1024, image_size=224, name="probe", random_weights=True,
                                resize=resize)


def test_reference_image_is_stretched_to_224_without_cropping():
    """As the release reads its conditioning images (224 × 224 whatever the aspect ratio): the
    sides of a 3:2 image survive; the crop option drops them. The stretch equals PIL's bicubic
    resize of the whole image to 224 × 224 (an independent implementation) to 1/100."""
    img = _three_bands()
    a, b = _pixels(_encoder("stretch"), img[None])[0], _pixels(_encoder("crop"), img[None])[0]
    assert a.shape == b.shape == (224, 224, 3)
    red, green = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    assert torch.allclose(a[:, :20], red.expand(224, 20, 3), atol=0.01)
    assert torch.allclose(a[:, -20:], green.expand(224, 20, 3), atol=0.01)
    assert b[..., :2].max() < 0.01 and b[..., 2].min() > 0.99  # centre crop: the blue middle only
    pil = np.asarray(Image.fromarray(img.numpy()).resize((224, 224), Image.BICUBIC), dtype=np.float32) / 255
    assert np.abs(a.numpy() - pil).max() < 0.01
    assert build_image_encoder("tiny-random").resize == "stretch"  # the default
    with pytest.raises(ValueError, match="resize must be one of"):
        build_image_encoder("tiny-random", resize="pad")


def test_image_conditioned_methods_pass_reference_resize(tiny_backbone):
    from baselines.dreamvideo import DreamVideoMethod
    from dualreal.method import DualRealMethod

    for cls in (DualRealMethod, DreamVideoMethod):
        assert cls(tiny_backbone).image_encoder.resize == "stretch"
        assert cls(tiny_backbone, reference_resize="crop").image_encoder.resize == "crop"


def test_full_size_random_image_encoder_is_vit_h_14_on_meta():
    enc = build_image_encoder("ViT-H-14-random", device="meta")
    assert (enc.embed_dim, enc.image_size, enc.random_weights) == (1024, 224, True)
    assert sum(p.numel() for p in enc.parameters()) == 632_076_800  # ViT-H-14's vision tower


def test_trailing_spacing_is_every_backbones_default_and_an_option():
    """CogVideoX's 5B scheduler with trailing spacing starts sampling at t = 999 (zero terminal SNR)."""
    bb = load_backbone("tiny")
    bb.scheduler.set_timesteps(4)
    assert bb.scheduler.timesteps.tolist() == [999, 749, 499, 249]
    assert bb.provenance()["scheduler_timestep_spacing"] == "trailing"
    leading = load_backbone("tiny", timestep_spacing="leading")
    leading.scheduler.set_timesteps(4)
    assert leading.scheduler.timesteps.tolist() == [750, 500, 250, 0]
    assert leading.provenance()["scheduler_timestep_spacing"] == "leading"
    with pytest.raises(BackboneError, match="timestep_spacing must be one of trailing, leading, linspace"):
        load_backbone("tiny", timestep_spacing="middle")


def test_dynamic_degree_pads_to_16_by_default(make_frames):
    """At 136 × 200 the authors' padding (16 → 144 × 208) and VBench's (8: none) give other flows."""
    frames = make_frames(5, 136, 200)
    default = Scorer(["dynamic_degree"], random_weights=True).score(frames, 8.0)
    sixteen = Scorer(["dynamic_degree"], random_weights=True, dd_pad_multiple=16).score(frames, 8.0)
    eight = Scorer(["dynamic_degree"], random_weights=True, dd_pad_multiple=8).score(frames, 8.0)
    assert default["dd_pad_multiple"] == 16 and default["dynamic_degree"] == sixteen["dynamic_degree"]
    assert eight["dd_pad_multiple"] == 8 and eight["dynamic_degree"] != default["dynamic_degree"]
