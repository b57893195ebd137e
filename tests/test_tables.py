"""benchmark.tables: aggregation, bootstrap intervals, best/second marks, golden Table 1–3 output, CLI.

Golden files (tests/golden/) are produced from :func:`write_golden_runs` by this module; after an
intended change of the output, regenerate them with

    DUALBENCH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_tables.py -k golden

and review the diff.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from benchmark.cli import app, table_
from benchmark.metrics import metric_columns
from benchmark.store import load_records, unreadable_note, write_record
from benchmark.tables import (
    RANDOM_NOTE,
    aggregate,
    aggregate_columns,
    bootstrap_ci,
    build_table,
    load_paper_table,
    rank_marks,
    render,
    render_table,
    table_rows,
)

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DUALBENCH_UPDATE_GOLDEN") == "1"


def record(method: str, case: str, prompt_index: int, seed: int = 42, **values) -> dict:
    """A record as the run loop writes it (fields of docs/ARCHITECTURE.md), with ``values`` on top."""
    identity, _, motion = case.partition("__")
    rec = {
        "method": method, "case": case, "identity": identity, "motion": motion,
        "prompt": f"{identity} * is doing {motion} (prompt {prompt_index})", "prompt_index": prompt_index,
        "seed": seed, "video": f"{method}/{case}/videos/p{prompt_index:03d}_s{seed}.mp4",
        "status": "ok", "error": None, "fit_seconds": 10.0, "generate_seconds": 2.0, "score_seconds": 1.0,
        "num_frames": 9, "height": 32, "width": 48, "fps": 8, "num_inference_steps": 4, "guidance_scale": 6.0,
        "backbone": "tiny", "backbone_random_weights": False, "metric_random_weights": False,
        "random_weights": False, "config_hash": "abc", "version": "0.1.0", "decoder": "pyav",
        "created_at": "2025-01-01T00:00:00Z",
    }
    rec.update(values)
    return rec


# ------------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------------


def test_aggregate_averages_per_case_then_over_cases(tmp_path):
    runs = tmp_path / "runs"
    # method "a": case c1 has 3 videos, c2 has 1 — the per-case mean weighs c2 like c1.
    for i, (ct, dino) in enumerate([(0.1, 0.5), (0.2, None), (0.3, 0.7)]):
        write_record(runs, record("a", "x__c1", i, clip_t=ct, dino_i=dino, dynamic_degree=10.0 + i,
                                  dynamic_degree_ref=12.0, dynamic_degree_delta=-2.0 + i, fit_seconds=30.0))
    write_record(runs, record("a", "y__c2", 0, clip_t=0.6, dino_i=0.1, dynamic_degree=20.0,
                              dynamic_degree_ref=8.0, dynamic_degree_delta=12.0, fit_seconds=10.0))
    # a failed record counts as failed only, never in the means
    write_record(runs, record("a", "y__c2", 1, status="failed", error="boom", clip_t=0.99))
    write_record(runs, record("b", "x__c1", 0, clip_t=0.25, metric_random_weights=True))

    agg = aggregate(load_records(runs), n_boot=0).set_index("method")
    a = agg.loc["a"]
    assert a["videos"] == 4 and a["cases"] == 2 and a["failed"] == 1
    assert a["clip_t"] == pytest.approx((0.2 + 0.6) / 2)  # not the mean over videos, 0.3
    assert a["dino_i"] == pytest.approx(((0.5 + 0.7) / 2 + 0.1) / 2)  # the missing value is skipped in c1 only
    assert a["dynamic_degree"] == pytest.approx((11.0 + 20.0) / 2)
    assert a["dynamic_degree_delta"] == pytest.approx((-1.0 + 12.0) / 2)
    assert a["dynamic_degree_ref"] == pytest.approx((12.0 + 8.0) / 2)
    assert a["fit_seconds"] == pytest.approx((30.0 * 3 + 10.0) / 4)  # timings: mean over ok videos
    assert math.isnan(a["temporal_consistency"])  # never scored → NaN
    assert not a["random_weights"]
    assert agg.loc["b", "random_weights"]  # metric_random_weights alone marks the row
    assert agg.loc["b", "videos"] == 1 and agg.loc["b", "failed"] == 0


def test_aggregate_missing_metric_columns_give_nan():
    df = pd.DataFrame({"method": ["m", "m"], "case": ["c1", "c2"], "status": ["ok", "ok"], "clip_t": [0.3, 0.4]})
    agg = aggregate(df, n_boot=50)
    assert list(agg.columns) == aggregate_columns()
    assert agg.loc[0, "clip_t"] == pytest.approx(0.35)
    for m in metric_columns()[1:]:
        assert math.isnan(agg.loc[0, m]) and math.isnan(agg.loc[0, f"{m}_ci_low"])
    md = render(build_table(agg, table=1), "markdown")
    assert "| m | **0.350 ±0.050** | – |" in md  # a lone value is best; missing cells read "–"


def test_aggregate_needs_method_and_case():
    with pytest.raises(ValueError, match="records need a 'case' column"):
        aggregate(pd.DataFrame({"method": ["m"]}))


def test_method_with_only_failed_records_is_listed():
    df = pd.DataFrame([record("m", "a__b", 0, status="failed", error="oom", clip_t=None)])
    agg = aggregate(df)
    assert agg.loc[0, "videos"] == 0 and agg.loc[0, "failed"] == 1 and math.isnan(agg.loc[0, "clip_t"])


# ------------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------------


def _bootstrap_by_hand(case_means: list[float], n_boot: int, seed: int) -> tuple[float, float]:
    """The documented procedure, written independently with a plain loop."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(case_means), size=(n_boot, len(case_means)))
    values = np.array(case_means)
    boot = [values[row].mean() for row in draws]
    return tuple(np.percentile(boot, [2.5, 97.5]))


def test_bootstrap_matches_independent_numpy():
    rng = np.random.default_rng(3)
    rows = []
    by_case: dict[str, list[float]] = {}
    for c in range(7):
        for p in range(1 + c % 3):  # 1–3 videos per case
            v = float(rng.normal(0.3 + 0.02 * c, 0.01))
            by_case.setdefault(f"case{c}", []).append(v)
            rows.append(record("m", f"case{c}", p, clip_t=v))
    agg = aggregate(pd.DataFrame(rows), n_boot=500, seed=7)
    case_means = [float(np.mean(by_case[k])) for k in sorted(by_case)]
    low, high = _bootstrap_by_hand(case_means, 500, 7)
    assert agg.loc[0, "clip_t_ci_low"] == pytest.approx(low, abs=1e-12)
    assert agg.loc[0, "clip_t_ci_high"] == pytest.approx(high, abs=1e-12)
    assert low < agg.loc[0, "clip_t"] < high
    again = aggregate(pd.DataFrame(rows), n_boot=500, seed=7)
    other = aggregate(pd.DataFrame(rows), n_boot=500, seed=8)
    assert again.loc[0, "clip_t_ci_low"] == agg.loc[0, "clip_t_ci_low"]
    assert other.loc[0, "clip_t_ci_low"] != agg.loc[0, "clip_t_ci_low"]


def test_bootstrap_width_is_statistically_right():
    """200 cases from N(0, 1): the 95 % interval of the mean is about ±1.96/√200."""
    values = np.random.default_rng(11).normal(0.0, 1.0, size=(200, 1))
    low, high = bootstrap_ci(values, n_boot=4000, seed=0)
    half = (high[0] - low[0]) / 2
    expected = 1.96 * values.std(ddof=1) / math.sqrt(200)
    assert half == pytest.approx(expected, rel=0.1)
    assert low[0] < values.mean() < high[0]


def test_bootstrap_one_case_has_no_interval_and_methods_are_independent():
    low, high = bootstrap_ci(np.array([[0.5, 1.0]]), n_boot=100, seed=0)
    assert np.isnan(low).all() and np.isnan(high).all()
    base = [record("m", f"c{i}", 0, clip_t=0.1 * i) for i in range(5)]
    more = base + [record("z", f"c{i}", 0, clip_t=0.3) for i in range(9)]
    a = aggregate(pd.DataFrame(base), n_boot=300).set_index("method")
    b = aggregate(pd.DataFrame(more), n_boot=300).set_index("method")
    assert a.loc["m", "clip_t_ci_low"] == b.loc["m", "clip_t_ci_low"]


# ------------------------------------------------------------------------------------------------
# Best / second marks
# ------------------------------------------------------------------------------------------------


def test_rank_marks_dense_with_ties():
    assert rank_marks([0.5, 0.5, 0.4, 0.3]) == ["best", "best", "second", None]
    assert rank_marks([0.3, 0.5, 0.4, 0.4]) == [None, "best", "second", "second"]
    assert rank_marks([0.2, float("nan"), None, 0.1]) == ["best", None, None, "second"]
    assert rank_marks([0.7]) == ["best"]
    assert rank_marks([0.2, 0.2]) == ["best", "best"]
    assert rank_marks([1.0, 2.0, 3.0], higher_is_better=False) == ["best", "second", None]


def test_rank_marks_ties_on_displayed_values():
    assert rank_marks([0.3231, 0.3229, 0.31], decimals=3) == ["best", "best", "second"]
    assert rank_marks([0.3231, 0.3229, 0.31]) == ["best", "second", None]


def test_rank_marks_smallest_abs_delta_is_best():
    deltas = [2.94, -1.07, 13.32, -3.18]
    assert rank_marks(deltas, higher_is_better=False, decimals=2, by_abs=True) == ["second", "best", None, None]
    assert rank_marks([1.0, -1.0, 0.5], higher_is_better=False, by_abs=True) == ["second", "second", "best"]


def test_paper_table1_marks_follow_the_rule():
    """The paper's own Table 1, marked by our rule (ties: LoRA = DualReal on CLIP-T, MB = LoRA on MS)."""
    spec = build_table(aggregate(pd.DataFrame([record("dualreal", "a__b", 0, clip_t=0.3)])), table=1, paper=True)
    paper = {r.labels[0]: [c.mark for c in r.cells] for r in spec.groups[1].rows}
    # columns: CLIP-T, CLIP-I, DINO-I, T.Flickering, T.Cons, Motion Smoothness, Dynamic Degree
    assert paper["DualReal (paper)"] == ["second", "best", "best", "best", "best", "best", "second"]
    assert paper["CogVideoX-5B (paper)"] == ["best", None, None, None, None, None, None]
    assert paper["LoRA (paper)"] == ["second", None, None, None, "second", "second", None]
    assert paper["MotionBooth (paper)"] == [None, "second", "second", "second", None, "second", "best"]
    assert paper["DreamVideo (paper)"] == [None] * 7


# ------------------------------------------------------------------------------------------------
# Paper data files
# ------------------------------------------------------------------------------------------------


def test_paper_tables_transcribed_consistently():
    t1 = load_paper_table(1).set_index("method")
    assert list(t1.index) == ["motionbooth", "lora", "cogvideox", "dreamvideo", "dualreal"]
    assert (t1["cases"] == 50).all()
    np.testing.assert_allclose(t1["dynamic_degree"] - 12.02, t1["dynamic_degree_delta"], atol=0.006)
    base = t1.drop(index="dualreal")
    gain = lambda m: (t1.loc["dualreal", m] - base[m].mean()) / t1.loc["dualreal", m]  # noqa: E731
    assert gain("clip_i") == pytest.approx(0.217, abs=5e-4)  # the abstract's +21.7 %
    assert gain("dino_i") == pytest.approx(0.318, abs=5e-4)  # and +31.8 %
    t2, t3 = load_paper_table(2), load_paper_table(3)
    assert list(t2["method"]) == ["dualreal-no-joint", "dualreal-no-controller", "dualreal"]
    assert list(t3["groups"]) == [1, 2, 42, 7]
    both = pd.concat([t2, t3]).drop_duplicates("method").set_index("method")
    off = (both["dynamic_degree"] - 9.04 - both["dynamic_degree_delta"]).abs() > 0.006
    # the two rows the paper prints inconsistently (results/README.md), kept as printed
    assert sorted(both.index[off]) == ["dualreal-groups-1", "dualreal-no-controller"]
    full2 = t2.set_index("method").loc["dualreal", ["clip_t", "clip_i", "dino_i", "dynamic_degree"]]
    full3 = t3.set_index("method").loc["dualreal", ["clip_t", "clip_i", "dino_i", "dynamic_degree"]]
    pd.testing.assert_series_equal(full2, full3)


def test_table_rows_assignment():
    methods = ["dualreal", "lora", "cogvideox", "zeta", "dualreal-no-joint", "dualreal-groups-42",
               "dualreal-groups-2", "dualreal-no-mask", "motionbooth", "dualreal-no-controller"]
    assert [m for m, _ in table_rows(methods, 1)] == ["motionbooth", "lora", "cogvideox", "zeta", "dualreal"]
    assert [m for m, _ in table_rows(methods, 2)] == ["dualreal-no-joint", "dualreal-no-controller",
                                                     "dualreal-no-mask", "dualreal"]
    assert table_rows(methods, 3) == [("dualreal-groups-2", "n = 2"), ("dualreal-groups-42", "n = 42"),
                                      ("dualreal", "full (n = 7)")]


# ------------------------------------------------------------------------------------------------
# Golden output
# ------------------------------------------------------------------------------------------------

#: (method, clip_t, clip_i, dino_i, t_cons, t_flick, m_smooth, dd offset vs the reference, random)
GOLDEN_METHODS = [
    ("cogvideox", 0.3360, 0.520, 0.420, 0.973, 0.947, 0.965, 14.0, True),
    ("lora", 0.3231, 0.430, 0.290, 0.976, 0.956, 0.973, 13.0, False),
    ("dualreal", 0.3229, 0.630, 0.550, 0.983, 0.965, 0.978, 3.0, False),
    ("motionbooth", 0.3170, 0.560, 0.460, 0.972, 0.962, 0.973, -1.0, False),
    ("dualreal-no-joint", 0.334, 0.616, 0.647, 0.97, 0.95, 0.97, -5.5, False),
    ("dualreal-no-controller", 0.346, 0.619, 0.652, 0.97, 0.95, 0.97, -3.3, False),
    ("dualreal-groups-1", 0.335, 0.662, 0.766, 0.97, 0.95, 0.97, -3.1, False),
    ("dualreal-groups-42", 0.336, 0.631, 0.706, 0.97, 0.95, 0.97, 2.8, False),
]
#: case → (videos, metric offset, DD of the motion reference)
GOLDEN_CASES = {"dog__Biking": (3, 0.010, 12.0), "cat__Surfing": (2, -0.012, 9.0), "teapot__TaiChi": (1, 0.002, 6.0)}


def write_golden_runs(runs: Path) -> Path:
    """A fixed runs folder: 8 methods × 3 cases with 3, 2 and 1 videos; cogvideox with random weights."""
    for method, ct, ci, di, tc, tf, ms, dd_off, rnd in GOLDEN_METHODS:
        for case, (n, off, ref) in GOLDEN_CASES.items():
            for p in range(n):
                jitter = 0.002 * (p - (n - 1) / 2)
                dd = ref + dd_off + 2 * off * 100 + jitter * 100
                write_record(runs, record(
                    method, case, p, clip_t=ct + off + jitter, clip_i=ci + off, dino_i=di + off - jitter,
                    temporal_consistency=tc + off / 10, temporal_flickering=tf + off / 10,
                    motion_smoothness=ms + off / 10, dynamic_degree=dd, dynamic_degree_ref=ref,
                    dynamic_degree_delta=dd - ref, random_weights=rnd, backbone_random_weights=rnd))
    return runs


GOLDEN_CASES_LIST = [
    ("table1.md", 1, "markdown", False),
    ("table1_paper.md", 1, "markdown", True),
    ("table1.tex", 1, "latex", False),
    ("table2_paper.md", 2, "markdown", True),
    ("table3.tex", 3, "latex", False),
]


@pytest.mark.parametrize("name,table,fmt,paper", GOLDEN_CASES_LIST)
def test_golden_output(tmp_path, name, table, fmt, paper):
    records = load_records(write_golden_runs(tmp_path / "runs"))
    text = render_table(records, table=table, format=fmt, paper=paper, n_boot=200, seed=0)
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with DUALBENCH_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"output differs from {path} (see this module's docstring)"


def test_golden_content_has_the_promised_marks(tmp_path):
    """What the golden files must show, independent of their exact text."""
    records = load_records(write_golden_runs(tmp_path / "runs"))
    md = render_table(records, table=1, format="markdown", n_boot=200)
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "**0.336" in rows["cogvideox †"]  # best CLIP-T
    assert "<u>0.323" in rows["lora"] and "<u>0.323" in rows["dualreal"]  # 0.3231 vs 0.3229: tied second
    assert "**8.00 (-1.00" in rows["motionbooth"]  # smallest |Δ| wins though DD is not the largest
    assert RANDOM_NOTE in md and "† |" not in rows["lora"]
    assert "dualreal-no-joint" not in md  # ablation variants stay out of Table 1
    tex = render_table(records, table=1, format="latex", n_boot=200)
    assert r"\textbf{0.336" in tex and r"\underline{0.323" in tex and r"$^\dagger$" in tex
    assert r"\multicolumn{10}{l}{\footnotesize $^\dagger$ computed with random weights" in tex


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------


def test_table_command_empty_or_missing_runs_fails(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["table", "--runs", str(tmp_path / "empty")])
    assert res.exit_code == 1
    assert "no records under" in res.output
    res = runner.invoke(app, ["table", "--runs", str(tmp_path / "nowhere")])
    assert res.exit_code == 1 and "no runs folder" in res.output


def test_table_command_formats_and_out(tmp_path):
    runs = write_golden_runs(tmp_path / "runs")
    runner = CliRunner()
    res = runner.invoke(app, ["table", "--runs", str(runs), "--paper", "--format", "markdown"])
    assert res.exit_code == 0, res.output
    assert "DualReal (paper)" in res.output and "| dualreal |" in res.output
    out = tmp_path / "t.csv"
    res = runner.invoke(app, ["table", "--runs", str(runs), "--format", "csv", "--out", str(out)])
    assert res.exit_code == 0, res.output
    header = out.read_text().splitlines()[0].split(",")
    n = 3 + len(metric_columns())
    assert header[:n] == ["method", "videos", "cases", *metric_columns()]
    assert header[n:n + 2] == ["clip_t_ci_low", "clip_t_ci_high"]
    assert {"fit_seconds", "generate_seconds", "score_seconds", "random_weights"} <= set(header)
    csv = pd.read_csv(out)
    assert list(csv["method"]) == ["motionbooth", "lora", "cogvideox", "dualreal"]
    res = runner.invoke(app, ["table", "--runs", str(runs), "--table", "3", "--format", "latex"])
    assert res.exit_code == 0 and "n = 42" in res.output and r"\toprule" in res.output
    res = runner.invoke(app, ["table", "--runs", str(runs)])  # rich, to the terminal
    assert res.exit_code == 0 and "Table 1" in res.output and "dualreal" in res.output


def test_unreadable_records_are_skipped_and_named(tmp_path):
    """A truncated and an emptied record file: the readable records make the table (exit 0), the
    bad ones are counted and named with their cause under it (docs/BAD_INPUT.md)."""
    runs = tmp_path / "runs"
    write_record(runs, record("dualreal", "a__b", 0, clip_t=0.3))
    truncated = write_record(runs, record("dualreal", "a__b", 1, clip_t=0.9))
    truncated.write_bytes(truncated.read_bytes()[:50])
    emptied = write_record(runs, record("lora", "a__b", 0, clip_t=0.9))
    emptied.write_bytes(b"")

    records = load_records(runs)
    assert list(records["clip_t"]) == [0.3]
    note = unreadable_note(records)
    assert note.startswith("2 unreadable records skipped: ")
    assert f"{emptied} (empty file (0 bytes))" in note and f"{truncated} (JSONDecodeError: " in note

    runner = CliRunner()
    for args in ([], ["--format", "markdown"]):
        res = runner.invoke(app, ["table", "--runs", str(runs), "--n-boot", "0", *args])
        assert res.exit_code == 0, res.output
        flat = " ".join(res.output.split())  # the rich caption wraps
        assert "2 unreadable records skipped:" in flat and "empty file (0 bytes)" in flat
        assert "0.300" in res.output and "lora" not in res.output.replace(str(emptied), "")
    res = runner.invoke(app, ["table", "--runs", str(runs), "--format", "csv", "--n-boot", "0"])
    assert res.exit_code == 0 and "note: 2 unreadable records skipped" in res.stderr
    assert "unreadable" not in res.stdout and res.stdout.startswith("method,")

    truncated.unlink()
    (runs / "dualreal" / "a__b" / "records" / "p000_s42.json").write_text("[]")
    res = runner.invoke(app, ["table", "--runs", str(runs)])
    assert res.exit_code == 1 and "no readable records under" in res.output and "a JSON list, not an object" in res.output


def test_table_command_ablation_without_runs_fails(tmp_path):
    runs = tmp_path / "runs"
    write_record(runs, record("cogvideox", "a__b", 0, clip_t=0.3))
    res = CliRunner().invoke(app, ["table", "--runs", str(runs), "--table", "2"])
    assert res.exit_code == 1 and "Table 2 needs runs of" in res.output and "cogvideox" in res.output


def test_option_help_texts_end_with_examples():
    from typing import get_args, get_type_hints

    for name, hint in get_type_hints(table_, include_extras=True).items():
        if name == "return":
            continue
        info = get_args(hint)[1]
        assert "Example" in info.help, f"--{name} help has no example"
    assert "Examples:" in table_.__doc__


# ------------------------------------------------------------------------------------------------
# Training budgets
# ------------------------------------------------------------------------------------------------


def _run(name, steps, image_steps, clip_steps, images, clips, lr, params):
    return {"name": name, "steps": steps, "image_steps": image_steps, "clip_steps": clip_steps,
            "images_per_step": images, "clips_per_step": clips, "learning_rate": lr, "trainable_parameters": params}


def test_budget_footnote_lists_each_methods_runs(tmp_path):
    from benchmark.tables import budget_text

    dv = [_run("identity", 1000, 1000.0, 0.0, 4, 0, 1e-5, 396_595_200), _run("motion", 1000, 0.0, 1000.0, 0, 2, 1e-5, 1_057_640_448)]
    runs = tmp_path / "runs"
    for i, (case, images) in enumerate([("a__x", 10), ("b__y", 5)]):  # MotionBooth's images per step depend on the case
        mb = [_run("subject+video", 300, 300.0, 300.0, images, 1, 5e-6, 1_585_446_912)]
        write_record(runs, record("motionbooth", case, 0, clip_t=0.3, training_budget=mb))
        write_record(runs, record("dreamvideo", case, 0, clip_t=0.3, training_budget=dv))
        write_record(runs, record("dualreal", case, 0, clip_t=0.3, training_budget=[
            _run("joint", 1000, 500.0, 500.0, 1, 3, 1e-3, 335_614_983)]))
        write_record(runs, record("cogvideox", case, 0, clip_t=0.3, training_budget=[]))
        write_record(runs, record("lora", case, 0, clip_t=0.3))  # a record of the previous version: no budget
    assert budget_text([dv, dv]) == ("identity 1000 steps × 4 images (lr 1e-5, 396.6 M params); "
                                     "motion 1000 steps × 2 clips (lr 1e-5, 1.06 B params)")
    md = render_table(load_records(runs), format="markdown", n_boot=0)
    notes = md.split("\n\n")[-1]
    assert "Training budget per run: optimiser steps × data per step (learning rate, trainable parameters)." in notes
    assert "motionbooth: subject+video 300 steps × (5–10 images + 1 clip) (lr 5e-6, 1.59 B params)" in notes
    assert "dualreal: joint 1000 steps: 500 × 1 image, 500 × 3 clips (lr 0.001, 335.6 M params)" in notes
    assert "cogvideox: no training" in notes and "lora: not recorded" in notes
    assert "dreamvideo: identity 1000 steps × 4 images" in render_table(load_records(runs), format="latex", n_boot=0)
    agg = aggregate(load_records(runs), n_boot=0).set_index("method")
    assert agg.loc["cogvideox", "training_budget"] == "no training" and pd.isna(agg.loc["lora", "training_budget"])
