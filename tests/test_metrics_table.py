"""The metric table: each record's compute entry feeds its formula the right inputs (checked against
independent numpy computations with fake encoders), the registry refuses bad records, and a metric
registered in one place is computed by `dualbench eval`, printed by `dualbench table` and listed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.media import read_video, write_video
from benchmark.metrics import (
    METRICS,
    Metric,
    MetricUndefined,
    default_metrics,
    metric_info,
    output_columns,
    register_metric,
    resolve_metrics,
    table_metrics,
)
from benchmark.scorer import Scorer
from benchmark.store import write_record


def _unit(x: torch.Tensor) -> np.ndarray:
    a = x.double().numpy()
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


class _Interpolator:
    def __call__(self, a, b):
        return (a + b) / 2


class _Tokens:
    """A text encoder's length check: one token per word plus start and end, context 77."""

    context_length = 77

    def token_count(self, text):
        return len(text.split()) + 2


class _MeanFlow:
    """u = mean(img2) - mean(img1) everywhere, v = 0: each pair's top-5 % magnitude is |Δ mean|."""

    def __call__(self, a, b):
        u = (b - a).mean(dim=(1, 2, 3))
        return torch.stack([u[:, None, None].expand(-1, *a.shape[-2:]), torch.zeros(a.shape[0], *a.shape[-2:])], dim=1)


class FakeInputs:
    """:class:`benchmark.metrics.MetricInputs` with distinct seeded embeddings per encoder, fake
    pairwise models, and a log of which encoder each request named."""

    def __init__(self, frames, fps=8.0, prompt="dog * playing guitar", n_refs=3, dd_ref=4.0):
        g = torch.Generator().manual_seed(0)
        self.frames, self.fps, self.prompt, self.dd_ref = frames, fps, prompt, dd_ref
        self.ref_images = [torch.zeros(8, 8, 3, dtype=torch.uint8)] * n_refs
        self.device, self.pair_batch_size, self.dd_pad_multiple = torch.device("cpu"), 2, 8
        encs = ("clip_openai", "clip_laion400m", "dino_vits16")
        self.frame_emb = {e: torch.randn(len(frames), 16, generator=g) for e in encs}
        self.ref_emb = {e: torch.randn(n_refs, 16, generator=g) for e in encs}
        self.text_emb = {e: torch.randn(1, 16, generator=g) for e in encs}
        self.used: list[str] = []
        self.texts: list[str] = []
        self.notes: list[str] = []
        self.values: dict[str, float] = {}
        self._shared: dict = {}

    def encoder(self, name):
        self.used.append(name)
        return {"amt_s": _Interpolator(), "raft_large": _MeanFlow(), "clip_openai": _Tokens()}[name]

    def frame_embeddings(self, encoder):
        self.used.append(encoder)
        return self.frame_emb[encoder]

    def ref_embeddings(self, encoder):
        self.used.append(encoder)
        return self.ref_emb[encoder]

    def text_embedding(self, encoder, text):
        self.used.append(encoder)
        self.texts.append(text)
        return self.text_emb[encoder]

    def shared(self, key, compute):
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def value(self, metric):
        return self.values[metric]

    def note(self, text):
        self.notes.append(text)


def test_each_compute_entry_feeds_its_formula_the_right_inputs():
    g = np.random.default_rng(1)
    n, h, w = 10, 24, 32  # multiples of 8 and 16: no padding, so the fake flow's magnitudes are exact
    frames = np.clip(g.integers(0, 200, (n, h, w, 3)) + 5 * np.arange(n)[:, None, None, None], 0, 255).astype(np.uint8)
    x = FakeInputs(torch.from_numpy(frames))
    f = frames.astype(np.float64)
    openai, laion, dino = (_unit(x.frame_emb[e]) for e in ("clip_openai", "clip_laion400m", "dino_vits16"))
    # kept frames 0, 2, …; midpoint of each kept pair in float32, truncated to uint8, against the odd frames
    kept = frames[0::2].astype(np.float32) / 255.0
    preds = [((kept[k] + kept[k + 1]) / 2 * 255.0).clip(0, 255).astype(np.uint8) for k in range(len(kept) - 1)]
    ms_mae = [np.abs(p.astype(int) - frames[2 * k + 1].astype(int)).mean() for k, p in enumerate(preds)]
    steps = np.abs(np.diff(f.mean(axis=(1, 2, 3))))
    expected = {
        "clip_t": (openai @ _unit(x.text_emb["clip_openai"]).T).mean(),
        "clip_i": (laion @ _unit(x.ref_emb["clip_laion400m"]).T).mean(),
        "dino_i": (dino @ _unit(x.ref_emb["dino_vits16"]).T).mean(),
        "temporal_flickering": (255 - np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3)).mean()) / 255,
        "temporal_consistency": (laion[:-1] * laion[1:]).sum(1).mean(),
        "motion_smoothness": (255 - np.mean(ms_mae)) / 255,
        "dynamic_degree": steps.mean(),
        "dynamic_degree_ref": 4.0,
        "dynamic_degree_delta": steps.mean() - 4.0,
        # VBench: dynamic if at least round(4·10/16) = 2 pairs move more than 6·24/256 px
        "dynamic_degree_vbench": float(sum(steps > 6 * 24 / 256) >= 2),
    }
    assert 0 < expected["dynamic_degree_vbench"]  # the ramp makes the video dynamic
    for name, value in expected.items():
        x.used.clear()
        got = METRICS[name].compute(x)
        x.values[name] = got
        assert got == pytest.approx(value, rel=1e-5, abs=1e-9), name
        assert set(x.used) <= set(METRICS[name].encoders), (name, x.used)  # declared encoders only
    assert x.texts == ["dog playing guitar"]  # CLIP-T embeds the cleaned prompt
    info = {col: fn(x) for col, fn in METRICS["dynamic_degree"].info.items()}
    assert info == {"dd_interval": 1, "dd_pad_multiple": 8}


def test_registry_refuses_bad_records(monkeypatch):
    monkeypatch.setattr("benchmark.metrics.METRICS", dict(METRICS))
    import benchmark.metrics as m

    def make(name="x", **kw):
        return Metric(name=name, label="X", description="x", unit="score", decimals=3, direction=kw.pop("direction", "higher"),
                      range=(0.0, 1.0), compute=lambda inputs: 0.0, **kw)

    with pytest.raises(ValueError, match="'clip_t' is already registered"):
        m.register_metric(make("clip_t"))
    with pytest.raises(ValueError, match="derived_from 'nope' is not a registered metric"):
        m.register_metric(make(derived_from="nope"))
    with pytest.raises(ValueError, match="derived_from 'dynamic_degree_ref' is not a registered metric"):
        m.register_metric(make(derived_from="dynamic_degree_ref"))
    with pytest.raises(ValueError, match="direction must be one of"):
        make(direction="up")
    with pytest.raises(ValueError, match="unknown required input"):
        make(requires=("caption",))
    with pytest.raises(KeyError, match="unknown metric 'fvd'"):
        metric_info("fvd")


def test_derived_columns_come_with_their_metric():
    assert output_columns(["temporal_flickering"]) == ["temporal_flickering"]
    assert output_columns(["dynamic_degree"]) == ["dynamic_degree", "dynamic_degree_ref", "dynamic_degree_delta"]
    assert resolve_metrics(None) == default_metrics()
    assert resolve_metrics(" dino_i ,clip_t,dino_i") == ["clip_t", "dino_i"]
    with pytest.raises(ValueError, match="no metric requested"):
        resolve_metrics("")


def test_a_compute_entry_cannot_use_an_undeclared_encoder(monkeypatch):
    sneaky = Metric(name="sneaky", label="Sneaky", description="uses CLIP without saying so", unit="cosine", decimals=3,
                    direction="higher", range=(-1.0, 1.0), compute=lambda x: float(x.frame_embeddings("clip_openai").mean()))
    monkeypatch.setitem(METRICS, "sneaky", sneaky)
    scorer = Scorer(["sneaky"], random_weights=True)
    with pytest.raises(KeyError, match="encoder 'clip_openai' is not declared"):
        scorer.score(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), 8.0)


# ------------------------------------------------------------------------------------------------
# One registration: eval computes it, table prints it, list shows it
# ------------------------------------------------------------------------------------------------


def _brightness(x) -> float:
    """Mean grey level of the video in [0, 1]; undefined for an all-black video."""
    value = float(x.frames.double().mean() / 255.0)
    if value == 0.0:
        raise MetricUndefined("an all-black video has no brightness")
    return value


@pytest.fixture
def brightness():
    metric = register_metric(Metric(
        name="brightness", label="Brightness", description="mean grey level / 255", unit="score", decimals=3,
        direction="higher", range=(0.0, 1.0), compute=_brightness, default=True, tables=(1,),
    ))
    yield metric
    del METRICS["brightness"]


def test_a_registered_metric_is_computed_by_eval_and_printed_by_table(brightness, tmp_path):
    assert "brightness" in default_metrics() and table_metrics(1)[-1] == "brightness"
    runner = CliRunner()
    videos = tmp_path / "videos"
    g = np.random.default_rng(0)
    for i, level in enumerate((60, 180)):
        frames = np.clip(g.integers(-20, 20, (3, 32, 48, 3)) + level, 0, 255).astype(np.uint8)
        write_video(videos / f"v{i}.mp4", torch.from_numpy(frames), fps=8)
    write_video(videos / "black.mp4", torch.zeros(3, 32, 48, 3, dtype=torch.uint8), fps=8)

    out = tmp_path / "rows.csv"
    res = runner.invoke(app, ["eval", str(videos), "--metrics", "temporal_flickering,brightness", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Brightness" in res.output and "black.mp4: brightness: an all-black video has no brightness" in res.output
    rows = pd.read_csv(out)
    assert list(rows.columns[:3]) == ["video", "temporal_flickering", "brightness"]
    rows.index = rows["video"].map(lambda v: Path(v).name)
    for name in ("v0.mp4", "v1.mp4"):  # the decoded video's mean grey level, computed here with numpy
        decoded, _ = read_video(videos / name)
        assert rows.loc[name, "brightness"] == pytest.approx(decoded.numpy().astype(np.float64).mean() / 255, abs=1e-12)
    assert math.isnan(rows.loc["black.mp4", "brightness"])

    runs = tmp_path / "runs"
    for method, name in (("cogvideox", "v0.mp4"), ("dualreal", "v1.mp4")):
        write_record(runs, {"method": method, "case": "dog__walking", "prompt_index": 0, "seed": 42, "status": "ok",
                            "temporal_flickering": rows.loc[name, "temporal_flickering"],
                            "brightness": rows.loc[name, "brightness"]})
    res = runner.invoke(app, ["table", "--runs", str(runs), "--format", "markdown", "--n-boot", "0"])
    assert res.exit_code == 0, res.output
    header = next(line for line in res.output.splitlines() if line.startswith("| method"))
    assert header.split(" | ")[-3] == "Brightness ↑"
    dualreal = next(line for line in res.output.splitlines() if line.startswith("| dualreal"))
    assert f"**{rows.loc['v1.mp4', 'brightness']:.3f}**" in dualreal  # the brighter video is best

    res = runner.invoke(app, ["list", "metrics"])
    assert "brightness" in res.output and "mean grey level / 255 (default, tables 1)" in res.output
