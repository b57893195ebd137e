"""DreamVideo-style customisation (Wei et al., CVPR 2024) on the shared CogVideoX backbone.

The isolated paradigm DualReal argues against (docs/BASELINES.md, "DreamVideo-style"): an identity
adapter and a motion adapter trained in two separate runs, combined only at inference.

What is reused. The adapters are DualReal's :class:`~dualreal.adapters.DualRealAdapters` attached
to the stock transformer by :class:`~dualreal.adapters.DualRealModel` (hooks, no fork), with a
different geometry; the fusion weights are a :class:`~dualreal.controller.FixedFusionWeights`
(1.0 / 1.0); training is :func:`dualreal.engine.trainer.train` on a
:class:`~dualreal.engine.trainer.CaseBatchSource`; inference is :class:`~dualreal.pipeline.DualRealPipeline`.
With DualReal's adapter geometry this is the "w/o Dual-aware Adaptation" ablation.

Adapting the UNet method to the DiT (each choice is an option of :class:`DreamVideoConfig`):

* **Identity adapter** — bottleneck ``d = C/2`` (``bottleneck="half"``; 1536 at 5B), GELU,
  zero-initialised up-projection, no condition, beside the joint attention of every block only
  (``identity_ff=False``). DreamVideo puts it in the spatial cross-attention of the UNet; a
  CogVideoX block has one joint attention and no cross-attention, so it goes beside that.
  Trained on the identity images only (γ = 0), lr 1e-5, 1000 steps, **4 images per step** (VGen
  ``subjectLearning/dog2_subjectLearning_step2.yaml``: ``batch_sizes: {"1": 4}``, ``num_steps:
  1000``; fewer when the identity has fewer images — VGen's loader never repeats an image within a
  batch). The original first learns a textual-inversion token (3000 steps, lr 1e-4); here the
  literal ``*`` of ``"<class> *"`` is used. The original's optional masked loss is not used.
* **Motion adapter** — same bottleneck with a condition linear ``W_cond`` on the reference-image
  embedding (OpenCLIP ViT-H-14, 1024-d, from :mod:`dualreal.engine.image_encoder`) of a random frame of
  the training clip, drawn afresh every step, beside attention *and* feed-forward of every block
  (DreamVideo: beside the temporal transformer layers; a DiT has no separate temporal layers).
  Trained on the motion clips only (γ = 1), lr 1e-5, with 50 % text dropout (empty prompt). The
  benchmark's motions are UCF-101 clip sets captioned ``"a person is <verb>"``, exactly VGen's
  ``motionLearning/playingGuitar_motionLearning.yaml``, so that configuration is used rather than the
  single-video ``carTurn`` one: 1000 steps, **2 clips per step**, no image-embedding dropout
  (``p_image_zero: 0``), no image condition in the unconditional branch at inference (carTurn: 3000
  steps, 1 clip, ``p_image_zero: 0.5``, condition in both branches — set ``motion_steps=3000,
  motion_batch_size=1, image_dropout=0.5, uncond_condition="same"`` to use it).
* **Neutral at initialisation** — ``residual_in_adapter=False``: the adapter output is
  ``W_up · GELU(W_down · (x + W_cond c))`` added to the branch output before the block's gate
  (DualReal's hook point), so with ``W_up = 0`` the model is exactly the base model, as DreamVideo's
  zero-initialised adapters are. (DualReal's released adapters keep a skip term; not here.)
* **Inference** — both adapters on at full strength (weights 1.0 / 1.0); the conditional branch
  gets the identity reference image's embedding, the unconditional branch zeros
  (``uncond_condition="zeros"``).
* **Noise offset** — the original trains with noise offset 0.1; dropped (CogVideoX uses zero
  terminal SNR, where an offset makes no sense).
* **Optimiser** — AdamW β (0.9, 0.95), weight decay 1e-4, grad-clip 1.0 (DualReal's), constant
  learning rate without warm-up.
* **Size at 5B** (C = 3072, d = 1536, e = 1024): identity adapters 396.6 M parameters, motion
  adapters 1 057.6 M (each: down + up 9.44 M, ``W_cond`` 3.15 M; two per block) — far more than
  DualReal's d = 64 adapters, as DreamVideo's half-width bottleneck implies.
* On the ``tiny`` preset each run takes 3 steps (a smoke test). ``train_steps`` (``dualbench run
  --train-steps N``) sets both runs to ``N``.
* ``budget="equal"`` (:mod:`baselines.common`): DualReal's budget split over the two runs — 500
  identity steps × 1 image and 500 motion steps × 3 clips on a real backbone.
* Precision: the adapters are float32 parameters (they train in float32 under bf16 mixed
  precision).

Checkpoint folder: ``identity/`` and ``motion/``, each ``weights.safetensors`` (its adapters only),
``config.json`` and ``train_state.json``; each run resumes on its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from baselines.common import BaselineConfig, count_parameters
from dualreal.engine.config import ImageConditionedConfig, is_tiny
from dualreal.engine.image_encoder import ImageConditionedMethod
from dualreal.engine.protocol import CaseData, GeneratedVideo, GenerationSettings, TrainingRun

__all__ = ["DreamVideoConfig", "DreamVideoMethod", "DropoutBatchSource", "build_dreamvideo_model"]


@dataclass
class DreamVideoConfig(ImageConditionedConfig, BaselineConfig):
    """DreamVideo-style options (see the module docstring for the reasons).

    The training, image-encoder and guidance-condition fields are
    :class:`~dualreal.engine.config.ImageConditionedConfig`'s; the values that differ from the
    engine's defaults are re-declared below with their source (VGen ``configs/dreamvideo/``, the
    files named in the module docstring).

    Attributes:
        bottleneck: ``"half"`` (``C/2``) or an int ``d`` for both adapters.
        identity_ff: identity adapter beside the feed-forward network too (False: attention only).
        residual_in_adapter: keep a skip term inside the adapters (False: neutral at init).
        condition_scale: ``λ`` of the motion adapter's condition term (1.0).
        identity_steps, motion_steps: steps of the two runs (``None`` → ``PAPER_STEPS`` = 1000 each,
            or ``TINY_STEPS`` = 3 on ``tiny``; ``budget="equal"``: the two halves of DualReal's
            total); ``train_steps`` overrides both (with ``budget="equal"``: sets the total).
        text_dropout, image_dropout: per-sample dropout of the prompt (empty prompt) and of the image
            condition (zeros) in motion training (0.5, 0).
        weights: ``(w_id, w_mo)`` at inference (1.0, 1.0).
        budget: ``original`` or ``equal`` (:mod:`baselines.common`).
    """

    # budget="equal" gives both runs DualReal's budget (baselines/common.py)
    EQUAL_BUDGET_FIELDS: ClassVar[tuple[str, ...]] = ("identity_steps", "motion_steps", "identity_batch_size", "motion_batch_size")
    # VGen DreamVideo configs: ``decay_mode: 'none'`` (constant learning rate, no warm-up).
    WARMUP_FRACTION: ClassVar[float] = 0.0
    # VGen playingGuitar_motionLearning.yaml:61-63 ``batch_sizes: {"32": 2}``: 2 clips per motion step.
    PAPER_MOTION_BATCH: ClassVar[int] = 2

    # VGen dog2_subjectLearning_step2.yaml:95 and playingGuitar_motionLearning.yaml:88 ``lr: 0.00001``.
    learning_rate: float = 1e-5
    lr_scheduler: str = "constant"  # VGen DreamVideo configs: ``decay_mode: 'none'``
    # VGen dog2_subjectLearning_step2.yaml:68-70 ``batch_sizes: {"1": 4}``: 4 images per identity step.
    identity_batch_size: int = 4
    # VGen playingGuitar_motionLearning.yaml:110 ``appearance_guide_strength_uncond: 0`` (no image
    # condition in the unconditional branch).
    uncond_condition: str = "zeros"
    bottleneck: Any = "half"
    identity_ff: bool = False
    residual_in_adapter: bool = False
    condition_scale: float = 1.0
    identity_steps: int | None = None
    motion_steps: int | None = None
    text_dropout: float = 0.5  # VGen playingGuitar_motionLearning.yaml:105 ``p_zero: 0.5``
    image_dropout: float = 0.0  # VGen playingGuitar_motionLearning.yaml:107 ``p_image_zero: 0``
    weights: tuple[float, float] = (1.0, 1.0)

    def validate(self) -> None:
        super().validate()
        if not (self.bottleneck == "half" or (isinstance(self.bottleneck, int) and self.bottleneck >= 1)):
            raise ValueError(f"bottleneck must be 'half' or a positive int, got {self.bottleneck!r}")
        for name in ("text_dropout", "image_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("identity_steps", "motion_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.weights) != 2:
            raise ValueError(f"weights must be (w_id, w_mo), got {self.weights}")

    def resolve(self, backbone: Any) -> DreamVideoConfig:
        """The engine's resolution, plus the two runs' steps (``budget`` decides them) and the
        bottleneck width."""
        out = super().resolve(backbone)
        tiny = is_tiny(backbone)
        default = self.TINY_STEPS if tiny else self.PAPER_STEPS
        identity, motion = (next(v for v in (self.train_steps, own, default) if v is not None)
                            for own in (self.identity_steps, self.motion_steps))
        batches = {}
        if self.budget == "equal":
            eq = self.equal_budget(backbone)
            identity, motion = eq.identity_steps, eq.motion_steps
            batches = dict(train_steps=eq.total_steps, identity_batch_size=eq.identity_batch, motion_batch_size=eq.motion_batch)
        tc = backbone.transformer.config
        width = int(tc.num_attention_heads * tc.attention_head_dim)
        bottleneck = width // 2 if self.bottleneck == "half" else int(self.bottleneck)
        return dataclasses.replace(out, identity_steps=identity, motion_steps=motion, bottleneck=bottleneck, **batches)


class DropoutBatchSource:
    """Wraps a :class:`~dualreal.engine.trainer.CaseBatchSource`: per sample, replaces the prompt by the
    empty prompt with probability ``text_dropout`` and the image condition by zeros with
    probability ``image_dropout`` (DreamVideo's motion training). Records what it dropped in
    ``batch.extras``."""

    def __init__(self, inner: Any, *, empty_prompt_embeds: torch.Tensor, text_dropout: float, image_dropout: float) -> None:
        self.inner = inner
        self.empty = empty_prompt_embeds  # (1, L, D)
        self.text_dropout = float(text_dropout)
        self.image_dropout = float(image_dropout)

    def next_kind(self, step: int, generator: torch.Generator) -> str:
        return self.inner.next_kind(step, generator)

    def next_batch(self, kind: str, generator: torch.Generator):
        batch = self.inner.next_batch(kind, generator)
        n = batch.latents.shape[0]
        drop_text = torch.rand(n, generator=generator) < self.text_dropout
        drop_image = torch.rand(n, generator=generator) < self.image_dropout
        empty = self.empty.to(batch.prompt_embeds.dtype).expand_as(batch.prompt_embeds)
        batch.prompt_embeds = torch.where(drop_text.view(n, 1, 1), empty, batch.prompt_embeds)
        cond = batch.model_kwargs.get("condition")
        if cond is not None:
            batch.model_kwargs["condition"] = cond * (~drop_image).to(cond.dtype).view(n, 1)
        batch.extras.update(text_dropped=drop_text.tolist(), image_dropped=drop_image.tolist() if cond is not None else [])
        return batch


def _adapter_options(config: DreamVideoConfig, condition_dim: int) -> dict[str, Any]:
    """DreamVideo's geometry as :class:`~dualreal.adapters.DualRealAdapters` options (config resolved)."""
    return dict(
        bottleneck_dim=int(config.bottleneck),
        condition_dim=condition_dim,
        condition_scale=config.condition_scale,
        residual=config.residual_in_adapter,
        identity_ff=config.identity_ff,
    )


def build_dreamvideo_model(backbone: Any, config: DreamVideoConfig, *, condition_dim: int):
    """Fresh DreamVideo-style adapters (seeded) around ``backbone.transformer`` (config resolved):
    DualReal's DA-Block adapters with DreamVideo's geometry and fixed weights ``config.weights``."""
    from dualreal.adapters import DualRealModel
    from dualreal.controller import FixedFusionWeights

    w_id, w_mo = config.weights
    return DualRealModel.with_new_adapters(
        backbone.transformer,
        seed=config.seed,
        make_controller=lambda **_: FixedFusionWeights(num_groups=1, identity_weight=w_id, motion_weight=w_mo),
        **_adapter_options(config, condition_dim),
    )


class DreamVideoMethod(ImageConditionedMethod):
    """DreamVideo-style baseline (``dreamvideo``); see the module docstring.

    Args:
        backbone: a :class:`~dualreal.engine.backbone.Backbone`.
        **options: :class:`DreamVideoConfig` fields (unknown keys are an error); resolved into :attr:`config`.

    Raises:
        dualreal.engine.image_encoder.ImageEncoderError: the OpenCLIP weights are not found.
    """

    name = "dreamvideo"
    trainable = True
    config_class = DreamVideoConfig
    config: DreamVideoConfig

    def __init__(self, backbone: Any, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.model = None
        self.ref_embedding: torch.Tensor | None = None
        self.identity_batch: int = self.config.identity_batch_size
        self.last_fit: dict[str, Any] = {}

    def training_budget(self) -> list[TrainingRun]:
        """The identity run and the motion run (images per step: as the last fit used them)."""
        cfg = self.config
        if self.model is not None:
            adapters = self.model.adapters
        else:  # before fit: the same adapters on the meta device (no memory)
            from dualreal.adapters import DualRealAdapters

            tc = self.backbone.transformer.config
            with torch.device("meta"):
                adapters = DualRealAdapters(int(tc.num_layers), int(tc.num_attention_heads * tc.attention_head_dim),
                                            **_adapter_options(cfg, self.image_encoder.embed_dim))
        sizes = {"identity": count_parameters(adapters.identity_parameters()),
                 "motion": count_parameters(adapters.motion_parameters())}
        return [
            TrainingRun.from_schedule("identity", steps=cfg.identity_steps, motion_ratio=0.0, images_per_step=self.identity_batch,
                         clips_per_step=0, learning_rate=cfg.learning_rate, trainable_parameters=sizes["identity"]),
            TrainingRun.from_schedule("motion", steps=cfg.motion_steps, motion_ratio=1.0, images_per_step=0,
                         clips_per_step=cfg.motion_batch_size, learning_rate=cfg.learning_rate, trainable_parameters=sizes["motion"]),
        ]

    def run_config(self, run: str) -> dict[str, Any]:
        """``config.json`` of one of the two runs. Inference-only options and the other run's
        options are left out: changing them does not invalidate a finished run; so is ``budget``,
        whose effect is in the resolved steps and batch sizes."""
        other = ("motion_steps", "text_dropout", "image_dropout") if run == "identity" else ("identity_steps",)
        return self.checkpoint_config(exclude=("weights", "uncond_condition", "budget", *other), _run=run)

    def _empty_prompt(self) -> torch.Tensor:
        from dualreal.engine.prompts import prompt_embeddings

        return prompt_embeddings(self.backbone.pipeline(), "", max_sequence_length=self.backbone.max_text_seq_length).float().cpu()

    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:
        """Train (or load) the identity run, then the motion run, into ``workdir/{identity,motion}``.

        Raises:
            ValueError: a run folder trained with another configuration, or bad data.
        """
        from dualreal.engine.trainer import CaseBatchSource, encode_case, load_finished, load_trainable, train

        cfg = self.config
        workdir = Path(workdir)
        encoder = self.image_encoder
        model = build_dreamvideo_model(self.backbone, cfg, condition_dim=encoder.embed_dim)
        groups = model.parameter_groups()
        # VGen's loader batches the subject's images without repeating one: at most all of them
        self.identity_batch = min(cfg.identity_batch_size, len(case.identity_images)) or cfg.identity_batch_size
        encoded = None
        status = {}
        tr = self.backbone.transformer
        try:
            for kind, ratio, steps in (("identity", 0.0, cfg.identity_steps), ("motion", 1.0, cfg.motion_steps)):
                folder = workdir / kind
                params = groups[kind]
                load = lambda m, f, params=params: load_trainable(m, f, expected=params)  # noqa: E731
                done = load_finished(folder, model, checkpoint_config=self.run_config(kind), load_fn=load)
                if done is None:
                    if encoded is None:
                        encoded = encode_case(self.backbone, case, num_frames=cfg.train_frames, image_encoder=encoder)
                    source = CaseBatchSource(
                        encoded,
                        motion_ratio=ratio,
                        motion_batch_size=cfg.motion_batch_size,
                        identity_batch_size=self.identity_batch,
                        condition=kind == "motion",
                    )
                    if kind == "motion":
                        source = DropoutBatchSource(
                            source,
                            empty_prompt_embeds=self._empty_prompt(),
                            text_dropout=cfg.text_dropout,
                            image_dropout=cfg.image_dropout,
                        )
                    # isolated runs: the other adapter is off (no output, hence no gradient) and not trained
                    model.identity_enabled = kind == "identity"
                    model.motion_enabled = kind == "motion"
                    with model.attached():
                        done = train(
                            tr,
                            {kind: params},
                            source,
                            noise_scheduler=self.backbone.scheduler,
                            config=cfg.trainer_config(f"dreamvideo-{kind}", train_steps=steps),
                            model=model,
                            workdir=folder,
                            checkpoint_config=self.run_config(kind),
                            load_fn=load,
                            progress=progress,
                        )
                status[kind] = {"resumed": done.resumed, "steps": done.steps}
        finally:
            model.identity_enabled = model.motion_enabled = True
        model.eval()
        self.model = model
        self.ref_embedding = encoder.encode(case.ref_image.unsqueeze(0))
        self.last_fit = status

    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        """One video with both adapters at full strength; the prompt keeps its ``*`` token.

        Raises:
            RuntimeError: :meth:`fit` was not called.
        """
        self.check_fitted(self.model)
        from dualreal.pipeline import generate_with_adapters

        cfg = self.config
        out = generate_with_adapters(
            self.backbone, self.model, prompt, seed, settings,
            ref_embedding=self.ref_embedding, uncond_condition=cfg.uncond_condition,
        )
        extras = {"dreamvideo": {"weights": list(cfg.weights), "uncond_condition": cfg.uncond_condition, "bottleneck": cfg.bottleneck}}
        return GeneratedVideo(frames=out.frames, fps=settings.fps, extras=extras)
