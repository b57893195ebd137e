"""Bring your own method: the generation manifest, and scoring videos made elsewhere into records.

The library behind ``dualbench manifest`` and ``dualbench score`` (docs/EXTERNAL.md):

* :func:`manifest_rows` lists, per video a grid asks for, everything needed to generate it outside
  dualbench — the case, its identity folder and reference images, its motion folder and clips, the
  prompt (raw, with the identity token ``*``) and the class word, prompt index, seed, the expected
  frames / height / width / fps (:class:`Geometry`), and the path the video is to be saved at,
  ``<case>/p003_s42.mp4`` (the file names ``dualbench run`` uses, :func:`benchmark.store.video_stem`).
* :func:`score` scores the videos found under a folder laid out that way into the same records as
  ``dualbench run`` (the shared loop :func:`benchmark.runner.run_jobs` and the one "frames → scored
  record" step :meth:`benchmark.runner.VideoJob.ok_record`): same metrics, per-case references,
  motion-reference cache, sharding, resume, per-case lock and atomic writes. Each record is marked
  ``provenance: "external"`` and carries the file's ``video_sha256`` and the decoded frames'
  ``frames_sha256``. A video not found gets a ``missing`` record (counted by ``dualbench table``
  and ``report``, never averaged); a file that no manifest row names is listed and ignored; a video
  whose frame count, size or frame rate differs from the expected geometry is scored and flagged
  (``geometry_mismatch`` and ``geometry_note``).

Records are resumed by content: an ``ok`` record is kept while its file's sha256 is unchanged; a
changed file is scored again, a file that disappeared becomes ``missing``.

Lossless files: ``dualbench run`` scores its generated frames before H.264; to get the same numbers
from files, write them losslessly (``write_video(..., lossless=True)``: ``libx264rgb`` at QP 0, or
FFV1 in ``.mkv``). Any container :func:`benchmark.media.read_video` decodes is accepted under the
manifest's stem (``p003_s42.mkv`` for ``p003_s42.mp4``).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from benchmark.data import list_identity_images, load_motion
from benchmark.grid import Case, filter_cases, load_grid, reference_images
from benchmark.media import VIDEO_EXTENSIONS, MediaError, file_sha256, read_video
from benchmark.registry import MethodLoadError, UnknownMethodError, get_spec
from benchmark.runner import (
    CaseReferences,
    RunSummary,
    VideoJob,
    case_references,
    hash_config,
    make_scorer,
    readable_record,
    run_jobs,
    select_cases,
)
from benchmark.scorer import DEFAULT_DD_PAD_MULTIPLE, DEFAULT_RANDOM_ARCH, Scorer
from benchmark.store import export_records, output_format, record_path, video_stem
from dualreal.engine.backbone import default_geometry
from dualreal.engine.io import atomic_write_json

__all__ = [
    "MANIFEST_FORMATS",
    "MANIFEST_COLUMNS",
    "DEFAULT_FPS",
    "PAPER_BACKBONE",
    "Geometry",
    "manifest_video",
    "manifest_rows",
    "write_manifest",
    "find_video",
    "survey_video_root",
    "check_external_name",
    "ScoreConfig",
    "ScoreResult",
    "score",
]

#: Formats of :func:`write_manifest`, by the file's extension.
MANIFEST_FORMATS = (".csv", ".json")
#: Columns of the manifest, in order.
MANIFEST_COLUMNS = [
    "video", "case", "prompt_index", "seed", "prompt", "class_word", "num_frames", "height", "width", "fps",
    "identity", "identity_folder", "reference_images", "ref_image", "motion", "motion_folder", "motion_clips",
]
#: Frame rate of the written videos (``dualbench run --fps``; the paper's 8 fps).
DEFAULT_FPS = 8
#: The backbone whose geometry ``manifest`` and ``score`` expect by default: the paper's CogVideoX-5B
#: (49 frames, 480×720).
PAPER_BACKBONE = "THUDM/CogVideoX-5b"


@dataclass(frozen=True)
class Geometry:
    """The frames, size and frame rate a video of the manifest is expected to have.

    Attributes:
        num_frames: frames per video (49 in the paper).
        height, width: pixels (480×720 in the paper).
        fps: frames per second of the file (8 in the paper).
    """

    num_frames: int
    height: int
    width: int
    fps: float

    @classmethod
    def for_backbone(cls, backbone: str = PAPER_BACKBONE, *, num_frames: int | None = None, height: int | None = None,
                     width: int | None = None, fps: float | None = None) -> "Geometry":
        """The geometry ``dualbench run --backbone BACKBONE`` generates: each value given, else the
        backbone's default (:func:`dualreal.engine.backbone.default_geometry`; nothing is loaded)
        and :data:`DEFAULT_FPS`.

        Raises:
            ValueError: a value that is not a positive number.
        """
        d = default_geometry(backbone)
        geo = cls(num_frames=d["num_frames"] if num_frames is None else num_frames,
                  height=d["height"] if height is None else height, width=d["width"] if width is None else width,
                  fps=DEFAULT_FPS if fps is None else fps)
        for name in ("num_frames", "height", "width"):
            value = getattr(geo, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(geo.fps, (int, float)) and math.isfinite(geo.fps) and geo.fps > 0):
            raise ValueError(f"fps must be a positive number, got {geo.fps!r}")
        return geo

    def text(self) -> str:
        """``49 frames, 480×720, 8 fps``."""
        return f"{self.num_frames} frames, {self.height}×{self.width}, {self.fps:g} fps"

    def mismatch(self, num_frames: int, height: int, width: int, fps: float) -> str:
        """``""`` when a video matches, else one line saying what differs."""
        got = Geometry(num_frames, height, width, fps)
        if (num_frames, height, width) == (self.num_frames, self.height, self.width) and math.isclose(
                fps, self.fps, rel_tol=1e-3):
            return ""
        return f"expected {self.text()}, got {got.text()}"


# ------------------------------------------------------------------------------------------------
# 1. The manifest
# ------------------------------------------------------------------------------------------------


def manifest_video(case: str, prompt_index: int, seed: int) -> str:
    """``<case>/p003_s42.mp4``: where a video goes under the folder given to ``dualbench score``."""
    return f"{case}/{video_stem(prompt_index, seed)}.mp4"


def _shown(path: Path, data_root: Path | None) -> str:
    """``path`` relative to ``data_root`` when inside it (portable between machines), else absolute."""
    path = Path(os.path.abspath(path))
    if data_root is not None and path.is_relative_to(data_root):
        return path.relative_to(data_root).as_posix()
    return str(path)


def manifest_rows(cases: list[Case], geometry: Geometry, *, data_root: str | os.PathLike | None = None
                  ) -> list[dict[str, Any]]:
    """One row per video the grid asks for (case order, then prompt, then seed).

    Args:
        cases: the (filtered) grid, :func:`benchmark.grid.load_grid` / ``filter_cases``.
        geometry: what each video must have.
        data_root: paths inside it are written relative to it; others absolute.

    Returns:
        Dicts with :data:`MANIFEST_COLUMNS`: ``video`` (``<case>/p003_s42.mp4``), ``case``,
        ``prompt_index``, ``seed``, ``prompt`` (raw, with ``*``), ``class_word``, ``num_frames``,
        ``height``, ``width``, ``fps``, ``identity`` / ``motion`` (folder names),
        ``identity_folder``, ``reference_images`` (list: the images CLIP-I and DINO-I compare with,
        :func:`benchmark.data.list_identity_images`), ``ref_image`` (the image that conditions the
        motion at inference), ``motion_folder``, ``motion_clips`` (list: the clips whose dynamic
        degree is ``dynamic_degree_ref``).

    Raises:
        DataError: an identity or motion folder that cannot be listed.
    """
    root = Path(os.path.abspath(data_root)) if data_root is not None else None
    rows = []
    for case in cases:
        refs = [_shown(p, root) for p in list_identity_images(case.identity)]
        clips = [_shown(p, root) for p in load_motion(case.motion).clips]
        for i, prompt in enumerate(case.prompts):
            for seed in case.seeds:
                rows.append({
                    "video": manifest_video(case.name, i, seed), "case": case.name, "prompt_index": i, "seed": seed,
                    "prompt": prompt, "class_word": case.class_word, "num_frames": geometry.num_frames,
                    "height": geometry.height, "width": geometry.width, "fps": geometry.fps,
                    "identity": case.identity_name, "identity_folder": _shown(case.identity, root),
                    "reference_images": refs, "ref_image": _shown(case.ref_image, root),
                    "motion": case.motion_name, "motion_folder": _shown(case.motion, root), "motion_clips": clips,
                })
    return rows


def write_manifest(rows: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """Write the manifest atomically: ``.json`` a list of objects (:data:`MANIFEST_COLUMNS`, lists as
    arrays; :func:`dualreal.engine.io.atomic_write_json`), ``.csv`` one row per video with each list
    as a JSON array in its cell (:func:`benchmark.store.export_records`).

    Raises:
        ValueError: an extension other than :data:`MANIFEST_FORMATS`.
    """
    out = Path(out)
    ext = output_format(out, MANIFEST_FORMATS, "manifest format")
    ordered = [{k: row[k] for k in MANIFEST_COLUMNS} for row in rows]
    if ext == ".json":
        return atomic_write_json(out, ordered, indent=1, ensure_ascii=False)
    df = pd.DataFrame(ordered, columns=MANIFEST_COLUMNS)
    for col in ("reference_images", "motion_clips"):
        df[col] = [json.dumps(v, ensure_ascii=False) for v in df[col]]
    return export_records(df, out)


# ------------------------------------------------------------------------------------------------
# 2. Finding the videos
# ------------------------------------------------------------------------------------------------


def find_video(root: Path, case: str, prompt_index: int, seed: int) -> Path | None:
    """The file of one manifest row under ``root``: ``<case>/p003_s42`` with a video extension
    (:data:`benchmark.media.VIDEO_EXTENSIONS`, any case; ``.mp4`` as the manifest says, or another
    container such as a lossless ``.mkv``). None when there is none.

    Raises:
        MediaError: two files for one video (``p003_s42.mp4`` and ``p003_s42.mkv``).
    """
    folder = Path(root) / case
    stem = video_stem(prompt_index, seed)
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in VIDEO_EXTENSIONS
                   and not p.is_dir())
    if len(found) > 1:
        raise MediaError(f"{folder}: {len(found)} files for one video ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def survey_video_root(root: Path, grid: list[Case], selected: list[Case]) -> tuple[list[str], int]:
    """What else lies under ``root``: files that no manifest row of ``grid`` names (listed, to be
    ignored), and how many files belong to videos of ``grid`` left out by the filters.

    Args:
        root: the folder given to ``dualbench score``.
        grid: every case (seeds as scored), :func:`benchmark.grid.load_grid`.
        selected: the cases being scored (after ``--cases`` / ``--max-*``).

    Returns:
        ``(unexpected, not_selected)``: paths relative to ``root``, sorted; a count.
    """
    def keys(cases: list[Case]) -> set[tuple[str, str]]:
        return {(c.name, video_stem(i, s)) for c in cases for i in range(len(c.prompts)) for s in c.seeds}

    known, chosen = keys(grid), keys(selected)
    unexpected, not_selected = [], 0
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            rel = (Path(folder) / name).relative_to(root)
            key = (rel.parts[0], Path(name).stem) if len(rel.parts) == 2 else None
            if key in known and Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                not_selected += key not in chosen
            else:
                unexpected.append(rel.as_posix())
    return unexpected, not_selected


# ------------------------------------------------------------------------------------------------
# 3. Scoring
# ------------------------------------------------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_external_name(name: str, out: Path) -> None:
    """Refuse a method name that ``dualbench score`` cannot write records under.

    Raises:
        ValueError: not a plain folder name (letters, digits, ``._+-``); the name of a method
            ``dualbench run`` can run (built-in, plugin or target: its records come from ``run``); or
            ``out/<name>`` already holds records that ``run`` made.
    """
    if not _NAME.match(name):
        raise ValueError(f"method name {name!r} is a folder name: letters, digits and . _ + - only, "
                         "starting with a letter or digit")
    try:
        spec = get_spec(name)
    except (UnknownMethodError, MethodLoadError):
        spec = None
    if spec is not None:
        raise ValueError(f"{name!r} is the name of a method `dualbench run` runs ({spec.origin}: {spec.target}); "
                         f"name your videos' method differently, e.g. --method {name}-external")
    for path in sorted(Path(out, name).glob("*/records/*.json")):
        rec = readable_record(path)
        if rec is not None and rec.get("provenance") != "external":
            raise ValueError(f"{path}: {out / name} holds records made by `dualbench run`; "
                             "score external videos under another method name or --out")


@dataclass
class ScoreConfig:
    """Everything ``dualbench score`` takes.

    Attributes:
        method: the name the records are filed under (not a registered method's).
        videos: the folder of videos laid out as the manifest says (``<case>/p003_s42.mp4``).
        grid, data_root, cases, max_cases, max_prompts, seeds: the grid, as for ``dualbench run``.
        out: the runs folder (records under ``out/<method>/<case>/records/``).
        backbone: whose default geometry the videos are expected to have (never loaded): the
            paper's CogVideoX-5B by default, ``tiny`` for smoke runs. Recorded as ``backbone``
            (declared, not checked).
        num_frames, height, width, fps: the expected geometry (None: the backbone's, 8 fps).
        metrics, weights_dir, random_metric_weights, random_arch, dd_pad_multiple, device: the
            scorer's options, as for ``dualbench run`` (random metric weights by default only for
            the ``tiny`` backbone without ``weights_dir``).
    """

    method: str
    videos: Path
    grid: str = "dualreal50"
    data_root: Path | None = None
    out: Path = Path("runs")
    backbone: str = PAPER_BACKBONE
    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    cases: list[str] | None = None
    max_cases: int | None = None
    max_prompts: int | None = None
    seeds: list[int] | None = None
    metrics: list[str] | None = None
    weights_dir: Path | None = None
    random_metric_weights: bool | None = None
    random_arch: str = DEFAULT_RANDOM_ARCH
    dd_pad_multiple: int = DEFAULT_DD_PAD_MULTIPLE
    device: str = "cpu"


@dataclass
class ScoreResult:
    """What :func:`score` did.

    Attributes:
        summary: the loop's counts (``done`` scored now, ``skipped`` recorded and unchanged,
            ``missing`` with ``missing_videos``, ``failed`` with ``errors``).
        flagged: one line per video scored with a geometry other than expected.
        unexpected: files under the video folder that no manifest row names (ignored), relative
            paths; listed by rank 0 only.
        not_selected: files of videos the filters left out (ignored).
        geometry: the expected geometry.
    """

    summary: RunSummary
    geometry: Geometry
    flagged: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    not_selected: int = 0


@dataclass
class _ExternalVideos:
    """``score``'s :class:`benchmark.runner.VideoProducer`: each video's frames come from its file."""

    cfg: ScoreConfig
    name: str
    out: Path
    geometry: Geometry
    flagged: list[str] = field(default_factory=list)
    config_hash: str = ""
    provenance: str = "external"

    def __post_init__(self) -> None:
        self.root = Path(self.cfg.videos)
        self.scorer: Scorer | None = None

    def is_done(self, case: Case, prompt_index: int, seed: int) -> bool:
        rec = readable_record(record_path(self.out, self.name, case.name, prompt_index, seed))
        if rec is None or rec.get("status") != "ok":
            return False
        try:
            path = find_video(self.root, case.name, prompt_index, seed)
            return path is not None and rec.get("video_sha256") == file_sha256(path)
        except (MediaError, OSError):
            return False  # ambiguous or unreadable now: redo (and record why)

    def setup(self) -> None:
        cfg = self.cfg
        self.scorer = make_scorer(metrics=cfg.metrics, weights_dir=cfg.weights_dir,
                                  random_metric_weights=cfg.random_metric_weights, random_arch=cfg.random_arch,
                                  dd_pad_multiple=cfg.dd_pad_multiple, device=cfg.device, cache_dir=self.out,
                                  backbone_random_weights=cfg.backbone == "tiny")
        self.config_hash = hash_config({"method": self.name, "provenance": self.provenance, "grid": cfg.grid,
                                        "backbone": cfg.backbone, "geometry": vars(self.geometry)})

    def open_case(self, case: Case, status: Callable[[str], None]) -> None:
        status(f"{case.name}: references")
        self._refs = reference_images(case.identity)
        self._clips = load_motion(case.motion).clips

    def references(self, case: Case) -> CaseReferences:
        return case_references(self.scorer, self._refs, self._clips, case.motion)

    def produce(self, job: VideoJob) -> dict[str, Any]:
        """Find → hash → decode → score one video: its ``ok`` record (flagged when its geometry is not
        the expected one), a ``missing`` record, or a ``failed`` one (ambiguous or undecodable file)."""
        rel = manifest_video(job.case.name, job.prompt_index, job.seed)
        expected = {f"expected_{k}": v for k, v in vars(self.geometry).items()}
        try:
            path = find_video(self.root, job.case.name, job.prompt_index, job.seed)
        except MediaError as exc:
            return job.failure(f"{job.label}: {exc}", expected_video=rel)
        if path is None:
            return job.failure(f"{self.root / rel}: not found", status="missing", expected_video=rel)
        path = Path(os.path.abspath(path))
        try:
            sha = file_sha256(path)
            frames, fps = read_video(path)
        except (MediaError, OSError) as exc:
            return job.failure(f"{job.label}: {exc}", video=str(path), expected_video=rel)
        note = self.geometry.mismatch(int(frames.shape[0]), int(frames.shape[1]), int(frames.shape[2]), fps)
        if note:
            self.flagged.append(f"{rel}: {note}")
        return job.ok_record(
            frames, fps, self.scorer, random_weights=self.cfg.backbone == "tiny",
            video=str(path), expected_video=rel, video_sha256=sha, geometry_mismatch=bool(note),
            geometry_note=note, **expected, fit_seconds=None, generate_seconds=None, num_inference_steps=None,
            guidance_scale=None, backbone=self.cfg.backbone, backbone_random_weights=self.cfg.backbone == "tiny",
        )


def score(cfg: ScoreConfig, *, progress=None, log=print) -> ScoreResult:
    """Score the videos under ``cfg.videos`` into records under ``cfg.out/cfg.method`` (see the module
    docstring). Shardable like ``dualbench run`` (``RANK`` / ``WORLD_SIZE``: every N-th case) and
    resumable.

    Args:
        cfg: the scoring configuration.
        progress: a ``rich.progress.Progress`` to report on (``None``: no bars).
        log: a callable for one-line messages.

    Returns:
        A :class:`ScoreResult`.

    Raises:
        ValueError: a bad method name (:func:`check_external_name`), geometry or grid (DataError);
            the video folder does not exist.
        EncoderWeightsError: metric weights not found.
    """
    out = Path(cfg.out)
    root = Path(cfg.videos)
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder of videos (expected <case>/p000_s42.mp4 inside; "
                         "`dualbench manifest` lists them)")
    check_external_name(cfg.method, out)
    geometry = Geometry.for_backbone(cfg.backbone, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width,
                                     fps=cfg.fps)
    grid = load_grid(cfg.grid, cfg.data_root)
    cases, rank = select_cases(grid, cases=cfg.cases, max_cases=cfg.max_cases, max_prompts=cfg.max_prompts,
                               seeds=cfg.seeds)
    result = ScoreResult(summary=RunSummary(), geometry=geometry)
    if rank == 0:
        everything = filter_cases(grid, seeds=cfg.seeds)
        selected = filter_cases(grid, names=cfg.cases, max_cases=cfg.max_cases, max_prompts=cfg.max_prompts,
                                seeds=cfg.seeds)
        result.unexpected, result.not_selected = survey_video_root(root, everything, selected)
    producer = _ExternalVideos(cfg=cfg, name=cfg.method, out=out, geometry=geometry)
    result.summary = run_jobs(cases, out=out, method=cfg.method, producer=producer, rank=rank, progress=progress,
                              log=log)
    result.flagged = producer.flagged
    return result
