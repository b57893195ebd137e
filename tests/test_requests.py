"""Issue 12, items 1 and 4: a generation request is checked whole before any model is loaded, and
the sampler's scheduler is the one its configuration names (or one asked for), refused when the
methods cannot train and sample with it, and recorded with a hash of its configuration.

The command-line examples run ``python -m benchmark.cli run`` in subprocesses (in parallel: each
is a ~5 s interpreter start) with a ``sitecustomize`` that makes ``load_backbone`` exit with a
marker, so a test fails if any model would have been built before the refusal.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.runner import RunConfig, check_request, run
from dualreal.engine.backbone import (
    TINY_PRESET,
    BackboneError,
    GeometryRules,
    geometry_rules,
    load_backbone,
    scheduler_config_hash,
)
from dualreal.engine.protocol import GenerationSettings

REPO = Path(__file__).resolve().parents[1]
NO_LOAD = "import dualreal.engine.backbone as b\n\ndef _refuse(*a, **k):\n    raise SystemExit('LOADED A MODEL')\n\nb.load_backbone = _refuse\n"

# The examples, at the command line in a subprocess: (arguments, fragments of the one-line error)
BAD_REQUESTS = {
    "frames 5": (["--frames", "5"], ["--frames 5", "it would write 8", "8k+1", "use 1 or 9"]),
    "frames 13": (["--frames", "13"], ["--frames 13", "it would write 16", "use 9 or 17"]),
    "size 120": (["--height", "120", "--width", "120"], ["--height 120", "multiple of 16", "use 112 or 128"]),
    "height 0": (["--height", "0"], ["--height 0", "multiple of 16", "use 16"]),
    "steps 0": (["--steps", "0"], ["--steps must be >= 1, got 0"]),
}
# The other bounds, through the same command in-process (no interpreter start each)
OTHER_BAD_REQUESTS = {
    "train steps 0": (["--train-steps", "0"], ["--train-steps must be >= 1, got 0"]),
    "fps 0": (["--fps", "0"], ["--fps must be > 0, got 0"]),
    "guidance -1": (["--guidance", "-1"], ["--guidance must be a finite number >= 0, got -1"]),
    "guidance nan": (["--guidance", "nan"], ["--guidance must be a finite number >= 0, got nan"]),
    "scheduler": (["--scheduler", "DDPMScheduler"], ["--scheduler must be one of CogVideoXDPMScheduler, "
                                                     "CogVideoXDDIMScheduler, config, got 'DDPMScheduler'"]),
}


def _folder_backbone(root: Path, *, transformer: dict | None = None, vae: dict | None = None,
                     scheduler: dict | None = None) -> Path:
    """A CogVideoX folder of config files only (no weight anywhere): what the request check and the
    scheduler check read."""
    files = {
        "transformer/config.json": {"_class_name": "CogVideoXTransformer3DModel", **TINY_PRESET["transformer"], **(transformer or {})},
        "vae/config.json": {"_class_name": "AutoencoderKLCogVideoX", **TINY_PRESET["vae"], **(vae or {})},
        "text_encoder/config.json": {"model_type": "t5", **TINY_PRESET["text_encoder"]},
        "scheduler/scheduler_config.json": scheduler or {"_class_name": "CogVideoXDDIMScheduler", **TINY_PRESET["scheduler"]},
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(data), encoding="utf-8")
    (root / "tokenizer").mkdir(exist_ok=True)
    return root


def test_bad_requests_fail_at_once_with_one_line_and_no_model(tmp_path):
    """Every bad value of issue 12 item 1 at the command line: exit 2, one line naming the valid
    values, nothing loaded (load_backbone would exit with a marker), nothing written."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(NO_LOAD, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (tmp_path / "site", REPO))), "COLUMNS": "300"}
    names = list(BAD_REQUESTS)
    for pair in (names[i:i + 2] for i in range(0, len(names), 2)):  # two at a time: the machine has 2 cores
        procs = {}
        for name in pair:
            out = tmp_path / name.replace(" ", "_")
            procs[name] = (out, time.perf_counter(), subprocess.Popen(
                [sys.executable, "-m", "benchmark.cli", "run", "--method", "dualreal", "--out", str(out),
                 *BAD_REQUESTS[name][0]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO))
        for name, (out, t0, proc) in procs.items():
            stdout, stderr = proc.communicate(timeout=120)
            seconds = time.perf_counter() - t0
            _check_refusal(name, proc.returncode, stdout + stderr, BAD_REQUESTS[name][1], out)
            assert seconds < 60, (name, seconds)  # an interpreter start: ~5 s alone


def _check_refusal(name: str, code: int, text: str, fragments: list[str], out: Path) -> None:
    assert code == 2, (name, text)
    assert "LOADED A MODEL" not in text and "Traceback" not in text, (name, text)
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (name, text)
    for fragment in fragments:
        assert fragment in errors[0], (name, fragment, errors[0])
    assert not out.exists(), name  # refused before the runs folder is touched


def test_other_bounds_fail_the_same_way(tmp_path, monkeypatch):
    import dualreal.engine.backbone as backbone_module

    monkeypatch.setattr(backbone_module, "load_backbone", lambda *a, **k: print("LOADED A MODEL"))
    for name, (args, fragments) in OTHER_BAD_REQUESTS.items():
        out = tmp_path / name.replace(" ", "_")
        result = CliRunner().invoke(app, ["run", "--method", "dualreal", "--out", str(out), *args], env={"COLUMNS": "300"})
        _check_refusal(name, result.exit_code, result.output, fragments, out)  # output: stdout and stderr


def test_the_python_api_goes_through_the_same_check_before_loading(tmp_path, monkeypatch):
    import dualreal.engine.backbone as backbone_module

    def refuse(*args, **kwargs):
        raise AssertionError("load_backbone called before the request was checked")

    monkeypatch.setattr(backbone_module, "load_backbone", refuse)
    for bad, match in (({"num_frames": 5}, "use 1 or 9"), ({"width": 120}, "--width 120"),
                       ({"num_inference_steps": 0}, "--steps must be >= 1"), ({"fps": 0}, "--fps must be > 0"),
                       ({"method_options": {"bogus": 1}}, "--method-option: unknown"), ({"scheduler": "DDPMScheduler"}, "--scheduler"),
                       ({"dtype": "fp8"}, "--dtype")):
        with pytest.raises(ValueError, match=match):
            run(RunConfig(method="dualreal", out=tmp_path / "runs", **bad), log=lambda *_: None)
    assert not (tmp_path / "runs").exists()


def test_zero_is_a_value_and_none_the_default():
    tiny = check_request(RunConfig(method="cogvideox"))
    assert (tiny.settings.num_frames, tiny.settings.height, tiny.settings.width) == (9, 128, 192)
    assert tiny.settings.num_inference_steps == 10  # random weights: 10; `--steps 0` is refused, never 10
    real = check_request(RunConfig(method="cogvideox", backbone="THUDM/CogVideoX-5b"))  # the table: nothing downloaded
    assert (real.settings.num_frames, real.settings.height, real.settings.width, real.settings.num_inference_steps) == (49, 480, 720, 50)

    class Defaults:
        defaults = {"num_frames": 9, "height": 128, "width": 192}

    assert GenerationSettings(num_frames=0, height=0, width=0).geometry(Defaults()) == {"num_frames": 0, "height": 0, "width": 0}
    assert GenerationSettings().geometry(Defaults()) == Defaults.defaults


def test_guidance_at_most_one_is_accepted_with_a_note():
    for scale in (0.0, 1.0):
        notes = check_request(RunConfig(method="cogvideox", guidance_scale=scale)).notes
        assert any("no classifier-free guidance" in n and "guidance_scale > 1" in n for n in notes), notes
    assert not any("guidance" in n for n in check_request(RunConfig(method="cogvideox", guidance_scale=1.5)).notes)


def test_frame_rule_matches_what_the_vae_decodes():
    """The rule against the real decoder: the tiny preset's VAE decodes L latent frames into exactly
    GeometryRules.decoded_frames(L) frames, and only 8k+1 requests come out as asked."""
    from diffusers import AutoencoderKLCogVideoX

    rules = geometry_rules("tiny")
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(**TINY_PRESET["vae"]).eval()
    with torch.no_grad():
        decoded = {n: vae.decode(torch.zeros(1, 4, n, 2, 2)).sample.shape[2] for n in range(1, 7)}
    assert decoded == {n: rules.decoded_frames(n) for n in range(1, 7)} == {1: 1, 2: 8, 3: 9, 4: 16, 5: 17, 6: 24}
    assert rules.valid_frame_counts(50) == [1, 9, 17, 25, 33, 41, 49]
    assert (rules.generated_frames(5), rules.generated_frames(13), rules.size_multiple) == (8, 16, 16)
    assert geometry_rules("cogvideox-2b-random") == geometry_rules("cogvideox-5b-random") == rules


def test_a_backbone_folder_gives_its_own_factors_from_config_files_only(tmp_path):
    """A folder whose transformer patches 4×4 needs multiples of 32: read from its config.json (the
    folder holds no weight at all), at the command line too."""
    folder = _folder_backbone(tmp_path / "cog", transformer={"patch_size": 4})
    rules = geometry_rules(str(folder))
    assert (rules.size_multiple, rules.patch_size, rules.vae_spatial) == (32, 4, 8)
    with pytest.raises(ValueError, match=r"--height 48: backbone .* needs a multiple of 32 .*use 32 or 64"):
        check_request(RunConfig(method="cogvideox", backbone=str(folder), height=48, width=64))
    # a key the file leaves out takes the diffusers default (patch_size 2, temporal ratio 4)
    sparse = GeometryRules.from_configs({}, {"block_out_channels": [8, 8]})
    assert (sparse.size_multiple, sparse.temporal_compression) == (4, 4)
    with pytest.raises(BackboneError, match="not a local folder"):
        geometry_rules("someone/not-downloaded")  # the loader's own error


def test_help_shows_the_real_defaults():
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    for fragment in ("49 real, 9 tiny", "480 real, 128 tiny", "720 real, 192 tiny", "8k+1", "multiple of 16",
                     "50 with pretrained weights, 10 with random weights", "[default: 6.0]", "[default: 8]",
                     "[default: CogVideoXDPMScheduler]"):
        assert fragment in text, fragment
    assert "64" not in text.replace("cuda:1", "")  # the old 64×96 tiny size is gone


# ------------------------------------------------------------------------------------------------
# Item 4: the scheduler
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("config, match", [
    ({"_class_name": "DDPMScheduler", "prediction_type": "v_prediction"}, "names 'DDPMScheduler'"),
    ({"_class_name": "FooScheduler", "prediction_type": "v_prediction"}, "names 'FooScheduler'"),
    ({"prediction_type": "v_prediction"}, "names no scheduler class"),
    ({"_class_name": "CogVideoXDDIMScheduler", "prediction_type": "epsilon"}, "prediction_type 'epsilon'"),
    ({"_class_name": "CogVideoXDPMScheduler"}, "prediction_type 'epsilon'"),  # diffusers' default when left out
])
def test_a_scheduler_the_methods_cannot_honour_is_refused_before_any_weight(tmp_path, config, match):
    folder = _folder_backbone(tmp_path / "cog", scheduler=config)  # no weights: a refusal must come first
    with pytest.raises(BackboneError, match=match) as err:
        load_backbone(str(folder))
    assert "scheduler_config.json" in str(err.value)
    assert "CogVideoXDPMScheduler, CogVideoXDDIMScheduler" in str(err.value)


def test_the_named_class_is_used_and_recorded_with_its_config_hash():
    tiny = load_backbone("tiny")
    prov = tiny.provenance()
    assert prov["scheduler"] == type(tiny.scheduler).__name__ == TINY_PRESET["scheduler_class"]
    public = {k: v for k, v in dict(tiny.scheduler.config).items() if not k.startswith("_")}
    expected = hashlib.sha256(json.dumps(public, sort_keys=True).encode()).hexdigest()[:12]
    assert prov["scheduler_config_hash"] == scheduler_config_hash(tiny.scheduler.config) == expected
    assert "scheduler_replaces" not in prov
    # the published 5B ships DDIM: used as named; the release's swap to DPM only when asked, and recorded
    shipped = load_backbone("cogvideox-5b-random", device="meta")
    assert type(shipped.scheduler).__name__ == "CogVideoXDDIMScheduler" and "scheduler_replaces" not in shipped.provenance()
    swapped = load_backbone("cogvideox-5b-random", device="meta", scheduler="CogVideoXDPMScheduler")
    assert type(swapped.scheduler).__name__ == "CogVideoXDPMScheduler"
    assert swapped.provenance()["scheduler_replaces"] == "CogVideoXDDIMScheduler"
    assert swapped.scheduler.config.prediction_type == "v_prediction" and swapped.scheduler.config.snr_shift_scale == 1.0
    with pytest.raises(BackboneError, match="'EulerDiscreteScheduler' was asked for"):
        load_backbone("tiny", scheduler="EulerDiscreteScheduler")


@pytest.mark.parametrize("device, message", [
    ("tpu", "--device 'tpu': not a torch device name"),
    ("cuda:x", "--device 'cuda:x': not a torch device name"),
])
def test_an_unknown_device_is_refused_in_one_line(device, message):
    from benchmark.runner import check_device

    with pytest.raises(ValueError, match=re.escape(message)):
        check_device(device)
    check_device("cpu")


def test_a_gpu_the_machine_does_not_have_is_refused(monkeypatch):
    from benchmark.runner import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no GPU here"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device("cuda:1")
    with pytest.raises(ValueError, match=re.escape("torch sees 2 GPU(s), cuda:0 to cuda:1")):
        check_device("cuda:2")


@pytest.mark.parametrize("seeds", ["1,,2", "1,", ",3"])
def test_an_empty_seed_is_refused_not_dropped(seeds):
    result = CliRunner().invoke(app, ["run", "--seeds", seeds, "--out", "/nonexistent/never-made"])
    assert result.exit_code == 2, result.output
    assert f"--seeds takes integers separated by commas, got {seeds!r}" in result.output
