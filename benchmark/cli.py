"""The ``dualbench`` command: every subcommand lives here; the libraries return data and text.

Subcommands: ``run`` (customise → generate → score → record), ``eval`` (score any folder of
videos), ``manifest`` (what to generate for a grid, to make the videos elsewhere), ``score`` (score
those videos into records, beside ``run``'s), ``table`` (Table 1/2/3), ``report`` (static HTML),
``plots`` (PNG/SVG figures), ``list`` (methods, installed plugins, grids, metrics), ``validate``
(check a grid's files without running anything), ``regression`` (the CI subset). ``run``, ``eval``
and ``score`` share their metric options, ``run``, ``manifest`` and ``score`` their grid and
geometry options (one definition each below).
"""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from benchmark.registry import (
    MethodLoadError,
    UnknownMethodError,
    all_specs,
    get_spec,
    list_methods,
    load_method_class,
    plugin_problems,
)
from benchmark.media import DEGENERATE_RULE
from benchmark.scorer import DD_PAD_MULTIPLES, DEFAULT_DD_PAD_MULTIPLE, DEFAULT_RANDOM_ARCH
from benchmark.tables import TableFormat

app = typer.Typer(
    name="dualbench",
    help=(
        "DualReal (ICCV 2025) and a video-customisation benchmark on CogVideoX.\n\n"
        "Examples:\n\n"
        "  dualbench run --method dualreal                      # built-in sample, tiny random backbone\n\n"
        "  dualbench run --method lora --grid dualreal50 --data-root path/to/dualreal-bench "
        "--backbone THUDM/CogVideoX-5b --weights-dir ~/weights\n\n"
        "  dualbench table --paper --format markdown\n\n"
        "  dualbench eval my_videos/ --prompts prompts.tsv --refs dog_images/ --random-weights\n\n"
        "  dualbench manifest --grid dualreal50 --data-root path/to/dualreal-bench --out todo.csv\n\n"
        "  dualbench score my_videos/ --method mine --grid dualreal50 --data-root path/to/dualreal-bench"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _int_list(text: Optional[str], what: str) -> Optional[list[int]]:
    if text is None:
        return None
    items = [x.strip() for x in text.split(",")]
    try:
        if "" in items:
            raise ValueError("an empty item")
        return [int(x) for x in items]
    except ValueError:
        _fail(f"--{what} takes integers separated by commas, got {text!r}")


def _stdout() -> Console:
    """The console for results: piped output is not squeezed to 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _note(msg: str) -> None:
    """One ``note:`` line on stderr (``msg`` printed as is, never read as rich markup)."""
    console.print(f"[yellow]note:[/yellow] {escape(msg)}", highlight=False, soft_wrap=True)


class PlainProgress:
    """What ``run``, ``score`` and ``eval`` report on when stderr is not a terminal (a pipe, a log
    file, ``timeout … | cat``): rich draws its bars there only when they stop, so a long run would
    print nothing for many minutes. This takes the calls of ``rich.progress.Progress`` the runner
    and the trainer make and prints one plain line per phase instead:

    - ``add_task``: ``dualreal: 4 videos (1 already done)``, ``dualreal-identity: 200 steps``
      (the ``unit`` field of the task, as rich's ``**fields``);
    - ``update`` with a new description (``status``): ``dualreal · cat: decoding``;
    - ``update`` that advances (training steps): ``… · loss 0.1234 (40/200 steps)``, at most once per
      :attr:`STEP_EVERY` seconds;
    - ``advance`` (a video recorded, ok or failed): ``dualreal · cat p0 seed 42: 12.3 s; 2/4 videos``,
      the seconds since that description was set;
    - ``remove_task`` (training done): ``dualreal-identity: 200/200 steps in 55.2 s``.

    Args:
        console: where the lines go (the CLI's stderr console); ``log`` lines go there too.
    """

    #: Seconds between two lines of one task's step updates.
    STEP_EVERY = 30.0

    def __init__(self, console: Console):
        self.console = console
        self._tasks: dict[int, dict] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _count(self, t: dict) -> str:
        return f"{t['completed']:g}/{t['total']:g} {t['unit']}".rstrip() if t["total"] else ""

    def add_task(self, description: str, *, total: float | None = None, completed: float = 0, unit: str = "",
                 **_fields) -> int:
        now = time.perf_counter()
        task = len(self._tasks)
        self._tasks[task] = {"name": description, "description": description, "total": total,
                             "completed": completed, "unit": unit, "start": now, "since": now, "printed": now}
        line = f"{total:g} {unit}".rstrip() if total else ""
        line += f" ({completed:g} already done)" if completed else ""
        self._print(f"{description}: {line}" if description and line else description or line)
        return task

    def update(self, task: int, *, description: str | None = None, advance: float | None = None,
               completed: float | None = None, **_fields) -> None:
        t, now = self._tasks[task], time.perf_counter()
        if completed is not None:
            t["completed"] = completed
        if advance:
            t["completed"] += advance
        new = description is not None and description != t["description"]
        if description is not None:
            t["description"] = description
        if advance:  # a step: rate-limited
            if now - t["printed"] >= self.STEP_EVERY:
                self._print(f"{t['description']} ({self._count(t)})")
                t["printed"] = now
        elif new:
            self._print(f"{description} ({self._count(t)})" if completed is not None else description)
            t["since"] = t["printed"] = now

    def advance(self, task: int, advance: float = 1) -> None:
        t, now = self._tasks[task], time.perf_counter()
        t["completed"] += advance
        self._print(f"{t['description']}: {now - t['since']:.1f} s; {self._count(t)}")
        t["since"] = t["printed"] = now

    def remove_task(self, task: int) -> None:
        t = self._tasks[task]
        self._print(f"{t['name']}: {self._count(t)} in {time.perf_counter() - t['start']:.1f} s")


def _progress(*columns, transient: bool = False):
    """The progress display of ``run``, ``score`` and ``eval`` on stderr: rich's bars on a terminal,
    :class:`PlainProgress` lines otherwise."""
    from rich.progress import Progress

    if console.is_terminal and not console.is_dumb_terminal:
        return Progress(*columns, console=console, transient=transient)
    return PlainProgress(Console(file=console.file, soft_wrap=True))  # log lines unwrapped too


# ------------------------------------------------------------------------------------------------
# The metric options shared by `run` and `eval` (one definition, one default each)
# ------------------------------------------------------------------------------------------------

MetricsOption = Annotated[Optional[str], typer.Option(
    "--metrics", help="Comma-separated metric names (default: the seven of Table 1; `dualbench list metrics` shows all).")]
WeightsDirOption = Annotated[Optional[Path], typer.Option(
    "--weights-dir", help="Folder of the metric encoders' weights, laid out by upstream names (docs/METRICS.md, 'Weights').")]
RandomWeightsOption = Annotated[Optional[bool], typer.Option(
    "--random-weights/--real-weights", help="Metric encoders with seeded random weights (tests, smoke runs; every row "
    "says so). Default: real weights, except `run` with the tiny backbone and no --weights-dir.")]
RandomArchOption = Annotated[str, typer.Option(
    "--random-arch", help="With random metric weights: 'small' same-family encoders (fast on CPU) or the 'full' architectures.")]
DdPadOption = Annotated[int, typer.Option(
    "--dd-pad-multiple", help="RAFT input padding for dynamic degree: 16 (the authors' evaluation, behind Table 1's "
    "values; default) or 8 (VBench). They differ on sizes such as 720×404 (docs/METRICS.md).")]


def _metric_options(metrics: Optional[str], weights_dir: Optional[Path], random_weights: Optional[bool],
                    random_arch: str, dd_pad_multiple: int) -> Optional[list[str]]:
    """Check the shared metric options together; returns the metric list (None: the defaults)."""
    from benchmark.encoders import RANDOM_ARCHS
    from benchmark.metrics import resolve_metrics

    if random_weights and weights_dir is not None:
        _fail("--random-weights and --weights-dir are mutually exclusive")
    if random_arch not in RANDOM_ARCHS:
        _fail(f"--random-arch must be one of {', '.join(RANDOM_ARCHS)}, got {random_arch!r}")
    if dd_pad_multiple not in DD_PAD_MULTIPLES:
        _fail(f"--dd-pad-multiple must be one of {', '.join(map(str, DD_PAD_MULTIPLES))}, got {dd_pad_multiple}")
    if metrics is None:
        return None
    try:
        return resolve_metrics(metrics)
    except ValueError as exc:
        _fail(str(exc))


# ------------------------------------------------------------------------------------------------
# The grid and geometry options shared by `run`, `manifest` and `score`
# ------------------------------------------------------------------------------------------------

GridOption = Annotated[str, typer.Option(
    "--grid", help="`smoke` (built-in sample), `dualreal50` (needs --data-root) or a YAML file.")]
DataRootOption = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Folder laid out as the DualReal benchmark (cases.json, identities/, motions/).")]
CasesOption = Annotated[Optional[list[str]], typer.Option(
    "--cases", help="Only these case names or glob patterns (repeatable).")]
MaxCasesOption = Annotated[Optional[int], typer.Option("--max-cases", help="At most this many cases (after --cases).")]
MaxPromptsOption = Annotated[Optional[int], typer.Option("--max-prompts", help="At most this many prompts per case.")]
SeedsOption = Annotated[Optional[str], typer.Option("--seeds", help="Seeds, comma-separated (default: the grid's, 42).")]
FramesOption = Annotated[Optional[int], typer.Option(
    "--frames", help="Frames per video (default: the backbone's: 49 real, 9 tiny). `run` takes the counts the "
    "CogVideoX VAE decodes exactly, 8k+1: 1, 9, 17, …, 49.")]
HeightOption = Annotated[Optional[int], typer.Option(
    "--height", help="Video height in pixels (default: the backbone's: 480 real, 128 tiny); `run`: a multiple of 16.")]
WidthOption = Annotated[Optional[int], typer.Option(
    "--width", help="Video width in pixels (default: the backbone's: 720 real, 192 tiny); `run`: a multiple of 16.")]
FpsOption = Annotated[int, typer.Option("--fps", help="Frame rate of the videos, > 0 (the paper's: 8).")]
ExpectedBackboneOption = Annotated[str, typer.Option(
    "--backbone", help="Whose default geometry the videos have, as `run --backbone` takes it (never loaded): "
    "any CogVideoX folder or hub id gives the paper's 49 frames at 480×720, `tiny` 9 frames at 128×192.")]


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------


def _resolve_method(name: str) -> type:
    """Fail now, with one clear line, when ``name`` cannot be run (unknown, or a plugin that does not
    import or is not a method class); warn when an installed plugin's entry point of that name is ignored.
    Returns the method class."""
    try:
        cls = load_method_class(get_spec(name))
    except (UnknownMethodError, MethodLoadError) as exc:
        _fail(str(exc))
    for problem in plugin_problems():
        if f"{name!r}" in problem:
            console.print(f"[yellow]warning:[/yellow] {problem}", highlight=False, soft_wrap=True)
    return cls


def _method_options(method_class: type, texts: Optional[list[str]]) -> dict:
    """``--method-option KEY=VALUE`` (repeatable) → the typed options of the method's config
    (:meth:`dualreal.engine.config.MethodConfig.parse_options`); fails with the valid keys, or the
    field and its expected type, before anything is loaded."""
    raw: dict[str, str] = {}
    for text in texts or []:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            _fail(f"--method-option takes KEY=VALUE, got {text!r}")
        if key in raw:
            _fail(f"--method-option {key} is given twice ({raw[key]!r} and {value!r})")
        raw[key] = value
    try:
        return method_class.config_class.parse_options(raw)
    except ValueError as exc:
        _fail(f"--method-option: {exc}")


@app.command()
def run(
    method: Annotated[str, typer.Option("--method", "-m", help="Registry name (`dualbench list` shows all, installed "
                                        "plugins included) or a plugin target package.module:Class.")] = "dualreal",
    grid: GridOption = "smoke",
    data_root: DataRootOption = None,
    backbone: Annotated[str, typer.Option(help="`tiny` (random weights, CPU), `cogvideox-5b-random` / `cogvideox-2b-random` "
                                          "(the published architectures, random weights: a GPU job before any download), "
                                          "a CogVideoX folder, or a hub id such as THUDM/CogVideoX-5b.")] = "tiny",
    out: Annotated[Path, typer.Option(help="Runs folder: videos, records, checkpoints.")] = Path("runs"),
    frames: FramesOption = None,
    height: HeightOption = None,
    width: WidthOption = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps, >= 1 (default: 50 with pretrained weights, "
                                                 "10 with random weights: tiny and the random presets).")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale, >= 0; <= 1 turns guidance off "
                                            "(diffusers guides only above 1; a note says so).")] = 6.0,
    fps: FpsOption = 8,
    train_steps: Annotated[Optional[int], typer.Option(help="Override the method's training steps per case, >= 1 "
                                                       "(default: the method's; dualreal 1000 as the paper, 10 on tiny). "
                                                       "A method without training steps (cogvideox) ignores it, "
                                                       "with a note in the log and in every record (run_notes).")] = None,
    method_option: Annotated[Optional[list[str]], typer.Option(
        "--method-option", help="KEY=VALUE: set any field of the method's config (repeatable), typed by the field "
        "(bool true/false, int, float, str, none for an optional field, comma-separated tuples): e.g. "
        "num_groups=2, fixed_weights=0.3,0.7, gradient_checkpointing=false, reference_resize=crop. Checked before "
        "anything is loaded; recorded (method_options) and hashed into config_hash.")] = None,
    cases: CasesOption = None,
    max_cases: MaxCasesOption = None,
    max_prompts: MaxPromptsOption = None,
    seeds: SeedsOption = None,
    max_clips: Annotated[Optional[int], typer.Option(help="Train on at most this many motion clips per case.")] = None,
    score: Annotated[bool, typer.Option("--score/--no-score", help="Score each video as it is produced.")] = True,
    metrics: MetricsOption = None,
    weights_dir: WeightsDirOption = None,
    random_weights: RandomWeightsOption = None,
    random_arch: RandomArchOption = DEFAULT_RANDOM_ARCH,
    dd_pad_multiple: DdPadOption = DEFAULT_DD_PAD_MULTIPLE,
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16.")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")] = "cpu",
    allow_large: Annotated[bool, typer.Option(
        "--allow-large", help="Build the backbone even when the memory check refuses it (a full-size random "
        "preset on the CPU, or weights larger than the device's free memory).")] = False,
    motion_resize: Annotated[str, typer.Option(
        "--motion-resize", help="Motion clips to the training size: 'stretch' (the release's loader: no crop) or "
        "'crop' (keep the aspect ratio, cut the centre).")] = "stretch",
    identity_resize: Annotated[str, typer.Option(
        "--identity-resize", help="Identity images to the training size: 'crop' (centre crop to its aspect "
        "ratio, as the authors' data were prepared) or 'stretch'.")] = "crop",
    timestep_spacing: Annotated[str, typer.Option(
        "--timestep-spacing", help="The sampler's timestep spacing: 'trailing' (DualReal's inference script), "
        "'leading' or 'linspace'.")] = "trailing",
    scheduler: Annotated[str, typer.Option(
        "--scheduler", help="The sampler's class, built from the backbone's scheduler configuration: "
        "CogVideoXDPMScheduler (the class DualReal's and THUDM's inference scripts swap in), CogVideoXDDIMScheduler, "
        "or 'config' (the class the backbone's scheduler_config.json names). A class the methods cannot train and "
        "sample with, or a prediction_type other than v_prediction, is refused. Recorded (scheduler, "
        "scheduler_config_hash, scheduler_replaces).")] = "CogVideoXDPMScheduler",
) -> None:
    """Customise METHOD on each case of the grid, generate one mp4 per (prompt, seed), score and record it.

    Re-running the same command resumes: finished videos are skipped, failed ones retried. The whole
    request (frames, size, steps, fps, guidance, method options, …) is checked before any model is
    loaded; each bad value fails with one line naming the valid ones.

    Examples:

      dualbench run --method dualreal

      dualbench run --method cogvideox --grid dualreal50 --data-root path/to/dualreal-bench --max-cases 2 --max-prompts 2

      dualbench run --method my_pkg.my_module:MyMethod --grid smoke      # a method from your own package

      dualbench run --method dualreal --method-option num_groups=2 --method-option reference_resize=crop

      dualbench run --method dualreal --backbone cogvideox-5b-random --device cuda --dtype bf16 --train-steps 2 --steps 4

      accelerate launch --num_processes 8 -m benchmark.cli run --method dualreal --grid dualreal50 --data-root DATA --backbone THUDM/CogVideoX-5b --device cuda
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from benchmark.runner import RunConfig, run as run_grid
    from dualreal.engine.backbone import BackboneError

    method_class = _resolve_method(method)
    options = _method_options(method_class, method_option)
    metric_list = _metric_options(metrics, weights_dir, random_weights, random_arch, dd_pad_multiple)
    cfg = RunConfig(
        method=method, grid=grid, data_root=data_root, backbone=backbone, out=out,
        num_frames=frames, height=height, width=width, num_inference_steps=steps,
        guidance_scale=guidance, fps=fps, train_steps=train_steps, cases=cases,
        max_cases=max_cases, max_prompts=max_prompts, seeds=_int_list(seeds, "seeds"),
        max_clips=max_clips, score=score, metrics=metric_list,
        weights_dir=weights_dir, random_metric_weights=random_weights, random_arch=random_arch,
        dd_pad_multiple=dd_pad_multiple, dtype=dtype, device=device, method_options=options,
        allow_large=allow_large, motion_resize=motion_resize, identity_resize=identity_resize,
        timestep_spacing=timestep_spacing, scheduler=scheduler,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with _progress(*columns) as progress:
            summary = run_grid(cfg, progress=progress, log=progress.console.print)
    except BackboneError as exc:
        _fail(str(exc))
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    _listed("[yellow]waited for locked case(s)[/yellow] (another run into the same --out):", summary.locked, "yellow")
    _listed(f"[yellow]{len(summary.degenerate)} flagged degenerate[/yellow] (scored; {DEGENERATE_RULE}):",
            summary.degenerate, "yellow")
    _listed(f"[red]{summary.failed} failed[/red]:", summary.errors, "red")
    console.print(summary.text(method, out), highlight=False)
    if summary.failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# eval
# ------------------------------------------------------------------------------------------------


def print_results(df, out: Console, *, prompts: Optional[Path] = None) -> None:
    """Per-video rows and the mean as a rich table (labels, arrows and decimals from the metric
    table; a mean covering fewer videos than the row's ok count says how many, ``(n=3)``), then the
    notes, the videos flagged degenerate, how many videos the prompt file matched (when ``prompts``
    was given), the reference images used and the random-weights warning."""
    from rich.table import Table

    from benchmark.evaluate import summarize, summarize_counts
    from benchmark.metrics import METRICS

    metric_cols = [c for c in METRICS if c in df.columns]
    table = Table(title="dualbench eval", show_lines=False)
    table.add_column("video", overflow="fold")
    for c in metric_cols:
        table.add_column(f"{METRICS[c].label} {METRICS[c].arrow}".strip(), justify="right")
    table.add_column("status")
    for _, r in df.iterrows():
        status = r["status"] if r["status"] == "ok" else f"[red]failed[/red]: {r['error']}"
        table.add_row(Path(r["video"]).name, *[METRICS[c].format(r[c]) for c in metric_cols], status)
    means, counts = summarize(df), summarize_counts(df)
    ok = df[df["status"] == "ok"]
    n_ok = len(ok)
    table.add_section()
    cells = [METRICS[c].format(means[c]) + (f" (n={counts[c]})" if counts[c] != n_ok else "") for c in metric_cols]
    table.add_row(f"[bold]mean ({n_ok} ok of {len(df)})[/bold]", *cells, "")
    out.print(table)
    if any(counts[c] != n_ok for c in metric_cols):
        out.print("[dim](n=…): the videos a mean covers, where a metric is undefined for some (notes below).[/dim]")
    if "metric_notes" in df:
        for _, r in ok[ok["metric_notes"].fillna("") != ""].iterrows():
            out.print(f"[dim]{Path(r['video']).name}: {r['metric_notes']}[/dim]", highlight=False)
    if "degenerate" in ok and ok["degenerate"].fillna(False).astype(bool).any():
        flagged = ok[ok["degenerate"].fillna(False).astype(bool)]
        out.print(f"[yellow]{len(flagged)} of {n_ok} video(s) flagged degenerate[/yellow] (scored and averaged; "
                  f"{DEGENERATE_RULE}):", highlight=False)
        for _, r in flagged.iterrows():
            out.print(f"  [yellow]•[/yellow] {Path(r['video']).name}: {r['degenerate_note']}", highlight=False)
    if prompts is not None and "prompt_source" in df:
        matched = int((df["prompt_source"] == "prompts").sum())
        style = "yellow" if matched < len(df) else "dim"
        by_name = int((df["prompt_source"] == "file name").sum())
        out.print(f"[{style}]prompts matched {matched} of {len(df)} videos[/{style}] ({prompts})"
                  + (f"; {by_name} from file names" if by_name else "")
                  + ("; the others have no CLIP-T" if matched + by_name < len(df) else ""), highlight=False)
    refs = sorted({int(v) for v in ok["num_ref_images"].dropna()}) if "num_ref_images" in ok else []
    if any(refs):
        out.print(f"[dim]CLIP-I / DINO-I references: {' or '.join(map(str, refs))} image(s) per video[/dim]",
                  highlight=False)
    if "metric_random_weights" in df and bool(df["metric_random_weights"].fillna(False).astype(bool).any()):
        out.print("[bold red]RANDOM WEIGHTS: these numbers are meaningless (tests / smoke runs only).[/bold red]")


@app.command("eval")
def eval_(
    videos: Annotated[list[Path], typer.Argument(help="Video files and/or folders of videos.", show_default=False)],
    prompts: Annotated[
        Optional[Path], typer.Option("--prompts", help="Prompt file: 'name<TAB>prompt' lines or a JSON map {name: prompt}.")
    ] = None,
    filename_prompts: Annotated[
        bool, typer.Option("--prompt-from-filename", help="VBench convention for videos without a prompt: 'a cat-0.mp4' -> 'a cat'.")
    ] = False,
    refs: Annotated[Optional[Path], typer.Option(
        "--refs", help="Identity folder whose images are the references (as `run` lists them: images/ or the folder).")] = None,
    motion_refs: Annotated[
        Optional[Path], typer.Option("--motion-refs", help="Motion folder of reference clips (for dynamic_degree_delta).")
    ] = None,
    metrics: MetricsOption = None,
    weights_dir: WeightsDirOption = None,
    random_weights: RandomWeightsOption = None,
    random_arch: RandomArchOption = DEFAULT_RANDOM_ARCH,
    dd_pad_multiple: DdPadOption = DEFAULT_DD_PAD_MULTIPLE,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write rows to .csv, .parquet or .json.")] = None,
    device: Annotated[str, typer.Option("--device", help="Torch device for the encoders.")] = "cpu",
    cache_dir: Annotated[
        Optional[Path], typer.Option("--cache-dir", help="Where the reference-motion dynamic degree is cached (motion_refs/<motion>.json).")
    ] = None,
) -> None:
    """Score videos on the benchmark metrics; print per-video rows and the mean.

    Exit status: 0 if at least one video was scored, 1 if every video failed, 2 on bad arguments.

    Examples:

        dualbench eval outputs/ --prompts prompts.tsv --refs data/identities/dog --motion-refs data/motions/PlayingCello

        dualbench eval clip.mp4 --metrics temporal_flickering,motion_smoothness --out scores.csv

        dualbench eval benchmark/sample/motion/walking --random-weights --random-arch small
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from benchmark.encoders import EncoderWeightsError
    from benchmark.evaluate import collect_videos, evaluate_paths
    from benchmark.store import OUTPUT_FORMATS, export_records

    metric_list = _metric_options(metrics, weights_dir, random_weights, random_arch, dd_pad_multiple)
    if out is not None and out.suffix.lower() not in OUTPUT_FORMATS:
        _fail(f"--out {out}: use one of {', '.join(OUTPUT_FORMATS)}")
    stdout = _stdout()
    bar = _progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.description}"), transient=True)
    task = bar.add_task("", total=len(collect_videos(videos)), unit="videos")
    started: list[Path] = []

    def on_video(path: Path) -> None:
        bar.update(task, description=path.name, completed=len(started))
        started.append(path)

    try:
        with bar:
            df = evaluate_paths(
                videos, prompts=prompts, use_filename_prompts=filename_prompts, refs=refs, motion_refs=motion_refs,
                metrics=metric_list, weights_dir=weights_dir, random_weights=bool(random_weights), random_arch=random_arch,
                device=device, dd_pad_multiple=dd_pad_multiple, cache_dir=cache_dir, on_video=on_video,
            )
    except EncoderWeightsError as exc:
        _fail(str(exc))
    except ValueError as exc:  # bad arguments, an unusable reference folder (DataError, MediaError)
        _fail(str(exc))
    print_results(df, stdout, prompts=prompts)
    if out is not None:
        export_records(df, out)
        stdout.print(f"wrote {len(df)} rows to {out}", highlight=False)
    if not (df["status"] == "ok").any():
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# manifest and score: your own method's videos, made elsewhere
# ------------------------------------------------------------------------------------------------


def _geometry(backbone: str, frames: Optional[int], height: Optional[int], width: Optional[int], fps: int):
    from benchmark.external import Geometry

    try:
        return Geometry.for_backbone(backbone, num_frames=frames, height=height, width=width, fps=fps)
    except ValueError as exc:
        _fail(str(exc))


def _listed(title: str, lines: list[str], style: str, limit: int = 20) -> None:
    """``title`` then up to ``limit`` lines (and how many more)."""
    if not lines:
        return
    console.print(title, highlight=False)
    for line in lines[:limit]:
        console.print(f"  [{style}]•[/{style}] {line}", highlight=False, soft_wrap=True)
    if len(lines) > limit:
        console.print(f"  … and {len(lines) - limit} more", highlight=False)


@app.command()
def manifest(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the manifest: .csv or .json.", show_default=False)],
    grid: GridOption = "smoke",
    data_root: DataRootOption = None,
    backbone: ExpectedBackboneOption = "THUDM/CogVideoX-5b",
    frames: FramesOption = None,
    height: HeightOption = None,
    width: WidthOption = None,
    fps: FpsOption = 8,
    cases: CasesOption = None,
    max_cases: MaxCasesOption = None,
    max_prompts: MaxPromptsOption = None,
    seeds: SeedsOption = None,
) -> None:
    """List every video a grid asks for, to generate them with your own code.

    One row per (case, prompt, seed): the case, its identity folder and reference images, its motion
    folder and clips, the prompt (raw, with the identity token *) and the class word, prompt index,
    seed, the frames / height / width / fps expected, and `video`, the path to save it at under one
    folder (<case>/p003_s42.mp4, the names `run` uses). Paths inside --data-root are relative to it.
    Then `dualbench score FOLDER --method NAME` scores them.

    Examples:

      dualbench manifest --grid dualreal50 --data-root path/to/dualreal-bench --out todo.csv

      dualbench manifest --grid dualreal50 --data-root path/to/dualreal-bench --cases 'cat*' --max-prompts 5 --out todo.json

      dualbench manifest --grid smoke --backbone tiny --out smoke.json
    """
    from benchmark.external import MANIFEST_FORMATS, manifest_rows, write_manifest
    from benchmark.grid import filter_cases, load_grid

    if out.suffix.lower() not in MANIFEST_FORMATS:
        _fail(f"--out {out}: use one of {', '.join(MANIFEST_FORMATS)}")
    geometry = _geometry(backbone, frames, height, width, fps)
    try:
        selected = filter_cases(load_grid(grid, data_root), names=cases, max_cases=max_cases, max_prompts=max_prompts,
                                seeds=_int_list(seeds, "seeds"))
        rows = manifest_rows(selected, geometry, data_root=data_root)
        write_manifest(rows, out)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"{len(rows)} videos for {len(selected)} case{'' if len(selected) == 1 else 's'} ({geometry.text()}) → {out}")


@app.command()
def score(
    videos: Annotated[Path, typer.Argument(help="Folder of your videos, laid out as `dualbench manifest` says: "
                                           "<case>/p003_s42.mp4.", show_default=False)],
    method: Annotated[str, typer.Option("--method", "-m", help="Name of your method: its records and table row "
                                        "(not a name `dualbench run` runs).", show_default=False)],
    grid: GridOption = "smoke",
    data_root: DataRootOption = None,
    out: Annotated[Path, typer.Option(help="Runs folder: the records go to OUT/METHOD/<case>/records/, beside `run`'s.")] = Path("runs"),
    backbone: ExpectedBackboneOption = "THUDM/CogVideoX-5b",
    frames: FramesOption = None,
    height: HeightOption = None,
    width: WidthOption = None,
    fps: FpsOption = 8,
    cases: CasesOption = None,
    max_cases: MaxCasesOption = None,
    max_prompts: MaxPromptsOption = None,
    seeds: SeedsOption = None,
    metrics: MetricsOption = None,
    weights_dir: WeightsDirOption = None,
    random_weights: RandomWeightsOption = None,
    random_arch: RandomArchOption = DEFAULT_RANDOM_ARCH,
    dd_pad_multiple: DdPadOption = DEFAULT_DD_PAD_MULTIPLE,
    device: Annotated[str, typer.Option(help="Torch device for the metric encoders.")] = "cpu",
) -> None:
    """Score videos made outside dualbench into the same records as `run`; `table` and `report` then
    show METHOD beside the others.

    Every video of the manifest (same grid options) found under VIDEOS is decoded once and scored
    with the same metrics, references and motion-reference cache as `run`; its record (marked
    provenance external, with the file's sha256) goes to OUT/METHOD/<case>/records/. Missing videos
    get `missing` records (listed, counted, never averaged); files the manifest does not name are
    listed and ignored; a video whose frames, size or fps differ from the expected ones is scored
    and flagged. Re-running resumes (unchanged files are skipped); RANK/WORLD_SIZE shard cases as
    for `run`. To reproduce `run`'s numbers exactly, write the frames losslessly (H.264 QP 0 in
    RGB: ffmpeg -c:v libx264rgb -qp 0, or FFV1 .mkv). Exit status 1 when a video is missing or failed.

    Examples:

      dualbench score my_videos/ --method mine --grid dualreal50 --data-root path/to/dualreal-bench --weights-dir ~/weights

      dualbench score my_videos/ --method mine --grid smoke --backbone tiny --random-weights

      accelerate launch --num_processes 4 -m benchmark.cli score my_videos/ --method mine --grid dualreal50 --data-root DATA --device cuda
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from benchmark.external import ScoreConfig, score as score_videos

    metric_list = _metric_options(metrics, weights_dir, random_weights, random_arch, dd_pad_multiple)
    geometry = _geometry(backbone, frames, height, width, fps)
    cfg = ScoreConfig(
        method=method, videos=videos, grid=grid, data_root=data_root, out=out, backbone=backbone,
        num_frames=geometry.num_frames, height=geometry.height, width=geometry.width, fps=geometry.fps,
        cases=cases, max_cases=max_cases, max_prompts=max_prompts, seeds=_int_list(seeds, "seeds"),
        metrics=metric_list, weights_dir=weights_dir, random_metric_weights=random_weights, random_arch=random_arch,
        dd_pad_multiple=dd_pad_multiple, device=device,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with _progress(*columns) as progress:
            result = score_videos(cfg, progress=progress, log=progress.console.print)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    s = result.summary
    _listed(f"[red]{s.missing} missing[/red] (records `missing`; generate them and run this again):", s.missing_videos, "red")
    _listed(f"[red]{s.failed} failed[/red]:", s.errors, "red")
    _listed(f"[yellow]{len(result.flagged)} scored but flagged[/yellow] (geometry_mismatch):", result.flagged, "yellow")
    _listed(f"[yellow]{len(s.degenerate)} flagged degenerate[/yellow] (scored; {DEGENERATE_RULE}):", s.degenerate, "yellow")
    _listed("[yellow]waited for locked case(s)[/yellow] (another command into the same --out):", s.locked, "yellow")
    _listed(f"[yellow]{len(result.unexpected)} unexpected file(s) ignored[/yellow] (no manifest row names them):",
            result.unexpected, "yellow")
    console.print(
        s.text(method, out / method, done_word="scored", show_missing=True, counts=(f"{len(result.flagged)} flagged",),
               detail=f"expected {result.geometry.text()}"
               + (f"; {result.not_selected} file(s) of unselected videos ignored" if result.not_selected else "")),
        highlight=False,
    )
    if s.missing or s.failed:
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------
# table
# ------------------------------------------------------------------------------------------------


def render_rich(spec):
    """A :class:`rich.table.Table` of a :class:`benchmark.tables.TableSpec` (bold best, underlined
    second), the notes as caption."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from benchmark.tables import count_text

    t = Table(title=spec.title, caption="\n".join(spec.notes), caption_justify="left", box=box.SIMPLE_HEAD,
              padding=(0, 1), pad_edge=False, show_edge=False)
    for h in spec.label_headers:
        t.add_column(h, no_wrap=True)
    for j, (h, a) in enumerate(zip(spec.metric_headers, spec.metric_arrows)):
        lines = [ln for g in spec.groups for r in g.rows for ln in r.cells[j].text(two_lines=True).split("\n")]
        t.add_column(f"{h}\n{a}", justify="right", min_width=max(map(len, lines), default=1))
    t.add_column("cases/\nvideos", justify="right")
    for gi, g in enumerate(spec.groups):
        for ri, row in enumerate(g.rows):
            cells = [Text(c.text(two_lines=True), style="bold" if c.mark == "best" else "underline" if c.mark == "second" else "")
                     for c in row.cells]
            style = "dim" if g.name == "paper" else None
            labels = [lab.replace(" (paper)", "\n(paper)") for lab in row.shown_labels]
            counts = f"{count_text(row.cases)}/{count_text(row.videos) or '?'}"
            t.add_row(*labels, *cells, counts, style=style,
                      end_section=(ri == len(g.rows) - 1 and gi < len(spec.groups) - 1))
    return t


def _load_runs(runs: Path, code: int = 1):
    """The readable records of a runs folder (unreadable ones skipped and listed in the frame's
    attrs: :func:`benchmark.store.unreadable_note`), or a clear failure (exit ``code``) when there
    is no readable record."""
    from benchmark.store import load_records, unreadable_note

    if not runs.is_dir():
        _fail(f"no runs folder at {runs}; create one with `dualbench run --out {runs} ...`", code)
    records = load_records(runs)
    if records.empty:
        skipped = unreadable_note(records)
        _fail(f"no {'readable ' if skipped else ''}records under {runs} (expected {runs}/<method>/<case>/records/*.json"
              f"{'; ' + skipped if skipped else ''}); run `dualbench run --out {runs} ...` first", code)
    return records


@app.command("table")
def table_(
    runs: Annotated[Path, typer.Option(
        "--runs", help="Runs folder written by `dualbench run --out` (records under "
        "<runs>/<method>/<case>/records/). Example: --runs runs/smoke")] = Path("runs"),
    table: Annotated[int, typer.Option(
        "--table", min=1, max=3, help="Which paper table: 1 = methods vs baselines; 2 = component "
        "ablation (dualreal, dualreal-no-joint, dualreal-no-controller, dualreal-no-mask); 3 = weight "
        "groups (dualreal-groups-N, dualreal). Example: --table 2")] = 1,
    format: Annotated[TableFormat, typer.Option(
        "--format", "-f", case_sensitive=False, help="Output format: rich (terminal), markdown, latex "
        "(booktabs), csv (one row per method, all columns), html. Example: --format markdown")] = "rich",
    paper: Annotated[bool, typer.Option(
        "--paper", help="Also print the paper's rows (labelled 'paper') below ours. "
        "Example: --paper --format markdown")] = False,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the table to this file instead of the terminal. "
        "Example: --out results/table1.tex")] = None,
    n_boot: Annotated[int, typer.Option(
        "--n-boot", min=0, help="Bootstrap resamples for the 95 % intervals (0: none). "
        "Example: --n-boot 10000")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed. Example: --seed 1")] = 0,
) -> None:
    """Print Table 1, 2 or 3 of the DualReal paper from a runs folder.

    Values are averaged per case, then over cases; each cell shows the mean and ± half the 95 %
    bootstrap interval over cases; best is bold and second best underlined; rows computed with
    random weights carry a †. The columns are the metric table's (`dualbench list metrics`).

    Examples:

        dualbench table --runs runs

        dualbench table --runs runs --paper --format markdown

        dualbench table --runs runs --table 2 --format latex --out table2.tex

        dualbench table --runs runs --format csv > table1.csv
    """
    from benchmark.store import unreadable_note
    from benchmark.tables import aggregate, build_table, check_table_request, render_table

    fmt = TableFormat(format)
    records = _load_runs(Path(runs))
    try:
        check_table_request(records, table)
    except ValueError as exc:
        _fail(f"{exc} (in {runs})", 1)
    skipped = [n for n in [unreadable_note(records)] if n]  # a note under the table; CSV has none: stderr
    if skipped and (fmt is TableFormat.csv or out is not None):
        _note(skipped[0])
    if fmt is TableFormat.rich:
        spec = build_table(aggregate(records, n_boot=n_boot, seed=seed), table=table, paper=paper, n_boot=n_boot,
                           seed=seed, extra_notes=skipped)
        if out is None:
            _stdout().print(render_rich(spec))
            return
        buffer = Console(file=io.StringIO(), width=220, force_terminal=True, color_system="standard")
        buffer.print(render_rich(spec))
        text = buffer.file.getvalue()
    else:
        text = render_table(records, table=table, format=fmt, paper=paper, n_boot=n_boot, seed=seed, extra_notes=skipped)
    if out is None:
        typer.echo(text, nl=False)
        return
    from dualreal.engine.io import atomic_write_text

    atomic_write_text(Path(out), text)
    typer.echo(f"wrote {out}", err=True)


# ------------------------------------------------------------------------------------------------
# report and plots
# ------------------------------------------------------------------------------------------------


@app.command("report")
def report(
    runs: Annotated[Path, typer.Option(
        "--runs", help="Runs folder written by `dualbench run --out`. Example: --runs runs/smoke")] = Path("runs"),
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for index.html, the plots and the (hard-linked or copied) videos; "
        "open index.html in a browser. Example: --out report/")] = ...,
    posters: Annotated[bool, typer.Option(
        "--posters/--no-posters", help="Show each video's first frame before it plays (decodes one frame "
        "per video). Example: --no-posters")] = True,
) -> None:
    """Write a static HTML report of a runs folder (no server or network needed).

    The page: Tables 1–3 with the paper's rows, the plots (as `dualbench plots` draws them), and per
    case the videos of every method side by side with prompts and per-video scores.

    Examples:

        dualbench report --runs runs --out report

        dualbench report --runs runs/smoke --out /tmp/smoke-report --no-posters
    """
    from benchmark.report import build_report

    try:
        index = build_report(runs, out, posters=posters, log=_note)
    except FileNotFoundError as exc:
        _fail(f"{exc}; run `dualbench run --out {runs} ...` first", 1)
    typer.echo(f"wrote {index} — open it in a browser (file://{index.resolve()})")


@app.command("plots")
def plots(
    runs: Annotated[Path, typer.Option("--runs", help="Runs folder written by `dualbench run --out`. "
                                       "Example: --runs runs/smoke")] = Path("runs"),
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the PNG and SVG files. "
                                      "Example: --out plots/")] = Path("plots"),
) -> None:
    """Draw the metric bars, the dynamic degree per motion against its reference clips, and the
    StageBlender controller weights (paper Fig. 7) as PNG and SVG; prints one line per file.

    Examples:

        dualbench plots --runs runs --out plots
    """
    from benchmark.plots import make_plots
    from benchmark.store import unreadable_note

    records = _load_runs(Path(runs))
    if unreadable_note(records):
        _note(unreadable_note(records))
    try:
        made = make_plots(runs, out, records=records)
    except ValueError as exc:  # a malformed controller trace (names its file)
        _fail(str(exc), 1)
    for kind, files in made.items():
        for f in files:
            typer.echo(f"{kind}: {f}")


# ------------------------------------------------------------------------------------------------
# list, validate, regression
# ------------------------------------------------------------------------------------------------


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="methods, grids or metrics")] = "methods",
    pattern: Annotated[str, typer.Option(help="Wildcard filter, e.g. 'dualreal*'.")] = "*",
) -> None:
    """List registered methods (with a wildcard; installed plugins of the `dualbench.methods` entry-point
    group too, with their distribution), built-in grids, or metrics.

    Examples:

      dualbench list

      dualbench list methods --pattern 'dualreal*'

      dualbench list metrics
    """
    if what == "methods":
        specs = all_specs()
        for name in list_methods(pattern):
            typer.echo(f"{name:24s} {specs[name].summary}")
        for problem in plugin_problems():
            console.print(f"[yellow]warning:[/yellow] {problem}", highlight=False, soft_wrap=True)
    elif what == "grids":
        typer.echo("smoke                    built-in sample: DreamBooth dog × Intel walking clips (CC-BY-4.0)")
        typer.echo("dualreal50               the paper's 50 cases × 50 prompts (needs --data-root)")
        typer.echo("PATH.yaml                your own grid (see README)")
    elif what == "metrics":
        from benchmark.metrics import METRICS

        for name, m in METRICS.items():
            flags = ", ".join(filter(None, ["default" if m.default else "", f"with {m.derived_from}" if m.derived_from else "",
                                            f"tables {'/'.join(map(str, m.tables))}" if m.tables else ""]))
            typer.echo(f"{name:24s} {m.label} [{m.unit}, {m.arrow or 'no direction'}] {m.description}"
                       + (f" ({flags})" if flags else "") + (f"; encoders: {', '.join(m.encoders)}" if m.encoders else ""))
    else:
        _fail(f"unknown listing {what!r}; choose methods, grids or metrics")


@app.command()
def validate(
    grid: Annotated[str, typer.Option(help="`smoke`, `dualreal50` or a YAML file.")] = "smoke",
    data_root: Annotated[Optional[Path], typer.Option(help="Data root for dualreal50.")] = None,
    decode: Annotated[bool, typer.Option("--decode/--no-decode", help="Also decode every image and clip.")] = False,
) -> None:
    """Check a grid without running anything: folders, prompt files, (optionally) every file decodes.

    Examples:

      dualbench validate --grid dualreal50 --data-root path/to/dualreal-bench --decode
    """
    from benchmark.data import load_identity, load_motion
    from benchmark.grid import load_grid
    from benchmark.media import MediaError, read_image, read_video
    from dualreal.engine.trainer.data import MIN_CLIP_FRAMES

    try:
        cases = load_grid(grid, data_root)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    problems = 0
    n_files = 0
    for case in cases:
        try:
            ident = load_identity(case.identity, class_word=case.class_word)
            motion = load_motion(case.motion)
            if decode:
                for p in ident.images:
                    read_image(p)
                    n_files += 1
                for p in motion.clips:
                    read_video(p, min_frames=MIN_CLIP_FRAMES)  # shorter ones are padded (docs/METHOD.md §3.2)
                    n_files += 1
        except (MediaError, ValueError, OSError) as exc:
            problems += 1
            console.print(f"[red]✗[/red] {case.name}: {exc}", highlight=False, soft_wrap=True)
    n_prompts = sum(len(c.prompts) for c in cases)
    typer.echo(f"{len(cases)} case{'s' * (len(cases) != 1)}, {n_prompts} prompt{'s' * (n_prompts != 1)}" + (f", {n_files} files decoded" if decode else "") + f", {problems} problem(s)")
    if problems:
        raise typer.Exit(1)


@app.command()
def regression(
    update: Annotated[bool, typer.Option("--update", help="Rewrite results/regression/smoke.json deliberately.")] = False,
    methods: Annotated[Optional[str], typer.Option(help="Comma-separated methods (default: dualreal,lora).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Keep the run here instead of a temp folder.")] = None,
) -> None:
    """Run the CI regression subset (smoke grid, random weights) and compare with stored metrics.

    Exits 1 with a readable diff when a metric moved beyond its tolerance (see results/regression/).

    Examples:

      dualbench regression

      dualbench regression --update
    """
    from benchmark.regression import regression as run_regression

    names = [m.strip() for m in methods.split(",")] if methods else None
    diffs = run_regression(update=update, methods=names, out=out, log=lambda m: console.print(m, highlight=False))
    if update:
        typer.echo("results/regression/smoke.json rewritten")
        return
    if diffs:
        console.print(f"[bold red]regression: {len(diffs)} difference(s)[/bold red]")
        for d in diffs:
            console.print(f"  {d}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    typer.echo("regression: all metrics within tolerance")


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
