from pathlib import Path

import pytest

from extract.errors import InputError
from extract.media import Segment
from features.manifest import read_clip_list


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not decoded here")
    return path


def test_folder_scan_keeps_equal_stems_apart_and_labels_by_parent(tmp_path):
    _touch(tmp_path / "Archery" / "clip.mp4")
    _touch(tmp_path / "Bowling" / "clip.mp4")
    _touch(tmp_path / "top.MKV")
    _touch(tmp_path / "notes.txt")
    clips = read_clip_list(tmp_path)
    assert [c.clip_id for c in clips] == ["Archery/clip", "Bowling/clip", "top"]
    assert [c.label for c in clips] == ["Archery", "Bowling", ""]
    assert all(c.path.is_absolute() and c.path.exists() for c in clips)


def test_manifest_paths_are_relative_to_its_folder(tmp_path):
    (tmp_path / "m.csv").write_text("path,class_name,split,has_audio,duration_s\n"
                                    "a/x.mp4,dog barking,seen,1,4.0\nb/x.mp4,cat,unseen,0,3.5\n")
    clips = read_clip_list(tmp_path / "m.csv")
    assert [c.clip_id for c in clips] == ["a/x", "b/x"]
    assert clips[0].path == (tmp_path / "a" / "x.mp4").resolve()
    assert (clips[1].label, clips[1].split) == ("cat", "unseen")


def test_single_media_file(tmp_path):
    clips = read_clip_list(_touch(tmp_path / "one.webm"))
    assert len(clips) == 1 and clips[0].clip_id == "one"


@pytest.mark.parametrize("content, message", [
    ("", "no clips"),
    ("file,label\na.mp4,x\n", "needs a 'path' column"),
    ("path,clip_id\na.mp4,same\nb.mp4,same\n", "appears twice"),
])
def test_bad_manifests_name_the_file_and_the_problem(tmp_path, content, message):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_clip_list(manifest)
    assert str(manifest) in str(info.value)


def test_missing_input_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such manifest"):
        read_clip_list(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="no media files"):
        read_clip_list(tmp_path)
    with pytest.raises(ValueError, match="not a manifest"):
        read_clip_list(_touch(tmp_path / "x.txt"))


def test_segment_columns(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,start_s,end_s\na.mp4,,\nb.mp4,1.5,11.5\n")
    whole, cut = read_clip_list(manifest)
    assert whole.segment is None and cut.segment == Segment(1.5, 11.5)
    for bad, message in (("1.5,", "give both start_s and end_s"), ("x,2", "start_s / end_s must be seconds"),
                         ("5,2", "start_s / end_s must be seconds with 0 <= start_s < end_s")):
        manifest.write_text(f"path,start_s,end_s\na.mp4,{bad}\n")
        with pytest.raises(InputError, match=f"m.csv:2: {message}"):
            read_clip_list(manifest)
