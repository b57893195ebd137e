"""Rebuild ``benchmark/sample`` (the built-in sample behind the ``smoke`` grid) from ../shared/data.

Sources (both CC-BY-4.0; see the CREDITS.md this script writes):

* identity: the DreamBooth dataset's ``dog`` (5 square JPEGs, 687²..781²) → 256² JPEG, quality 85;
* motion: Intel IoT DevKit sample-videos' walking GIFs (480×270, 12.5 fps) → 256×144 H.264 mp4 at
  the same frame rate (no resampling), trimmed to the longest 4k+1 prefix of at most 37 frames
  (≈3 s), written with :func:`benchmark.media.write_video`.

Usage (from the project root)::

    .venv/bin/python scripts/make_sample.py [--shared ../shared/data] [--out benchmark/sample]

Deterministic for a given Pillow / libx264 build: re-running overwrites the same files.
"""

from __future__ import annotations

import argparse
import io
import shutil
from pathlib import Path

from PIL import Image, ImageOps

from benchmark.media import read_video, resize_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "benchmark" / "sample"

IMAGE_SIZE = 256
JPEG_QUALITY = 85
VIDEO_SIZE = (144, 256)  # (height, width)
MAX_FRAMES = 37  # 4k+1, ≈3 s at 12.5 fps
VIDEO_CRF = 26

WALKING_CLIPS = [
    # (source GIF, sample mp4 name)
    ("face-demographics-walking.gif", "face-demographics-walking.mp4"),
    ("face-demographics-walking-and-pause.gif", "face-demographics-walking-and-pause.mp4"),
    ("people-detection.gif", "people-detection.mp4"),
]

CREDITS = """\
# Credits of the built-in sample

Everything in this folder is a modified copy (downscaled, re-encoded, trimmed) of material
published under the Creative Commons Attribution 4.0 International licence (CC-BY-4.0); the full
licence texts are kept beside the files (`identity/dog/LICENSE.md`, `motion/walking/LICENSE`).
Made by `scripts/make_sample.py`.

## identity/dog — DreamBooth dataset, subject `dog`

From the DreamBooth dataset (N. Ruiz, Y. Li, V. Jampani, Y. Pritch, M. Rubinstein, K. Aberman,
"DreamBooth: Fine Tuning Text-to-Image Diffusion Models for Subject-Driven Generation", CVPR 2023;
https://github.com/google/dreambooth), licensed CC-BY-4.0. Photos credited there to
https://unsplash.com/@alvannee, from unsplash.com under the Unsplash licence:

{image_credits}

Changes: resized to {size}×{size} pixels, re-encoded as JPEG (quality {quality}).

## motion/walking — Intel IoT DevKit sample videos

From the Intel IoT DevKit sample videos, https://github.com/intel-iot-devkit/sample-videos
(`preview/*.gif`), licensed CC-BY-4.0:

{video_credits}

Changes: converted from GIF to H.264 mp4, downscaled to {vw}×{vh} pixels, trimmed to the first
frames listed above (frame rate unchanged).
"""


def dog_credits(references: Path) -> dict[str, str]:
    """Image number → unsplash URL, from the DreamBooth references_and_licenses.txt ``dog:`` block."""
    lines = references.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "dog:")
    credits: dict[str, str] = {}
    for line in lines[start + 1 :]:
        line = line.strip()
        if not line:
            break
        key, _, value = line.partition(":")
        if key.isdigit():
            credits[key] = value.strip()
    return credits


def make_identity(shared: Path, out: Path) -> list[str]:
    src = shared / "samples" / "identities" / "dreambooth"
    dst = out / "identity" / "dog"
    (dst / "images").mkdir(parents=True, exist_ok=True)
    credits = dog_credits(src / "references_and_licenses.txt")
    lines = []
    images = sorted((src / "dog").glob("*.jpg"))
    for path in images:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            im = ImageOps.fit(im, (IMAGE_SIZE, IMAGE_SIZE), method=Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        (dst / "images" / path.name).write_bytes(buf.getvalue())
        lines.append(f"- `images/{path.name}`: {credits.get(path.stem, 'see references_and_licenses.txt')}")
    (dst / "prompts.txt").write_text("dog *\n" * len(images), encoding="utf-8")
    shutil.copyfile(src / "LICENSE.md", dst / "LICENSE.md")
    return lines


def make_motion(shared: Path, out: Path) -> list[str]:
    src = shared / "samples" / "motions" / "walking"
    dst = out / "motion" / "walking"
    (dst / "videos").mkdir(parents=True, exist_ok=True)
    lines, listed = [], []
    for gif, name in WALKING_CLIPS:
        frames, fps = read_video(src / gif)
        keep = ((min(len(frames), MAX_FRAMES) - 1) // 4) * 4 + 1
        clip = resize_frames(frames[:keep], *VIDEO_SIZE, mode="crop")
        write_video(dst / "videos" / name, clip, fps=fps, crf=VIDEO_CRF)
        listed.append(f"videos/{name}")
        lines.append(f"- `videos/{name}`: `preview/{gif}`, first {keep} of {len(frames)} frames at {fps:g} fps")
    (dst / "videos.txt").write_text("".join(f"{p}\n" for p in listed), encoding="utf-8")
    (dst / "prompts.txt").write_text("a person is walking\n" * len(listed), encoding="utf-8")
    shutil.copyfile(src / "LICENSE.intel-sample-videos.CC-BY-4.0", dst / "LICENSE")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the sample folder to (re)write")
    args = parser.parse_args()
    if args.out.exists():
        for sub in ("identity", "motion"):
            shutil.rmtree(args.out / sub, ignore_errors=True)
    image_credits = make_identity(args.shared, args.out)
    video_credits = make_motion(args.shared, args.out)
    (args.out / "CREDITS.md").write_text(
        CREDITS.format(
            image_credits="\n".join(image_credits),
            video_credits="\n".join(video_credits),
            size=IMAGE_SIZE,
            quality=JPEG_QUALITY,
            vw=VIDEO_SIZE[1],
            vh=VIDEO_SIZE[0],
        ),
        encoding="utf-8",
    )
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
