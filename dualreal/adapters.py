"""DA-Block: dual-aware adapters, and attaching them to a stock diffusers CogVideoX transformer.

docs/METHOD.md §1. Every block of a :class:`diffusers.CogVideoXTransformer3DModel` gets four bottleneck
adapters — identity and motion, one beside the attention and one beside the feed-forward network::

    A(x) = x + W_up · GELU(W_down · (x + λ · W_cond · c))

``x`` is the block's normalised joint input ``[text; video]`` (the tensors the attention and the
feed-forward receive), ``c`` a reference-image embedding (motion adapters only), and the adapter
outputs are added to the branch output **before** the block's gate::

    attn_out + w_id · A_id(x) + w_mo · A_mo(x)          (and the same for the feed-forward branch)

with ``(w_id, w_mo)`` from the StageBlender controller (:mod:`dualreal.controller`) for the block's
group.

How it attaches (no fork of diffusers' model file): :class:`DualRealModel` registers forward hooks
on the stock modules while *attached* —

* a pre-hook on the transformer (reads the batch size and timestep of this forward pass),
* a hook on ``time_embedding`` (captures ``e_t``) and on ``patch_embed`` (the joint patch tokens):
  the controller runs there, once per forward pass, before the first block,
* a hook on every block's ``attn1`` and ``ff``: they add the weighted adapter outputs to the
  branch output, which the block then gates exactly as before.

The base model's parameters, state dict and attention processors are untouched, so LoRA, fused
QKV, gradient checkpointing and a stock :class:`~diffusers.CogVideoXPipeline` work as usual.

Known quirk kept from the released code: the skip term ``x +`` inside ``A``. At initialisation
(``W_up = 0``) each adapter returns ``x``, so an attached model is **not** the base model: the
branch outputs become ``attn_out + (w_id + w_mo)·x``. ``residual=False`` (config
``residual_in_adapter``) drops the skip term for a neutral-at-init variant.

Efficiency: ``W_down · (x + λ·W_cond·c) = W_down·x + λ·(W_down·W_cond·c)``; the second term is a
``(B, d)`` vector computed once per sample and forward pass (the released code repeats ``c`` over all
~17,800 tokens). The adapters are token-wise, so the attention-branch adapters run on the text and
video tokens separately and no ``[text; video]`` copy is made.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dualreal.controller import check_num_groups, group_indices

__all__ = [
    "BottleneckAdapter",
    "DABlockAdapter",
    "DualRealAdapters",
    "DualRealModel",
]


class BottleneckAdapter(nn.Module):
    """One bottleneck adapter ``A(x) = [x +] W_up · GELU(W_down · (x + λ · W_cond · c))``.

    Args:
        dim (`int`): token width ``C`` (3072 at CogVideoX-5B).
        bottleneck_dim (`int`, defaults to `64`): ``d``.
        condition_dim (`int`, *optional*): width ``e`` of the condition ``c``; ``None`` builds no
            ``W_cond`` (the identity adapters).
        condition_scale (`float`, defaults to `1.0`): ``λ``.
        residual (`bool`, defaults to `True`): keep the skip term ``x +`` (released code).

    ``W_up`` and its bias are zero-initialised, so at initialisation ``A(x) = x`` (or ``0`` without
    the skip term). GELU is the exact (erf) form, as released.
    """

    def __init__(
        self,
        dim: int,
        *,
        bottleneck_dim: int = 64,
        condition_dim: int | None = None,
        condition_scale: float = 1.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.dim = int(dim)
        self.bottleneck_dim = int(bottleneck_dim)
        self.condition_dim = condition_dim
        self.condition_scale = float(condition_scale)
        self.residual = bool(residual)
        self.down = nn.Linear(dim, bottleneck_dim)
        self.up = nn.Linear(bottleneck_dim, dim)
        self.cond = nn.Linear(condition_dim, dim) if condition_dim is not None else None
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def condition_term(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """``λ · W_down · (W_cond · c)``: the condition's contribution to the bottleneck.

        Args:
            condition: ``(B, e)`` reference-image embeddings, or ``None``.

        Returns:
            ``(B, d)`` in the adapter's compute dtype, or ``None`` when this adapter has no
            ``W_cond`` or no condition is given (identity steps: the motion adapter runs without
            its condition term, as released).
        """
        if self.cond is None or condition is None:
            return None
        if condition.ndim != 2 or condition.shape[1] != self.condition_dim:
            raise ValueError(
                f"condition must be (B, {self.condition_dim}), got {tuple(condition.shape)}"
            )
        projected = self.cond(condition.to(self.cond.weight.dtype))  # (B, C)
        return self.condition_scale * F.linear(projected, self.down.weight)  # (B, d), no bias

    def forward(self, x: torch.Tensor, cond_term: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the adapter token-wise.

        Args:
            x: ``(B, N, C)`` normalised tokens, any float dtype.
            cond_term: ``(B, d)`` from :meth:`condition_term`, or ``None``.

        Returns:
            ``(B, N, C)`` in ``x``'s dtype.
        """
        batch, _, width = x.shape
        if width != self.dim:
            raise ValueError(f"adapter expects width {self.dim}, got {width}")
        xin = x.to(self.down.weight.dtype) if not torch.is_autocast_enabled(x.device.type) else x
        h = self.down(xin)  # (B, N, d)
        if cond_term is not None:
            if cond_term.shape[0] != batch:
                raise ValueError(f"cond_term has batch {cond_term.shape[0]}, x has batch {batch}")
            h = h + cond_term.to(h.dtype).unsqueeze(1)
        out = self.up(F.gelu(h))
        if self.residual:
            out = out + xin.to(out.dtype)
        return out.to(x.dtype)


class DABlockAdapter(nn.Module):
    """The four adapters of one transformer block (docs/METHOD.md §1).

    Args:
        dim (`int`): token width ``C``.
        bottleneck_dim (`int`, defaults to `64`): ``d`` of all four adapters.
        condition_dim (`int`, defaults to `1024`): ``e``; only the motion adapters get ``W_cond``.
        condition_scale (`float`, defaults to `1.0`): ``λ``.
        residual (`bool`, defaults to `True`): skip term inside each adapter.
        identity_ff (`bool`, defaults to `True`): build the identity adapter beside the
            feed-forward network; ``False`` leaves ``identity_ff = None`` (an attention-only identity
            adapter, as in the DreamVideo-style baseline).

    Submodules: ``identity_attn``, ``identity_ff`` (or ``None``), ``motion_attn``, ``motion_ff``.
    """

    def __init__(
        self,
        dim: int,
        *,
        bottleneck_dim: int = 64,
        condition_dim: int = 1024,
        condition_scale: float = 1.0,
        residual: bool = True,
        identity_ff: bool = True,
    ) -> None:
        super().__init__()
        ident = dict(bottleneck_dim=bottleneck_dim, residual=residual)
        motion = dict(ident, condition_dim=condition_dim, condition_scale=condition_scale)
        self.identity_attn = BottleneckAdapter(dim, **ident)
        self.identity_ff = BottleneckAdapter(dim, **ident) if identity_ff else None
        self.motion_attn = BottleneckAdapter(dim, **motion)
        self.motion_ff = BottleneckAdapter(dim, **motion)


class DualRealAdapters(nn.Module):
    """DA-Block adapters for every block of a transformer.

    Args:
        num_layers (`int`): number of transformer blocks ``L`` (42 at CogVideoX-5B).
        dim (`int`): token width ``C`` (3072 at 5B).
        bottleneck_dim (`int`, defaults to `64`): ``d``.
        condition_dim (`int`, defaults to `1024`): ``e``, the reference-image embedding width
            (OpenCLIP ViT-H-14).
        condition_scale (`float`, defaults to `1.0`): ``λ``.
        residual (`bool`, defaults to `True`): the released code's skip term ``x +`` in each adapter.
        identity_ff (`bool`, defaults to `True`): identity adapters beside the feed-forward network
            too (``False``: attention-only identity adapters; DreamVideo-style baseline).

    Parameter names: ``blocks.{i}.{identity,motion}_{attn,ff}.{down,up,cond}.{weight,bias}``.
    """

    def __init__(
        self,
        num_layers: int,
        dim: int,
        *,
        bottleneck_dim: int = 64,
        condition_dim: int = 1024,
        condition_scale: float = 1.0,
        residual: bool = True,
        identity_ff: bool = True,
    ) -> None:
        super().__init__()
        self.num_layers = int(num_layers)
        self.dim = int(dim)
        self.condition_dim = int(condition_dim)
        self.blocks = nn.ModuleList(
            DABlockAdapter(
                dim,
                bottleneck_dim=bottleneck_dim,
                condition_dim=condition_dim,
                condition_scale=condition_scale,
                residual=residual,
                identity_ff=identity_ff,
            )
            for _ in range(num_layers)
        )

    def identity_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the identity adapters (attention and feed-forward, all blocks)."""
        return [p for b in self.blocks for m in (b.identity_attn, b.identity_ff) if m is not None for p in m.parameters()]

    def motion_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the motion adapters (attention and feed-forward, all blocks)."""
        return [p for b in self.blocks for m in (b.motion_attn, b.motion_ff) for p in m.parameters()]


@dataclass
class _ForwardState:
    """What the hooks share within one transformer forward pass."""

    condition: torch.Tensor | None = None  # (B, e) or (1, e), as set by the caller
    batch: int = 0
    timestep: Any = None
    temb: torch.Tensor | None = None  # (B, T)
    w_id: torch.Tensor | None = None  # (B, n)
    w_mo: torch.Tensor | None = None  # (B, n)
    trace: list[dict[str, Any]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class DualRealModel(nn.Module):
    """A stock ``CogVideoXTransformer3DModel`` with DA-Block adapters and fusion weights.

    The transformer is not modified: hooks are registered while the model is *attached*
    (:meth:`attached`, or for the duration of each :meth:`forward`). Only one ``DualRealModel`` may
    be attached to a transformer at a time.

    Args:
        transformer: the (frozen) diffusers ``CogVideoXTransformer3DModel``.
        adapters: :class:`DualRealAdapters` with ``num_layers`` = its block count and ``dim`` = its
            inner width.
        controller: a module ``(temb (B, T), tokens (B, N, C)) → (w_id, w_mo)`` each ``(B, n)`` with
            a ``num_groups`` attribute: :class:`~dualreal.controller.StageBlenderController` or
            :class:`~dualreal.controller.FixedFusionWeights`.
        identity_enabled (`bool`, defaults to `True`): run the identity adapters.
        motion_enabled (`bool`, defaults to `True`): run the motion adapters (the isolated
            "w/o Dual-aware Adaptation" runs switch one of them off).

    Raises:
        ValueError: mismatched sizes, or ``num_groups`` not dividing the block count.
    """

    def __init__(
        self,
        transformer: nn.Module,
        adapters: DualRealAdapters,
        controller: nn.Module,
        *,
        identity_enabled: bool = True,
        motion_enabled: bool = True,
    ) -> None:
        super().__init__()
        blocks = transformer.transformer_blocks
        cfg = transformer.config
        inner = int(cfg.num_attention_heads * cfg.attention_head_dim)
        if adapters.num_layers != len(blocks):
            raise ValueError(f"adapters have {adapters.num_layers} blocks, the transformer {len(blocks)}")
        if adapters.dim != inner:
            raise ValueError(f"adapters have width {adapters.dim}, the transformer {inner}")
        num_groups = int(controller.num_groups)
        check_num_groups(len(blocks), num_groups)
        self.transformer = transformer
        self.adapters = adapters
        self.controller = controller
        self.identity_enabled = bool(identity_enabled)
        self.motion_enabled = bool(motion_enabled)
        self.num_groups = num_groups
        self.block_groups = group_indices(len(blocks), num_groups)
        self._state = _ForwardState()
        self._handles: list[Any] = []

    @classmethod
    def with_new_adapters(
        cls,
        transformer: nn.Module,
        *,
        seed: int,
        make_controller: Callable[..., nn.Module],
        **adapter_options: Any,
    ) -> DualRealModel:
        """Fresh, seeded adapters and fusion weights around a stock transformer.

        1. Under ``torch.manual_seed(seed)`` (the caller's RNG state is restored afterwards):
           :class:`DualRealAdapters` sized from ``transformer.config`` (block count ``L``, width
           ``C = heads · head_dim``) with ``adapter_options``, then
           ``make_controller(inner_dim=C, time_embed_dim=T)``, in that order (the controller's
           initialisation draws after the adapters').
        2. Adapters and controller are moved to the transformer's device (float32); the
           transformer is not touched.

        Args:
            transformer: a diffusers ``CogVideoXTransformer3DModel``.
            seed: initialisation seed.
            make_controller: builds the fusion-weight module (StageBlender controller or fixed weights).
            **adapter_options: keyword arguments of :class:`DualRealAdapters` (``bottleneck_dim``,
                ``condition_dim``, ``condition_scale``, ``residual``, ``identity_ff``).
        """
        cfg = transformer.config
        inner = int(cfg.num_attention_heads * cfg.attention_head_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapters = DualRealAdapters(int(cfg.num_layers), inner, **adapter_options)
            controller = make_controller(inner_dim=inner, time_embed_dim=int(cfg.time_embed_dim))
        model = cls(transformer, adapters, controller)
        device = next(transformer.parameters()).device
        model.adapters.to(device)
        model.controller.to(device)
        return model

    # ------------------------------------------------------------------ parameter groups
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"identity": …, "motion": …, "controller": …}`` (``controller`` only if it has any)."""
        groups = {
            "identity": self.adapters.identity_parameters(),
            "motion": self.adapters.motion_parameters(),
        }
        ctrl = list(self.controller.parameters())
        if ctrl:
            groups["controller"] = ctrl
        return groups

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Adapters and controller only (``adapters.…``, ``controller.…``); no base weights."""
        return {
            name: p.detach()
            for name, p in self.named_parameters()
            if name.startswith(("adapters.", "controller."))
        }

    def train(self, mode: bool = True) -> DualRealModel:
        """Train mode for adapters and controller; the frozen base model stays in eval mode."""
        super().train(mode)
        self.transformer.eval()
        return self

    # ------------------------------------------------------------------ attaching
    @property
    def is_attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Register the hooks on the transformer (idempotent).

        Raises:
            RuntimeError: another ``DualRealModel`` is attached to the same transformer.
        """
        if self._handles:
            return
        tr = self.transformer
        owner_ref = tr.__dict__.get("_dualreal_owner")
        owner = owner_ref() if owner_ref is not None else None
        if owner is not None and owner is not self and owner.is_attached:
            raise RuntimeError(
                "another DualRealModel is attached to this transformer; detach it first "
                "(use `with model.attached(): ...` to keep attachments scoped)"
            )
        h = self._handles
        h.append(tr.register_forward_pre_hook(self._on_transformer_start, with_kwargs=True))
        h.append(tr.time_embedding.register_forward_hook(self._on_time_embedding))
        h.append(tr.patch_embed.register_forward_hook(self._on_patch_embed))
        for i, block in enumerate(tr.transformer_blocks):
            h.append(block.attn1.register_forward_hook(self._attention_hook(i), with_kwargs=True))
            h.append(block.ff.register_forward_hook(self._feed_forward_hook(i), with_kwargs=True))
        tr.__dict__["_dualreal_owner"] = weakref.ref(self)

    def detach(self) -> None:
        """Remove every hook; the transformer is the stock model again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.transformer.__dict__.get("_dualreal_owner") is not None:
            if self.transformer.__dict__["_dualreal_owner"]() is self:
                del self.transformer.__dict__["_dualreal_owner"]

    @contextlib.contextmanager
    def attached(
        self,
        *,
        condition: torch.Tensor | None = None,
        trace: list[dict[str, Any]] | None = None,
    ) -> Iterator[DualRealModel]:
        """Attach for the duration of the block, with a condition and an optional weight trace.

        Args:
            condition: ``(B, e)`` or ``(1, e)`` reference-image embeddings for the motion adapters of
                every forward pass in the block (``None``: no condition term).
            trace: a list to which every forward pass appends ``{"timestep", "w_id", "w_mo"}``
                (``w_*``: ``(B, n)`` float32 CPU tensors).
        """
        was_attached = self.is_attached
        prev = (self._state.condition, self._state.trace)
        self.attach()
        self._state.condition = condition
        self._state.trace = trace
        try:
            yield self
        finally:
            self._state.condition, self._state.trace = prev
            if not was_attached:
                self.detach()

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        condition: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = False,
    ) -> Any:
        """The transformer's forward with adapters, controller and the motion condition.

        Args:
            hidden_states: ``(B, F, C_lat, H, W)`` noisy latents.
            encoder_hidden_states: ``(B, L, D)`` T5 prompt embeddings.
            timestep: ``(B,)`` integer timesteps.
            image_rotary_emb: rotary embeddings (cos, sin) for rotary backbones.
            condition: ``(B, e)`` / ``(1, e)`` reference-image embeddings, or ``None``. When the
                model is already attached it replaces the attachment's condition until the next
                forward pass.
            attention_kwargs, return_dict: passed to the transformer.

        Returns:
            What the transformer returns: ``(v_pred,)`` with ``v_pred`` ``(B, F, C_lat, H, W)``
            when ``return_dict=False``.
        """
        if getattr(self.transformer, "gradient_checkpointing", False) and not self.is_attached:
            raise RuntimeError(
                "with gradient checkpointing the hooks must outlive backward: "
                "wrap the training loop in `with model.attached(): ...`"
            )
        kwargs = dict(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
            image_rotary_emb=image_rotary_emb,
            attention_kwargs=attention_kwargs,
            return_dict=return_dict,
        )
        if self.is_attached:
            # The condition stays set until the next forward pass: blocks recomputed during
            # backward (gradient checkpointing) must see the same condition as the forward pass.
            self._state.condition = condition
            return self.transformer(**kwargs)
        with self.attached(condition=condition, trace=self._state.trace):
            return self.transformer(**kwargs)

    # ------------------------------------------------------------------ hooks
    def _on_transformer_start(self, module, args, kwargs) -> None:
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        timestep = kwargs["timestep"] if "timestep" in kwargs else (args[2] if len(args) > 2 else None)
        st = self._state
        st.batch = int(hidden.shape[0])
        st.timestep = timestep
        st.temb = st.w_id = st.w_mo = None
        if st.condition is not None and st.condition.shape[0] not in (1, st.batch):
            raise ValueError(
                f"condition has batch {st.condition.shape[0]}; this forward pass has batch {st.batch} "
                "(give one row per sample, or one row for all)"
            )

    def _on_time_embedding(self, module, args, output) -> None:
        self._state.temb = output

    def _on_patch_embed(self, module, args, output) -> None:
        # The StageBlender controller: once per forward pass, before the first block.
        st = self._state
        if st.temb is None:
            raise RuntimeError("the time embedding was not captured before the patch embedding")
        w_id, w_mo = self.controller(st.temb, output)
        st.w_id, st.w_mo = w_id, w_mo
        if st.trace is not None:
            t = st.timestep
            if isinstance(t, torch.Tensor):
                t = t.detach().flatten().cpu().tolist()
            st.trace.append(
                {"timestep": t, "w_id": w_id.detach().float().cpu(), "w_mo": w_mo.detach().float().cpu()}
            )

    def _condition(self, batch: int) -> torch.Tensor | None:
        c = self._state.condition
        if c is None:
            return None
        return c.expand(batch, -1) if c.shape[0] == 1 and batch != 1 else c

    def _adapter_delta(self, index: int, branch: str, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """``w_id·A_id(x) + w_mo·A_mo(x)`` for each token chunk in ``parts`` (DA-Block, §1).

        Both adapters run as one fused bottleneck: ``[W_down_id; W_down_mo]`` reads ``x`` once
        (``C → 2d``), the per-sample weights scale the two halves of the GELU output, and
        ``[W_up_id, W_up_mo]`` writes one ``(B, N, C)`` result (``2d → C``); the skip terms become
        ``(w_id + w_mo)·x``. This is exactly the sum of the two adapters (tested against
        :meth:`BottleneckAdapter.forward`) with half the passes over the activations.
        """
        st = self._state
        if st.w_id is None:
            raise RuntimeError("adapter hook ran before the controller (is the model attached?)")
        group = self.block_groups[index]
        block = self.adapters.blocks[index]
        batch = parts[0].shape[0]
        active: list[tuple[BottleneckAdapter, torch.Tensor, torch.Tensor | None]] = []
        identity = block.identity_attn if branch == "attn" else block.identity_ff
        if self.identity_enabled and identity is not None:  # identity_ff may be absent
            active.append((identity, st.w_id[:, group].view(batch, 1, 1), None))
        if self.motion_enabled:
            motion = block.motion_attn if branch == "attn" else block.motion_ff
            cond_term = motion.condition_term(self._condition(batch))  # once per sample
            active.append((motion, st.w_mo[:, group].view(batch, 1, 1), cond_term))
        if not active:
            return [torch.zeros_like(x) for x in parts]
        return [_fused_adapters(x, active) for x in parts]

    def _attention_hook(self, index: int):
        def hook(module, args, kwargs, output):
            video = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            text = kwargs.get("encoder_hidden_states")
            attn_video, attn_text = output
            d_video, d_text = self._adapter_delta(index, "attn", [video, text])
            return attn_video + d_video.to(attn_video.dtype), attn_text + d_text.to(attn_text.dtype)

        return hook

    def _feed_forward_hook(self, index: int):
        def hook(module, args, kwargs, output):
            joint = args[0] if args else kwargs["hidden_states"]
            (delta,) = self._adapter_delta(index, "ff", [joint])
            return output + delta.to(output.dtype)

        return hook


def _fused_adapters(
    x: torch.Tensor, active: list[tuple[BottleneckAdapter, torch.Tensor, torch.Tensor | None]]
) -> torch.Tensor:
    """``Σ_a w_a · A_a(x)`` over adapters ``a`` in one down- and one up-projection.

    Args:
        x: ``(B, N, C)`` tokens.
        active: ``(adapter, weight (B, 1, 1), cond_term (B, d) or None)`` per adapter.

    Returns:
        ``(B, N, C)`` in ``x``'s dtype.
    """
    first = active[0][0]
    if len(active) == 1:
        adapter, weight, cond_term = active[0]
        out = adapter(x, cond_term)
        return (weight.to(out.dtype) * out).to(x.dtype)
    batch = x.shape[0]
    xin = x.to(first.down.weight.dtype) if not torch.is_autocast_enabled(x.device.type) else x
    w_down = torch.cat([a.down.weight for a, _, _ in active])  # (k·d, C)
    b_down = torch.cat([a.down.bias for a, _, _ in active])
    h = F.linear(xin, w_down, b_down)  # (B, N, k·d)
    if any(ct is not None for _, _, ct in active):
        terms = [
            ct.to(h.dtype) if ct is not None else h.new_zeros(batch, a.bottleneck_dim) for a, _, ct in active
        ]
        h = h + torch.cat(terms, dim=1).unsqueeze(1)
    scale = torch.cat([w.to(h.dtype).expand(batch, 1, a.bottleneck_dim) for a, w, _ in active], dim=2)
    h = F.gelu(h) * scale
    w_up = torch.cat([a.up.weight for a, _, _ in active], dim=1)  # (C, k·d)
    out = F.linear(h, w_up)
    bias = sum(w.to(out.dtype) * a.up.bias.to(out.dtype) for a, w, _ in active)  # (B, 1, C)
    skip = [w for a, w, _ in active if a.residual]
    out = out + bias
    if skip:
        out = out + sum(skip).to(out.dtype) * xin.to(out.dtype)
    return out.to(x.dtype)
