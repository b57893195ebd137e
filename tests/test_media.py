"""benchmark.media: the one decoder. Real files from ../shared/data, broken ones made in tmp_path."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.media import (
    MediaError,
    read_image,
    read_video,
    resize_frames,
    write_video,
)

# ---------------------------------------------------------------------------------- write/read


def test_round_trip_same_frames_close_pixels(tmp_path, make_frames):
    frames = make_frames(13, 48, 64)
    path = write_video(tmp_path / "a.mp4", frames, fps=8)
    assert path.exists() and not list(tmp_path.glob("*.part"))
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == torch.uint8
    assert fps == pytest.approx(8.0)
    diff = (decoded.float() - frames.float()).abs()
    assert diff.mean() < 4.0 and diff.max() < 24  # crf 12 + RGB→yuv420p→RGB on smooth content


def test_write_video_odd_size_padded_and_permissions(tmp_path, make_frames):
    path = write_video(tmp_path / "odd.mp4", make_frames(5, 31, 45), fps=10)
    decoded, fps = read_video(path)
    assert decoded.shape == (5, 32, 46, 3) and fps == pytest.approx(10.0)
    assert path.stat().st_mode & 0o044, "written videos must be readable by others (not mkstemp's 0600)"


def test_write_video_rejects_bad_input(tmp_path):
    with pytest.raises(MediaError, match="bad.mp4.*uint8"):
        write_video(tmp_path / "bad.mp4", torch.zeros(3, 8, 8, 3))  # float
    with pytest.raises(MediaError, match="bad.mp4"):
        write_video(tmp_path / "bad.mp4", torch.zeros(8, 8, 3, dtype=torch.uint8))  # no time axis
    assert not list(tmp_path.iterdir())


def test_read_video_max_frames(make_video):
    frames, _ = read_video(make_video(n=12), max_frames=5)
    assert frames.shape[0] == 5


# ---------------------------------------------------------------------------------- bad videos


@pytest.mark.parametrize(
    "kind, message",
    [
        ("zero_byte_mp4", r"zero_byte_mp4\.mp4: empty file \(0 bytes\)"),
        # the decoder's cause is kept, without a second copy of the file name (docs/BAD_INPUT.md)
        ("text_as_mp4", r"text_as_mp4\.mp4: not a readable video \(InvalidDataError: \[Errno -?\d+\] Invalid data "
                        r"found when processing input\)$"),
        ("truncated_mp4", r"truncated_mp4\.mp4: (not a readable video|no video stream)"),
        ("symlink_loop_mp4", r"symlink_loop_mp4\.mp4: cannot open \(symlink loop\)"),
    ],
)
def test_read_video_bad_files(bad_media, kind, message):
    with pytest.raises(MediaError, match=message):
        read_video(bad_media(kind))


def test_read_video_missing_and_folder(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.mp4: file not found"):
        read_video(tmp_path / "nope.mp4")
    (tmp_path / "dir.mp4").mkdir()
    with pytest.raises(MediaError, match=r"dir\.mp4: is a folder"):
        read_video(tmp_path / "dir.mp4")


def test_read_video_min_frames(bad_media):
    with pytest.raises(MediaError, match=r"three_frame_mp4\.mp4: 3 frame\(s\), need at least 5"):
        read_video(bad_media("three_frame_mp4"), min_frames=5)


def test_truncated_avi_keeps_decoded_prefix(tmp_path, dualreal_bench):
    """A cut AVI (index lost) still decodes its first frames; min_frames decides if that is enough."""
    src = dualreal_bench / "motions" / "playingGuitar" / "videos" / "v_PlayingGuitar_g03_c01.avi"
    full, _ = read_video(src, max_frames=30)
    data = src.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 4])
    part, fps = read_video(cut)
    assert 5 <= part.shape[0] and fps == pytest.approx(25.0)
    n = min(len(part), len(full))
    assert torch.equal(part[:n], full[:n])
    with pytest.raises(MediaError, match=r"cut\.avi: \d+ frame\(s\), need at least 100000"):
        read_video(cut, min_frames=100000)


def test_gif_with_varying_frame_sizes(bad_media):
    frames, fps = read_video(bad_media("gif_varying_sizes"))
    assert frames.shape == (4, 30, 40, 3) and frames.dtype == torch.uint8
    assert fps == pytest.approx(10.0)
    assert frames[1, 0, 0].tolist() == [60, 120, 200]  # colours survive the canvas composition


def test_stream_whose_resolution_changes(tmp_path):
    """Frames of another size than the first are rescaled to the first frame's size."""
    import io

    import av

    def h264(w, h, n, value):
        buf = io.BytesIO()
        with av.open(buf, "w", format="h264") as c:
            s = c.add_stream("libx264", rate=8)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for _ in range(n):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), value, np.uint8), format="rgb24")
                for p in s.encode(frame):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        return buf.getvalue()

    path = tmp_path / "switch.h264"
    path.write_bytes(h264(64, 48, 3, 50) + h264(32, 24, 3, 200))
    frames, _ = read_video(path)
    assert frames.shape == (6, 48, 64, 3)
    assert abs(int(frames[0, 10, 10, 0]) - 50) <= 3 and abs(int(frames[5, 10, 10, 0]) - 200) <= 3


def _set_mp4_rotation(path, matrix):
    """Patch the tkhd display matrix of a (version 0) mp4 written by write_video."""
    data = bytearray(path.read_bytes())
    i = data.find(b"tkhd")
    assert data[i + 4] == 0
    offset = i + 4 + 4 + 4 * 5 + 8 + 8  # version/flags, 5 u32 fields, reserved, layer..reserved
    data[offset : offset + 36] = struct.pack(">9i", *matrix, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "matrix, shape, corner",
    [
        ((0, 65536, 0, -65536, 0, 0), (3, 64, 32, 3), "top-right"),  # phone portrait: 90° clockwise
        ((0, -65536, 0, 65536, 0, 0), (3, 64, 32, 3), "bottom-left"),  # 90° counter-clockwise
        ((-65536, 0, 0, 0, -65536, 0), (3, 32, 64, 3), "bottom-right"),  # 180°
    ],
)
def test_display_matrix_rotation_applied(tmp_path, matrix, shape, corner):
    frames = torch.zeros(3, 32, 64, 3, dtype=torch.uint8)
    frames[:, :8, :8] = 255  # a white marker at the top-left
    path = write_video(tmp_path / "rot.mp4", frames)
    _set_mp4_rotation(path, matrix)
    decoded, _ = read_video(path)
    assert decoded.shape == shape
    h, w = shape[1:3]
    ys, xs = np.nonzero(decoded[0, ..., 0].numpy() > 128)
    where = ("top" if ys.mean() < h / 2 else "bottom") + "-" + ("left" if xs.mean() < w / 2 else "right")
    assert where == corner


def test_real_clips_decode(dualreal_bench, shared_data):
    ucf, fps = read_video(dualreal_bench / "motions" / "Archery" / "videos" / "v_Archery_g01_c01.avi", max_frames=9)
    assert ucf.shape == (9, 240, 320, 3) and fps == pytest.approx(25.0)
    sports, _ = read_video(dualreal_bench / "motions" / "Lifting" / "videos" / "3528-6_70(2)268.avi", max_frames=5)
    assert sports.shape == (5, 404, 720, 3)  # UCF Sports clips vary in size
    gif, fps = read_video(shared_data / "samples" / "motions" / "walking" / "people-detection.gif")
    # 23 frames of 8 or 9 cs (191 cs) as browsers play them; FFmpeg's average rate says 12.5
    assert gif.shape == (23, 270, 480, 3) and fps == pytest.approx(23 / 1.91)


# ---------------------------------------------------------------------------------- images


def test_grayscale_replicated(tmp_path):
    Image.fromarray(np.full((4, 6), 77, np.uint8)).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (4, 6, 3) and img.dtype == torch.uint8
    assert torch.all(img == 77)


def test_rgba_composited_over_white(tmp_path):
    arr = np.zeros((4, 6, 4), np.uint8)
    arr[..., 0] = 200
    arr[0, 0, 3] = 255  # opaque red-ish pixel
    arr[1, 1, 3] = 128  # half transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img[0, 0].tolist() == [200, 0, 0]
    assert img[2, 2].tolist() == [255, 255, 255]  # fully transparent → white
    assert img[1, 1].tolist() == pytest.approx([228, 127, 127], abs=1)


def test_16bit_png_scaled(tmp_path):
    arr = np.full((4, 6), 0x8000, np.uint16)
    arr[0, 0], arr[0, 1] = 65535, 257 * 10
    Image.fromarray(arr).save(tmp_path / "16.png")
    img = read_image(tmp_path / "16.png")
    assert img.dtype == torch.uint8
    assert img[0, 0].tolist() == [255] * 3 and img[0, 1].tolist() == [10] * 3 and img[1, 1].tolist() == [128] * 3


def test_16bit_rgb_png(tmp_path):
    import cv2

    bgr = np.zeros((4, 6, 3), np.uint16)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 65535, 257 * 100, 257 * 20  # B, G, R
    cv2.imwrite(str(tmp_path / "rgb16.png"), bgr)
    assert read_image(tmp_path / "rgb16.png")[0, 0].tolist() == [20, 100, 255]


def test_cmyk_jpeg_to_rgb(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 255, 128
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    img = read_image(tmp_path / "cmyk.jpg")
    assert img.shape == (16, 16, 3)
    np.testing.assert_allclose(img[8, 8].numpy(), [255, 128, 0], atol=3)


def test_exif_rotated_jpeg_upright(tmp_path):
    arr = np.zeros((32, 48, 3), np.uint8)
    arr[:16, :16] = (255, 0, 0)  # red block top-left of the stored pixels
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[274] = 6  # orientation 6: display rotated 90° clockwise
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    img = read_image(tmp_path / "rot.jpg")
    assert img.shape == (48, 32, 3)
    np.testing.assert_allclose(img[4, 28].numpy(), [255, 0, 0], atol=8)  # now top-right
    np.testing.assert_allclose(img[4, 4].numpy(), [0, 0, 0], atol=8)


def test_read_image_is_writable(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "w.png")
    img = read_image(tmp_path / "w.png")
    img[0, 0] = 1  # a read-only buffer would make this undefined behaviour


@pytest.mark.parametrize(
    "kind, message",
    [("zero_byte_png", r"zero_byte_png\.png: empty file"),
     ("text_as_jpg", r"text_as_jpg\.jpg: not a readable image \(UnidentifiedImageError: cannot identify image file\)$")],
)
def test_read_image_bad_files(bad_media, kind, message):
    with pytest.raises(MediaError, match=message):
        read_image(bad_media(kind))


def test_read_image_truncated_and_missing(tmp_path):
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.jpg: not a readable image \(OSError: image file is truncated"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(MediaError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")


def test_real_identity_images(dualreal_bench):
    rgba = read_image(dualreal_bench / "identities" / "plushie_panda" / "images" / "00.png")
    assert rgba.shape == (480, 720, 3) and rgba.dtype == torch.uint8
    with Image.open(dualreal_bench / "identities" / "plushie_panda" / "images" / "00.png") as im:
        assert im.mode == "RGBA"
        expected = np.asarray(im)[..., :3]  # the alpha of these PNGs is opaque
    assert torch.equal(rgba, torch.from_numpy(expected.copy()))
    upper = dualreal_bench / "identities"
    jpg_upper = sorted(upper.glob("*/images/*.JPG"))
    assert jpg_upper and read_image(jpg_upper[0]).shape == (480, 720, 3)


# ---------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("mode", ["stretch", "crop"])
def test_resize_frames_shapes(mode):
    frames = torch.randint(0, 256, (3, 240, 320, 3), dtype=torch.uint8)
    out = resize_frames(frames, 64, 96, mode=mode)
    assert out.shape == (3, 64, 96, 3) and out.dtype == torch.uint8
    assert resize_frames(frames[0], 100, 50, mode=mode).shape == (100, 50, 3)
    assert torch.equal(resize_frames(frames, 240, 320, mode=mode), frames)
    with pytest.raises(ValueError, match="resize mode must be one of stretch, crop"):
        resize_frames(frames, 64, 96, mode="pad")


def test_resize_frames_crop_keeps_the_center_and_stretch_keeps_everything():
    img = torch.zeros(100, 200, 3, dtype=torch.uint8)
    img[:, 50:150] = 255  # the centre square is white, the sides black
    assert resize_frames(img, 50, 50, mode="crop").float().mean() > 250
    # stretched, the black sides stay: the left and right quarters of the square are black
    out = resize_frames(img, 50, 50, mode="stretch")
    assert out[:, :11].float().mean() < 5 and out[:, -11:].float().mean() < 5 and out[:, 14:36].float().mean() > 250
    # a 4:3 clip stretched to 3:2 (as the release's loader does for UCF101): the same columns, widened
    x = torch.arange(320, dtype=torch.float32).view(1, 1, 320, 1).expand(1, 240, 320, 3)
    wide = resize_frames(x.round().clamp(0, 255).to(torch.uint8), 240, 360, mode="stretch")
    centres = (torch.arange(360) + 0.5) * 320 / 360 - 0.5  # the source column each output column samples
    expect = centres.clamp(0, 255).round()
    assert (wide[0, 120, 5:-5, 0].float() - expect[5:-5]).abs().max() <= 1  # up to the 255 clip of uint8


def test_truncated_image_is_an_error_even_if_a_library_relaxed_pil(tmp_path, monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as vbench's AMT utils do on import
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.jpg: not a readable image"):
        read_image(tmp_path / "cut.jpg")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored
