"""Reading and writing images and videos — one decoder (PyAV / FFmpeg) for everything.

Every reader returns uint8 tensors, channels last, on CPU, and raises :class:`MediaError` with a
one-line message that names the file. Nothing here resizes unless asked to.
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from dualreal.engine.errors import cause_line
from dualreal.engine.io import atomic_path

__all__ = [
    "MediaError",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "DECODER",
    "read_image",
    "read_video",
    "write_video",
    "gif_fps",
    "frames_sha256",
    "file_sha256",
    "BLANK_STD",
    "FROZEN_MAE",
    "DEGENERATE_RULE",
    "degenerate_note",
    "RESIZE_MODES",
    "resize_frames",
    "video_frame_count",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: How :func:`resize_frames` reaches a size: ``stretch`` (no crop, aspect ratio not kept) or ``crop``.
RESIZE_MODES = ("stretch", "crop")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".gif", ".webm", ".mov", ".mkv")


def _decoder_name() -> str:
    try:
        import av

        return f"pyav-{av.__version__}"
    except Exception:  # pragma: no cover - av is a hard dependency
        return "pyav-missing"


#: Name of the decoder, recorded in every result's provenance (docs/METRICS.md, "Decoding").
DECODER = _decoder_name()


class MediaError(ValueError):
    """A file that cannot be used as an image or a video. The message names the file."""


def _check_file(path: Path) -> None:
    """Raise :class:`MediaError` unless ``path`` is a non-empty regular file (symlinks followed)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise MediaError(f"{path}: broken symlink (target missing)") from None
        raise MediaError(f"{path}: file not found") from None
    except OSError as exc:  # ELOOP (symlink loop), EACCES, ENAMETOOLONG, ...
        what = "symlink loop" if path.is_symlink() else exc.strerror or exc.__class__.__name__
        raise MediaError(f"{path}: cannot open ({what})") from None
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not a file")
    if st.st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def _cause(exc: BaseException, path: Path) -> str:
    """The decoder's reason for refusing ``path``, one line (:func:`~dualreal.engine.errors.cause_line`),
    without the file name the message already starts with: PIL's ``cannot identify image file
    '<path>'`` becomes ``UnidentifiedImageError: cannot identify image file``, PyAV's
    ``[Errno 1094995529] Invalid data found when processing input: '<path>'`` becomes
    ``InvalidDataError: [Errno 1094995529] Invalid data found when processing input``."""
    line = cause_line(exc)
    for name in (repr(str(path)), f"'{path}'", str(path)):
        line = line.replace(f": {name}", "").replace(f" {name}", "")
    return line


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image as RGB uint8.

    Conversions (all lossless or standard): EXIF orientation applied; grayscale (``L``, ``LA``)
    replicated to 3 channels; palette → RGB; RGBA/LA composited over white; 16-bit (``I;16``, ``I``)
    scaled to 8 bit by ``>> 8`` semantics (value / 257, rounded); CMYK → RGB with PIL's converter.

    Args:
        path: image file (png/jpg/jpeg/webp/bmp).

    Returns:
        uint8 tensor ``(H, W, 3)``.

    Raises:
        MediaError: missing, empty (0 bytes), a folder, a symlink loop, unreadable or not an image.
    """
    from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    # Some libraries (vbench's AMT utilities) set PIL's global LOAD_TRUNCATED_IMAGES on import,
    # which would turn a truncated file into silently grey pixels: read strictly regardless.
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
                arr = np.clip(np.round(arr / hi * 255.0), 0, 255).astype(np.uint8)
                arr = np.repeat(arr[..., None], 3, axis=2)
            elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                arr = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise MediaError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise MediaError(f"{path}: not a readable image ({_cause(exc, path)})") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient
    if arr.size == 0:
        raise MediaError(f"{path}: empty image")
    # np.asarray(PIL image) is read-only; torch wants a writable buffer.
    return torch.from_numpy(np.array(arr, dtype=np.uint8, order="C", copy=True))


def read_video(
    path: str | os.PathLike, *, max_frames: int | None = None, min_frames: int = 1
) -> tuple[torch.Tensor, float]:
    """Decode a video (or animated GIF) with PyAV into RGB uint8 frames.

    Frames whose size differs from the first frame (GIFs can do this) are rescaled to the first
    frame's size, so the result is always one tensor. A rotation in the container's display matrix
    (phone videos) is applied, as players and ``ffmpeg`` do, so frames come out upright.

    GIF timing is taken as browsers play it (:func:`gif_fps`): each frame's delay, where a delay
    under 2 centiseconds (0 or 1, "as fast as possible") counts as 10 centiseconds — what Chrome,
    Firefox and Safari do — and the frame rate is the frames decoded over the sum of their delays.
    FFmpeg's own average rate differs (a GIF of 1-cs delays reads as 100 fps, one of 0-cs delays
    as 12.5 fps); the rate returned here is the one every score and row records (``fps``).

    Args:
        path: video file (mp4/avi/gif/webm/mov/mkv, anything FFmpeg reads).
        max_frames: stop after this many frames (``None``: all).
        min_frames: raise if fewer frames decode.

    Returns:
        ``(frames, fps)``: uint8 tensor ``(F, H, W, 3)`` and the stream's average frame rate
        (frames per second; 8.0 when the container does not say).

    Raises:
        MediaError: missing, empty (0 bytes), a folder, a symlink loop, unreadable, or fewer than
            ``min_frames`` frames.
    """
    import av

    path = Path(path)
    _check_file(path)
    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 8.0
            size = None
            quarter_turns = 0
            is_gif = container.format.name == "gif"
            delays: list[float | None] = []
            for frame in container.decode(stream):
                if is_gif:
                    delays.append(float(frame.duration * frame.time_base) if frame.duration and frame.time_base else None)
                if size is None:
                    size = (frame.width, frame.height)
                    # Display matrix (phone videos): FFmpeg's angle is counter-clockwise.
                    quarter_turns = round(getattr(frame, "rotation", 0) / 90) % 4
                if (frame.width, frame.height) != size:
                    frame = frame.reformat(width=size[0], height=size[1])
                arr = frame.to_ndarray(format="rgb24")
                if quarter_turns:
                    arr = np.ascontiguousarray(np.rot90(arr, k=quarter_turns, axes=(0, 1)))
                frames.append(arr)
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except MediaError:
        raise
    except Exception as exc:  # noqa: BLE001 - FFmpeg raises many types; all mean "unreadable"
        if not frames:
            raise MediaError(f"{path}: not a readable video ({_cause(exc, path)})") from None
        # A truncated file: keep what decoded; the caller's min_frames decides.
    if len(frames) < min_frames:
        what = "no frames" if not frames else f"{len(frames)} frame(s)"
        raise MediaError(f"{path}: {what}, need at least {min_frames}")
    if is_gif and delays:
        fps = gif_fps(delays[: len(frames)])
    return torch.from_numpy(np.stack(frames)), fps


def video_frame_count(path: str | os.PathLike) -> int | None:
    """The frame count the container declares for its first video stream (PyAV ``stream.frames``),
    without decoding; ``None`` when it declares none (some WebM / GIF files) or cannot be opened."""
    import av

    try:
        with av.open(str(path)) as container:
            n = int(container.streams.video[0].frames) if container.streams.video else 0
    except Exception:  # noqa: BLE001 - only a count for the record; read_video reports unreadable files
        return None
    return n or None


#: A GIF frame delay below this (seconds) is played as :data:`GIF_DEFAULT_DELAY` by browsers.
GIF_MIN_DELAY = 0.02
#: The delay browsers give a GIF frame whose delay is below :data:`GIF_MIN_DELAY` (seconds).
GIF_DEFAULT_DELAY = 0.1


def gif_fps(delays: list[float | None]) -> float:
    """The frame rate of a GIF as browsers play it: frames over the sum of their delays, where a
    delay under 2 centiseconds (:data:`GIF_MIN_DELAY`: 0 or 1 cs, or unknown) counts as 10 cs
    (:data:`GIF_DEFAULT_DELAY`) — Chrome, Firefox and Safari's rule, and FFmpeg's ``gif`` demuxer
    default for a zero delay.

    Args:
        delays: each frame's delay in seconds (None: not given).

    Returns:
        Frames per second (10.0 for GIFs whose delays are all under 2 cs).
    """
    played = [d if d is not None and d >= GIF_MIN_DELAY - 1e-9 else GIF_DEFAULT_DELAY for d in delays]
    return len(played) / sum(played)


def write_video(
    path: str | os.PathLike, frames: torch.Tensor, fps: float = 8, *, crf: int = 12, lossless: bool = False
) -> Path:
    """Write uint8 frames ``(F, H, W, 3)`` as an H.264 mp4, atomically.

    Two encodings:

    * default: ``libx264`` in yuv420p at CRF ``crf`` (plays everywhere; lossy). Odd sizes are padded
      to even by edge replication (yuv420p needs even sizes).
    * ``lossless=True``: ``libx264rgb`` in rgb24 at QP 0 — H.264's lossless mode on the RGB planes,
      so :func:`read_video` returns exactly ``frames`` (any size; browsers may not play it). The
      same file from the command line: ``ffmpeg -i frame_%03d.png -c:v libx264rgb -qp 0
      -pix_fmt rgb24 out.mp4``. This is how videos made outside dualbench keep their frames
      bit-exact for ``dualbench score``.

    The file appears under its final name only once complete (:func:`dualreal.engine.io.atomic_path`),
    so an interrupted write never leaves a half mp4 behind.

    Raises:
        MediaError: wrong shape or dtype.
    """
    import av

    path = Path(path)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise MediaError(
            f"{path}: expected uint8 frames (F, H, W, 3), got {tuple(frames.shape)} {frames.dtype}"
        )
    arr = frames.cpu().numpy()
    if lossless:
        codec, pix_fmt, options = "libx264rgb", "rgb24", {"qp": "0", "preset": "medium"}
    else:
        pad_h, pad_w = arr.shape[1] % 2, arr.shape[2] % 2
        if pad_h or pad_w:
            arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        codec, pix_fmt, options = "libx264", "yuv420p", {"crf": str(crf), "preset": "medium"}
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = arr.shape[2], arr.shape[1]
            stream.pix_fmt = pix_fmt
            # Note: identical frames do not always give identical files (seen here with PyAV 18:
            # decoded pixels differed by up to 15 grey levels on noise-like frames between two
            # encodes in one process, whatever the thread settings), so exact reproducibility is
            # checked on the generated frames (records carry their SHA-256), not on mp4 bytes.
            stream.codec_context.options = options
            for img in arr:
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path


def frames_sha256(frames: torch.Tensor) -> str:
    """SHA-256 (64 hex digits) of uint8 frames ``(F, H, W, 3)``: their raw bytes in C order.

    Records carry it as ``frames_sha256``: the generated frames for ``dualbench run``, the decoded
    frames for ``dualbench score``, so equal values mean bit-identical pixels.
    """
    return hashlib.sha256(frames.contiguous().cpu().numpy().tobytes()).hexdigest()


#: A frame is blank when the standard deviation of its pixel values (over height, width and
#: channels, on the 0–255 scale) is below this: one flat colour, give or take codec noise.
BLANK_STD = 2.0
#: A video is frozen when every frame differs from the first by a mean absolute difference below
#: this many grey levels (0–255 scale): the picture does not change.
FROZEN_MAE = 1.0
#: The rule of :func:`degenerate_note`, as docs and tables state it.
DEGENERATE_RULE = (f"blank (every frame's pixel standard deviation < {BLANK_STD:g} grey levels) or frozen "
                   f"(every frame within a mean absolute difference of {FROZEN_MAE:g} grey level of the first)")


def degenerate_note(frames: torch.Tensor) -> str:
    """Why a video is degenerate — constant frames, or nearly so — or ``""`` when it is not.

    The rule (:data:`DEGENERATE_RULE`): **blank** when every frame's pixel standard deviation is
    below :data:`BLANK_STD` (an all-black video, a flat grey one); **frozen** when the video has at
    least two frames and each differs from the first by a mean absolute difference below
    :data:`FROZEN_MAE`. Such videos are still scored and averaged — they are what the method made —
    but flagged (``degenerate``, ``degenerate_note`` in every row), since their temporal scores are
    perfect by construction (temporal flickering 1.0).

    Args:
        frames: uint8 ``(F, H, W, 3)``.

    Returns:
        ``"blank: …"``, ``"frozen: …"`` or ``""``; computed one frame at a time (no float copy of
        the whole video).
    """
    first = frames[0].to(torch.float32)
    stds, maes = [], []
    for f in frames:
        x = f.to(torch.float32)
        stds.append(float(x.std(correction=0)))
        maes.append(float((x - first).abs().mean()))
    if max(stds) < BLANK_STD:
        return f"blank: every frame is one flat colour (largest pixel std {max(stds):.2f} < {BLANK_STD:g})"
    if len(maes) > 1 and max(maes) < FROZEN_MAE:
        return (f"frozen: no frame differs from the first by more than {max(maes):.2f} grey levels on average "
                f"(< {FROZEN_MAE:g})")
    return ""


_FILE_SHA: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (64 hex digits) of a file's bytes, memoised per resolved path, size and mtime.

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _FILE_SHA[key] = h.hexdigest()
    return _FILE_SHA[key]


def resize_frames(frames: torch.Tensor, height: int, width: int, *, mode: str) -> torch.Tensor:
    """Bring frames to ``(height, width)``: stretched, or covered and centre-cropped.

    Args:
        frames: uint8 ``(H, W, 3)`` or ``(F, H, W, 3)``.
        height, width: the target size.
        mode: ``"stretch"`` — one resize to exactly ``(height, width)``, aspect ratio not kept,
            nothing cut (what DualReal's training loader does: ``decord.VideoReader(uri, width,
            height)``, ``wenc-k/DualReal`` ``train/train_adapter.py`` lines 656 and 848); ``"crop"``
            — resize so the target is covered, keeping the aspect ratio, then cut the centre
            ``(height, width)``.

    Returns:
        uint8 of the same rank, spatial size ``(height, width)``; bilinear with antialiasing
        (unchanged when already that size).

    Raises:
        ValueError: an unknown ``mode``.
    """
    import torch.nn.functional as F

    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    single = frames.ndim == 3
    x = frames[None] if single else frames
    x = x.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if mode == "stretch":
        nh, nw = height, width
    else:
        scale = max(height / h, width / w)
        nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - height) // 2, (nw - width) // 2
    x = x[..., top : top + height, left : left + width]
    out = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return out[0] if single else out
