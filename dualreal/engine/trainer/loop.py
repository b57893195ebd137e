"""The training loop: :func:`train` (see :mod:`dualreal.engine.trainer` for the hook API)."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from dualreal.engine.config import OptimizerSettings
from dualreal.engine.errors import check_finite
from dualreal.engine.trainer.checkpoint import (
    TrainResult,
    load_finished,
    load_trainable,
    save_trainable,
    write_checkpoint,
)
from dualreal.engine.trainer.data import BatchSource, TrainBatch

__all__ = [
    "MaskUnsupportedError",
    "TrainerConfig",
    "StepContext",
    "StepEnd",
    "train",
    "v_prediction_loss",
    "rotary_embeddings",
]


class MaskUnsupportedError(ValueError):
    """A gradient mask was requested under an engine that cannot guarantee it."""



# ---------------------------------------------------------------------------------------------
# Loss and geometry
# ---------------------------------------------------------------------------------------------
def v_prediction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the velocity, optionally masked.

    Args:
        pred, target: ``(B, F, C, H, W)``; computed in float32.
        mask: broadcastable to ``pred``; the masked sum divided by the number of masked elements.

    Returns:
        A float32 scalar.
    """
    sq = (pred.float() - target.float()) ** 2
    if mask is None:
        return sq.mean()
    m = mask.to(sq.dtype).expand_as(sq)
    return (sq * m).sum() / m.sum().clamp_min(1.0)


def rotary_embeddings(transformer_config: Any, latent_frames: int, latent_height: int, latent_width: int, device) -> Any:
    """The rotary embeddings the stock ``CogVideoXPipeline`` would build for this latent geometry.

    Calls the pipeline's own ``_prepare_rotary_positional_embeddings`` on a stand-in (so training
    and inference use one formula); ``None`` for backbones without rotary embeddings.
    """
    if not transformer_config.use_rotary_positional_embeddings:
        return None
    from diffusers import CogVideoXPipeline

    stand_in = SimpleNamespace(vae_scale_factor_spatial=1, transformer=SimpleNamespace(config=transformer_config))
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(
        stand_in, latent_height, latent_width, latent_frames, device
    )


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainerConfig(OptimizerSettings):
    """Optimiser, schedule and engine settings of one training run (defaults: the paper's,
    docs/METHOD.md §3.6). Method configs build it with
    :meth:`~dualreal.engine.config.TrainingConfig.trainer_config`.

    Attributes:
        learning_rate, adam_beta1, adam_beta2, weight_decay, adam_epsilon, max_grad_norm,
            lr_scheduler, lr_num_cycles: :class:`~dualreal.engine.config.OptimizerSettings`
            (AdamW 1e-3, β (0.9, 0.95), 1e-4, 1e-8; clip 1.0, ``None`` disables it;
            ``cosine_with_restarts``, 1 cycle).
        train_steps: optimiser steps (1000).
        lr_warmup_steps: warm-up steps of the schedule (200).
        gradient_accumulation_steps: micro-batches per optimiser step (1).
        mixed_precision: ``no`` / ``bf16`` / ``fp16`` (accelerate autocast; trainable parameters
            stay float32).
        use_8bit_adam: bitsandbytes AdamW8bit.
        gradient_checkpointing: recompute each transformer block in backward instead of keeping
            its activations (diffusers' ``enable_gradient_checkpointing``: non-reentrant
            ``torch.utils.checkpoint``). :func:`train` switches it on for the run and restores the
            transformer's previous setting afterwards, so every method that trains through
            :func:`train` honours it (method configs resolve it per backbone:
            :class:`~dualreal.engine.config.TrainingConfig`).
        seed: seeds the step kinds (shared by all ranks) and the batches, noise and timesteps
            (``seed + 1 + rank``).
        device: ``None`` → the device of the model's parameters.
        distributed: ``"local"`` (default): every process trains its own model on its own data with
            no communication — the run loop shards *cases* across processes, so ranks train different
            cases and must never synchronise; ``"ddp"``: all processes train one model together
            (DistributedDataParallel, gradients averaged, rank 0 writes the checkpoint).
        description: progress-bar label.
    """

    train_steps: int = 1000
    lr_warmup_steps: int = 200
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    use_8bit_adam: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    device: str | None = None
    distributed: str = "local"
    description: str = "train"

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class StepContext:
    """What loss hooks see for one micro-batch."""

    step: int
    micro_step: int
    kind: str
    batch: TrainBatch
    model: nn.Module
    model_output: torch.Tensor
    target: torch.Tensor
    noisy_latents: torch.Tensor
    timesteps: torch.Tensor
    noise: torch.Tensor
    noise_scheduler: Any
    accelerator: Any


@dataclass
class StepEnd:
    """What ``on_step_end`` sees after each optimiser step."""

    step: int
    kind: str
    logs: dict[str, Any]
    model: nn.Module
    optimizer: Any
    lr_scheduler: Any
    accelerator: Any



def _default_forward(model, batch: TrainBatch, noisy, timesteps, rotary):
    return model(
        hidden_states=noisy,
        encoder_hidden_states=batch.prompt_embeds,
        timestep=timesteps,
        image_rotary_emb=rotary,
        return_dict=False,
        **batch.model_kwargs,
    )[0]


def _make_accelerator(config: TrainerConfig, device: torch.device, masked: bool):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    def build():
        return Accelerator(
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            mixed_precision=config.mixed_precision,
            cpu=device.type == "cpu",
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )

    try:
        accelerator = build()
    except ValueError as exc:
        # accelerate keeps precision and device in a process-wide singleton. In a single process a
        # later run with other settings (e.g. tests, or fp32 after bf16) starts it afresh; inside a
        # distributed run that would break the process group, so it stays an error.
        if "already been initialized" not in str(exc) or PartialState._shared_state.get("num_processes", 1) > 1:  # noqa: SLF001
            raise
        AcceleratorState._reset_state()  # noqa: SLF001
        accelerator = build()
    if accelerator.distributed_type in (
        DistributedType.DEEPSPEED,
        DistributedType.FSDP,
        DistributedType.MEGATRON_LM,
    ):
        why = (
            "the gradient mask cannot be guaranteed" if masked else "the shared trainer does not support it"
        )
        raise MaskUnsupportedError(
            f"{accelerator.distributed_type.value}: {why} — the engine owns the optimiser step (DeepSpeed "
            "steps inside backward) or shards parameters into flat buffers; launch with plain DDP "
            "(`accelerate launch --multi_gpu`) or a single process"
        )
    return accelerator


@contextlib.contextmanager
def _checkpointing(transformer: nn.Module, enabled: bool):
    """Gradient checkpointing of ``transformer``'s blocks on inside the block when ``enabled``; the
    previous setting is restored on exit.

    Raises:
        ValueError: ``enabled`` for a model without diffusers' checkpointing support.
    """
    if not enabled:
        yield
        return
    if not getattr(transformer, "_supports_gradient_checkpointing", False):
        raise ValueError(f"{type(transformer).__name__} does not support gradient checkpointing")
    before = bool(getattr(transformer, "gradient_checkpointing", False))
    transformer.enable_gradient_checkpointing()
    try:
        yield
    finally:
        if not before:
            transformer.disable_gradient_checkpointing()


def train(
    transformer: nn.Module,
    parameter_groups: Mapping[str, Sequence[nn.Parameter]],
    source: BatchSource,
    *,
    noise_scheduler: Any,
    config: TrainerConfig | None = None,
    model: nn.Module | None = None,
    active_groups: Callable[[str], Iterable[str]] | None = None,
    forward_fn: Callable[..., torch.Tensor] | None = None,
    loss_fn: Callable[[StepContext], torch.Tensor] | None = None,
    extra_losses: Mapping[str, Callable[[StepContext], torch.Tensor | None]] | None = None,
    workdir: str | Path | None = None,
    checkpoint_config: Mapping[str, Any] | None = None,
    save_fn: Callable[[nn.Module, Path], None] | None = None,
    load_fn: Callable[[nn.Module, Path], Any] | None = None,
    on_step_end: Callable[[StepEnd], None] | None = None,
    context: contextlib.AbstractContextManager | None = None,
    progress: Any | None = None,
) -> TrainResult:
    """Train ``parameter_groups`` of ``model`` on batches from ``source`` (see the module docstring).

    Args:
        transformer: the stock ``CogVideoXTransformer3DModel`` (its config gives the rotary
            embeddings and its dtype the input dtype; ``config.gradient_checkpointing`` switches
            its block checkpointing on for the run).
        parameter_groups: group name → parameters to train (disjoint, all inside ``model``).
        source: a :class:`BatchSource`.
        noise_scheduler: the backbone's ``CogVideoXDPMScheduler`` (``add_noise``, ``get_velocity``).
        config: :class:`TrainerConfig` (default: the paper's settings).
        model: the module to run and prepare with accelerate (default: ``transformer``, e.g. with
            peft LoRA layers inside); DualReal passes its :class:`~dualreal.adapters.DualRealModel`.
        active_groups, forward_fn, loss_fn, extra_losses, save_fn, load_fn, on_step_end, context:
            the hooks (module docstring).
        workdir: checkpoint folder (``None``: no checkpoint, no resume).
        checkpoint_config: JSON dict saved as ``config.json`` and compared on resume.
        progress: a ``rich.progress.Progress`` (or an object with its ``add_task`` / ``update`` /
            ``remove_task``) to add a task to, with the field ``unit="steps"``; ``None`` → a tqdm bar on a TTY.

    Returns:
        A :class:`TrainResult`. The model ends in eval mode, unwrapped, on the training device.

    Raises:
        ValueError: bad groups (overlap, not in the model, unknown names from ``active_groups``), a
            checkpoint with another config; :class:`MaskUnsupportedError` for a mask under
            DeepSpeed / FSDP.
        dualreal.engine.errors.NonFiniteError: a NaN or infinite loss (the main one or an extra
            loss, named), checked before its backward pass: training stops there, the weights are
            not updated with it and no checkpoint is written (``"<description>: the loss at
            training step 2 of 10 (identity batch) is nan"``).
    """
    config = config or TrainerConfig()
    if config.distributed not in ("local", "ddp"):
        raise ValueError(f"distributed must be 'local' or 'ddp', got {config.distributed!r}")
    model = model if model is not None else transformer
    workdir = Path(workdir) if workdir is not None else None

    # 1. Check the groups
    all_params = [p for ps in parameter_groups.values() for p in ps]
    if not all_params:
        raise ValueError("parameter_groups holds no parameters")
    if len({id(p) for p in all_params}) != len(all_params):
        raise ValueError("parameter groups overlap: every parameter must be in exactly one group")
    model_ids = {id(p) for p in model.parameters()}
    if any(id(p) not in model_ids for p in all_params):
        raise ValueError("every trainable parameter must belong to `model` (accelerate prepares `model`)")
    if any(not p.is_floating_point() for p in all_params):
        raise ValueError("trainable parameters must be floating point")
    if config.mixed_precision == "fp16" and any(p.dtype != torch.float32 for p in all_params):
        raise ValueError("fp16 mixed precision needs float32 trainable parameters (the GradScaler unscales them)")
    group_names = set(parameter_groups)

    def keep_of(kind: str) -> set[str]:
        if active_groups is None:
            return group_names
        keep = set(active_groups(kind))
        unknown = keep - group_names
        if unknown:
            raise ValueError(f"active_groups({kind!r}) names unknown groups {sorted(unknown)}; known: {sorted(group_names)}")
        return keep

    # 2. Resume: a finished checkpoint is loaded, not retrained
    default_load = lambda m, f: load_trainable(m, f, expected=all_params)  # noqa: E731
    done = load_finished(workdir, model, checkpoint_config=checkpoint_config, load_fn=load_fn or default_load)
    if done is not None:
        model.eval()
        return done

    # 3. Accelerator, optimiser, schedule
    device = torch.device(config.device) if config.device else next(model.parameters()).device
    accelerator = _make_accelerator(config, device, masked=active_groups is not None)
    for p in all_params:
        p.requires_grad_(True)  # DDP registers its hooks at prepare time
    param_groups = [{"params": list(ps), "name": name} for name, ps in parameter_groups.items()]
    opt_kwargs = dict(
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        eps=config.adam_epsilon,
    )
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("use_8bit_adam needs bitsandbytes (pip install bitsandbytes)") from None
        optimizer = bnb.optim.AdamW8bit(param_groups, **opt_kwargs)
    else:
        optimizer = torch.optim.AdamW(param_groups, **opt_kwargs)
    from diffusers.optimization import get_scheduler

    ddp = config.distributed == "ddp"
    # accelerate steps a prepared scheduler once per process; the diffusers scripts scale by it.
    n_proc = accelerator.num_processes if ddp else 1
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * n_proc,
        num_training_steps=config.train_steps * n_proc,
        num_cycles=config.lr_num_cycles,
    )
    if ddp:
        prepared, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    else:  # local: no DDP wrapper, no barrier; autocast is applied around the forward below
        if config.device is not None:
            model.to(device)
        prepared, optimizer = model, accelerator.prepare(optimizer)
    data_device = next(prepared.parameters()).device
    rank = accelerator.process_index if ddp else 0
    main = accelerator.is_main_process if ddp else True
    input_dtype = next(transformer.parameters()).dtype
    forward = forward_fn or _default_forward
    extra_losses = dict(extra_losses or {})
    kind_rng = torch.Generator().manual_seed(config.seed)
    data_rng = torch.Generator().manual_seed(config.seed + 1 + rank)
    num_train_timesteps = int(noise_scheduler.config.num_train_timesteps)
    rotary_cache: dict[tuple[int, int, int], Any] = {}

    # 4. Progress
    bar = task = None
    show = accelerator.is_local_main_process or not ddp
    if progress is not None and show:
        task = progress.add_task(config.description, total=config.train_steps, unit="steps")
    elif show and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=config.train_steps, desc=config.description, leave=False)

    # 5. The loop (gradient checkpointing on the transformer for the run, when asked)
    kinds: list[str] = []
    losses: list[float] = []
    logs: list[dict[str, float]] = []
    t_start = time.perf_counter()
    prepared.train()
    optimizer.zero_grad(set_to_none=True)
    with context if context is not None else contextlib.nullcontext(), _checkpointing(transformer, config.gradient_checkpointing):
        for step in range(config.train_steps):
            kind = source.next_kind(step, kind_rng)
            keep = keep_of(kind)
            # 5a. Gradient mask, part 1: inactive groups compute no gradient at all.
            for name, ps in parameter_groups.items():
                for p in ps:
                    p.requires_grad_(name in keep)
            active = [p for name, ps in parameter_groups.items() if name in keep for p in ps]
            inactive = [p for name, ps in parameter_groups.items() if name not in keep for p in ps]
            step_loss = 0.0
            step_logs: dict[str, float] = {}
            for micro in range(config.gradient_accumulation_steps):
                batch = source.next_batch(kind, data_rng)
                with accelerator.accumulate(prepared):
                    # 5b. Noise, timesteps, v-target (CogVideoX's scheduler)
                    latents = batch.latents.to(data_device, torch.float32)
                    bsz, frames, _, height, width = latents.shape
                    noise = torch.randn(latents.shape, generator=data_rng).to(data_device)
                    timesteps = torch.randint(0, num_train_timesteps, (bsz,), generator=data_rng).to(data_device)
                    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                    key = (frames, height, width)
                    if key not in rotary_cache:
                        rotary_cache[key] = rotary_embeddings(transformer.config, frames, height, width, data_device)
                    batch.prompt_embeds = batch.prompt_embeds.to(data_device, input_dtype)
                    batch.model_kwargs = {
                        k: v.to(data_device) if isinstance(v, torch.Tensor) else v
                        for k, v in batch.model_kwargs.items()
                    }
                    if batch.loss_mask is not None:
                        batch.loss_mask = batch.loss_mask.to(data_device)
                    # 5c. Forward and losses
                    with accelerator.autocast():
                        pred = forward(prepared, batch, noisy.to(input_dtype), timesteps, rotary_cache[key])
                    ctx = StepContext(
                        step=step, micro_step=micro, kind=kind, batch=batch, model=prepared,
                        model_output=pred, target=target, noisy_latents=noisy, timesteps=timesteps,
                        noise=noise, noise_scheduler=noise_scheduler, accelerator=accelerator,
                    )
                    loss = loss_fn(ctx) if loss_fn is not None else v_prediction_loss(pred, target, batch.loss_mask)
                    where = f"at training step {step + 1} of {config.train_steps} ({kind} batch)"
                    # 5d. A NaN/inf loss stops this run before it reaches the weights: no backward, no
                    # step, no checkpoint (the caller records the case as failed, naming the step).
                    check_finite(loss.detach(), f"{config.description}: the loss {where}")
                    step_logs["loss_main"] = step_logs.get("loss_main", 0.0) + float(loss.detach()) / config.gradient_accumulation_steps
                    for name, fn in extra_losses.items():
                        extra = fn(ctx)
                        if extra is not None:
                            check_finite(extra.detach(), f"{config.description}: the {name} loss {where}")
                            loss = loss + extra
                            step_logs[name] = step_logs.get(name, 0.0) + float(extra.detach()) / config.gradient_accumulation_steps
                    accelerator.backward(loss)
                    step_loss += float(loss.detach()) / config.gradient_accumulation_steps
                    # 5e. Gradient mask, part 2: drop anything an inactive parameter still holds.
                    for p in inactive:
                        p.grad = None
                    if accelerator.sync_gradients and config.max_grad_norm is not None:
                        with_grad = [p for p in active if p.grad is not None]
                        if with_grad:
                            accelerator.clip_grad_norm_(with_grad, config.max_grad_norm)
                    optimizer.step()
                    if ddp:
                        lr_scheduler.step()  # accelerate's wrapper skips non-sync and overflow steps
                    elif accelerator.sync_gradients and not optimizer.step_was_skipped:
                        lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            kinds.append(kind)
            losses.append(step_loss)
            entry = {"step": step, "kind": kind, "loss": step_loss, "lr": float(lr_scheduler.get_last_lr()[0]), **step_logs}
            logs.append(entry)
            if on_step_end is not None:
                on_step_end(StepEnd(step, kind, entry, prepared, optimizer, lr_scheduler, accelerator))
            if task is not None:
                progress.update(task, advance=1, description=f"{config.description} · {kind} · loss {step_loss:.4f}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(kind=kind, loss=f"{step_loss:.4f}")
    seconds = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    if task is not None:
        progress.remove_task(task)

    # 6. Restore: every trainable parameter trainable again, model unwrapped, eval mode
    for p in all_params:
        p.requires_grad_(True)
    if ddp:
        accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(prepared, keep_fp32_wrapper=False)
    unwrapped.eval()
    result = TrainResult(
        steps=config.train_steps, kinds=kinds, losses=losses, seconds=seconds, workdir=workdir, logs=logs
    )

    # 7. Checkpoint (main process), written atomically, "finished" marker last
    if workdir is not None and main:
        state = {
            "finished": True,
            "steps": config.train_steps,
            "kinds": kinds,
            "losses": losses,
            "logs": logs,  # per step: kind, loss, lr and every extra loss term (e.g. MotionBooth's attention loss)
            "seconds": round(seconds, 3),
            "trainer": config.to_dict(),
            "num_processes": n_proc,
        }
        writer = (lambda folder: save_fn(unwrapped, folder)) if save_fn else (
            lambda folder: save_trainable(unwrapped, parameter_groups, folder)
        )
        write_checkpoint(workdir, writer, checkpoint_config, state)
    if ddp:
        accelerator.wait_for_everyone()
    accelerator.free_memory()
    return result
