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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from benchmark import __version__
from benchmark.grid import Case, DecodedCase, decode_case, filter_cases, load_grid
from benchmark.media import DECODER, MediaError, write_video
from benchmark.registry import create_method
from benchmark.scorer import DEFAULT_RANDOM_ARCH, Scorer
from benchmark.store import read_json, record_path, video_path, write_json, write_record
from dualreal.engine.protocol import GenerationSettings

__all__ = ["RunConfig", "RunSummary", "CaseReferences", "VideoJob", "run", "shard_of"]


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
    random_arch: str = DEFAULT_RANDOM_ARCH
    dtype: str = "fp32"
    device: str = "cpu"
    method_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseReferences:
    """What scoring a case's videos needs besides the videos (shared by all of them).

    Attributes:
        ref_images: the identity's reference images at native resolution, uint8 ``(H, W, 3)``
            (CLIP-I / DINO-I); None when not scoring.
        dd_ref: the reference motion's dynamic degree in pixels (``dynamic_degree_ref``); None when
            not scored.
    """

    ref_images: list[torch.Tensor] | None = None
    dd_ref: float | None = None


@dataclass(frozen=True)
class VideoJob:
    """One video of a run: which (method, case, prompt, seed) it is and what scoring it needs.

    The record of the video (:meth:`base_record`, :meth:`with_scores`, :meth:`failure`) is built from
    the job alone, so any producer of the video — the run loop here — writes the same fields.

    Attributes:
        method: registry name.
        case: the grid's case.
        prompt_index: index of the prompt in ``case.prompts`` (names the files, ``p003_s42``).
        prompt: the generation prompt.
        seed: generation seed.
        config_hash: hash of the method, backbone and sampler settings (recorded).
        references: the case's scoring references.
        fit_seconds: time the method's fit on this case took (recorded), None when not fitted here.
        training_budget: the method's training budget after that fit
            (:meth:`~dualreal.engine.protocol.CustomizationMethod.training_budget`, as dicts; ``None``:
            not reported; recorded).
    """

    method: str
    case: Case
    prompt_index: int
    prompt: str
    seed: int
    config_hash: str
    references: CaseReferences = field(default_factory=CaseReferences)
    fit_seconds: float | None = None
    training_budget: list[dict[str, Any]] | None = None

    @property
    def label(self) -> str:
        """``case p3 seed 42`` for messages."""
        return f"{self.case.name} p{self.prompt_index} seed {self.seed}"

    def video_path(self, out: Path) -> Path:
        """Where the video goes under the runs folder ``out`` (its record: :func:`benchmark.store.write_record`)."""
        return video_path(out, self.method, self.case.name, self.prompt_index, self.seed)

    def base_record(self) -> dict[str, Any]:
        """The fields every record of this video has, ok or failed."""
        return {
            "method": self.method,
            "case": self.case.name,
            "identity": self.case.identity_name,
            "motion": self.case.motion_name,
            "prompt": self.prompt,
            "prompt_index": self.prompt_index,
            "seed": self.seed,
            "config_hash": self.config_hash,
            "version": __version__,
            "decoder": DECODER,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def failure(self, message: str) -> dict[str, Any]:
        """A ``failed`` record with a one-line error."""
        return {**self.base_record(), "status": "failed", "error": message, "video": None}

    def with_scores(self, record: dict[str, Any], scorer: Scorer, frames: torch.Tensor, fps: float) -> dict[str, Any]:
        """``record`` plus the scorer's values for these frames: every metric column, the metrics'
        info columns, ``metric_notes`` and provenance, ``score_seconds``. Fields already in the
        record (its geometry, ``decoder``) are kept, except the ``metric*`` ones."""
        t0 = time.perf_counter()
        scores = scorer.score(frames, fps, prompt=self.prompt, ref_images=self.references.ref_images,
                              dd_ref=self.references.dd_ref)
        record["score_seconds"] = round(time.perf_counter() - t0, 3)
        record.update({k: v for k, v in scores.items() if k not in record or k.startswith("metric")})
        return record


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
            cache_dir=out,
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
    producer = _Producer(out=out, method=method, backbone=backbone, settings=settings, scorer=scorer)
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
            jobs = [VideoJob(method=cfg.method, case=case, prompt_index=i, prompt=prompt, seed=seed, config_hash=config_hash)
                    for i, prompt, seed in todo]
            try:
                status(f"{case.name}: decoding")
                decoded = decode_case(
                    case,
                    num_frames=settings.num_frames,
                    height=settings.height,
                    width=settings.width,
                    max_clips=cfg.max_clips,
                    preservation=method.preservation_clip_count(),
                )
                status(f"{case.name}: fitting")
                t0 = time.perf_counter()
                method.fit(decoded.data, case_dir / "checkpoint", progress=progress)
                fit_seconds = time.perf_counter() - t0
                runs = method.training_budget()
                budget = None if runs is None else [run.to_dict() for run in runs]
            except (MediaError, ValueError, OSError) as exc:
                msg = f"{case.name}: {exc}"
                log(f"[red]failed[/red] {msg}")
                summary.failed += len(jobs)
                summary.errors.append(msg)
                for job in jobs:
                    write_record(out, job.failure(msg))
                if progress is not None:
                    progress.advance(task, len(jobs))
                continue
            status(f"{case.name}: motion reference")
            references = _references(scorer, decoded)
            for job in jobs:
                job = replace(job, references=references, fit_seconds=fit_seconds, training_budget=budget)
                status(job.label)
                try:
                    rec = producer.produce(job)
                    summary.done += 1
                except (MediaError, ValueError, RuntimeError, OSError) as exc:
                    msg = f"{job.label}: {exc.__class__.__name__}: {exc}"
                    log(f"[red]failed[/red] {msg}")
                    rec = job.failure(msg)
                    summary.failed += 1
                    summary.errors.append(msg)
                write_record(out, rec)
                _log_event(out, rank, event=rec["status"], method=cfg.method, case=case.name,
                           prompt_index=job.prompt_index, seed=job.seed)
                if progress is not None:
                    progress.advance(task)
    return summary


def _references(scorer: Scorer | None, decoded: DecodedCase) -> CaseReferences:
    """The case's scoring references: its native identity images and, when ``dynamic_degree`` is
    scored, the dynamic degree of every clip of its motion folder (cached under ``runs/motion_refs``)."""
    if scorer is None:
        return CaseReferences()
    dd_ref = None
    if "dynamic_degree" in scorer.metrics:
        dd_ref = scorer.motion_reference_dd(decoded.motion_clips, motion=decoded.case.motion)
    return CaseReferences(ref_images=decoded.reference_images, dd_ref=dd_ref)


@dataclass
class _Producer:
    """The services a run's videos share: where to write, the fitted method, the backbone (for its
    provenance), the sampler settings and the scorer (None: not scoring)."""

    out: Path
    method: Any
    backbone: Any
    settings: GenerationSettings
    scorer: Scorer | None

    def produce(self, job: VideoJob) -> dict[str, Any]:
        """Generate → write the mp4 (and the method's extras) → score → the ``ok`` record of ``job``."""
        t0 = time.perf_counter()
        video = self.method.generate(job.prompt, job.seed, self.settings)
        gen_seconds = time.perf_counter() - t0
        mp4 = job.video_path(self.out)
        write_video(mp4, video.frames, fps=video.fps)
        if video.extras:
            write_json(mp4.with_suffix(".json"), video.extras)
        rec = job.base_record()
        rec.update(
            status="ok",
            error=None,
            video=str(mp4.relative_to(self.out)),
            fit_seconds=round(job.fit_seconds or 0.0, 3),
            training_budget=job.training_budget,
            generate_seconds=round(gen_seconds, 3),
            frames_sha256=hashlib.sha256(video.frames.contiguous().numpy().tobytes()).hexdigest(),
            num_frames=int(video.frames.shape[0]),
            height=int(video.frames.shape[1]),
            width=int(video.frames.shape[2]),
            fps=video.fps,
            num_inference_steps=self.settings.num_inference_steps,
            guidance_scale=self.settings.guidance_scale,
            **self.backbone.provenance(),
        )
        metric_random = False
        if self.scorer is not None:
            # Score the generated frames themselves (no decode, bit-reproducible); `dualbench eval` on
            # the mp4 sees them after H.264 at CRF 12, which moves the metrics by the codec's loss.
            rec = job.with_scores(rec, self.scorer, video.frames, video.fps)
            metric_random = bool(rec.get("metric_random_weights", False))
        rec["random_weights"] = bool(self.backbone.random_weights or metric_random)
        return rec
