"""Atomic file writes: the one helper every writer of the project uses.

A reader (another rank, a resumed run, ``dualbench table`` running beside ``dualbench run``) sees
either the old file or the whole new one, never a part: the content goes to a temporary file in the
same folder (same filesystem, so the rename is atomic), is flushed to disk with ``fsync``, and is
renamed over the target. Temporary names end in ``.part``; the run loop deletes leftovers of killed
processes by that suffix.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "PART_SUFFIX",
    "atomic_path",
    "atomic_replace",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
]

#: Suffix of every temporary file written by :func:`atomic_path`.
PART_SUFFIX = ".part"


def _fsync(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder entry's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened / synced
        _fsync(folder)


def atomic_replace(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Publish a finished file: ``fsync`` ``src``, rename it over ``dst``, sync ``dst``'s folder.

    ``src`` must be on the same filesystem as ``dst`` (e.g. in the same folder or a sibling
    staging folder), so that the rename is atomic. Returns ``dst``.
    """
    dst = Path(dst)
    _fsync(src)
    os.replace(src, dst)
    _fsync_dir(dst.parent)
    return dst


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the block ends without error.

    Use it for writers that want a file name (PyAV, pandas, safetensors)::

        with atomic_path(out) as tmp:
            df.to_parquet(tmp)

    The temporary file is created empty with mode ``0666 & ~umask`` (``mkstemp`` would make it
    ``0600``), named ``.<name>.<pid>.<random><suffix>.part``; ``suffix`` keeps an extension that the
    writer needs to pick its format (``".mp4"``). On success the file is ``fsync``-ed, renamed over
    ``path`` and the folder entry is synced; on any exception it is deleted and the exception
    propagates.

    Args:
        path: the final file; missing parent folders are created.
        suffix: extension to put before ``.part`` on the temporary name.

    Yields:
        The temporary path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}{PART_SUFFIX}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        atomic_replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`). Returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`). Returns ``path``."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2, **kwargs: Any) -> Path:
    """``json.dumps(data, indent=indent, **kwargs)`` plus a newline, written atomically."""
    return atomic_write_text(path, json.dumps(data, indent=indent, **kwargs) + "\n")
