"""Shared fixtures. Real data comes from ../shared/data (read-only in CI: copy before modifying).

* ``shared_data`` / ``dualreal_bench``: the read-only real data (never write there).
* ``tiny_backbone``: the ``tiny`` CogVideoX preset, built once per session.
* ``make_frames(n, h, w)``: a smooth, moving uint8 test pattern ``(n, h, w, 3)``.
* ``make_video(path, n, h, w)``: an H.264 mp4 of that pattern (via ``benchmark.media.write_video``).
* ``make_identity(...)`` / ``make_motion(...)``: valid identity and motion folders.
* ``bad_media(kind)``: a broken or unusual file; ``BAD_MEDIA_KINDS`` lists the kinds.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process: the suite runs subprocesses beside itself on 2 cores, and torch's
# intra-op threads then spin against each other (seen: 10-50x slower). Subprocesses inherit this.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

BAD_MEDIA_KINDS = (
    "zero_byte_mp4",  # 0 bytes
    "text_as_mp4",  # a text file named .mp4
    "truncated_mp4",  # first half of a valid mp4 (its index is at the end: unreadable)
    "one_frame_mp4",  # valid, 1 frame
    "three_frame_mp4",  # valid, 3 frames (< 5: no 4k+1 clip with k >= 1)
    "symlink_loop_mp4",  # a symlink pointing at itself
    "gif_varying_sizes",  # animated GIF whose frames have different sizes
    "zero_byte_png",
    "text_as_jpg",
    "non_utf8_txt",  # Latin-1 bytes
)


def moving_pattern(n: int, h: int, w: int) -> torch.Tensor:
    """uint8 ``(n, h, w, 3)``: smooth gradients shifting by 3 px per frame (codec friendly)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for t in range(n):
        r = 128 + 100 * np.sin((x + 3 * t) / 9.0)
        g = 128 + 100 * np.cos((y + 2 * t) / 7.0)
        b = np.full_like(x, 40 + (t * 13) % 180)
        frames.append(np.stack([r, g, b], axis=-1))
    return torch.from_numpy(np.clip(np.stack(frames), 0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (the real benchmark and samples); fails loudly if it is not there."""
    assert SHARED_DATA.is_dir(), f"{SHARED_DATA} is missing: the tests need ../shared/data beside the repo"
    return SHARED_DATA


@pytest.fixture(scope="session")
def dualreal_bench(shared_data: Path) -> Path:
    """The DualReal paper's benchmark folder (cases.json, identities/, motions/)."""
    return shared_data / "dualreal-bench"


@pytest.fixture(scope="session")
def tiny_backbone():
    """The ``tiny`` CogVideoX preset (seeded random weights), built once per test session.

    Tests must not modify it in place (methods attach adapters to their own copies).
    """
    from dualreal.engine.backbone import load_backbone

    return load_backbone("tiny")


@pytest.fixture
def make_frames():
    """``make_frames(n=9, h=32, w=48)`` → :func:`moving_pattern`."""

    def _make(n: int = 9, h: int = 32, w: int = 48) -> torch.Tensor:
        return moving_pattern(n, h, w)

    return _make


@pytest.fixture
def make_video(tmp_path: Path):
    """``make_video(path=None, n=9, h=32, w=48, fps=8)`` → path of a new mp4 (relative to tmp_path)."""
    from benchmark.media import write_video

    def _make(path: str | os.PathLike | None = None, n: int = 9, h: int = 32, w: int = 48, fps: float = 8) -> Path:
        target = tmp_path / (path or f"clip_{n}x{h}x{w}.mp4")
        return write_video(target, moving_pattern(n, h, w), fps=fps)

    return _make


@pytest.fixture
def make_identity(tmp_path: Path):
    """``make_identity(name="dog", n=3, prompts=["dog *"], in_images=True, ext=".png")`` → folder.

    ``prompts=None`` writes no prompts.txt; ``eval_prompts`` (list) writes eval_prompts.txt.
    """
    from PIL import Image

    def _make(
        name: str = "dog",
        n: int = 3,
        prompts: list[str] | None = ("dog *",),
        in_images: bool = True,
        ext: str = ".png",
        eval_prompts: list[str] | None = None,
        parent: Path | None = None,
    ) -> Path:
        folder = (parent or tmp_path / "identities") / name
        image_dir = folder / "images" if in_images else folder
        image_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.zeros((24, 36, 3), np.uint8)
            arr[..., 0] = 40 * i
            arr[..., 1] = 200
            Image.fromarray(arr).save(image_dir / f"{i:02d}{ext}")
        if prompts is not None:
            (folder / "prompts.txt").write_text("".join(f"{p}\n" for p in prompts), encoding="utf-8")
        if eval_prompts is not None:
            (folder / "eval_prompts.txt").write_text("".join(f"{p}\n" for p in eval_prompts), encoding="utf-8")
        return folder

    return _make


@pytest.fixture
def make_motion(tmp_path: Path):
    """``make_motion(name="walking", n=2, layout="dualreal", frames=9, prompt=...)`` → folder.

    ``layout="dualreal"`` writes videos/ + videos.txt + prompts.txt (one line per clip);
    ``layout="folder"`` only the clips, directly in the folder. ``names`` overrides clip file names.
    """
    from benchmark.media import write_video

    def _make(
        name: str = "walking",
        n: int = 2,
        layout: str = "dualreal",
        frames: int = 9,
        prompt: str = "a person is walking",
        names: list[str] | None = None,
        parent: Path | None = None,
    ) -> Path:
        folder = (parent or tmp_path / "motions") / name
        names = names or [f"clip_{i}.mp4" for i in range(n)]
        sub = folder / "videos" if layout == "dualreal" else folder
        sub.mkdir(parents=True, exist_ok=True)
        for i, clip in enumerate(names):
            write_video(sub / clip, moving_pattern(frames + i, 24, 32), fps=8)
        if layout == "dualreal":
            (folder / "videos.txt").write_text("".join(f"videos/{c}\n" for c in names), encoding="utf-8")
            (folder / "prompts.txt").write_text(f"{prompt}\n" * len(names), encoding="utf-8")
        return folder

    return _make


@pytest.fixture
def bad_media(tmp_path: Path):
    """``bad_media(kind, name=None)`` → path of a new file of that kind (see ``BAD_MEDIA_KINDS``)."""
    from PIL import Image

    from benchmark.media import write_video

    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)

    def _make(kind: str, name: str | None = None) -> Path:
        if kind not in BAD_MEDIA_KINDS:
            raise ValueError(f"unknown bad_media kind {kind!r}; known: {', '.join(BAD_MEDIA_KINDS)}")
        default_ext = {"gif_varying_sizes": ".gif", "zero_byte_png": ".png", "text_as_jpg": ".jpg",
                       "non_utf8_txt": ".txt"}.get(kind, ".mp4")
        path = folder / (name or f"{kind}{default_ext}")
        if kind in ("zero_byte_mp4", "zero_byte_png"):
            path.write_bytes(b"")
        elif kind in ("text_as_mp4", "text_as_jpg"):
            path.write_text("this is not media\n", encoding="utf-8")
        elif kind == "truncated_mp4":
            full = write_video(folder / f".full_{path.name}", moving_pattern(9, 32, 48))
            data = full.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "one_frame_mp4":
            write_video(path, moving_pattern(1, 32, 48))
        elif kind == "three_frame_mp4":
            write_video(path, moving_pattern(3, 32, 48))
        elif kind == "symlink_loop_mp4":
            os.symlink(path.name, path)
        elif kind == "gif_varying_sizes":
            sizes = [(40, 30), (56, 40), (24, 18), (40, 30)]
            ims = [Image.new("RGB", s, (60 * i, 120, 200)) for i, s in enumerate(sizes)]
            buf = io.BytesIO()
            ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)
            path.write_bytes(buf.getvalue())
        elif kind == "non_utf8_txt":
            path.write_bytes("caf\u00e9 dog *\n".encode("latin-1"))
        return path

    return _make
