"""The case × prompt × seed grid: built-in grids, YAML grids, filters, and decoding a case.

A :class:`Case` is one identity folder + one motion folder + a reference image + prompts + seeds.
Grids come from :func:`load_grid`:

* ``"smoke"`` — the embedded sample (``benchmark/sample``: the DreamBooth dog, Intel walking
  clips), 1 case × 2 prompts, seed 42; defined as plain data in ``benchmark/grids/smoke.yaml``.
  Any ``benchmark/grids/<name>.yaml`` is a built-in grid the same way.
* ``"dualreal50"`` — the DualReal paper's 50 cases × 50 prompts, seed 42, read from a data root
  laid out like the paper's released benchmark (``cases.json``, ``identities/``, ``motions/``;
  see :func:`load_dualreal50`).
* a path to a YAML grid file (paths inside are relative to the file), in one of two forms::

      version: 1                 # optional, must be 1
      seeds: [42]                # optional default for every case (default [42])
      cases:
        - identity: data/dog     # identity folder
          motion: data/walking   # motion folder
          prompts: ["dog * is walking on the beach"]   # default: the identity's eval_prompts.txt
          name: dog__walking     # optional, default "<identity folder>__<motion folder>"
          class_word: dog        # optional, default from the identity folder
          ref_image: data/dog/images/00.jpg   # optional, default the first identity image
          seeds: [0, 1]          # optional, default the file's seeds

  or the cross product::

      identities: [data/dog, data/cat]
      motions: [data/walking]
      templates: ["{identity} * is {motion} on the beach"]

  where ``{identity}`` is the identity's class word and ``{motion}`` the motion folder's
  :attr:`~benchmark.data.MotionFolder.motion_phrase`. Files are read with ``yaml.safe_load`` (no
  tags, no code).

Everything is validated when the grid loads (folders, files, prompt counts), so a long run never
fails on case 37 for a typo. Errors are :class:`~benchmark.data.DataError`.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import string
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from benchmark.data import (
    DataError,
    IdentityFolder,
    MotionFolder,
    list_identity_images,
    load_identity,
    load_motion,
    read_text,
)
from benchmark.media import (
    IMAGE_EXTENSIONS,
    MediaError,
    RESIZE_MODES,
    read_image,
    read_video,
    resize_frames,
    video_frame_count,
)
from dualreal.engine.protocol import CaseData

__all__ = [
    "Case",
    "DEFAULT_SEEDS",
    "BUILTIN_GRIDS",
    "SAMPLE_DIR",
    "GRIDS_DIR",
    "list_grids",
    "load_grid",
    "load_yaml_grid",
    "load_dualreal50",
    "filter_cases",
    "DecodedCase",
    "read_images",
    "reference_images",
    "read_mask",
    "preservation_clips",
    "decode_case",
]

#: Seeds used when a grid does not say (the paper generates one video per prompt with seed 42).
DEFAULT_SEEDS: tuple[int, ...] = (42,)
#: The embedded sample (identity/dog, motion/walking) shipped inside the package.
SAMPLE_DIR = Path(__file__).parent / "sample"
#: Built-in YAML grids (``smoke.yaml`` …) shipped inside the package.
GRIDS_DIR = Path(__file__).parent / "grids"
#: Built-in grids defined in code (the rest are the YAML files in :data:`GRIDS_DIR`).
BUILTIN_GRIDS = ("dualreal50",)

_GRID_KEYS = {"version", "description", "seeds", "cases", "identities", "motions", "templates"}
_CASE_KEYS = {"name", "identity", "motion", "prompts", "class_word", "ref_image", "seeds"}
_TEMPLATE_FIELDS = {"identity", "motion"}


@dataclass
class Case:
    """One benchmark case (files, not yet decoded).

    Attributes:
        name: unique in its grid; used as a folder name in the runs tree (``"dog__playingGuitar"``).
        identity: identity folder (absolute).
        motion: motion folder (absolute).
        ref_image: the reference image that conditions the motion adapter at inference.
        prompts: evaluation prompts (one video per prompt and seed).
        seeds: generation seeds.
        class_word: the identity's class noun (``"dog"``).
    """

    name: str
    identity: Path
    motion: Path
    ref_image: Path
    prompts: list[str]
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    class_word: str = ""

    @property
    def identity_name(self) -> str:
        """The identity folder's name (``"dog"``), as recorded in results."""
        return self.identity.name

    @property
    def motion_name(self) -> str:
        """The motion folder's name (``"playingGuitar"``), as recorded in results."""
        return self.motion.name

    @property
    def num_videos(self) -> int:
        """Videos this case asks for: prompts × seeds."""
        return len(self.prompts) * len(self.seeds)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def list_grids() -> list[str]:
    """Names :func:`load_grid` accepts besides a file path: ``["dualreal50", "smoke", ...]``."""
    yaml_names = [p.stem for p in GRIDS_DIR.glob("*.yaml")] if GRIDS_DIR.is_dir() else []
    return sorted({*BUILTIN_GRIDS, *yaml_names})


def load_grid(spec: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[Case]:
    """Load a grid by name or file.

    Args:
        spec: ``"smoke"``, ``"dualreal50"``, another name from :func:`list_grids`, or a path to a
            YAML grid file (``.yaml`` / ``.yml``).
        data_root: the dualreal-bench folder; required by ``"dualreal50"``, ignored otherwise.

    Returns:
        The cases, in grid order, validated.

    Raises:
        DataError: unknown grid name (with suggestions), missing or malformed file, or any
            problem in a case (see :func:`load_yaml_grid`, :func:`load_dualreal50`).
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.suffix.lower() in (".yaml", ".yml") or "/" in text or os.sep in text:
        return load_yaml_grid(path)
    if text == "dualreal50":
        if data_root is None:
            raise DataError(
                "grid dualreal50: no data root given; pass the dualreal-bench folder "
                "(cases.json, identities/, motions/), e.g. --data-root path/to/dualreal-bench"
            )
        return load_dualreal50(data_root)
    builtin = GRIDS_DIR / f"{text}.yaml"
    if builtin.is_file():
        return load_yaml_grid(builtin)
    if path.is_file():
        return load_yaml_grid(path)
    known = list_grids()
    close = difflib.get_close_matches(text, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise DataError(
        f"unknown grid {text!r} (not a built-in name and no such file).{hint} "
        f"Built-in grids: {', '.join(known)}; or give a path to a .yaml grid file"
    )


def _check_seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise DataError(f"{where}: seeds must be a non-empty list of non-negative integers, got {value!r}")
    if len(set(value)) != len(value):
        raise DataError(f"{where}: seeds {value!r} repeat a value")
    return list(value)


def _check_prompts(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: prompts must be a non-empty list of strings, got {value!r}")
    out = []
    for i, p in enumerate(value, start=1):
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"{where}: prompt {i} is empty or not a string ({p!r})")
        if p.strip() in out:
            raise DataError(f"{where}: prompt {i} repeats prompt {out.index(p.strip()) + 1} ({p.strip()!r}): "
                            "the same video would be made twice (use seeds for more samples)")
        out.append(p.strip())
    return out


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{where}: case name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or name.startswith(".") or name != name.strip():
        raise DataError(
            f"{where}: case name {name!r} is used as a folder name: no '/', '\\', leading '.' or "
            "surrounding spaces"
        )
    return name


def _check_ref_image(path: Path, where: str) -> Path:
    if not path.is_file():
        raise DataError(f"{where}: ref_image {path} not found")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{where}: ref_image {path} is not an image ({'/'.join(IMAGE_EXTENSIONS)})")
    return path


def _unique_names(cases: list[Case], where: str) -> list[Case]:
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            raise DataError(f"{where}: case name {case.name!r} appears twice; give cases distinct names")
        seen.add(case.name)
    return cases


class _FolderCache:
    """Load each identity / motion folder once per grid."""

    def __init__(self) -> None:
        self.identities: dict[tuple[Path, str | None], IdentityFolder] = {}
        self.motions: dict[Path, MotionFolder] = {}

    def identity(self, path: Path, class_word: str | None = None) -> IdentityFolder:
        key = (path, class_word)
        if key not in self.identities:
            self.identities[key] = load_identity(path, class_word=class_word)
        return self.identities[key]

    def motion(self, path: Path) -> MotionFolder:
        if path not in self.motions:
            self.motions[path] = load_motion(path)
        return self.motions[path]


def load_yaml_grid(path: str | os.PathLike) -> list[Case]:
    """Load a YAML grid file (both forms in the module docstring).

    Raises:
        DataError: file missing, not UTF-8 or not valid YAML; unknown or missing keys; both forms
            mixed; a missing folder or ref_image; an empty prompt list; a template with a field
            other than ``{identity}`` / ``{motion}``; duplicate case names; bad seeds.
    """
    import yaml

    path = Path(os.path.abspath(Path(path).expanduser()))
    if not path.is_file():
        raise DataError(f"{path}: grid file not found")
    text = read_text(path, "grid file")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise DataError(f"{path}: invalid YAML{at} ({problem})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a mapping with 'cases:' or 'identities:/motions:/templates:'")
    unknown = set(doc) - _GRID_KEYS
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(sorted(_GRID_KEYS))}")
    version = doc.get("version", 1)
    if version != 1:
        raise DataError(f"{path}: unsupported grid version {version!r} (this dualbench reads version 1)")
    seeds = _check_seeds(doc.get("seeds", list(DEFAULT_SEEDS)), str(path))
    cross = {"identities", "motions", "templates"} & set(doc)
    if "cases" in doc and cross:
        raise DataError(f"{path}: use either 'cases:' or 'identities:/motions:/templates:', not both")
    base = path.parent
    cache = _FolderCache()
    if "cases" in doc:
        cases = _cases_form(doc["cases"], base, seeds, cache, path)
    elif cross:
        cases = _cross_form(doc, base, seeds, cache, path)
    else:
        raise DataError(f"{path}: no cases; add 'cases:' or 'identities:', 'motions:' and 'templates:'")
    return _unique_names(cases, str(path))


def _path(base: Path, value: Any, where: str, key: str) -> Path:
    """``value`` (a path relative to ``base``) as an absolute, lexically normalised path."""
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be a path (string), got {value!r}")
    return Path(os.path.abspath(base / Path(value).expanduser()))  # lexical: keeps symlinked names


def _cases_form(entries: Any, base: Path, seeds: list[int], cache: _FolderCache, path: Path) -> list[Case]:
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: 'cases' must be a non-empty list")
    cases = []
    for i, entry in enumerate(entries, start=1):
        where = f"{path}: case {i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected a mapping with identity, motion, prompts; got {entry!r}")
        unknown = set(entry) - _CASE_KEYS
        if unknown:
            raise DataError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                f"allowed: {', '.join(sorted(_CASE_KEYS))}"
            )
        for key in ("identity", "motion"):
            if key not in entry:
                raise DataError(f"{where}: missing '{key}'")
        class_word = entry.get("class_word")
        if class_word is not None and (not isinstance(class_word, str) or not class_word.strip()):
            raise DataError(f"{where}: class_word must be a non-empty string, got {class_word!r}")
        identity = cache.identity(_path(base, entry["identity"], where, "identity"), class_word)
        motion = cache.motion(_path(base, entry["motion"], where, "motion"))
        if "prompts" in entry:
            prompts = _check_prompts(entry["prompts"], where)
        elif identity.eval_prompts:
            prompts = list(identity.eval_prompts)
        else:
            raise DataError(f"{where}: missing 'prompts' (and {identity.path / 'eval_prompts.txt'} does not exist)")
        name = _check_name(entry.get("name", f"{identity.name}__{motion.name}"), where)
        if "ref_image" in entry:
            ref = _check_ref_image(_path(base, entry["ref_image"], where, "ref_image"), where)
        else:
            ref = identity.images[0]
        case_seeds = _check_seeds(entry["seeds"], where) if "seeds" in entry else list(seeds)
        cases.append(
            Case(
                name=name,
                identity=identity.path,
                motion=motion.path,
                ref_image=ref,
                prompts=prompts,
                seeds=case_seeds,
                class_word=identity.class_word,
            )
        )
    return cases


def _check_template(template: Any, where: str) -> str:
    if not isinstance(template, str) or not template.strip():
        raise DataError(f"{where}: a template must be a non-empty string, got {template!r}")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise DataError(f"{where}: template {template!r} is malformed ({exc})") from None
    bad = fields - _TEMPLATE_FIELDS
    if bad:
        raise DataError(
            f"{where}: template {template!r} uses {', '.join('{' + f + '}' for f in sorted(bad))}; "
            "only {identity} and {motion} are known"
        )
    return template


def _cross_form(doc: dict, base: Path, seeds: list[int], cache: _FolderCache, path: Path) -> list[Case]:
    where = str(path)
    for key in ("identities", "motions", "templates"):
        if key not in doc:
            raise DataError(f"{where}: missing '{key}' (the cross-product form needs identities, motions, templates)")
        value = doc[key]
        if isinstance(value, str):
            doc[key] = [value]
        elif not isinstance(value, list) or not value:
            raise DataError(f"{where}: '{key}' must be a non-empty list, got {value!r}")
    templates = [_check_template(t, where) for t in doc["templates"]]
    identities = [cache.identity(_path(base, v, where, "identities")) for v in doc["identities"]]
    motions = [cache.motion(_path(base, v, where, "motions")) for v in doc["motions"]]
    cases = []
    for identity in identities:
        for motion in motions:
            prompts = [
                t.format(identity=identity.class_word, motion=motion.motion_phrase).strip()
                for t in templates
            ]
            cases.append(
                Case(
                    name=_check_name(f"{identity.name}__{motion.name}", where),
                    identity=identity.path,
                    motion=motion.path,
                    ref_image=identity.images[0],
                    prompts=prompts,
                    seeds=list(seeds),
                    class_word=identity.class_word,
                )
            )
    return cases


def load_dualreal50(data_root: str | os.PathLike) -> list[Case]:
    """The DualReal paper's grid from a folder laid out as the authors' released benchmark.

    Each entry of ``cases.json`` (``case``, ``identity``, ``motion``, ``ref_image``; ``part`` is
    ignored) becomes a :class:`Case` with the prompts of ``identities/<identity>/eval_prompts.txt``
    and seed 42.

    Raises:
        DataError: data root or cases.json missing or malformed; a missing identity or motion
            folder, eval_prompts.txt or ref_image; a ref_image outside the data root.
    """
    root = Path(os.path.abspath(Path(data_root).expanduser()))
    if not root.is_dir():
        raise DataError(f"{root}: dualreal50 data root not found (expected the dualreal-bench folder)")
    index = root / "cases.json"
    if not index.is_file():
        raise DataError(
            f"{index}: not found; the dualreal50 data root must hold cases.json, identities/ and motions/"
        )
    try:
        entries = json.loads(read_text(index))
    except json.JSONDecodeError as exc:
        raise DataError(f"{index}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{index}: expected a non-empty JSON list of cases")
    cache = _FolderCache()
    cases = []
    for i, entry in enumerate(entries, start=1):
        where = f"{index}: entry {i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {entry!r}")
        missing = [k for k in ("case", "identity", "motion", "ref_image") if not isinstance(entry.get(k), str)]
        if missing:
            raise DataError(f"{where}: missing or non-string {', '.join(missing)}")
        for key, parent in (("identity", "identities"), ("motion", "motions")):
            value = entry[key]
            if value in ("", ".", "..") or "/" in value or "\\" in value:
                raise DataError(f"{where}: {key} {value!r} must be a folder name in {parent}/")
        identity = cache.identity(root / "identities" / entry["identity"])
        motion = cache.motion(root / "motions" / entry["motion"])
        if not identity.eval_prompts:
            raise DataError(f"{identity.path / 'eval_prompts.txt'}: missing or empty (needed by dualreal50)")
        ref = Path(os.path.normpath(root / entry["ref_image"]))  # lexical: symlinked subfolders are fine
        if not ref.is_relative_to(root):
            raise DataError(f"{where}: ref_image {entry['ref_image']!r} is outside the data root")
        cases.append(
            Case(
                name=_check_name(entry["case"], where),
                identity=identity.path,
                motion=motion.path,
                ref_image=_check_ref_image(ref, where),
                prompts=list(identity.eval_prompts),
                seeds=list(DEFAULT_SEEDS),
                class_word=identity.class_word,
            )
        )
    return _unique_names(cases, str(index))


# --------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------


def filter_cases(
    cases: list[Case],
    names: list[str] | None = None,
    max_cases: int | None = None,
    max_prompts: int | None = None,
    seeds: list[int] | None = None,
) -> list[Case]:
    """Select a sub-grid. Returns new :class:`Case` objects; ``cases`` is not modified.

    Args:
        cases: a grid.
        names: case names or shell wildcards (``"dog*"``, ``"*__Biking"``); the result keeps grid
            order. Every name/pattern must match at least one case.
        max_cases: keep the first N cases (after ``names``).
        max_prompts: keep the first N prompts of each case (prompt indices stay those of the grid).
        seeds: replace every case's seeds.

    Raises:
        DataError: a name or pattern that matches no case (close names suggested); a non-positive
            ``max_cases`` / ``max_prompts``; bad seeds.
    """
    selected = list(cases)
    if names is not None:
        if isinstance(names, str):
            names = [names]
        all_names = [c.name for c in cases]
        keep: set[str] = set()
        for pattern in names:
            matched = fnmatch.filter(all_names, pattern) if any(ch in pattern for ch in "*?[") else (
                [pattern] if pattern in all_names else []
            )
            if not matched:
                close = difflib.get_close_matches(pattern, all_names, n=5, cutoff=0.4)
                hint = f"; close names: {', '.join(close)}" if close else ""
                raise DataError(f"no case named {pattern!r} in this grid ({len(all_names)} cases){hint}")
            keep.update(matched)
        selected = [c for c in selected if c.name in keep]
    for label, value in (("max_cases", max_cases), ("max_prompts", max_prompts)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise DataError(f"{label} must be a positive integer, got {value!r}")
    if max_cases is not None:
        selected = selected[:max_cases]
    new_seeds = _check_seeds(list(seeds), "filter_cases") if seeds is not None else None
    return [
        replace(
            c,
            prompts=list(c.prompts[:max_prompts] if max_prompts is not None else c.prompts),
            seeds=list(new_seeds if new_seeds is not None else c.seeds),
        )
        for c in selected
    ]


# --------------------------------------------------------------------------------------------
# decoding
# --------------------------------------------------------------------------------------------


@dataclass
class DecodedCase:
    """Everything a run needs from a case, each folder listed once and each file decoded once.

    Attributes:
        case: the grid's case.
        data: what the method trains on (:class:`dualreal.engine.protocol.CaseData`, training
            resolution).
        reference_images: the identity's images at native resolution, uint8 ``(H, W, 3)`` each
            (the CLIP-I / DINO-I references; the same files as ``data.identity_images``).
        motion_clips: every clip of the motion folder, in folder order (the motion reference whose
            dynamic degree is ``dynamic_degree_ref``; ``max_clips`` limits training only).
        training_clips: one entry per training clip (the case's, ``role="motion"``, then any
            preservation clips, ``role="preservation"``): ``clip``, ``source_fps``, ``stride``,
            ``source_frames``, ``frames_used``, ``frames_padded`` (:func:`decode_case`); the run
            loop records it.
    """

    case: Case
    data: CaseData
    reference_images: list[torch.Tensor]
    motion_clips: list[Path]
    training_clips: list[dict[str, Any]] = field(default_factory=list)

    def padding_note(self) -> str:
        """One line naming the training clips that were padded (``""``: none was), e.g.
        ``"2 of 3 training clips shorter than 9 frames, padded with their last frame: a.mp4 (5 real), b.mp4 (7 real)"``."""
        padded = [e for e in self.training_clips if e["frames_padded"]]
        if not padded:
            return ""
        n = padded[0]["frames_used"] + padded[0]["frames_padded"]
        names = ", ".join(f"{Path(e['clip']).name} ({e['frames_used']} real)" for e in padded)
        return (f"{len(padded)} of {len(self.training_clips)} training clips shorter than {n} frames, "
                f"padded with their last frame: {names}")


def read_images(paths: list[Path]) -> list[torch.Tensor]:
    """Decode images with :func:`~benchmark.media.read_image`: uint8 ``(H, W, 3)`` each, native size.

    Every image is tried before anything is refused, so one error names every bad file.

    Raises:
        DataError: an unreadable image: its one line (``"<file>: empty file (0 bytes)"``); several
            (or one of several): ``"<folder>: 2 unreadable images of 5: a.jpg (not a readable image
            (…)), b.png (empty file (0 bytes))"``, names relative to their common folder.
    """
    images, bad = [], []
    for p in paths:
        try:
            images.append(read_image(p))
        except MediaError as exc:
            bad.append((Path(p), str(exc)))
    if not bad:
        return images
    if len(paths) == 1:
        raise DataError(bad[0][1])
    folder = Path(os.path.commonpath([os.path.abspath(p) for p in paths]))
    named = []
    for p, msg in bad:
        reason = msg.removeprefix(f"{p}: ")  # read_image's lines start with the file
        named.append(f"{os.path.relpath(os.path.abspath(p), folder)} ({reason})")
    raise DataError(f"{folder}: {len(bad)} unreadable image{'s' if len(bad) > 1 else ''} of {len(paths)}: "
                    + ", ".join(named))


def reference_images(identity: str | os.PathLike) -> list[torch.Tensor]:
    """The reference images of an identity folder at native resolution: the files of
    :func:`benchmark.data.list_identity_images`, decoded (what ``decode_case`` hands the scorer).

    Raises:
        DataError: folder missing, no image, or an unreadable image.
    """
    return read_images(list_identity_images(identity))


def read_mask(path: Path, height: int, width: int, size: tuple[int, int], mode: str = "crop") -> torch.Tensor:
    """A subject mask file → bool ``(height, width)``, resized as its image is (``mode``:
    :func:`~benchmark.media.resize_frames`, the run's ``identity_resize``).

    The file is read as an image and converted to grey with PIL's ``L`` weights (ITU-R 601:
    ``0.299 R + 0.587 G + 0.114 B``); the subject is where grey > 127.5 after the resize — as
    MotionBooth reads its masks (``src/datasets/motionbooth.py``: ``convert("L")``, ``> 0.5``).

    Args:
        size: ``(H, W)`` of the mask's image at native resolution (the mask must have it).

    Raises:
        DataError: unreadable, or not the size of its image.
    """
    mask = read_images([path])[0]
    if tuple(mask.shape[:2]) != tuple(size):
        raise DataError(f"{path}: mask is {mask.shape[1]}×{mask.shape[0]}, its image {size[1]}×{size[0]}")
    grey = (resize_frames(mask, height, width, mode=mode).float() * torch.tensor([0.299, 0.587, 0.114])).sum(-1)
    return grey > 127.5


def _decode_clip(path: Path, num_frames: int, height: int, width: int, mode: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """A training clip by the one rule (:func:`dualreal.engine.trainer.conform_clip`): the first
    ``num_frames`` frames at the source frame rate, a shorter clip padded with its last frame,
    brought to ``(height, width)`` by :func:`~benchmark.media.resize_frames` with ``mode``.

    Returns:
        ``(frames, entry)``: uint8 ``(num_frames, height, width, 3)`` and the clip's
        ``training_clips`` entry — ``clip`` (the file), ``source_fps``, ``stride`` (1: consecutive
        source frames), ``source_frames`` (the clip's frame count; the container's declared count
        for a clip longer than ``num_frames``, ``None`` if it declares none), ``frames_used`` (real
        frames trained on), ``frames_padded``.

    Raises:
        DataError: an unreadable clip or one of a single frame, naming the file.
    """
    from dualreal.engine.trainer import conform_clip

    try:
        frames, fps = read_video(path, max_frames=num_frames)
        clip, padded = conform_clip(frames, num_frames)
    except (MediaError, ValueError) as exc:
        msg = str(exc)
        raise DataError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    used = int(frames.shape[0])
    entry = {
        "clip": str(path),
        "source_fps": round(float(fps), 3),
        "stride": 1,
        "source_frames": used if used < num_frames else video_frame_count(path),
        "frames_used": used,
        "frames_padded": padded,
    }
    return resize_frames(clip, height, width, mode=mode), entry


def preservation_clips(
    case: Case, count: int, *, num_frames: int, height: int, width: int, motion_resize: str = "stretch"
) -> tuple[list[torch.Tensor], list[str], str]:
    """``count`` clips of motions other than the case's, for a method's video-preservation loss.

    The pool is every clip of every other motion folder beside the case's (its parent folder's
    subfolders that :func:`~benchmark.data.load_motion` accepts; others are skipped). ``count``
    clips are drawn from it without replacement by a generator seeded with the case name (the same
    clips on every run and every process), and decoded as the case's own clips are.

    Returns:
        ``(clips, prompts, source, entries)``: uint8 ``(num_frames, height, width, 3)`` clips (the
        training-clip rule of :func:`decode_case`), their prompts, the source —
        ``"<n> clips of other motions: Motion/clip, …"``, or why there are none (``clips`` empty) —
        and each clip's ``training_clips`` entry.

    Raises:
        DataError: an unreadable chosen clip.
    """
    import random
    import zlib

    here = case.motion.resolve()
    pool: list[tuple[MotionFolder, int]] = []
    siblings = sorted((p for p in case.motion.parent.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.name)
    for folder in siblings:
        if folder.resolve() == here:
            continue
        try:
            motion = load_motion(folder)
        except DataError:
            continue  # not a motion folder
        pool += [(motion, i) for i in range(len(motion.clips))]
    if not pool:
        return [], [], f"no other motion folder beside {case.motion}", []
    rng = random.Random(zlib.crc32(case.name.encode("utf-8")))
    chosen = rng.sample(pool, min(count, len(pool)))
    decoded = [_decode_clip(m.clips[i], num_frames, height, width, motion_resize) for m, i in chosen]
    prompts = [m.prompts[i] for m, i in chosen]
    names = ", ".join(f"{m.path.name}/{m.clips[i].name}" for m, i in chosen)
    return [c for c, _ in decoded], prompts, f"{len(decoded)} clips of other motions: {names}", [e for _, e in decoded]


def decode_case(
    case: Case,
    *,
    num_frames: int,
    height: int,
    width: int,
    max_clips: int | None = None,
    preservation: int = 0,
    motion_resize: str = "stretch",
    identity_resize: str = "crop",
) -> DecodedCase:
    """Decode a case's files for a run: every image and clip read once.

    Motion clips (the training-clip rule, docs/METHOD.md "Training clips"): the first ``num_frames``
    consecutive frames at the source frame rate, decoded with :func:`~benchmark.media.read_video`;
    a shorter clip is padded by repeating its last frame up to ``num_frames``
    (:func:`dualreal.engine.trainer.conform_clip`), so one short clip never shortens the others;
    then brought to ``(height, width)`` by :func:`~benchmark.media.resize_frames`. What each clip
    gave is in ``training_clips``. Identity images are
    decoded once at native resolution (kept as the scoring references) and resized for training.
    The reference image stays at native resolution: the reference-image encoder brings it to its own
    input size (:mod:`dualreal.engine.image_encoder`: 224 × 224 without cropping, as the released
    inference script reads the image file); it reuses its decoded identity image when it is one.

    Geometry defaults, checked against the DualReal release (``wenc-k/DualReal``, commit 2186cd1):

    * motion clips are **stretched** to the training resolution, nothing cropped:
      ``train/train_adapter.py`` line 848 reads every motion clip with ``decord.VideoReader(uri,
      width=720, height=480)``, which resizes each frame to 720 × 480 whatever its aspect ratio
      (UCF101's 320 × 240 clips are 4:3, widened by 1.125). ``motion_resize="crop"`` keeps the
      aspect ratio and cuts the centre instead.
    * identity images are **centre-cropped** to the aspect ratio of the training resolution, then
      resized. The release's loader stretches them too (line 656, the same ``VideoReader`` call on
      each identity image stored as a 1-frame video), but its identity data are already 720 × 480
      crops (the release's ``train/test_data/identity/dog/images/*.png`` and the paper's benchmark
      identities), for which stretching and cropping are the same resize. For images of another
      aspect ratio (the built-in sample's square DreamBooth photos) the crop is what the authors'
      data preparation did to theirs, and it keeps the subject's proportions;
      ``identity_resize="stretch"`` applies the loader literally.

    Args:
        case: from :func:`load_grid`.
        num_frames: frames per training clip, 4k+1 (49 in the paper): the method's training frame
            count (:meth:`~dualreal.engine.protocol.CustomizationMethod.training_frames`).
        height, width: training resolution (480×720 in the paper).
        max_clips: train on the first N motion clips only (default all).
        preservation: clips of other motions to decode for the method
            (:meth:`~dualreal.engine.protocol.CustomizationMethod.preservation_clip_count`,
            :func:`preservation_clips`); 0: none.
        motion_resize: ``"stretch"`` (default) or ``"crop"`` (:data:`~benchmark.media.RESIZE_MODES`).
        identity_resize: ``"crop"`` (default) or ``"stretch"``.

    Returns:
        :class:`DecodedCase`: ``data`` holds identity images uint8 ``(height, width, 3)``, motion
        clips uint8 ``(num_frames, height, width, 3)``, the ref image uint8
        ``(H, W, 3)`` at native size and one prompt per image / clip, the identity's subject masks
        (bool ``(height, width)``, when it ships ``masks/``: :func:`read_mask`) and the
        preservation clips; ``reference_images`` the native identity images; ``motion_clips`` every
        clip path. All on CPU.

    Raises:
        DataError: bad arguments; a folder problem (see :mod:`benchmark.data`); an unreadable
            image or clip, or a clip of a single frame (the message names the file).
    """
    if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % 4:
        raise DataError(f"case {case.name}: num_frames={num_frames!r} is not 4k+1 (e.g. 9, 49)")
    for label, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise DataError(f"case {case.name}: {label}={value!r} must be a positive integer")
    if max_clips is not None and (not isinstance(max_clips, int) or max_clips < 1):
        raise DataError(f"case {case.name}: max_clips={max_clips!r} must be a positive integer")
    for label, value in (("motion_resize", motion_resize), ("identity_resize", identity_resize)):
        if value not in RESIZE_MODES:
            raise DataError(f"{label} must be one of {', '.join(RESIZE_MODES)}, got {value!r}")

    identity = load_identity(case.identity, class_word=case.class_word or None)
    motion = load_motion(case.motion)

    natives = read_images(identity.images)
    images = [resize_frames(img, height, width, mode=identity_resize) for img in natives]
    ref_resolved = case.ref_image.resolve()
    ref = next((img for p, img in zip(identity.images, natives) if p.resolve() == ref_resolved), None)
    if ref is None:
        ref = read_images([case.ref_image])[0]

    clip_paths = motion.clips[:max_clips] if max_clips is not None else motion.clips
    decoded = [_decode_clip(path, num_frames, height, width, motion_resize) for path in clip_paths]
    clips = [c for c, _ in decoded]
    training_clips = [{**e, "role": "motion"} for _, e in decoded]
    masks = None
    if identity.masks is not None:
        masks = [read_mask(m, height, width, tuple(img.shape[:2]), identity_resize)
                 for m, img in zip(identity.masks, natives)]
    extra_clips, extra_prompts, extra_source = [], [], ""
    if preservation:
        extra_clips, extra_prompts, extra_source, entries = preservation_clips(
            case, preservation, num_frames=num_frames, height=height, width=width, motion_resize=motion_resize
        )
        training_clips += [{**e, "role": "preservation"} for e in entries]

    data = CaseData(
        name=case.name,
        class_word=identity.class_word,
        identity_images=images,
        identity_prompts=list(identity.prompts),
        motion_clips=clips,
        motion_prompts=list(motion.prompts[: len(clips)]),
        ref_image=ref,
        identity_masks=masks,
        preservation_clips=extra_clips,
        preservation_prompts=extra_prompts,
        preservation_source=extra_source,
    )
    return DecodedCase(case=case, data=data, reference_images=natives, motion_clips=list(motion.clips),
                       training_clips=training_clips)
