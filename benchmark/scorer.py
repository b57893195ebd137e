"""The one scorer: decodes each video once and feeds every requested metric.

* Each encoder is loaded once per process (:func:`benchmark.encoders.get_encoder`), and only for
  the requested metrics; CLIP-I and T-Cons share one pass of the LAION CLIP over the frames.
* Frames go through each model in batches; reference-image embeddings are cached per identity
  (keyed by the images' content) and prompt embeddings per prompt.
* Missing inputs give ``NaN`` plus a note, never a crash: no prompt → no ``clip_t``; no reference
  images → no ``clip_i`` / ``dino_i``; no reference motion → no ``dynamic_degree_ref/delta``.
  Videos too short or too small for a metric also give ``NaN`` with a note:

  ===================== ===================================================================
  metric                needs
  ===================== ===================================================================
  clip_t, clip_i, dino_i  1 frame
  temporal_consistency    2 frames
  temporal_flickering     2 frames
  motion_smoothness       3 frames (one interpolated frame); padded size ≥ 128×128
  dynamic_degree          2 *sampled* frames (every round(fps/8)-th); padded size ≥ 128×128
  ===================== ===================================================================

* Undecodable videos raise :class:`benchmark.media.MediaError` (the caller records a failed row).
* Every row carries provenance: ``metric_random_weights``, ``metric_weights`` (fingerprints of the
  weights used), ``decoder``.

The math lives in :mod:`benchmark.metrics`; this module only plumbs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dualreal.engine.io import atomic_write_json
from benchmark.encoders import ENCODERS, get_encoder
from benchmark.media import DECODER, MediaError, read_image, read_video
from benchmark.metrics import DEFAULT_METRICS, METRICS, MetricUndefined
from benchmark.metrics.clip_i import clip_i_score
from benchmark.metrics.clip_t import clean_prompt, clip_t_score
from benchmark.metrics.dino_i import dino_i_score
from benchmark.metrics.dynamic_degree import (
    TOP_FRACTION,
    dynamic_degree_per_pair,
    dynamic_degree_vbench,
    sample_frames,
    sample_interval,
)
from benchmark.metrics.motion_smoothness import motion_smoothness_score
from benchmark.metrics.temporal_consistency import temporal_consistency_score
from benchmark.metrics.temporal_flickering import temporal_flickering_score

__all__ = ["Scorer", "resolve_metrics", "reference_images", "REFERENCE_IMAGE_EXTENSIONS"]

#: Reference images of an identity: every png/jpg/jpeg (any case), as METRICS.md says.
REFERENCE_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")

_DD_CACHE_VERSION = 1


def resolve_metrics(metrics: Sequence[str] | str | None) -> list[str]:
    """Validate a metric list (``None`` → the seven of Table 1; a comma-separated string is fine).

    Raises:
        ValueError: unknown name (with the closest known names), or an empty list.
    """
    import difflib

    if metrics is None:
        return list(DEFAULT_METRICS)
    if isinstance(metrics, str):
        metrics = [m for m in (s.strip() for s in metrics.split(",")) if m]
    out: list[str] = []
    for m in metrics:
        if m not in METRICS:
            close = difflib.get_close_matches(m, list(METRICS), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"unknown metric {m!r}{hint}; known: {', '.join(METRICS)}")
        if m not in out:
            out.append(m)
    if not out:
        raise ValueError(f"no metric requested; known: {', '.join(METRICS)}")
    return [m for m in METRICS if m in out]  # table order


def reference_images(folder: str | os.PathLike) -> list[torch.Tensor]:
    """Every png/jpg/jpeg (any case) in ``folder`` — or in ``folder/images`` if that exists — sorted
    by name, decoded with :func:`benchmark.media.read_image` (RGB uint8 ``(H, W, 3)``).

    Raises:
        MediaError: folder missing, no image in it, or an unreadable image.
    """
    folder = Path(folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    if not folder.is_dir():
        raise MediaError(f"{folder}: reference folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in REFERENCE_IMAGE_EXTENSIONS)
    if not files:
        raise MediaError(f"{folder}: no png/jpg/jpeg reference image")
    return [read_image(p) for p in files]


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


class Scorer:
    """Scores decoded videos on the requested metrics; loads each needed encoder once.

    Args:
        metrics: metric names (see :data:`benchmark.metrics.METRICS`); ``None`` → the seven of
            Table 1. ``dynamic_degree_vbench`` only when asked for.
        weights_dir: folder of real weights laid out by upstream names
            (:func:`benchmark.encoders.resolve_weights`); then the standard caches.
        random_weights: seeded random weights instead (tests, smoke runs; every row says so).
        device: torch device for the encoders (fp32 everywhere).
        dd_pad_multiple: RAFT input padding, 8 (VBench) or 16 (the authors' script).
        cache_dir: where :meth:`motion_reference_dd` keeps its JSON cache when no file is given.
        random_arch: with ``random_weights``: ``"full"`` architectures, or ``"small"`` ones of the
            same families for fast CPU smoke runs.
        batch_size: frames per batch through the image encoders.
        pair_batch_size: frame pairs per batch through RAFT and AMT; ``None`` → 1 on CPU (batching
            their full-resolution convolutions is slower there) and 8 on GPU.

    Raises:
        ValueError: unknown metric; ``random_weights`` with ``weights_dir``.
        EncoderWeightsError: real weights requested but not found.
    """

    def __init__(
        self,
        metrics: Sequence[str] | None = None,
        *,
        weights_dir: str | os.PathLike | None = None,
        random_weights: bool = False,
        device: str | torch.device = "cpu",
        dd_pad_multiple: int = 8,
        cache_dir: str | os.PathLike | None = None,
        random_arch: str = "full",
        batch_size: int = 32,
        pair_batch_size: int | None = None,
    ):
        if random_weights and weights_dir is not None:
            raise ValueError("random_weights=True and weights_dir are mutually exclusive")
        if dd_pad_multiple not in (8, 16):
            raise ValueError(f"dd_pad_multiple must be 8 (VBench) or 16 (the authors' script), got {dd_pad_multiple}")
        self.metrics = resolve_metrics(metrics)
        self.weights_dir = weights_dir
        self.random_weights = bool(random_weights)
        self.random_arch = random_arch
        self.device = torch.device(device)
        self.dd_pad_multiple = dd_pad_multiple
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.pair_batch_size = pair_batch_size or (1 if self.device.type == "cpu" else 8)
        #: seconds spent per stage (decode, each encoder, temporal_flickering), summed over calls.
        self.timings: dict[str, float] = defaultdict(float)
        self._refs: dict[tuple[str, str], torch.Tensor] = {}
        self._texts: dict[str, torch.Tensor] = {}
        self._encoders: dict[str, object] = {}
        self._dd_mem: dict[str, dict] = {}
        for name in self._needed_encoders(self.metrics):
            self._encoder(name)

    # -- encoders and provenance --------------------------------------------------------------

    @staticmethod
    def _needed_encoders(metrics: Sequence[str]) -> list[str]:
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

    # -- cached embeddings --------------------------------------------------------------------

    def _ref_embeddings(self, encoder_name: str, refs: list[torch.Tensor], key: str) -> torch.Tensor:
        if (encoder_name, key) not in self._refs:
            t0 = time.perf_counter()
            self._refs[(encoder_name, key)] = self._encoder(encoder_name).encode_images(refs, batch_size=self.batch_size)
            self.timings[encoder_name] += time.perf_counter() - t0
        return self._refs[(encoder_name, key)]

    def _text_embedding(self, prompt: str) -> torch.Tensor:
        if prompt not in self._texts:
            self._texts[prompt] = self._encoder("clip_openai").encode_text([prompt])
        return self._texts[prompt]

    # -- scoring ------------------------------------------------------------------------------

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
            prompt: the generation prompt, identity token included (cleaned here); None → no CLIP-T.
            ref_images: the identity's reference images, uint8 ``(H, W, 3)``; None/empty → no
                CLIP-I / DINO-I.
            dd_ref: dynamic degree of the reference motion (:meth:`motion_reference_dd`); None →
                no ``dynamic_degree_ref`` / ``dynamic_degree_delta``.

        Returns:
            A flat dict: the requested metrics (float, NaN when undefined), then
            ``dynamic_degree_ref``/``dynamic_degree_delta`` when ``dynamic_degree`` is requested,
            ``num_frames, height, width, fps``, ``metric_notes`` (``"metric: reason; …"``, empty
            when none), ``score_seconds`` and the provenance fields.

        Raises:
            MediaError: not a usable video (wrong dtype/shape, no frames).
        """
        t_start = time.perf_counter()
        frames = _as_frames(frames)
        n, h, w = frames.shape[:3]
        if fps is None or not math.isfinite(float(fps)) or fps <= 0:
            raise MediaError(f"fps must be a positive number, got {fps}")
        want = set(self.metrics)
        row: dict = {m: math.nan for m in self.metrics}
        notes: list[str] = []

        def undefined(metric: str, reason: str) -> None:
            notes.append(f"{metric}: {reason}")

        refs: list[torch.Tensor] = [_as_image(r) for r in (ref_images or [])]
        ref_key = _content_key(refs) if refs else ""
        has_prompt = prompt is not None and prompt.strip() != ""

        # CLIP (LAION): CLIP-I and T-Cons share the frame embeddings.
        if want & {"clip_i", "temporal_consistency"}:
            t0 = time.perf_counter()
            emb = self._encoder("clip_laion400m").encode_images(frames, batch_size=self.batch_size)
            self.timings["clip_laion400m"] += time.perf_counter() - t0
            if "clip_i" in want:
                if refs:
                    row["clip_i"] = clip_i_score(emb, self._ref_embeddings("clip_laion400m", refs, ref_key))
                else:
                    undefined("clip_i", "no reference images")
            if "temporal_consistency" in want:
                try:
                    row["temporal_consistency"] = temporal_consistency_score(emb)
                except MetricUndefined as exc:
                    undefined("temporal_consistency", str(exc))

        # CLIP (OpenAI): CLIP-T.
        if "clip_t" in want:
            if has_prompt:
                t0 = time.perf_counter()
                emb = self._encoder("clip_openai").encode_images(frames, batch_size=self.batch_size)
                row["clip_t"] = clip_t_score(self._text_embedding(clean_prompt(prompt)), emb)
                self.timings["clip_openai"] += time.perf_counter() - t0
            else:
                undefined("clip_t", "no prompt")

        # DINO: DINO-I.
        if "dino_i" in want:
            if refs:
                t0 = time.perf_counter()
                emb = self._encoder("dino_vits16").encode_images(frames, batch_size=self.batch_size)
                self.timings["dino_vits16"] += time.perf_counter() - t0
                row["dino_i"] = dino_i_score(emb, self._ref_embeddings("dino_vits16", refs, ref_key))
            else:
                undefined("dino_i", "no reference images")

        # No model: temporal flickering.
        if "temporal_flickering" in want:
            t0 = time.perf_counter()
            try:
                row["temporal_flickering"] = temporal_flickering_score(frames)
            except MetricUndefined as exc:
                undefined("temporal_flickering", str(exc))
            self.timings["temporal_flickering"] += time.perf_counter() - t0

        # AMT-S: motion smoothness.
        if "motion_smoothness" in want:
            t0 = time.perf_counter()
            try:
                row["motion_smoothness"] = motion_smoothness_score(
                    frames, self._encoder("amt_s"), pad_multiple=16, batch_size=self.pair_batch_size, device=self.device
                )
            except MetricUndefined as exc:
                undefined("motion_smoothness", str(exc))
            self.timings["amt_s"] += time.perf_counter() - t0

        # RAFT: dynamic degree (continuous and VBench's boolean), deviation from the reference.
        if want & {"dynamic_degree", "dynamic_degree_vbench"}:
            t0 = time.perf_counter()
            try:
                per_pair = self._dd_per_pair(frames, fps)
                if "dynamic_degree" in want:
                    row["dynamic_degree"] = float(per_pair.mean())
                if "dynamic_degree_vbench" in want:
                    num_sampled = sample_frames(frames, fps).shape[0]
                    row["dynamic_degree_vbench"] = float(dynamic_degree_vbench(per_pair, num_sampled=num_sampled, height=h, width=w))
            except MetricUndefined as exc:
                for m in ("dynamic_degree", "dynamic_degree_vbench"):
                    if m in want:
                        undefined(m, str(exc))
            self.timings["raft_large"] += time.perf_counter() - t0
        if "dynamic_degree" in want:
            row["dynamic_degree_ref"] = math.nan if dd_ref is None else float(dd_ref)
            row["dynamic_degree_delta"] = row["dynamic_degree"] - row["dynamic_degree_ref"]
            if dd_ref is None:
                undefined("dynamic_degree_delta", "no reference motion")
            row["dd_interval"] = sample_interval(fps)
            row["dd_pad_multiple"] = self.dd_pad_multiple

        row.update(num_frames=int(n), height=int(h), width=int(w), fps=float(fps))
        row["metric_notes"] = "; ".join(notes)
        row["score_seconds"] = time.perf_counter() - t_start
        row.update(self.provenance)
        return row

    def _dd_per_pair(self, frames: torch.Tensor, fps: float) -> torch.Tensor:
        return dynamic_degree_per_pair(
            frames, fps, self._encoder("raft_large"), pad_multiple=self.dd_pad_multiple,
            batch_size=self.pair_batch_size, device=self.device,
        )

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

    def motion_reference_dd(self, clip_paths: Sequence[str | os.PathLike], cache_file: str | os.PathLike | None = None) -> float:
        """Dynamic degree of reference motion clips: the same procedure, averaged over clips.

        Each clip's value is cached in ``cache_file`` (JSON; default
        ``cache_dir/motion_refs/<hash of the paths>.json`` when the scorer has a ``cache_dir``,
        else memory only), keyed by the resolved path, file size, mtime and the settings
        (RAFT fingerprint, iterations, pad multiple, top fraction, decoder): change any and the
        clip is recomputed.

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
        settings = self._dd_settings()
        skey = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        if cache_file is None and self.cache_dir is not None:
            digest = hashlib.sha1("\n".join(sorted(str(p.resolve()) for p in paths)).encode()).hexdigest()[:16]
            cache_file = self.cache_dir / "motion_refs" / f"{digest}.json"
        cache_path = Path(cache_file) if cache_file is not None else None
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
                    per_pair = self._dd_per_pair(frames, fps)
                except MetricUndefined as exc:
                    raise MetricUndefined(f"{p}: {exc}") from None
                finally:
                    self.timings["raft_large"] += time.perf_counter() - t0
                e = {
                    "size": st.st_size, "mtime_ns": st.st_mtime_ns, "settings": skey,
                    "dynamic_degree": float(per_pair.mean()), "num_frames": int(frames.shape[0]),
                    "height": int(frames.shape[1]), "width": int(frames.shape[2]), "fps": float(fps),
                }
                entries[key] = e
                changed = True
            values.append(float(e["dynamic_degree"]))
        self._dd_mem = entries
        if cache_path is not None and (changed or not cache_path.is_file()):
            atomic_write_json(cache_path, {"version": _DD_CACHE_VERSION, "settings": settings, "settings_key": skey, "clips": entries}, indent=1, sort_keys=True)
        return float(np.mean(values))
