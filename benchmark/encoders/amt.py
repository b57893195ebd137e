"""The AMT family: AMT-S frame interpolation (motion smoothness).

AMT's network code and weights are CC BY-NC 4.0: the network is not copied here but imported from
the ``vbench`` wheel, installed without its dependencies (its pins conflict with this stack)::

    pip install --no-deps vbench==0.1.5

Its package ``__init__`` imports ``decord`` and the whole VBench stack; :func:`vbench_module`
imports just the network modules without running it. Its downloaders are never called.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path

import torch

from benchmark.encoders.base import EncoderFamily, EncoderSpec, LoadedEncoder, load_state_dict_strict, read_state_dict
from benchmark.metrics._common import MetricUndefined

__all__ = ["VBENCH_REQUIREMENT", "vbench_module", "AmtInterpolator", "build_amt_s", "load_amt_s", "AMT", "SPECS"]

#: The vbench release whose wheel ships the AMT network code used here (``--no-deps``).
VBENCH_REQUIREMENT = "vbench==0.1.5"

_VBENCH_LOCK = threading.Lock()


def vbench_module(name: str):
    """Import ``vbench.<...>`` without executing ``vbench/__init__.py``.

    vbench's package init imports ``decord`` and the whole VBench stack; the AMT network modules
    need only torch. When ``vbench`` is not already imported, an empty package module (its
    ``__path__`` only) stands in for it, so ``import vbench.third_party...`` works.

    Raises:
        ImportError: the wheel is not installed (the message gives the install line).
    """
    with _VBENCH_LOCK:
        if "vbench" not in sys.modules:
            spec = importlib.util.find_spec("vbench")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError(
                    f"AMT-S (motion_smoothness) needs the vbench wheel's network code: "
                    f"pip install --no-deps {VBENCH_REQUIREMENT}"
                )
            sys.modules["vbench"] = importlib.util.module_from_spec(spec)  # not executed
        return importlib.import_module(name)


def build_amt_s(arch: str = "full") -> torch.nn.Module:
    """AMT-S (corr_radius 3, corr_lvls 4, num_flows 3; about 2.99 M parameters). AMT-S is already
    the smallest AMT, so ``"small"`` builds it too."""
    model_cls = vbench_module("vbench.third_party.amt.networks.AMT-S").Model
    return model_cls(corr_radius=3, corr_lvls=4, num_flows=3)


def load_amt_s(path: Path) -> tuple[torch.nn.Module, dict]:
    """AMT-S with ``amt-s.pth`` (a dict whose ``state_dict`` holds the tensors), strictly."""
    return load_state_dict_strict(build_amt_s(), read_state_dict(path), path, "an AMT-S checkpoint"), {}


class AmtInterpolator(LoadedEncoder):
    """``interpolate(img0, img1)``: AMT's midpoint (t = 0.5, scale 1, one pass) of [0, 1] frames.

    H and W must be multiples of 16 and at least 128: AMT-S's 4-level correlation pyramid at 1/8
    resolution needs 2 cells on its coarsest level, else its bilinear sampler divides by zero and the
    prediction is NaN (VBench's own code then silently casts NaN to 0).

    Raises (on call):
        MetricUndefined: frames smaller than 128×128.
    """

    min_size = 128

    def __call__(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        h, w = img0.shape[-2:]
        if h < self.min_size or w < self.min_size:
            raise MetricUndefined(f"{h}x{w} (padded) is smaller than AMT-S's minimum {self.min_size}x{self.min_size}")
        embt = torch.full((img0.shape[0], 1, 1, 1), 0.5, dtype=torch.float32, device=self.device)
        with torch.inference_mode():
            return self.model(img0.to(self.device), img1.to(self.device), embt, scale_factor=1.0, eval=True)["imgt_pred"]


AMT = EncoderFamily(name="amt", build=build_amt_s, load=load_amt_s, wrapper=AmtInterpolator)

SPECS = (
    EncoderSpec(
        name="amt_s",
        family=AMT,
        description="AMT-S frame interpolation (network code from the vbench wheel)",
        architecture="vbench.third_party.amt.networks.AMT-S.Model(corr_radius=3, corr_lvls=4, num_flows=3)",
        weights=("amt-s.pth",),
        hf_hub=(("lalala125/AMT", "amt-s.pth"),),
        torch_hub=("amt-s.pth",),
        vbench_cache=("amt_model/amt-s.pth",),
        source="https://huggingface.co/lalala125/AMT (amt-s.pth)",
        license="CC BY-NC 4.0 (AMT code and weights)",
        reproduces="VBench motion_smoothness (t = 0.5, one pass, scale 1)",
        preprocessing="even frames in [0, 1], replicate-padded (centred) to a multiple of 16",
        random_seed=1005,
    ),
)
