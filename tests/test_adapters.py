"""DA-Block adapters (docs/METHOD.md §1) and their attachment to a stock CogVideoX transformer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import CogVideoXTransformer3DModel

from dualreal.adapters import BottleneckAdapter, DualRealAdapters, DualRealModel
from dualreal.controller import FixedFusionWeights, StageBlenderController

# A 6-block rotary CogVideoX at toy width: the real class, small enough for many forward passes.
SMALL = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
    text_embed_dim=12, num_layers=6, sample_width=8, sample_height=8, sample_frames=5, patch_size=2,
    max_text_seq_length=6, use_rotary_positional_embeddings=True,
)
COND = 10




@pytest.fixture(scope="module")
def small_transformer():
    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(**SMALL).eval().requires_grad_(False)


def inputs(batch: int = 2, seed: int = 1):
    from dualreal.engine.trainer import rotary_embeddings

    g = torch.Generator().manual_seed(seed)
    cfg = CogVideoXTransformer3DModel(**{**SMALL, "num_layers": 1}).config
    return dict(
        hidden_states=torch.randn(batch, 2, 4, 8, 8, generator=g),
        encoder_hidden_states=torch.randn(batch, 6, 12, generator=g),
        timestep=torch.tensor([500, 20][:batch]),
        image_rotary_emb=rotary_embeddings(cfg, 2, 8, 8, "cpu"),
    )


def make_model(transformer, *, residual=True, controller=None, seed=0, randomise_up=False):
    torch.manual_seed(seed)
    adapters = DualRealAdapters(6, 32, bottleneck_dim=4, condition_dim=COND, residual=residual)
    if randomise_up:
        with torch.no_grad():
            for p in adapters.parameters():
                p.normal_(0, 0.3)
    controller = controller or StageBlenderController(inner_dim=32, time_embed_dim=16, num_groups=3)
    return DualRealModel(transformer, adapters, controller)


def test_zero_init_adapter_returns_its_input():
    torch.manual_seed(0)
    x = torch.randn(3, 17, 24)
    c = torch.randn(3, 7)
    adapter = BottleneckAdapter(24, bottleneck_dim=8, condition_dim=7)
    assert torch.count_nonzero(adapter.up.weight) == 0 and torch.count_nonzero(adapter.up.bias) == 0
    assert torch.equal(adapter(x), x)
    assert torch.equal(adapter(x, adapter.condition_term(c)), x)
    neutral = BottleneckAdapter(24, bottleneck_dim=8, condition_dim=7, residual=False)
    assert torch.equal(neutral(x, neutral.condition_term(c)), torch.zeros_like(x))


def test_adapter_matches_the_formula_with_the_condition_folded_per_sample():
    torch.manual_seed(0)
    adapter = BottleneckAdapter(24, bottleneck_dim=8, condition_dim=7, condition_scale=0.7)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.5)
    x, c = torch.randn(2, 11, 24), torch.randn(2, 7)
    cond = c @ adapter.cond.weight.T + adapter.cond.bias  # W_cond · c, broadcast over tokens
    h = (x + 0.7 * cond[:, None, :]) @ adapter.down.weight.T + adapter.down.bias
    expected = x + F.gelu(h) @ adapter.up.weight.T + adapter.up.bias
    term = adapter.condition_term(c)
    assert term.shape == (2, 8)  # one (B, d) vector per sample, not per token
    torch.testing.assert_close(adapter(x, term), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"condition must be \(B, 7\)"):
        adapter.condition_term(torch.randn(2, 5))


def test_identity_adapters_have_no_condition_and_parameter_groups_are_disjoint():
    adapters = DualRealAdapters(3, 16, bottleneck_dim=4, condition_dim=COND)
    assert adapters.blocks[0].identity_attn.cond is None and adapters.blocks[0].motion_ff.cond is not None
    ids = {id(p) for p in adapters.identity_parameters()}
    mos = {id(p) for p in adapters.motion_parameters()}
    assert not ids & mos and len(ids) + len(mos) == len(list(adapters.parameters()))


def test_neutral_variant_reproduces_the_base_model_bit_for_bit(small_transformer):
    base = small_transformer(**inputs(), return_dict=False)[0]
    model = make_model(small_transformer, residual=False)
    out = model(**inputs(), condition=torch.randn(2, COND))[0]
    assert torch.equal(out, base)
    # the released skip term makes an attached model differ from the base model at init (quirk kept)
    quirky = make_model(small_transformer, residual=True)
    assert not torch.allclose(quirky(**inputs())[0], base)


def test_skip_term_adds_exactly_s_times_the_normalised_input(small_transformer):
    """At init each adapter returns x, so a branch gets attn_out + (w_id + w_mo)·x."""
    model = make_model(small_transformer, controller=FixedFusionWeights(num_groups=3, identity_weight=0.05, motion_weight=0.15))
    seen = {}

    def before(module, args, kwargs, output):  # registered before attaching: the stock output
        seen["base"] = output[0].clone()
        seen["x"] = kwargs["hidden_states"].clone()

    def after(module, args, kwargs, output):  # registered after: sees the adapted output
        seen["adapted"] = output[0].clone()

    attn = small_transformer.transformer_blocks[2].attn1
    h1 = attn.register_forward_hook(before, with_kwargs=True)
    try:
        with model.attached():
            h2 = attn.register_forward_hook(after, with_kwargs=True)
            try:
                small_transformer(**inputs())
            finally:
                h2.remove()
    finally:
        h1.remove()
    torch.testing.assert_close(seen["adapted"] - seen["base"], 0.2 * seen["x"], rtol=1e-5, atol=1e-6)


def test_detach_restores_the_stock_transformer(small_transformer):
    base = small_transformer(**inputs(), return_dict=False)[0]
    model = make_model(small_transformer, randomise_up=True)
    with model.attached():
        adapted = small_transformer(**inputs(), return_dict=False)[0]
    assert not torch.allclose(adapted, base)
    assert not model.is_attached
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in small_transformer.modules())
    assert torch.equal(small_transformer(**inputs(), return_dict=False)[0], base)
    # state dict of the stock model is untouched: no adapter keys leak into it
    assert not any("adapter" in k for k in small_transformer.state_dict())


def test_only_one_model_attached_per_transformer(small_transformer):
    a, b = make_model(small_transformer), make_model(small_transformer)
    with a.attached():
        with pytest.raises(RuntimeError, match="another DualRealModel is attached"):
            b.attach()
    with b.attached():  # fine once a is detached
        pass


def test_condition_is_per_sample_and_checked(small_transformer):
    model = make_model(small_transformer, randomise_up=True)
    c = torch.randn(2, COND)
    out = model(**inputs(), condition=c)[0]
    swapped = model(**inputs(), condition=c.flip(0))[0]
    assert not torch.allclose(out[0], swapped[0]) and not torch.allclose(out[1], swapped[1])
    one = model(**inputs(), condition=c[:1])[0]  # one row broadcasts to every sample
    torch.testing.assert_close(one, model(**inputs(), condition=c[:1].expand(2, -1))[0])
    with pytest.raises(ValueError, match="condition has batch 3"):
        model(**inputs(), condition=torch.randn(3, COND))


def test_condition_projection_runs_once_per_adapter_and_forward(small_transformer):
    model = make_model(small_transformer)
    calls = []
    model.adapters.blocks[0].motion_attn.cond.register_forward_hook(lambda m, a, o: calls.append(a[0].shape))
    model(**inputs(), condition=torch.randn(2, COND))
    assert calls == [torch.Size([2, COND])]  # once, on (B, e): not once per token


def test_groups_must_divide_the_block_count(small_transformer):
    adapters = DualRealAdapters(6, 32, bottleneck_dim=4, condition_dim=COND)
    with pytest.raises(ValueError, match=r"num_groups=4 must divide the transformer's block count 6"):
        DualRealModel(small_transformer, adapters, FixedFusionWeights(num_groups=4))
    with pytest.raises(ValueError, match="adapters have 3 blocks"):
        DualRealModel(small_transformer, DualRealAdapters(3, 32, condition_dim=COND), FixedFusionWeights())


def test_blocks_use_their_groups_weight(small_transformer):
    """Block i gets w_id of group ⌊i / (L/n)⌋: identity adapters replaced by ones, so the attention
    output grows by exactly that weight."""

    class PerGroup(torch.nn.Module):
        num_groups = 3
        scale = 1.0

        def forward(self, temb, tokens):
            w = torch.tensor([[1.0, 2.0, 3.0]]).expand(tokens.shape[0], -1)
            return w, torch.zeros_like(w)

    model = make_model(small_transformer, controller=PerGroup())
    model.motion_enabled = False
    for block in model.adapters.blocks:
        block.identity_attn.forward = lambda x, cond_term=None: torch.ones_like(x)
    base, adapted = {}, {}
    handles = [
        blk.attn1.register_forward_hook(lambda m, a, k, o, i=i: base.__setitem__(i, o[0].clone()), with_kwargs=True)
        for i, blk in enumerate(small_transformer.transformer_blocks)
    ]
    try:
        with model.attached():
            handles += [
                blk.attn1.register_forward_hook(lambda m, a, k, o, i=i: adapted.__setitem__(i, o[0].clone()), with_kwargs=True)
                for i, blk in enumerate(small_transformer.transformer_blocks)
            ]
            small_transformer(**inputs())
    finally:
        for h in handles:
            h.remove()
    for i in range(6):
        delta = adapted[i] - base[i]
        torch.testing.assert_close(delta, torch.full_like(delta, float(i // 2 + 1)))


@pytest.mark.parametrize("residual", [True, False])
def test_fused_dual_adapter_equals_the_sum_of_the_two_adapters(residual):
    from dualreal.adapters import DABlockAdapter, _fused_adapters

    torch.manual_seed(0)
    block = DABlockAdapter(32, bottleneck_dim=4, condition_dim=COND, residual=residual)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
    x, c = torch.randn(2, 13, 32), torch.randn(2, COND)
    w_id, w_mo = torch.tensor([0.3, 0.05]).view(2, 1, 1), torch.tensor([0.1, 0.7]).view(2, 1, 1)
    ct = block.motion_ff.condition_term(c)
    expected = w_id * block.identity_ff(x) + w_mo * block.motion_ff(x, ct)
    got = _fused_adapters(x, [(block.identity_ff, w_id, None), (block.motion_ff, w_mo, ct)])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # gradients reach both adapters' own parameters through the fused path
    got.square().sum().backward()
    assert block.identity_ff.down.weight.grad is not None and block.motion_ff.cond.weight.grad is not None


def test_gradient_checkpointing_gives_the_same_adapter_gradients(small_transformer):
    """Hooks stay attached through backward, so recomputed blocks include the adapters."""
    model = make_model(small_transformer, randomise_up=True)
    c = torch.randn(2, COND)

    def grads():
        model.zero_grad(set_to_none=True)
        with model.attached():
            model(**inputs(), condition=c)[0].square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    small_transformer.enable_gradient_checkpointing()
    try:
        small_transformer.train()  # diffusers checkpoints only while grad is enabled
        ckpt = grads()
        with pytest.raises(RuntimeError, match="hooks must outlive backward"):
            model(**inputs(), condition=c)
    finally:
        small_transformer.disable_gradient_checkpointing()
        small_transformer.eval()
    assert plain.keys() == ckpt.keys() and any("blocks.0." in n for n in plain)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-4, atol=1e-6)
