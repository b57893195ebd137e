"""benchmark.grid: built-in grids, YAML grids, filters, decode_case, and the embedded sample."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import DataError
from benchmark.grid import (
    SAMPLE_DIR,
    Case,
    decode_case,
    filter_cases,
    list_grids,
    load_grid,
)
from benchmark.media import read_video, resize_frames
from dualreal.engine.protocol import CaseData

# ---------------------------------------------------------------------------------- built-ins


def test_smoke_grid_is_the_embedded_sample():
    (case,) = load_grid("smoke")
    assert case.name == "dog__walking" and case.class_word == "dog"
    assert case.identity == SAMPLE_DIR / "identity" / "dog" and case.motion == SAMPLE_DIR / "motion" / "walking"
    assert case.ref_image == SAMPLE_DIR / "identity" / "dog" / "images" / "00.jpg"
    assert case.prompts == ["dog * is walking on the beach", "dog * is walking in a snowy forest"]
    assert case.seeds == [42] and case.num_videos == 2
    assert "smoke" in list_grids() and "dualreal50" in list_grids()


def test_sample_files_small_licensed_and_valid():
    files = [p for p in SAMPLE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 400_000
    names = {p.relative_to(SAMPLE_DIR).as_posix() for p in files}
    assert {"CREDITS.md", "identity/dog/LICENSE.md", "motion/walking/LICENSE"} <= names
    credits = (SAMPLE_DIR / "CREDITS.md").read_text(encoding="utf-8")
    assert "CC-BY-4.0" in credits and "unsplash.com/photos/1N2N_MBXdk0" in credits and "intel-iot-devkit" in credits
    for clip in sorted((SAMPLE_DIR / "motion" / "walking" / "videos").glob("*.mp4")):
        frames, fps = read_video(clip)
        assert frames.shape[1:] == (144, 256, 3) and (frames.shape[0] - 1) % 4 == 0
        assert fps == pytest.approx(12.5)


def test_sample_in_package_data():
    """pyproject's package-data patterns cover every sample and grid file (what a wheel ships)."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["benchmark"]
    pkg = root / "benchmark"
    shipped = {p for pat in patterns for p in pkg.glob(pat) if p.is_file()}
    wanted = {p for p in (pkg / "sample").rglob("*") if p.is_file()} | set((pkg / "grids").glob("*.yaml"))
    assert wanted and wanted <= shipped


def test_dualreal50_real(dualreal_bench):
    cases = load_grid("dualreal50", dualreal_bench)
    assert len(cases) == 50 and len({c.name for c in cases}) == 50
    assert all(len(c.prompts) == 50 and c.seeds == [42] for c in cases)
    assert sum(len(c.prompts) for c in cases) == 2500
    by_name = {c.name: c for c in cases}
    assert by_name["plushie_2__Biking"].class_word == "plushie"
    assert by_name["plushie_2__Biking"].motion_name == "Biking"
    cases_json = json.loads((dualreal_bench / "cases.json").read_text())
    for entry in cases_json:
        case = by_name[entry["case"]]
        assert case.ref_image == dualreal_bench / entry["ref_image"] and case.ref_image.is_file()
        assert case.identity_name == entry["identity"] and case.motion_name == entry["motion"]
        assert all(f"{case.class_word} *" in prompt.lower() for prompt in case.prompts)
    assert {c.motion_name for c in cases} == {p.name for p in (dualreal_bench / "motions").iterdir()}


def test_dualreal50_needs_a_data_root(tmp_path):
    with pytest.raises(DataError, match="dualreal50: no data root given"):
        load_grid("dualreal50")
    with pytest.raises(DataError, match=r"nowhere: dualreal50 data root not found"):
        load_grid("dualreal50", tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"cases\.json: not found"):
        load_grid("dualreal50", tmp_path)


def test_dualreal50_missing_eval_prompts(tmp_path, dualreal_bench):
    root = tmp_path / "bench"
    root.mkdir()
    (root / "motions").symlink_to(dualreal_bench / "motions")
    shutil.copytree(dualreal_bench / "identities" / "dog", root / "identities" / "dog")
    (root / "identities" / "dog" / "eval_prompts.txt").unlink()
    entry = {"case": "dog__playingGuitar", "identity": "dog", "motion": "playingGuitar",
             "ref_image": "identities/dog/images/00.jpg"}
    (root / "cases.json").write_text(json.dumps([entry]))
    with pytest.raises(DataError, match=r"dog/eval_prompts\.txt: missing or empty"):
        load_grid("dualreal50", root)
    (root / "cases.json").write_text(json.dumps([{**entry, "ref_image": "../../etc/passwd"}]))
    (root / "identities" / "dog" / "eval_prompts.txt").write_text("dog * is playing guitar\n")
    with pytest.raises(DataError, match=r"cases\.json: entry 1: ref_image .* outside the data root"):
        load_grid("dualreal50", root)
    (root / "cases.json").write_text(json.dumps([{**entry, "identity": "../identities/dog"}]))
    with pytest.raises(DataError, match=r"cases\.json: entry 1: identity '\.\./identities/dog' must be a folder name"):
        load_grid("dualreal50", root)
    (root / "cases.json").write_text("[{")
    with pytest.raises(DataError, match=r"cases\.json: not valid JSON \(line 1, column 3"):
        load_grid("dualreal50", root)
    (root / "cases.json").write_bytes(b'[{"case": "caf\xe9"}]')  # Latin-1
    with pytest.raises(DataError, match=r"cases\.json: not UTF-8 at line 1, column 15 \(byte 0xe9\)"):
        load_grid("dualreal50", root)


def test_dualreal50_with_symlinked_subfolders(tmp_path, dualreal_bench):
    """Big data is often symlinked in: identities/ and motions/ elsewhere must still load."""
    root = tmp_path / "bench"
    root.mkdir()
    (root / "identities").symlink_to(dualreal_bench / "identities")
    (root / "motions").symlink_to(dualreal_bench / "motions")
    shutil.copy(dualreal_bench / "cases.json", root / "cases.json")
    cases = load_grid("dualreal50", root)
    assert len(cases) == 50 and cases[0].ref_image.is_relative_to(root)


def test_unknown_grid_name_suggests():
    with pytest.raises(DataError, match=r"unknown grid 'smok'.*Did you mean smoke\?"):
        load_grid("smok")


# ---------------------------------------------------------------------------------- YAML


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_cases_form(tmp_path, make_identity, make_motion):
    make_identity("dog", n=2, eval_prompts=["dog * is walking in Paris", "dog * is walking in Rome"])
    make_motion("walking", n=2)
    grid = _write(
        tmp_path / "grid.yaml",
        """
version: 1
seeds: [1, 2]
cases:
  - identity: identities/dog
    motion: motions/walking
    prompts: ["dog * is walking on the beach"]
  - name: custom
    identity: identities/dog
    motion: motions/walking
    class_word: corgi
    ref_image: identities/dog/images/01.png
    seeds: [7]
""",
    )
    a, b = load_grid(str(grid))
    assert a.name == "dog__walking" and a.prompts == ["dog * is walking on the beach"] and a.seeds == [1, 2]
    assert a.identity == tmp_path / "identities" / "dog" and a.ref_image.name == "00.png"
    assert b.name == "custom" and b.class_word == "corgi" and b.seeds == [7]
    assert b.prompts == ["dog * is walking in Paris", "dog * is walking in Rome"]  # from eval_prompts.txt
    assert b.ref_image == tmp_path / "identities" / "dog" / "images" / "01.png"


def test_yaml_cross_product_form(tmp_path, make_identity, make_motion):
    make_identity("dog", n=1)
    make_identity("plushie_bear", n=1, prompts=None)
    make_motion("guitar", n=1, prompt="a person is playing guitar")
    make_motion("walking", n=1)
    grid = _write(
        tmp_path / "cross.yml",
        """
identities: [identities/dog, identities/plushie_bear]
motions: [motions/guitar, motions/walking]
templates:
  - "{identity} * is {motion} on the beach"
  - "a {identity} * {motion}"
""",
    )
    cases = load_grid(grid)
    assert [c.name for c in cases] == ["dog__guitar", "dog__walking", "plushie_bear__guitar", "plushie_bear__walking"]
    assert cases[0].prompts == ["dog * is playing guitar on the beach", "a dog * playing guitar"]
    assert cases[3].prompts[0] == "plushie bear * is walking on the beach"
    assert all(c.seeds == [42] for c in cases)


@pytest.mark.parametrize(
    "body, message",
    [
        ("cases:\n  - identity: identities/dog\n    motion: motions/walking\n    prompt: [x]\n",
         r"grid\.yaml: case 1: unknown key\(s\) prompt"),
        ("cases:\n  - identity: identities/dog\n", r"grid\.yaml: case 1: missing 'motion'"),
        ("cases:\n  - identity: identities/cat\n    motion: motions/walking\n    prompts: [x]\n",
         r"identities/cat: identity folder not found"),
        ("cases:\n  - identity: identities/dog\n    motion: motions/walking\n    prompts: []\n",
         r"grid\.yaml: case 1: prompts must be a non-empty list"),
        ("cases:\n  - identity: identities/dog\n    motion: motions/walking\n    prompts: ['  ']\n",
         r"grid\.yaml: case 1: prompt 1 is empty"),
        ("cases:\n  - identity: identities/dog\n    motion: motions/walking\n    prompts: ['dog * runs', ' dog * runs']\n",
         r"grid\.yaml: case 1: prompt 2 repeats prompt 1 \('dog \* runs'\): the same video would be made twice"),
        ("cases:\n  - identity: identities/dog\n    motion: motions/walking\n",
         r"grid\.yaml: case 1: missing 'prompts' \(and .*eval_prompts\.txt does not exist\)"),
        ("cases:\n  - identity: identities/dog\n    motion: motions/walking\n    prompts: [x]\n    ref_image: nope.png\n",
         r"grid\.yaml: case 1: ref_image .*nope\.png not found"),
        ("cases:\n  - {identity: identities/dog, motion: motions/walking, prompts: [x]}\n"
         "  - {identity: identities/dog, motion: motions/walking, prompts: [y]}\n",
         r"grid\.yaml: case name 'dog__walking' appears twice"),
        ("cases:\n  - {identity: identities/dog, motion: motions/walking, prompts: [x], name: a/b}\n",
         r"grid\.yaml: case 1: case name 'a/b' is used as a folder name"),
        ("seeds: [-1]\ncases: []\n", r"grid\.yaml: seeds must be a non-empty list of non-negative integers"),
        ("cases: []\n", r"grid\.yaml: 'cases' must be a non-empty list"),
        ("case: []\n", r"grid\.yaml: unknown key\(s\) case"),
        ("version: 2\ncases: []\n", r"grid\.yaml: unsupported grid version 2"),
        ("- a\n- b\n", r"grid\.yaml: expected a mapping"),
        ("cases: [\n", r"grid\.yaml: invalid YAML"),
        ("cases:\n  - !!python/object/apply:os.system [echo hi]\n", r"grid\.yaml: invalid YAML"),
        ("identities: [identities/dog]\nmotions: [motions/walking]\n", r"grid\.yaml: missing 'templates'"),
        ("identities: [identities/dog]\nmotions: [motions/walking]\ntemplates: ['{identity} * {action}']\n",
         r"grid\.yaml: template .* uses \{action\}; only \{identity\} and \{motion\} are known"),
        ("identities: [identities/dog]\nmotions: [motions/walking]\ntemplates: ['{identity']\n",
         r"grid\.yaml: template .* is malformed"),
        ("identities: [identities/dog]\nmotions: [motions/walking]\ntemplates: [x]\ncases: []\n",
         r"grid\.yaml: use either 'cases:' or 'identities:/motions:/templates:'"),
        ("description: nothing\n", r"grid\.yaml: no cases"),
    ],
)
def test_yaml_validation(tmp_path, make_identity, make_motion, body, message):
    make_identity("dog", n=1)
    make_motion("walking", n=1)
    grid = _write(tmp_path / "grid.yaml", body)
    with pytest.raises(DataError, match=message):
        load_grid(grid)


def test_yaml_missing_or_non_utf8(tmp_path):
    with pytest.raises(DataError, match=r"missing\.yaml: grid file not found"):
        load_grid(str(tmp_path / "missing.yaml"))
    (tmp_path / "latin.yaml").write_bytes("cases: [caf\xe9]\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.yaml: not UTF-8"):
        load_grid(tmp_path / "latin.yaml")


def test_yaml_folder_problems_surface(tmp_path, make_identity, make_motion):
    make_identity("dog", n=2, prompts=["dog *"] * 3)
    make_motion("walking", n=1)
    grid = _write(tmp_path / "g.yaml", "cases:\n  - {identity: identities/dog, motion: motions/walking, prompts: [x]}\n")
    with pytest.raises(DataError, match=r"dog/prompts\.txt: 3 prompts for 2 images"):
        load_grid(grid)


# ---------------------------------------------------------------------------------- filters


@pytest.fixture(scope="module")
def fifty(dualreal_bench):
    return load_grid("dualreal50", dualreal_bench)


def test_filter_by_names_and_globs(fifty):
    out = filter_cases(fifty, names=["*__playingGuitar", "dog__Basketball", "dog__Basketball"])
    names = {c.name for c in out}
    assert "dog__Basketball" in names
    assert [c.name for c in out] == [c.name for c in fifty if c.name in names]  # grid order, no duplicates
    assert all(c.name == "dog__Basketball" or c.name.endswith("__playingGuitar") for c in out)
    assert len(out) == 1 + sum(c.motion_name == "playingGuitar" for c in fifty)


def test_filter_limits_and_seeds(fifty):
    out = filter_cases(fifty, max_cases=3, max_prompts=2, seeds=[0, 1])
    assert len(out) == 3 and all(len(c.prompts) == 2 and c.seeds == [0, 1] for c in out)
    assert out[0].prompts == fifty[0].prompts[:2]
    assert len(fifty[0].prompts) == 50 and fifty[0].seeds == [42]  # the input is untouched
    assert filter_cases(fifty) == fifty and filter_cases(fifty) is not fifty


def test_filter_unknown_name_lists_close_names(fifty):
    with pytest.raises(DataError, match=r"no case named 'dog__playingguitar'.*close names: .*__playingGuitar"):
        filter_cases(fifty, names=["dog__playingguitar"])
    with pytest.raises(DataError, match=r"no case named 'zebra\*'"):
        filter_cases(fifty, names=["zebra*"])
    with pytest.raises(DataError, match="max_cases must be a positive integer"):
        filter_cases(fifty, max_cases=0)
    with pytest.raises(DataError, match="seeds must be a non-empty list"):
        filter_cases(fifty, seeds=[])


# ---------------------------------------------------------------------------------- decode_case


def test_decode_case_real_dualreal50(fifty):
    (case,) = filter_cases(fifty, names=["plushie_panda__*"])  # PNG identity (RGBA) + a UCF motion
    decoded = decode_case(case, num_frames=9, height=64, width=96)
    data = decoded.data
    assert isinstance(data, CaseData) and data.name == case.name and data.class_word == case.class_word
    n_images = len(list((case.identity / "images").iterdir()))
    assert len(data.identity_images) == n_images == len(data.identity_prompts)
    # the scoring references: the same files at native resolution (720x480 crops), decoded once
    assert len(decoded.reference_images) == n_images
    assert all(r.shape == (480, 720, 3) for r in decoded.reference_images)
    assert torch.equal(resize_frames(decoded.reference_images[1], 64, 96, mode="crop"), data.identity_images[1])
    # every clip of the motion folder is the motion reference, in videos.txt order
    assert [p.name for p in decoded.motion_clips] == [Path(line).name for line in (case.motion / "videos.txt").read_text().split()]
    assert all(t.shape == (64, 96, 3) and t.dtype == torch.uint8 for t in data.identity_images)
    assert len(data.motion_clips) == 6 == len(data.motion_prompts)
    assert all(c.shape == (9, 64, 96, 3) and c.dtype == torch.uint8 for c in data.motion_clips)
    # the reference image at native size (the image encoder resizes it), decoded once: 00.png
    assert data.ref_image.shape == (480, 720, 3) and data.ref_image.dtype == torch.uint8
    assert data.ref_image is decoded.reference_images[0]


def test_decode_case_sports_clip_max_clips(fifty):
    (case,) = filter_cases(fifty, names=["dog13__Lifting"])  # .jpeg identity, UCF Sports 720-wide clips
    decoded = decode_case(case, num_frames=5, height=32, width=48, max_clips=2)
    data = decoded.data
    assert len(data.motion_clips) == 2 == len(data.motion_prompts)
    assert len(decoded.motion_clips) == 6  # max_clips limits training, not the motion reference
    assert data.motion_clips[0].shape == (5, 32, 48, 3)
    assert data.motion_prompts == ["a person is lifting"] * 2


def test_decode_case_smoke():
    (case,) = load_grid("smoke")
    decoded = decode_case(case, num_frames=49, height=48, width=64)
    data = decoded.data
    # the sample clips have 33, 37 and 21 frames: each trains on 49, padded with its last frame
    assert [c.shape[0] for c in data.motion_clips] == [49, 49, 49]
    assert [(e["frames_used"], e["frames_padded"]) for e in decoded.training_clips] == [(33, 16), (37, 12), (21, 28)]
    assert len(data.identity_images) == 5 and data.identity_prompts == ["dog *"] * 5


def test_decode_case_geometry_follows_the_release_by_default(fifty):
    """Motion clips stretched (the release's loader: no crop), identity images centre-cropped to
    the training aspect ratio; both switchable, and the switch changes what the model sees."""
    (case,) = filter_cases(fifty, names=["plushie_panda__*"])  # UCF101 clips: 320×240 (4:3)
    first_clip = case.motion / (case.motion / "videos.txt").read_text().split()[0]
    native, _ = read_video(first_clip, max_frames=5)
    assert native.shape[1:3] == (240, 320)
    default = decode_case(case, num_frames=5, height=64, width=96, max_clips=1)
    assert torch.equal(default.data.motion_clips[0], resize_frames(native[:5], 64, 96, mode="stretch"))
    assert torch.equal(default.data.identity_images[0], resize_frames(default.reference_images[0], 64, 96, mode="crop"))
    other = decode_case(case, num_frames=5, height=64, width=96, max_clips=1, motion_resize="crop", identity_resize="stretch")
    assert torch.equal(other.data.motion_clips[0], resize_frames(native[:5], 64, 96, mode="crop"))
    assert not torch.equal(other.data.motion_clips[0], default.data.motion_clips[0])
    with pytest.raises(DataError, match="motion_resize must be one of stretch, crop"):
        decode_case(case, num_frames=5, height=64, width=96, motion_resize="pad")


def test_decode_case_short_clip_names_file(tmp_path, make_identity, make_motion, bad_media):
    ident = make_identity("dog", n=1)
    motion = make_motion("walking", n=1)
    short = bad_media("three_frame_mp4")
    shutil.copy(short, motion / "videos" / "clip_0.mp4")
    case = Case("dog__walking", ident, motion, ident / "images" / "00.png", ["dog * walks"], [42], "dog")
    assert decode_case(case, num_frames=9, height=16, width=16).data.motion_clips[0].shape[0] == 9  # padded
    shutil.copy(bad_media("one_frame_mp4"), motion / "videos" / "clip_0.mp4")
    with pytest.raises(DataError, match=r"clip_0\.mp4: a training clip needs at least 2 frames \(one frame holds no motion\), got 1"):
        decode_case(case, num_frames=9, height=16, width=16)
    bad_media("text_as_mp4", "x.mp4").replace(motion / "videos" / "clip_0.mp4")
    with pytest.raises(DataError, match=r"clip_0\.mp4: not a readable video"):
        decode_case(case, num_frames=9, height=16, width=16)
    (ident / "images" / "00.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"00\.png: empty file"):
        decode_case(case, num_frames=9, height=16, width=16)


def test_decode_case_rejects_bad_geometry():
    (case,) = load_grid("smoke")
    with pytest.raises(DataError, match="num_frames=8 is not 4k\\+1"):
        decode_case(case, num_frames=8, height=16, width=16)
    with pytest.raises(DataError, match="height=0 must be a positive integer"):
        decode_case(case, num_frames=9, height=0, width=16)


def test_identity_masks_reach_case_data_and_must_match_the_images(tmp_path, make_identity, make_motion):
    from PIL import Image

    ident = make_identity("dog", n=2)  # 24×36 images
    motion = make_motion("walking", n=1)
    masks = ident / "masks"
    masks.mkdir()
    for i in range(2):
        arr = np.zeros((24, 36), np.uint8)
        arr[6:18, 9 + i : 27] = 255  # grey masks, white = subject
        Image.fromarray(arr).save(masks / f"{i:02d}.png")
    case = Case("dog__walking", ident, motion, ident / "images" / "00.png", ["dog * walks"], [42], "dog")
    data = decode_case(case, num_frames=5, height=24, width=36).data
    assert len(data.identity_masks) == 2 and data.identity_masks[0].dtype == torch.bool
    expected = torch.zeros(24, 36, dtype=torch.bool)
    expected[6:18, 10:27] = True
    assert torch.equal(data.identity_masks[1], expected)  # same size: the mask file as is
    half = decode_case(case, num_frames=5, height=12, width=18).data.identity_masks[0]  # resized as the image is
    assert half.shape == (12, 18) and half[6, 9] and not half[0, 0]
    (masks / "01.png").rename(masks / "07.png")
    with pytest.raises(DataError, match=r"masks: no mask for 01; masks without an image: 07"):
        decode_case(case, num_frames=5, height=24, width=36)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "01.png")
    (masks / "07.png").unlink()
    with pytest.raises(DataError, match=r"01\.png: mask is 10×10, its image 36×24"):
        decode_case(case, num_frames=5, height=24, width=36)
    shutil.rmtree(masks)
    assert decode_case(case, num_frames=5, height=24, width=36).data.identity_masks is None


def test_preservation_clips_come_from_other_motions_deterministically(tmp_path, make_identity, make_motion):
    ident = make_identity("dog", n=1)
    target = make_motion("walking", n=2)
    case = Case("dog__walking", ident, target, ident / "images" / "00.png", ["dog * walks"], [42], "dog")
    alone = decode_case(case, num_frames=5, height=16, width=16, preservation=2).data
    assert alone.preservation_clips == [] and alone.preservation_source.startswith("no other motion folder beside")
    make_motion("rowing", n=2, prompt="a person is rowing")
    make_motion("jumping", n=1, prompt="a person is jumping")
    (target.parent / "notes").mkdir()  # not a motion folder: skipped
    data = decode_case(case, num_frames=5, height=16, width=16, preservation=2).data
    assert len(data.preservation_clips) == 2 and data.preservation_clips[0].shape == (5, 16, 16, 3)
    assert set(data.preservation_prompts) <= {"a person is rowing", "a person is jumping"}
    assert data.preservation_source.startswith("2 clips of other motions: ") and "walking" not in data.preservation_source
    again = decode_case(case, num_frames=5, height=16, width=16, preservation=2).data
    assert again.preservation_source == data.preservation_source  # seeded by the case name
    assert decode_case(case, num_frames=5, height=16, width=16).data.preservation_source == ""  # not asked for
    everything = decode_case(case, num_frames=5, height=16, width=16, preservation=10).data
    assert len(everything.preservation_clips) == 3  # the whole pool


def test_validate_decode_applies_the_training_clip_rule(tmp_path, make_identity, make_motion):
    """``validate --decode`` accepts what ``run`` trains on (a 3-frame clip is padded, docs/METHOD.md
    §3.2) and refuses what it refuses (a 1-frame clip), naming the file."""
    from typer.testing import CliRunner

    from benchmark.cli import app

    make_identity("dog", n=1)
    short, single = make_motion("short", n=1, frames=3), make_motion("single", n=1, frames=1)
    for name, folder in (("short", short), ("single", single)):
        grid = _write(tmp_path / f"{name}.yaml", f"cases:\n  - {{identity: identities/dog, motion: '{folder}', prompts: ['dog * runs']}}\n")
        result = CliRunner().invoke(app, ["validate", "--grid", str(grid), "--decode"])
        if name == "short":
            assert result.exit_code == 0 and "0 problem(s)" in result.output, result.output
        else:
            assert result.exit_code == 1 and "clip_0.mp4: 1 frame(s), need at least 2" in result.output, result.output
