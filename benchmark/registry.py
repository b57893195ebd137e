"""Method registry: names map to lazy ``"module:attr"`` constructors plus config overrides.

Adding a method is one module and one line in :data:`METHODS`. Ablations are short config
overrides of one constructor (timm's entry-function style), never a code edit.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MethodSpec", "METHODS", "register", "get_spec", "list_methods", "create_method", "UnknownMethodError"]


class UnknownMethodError(KeyError):
    """An unknown method name; the message suggests close names and lists all of them."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry.

    Attributes:
        name: registry name used on the command line.
        target: ``"package.module:ClassName"``, imported only when the method is created.
        overrides: keyword arguments passed to the constructor (ablation switches).
        summary: one line for ``dualbench list``.
    """

    name: str
    target: str
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


METHODS: dict[str, MethodSpec] = {}


def register(name: str, target: str, summary: str = "", **overrides: Any) -> MethodSpec:
    """Add a method. Raises ``ValueError`` on a duplicate name."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered (as {METHODS[name].target})")
    spec = MethodSpec(name=name, target=target, overrides=overrides, summary=summary)
    METHODS[name] = spec
    return spec


# --- the registry: one line per method -------------------------------------------------------
register("cogvideox", "baselines.cogvideox:CogVideoXMethod", "the backbone as is, no customisation")
register("dualreal", "dualreal.method:DualRealMethod", "DualReal: joint training, gradient mask, StageBlender n=7")
register("dualreal-no-joint", "dualreal.method:DualRealMethod", "w/o Dual-aware Adaptation: adapters trained apart, fixed 0.1/0.1", joint=False, use_controller=False)
register("dualreal-no-controller", "dualreal.method:DualRealMethod", "w/o StageBlender: joint training, fixed w_id = w_mo = 0.1", use_controller=False)
register("dualreal-groups-1", "dualreal.method:DualRealMethod", "StageBlender with n=1 (w/o weight groups)", num_groups=1)
register("dualreal-groups-2", "dualreal.method:DualRealMethod", "StageBlender with n=2 groups", num_groups=2)
register("dualreal-groups-7", "dualreal.method:DualRealMethod", "StageBlender with n=7 groups (= dualreal)", num_groups=7)
register("dualreal-groups-42", "dualreal.method:DualRealMethod", "StageBlender with n=42 (one weight per block)", num_groups=42)
register("dualreal-no-mask", "dualreal.method:DualRealMethod", "joint training without the gradient mask", gradient_mask=False)
register("lora", "baselines.lora:LoRAMethod", "identity + motion LoRAs as two peft adapters (true sum)", combine="adapters")
register("lora-paper-merge", "baselines.lora:LoRAMethod", "the paper's LoRA row: key-wise 0.5/0.5 merge of A and B", combine="paper-merge")
register("lora-joint", "baselines.lora:LoRAMethod", "one LoRA trained with DualReal's Bernoulli image/clip sampler", combine="joint")
register("dreamvideo", "baselines.dreamvideo:DreamVideoMethod", "DreamVideo-style: identity and motion adapters trained apart")
register("motionbooth", "baselines.motionbooth:MotionBoothMethod", "MotionBooth-style: masked + attention losses, flow-box steering")
register("motionbooth-nobox", "baselines.motionbooth:MotionBoothMethod", "MotionBooth-style without box steering (what steering adds)", box_source="off")
register("lora-equal", "baselines.lora:LoRAMethod", "lora with DualReal's training budget (500 + 500 steps)", combine="adapters", budget="equal")
register("dreamvideo-equal", "baselines.dreamvideo:DreamVideoMethod", "dreamvideo with DualReal's training budget", budget="equal")
register("motionbooth-equal", "baselines.motionbooth:MotionBoothMethod", "motionbooth with DualReal's training budget", budget="equal")


def get_spec(name: str) -> MethodSpec:
    """The spec for ``name``; :class:`UnknownMethodError` with suggestions otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, METHODS, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownMethodError(
            f"unknown method {name!r}.{hint} Known methods: {', '.join(sorted(METHODS))}"
        ) from None


def list_methods(pattern: str = "*") -> list[str]:
    """Registered names matching a shell wildcard (``"dualreal*"``), sorted."""
    return sorted(n for n in METHODS if fnmatch.fnmatch(n, pattern))


def create_method(name: str, backbone, **config: Any):
    """Import and build method ``name`` on ``backbone``; ``config`` overrides the registry's."""
    spec = get_spec(name)
    module_name, _, attr = spec.target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    method = cls(backbone, **{**spec.overrides, **config})
    method.name = name
    return method
