"""The static HTML report of a runs folder (``dualbench report``), opened from disk: no server, no network.

Layout of ``--out``::

    index.html                       the page (inline CSS, no scripts, no external URL)
    table1.csv, records.csv          the aggregate of Table 1 and every record, for download
    plots/*.png, plots/*.svg         benchmark.plots
    videos/<method>/<case>/pNNN_sSEED.mp4    the generated videos (hard links where the filesystem
                                             allows, copies otherwise: the folder stands alone)
    posters/<method>/<case>/pNNN_sSEED.jpg   first frame of each video (shown before playing)

The page: Table 1 (always, as ``dualbench table`` prints it) and Tables 2–3 (when ablation runs
exist) with the paper's rows, the plots,
then per case a grid — one row per (prompt, seed), one column per method — of ``<video controls
loop muted>`` elements with that video's scores. Every ``src`` is relative to ``index.html``.
"""

from __future__ import annotations

import html
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from benchmark.metrics import METRICS, table_metrics
from benchmark.plots import make_plots
from benchmark.store import load_records, unreadable_note, video_path, video_stem
from benchmark.tables import RANDOM_NOTE, aggregate, build_table, render_html, table_rows
from dualreal.engine.io import atomic_write_text

__all__ = ["build_report"]

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; color: #222; }
h1 { margin-bottom: .2rem; } .meta { color: #666; font-size: .9rem; }
.warning { background: #fff3cd; border: 1px solid #e0c060; padding: .5rem .8rem; margin: 1rem 0; }
table.results { border-collapse: collapse; margin: 1rem 0 .3rem; font-size: .9rem; }
table.results caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
table.results th, table.results td { border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: right;
  white-space: nowrap; }
table.results thead th { white-space: normal; vertical-align: bottom; }
table.results th[scope=row], table.results thead th:first-child { text-align: left; }
table.results tbody.paper { color: #555; background: #f6f6f6; }
table.results tr.random th { color: #a33; }
p.note { font-size: .8rem; color: #555; margin: .1rem 0; max-width: 70rem; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; } figcaption { font-size: .8rem; color: #555; }
nav.cases a { margin-right: .8rem; font-size: .9rem; }
div.scroll { overflow-x: auto; max-width: 100%; }
table.videos { border-collapse: collapse; margin-bottom: 2rem; }
table.videos th, table.videos td { border: 1px solid #ddd; padding: .3rem; vertical-align: top; }
table.videos thead th { background: #f2f2f2; }
td.prompt { max-width: 16rem; font-size: .85rem; }
td.prompt .id { color: #777; font-size: .75rem; }
video { width: 256px; background: #000; display: block; }
dl.scores { display: grid; grid-template-columns: auto auto; gap: 0 .6rem; font-size: .75rem; margin: .3rem 0 0; }
dl.scores dt { color: #666; } dl.scores dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
td.failed { color: #a33; font-size: .8rem; max-width: 256px; } td.missing { color: #999; text-align: center; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _url(path: Path | str) -> str:
    """A relative URL for a path relative to ``index.html`` (each segment percent-encoded)."""
    return "/".join(quote(part) for part in Path(path).parts)


def _place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy when linking is impossible); replace an older ``dst``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _poster(video: Path, dst: Path) -> bool:
    """Save the first frame of ``video`` as a JPEG; False when it cannot be decoded."""
    if dst.exists() and dst.stat().st_mtime >= video.stat().st_mtime:
        return True
    from PIL import Image

    from benchmark.media import MediaError, read_video

    try:
        frames, _ = read_video(video, max_frames=1)
    except MediaError:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frames[0].numpy()).save(dst, quality=85)
    return True


def _scores_html(rec: pd.Series) -> str:
    """The video's Table 1 metrics (label and value as the metric table says; a deviation in brackets)."""
    items = []
    for name in table_metrics(1):
        m = METRICS[name]
        text = m.format(rec.get(name))
        if m.deviation is not None and text != "–":
            d = METRICS[m.deviation]
            if d.format(rec.get(m.deviation)) != "–":
                text += f" ({float(rec.get(m.deviation)):+.{d.decimals}f})"
        items.append(f"<dt>{_e(m.label)}</dt><dd>{_e(text)}</dd>")
    return '<dl class="scores">' + "".join(items) + "</dl>"


def _method_order(methods: list[str]) -> list[str]:
    """Table 1's order, then Table 2's and Table 3's methods, then anything else."""
    order: list[str] = []
    for t in (1, 2, 3):
        order += [m for m, _ in table_rows(methods, t) if m not in order]
    return order + sorted(m for m in methods if m not in order)


def _case_section(case: str, recs: pd.DataFrame, methods: list[str], runs: Path, out: Path, posters: bool) -> str:
    first = recs.iloc[0]
    ident, motion = first.get("identity", ""), first.get("motion", "")
    sub = f" — identity <b>{_e(ident)}</b>, motion <b>{_e(motion)}</b>" if pd.notna(ident) and ident else ""
    parts = [f'<section class="case" id="case-{_e(quote(case))}"><h3>{_e(case)}{sub}</h3>',
             '<table class="videos"><thead><tr><th>prompt</th>'
             + "".join(f"<th>{_e(m)}</th>" for m in methods) + "</tr></thead><tbody>"]
    keys = recs[["prompt_index", "seed"]].drop_duplicates().sort_values(["prompt_index", "seed"])
    for _, key in keys.iterrows():
        pi, seed = int(key["prompt_index"]), int(key["seed"])
        same = recs[(recs["prompt_index"] == pi) & (recs["seed"] == seed)]
        prompt = next((p for p in same.get("prompt", []) if isinstance(p, str) and p), "")
        cells = [f'<td class="prompt">{_e(prompt)}<div class="id">{video_stem(pi, seed)}</div></td>']
        for m in methods:
            mine = same[same["method"] == m]
            if mine.empty:
                cells.append('<td class="missing">—</td>')
                continue
            rec = mine.iloc[0]
            if rec.get("status") == "missing":
                cells.append('<td class="missing">missing: not generated</td>')
                continue
            if rec.get("status") != "ok":
                err = rec.get("error") if isinstance(rec.get("error"), str) else "no error message"
                cells.append(f'<td class="failed">failed: {_e(err)}</td>')
                continue
            rel = rec.get("video")
            src = runs / rel if isinstance(rel, str) and rel else video_path(runs, m, case, pi, seed)
            if not src.is_file():
                cells.append(f'<td class="failed">video missing: {_e(src)}{_scores_html(rec)}</td>')
                continue
            dst_rel = Path("videos") / m / case / f"{video_stem(pi, seed)}{src.suffix}"
            _place(src, out / dst_rel)
            poster = ""
            if posters:
                p_rel = Path("posters") / m / case / f"{video_stem(pi, seed)}.jpg"
                if _poster(src, out / p_rel):
                    poster = f' poster="{_url(p_rel)}"'
            cells.append(f'<td><video src="{_url(dst_rel)}"{poster} controls loop muted playsinline preload="none" '
                         f'title="{_e(m)} · {_e(prompt)}"></video>{_scores_html(rec)}</td>')
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table></section>")
    return "\n".join(parts)


def build_report(runs: Path, out: Path, *, n_boot: int = 1000, seed: int = 0, posters: bool = True,
                 log: Callable[[str], None] | None = None) -> Path:
    """Write the report of ``runs`` into ``out`` and return the path of ``index.html``.

    Record files that cannot be read (truncated, emptied) are skipped: the page says so under its
    header and under every table (:func:`benchmark.store.unreadable_note`), and so does ``log``.

    Raises:
        FileNotFoundError: ``runs`` is not a folder or holds no readable record.
    """
    runs, out = Path(runs), Path(out)
    if not runs.is_dir():
        raise FileNotFoundError(f"no runs folder at {runs}")
    records = load_records(runs)
    skipped = unreadable_note(records)
    if records.empty:
        raise FileNotFoundError(f"no {'readable ' if skipped else ''}records under {runs} "
                                f"(expected {runs}/<method>/<case>/records/*.json{'; ' + skipped if skipped else ''})")
    if skipped and log is not None:
        log(skipped)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(records, n_boot=n_boot, seed=seed)
    agg.to_csv(out / "table1.csv", index=False)
    records.to_csv(out / "records.csv", index=False)
    plots = make_plots(runs, out / "plots", records=records, agg=agg)

    methods = _method_order(sorted(records["method"].dropna().unique()))
    ok = int(records["status"].eq("ok").sum())
    missing = int(records["status"].eq("missing").sum())
    body = ["<h1>dualbench report</h1>",
            f'<p class="meta">runs: <code>{_e(runs.resolve())}</code> · {ok} videos ok, '
            f"{len(records) - ok - missing} failed" + (f", {missing} missing" if missing else "")
            + f" · {_n(len(methods), 'method')} · "
            f"{_n(records['case'].nunique(), 'case')} · generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · "
            f'<a href="table1.csv">table1.csv</a> · <a href="records.csv">records.csv</a></p>']
    if skipped:
        body.append(f'<p class="warning">{_e(skipped)}</p>')
    if agg["random_weights"].any():
        body.append(f'<p class="warning">{_e(RANDOM_NOTE)}: '
                    f"{_e(', '.join(agg.loc[agg['random_weights'], 'method']))}.</p>")
    body.append('<h2 id="tables">Tables</h2>')
    for t in (1, 2, 3):  # Table 1 always (as `dualbench table`); 2 and 3 when an ablation variant ran
        if t == 1 or any(m != "dualreal" for m, _ in table_rows(agg["method"], t)):
            body.append('<div class="scroll">' + render_html(build_table(agg, table=t, paper=True, n_boot=n_boot, seed=seed,
                                                                        extra_notes=[skipped] if skipped else [])) + "</div>")

    body.append('<h2 id="plots">Plots</h2>')
    captions = {"metrics": "Metrics per method (95 % bootstrap interval over cases)",
                "dd_vs_ref": "Dynamic degree per motion: reference clips vs generated videos",
                "controller": "StageBlender identity weight per block group vs denoising step (paper Fig. 7)"}
    figures = 0
    for kind, files in plots.items():
        for png in [f for f in files if f.suffix == ".png"]:
            rel = png.relative_to(out)
            svg = rel.with_suffix(".svg")
            body.append(f'<figure><img src="{_url(rel)}" alt="{_e(captions[kind])}">'
                        f'<figcaption>{_e(captions[kind])} — {_e(png.stem)} '
                        f'(<a href="{_url(svg)}">SVG</a>)</figcaption></figure>')
            figures += 1
    if not figures:
        body.append('<p class="note">No plots (no scored videos).</p>')

    body.append('<h2 id="videos">Videos</h2>')
    cases = sorted(records["case"].dropna().unique(), key=str)
    body.append('<nav class="cases">' + "".join(f'<a href="#case-{_e(quote(c))}">{_e(c)}</a>' for c in cases) + "</nav>")
    for case in cases:
        recs = records[records["case"] == case]
        section = _case_section(case, recs, [m for m in methods if m in set(recs["method"])], runs, out, posters)
        body.append(f'<div class="scroll">{section}</div>')

    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>dualbench report — {_e(runs.name)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
