"""The run loop: for each case, fit the method, then generate → write mp4 → score → record.

Guarantees:

* **Resume.** A (method, case, prompt, seed) with an ``ok`` record is never redone; a case whose
  videos are all recorded is not even fitted again. Failed items are retried on the next run.
* **Crash safety.** Videos, extras, checkpoints and records are written to temp files and renamed
  into place, and the record is written last, so after ``kill -9`` at any moment no half-written
  file is accepted and nothing finished is lost.
* **Sharding.** Under ``accelerate launch --num_processes N`` (or any torch.distributed launcher that
  sets ``RANK``/``WORLD_SIZE``) each process takes every N-th case; processes share the runs folder
  (also across nodes on a shared filesystem) and never write the same file. A per-case lock file
  keeps two independent runs into one ``--out`` from working on the same case at once.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from benchmark import __version__
from benchmark.grid import Case, decode_case, filter_cases, load_grid
from benchmark.media import DECODER, MediaError, read_image, write_video
from benchmark.registry import create_method
from benchmark.store import read_json, record_path, video_path, write_json, write_record
from dualreal.engine.protocol import GenerationSettings

__all__ = ["RunConfig", "RunSummary", "run", "shard_of"]


@dataclass
class RunConfig:
    """Everything ``dualbench run`` takes. ``None`` geometry means the backbone's defaults."""

    method: str
    grid: str = "smoke"
    data_root: Path | None = None
    backbone: str = "tiny"
    out: Path = Path("runs")
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float = 6.0
    fps: int = 8
    train_steps: int | None = None
    cases: list[str] | None = None
    max_cases: int | None = None
    max_prompts: int | None = None
    seeds: list[int] | None = None
    max_clips: int | None = None
    score: bool = True
    metrics: list[str] | None = None
    weights_dir: Path | None = None
    random_metric_weights: bool | None = None
    dd_pad_multiple: int = 8
    random_arch: str = "small"
    dtype: str = "fp32"
    device: str = "cpu"
    method_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    cases: int = 0
    errors: list[str] = field(default_factory=list)


def shard_of(items: list, rank: int, world: int) -> list:
    """Every ``world``-th item starting at ``rank``: a fixed, disjoint, complete split."""
    return items[rank::world]


def _rank_world() -> tuple[int, int]:
    """This process's rank and the world size, as set by ``accelerate launch`` (or torchrun).

    Ranks share nothing but the runs folder, so no process group is needed: the environment
    variables the launchers set are enough, also across nodes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent launcher environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world


def _device_for_rank(device: str) -> str:
    """``cuda`` under a multi-process launch means this process's own GPU (``LOCAL_RANK``)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def _log_event(out: Path, rank: int, **event: Any) -> None:
    """Append one line to this process's event log (``<out>/_events/<host>-<pid>.jsonl``).

    One file per process, so concurrent writers never interleave; used to audit that every video
    was produced exactly once across ranks and restarts.
    """
    folder = out / "_events"
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"rank": rank, "pid": os.getpid(), "time": round(time.time(), 3), **event})
    with open(folder / f"{socket.gethostname()}-{os.getpid()}.jsonl", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def _remove_partial_files(case_dir: Path) -> None:
    """Temp files left by a killed process (``*.part``); only called under the case lock."""
    for part in case_dir.rglob("*.part"):
        with contextlib.suppress(OSError):
            part.unlink()


@contextlib.contextmanager
def _case_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder/.lock`` (released by the OS if the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _config_hash(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _is_done(path: Path) -> bool:
    try:
        return read_json(path).get("status") == "ok"
    except (OSError, ValueError):
        return False  # missing or corrupt: redo


def _settings(cfg: RunConfig, backbone) -> GenerationSettings:
    d = backbone.defaults
    steps = cfg.num_inference_steps or (50 if not backbone.random_weights else 10)
    return GenerationSettings(
        num_frames=cfg.num_frames or d["num_frames"],
        height=cfg.height or d["height"],
        width=cfg.width or d["width"],
        num_inference_steps=steps,
        guidance_scale=cfg.guidance_scale,
        fps=cfg.fps,
    )


def run(cfg: RunConfig, *, progress=None, log=print) -> RunSummary:
    """Run ``cfg.method`` over the grid; see the module docstring for the guarantees.

    Args:
        cfg: the run configuration.
        progress: a ``rich.progress.Progress`` to report on (``None``: no bars).
        log: a callable for one-line messages.

    Returns:
        A :class:`RunSummary` (done, skipped, failed counts and error lines).

    Raises:
        benchmark.data.DataError / benchmark.grid errors for a bad grid (before any work starts),
        dualreal.engine.backbone.BackboneError for a backbone that cannot be loaded.
    """
    from dualreal.engine.backbone import load_backbone

    out = Path(cfg.out)
    all_cases = filter_cases(
        load_grid(cfg.grid, cfg.data_root),
        names=cfg.cases,
        max_cases=cfg.max_cases,
        max_prompts=cfg.max_prompts,
        seeds=cfg.seeds,
    )
    rank, world = _rank_world()
    cases = shard_of(all_cases, rank, world)
    summary = RunSummary(cases=len(cases))

    def todo_of(case: Case) -> list[tuple[int, str, int]]:
        return [
            (i, prompt, seed)
            for i, prompt in enumerate(case.prompts)
            for seed in case.seeds
            if not _is_done(record_path(out, cfg.method, case.name, i, seed))
        ]

    pending = [(case, todo_of(case)) for case in cases]
    total = sum(len(case.prompts) * len(case.seeds) for case in cases)
    summary.skipped = total - sum(len(t) for _, t in pending)
    if not any(t for _, t in pending):
        log(f"[rank {rank}] nothing to do: all {total} videos of {cfg.method} are recorded in {out}")
        return summary

    device = _device_for_rank(cfg.device)
    backbone = load_backbone(cfg.backbone, dtype=cfg.dtype, device=device)
    settings = _settings(cfg, backbone)
    method_cfg = dict(cfg.method_options)
    if cfg.train_steps is not None:
        method_cfg["train_steps"] = cfg.train_steps
    method = create_method(cfg.method, backbone, **method_cfg)
    scorer = None
    if cfg.score:
        from benchmark.scorer import Scorer

        random_metric = cfg.random_metric_weights
        if random_metric is None:  # random backbone → random metric encoders unless told otherwise
            random_metric = backbone.random_weights and cfg.weights_dir is None
        scorer = Scorer(
            cfg.metrics,
            weights_dir=cfg.weights_dir,
            random_weights=random_metric,
            random_arch=cfg.random_arch,
            device=device,
            dd_pad_multiple=cfg.dd_pad_multiple,
        )
    hash_payload = {
        "method": method.describe(),
        "backbone": backbone.provenance(),
        "settings": asdict(settings),
        "grid": cfg.grid,
        "train_steps": cfg.train_steps,
        "max_clips": cfg.max_clips,
    }
    config_hash = _config_hash(hash_payload)
    task = progress.add_task(f"{cfg.method}", total=total, completed=summary.skipped) if progress else None

    def status(text: str) -> None:
        if progress is not None:
            progress.update(task, description=f"{cfg.method} · {text}")

    for case, todo in pending:
        if not todo:
            continue
        case_dir = out / cfg.method / case.name
        with _case_lock(case_dir):
            todo = todo_of(case)  # another process may have finished some while we waited
            if not todo:
                continue
            _remove_partial_files(case_dir)
            try:
                status(f"{case.name}: decoding")
                case_data = decode_case(
                    case,
                    num_frames=settings.num_frames,
                    height=settings.height,
                    width=settings.width,
                    max_clips=cfg.max_clips,
                )
                status(f"{case.name}: fitting")
                t0 = time.perf_counter()
                method.fit(case_data, case_dir / "checkpoint", progress=progress)
                fit_seconds = time.perf_counter() - t0
            except (MediaError, ValueError, OSError) as exc:
                msg = f"{case.name}: {exc}"
                log(f"[red]failed[/red] {msg}")
                summary.failed += len(todo)
                summary.errors.append(msg)
                for i, prompt, seed in todo:
                    write_record(out, _failure(cfg, case, i, prompt, seed, msg, config_hash))
                if progress is not None:
                    progress.advance(task, len(todo))
                continue
            refs = None
            dd_ref = None
            if scorer is not None:
                refs = [read_image(p) for p in _identity_images(case)]
                status(f"{case.name}: motion reference")
                dd_ref = _motion_reference(scorer, case, out)
            for i, prompt, seed in todo:
                status(f"{case.name}: p{i} seed {seed}")
                try:
                    rec = _one_video(
                        cfg, method, backbone, scorer, settings, case, i, prompt, seed,
                        refs, dd_ref, fit_seconds, config_hash, out,
                    )
                    summary.done += 1
                except (MediaError, ValueError, RuntimeError, OSError) as exc:
                    msg = f"{case.name} p{i} seed {seed}: {exc.__class__.__name__}: {exc}"
                    log(f"[red]failed[/red] {msg}")
                    rec = _failure(cfg, case, i, prompt, seed, msg, config_hash)
                    summary.failed += 1
                    summary.errors.append(msg)
                write_record(out, rec)
                _log_event(out, rank, event=rec["status"], method=cfg.method, case=case.name, prompt_index=i, seed=seed)
                if progress is not None:
                    progress.advance(task)
    return summary


def _identity_images(case: Case) -> list[Path]:
    from benchmark.data import load_identity

    return list(load_identity(case.identity, class_word=case.class_word).images)


def _motion_reference(scorer, case: Case, out: Path) -> float | None:
    if "dynamic_degree" not in scorer.metrics:
        return None
    from benchmark.data import load_motion

    clips = list(load_motion(case.motion).clips)
    cache = out / "motion_refs" / f"{Path(case.motion).name}.json"
    return scorer.motion_reference_dd(clips, cache_file=cache)


def _base_record(cfg: RunConfig, case: Case, i: int, prompt: str, seed: int, config_hash: str) -> dict[str, Any]:
    return {
        "method": cfg.method,
        "case": case.name,
        "identity": Path(case.identity).name,
        "motion": Path(case.motion).name,
        "prompt": prompt,
        "prompt_index": i,
        "seed": seed,
        "config_hash": config_hash,
        "version": __version__,
        "decoder": DECODER,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _failure(cfg, case, i, prompt, seed, msg, config_hash) -> dict[str, Any]:
    return {**_base_record(cfg, case, i, prompt, seed, config_hash), "status": "failed", "error": msg, "video": None}


def _one_video(cfg, method, backbone, scorer, settings, case, i, prompt, seed, refs, dd_ref, fit_seconds, config_hash, out):
    t0 = time.perf_counter()
    video = method.generate(prompt, seed, settings)
    gen_seconds = time.perf_counter() - t0
    mp4 = video_path(out, cfg.method, case.name, i, seed)
    write_video(mp4, video.frames, fps=video.fps)
    if video.extras:
        write_json(mp4.with_suffix(".json"), video.extras)
    rec = _base_record(cfg, case, i, prompt, seed, config_hash)
    rec.update(
        status="ok",
        error=None,
        video=str(mp4.relative_to(out)),
        fit_seconds=round(fit_seconds, 3),
        generate_seconds=round(gen_seconds, 3),
        frames_sha256=hashlib.sha256(video.frames.contiguous().numpy().tobytes()).hexdigest(),
        num_frames=int(video.frames.shape[0]),
        height=int(video.frames.shape[1]),
        width=int(video.frames.shape[2]),
        fps=video.fps,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        **backbone.provenance(),
    )
    metric_random = False
    if scorer is not None:
        t1 = time.perf_counter()
        # Score the generated frames themselves (no decode, bit-reproducible); `dualbench eval` on
        # the mp4 sees them after H.264 at CRF 12, which moves the metrics by the codec's loss.
        scores = scorer.score(video.frames, video.fps, prompt=prompt, ref_images=refs, dd_ref=dd_ref)
        rec["score_seconds"] = round(time.perf_counter() - t1, 3)
        rec.update({k: v for k, v in scores.items() if k not in rec or k.startswith("metric")})
        metric_random = bool(scores.get("metric_random_weights", False))
    rec["random_weights"] = bool(backbone.random_weights or metric_random)
    return rec
