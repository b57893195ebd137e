"""Cost of DualReal at CogVideoX-5B width: inference overhead of the adapters + controller, and
one training step of DualReal vs LoRA rank 128 on the same blocks.

The transformer is the stock diffusers ``CogVideoXTransformer3DModel`` at 5B width (48 heads × 64 =
3072, time embedding 512, T5 width 4096, rotary) with random weights and only ``--blocks`` blocks, and
a token count that fits a CPU (``--latent-*`` and ``--text-tokens``; the real model has 42 blocks and
17,550 + 226 tokens). Every measurement runs in its own subprocess so that peak memory is its own:

* ``infer-base`` / ``infer-dualreal``: one denoising step (batch 2 = the two guidance branches,
  no grad) of the base transformer vs with the DA-Block adapters and the StageBlender controller;
* ``train-dualreal`` / ``train-lora``: one optimiser step through the shared trainer
  (:func:`dualreal.engine.trainer.train`: forward, v-loss, backward, gradient mask, AdamW) of DualReal
  (adapters + controller, a motion step with a reference-image condition) vs a peft LoRA of rank 128
  on ``to_q, to_k, to_v, to_out.0`` (the LoRA baseline's recipe).

Time: the fastest of ``--repeats`` measured steps after one warm-up step, and the fastest over
``--rounds`` rounds that run the four cases in turn (on a shared machine the minimum is the least
disturbed by other load; interleaving puts every case in the same conditions). Peak memory: what the steps
(warm-up included, so AdamW state and first-use allocations count) add on top of the built model:
CPU — the process's resident high-water mark above its resident size before the first step
(``/proc/self/clear_refs``); CUDA — ``torch.cuda.max_memory_allocated`` above the allocation before
the first step.

Usage::

    .venv/bin/python scripts/bench_dualreal.py                      # CPU defaults
    .venv/bin/python scripts/bench_dualreal.py --device cuda --dtype bf16 --blocks 42 \\
        --latent-frames 13 --latent-height 60 --latent-width 90    # the real geometry on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = ("infer-base", "infer-dualreal", "train-dualreal", "train-lora")


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory above the level at :meth:`start`, in MiB."""

    def __init__(self, device):
        self.device = device

    def start(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")  # reset VmHWM to the current RSS
            except OSError:
                pass
            self.base = _rss_kb("VmRSS:") * 1024

    def peak_mib(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (_rss_kb("VmHWM:") * 1024 - self.base) / 2**20


def build(args):
    import torch
    from diffusers import CogVideoXDPMScheduler, CogVideoXTransformer3DModel

    from dualreal.engine.backbone import DTYPES, TINY_PRESET

    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    tr = CogVideoXTransformer3DModel(
        num_attention_heads=48, attention_head_dim=64, time_embed_dim=512, text_embed_dim=4096,
        num_layers=args.blocks, use_rotary_positional_embeddings=True, max_text_seq_length=args.text_tokens,
        sample_height=args.latent_height, sample_width=args.latent_width,
    )
    tr = tr.to(device=args.device, dtype=dtype).eval().requires_grad_(False)
    sched = CogVideoXDPMScheduler(**TINY_PRESET["scheduler"])
    return tr, sched, dtype


def dualreal_model(tr, args, num_groups):
    from types import SimpleNamespace

    from dualreal.config import DualRealConfig
    from dualreal.method import build_dualreal_model

    cfg = DualRealConfig(num_groups=num_groups)
    return build_dualreal_model(SimpleNamespace(transformer=tr), cfg, condition_dim=1024)


def run_case(case: str, args) -> dict:
    import torch

    from dualreal.engine.trainer import TrainBatch, TrainerConfig, rotary_embeddings, train

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    tr, sched, dtype = build(args)
    groups = next(n for n in (7, 6, 4, 3, 2, 1) if args.blocks % n == 0)
    g = torch.Generator().manual_seed(1)
    f, h, w = args.latent_frames, args.latent_height, args.latent_width
    memory = PeakMemory(device)
    out = {"case": case}

    if case.startswith("infer"):
        batch = 2  # [unconditional; conditional]
        x = torch.randn(batch, f, 16, h, w, generator=g).to(device, dtype)
        text = torch.randn(batch, args.text_tokens, 4096, generator=g).to(device, dtype)
        t = torch.tensor([500] * batch, device=device)
        rot = rotary_embeddings(tr.config, f, h, w, device)
        model = None
        if case == "infer-dualreal":
            model = dualreal_model(tr, args, groups)
            model.adapters.to(dtype)
            model.controller.to(dtype)
            model.attach()
            out["trainable_params"] = sum(p.numel() for ps in model.parameter_groups().values() for p in ps)
        cond = torch.randn(1, 1024, generator=g).to(device, dtype)
        times = []
        memory.start()
        with torch.no_grad():
            for i in range(args.repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                if model is not None:
                    with model.attached(condition=cond):
                        tr(x, text, t, image_rotary_emb=rot, return_dict=False)
                else:
                    tr(x, text, t, image_rotary_emb=rot, return_dict=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i:
                    times.append(time.perf_counter() - t0)
        out.update(seconds=min(times), peak_mib=memory.peak_mib())
        return out

    # training: one optimiser step through the shared trainer
    batch = args.train_batch

    class Source:
        def next_kind(self, step, generator):
            return "motion"

        def next_batch(self, kind, generator):
            kwargs = {"condition": torch.randn(batch, 1024, generator=generator)} if case == "train-dualreal" else {}
            return TrainBatch(
                kind=kind,
                latents=torch.randn(batch, f, 16, h, w, generator=generator),
                prompt_embeds=torch.randn(batch, args.text_tokens, 4096, generator=generator),
                model_kwargs=kwargs,
            )

    if case == "train-dualreal":
        model = dualreal_model(tr, args, groups)
        params = model.parameter_groups()
        mask = lambda kind: {"motion", "controller"}  # noqa: E731 - a motion step of the joint run
    else:
        from peft import LoraConfig

        tr.add_adapter(LoraConfig(r=128, lora_alpha=128, init_lora_weights=True,
                                  target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        lora = [p for n, p in tr.named_parameters() if "lora_" in n]
        for p in lora:
            p.data = p.data.float()
            p.requires_grad_(True)
        model, params, mask = tr, {"lora": lora}, None
    out["trainable_params"] = sum(p.numel() for ps in params.values() for p in ps)
    out["controller_params"] = sum(p.numel() for p in params.get("controller", []))
    stamps = []

    def on_end(info):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    memory.start()
    mixed = {"fp32": "no", "float32": "no"}.get(args.dtype, args.dtype if args.dtype in ("bf16", "fp16") else "no")
    with (model.attached() if case == "train-dualreal" else _null()):
        train(tr, params, Source(), noise_scheduler=sched, model=model, active_groups=mask, on_step_end=on_end,
              config=TrainerConfig(train_steps=args.repeats + 1, lr_warmup_steps=0, mixed_precision=mixed,
                                   device=args.device))
    out.update(seconds=min(b - a for a, b in zip(stamps, stamps[1:])), peak_mib=memory.peak_mib())
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=2, help="transformer blocks (5B: 42)")
    parser.add_argument("--latent-frames", type=int, default=2, help="latent frames (5B: 13)")
    parser.add_argument("--latent-height", type=int, default=16, help="latent height (5B: 60)")
    parser.add_argument("--latent-width", type=int, default=24, help="latent width (5B: 90)")
    parser.add_argument("--text-tokens", type=int, default=226, help="T5 tokens (5B: 226)")
    parser.add_argument("--train-batch", type=int, default=1, help="clips per training step (paper: 3)")
    parser.add_argument("--repeats", type=int, default=3, help="measured steps (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the four cases (fastest kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; 1 is the "
                        "steadiest on a shared CPU)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # child process: one measurement, JSON on the last line
        print(json.dumps(run_case(args.case, args)), flush=True)
        return

    argv = [a for a in sys.argv[1:] if not a.startswith("--json")]
    if args.json:
        argv = [a for a in argv if a != str(args.json)]
    argv = [a for i, a in enumerate(argv) if not a.startswith("--rounds") and not (i and argv[i - 1] == "--rounds")]
    results: dict[str, dict] = {}
    for rnd in range(args.rounds):
        for case in CASES:
            proc = subprocess.run([sys.executable, __file__, *argv, "--case", case], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
            if proc.returncode:
                sys.exit(f"{case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"round {rnd + 1}  {case:15s} {r['seconds'] * 1000:9.1f} ms   peak {r['peak_mib']:8.1f} MiB"
                  + (f"   trainable {r['trainable_params'] / 1e6:7.2f} M" if "trainable_params" in r else ""), flush=True)
            best = results.setdefault(case, r)
            best["seconds"] = min(best["seconds"], r["seconds"])
            best["peak_mib"] = max(best["peak_mib"], r["peak_mib"])

    tokens = args.latent_frames * (args.latent_height // 2) * (args.latent_width // 2) + args.text_tokens
    ib, idr = results["infer-base"], results["infer-dualreal"]
    td, tl = results["train-dualreal"], results["train-lora"]
    summary = {
        "geometry": dict(blocks=args.blocks, width=3072, heads=48, tokens=tokens, device=args.device, dtype=args.dtype,
                         train_batch=args.train_batch),
        "results": results,
        "inference_step_ratio_dualreal_over_base": idr["seconds"] / ib["seconds"],
        "inference_peak_memory_ratio": idr["peak_mib"] / max(ib["peak_mib"], 1e-9),
        "train_step_ratio_dualreal_over_lora128": td["seconds"] / tl["seconds"],
        "train_peak_memory_ratio_dualreal_over_lora128": td["peak_mib"] / max(tl["peak_mib"], 1e-9),
        "trainable_params_ratio_dualreal_over_lora128": td["trainable_params"] / tl["trainable_params"],
    }
    # the same counts at 42 blocks: per-block parts scale, the controller does not
    per_block_dr = (td["trainable_params"] - td["controller_params"]) / args.blocks
    summary["trainable_params_42_blocks"] = {
        "dualreal": int(per_block_dr * 42 + td["controller_params"]),
        "lora128": int(tl["trainable_params"] / args.blocks * 42),
    }
    print(f"\n{args.blocks} blocks at 5B width, {tokens} tokens ({args.device}, {args.dtype}):")
    print(f"  denoising step, DualReal / base         : {summary['inference_step_ratio_dualreal_over_base']:.3f}×"
          f"  (peak memory {summary['inference_peak_memory_ratio']:.2f}×)")
    print(f"  training step, DualReal / LoRA rank 128  : {summary['train_step_ratio_dualreal_over_lora128']:.3f}×"
          f"  (peak memory {summary['train_peak_memory_ratio_dualreal_over_lora128']:.2f}×)")
    print(f"  trainable parameters, DualReal / LoRA-128: {summary['trainable_params_ratio_dualreal_over_lora128']:.3f}×"
          " (on these blocks; the controller is counted once)")
    at42 = summary["trainable_params_42_blocks"]
    print(f"  trainable parameters at 42 blocks        : DualReal {at42['dualreal'] / 1e6:.1f} M, "
          f"LoRA-128 {at42['lora128'] / 1e6:.1f} M")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
