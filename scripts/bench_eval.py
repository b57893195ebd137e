#!/usr/bin/env python
"""Benchmark the one scorer against the naive way, on real clips, with identical weights.

* scorer: ``benchmark.scorer.Scorer`` — each video decoded once, frames batched through each
  encoder, CLIP-I/T-Cons sharing one pass, reference embeddings cached.
* naive: each metric decodes the video itself and runs its model frame by frame (one frame or one
  frame pair per call), references re-embedded for every video.

The scorer's time per metric is its compute entry's, including shared work it triggered first
(T-Cons reuses CLIP-I's frame embeddings, so it shows almost nothing). Data: the official DualReal
"dog playing guitar" sample (``--data``, default ``../shared/data/samples/dualreal-official``).

Each way runs in its own child process (so peak memory is its own); the parent asserts that both
produced the same numbers and prints videos/s, seconds per stage and peak RSS.

    .venv/bin/python scripts/bench_eval.py --n 3 --max-frames 25                 # small random nets
    .venv/bin/python scripts/bench_eval.py --n 2 --max-frames 13 --random-arch full
    .venv/bin/python scripts/bench_eval.py --n 15 --weights-dir /path/to/weights --device cuda

Not a test: it takes minutes on CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "samples" / "dualreal-official"  # default of --data
METRIC_NAMES = ("clip_t", "clip_i", "dino_i", "temporal_consistency", "temporal_flickering", "motion_smoothness", "dynamic_degree")
PROMPT = "a dog * is playing guitar"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _scorer(args):
    from benchmark.scorer import Scorer

    kw = dict(random_weights=True, random_arch=args.random_arch) if args.weights_dir is None else dict(weights_dir=args.weights_dir)
    return Scorer(list(METRIC_NAMES), device=args.device, **kw)


def run_fast(args, clips, refs_dir) -> dict:
    from benchmark.grid import reference_images
    from benchmark.media import read_video

    scorer = _scorer(args)
    refs = reference_images(refs_dir)
    t0 = time.perf_counter()
    values = {}
    for p in clips:
        td = time.perf_counter()
        frames, fps = read_video(p, max_frames=args.max_frames)
        scorer.timings["decode"] += time.perf_counter() - td
        row = scorer.score(frames, fps, prompt=PROMPT, ref_images=refs)
        values[p] = {m: row[m] for m in METRIC_NAMES}
    total = time.perf_counter() - t0
    return {"values": values, "seconds": total, "timings": dict(scorer.timings), "weights": scorer.provenance["metric_weights"]}


def run_naive(args, clips, refs_dir) -> dict:
    import torch

    from benchmark.media import read_video
    from benchmark.metrics.clip_i import clip_i_score
    from benchmark.metrics.clip_t import clean_prompt, clip_t_score
    from benchmark.metrics.dino_i import dino_i_score
    from benchmark.metrics.dynamic_degree import dynamic_degree_per_pair
    from benchmark.metrics.motion_smoothness import motion_smoothness_score
    from benchmark.metrics.temporal_consistency import temporal_consistency_score
    from benchmark.metrics.temporal_flickering import temporal_flickering_score
    from benchmark.grid import reference_images

    scorer = _scorer(args)  # only for its encoders: the same weights as the fast way
    enc = scorer._encoder
    timings: dict[str, float] = {}

    def one_by_one(encoder, frames):
        return torch.cat([encoder.encode_images(f[None], batch_size=1) for f in frames])

    def timed(name, fn, path):
        t = time.perf_counter()
        frames, fps = read_video(path, max_frames=args.max_frames)  # each metric decodes for itself
        value = fn(frames, fps)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
        return value

    def clip_t(frames, fps):
        text = enc("clip_openai").encode_text([clean_prompt(PROMPT)])
        return clip_t_score(text, one_by_one(enc("clip_openai"), frames))

    def clip_i(frames, fps):
        refs = reference_images(refs_dir)
        return clip_i_score(one_by_one(enc("clip_laion400m"), frames), one_by_one(enc("clip_laion400m"), refs))

    def dino_i(frames, fps):
        refs = reference_images(refs_dir)
        return dino_i_score(one_by_one(enc("dino_vits16"), frames), one_by_one(enc("dino_vits16"), refs))

    fns = {
        "clip_t": clip_t,
        "clip_i": clip_i,
        "dino_i": dino_i,
        "temporal_consistency": lambda f, fps: temporal_consistency_score(one_by_one(enc("clip_laion400m"), f)),
        "temporal_flickering": lambda f, fps: temporal_flickering_score(f),
        "motion_smoothness": lambda f, fps: motion_smoothness_score(f, enc("amt_s"), batch_size=1, device=args.device),
        "dynamic_degree": lambda f, fps: float(
            dynamic_degree_per_pair(f, fps, enc("raft_large"), pad_multiple=8, batch_size=1, device=args.device).mean()
        ),
    }
    t0 = time.perf_counter()
    values = {p: {m: timed(m, fns[m], p) for m in METRIC_NAMES} for p in clips}
    total = time.perf_counter() - t0
    return {"values": values, "seconds": total, "timings": timings, "weights": scorer.provenance["metric_weights"]}


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    clips = sorted(str(p) for p in (data / "motion" / "playingGuitar" / "videos").glob("*.avi"))[: args.n]
    refs_dir = data / "identity" / "dog"
    result = (run_fast if args.mode == "fast" else run_naive)(args, clips, refs_dir)
    if args.device.startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["peak_rss_mb"] = _peak_rss_mb()
    Path(args.json).write_text(json.dumps(result))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="folder with identity/dog and motion/playingGuitar/videos")
    ap.add_argument("--n", type=int, default=3, help="number of playingGuitar clips (max 15)")
    ap.add_argument("--max-frames", type=int, default=None, help="decode at most this many frames per clip")
    ap.add_argument("--random-arch", choices=("full", "small"), default="small")
    ap.add_argument("--weights-dir", default=None, help="real weights instead of random ones")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each child")
    ap.add_argument("--tolerance", type=float, default=1e-6, help="max |scorer - naive| allowed per value")
    ap.add_argument("--mode", choices=("fast", "naive"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        child(args)
        return 0

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("fast", "naive"):
            out = Path(tmp) / f"{mode}.json"
            cmd = [sys.executable, __file__, "--mode", mode, "--json", str(out), "--data", args.data, "--n", str(args.n),
                   "--random-arch", args.random_arch, "--device", args.device, "--threads", str(args.threads)]
            if args.max_frames:
                cmd += ["--max-frames", str(args.max_frames)]
            if args.weights_dir:
                cmd += ["--weights-dir", args.weights_dir]
            subprocess.run(cmd, check=True, cwd=ROOT)
            results[mode] = json.loads(out.read_text())
    fast, naive = results["fast"], results["naive"]
    assert fast["weights"] == naive["weights"], "the two ways used different weights"
    worst = {m: max(abs(fast["values"][p][m] - naive["values"][p][m]) for p in fast["values"]) for m in METRIC_NAMES}
    n = len(fast["values"])
    print(f"{n} clips, max_frames={args.max_frames}, weights: {fast['weights'] or 'none'}, threads={args.threads}, device={args.device}")
    print(f"{'':24}{'scorer':>10}{'naive':>10}   max |diff|")
    for m in METRIC_NAMES:
        print(f"  {m:22}{fast['timings'].get(m, 0.0):9.2f}s{naive['timings'][m]:9.2f}s   {worst[m]:.2e}")
    print(f"  {'decode':22}{fast['timings'].get('decode', 0.0):9.2f}s{'(in each)':>10}")
    print(f"  {'total':22}{fast['seconds']:9.2f}s{naive['seconds']:9.2f}s   speed-up x{naive['seconds'] / fast['seconds']:.2f}")
    print(f"  videos/s: scorer {n / fast['seconds']:.3f}, naive {n / naive['seconds']:.3f}")
    print(f"  peak RSS: scorer {fast['peak_rss_mb']:.0f} MiB, naive {naive['peak_rss_mb']:.0f} MiB"
          + (f"; CUDA peak: scorer {fast['cuda_peak_mb']:.0f} MiB, naive {naive['cuda_peak_mb']:.0f} MiB" if "cuda_peak_mb" in fast else ""))
    bad = {m: d for m, d in worst.items() if not d <= args.tolerance}
    assert not bad, f"scorer and naive differ beyond {args.tolerance}: {bad}"
    print(f"identical outputs (every value within {args.tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
