"""Paper scale: peak memory and time of every piece of the real job at 49×480×720 on CogVideoX.

For a backbone preset (``cogvideox-5b-random`` by default: the published CogVideoX-5B architecture
with random weights, :mod:`dualreal.engine.backbone`), a device and a dtype, this measures:

* ``infer-base`` / ``infer-dualreal`` — one denoising step, batch 2 (the two guidance branches):
  the stock ``CogVideoXPipeline`` called for 1 step with ``output_type="latent"`` (DualReal: with its
  adapters and StageBlender controller attached and the reference-image condition set, as
  :class:`dualreal.pipeline.DualRealPipeline` runs it, without the decode);
* ``train-*`` — one optimiser step through the one trainer (:func:`dualreal.engine.trainer.train`)
  on a synthetic encoded case of the real shapes (VAE posteriors of 49-frame clips, 226 × 4096
  prompt embeddings, 1024-d reference-image embeddings): DualReal's identity step (one image) and
  motion step (3 clips) via :func:`dualreal.method.train_dualreal`; the motion step of a LoRA of
  rank 128 (:func:`baselines.lora.add_lora`, 3 clips), of DreamVideo's motion adapters
  (:func:`baselines.dreamvideo.build_dreamvideo_model`, 3 clips, text/image dropout) and of
  MotionBooth (attention projections in float32, subject-attention processors installed, its 1
  clip); each without and with gradient checkpointing (``-ckpt``);
* ``vae-decode`` — the VAE decode of 49 frames at 480×720 (slicing and tiling on, as
  :func:`~dualreal.engine.backbone.load_backbone` sets them for every non-tiny backbone);
* ``metric-*`` — each of the seven metrics on one 49-frame 480×720 video with the full-size random
  encoders (:class:`benchmark.scorer.Scorer`, ``random_arch="full"``), batched (32 frames / 8 pairs)
  and frame by frame; frames per second.

Every case runs in a fresh subprocess (its peak memory is its own). Peak memory is what the step
adds on top of the built model: CPU — the resident high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs`` after the build) minus the resident size then; CUDA —
``torch.cuda.max_memory_allocated`` minus the allocation after the build.

On a GPU the full model runs and the figures are measured. On the CPU the transformer is cut to
``--blocks`` blocks at the real width and the real token count (13 × 60 × 90 = 17,550 video tokens
+ 226 text tokens); motion steps may run ``--measured-clips`` clips (default 1 on CPU); and every
figure is extrapolated to 42 blocks and the method's clip count with the formula printed beside
it (see :func:`extrapolate`). The CPU runs in float32: without AVX-512-BF16 / AMX a bf16 matmul on
the CPU is ~100× slower than fp32. The bf16 column projects the float32 measurement to bf16
weights (2 bytes) and half the activation bytes — a projection, labelled as such.

Usage::

    python scripts/bench_scale.py --quick                          # minutes: 9×256×384, for development
    nice -n 15 python scripts/bench_scale.py --json scale.json     # CPU, real tokens, 1 block (~1-2 h)
    python scripts/bench_scale.py --device cuda --dtype bf16 --json scale.json   # GPU: the full model

Everything is computed with random weights (times and memory do not depend on the values).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dualreal import PeakMemory  # noqa: E402 - the one peak-memory probe of the scripts

GIB = 2**30
METRIC_NAMES = (
    "clip_t", "clip_i", "dino_i", "temporal_consistency", "temporal_flickering", "motion_smoothness", "dynamic_degree",
)
TRAIN_CASES = (
    "train-dualreal-identity", "train-dualreal-motion", "train-lora128-motion", "train-dreamvideo-motion",
    "train-motionbooth-motion",
)
CASES = (
    "infer-base", "infer-dualreal",
    *(c + s for c in TRAIN_CASES for s in ("", "-ckpt")),
    "vae-decode",
    *(f"metric-{m}" for m in METRIC_NAMES),
)
#: Clips per step of each training case in the real job (DualRealConfig / BaselineConfig defaults:
#: 3 clips per motion step; MotionBooth 1; identity steps 1 image).
TARGET_CLIPS = {
    "train-dualreal-identity": 1, "train-dualreal-motion": 3, "train-lora128-motion": 3,
    "train-dreamvideo-motion": 3, "train-motionbooth-motion": 1,
}
#: Smaller T5 (width kept: its output feeds the transformer) and VAE for the cases that use neither
#: (prompt embeddings are inputs of the training step; T5 runs once per prompt).
SMALL_T5 = {"num_layers": 1, "d_ff": 64, "num_heads": 1, "d_kv": 8, "vocab_size": 259}
SMALL_VAE = {"block_out_channels": (16, 16, 16, 16), "layers_per_block": 1, "norm_num_groups": 4}


# ---------------------------------------------------------------------------------------------
# Child process: one case
# ---------------------------------------------------------------------------------------------
def _geometry(args) -> dict:
    lat_f = (args.frames - 1) // 4 + 1
    return dict(frames=args.frames, height=args.height, width=args.width, lat_f=lat_f, lat_h=args.height // 8,
                lat_w=args.width // 8, video_tokens=lat_f * (args.height // 16) * (args.width // 16), text_tokens=226)


def _backbone(args, case: str):
    from dualreal.engine.backbone import load_backbone

    if args.blocks >= 42 and args.device != "cpu":
        return load_backbone(args.backbone, dtype=args.dtype, device=args.device)
    overrides = {"transformer": {"num_layers": args.blocks}, "text_encoder": dict(SMALL_T5)}
    if case != "vae-decode":
        overrides["vae"] = dict(SMALL_VAE)
    return load_backbone(args.backbone, dtype=args.dtype, device=args.device, overrides=overrides,
                         allow_large=args.device != "cpu")


def _encoded_case(bb, geo: dict, clips: int):
    """A synthetic :class:`~dualreal.engine.trainer.EncodedCase` of the real shapes."""
    import torch

    from dualreal.engine.trainer import EncodedCase

    g = torch.Generator().manual_seed(0)
    c = int(bb.transformer.config.in_channels)
    posterior = lambda f: torch.randn(1, 2 * c, f, geo["lat_h"], geo["lat_w"], generator=g) * 0.5  # noqa: E731
    embeds = lambda: torch.randn(1, 226, int(bb.transformer.config.text_embed_dim), generator=g)  # noqa: E731
    return EncodedCase(
        identity_latents=[posterior(1)],
        identity_prompt_embeds=[embeds()],
        motion_latents=[posterior(geo["lat_f"]) for _ in range(clips)],
        motion_prompt_embeds=[embeds() for _ in range(clips)],
        motion_frame_embeds=[torch.randn(geo["frames"], 1024, generator=g) for _ in range(clips)],
        ref_embedding=torch.randn(1, 1024, generator=g),
        scaling_factor=float(bb.vae.config.scaling_factor),
        num_frames=geo["frames"],
    )


def _groups(blocks: int) -> int:
    return next(n for n in (7, 6, 3, 2, 1) if blocks % n == 0)


def _count(params) -> int:
    return sum(p.numel() for p in params)


def run_case(case: str, args) -> dict:
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    geo = _geometry(args)
    t0 = time.perf_counter()
    bb = _backbone(args, case)
    out = {"case": case, "build_seconds": round(time.perf_counter() - t0, 1), "blocks": bb.num_layers}
    memory = PeakMemory(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    if case.startswith("infer"):
        import contextlib

        context = contextlib.nullcontext()
        if case == "infer-dualreal":
            from dualreal.config import DualRealConfig
            from dualreal.method import build_dualreal_model

            model = build_dualreal_model(bb, DualRealConfig(num_groups=_groups(bb.num_layers)), condition_dim=1024)
            out["adapter_params"] = _count(p for ps in model.parameter_groups().values() for p in ps)
            cond = torch.randn(1, 1024, generator=torch.Generator().manual_seed(1)).to(device)
            context = model.attached(condition=cond)  # as DualRealPipeline runs the stock pipeline
        pipe = bb.pipeline()
        memory.start()
        sync()
        t = time.perf_counter()
        with context, torch.no_grad():
            pipe(prompt="a dog * is walking on the beach", num_frames=geo["frames"], height=geo["height"],
                 width=geo["width"], num_inference_steps=1, guidance_scale=6.0, output_type="latent",
                 generator=torch.Generator().manual_seed(0))
        sync()
        out.update(seconds=time.perf_counter() - t, peak_bytes=memory.peak_mib() * 2**20, batch=2)
        return out

    if case == "vae-decode":
        latent_frames = args.vae_latent_frames[0]
        lat = torch.randn(1, latent_frames, 16, geo["lat_h"], geo["lat_w"], generator=torch.Generator().manual_seed(0))
        lat = lat.to(device, bb.dtype)
        pipe = bb.pipeline()
        memory.start()
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            video = pipe.decode_latents(lat)
        sync()
        out.update(seconds=time.perf_counter() - t, peak_bytes=memory.peak_mib() * 2**20, latent_frames=latent_frames,
                   frames=int(video.shape[2]), vae_slicing=bool(bb.vae.use_slicing), vae_tiling=bool(bb.vae.use_tiling))
        return out

    if case.startswith("metric-"):
        return _metric_case(case.removeprefix("metric-"), args, geo, out)

    # Training: one optimiser step through the one trainer
    base = case.removesuffix("-ckpt")
    ckpt = case.endswith("-ckpt")
    clips = 1 if base == "train-dualreal-identity" else min(args.measured_clips, TARGET_CLIPS[base])
    encoded = _encoded_case(bb, geo, max(clips, 1))
    stamps: list[float] = []

    def on_end(info) -> None:
        sync()
        stamps.append(time.perf_counter())

    trainable: dict[str, int] = {}
    memory.start()
    t = time.perf_counter()
    if base.startswith("train-dualreal"):
        trainable = _train_dualreal(bb, encoded, base, clips, ckpt, on_end)
    elif base == "train-lora128-motion":
        trainable = _train_lora(bb, encoded, clips, ckpt, on_end)
    elif base == "train-dreamvideo-motion":
        trainable = _train_dreamvideo(bb, encoded, clips, ckpt, on_end)
    elif base == "train-motionbooth-motion":
        trainable = _train_motionbooth(bb, encoded, clips, ckpt, on_end)
    out.update(seconds=stamps[-1] - t, peak_bytes=memory.peak_mib() * 2**20, clips=clips, checkpointing=ckpt,
               trainable_params=trainable["step"], created_params=trainable["total"])
    return out


def _mixed(bb) -> str:
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(bb.dtype), "no")


def _train_dualreal(bb, encoded, base, clips, ckpt, on_end) -> dict:
    import dataclasses

    from dualreal.config import DualRealConfig
    from dualreal.method import build_dualreal_model, train_dualreal

    kind = "identity" if base.endswith("identity") else "motion"
    cfg = DualRealConfig(num_groups=_groups(bb.num_layers), motion_batch_size=clips, gradient_checkpointing=ckpt).resolve(bb)
    cfg = dataclasses.replace(cfg, train_steps=1, lr_warmup_steps=0, motion_ratio=1.0 if kind == "motion" else 0.0)
    model = build_dualreal_model(bb, cfg, condition_dim=1024)
    groups = model.parameter_groups()
    train_dualreal(bb, model, encoded, cfg, on_step_end=on_end)
    return {"step": _count(p for g in (kind, "controller") for p in groups[g]),
            "total": _count(p for ps in groups.values() for p in ps)}


def _train_lora(bb, encoded, clips, ckpt, on_end) -> dict:
    from baselines.common import shared_weights_copy
    from baselines.lora import LoRAConfig, add_lora
    from dualreal.engine.trainer import CaseBatchSource, train

    cfg = LoRAConfig(rank=128, motion_batch_size=clips, gradient_checkpointing=ckpt).resolve(bb)
    model = shared_weights_copy(bb.transformer)
    params = add_lora(model, "motion", rank=cfg.rank, alpha=cfg.lora_alpha, target_modules=cfg.target_modules, seed=cfg.seed)
    if ckpt:
        model.enable_gradient_checkpointing()
    source = CaseBatchSource(encoded, motion_ratio=1.0, motion_batch_size=clips, condition=False)
    train(model, {"lora": params}, source, noise_scheduler=bb.scheduler, config=cfg.trainer_config("lora-motion", train_steps=1),
          on_step_end=on_end)
    return {"step": _count(params), "total": _count(params)}


def _train_dreamvideo(bb, encoded, clips, ckpt, on_end) -> dict:
    import torch

    from baselines.dreamvideo import DreamVideoConfig, DropoutBatchSource, build_dreamvideo_model
    from dualreal.engine.trainer import CaseBatchSource, train

    cfg = DreamVideoConfig(motion_batch_size=clips, gradient_checkpointing=ckpt).resolve(bb)
    model = build_dreamvideo_model(bb, cfg, condition_dim=1024)
    groups = model.parameter_groups()
    source = DropoutBatchSource(
        CaseBatchSource(encoded, motion_ratio=1.0, motion_batch_size=clips, condition=True),
        empty_prompt_embeds=torch.zeros(1, 226, int(bb.transformer.config.text_embed_dim)),
        text_dropout=cfg.text_dropout, image_dropout=cfg.image_dropout,
    )
    model.identity_enabled, model.motion_enabled = False, True
    if ckpt:
        bb.transformer.enable_gradient_checkpointing()
    with model.attached():
        train(bb.transformer, {"motion": groups["motion"]}, source, noise_scheduler=bb.scheduler, model=model,
              config=cfg.trainer_config("dreamvideo-motion", train_steps=1), on_step_end=on_end)
    return {"step": _count(groups["motion"]), "total": _count(groups["motion"]) + _count(groups["identity"])}


def _train_motionbooth(bb, encoded, clips, ckpt, on_end) -> dict:
    import torch

    from baselines.common import shared_weights_copy
    from baselines.motionbooth import MotionBoothConfig, SubjectAttention, install_subject_attention, trainable_parameter_names
    from dualreal.engine.trainer import CaseBatchSource, train

    cfg = MotionBoothConfig(motion_batch_size=clips, gradient_checkpointing=ckpt).resolve(bb)
    model = shared_weights_copy(bb.transformer)
    # MotionBooth trains float32 clones of the attention projections inside the weight-sharing copy
    modules = dict(model.named_modules())
    params = []
    for name in trainable_parameter_names(model, cfg.trainable):
        owner, _, attr = name.rpartition(".")
        param = torch.nn.Parameter(getattr(modules[owner], attr).detach().float().clone(), requires_grad=True)
        setattr(modules[owner], attr, param)
        params.append(param)
    install_subject_attention(model, SubjectAttention(layers=None))  # records nothing on motion steps
    if ckpt:
        model.enable_gradient_checkpointing()
    source = CaseBatchSource(encoded, motion_ratio=1.0, motion_batch_size=clips, condition=False)
    train(model, {"attention": params}, source, noise_scheduler=bb.scheduler,
          config=cfg.trainer_config("motionbooth", train_steps=1), on_step_end=on_end)
    return {"step": _count(params), "total": _count(params)}


def _metric_case(metric: str, args, geo: dict, out: dict) -> dict:
    import torch

    from benchmark.scorer import Scorer

    g = torch.Generator().manual_seed(0)
    n = args.metric_frames
    frames = torch.randint(0, 256, (n, geo["height"], geo["width"], 3), generator=g, dtype=torch.uint8)
    ref = torch.randint(0, 256, (geo["height"], geo["width"], 3), generator=g, dtype=torch.uint8)
    for mode, (batch, pairs) in (("batched", (32, 8)), ("frame_by_frame", (1, 1))):
        memory = PeakMemory(torch.device(args.device))
        memory.start()  # the first mode's peak includes the encoder's weights (cached for the second)
        scorer = Scorer([metric], random_weights=True, random_arch="full", device=args.device, batch_size=batch,
                        pair_batch_size=pairs)
        row = scorer.score(frames, fps=8.0, prompt="a dog * is walking", ref_images=[ref])
        out[mode] = {"seconds": row["score_seconds"], "fps": n / row["score_seconds"], "frames": n,
                     "peak_bytes": memory.peak_mib() * 2**20, "value": row[metric], "batch_size": batch, "pair_batch_size": pairs}
    out.update(seconds=out["batched"]["seconds"], peak_bytes=out["batched"]["peak_bytes"])
    return out


# ---------------------------------------------------------------------------------------------
# Parent: run the cases, extrapolate, print, write JSON
# ---------------------------------------------------------------------------------------------
def _published(source: str) -> dict:
    from dualreal.engine.backbone import PUBLISHED_CONFIGS, RANDOM_PRESETS

    return PUBLISHED_CONFIGS[RANDOM_PRESETS.get(source, source)]


def _layers(source: str) -> int:
    return int(_published(source)["transformer"]["num_layers"])


def _plan_bytes(args) -> dict:
    """Exact weight bytes (meta device) of the full backbone per component, in the measured dtype
    and in bf16."""
    from dualreal.engine.backbone import backbone_memory_plan

    out = {}
    for dtype in dict.fromkeys((args.dtype, "bf16")):
        full = backbone_memory_plan(args.backbone, dtype=dtype, device="meta")
        out[dtype] = {"backbone": full.total_bytes, "components": full.weight_bytes, "parameters": full.parameters}
    return out


def _full_size_parameters(source: str, case: str) -> dict:
    """Parameters of ``case`` on the full-size transformer, built on the meta device with the
    method's own builder: ``step`` (trained in this step) and ``total`` (created by the method)."""
    from dualreal.engine.backbone import load_backbone

    bb = load_backbone(source, device="meta")
    base = case.removesuffix("-ckpt")
    if base.startswith("train-dualreal") or base == "infer-dualreal":
        from dualreal.config import DualRealConfig
        from dualreal.method import build_dualreal_model

        groups = build_dualreal_model(bb, DualRealConfig(), condition_dim=1024).parameter_groups()
        kind = "identity" if base.endswith("identity") else "motion"
        return {"step": _count(p for g in (kind, "controller") for p in groups[g]),
                "total": _count(p for ps in groups.values() for p in ps)}
    if base == "train-lora128-motion":
        from baselines.lora import add_lora

        n = _count(add_lora(bb.transformer, "motion", rank=128, alpha=128.0))
        return {"step": n, "total": n}
    if base == "train-dreamvideo-motion":
        from baselines.dreamvideo import DreamVideoConfig, build_dreamvideo_model

        groups = build_dreamvideo_model(bb, DreamVideoConfig().resolve(bb), condition_dim=1024).parameter_groups()
        return {"step": _count(groups["motion"]), "total": _count(groups["motion"]) + _count(groups["identity"])}
    from baselines.motionbooth import trainable_parameter_names

    named = dict(bb.transformer.named_parameters())
    n = sum(named[name].numel() for name in trainable_parameter_names(bb.transformer, "attn"))
    return {"step": n, "total": n}


def extrapolate(r: dict, args, plan: dict, geo: dict) -> dict:
    """Figures at the full depth and clip count, with the formula that produced them.

    Notation: ``L`` = the preset's blocks (42 at 5B), ``k`` = measured blocks, ``B`` / ``b`` = clips
    per step in the job / measured, ``W`` = the whole backbone's weights on the device (transformer +
    T5 + VAE, exact from the meta-device plan), ``Pc`` / ``Ps`` = parameters the method creates /
    trains in this step at ``L`` blocks (exact, meta device; float32: 4 bytes each, plus 12 for the
    gradient and the two AdamW moments of each trained one), ``Δ`` = the measured peak above the
    built backbone, ``A = Δ − 4·Pc_k − 12·Ps_k`` = activations and transients (the method's own
    parameters, gradients and moments at ``k`` blocks taken out), ``c = b·(n_v + n_t)·C·s`` = the
    inputs gradient checkpointing keeps for each further block (video and text hidden states, ``s``
    bytes per element). Two bf16 figures: ``peak_gib_bf16_weights`` takes ``W`` in bf16 and keeps the
    activations as measured (conservative for a float32 measurement: under bf16 autocast a saved
    tensor is bf16 or stays float32, it does not grow); ``peak_gib_bf16`` also scales ``A`` and ``c`` by
    2/4 (a projection: LayerNorm outputs stay float32 under autocast, so the truth lies between).
    """
    case = r["case"]
    k, L = r["blocks"], _layers(args.backbone)
    s = 4 if args.dtype == "fp32" else 2
    W = {d: plan[d]["backbone"] for d in plan}
    if case.startswith("metric"):
        return {"peak_gib": r["peak_bytes"] / GIB, "seconds": r["seconds"], "formula": "measured: the encoders are full size"}
    if k == L:
        return {"peak_gib": (W[args.dtype] + r["peak_bytes"]) / GIB, "seconds": r["seconds"],
                "formula": "W + Δ, measured on the full model"}
    if case.startswith("infer"):
        pc = _full_size_parameters(args.backbone, case)["total"] if case == "infer-dualreal" else 0
        return {
            "peak_gib": (W[args.dtype] + 4 * pc + r["peak_bytes"]) / GIB,
            "peak_gib_bf16_weights": (W["bf16"] + 4 * pc + r["peak_bytes"]) / GIB,
            "peak_gib_bf16": (W["bf16"] + 4 * pc + r["peak_bytes"] * 2 / s) / GIB,
            "seconds": r["seconds"] * L / k,
            "formula": f"W + 4·Pc + Δ (blocks run one after another: one block's activations at a time); t·{L}/{k}",
        }
    base = case.removesuffix("-ckpt")
    B, b = TARGET_CLIPS[base], r["clips"]
    full = _full_size_parameters(args.backbone, case)
    A = r["peak_bytes"] - 4 * r["created_params"] - 12 * r["trainable_params"]
    frames = 1 if base.endswith("identity") else geo["lat_f"]
    C = int(_published(args.backbone)["transformer"]["num_attention_heads"]) * 64
    c = b * (frames * (geo["height"] // 16) * (geo["width"] // 16) + geo["text_tokens"]) * C * s
    if r["checkpointing"]:
        act = (A + (L - k) * c) * B / b
        formula = f"W + 4·Pc + 12·Ps + (A + ({L}−{k})·c)·B/b, c = {c / 2**20:.0f} MiB; t·{L}/{k}·B/b"
    else:
        act = A * (L / k) * (B / b)
        formula = f"W + 4·Pc + 12·Ps + A·{L}/{k}·B/b; t·{L}/{k}·B/b"
    states = 4 * full["total"] + 12 * full["step"]
    return {
        "peak_gib": (W[args.dtype] + states + act) / GIB,
        "peak_gib_bf16_weights": (W["bf16"] + states + act) / GIB,
        "peak_gib_bf16": (W["bf16"] + states + act * 2 / s) / GIB,
        "seconds": r["seconds"] * (L / k) * (B / b),
        "formula": formula,
        "params_created_full": full["total"],
        "params_trained_full": full["step"],
        "clips_job": B,
        "clips_measured": b,
        "activations_measured_gib": A / GIB,
        "checkpoint_inputs_per_block_mib": c / 2**20,
    }


def _vae_extrapolation(rs: list[dict], geo: dict, args) -> dict:
    """Linear in the VAE's frame batches: the first batch decodes 3 latent frames (with an odd count),
    each further batch 2 (diffusers' ``num_latent_frames_batch_size``)."""
    by = {r["latent_frames"]: r for r in rs}
    target = geo["lat_f"]
    if target in by:
        r = by[target]
        return {"peak_gib": r["peak_bytes"] / GIB, "seconds": r["seconds"], "formula": "measured (all latent frames)"}
    lo, hi = min(by), max(by)
    batches = lambda f: 1 + max(f - 3, 0) // 2  # noqa: E731
    steps = batches(hi) - batches(lo)
    if steps < 1:
        return {"formula": f"not extrapolated: latent frames {sorted(by)} are one frame batch; measure e.g. 3 and 5"}
    per_t = (by[hi]["seconds"] - by[lo]["seconds"]) / steps
    per_m = (by[hi]["peak_bytes"] - by[lo]["peak_bytes"]) / steps
    n = batches(target) - batches(lo)
    return {
        "peak_gib": (by[lo]["peak_bytes"] + n * per_m) / GIB,
        "seconds": by[lo]["seconds"] + n * per_t,
        "formula": f"x({lo}) + {n}·(x({hi}) − x({lo}))/{steps}: linear in frame batches (latent frames {lo}, {hi} measured)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="cogvideox-5b-random", help="a random preset (cogvideox-5b-random, cogvideox-2b-random)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="default: fp32 on CPU, bf16 on GPU")
    parser.add_argument("--blocks", type=int, default=None, help="transformer blocks (default: 1 on CPU, all on GPU)")
    parser.add_argument("--measured-clips", type=int, default=None, help="clips measured per motion step (default: 1 on CPU, "
                        "3 on GPU); figures are scaled linearly to the job's clips")
    parser.add_argument("--vae-latent-frames", type=int, nargs="+", default=None,
                        help="latent frames decoded (default: 13 on GPU; 3 and 5 on CPU, extrapolated to 13)")
    parser.add_argument("--metric-frames", type=int, default=None,
                        help="frames of the scored video (default: 49 on GPU, 5 on CPU: frames per second are per frame)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), help=f"subset of: {' '.join(CASES)}")
    parser.add_argument("--quick", action="store_true", help="9 frames at 256×384 (1,152 + 226 tokens): a development run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    gpu = args.device != "cpu"
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.blocks = args.blocks or (_layers(args.backbone) if gpu else 1)
    args.measured_clips = args.measured_clips or (3 if gpu else 1)
    args.vae_latent_frames = args.vae_latent_frames or ([13] if gpu else [3, 5])
    args.metric_frames = args.metric_frames or (49 if gpu else 5)
    args.frames, args.height, args.width = (9, 256, 384) if args.quick else (49, 480, 720)
    if args.quick and not gpu:
        args.vae_latent_frames = [1, 3] if args.vae_latent_frames == [3, 5] else args.vae_latent_frames

    if args.case:  # child process: one measurement, JSON on the last line
        print(json.dumps(run_case(args.case, args)), flush=True)
        return

    unknown = sorted(set(args.cases) - set(CASES))
    if unknown:
        sys.exit(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    geo = _geometry(args)
    plan = _plan_bytes(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    results: list[dict] = []
    common = ["--backbone", args.backbone, "--device", args.device, "--dtype", args.dtype, "--blocks", str(args.blocks),
              "--measured-clips", str(args.measured_clips), "--threads", str(args.threads),
              "--metric-frames", str(args.metric_frames)]
    if args.quick:
        common.append("--quick")
    for case in [c for c in CASES if c in args.cases]:
        runs = [[f"--vae-latent-frames={n}"] for n in args.vae_latent_frames] if case == "vae-decode" else [[]]
        for extra in runs:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, *common, *extra, "--case", case], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            if proc.returncode:
                print(f"{case} FAILED ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}", flush=True)
                results.append({"case": case, "failed": proc.stderr[-2000:]})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["wall_seconds"] = round(time.perf_counter() - t0, 1)
            results.append(r)
            print(f"{case:32s} {r['seconds']:9.1f} s   peak +{r['peak_bytes'] / GIB:6.2f} GiB   (build {r['build_seconds']} s, "
                  f"wall {r['wall_seconds']} s)", flush=True)
            if args.json:  # after every case: a long CPU run keeps what it measured
                args.json.write_text(json.dumps(_summary(results, args, plan, geo, started), indent=2, default=str) + "\n")

    summary = _summary(results, args, plan, geo, started)
    print()
    print(table(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _summary(results: list[dict], args, plan: dict, geo: dict, started) -> dict:
    import torch

    gpu = args.device != "cpu"
    rows = []
    vae = [r for r in results if r["case"] == "vae-decode" and "failed" not in r]
    for r in results:
        if "failed" in r or r["case"] == "vae-decode":
            continue
        rows.append({**r, "full": extrapolate(r, args, plan, geo)})
    if vae:
        rows.append({"case": "vae-decode", "measured": vae, "full": _vae_extrapolation(vae, geo, args),
                     "seconds": vae[-1]["seconds"], "peak_bytes": vae[-1]["peak_bytes"]})

    return {
        "random_weights": True,
        "backbone": args.backbone,
        "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device) if gpu else platform.processor() or platform.machine(),
        "dtype": args.dtype,
        "measured_blocks": args.blocks,
        "full_blocks": _layers(args.backbone),
        "geometry": geo,
        "measured_clips": args.measured_clips,
        "threads": args.threads or torch.get_num_threads(),
        "metric_frames": args.metric_frames,
        "torch": torch.__version__,
        "date": started.isoformat(timespec="seconds"),
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "extrapolated": args.blocks < _layers(args.backbone),
        "weights_gib": {d: {"backbone": v["backbone"] / GIB, **{k: b / GIB for k, b in v["components"].items()}}
                        for d, v in plan.items()},
        "parameters": plan[args.dtype]["parameters"],
        "cases": rows,
        "failed": [r for r in results if "failed" in r],
    }


def table(summary: dict) -> str:
    """The one table: measured figures, and the full-size figure with its formula."""
    kind = "measured" if not summary["extrapolated"] else f"extrapolated from {summary['measured_blocks']} block(s)"
    head = (f"{summary['backbone']} (random weights) · {summary['device']} {summary['dtype']} · "
            f"{summary['geometry']['frames']}×{summary['geometry']['height']}×{summary['geometry']['width']} · "
            f"{summary['geometry']['video_tokens']} + {summary['geometry']['text_tokens']} tokens · torch {summary['torch']} · "
            f"{summary['date']} · full size {kind}")
    lines = [head, "",
             f"| case | measured: time s | measured: peak +GiB | full: peak GiB ({summary['dtype']}) | "
             "full: bf16 weights, activations as measured | full: bf16 projection | full: time s | formula |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]

    def gib(f: dict, key: str) -> str:
        return f"{f[key]:.1f}" if key in f else "—"

    for r in summary["cases"]:
        f = r["full"]
        clips = f" ({r['clips']} clip{'s' if r['clips'] != 1 else ''} measured)" if "clips" in r else ""
        if r["case"] == "vae-decode":
            clips = f" (latent frames {', '.join(str(m['latent_frames']) for m in r['measured'])} measured; time, peak: the last)"
        lines.append(f"| {r['case']}{clips} | {r['seconds']:.1f} | {r['peak_bytes'] / GIB:.2f} | {gib(f, 'peak_gib')} | "
                     f"{gib(f, 'peak_gib_bf16_weights')} | {gib(f, 'peak_gib_bf16')} | {f.get('seconds', float('nan')):.0f} | "
                     f"{f.get('formula', '')} |")
    metrics = [r for r in summary["cases"] if r["case"].startswith("metric-")]
    if metrics:
        lines += ["", f"| metric ({summary['metric_frames']} frames at {summary['geometry']['height']}×{summary['geometry']['width']}) "
                  "| batched: frames/s | frame by frame: frames/s | batched peak +GiB (encoder included) |", "|---|---:|---:|---:|"]
        for r in metrics:
            lines.append(f"| {r['case'].removeprefix('metric-')} | {r['batched']['fps']:.2f} | {r['frame_by_frame']['fps']:.2f} | "
                         f"{r['batched']['peak_bytes'] / GIB:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
