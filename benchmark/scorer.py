"""The one scorer: decodes each video once and feeds every requested metric.

The scorer knows no metric by name: it walks the metric table (:data:`benchmark.metrics.METRICS`)
and calls each requested record's ``compute`` entry with a per-video :class:`VideoInputs`, which
computes and caches what the entries ask for:

* each encoder is loaded once per process (:func:`benchmark.encoders.get_encoder`), and only those
  the requested metrics declare;
* frame embeddings are computed once per video and encoder (CLIP-I and T-Cons share one LAION-CLIP
  pass), reference-image embeddings once per identity (keyed by the images' content), text
  embeddings once per prompt, and work shared by several columns once per video (one RAFT pass
  feeds ``dynamic_degree`` and ``dynamic_degree_vbench``);
* a metric whose optional input is missing (no prompt, no reference images, no reference motion)
  or whose formula raises :class:`~benchmark.metrics.MetricUndefined` (too few frames, frames too
  small for RAFT or AMT — see docs/METRICS.md) gives ``NaN`` plus a one-line note, never a crash.

Undecodable videos raise :class:`benchmark.media.MediaError` (the caller records a failed row).
Every row carries provenance: ``metric_random_weights``, ``metric_weights`` (fingerprints of the
weights used), ``decoder``. The math lives in :mod:`benchmark.metrics`; this module only plumbs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.encoders import ENCODERS, get_encoder
from benchmark.media import DECODER, MediaError, degenerate_note, read_video
from benchmark.metrics import METRICS, OPTIONAL_INPUTS, MetricUndefined, output_columns, resolve_metrics
from benchmark.metrics.dynamic_degree import DEFAULT_PAD_MULTIPLE, PAD_MULTIPLES, TOP_FRACTION
from dualreal.engine.io import atomic_write_json

__all__ = [
    "Scorer", "VideoInputs", "DEFAULT_RANDOM_ARCH", "DD_PAD_MULTIPLES", "DEFAULT_DD_PAD_MULTIPLE", "PROVENANCE_COLUMNS",
    "motion_reference_cache_file",
]

#: ``random_arch`` of every scoring entry point (``Scorer``, ``dualbench run`` / ``eval``): random
#: weights serve tests and smoke runs, where the narrow same-family encoders are fast on CPU.
DEFAULT_RANDOM_ARCH = "small"
#: Valid RAFT input paddings (8: VBench, 16: the authors' script) and the default, 16 (docs/METRICS.md).
DD_PAD_MULTIPLES = PAD_MULTIPLES
DEFAULT_DD_PAD_MULTIPLE = DEFAULT_PAD_MULTIPLE
#: Provenance columns of every row.
PROVENANCE_COLUMNS = ("metric_random_weights", "metric_weights", "decoder")

_DD_CACHE_VERSION = 1


def motion_reference_cache_file(cache_dir: str | os.PathLike, motion: str | os.PathLike) -> Path:
    """Where the dynamic degree of a motion's reference clips is cached: ``<cache_dir>/motion_refs/
    <motion folder name>.json`` (``runs/motion_refs/playingGuitar.json`` for a run).

    Entries inside are keyed by each clip's resolved path, so two motion folders of the same name
    share the file without mixing values.
    """
    return Path(cache_dir) / "motion_refs" / f"{Path(motion).name}.json"


def _as_frames(frames) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)``; grayscale ``(F, H, W)`` / ``(F, H, W, 1)`` is replicated to RGB."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise MediaError(f"frames: expected a uint8 tensor (F, H, W, 3), got {type(frames).__name__}")
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3) or frames.dtype != torch.uint8:
        raise MediaError(f"frames: expected uint8 (F, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise MediaError(f"frames: empty video {tuple(frames.shape)}")
    if frames.shape[-1] == 1:
        frames = frames.expand(-1, -1, -1, 3)
    return frames.contiguous()


def _as_image(img) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.ascontiguousarray(img))
    if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8:
        raise MediaError("reference image: expected a uint8 tensor (H, W, 3)")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise MediaError(f"reference image: expected (H, W, 3), got {tuple(img.shape)}")
    return img.expand(-1, -1, 3).contiguous()


def _content_key(images: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha1()
    for im in images:
        h.update(str(tuple(im.shape)).encode())
        h.update(im.numpy().tobytes())
    return h.hexdigest()


class VideoInputs:
    """One video's inputs as the metric compute entries see them (:class:`benchmark.metrics.MetricInputs`).

    Built by :class:`Scorer`; embeddings and shared work are computed on first request and cached
    (per video here, per identity and per prompt in the scorer).

    Args:
        scorer: the scorer whose encoders, settings and caches are used.
        frames: uint8 ``(F, H, W, 3)``.
        fps: frame rate (> 0).
        prompt: the prompt or None; ref_images: uint8 ``(H, W, 3)`` images; dd_ref: px or None.
        encoders: the encoder names the metrics being computed declare (others are refused).
    """

    def __init__(self, scorer: "Scorer", frames: torch.Tensor, fps: float, *, prompt: str | None = None,
                 ref_images: Sequence[torch.Tensor] = (), dd_ref: float | None = None, encoders: Sequence[str] = ()):
        self._scorer = scorer
        self.frames = frames
        self.fps = float(fps)
        self.prompt = prompt
        self.ref_images = list(ref_images)
        self.dd_ref = dd_ref
        self.device = scorer.device
        self.pair_batch_size = scorer.pair_batch_size
        self.dd_pad_multiple = scorer.dd_pad_multiple
        self._encoders = set(encoders)
        self._ref_key = _content_key(self.ref_images) if self.ref_images else ""
        self._shared: dict[str, Any] = {}
        self._values: dict[str, float] = {}
        self._notes: dict[str, list[str]] = defaultdict(list)
        self._current = ""

    def missing(self, name: str) -> bool:
        """True when the optional input ``name`` (``prompt``, ``ref_images``, ``dd_ref``) is absent
        (a blank prompt counts as absent)."""
        if name == "prompt":
            return self.prompt is None or self.prompt.strip() == ""
        if name == "ref_images":
            return not self.ref_images
        if name == "dd_ref":
            return self.dd_ref is None
        raise KeyError(f"unknown optional input {name!r}; known: {', '.join(OPTIONAL_INPUTS)}")

    def encoder(self, name: str):
        if name not in self._encoders:
            raise KeyError(f"encoder {name!r} is not declared by the metrics being computed ({', '.join(sorted(self._encoders)) or 'none'})")
        return self._scorer._encoder(name)

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._shared:
            try:
                self._shared[key] = compute()
            except MetricUndefined as exc:
                self._shared[key] = exc
        value = self._shared[key]
        if isinstance(value, MetricUndefined):
            raise value
        return value

    def frame_embeddings(self, encoder: str) -> torch.Tensor:
        enc = self.encoder(encoder)
        return self.shared(f"{encoder}/frames", lambda: enc.encode_images(self.frames, batch_size=self._scorer.batch_size))

    def ref_embeddings(self, encoder: str) -> torch.Tensor:
        enc = self.encoder(encoder)
        cache = self._scorer._ref_embeddings
        if (encoder, self._ref_key) not in cache:
            cache[(encoder, self._ref_key)] = enc.encode_images(self.ref_images, batch_size=self._scorer.batch_size)
        return cache[(encoder, self._ref_key)]

    def text_embedding(self, encoder: str, text: str) -> torch.Tensor:
        enc = self.encoder(encoder)
        cache = self._scorer._text_embeddings
        if (encoder, text) not in cache:
            cache[(encoder, text)] = enc.encode_text([text])
        return cache[(encoder, text)]

    def value(self, metric: str) -> float:
        return self._values.get(metric, math.nan)

    def note(self, text: str) -> None:
        self._notes[self._current].append(text)


class Scorer:
    """Scores decoded videos on the requested metrics; loads each needed encoder once.

    Args:
        metrics: metric names (see :data:`benchmark.metrics.METRICS`); ``None`` → the seven of
            Table 1. Derived columns (``dynamic_degree_ref``, ``dynamic_degree_delta``) come with
            their metric.
        weights_dir: folder of real weights laid out by upstream names
            (:func:`benchmark.encoders.resolve_weights`); then the standard caches.
        random_weights: seeded random weights instead (tests, smoke runs; every row says so).
        device: torch device for the encoders (fp32 everywhere).
        dd_pad_multiple: RAFT input padding, 16 (the authors' script; default) or 8 (VBench).
        cache_dir: where :meth:`motion_reference_dd` keeps its JSON cache
            (:func:`motion_reference_cache_file`); None → memory only.
        random_arch: with ``random_weights``: ``"small"`` same-family encoders (fast on CPU) or the
            ``"full"`` architectures.
        batch_size: frames per batch through the image encoders.
        pair_batch_size: frame pairs per batch through RAFT and AMT; ``None`` → 1 on CPU (batching
            their full-resolution convolutions is slower there) and 8 on GPU.

    Attributes:
        metrics: the requested metrics, in column order.
        columns: the metric columns of every row (``metrics`` plus derived columns).
        info_columns: the other columns of every row, in order.
        timings: seconds per metric (its compute entry, including shared work it triggered first),
            ``decode`` and ``motion_reference``, summed over calls.

    Raises:
        ValueError: unknown metric; ``random_weights`` with ``weights_dir``; a bad ``dd_pad_multiple``.
        EncoderWeightsError: real weights requested but not found.
    """

    def __init__(
        self,
        metrics: Sequence[str] | str | None = None,
        *,
        weights_dir: str | os.PathLike | None = None,
        random_weights: bool = False,
        device: str | torch.device = "cpu",
        dd_pad_multiple: int = DEFAULT_DD_PAD_MULTIPLE,
        cache_dir: str | os.PathLike | None = None,
        random_arch: str = DEFAULT_RANDOM_ARCH,
        batch_size: int = 32,
        pair_batch_size: int | None = None,
    ):
        if random_weights and weights_dir is not None:
            raise ValueError("random_weights=True and weights_dir are mutually exclusive")
        if dd_pad_multiple not in DD_PAD_MULTIPLES:
            raise ValueError(f"dd_pad_multiple must be 8 (VBench) or 16 (the authors' script), got {dd_pad_multiple}")
        self.metrics = resolve_metrics(metrics)
        self.columns = output_columns(self.metrics)
        self.weights_dir = weights_dir
        self.random_weights = bool(random_weights)
        self.random_arch = random_arch
        self.device = torch.device(device)
        self.dd_pad_multiple = dd_pad_multiple
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.pair_batch_size = pair_batch_size or (1 if self.device.type == "cpu" else 8)
        self.timings: dict[str, float] = defaultdict(float)
        self._ref_embeddings: dict[tuple[str, str], torch.Tensor] = {}
        self._text_embeddings: dict[tuple[str, str], torch.Tensor] = {}
        self._encoders: dict[str, object] = {}
        self._dd_mem: dict[str, dict] = {}
        self._needed = self._encoders_of(self.columns)
        for name in self._needed:
            self._encoder(name)
        info = [c for m in self.metrics for c in METRICS[m].info]
        self.info_columns = ["num_frames", "height", "width", "fps", "num_ref_images", "degenerate", "degenerate_note", *info,
                             "metric_notes", "score_seconds", *PROVENANCE_COLUMNS]

    # -- encoders and provenance --------------------------------------------------------------

    @staticmethod
    def _encoders_of(metrics: Sequence[str]) -> list[str]:
        needed = {e for m in metrics for e in METRICS[m].encoders}
        return [e for e in ENCODERS if e in needed]

    def _encoder(self, name: str):
        if name not in self._encoders:
            self._encoders[name] = get_encoder(
                name,
                weights_dir=self.weights_dir,
                random_weights=self.random_weights,
                random_arch=self.random_arch,
                device=self.device,
            )
        return self._encoders[name]

    @property
    def provenance(self) -> dict:
        """``metric_random_weights``, ``metric_weights`` (``name=fingerprint;…``), ``decoder``."""
        encs = [self._encoders[n] for n in ENCODERS if n in self._encoders]
        return {
            "metric_random_weights": any(e.random_weights for e in encs),
            "metric_weights": ";".join(f"{e.name}={e.fingerprint}" for e in encs),
            "decoder": DECODER,
        }

    # -- scoring ------------------------------------------------------------------------------

    def _compute(self, inputs: VideoInputs, columns: Sequence[str]) -> tuple[dict[str, float], dict[str, str]]:
        """Each column's value (NaN when undefined) and the reason of each NaN. Requested metrics are
        computed before the derived columns that read them."""
        values: dict[str, float] = {}
        notes: dict[str, str] = {}
        for name in sorted(columns, key=lambda c: METRICS[c].derived_from is not None):
            metric = METRICS[name]
            missing = [OPTIONAL_INPUTS[r] for r in metric.requires if inputs.missing(r)]
            value = math.nan
            if missing:
                notes[name] = missing[0]
            else:
                t0 = time.perf_counter()
                inputs._current = name
                try:
                    value = float(metric.compute(inputs))
                except MetricUndefined as exc:
                    notes[name] = str(exc)
                self.timings[name] += time.perf_counter() - t0
                if inputs._notes.get(name):
                    notes[name] = "; ".join([*inputs._notes[name], *([notes[name]] if name in notes else [])])
            values[name] = inputs._values[name] = value
        return values, notes

    def score(
        self,
        frames: torch.Tensor | np.ndarray,
        fps: float,
        prompt: str | None = None,
        ref_images: Sequence[torch.Tensor] | None = None,
        dd_ref: float | None = None,
    ) -> dict:
        """Score one decoded video.

        Args:
            frames: uint8 ``(F, H, W, 3)`` (grayscale ``(F, H, W)`` or ``(F, H, W, 1)`` is
                replicated to RGB).
            fps: frame rate (sets the dynamic-degree sampling step).
            prompt: the generation prompt, identity token included (cleaned by CLIP-T); None → no CLIP-T.
            ref_images: the identity's reference images, uint8 ``(H, W, 3)``; None/empty → no
                CLIP-I / DINO-I.
            dd_ref: dynamic degree of the reference motion (:meth:`motion_reference_dd`); None →
                no ``dynamic_degree_ref`` / ``dynamic_degree_delta``.

        Returns:
            A flat dict: :attr:`columns` (float, NaN when undefined), then :attr:`info_columns`:
            ``num_frames, height, width, fps``, ``num_ref_images`` (the reference images CLIP-I and
            DINO-I compared with), ``degenerate`` and ``degenerate_note``
            (:func:`benchmark.media.degenerate_note`: blank or frozen frames), the metrics' info
            columns (``dd_interval``, ``dd_pad_multiple``), ``metric_notes`` (``"metric: reason;
            …"`` in column order, empty when none: why a value is NaN, or what was changed to compute
            it — a prompt cut for CLIP), ``score_seconds`` and the provenance fields.

        Raises:
            MediaError: not a usable video (wrong dtype/shape, no frames, bad fps).
        """
        t_start = time.perf_counter()
        frames = _as_frames(frames)
        n, h, w = frames.shape[:3]
        if fps is None or not math.isfinite(float(fps)) or fps <= 0:
            raise MediaError(f"fps must be a positive number, got {fps}")
        refs = [_as_image(r) for r in (ref_images or [])]
        inputs = VideoInputs(self, frames, fps, prompt=prompt, ref_images=refs, dd_ref=dd_ref, encoders=self._needed)
        values, notes = self._compute(inputs, self.columns)
        row: dict = {c: values[c] for c in self.columns}
        degenerate = degenerate_note(frames)
        row.update(num_frames=int(n), height=int(h), width=int(w), fps=float(fps), num_ref_images=len(refs),
                   degenerate=bool(degenerate), degenerate_note=degenerate)
        for m in self.metrics:
            row.update({col: fn(inputs) for col, fn in METRICS[m].info.items()})
        row["metric_notes"] = "; ".join(f"{c}: {notes[c]}" for c in self.columns if c in notes)
        row["score_seconds"] = time.perf_counter() - t_start
        row.update(self.provenance)
        return row

    def score_file(
        self,
        path: str | os.PathLike,
        *,
        prompt: str | None = None,
        ref_images: Sequence[torch.Tensor] | None = None,
        dd_ref: float | None = None,
    ) -> dict:
        """Decode ``path`` once (:func:`benchmark.media.read_video`) and :meth:`score` it.

        Returns:
            ``{"video": str(path), **score(...)}``.

        Raises:
            MediaError: missing, empty or undecodable video.
        """
        t0 = time.perf_counter()
        frames, fps = read_video(path)
        self.timings["decode"] += time.perf_counter() - t0
        return {"video": str(path), **self.score(frames, fps, prompt=prompt, ref_images=ref_images, dd_ref=dd_ref)}

    # -- reference motion ---------------------------------------------------------------------

    def _dd_settings(self) -> dict:
        raft = self._encoder("raft_large")
        return {
            "version": _DD_CACHE_VERSION,
            "raft": raft.fingerprint,
            "num_flow_updates": raft.num_flow_updates,
            "pad_multiple": self.dd_pad_multiple,
            "top_fraction": TOP_FRACTION,
            "decoder": DECODER,
        }

    def motion_reference_dd(self, clip_paths: Sequence[str | os.PathLike], *, motion: str | os.PathLike | None = None) -> float:
        """Dynamic degree of reference motion clips: the ``dynamic_degree`` metric of each whole clip
        (native resolution and frame rate), averaged over the clips.

        Each clip's value is cached — in :func:`motion_reference_cache_file` (``cache_dir``,
        ``motion``) when the scorer has a ``cache_dir``, else in memory — keyed by the resolved
        path, file size, mtime and the settings (RAFT fingerprint, iterations, pad multiple, top
        fraction, decoder): change any and the clip is recomputed.

        Args:
            clip_paths: the motion's clips (:attr:`benchmark.data.MotionFolder.clips`).
            motion: the motion folder; default the clips' common folder.

        Returns:
            Mean dynamic degree over the clips, in pixels.

        Raises:
            ValueError: no clip given.
            MediaError: a clip cannot be decoded.
            MetricUndefined: a clip has fewer than 2 sampled frames or is too small for RAFT.
        """
        paths = [Path(p) for p in clip_paths]
        if not paths:
            raise ValueError("motion_reference_dd: no reference clip given")
        dd = METRICS["dynamic_degree"]
        settings = self._dd_settings()
        skey = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        cache_path = None
        if self.cache_dir is not None:
            motion = motion if motion is not None else os.path.commonpath([str(p.resolve().parent) for p in paths])
            cache_path = motion_reference_cache_file(self.cache_dir, motion)
        entries: dict = {}
        if cache_path is not None and cache_path.is_file():
            try:
                data = json.loads(cache_path.read_text())
                if data.get("version") == _DD_CACHE_VERSION:
                    entries = dict(data.get("clips", {}))
            except (OSError, ValueError):
                entries = {}  # a corrupt cache is recomputed, then rewritten
        entries.update({k: v for k, v in self._dd_mem.items() if k not in entries})
        changed = False
        values = []
        for p in paths:
            if not p.is_file():
                raise MediaError(f"{p}: file not found")
            st = p.stat()
            key = str(p.resolve())
            e = entries.get(key)
            if not (e and e.get("size") == st.st_size and e.get("mtime_ns") == st.st_mtime_ns and e.get("settings") == skey):
                t0 = time.perf_counter()
                frames, fps = read_video(p)
                self.timings["decode"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                try:
                    value = dd.compute(VideoInputs(self, frames, fps, encoders=dd.encoders))
                except MetricUndefined as exc:
                    raise MetricUndefined(f"{p}: {exc}") from None
                finally:
                    self.timings["motion_reference"] += time.perf_counter() - t0
                e = {
                    "size": st.st_size, "mtime_ns": st.st_mtime_ns, "settings": skey,
                    "dynamic_degree": float(value), "num_frames": int(frames.shape[0]),
                    "height": int(frames.shape[1]), "width": int(frames.shape[2]), "fps": float(fps),
                }
                entries[key] = e
                changed = True
            values.append(float(e["dynamic_degree"]))
        self._dd_mem = entries
        if cache_path is not None and (changed or not cache_path.is_file()):
            atomic_write_json(cache_path, {"version": _DD_CACHE_VERSION, "settings": settings, "settings_key": skey, "clips": entries}, indent=1, sort_keys=True)
        return float(np.mean(values))
