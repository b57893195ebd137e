"""DualRealMethod end to end on the tiny backbone: fit → generate, checkpoint round trip bit for
bit, ablations as registry configurations, the 5B trainable-parameter count."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.registry import create_method, list_methods
from dualreal.config import DualRealConfig
from dualreal.method import DualRealMethod, load_dualreal
from dualreal.pipeline import DualRealPipeline
from dualreal.engine.protocol import CaseData, GenerationSettings

SETTINGS = GenerationSettings(num_frames=9, height=64, width=96, num_inference_steps=2)  # small for speed
PROMPT = "dog * is walking on the beach"




@pytest.fixture(scope="module")
def case() -> CaseData:
    g = torch.Generator().manual_seed(0)

    def img():
        return torch.randint(0, 256, (64, 96, 3), dtype=torch.uint8, generator=g)

    return CaseData(
        name="dog__walking",
        class_word="dog",
        identity_images=[img() for _ in range(2)],
        identity_prompts=["dog *"] * 2,
        motion_clips=[torch.randint(0, 256, (9, 64, 96, 3), dtype=torch.uint8, generator=g) for _ in range(2)],
        motion_prompts=["a person is walking"] * 2,
        ref_image=img(),
    )


@pytest.fixture(scope="module")
def fitted(tiny_backbone, case, tmp_path_factory):
    """One trained DualReal (4 steps, no warm-up so the adapters move) and its first video."""
    workdir = tmp_path_factory.mktemp("dualreal") / "checkpoint"
    method = DualRealMethod(tiny_backbone, train_steps=4, lr_warmup_steps=0, motion_batch_size=2)
    method.fit(case, workdir)
    video = method.generate(PROMPT, 42, SETTINGS)
    return method, workdir, video


def test_fit_writes_a_checkpoint_and_generate_returns_frames_and_trace(fitted):
    method, workdir, video = fitted
    assert {p.name for p in workdir.iterdir()} >= {"config.json", "weights.safetensors", "train_state.json"}
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["_class_name"] == "DualRealConfig" and saved["_dualbench_version"] and saved["train_steps"] == 4
    assert DualRealConfig.load(workdir / "config.json") == method.config
    assert video.frames.dtype == torch.uint8 and video.frames.shape == (9, 64, 96, 3) and video.fps == 8
    trace = video.extras["controller_trace"]
    assert trace["branches"] == ["unconditional", "conditional"] and trace["num_groups"] == 7
    assert len(trace["timesteps"]) == 2 and trace["timesteps"][0] > trace["timesteps"][1]
    w_id, w_mo = torch.tensor(trace["w_id"]), torch.tensor(trace["w_mo"])
    assert w_id.shape == (2, 2, 7)  # (denoising step, guidance branch, group)
    torch.testing.assert_close(w_id + w_mo, torch.full_like(w_id, 0.2))
    assert not torch.allclose(w_id, torch.full_like(w_id, 0.1))  # the trained controller moved
    json.dumps(video.extras)  # JSON-able


def test_checkpoint_round_trip_reproduces_the_video_bit_for_bit(tiny_backbone, case, fitted):
    _, workdir, video = fitted
    again = DualRealMethod(tiny_backbone, train_steps=4, lr_warmup_steps=0, motion_batch_size=2)
    again.fit(case, workdir)
    assert again.last_fit["resumed"]
    assert torch.equal(again.generate(PROMPT, 42, SETTINGS).frames, video.frames)
    assert not torch.equal(again.generate(PROMPT, 43, SETTINGS).frames, video.frames)
    # the loaded weights matter: an untrained model gives another video
    untrained = DualRealMethod(tiny_backbone, train_steps=4, lr_warmup_steps=0, motion_batch_size=2)
    from dualreal.method import build_dualreal_model

    untrained.model = build_dualreal_model(tiny_backbone, untrained.config, condition_dim=64)
    untrained.ref_embedding = again.ref_embedding
    assert not torch.equal(untrained.generate(PROMPT, 42, SETTINGS).frames, video.frames)


def test_load_dualreal_into_a_fresh_model_and_pipeline_options(tiny_backbone, fitted):
    method, workdir, video = fitted
    model, config = load_dualreal(workdir, tiny_backbone)
    assert config == method.config
    pipe = DualRealPipeline.from_backbone(tiny_backbone, model)
    out = pipe(PROMPT, ref_embedding=method.ref_embedding, num_frames=9, height=64, width=96, num_inference_steps=2, seed=42)
    assert torch.equal(out.frames, video.frames)
    zeros = pipe(PROMPT, ref_embedding=method.ref_embedding, num_frames=9, height=64, width=96,
                 num_inference_steps=2, seed=42, uncond_condition="zeros")
    assert not torch.equal(zeros.frames, video.frames)
    with pytest.raises(ValueError, match="does not generate 8 frames exactly \\(not 4k\\+1"):
        pipe(PROMPT, num_frames=8, height=64, width=96)
    with pytest.raises(ValueError, match="ref_image needs an image_encoder"):
        pipe(PROMPT, ref_image=torch.zeros(64, 96, 3, dtype=torch.uint8), num_frames=9, height=64, width=96)


def test_resume_with_another_config_is_refused(tiny_backbone, case, fitted):
    _, workdir, _ = fitted
    other = DualRealMethod(tiny_backbone, train_steps=5, lr_warmup_steps=0, motion_batch_size=2)
    with pytest.raises(ValueError, match=r"another configuration \(train_steps: 4 → 5\)"):
        other.fit(case, workdir)


def test_generate_before_fit_is_an_error(tiny_backbone):
    with pytest.raises(RuntimeError, match="call fit"):
        DualRealMethod(tiny_backbone).generate(PROMPT, 0, SETTINGS)


def test_no_joint_ablation_trains_two_isolated_runs(tiny_backbone, case, tmp_path):
    method = create_method("dualreal-no-joint", tiny_backbone, train_steps=2, lr_warmup_steps=0, motion_batch_size=2)
    method.fit(case, tmp_path / "ck")
    runs = method.last_fit["runs"]
    assert runs["identity"].kinds == ["identity"] * 2 and runs["motion"].kinds == ["motion"] * 2
    assert {"identity", "motion", "weights.safetensors"} <= {p.name for p in (tmp_path / "ck").iterdir()}
    trace = method.generate(PROMPT, 0, SETTINGS).extras["controller_trace"]
    assert trace["controller"] == "fixed" and torch.all(torch.tensor(trace["w_id"]) == 0.1)


def test_registry_ablations_are_configurations_of_one_class(tiny_backbone):
    expected = {
        "dualreal": {},
        "dualreal-no-joint": {"joint": False, "use_controller": False},
        "dualreal-no-controller": {"use_controller": False},
        "dualreal-groups-1": {"num_groups": 1},
        "dualreal-groups-2": {"num_groups": 2},
        "dualreal-groups-7": {"num_groups": 7},
        "dualreal-groups-42": {"num_groups": 42},
        "dualreal-no-mask": {"gradient_mask": False},
    }
    assert set(expected) <= set(list_methods("dualreal*"))
    default = DualRealConfig().resolve(tiny_backbone)
    for name, changes in expected.items():
        method = create_method(name, tiny_backbone)
        assert type(method) is DualRealMethod and method.name == name
        cfg = method.config
        assert {k: getattr(cfg, k) for k in changes} == changes
        others = {f: getattr(cfg, f) for f in DualRealConfig.field_names() if f not in changes}
        assert others == {f: getattr(default, f) for f in others}
    assert create_method("dualreal", tiny_backbone, train_steps=7).config.train_steps == 7
    tiny_default = DualRealMethod(tiny_backbone).config
    assert (tiny_default.train_steps, tiny_default.lr_warmup_steps) == (10, 2)  # tiny-aware default
    with pytest.raises(ValueError, match="unknown DualRealConfig option"):
        create_method("dualreal", tiny_backbone, num_group=3)
    with pytest.raises(ValueError, match="set use_controller=False"):
        DualRealMethod(tiny_backbone, joint=False)


def test_trainable_parameter_count_of_the_5b_configuration():
    """CogVideoX-5B (42 blocks, 48 × 64 = 3072 wide, e_t 512), built on the meta device."""
    from types import SimpleNamespace

    from diffusers import CogVideoXTransformer3DModel

    from dualreal.method import build_dualreal_model

    with torch.device("meta"):
        tr = CogVideoXTransformer3DModel(
            num_attention_heads=48, attention_head_dim=64, time_embed_dim=512, text_embed_dim=4096,
            num_layers=42, use_rotary_positional_embeddings=True,
        )
        model = build_dualreal_model(SimpleNamespace(transformer=tr), DualRealConfig(), condition_dim=1024)
    counts = {k: sum(p.numel() for p in ps) for k, ps in model.parameter_groups().items()}

    # By hand from docs/METHOD.md §1: C = 3072, d = 64, e = 1024, T = 512, L = 42, n = 7.
    C, d, e, T, L, n = 3072, 64, 1024, 512, 42, 7
    adapter = (C * d + d) + (d * C + C)  # W_down, W_up with biases
    identity = L * 2 * adapter  # attention + feed-forward
    motion = L * 2 * (adapter + e * C + C)  # plus W_cond
    controller = (T * 3 * T + 3 * T) + (C * T + T) + 2 * T + (T * 4 * T + 4 * T) + (4 * T * T + T) + (T * 128 + 128) + (128 * n + n)
    assert counts == {"identity": identity, "motion": motion, "controller": controller}
    assert identity + motion + controller == 335_614_983  # ≈ 335.6 M, as docs/METHOD.md §1 states


def test_image_encoder_tiny_random_and_weight_resolution(tmp_path, monkeypatch):
    from dualreal.engine.image_encoder import ImageEncoderError, build_image_encoder, resolve_openclip_weights

    a, b = build_image_encoder("tiny-random", seed=3), build_image_encoder("tiny-random", seed=3)
    img = torch.randint(0, 256, (2, 48, 80, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ea = a.encode(img)
    assert ea.shape == (2, 64) and ea.dtype == torch.float32 and a.random_weights
    assert torch.equal(ea, b.encode(img))  # seeded
    assert a.preprocess(img).shape == (2, 3, 32, 32)  # short side resized, centre-cropped
    torch.testing.assert_close(a.encode(img[0]), ea[:1])  # one preprocessing for frames and references
    with pytest.raises(ValueError, match=r"uint8 \(N, H, W, 3\)"):
        a.encode(img.float())
    # weight resolution: explicit file → folder → $DUALREAL_OPENCLIP → error naming the file
    monkeypatch.delenv("DUALREAL_OPENCLIP", raising=False)
    ckpt = tmp_path / "w" / "open_clip_pytorch_model.bin"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    assert resolve_openclip_weights(path=ckpt) == ckpt
    assert resolve_openclip_weights(path=ckpt.parent) == ckpt
    monkeypatch.setenv("DUALREAL_OPENCLIP", str(ckpt.parent))
    assert resolve_openclip_weights() == ckpt
    monkeypatch.delenv("DUALREAL_OPENCLIP")
    with pytest.raises(ImageEncoderError, match="open_clip_pytorch_model.bin.*image_encoder_path"):
        resolve_openclip_weights(path=tmp_path / "nowhere", cache_dir=tmp_path / "empty-cache")


@pytest.mark.parametrize(
    "name",
    ["dualreal-no-controller", "dualreal-groups-1", "dualreal-groups-42", "dualreal-no-mask"],
)
def test_every_ablation_fits_and_generates(tiny_backbone, case, tmp_path, name):
    """(``dualreal`` and ``dualreal-no-joint`` run in the tests above.)"""
    method = create_method(name, tiny_backbone, train_steps=2, lr_warmup_steps=0, motion_batch_size=1)
    method.fit(case, tmp_path / "ck")
    video = method.generate(PROMPT, 0, GenerationSettings(num_frames=1, height=64, width=96, num_inference_steps=1))
    trace = video.extras["controller_trace"]
    assert video.frames.shape == (1, 64, 96, 3)
    assert len(trace["w_id"][0][0]) == method.config.num_groups
    assert trace["controller"] == ("fixed" if name == "dualreal-no-controller" else "stageblender")
