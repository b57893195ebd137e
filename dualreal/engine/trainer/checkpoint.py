"""Checkpoint I/O of the trainer: the named trainable parameters in safetensors, ``config.json``
beside them, and ``train_state.json`` written last as the "finished" marker."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from dualreal.engine.config import FIELDS_ADDED
from dualreal.engine.io import atomic_replace, atomic_write_json

__all__ = [
    "config_diff",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "STATE_NAME",
    "TrainResult",
    "save_trainable",
    "load_trainable",
    "write_checkpoint",
    "load_finished",
]

WEIGHTS_NAME = "weights.safetensors"
CONFIG_NAME = "config.json"
STATE_NAME = "train_state.json"
_VERSION_KEYS = {"_dualbench_version", "_diffusers_version", "_torch_version"}
#: Settings that change memory and speed, not what is trained: not compared on resume.
_RUNTIME_KEYS = {"gradient_checkpointing"}


@dataclass
class TrainResult:
    """What :func:`train` did: per-step kinds and losses, time, whether it resumed."""

    steps: int
    kinds: list[str]
    losses: list[float]
    seconds: float
    resumed: bool = False
    workdir: Path | None = None
    logs: list[dict[str, float]] = field(default_factory=list)



def _named_trainable(model: nn.Module, params: Iterable[nn.Parameter]) -> dict[str, nn.Parameter]:
    wanted = {id(p) for p in params}
    named = {name: p for name, p in model.named_parameters() if id(p) in wanted}
    if len(named) != len(wanted):
        raise ValueError("some trainable parameters are not parameters of the model")
    return named


def save_trainable(model: nn.Module, parameter_groups: Mapping[str, Sequence[nn.Parameter]], folder: Path) -> None:
    """Default ``save_fn``: the named trainable parameters in ``folder/weights.safetensors``."""
    from safetensors.torch import save_file

    tensors, groups = {}, {}
    for group, params in parameter_groups.items():
        named = _named_trainable(model, params)
        groups[group] = sorted(named)
        tensors.update({n: p.detach().cpu().contiguous() for n, p in named.items()})
    save_file(tensors, str(Path(folder) / WEIGHTS_NAME), metadata={"format": "pt", "groups": json.dumps(groups)})


def load_trainable(model: nn.Module, folder: Path, expected: Iterable[nn.Parameter] | None = None) -> list[str]:
    """Default ``load_fn``: copy ``folder/weights.safetensors`` into the model's parameters by name.

    Args:
        expected: parameters that must all be in the file (default: none checked).

    Returns:
        The loaded names.

    Raises:
        ValueError: a name the model lacks, a shape mismatch, or an expected parameter missing.
    """
    from safetensors.torch import load_file

    tensors = load_file(str(Path(folder) / WEIGHTS_NAME))
    params = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise ValueError(f"{folder}: checkpoint tensors not in the model: {unknown[:5]}{' …' if len(unknown) > 5 else ''}")
    if expected is not None:
        missing = sorted(set(_named_trainable(model, expected)) - set(tensors))
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            p = params[name]
            if p.shape != value.shape:
                raise ValueError(f"{folder}: {name} has shape {tuple(value.shape)}, the model {tuple(p.shape)}")
            p.copy_(value.to(dtype=p.dtype))
    return sorted(tensors)


def write_checkpoint(
    workdir: Path,
    write_weights: Callable[[Path], None],
    config: Mapping[str, Any] | None,
    state: Mapping[str, Any],
) -> None:
    """Write a checkpoint folder so that a reader never takes a partial one for finished.

    1. The old ``train_state.json`` (the "finished" marker) is removed first: from here on the
       folder is not finished.
    2. ``write_weights(staging)`` writes the weight files into a staging folder inside
       ``workdir``; each is ``fsync``-ed and renamed into ``workdir``
       (:func:`dualreal.engine.io.atomic_replace`).
    3. ``config.json`` (when given), then ``train_state.json`` last, each written atomically
       (:func:`dualreal.engine.io.atomic_write_json`).

    The staging folder is removed on success and on error.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / STATE_NAME).unlink(missing_ok=True)
    staging = workdir / f".staging-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        write_weights(staging)
        for item in sorted(staging.iterdir()):
            if item.name in (CONFIG_NAME, STATE_NAME) or not item.is_file():
                raise ValueError(f"write_weights must write weight files only, got {item.name!r}")
            atomic_replace(item, workdir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if config is not None:
        atomic_write_json(workdir / CONFIG_NAME, dict(config), indent=2, default=str)
    atomic_write_json(workdir / STATE_NAME, dict(state), indent=2, default=str)


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The entries that differ between a saved ``config.json`` and the current one.

    Package versions (``_dualbench_version``, ``_diffusers_version``, ``_torch_version``) and
    ``gradient_checkpointing`` (memory, not math) are ignored; every other key — fields and
    ``_``-metadata such as ``_backbone_fingerprint`` — is compared after a JSON round trip (tuples
    equal lists). A field the saved file does not have yet counts with the value it had before it
    existed (:data:`dualreal.engine.config.FIELDS_ADDED`).

    Returns:
        ``{key: (saved value, current value)}``, sorted by key; empty when the configs match.
    """
    keys = {k for k in (*saved, *current) if k not in _VERSION_KEYS | _RUNTIME_KEYS}
    norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731
    old = {k: saved[k] if k in saved else FIELDS_ADDED.get(k) for k in keys}
    return {k: (old[k], current.get(k)) for k in sorted(keys) if norm(old[k]) != norm(current.get(k))}


def load_finished(
    workdir: Path | None,
    model: nn.Module,
    *,
    checkpoint_config: Mapping[str, Any] | None = None,
    load_fn: Callable[[nn.Module, Path], Any] | None = None,
) -> TrainResult | None:
    """Load a finished checkpoint from ``workdir`` into ``model``; ``None`` when there is none.

    Raises:
        ValueError: the checkpoint was trained with a different ``checkpoint_config``.
    """
    if workdir is None:
        return None
    workdir = Path(workdir)
    state_file = workdir / STATE_NAME
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text())
    except ValueError:
        return None  # corrupt: train again
    if not state.get("finished"):
        return None
    if checkpoint_config is not None:
        cfg_file = workdir / CONFIG_NAME
        saved = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        diff = config_diff(saved, checkpoint_config)
        if diff:
            lines = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{workdir} holds a finished checkpoint trained with another configuration ({lines}); "
                "delete the folder or use another output folder"
            )
    (load_fn or (lambda m, f: load_trainable(m, f)))(model, workdir)
    return TrainResult(
        steps=int(state.get("steps", 0)),
        kinds=list(state.get("kinds", [])),
        losses=list(state.get("losses", [])),
        seconds=float(state.get("seconds", 0.0)),
        resumed=True,
        workdir=workdir,
        logs=list(state.get("logs", [])),
    )
