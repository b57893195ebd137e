"""Score any videos (ours or anyone's) on the benchmark metrics: the library behind ``dualbench eval``.

:func:`evaluate_paths` returns a DataFrame, one row per video, ``video`` first (the command in
:mod:`benchmark.cli` prints and writes it). Each video is decoded once by the one scorer; an
unreadable video becomes a ``failed`` row with a one-line error and the others are still scored.
The identity's references and the motion's clips are listed by the same readers as ``dualbench
run`` uses (:func:`benchmark.grid.reference_images`, :func:`benchmark.data.load_motion`), so both
score one identity against the same images and one motion against the same clips.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from benchmark.data import error_line, load_motion, read_text
from benchmark.grid import reference_images
from benchmark.media import VIDEO_EXTENSIONS
from benchmark.metrics import metric_columns
from benchmark.scorer import DEFAULT_DD_PAD_MULTIPLE, DEFAULT_RANDOM_ARCH, Scorer

__all__ = [
    "collect_videos",
    "load_prompts",
    "prompt_from_filename",
    "evaluate_paths",
    "summarize",
    "summarize_counts",
]


def collect_videos(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of videos, in the order given.

    A folder contributes its files (not recursive) whose extension is a video extension
    (:data:`benchmark.media.VIDEO_EXTENSIONS`, any case), sorted by name; a folder with a
    ``videos/`` subfolder (the motion-data layout) contributes that. A file is taken as is (a bad
    one becomes a failed row later), as is a path that does not exist. Duplicates are dropped.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            folder = p / "videos" if (p / "videos").is_dir() else p
            # Not `is_file()`: a broken link or a symlink loop named .mp4 must become a failed row,
            # not vanish from the average.
            out.extend(sorted(f for f in folder.iterdir() if not f.is_dir() and f.suffix.lower() in VIDEO_EXTENSIONS))
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    return unique


def load_prompts(path: str | os.PathLike) -> dict[str, str]:
    """Read a prompt file: a JSON object ``{name: prompt}`` or lines ``name<TAB>prompt``.

    Names may be a file name (``a.mp4``), a stem (``a``), a path relative to a given folder, or an
    absolute path. The file is UTF-8 with or without a byte-order mark
    (:func:`benchmark.data.read_text`). In the TSV form, blank lines and lines starting with ``#``
    are skipped.

    Raises:
        ValueError: unreadable file or not UTF-8 (line named), JSON that is not a string map, or a
            line without a tab (line named).
    """
    path = Path(path)
    text = read_text(path, "prompt file")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise ValueError(f"{path}: expected a JSON object mapping video names to prompt strings")
        return dict(data)
    prompts = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise ValueError(f"{path}:{i}: expected 'name<TAB>prompt', got {line[:60]!r}")
        name, prompt = line.split("\t", 1)
        prompts[name.strip()] = prompt.strip()
    return prompts


def prompt_from_filename(path: str | os.PathLike) -> str:
    """VBench's convention: ``a dog running-0.mp4`` → ``a dog running`` (stem, minus ``-<n>``)."""
    return re.sub(r"-\d+$", "", Path(path).stem)


def _lookup_prompt(video: Path, prompts: Mapping[str, str], roots: Sequence[Path]) -> str | None:
    keys = [str(video), video.name, video.stem]
    try:
        keys.append(str(video.resolve()))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        pass
    for root in roots:
        try:
            keys.append(str(video.relative_to(root)))
        except ValueError:
            pass
    for k in keys:
        if k in prompts:
            return prompts[k]
    return None


def evaluate_paths(
    videos: Sequence[str | os.PathLike],
    *,
    prompts: Mapping[str, str] | str | os.PathLike | None = None,
    use_filename_prompts: bool = False,
    refs: str | os.PathLike | Sequence[torch.Tensor] | None = None,
    motion_refs: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    metrics: Sequence[str] | str | None = None,
    weights_dir: str | os.PathLike | None = None,
    random_weights: bool = False,
    random_arch: str = DEFAULT_RANDOM_ARCH,
    device: str = "cpu",
    dd_pad_multiple: int = DEFAULT_DD_PAD_MULTIPLE,
    cache_dir: str | os.PathLike | None = None,
    scorer: Scorer | None = None,
    on_video: Callable[[Path], None] | None = None,
) -> pd.DataFrame:
    """Score videos; one row per video, ``video`` first, then the metrics, then status and info.

    Args:
        videos: files and/or folders (:func:`collect_videos`).
        prompts: a prompt map or a prompt file (:func:`load_prompts`); videos without a prompt get
            no CLIP-T (NaN and a note) unless ``use_filename_prompts``.
        use_filename_prompts: fall back to VBench's prompt-from-file-name convention.
        refs: the identity's reference images: an identity folder
            (:func:`benchmark.grid.reference_images`) or decoded uint8 ``(H, W, 3)`` tensors.
            None → no CLIP-I / DINO-I.
        motion_refs: the reference motion for ``dynamic_degree_ref`` / ``dynamic_degree_delta``: a
            motion folder (its clips as :func:`benchmark.data.load_motion` lists them) or a list of
            clip files.
        metrics, weights_dir, random_weights, random_arch, device, dd_pad_multiple, cache_dir:
            as :class:`benchmark.scorer.Scorer`.
        scorer: an existing scorer to reuse (then the model arguments are ignored).
        on_video: called with each video's path before it is scored (progress display).

    Returns:
        DataFrame with columns ``video``, the scorer's metric columns (``dynamic_degree_ref`` and
        ``dynamic_degree_delta`` come with ``dynamic_degree``), ``status`` (``ok`` | ``failed``),
        ``error``, ``prompt``, ``prompt_source`` (``prompts``: found in ``prompts``; ``file
        name``: VBench's convention; ``""``: none) and the scorer's info and provenance columns
        (among them ``num_ref_images``, ``degenerate``, ``degenerate_note``, ``metric_notes``).

    Raises:
        ValueError: bad arguments (unknown metric, unreadable prompt file, no video given).
        DataError: an unusable reference-image or motion folder (a ValueError).
        MediaError: an unusable reference motion clip.
        EncoderWeightsError: weights not found.
    """
    # 1. Every input the user named, checked before any encoder loads (an error names every bad file)
    paths = collect_videos(videos)
    if not paths:
        raise ValueError(f"no video found in {', '.join(map(str, videos)) or 'nothing'}")
    prompt_map: Mapping[str, str] = {}
    if prompts is not None:
        prompt_map = prompts if isinstance(prompts, Mapping) else load_prompts(prompts)
    roots = [Path(v) for v in videos if Path(v).is_dir()]
    roots += [r / "videos" for r in roots if (r / "videos").is_dir()]
    ref_images = None
    if refs is not None:
        ref_images = reference_images(refs) if isinstance(refs, (str, os.PathLike)) else list(refs)
    motion_clips = None
    if motion_refs is not None:
        motion_clips = (load_motion(motion_refs).clips if isinstance(motion_refs, (str, os.PathLike))
                        else [Path(p) for p in motion_refs])

    # 2. The encoders, then the reference motion's dynamic degree
    if scorer is None:
        scorer = Scorer(
            metrics, weights_dir=weights_dir, random_weights=random_weights, device=device,
            dd_pad_multiple=dd_pad_multiple, cache_dir=cache_dir, random_arch=random_arch,
        )
    dd_ref = None
    if motion_clips is not None and "dynamic_degree" in scorer.metrics:
        if isinstance(motion_refs, (str, os.PathLike)):
            dd_ref = scorer.motion_reference_dd(motion_clips, motion=motion_refs)
        else:
            dd_ref = scorer.motion_reference_dd(motion_clips)

    # 3. One row per video

    rows = []
    for path in paths:
        if on_video is not None:
            on_video(path)
        prompt = _lookup_prompt(path, prompt_map, roots)
        source = "prompts" if prompt is not None else ""
        if prompt is None and use_filename_prompts:
            prompt, source = prompt_from_filename(path), "file name"
        try:
            row = scorer.score_file(path, prompt=prompt, ref_images=ref_images, dd_ref=dd_ref)
            row.update(status="ok", error="")
        except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
            row = {"video": str(path), **{m: math.nan for m in scorer.columns}, "status": "failed",
                   "error": error_line(exc), **scorer.provenance}
        row["video"] = str(path)
        row["prompt"] = prompt if prompt is not None else ""
        row["prompt_source"] = source
        rows.append(row)

    df = pd.DataFrame(rows)
    cols = ["video", *scorer.columns, "status", "error", "prompt", "prompt_source",
            *[c for c in scorer.info_columns if c in df.columns]]
    cols += [c for c in df.columns if c not in cols]
    return df[cols]


def summarize(df: pd.DataFrame) -> dict[str, float]:
    """Mean of each metric column over the ``ok`` rows, NaNs skipped (per-video values averaged;
    the same in 1 or N processes since it only needs the rows)."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    cols = [c for c in metric_columns() if c in df.columns]
    return {c: float(pd.to_numeric(ok[c], errors="coerce").mean()) if len(ok) else math.nan for c in cols}


def summarize_counts(df: pd.DataFrame) -> dict[str, int]:
    """How many ``ok`` rows each mean of :func:`summarize` covers: the rows with a value (an
    undefined metric — too few frames, no prompt, no reference — is NaN and left out)."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    cols = [c for c in metric_columns() if c in df.columns]
    return {c: int(pd.to_numeric(ok[c], errors="coerce").notna().sum()) for c in cols}
