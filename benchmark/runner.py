"""The run loop: for each case, fit the method, then generate → write mp4 → score → record.

The loop itself (:func:`run_jobs`: sharding, resume, per-case lock, records, events) is shared with
``dualbench score`` (:mod:`benchmark.external`), which scores videos made elsewhere: a
:class:`VideoProducer` says how a case is opened and how one video becomes frames; both end in
:meth:`VideoJob.ok_record`, the one "frames → scored record" step.

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
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

import torch

from benchmark import __version__
from benchmark.data import error_line
from benchmark.grid import Case, DecodedCase, decode_case, filter_cases, load_grid
from benchmark.media import DECODER, MediaError, degenerate_note, frames_sha256, write_video
from benchmark.registry import all_specs, create_method, get_spec, load_method_class
from benchmark.scorer import DEFAULT_DD_PAD_MULTIPLE, DEFAULT_RANDOM_ARCH, Scorer
from benchmark.store import RecordError, read_record, record_path, video_path, write_json, write_record
from dualreal.engine.errors import NonFiniteError
from dualreal.engine.protocol import GenerationSettings

__all__ = [
    "RunConfig",
    "RunSummary",
    "CaseReferences",
    "VideoJob",
    "VideoProducer",
    "run",
    "run_jobs",
    "select_cases",
    "make_scorer",
    "case_references",
    "readable_record",
    "hash_config",
    "shard_of",
    "text_encoder_cut_note",
    "check_method_options",
    "check_device",
    "check_request",
    "CheckedRequest",
    "peak_memory",
]


@dataclass
class RunConfig:
    """Everything ``dualbench run`` takes. ``None`` geometry means the backbone's defaults.

    Besides the sampler, grid and metric settings (the CLI's options):

    * ``method_options``: typed fields of the method's config (``--method-option KEY=VALUE``,
      :meth:`~dualreal.engine.config.MethodConfig.parse_options`), checked before any model is
      loaded (:func:`check_method_options`), recorded in every record and in its ``config_hash``;
    * ``train_steps``: passed to the method's config; a method whose config has no ``train_steps``
      (``cogvideox`` trains nothing) ignores it, and says so in the log and in every record's
      ``run_notes``;
    * ``allow_large``: build a backbone the memory check refuses
      (:func:`dualreal.engine.backbone.load_backbone`);
    * ``motion_resize`` / ``identity_resize``: how training clips and identity images reach the
      training resolution (:func:`benchmark.grid.decode_case`: the release's stretch for clips,
      a centre crop for identity images); ``timestep_spacing``: the sampler's (``trailing``, the
      release's); all three recorded;
    * ``scheduler``: the sampler's class (:func:`dualreal.engine.backbone.load_backbone`):
      ``CogVideoXDPMScheduler`` (default: the class DualReal's and THUDM's inference scripts swap
      in, from the backbone's own scheduler configuration; a replaced class is logged and recorded
      as ``scheduler_replaces``), ``CogVideoXDDIMScheduler``, or ``config`` (the class the
      backbone's ``scheduler_config.json`` names).

    Every field is checked at once, before any model is loaded (:func:`check_request`); ``0`` is a
    value (refused where it is not valid), only ``None`` means "the default".
    """

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
    dd_pad_multiple: int = DEFAULT_DD_PAD_MULTIPLE
    random_arch: str = DEFAULT_RANDOM_ARCH
    dtype: str = "fp32"
    device: str = "cpu"
    method_options: dict[str, Any] = field(default_factory=dict)
    allow_large: bool = False
    motion_resize: str = "stretch"
    identity_resize: str = "crop"
    timestep_spacing: str = "trailing"
    scheduler: str = "CogVideoXDPMScheduler"


#: ``RunConfig.scheduler`` value that keeps the class the backbone's scheduler configuration names.
SCHEDULER_AS_CONFIGURED = "config"
#: Denoising steps when ``--steps`` is not given: the paper's 50 (docs/METHOD.md §4) for pretrained
#: weights, 10 for random-weights backbones (smoke runs).
PAPER_STEPS, RANDOM_WEIGHTS_STEPS = 50, 10


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
        provenance: who made the video: ``"run"`` (generated by ``dualbench run``) or ``"external"``
            (made elsewhere, scored by ``dualbench score``); recorded.
    """

    method: str
    case: Case
    prompt_index: int
    prompt: str
    seed: int
    config_hash: str
    references: CaseReferences = field(default_factory=CaseReferences)
    fit_seconds: float | None = None
    provenance: str = "run"

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
            "provenance": self.provenance,
            "config_hash": self.config_hash,
            "version": __version__,
            "decoder": DECODER,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def failure(self, message: str, *, status: str = "failed", **fields: Any) -> dict[str, Any]:
        """A record without scores: ``status`` (``failed``, or ``missing`` for a video that
        ``dualbench score`` did not find), a one-line error, then ``fields``."""
        return {**self.base_record(), "status": status, "error": message, "video": None, **fields}

    def ok_record(self, frames: torch.Tensor, fps: float, scorer: Scorer | None, *, random_weights: bool,
                  **fields: Any) -> dict[str, Any]:
        """The ``ok`` record of this video from its frames: the one "frames → scored record" step of
        ``dualbench run`` (generated frames) and ``dualbench score`` (decoded frames).

        Args:
            frames: uint8 ``(F, H, W, 3)``, the video's pixels as scored.
            fps: its frame rate.
            scorer: the scorer, None when not scoring.
            random_weights: whether the video came from random weights (the backbone's); the
                record's ``random_weights`` is this or the metric encoders' flag.
            **fields: the producer's fields (``video``, timings, sampler settings, backbone),
                placed after ``status`` and ``error``.

        Returns:
            :meth:`base_record` + ``status="ok"``, ``error=None``, ``fields``, ``frames_sha256``
            (:func:`benchmark.media.frames_sha256`), ``num_frames, height, width, fps``, the scores
            (:meth:`with_scores`; with them ``num_ref_images``), ``degenerate`` and
            ``degenerate_note`` (:func:`benchmark.media.degenerate_note`, also without a scorer) and
            ``random_weights``.
        """
        rec = self.base_record()
        rec.update(status="ok", error=None, **fields)
        rec.update(frames_sha256=frames_sha256(frames), num_frames=int(frames.shape[0]), height=int(frames.shape[1]),
                   width=int(frames.shape[2]), fps=fps)
        metric_random = False
        if scorer is not None:
            rec = self.with_scores(rec, scorer, frames, fps)
            metric_random = bool(rec.get("metric_random_weights", False))
        else:
            note = degenerate_note(frames)
            rec.update(degenerate=bool(note), degenerate_note=note)
        rec["random_weights"] = bool(random_weights or metric_random)
        return rec

    def with_scores(self, record: dict[str, Any], scorer: Scorer, frames: torch.Tensor, fps: float) -> dict[str, Any]:
        """``record`` plus the scorer's values for these frames: every metric column, the metrics'
        info columns, ``metric_notes`` and provenance, ``score_seconds`` and ``score_peak_memory_gb``
        (:func:`peak_memory`). Fields already in the
        record (its geometry, ``decoder``) are kept, except the ``metric*`` ones."""
        t0 = time.perf_counter()
        with peak_memory(scorer.device) as peak:
            scores = scorer.score(frames, fps, prompt=self.prompt, ref_images=self.references.ref_images,
                                  dd_ref=self.references.dd_ref)
        record["score_seconds"] = round(time.perf_counter() - t0, 3)
        record["score_peak_memory_gb"] = peak.gb
        record.update({k: v for k, v in scores.items() if k not in record or k.startswith("metric")})
        return record


@dataclass
class RunSummary:
    """What :func:`run_jobs` did.

    Attributes:
        done: ``ok`` records written by this process.
        skipped: videos already recorded ``ok`` when it started.
        failed: ``failed`` records written, with one line each in ``errors``.
        cases: this rank's cases.
        missing: ``missing`` records (``dualbench score`` only: videos not found), the paths looked
            for in ``missing_videos``.
        degenerate: ``ok`` videos flagged degenerate (blank or frozen frames), one line each.
        locked: cases another process held locked (another run into the same runs folder) when
            this one reached them; it waited for each (:func:`run_jobs`), one line each naming
            the holder.
        by_other: videos of those cases that the other process recorded ``ok`` while this one
            waited (neither ``done`` nor ``skipped``).
        unreadable: record files found unreadable (truncated, emptied) and redone, one line each
            (``"<path>: unreadable record (<cause>)"``).
    """

    done: int = 0
    skipped: int = 0
    failed: int = 0
    cases: int = 0
    errors: list[str] = field(default_factory=list)
    missing: int = 0
    missing_videos: list[str] = field(default_factory=list)
    degenerate: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    by_other: int = 0
    unreadable: list[str] = field(default_factory=list)

    def text(self, method: str, out: Path, *, done_word: str = "done", show_missing: bool = False,
             counts: tuple[str, ...] = (), detail: str = "") -> str:
        """The one-line summary, e.g. ``lora: 3 done, 1 already recorded, 2 recorded by another run
        while this one waited for 1 locked case(s), 0 failed, 1 degenerate (2 case(s)) → runs``.

        The locked, missing, degenerate and unreadable-record counts appear only when not zero (``show_missing``:
        always the missing one); ``counts`` are the caller's, after ``failed``; ``detail`` follows
        the case count in the brackets.
        """
        parts = [f"{self.done} {done_word}", f"{self.skipped} already recorded"]
        if self.locked:
            parts.append(f"{self.by_other} recorded by another run while this one waited for "
                         f"{len(self.locked)} locked case(s)")
        if self.missing or show_missing:
            parts.append(f"{self.missing} missing")
        parts += [f"{self.failed} failed", *counts]
        if self.degenerate:
            parts.append(f"{len(self.degenerate)} degenerate")
        if self.unreadable:
            parts.append(f"{len(self.unreadable)} unreadable record(s) redone")
        return f"{method}: {', '.join(parts)} ({self.cases} case(s){'; ' + detail if detail else ''}) → {out}"


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


def check_device(device: str) -> None:
    """Refuse a device torch cannot parse or does not have, before any model loads.

    Raises:
        ValueError: an unparsable name (``tpu``, ``cuda:x``), ``cuda`` with no GPU visible to torch,
            a GPU index beyond the visible ones, or ``mps`` where it is unavailable.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"--device {device!r}: not a torch device name (cpu, cuda, cuda:N, mps): "
                         f"{str(exc).splitlines()[0]}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: torch sees no GPU here (torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available here; use --device cpu")


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


LOCK_NAME = ".lock"


@contextlib.contextmanager
def _case_lock(folder: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock on ``folder/.lock`` (released by the OS if the process dies).

    Yields True once held — after waiting for another holder when ``wait`` — or, with
    ``wait=False``, False at once when another process holds it. The holder writes ``pid <n> on
    <host> since <UTC time>`` into the file, for :func:`_lock_holder`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            fh.truncate(0)
            fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
            fh.flush()
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_holder(folder: Path) -> str:
    """Who holds ``folder/.lock``, as its holder wrote it (``pid 123 on node7 since …``), or ``another process``."""
    try:
        text = (folder / LOCK_NAME).read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text.splitlines()[0] if text else "another process"


@dataclass
class PeakMemory:
    """What :func:`peak_memory` measured: ``gb`` (GiB, 3 decimals), ``None`` off CUDA."""

    gb: float | None = None


@contextlib.contextmanager
def peak_memory(device: str | torch.device) -> Iterator[PeakMemory]:
    """The peak CUDA memory allocated by torch on ``device`` while the block runs.

    The counter is reset at entry (``torch.cuda.reset_peak_memory_stats``) and read at exit
    (``torch.cuda.max_memory_allocated``), so the figure includes what was already resident (the
    backbone's weights): the memory the phase needs in total. Not measured (``gb = None``) on
    other devices — a CPU process's resident size mixes in everything else it holds.

    Yields:
        A :class:`PeakMemory`, filled when the block ends.
    """
    device = torch.device(device)
    out = PeakMemory()
    if device.type != "cuda" or not torch.cuda.is_available():
        yield out
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        torch.cuda.synchronize(device)
        out.gb = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def check_method_options(method: str, options: dict[str, Any], *, train_steps: int | None = None
                         ) -> tuple[dict[str, Any], list[str]]:
    """Check a run's method options before any model is loaded.

    Args:
        method: a registry name or plugin target (:func:`benchmark.registry.get_spec`).
        options: typed config fields (``--method-option``, already parsed by
            :meth:`~dualreal.engine.config.MethodConfig.parse_options`).
        train_steps: ``--train-steps``, or None.

    Returns:
        ``(constructor options, notes)``: the options plus ``train_steps`` when the method's config
        has that field; otherwise ``--train-steps`` is dropped and a note says so (a method that
        trains nothing, such as ``cogvideox``, runs as it would without the option).

    Raises:
        UnknownMethodError, MethodLoadError: the method cannot be found or imported.
        ValueError: an unknown option (valid ones listed), a bad value or combination (the
            config's own check), an option that contradicts what the registry name is defined by
            (``dualreal-groups-2`` with ``num_groups=7``), or ``train_steps`` given both ways with
            different values.
    """
    spec = get_spec(method)
    config_class = load_method_class(spec).config_class
    fixed = {k: (spec.overrides[k], v) for k, v in options.items() if k in spec.overrides and spec.overrides[k] != v}
    if fixed:
        what = ", ".join(f"{k}={a!r} (asked: {b!r})" for k, (a, b) in fixed.items())
        others = sorted((s for s in all_specs().values() if s.target == spec.target and s.name != spec.name
                         and all(s.overrides.get(k, b) == b for k, (_, b) in fixed.items())),
                        key=lambda s: (len(s.overrides), s.name))
        hint = f" Use {' or '.join(s.name for s in others[:3])} instead." if others else ""
        raise ValueError(f"method {spec.name!r} is defined by {what}: a --method-option cannot change what a "
                         f"registry name stands for.{hint}")
    merged = dict(options)
    notes = []
    if train_steps is not None:
        if "train_steps" in config_class.field_names():
            if "train_steps" in options and options["train_steps"] != train_steps:
                raise ValueError(f"--train-steps {train_steps} and --method-option train_steps={options['train_steps']} differ")
            merged["train_steps"] = train_steps
        else:
            notes.append(f"--train-steps {train_steps} ignored: {spec.name} has no training steps "
                         f"({config_class.__name__} has no train_steps option)")
    config_class.from_overrides(**{**spec.overrides, **merged})  # unknown keys, bad values, combinations
    return merged, notes


@dataclass(frozen=True)
class CheckedRequest:
    """A run request that :func:`check_request` accepted.

    Attributes:
        options: the method's constructor options (:func:`check_method_options`).
        notes: one line per rule that changes or qualifies the request (logged, recorded in every
            record's ``run_notes``).
        settings: the sampler settings with every default made concrete.
    """

    options: dict[str, Any]
    notes: list[str]
    settings: GenerationSettings


def check_request(cfg: RunConfig) -> CheckedRequest:
    """Check the whole request of :func:`run` before anything is loaded (well under a second for the
    checks themselves; the backbone's configuration files are read, never its weights).

    Checks, each failing with one line that names the option as ``dualbench run`` spells it and the
    valid values: ``--frames`` a count the backbone's VAE decodes exactly, ``--height`` /
    ``--width`` multiples of what it needs (:class:`dualreal.engine.backbone.GeometryRules`, from
    :func:`~dualreal.engine.backbone.geometry_rules`: the preset tables or the folder's
    ``transformer/config.json`` and ``vae/config.json``); ``--steps`` ≥ 1, ``--train-steps`` ≥ 1,
    ``--fps`` > 0, ``--guidance`` finite and ≥ 0 (≤ 1 gives a note: diffusers' ``CogVideoXPipeline``
    runs classifier-free guidance only when ``guidance_scale > 1``); ``--dtype``, the resize
    modes, the timestep spacing and the scheduler from their lists; the method and its options
    (:func:`check_method_options`). ``None`` takes the backbone's default; ``0`` is a value.

    Returns:
        A :class:`CheckedRequest`.

    Raises:
        ValueError: the first bad value (one line).
        UnknownMethodError, MethodLoadError: the method cannot be found or imported.
        dualreal.engine.backbone.BackboneError: a backbone that cannot be resolved (the error the
            loader gives).
    """
    from benchmark.media import RESIZE_MODES
    from dualreal.engine.backbone import (
        DTYPES,
        SUPPORTED_SCHEDULERS,
        TIMESTEP_SPACINGS,
        default_geometry,
        geometry_rules,
        random_weights_source,
    )

    for label, value in (("--steps", cfg.num_inference_steps), ("--train-steps", cfg.train_steps),
                         ("--max-clips", cfg.max_clips)):
        if value is not None and value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    if not (math.isfinite(cfg.fps) and cfg.fps > 0):
        raise ValueError(f"--fps must be > 0, got {cfg.fps}")
    check_device(_device_for_rank(cfg.device))
    if not (math.isfinite(cfg.guidance_scale) and cfg.guidance_scale >= 0):
        raise ValueError(f"--guidance must be a finite number >= 0, got {cfg.guidance_scale}")
    schedulers = (*SUPPORTED_SCHEDULERS, SCHEDULER_AS_CONFIGURED)
    for label, value, valid in (("--motion-resize", cfg.motion_resize, RESIZE_MODES),
                                ("--identity-resize", cfg.identity_resize, RESIZE_MODES),
                                ("--timestep-spacing", cfg.timestep_spacing, TIMESTEP_SPACINGS),
                                ("--scheduler", cfg.scheduler, schedulers),
                                ("--dtype", cfg.dtype, tuple(DTYPES))):
        if value not in valid:
            raise ValueError(f"{label} must be one of {', '.join(valid)}, got {value!r}")
    try:
        options, notes = check_method_options(cfg.method, cfg.method_options, train_steps=cfg.train_steps)
    except ValueError as exc:
        raise ValueError(f"--method-option: {exc}" if cfg.method_options else str(exc)) from None
    d = default_geometry(cfg.backbone)
    geometry = {k: d[k] if getattr(cfg, k) is None else getattr(cfg, k) for k in ("num_frames", "height", "width")}
    geometry_rules(cfg.backbone).check(**geometry, backbone=f"backbone {cfg.backbone}")
    steps = cfg.num_inference_steps
    if steps is None:
        steps = RANDOM_WEIGHTS_STEPS if random_weights_source(cfg.backbone) else PAPER_STEPS
    if cfg.guidance_scale <= 1:
        notes.append(f"--guidance {cfg.guidance_scale:g} <= 1: no classifier-free guidance (diffusers' CogVideoXPipeline "
                     "guides only when guidance_scale > 1; the paper's is 6)")
    settings = GenerationSettings(**geometry, num_inference_steps=steps, guidance_scale=cfg.guidance_scale, fps=cfg.fps)
    return CheckedRequest(options=options, notes=notes, settings=settings)


def hash_config(payload: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of ``payload`` as sorted JSON: a record's ``config_hash``."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def readable_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path`` (:func:`benchmark.store.read_record`), or None when it is missing or
    unreadable: then the video is redone, and :func:`run_jobs` says so."""
    try:
        return read_record(path)
    except RecordError:
        return None


def _is_done(path: Path) -> bool:
    rec = readable_record(path)
    return rec is not None and rec.get("status") == "ok"


def text_encoder_cut_note(backbone, prompt: str) -> str:
    """What the backbone's text encoder did not read of ``prompt`` at generation, or ``""``.

    CogVideoX's pipeline tokenises with ``max_length=max_sequence_length`` and truncation
    (diffusers ``CogVideoXPipeline._get_t5_prompt_embeds``; the run passes the transformer's
    ``max_text_seq_length``, 226 on CogVideoX), so a longer prompt is cut without an error.

    Returns:
        ``"prompt cut to 226 of its 301 T5 tokens at generation"`` (recorded as ``prompt_note``).
    """
    limit = backbone.max_text_seq_length
    n = len(backbone.tokenizer(prompt, add_special_tokens=True).input_ids)
    return f"prompt cut to {limit} of its {n} T5 tokens at generation" if n > limit else ""


def select_cases(grid: list[Case], *, cases: list[str] | None = None, max_cases: int | None = None,
                 max_prompts: int | None = None, seeds: list[int] | None = None) -> tuple[list[Case], int]:
    """The cases of a loaded ``grid`` (:func:`benchmark.grid.load_grid`) after the filters
    (:func:`benchmark.grid.filter_cases`), and this process's share of them (:func:`shard_of` with
    ``RANK`` / ``WORLD_SIZE``).

    Returns:
        ``(cases of this rank, rank)``.

    Raises:
        DataError: a bad filter; ValueError: an inconsistent launcher environment.
    """
    selected = filter_cases(grid, names=cases, max_cases=max_cases, max_prompts=max_prompts, seeds=seeds)
    rank, world = _rank_world()
    return shard_of(selected, rank, world), rank


def make_scorer(*, metrics: list[str] | None, weights_dir: Path | None, random_metric_weights: bool | None,
                random_arch: str, dd_pad_multiple: int, device: str, cache_dir: Path,
                backbone_random_weights: bool) -> Scorer:
    """The scorer of ``run`` and ``score``. ``random_metric_weights=None`` follows the backbone: random
    metric encoders for a random-weights backbone unless ``weights_dir`` is given."""
    random_metric = random_metric_weights
    if random_metric is None:
        random_metric = backbone_random_weights and weights_dir is None
    return Scorer(metrics, weights_dir=weights_dir, random_weights=random_metric, random_arch=random_arch,
                  device=device, dd_pad_multiple=dd_pad_multiple, cache_dir=cache_dir)


def case_references(scorer: Scorer | None, reference_images: list[torch.Tensor], motion_clips: list[Path],
                    motion: Path) -> CaseReferences:
    """A case's scoring references: its native identity images and, when ``dynamic_degree`` is scored,
    the dynamic degree of every clip of its motion folder (cached under ``<out>/motion_refs``,
    :func:`benchmark.scorer.motion_reference_cache_file`)."""
    if scorer is None:
        return CaseReferences()
    dd_ref = None
    if "dynamic_degree" in scorer.metrics:
        dd_ref = scorer.motion_reference_dd(motion_clips, motion=motion)
    return CaseReferences(ref_images=reference_images, dd_ref=dd_ref)


class VideoProducer(Protocol):
    """How :func:`run_jobs` gets each video's record: generated here (``run``) or read from files
    made elsewhere (``dualbench score``, :mod:`benchmark.external`).

    Attributes:
        config_hash: recorded in every record; valid after :meth:`setup`.
        provenance: recorded in every record (:attr:`VideoJob.provenance`).
    """

    config_hash: str
    provenance: str

    def is_done(self, case: Case, prompt_index: int, seed: int) -> bool:
        """Whether this video's record stands (resume): it is skipped."""

    def setup(self) -> None:
        """Load what producing needs (models, scorer); called once, only when there is work."""

    def open_case(self, case: Case, status: Callable[[str], None]) -> float | None:
        """Prepare a case (decode, fit); returns the fit time in seconds or None. Raises
        ``MediaError`` / ``ValueError`` / ``OSError`` to record every video of the case as failed."""

    def references(self, case: Case) -> CaseReferences:
        """The case's scoring references (after :meth:`open_case`)."""

    def produce(self, job: VideoJob) -> dict[str, Any]:
        """One video's record (``ok``, or ``missing``); raises ``MediaError`` / ``ValueError`` /
        ``RuntimeError`` / ``OSError`` for a ``failed`` record."""


def run_jobs(cases: list[Case], *, out: Path, method: str, producer: VideoProducer, rank: int = 0,
             progress=None, log=print) -> RunSummary:
    """The shared loop of ``run`` and ``score`` over this rank's ``cases``; see the module docstring.

    For each case with videos to do (:meth:`VideoProducer.is_done` false), under the case's lock:
    re-check what is left, remove temp files of killed processes, :meth:`~VideoProducer.open_case`,
    then per video :meth:`~VideoProducer.produce` and write its record (atomically) and event line.

    A case whose lock another process holds (another run into the same ``out``) is put off until
    the other cases are done; then this process says so — the case and the holder (``pid 123 on
    node7 since …``) — and waits for the lock. Videos the other process recorded meanwhile are
    counted in :attr:`RunSummary.by_other`, the case in :attr:`RunSummary.locked`; anything left is
    done here.

    An error of one case (``open_case``: a bad file, a diverged training) fails that case's videos;
    an error of one video (``produce``: NaN latents, an unreadable file) fails that video. Each
    failure is a record with a one-line error (:func:`benchmark.data.error_line`); the loop goes on.

    Args:
        cases: this rank's cases (:func:`select_cases`).
        out: the runs folder.
        method: the method name (folder name under ``out``, ``method`` of every record).
        producer: where the records come from.
        rank: this process's rank (event log, messages).
        progress: a ``rich.progress.Progress`` to report on (``None``: no bars).
        log: a callable for one-line messages.

    Returns:
        A :class:`RunSummary`.
    """
    summary = RunSummary(cases=len(cases))

    def todo_of(case: Case) -> list[tuple[int, str, int]]:
        return [(i, prompt, seed) for i, prompt in enumerate(case.prompts) for seed in case.seeds
                if not producer.is_done(case, i, seed)]

    pending = [(case, todo_of(case)) for case in cases]
    total = sum(case.num_videos for case in cases)
    summary.skipped = total - sum(len(t) for _, t in pending)
    if not any(t for _, t in pending):
        log(f"[rank {rank}] nothing to do: all {total} videos of {method} are recorded in {out}")
        return summary

    producer.setup()
    task = progress.add_task(f"{method}", total=total, completed=summary.skipped, unit="videos") if progress else None

    def status(text: str) -> None:
        if progress is not None:
            progress.update(task, description=f"{method} · {text}")

    def advance(n: int = 1) -> None:
        if progress is not None:
            progress.advance(task, n)

    def record(job: VideoJob, rec: dict[str, Any]) -> None:
        if rec["status"] == "ok":
            summary.done += 1
            if rec.get("degenerate"):
                summary.degenerate.append(f"{job.label}: {rec.get('degenerate_note', '')}")
        elif rec["status"] == "missing":
            summary.missing += 1
            summary.missing_videos.append(rec["error"])
        else:
            summary.failed += 1
            summary.errors.append(rec["error"])
        write_record(out, rec)
        _log_event(out, rank, event=rec["status"], method=method, case=job.case.name,
                   prompt_index=job.prompt_index, seed=job.seed)
        advance()

    def work(case: Case, todo: list[tuple[int, str, int]]) -> None:
        """The case's videos still to do, under its lock."""
        _remove_partial_files(out / method / case.name)
        jobs = [VideoJob(method=method, case=case, prompt_index=i, prompt=prompt, seed=seed,
                         config_hash=producer.config_hash, provenance=producer.provenance)
                for i, prompt, seed in todo]
        for job in jobs:  # a record the producer could not read is overwritten: say so first
            try:
                read_record(record_path(out, method, case.name, job.prompt_index, job.seed))
            except RecordError as exc:
                log(f"{exc}, redoing")
                summary.unreadable.append(str(exc))
        try:
            fit_seconds = producer.open_case(case, status)
        except (MediaError, ValueError, OSError, NonFiniteError) as exc:
            msg = f"{case.name}: {error_line(exc)}"
            log(f"[red]failed[/red] {msg}")
            for job in jobs:
                summary.failed += 1
                write_record(out, job.failure(msg))
            summary.errors.append(msg)
            advance(len(jobs))
            return
        status(f"{case.name}: motion reference")
        references = producer.references(case)
        for job in jobs:
            job = replace(job, references=references, fit_seconds=fit_seconds)
            status(job.label)
            try:
                rec = producer.produce(job)
            except (MediaError, ValueError, RuntimeError, OSError, NonFiniteError) as exc:
                msg = f"{job.label}: {error_line(exc)}"
                log(f"[red]failed[/red] {msg}")
                rec = job.failure(msg)
            record(job, rec)

    deferred = []
    for case, todo in pending:
        if not todo:
            continue
        with _case_lock(out / method / case.name, wait=False) as held:
            if held:
                todo = todo_of(case)  # another process may have finished some before we got the lock
                if todo:
                    work(case, todo)
                continue
        deferred.append((case, todo))
    for case, todo in deferred:
        case_dir = out / method / case.name
        line = f"{case.name}: locked by another run into {out} ({_lock_holder(case_dir)})"
        log(f"[yellow]waiting[/yellow] {line}; waiting for it to finish")
        summary.locked.append(line)
        status(f"{case.name}: waiting for the other run")
        with _case_lock(case_dir):
            left = todo_of(case)
            by_other = len(todo) - len(left)
            summary.by_other += by_other
            advance(by_other)
            if by_other:
                log(f"{case.name}: {by_other} video(s) recorded by the other run meanwhile")
            if left:
                work(case, left)
    return summary


def run(cfg: RunConfig, *, progress=None, log=print) -> RunSummary:
    """Run ``cfg.method`` over the grid; see the module docstring for the guarantees.

    Args:
        cfg: the run configuration. ``cfg.method`` is a registry name or a plugin target
            ``package.module:Class`` (:func:`benchmark.registry.get_spec`; its records are under the
            spec's name).
        progress: a ``rich.progress.Progress`` to report on (``None``: no bars).
        log: a callable for one-line messages.

    Returns:
        A :class:`RunSummary` (done, skipped, failed counts and error lines).

    Raises:
        benchmark.data.DataError / benchmark.grid errors for a bad grid (before any work starts),
        benchmark.registry.UnknownMethodError / MethodLoadError for a method that cannot be found,
        ValueError for a bad request — geometry, steps, fps, guidance, a method option —
        (:func:`check_request`, before anything is loaded),
        dualreal.engine.backbone.BackboneError for a backbone that cannot be loaded (or that the
        memory check refuses without ``allow_large``).
    """
    name = get_spec(cfg.method).name
    request = check_request(cfg)
    for note in request.notes:
        log(f"[yellow]note:[/yellow] {note}")
    out = Path(cfg.out)
    cases, rank = select_cases(load_grid(cfg.grid, cfg.data_root), cases=cfg.cases, max_cases=cfg.max_cases,
                               max_prompts=cfg.max_prompts, seeds=cfg.seeds)
    producer = _Generator(cfg=cfg, name=name, out=out, progress=progress, request=request, log=log)
    return run_jobs(cases, out=out, method=name, producer=producer, rank=rank, progress=progress, log=log)


@dataclass
class _Generator:
    """``run``'s :class:`VideoProducer`: fits the method on each case and generates its videos.
    :meth:`setup` loads the backbone, the method and the scorer (None: not scoring)."""

    cfg: RunConfig
    name: str
    out: Path
    progress: Any = None
    request: CheckedRequest | None = None
    log: Callable[[str], None] = print
    config_hash: str = ""
    provenance: str = "run"
    fit_peak_gb: float | None = None

    def is_done(self, case: Case, prompt_index: int, seed: int) -> bool:
        return _is_done(record_path(self.out, self.name, case.name, prompt_index, seed))

    def setup(self) -> None:
        from dualreal.engine.backbone import load_backbone

        cfg = self.cfg
        if self.request is None:
            self.request = check_request(cfg)
        self.options, self.notes, self.settings = self.request.options, list(self.request.notes), self.request.settings
        device = _device_for_rank(cfg.device)
        scheduler = None if cfg.scheduler == SCHEDULER_AS_CONFIGURED else cfg.scheduler
        self.backbone = load_backbone(cfg.backbone, dtype=cfg.dtype, device=device, allow_large=cfg.allow_large,
                                      timestep_spacing=cfg.timestep_spacing, scheduler=scheduler)
        replaced = self.backbone.provenance().get("scheduler_replaces")
        if replaced:
            note = (f"sampler {type(self.backbone.scheduler).__name__} from the backbone's {replaced} configuration "
                    "(--scheduler; as DualReal's inference script does)")
            self.notes.append(note)
            self.log(f"[yellow]note:[/yellow] {note}")
        self.method = create_method(cfg.method, self.backbone, **self.options)
        self.scorer = None
        self.training_budget: list[dict[str, Any]] | None = None
        if cfg.score:
            self.scorer = make_scorer(metrics=cfg.metrics, weights_dir=cfg.weights_dir,
                                      random_metric_weights=cfg.random_metric_weights, random_arch=cfg.random_arch,
                                      dd_pad_multiple=cfg.dd_pad_multiple, device=device, cache_dir=self.out,
                                      backbone_random_weights=self.backbone.random_weights)
        hash_payload = {
            "method": self.method.describe(),
            "backbone": self.backbone.provenance(),
            "settings": asdict(self.settings),
            "grid": cfg.grid,
            "train_steps": self.options.get("train_steps"),
            "max_clips": cfg.max_clips,
            "method_options": cfg.method_options,
            "decode": {"motion_resize": cfg.motion_resize, "identity_resize": cfg.identity_resize},
        }
        self.config_hash = hash_config(hash_payload)

    def open_case(self, case: Case, status: Callable[[str], None]) -> float:
        status(f"{case.name}: decoding")
        # clips are decoded at the method's training frame count (a generation length that differs
        # must neither cut nor pad them); a shorter clip is padded, logged once here and recorded
        train_frames = self.method.training_frames() or self.settings.num_frames
        self.decoded = decode_case(case, num_frames=train_frames, height=self.settings.height,
                                   width=self.settings.width, max_clips=self.cfg.max_clips,
                                   preservation=self.method.preservation_clip_count(),
                                   motion_resize=self.cfg.motion_resize, identity_resize=self.cfg.identity_resize)
        note = self.decoded.padding_note() if self.method.trainable else ""
        if note:
            self.log(f"[yellow]note:[/yellow] {case.name}: {note}")
        #: Per training clip: source fps, stride, source frames, frames used and padded (recorded).
        self.training_clips = self.decoded.training_clips if self.method.trainable else []
        status(f"{case.name}: fitting")
        t0 = time.perf_counter()
        with peak_memory(self.backbone.device) as peak:
            self.method.fit(self.decoded.data, self.out / self.name / case.name / "checkpoint", progress=self.progress)
        seconds = time.perf_counter() - t0
        self.fit_peak_gb = peak.gb
        runs = self.method.training_budget()
        #: The method's training budget after this fit (recorded; ``None``: not reported).
        self.training_budget = None if runs is None else [run.to_dict() for run in runs]
        return seconds

    def references(self, case: Case) -> CaseReferences:
        decoded: DecodedCase = self.decoded
        return case_references(self.scorer, decoded.reference_images, decoded.motion_clips, decoded.case.motion)

    def produce(self, job: VideoJob) -> dict[str, Any]:
        """Generate → write the mp4 (and the method's extras) → score → the ``ok`` record of ``job``."""
        t0 = time.perf_counter()
        with peak_memory(self.backbone.device) as peak:
            video = self.method.generate(job.prompt, job.seed, self.settings)
        gen_seconds = time.perf_counter() - t0
        prompt_note = text_encoder_cut_note(self.backbone, str(video.extras.get("prompt_used", job.prompt)))
        mp4 = job.video_path(self.out)
        write_video(mp4, video.frames, fps=video.fps)
        if video.extras:
            write_json(mp4.with_suffix(".json"), video.extras)
        # Score the generated frames themselves (no decode, bit-reproducible); `dualbench eval` on
        # the mp4 sees them after H.264 at CRF 12, which moves the metrics by the codec's loss.
        return job.ok_record(
            video.frames, video.fps, self.scorer, random_weights=self.backbone.random_weights,
            video=str(mp4.relative_to(self.out)),
            fit_seconds=round(job.fit_seconds or 0.0, 3),
            training_budget=self.training_budget,
            training_clips=self.training_clips,
            generate_seconds=round(gen_seconds, 3),
            fit_peak_memory_gb=self.fit_peak_gb,
            generate_peak_memory_gb=peak.gb,
            num_inference_steps=self.settings.num_inference_steps,
            guidance_scale=self.settings.guidance_scale,
            prompt_note=prompt_note,
            method_options=dict(self.cfg.method_options),
            motion_resize=self.cfg.motion_resize,
            identity_resize=self.cfg.identity_resize,
            run_notes="; ".join(self.notes),
            **self.backbone.provenance(),
        )
