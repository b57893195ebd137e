"""The one loader of metric encoders: resolution order, real checkpoint layouts, the QuickGELU trap,
weights-only loading, seeded random weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.encoders import (
    ENCODERS,
    EncoderWeightsError,
    build_random_model,
    load_encoder,
    raft_torchvision_to_original,
    resolve_weights,
)

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty HF, torch-hub and VBench caches, so only what a test puts there is found."""
    hf, th, vb = tmp_path / "hf", tmp_path / "torch", tmp_path / "vbench"
    for d in (hf, th, vb):
        d.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(th))
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(vb))
    return hf, th, vb


def _hf_put(hf: Path, repo: str, filename: str, content: bytes = b"x") -> Path:
    folder = hf / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("abc123")
    path = folder / "snapshots" / "abc123" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _put(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_resolution_order_weights_dir_then_caches_then_error(caches, tmp_path):
    hf, th, vb = caches
    with pytest.raises(EncoderWeightsError, match=r"put amt-s.pth under --weights-dir \(get it from https://huggingface.co/lalala125/AMT"):
        resolve_weights("amt_s")
    in_vbench = _put(vb / "amt_model" / "amt-s.pth")
    assert resolve_weights("amt_s") == in_vbench
    in_torch = _put(th / "hub" / "checkpoints" / "amt-s.pth")
    assert resolve_weights("amt_s") == in_torch
    in_hf = _hf_put(hf, "lalala125/AMT", "amt-s.pth")
    assert resolve_weights("amt_s") == in_hf
    wd = tmp_path / "weights"
    in_wd = _put(wd / "amt-s.pth")
    assert resolve_weights("amt_s", wd) == in_wd


def test_weights_dir_upstream_layout(caches, tmp_path):
    wd = tmp_path / "w"
    for name in ("clip_openai", "clip_laion400m", "raft_large"):
        with pytest.raises(EncoderWeightsError, match=ENCODERS[name].weights[0].replace(".", r"\.")):
            resolve_weights(name, wd.parent)
    assert resolve_weights("clip_openai", _put(wd / "timm/vit_base_patch32_clip_224.openai/open_clip_pytorch_model.bin").parents[2]).name == "open_clip_pytorch_model.bin"
    assert resolve_weights("raft_large", _put(wd / "raft_large_C_T_V1-22a6c225.pth").parent).name == "raft_large_C_T_V1-22a6c225.pth"
    # DINO is a folder; config.json alone is not enough.
    dino = wd / "facebook" / "dino-vits16"
    _put(dino / "config.json", b"{}")
    with pytest.raises(EncoderWeightsError, match="facebook/dino-vits16"):
        resolve_weights("dino_vits16", wd)
    _put(dino / "model.safetensors")
    assert resolve_weights("dino_vits16", wd) == dino
    with pytest.raises(EncoderWeightsError, match="is not a folder"):
        resolve_weights("amt_s", wd / "nope")


def test_dino_found_in_hf_cache(caches):
    hf, _, _ = caches
    cfg = _hf_put(hf, "facebook/dino-vits16", "config.json", b"{}")
    with pytest.raises(EncoderWeightsError):
        resolve_weights("dino_vits16")
    _put(cfg.parent / "pytorch_model.bin")
    assert resolve_weights("dino_vits16") == cfg.parent


def test_raft_things_key_map_round_trip(caches, tmp_path):
    """A random torchvision RAFT saved in the original raft-things.pth layout loads back to
    identical flows (the layout itself is checked against VBench's RAFT in the parity test)."""
    _, th, _ = caches
    ref = build_random_model("raft_large", "full").eval()
    original = raft_torchvision_to_original(ref.state_dict())
    assert len(original) == 179  # 169 torchvision tensors + 10 norm3 aliases of downsample.1
    for key in ("module.fnet.conv1.weight", "module.cnet.layer2.0.norm3.running_mean",
                "module.update_block.gru.convq2.bias", "module.update_block.mask.2.weight",
                "module.update_block.encoder.convc1.weight"):
        assert key in original
    wd = tmp_path / "w"
    wd.mkdir()
    torch.save(original, wd / "raft-things.pth")
    loaded = load_encoder("raft_large", weights_dir=wd)
    assert not loaded.random_weights and loaded.fingerprint.startswith("sha256:")
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 3, 128, 128, generator=g) * 255
    with torch.inference_mode():
        expected = ref(2 * (a / 255.0) - 1.0, 2 * (b / 255.0) - 1.0, num_flow_updates=20)[-1]
    assert torch.equal(loaded(a, b), expected)
    # torchvision's own file name and layout, found in TORCH_HOME.
    torch.save(ref.state_dict(), _put(th / "hub" / "checkpoints" / "raft_large_C_T_V1-22a6c225.pth").parent / "raft_large_C_T_V1-22a6c225.pth")
    assert torch.equal(load_encoder("raft_large")(a, b), expected)


def test_amt_checkpoint_with_state_dict_key(tmp_path):
    ref = build_random_model("amt_s").eval()
    torch.save({"state_dict": ref.state_dict(), "epoch": 300}, tmp_path / "amt-s.pth")
    loaded = load_encoder("amt_s", weights_dir=tmp_path)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = ref(x[:1], x[1:], torch.full((1, 1, 1, 1), 0.5), scale_factor=1.0, eval=True)["imgt_pred"]
    assert torch.equal(loaded(x[:1], x[1:]), expected)
    assert sum(p.numel() for p in loaded.model.parameters()) == 2_990_543  # AMT-S, about 2.99 M


def test_amt_too_small_is_undefined_not_nan():
    from benchmark.metrics import MetricUndefined

    amt = load_encoder("amt_s", random_weights=True)
    x = torch.rand(1, 3, 112, 160)
    with pytest.raises(MetricUndefined, match="smaller than AMT-S's minimum 128x128"):
        amt(x, x)


def test_torch_load_is_weights_only(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": {"w": Evil()}}, tmp_path / "amt-s.pth")
    with pytest.raises(EncoderWeightsError, match="cannot be read as a weights-only checkpoint"):
        load_encoder("amt_s", weights_dir=tmp_path)
    assert not marker.exists()


def test_dino_folder_and_preprocessing(tmp_path):
    from PIL import Image
    from transformers import ViTModel

    from benchmark.encoders.dino import dino_config

    ref = ViTModel(dino_config("small"), add_pooling_layer=False).eval()
    folder = tmp_path / "facebook" / "dino-vits16"
    ref.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "resample": 2, "size": 224}))
    enc = load_encoder("dino_vits16", weights_dir=tmp_path)
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    x = enc.preprocess_images(img[None])
    # The model's image processor, PIL path (transformers 5: ViTImageProcessorPil; 4.x: ViTImageProcessor).
    try:
        from transformers import ViTImageProcessorPil as Proc
    except ImportError:  # pragma: no cover - transformers 4.x
        from transformers import ViTImageProcessor as Proc
    hf = Proc(image_mean=[0.5] * 3, image_std=[0.5] * 3, size={"height": 224, "width": 224}, resample=2)
    expected = torch.as_tensor(np.asarray(hf(Image.fromarray(img.numpy()), return_tensors="np")["pixel_values"]))
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x, expected.float(), atol=1e-5, rtol=0)
    with torch.inference_mode():
        cls = ref(pixel_values=x).last_hidden_state[:, 0]
    torch.testing.assert_close(enc.encode_images(img[None]), cls, atol=1e-5, rtol=0)


def test_clip_quickgelu_trap(tmp_path):
    """OpenAI ViT-B/32 uses QuickGELU; open_clip's 'ViT-B-32' pointed at a local file builds GELU
    and drifts silently. Our loader forces QuickGELU and reproduces the saved model exactly."""
    import open_clip
    from open_clip.transformer import QuickGELU

    ref = build_random_model("clip_openai", "full").eval()
    path = tmp_path / "timm" / "vit_base_patch32_clip_224.openai" / "open_clip_pytorch_model.bin"
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    enc = load_encoder("clip_openai", weights_dir=tmp_path)
    assert isinstance(enc.model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 240, 320, 3), dtype=np.uint8))
    x = enc.preprocess_images(imgs)
    with torch.inference_mode():
        expected = ref.encode_image(x)
        trap = open_clip.create_model("ViT-B-32", pretrained=str(path)).eval()
        drifted = trap.encode_image(x)
    torch.testing.assert_close(enc.encode_images(imgs), expected, atol=1e-5, rtol=0)
    assert not isinstance(trap.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert (drifted - expected).norm() / expected.norm() > 1e-3


def test_clip_tokenizer_truncates_long_prompts():
    enc = load_encoder("clip_openai", random_weights=True, random_arch="small")
    tokens = enc.tokenize(["word " * 200, "a dog"])
    assert tokens.shape == (2, 77)
    assert tokens[0, -1].item() == tokens[1, 3].item()  # EOT kept as the last token
    assert enc.encode_text(["word " * 200]).shape == (1, 64)


def test_random_weights_are_seeded_and_labelled():
    a = load_encoder("raft_large", random_weights=True, random_arch="small")
    b = load_encoder("raft_large", random_weights=True, random_arch="small")
    assert a.random_weights and a.fingerprint == b.fingerprint and a.fingerprint.startswith("random-small:seed=")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    load_encoder("dino_vits16", random_weights=True, random_arch="small")
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is untouched
    with pytest.raises(ValueError, match="mutually exclusive"):
        load_encoder("amt_s", random_weights=True, weights_dir=".")
    with pytest.raises(KeyError, match="unknown encoder 'clip'"):
        load_encoder("clip", random_weights=True)


def test_vbench_network_import_skips_its_package_init():
    """Loading AMT-S imports neither vbench/__init__ (decord, the VBench stack) nor vbench.utils
    (its downloaders)."""
    code = (
        "import sys; from benchmark.encoders import load_encoder; load_encoder('amt_s', random_weights=True);"
        "bad = [m for m in ('decord', 'vbench.utils', 'vbench.distributed', 'omegaconf') if m in sys.modules];"
        "assert not bad, bad; assert not hasattr(sys.modules['vbench'], 'VBench')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
