"""The ``dualbench`` command.

Subcommands: ``run`` (customise → generate → score → record), ``eval`` (score any folder of
videos), ``table`` (Table 1/2/3), ``report`` (static HTML), ``list`` (methods, grids, metrics),
``validate`` (check a grid's files without running anything).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from benchmark.registry import get_spec, list_methods, METHODS, UnknownMethodError

app = typer.Typer(
    name="dualbench",
    help=(
        "DualReal (ICCV 2025) and a video-customisation benchmark on CogVideoX.\n\n"
        "Examples:\n\n"
        "  dualbench run --method dualreal                      # built-in sample, tiny random backbone\n\n"
        "  dualbench run --method lora --grid dualreal50 --data-root ../shared/data/dualreal-bench "
        "--backbone THUDM/CogVideoX-5b --weights-dir ~/weights\n\n"
        "  dualbench table --paper --format markdown\n\n"
        "  dualbench eval my_videos/ --prompts prompts.tsv --refs dog_images/ --random-weights"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/bold red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _int_list(text: Optional[str], what: str) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        _fail(f"--{what} takes integers separated by commas, got {text!r}")


@app.command()
def run(
    method: Annotated[str, typer.Option("--method", "-m", help="Registry name; `dualbench list` shows all.")] = "dualreal",
    grid: Annotated[str, typer.Option(help="`smoke` (built-in sample), `dualreal50` (needs --data-root) or a YAML file.")] = "smoke",
    data_root: Annotated[Optional[Path], typer.Option(help="Folder laid out as the DualReal benchmark (cases.json, identities/, motions/).")] = None,
    backbone: Annotated[str, typer.Option(help="`tiny` (random weights, CPU), a CogVideoX folder, or a hub id such as THUDM/CogVideoX-5b.")] = "tiny",
    out: Annotated[Path, typer.Option(help="Runs folder: videos, records, checkpoints.")] = Path("runs"),
    frames: Annotated[Optional[int], typer.Option(help="Frames per video, 4k+1 (default: 49 real, 9 tiny).")] = None,
    height: Annotated[Optional[int], typer.Option(help="Video height in pixels (default: 480 real, 64 tiny).")] = None,
    width: Annotated[Optional[int], typer.Option(help="Video width in pixels (default: 720 real, 96 tiny).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Denoising steps (default: 50 real, 10 tiny).")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 6.0,
    fps: Annotated[int, typer.Option(help="Frame rate of the written mp4s.")] = 8,
    train_steps: Annotated[Optional[int], typer.Option(help="Override the method's training steps per case (paper: 1000).")] = None,
    cases: Annotated[Optional[list[str]], typer.Option("--cases", help="Only these case names or glob patterns (repeatable).")] = None,
    max_cases: Annotated[Optional[int], typer.Option(help="At most this many cases (after --cases).")] = None,
    max_prompts: Annotated[Optional[int], typer.Option(help="At most this many prompts per case.")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Seeds, comma-separated (default: the grid's, 42).")] = None,
    max_clips: Annotated[Optional[int], typer.Option(help="Use at most this many motion clips per case.")] = None,
    score: Annotated[bool, typer.Option("--score/--no-score", help="Score each video as it is produced.")] = True,
    metrics: Annotated[Optional[str], typer.Option(help="Comma-separated metric names (default: all seven).")] = None,
    weights_dir: Annotated[Optional[Path], typer.Option(help="Folder with the metric encoders' weights (see README).")] = None,
    random_weights: Annotated[Optional[bool], typer.Option("--random-weights/--real-weights", help="Metric encoders with seeded random weights (default: random when the backbone is `tiny` and no --weights-dir).")] = None,
    random_arch: Annotated[str, typer.Option(help="With random metric weights: 'small' same-family encoders (fast on CPU) or the 'full' architectures.")] = "small",
    dtype: Annotated[str, typer.Option(help="fp32, bf16 or fp16.")] = "fp32",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, …")] = "cpu",
) -> None:
    """Customise METHOD on each case of the grid, generate one mp4 per (prompt, seed), score and record it.

    Re-running the same command resumes: finished videos are skipped, failed ones retried.

    Examples:

      dualbench run --method dualreal

      dualbench run --method cogvideox --grid dualreal50 --data-root ../shared/data/dualreal-bench --max-cases 2 --max-prompts 2

      accelerate launch --num_processes 8 -m benchmark.cli run --method dualreal --grid dualreal50 --data-root DATA --backbone THUDM/CogVideoX-5b --device cuda
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from benchmark.runner import RunConfig, run as run_grid
    from dualreal.engine.backbone import BackboneError

    try:
        get_spec(method)
    except UnknownMethodError as exc:
        _fail(str(exc))
    cfg = RunConfig(
        method=method, grid=grid, data_root=data_root, backbone=backbone, out=out,
        num_frames=frames, height=height, width=width, num_inference_steps=steps,
        guidance_scale=guidance, fps=fps, train_steps=train_steps, cases=cases,
        max_cases=max_cases, max_prompts=max_prompts, seeds=_int_list(seeds, "seeds"),
        max_clips=max_clips, score=score,
        metrics=[m.strip() for m in metrics.split(",") if m.strip()] if metrics else None,
        weights_dir=weights_dir, random_metric_weights=random_weights, random_arch=random_arch,
        dtype=dtype, device=device,
    )
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            summary = run_grid(cfg, progress=progress, log=progress.console.print)
    except BackboneError as exc:
        _fail(str(exc))
    except (ValueError, OSError) as exc:
        _fail(str(exc))
    console.print(
        f"{method}: {summary.done} done, {summary.skipped} already recorded, {summary.failed} failed "
        f"({summary.cases} case(s)) → {out}",
        highlight=False,
    )
    if summary.failed:
        for line in summary.errors[:20]:
            console.print(f"  [red]✗[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("list")
def list_(
    what: Annotated[str, typer.Argument(help="methods, grids or metrics")] = "methods",
    pattern: Annotated[str, typer.Option(help="Wildcard filter, e.g. 'dualreal*'.")] = "*",
) -> None:
    """List registered methods (with a wildcard), built-in grids, or metrics.

    Examples:

      dualbench list

      dualbench list methods --pattern 'dualreal*'
    """
    if what == "methods":
        for name in list_methods(pattern):
            typer.echo(f"{name:24s} {METHODS[name].summary}")
    elif what == "grids":
        typer.echo("smoke                    built-in sample: DreamBooth dog × Intel walking clips (CC-BY-4.0)")
        typer.echo("dualreal50               the paper's 50 cases × 50 prompts (needs --data-root)")
        typer.echo("PATH.yaml                your own grid (see README)")
    elif what == "metrics":
        from benchmark.metrics import METRICS as METRIC_INFO

        for name, info in METRIC_INFO.items():
            typer.echo(f"{name:24s} {info}")
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

      dualbench validate --grid dualreal50 --data-root ../shared/data/dualreal-bench --decode
    """
    from benchmark.data import load_identity, load_motion
    from benchmark.grid import load_grid
    from benchmark.media import MediaError, read_image, read_video

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
                    read_video(p, min_frames=5)
                    n_files += 1
        except (MediaError, ValueError, OSError) as exc:
            problems += 1
            console.print(f"[red]✗[/red] {case.name}: {exc}", highlight=False, soft_wrap=True)
    n_prompts = sum(len(c.prompts) for c in cases)
    typer.echo(f"{len(cases)} cases, {n_prompts} prompts" + (f", {n_files} files decoded" if decode else "") + f", {problems} problem(s)")
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


# Commands whose logic lives beside the data they work on (one function each, registered here).
from benchmark.evaluate import eval_command  # noqa: E402
from benchmark.report import report_command  # noqa: E402
from benchmark.tables import table_command  # noqa: E402

app.command("eval")(eval_command)
app.command("table")(table_command)
app.command("report")(report_command)


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
