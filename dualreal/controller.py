"""StageBlender Controller: per-sample, per-group fusion weights of the two DA-Block adapters.

docs/METHOD.md §2. One small network, evaluated once per transformer forward pass (after the patch
embedding, before the first block). From the timestep embedding ``e_t`` and the max-pooled joint
``[text; video]`` patch embeddings it predicts, for each of ``n`` groups of consecutive blocks, the
identity weight ``w_id`` and the motion weight ``w_mo = s − w_id``. Block ``i`` of ``L`` uses group
``⌊i / (L / n)⌋``; ``n`` must divide ``L``.

Released-code form (the default and the only form implemented)::

    (shift, scale, gate) = Linear(SiLU(e_t))                  # e_t: (B, T)        T = 512 at 5B
    p   = max over tokens of [text; video] patch embeddings     # (B, C)             C = 3072
    u   = Linear(p)                                           # C → H              H = T
    h   = LayerNorm(u) · (1 + scale) + shift
    g   = Linear(GELU(Linear(h))) + gate · u                  # H → 4H → H  (tanh-GELU)
    w_id = s · sigmoid(Linear(ReLU(Linear(ReLU(g)))))         # H → 128 → n, last layer zero-init
    w_mo = s − w_id                                           # s = 0.2

The paper writes the fusion as ``ω·f_mo + (1−ω)·f_id`` with ω from a softmax head; a softmax over two
logits is a sigmoid of their difference, so the released form is the paper's with the total weight
``s`` made explicit. At initialisation the last layer is zero, so ``w_id = w_mo = s/2`` — exactly the
fixed weights of the "w/o StageBlender Controller" ablation (:class:`FixedFusionWeights`).

Both classes share one interface, used by :class:`dualreal.adapters.DualRealModel`::

    w_id, w_mo = weights(temb, tokens)    # (B, T), (B, N, C) → (B, n), (B, n)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "StageBlenderController",
    "FixedFusionWeights",
    "check_num_groups",
    "group_of_block",
    "group_indices",
]


def check_num_groups(num_blocks: int, num_groups: int) -> None:
    """Raise ``ValueError`` unless ``num_groups`` is a positive divisor of ``num_blocks``."""
    if num_groups < 1 or num_blocks % num_groups != 0:
        divisors = [d for d in range(1, num_blocks + 1) if num_blocks % d == 0]
        raise ValueError(
            f"num_groups={num_groups} must divide the transformer's block count {num_blocks} "
            f"(StageBlender groups are runs of consecutive blocks of equal length); "
            f"choose one of {divisors}"
        )


def group_of_block(block_index: int, num_blocks: int, num_groups: int) -> int:
    """The StageBlender group of block ``block_index``: ``⌊i / (L / n)⌋``.

    Raises:
        ValueError: ``num_groups`` does not divide ``num_blocks``, or the index is out of range.
    """
    check_num_groups(num_blocks, num_groups)
    if not 0 <= block_index < num_blocks:
        raise ValueError(f"block index {block_index} out of range for {num_blocks} blocks")
    return block_index // (num_blocks // num_groups)


def group_indices(num_blocks: int, num_groups: int) -> list[int]:
    """``[group_of_block(i) for i in range(num_blocks)]``."""
    return [group_of_block(i, num_blocks, num_groups) for i in range(num_blocks)]


class StageBlenderController(nn.Module):
    """The StageBlender controller (released-code form, docs/METHOD.md §2).

    Args:
        inner_dim (`int`, defaults to `3072`): width ``C`` of the patch embeddings (heads × head dim).
        time_embed_dim (`int`, defaults to `512`): width ``T`` of the transformer's timestep
            embedding; also the controller's hidden width ``H`` (as released).
        ffn_mult (`int`, defaults to `4`): the fusion MLP expands ``H → ffn_mult·H → H`` (2048 at 5B).
        head_dim (`int`, defaults to `128`): hidden width of the weight head.
        num_groups (`int`, defaults to `7`): ``n``, the number of block groups with their own weights.
        scale (`float`, defaults to `0.2`): ``s``, the total weight ``w_id + w_mo``.
        norm_eps (`float`, defaults to `1e-5`): LayerNorm epsilon.
    """

    def __init__(
        self,
        *,
        inner_dim: int = 3072,
        time_embed_dim: int = 512,
        ffn_mult: int = 4,
        head_dim: int = 128,
        num_groups: int = 7,
        scale: float = 0.2,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        self.num_groups = int(num_groups)
        self.scale = float(scale)
        hidden = time_embed_dim

        # 1. Timestep modulation: (shift, scale, gate) = Linear(SiLU(e_t))
        self.time_modulation = nn.Linear(time_embed_dim, 3 * hidden)
        # 2. Token pooling projection: u = Linear(max_tokens(p))
        self.token_proj = nn.Linear(inner_dim, hidden)
        self.norm = nn.LayerNorm(hidden, eps=norm_eps)
        # 3. Fusion MLP: g = Linear(GELU(Linear(h))) + gate · u
        self.fuse_up = nn.Linear(hidden, ffn_mult * hidden)
        self.fuse_down = nn.Linear(ffn_mult * hidden, hidden)
        # 4. Weight head: w_id = s · sigmoid(Linear(ReLU(Linear(ReLU(g))))), last layer zero-init
        self.head_hidden = nn.Linear(hidden, head_dim)
        self.head_out = nn.Linear(head_dim, self.num_groups)
        nn.init.zeros_(self.head_out.weight)
        nn.init.zeros_(self.head_out.bias)

    def forward(self, temb: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fusion weights for every sample and group.

        Args:
            temb: ``(B, T)`` timestep embedding, any float dtype.
            tokens: ``(B, N, C)`` joint ``[text; video]`` patch embeddings, any float dtype.

        Returns:
            ``(w_id, w_mo)``, each ``(B, n)`` in the controller's parameter dtype; ``w_id + w_mo = s``.
        """
        batch, _, width = tokens.shape
        if temb.shape[0] != batch:
            raise ValueError(f"temb has batch {temb.shape[0]}, tokens have batch {batch}")
        dtype = self.token_proj.weight.dtype
        temb = temb.to(dtype)

        # 1. Timestep modulation
        shift, scale, gate = self.time_modulation(F.silu(temb)).chunk(3, dim=1)
        # 2. Max-pool the joint tokens, project to the hidden width
        u = self.token_proj(tokens.amax(dim=1).to(dtype))
        # 3. Modulated LayerNorm and gated fusion MLP
        h = self.norm(u) * (1 + scale) + shift
        g = self.fuse_down(F.gelu(self.fuse_up(h), approximate="tanh")) + gate * u
        # 4. Weight head → per-group identity weight; the motion weight is the remainder of s
        w_id = self.scale * torch.sigmoid(self.head_out(F.relu(self.head_hidden(F.relu(g)))))
        return w_id, self.scale - w_id


class FixedFusionWeights(nn.Module):
    """Constant fusion weights (the "w/o StageBlender Controller" ablation; no parameters).

    Args:
        num_groups (`int`, defaults to `1`): number of groups in the returned tensors.
        identity_weight (`float`, defaults to `0.1`): ``w_id`` for every sample and group.
        motion_weight (`float`, defaults to `0.1`): ``w_mo`` for every sample and group.
    """

    def __init__(self, *, num_groups: int = 1, identity_weight: float = 0.1, motion_weight: float = 0.1) -> None:
        super().__init__()
        self.num_groups = int(num_groups)
        self.identity_weight = float(identity_weight)
        self.motion_weight = float(motion_weight)
        self.scale = self.identity_weight + self.motion_weight

    def forward(self, temb: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w_id, w_mo)``, each ``(B, n)`` float32 constants on ``tokens``' device."""
        batch = tokens.shape[0]
        full = torch.ones(batch, self.num_groups, device=tokens.device, dtype=torch.float32)
        return full * self.identity_weight, full * self.motion_weight

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, w_id={self.identity_weight}, w_mo={self.motion_weight}"
