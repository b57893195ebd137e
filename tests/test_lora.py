"""LoRA baselines: adapter arithmetic, the paper's merge, files that carry their own scale (a stock
pipeline with load_lora_weights alone reproduces the project's pipeline), fit + generate."""

from __future__ import annotations

import copy

import pytest
import torch

from baselines.lora import (
    LORA_WEIGHT_NAME,
    TARGET_MODULES,
    LoRAMethod,
    check_lora_file,
    load_lora_pipeline,
    paper_merge,
    read_lora,
    read_lora_metadata,
    save_lora,
)
from baselines.common import shared_weights_copy
from _baselines_support import tiny_case
from dualreal.engine.protocol import GenerationSettings

RANK, ALPHA = 4, 8.0  # alpha != rank: a file without alpha would be loaded at the wrong strength
SMALL = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=2)
FAST = GenerationSettings(num_frames=9, height=32, width=48, num_inference_steps=1, guidance_scale=1.0)


def random_lora(transformer, seed: int, rank: int = RANK, targets: tuple[str, ...] = TARGET_MODULES) -> dict[str, torch.Tensor]:
    """A LoRA with random A *and* B for every target layer, in peft key format."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in transformer.named_modules():
        if name.endswith(tuple(f"attn1.{t}" for t in targets)):
            out[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.1
            out[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.1
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
    save_lora(tmp_path / "identity", sd_id, rank=RANK, alpha=ALPHA)
    save_lora(tmp_path / "motion", sd_mo, rank=RANK, alpha=ALPHA)
    w_id, w_mo, scale = 0.7, 1.3, ALPHA / RANK  # the scale comes from the files' metadata
    pipe = load_lora_pipeline(
        tiny_backbone,
        {"identity": tmp_path / "identity", "motion": tmp_path / "motion"},
        {"identity": w_id, "motion": w_mo},
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
    save_lora(tmp_path / "merged", merged, rank=RANK, alpha=ALPHA)
    assert set(read_lora(tmp_path / "merged")) == {f"transformer.{k}" for k in merged}
    pipe = load_lora_pipeline(tiny_backbone, {"paper_merge": tmp_path / "merged"}, {"paper_merge": 1.0})
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


def _stock_pipeline(bb):
    from diffusers import CogVideoXPipeline

    return CogVideoXPipeline(tokenizer=bb.tokenizer, text_encoder=bb.text_encoder, vae=bb.vae,
                             transformer=shared_weights_copy(bb.transformer), scheduler=bb.scheduler)


def _forward(transformer, inputs):
    latents, text, t, rotary = inputs
    with torch.no_grad():
        return transformer(latents, text, t, image_rotary_emb=rotary, return_dict=False)[0]


@pytest.fixture(scope="module")
def lora_inputs(tiny_backbone):
    g = torch.Generator().manual_seed(0)
    rotary = tiny_backbone.pipeline()._prepare_rotary_positional_embeddings(64, 96, 3, torch.device("cpu"))
    return torch.randn(1, 3, 4, 8, 12, generator=g), torch.randn(1, 32, 32, generator=g), torch.tensor([500]), rotary


@pytest.mark.parametrize("rank,alpha,combine", [(4, 16.0, "adapters"), (8, 2.0, "paper-merge"), (2, 2.0, "joint")])
def test_every_saved_lora_loads_into_a_stock_pipeline_alone_with_the_same_output(tiny_backbone, lora_inputs, tmp_path, rank, alpha, combine):
    """The file a stock user loads for each variant (the LoRA itself; for ``lora`` the combined
    sum, for ``lora-paper-merge`` the merge) gives, with ``load_lora_weights`` alone — no
    ``set_adapters`` — the project's pipeline's output, unfused and fused. (Two of the four
    projections, to keep peft's injection cheap; the files state their targets too.)"""
    bb = tiny_backbone
    targets = ("to_v", "to_out.0")
    method = LoRAMethod(bb, rank=rank, alpha=alpha, combine=combine, adapter_weights=(0.6, 1.4), target_modules=targets)
    runs = ["joint"] if combine == "joint" else ["identity", "motion"]
    for i, run in enumerate(runs):  # "trained" LoRAs: random A and B, saved as training saves them
        save_lora(tmp_path / run, random_lora(bb.transformer, 10 + i, rank, targets), rank=rank, alpha=alpha, target_modules=targets)
        assert read_lora_metadata(tmp_path / run)["lora_alpha"] == alpha
    project = method._inference_pipeline(tmp_path)
    stock_file = {"adapters": "combined", "paper-merge": "paper_merge", "joint": "joint"}[combine]
    stock = _stock_pipeline(bb)
    stock.load_lora_weights(str(tmp_path / stock_file))
    want, base = _forward(project.transformer, lora_inputs), _forward(bb.transformer, lora_inputs)
    torch.testing.assert_close(_forward(stock.transformer, lora_inputs), want, rtol=1e-5, atol=1e-5)
    stock.fuse_lora()
    torch.testing.assert_close(_forward(stock.transformer, lora_inputs), want, rtol=1e-4, atol=1e-4)
    assert (want - base).abs().max() > 1e-2  # the LoRAs do something
    if combine == "adapters":  # and the project's pipeline is the true weighted sum of the two files
        w, s = method.config.adapter_weights, alpha / rank
        sd = {r: read_lora(tmp_path / r) for r in runs}
        path = "transformer_blocks.5.attn1.to_v"
        ab = lambda run, x: sd[run][f"transformer.{path}.lora_{x}.weight"].double()  # noqa: E731
        layer = copy.deepcopy(project.transformer.get_submodule(path)).double()
        base_layer = bb.transformer.get_submodule(path)
        x = torch.randn(3, base_layer.in_features, dtype=torch.float64)
        expected = x @ (base_layer.weight.double() + s * (w[0] * ab("identity", "B") @ ab("identity", "A")
                                                         + w[1] * ab("motion", "B") @ ab("motion", "A"))).T
        torch.testing.assert_close(layer(x), expected + base_layer.bias.double(), rtol=0, atol=1e-10)


def test_files_without_metadata_load_only_when_alpha_is_rank(tiny_backbone, tmp_path):
    from diffusers import CogVideoXPipeline

    sd = {k: v for k, v in random_lora(tiny_backbone.transformer, 3).items()}
    CogVideoXPipeline.save_lora_weights(str(tmp_path / "old"), transformer_lora_layers=sd)  # as the previous version wrote
    assert read_lora_metadata(tmp_path / "old") is None
    assert check_lora_file(tmp_path / "old", rank=RANK, alpha=RANK) == "alpha=rank"  # diffusers' assumption holds
    with pytest.raises(ValueError, match="carries no lora_alpha metadata .* alpha/rank = 8.0/4"):
        check_lora_file(tmp_path / "old", rank=RANK, alpha=ALPHA)
    save_lora(tmp_path / "new", sd, rank=RANK, alpha=ALPHA)
    assert check_lora_file(tmp_path / "new", rank=RANK, alpha=ALPHA) == "metadata"
    with pytest.raises(ValueError, match="metadata says rank 4, alpha 8.0"):
        check_lora_file(tmp_path / "new", rank=RANK, alpha=4.0)


def test_lora_variants_fit_and_generate(tiny_backbone, tmp_path):
    case = tiny_case()
    opts = dict(train_steps=1, motion_batch_size=1, rank=RANK)
    lora = LoRAMethod(tiny_backbone, **opts)
    lora.fit(case, tmp_path / "ckpt")
    assert lora.last_fit == {"identity": {"resumed": False, "steps": 1, "file": "metadata"},
                             "motion": {"resumed": False, "steps": 1, "file": "metadata"}}
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
    written = read_lora(tmp_path / "ckpt" / "paper_merge")  # the authors' key-wise 0.5 merge, by hand
    ident, motion = read_lora(tmp_path / "ckpt" / "identity"), read_lora(tmp_path / "ckpt" / "motion")
    assert set(written) == set(ident) and all(torch.equal(written[k], 0.5 * ident[k] + 0.5 * motion[k]) for k in ident)
    assert merge.generate("dog * is waving", 42, FAST).frames.shape == (9, 32, 48, 3)

    joint = LoRAMethod(tiny_backbone, combine="joint", **opts)
    joint.fit(case, tmp_path / "joint")
    assert joint.last_fit == {"joint": {"resumed": False, "steps": 1, "file": "metadata"}}
    assert joint.generate("dog * is waving", 0, FAST).extras["lora"]["adapters"] == ["joint"]
    assert type(tiny_backbone.transformer.transformer_blocks[0].attn1.to_q) is torch.nn.Linear

    with pytest.raises(ValueError, match="another configuration"):
        LoRAMethod(tiny_backbone, **{**opts, "rank": 2}).fit(case, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="unknown LoRAConfig option"):
        LoRAMethod(tiny_backbone, ranks=3)
