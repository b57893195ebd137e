"""benchmark.plots: controller traces (schema, averaging), metric bars with CIs, DD per motion."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.plots import (
    bar_metrics,
    dd_by_motion,
    load_controller_traces,
    plot_controller_traces,
    plot_dd_vs_ref,
    plot_metric_bars,
    read_controller_trace,
)
from benchmark.store import load_records, write_json, write_record
from benchmark.tables import aggregate


def write_trace(runs: Path, method: str, case: str, stem: str, w_id, timesteps=None, w_mo=None, **extra) -> Path:
    steps = len(w_id)
    trace = {"timesteps": timesteps if timesteps is not None else list(np.linspace(999, 0, steps).round())}
    trace["w_id"] = w_id
    if w_mo is not None:
        trace["w_mo"] = w_mo
    return write_json(runs / method / case / "videos" / f"{stem}.json", {"controller_trace": trace, **extra})


def assert_image(path: Path, min_colours: int = 8) -> None:
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert img.std() > 5, f"{path} looks blank"
    assert len(np.unique(img.reshape(-1, 3), axis=0)) >= min_colours, f"{path} has too few colours"


def assert_svg(path: Path) -> None:
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")


def test_traces_are_averaged_per_step_and_group(tmp_path):
    runs = tmp_path / "runs"
    a = [[0.1, 0.1], [0.12, 0.08], [0.15, 0.05]]
    b = [[0.1, 0.1], [0.14, 0.06], [0.17, 0.01]]
    write_trace(runs, "dualreal", "dog__Biking", "p000_s42", a, w_mo=[[0.2 - x for x in r] for r in a])
    write_trace(runs, "dualreal", "cat__Surfing", "p001_s42", b)
    write_trace(runs, "dualreal", "cat__Surfing", "p002_s42", [[0.1] * 3] * 3)  # other shape: left out
    write_json(runs / "cogvideox" / "dog__Biking" / "videos" / "p000_s42.json", {"note": "no controller"})
    with pytest.warns(UserWarning, match="1 controller trace"):
        traces = load_controller_traces(runs)
    assert list(traces) == ["dualreal"]
    tr = traces["dualreal"]
    np.testing.assert_allclose(tr.w_id_mean, (np.array(a) + np.array(b)) / 2)
    np.testing.assert_allclose(tr.w_id_std, np.abs(np.array(a) - np.array(b)) / 2)
    np.testing.assert_allclose(tr.w_mo_mean, 0.2 - np.array(a))  # only the trace that has w_mo
    np.testing.assert_allclose(tr.timesteps, [999, 500, 0])  # linspace(999, 0, 3) rounded
    assert tr.videos == 2 and tr.skipped == 1


@pytest.mark.parametrize("trace,message", [
    ({"timesteps": [999, 500], "w_id": [[0.1, 0.1]]}, "has 1 rows but there are 2 timesteps"),
    ({"timesteps": [999], "w_id": [[0.1, "x"]]}, "holds non-numbers"),
    ({"timesteps": [999, 1], "w_id": [[0.1, 0.1], [0.1]]}, "different group counts"),
    ({"timesteps": [], "w_id": []}, "timesteps must be a non-empty list"),
    ({"w_id": [[0.1]]}, "timesteps must be a non-empty list"),
    ({"timesteps": [999], "w_id": [[0.1]], "w_mo": [[0.1, 0.2]]}, "w_mo has shape"),
    ([1, 2], "must be an object"),
])
def test_bad_traces_name_the_file(tmp_path, trace, message):
    path = write_json(tmp_path / "m" / "c" / "videos" / "p000_s42.json", {"controller_trace": trace})
    with pytest.raises(ValueError, match=message) as err:
        read_controller_trace(path)
    assert str(path) in str(err.value)


def test_trace_nan_is_rejected(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"controller_trace": {"timesteps": [1], "w_id": [[NaN]]}}')
    with pytest.raises(ValueError, match="NaN or infinite"):
        read_controller_trace(path)
    assert read_controller_trace(write_json(tmp_path / "x.json", {"other": 1})) is None


def test_controller_plot_files_and_reproducible_svg(tmp_path):
    runs = tmp_path / "runs"
    steps = np.arange(10)
    for g_count, method in [(7, "dualreal"), (42, "dualreal-groups-42")]:
        w = [[0.1 + 0.004 * s * (1 if g < g_count - 1 else -1) for g in range(g_count)] for s in steps]
        write_trace(runs, method, "dog__Biking", "p000_s42", w)
        write_trace(runs, method, "dog__Biking", "p001_s42", [[v * 0.9 for v in r] for r in w])
    files = plot_controller_traces(runs, tmp_path / "plots")
    names = sorted(f.name for f in files)
    assert names == ["controller_dualreal-groups-42.png", "controller_dualreal-groups-42.svg",
                     "controller_dualreal.png", "controller_dualreal.svg"]
    for f in files:
        assert_image(f) if f.suffix == ".png" else assert_svg(f)
    first = (tmp_path / "plots" / "controller_dualreal.svg").read_bytes()
    plot_controller_traces(runs, tmp_path / "plots")
    assert (tmp_path / "plots" / "controller_dualreal.svg").read_bytes() == first
    assert plot_controller_traces(tmp_path / "nothing", tmp_path / "p2") == []


def _records(tmp_path: Path) -> pd.DataFrame:
    runs = tmp_path / "runs"
    for method, base, rnd in [("cogvideox", 0.30, True), ("dualreal", 0.33, False)]:
        for case, motion_ref in [("dog__Biking", 12.0), ("cat__Biking", 12.0), ("teapot__TaiChi", 4.0)]:
            for p in range(2):
                dd = motion_ref + (5.0 if method == "cogvideox" else 1.0) + p
                write_record(runs, {
                    "method": method, "case": case, "identity": case.split("__")[0], "motion": case.split("__")[1],
                    "prompt_index": p, "seed": 42, "status": "ok", "random_weights": rnd,
                    "clip_t": base + 0.01 * p, "clip_i": base + 0.2, "dino_i": base + 0.1,
                    "temporal_consistency": 0.97, "temporal_flickering": 0.95, "motion_smoothness": None,
                    "dynamic_degree": dd, "dynamic_degree_ref": motion_ref, "dynamic_degree_delta": dd - motion_ref})
    return load_records(runs)


def test_metric_bars_with_intervals_and_missing_metric(tmp_path):
    agg = aggregate(_records(tmp_path), n_boot=200)
    files = plot_metric_bars(agg, tmp_path / "plots")
    assert [f.name for f in files] == ["metrics.png", "metrics.svg"]
    assert_image(files[0])
    assert_svg(files[1])
    assert plot_metric_bars(agg.iloc[0:0], tmp_path / "none") == []


def test_dd_by_motion_by_hand_and_plot(tmp_path):
    records = _records(tmp_path)
    table = dd_by_motion(records)
    assert list(table.columns) == ["reference", "cogvideox", "dualreal"]
    assert list(table.index) == ["Biking", "TaiChi"]
    assert table.loc["Biking", "reference"] == pytest.approx(12.0)
    assert table.loc["Biking", "cogvideox"] == pytest.approx(12.0 + 5.0 + 0.5)  # mean of p = 0, 1
    assert table.loc["TaiChi", "dualreal"] == pytest.approx(4.0 + 1.0 + 0.5)
    files = plot_dd_vs_ref(records, tmp_path / "plots")
    assert [f.name for f in files] == ["dd_vs_ref.png", "dd_vs_ref.svg"]
    assert_image(files[0])
    no_dd = records.assign(dynamic_degree=np.nan)
    assert plot_dd_vs_ref(no_dd, tmp_path / "none") == []


def test_plots_command_makes_every_plot(tmp_path):
    """`dualbench plots` through the real command line: every figure, one line per file."""
    _records(tmp_path)
    write_trace(tmp_path / "runs", "dualreal", "dog__Biking", "p000_s42", [[0.1, 0.1]] * 4)
    res = CliRunner().invoke(app, ["plots", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "cli")])
    assert res.exit_code == 0, res.output
    made = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert made == ["controller_dualreal.png", "controller_dualreal.svg", "dd_vs_ref.png", "dd_vs_ref.svg",
                    "metrics.png", "metrics.svg"]
    assert sorted(res.output.splitlines()) == sorted(
        f"{kind}: {tmp_path / 'cli' / name}" for kind, name in [
            ("controller", "controller_dualreal.png"), ("controller", "controller_dualreal.svg"),
            ("dd_vs_ref", "dd_vs_ref.png"), ("dd_vs_ref", "dd_vs_ref.svg"), ("metrics", "metrics.png"), ("metrics", "metrics.svg")])
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["plots", "--runs", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no records" in res.output
    assert "plots" in CliRunner().invoke(app, ["--help"]).output


def test_metric_panels_follow_the_metric_table(tmp_path):
    """One panel per Table 1 metric, each deviation column right after its metric; titles are the
    records' labels (→ 0 for the deviation, which gets a zero line)."""
    assert bar_metrics() == ["clip_t", "clip_i", "dino_i", "temporal_flickering", "temporal_consistency",
                             "motion_smoothness", "dynamic_degree", "dynamic_degree_delta"]
    agg = aggregate(_records(tmp_path), n_boot=50)
    files = plot_metric_bars(agg, tmp_path / "plots")
    svg = files[1].read_text(encoding="utf-8")
    for title in ("CLIP-T", "T.Flickering", "Motion Smoothness", "Dynamic Degree", "DD Δ (→ 0)"):
        assert f">{title}<" in svg, title


def test_trace_with_guidance_branches_uses_the_conditional_one(tmp_path):
    """DualReal's pipeline writes w_id[step][branch][group] with the branch names."""
    import json

    from benchmark.plots import read_controller_trace

    path = tmp_path / "p000_s42.json"
    trace = {"timesteps": [999, 500], "branches": ["unconditional", "conditional"],
             "w_id": [[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]]}
    path.write_text(json.dumps({"controller_trace": trace}))
    out = read_controller_trace(path)
    assert out["w_id"].tolist() == [[0.3, 0.4], [0.7, 0.8]]
    trace["w_id"] = [[[0.1, 0.2]], [[0.5, 0.6]]]  # one branch missing
    path.write_text(json.dumps({"controller_trace": trace}))
    with pytest.raises(ValueError, match="one list per branch"):
        read_controller_trace(path)


def test_random_weights_are_marked_in_dd_and_controller_plots(tmp_path):
    """Every figure with a random-weights method says so: ``†`` beside its name and the note."""
    from benchmark.tables import RANDOM_NOTE

    records = _records(tmp_path)  # cogvideox random, dualreal not
    svg = next(f for f in plot_dd_vs_ref(records, tmp_path / "plots") if f.suffix == ".svg").read_text(encoding="utf-8")
    assert "cogvideox †" in svg and "dualreal †" not in svg and RANDOM_NOTE in svg
    runs = tmp_path / "traces"
    write_trace(runs, "dualreal", "dog__Biking", "p000_s42", [[0.1] * 7 for _ in range(4)])
    for random_methods, marked in ((frozenset({"dualreal"}), True), (frozenset(), False)):
        out = tmp_path / f"controller-{marked}"
        text = (out / "controller_dualreal.svg").read_text(encoding="utf-8") if plot_controller_traces(
            runs, out, random_methods=random_methods) else ""
        assert ("dualreal †" in text and RANDOM_NOTE in text) is marked
