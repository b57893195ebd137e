"""Checkpoint I/O of the trainer: the named trainable parameters in safetensors, ``config.json``
beside them, and ``train_state.json`` written last as the "finished" marker.

Strict loading. Every safetensors checkpoint of dualbench — DualReal's adapters and controller, the
DreamVideo-style adapters, MotionBooth's fine-tuned tensors, the LoRA files — is read through
:func:`read_checkpoint`: a file that is truncated or not safetensors, a key the model expects and
the file lacks, a key the model does not have, or a tensor of another shape is one
:class:`CheckpointError` that names the file, counts each kind and lists the first keys. Nothing is
loaded half (peft's ``set_peft_model_state_dict`` and diffusers' ``load_lora_weights`` only warn
about missing keys and leave those weights as initialised).
"""

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
from dualreal.engine.errors import cause_line
from dualreal.engine.io import atomic_replace, atomic_write_json

__all__ = [
    "CheckpointError",
    "read_checkpoint",
    "check_state_dict",
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



class CheckpointError(ValueError):
    """A checkpoint file that cannot be used as it is: unreadable (truncated, not safetensors) or
    not the model's (keys missing or unexpected, tensors of another shape). The message is one line:
    ``"<file>: missing 3 keys (a, b, c), unexpected 1 (d)"``."""


#: Keys listed per kind in a :class:`CheckpointError`; the rest are counted.
_LISTED = 3


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", … {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def check_state_dict(
    path: str | os.PathLike,
    shapes: Mapping[str, Sequence[int]],
    expected: Mapping[str, Sequence[int]],
    *,
    allow_missing: bool = False,
) -> None:
    """Compare a checkpoint's keys and shapes with what the model expects.

    Args:
        path: the file (for the message).
        shapes: key → shape of each tensor in the file.
        expected: key → shape of each tensor the model takes from the file.
        allow_missing: expected keys may be absent (a partial checkpoint by design).

    Raises:
        CheckpointError: ``"<path>: missing 3 keys (a, b, c), unexpected 1 (d), 1 of another shape
            (e: file (4, 8), model (4, 16))"`` — each kind counted, its first keys listed.
    """
    missing = [] if allow_missing else sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    other = sorted(k for k in set(shapes) & set(expected) if tuple(shapes[k]) != tuple(expected[k]))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key{'s' * (len(missing) > 1)} ({_listed(missing)})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} ({_listed(unexpected)})")
    if other:
        described = [f"{k}: file {tuple(shapes[k])}, model {tuple(expected[k])}" for k in other]
        parts.append(f"{len(other)} of another shape ({_listed(described)})")
    if parts:
        raise CheckpointError(f"{path}: {', '.join(parts)}")


def read_checkpoint(
    path: str | os.PathLike,
    expected: Mapping[str, Sequence[int]] | None = None,
    *,
    allow_missing: bool = False,
    tensors: bool = True,
) -> dict[str, torch.Tensor] | dict[str, tuple[int, ...]]:
    """The tensors of a safetensors file (CPU), checked against ``expected`` before any is returned.

    The file is opened with ``safetensors.safe_open``, whose header check refuses a truncated file
    (``incomplete metadata, file not fully covered``) or a foreign one.

    Args:
        path: the ``.safetensors`` file.
        expected: key → shape the model takes (``None``: no key check).
        allow_missing: see :func:`check_state_dict`.
        tensors: ``False``: check the header only and return the shapes (no tensor is read).

    Returns:
        ``{key: tensor}`` as stored (``{key: shape}`` with ``tensors=False``).

    Raises:
        CheckpointError: a missing or unreadable file (``"<path>: not a readable safetensors file
            (<cause>)"``), or keys and shapes that differ (:func:`check_state_dict`).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), "pt", device="cpu") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            if expected is not None:
                check_state_dict(path, shapes, expected, allow_missing=allow_missing)
            return {k: f.get_tensor(k) for k in shapes} if tensors else shapes
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError (truncated, foreign), OSError: all "unreadable"
        raise CheckpointError(f"{path}: not a readable safetensors file ({cause_line(exc, with_type=False)})") from None


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
    """Default ``load_fn``: copy ``folder/weights.safetensors`` into the model's parameters by name,
    after :func:`read_checkpoint` has checked every key and shape.

    Args:
        expected: the parameters the file must hold, exactly (default: any parameters of the model;
            none required).

    Returns:
        The loaded names.

    Raises:
        CheckpointError: the file is unreadable, lacks an expected parameter, holds a tensor the model
            (or ``expected``) does not have, or one of another shape — the file and keys named.
    """
    params = dict(model.named_parameters())
    wanted = params if expected is None else _named_trainable(model, expected)
    tensors = read_checkpoint(Path(folder) / WEIGHTS_NAME, {n: tuple(p.shape) for n, p in wanted.items()},
                              allow_missing=expected is None)
    with torch.no_grad():
        for name, value in tensors.items():
            p = params[name]
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

    A finished checkpoint whose weights cannot be loaded as they are (truncated, keys missing or
    unexpected, shapes that differ: :class:`CheckpointError` from ``load_fn``) is refused, not
    retrained: the error names the file and keys and says to delete the folder to retrain — the
    case's record then says what happened instead of a silent retraining.

    Raises:
        ValueError: the checkpoint was trained with a different ``checkpoint_config``.
        CheckpointError: the finished checkpoint's weights are damaged or not the model's.
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
    try:
        (load_fn or (lambda m, f: load_trainable(m, f)))(model, workdir)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; the finished checkpoint in {workdir} cannot be reused: delete the folder to retrain") from None
    return TrainResult(
        steps=int(state.get("steps", 0)),
        kinds=list(state.get("kinds", [])),
        losses=list(state.get("losses", [])),
        seconds=float(state.get("seconds", 0.0)),
        resumed=True,
        workdir=workdir,
        logs=list(state.get("logs", [])),
    )
