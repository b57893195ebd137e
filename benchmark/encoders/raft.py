"""The RAFT family: RAFT-large, Chairs+Things weights (dynamic degree).

torchvision's ``raft_large`` is the network of VBench's vendored RAFT; with the same weights the
flows are identical (the parity test checks it). The matching weights are torchvision's
``Raft_Large_Weights.C_T_V1`` or the original ``raft-things.pth`` (princeton-vl/RAFT), whose
state-dict layout differs: :func:`raft_original_to_torchvision` maps it, key by key.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from benchmark.encoders.base import (
    EncoderFamily,
    EncoderSpec,
    LoadedEncoder,
    load_state_dict_strict,
    read_state_dict,
)
from benchmark.metrics._common import MetricUndefined

__all__ = ["RaftFlow", "build_raft", "load_raft", "raft_original_to_torchvision", "raft_torchvision_to_original", "RAFT", "SPECS"]


def build_raft(arch: str) -> torch.nn.Module:
    """torchvision ``raft_large`` (``"full"``), or a narrow RAFT of the same procedure (4-level
    pyramid, radius 4, convex upsampling) for fast CPU smoke runs (``"small"``)."""
    from torchvision.models.optical_flow import raft as tv
    from torchvision.models.optical_flow import raft_large

    if arch == "full":
        return raft_large(weights=None)
    feature = tv.FeatureEncoder(block=tv.ResidualBlock, layers=(16, 16, 24, 32, 32), norm_layer=torch.nn.InstanceNorm2d)
    context = tv.FeatureEncoder(block=tv.ResidualBlock, layers=(16, 16, 24, 32, 48), norm_layer=torch.nn.BatchNorm2d)
    corr = tv.CorrBlock(num_levels=4, radius=4)
    motion = tv.MotionEncoder(in_channels_corr=corr.out_channels, corr_layers=(32, 32), flow_layers=(16, 16), out_channels=32)
    recurrent = tv.RecurrentBlock(input_size=motion.out_channels + 16, hidden_size=32)
    update = tv.UpdateBlock(motion_encoder=motion, recurrent_block=recurrent, flow_head=tv.FlowHead(in_channels=32, hidden_size=32))
    mask = tv.MaskPredictor(in_channels=32, hidden_size=32, multiplier=0.25)
    return tv.RAFT(feature_encoder=feature, context_encoder=context, corr_block=corr, update_block=update, mask_predictor=mask)


# --------------------------------------------------------------------------------------------
# Original (princeton-vl, raft-things.pth) <-> torchvision state-dict layouts
# --------------------------------------------------------------------------------------------

# (original, torchvision) key patterns, used in both directions; each rule applies at most once per
# key, in order. Placeholders: <enc> an encoder (either naming), <layer> "layerN.i", <n> a digit,
# <g> a GRU gate.
_RAFT_KEYS = [
    ("fnet.", "feature_encoder."),
    ("cnet.", "context_encoder."),
    ("<enc>.conv1.", "<enc>.convnormrelu.0."),
    ("<enc>.norm1.", "<enc>.convnormrelu.1."),
    ("<enc>.conv2.", "<enc>.conv."),
    ("<enc>.<layer>.conv1.", "<enc>.<layer>.convnormrelu1.0."),
    ("<enc>.<layer>.norm1.", "<enc>.<layer>.convnormrelu1.1."),
    ("<enc>.<layer>.conv2.", "<enc>.<layer>.convnormrelu2.0."),
    ("<enc>.<layer>.norm2.", "<enc>.<layer>.convnormrelu2.1."),
    ("update_block.encoder.convc<n>.", "update_block.motion_encoder.convcorr<n>.0."),
    ("update_block.encoder.convf<n>.", "update_block.motion_encoder.convflow<n>.0."),
    ("update_block.encoder.conv.", "update_block.motion_encoder.conv.0."),
    ("update_block.gru.conv<g><n>.", "update_block.recurrent_block.convgru<n>.conv<g>."),
    ("update_block.mask.0.", "mask_predictor.convrelu.0."),
    ("update_block.mask.2.", "mask_predictor.conv."),
]
_PLACEHOLDERS = {"enc": r"fnet|cnet|feature_encoder|context_encoder", "layer": r"layer\d\.\d", "n": r"\d", "g": r"[zrq]"}


def _compile_rules(pairs) -> list[tuple[re.Pattern, str]]:
    rules = []
    for src, dst in pairs:
        pattern = "^" + re.sub(r"<(\w+)>", lambda m: f"(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})", re.escape(src).replace(r"\<", "<").replace(r"\>", ">"))
        rules.append((re.compile(pattern), re.sub(r"<(\w+)>", r"\\g<\1>", dst)))
    return rules


_RAFT_TO_TV = _compile_rules(_RAFT_KEYS)
_RAFT_TO_ORIG = _compile_rules([(tv, orig) for orig, tv in _RAFT_KEYS])
# In the original ResidualBlock, ``norm3`` *is* ``downsample[1]``: the same tensors under two names.
_RAFT_NORM3 = re.compile(r"^(fnet|cnet)\.(layer\d\.\d)\.norm3\.")
_RAFT_DOWNSAMPLE_NORM = re.compile(r"^(fnet|cnet)\.(layer\d\.\d)\.downsample\.1\.(.+)$")


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key, count=1)
    return key


def raft_original_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original RAFT state dict (``raft-things.pth``; ``module.`` prefix allowed) to
    torchvision's ``raft_large`` keys. ``norm3`` duplicates of ``downsample.1`` are dropped."""
    out = {}
    for k, v in state_dict.items():
        k = k[len("module.") :] if k.startswith("module.") else k
        if _RAFT_NORM3.match(k):
            continue
        out[_rename(k, _RAFT_TO_TV)] = v
    return out


def raft_torchvision_to_original(state_dict: dict[str, torch.Tensor], *, module_prefix: bool = True) -> dict[str, torch.Tensor]:
    """The inverse of :func:`raft_original_to_torchvision`, adding ``norm3`` aliases and (as the
    released ``raft-things.pth``, saved from ``DataParallel``) a ``module.`` prefix."""
    out = {}
    for k, v in state_dict.items():
        k = _rename(k, _RAFT_TO_ORIG)
        out[k] = v
        m = _RAFT_DOWNSAMPLE_NORM.match(k)
        if m:
            out[f"{m.group(1)}.{m.group(2)}.norm3.{m.group(3)}"] = v
    if module_prefix:
        out = {"module." + k: v for k, v in out.items()}
    return out


def load_raft(path: Path) -> tuple[torch.nn.Module, dict]:
    """RAFT-large with a checkpoint in either layout (original keys are detected by ``fnet.``)."""
    sd = read_state_dict(path)
    if any((k[len("module.") :] if k.startswith("module.") else k).startswith("fnet.") for k in sd):
        sd = raft_original_to_torchvision(sd)
    return load_state_dict_strict(build_raft("full"), sd, path, "a RAFT-large checkpoint, original or torchvision layout"), {}


class RaftFlow(LoadedEncoder):
    """``flow(img1, img2)``: RAFT on pixel values in [0, 255] → the final flow ``(B, 2, H, W)``.

    Inputs are scaled to [-1, 1] as ``2 * (x / 255) - 1`` (the arithmetic of the original RAFT's
    forward) and run with ``num_flow_updates`` (20) refinement iterations; only the last flow is kept.
    H and W must be multiples of 8 and at least 128 for RAFT-large's 4-level correlation pyramid.

    Raises (on call):
        MetricUndefined: frames smaller than the minimum size.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, *, num_flow_updates: int = 20, **kw):
        super().__init__(spec, model, **kw)
        self.num_flow_updates = num_flow_updates
        levels = getattr(model.corr_block, "num_levels", 4)
        self.min_size = 8 * 2 * 2 ** (levels - 1)

    def __call__(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        h, w = img1.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise MetricUndefined(f"{h}x{w} (padded) is smaller than RAFT's minimum {self.min_size}x{self.min_size}")
        a = 2 * (img1.float() / 255.0) - 1.0
        b = 2 * (img2.float() / 255.0) - 1.0
        with torch.inference_mode():
            return self.model(a.to(self.device), b.to(self.device), num_flow_updates=self.num_flow_updates)[-1]


RAFT = EncoderFamily(name="raft", build=build_raft, load=load_raft, wrapper=RaftFlow)

SPECS = (
    EncoderSpec(
        name="raft_large",
        family=RAFT,
        description="RAFT-large, Chairs+Things weights (raft-things.pth = torchvision C_T_V1)",
        architecture="torchvision raft_large, 20 flow updates, inputs 2*(x/255)-1",
        weights=("raft-things.pth", "raft_large_C_T_V1-22a6c225.pth"),
        hf_hub=(),
        torch_hub=("raft_large_C_T_V1-22a6c225.pth", "raft-things.pth"),
        vbench_cache=("raft_model/models/raft-things.pth",),
        source=(
            "https://download.pytorch.org/models/raft_large_C_T_V1-22a6c225.pth (torchvision "
            "Raft_Large_Weights.C_T_V1), or raft-things.pth from the princeton-vl/RAFT models.zip"
        ),
        license="BSD-3-Clause (RAFT)",
        reproduces="VBench dynamic_degree (its vendored RAFT gives identical flows with these weights)",
        preprocessing="none: native resolution, replicate-padded (centred) to a multiple of 8 (16 for the authors' quirk)",
        random_seed=1004,
    ),
)
