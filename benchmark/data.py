"""Identity and motion folder readers, with validation.

Two folder kinds make a benchmark case:

**Identity folder** — a few images of one subject::

    dog/
      images/00.jpg 01.JPG 02.png ...   (or the images directly in dog/)
      masks/00.png 01.png 02.png ...    optional: a subject mask per image, same stems (white = subject)
      prompts.txt        optional: one line per image ("dog *"), or a single line for all
      eval_prompts.txt   optional: evaluation prompts, one per line

Images are the files with an image extension (:data:`benchmark.media.IMAGE_EXTENSIONS`, any case:
``.JPG`` counts), hidden files ignored, in natural order (``2.jpg`` before ``10.jpg``). The class
word ("dog") comes from the caller, else from ``prompts.txt`` (the text before the ``*`` identity
token), else from the folder name (``plushie_grey_sloth2`` → ``plushie grey sloth``).

**Motion folder** — a few clips of one action, in one of two layouts:

* the DualReal layout: ``videos/`` + ``videos.txt`` (clip paths relative to the motion folder, one a
  line) + ``prompts.txt`` (one prompt per clip, ``a person is playing guitar``);
* any folder of clips (mp4/avi/gif/webm/mov/mkv, in ``videos/`` or directly in the folder), in
  natural order. Without ``prompts.txt`` every clip's prompt is derived from the folder name:
  ``a person is <name>`` with ``_``/``-`` and camelCase split into words (``playingGuitar`` →
  ``a person is playing guitar``).

Text files are UTF-8 (a BOM is allowed); trailing empty lines are ignored; an empty line in the
middle is an error. Every problem raises :class:`DataError` with a one-line message that names the
file. Readers only list and validate: decoding happens once, in :func:`benchmark.grid.decode_case`.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, MediaError
from dualreal.engine.errors import cause_line

__all__ = [
    "DataError",
    "IdentityFolder",
    "MotionFolder",
    "list_identity_images",
    "list_identity_masks",
    "load_identity",
    "load_motion",
    "read_text",
    "read_lines",
    "natural_key",
    "class_word_from_name",
    "motion_prompt_from_name",
    "IDENTITY_TOKEN",
    "error_line",
]

#: The placeholder token of the identity in prompts (``"dog * is surfing"``).
IDENTITY_TOKEN = "*"


class DataError(ValueError):
    """An identity folder, motion folder, grid or text file that cannot be used.

    The message is one line and names the offending file or folder.
    """


def error_line(exc: BaseException) -> str:
    """An error as the one line a failed row or record carries (:func:`dualreal.engine.errors.cause_line`):
    a :class:`DataError` or :class:`~benchmark.media.MediaError` as its message (it names the file),
    any other error as ``"<Type>: <cause>"``."""
    return cause_line(exc, with_type=not isinstance(exc, (DataError, MediaError)))


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: ``"2.jpg" < "10.jpg"``; ties broken by the name."""
    parts = re.split(r"(\d+)", name.casefold())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), name


def read_text(path: str | os.PathLike, what: str = "text file") -> str:
    """Read a text file as people save it: UTF-8, with or without a byte-order mark.

    The one reader of every text file a user gives dualbench (prompt files, grids, ``cases.json``,
    the folders' ``prompts.txt`` / ``videos.txt`` / ``eval_prompts.txt``). A UTF-8 BOM (Windows
    Notepad, Excel's "CSV UTF-8") is removed; ``\r\n`` and ``\r`` line ends are left to the caller's
    ``splitlines``.

    Raises:
        DataError: missing, a folder, unreadable, or not UTF-8 — ``"<path>: not UTF-8 at line 3,
            column 5 (byte 0xe9); save it as UTF-8"``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)  # utf-8-sig counts after the BOM
        head = raw[:start]
        line = head.count(b"\n") + 1
        line_start = head.rfind(b"\n") + 1
        column = len(raw[line_start:start].decode("utf-8-sig", errors="replace")) + 1  # characters, as editors count
        raise DataError(
            f"{path}: not UTF-8 at line {line}, column {column} (byte 0x{raw[start]:02x}); save it as UTF-8"
        ) from None


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a UTF-8 text file (:func:`read_text`: a BOM is allowed) as stripped lines.

    ``\r\n`` and ``\r`` line ends are accepted, every line is stripped of surrounding whitespace,
    and trailing empty lines are dropped.

    Returns:
        The lines (possibly an empty list for an empty file).

    Raises:
        DataError: the file is missing, unreadable, not UTF-8 (line and column named), or has an
            empty line followed by a non-empty one.
    """
    path = Path(path)
    lines = [line.strip() for line in read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    for i, line in enumerate(lines, start=1):
        if not line:
            raise DataError(f"{path}: line {i} is empty (only trailing empty lines are allowed)")
    return lines


def _require_folder(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} folder not found")
    if not path.is_dir():
        raise DataError(f"{path}: is a file, expected the {what} folder")
    return path


def _resolve_file(path: Path, listed_in: Path | None = None) -> Path:
    """``path`` resolved through symlinks; DataError if missing, a loop, or not a regular file."""
    where = f" (listed in {listed_in})" if listed_in else ""
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        what = "broken symlink" if path.is_symlink() else "file not found"
        raise DataError(f"{path}: {what}{where}") from None
    except (RuntimeError, OSError) as exc:  # RuntimeError: symlink loop on Python < 3.13
        what = "symlink loop" if "loop" in str(exc).lower() or path.is_symlink() else str(exc)
        raise DataError(f"{path}: {what}{where}") from None
    if not resolved.is_file():
        raise DataError(f"{path}: not a regular file{where}")
    return resolved


def _extensions(extensions: tuple[str, ...]) -> str:
    """``png/jpg/jpeg/…`` for messages."""
    return "/".join(e.lstrip(".") for e in extensions)


def _list_media_in(folder: Path, subfolder: str, extensions: tuple[str, ...]) -> tuple[Path, list[Path]]:
    """``(source, files)``: the media of ``folder/subfolder`` if that folder exists, else of ``folder``."""
    sub = folder / subfolder
    source = sub if sub.is_dir() else folder
    return source, _list_media(source, extensions)


def _list_media(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Non-hidden entries of ``folder`` with one of ``extensions`` (any case), natural order."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list ({exc.strerror or exc.__class__.__name__})") from None
    found = [
        p
        for p in entries
        if not p.name.startswith(".") and p.suffix.lower() in extensions and not p.is_dir()
    ]
    for p in found:
        _resolve_file(p)  # symlink loops and broken links fail here, naming the file
    return sorted(found, key=lambda p: natural_key(p.name))


def _name_to_words(name: str) -> str:
    """``"plushie_grey-sloth"`` → ``"plushie grey sloth"``; ``"playingGuitar"`` → ``"playing guitar"``;
    ``"my dog (2)"`` → ``"my dog 2"``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    words = re.sub(r"[\W_]+", " ", words)  # any run of non-letters/digits separates words
    return " ".join(words.split()).lower()


def class_word_from_name(name: str) -> str:
    """Class word guessed from an identity folder name: words, trailing digits dropped.

    ``"dog10"`` → ``"dog"``, ``"plushie_2"`` → ``"plushie"``, ``"toy_bear"`` → ``"toy bear"``.
    """
    words = _name_to_words(name).split()
    words = [re.sub(r"\d+$", "", w) for w in words]
    return " ".join(w for w in words if w)


def _class_word_from_prompt(prompt: str, file: Path) -> str:
    head, sep, _ = prompt.partition(IDENTITY_TOKEN)
    if not sep:
        raise DataError(f"{file}: prompt {prompt!r} has no identity token {IDENTITY_TOKEN!r}")
    word = head.strip()
    if not word:
        raise DataError(f"{file}: prompt {prompt!r} has no class word before {IDENTITY_TOKEN!r}")
    return word


# --------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentityFolder:
    """An identity folder, listed and validated (nothing decoded).

    Attributes:
        path: the folder (absolute).
        name: the folder name (``"dog"``), used in case names.
        images: image files, natural order, absolute.
        prompts: one training prompt per image (``"dog *"``).
        class_word: the class noun (``"dog"``, ``"plushie bear"``).
        eval_prompts: lines of ``eval_prompts.txt``; empty when the file is absent.
        masks: one mask file per image (same order), when the folder has ``masks/``; else ``None``.
    """

    path: Path
    name: str
    images: list[Path]
    prompts: list[str]
    class_word: str
    eval_prompts: list[str] = field(default_factory=list)
    masks: list[Path] | None = None


def list_identity_images(path: str | os.PathLike) -> list[Path]:
    """The images of an identity folder — the one lister of identity and reference images.

    The files of ``path/images/`` (or of ``path`` itself when it has no ``images/``) with an
    extension in :data:`benchmark.media.IMAGE_EXTENSIONS` (any case), hidden files ignored, in
    natural order. The same files train a method (:func:`load_identity`) and serve as the
    CLIP-I / DINO-I references of ``dualbench run`` and ``dualbench eval --refs``.

    Returns:
        Absolute paths, at least one.

    Raises:
        DataError: folder missing, no image, or a broken link or symlink loop among the images.
    """
    folder = _require_folder(Path(os.path.abspath(path)), "identity")
    source, images = _list_media_in(folder, "images", IMAGE_EXTENSIONS)
    if not images:
        raise DataError(f"{source}: no images ({_extensions(IMAGE_EXTENSIONS)}) in the identity folder")
    return images


def list_identity_masks(folder: Path, images: list[Path]) -> list[Path] | None:
    """The subject masks of an identity folder: ``folder/masks/<stem>.<image extension>`` for every
    image, in the images' order; ``None`` when there is no ``masks/`` folder.

    Raises:
        DataError: ``masks/`` without a mask for some image, with a mask for no image, or with two
            masks for one stem (the message names them).
    """
    masks_dir = folder / "masks"
    if not masks_dir.is_dir():
        return None
    found = _list_media(masks_dir, IMAGE_EXTENSIONS)
    by_stem: dict[str, Path] = {}
    for m in found:
        if m.stem in by_stem:
            raise DataError(f"{masks_dir}: two masks for {m.stem!r} ({by_stem[m.stem].name}, {m.name})")
        by_stem[m.stem] = m
    stems = [img.stem for img in images]
    missing = [s for s in stems if s not in by_stem]
    extra = sorted(set(by_stem) - set(stems))
    if missing or extra:
        parts = ([f"no mask for {', '.join(missing)}"] if missing else []) + ([f"masks without an image: {', '.join(extra)}"] if extra else [])
        raise DataError(f"{masks_dir}: {'; '.join(parts)} (masks/ needs one mask per image, same stems)")
    return [by_stem[s] for s in stems]


def load_identity(path: str | os.PathLike, class_word: str | None = None) -> IdentityFolder:
    """List and validate an identity folder (layout in the module docstring).

    Args:
        path: the identity folder.
        class_word: the class noun; default: from ``prompts.txt``, else from the folder name.

    Returns:
        :class:`IdentityFolder`. Without ``prompts.txt`` every prompt is ``f"{class_word} *"``.

    Raises:
        DataError: folder missing; no images; ``images/`` present but without images; a symlink
            loop or broken link among the images; ``prompts.txt`` neither one line nor one line
            per image, or a prompt without the ``*`` token; a text file that is not UTF-8; ``masks/``
            that does not hold one mask per image (:func:`list_identity_masks`).
    """
    folder = _require_folder(Path(os.path.abspath(path)), "identity")
    images = list_identity_images(folder)
    source = images[0].parent

    prompts_file = folder / "prompts.txt"
    if prompts_file.exists():
        prompts = read_lines(prompts_file)
        if not prompts:
            raise DataError(f"{prompts_file}: no prompts (expected 'dog *'-style lines)")
        if len(prompts) == 1:
            prompts = prompts * len(images)
        elif len(prompts) != len(images):
            raise DataError(
                f"{prompts_file}: {len(prompts)} prompts for {len(images)} images in {source} "
                "(expected one line per image, or a single line)"
            )
        for prompt in prompts:
            _class_word_from_prompt(prompt, prompts_file)
        word = class_word or _class_word_from_prompt(prompts[0], prompts_file)
    else:
        word = class_word or class_word_from_name(folder.name)
        if not word:
            raise DataError(
                f"{folder}: cannot guess a class word from the folder name; add prompts.txt "
                "('dog *') or give class_word"
            )
        prompts = [f"{word} {IDENTITY_TOKEN}"] * len(images)

    eval_file = folder / "eval_prompts.txt"
    eval_prompts = read_lines(eval_file) if eval_file.exists() else []
    return IdentityFolder(
        path=folder,
        name=folder.name,
        images=images,
        prompts=prompts,
        class_word=word.strip(),
        eval_prompts=eval_prompts,
        masks=list_identity_masks(folder, images),
    )


# --------------------------------------------------------------------------------------------
# motion
# --------------------------------------------------------------------------------------------

_SUBJECT = re.compile(r"^.*?\b(?:is|are)\s+(?P<phrase>.+)$", re.IGNORECASE)


@dataclass(frozen=True)
class MotionFolder:
    """A motion folder, listed and validated (nothing decoded).

    Attributes:
        path: the folder (absolute).
        name: the folder name (``"playingGuitar"``), used in case names.
        clips: clip files, absolute, in ``videos.txt`` order (DualReal layout) or natural order.
        prompts: one training prompt per clip (``"a person is playing guitar"``).
        layout: ``"dualreal"`` (``videos.txt`` present) or ``"folder"``.
    """

    path: Path
    name: str
    clips: list[Path]
    prompts: list[str]
    layout: str

    @property
    def motion_phrase(self) -> str:
        """The first prompt without its subject: ``"a person is playing guitar"`` → ``"playing guitar"``.

        The subject is everything up to the first ``is``/``are``; a prompt without one is returned
        whole. Used for ``{motion}`` in grid templates.
        """
        prompt = self.prompts[0]
        match = _SUBJECT.match(prompt)
        return match.group("phrase").strip() if match else prompt


def _clips_from_list(folder: Path, list_file: Path) -> list[Path]:
    entries = read_lines(list_file)
    if not entries:
        raise DataError(f"{list_file}: lists no clips")
    root = folder.resolve()
    clips: list[Path] = []
    seen: set[Path] = set()
    for i, entry in enumerate(entries, start=1):
        rel = Path(entry)
        if rel.is_absolute() or entry.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", entry):
            raise DataError(f"{list_file}: line {i} ({entry!r}) is an absolute path; list clips relative to {folder}")
        if ".." in rel.parts:
            raise DataError(f"{list_file}: line {i} ({entry!r}) leaves the motion folder ('..')")
        clip = folder / rel
        resolved = _resolve_file(clip, listed_in=list_file)
        if not resolved.is_relative_to(root):
            raise DataError(
                f"{list_file}: line {i} ({entry!r}) resolves outside the motion folder (to {resolved})"
            )
        if clip.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"{list_file}: line {i} ({entry!r}) is not a video file ({_extensions(VIDEO_EXTENSIONS)})")
        if resolved in seen:
            raise DataError(f"{list_file}: line {i} ({entry!r}) lists a clip twice")
        seen.add(resolved)
        clips.append(clip)
    return clips


def motion_prompt_from_name(name: str) -> str:
    """The prompt of a motion folder without ``prompts.txt``: ``"a person is <words of name>"``.

    ``"walking"`` → ``"a person is walking"``, ``"playingGuitar"`` → ``"a person is playing guitar"``.
    """
    return f"a person is {_name_to_words(name)}"


def load_motion(path: str | os.PathLike) -> MotionFolder:
    """List and validate a motion folder (both layouts in the module docstring).

    Args:
        path: the motion folder.

    Returns:
        :class:`MotionFolder`.

    Raises:
        DataError: folder missing; no clips; a ``videos.txt`` line that is absolute, contains
            ``..``, resolves (through symlinks) outside the folder, is missing, a symlink loop, not
            a video extension or a duplicate; ``prompts.txt`` with a line count different from the
            clip count; a text file that is not UTF-8.
    """
    folder = _require_folder(Path(os.path.abspath(path)), "motion")
    list_file = folder / "videos.txt"
    if list_file.exists():
        layout = "dualreal"
        clips = _clips_from_list(folder, list_file)
        source = list_file
    else:
        layout = "folder"
        source, clips = _list_media_in(folder, "videos", VIDEO_EXTENSIONS)
        if not clips:
            raise DataError(f"{source}: no clips ({_extensions(VIDEO_EXTENSIONS)}) and no videos.txt in the motion folder")

    prompts_file = folder / "prompts.txt"
    if prompts_file.exists():
        prompts = read_lines(prompts_file)
        if len(prompts) != len(clips):
            raise DataError(
                f"{prompts_file}: {len(prompts)} prompts for {len(clips)} clips "
                f"(from {source}); expected one line per clip"
            )
    else:
        prompts = [motion_prompt_from_name(folder.name)] * len(clips)
    return MotionFolder(path=folder, name=folder.name, clips=clips, prompts=prompts, layout=layout)
