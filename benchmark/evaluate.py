"""``dualbench eval``: score any videos (ours or anyone's) on the benchmark metrics.

:func:`evaluate_paths` is the plain function (returns a DataFrame, one row per video, ``video``
first); :func:`eval_command` is the typer command around it (``benchmark/cli.py`` registers it as
``dualbench eval``). Each video is decoded once by the one scorer; an unreadable video becomes a
``failed`` row with a one-line error and the others are still scored.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
import torch
import typer

from benchmark.encoders import EncoderWeightsError
from benchmark.media import VIDEO_EXTENSIONS, MediaError
from benchmark.metrics import DERIVED_COLUMNS, METRICS
from benchmark.store import OUTPUT_FORMATS, export_records
from benchmark.scorer import Scorer, reference_images, resolve_metrics

__all__ = [
    "collect_videos",
    "load_prompts",
    "prompt_from_filename",
    "evaluate_paths",
    "summarize",
    "eval_command",
    "print_results",
]

_INFO_COLUMNS = (
    "status", "error", "prompt", "num_frames", "height", "width", "fps", "dd_interval", "dd_pad_multiple",
    "metric_notes", "score_seconds", "metric_random_weights", "metric_weights", "decoder",
)


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
    absolute path. In the TSV form, blank lines and lines starting with ``#`` are skipped.

    Raises:
        ValueError: unreadable file, JSON that is not a string map, or a line without a tab.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read prompt file ({exc.__class__.__name__})") from None
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


def _one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = msg if isinstance(exc, MediaError) else f"{exc.__class__.__name__}: {msg}"
    return text[:300]


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
    random_arch: str = "full",
    device: str = "cpu",
    dd_pad_multiple: int = 8,
    cache_dir: str | os.PathLike | None = None,
    scorer: Scorer | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Score videos; one row per video, ``video`` first, then the metrics, then status and info.

    Args:
        videos: files and/or folders (:func:`collect_videos`).
        prompts: a prompt map or a prompt file (:func:`load_prompts`); videos without a prompt get
            no CLIP-T (NaN and a note) unless ``use_filename_prompts``.
        use_filename_prompts: fall back to VBench's prompt-from-file-name convention.
        refs: the identity's reference images: a folder (:func:`benchmark.scorer.reference_images`)
            or decoded uint8 ``(H, W, 3)`` tensors. None → no CLIP-I / DINO-I.
        motion_refs: reference motion clips (a folder or a list of files) for
            ``dynamic_degree_ref`` / ``dynamic_degree_delta``.
        metrics, weights_dir, random_weights, random_arch, device, dd_pad_multiple, cache_dir:
            as :class:`benchmark.scorer.Scorer`.
        scorer: an existing scorer to reuse (then the model arguments are ignored).
        progress: show a progress bar on stderr.

    Returns:
        DataFrame with columns ``video``, the requested metrics (plus ``dynamic_degree_ref``,
        ``dynamic_degree_delta`` with ``dynamic_degree``), ``status`` (``ok`` | ``failed``),
        ``error`` and the scorer's info and provenance columns.

    Raises:
        ValueError: bad arguments (unknown metric, unreadable prompt file, no video given).
        MediaError: unusable reference images or reference motion clips.
        EncoderWeightsError: weights not found.
    """
    paths = collect_videos(videos)
    if not paths:
        raise ValueError(f"no video found in {', '.join(map(str, videos)) or 'nothing'}")
    prompt_map: Mapping[str, str] = {}
    if prompts is not None:
        prompt_map = prompts if isinstance(prompts, Mapping) else load_prompts(prompts)
    roots = [Path(v) for v in videos if Path(v).is_dir()]
    roots += [r / "videos" for r in roots if (r / "videos").is_dir()]

    if scorer is None:
        scorer = Scorer(
            resolve_metrics(metrics), weights_dir=weights_dir, random_weights=random_weights, device=device,
            dd_pad_multiple=dd_pad_multiple, cache_dir=cache_dir, random_arch=random_arch,
        )
    ref_images = None
    if refs is not None:
        ref_images = reference_images(refs) if isinstance(refs, (str, os.PathLike)) else list(refs)
    dd_ref = None
    if motion_refs is not None and "dynamic_degree" in scorer.metrics:
        clips = collect_videos([motion_refs]) if isinstance(motion_refs, (str, os.PathLike)) else [Path(p) for p in motion_refs]
        dd_ref = scorer.motion_reference_dd(clips)

    metric_cols = list(scorer.metrics)
    if "dynamic_degree" in metric_cols:
        metric_cols += list(DERIVED_COLUMNS)

    rows = []
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       TextColumn("{task.description}"), console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task("", total=len(paths))
    try:
        for path in paths:
            if bar is not None:
                bar.update(task, description=path.name)
            prompt = _lookup_prompt(path, prompt_map, roots)
            if prompt is None and use_filename_prompts:
                prompt = prompt_from_filename(path)
            try:
                row = scorer.score_file(path, prompt=prompt, ref_images=ref_images, dd_ref=dd_ref)
                row.update(status="ok", error="")
            except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
                row = {"video": str(path), **{m: math.nan for m in metric_cols}, "status": "failed",
                       "error": _one_line(exc), **scorer.provenance}
            row["video"] = str(path)
            row["prompt"] = prompt if prompt is not None else ""
            rows.append(row)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()

    df = pd.DataFrame(rows)
    cols = ["video", *metric_cols, *[c for c in _INFO_COLUMNS if c in df.columns]]
    cols += [c for c in df.columns if c not in cols]
    return df[cols]


def summarize(df: pd.DataFrame) -> dict[str, float]:
    """Mean of each metric column over the ``ok`` rows, NaNs skipped (per-video values averaged;
    the same in 1 or N processes since it only needs the rows)."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    cols = [c for c in df.columns if c in METRICS or c in DERIVED_COLUMNS]
    return {c: float(pd.to_numeric(ok[c], errors="coerce").mean()) if len(ok) else math.nan for c in cols}


def _fmt(v) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else (f"{v:.4f}" if abs(v) < 100 else f"{v:.2f}")
    return str(v)


def print_results(df: pd.DataFrame, console=None) -> None:
    """Per-video rows and the mean, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metric_cols = [c for c in df.columns if c in METRICS or c in DERIVED_COLUMNS]
    table = Table(title="dualbench eval", show_lines=False)
    table.add_column("video", overflow="fold")
    for c in metric_cols:
        info = METRICS.get(c) or DERIVED_COLUMNS[c]
        arrow = {True: " ↑", False: " ↓", None: ""}[info.higher_is_better]
        table.add_column(f"{c}{arrow}", justify="right")
    table.add_column("status")
    for _, r in df.iterrows():
        status = r["status"] if r["status"] == "ok" else f"[red]failed[/red]: {r['error']}"
        table.add_row(Path(r["video"]).name, *[_fmt(r[c]) for c in metric_cols], status)
    means = summarize(df)
    n_ok = int((df["status"] == "ok").sum())
    table.add_section()
    table.add_row(f"[bold]mean ({n_ok} ok of {len(df)})[/bold]", *[_fmt(means[c]) for c in metric_cols], "")
    console.print(table)
    notes = df.loc[(df["status"] == "ok") & (df.get("metric_notes", "") != ""), ["video", "metric_notes"]] if "metric_notes" in df else []
    for _, r in (notes.iterrows() if len(notes) else []):
        console.print(f"[dim]{Path(r['video']).name}: {r['metric_notes']}[/dim]")
    if bool(df.get("metric_random_weights", pd.Series([False])).any()):
        console.print("[bold red]RANDOM WEIGHTS: these numbers are meaningless (tests / smoke runs only).[/bold red]")


def eval_command(
    videos: Annotated[list[Path], typer.Argument(help="Video files and/or folders of videos.", show_default=False)],
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help="Prompt file: 'name<TAB>prompt' lines or a JSON map {name: prompt}.")
    ] = None,
    filename_prompts: Annotated[
        bool, typer.Option("--prompt-from-filename", help="VBench convention for videos without a prompt: 'a cat-0.mp4' -> 'a cat'.")
    ] = False,
    refs: Annotated[Optional[Path], typer.Option("--refs", help="Folder of the identity's reference images (png/jpg/jpeg).")] = None,
    motion_refs: Annotated[
        Optional[Path], typer.Option("--motion-refs", help="Folder of reference motion clips (for dynamic_degree_delta).")
    ] = None,
    metrics: Annotated[
        Optional[str], typer.Option("--metrics", help="Comma-separated metric names (default: the seven of Table 1).")
    ] = None,
    weights_dir: Annotated[
        Optional[Path], typer.Option("--weights-dir", help="Folder of encoder weights laid out by upstream names.")
    ] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="Seeded random encoder weights (tests, smoke runs; rows say so).")
    ] = False,
    random_arch: Annotated[
        str, typer.Option("--random-arch", help="With --random-weights: 'full' architectures or 'small' ones (fast on CPU).")
    ] = "full",
    out: Annotated[Optional[Path], typer.Option("--out", help="Write rows to .csv, .parquet or .json.")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the encoders.")] = "cpu",
    dd_pad_multiple: Annotated[
        int, typer.Option("--dd-pad-multiple", help="RAFT padding: 8 (VBench) or 16 (the authors' script).")
    ] = 8,
    cache_dir: Annotated[
        Optional[Path], typer.Option("--cache-dir", help="Where the reference-motion dynamic degree is cached.")
    ] = None,
) -> None:
    """Score videos on the benchmark metrics; print per-video rows and the mean.

    Exit status: 0 if at least one video was scored, 1 if every video failed, 2 on bad arguments.

    Examples:

        dualbench eval outputs/ --prompts prompts.tsv --refs data/identities/dog --motion-refs data/motions/PlayingCello

        dualbench eval clip.mp4 --metrics temporal_flickering,motion_smoothness --out scores.csv

        dualbench eval ../shared/data/samples/dualreal-official/motion/playingGuitar/videos --random-weights --random-arch small
    """
    from rich.console import Console

    if random_weights and weights_dir is not None:
        raise typer.BadParameter("--random-weights and --weights-dir are mutually exclusive")
    if out is not None and out.suffix.lower() not in OUTPUT_FORMATS:
        raise typer.BadParameter(f"--out {out}: use one of {', '.join(OUTPUT_FORMATS)}")
    console = Console() if sys.stdout.isatty() else Console(width=200)  # piped: don't squeeze to 80
    try:
        df = evaluate_paths(
            videos, prompts=prompts, use_filename_prompts=filename_prompts, refs=refs, motion_refs=motion_refs,
            metrics=metrics, weights_dir=weights_dir, random_weights=random_weights, random_arch=random_arch,
            device=device, dd_pad_multiple=dd_pad_multiple, cache_dir=cache_dir, progress=True,
        )
    except (ValueError, MediaError) as exc:
        raise typer.BadParameter(str(exc)) from None
    except EncoderWeightsError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    print_results(df, console)
    if out is not None:
        export_records(df, out)
        console.print(f"wrote {len(df)} rows to {out}")
    if not (df["status"] == "ok").any():
        raise typer.Exit(1)
