"""``DualRealMethod``: DualReal as a benchmark method (fit a case, generate videos), and the library
helpers to build, train and reload a DualReal model.

Every ablation is a :class:`~dualreal.config.DualRealConfig` value; the registry's ``dualreal-*``
names are configurations of this one class.

Checkpoint folder (``fit``'s ``workdir``)::

    config.json           DualRealConfig + class name + versions + backbone / encoder provenance
    weights.safetensors   adapters.* and controller.* (no base weights)
    train_state.json      written last: {"finished": true, "steps", "kinds", "losses", …}
    identity/, motion/    only for joint=False: the two isolated runs (each resumable)

:func:`load_dualreal` rebuilds a model from such a folder on a fresh backbone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dualreal.adapters import DualRealModel
from dualreal.config import DualRealConfig
from dualreal.controller import FixedFusionWeights, StageBlenderController
from dualreal.engine.image_encoder import ImageConditionedMethod
from dualreal.engine.protocol import CaseData, GeneratedVideo, GenerationSettings, TrainingRun
from dualreal.engine.trainer import (
    CONFIG_NAME,
    CaseBatchSource,
    encode_case,
    load_finished,
    load_trainable,
    save_trainable,
    train,
    write_checkpoint,
)

__all__ = ["DualRealMethod", "build_dualreal_model", "load_dualreal", "train_dualreal", "dualreal_mask"]


def build_dualreal_model(backbone: Any, config: DualRealConfig, *, condition_dim: int) -> DualRealModel:
    """Fresh adapters and controller (seeded with ``config.seed``) around ``backbone.transformer``.

    Adapters and controller are float32 on the backbone's device; the base model is not touched
    (:meth:`~dualreal.adapters.DualRealModel.with_new_adapters`).
    """

    def make_controller(*, inner_dim: int, time_embed_dim: int) -> torch.nn.Module:
        if config.use_controller:
            return StageBlenderController(
                inner_dim=inner_dim,
                time_embed_dim=time_embed_dim,
                head_dim=config.controller_head_dim,
                num_groups=config.num_groups,
                scale=config.fusion_scale,
            )
        w_id, w_mo = config.weights_without_controller
        return FixedFusionWeights(num_groups=config.num_groups, identity_weight=w_id, motion_weight=w_mo)

    return DualRealModel.with_new_adapters(
        backbone.transformer,
        seed=config.seed,
        make_controller=make_controller,
        bottleneck_dim=config.bottleneck_dim,
        condition_dim=condition_dim,
        condition_scale=config.condition_scale,
        residual=config.residual_in_adapter,
    )


def dualreal_mask(kind: str) -> set[str]:
    """The gradient mask M: identity steps train identity adapters + controller, motion steps motion
    adapters + controller (docs/METHOD.md §3.5)."""
    if kind not in ("identity", "motion"):
        raise ValueError(f"unknown step kind {kind!r}")
    return {kind, "controller"}


def train_dualreal(
    backbone: Any,
    model: DualRealModel,
    encoded: Any,
    config: DualRealConfig,
    *,
    workdir: Path | None = None,
    checkpoint_config: dict[str, Any] | None = None,
    progress: Any | None = None,
    on_step_end: Any | None = None,
) -> dict[str, Any]:
    """Dual-aware Adaptation on the shared trainer (docs/METHOD.md §3); loads instead when finished.

    ``config.joint``: one run with Bernoulli(γ) steps, both adapters in the forward pass, the
    gradient mask (``config.gradient_mask``) and the controller always trained. Otherwise two
    isolated runs (γ = 0 with only the identity adapters on, then γ = 1 with only the motion
    adapters on) whose adapters are blended with fixed weights at inference.

    Returns:
        ``{"runs": {name: TrainResult}}``.
    """
    tr = backbone.transformer
    common = dict(noise_scheduler=backbone.scheduler, model=model, progress=progress, on_step_end=on_step_end)
    runs = {}
    try:
        with model.attached():
            if config.joint:
                source = CaseBatchSource(
                    encoded,
                    motion_ratio=config.motion_ratio,
                    motion_batch_size=config.motion_batch_size,
                    identity_batch_size=config.identity_batch_size,
                )
                groups = model.parameter_groups()  # no "controller" group with fixed weights
                runs["joint"] = train(
                    tr,
                    groups,
                    source,
                    config=config.trainer_config("dualreal"),
                    active_groups=(lambda kind: dualreal_mask(kind) & set(groups)) if config.gradient_mask else None,
                    workdir=workdir,
                    checkpoint_config=checkpoint_config,
                    **common,
                )
            else:
                for kind, ratio in (("identity", 0.0), ("motion", 1.0)):
                    model.identity_enabled = kind == "identity"
                    model.motion_enabled = kind == "motion"
                    source = CaseBatchSource(
                        encoded,
                        motion_ratio=ratio,
                        motion_batch_size=config.motion_batch_size,
                        identity_batch_size=config.identity_batch_size,
                    )
                    groups = model.parameter_groups()
                    runs[kind] = train(
                        tr,
                        {kind: groups[kind]},
                        source,
                        config=config.trainer_config(f"dualreal-{kind}"),
                        workdir=None if workdir is None else Path(workdir) / kind,
                        checkpoint_config=None if checkpoint_config is None else {**checkpoint_config, "_run": kind},
                        **common,
                    )
    finally:
        model.identity_enabled = model.motion_enabled = True
    if not config.joint and workdir is not None:
        state = {
            "finished": True,
            "steps": sum(r.steps for r in runs.values()),
            "kinds": [k for r in runs.values() for k in r.kinds],
            "losses": [x for r in runs.values() for x in r.losses],
            "seconds": round(sum(r.seconds for r in runs.values()), 3),
            "runs": list(runs),
        }
        groups = model.parameter_groups()
        write_checkpoint(Path(workdir), lambda f: save_trainable(model, groups, f), checkpoint_config, state)
    return {"runs": runs}


def load_dualreal(checkpoint_dir: str | Path, backbone: Any, *, image_encoder: Any | None = None) -> tuple[DualRealModel, DualRealConfig]:
    """Rebuild a trained DualReal model from a checkpoint folder on ``backbone``.

    Args:
        checkpoint_dir: a folder written by :meth:`DualRealMethod.fit` / :func:`train_dualreal`.
        image_encoder: only used to check the condition width; default: the width saved in the config.

    Raises:
        ValueError: not a DualReal checkpoint, or shapes that do not fit the backbone.
    """
    folder = Path(checkpoint_dir)
    data = json.loads((folder / CONFIG_NAME).read_text())
    config = DualRealConfig.load(folder / CONFIG_NAME)
    cond_dim = int(data.get("_condition_dim") or (image_encoder.embed_dim if image_encoder is not None else 1024))
    model = build_dualreal_model(backbone, config, condition_dim=cond_dim)
    load_trainable(model, folder, expected=[p for ps in model.parameter_groups().values() for p in ps])
    model.eval()
    return model, config


class DualRealMethod(ImageConditionedMethod):
    """DualReal (Wang et al., ICCV 2025) on the shared CogVideoX backbone.

    Args:
        backbone: a :class:`~dualreal.engine.backbone.Backbone`.
        **options: :class:`~dualreal.config.DualRealConfig` fields (unknown keys are an error); the
            registry's ablation names pass theirs, ``dualbench run --train-steps`` passes
            ``train_steps``. The resolved config is :attr:`config`.

    Raises:
        ValueError: an unknown option or a bad combination.
        dualreal.engine.image_encoder.ImageEncoderError: the OpenCLIP weights of a real backbone are not
            found (checked here, before any work).
    """

    name = "dualreal"
    trainable = True
    config_class = DualRealConfig
    config: DualRealConfig

    def __init__(self, backbone: Any, **options: Any) -> None:
        super().__init__(backbone, **options)
        self.model: DualRealModel | None = None
        self.ref_embedding: torch.Tensor | None = None
        self.case_name: str | None = None
        self.last_fit: dict[str, Any] = {}

    # ------------------------------------------------------------------ protocol
    def fit(self, case: CaseData, workdir: Path, *, progress: Any | None = None) -> None:
        """Train adapters and controller on ``case`` into ``workdir`` (or load a finished checkpoint).

        Raises:
            ValueError: a checkpoint in ``workdir`` trained with another configuration, or bad data.
        """
        cfg = self.config
        workdir = Path(workdir)
        encoder = self.image_encoder.to(self.backbone.device)
        ckpt_cfg = self.checkpoint_config()
        model = build_dualreal_model(self.backbone, cfg, condition_dim=encoder.embed_dim)
        done = load_finished(
            workdir,
            model,
            checkpoint_config=ckpt_cfg,
            load_fn=lambda m, f: load_trainable(m, f, expected=[p for ps in m.parameter_groups().values() for p in ps]),
        )
        if done is not None:
            self.ref_embedding = encoder.encode(case.ref_image.unsqueeze(0))
            self.last_fit = {"resumed": True, "steps": done.steps}
        else:
            encoded = encode_case(self.backbone, case, num_frames=cfg.train_frames, image_encoder=encoder)
            out = train_dualreal(self.backbone, model, encoded, cfg, workdir=workdir, checkpoint_config=ckpt_cfg, progress=progress)
            self.ref_embedding = encoded.ref_embedding
            self.last_fit = {"resumed": False, "runs": out["runs"]}
        if self.backbone.device.type != "cpu":
            encoder.to("cpu")  # only the reference embedding is needed from here on
        model.eval()
        self.model = model
        self.case_name = case.name

    def training_budget(self) -> list[TrainingRun]:
        """One joint run (all adapters and the controller; γ of the steps on clips), or the two
        isolated runs of ``joint=False``.

        Raises:
            RuntimeError: :meth:`fit` was not called (the parameters are counted on the fitted model).
        """
        self.check_fitted(self.model)
        cfg = self.config
        groups = self.model.parameter_groups()
        count = lambda ps: sum(int(p.numel()) for p in ps)  # noqa: E731
        common = dict(images_per_step=cfg.identity_batch_size, clips_per_step=cfg.motion_batch_size,
                      learning_rate=cfg.learning_rate)
        if cfg.joint:
            return [TrainingRun.from_schedule("joint", steps=cfg.train_steps, motion_ratio=cfg.motion_ratio,
                                              trainable_parameters=count(p for ps in groups.values() for p in ps), **common)]
        return [TrainingRun.from_schedule(kind, steps=cfg.train_steps, motion_ratio=ratio,
                                          trainable_parameters=count(groups[kind]), **common)
                for kind, ratio in (("identity", 0.0), ("motion", 1.0))]

    def generate(self, prompt: str, seed: int, settings: GenerationSettings) -> GeneratedVideo:
        """One video for ``prompt`` with ``seed``; ``extras["controller_trace"]`` holds the fusion
        weights per denoising step, guidance branch and group.

        Raises:
            RuntimeError: :meth:`fit` was not called.
        """
        self.check_fitted(self.model)
        from dualreal.pipeline import generate_with_adapters

        out = generate_with_adapters(
            self.backbone, self.model, prompt, seed, settings,
            ref_embedding=self.ref_embedding, uncond_condition=self.config.uncond_condition,
        )
        return GeneratedVideo(frames=out.frames, fps=settings.fps, extras={"controller_trace": out.controller_trace})
