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

Files. Each LoRA is written with diffusers' ``CogVideoXPipeline.save_lora_weights`` (safetensors,
diffusers key format ``transformer.…lora_A.weight``) and read back for inference by a **stock**
``CogVideoXPipeline.load_lora_weights`` with ``use_safetensors=True`` (no pickle fallback). The files
carry no alpha (diffusers then assumes ``alpha = rank``), so the training scale ``alpha / rank`` is
passed through ``set_adapters`` weights; rank and alpha are in ``config.json``. Checkpoint folder::

    identity/  motion/  (or joint/)       pytorch_lora_weights.safetensors, config.json, train_state.json
    paper_merge/                          pytorch_lora_weights.safetensors (combine="paper-merge";
                                          rebuilt from the two LoRAs at every fit)

``lora`` and ``lora-paper-merge`` train the same two LoRAs (same seed, same data). The runs'
``config.json`` leave out the inference-only options (:data:`INFERENCE_ONLY`), so the two methods may
share one folder; the run loop gives each method its own, so each row can be re-run alone. The peft
layers live in a weight-sharing copy of the backbone's transformer
(:func:`~baselines.common.shared_weights_copy`); the shared backbone never holds a LoRA.

Decisions: learning rate 1e-3, AdamW β (0.9, 0.95), weight decay 1e-4, grad-clip 1.0, cosine with
restarts (1 cycle) and 20 % warm-up — diffusers' CogVideoX LoRA example; 1000 steps per LoRA on a
real backbone (the paper does not give the LoRA row's step count; DualReal's 1000), 3 on ``tiny``;
motion steps take 3 clips (DualReal's batch; 1 on ``tiny``), identity steps 1 image.
Evaluation prompts keep the ``*`` token (the LoRAs were trained on ``"<class> *"``). LoRA weights
are initialised with peft's default (Kaiming-uniform A, zero B) under ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from baselines.cogvideox import generate_with_pipeline
from baselines.common import shared_weights_copy
from dualreal.engine.config import TrainingConfig
from dualreal.engine.io import atomic_path
from dualreal.engine.protocol import CaseData, CustomizationMethod, GeneratedVideo, GenerationSettings

__all__ = [
    "TARGET_MODULES",
    "LORA_WEIGHT_NAME",
    "LoRAConfig",
    "LoRAMethod",
    "add_lora",
    "lora_state_dict",
    "save_lora",
    "read_lora",
    "paper_merge",
    "load_lora_pipeline",
]

#: The joint-attention projections of every CogVideoX block.
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
#: diffusers' default LoRA file name (what ``load_lora_weights`` looks for in a folder).
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_COMBINE = ("adapters", "paper-merge", "joint")
#: Options that only change how trained LoRAs are combined at inference (not in run configs).
INFERENCE_ONLY = ("combine", "adapter_weights", "merge_weights")


# ---------------------------------------------------------------------------------------------
# 1. LoRA tensors: create, save, read, merge, load into a stock pipeline
# ---------------------------------------------------------------------------------------------


def add_lora(
    transformer: Any,
    adapter_name: str,
    *,
    rank: int,
    alpha: float,
    target_modules: tuple[str, ...] = TARGET_MODULES,
    seed: int = 42,
) -> list[torch.nn.Parameter]:
    """Inject a peft LoRA adapter named ``adapter_name`` and make it the active one.

    Returns:
        The adapter's parameters (float32: peft keeps adapter weights in float32 beside a bf16 base),
        with ``requires_grad=True``; every other parameter of ``transformer`` is left as it was.
    """
    from peft import LoraConfig

    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=list(target_modules), init_lora_weights=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer.add_adapter(config, adapter_name=adapter_name)
    transformer.set_adapters([adapter_name])
    marker = f".{adapter_name}."
    params = [p for n, p in transformer.named_parameters() if "lora_" in n and marker in n]
    if not params:
        raise RuntimeError(f"peft injected no LoRA layers for targets {target_modules}")
    for p in params:
        p.requires_grad_(True)
    return params


def lora_state_dict(transformer: Any, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's key format (``transformer_blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer, adapter_name=adapter_name).items()}


def save_lora(folder: str | Path, state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` with diffusers' CogVideoX LoRA writer,
    atomically (:func:`dualreal.engine.io.atomic_path`: a reader never sees half a file).

    ``state_dict`` in peft's key format (from :func:`lora_state_dict`) or already prefixed with
    ``transformer.``. No alpha is stored (see the module docstring).

    Returns:
        The written file.
    """
    from diffusers import CogVideoXPipeline

    path = Path(folder) / LORA_WEIGHT_NAME
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        CogVideoXPipeline.save_lora_weights(
            str(tmp.parent), transformer_lora_layers=sd, weight_name=tmp.name, safe_serialization=True
        )
    return path


def read_lora(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``folder/pytorch_lora_weights.safetensors`` (diffusers keys, ``transformer.`` prefix)."""
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / LORA_WEIGHT_NAME))


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


def load_lora_pipeline(
    backbone: Any,
    adapters: Mapping[str, str | Path],
    weights: Mapping[str, float],
    *,
    scale: float = 1.0,
):
    """A stock ``CogVideoXPipeline`` over a weight-sharing copy of the backbone's transformer with
    the LoRA folders ``adapters`` loaded by ``load_lora_weights`` and combined by ``set_adapters``.

    Args:
        adapters: adapter name → folder holding ``pytorch_lora_weights.safetensors``.
        weights: adapter name → user weight ``w``.
        scale: ``alpha / rank`` of the training run, multiplied into every weight (files carry no alpha).

    Returns:
        The pipeline; ``pipe.transformer`` holds the peft layers, the backbone's transformer none.
    """
    pipe = backbone.pipeline(transformer=shared_weights_copy(backbone.transformer))
    names = list(adapters)
    for name in names:
        pipe.load_lora_weights(str(adapters[name]), weight_name=LORA_WEIGHT_NAME, adapter_name=name, use_safetensors=True)
    pipe.set_adapters(names, [float(weights[n]) * scale for n in names])
    return pipe


# ---------------------------------------------------------------------------------------------
# 2. Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class LoRAConfig(TrainingConfig):
    """LoRA baseline options; the training fields and their defaults (the paper's optimiser, 1000
    steps, 3 clips per motion step; 3 steps × 1 clip on ``tiny``) are
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
    """

    rank: int = 128
    alpha: float | None = None
    target_modules: tuple[str, ...] = TARGET_MODULES
    combine: str = "adapters"
    adapter_weights: tuple[float, float] = (1.0, 1.0)
    merge_weights: tuple[float, float] = (0.5, 0.5)
    motion_ratio: float = 0.5

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

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)

    @property
    def scale(self) -> float:
        """``alpha / rank``: the factor ``set_adapters`` must apply to files that carry no alpha."""
        return self.lora_alpha / self.rank

    def runs(self) -> list[tuple[str, float]]:
        """``(run name, γ)`` of each training run."""
        if self.combine == "joint":
            return [("joint", self.motion_ratio)]
        return [("identity", 0.0), ("motion", 1.0)]


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
        """``config.json`` of one training run: the resolved training fields (without
        :data:`INFERENCE_ONLY`), the run name and the backbone."""
        return self.checkpoint_config(exclude=INFERENCE_ONLY, _run=run)

    # ------------------------------------------------------------------ training
    def _train_run(self, run: str, ratio: float, encoded: Any, folder: Path, progress: Any | None) -> Any:
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
            config=cfg.trainer_config(f"lora-{run}"),
            workdir=folder,
            checkpoint_config=self.run_config(run),
            save_fn=lambda m, f: save_lora(f, lora_state_dict(m, run)),
            load_fn=lambda m, f: None,  # inference always reloads the files with a stock pipeline
            progress=progress,
        )

    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:
        """Train the LoRA(s) of ``case`` into ``workdir``; finished runs are loaded, not retrained.

        Raises:
            ValueError: a run folder trained with another configuration, or bad data.
        """
        from dualreal.engine.trainer import encode_case, load_finished

        cfg = self.config
        workdir = Path(workdir)
        encoded = None
        status = {}
        for run, ratio in cfg.runs():
            folder = workdir / run
            done = load_finished(folder, torch.nn.Module(), checkpoint_config=self.run_config(run), load_fn=lambda m, f: None)
            if done is None:
                if encoded is None:
                    encoded = encode_case(self.backbone, case, num_frames=cfg.train_frames)
                done = self._train_run(run, ratio, encoded, folder, progress)
            status[run] = {"resumed": done.resumed, "steps": done.steps}
        self.pipe = self._inference_pipeline(workdir)
        self.last_fit = status

    def _inference_pipeline(self, workdir: Path):
        cfg = self.config
        if cfg.combine == "joint":
            return load_lora_pipeline(self.backbone, {"joint": workdir / "joint"}, {"joint": 1.0}, scale=cfg.scale)
        if cfg.combine == "paper-merge":
            merged = workdir / "paper_merge"
            # derived from the two runs and merge_weights: rebuilt at every fit (cheap), never stale
            tensors = paper_merge(read_lora(workdir / "identity"), read_lora(workdir / "motion"), cfg.merge_weights)
            save_lora(merged, tensors)
            return load_lora_pipeline(self.backbone, {"paper_merge": merged}, {"paper_merge": 1.0}, scale=cfg.scale)
        w_id, w_mo = cfg.adapter_weights
        return load_lora_pipeline(
            self.backbone,
            {"identity": workdir / "identity", "motion": workdir / "motion"},
            {"identity": w_id, "motion": w_mo},
            scale=cfg.scale,
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
