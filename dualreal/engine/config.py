"""The configuration classes every method config extends — one place for the shared fields.

Three layers, each adding only what it owns:

* :class:`MethodConfig` — options by name (:meth:`~MethodConfig.from_overrides`: an unknown key is
  an error listing the valid ones) or as command-line text (:meth:`~MethodConfig.parse_options`:
  ``KEY=VALUE`` strings typed by each field's annotation), :meth:`~MethodConfig.validate`,
  :meth:`~MethodConfig.resolve`
  per backbone, and the ``config.json`` saved beside every checkpoint (class name and package
  versions first, as diffusers' ``ConfigMixin.to_json_string`` does; written atomically with
  :mod:`dualreal.engine.io`). A method that learns nothing (``cogvideox``) has this empty config.
* :class:`TrainingConfig` — what every trainable method hands the one trainer: the paper's
  optimiser settings (:class:`OptimizerSettings`), steps, warm-up, batch sizes, clip length,
  mixed precision, seed; the backbone-dependent defaults; :meth:`~TrainingConfig.trainer_config`.
* :class:`ImageConditionedConfig` — methods whose motion adapters take a reference-image embedding
  (DualReal, DreamVideo-style): the image encoder and the unconditional branch's condition.

A subclass declares its own fields, and re-declares a field or class constant of a base only to
change its value, with a comment naming the source (paper section or upstream file);
``tests/test_config.py`` checks both.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

__all__ = [
    "MIXED_PRECISION",
    "IMAGE_ENCODERS",
    "UNCOND_CONDITIONS",
    "REFERENCE_RESIZES",
    "FIELDS_ADDED",
    "parse_value",
    "type_name",
    "OptimizerSettings",
    "MethodConfig",
    "TrainingConfig",
    "ImageConditionedConfig",
    "mixed_precision_for",
    "is_tiny",
]

#: Values of ``mixed_precision``: ``auto`` (from the backbone's dtype) or accelerate's names.
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
#: Values of ``image_encoder``: ``auto`` (``tiny-random`` on the tiny preset, ``ViT-H-14-random`` on the
#: other random-weights backbones, else ``ViT-H-14``), or one of them by name.
IMAGE_ENCODERS = ("auto", "ViT-H-14", "ViT-H-14-random", "tiny-random")
#: Values of ``reference_resize``: how the reference-image encoder brings an image to its square
#: input (``stretch``: the released code's resize without cropping; ``crop``: short side, then centre crop).
REFERENCE_RESIZES = ("stretch", "crop")
#: Fields added to the configs after checkpoints were first written → the value they had before they
#: existed. A saved ``config.json`` without the field is compared as if it held this value
#: (:func:`dualreal.engine.trainer.config_diff`), so an old checkpoint resumes exactly when it was
#: trained the way the current settings ask.
FIELDS_ADDED: dict[str, Any] = {
    # the reference-image encoder resized the short side and centre-cropped before the option existed
    "reference_resize": "crop",
}
#: Values of ``uncond_condition``: the reference embedding in both guidance branches, or zeros in the
#: unconditional one.
UNCOND_CONDITIONS = ("same", "zeros")

C = TypeVar("C", bound="MethodConfig")


def is_tiny(backbone: Any) -> bool:
    """Whether ``backbone`` is the random-weights ``tiny`` preset (smoke-test defaults apply)."""
    return getattr(backbone, "source", None) == "tiny"


def type_name(annotation: Any) -> str:
    """A field annotation as users read it: ``int``, ``float | None``, ``tuple[float, float]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")


def parse_value(text: str, annotation: Any) -> Any:
    """Parse command-line text into a value of a config field's type.

    Rules: ``bool`` — ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case); ``int`` — an integer
    literal (``1e3`` and ``2.5`` are refused); ``float`` — any float literal; ``str`` — the text as is;
    ``X | None`` — ``none`` / ``null`` (any case) or an ``X``; ``tuple[X, Y]`` / ``tuple[X, ...]`` /
    ``list[X]`` — comma-separated items, optionally in brackets or parentheses (``0.3,0.7``,
    ``(0.3, 0.7)``), a fixed-length tuple needing exactly its number of items.

    Args:
        text: the value as typed (``"0.3,0.7"``).
        annotation: the field's resolved type (``typing.get_type_hints``).

    Returns:
        The typed value (tuples for tuple and list fields, as configs hold them).

    Raises:
        ValueError: the text is not a value of that type; the message says what was expected.
    """
    origin = typing.get_origin(annotation)
    stripped = text.strip()
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if type(None) in args and stripped.lower() in _NONE:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, arg)
            except ValueError:
                continue
        raise ValueError(f"expected {type_name(annotation)}, got {text!r}")
    if origin in (tuple, list):
        args = typing.get_args(annotation)
        body = stripped
        if body[:1] + body[-1:] in ("()", "[]"):
            body = body[1:-1]
        items = [item for item in (part.strip() for part in body.split(",")) if item != ""]
        if len(args) == 2 and args[1] is Ellipsis or origin is list:
            kinds = [args[0] if args else str] * len(items)
        else:
            if len(items) != len(args):
                raise ValueError(f"expected {type_name(annotation)} ({len(args)} comma-separated values), got {text!r}")
            kinds = list(args)
        try:
            return tuple(parse_value(item, kind) for item, kind in zip(items, kinds))
        except ValueError:
            raise ValueError(f"expected {type_name(annotation)}, got {text!r}") from None
    if annotation is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ValueError(f"expected bool (true/false, 1/0, yes/no, on/off), got {text!r}")
    if annotation is int:
        try:
            return int(stripped, 10)
        except ValueError:
            raise ValueError(f"expected int, got {text!r}") from None
    if annotation is float:
        try:
            return float(stripped)
        except ValueError:
            raise ValueError(f"expected float, got {text!r}") from None
    if annotation is str:
        return text
    raise ValueError(f"options of type {type_name(annotation)} cannot be set from text")


def mixed_precision_for(dtype: Any) -> str:
    """The mixed-precision rule: ``bf16`` for a bfloat16 backbone, ``fp16`` for float16, else ``no``.

    Args:
        dtype: a ``torch.dtype`` (or its string form, ``"torch.bfloat16"``).

    Returns:
        One of accelerate's ``mixed_precision`` names.
    """
    name = str(dtype).replace("torch.", "")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(name, "no")


@dataclass
class OptimizerSettings:
    """The paper's optimiser and learning-rate schedule (the paper's implementation details; docs/METHOD.md §3.6).

    The one place these defaults live: :class:`~dualreal.engine.trainer.TrainerConfig` and every
    :class:`TrainingConfig` inherit them.

    Attributes:
        learning_rate: AdamW learning rate (1e-3).
        adam_beta1, adam_beta2: AdamW β (0.9, 0.95).
        weight_decay: AdamW weight decay (1e-4).
        adam_epsilon: AdamW ε (1e-8).
        max_grad_norm: gradient-norm clip (1.0); ``None`` disables clipping.
        lr_scheduler: diffusers ``get_scheduler`` name (``cosine_with_restarts``).
        lr_num_cycles: cycles of the cosine schedule (1).
    """

    learning_rate: float = 1e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    lr_scheduler: str = "cosine_with_restarts"
    lr_num_cycles: int = 1

    def optimizer_settings(self) -> dict[str, Any]:
        """The :class:`OptimizerSettings` fields of this config, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(OptimizerSettings)}


@dataclass
class MethodConfig:
    """A method's options: built by name, checked, resolved per backbone, saved as ``config.json``.

    Subclasses add dataclass fields and extend :meth:`validate` / :meth:`resolve`. JSON lists become
    tuples on construction (``config.json`` has no tuples).
    """

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` with one precise message per bad value or combination."""

    # ------------------------------------------------------------------ construction
    @classmethod
    def field_names(cls) -> list[str]:
        """The options a user may set (every field but the ``resolved_for`` record)."""
        return [f.name for f in dataclasses.fields(cls) if f.name != "resolved_for"]

    @classmethod
    def from_overrides(cls: type[C], **overrides: Any) -> C:
        """Build from keyword overrides of the defaults.

        Raises:
            ValueError: an unknown key (the message lists the valid ones), or a bad value.
        """
        valid = cls.field_names()
        unknown = sorted(set(overrides) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} option(s) {unknown}; valid options: {', '.join(valid) or '(none)'}"
            )
        return cls(**overrides)

    @classmethod
    def option_types(cls) -> dict[str, Any]:
        """Option name → its resolved type annotation (every option of :meth:`field_names`)."""
        hints = typing.get_type_hints(cls)
        return {name: hints[name] for name in cls.field_names()}

    @classmethod
    def parse_options(cls, options: Mapping[str, str]) -> dict[str, Any]:
        """Type command-line option text by each field's annotation (:func:`parse_value`).

        ``dualbench run --method-option KEY=VALUE`` goes through here before any model is loaded;
        :meth:`from_overrides` then checks the values together (:meth:`validate`).

        Args:
            options: option name → text (``{"num_groups": "2", "fixed_weights": "0.3,0.7"}``).

        Returns:
            option name → typed value.

        Raises:
            ValueError: an unknown option (the message lists the valid ones), or a value that is not
                of its field's type (the message names the field, the expected type and the text).
        """
        types_ = cls.option_types()
        unknown = sorted(set(options) - set(types_))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} option(s) {unknown}; valid options: {', '.join(types_) or '(none)'}"
            )
        out = {}
        for name, text in options.items():
            try:
                out[name] = parse_value(text, types_[name])
            except ValueError as exc:
                raise ValueError(f"{cls.__name__} option {name}: {exc}") from None
        return out

    def resolve(self: C, backbone: Any) -> C:
        """A copy with every ``auto`` / ``None`` default made concrete for ``backbone``."""
        return dataclasses.replace(self)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-able (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def describe(self) -> dict[str, Any]:
        """What a results record states about this (resolved) config: :meth:`to_dict`."""
        return self.to_dict()

    def to_json_dict(self) -> dict[str, Any]:
        """The ``config.json`` payload: the class name and package versions first, then every field."""
        import diffusers
        import torch

        from dualreal import __version__

        return {
            "_class_name": type(self).__name__,
            "_dualbench_version": __version__,
            "_diffusers_version": diffusers.__version__,
            "_torch_version": torch.__version__,
            **self.to_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json_dict` to ``path`` atomically (:func:`dualreal.engine.io.atomic_write_json`)."""
        from dualreal.engine.io import atomic_write_json

        return atomic_write_json(path, self.to_json_dict(), indent=2)

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a ``config.json`` written by :meth:`save` (or a checkpoint's, which adds ``_``-keys).

        A field the file does not have yet takes the value it had before it existed
        (:data:`FIELDS_ADDED`), not today's default.

        Raises:
            ValueError: the file names another class, or holds fields this class does not have.
        """
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        name = data.get("_class_name")
        if name != cls.__name__:
            raise ValueError(f"{path}: config of class {name!r}, expected {cls.__name__!r}")
        values = {k: v for k, v in data.items() if not k.startswith("_")}
        known = {f.name for f in dataclasses.fields(cls)}
        # a file written before a field existed holds the value the field had then
        values = {**{k: v for k, v in FIELDS_ADDED.items() if k in known}, **values}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown {cls.__name__} field(s) {unknown}")
        return cls(**values)


@dataclass
class TrainingConfig(OptimizerSettings, MethodConfig):
    """What every trainable method's config shares (``None`` / ``auto`` fields are resolved per
    backbone by :meth:`resolve`).

    Backbone-dependent defaults (class constants; a subclass overrides them with its source):

    * ``PAPER_STEPS`` (1000, the paper's; docs/METHOD.md §3.6) on a real CogVideoX, ``TINY_STEPS`` (3) on the
      random-weights ``tiny`` preset, whose only purpose is to run every code path quickly;
    * ``WARMUP_FRACTION`` (0.2: the paper's 200 of 1000 steps);
    * ``PAPER_MOTION_BATCH`` (3 clips per motion step, the paper's), ``TINY_MOTION_BATCH`` (1).

    Attributes:
        learning_rate, adam_beta1, adam_beta2, weight_decay, adam_epsilon, max_grad_norm,
            lr_scheduler, lr_num_cycles: :class:`OptimizerSettings`.
        train_steps: optimiser steps per training run (``None``: ``PAPER_STEPS``, or
            ``TINY_STEPS`` on ``tiny``; ``dualbench run --train-steps N`` sets it).
        lr_warmup_steps: ``None`` → ``round(WARMUP_FRACTION · train_steps)``.
        motion_batch_size: clips per motion step (``None``: ``PAPER_MOTION_BATCH``, or
            ``TINY_MOTION_BATCH`` on ``tiny``).
        identity_batch_size: images per identity step (1).
        gradient_accumulation_steps: micro-batches per optimiser step (1).
        train_frames: frames per training clip, 4k+1 (``None``: the backbone's default, 49 / 9).
        mixed_precision: ``auto`` (:func:`mixed_precision_for` the backbone's dtype), ``no``,
            ``bf16`` or ``fp16``.
        use_8bit_adam: bitsandbytes' AdamW8bit (optional dependency).
        gradient_checkpointing: the transformer's block checkpointing while training (the one
            trainer switches it on for the run, :func:`dualreal.engine.trainer.train`). ``None``:
            on for every backbone except ``tiny`` — a motion step at 49×480×720 is 3 clips ×
            ~17,800 tokens × 42 blocks, whose activations do not fit an 80 GB GPU without it
            (docs/SCALE.md); off on ``tiny``, where memory is no concern and recomputation only
            costs time. It changes memory and speed, not the result (``tests/test_trainer.py``
            checks loss and gradients on vs off), so resuming ignores it.
        seed: seeds initialisation, step kinds, batches, noise and timesteps (42).
        resolved_for: set by :meth:`resolve` — the backbone the defaults were resolved for (a
            record, not an option).
    """

    PAPER_STEPS: ClassVar[int] = 1000
    TINY_STEPS: ClassVar[int] = 3
    WARMUP_FRACTION: ClassVar[float] = 0.2
    PAPER_MOTION_BATCH: ClassVar[int] = 3
    TINY_MOTION_BATCH: ClassVar[int] = 1

    train_steps: int | None = None
    lr_warmup_steps: int | None = None
    motion_batch_size: int | None = None
    identity_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    train_frames: int | None = None
    mixed_precision: str = "auto"
    use_8bit_adam: bool = False
    gradient_checkpointing: bool | None = None
    seed: int = 42
    resolved_for: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        super().validate()
        if self.train_steps is not None and self.train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {self.train_steps}")
        if self.lr_warmup_steps is not None and self.lr_warmup_steps < 0:
            raise ValueError(f"lr_warmup_steps must be >= 0, got {self.lr_warmup_steps}")
        if (self.motion_batch_size is not None and self.motion_batch_size < 1) or self.identity_batch_size < 1:
            raise ValueError("motion_batch_size and identity_batch_size must be >= 1")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("gradient_accumulation_steps must be >= 1")
        if self.train_frames is not None and (self.train_frames < 1 or (self.train_frames - 1) % 4):
            raise ValueError(f"train_frames must be 4k+1 (the VAE compresses time by 4), got {self.train_frames}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")

    def resolve(self: C, backbone: Any) -> C:
        """A copy with the backbone-dependent defaults made concrete (class docstring).

        Args:
            backbone: a :class:`~dualreal.engine.backbone.Backbone` (uses ``source``, ``dtype`` and
                ``defaults["num_frames"]``).
        """
        tiny = is_tiny(backbone)
        steps = self.train_steps if self.train_steps is not None else (self.TINY_STEPS if tiny else self.PAPER_STEPS)
        warmup = self.lr_warmup_steps
        if warmup is None:
            warmup = int(round(self.WARMUP_FRACTION * steps))
        mixed = self.mixed_precision
        if mixed == "auto":
            mixed = mixed_precision_for(getattr(backbone, "dtype", "float32"))
        return dataclasses.replace(
            super().resolve(backbone),
            train_steps=steps,
            lr_warmup_steps=warmup,
            motion_batch_size=(self.motion_batch_size if self.motion_batch_size is not None
                               else self.TINY_MOTION_BATCH if tiny else self.PAPER_MOTION_BATCH),
            train_frames=self.train_frames if self.train_frames is not None else int(backbone.defaults["num_frames"]),
            mixed_precision=mixed,
            gradient_checkpointing=(not tiny) if self.gradient_checkpointing is None else self.gradient_checkpointing,
            resolved_for=str(getattr(backbone, "source", "unknown")),
        )

    def trainer_config(self, description: str, *, train_steps: int | None = None) -> Any:
        """The :class:`~dualreal.engine.trainer.TrainerConfig` of one training run.

        Args:
            description: the progress-bar label.
            train_steps: steps of this run when they differ from ``train_steps`` (e.g. one of
                DreamVideo's two runs); the warm-up is then ``round(WARMUP_FRACTION · steps)``.

        Raises:
            ValueError: the config is not resolved (``train_steps``, ``lr_warmup_steps``,
                ``mixed_precision`` or ``gradient_checkpointing`` still ``None`` / ``auto``: call
                :meth:`resolve` first).
        """
        from dualreal.engine.trainer.loop import TrainerConfig

        if train_steps is None:
            steps, warmup = self.train_steps, self.lr_warmup_steps
        else:
            steps, warmup = int(train_steps), int(round(self.WARMUP_FRACTION * int(train_steps)))
        if steps is None or warmup is None or self.mixed_precision == "auto" or self.gradient_checkpointing is None:
            raise ValueError(f"{type(self).__name__} is not resolved: call resolve(backbone) before training")
        return TrainerConfig(
            **self.optimizer_settings(),
            train_steps=int(steps),
            lr_warmup_steps=int(warmup),
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            mixed_precision=self.mixed_precision,
            use_8bit_adam=self.use_8bit_adam,
            gradient_checkpointing=bool(self.gradient_checkpointing),
            seed=self.seed,
            description=description,
        )


@dataclass
class ImageConditionedConfig(TrainingConfig):
    """A training config whose motion adapters are conditioned on a reference-image embedding
    (:mod:`dualreal.engine.image_encoder`; docs/METHOD.md §1, §4).

    Attributes:
        image_encoder: ``auto`` (``tiny-random`` on the tiny preset, ``ViT-H-14-random`` on the other
            random-weights backbones — the ``cogvideox-*-random`` presets, whose jobs must run
            without any download —, else ``ViT-H-14``), ``ViT-H-14`` (OpenCLIP,
            laion2b_s32b_b79k), ``ViT-H-14-random`` (the same architecture, seeded random
            weights) or ``tiny-random``.
        image_encoder_path: explicit checkpoint file or folder of the OpenCLIP weights.
        uncond_condition: the unconditional guidance branch's condition: ``same`` (the reference
            embedding, as DualReal's released inference script) or ``zeros``.
        reference_resize: how a reference image (and a training frame) is brought to the
            encoder's square input: ``stretch`` (default: resized to 224×224 without cropping, as
            the released training and inference scripts do; :mod:`dualreal.engine.image_encoder`
            cites the lines) or ``crop`` (short side to 224, centre crop: keeps the aspect ratio
            but drops a third of a 3:2 image).
    """

    image_encoder: str = "auto"
    image_encoder_path: str | None = None
    uncond_condition: str = "same"
    reference_resize: str = "stretch"

    def validate(self) -> None:
        super().validate()
        if self.image_encoder not in IMAGE_ENCODERS:
            raise ValueError(f"image_encoder must be one of {IMAGE_ENCODERS}, got {self.image_encoder!r}")
        if self.uncond_condition not in UNCOND_CONDITIONS:
            raise ValueError(f"uncond_condition must be one of {UNCOND_CONDITIONS}, got {self.uncond_condition!r}")
        if self.reference_resize not in REFERENCE_RESIZES:
            raise ValueError(f"reference_resize must be one of {REFERENCE_RESIZES}, got {self.reference_resize!r}")

    def resolve(self: C, backbone: Any) -> C:
        out = super().resolve(backbone)
        if out.image_encoder == "auto":
            if is_tiny(backbone):
                name = "tiny-random"
            elif getattr(backbone, "random_weights", False):
                name = "ViT-H-14-random"
            else:
                name = "ViT-H-14"
            out = dataclasses.replace(out, image_encoder=name)
        return out

    def describe(self) -> dict[str, Any]:
        """:meth:`to_dict` plus ``image_encoder_random_weights`` (records label random weights)."""
        return {**self.to_dict(), "image_encoder_random_weights": self.image_encoder.endswith("-random")}
