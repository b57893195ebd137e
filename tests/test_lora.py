"""LoRA baselines: adapter arithmetic, the paper's merge, stock-pipeline loading, fit + generate."""

from __future__ import annotations

import copy

import pytest
import torch

from baselines.lora import (
    LORA_WEIGHT_NAME,
    LoRAMethod,
    add_lora,
    load_lora_pipeline,
    lora_state_dict,
    paper_merge,
    read_lora,
    save_lora,
)
from baselines.common import shared_weights_copy
from _baselines_support import tiny_case
from dualreal.engine.protocol import GenerationSettings

RANK, ALPHA = 4, 8.0  # alpha != rank: the files carry no alpha, set_adapters must apply alpha / rank
SMALL = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=2)
FAST = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=1, guidance_scale=1.0)


def random_lora(transformer, seed: int) -> dict[str, torch.Tensor]:
    """A LoRA with random A *and* B for every target layer, in peft key format."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in transformer.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0")):
            out[f"{name}.lora_A.weight"] = torch.randn(RANK, module.in_features, generator=g) * 0.1
            out[f"{name}.lora_B.weight"] = torch.randn(module.out_features, RANK, generator=g) * 0.1
    return out


def delta(sd: dict[str, torch.Tensor], layer: str) -> torch.Tensor:
    key = lambda ab: next(k for k in sd if k.endswith(f"{layer}.lora_{ab}.weight"))  # noqa: E731
    return sd[key("B")].double() @ sd[key("A")].double()


def layer_as_double(pipe, path: str):
    module = pipe.transformer.get_submodule(path)
    return copy.deepcopy(module).double()


def test_two_adapters_sum_exactly(tiny_backbone, tmp_path):
    tr = tiny_backbone.transformer
    sd_id, sd_mo = random_lora(tr, 1), random_lora(tr, 2)
    save_lora(tmp_path / "identity", sd_id)
    save_lora(tmp_path / "motion", sd_mo)
    w_id, w_mo, scale = 0.7, 1.3, ALPHA / RANK
    pipe = load_lora_pipeline(
        tiny_backbone,
        {"identity": tmp_path / "identity", "motion": tmp_path / "motion"},
        {"identity": w_id, "motion": w_mo},
        scale=scale,
    )
    assert type(tr.transformer_blocks[0].attn1.to_q) is torch.nn.Linear  # the shared backbone is untouched
    x = torch.randn(5, 32, dtype=torch.float64)
    for path in ("transformer_blocks.3.attn1.to_v", "transformer_blocks.41.attn1.to_out.0"):
        base = tr.get_submodule(path)
        W = base.weight.double() + w_id * scale * delta(sd_id, path) + w_mo * scale * delta(sd_mo, path)
        expected = x @ W.T + base.bias.double()
        torch.testing.assert_close(layer_as_double(pipe, path)(x), expected, rtol=0, atol=1e-12)


def test_paper_merge_is_the_keywise_average_not_the_sum(tiny_backbone, tmp_path):
    tr = tiny_backbone.transformer
    sd_id, sd_mo = random_lora(tr, 3), random_lora(tr, 4)
    merged = paper_merge(sd_id, sd_mo)
    for k in sd_id:
        torch.testing.assert_close(merged[k], 0.5 * sd_id[k] + 0.5 * sd_mo[k], rtol=0, atol=0)
    save_lora(tmp_path / "merged", merged)
    assert set(read_lora(tmp_path / "merged")) == {f"transformer.{k}" for k in merged}
    pipe = load_lora_pipeline(tiny_backbone, {"paper_merge": tmp_path / "merged"}, {"paper_merge": 1.0}, scale=ALPHA / RANK)
    path = "transformer_blocks.7.attn1.to_k"
    layer = layer_as_double(pipe, path)
    x = torch.randn(3, 32, dtype=torch.float64)
    base = tr.get_submodule(path)
    got = layer(x) - (x @ base.weight.double().T + base.bias.double())
    d_avg = (0.5 * sd_id[f"{path}.lora_B.weight"] + 0.5 * sd_mo[f"{path}.lora_B.weight"]).double() @ (
        0.5 * sd_id[f"{path}.lora_A.weight"] + 0.5 * sd_mo[f"{path}.lora_A.weight"]
    ).double()
    d_sum = delta(sd_id, path) + delta(sd_mo, path)
    torch.testing.assert_close(got, ALPHA / RANK * x @ d_avg.T, rtol=0, atol=1e-12)
    # ¼ of each update plus cross terms: far from the true sum
    assert (got - ALPHA / RANK * x @ d_sum.T).abs().max() > 0.1 * (x @ d_sum.T).abs().max()


def test_saved_lora_loads_into_a_stock_pipeline_with_the_same_output(tiny_backbone, tmp_path):
    from diffusers import CogVideoXPipeline
    from safetensors import safe_open

    bb = tiny_backbone
    trained = shared_weights_copy(bb.transformer)
    params = add_lora(trained, "identity", rank=RANK, alpha=ALPHA, seed=0)
    with torch.no_grad():  # a "trained" LoRA: B away from its zero init
        g = torch.Generator().manual_seed(5)
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    trained.eval()
    save_lora(tmp_path / "identity", lora_state_dict(trained, "identity"))
    assert [p.name for p in (tmp_path / "identity").iterdir()] == [LORA_WEIGHT_NAME]
    with safe_open(str(tmp_path / "identity" / LORA_WEIGHT_NAME), "pt") as f:
        assert not any("alpha" in k for k in f.keys())

    stock = CogVideoXPipeline(
        tokenizer=bb.tokenizer, text_encoder=bb.text_encoder, vae=bb.vae,
        transformer=shared_weights_copy(bb.transformer), scheduler=bb.scheduler,
    )
    stock.load_lora_weights(str(tmp_path / "identity"), weight_name=LORA_WEIGHT_NAME, adapter_name="identity", use_safetensors=True)
    stock.set_adapters(["identity"], [ALPHA / RANK])

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 3, 4, 8, 12, generator=g)
    text = torch.randn(1, 32, 32, generator=g)
    t = torch.tensor([500])
    rotary = stock._prepare_rotary_positional_embeddings(64, 96, 3, torch.device("cpu"))
    with torch.no_grad():
        want = trained(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]
        got = stock.transformer(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]
        base = bb.transformer(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - base).abs().max() > 1e-3


def test_lora_variants_fit_and_generate(tiny_backbone, tmp_path):
    case = tiny_case()
    opts = dict(train_steps=1, motion_batch_size=1, rank=RANK)
    lora = LoRAMethod(tiny_backbone, **opts)
    lora.fit(case, tmp_path / "ckpt")
    assert lora.last_fit == {"identity": {"resumed": False, "steps": 1}, "motion": {"resumed": False, "steps": 1}}
    for run in ("identity", "motion"):
        assert (tmp_path / "ckpt" / run / LORA_WEIGHT_NAME).is_file()
    video = lora.generate("dog * is waving", 42, SMALL)
    assert video.frames.dtype == torch.uint8 and video.frames.shape == (9, 32, 48, 3)
    assert torch.equal(video.frames, lora.generate("dog * is waving", 42, SMALL).frames)
    assert video.extras["lora"]["adapters"] == ["identity", "motion"]

    # the paper merge reuses the two trained LoRAs (inference-only options are not in the run config)
    merge = LoRAMethod(tiny_backbone, combine="paper-merge", **opts)
    merge.fit(case, tmp_path / "ckpt")
    assert all(r["resumed"] for r in merge.last_fit.values())
    assert (tmp_path / "ckpt" / "paper_merge" / LORA_WEIGHT_NAME).is_file()
    assert merge.generate("dog * is waving", 42, FAST).frames.shape == (9, 32, 48, 3)

    joint = LoRAMethod(tiny_backbone, combine="joint", **opts)
    joint.fit(case, tmp_path / "joint")
    assert joint.last_fit == {"joint": {"resumed": False, "steps": 1}}
    assert joint.generate("dog * is waving", 0, FAST).extras["lora"]["adapters"] == ["joint"]
    assert type(tiny_backbone.transformer.transformer_blocks[0].attn1.to_q) is torch.nn.Linear

    with pytest.raises(ValueError, match="another configuration"):
        LoRAMethod(tiny_backbone, **{**opts, "rank": 2}).fit(case, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="unknown LoRAConfig option"):
        LoRAMethod(tiny_backbone, ranks=3)
