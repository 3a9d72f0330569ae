from pathlib import Path

import pytest

from common.errors import InputError
from common.media import Segment
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


def test_folder_scan_follows_symlinked_class_folders_and_skips_loops(tmp_path, caplog):
    videos, elsewhere = tmp_path / "videos", tmp_path / "other_disk"
    _touch(videos / "Archery" / "clip.mp4")
    _touch(elsewhere / "Bowling" / "a.mp4")
    _touch(elsewhere / "Bowling" / "deeper" / "b.mp4")
    (videos / "Bowling").symlink_to(elsewhere / "Bowling", target_is_directory=True)  # a class folder on another disk
    (videos / "Archery" / "again").symlink_to(videos, target_is_directory=True)  # a loop: a link to an ancestor
    (elsewhere / "Bowling" / "deeper" / "up").symlink_to(elsewhere / "Bowling", target_is_directory=True)  # another
    clips = read_clip_list(videos)
    assert [c.clip_id for c in clips] == ["Archery/clip", "Bowling/a", "Bowling/deeper/b"]
    assert [c.label for c in clips] == ["Archery", "Bowling", "deeper"]
    assert clips[1].path == (elsewhere / "Bowling" / "a.mp4").resolve()
    skipped = [r.getMessage() for r in caplog.records if "(a loop)" in r.getMessage()]
    assert len(skipped) == 2 and skipped[0].startswith(f"{videos / 'Archery' / 'again'}: skipped, a symbolic link")
    assert skipped[1].startswith(f"{videos / 'Bowling' / 'deeper' / 'up'}: skipped")


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
    ("", "missing path, class_name, split .found no header."),
    ("path,class_name,split\n", "no clips"),
    ("file,label\na.mp4,x\n", "needs columns path, class_name, split; missing path, class_name, split"),
    ("path\na.mp4\n", "missing class_name, split"),
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
    manifest.write_text("path,class_name,split,start_s,end_s\na.mp4,a,seen,,\nb.mp4,a,seen,1.5,11.5\n")
    whole, cut = read_clip_list(manifest)
    assert whole.segment is None and cut.segment == Segment(1.5, 11.5)
    for bad, message in (("1.5,", "give both start_s and end_s"), ("x,2", "start_s / end_s must be seconds"),
                         ("5,2", "start_s / end_s must be seconds with 0 <= start_s < end_s")):
        manifest.write_text(f"path,class_name,split,start_s,end_s\na.mp4,a,seen,{bad}\n")
        with pytest.raises(InputError, match=f"m.csv:2: {message}"):
            read_clip_list(manifest)


def test_a_bom_and_crlf_manifest_reads_like_a_plain_one(tmp_path):
    plain = "clip_id,path,class_name,split\nc1,a/x.mp4,dog barking,seen\nc2,b/y.mp4,cat,unseen\n"
    (tmp_path / "plain.csv").write_text(plain, encoding="utf-8")
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode())  # "CSV UTF-8"
    excel, reference = read_clip_list(tmp_path / "excel.csv"), read_clip_list(tmp_path / "plain.csv")
    assert excel == reference and [c.clip_id for c in excel] == ["c1", "c2"] and excel[1].split == "unseen"


def test_bad_rows_are_listed_with_their_lines_and_nothing_is_read(tmp_path):
    (tmp_path / "a_folder.mp4").mkdir()
    rows = ["c1,x.mp4,dog,seen", "c2,y.mp4,,seen", "c3,z.mp4,dog,", " ,w.mp4,dog,seen", "c1,v.mp4,dog,seen",
            "c4,a_folder.mp4,dog,seen"] + [f"e{i},e{i}.mp4,,seen" for i in range(7)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("clip_id,path,class_name,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError) as info:
        read_clip_list(manifest)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{manifest}: 13 bad row(s), nothing extracted")
    assert "empty class_name on line(s) 3, 8, 9, 10, 11 and 3 more" in message
    assert "empty split on line(s) 4;" in message and "clip_id blank or with spaces around it on line(s) 5;" in message
    assert "clip_id repeated (first use on the line given first) on line(s) 2, 6" in message
    assert "path is a folder, not a media file on line(s) 7" in message


def test_candidate_lists_need_no_split_but_still_a_class(tmp_path):
    manifest = tmp_path / "candidates.csv"
    manifest.write_text("path,class_name\na.mp4,dog\nb.mp4,\n")
    with pytest.raises(InputError, match="1 bad row.*empty class_name on line.s. 3$"):
        read_clip_list(manifest, required=("path", "class_name"))
    manifest.write_text("path,class_name\na.mp4,dog\n")
    assert read_clip_list(manifest, required=("path", "class_name"))[0].split == ""
    with pytest.raises(InputError, match="missing split"):
        read_clip_list(manifest)
