"""StageBlender controller (docs/METHOD.md §2): init weights, the released-code formula, groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dualreal.controller import (
    FixedFusionWeights,
    StageBlenderController,
    check_num_groups,
    group_indices,
    group_of_block,
)


@pytest.mark.parametrize("scale,groups", [(0.2, 7), (0.2, 1), (0.5, 42), (1.0, 2)])
def test_at_init_both_weights_are_half_the_scale(scale, groups):
    torch.manual_seed(0)
    ctrl = StageBlenderController(inner_dim=48, time_embed_dim=16, num_groups=groups, scale=scale)
    temb, tokens = torch.randn(5, 16) * 3, torch.randn(5, 37, 48) * 3
    w_id, w_mo = ctrl(temb, tokens)
    assert w_id.shape == w_mo.shape == (5, groups)
    assert torch.equal(w_id, torch.full_like(w_id, scale / 2))
    assert torch.equal(w_mo, torch.full_like(w_mo, scale / 2))


def test_released_formula_computed_independently():
    torch.manual_seed(0)
    ctrl = StageBlenderController(inner_dim=48, time_embed_dim=16, head_dim=8, num_groups=3, scale=0.2)
    with torch.no_grad():
        for p in ctrl.parameters():
            p.normal_(0, 0.4)
    temb, tokens = torch.randn(4, 16), torch.randn(4, 9, 48)
    sd = {k: v for k, v in ctrl.state_dict().items()}

    def lin(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    shift, scale, gate = lin(F.silu(temb), "time_modulation").split(16, dim=1)
    u = lin(tokens.max(dim=1).values, "token_proj")
    mu, var = u.mean(-1, keepdim=True), u.var(-1, unbiased=False, keepdim=True)
    h = ((u - mu) / torch.sqrt(var + 1e-5) * sd["norm.weight"] + sd["norm.bias"]) * (1 + scale) + shift
    g = lin(F.gelu(lin(h, "fuse_up"), approximate="tanh"), "fuse_down") + gate * u
    w_id = 0.2 * torch.sigmoid(lin(F.relu(lin(F.relu(g), "head_hidden")), "head_out"))

    got_id, got_mo = ctrl(temb, tokens)
    torch.testing.assert_close(got_id, w_id, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_id + got_mo, torch.full_like(w_id, 0.2))
    # per sample: different tokens → different weights, within a batch
    assert not torch.allclose(got_id[0], got_id[1])
    # the hidden widths of the released code at 5B: T → 3T, C → T, T → 4T → T, T → 128 → n
    full = StageBlenderController(num_groups=7)
    assert full.time_modulation.weight.shape == (1536, 512)
    assert full.token_proj.weight.shape == (512, 3072)
    assert full.fuse_up.weight.shape == (2048, 512) and full.fuse_down.weight.shape == (512, 2048)
    assert full.head_hidden.weight.shape == (128, 512) and full.head_out.weight.shape == (7, 128)


def test_group_index_of_every_block():
    assert group_indices(42, 7) == [i // 6 for i in range(42)]
    assert group_indices(42, 1) == [0] * 42
    assert group_indices(42, 2) == [0] * 21 + [1] * 21
    assert group_indices(42, 42) == list(range(42))
    assert [group_of_block(i, 42, 7) for i in (0, 5, 6, 41)] == [0, 0, 1, 6]
    for bad in (0, 5, 8, 43):
        with pytest.raises(ValueError, match=rf"num_groups={bad} must divide the transformer's block count 42"):
            check_num_groups(42, bad)
    with pytest.raises(ValueError, match="out of range"):
        group_of_block(42, 42, 7)


def test_fixed_weights_are_constant_and_parameter_free():
    fixed = FixedFusionWeights(num_groups=7, identity_weight=0.1, motion_weight=0.1)
    w_id, w_mo = fixed(torch.randn(3, 16), torch.randn(3, 5, 48))
    assert w_id.shape == (3, 7) and torch.all(w_id == 0.1) and torch.all(w_mo == 0.1)
    assert not list(fixed.parameters())


def test_controller_accepts_low_precision_inputs():
    ctrl = StageBlenderController(inner_dim=48, time_embed_dim=16, num_groups=7)
    w_id, _ = ctrl(torch.randn(2, 16, dtype=torch.bfloat16), torch.randn(2, 9, 48, dtype=torch.bfloat16))
    assert w_id.dtype == torch.float32 and torch.all(w_id == 0.1)
