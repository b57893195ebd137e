"""benchmark.data: identity and motion folder readers and their validation."""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

from benchmark.data import (
    DataError,
    class_word_from_name,
    list_identity_images,
    load_identity,
    load_motion,
    motion_prompt_from_name,
    natural_key,
    read_lines,
)

# ---------------------------------------------------------------------------------- text files


def test_read_lines_bom_crlf_trailing_blank(tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xef\xbb\xbfdog *\r\n  cat *  \r\n\r\n\n")
    assert read_lines(f) == ["dog *", "cat *"]


def test_read_lines_non_utf8(bad_media, tmp_path):
    with pytest.raises(DataError, match=r"non_utf8_txt\.txt: not UTF-8 at line 1, column 4 \(byte 0xe9\)"):
        read_lines(bad_media("non_utf8_txt"))
    f = tmp_path / "third_line.txt"
    f.write_bytes(b"\xef\xbb\xbfdog *\r\ncat *\r\nna\xefve *\n")  # a BOM, then Latin-1 on line 3
    with pytest.raises(DataError, match=r"third_line\.txt: not UTF-8 at line 3, column 3 \(byte 0xef\)"):
        read_lines(f)


def test_read_lines_empty_line_in_the_middle(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("dog *\n\ndog *\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"prompts\.txt: line 2 is empty"):
        read_lines(f)


def test_natural_order():
    names = ["10.jpg", "2.jpg", "1.JPG", "02.png", "b.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == ["1.JPG", "2.jpg", "02.png", "10.jpg", "a.jpg", "b.jpg"]


# ---------------------------------------------------------------------------------- identity


def test_identity_real_mixed_extensions(dualreal_bench):
    """dog8 has .jpeg files named 0..7; actionfigure_2 has PNGs; prompts.txt gives the class."""
    dog8 = load_identity(dualreal_bench / "identities" / "dog8")
    assert [p.name for p in dog8.images] == [f"{i}.jpeg" for i in range(8)]
    assert dog8.class_word == "dog" and dog8.prompts == ["dog *"] * 8
    assert len(dog8.eval_prompts) == 50 and all("*" in p for p in dog8.eval_prompts)
    sloth = load_identity(dualreal_bench / "identities" / "plushie_grey_sloth")
    assert sloth.class_word == "plushie grey sloth"


def test_all_283_identity_images_found(dualreal_bench):
    folders = sorted((dualreal_bench / "identities").iterdir())
    identities = [load_identity(f) for f in folders]
    assert len(identities) == 50
    images = [p for ident in identities for p in ident.images]
    assert len(images) == 283
    by_ext = Counter(p.suffix for p in images)
    assert by_ext == {".jpg": 152, ".png": 96, ".jpeg": 32, ".JPG": 3}
    # the folder-name rule agrees with every prompts.txt of the paper's data
    for ident in identities:
        assert class_word_from_name(ident.name) == ident.class_word, ident.name
        assert len(ident.prompts) == len(ident.images)


def test_identity_uppercase_extension_and_top_level(make_identity):
    folder = make_identity("cat", n=2, prompts=None, in_images=False, ext=".JPG")
    ident = load_identity(folder)
    assert [p.name for p in ident.images] == ["00.JPG", "01.JPG"]
    assert ident.class_word == "cat" and ident.prompts == ["cat *", "cat *"]
    assert ident.eval_prompts == []


def test_one_lister_for_training_images_and_scoring_references(make_identity):
    """The images a method trains on are the CLIP-I / DINO-I references of `run` and of
    `eval --refs`: one lister, one extension set (webp and bmp included), natural order."""
    from PIL import Image

    from benchmark.grid import reference_images

    folder = make_identity("dog", n=2, ext=".png")
    images = folder / "images"
    for name in ("10.webp", "2.BMP", "3.jpeg"):
        Image.new("RGB", (6, 4), (10, 20, 30)).save(images / name)
    (images / "notes.txt").write_text("x")
    (images / ".hidden.png").write_bytes(b"x")
    listed = list_identity_images(folder)
    assert [p.name for p in listed] == ["00.png", "01.png", "2.BMP", "3.jpeg", "10.webp"]
    (folder / "prompts.txt").write_text("dog *\n", encoding="utf-8")
    assert load_identity(folder).images == listed == list_identity_images(images.parent)
    refs = reference_images(folder)
    assert [tuple(r.shape) for r in refs] == [(24, 36, 3), (24, 36, 3), (4, 6, 3), (4, 6, 3), (4, 6, 3)]
    (images / "nothing").mkdir()
    with pytest.raises(DataError, match="nothing: no images"):
        reference_images(images / "nothing")


def test_identity_class_word_sources(make_identity):
    folder = make_identity("plushie_bear2", n=2, prompts=None)
    assert load_identity(folder).class_word == "plushie bear"  # folder name
    assert load_identity(folder, class_word="teddy").prompts == ["teddy *", "teddy *"]  # argument
    (folder / "prompts.txt").write_text("stuffed bear *\n", encoding="utf-8")
    ident = load_identity(folder)
    assert ident.class_word == "stuffed bear" and ident.prompts == ["stuffed bear *"] * 2  # one line → all
    assert load_identity(folder, class_word="toy").class_word == "toy"  # argument wins


def test_identity_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images"):
        load_identity(tmp_path / "empty")
    (tmp_path / "empty2" / "images").mkdir(parents=True)
    (tmp_path / "empty2" / "images" / "notes.txt").write_text("x")
    (tmp_path / "empty2" / "images" / ".hidden.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"empty2/images: no images"):
        load_identity(tmp_path / "empty2")


def test_identity_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"nothere: identity folder not found"):
        load_identity(tmp_path / "nothere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"file: is a file, expected the identity folder"):
        load_identity(tmp_path / "file")


def test_identity_prompts_fewer_lines(make_identity):
    folder = make_identity("dog", n=4, prompts=["dog *", "dog *", "dog *"])
    with pytest.raises(DataError, match=r"dog/prompts\.txt: 3 prompts for 4 images"):
        load_identity(folder)


def test_identity_prompts_without_token(make_identity):
    folder = make_identity("dog", n=2, prompts=["a dog"])
    with pytest.raises(DataError, match=r"prompts\.txt: prompt 'a dog' has no identity token"):
        load_identity(folder)


def test_identity_non_utf8_prompts(make_identity):
    folder = make_identity("dog", n=1, prompts=None)
    (folder / "prompts.txt").write_bytes("caf\xe9 *\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"dog/prompts\.txt: not UTF-8"):
        load_identity(folder)
    (folder / "prompts.txt").unlink()
    (folder / "eval_prompts.txt").write_bytes(b"\xff\xfed\x00o\x00g\x00")  # UTF-16
    with pytest.raises(DataError, match=r"dog/eval_prompts\.txt: not UTF-8"):
        load_identity(folder)


def test_identity_symlink_loop_image(make_identity):
    folder = make_identity("dog", n=2)
    os.symlink("loop.jpg", folder / "images" / "loop.jpg")
    with pytest.raises(DataError, match=r"images/loop\.jpg: symlink loop"):
        load_identity(folder)


def test_identity_spaces_and_parentheses(make_identity):
    folder = make_identity("my dog (2)", n=2, prompts=None)
    os.rename(folder / "images" / "00.png", folder / "images" / "photo (1) a.png")
    ident = load_identity(folder)
    assert ident.name == "my dog (2)" and ident.class_word == "my dog"
    assert [p.name for p in ident.images] == ["01.png", "photo (1) a.png"]


# ---------------------------------------------------------------------------------- motion


def test_motion_real_dualreal_layout_with_parentheses(dualreal_bench):
    lifting = load_motion(dualreal_bench / "motions" / "Lifting")
    assert lifting.layout == "dualreal" and len(lifting.clips) == 6
    assert any(p.name == "3528-6_70(2)268.avi" for p in lifting.clips)
    assert all(p.is_file() for p in lifting.clips)
    assert lifting.prompts == ["a person is lifting"] * 6 and lifting.motion_phrase == "lifting"
    guitar = load_motion(dualreal_bench / "motions" / "playingGuitar")
    assert guitar.motion_phrase == "playing guitar"


def test_all_21_real_motions(dualreal_bench):
    motions = [load_motion(p) for p in sorted((dualreal_bench / "motions").iterdir())]
    assert len(motions) == 21 and all(len(m.clips) == 6 == len(m.prompts) for m in motions)
    assert load_motion(dualreal_bench / "motions" / "Archery").motion_phrase == "shooting arrows"


def test_motion_plain_folder_of_clips(make_motion, shared_data, tmp_path):
    folder = make_motion("playingGuitar", layout="folder", names=["b (take 2).mp4", "a clip.MP4"])
    motion = load_motion(folder)
    assert motion.layout == "folder"
    assert [p.name for p in motion.clips] == ["a clip.MP4", "b (take 2).mp4"]
    assert motion.prompts == ["a person is playing guitar"] * 2
    assert motion.motion_phrase == "playing guitar"
    gifs = load_motion(shared_data / "samples" / "motions" / "walking")  # GIFs + a LICENSE file
    assert len(gifs.clips) == 3 and gifs.prompts[0] == "a person is walking"


def test_motion_prompt_from_name():
    assert motion_prompt_from_name("asl_signing") == "a person is asl signing"
    assert motion_prompt_from_name("Riding-Horse") == "a person is riding horse"
    assert motion_prompt_from_name("TaiChi") == "a person is tai chi"


def test_motion_empty_folder(tmp_path):
    (tmp_path / "jump").mkdir()
    with pytest.raises(DataError, match=r"jump: no clips"):
        load_motion(tmp_path / "jump")


def test_motion_prompt_count_mismatch(make_motion):
    folder = make_motion("walking", n=3)
    (folder / "prompts.txt").write_text("a person is walking\n" * 2, encoding="utf-8")
    with pytest.raises(DataError, match=r"walking/prompts\.txt: 2 prompts for 3 clips"):
        load_motion(folder)


def test_motion_non_utf8_prompts(make_motion):
    folder = make_motion("walking", n=1)
    (folder / "prompts.txt").write_bytes("a person is caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"walking/prompts\.txt: not UTF-8"):
        load_motion(folder)


@pytest.mark.parametrize(
    "entry, message",
    [
        ("../other/clip.mp4", r"videos\.txt: line 2 \('\.\./other/clip\.mp4'\) leaves the motion folder"),
        ("/etc/passwd", r"videos\.txt: line 2 \('/etc/passwd'\) is an absolute path"),
        ("videos/missing.mp4", r"missing\.mp4: file not found \(listed in .*videos\.txt\)"),
        ("prompts.txt", r"videos\.txt: line 2 \('prompts\.txt'\) is not a video file"),
        ("videos/clip_0.mp4", r"videos\.txt: line 2 \('videos/clip_0\.mp4'\) lists a clip twice"),
    ],
)
def test_videos_txt_bad_entries(make_motion, entry, message):
    folder = make_motion("walking", n=1)
    (folder.parent / "other").mkdir()
    (folder / "videos.txt").write_text(f"videos/clip_0.mp4\n{entry}\n", encoding="utf-8")
    (folder / "prompts.txt").write_text("a person is walking\n" * 2, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_motion(folder)


def test_videos_txt_symlink_out_of_folder(make_motion, make_video):
    outside = make_video("outside.mp4")
    folder = make_motion("walking", n=1)
    os.symlink(outside, folder / "videos" / "sneaky.mp4")
    (folder / "videos.txt").write_text("videos/clip_0.mp4\nvideos/sneaky.mp4\n", encoding="utf-8")
    (folder / "prompts.txt").write_text("a person is walking\n" * 2, encoding="utf-8")
    with pytest.raises(DataError, match=r"videos\.txt: line 2 \('videos/sneaky\.mp4'\) resolves outside"):
        load_motion(folder)
    # a symlink that stays inside the folder is fine
    os.remove(folder / "videos" / "sneaky.mp4")
    os.symlink("clip_0.mp4", folder / "videos" / "sneaky.mp4")
    (folder / "videos.txt").write_text("videos/sneaky.mp4\n", encoding="utf-8")
    (folder / "prompts.txt").write_text("a person is walking\n", encoding="utf-8")
    assert load_motion(folder).clips[0].name == "sneaky.mp4"


def test_videos_txt_symlink_loop(make_motion):
    folder = make_motion("walking", n=1)
    os.symlink("loop.mp4", folder / "videos" / "loop.mp4")
    (folder / "videos.txt").write_text("videos/clip_0.mp4\nvideos/loop.mp4\n", encoding="utf-8")
    (folder / "prompts.txt").write_text("a person is walking\n" * 2, encoding="utf-8")
    with pytest.raises(DataError, match=r"videos/loop\.mp4: symlink loop \(listed in .*videos\.txt\)"):
        load_motion(folder)


def test_plain_folder_symlink_loop(make_motion):
    folder = make_motion("walking", n=1, layout="folder")
    os.symlink("loop.mp4", folder / "loop.mp4")
    with pytest.raises(DataError, match=r"walking/loop\.mp4: symlink loop"):
        load_motion(folder)


def test_motion_names_with_spaces_and_parentheses(tmp_path, dualreal_bench):
    src = dualreal_bench / "motions" / "Lifting"
    folder = tmp_path / "Lifting (UCF Sports)"
    shutil.copytree(src, folder, ignore=lambda d, names: [n for n in names if n.endswith(".avi") and "(2)" not in n])
    (folder / "videos.txt").write_text("videos/3528-6_70(2)268.avi\n", encoding="utf-8")
    (folder / "prompts.txt").write_text("a person is lifting\n", encoding="utf-8")
    motion = load_motion(folder)
    assert motion.name == "Lifting (UCF Sports)" and motion.clips[0].name == "3528-6_70(2)268.avi"


def test_motion_phrase_without_subject(make_motion):
    folder = make_motion("dance", n=1, prompt="dancing salsa")
    assert load_motion(folder).motion_phrase == "dancing salsa"
    folder = make_motion("crowd", n=1, prompt="Two people are dancing")
    assert load_motion(folder).motion_phrase == "dancing"
