"""LoRA baselines on the shared CogVideoX backbone (docs/BASELINES.md, "LoRA").

peft LoRA on the joint-attention projections ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every
block, rank 128 and ``alpha = rank`` by default (diffusers' CogVideoX LoRA recipe: 132 M trainable
parameters at rank 128 on 5B), trained through the one trainer (:func:`dualreal.engine.trainer.train`).
Three registry variants, one class (:class:`LoRAMethod`, option ``combine``):

``lora`` (``combine="adapters"``)
    An identity LoRA (identity images only, γ = 0) and a motion LoRA (motion clips only, γ = 1),
    trained separately and loaded as two peft adapters of one pipeline, combined with
    ``set_adapters(["identity", "motion"], [w_id, w_mo])``: a true sum ``W + w_id·ΔW_id + w_mo·ΔW_mo``.
``lora-paper-merge`` (``combine="paper-merge"``)
    What the paper's "LoRA" row did: the two LoRAs merged tensor by tensor at 0.5 / 0.5. Averaging A
    and B separately gives ``ΔW = ¼(B₁+B₂)(A₁+A₂)``: each LoRA's own update scaled by ¼ plus the
    cross terms ``B₁A₂ + B₂A₁``. The merged file is saved beside the two LoRAs and loaded as one
    adapter.
``lora-joint`` (``combine="joint"``)
    One LoRA trained on both data with DualReal's sampler (Bernoulli(γ = 0.5) image / clip steps,
    :class:`~dualreal.engine.trainer.CaseBatchSource`) — same data, another parametrisation.

Precision. The LoRA weights train in float32 under bf16 / fp16 mixed precision: peft creates them
in the base layer's dtype, so they are cast to float32 right after injection, as diffusers'
training scripts do (``diffusers.training_utils.cast_training_params``).

Files. Each LoRA is written with diffusers' ``CogVideoXPipeline.save_lora_weights`` (safetensors,
diffusers key format ``transformer.…lora_A.weight``) **with its peft config as adapter metadata**
(``transformer_lora_adapter_metadata``: rank, ``lora_alpha``, target modules), so a stock
``CogVideoXPipeline.load_lora_weights`` applies the trained scale ``alpha / rank`` by itself — no
``set_adapters`` needed. For ``lora`` a third file, ``combined/``, holds the exact weighted sum of
the two LoRAs as one LoRA of rank ``r₁ + r₂`` (A stacked, B concatenated with ``w · alpha / rank``
folded in, ``lora_alpha`` = its rank), so a stock pipeline reproduces the two-adapter sum with
``load_lora_weights`` alone too. Files without metadata (written before dualbench stored it) are
loaded only when the run's ``config.json`` says ``alpha == rank`` — diffusers' assumption for such
files, which is then right; otherwise they are refused (:func:`check_lora_file`). Checkpoint folder::

    identity/  motion/  (or joint/)       pytorch_lora_weights.safetensors, config.json, train_state.json
    paper_merge/                          the key-wise merge (combine="paper-merge")
    combined/                             the exact sum as one LoRA (combine="adapters")

(``paper_merge/`` and ``combined/`` are rebuilt from the trained LoRAs at every fit, never stale.)

``lora`` and ``lora-paper-merge`` train the same two LoRAs (same seed, same data). The runs'
``config.json`` leave out the inference-only options (:data:`INFERENCE_ONLY`) and state each run's
own step count as ``train_steps``, so the two methods may share one folder; the run loop gives each
method its own, so each row can be re-run alone. The peft layers live in a weight-sharing copy of
the backbone's transformer (:func:`~baselines.common.shared_weights_copy`); the shared backbone
never holds a LoRA.

Decisions: learning rate 1e-3, AdamW β (0.9, 0.95), weight decay 1e-4, grad-clip 1.0, cosine with
restarts (1 cycle) and 20 % warm-up — diffusers' CogVideoX LoRA example; 1000 steps per LoRA on a
real backbone (the paper does not give the LoRA row's step count; DualReal's 1000), 3 on ``tiny``;
motion steps take 3 clips (DualReal's batch; 1 on ``tiny``), identity steps 1 image.
``budget="equal"`` (:mod:`baselines.common`) halves the two separate runs (500 + 500 steps: DualReal's
total); the joint run already has DualReal's budget. Evaluation prompts keep the ``*`` token (the
LoRAs were trained on ``"<class> *"``). LoRA weights are initialised with peft's default
(Kaiming-uniform A, zero B) under ``seed``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch

from baselines.cogvideox import generate_with_pipeline
from baselines.common import BaselineConfig, shared_weights_copy
from dualreal.engine.io import atomic_path
from dualreal.engine.protocol import CaseData, CustomizationMethod, GeneratedVideo, GenerationSettings, TrainingRun

__all__ = [
    "TARGET_MODULES",
    "LORA_WEIGHT_NAME",
    "LoRAConfig",
    "LoRAMethod",
    "lora_config",
    "add_lora",
    "lora_shapes",
    "lora_parameter_count",
    "lora_state_dict",
    "save_lora",
    "read_lora",
    "read_lora_metadata",
    "check_lora_file",
    "paper_merge",
    "concat_loras",
    "load_lora_pipeline",
]

#: The joint-attention projections of every CogVideoX block.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
#: diffusers' default LoRA file name (what ``load_lora_weights`` looks for in a folder).
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_COMBINE = ("adapters", "paper-merge", "joint")
#: Options that only change how trained LoRAs are combined at inference (not in run configs).
INFERENCE_ONLY = ("combine", "adapter_weights", "merge_weights")
#: Where diffusers keeps the adapter metadata in a LoRA file's safetensors header
#: (``diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY``), and the transformer's key prefix in it.
_METADATA_KEY = "lora_adapter_metadata"
_PREFIX = "transformer."


# ---------------------------------------------------------------------------------------------
# 1. LoRA tensors: create, save, read, merge, load into a stock pipeline
# ---------------------------------------------------------------------------------------------


def lora_config(rank: int, alpha: float, target_modules: Sequence[str] = TARGET_MODULES):
    """The peft ``LoraConfig`` of one LoRA — what :func:`add_lora` injects and what every file
    carries as adapter metadata (so a stock loader rebuilds the same layers and scale)."""
    from peft import LoraConfig

    return LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=list(target_modules), init_lora_weights=True)


@contextlib.contextmanager
def _second_adapter_intended():
    """Silence peft's "Already found a `peft_config` attribute" warning: the identity and motion
    LoRAs are two adapters on one transformer by design (``peft/tuners/tuners_utils.py``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        yield


def add_lora(
    transformer: Any,
    adapter_name: str,
    *,
    rank: int,
    alpha: float,
    target_modules: tuple[str, ...] = TARGET_MODULES,
    seed: int = 42,
) -> list[torch.nn.Parameter]:
    """Inject a peft LoRA adapter named ``adapter_name``, make it the active one, and cast its
    weights to float32.

    peft creates LoRA weights in the base layer's dtype (bfloat16 beside a bf16 backbone); trained
    like that, every optimiser update is rounded to bf16. They are cast to float32 after injection,
    as diffusers' training scripts do (``cast_training_params``); mixed precision then computes in
    bf16 while the weights and AdamW states stay float32.

    Args:
        transformer: a weight-sharing copy of the backbone's transformer (its own parameters frozen).

    Returns:
        The adapter's parameters, float32, ``requires_grad=True``; every other parameter of
        ``transformer`` is left as it was.

    Raises:
        RuntimeError: peft injected nothing, or a parameter outside the adapter requires gradients
            (casting it would rewrite a weight the copy shares with the backbone).
    """
    config = lora_config(rank, alpha, target_modules)
    with torch.random.fork_rng(devices=[]), _second_adapter_intended():
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=adapter_name)
    transformer.set_adapters([adapter_name])
    marker = f".{adapter_name}."
    params = [p for n, p in transformer.named_parameters() if "lora_" in n and marker in n]
    if not params:
        raise RuntimeError(f"peft injected no LoRA layers for targets {target_modules}")
    mine = {id(p) for p in params}
    others = [n for n, p in transformer.named_parameters() if p.requires_grad and id(p) not in mine]
    if others:
        raise RuntimeError(f"parameters outside the LoRA adapter require gradients: {others[:3]}")
    for p in params:
        p.requires_grad_(True)
        p.data = p.data.to(torch.float32)  # = diffusers.training_utils.cast_training_params on these
    return params


def lora_shapes(transformer: Any, rank: int, target_modules: Sequence[str] = TARGET_MODULES) -> dict[str, tuple[int, int]]:
    """The tensors a LoRA file of ``transformer`` holds, in diffusers' key format: per targeted
    ``nn.Linear`` ``name`` (peft's matching: a module whose name is a target or ends with
    ``"." + target``), ``transformer.<name>.lora_A.weight`` ``(rank, in)`` and
    ``….lora_B.weight`` ``(out, rank)`` (no LoRA biases).

    Args:
        transformer: a transformer without LoRA layers (the backbone's).
    """
    out = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in target_modules):
            out[f"{_PREFIX}{name}.lora_A.weight"] = (int(rank), module.in_features)
            out[f"{_PREFIX}{name}.lora_B.weight"] = (module.out_features, int(rank))
    return out


def lora_parameter_count(transformer: Any, rank: int, target_modules: Sequence[str] = TARGET_MODULES) -> int:
    """Parameters of one LoRA on ``transformer``: ``rank · (in + out)`` per targeted ``nn.Linear``
    (:func:`lora_shapes`)."""
    return sum(a * b for a, b in lora_shapes(transformer, rank, target_modules).values())


def lora_state_dict(transformer: Any, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's key format (``transformer_blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer, adapter_name=adapter_name).items()}


def save_lora(
    folder: str | Path,
    state_dict: Mapping[str, torch.Tensor],
    *,
    rank: int,
    alpha: float,
    target_modules: Sequence[str] = TARGET_MODULES,
) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` with diffusers' CogVideoX LoRA writer and
    the LoRA's peft config (:func:`lora_config`) as adapter metadata, atomically
    (:func:`dualreal.engine.io.atomic_path`: a reader never sees half a file).

    Args:
        state_dict: peft key format (from :func:`lora_state_dict`) or already prefixed with ``transformer.``.
        rank, alpha, target_modules: what the file's metadata states; a stock ``load_lora_weights``
            then scales the update by ``alpha / rank``.

    Returns:
        The written file.
    """
    from diffusers import CogVideoXPipeline

    path = Path(folder) / LORA_WEIGHT_NAME
    sd = {k.removeprefix(_PREFIX): v for k, v in state_dict.items()}
    metadata = lora_config(rank, alpha, target_modules).to_dict()
    with atomic_path(path) as tmp:
        CogVideoXPipeline.save_lora_weights(
            str(tmp.parent), transformer_lora_layers=sd, weight_name=tmp.name, safe_serialization=True,
            transformer_lora_adapter_metadata=metadata,
        )
    return path


def read_lora(folder: str | Path, transformer: Any | None = None) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/pytorch_lora_weights.safetensors`` (diffusers keys, ``transformer.`` prefix).

    Args:
        transformer: when given (the backbone's, without LoRA layers), the file must hold exactly
            the LoRA its metadata describes on it (:func:`lora_shapes` with the metadata's ``r`` and
            ``target_modules``; a file without metadata: the rank of its tensors and
            :data:`TARGET_MODULES`) — diffusers' ``load_lora_weights`` would only warn about a
            missing ``lora_B`` and leave that layer as initialised.

    Raises:
        dualreal.engine.trainer.CheckpointError: a truncated or foreign file, or (with
            ``transformer``) keys missing or unexpected, tensors of another shape — file and keys named.
    """
    from dualreal.engine.trainer import read_checkpoint

    path = Path(folder) / LORA_WEIGHT_NAME
    if transformer is None:
        return read_checkpoint(path)
    meta = read_lora_metadata(folder) or {}
    rank = meta.get("r")
    if rank is None:  # no metadata: the rank the tensors have (their keys and other dims still checked)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            ranks = [f.get_slice(k).get_shape()[0 if ".lora_A." in k else 1] for k in f.keys() if ".lora_" in k]
        rank = ranks[0] if ranks else 0
    targets = meta.get("target_modules") or TARGET_MODULES
    return read_checkpoint(path, lora_shapes(transformer, int(rank), targets))


def read_lora_metadata(folder: str | Path) -> dict[str, Any] | None:
    """The transformer's peft config stored in the file's header (``r``, ``lora_alpha``, …), or
    ``None`` for a file written without adapter metadata."""
    from safetensors import safe_open

    from dualreal.engine.trainer import read_checkpoint

    path = Path(folder) / LORA_WEIGHT_NAME
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get(_METADATA_KEY)
    except Exception:  # noqa: BLE001 - unreadable: read_checkpoint raises the one error naming the file
        read_checkpoint(path)
        raise
    if not raw:
        return None
    packed = json.loads(raw)
    return {k.removeprefix(_PREFIX): v for k, v in packed.items() if k.startswith(_PREFIX)} or None


def check_lora_file(folder: str | Path, *, rank: int, alpha: float) -> str:
    """Check that a stock ``load_lora_weights`` will apply the trained scale ``alpha / rank``.

    Returns:
        ``"metadata"`` (the file states rank and alpha, and they match) or ``"alpha=rank"`` (a file
        without metadata, written before dualbench stored it, from a run with ``alpha == rank``:
        diffusers then assumes ``alpha = rank``, which is right).

    Raises:
        ValueError: the file's rank / alpha differ from the run's, or a file without metadata from a
            run with ``alpha != rank`` (a stock loader would apply scale 1 instead of ``alpha / rank``;
            retrain by deleting the run folder).
    """
    meta = read_lora_metadata(folder)
    path = Path(folder) / LORA_WEIGHT_NAME
    if meta is None:
        if float(alpha) == float(rank):
            return "alpha=rank"
        raise ValueError(
            f"{path} carries no lora_alpha metadata (written before dualbench stored it) but was trained "
            f"with alpha/rank = {alpha}/{rank}; a stock load_lora_weights would apply scale 1. Delete "
            f"{Path(folder).parent} to retrain with the current version"
        )
    if int(meta.get("r", -1)) != int(rank) or float(meta.get("lora_alpha", -1)) != float(alpha):
        raise ValueError(
            f"{path}: metadata says rank {meta.get('r')}, alpha {meta.get('lora_alpha')}; the run's config "
            f"says rank {rank}, alpha {alpha}"
        )
    return "metadata"


def paper_merge(
    first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor], weights: tuple[float, float] = (0.5, 0.5)
) -> dict[str, torch.Tensor]:
    """The paper's key-wise merge: ``w₁·T₁ + w₂·T₂`` for every tensor, A and B alike.

    For one layer this gives ``ΔW = (w₁B₁ + w₂B₂)(w₁A₁ + w₂A₂)`` — not ``w₁B₁A₁ + w₂B₂A₂``.

    Raises:
        ValueError: the two LoRAs do not have the same keys and shapes.
    """
    if set(first) != set(second):
        raise ValueError(f"LoRAs differ in keys: {sorted(set(first) ^ set(second))[:4]}")
    out = {}
    for k in first:
        if first[k].shape != second[k].shape:
            raise ValueError(f"{k}: shapes {tuple(first[k].shape)} and {tuple(second[k].shape)} differ")
        out[k] = (weights[0] * first[k].float() + weights[1] * second[k].float()).to(first[k].dtype)
    return out


def concat_loras(loras: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """The exact weighted sum ``Σ cᵢ · BᵢAᵢ`` of LoRAs as one LoRA: ``A = [A₁; A₂; …]`` (ranks
    stacked), ``B = [c₁B₁, c₂B₂, …]`` (columns concatenated), so ``BA = Σ cᵢBᵢAᵢ``; save it with
    ``alpha = rank = Σ rᵢ`` (scale 1). ``cᵢ`` is the user weight times the LoRA's ``alpha / rank``.

    Args:
        loras: ``(tensors, c)`` pairs, the tensors with identical keys (``….lora_A.weight`` /
            ``….lora_B.weight``, no LoRA biases).

    Raises:
        ValueError: keys differ, or a key that is neither ``lora_A`` nor ``lora_B``.
    """
    keys = set(loras[0][0])
    if any(set(sd) != keys for sd, _ in loras):
        raise ValueError("LoRAs to concatenate differ in keys")
    out = {}
    for k in sorted(keys):
        if ".lora_A." in k:
            out[k] = torch.cat([sd[k].float() for sd, _ in loras], dim=0)
        elif ".lora_B." in k:
            out[k] = torch.cat([c * sd[k].float() for sd, c in loras], dim=1)
        else:
            raise ValueError(f"{k}: only lora_A / lora_B weights can be concatenated")
    return out


def load_lora_pipeline(backbone: Any, adapters: Mapping[str, str | Path], weights: Mapping[str, float]):
    """A stock ``CogVideoXPipeline`` over a weight-sharing copy of the backbone's transformer with
    the LoRA folders ``adapters`` loaded by ``load_lora_weights`` (each file's metadata gives its
    scale ``alpha / rank``) and combined by ``set_adapters``.

    Args:
        adapters: adapter name → folder holding ``pytorch_lora_weights.safetensors``.
        weights: adapter name → user weight ``w`` (the update is ``w · alpha / rank · BA``).

    Returns:
        The pipeline; ``pipe.transformer`` holds the peft layers, the backbone's transformer none.

    Raises:
        dualreal.engine.trainer.CheckpointError: a file that is not the whole LoRA (:func:`read_lora`).
    """
    pipe = backbone.pipeline(transformer=shared_weights_copy(backbone.transformer))
    names = list(adapters)
    for name in names:
        read_lora(adapters[name], backbone.transformer)  # strict: the whole LoRA or one error naming file and keys
        with _second_adapter_intended():
            pipe.load_lora_weights(str(adapters[name]), weight_name=LORA_WEIGHT_NAME, adapter_name=name,
                                   use_safetensors=True)
    pipe.set_adapters(names, [float(weights[n]) for n in names])
    return pipe


# ---------------------------------------------------------------------------------------------
# 2. Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class LoRAConfig(BaselineConfig):
    """LoRA baseline options; the training fields and their defaults (the paper's optimiser, 1000
    steps per LoRA, 3 clips per motion step; 3 steps × 1 clip on ``tiny``) are
    :class:`~dualreal.engine.config.TrainingConfig`'s, unchanged.

    Attributes:
        rank: LoRA rank ``r`` (128).
        alpha: ``lora_alpha`` (``None`` → ``rank``); the update is scaled by ``alpha / rank``.
        target_modules: module-name suffixes that get LoRA (the four attention projections).
        combine: ``adapters`` (``lora``), ``paper-merge`` (``lora-paper-merge``) or ``joint``
            (``lora-joint``); see the module docstring.
        adapter_weights: ``(w_id, w_mo)`` for ``set_adapters`` with ``combine="adapters"`` (1, 1).
        merge_weights: key-wise merge coefficients with ``combine="paper-merge"`` (0.5, 0.5).
        motion_ratio: ``γ`` of the joint run's Bernoulli image / clip sampler (0.5).
        identity_steps, motion_steps: steps of the two separate runs (``None``: ``train_steps``
            each; with ``budget="equal"`` the two halves of DualReal's total).
        budget: ``original`` or ``equal`` (:mod:`baselines.common`).
    """

    # budget="equal" splits DualReal's total over the two runs (baselines/common.py)
    EQUAL_BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("identity_steps", "motion_steps", "motion_batch_size", "identity_batch_size")

    rank: int = 128
    alpha: float | None = None
    target_modules: tuple[str, ...] = TARGET_MODULES
    combine: str = "adapters"
    adapter_weights: tuple[float, float] = (1.0, 1.0)
    merge_weights: tuple[float, float] = (0.5, 0.5)
    motion_ratio: float = 0.5
    identity_steps: int | None = None
    motion_steps: int | None = None

    def validate(self) -> None:
        super().validate()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.combine not in _COMBINE:
            raise ValueError(f"combine must be one of {_COMBINE}, got {self.combine!r}")
        if len(self.adapter_weights) != 2 or len(self.merge_weights) != 2:
            raise ValueError("adapter_weights and merge_weights are pairs (identity, motion)")
        if not 0.0 <= self.motion_ratio <= 1.0:
            raise ValueError(f"motion_ratio must be in [0, 1], got {self.motion_ratio}")
        for name in ("identity_steps", "motion_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def resolve(self, backbone: Any) -> LoRAConfig:
        """The engine's resolution, plus each separate run's steps (``budget`` decides them)."""
        out = super().resolve(backbone)
        if self.budget == "equal":
            eq = self.equal_budget(backbone)
            return dataclasses.replace(
                out, train_steps=eq.total_steps, identity_steps=eq.identity_steps, motion_steps=eq.motion_steps,
                identity_batch_size=eq.identity_batch, motion_batch_size=eq.motion_batch,
            )
        return dataclasses.replace(
            out, identity_steps=self.identity_steps or out.train_steps, motion_steps=self.motion_steps or out.train_steps
        )

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    @property
    def scale(self) -> float:
        """``alpha / rank``: the factor the trained update is applied with (stated in every file)."""
        return self.lora_alpha / self.rank

    def runs(self) -> list[tuple[str, float, int]]:
        """``(run name, γ, steps)`` of each training run (config resolved)."""
        if self.combine == "joint":
            return [("joint", self.motion_ratio, int(self.train_steps))]
        return [("identity", 0.0, int(self.identity_steps)), ("motion", 1.0, int(self.motion_steps))]


# ---------------------------------------------------------------------------------------------
# 3. The method
# ---------------------------------------------------------------------------------------------


class LoRAMethod(CustomizationMethod):
    """LoRA baselines (``lora``, ``lora-paper-merge``, ``lora-joint``); see the module docstring.

    Args:
        backbone: a :class:`~dualreal.engine.backbone.Backbone`.
        **options: :class:`LoRAConfig` fields (unknown keys are an error); resolved into :attr:`config`.
    """

    name = "lora"
    trainable = True
    config_class = LoRAConfig
    config: LoRAConfig

    def __init__(self, backbone: Any, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.pipe = None
        self.last_fit: dict[str, Any] = {}

    def run_config(self, run: str) -> dict[str, Any]:
        """``config.json`` of one training run: the resolved training fields without
        :data:`INFERENCE_ONLY` and the per-run step fields, with ``train_steps`` = this run's steps,
        the run name and the backbone."""
        steps = {name: n for name, _, n in self.config.runs()}[run]
        out = self.checkpoint_config(exclude=(*INFERENCE_ONLY, "identity_steps", "motion_steps", "budget"), _run=run)
        out["train_steps"] = steps
        return out

    def training_budget(self) -> list[TrainingRun]:
        """One :class:`~dualreal.engine.protocol.TrainingRun` per LoRA (``joint``: one)."""
        cfg = self.config
        n = lora_parameter_count(self.backbone.transformer, cfg.rank, cfg.target_modules)
        return [
            TrainingRun.from_schedule(run, steps=steps, motion_ratio=ratio, images_per_step=cfg.identity_batch_size,
                         clips_per_step=cfg.motion_batch_size, learning_rate=cfg.learning_rate, trainable_parameters=n)
            for run, ratio, steps in cfg.runs()
        ]

    # ------------------------------------------------------------------ training
    def _train_run(self, run: str, ratio: float, steps: int, encoded: Any, folder: Path, progress: Any | None) -> Any:
        from dualreal.engine.trainer import CaseBatchSource, train

        cfg = self.config
        model = shared_weights_copy(self.backbone.transformer)
        params = add_lora(model, run, rank=cfg.rank, alpha=cfg.lora_alpha, target_modules=cfg.target_modules, seed=cfg.seed)
        source = CaseBatchSource(
            encoded,
            motion_ratio=ratio,
            motion_batch_size=cfg.motion_batch_size,
            identity_batch_size=cfg.identity_batch_size,
            condition=False,
        )
        return train(
            model,
            {"lora": params},
            source,
            noise_scheduler=self.backbone.scheduler,
            config=cfg.trainer_config(f"lora-{run}", train_steps=steps),
            workdir=folder,
            checkpoint_config=self.run_config(run),
            save_fn=lambda m, f: save_lora(
                f, lora_state_dict(m, run), rank=cfg.rank, alpha=cfg.lora_alpha, target_modules=cfg.target_modules
            ),
            load_fn=lambda m, f: None,  # inference always reloads the files with a stock pipeline
            progress=progress,
        )

    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:
        """Train the LoRA(s) of ``case`` into ``workdir``; finished runs are loaded, not retrained.

        Raises:
            ValueError: a run folder trained with another configuration, a LoRA file whose scale a
                stock loader would get wrong (:func:`check_lora_file`), or bad data.
            dualreal.engine.trainer.CheckpointError: a run's LoRA file (trained now or finished
                earlier) that is truncated or not the whole LoRA (:func:`read_lora`).
        """
        from dualreal.engine.trainer import encode_case, load_finished

        cfg = self.config
        workdir = Path(workdir)
        encoded = None
        status = {}
        for run, ratio, steps in cfg.runs():
            folder = workdir / run
            # a finished run's LoRA file is checked strictly before any merge reads it
            done = load_finished(folder, torch.nn.Module(), checkpoint_config=self.run_config(run),
                                 load_fn=lambda m, f: read_lora(f, self.backbone.transformer))
            if done is None:
                if encoded is None:
                    encoded = encode_case(self.backbone, case, num_frames=cfg.train_frames)
                done = self._train_run(run, ratio, steps, encoded, folder, progress)
            status[run] = {"resumed": done.resumed, "steps": done.steps,
                           "file": check_lora_file(folder, rank=cfg.rank, alpha=cfg.lora_alpha)}
        self.pipe = self._inference_pipeline(workdir)
        self.last_fit = status

    def _inference_pipeline(self, workdir: Path):
        cfg = self.config
        save = dict(rank=cfg.rank, alpha=cfg.lora_alpha, target_modules=cfg.target_modules)
        if cfg.combine == "joint":
            return load_lora_pipeline(self.backbone, {"joint": workdir / "joint"}, {"joint": 1.0})
        identity, motion = read_lora(workdir / "identity"), read_lora(workdir / "motion")
        if cfg.combine == "paper-merge":
            merged = workdir / "paper_merge"
            # derived from the two runs and merge_weights: rebuilt at every fit (cheap), never stale
            save_lora(merged, paper_merge(identity, motion, cfg.merge_weights), **save)
            return load_lora_pipeline(self.backbone, {"paper_merge": merged}, {"paper_merge": 1.0})
        w_id, w_mo = cfg.adapter_weights
        # the same sum as one LoRA, for a stock pipeline with load_lora_weights alone (rebuilt every fit)
        summed = concat_loras([(identity, w_id * cfg.scale), (motion, w_mo * cfg.scale)])
        save_lora(workdir / "combined", summed, rank=2 * cfg.rank, alpha=2 * cfg.rank, target_modules=cfg.target_modules)
        return load_lora_pipeline(
            self.backbone,
            {"identity": workdir / "identity", "motion": workdir / "motion"},
            {"identity": w_id, "motion": w_mo},
        )

    # ------------------------------------------------------------------ inference
    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        """One video; the prompt keeps its ``*`` token.

        Raises:
            RuntimeError: :meth:`fit` was not called.
        """
        self.check_fitted(self.pipe)
        frames = generate_with_pipeline(self.pipe, self.backbone, prompt, seed, settings)
        cfg = self.config
        return GeneratedVideo(
            frames=frames,
            fps=settings.fps,
            extras={"lora": {"combine": cfg.combine, "rank": cfg.rank, "alpha": cfg.lora_alpha, "adapters": self.pipe.get_active_adapters()}},
        )
