import pytest
import torch

from dualreal.engine.backbone import BackboneError, TINY_PRESET, build_tiny_tokenizer, load_backbone


def test_tiny_backbone_is_frozen_random_and_5b_shaped(tiny_backbone):
    bb = tiny_backbone
    assert bb.random_weights and bb.source == "tiny"
    assert bb.num_layers == 42  # as CogVideoX-5B: every group count of the paper divides it
    assert not any(p.requires_grad for p in bb.transformer.parameters())
    assert bb.scheduler.config.prediction_type == "v_prediction"
    assert bb.scheduler.config.rescale_betas_zero_snr and bb.scheduler.config.timestep_spacing == "trailing"
    assert bb.provenance()["backbone_random_weights"] is True


def test_tiny_is_seeded():
    a = load_backbone("tiny", seed=3)
    b = load_backbone("tiny", seed=3)
    c = load_backbone("tiny", seed=4)
    pa, pb, pc = (next(x.transformer.parameters()) for x in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_offline_tokenizer_pads_truncates_and_appends_eos():
    tok = build_tiny_tokenizer(16)
    ids = tok(["dog * walks"], padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    assert ids.shape == (1, 16)
    n = len("dog * walks")
    assert ids[0, n].item() == tok.eos_token_id and ids[0, n + 1 :].eq(tok.pad_token_id).all()
    long = tok(["x" * 100], padding="max_length", max_length=16, truncation=True, return_tensors="pt").input_ids
    assert long.shape == (1, 16)
    assert tok.decode(ids[0], skip_special_tokens=True) == "dog * walks"


def test_missing_backbone_names_what_is_missing(tmp_path):
    with pytest.raises(BackboneError, match="not a local folder and not in the Hugging Face cache"):
        load_backbone("nobody/no-such-model")
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text("{}")
    with pytest.raises(BackboneError, match=r"missing vae/config.json, text_encoder/config.json, tokenizer"):
        load_backbone(str(tmp_path))
    with pytest.raises(BackboneError, match="unknown dtype"):
        load_backbone("tiny", dtype="fp8")


def test_pretrained_folder_round_trip(tmp_path, tiny_backbone):
    """A saved tiny backbone loads back through the real from_pretrained path, weights identical."""
    bb = tiny_backbone
    pipe = bb.pipeline()
    pipe.save_pretrained(tmp_path / "cog")
    sched = tmp_path / "cog" / "scheduler" / "scheduler_config.json"
    sched.write_text(sched.read_text().replace('"trailing"', '"leading"'))  # a folder shipping another spacing
    loaded = load_backbone(str(tmp_path / "cog"))
    assert not loaded.random_weights
    assert loaded.vae.use_slicing and loaded.vae.use_tiling  # "auto": on for every non-tiny backbone
    # trailing on every backbone, as DualReal's inference script sets it; recorded
    assert loaded.scheduler.config.timestep_spacing == "trailing"
    assert loaded.provenance()["scheduler_timestep_spacing"] == "trailing"
    for (n1, p1), (n2, p2) in zip(bb.transformer.state_dict().items(), loaded.transformer.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert loaded.tokenizer("dog *").input_ids == bb.tokenizer("dog *").input_ids


def test_pretrained_weights_larger_than_the_device_are_refused(tmp_path, tiny_backbone, monkeypatch):
    import dualreal.engine.backbone as backbone_module

    tiny_backbone.pipeline().save_pretrained(tmp_path / "cog")
    monkeypatch.setattr(backbone_module, "available_memory", lambda device: 1024)
    with pytest.raises(BackboneError, match=r"cog: the weights do not fit\. .*needs 0\.0 GiB .*cpu has 0\.0 GiB available\. .*--allow-large"):
        load_backbone(str(tmp_path / "cog"))
    assert not load_backbone(str(tmp_path / "cog"), allow_large=True).random_weights


def test_cogvideox_generation_is_deterministic(tiny_backbone):
    from baselines.cogvideox import CogVideoXMethod, strip_identity_token
    from dualreal.engine.protocol import GenerationSettings

    m = CogVideoXMethod(tiny_backbone)
    s = GenerationSettings(num_inference_steps=2)
    a = m.generate("dog * is walking", 7, s)
    b = m.generate("dog * is walking", 7, s)
    c = m.generate("dog * is walking", 8, s)
    d = TINY_PRESET["defaults"]
    assert a.frames.shape == (d["num_frames"], d["height"], d["width"], 3) and a.frames.dtype == torch.uint8
    assert torch.equal(a.frames, b.frames) and not torch.equal(a.frames, c.frames)
    assert strip_identity_token("a dog * wearing a cape") == "a dog wearing a cape"


def test_fingerprint_is_stable_across_processes():
    """Checkpoints are matched to backbones by fingerprint: it must not depend on hash seeds."""
    import subprocess
    import sys

    code = "from dualreal.engine.backbone import load_backbone; print(load_backbone('tiny').fingerprint())"
    prints = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**__import__('os').environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(prints) == 1, prints


# ---------------------------------------------------------------------------------------------
# Real-architecture random presets (meta device only for full sizes; real-width slices materialised)
# ---------------------------------------------------------------------------------------------
#: Size of each component's safetensors in the published repositories (huggingface.co "Files" of
#: THUDM/CogVideoX-5b and THUDM/CogVideoX-2b, decimal GB as the hub shows them; 2 bytes per
#: parameter: the 5B ships bf16, the 2B fp16): 5B transformer 9.93 GB + 1.22 GB; 2B transformer
#: 3.39 GB; VAE 431 MB (both); T5 v1.1 XXL encoder 4.99 GB + 4.53 GB.
PUBLISHED_BYTES = {
    "cogvideox-5b-random": {"transformer": 9.93e9 + 1.22e9, "vae": 0.431e9, "text_encoder": 4.99e9 + 4.53e9},
    "cogvideox-2b-random": {"transformer": 3.39e9, "vae": 0.431e9, "text_encoder": 4.99e9 + 4.53e9},
}
#: The exact counts the configurations build (the "5B" / "2B" of the model names is the transformer).
EXACT_PARAMETERS = {
    "cogvideox-5b-random": {"transformer": 5_570_283_072, "vae": 215_583_907, "text_encoder": 4_762_310_656},
    "cogvideox-2b-random": {"transformer": 1_693_783_872, "vae": 215_583_907, "text_encoder": 4_762_310_656},
}


def _transformer_parameters(heads, layers, head_dim=64, t=512, text=4096, c_in=16, c_out=16, p=2):
    """CogVideoXTransformer3DModel's parameter count by hand, from diffusers' module layout."""
    c = heads * head_dim
    patch = (c_in * p * p * c + c) + (text * c + c)  # Conv2d patchify + text projection
    time = (c * t + t) + (t * t + t)  # TimestepEmbedding(inner_dim → t → t)
    norm_zero = (t * 6 * c + 6 * c) + 2 * c  # CogVideoXLayerNormZero: Linear(t → 6C) + LayerNorm(C)
    attention = 4 * (c * c + c) + 2 * (2 * head_dim)  # q, k, v, out + LayerNorm q/k norms
    ff = (c * 4 * c + 4 * c) + (4 * c * c + c)
    block = 2 * norm_zero + attention + ff
    final = 2 * c + (t * 2 * c + 2 * c) + 2 * c + (c * p * p * c_out + p * p * c_out)  # norm_final, AdaLN, proj
    return patch + time + layers * block + final


def _t5_encoder_parameters(d=4096, d_kv=64, heads=64, d_ff=10240, layers=24, vocab=32128, buckets=32):
    layer = 4 * d * heads * d_kv + 3 * d * d_ff + 2 * d  # attention, gated FF (wi_0, wi_1, wo), 2 norms
    return vocab * d + layers * layer + buckets * heads + d  # tied embedding, relative bias, final norm


@pytest.mark.parametrize("preset", ["cogvideox-5b-random", "cogvideox-2b-random"])
def test_presets_build_the_published_model_sizes_on_meta(preset):
    from dualreal.engine.backbone import backbone_memory_plan

    plan = backbone_memory_plan(preset, dtype="bf16", device="meta")
    assert plan.parameters == EXACT_PARAMETERS[preset]
    heads, layers = (48, 42) if preset.startswith("cogvideox-5b") else (30, 30)
    assert plan.parameters["transformer"] == _transformer_parameters(heads, layers)
    assert plan.parameters["text_encoder"] == _t5_encoder_parameters()
    for name, published in PUBLISHED_BYTES[preset].items():
        # the hub rounds to 3 significant digits; safetensors adds a small header
        assert abs(2 * plan.parameters[name] - published) / published < 0.006, (name, plan.parameters[name])
    assert plan.total_bytes == 2 * plan.total_parameters + (2 * 17776 * 1920 if "2b" in preset else 0)  # + 2B's pos table
    assert plan.random_weights and plan.full_size


def test_5b_preset_on_meta_is_the_paper_backbone_and_keeps_dualreal_at_335m():
    from dualreal.config import DualRealConfig
    from dualreal.method import build_dualreal_model

    bb = load_backbone("cogvideox-5b-random", device="meta")
    assert bb.random_weights and bb.provenance()["backbone_random_weights"] is True
    assert next(bb.transformer.parameters()).device.type == "meta"
    cfg = bb.transformer.config
    assert (cfg.num_layers, cfg.num_attention_heads * cfg.attention_head_dim, cfg.time_embed_dim) == (42, 3072, 512)
    assert cfg.use_rotary_positional_embeddings and cfg.max_text_seq_length == 226
    assert bb.defaults == {"num_frames": 49, "height": 480, "width": 720}
    assert bb.vae.config.scaling_factor == 0.7 and bb.vae.use_slicing and bb.vae.use_tiling
    sched = bb.scheduler.config
    assert type(bb.scheduler).__name__ == "CogVideoXDDIMScheduler"  # the class the published checkpoint ships
    assert (sched.snr_shift_scale, sched.prediction_type, sched.timestep_spacing) == (1.0, "v_prediction", "trailing")
    assert sched.rescale_betas_zero_snr and bb.tokenizer.model_max_length == 226
    assert bb.text_encoder.encoder.embed_tokens.weight is bb.text_encoder.shared.weight
    model = build_dualreal_model(bb, DualRealConfig(), condition_dim=1024)
    trainable = sum(p.numel() for ps in model.parameter_groups().values() for p in ps)
    assert trainable == 335_614_983  # METHOD.md §1: ≈ 335.6 M at 5B
    two = load_backbone("cogvideox-2b-random", device="meta")
    assert two.scheduler.config.snr_shift_scale == 3.0 and two.vae.config.scaling_factor == 1.15258426
    assert not two.transformer.config.use_rotary_positional_embeddings


def _hwm_bytes():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))


def test_one_block_of_the_5b_preset_materialises_directly_in_bf16():
    """The preset's own code path at the real width, 1 block: every parameter is created on the
    target device in bf16 and initialised there by its module's rule — no float32 host copy."""
    from dualreal.engine.backbone import count_parameters

    small = {
        "transformer": {"num_layers": 1},
        "vae": {"block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
        "text_encoder": {"num_layers": 1, "d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16},
    }
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # the high-water mark restarts from the current resident size
    with open("/proc/self/status") as fh:
        rss0 = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))
    bb = load_backbone("cogvideox-5b-random", dtype="bf16", device="cpu", overrides=small, seed=3)
    peak = _hwm_bytes() - rss0
    tr = bb.transformer
    n_tr = count_parameters(tr)
    assert n_tr == _transformer_parameters(48, 1)  # real width, one block
    modules = (tr, bb.vae, bb.text_encoder)
    assert {(p.dtype, p.device.type) for m in modules for p in m.parameters()} == {(torch.bfloat16, "cpu")}
    bf16_bytes = 2 * sum(count_parameters(m) for m in modules)
    assert peak < bf16_bytes + 96 * 2**20, (peak, bf16_bytes)  # bf16 weights + allocator slack
    assert peak < 4 * n_tr * 0.75  # a float32 copy of the transformer alone would exceed this
    # each module's own init rule, applied on the target: LayerNorm (1, 0), Linear U(±1/√fan_in),
    # T5 q ~ N(0, (d_model·d_kv)^-½) and its RMS norm weights 1
    blk = tr.transformer_blocks[0]
    assert bool((blk.norm1.norm.weight == 1).all()) and bool((blk.norm1.norm.bias == 0).all())
    w = blk.attn1.to_q.weight.float()
    assert w.abs().max() <= 3072**-0.5 + 1e-3 and w.std() > 0.5 * 3072**-0.5 / 3**0.5
    q = bb.text_encoder.encoder.block[0].layer[0].SelfAttention.q.weight.float()
    assert abs(q.std().item() - (64 * 16) ** -0.5) < 0.1 * (64 * 16) ** -0.5
    assert bool((bb.text_encoder.encoder.final_layer_norm.weight == 1).all())
    assert bb.text_encoder.encoder.embed_tokens.weight is bb.text_encoder.shared.weight
    assert bb.provenance()["backbone_overrides"]["transformer"] == {"num_layers": 1}


def test_preset_keeps_buffers_computed_at_construction_and_is_seeded():
    """CogVideoX-2B's sin-cos positional table is computed in ``__init__``: it must survive the
    meta-device build with its values (compared with an independent CPU construction)."""
    from diffusers.models.embeddings import CogVideoXPatchEmbed

    small = {
        "transformer": {"num_layers": 1},
        "vae": {"block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4},
        "text_encoder": {"num_layers": 1, "d_model": 64, "d_ff": 128, "num_heads": 4, "d_kv": 16},
    }
    a = load_backbone("cogvideox-2b-random", dtype="bf16", device="cpu", overrides=small, seed=5)
    b = load_backbone("cogvideox-2b-random", dtype="bf16", device="cpu", overrides=small, seed=5)
    got = a.transformer.patch_embed.pos_embedding
    assert got.dtype == torch.bfloat16 and got.device.type == "cpu"
    ref = CogVideoXPatchEmbed(
        patch_size=2, in_channels=16, embed_dim=1920, text_embed_dim=4096, sample_width=90, sample_height=60,
        sample_frames=49, temporal_compression_ratio=4, max_text_seq_length=226, spatial_interpolation_scale=1.875,
        temporal_interpolation_scale=1.0, use_positional_embeddings=True,
    ).pos_embedding
    assert ref.abs().sum() > 0 and torch.equal(got, ref.to(torch.bfloat16))
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(a.transformer.proj_out.weight, b.transformer.proj_out.weight)
    c = load_backbone("cogvideox-2b-random", dtype="bf16", device="cpu", overrides=small, seed=6)
    assert not torch.equal(a.transformer.proj_out.weight, c.transformer.proj_out.weight)


def test_full_size_preset_on_cpu_is_refused_fast_with_the_memory_it_needs():
    import time

    t0 = time.perf_counter()
    with pytest.raises(BackboneError, match=r"needs 19\.6 GiB for its weights alone .*cpu has \d+\.\d GiB available.*allow_large=True"):
        load_backbone("cogvideox-5b-random", dtype="bf16", device="cpu")
    assert time.perf_counter() - t0 < 30
    with pytest.raises(BackboneError, match=r"needs 39\.3 GiB"):  # fp32: 4 bytes per parameter
        load_backbone("cogvideox-5b-random", device="cpu")


def test_memory_plan_of_a_hub_id_needs_no_download_and_follows_the_dtype():
    from dualreal.engine.backbone import backbone_memory_plan

    bf16 = backbone_memory_plan("THUDM/CogVideoX-5b", dtype="bf16", device="cpu")
    assert bf16.parameters == EXACT_PARAMETERS["cogvideox-5b-random"] and not bf16.random_weights
    assert bf16.available_bytes is not None and bf16.available_bytes > 0
    fp16 = backbone_memory_plan("THUDM/CogVideoX-5b", dtype="fp16", device="cpu")
    wo = 24 * 10240 * 4096  # transformers keeps T5's `wo` projections in float32 under fp16
    assert fp16.weight_bytes["text_encoder"] == 2 * EXACT_PARAMETERS["cogvideox-5b-random"]["text_encoder"] + 2 * wo
    assert backbone_memory_plan("THUDM/CogVideoX-5b", dtype="fp32").total_bytes == 4 * bf16.total_parameters
    with pytest.raises(BackboneError, match="not a local folder"):
        backbone_memory_plan("nobody/no-such-model")


def test_backbone_switches_and_overrides_are_validated():
    bb = load_backbone("tiny")
    assert not bb.vae.use_slicing and not bb.vae.use_tiling  # "auto": off for tiny only
    on = load_backbone("tiny", vae_slicing=True, vae_tiling=True)
    assert on.vae.use_slicing and on.vae.use_tiling
    with pytest.raises(BackboneError, match="vae_tiling must be True, False or 'auto'"):
        load_backbone("tiny", vae_tiling="yes")
    with pytest.raises(BackboneError, match="overrides apply to the random presets"):
        load_backbone("tiny", overrides={"transformer": {"num_layers": 1}})
    with pytest.raises(BackboneError, match=r"unknown component 'unet'.*valid: transformer, vae, text_encoder"):
        load_backbone("cogvideox-5b-random", device="meta", overrides={"unet": {}})
    with pytest.raises(BackboneError, match=r"unknown transformer config key\(s\) \['num_blocks'\]"):
        load_backbone("cogvideox-5b-random", device="meta", overrides={"transformer": {"num_blocks": 1}})
