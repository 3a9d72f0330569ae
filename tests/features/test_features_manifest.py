import unicodedata
from dataclasses import replace
from pathlib import Path

import pytest

from common.errors import InputError
from common.media import Segment
from features.manifest import ManifestRow, read_clip_list, read_manifest, write_manifest


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
    assert [c.class_name for c in clips] == ["Archery", "Bowling", ""]
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
    assert [c.class_name for c in clips] == ["Archery", "Bowling", "deeper"]
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
    assert (clips[1].class_name, clips[1].split) == ("cat", "unseen")


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
        read_clip_list(manifest, split_required=False)
    manifest.write_text("path,class_name\na.mp4,dog\n")
    assert read_clip_list(manifest, split_required=False)[0].split == ""
    with pytest.raises(InputError, match="missing split"):
        read_clip_list(manifest)


def test_descriptive_columns_are_read_typed(tmp_path):
    (tmp_path / "m.csv").write_text("path,class_name,split,has_audio,duration_s,width_px,fps,sr,group\n"
                                    "a.mp4,dog,seen,1,4.000,160,29.97,0.250000,easy\nb.mp4,cat,seen,0,,,,,\n")
    described, blank = read_manifest(tmp_path / "m.csv")
    assert (described.has_audio, described.duration_s, described.width_px, described.fps) == (True, 4.0, 160, 29.97)
    assert (described.sr, described.group, described.height_px) == (0.25, "easy", None)
    assert blank.has_audio is False and blank.duration_s is None and blank.group is None


def test_descriptive_values_of_the_wrong_type_are_refused_with_their_lines(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,class_name,split,has_audio,width_px\na.mp4,dog,seen,yes,160\nb.mp4,dog,seen,1,1.5\n"
                        "c.mp4,dog,seen,1,\n")
    with pytest.raises(InputError, match=r"2 bad row.*has_audio not 0 or 1 on line.s. 2; width_px not a whole "
                                         r"number on line.s. 3$"):
        read_manifest(manifest)


def test_written_manifest_has_the_contract_order_and_reads_back(tmp_path):
    rows = [ManifestRow("b", tmp_path / "clips" / "b.mp4", "cat", "unseen", Segment(1.5, 11.5), group="hard",
                        sr=0.7, has_audio=False, duration_s=10.0, width_px=320, height_px=240, fps=25.0,
                        sample_rate_hz=0, audio_channels=0),
            ManifestRow("a", tmp_path / "clips" / "a.mp4", "dog", "unseen", group="easy", sr=0.2)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    assert manifest.read_text(encoding="utf-8").splitlines() == [
        "clip_id,path,class_name,split,start_s,end_s,group,sr,has_audio,duration_s,width_px,height_px,fps,"
        "sample_rate_hz,audio_channels",
        "b,clips/b.mp4,cat,unseen,1.5,11.5,hard,0.700000,0,10.000,320,240,25,0,0",
        "a,clips/a.mp4,dog,unseen,,,easy,0.200000,,,,,,,",
    ]
    assert read_manifest(manifest) == [replace(rows[0], path=rows[0].path.resolve()),
                                       replace(rows[1], path=rows[1].path.resolve())]


def test_a_manifest_of_whole_files_has_no_segment_columns(tmp_path):
    rows = [ManifestRow("x", tmp_path / "x.mp4", "dog", "seen", has_audio=True)]
    assert (write_manifest(tmp_path / "m.csv", rows, whole_files=True).read_text(encoding="utf-8")
            == "clip_id,path,class_name,split,has_audio\nx,x.mp4,dog,seen,1\n")
    with pytest.raises(ValueError, match="whole files"):
        write_manifest(tmp_path / "n.csv", [replace(rows[0], segment=Segment(0.0, 1.0))], whole_files=True)
    assert not (tmp_path / "n.csv").exists()


def test_class_and_split_names_that_are_one_after_normalisation_are_one_class(tmp_path):
    nfd, nfc = unicodedata.normalize("NFD", "Café"), unicodedata.normalize("NFC", "Café")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("clip_id,path,class_name,split\n"
                        "a,a.mp4,Archery ,seen\nb,b.mp4,Archery,seen\nc,c.mp4,  Archery\u00a0,unseen \n"
                        f"d,d.mp4,{nfd},unseen\ne,e.mp4,{nfc},  unseen\nf,f.mp4,archery,seen\n"
                        "g,g.mp4,playing   guitar,seen\n", encoding="utf-8")
    rows = read_manifest(manifest)
    assert [r.class_name for r in rows] == ["Archery", "Archery", "Archery", nfc, nfc, "archery", "playing guitar"]
    assert [r.split for r in rows] == ["seen", "seen", "unseen", "unseen", "unseen", "seen", "seen"]
    assert len({r.class_name for r in rows}) == 4  # case is kept: "archery" is another class
    (tmp_path / "videos" / nfd).mkdir(parents=True)  # a class folder named in NFD (as macOS writes names)
    _touch(tmp_path / "videos" / nfd / "clip.mp4")
    assert [c.class_name for c in read_clip_list(tmp_path / "videos")] == [nfc]


def test_class_names_that_differ_only_in_case_stay_apart_with_a_warning(tmp_path, caplog):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("clip_id,path,class_name,split\na,a.mp4,Archery,seen\nb,b.mp4,archery,seen\n"
                        "c,c.mp4,Bowling,seen\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="features.manifest"):
        rows = read_clip_list(manifest)
    assert [r.class_name for r in rows] == ["Archery", "archery", "Bowling"]
    assert "1 class name(s) differ only in case and stay separate classes: 'Archery' / 'archery'" in caplog.text
    caplog.clear()
    manifest.write_text("clip_id,path,class_name,split\na,a.mp4,Archery,seen\nc,c.mp4,Bowling,seen\n")
    with caplog.at_level("WARNING", logger="features.manifest"):
        read_clip_list(manifest)
    assert "differ only in case" not in caplog.text
