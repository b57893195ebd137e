"""A method as a plugin (docs/EXTERNAL.md, "A method as a plugin"): the worked example of that page,
installed with pip into a temporary folder, is listed by `dualbench list` and runs on the smoke grid
by its target; each kind of bad target gives one clear error; entry points that shadow a built-in
or are claimed twice are reported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.cli import app
from benchmark.registry import (
    MethodLoadError,
    UnknownMethodError,
    create_method,
    get_spec,
    list_methods,
    load_method_class,
    plugin_problems,
)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "EXTERNAL.md"
TARGET = "my_pkg.my_module:MotionPromptMethod"


def _doc_files() -> dict[str, str]:
    """The files of the worked example: fenced blocks whose first line is ``# <path>``."""
    text = DOC.read_text(encoding="utf-8")
    return {m.group(2): m.group(1) for m in re.finditer(r"```(?:python|toml)\n(# (\S+\.(?:py|toml))\n.*?)```", text, re.S)}


def _forget(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The worked example, `pip install`-ed into a temporary target folder (never into the venv)."""
    files = _doc_files()
    assert set(files) == {"pyproject.toml", "my_pkg/my_module.py"}, sorted(files)
    src = tmp_path_factory.mktemp("src") / "my-dualbench-method"
    for rel, body in {**files, "my_pkg/__init__.py": ""}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(body, encoding="utf-8")
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (target / "my_pkg" / "my_module.py").is_file()
    return target


def _env(extra_path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(extra_path), str(REPO)])
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def test_installed_plugin_is_listed(installed):
    """A fresh interpreter with the install folder on its path lists the plugin and its distribution."""
    listing = subprocess.run([sys.executable, "-m", "benchmark.cli", "list"], env=_env(installed),
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr[-2000:]
    line = next(ln for ln in listing.stdout.splitlines() if ln.startswith("motion-prompt"))
    assert f"{TARGET} (plugin my-dualbench-method 0.1.0)" in line
    assert "dualreal " in listing.stdout  # the built-ins are still there


def test_installed_plugin_runs_by_its_target_and_builds_by_its_name(installed, tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    try:
        out = tmp_path / "runs"
        result = CliRunner().invoke(app, ["run", "--method", TARGET, "--grid", "smoke", "--max-prompts", "1", "--steps", "2",
                                          "--metrics", "temporal_flickering", "--out", str(out)])
        assert result.exit_code == 0, result.output
        folder = out / "my_pkg.my_module.MotionPromptMethod" / "dog__walking"
        rec = json.loads((folder / "records" / "p000_s42.json").read_text())
        assert rec["status"] == "ok" and rec["method"] == "my_pkg.my_module.MotionPromptMethod"
        assert rec["provenance"] == "run" and rec["temporal_flickering"] is not None and rec["num_frames"] == 9
        extras = json.loads((folder / "videos" / "p000_s42.json").read_text())
        assert extras == {"prompt_used": "dog is walking on the beach, like a person is walking"}

        # by its entry-point name
        spec = get_spec("motion-prompt")
        assert (spec.target, spec.origin) == (TARGET, "plugin my-dualbench-method 0.1.0")
        assert "motion-prompt" in list_methods("motion-*")
        method = create_method("motion-prompt", tiny_backbone, joiner=" as ")
        assert type(method).__name__ == "MotionPromptMethod" and method.name == "motion-prompt"
        assert method.config.joiner == " as " and method.describe() == {"method": "motion-prompt", "joiner": " as "}
        with pytest.raises(ValueError, match=r"unknown MotionPromptConfig option\(s\) \['jointer'\]; valid options: joiner"):
            create_method("motion-prompt", tiny_backbone, jointer=", ")
    finally:
        _forget("my_pkg")


_PLUGINS = {
    "plug_broken.py": 'raise RuntimeError("boom at import")\n',
    "plug_needs.py": "import not_installed_dependency_xyz  # noqa: F401\n",
    "plug_ok.py": (
        "from dualreal.engine.protocol import CustomizationMethod, GeneratedVideo\n\n"
        "class Good(CustomizationMethod):\n"
        "    def generate(self, prompt, seed, settings):\n"
        "        raise NotImplementedError\n\n"
        "class Abstract(CustomizationMethod):\n"
        "    pass\n\n"
        "class NotAMethod:\n"
        "    pass\n\n"
        "def fn():\n"
        "    pass\n"
    ),
}


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    for name, body in _PLUGINS.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in _PLUGINS:
        _forget(Path(name).stem)


@pytest.mark.parametrize("target,message", [
    ("no_such_pkg_xyz.mod:X", r"method 'no_such_pkg_xyz\.mod\.X' \(target no_such_pkg_xyz\.mod:X\): no module named "
                              r"'no_such_pkg_xyz'; install the package that provides it, or put it on PYTHONPATH"),
    ("plug_broken:X", r"importing 'plug_broken' failed: RuntimeError: boom at import \(.*plug_broken\.py:1\)"),
    ("plug_needs:X", r"importing 'plug_needs' failed: ModuleNotFoundError: No module named 'not_installed_dependency_xyz'"),
    ("plug_ok:Missing", r"module 'plug_ok' \(.*plug_ok\.py\) has no attribute 'Missing'; its method classes: Abstract, Good"),
    ("plug_ok:fn", r"'fn' is a function, not a subclass of dualreal\.engine\.protocol\.CustomizationMethod"),
    ("plug_ok:NotAMethod", r"'NotAMethod' is the class plug_ok\.NotAMethod, not a subclass of"),
    ("plug_ok:Abstract", r"Abstract does not implement generate"),
    ("plug_ok:", r"method target 'plug_ok:' is malformed: expected 'package\.module:Class'"),
])
def test_each_bad_target_gives_one_clear_error(plugin_dir, target, message):
    with pytest.raises(MethodLoadError, match=message) as err:
        load_method_class(get_spec(target))
    assert "\n" not in str(err.value)


def test_a_good_target_builds_and_the_command_line_refuses_a_bad_one(plugin_dir, tiny_backbone):
    method = create_method("plug_ok:Good", tiny_backbone)
    assert type(method).__name__ == "Good" and method.name == "plug_ok.Good"
    result = CliRunner().invoke(app, ["run", "--method", "plug_broken:Thing"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "importing 'plug_broken' failed: RuntimeError: boom at import" in result.output
    result = CliRunner().invoke(app, ["run", "--method", "not-a-method"])
    assert result.exit_code == 2 and "unknown method 'not-a-method'" in result.output and "package.module:Class" in result.output


def _dist(site: Path, name: str, version: str, entry_points: str) -> None:
    """A minimal installed distribution (what pip leaves in site-packages): METADATA and entry_points.txt."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[dualbench.methods]\n{entry_points}", encoding="utf-8")


def test_shadowing_and_twice_claimed_entry_points_are_reported(plugin_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _dist(site, "shadow-pkg", "1.0", "cogvideox = plug_ok:Good\ntwin = plug_ok:Good\nfine = plug_ok:Good\n")
    _dist(site, "other-pkg", "2.0", "twin = plug_ok:Good\n")
    monkeypatch.syspath_prepend(str(site))
    problems = plugin_problems()
    assert any("entry point 'cogvideox' = 'plug_ok:Good' of shadow-pkg 1.0 shadows the built-in method 'cogvideox'"
               in p and "ignored" in p for p in problems), problems
    assert any(p.startswith("method 'twin' is claimed by several plugins") for p in problems), problems
    assert get_spec("cogvideox").origin == "built-in"  # the built-in wins
    assert get_spec("fine").origin == "plugin shadow-pkg 1.0"
    with pytest.raises(MethodLoadError, match="'twin' is claimed by several plugins .*shadow-pkg 1.0.*other-pkg 2.0"):
        get_spec("twin")
    with pytest.raises(UnknownMethodError, match="Known methods: .*fine"):
        get_spec("nothing-like-it")
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0
    assert "shadows the built-in method 'cogvideox'" in result.output and "claimed by several plugins" in result.output
    assert re.search(r"^fine\s+plug_ok:Good \(plugin shadow-pkg 1\.0\)$", result.output, re.M)
