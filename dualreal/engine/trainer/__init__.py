"""The one customisation trainer: every trainable method of dualbench (DualReal, its ablations, the
LoRA / DreamVideo-style / MotionBooth-style baselines) trains through :func:`train`.

It is a library function with hooks, not a script. One optimiser step is::

    kind  = source.next_kind(step, kind_rng)          # e.g. "identity" / "motion" (Bernoulli(γ))
    keep  = active_groups(kind)                        # the gradient mask: groups that may change
    for each of gradient_accumulation_steps micro-batches:
        batch = source.next_batch(kind, data_rng)      # TrainBatch: cached VAE latents, prompt embeds…
        t ~ U{0..999}, ε ~ N(0, I)
        x_t = add_noise(x_0, ε, t);  v = get_velocity(x_0, ε, t)       # CogVideoX's scheduler
        v̂   = forward_fn(model, batch, x_t, t, rotary)
        loss = loss_fn(ctx) (default: v-MSE, masked by batch.loss_mask) + Σ extra_losses[name](ctx)
        accelerator.backward(loss)
    clip_grad_norm_(active, max_grad_norm); optimizer.step(); lr_scheduler.step(); zero_grad(None)

Hook API (all keyword arguments of :func:`train`):

* ``parameter_groups: dict[str, list[Parameter]]`` — **which parameters train**, by group name
  (DualReal: ``identity``, ``motion``, ``controller``; LoRA: ``lora``; …). Disjoint, all inside
  ``model``. One AdamW param group per name.
* ``source: BatchSource`` — **which batch comes next**: ``next_kind(step, rng) → str`` once per
  optimiser step (``rng`` is identical on every process, so every rank agrees on the kind), then
  ``next_batch(kind, rng) → TrainBatch`` per micro-batch (``rng`` differs per rank).
  :class:`CaseBatchSource` serves a :class:`~dualreal.engine.protocol.CaseData` (identity images as
  1-frame videos, motion clips, Bernoulli(γ) or alternating kinds, reference-image conditions).
* ``active_groups(kind) → iterable of group names`` — **the gradient mask** (``None``: every group
  trains every step). See "Gradient mask" below.
* ``forward_fn(model, batch, noisy_latents, timesteps, image_rotary_emb) → v̂`` — how to call the
  model (default: ``model(hidden_states=…, encoder_hidden_states=batch.prompt_embeds, timestep=…,
  image_rotary_emb=…, return_dict=False, **batch.model_kwargs)[0]``).
* ``loss_fn(ctx: StepContext) → scalar`` — replaces the v-prediction MSE (rarely needed).
* ``extra_losses: dict[str, (ctx) → scalar | None]`` — **extra losses**, already weighted, added to
  the main loss (``None`` skips it for this batch, e.g. an attention loss on image batches only).
  ``ctx`` carries the step, kind, batch, model, prediction, target, noisy latents, timesteps, noise.
* ``save_fn(model, folder)`` / ``load_fn(model, folder)`` — checkpoint format (default: the named
  trainable parameters in ``weights.safetensors``); ``checkpoint_config`` — a JSON dict saved as
  ``config.json`` and compared on resume.
* ``on_step_end(info: StepEnd)`` — called after every optimiser step with the step, kind, losses,
  learning rate, the (prepared) model, optimiser and accelerator (tests inspect AdamW state here).
* ``context`` — a context manager entered around the whole loop (e.g. ``model.attached()`` so that
  hooks outlive backward under gradient checkpointing).

Gradient mask. Before the micro-batches of a step, every parameter of an inactive group gets
``requires_grad=False``: no gradient is computed for it at all, so it stays ``None``; after each
backward any gradient an inactive parameter still has is dropped (belt and braces). AdamW (torch and
bitsandbytes) skips parameters whose gradient is ``None``: their weights, moments, step counts and
weight decay are untouched — ``θ ← θ − M ⊙ ∇L`` exactly. Supported settings: a single process;
several processes each training their own model (``distributed="local"``, the default: the run loop
shards *cases* across ``accelerate launch`` processes, so no rank may wait for another);
data-parallel DDP of one model (``distributed="ddp"``, multi-GPU / multi-node; built with
``find_unused_parameters=True``, which leaves globally unused gradients untouched; the kind is drawn
identically on every rank); gradient accumulation (the kind is fixed for the whole step); no/bf16/
fp16 mixed precision. Engines that own the optimiser step or shard parameters (DeepSpeed, FSDP,
Megatron) are **refused** — the released code masked gradients after ``backward`` under DeepSpeed
ZeRO, which steps inside backward, so its mask silently did nothing. Tests prove the invariant for
one process, gradient accumulation, bf16 autocast and 2-process DDP.

Resume: when ``workdir/train_state.json`` says ``finished`` (it is written last, atomically) the
checkpoint is loaded instead of training; a different ``checkpoint_config`` is an error naming the
fields (:func:`config_diff`); a finished checkpoint whose weights are damaged or not the model's is
refused with the file and keys named (:class:`CheckpointError`, :func:`read_checkpoint`). Loss: CogVideoX's native objective, v-prediction with uniform ``t``; diffusers' scripts write
it as ``‖x̂₀ − x₀‖² / (1 − ᾱ_t)``, which equals the plain v-MSE used here.
"""

from dualreal.engine.trainer.checkpoint import (
    CONFIG_NAME,
    STATE_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    TrainResult,
    check_state_dict,
    config_diff,
    load_finished,
    load_trainable,
    read_checkpoint,
    save_trainable,
    write_checkpoint,
)
from dualreal.engine.trainer.data import (
    MIN_CLIP_FRAMES,
    BatchSource,
    CaseBatchSource,
    EncodedCase,
    TrainBatch,
    conform_clip,
    encode_case,
)
from dualreal.engine.trainer.loop import (
    MaskUnsupportedError,
    StepContext,
    StepEnd,
    TrainerConfig,
    rotary_embeddings,
    train,
    v_prediction_loss,
)

__all__ = [
    "TrainBatch",
    "BatchSource",
    "TrainerConfig",
    "StepContext",
    "StepEnd",
    "TrainResult",
    "EncodedCase",
    "CaseBatchSource",
    "encode_case",
    "conform_clip",
    "MIN_CLIP_FRAMES",
    "train",
    "v_prediction_loss",
    "rotary_embeddings",
    "save_trainable",
    "load_trainable",
    "load_finished",
    "CheckpointError",
    "read_checkpoint",
    "check_state_dict",
    "write_checkpoint",
    "config_diff",
    "MaskUnsupportedError",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "STATE_NAME",
]
