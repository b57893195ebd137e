"""The training-config base (dualreal.engine.config) is the single source of the shared fields:
every method config extends it and re-declares a base value only as a documented override; values
resolved per backbone; config.json round trip; files of the previous format still resume."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from benchmark.registry import METHODS
from dualreal.config import DualRealConfig
from dualreal.engine.config import ImageConditionedConfig, MethodConfig, TrainingConfig, mixed_precision_for
from dualreal.engine.trainer import TrainerConfig, config_diff

GOLDEN = Path(__file__).parent / "golden" / "configs"


def method_classes() -> dict[str, type]:
    out = {}
    for spec in METHODS.values():
        module, _, attr = spec.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        out[cls.__name__] = cls
    return out


def config_classes() -> list[type]:
    return sorted({cls.config_class for cls in method_classes().values()}, key=lambda c: c.__name__)


def fake_backbone(source: str, dtype: torch.dtype = torch.float32, width: tuple[int, int] = (48, 64)):
    """What resolve() reads of a backbone: source, dtype, default clip length, transformer width."""
    heads, head_dim = width
    return SimpleNamespace(
        source=source,
        dtype=dtype,
        defaults={"num_frames": 49 if source != "tiny" else 9},
        transformer=SimpleNamespace(config=SimpleNamespace(num_attention_heads=heads, attention_head_dim=head_dim)),
    )


REAL = fake_backbone("THUDM/CogVideoX-5b", torch.bfloat16)
TINY = fake_backbone("tiny", torch.float32, (2, 16))


# ------------------------------------------------------------------------------ single source
def test_every_method_config_extends_the_base():
    classes = method_classes()
    for cls in classes.values():
        if cls.trainable:
            assert issubclass(cls.config_class, TrainingConfig), cls.__name__
        else:
            assert cls.config_class is MethodConfig, cls.__name__  # nothing to train, no options


def _base_names(cls: type) -> dict[str, type]:
    """Every field and class constant (UPPER_CASE) a config base of ``cls`` declares → that base."""
    names: dict[str, type] = {}
    for base in reversed(cls.__mro__[1:]):
        if not (isinstance(base, type) and dataclasses.is_dataclass(base)):
            continue
        own = set(base.__dict__.get("__annotations__", {}))
        names.update({n: base for n in own})
    return names


def _own_assignments(cls: type) -> list[tuple[str, int, list[str]]]:
    """(name, line, source lines) of every assignment in ``cls``'s own class body."""
    lines, _ = inspect.getsourcelines(cls)
    tree = ast.parse(textwrap.dedent("".join(lines)))
    out = []
    for node in tree.body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.append((node.target.id, node.lineno, lines))
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out.append((node.targets[0].id, node.lineno, lines))
    return out


def _default(cls: type, name: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name in fields:
        f = fields[name]
        return f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return getattr(cls, name)


@pytest.mark.parametrize("cls", [*config_classes(), ImageConditionedConfig], ids=lambda c: c.__name__)
def test_a_base_value_is_redeclared_only_as_a_documented_change(cls):
    """A field or constant of a base appears again in a subclass only to change its value, with a
    comment (its source) on the line or the line above — never as a drifted copy."""
    base_names = _base_names(cls)
    for name, lineno, lines in _own_assignments(cls):
        if name not in base_names:
            continue
        line, above = lines[lineno - 1], lines[lineno - 2]
        assert "#" in line or above.strip().startswith("#"), (
            f"{cls.__name__}.{name} re-declares {base_names[name].__name__}.{name} without a comment naming its source"
        )
        parent = next(b for b in cls.__mro__[1:] if name in {f.name for f in dataclasses.fields(b)} or hasattr(b, name))
        assert _default(cls, name) != _default(parent, name), (
            f"{cls.__name__}.{name} repeats the value of {parent.__name__}.{name}: delete the copy"
        )


# ------------------------------------------------------------------------------ resolution
EXPECTED = {
    # class: (real: steps, warm-up, clips per motion step), (tiny: …) — from the sources in docs/
    "DualRealConfig": ((1000, 200, 3), (10, 2, 3)),  # docs/METHOD.md §3.6; tiny smoke size
    "LoRAConfig": ((1000, 200, 3), (3, 1, 1)),  # round(0.2 · 3) = 1
    "DreamVideoConfig": ((1000, 0, 2), (3, 0, 1)),  # constant learning rate; VGen playingGuitar's 2 clips
    "MotionBoothConfig": ((300, 0, 1), (3, 0, 1)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backbone_dependent_defaults(name):
    cls = next(c for c in config_classes() if c.__name__ == name)
    for backbone, (steps, warmup, clips), frames, mixed in ((REAL, EXPECTED[name][0], 49, "bf16"), (TINY, EXPECTED[name][1], 9, "no")):
        cfg = cls().resolve(backbone)
        assert (cfg.train_steps, cfg.lr_warmup_steps, cfg.motion_batch_size) == (steps, warmup, clips)
        assert (cfg.train_frames, cfg.mixed_precision, cfg.resolved_for) == (frames, mixed, backbone.source)
    explicit = cls(train_steps=50, motion_batch_size=2, train_frames=13, mixed_precision="fp16").resolve(REAL)
    assert (explicit.train_steps, explicit.motion_batch_size, explicit.train_frames, explicit.mixed_precision) == (50, 2, 13, "fp16")
    assert explicit.lr_warmup_steps == round(cls.WARMUP_FRACTION * 50)


def test_mixed_precision_rule_and_image_encoder_resolution():
    assert [mixed_precision_for(d) for d in (torch.bfloat16, torch.float16, torch.float32, "torch.bfloat16")] == [
        "bf16", "fp16", "no", "bf16"
    ]
    assert DualRealConfig().resolve(TINY).image_encoder == "tiny-random"
    assert DualRealConfig().resolve(REAL).image_encoder == "ViT-H-14"
    preset = SimpleNamespace(**{**vars(REAL), "source": "cogvideox-5b-random", "random_weights": True})
    assert DualRealConfig().resolve(preset).image_encoder == "ViT-H-14-random"  # runs before any download
    dv = next(c for c in config_classes() if c.__name__ == "DreamVideoConfig")
    real = dv().resolve(REAL)
    assert (real.identity_steps, real.motion_steps, real.bottleneck) == (1000, 1000, 48 * 64 // 2)
    assert dv(train_steps=7).resolve(REAL).motion_steps == 7


def test_trainer_config_carries_every_shared_setting():
    cfg = DualRealConfig(seed=3, use_8bit_adam=True, gradient_accumulation_steps=2).resolve(REAL)
    t = cfg.trainer_config("dualreal")
    assert isinstance(t, TrainerConfig)
    assert (t.train_steps, t.lr_warmup_steps, t.mixed_precision, t.seed, t.use_8bit_adam, t.gradient_accumulation_steps) == (
        1000, 200, "bf16", 3, True, 2
    )
    paper = {"learning_rate": 1e-3, "adam_beta1": 0.9, "adam_beta2": 0.95, "weight_decay": 1e-4, "adam_epsilon": 1e-8,
             "max_grad_norm": 1.0, "lr_scheduler": "cosine_with_restarts", "lr_num_cycles": 1}  # docs/METHOD.md §3.6
    assert {k: getattr(t, k) for k in paper} == paper
    assert {k: getattr(TrainerConfig(), k) for k in paper} == paper
    mb = next(c for c in config_classes() if c.__name__ == "MotionBoothConfig")().resolve(REAL).trainer_config("mb")
    assert (mb.learning_rate, mb.adam_beta2, mb.weight_decay, mb.lr_scheduler, mb.lr_warmup_steps) == (5e-6, 0.999, 0.01, "constant", 0)
    lora = next(c for c in config_classes() if c.__name__ == "LoRAConfig")().resolve(REAL)
    assert lora.trainer_config("one run", train_steps=50).lr_warmup_steps == 10  # 20 % of this run's steps
    with pytest.raises(ValueError, match=r"not resolved: call resolve\(backbone\)"):
        DualRealConfig().trainer_config("x")


def test_unknown_and_bad_options_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown DualRealConfig option\(s\) \['num_group'\]; valid options: .*num_groups"):
        DualRealConfig.from_overrides(num_group=3)
    with pytest.raises(ValueError, match=r"unknown MethodConfig option\(s\) \['train_steps'\]; valid options: \(none\)"):
        MethodConfig.from_overrides(train_steps=3)
    assert "resolved_for" not in DualRealConfig.field_names()  # a record, not an option
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        DualRealConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="train_frames must be 4k\\+1"):
        TrainingConfig(train_frames=8)
    with pytest.raises(ValueError, match="image_encoder must be one of"):
        ImageConditionedConfig(image_encoder="ViT-L")


def test_options_from_text_are_typed_by_their_fields():
    """``--method-option KEY=VALUE`` text → typed values, for every kind of field the configs have."""
    lora = next(c for c in config_classes() if c.__name__ == "LoRAConfig")
    mb = next(c for c in config_classes() if c.__name__ == "MotionBoothConfig")
    got = DualRealConfig.parse_options({
        "num_groups": "2", "fusion_scale": "0.3", "joint": "False", "use_controller": "0", "use_8bit_adam": "yes", "reference_resize": "crop",
        "fixed_weights": "(0.3, 0.7)", "train_steps": "none", "gradient_checkpointing": "off", "image_encoder_path": "/w/x.bin",
        "max_grad_norm": "None",
    })
    assert got == {"num_groups": 2, "fusion_scale": 0.3, "joint": False, "use_controller": False, "use_8bit_adam": True, "reference_resize": "crop",
                   "fixed_weights": (0.3, 0.7), "train_steps": None, "gradient_checkpointing": False,
                   "image_encoder_path": "/w/x.bin", "max_grad_norm": None}
    assert type(got["num_groups"]) is int and type(got["fusion_scale"]) is float
    assert lora.parse_options({"target_modules": "to_q,to_k", "alpha": "16"}) == {"target_modules": ("to_q", "to_k"), "alpha": 16.0}
    assert mb.parse_options({"attn_layers": "[0, 5, 41]"}) == {"attn_layers": (0, 5, 41)}
    DualRealConfig.from_overrides(**got)  # what parse_options gives, the config takes
    bad = {
        "num_groups": ("2.5", r"option num_groups: expected int, got '2.5'"),
        "fusion_scale": ("big", r"option fusion_scale: expected float, got 'big'"),
        "joint": ("maybe", r"option joint: expected bool \(true/false"),
        "fixed_weights": ("0.3", r"option fixed_weights: expected tuple\[float, float\] \| None, got '0.3'"),
        "train_steps": ("ten", r"option train_steps: expected int \| None, got 'ten'"),
    }
    for key, (text, message) in bad.items():
        with pytest.raises(ValueError, match=message):
            DualRealConfig.parse_options({key: text})
    with pytest.raises(ValueError, match=r"unknown DualRealConfig option\(s\) \['num_group'\]; valid options: .*num_groups"):
        DualRealConfig.parse_options({"num_group": "2"})
    with pytest.raises(ValueError, match=r"valid options: \(none\)"):
        MethodConfig.parse_options({"train_steps": "2"})


# ------------------------------------------------------------------------------ config.json
@pytest.mark.parametrize("cls", config_classes(), ids=lambda c: c.__name__)
def test_save_then_load_gives_the_same_config(cls, tmp_path):
    overrides = {"seed": 7, "train_steps": 11} if issubclass(cls, TrainingConfig) else {}
    if cls is DualRealConfig:
        overrides.update(fixed_weights=(0.3, 1), num_groups=2, use_controller=False)
    cfg = cls.from_overrides(**overrides).resolve(REAL)
    path = cfg.save(tmp_path / "run" / "config.json")
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # written atomically, no temp left
    data = json.loads(path.read_text())
    assert data["_class_name"] == cls.__name__ and data["_dualbench_version"] and data["_torch_version"] == torch.__version__
    again = cls.load(path)
    assert again == cfg and type(again) is cls
    if cls is DualRealConfig:
        assert again.fixed_weights == (0.3, 1.0) and isinstance(again.fixed_weights, tuple)
    other = next(c for c in config_classes() if c is not cls)
    with pytest.raises(ValueError, match=f"config of class '{cls.__name__}', expected '{other.__name__}'"):
        other.load(path)
    path.write_text(json.dumps({**data, "no_such_field": 1}))
    with pytest.raises(ValueError, match=r"unknown .* field\(s\) \['no_such_field'\]"):
        cls.load(path)


def _payloads_now(tiny_backbone) -> dict[str, dict]:
    from baselines.dreamvideo import DreamVideoMethod
    from baselines.lora import LoRAMethod
    from baselines.motionbooth import MotionBoothMethod
    from dualreal.method import DualRealMethod

    return {
        "dualreal": DualRealMethod(tiny_backbone).checkpoint_config(),
        "dualreal-no-joint": DualRealMethod(tiny_backbone, joint=False, use_controller=False).checkpoint_config(),
        "lora-identity": LoRAMethod(tiny_backbone).run_config("identity"),
        "dreamvideo-identity": DreamVideoMethod(tiny_backbone).run_config("identity"),
        "dreamvideo-motion": DreamVideoMethod(tiny_backbone).run_config("motion"),
        "motionbooth": MotionBoothMethod(tiny_backbone).checkpoint_config(
            exclude=MotionBoothMethod.CHECKPOINT_EXCLUDE, _mask_source="grabcut"
        ),
    }


#: What issue 11 changed on purpose (docs/BASELINES.md: the originals' data budgets, "Training
#: budgets"): runs of the previous version of these baselines were trained with other data per step,
#: so they are refused as "trained with another configuration" and retrained. Nothing else may differ.
CHANGED_ON_PURPOSE = {
    "dreamvideo-identity": {"identity_batch_size": (1, 4)},
    "dreamvideo-motion": {"identity_batch_size": (1, 4), "image_dropout": (0.5, 0.0)},
    "motionbooth": {
        "gradient_accumulation_steps": (1, 2), "identity_batch_size": (1, 10), "schedule": (None, "paired"),
        "preservation": (None, "other-motions"), "preservation_clips": (None, 6), "subject_loss_channels": (None, 4),
    },
}
#: And in ``describe()`` (hashed into records' ``config_hash``): the new options, and those changes.
DESCRIBE_CHANGED = {
    "lora": {"budget": (None, "original"), "identity_steps": (None, 3), "motion_steps": (None, 3)},
    "dreamvideo": {"budget": (None, "original"), "identity_batch_size": (1, 4), "image_dropout": (0.5, 0.0)},
    "motionbooth": {
        **CHANGED_ON_PURPOSE["motionbooth"], "budget": (None, "original"), "box_window": (None, 9),
        "box_min_side": (None, 0.3), "steer_calibration": (None, "text-mass"),
    },
}
#: Fields added since the golden files were written, and why a run of that version differs.
ADDED_SINCE = {
    # issue 10: the reference image reaches the image encoder as the release does (224×224, no
    # crop); the old version cropped, so its DualReal / DreamVideo-style runs trained on other
    # embeddings. FIELDS_ADDED records that old value.
    "reference_resize": "crop",
}


def test_checkpoint_configs_of_the_previous_format_still_resume(tiny_backbone):
    """The resume check (config_diff) finds no difference with files written before the configs
    shared a base (tests/golden/configs/README.md) — except the changes made on purpose
    (:data:`CHANGED_ON_PURPOSE`) and the settings added since (:data:`ADDED_SINCE`), which count with
    their old value: a DualReal / DreamVideo-style run of that version resumes under
    ``reference_resize="crop"``, what it was trained with, and is refused under today's default with
    the field named. The backbone fingerprint is left out: it belongs to the tiny preset's weights,
    not to the config format."""
    from dualreal.engine.config import FIELDS_ADDED

    assert FIELDS_ADDED == ADDED_SINCE
    image_conditioned = {"dualreal", "dualreal-no-joint", "dreamvideo-identity", "dreamvideo-motion"}
    for name, now in _payloads_now(tiny_backbone).items():
        old = json.loads((GOLDEN / f"{name}.json").read_text())
        diff = config_diff(old, now)
        diff.pop("_backbone_fingerprint", None)
        on_purpose = CHANGED_ON_PURPOSE.get(name, {})
        if name in image_conditioned:
            assert diff == {**on_purpose, "reference_resize": ("crop", "stretch")}, name
            diff = config_diff(old, {**now, "reference_resize": "crop"})
            diff.pop("_backbone_fingerprint", None)
        assert diff == on_purpose, f"{name}: {diff}"
        # a checkpoint written with gradient checkpointing on resumes with it off, and back
        flipped = {**now, "gradient_checkpointing": not now.get("gradient_checkpointing")}
        assert "gradient_checkpointing" not in config_diff(now, flipped)
    from dualreal.method import DualRealMethod

    assert DualRealConfig.load(GOLDEN / "dualreal.json") == DualRealMethod(tiny_backbone, reference_resize="crop").config


def test_describe_is_unchanged_so_config_hashes_are_kept(tiny_backbone):
    """``describe()`` of that version is today's minus the fields added since (:data:`ADDED_SINCE`,
    present only in the image-conditioned methods' configs)."""
    from benchmark.registry import create_method

    before = json.loads((GOLDEN / "describe.json").read_text())
    for name, record in before.items():
        now = json.loads(json.dumps(create_method(name, tiny_backbone).describe(), default=str))
        diff = {k: (record.get(k), now.get(k)) for k in sorted({*record, *now}) if record.get(k) != now.get(k)}
        added = {k: (None, "stretch") for k in ADDED_SINCE if name in ("dualreal", "dreamvideo")}
        assert diff == {**DESCRIBE_CHANGED.get(name, {}), **added}, name
