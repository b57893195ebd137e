"""Dependencies point one way: benchmark → baselines → dualreal (method) → dualreal.engine;
metrics never import methods."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _full_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_dualreal_imports_neither_baselines_nor_benchmark():
    for path in (ROOT / "dualreal").rglob("*.py"):
        bad = _imports(path) & {"baselines", "benchmark"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_engine_imports_no_method():
    """The engine (backbone, protocol, trainer, image encoder) never imports DualReal's method
    modules, the baselines or the benchmark."""
    for path in (ROOT / "dualreal" / "engine").rglob("*.py"):
        full = _full_imports(path)
        bad = {m for m in full if m.split(".")[0] in {"baselines", "benchmark"}}
        bad |= {m for m in full if m.startswith("dualreal") and not m.startswith("dualreal.engine") and m != "dualreal"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_baselines_import_the_engine_only():
    """Baselines build on the engine; only DreamVideo reuses DualReal's DA-Block adapters."""
    allowed_method_imports = {"dreamvideo.py": {"dualreal.adapters", "dualreal.controller", "dualreal.pipeline"}}
    for path in (ROOT / "baselines").rglob("*.py"):
        full = _full_imports(path)
        method = {m for m in full if m.startswith("dualreal") and not m.startswith("dualreal.engine")}
        bad = method - allowed_method_imports.get(path.name, set())
        assert not bad, f"{path.relative_to(ROOT)} imports DualReal's method modules {bad}"


def test_baselines_do_not_import_benchmark():
    for path in (ROOT / "baselines").rglob("*.py"):
        assert "benchmark" not in _imports(path), f"{path.relative_to(ROOT)} imports benchmark"


def test_metrics_never_import_methods():
    paths = [
        *(ROOT / "benchmark" / "metrics").rglob("*.py"),
        *(ROOT / "benchmark" / "encoders").rglob("*.py"),
        ROOT / "benchmark" / "scorer.py",
    ]
    assert len(paths) > 10, "the metric, encoder and scorer modules moved: update this test"
    for path in paths:
        full = _full_imports(path)
        # The engine's atomic writes, error lines and weights-only reading are infrastructure, not a method.
        bad = {m for m in full if m.split(".")[0] in {"dualreal", "baselines"} or m in {"benchmark.registry", "benchmark.runner"}}
        bad -= {"dualreal.engine.io", "dualreal.engine.errors", "dualreal.engine.weights"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_no_pickle_loading_anywhere():
    """Checkpoints are safetensors; torch.load only with weights_only=True (upstream .pth formats)."""
    for pkg in ("dualreal", "baselines", "benchmark"):
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "load":
                    owner = getattr(getattr(node.func, "value", None), "id", "")
                    if owner == "torch":
                        kw = {k.arg: k.value for k in node.keywords}
                        assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) is True, (
                            f"{path.relative_to(ROOT)}:{node.lineno} torch.load without weights_only=True"
                        )
                    assert owner != "pickle", f"{path.relative_to(ROOT)}:{node.lineno} unpickles"


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text(encoding="utf-8").splitlines() if line.startswith("#")]


def test_code_and_docs_cite_docs_inside_the_repository():
    """A clone has the docs in ``docs/`` only: code and tests cite the paper, an upstream file, or a doc
    in ``docs/`` — and every citation of a repository doc by section number or quoted heading names a section that exists."""
    import re

    cite = re.compile(r'docs/([A-Z]+)\.md(?:,? ?§([0-9]+(?:\.[0-9]+)*)|, "([^"]+)")?')
    files = [p for pkg in ("dualreal", "baselines", "benchmark", "scripts", "tests") for p in (ROOT / pkg).rglob("*.py")]
    files += [*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "results" / "README.md"]
    checked = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "shared" + "/docs" not in text, f"{path.relative_to(ROOT)} cites the specs outside the repository"
        for name, section, heading in cite.findall(text):
            doc = ROOT / "docs" / f"{name}.md"
            assert doc.is_file(), f"{path.relative_to(ROOT)} cites docs/{name}.md, which does not exist"
            heads = _headings(doc)
            if section:
                assert any(h.split(" ")[0].rstrip(".") == section for h in heads), (
                    f"{path.relative_to(ROOT)} cites docs/{name}.md §{section}; sections: {heads}"
                )
                checked += 1
            if heading:
                assert any(heading in h for h in heads), f"{path.relative_to(ROOT)} cites docs/{name}.md, {heading!r}"
                checked += 1
    assert checked >= 10  # the citations are there to check
