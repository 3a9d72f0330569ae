"""`manifest avca`: AVCA's videos found in download folders laid out as UCF-101, VGGSound and ActivityNet name them."""

import json
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from common.errors import InputError
from common.files import read_csv
from common.media import Segment, open_video
from curate import splits
from curate.config import AVCAManifestConfig, DatasetManifestConfig
from curate.manifests import video_id_of, write_avca_manifest, write_dataset_manifest
from features.manifest import read_clip_list


def _write_video(path: Path, frames: int = 4) -> Path:
    """A real video file in the container its extension names (MPEG-4 Part 2, 32 x 32, 25 fps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _videos(dataset: str, stage: str) -> list[tuple[str, str]]:
    class_split = splits.load_class_split(dataset)
    videos = splits.load_stage_videos(class_split, stage)
    return list(zip(videos.video_ids, videos.labels, strict=True))


def _stage_of(dataset: str) -> dict[str, str]:
    """Each video id -> the first stage that lists it (the manifest's split)."""
    first = {}
    for stage in splits.STAGES:
        for video_id, _ in _videos(dataset, stage):
            first.setdefault(video_id, stage)
    return first


def test_ucf_layout_finds_ids_lists_missing_and_ambiguous(tmp_path):
    train, test = _videos("UCF", "stage_1_train"), _videos("UCF", "stage_2_test_unseen")
    root = tmp_path / "UCF-101"
    held = [train[0], train[1], test[0]]
    for (video_id, label), suffix in zip(held, [".avi", ".mkv", ".avi"], strict=True):
        _write_video(root / label / f"{video_id}{suffix}")
    twice = train[2][0]
    _write_video(root / train[2][1] / f"{twice}.avi")
    _write_video(root / "copies" / f"{twice}.mp4")
    (root / "notes.txt").write_text("not a video\n")

    out = tmp_path / "lists" / "ucf.csv"
    summary = write_avca_manifest(AVCAManifestConfig(dataset="ucf", videos=root, out=out))

    clips = read_clip_list(out)
    first_stage = _stage_of("UCF")
    assert sorted(c.clip_id for c in clips) == sorted(video_id for video_id, _ in held)
    for clip in clips:
        assert clip.split == first_stage[clip.clip_id] and clip.path.is_file()
        assert clip.class_name in splits.load_class_split("UCF").all_classes
        open_video(clip.path).close()
    assert {c.split for c in clips} == {"stage_1_train", "stage_2_test_unseen"}
    assert summary.found["stage_1_train"] == 2 and summary.found["stage_2_test_unseen"] == 1
    assert summary.total_found == 3 and summary.ambiguous.keys() == {twice}
    missing = read_csv(summary.missing_path, ("clip_id", "class_name", "split", "reason"), "missing list")
    assert len(missing) == len(first_stage) - 3 == sum(summary.missing.values())
    reasons = {row["clip_id"]: row["reason"] for row in missing}
    assert reasons[twice].startswith("2 files carry this id") and reasons[test[1][0]] == "no file carries this id"
    assert all(Path(row["path"]).parts[0] == ".." for row in read_csv(out, ("path",), "manifest"))


def test_symlinked_class_folders_of_a_download_are_followed(tmp_path, caplog):
    (video_id, label), = _videos("UCF", "stage_1_train")[:1]
    elsewhere = tmp_path / "second_disk" / label
    _write_video(elsewhere / f"{video_id}.avi")
    root = tmp_path / "UCF-101"
    root.mkdir()
    (root / label).symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(root, target_is_directory=True)  # back to the download's top: a loop
    summary = write_avca_manifest(AVCAManifestConfig(dataset="ucf", videos=root, out=tmp_path / "ucf.csv"))
    assert [c.clip_id for c in read_clip_list(tmp_path / "ucf.csv")] == [video_id] and summary.total_found == 1
    assert any(r.getMessage().startswith(f"{root / label / 'loop'}: skipped") for r in caplog.records)


@pytest.mark.slow
def test_vggsound_cuts_by_id_or_by_start_and_end(tmp_path):
    (by_id, label_a), (by_seconds, label_b) = _videos("VGGSound", "stage_2_test_unseen")[:2]
    ytid, start = by_seconds.rsplit("_", 1)
    assert video_id_of("vggsound", f"{ytid}_{int(start)}_{int(start) + 10}") == by_seconds
    assert video_id_of("ucf", "v_Drumming_g01_c01") == "v_Drumming_g01_c01"
    root = tmp_path / "vggsound"
    _write_video(root / label_a / f"{by_id}.mp4")
    _write_video(root / f"{ytid}_{int(start)}_{int(start) + 10}.avi")

    summary = write_avca_manifest(AVCAManifestConfig(dataset="VGGSound", videos=root, out=tmp_path / "vgg.csv"))

    clips = {clip.clip_id: clip for clip in read_clip_list(tmp_path / "vgg.csv")}
    assert clips.keys() == {by_id, by_seconds} and summary.found["stage_2_test_unseen"] == 2
    assert clips[by_seconds].path.name == f"{ytid}_{int(start)}_{int(start) + 10}.avi"
    assert clips[by_id].class_name == label_a and clips[by_seconds].class_name == label_b


def test_bad_input_writes_nothing(tmp_path):
    empty = tmp_path / "empty"
    _write_video(empty / "holiday.avi")
    out = tmp_path / "m.csv"
    with pytest.raises(InputError, match="no file of UCF main_split found .* among 1 media files"):
        write_avca_manifest(AVCAManifestConfig(dataset="ucf", videos=empty, out=out))
    assert not out.exists() and not (tmp_path / "m.missing.csv").exists()
    with pytest.raises(InputError, match="give `annotations`"):
        AVCAManifestConfig(dataset="activitynet", videos=empty, out=out)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"segment": [0, 1]}]))
    with pytest.raises(InputError, match="wrong.json: not ActivityNet's annotations"):
        write_avca_manifest(AVCAManifestConfig(dataset="activitynet", videos=empty, out=out, annotations=wrong))
    (tmp_path / "text.json").write_text("video_id,start\n")
    with pytest.raises(InputError, match="text.json: not a JSON file"):
        write_avca_manifest(AVCAManifestConfig(dataset="activitynet", videos=empty, out=out,
                                               annotations=tmp_path / "text.json"))
    with pytest.raises(InputError, match="name it \\*.csv"):
        AVCAManifestConfig(dataset="ucf", videos=empty, out=tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        write_avca_manifest(AVCAManifestConfig(dataset="ucf", videos=tmp_path / "absent", out=out))


def test_cli_manifest_avca(tmp_path):
    video_id, label = _videos("UCF", "stage_1_val_unseen")[0]
    _write_video(tmp_path / "UCF-101" / label / f"{video_id}.avi")
    result = CliRunner().invoke(cli, ["manifest", "avca", "--dataset", "ucf", "--videos", str(tmp_path / "UCF-101"),
                                      "--out", str(tmp_path / "ucf.csv")])
    assert result.exit_code == 0, result.output
    assert "stage_1_val_unseen: 1 found" in result.output and "wrote 1 clips to" in result.output
    bad = CliRunner().invoke(cli, ["manifest", "avca", "--dataset", "ucf", "--videos", str(tmp_path),
                                   "--out", str(tmp_path / "x.txt")])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "name it *.csv" in bad.output


@pytest.mark.slow
def test_a_full_vggsound_video_gives_its_10_s_segment(tmp_path):
    video_id, label = _videos("VGGSound", "stage_1_val_unseen")[0]
    ytid, start = video_id.rsplit("_", 1)
    _write_video(tmp_path / "full" / f"{ytid}.mp4")
    write_avca_manifest(AVCAManifestConfig(dataset="vggsound", videos=tmp_path / "full", out=tmp_path / "m.csv"))
    (clip,) = read_clip_list(tmp_path / "m.csv")
    assert (clip.clip_id, clip.class_name, clip.split) == (video_id, label, "stage_1_val_unseen")
    assert clip.segment == Segment(int(start), int(start) + 10)


def test_activitynet_ids_are_annotated_segments_of_full_videos(tmp_path):
    by_video = defaultdict(list)
    for video_id, label in _videos("ActivityNet", "stage_1_train"):
        by_video[video_id.rpartition("_")[0]].append((video_id, label))
    ytid, held = next((ytid, ids) for ytid, ids in by_video.items() if len(ids) == 2)
    other = next(ytid for ytid, ids in by_video.items() if len(ids) == 1)
    annotations = tmp_path / "activity_net.v1-3.min.json"
    annotations.write_text(json.dumps({"version": "VERSION 1.3", "database": {
        ytid: {"subset": "training", "duration": 60.0, "annotations": [
            {"segment": [3.5, 12.25], "label": "x"}, {"segment": [30.0, 41.0], "label": "x"}]},
        other: {"subset": "training", "duration": 20.0, "annotations": []}}}))
    _write_video(tmp_path / "anet" / f"v_{ytid}.mkv")
    _write_video(tmp_path / "anet" / f"v_{other}.mp4")
    summary = write_avca_manifest(AVCAManifestConfig(dataset="activitynet", videos=tmp_path / "anet",
                                                     out=tmp_path / "anet.csv", annotations=annotations))
    clips = {clip.clip_id: clip for clip in read_clip_list(tmp_path / "anet.csv")}
    assert clips.keys() == {video_id for video_id, _ in held} and summary.found["stage_1_train"] == 2
    first, second = (clips[f"{ytid}_{i}"] for i in (0, 1))
    assert first.segment == Segment(3.5, 12.25) and second.segment == Segment(30.0, 41.0)
    assert first.path == second.path == (tmp_path / "anet" / f"v_{ytid}.mkv").resolve()
    reasons = {row["clip_id"]: row["reason"] for row in read_csv(summary.missing_path, ("clip_id", "reason"), "x")}
    assert reasons[f"{other}_0"] == f"segment 0 of {other} is not in the annotations"


def test_ucf101_official_lists_give_train_and_test(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                           "Archery/v_Archery_g08_c02.avi 3\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    root = tmp_path / "UCF-101"
    for name in ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"):
        _write_video(root / name)
    summary = write_dataset_manifest(DatasetManifestConfig(dataset="ucf101", videos=root, lists=(lists,),
                                                           out=tmp_path / "ucf101.csv"))
    clips = {c.clip_id: c for c in read_clip_list(tmp_path / "ucf101.csv")}
    assert {k: (c.class_name, c.split) for k, c in clips.items()} == {
        "v_ApplyEyeMakeup_g08_c01": ("ApplyEyeMakeup", "train"), "v_ApplyEyeMakeup_g01_c01": ("ApplyEyeMakeup", "test")}
    assert summary.found == {"train": 1, "test": 1} and summary.missing == {"train": 1, "test": 0}
    with pytest.raises(FileNotFoundError, match="trainlist02.txt not found"):
        write_dataset_manifest(DatasetManifestConfig(dataset="ucf101", videos=root, lists=(lists,),
                                                     out=tmp_path / "f2.csv", fold=2))
    (lists / "testlist01.txt").write_text("v_ApplyEyeMakeup_g01_c01\n")
    with pytest.raises(InputError, match="testlist01.txt:1: expected Class/v_Class_gXX_cYY.avi"):
        write_dataset_manifest(DatasetManifestConfig(dataset="ucf101", videos=root, lists=(lists,),
                                                     out=tmp_path / "bad.csv"))
    assert not (tmp_path / "bad.csv").exists()


def test_vggsound_csv_cuts_and_full_videos(tmp_path):
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text('---g-f_I2yQ,1,"people marching",test\n--0PQM4-hqg,30,"waterfall burbling",train\n')
    _write_video(tmp_path / "v" / "---g-f_I2yQ_000001.mp4")
    _write_video(tmp_path / "v" / "--0PQM4-hqg.mov")
    write_dataset_manifest(DatasetManifestConfig(dataset="vggsound", videos=tmp_path / "v", lists=(csv_path,),
                                                 out=tmp_path / "vgg.csv"))
    clips = {c.clip_id: c for c in read_clip_list(tmp_path / "vgg.csv")}
    assert clips["---g-f_I2yQ_000001"].segment is None and clips["---g-f_I2yQ_000001"].split == "test"
    assert clips["--0PQM4-hqg_000030"].segment == Segment(30, 40)
    assert clips["--0PQM4-hqg_000030"].class_name == "waterfall burbling"
    csv_path.write_text("youtube_id,start_seconds,label,split\n")
    with pytest.raises(InputError, match="vggsound.csv:1: expected youtube_id,start_seconds,label,split"):
        write_dataset_manifest(DatasetManifestConfig(dataset="vggsound", videos=tmp_path / "v", lists=(csv_path,),
                                                     out=tmp_path / "x.csv"))


def test_activitynet_every_annotated_segment_is_a_clip(tmp_path):
    annotations = tmp_path / "activity_net.v1-3.min.json"
    annotations.write_text(json.dumps({"database": {
        "abcdefghijk": {"subset": "training", "annotations": [{"segment": [1.0, 5.0], "label": "Surfing"},
                                                             {"segment": [9.0, 12.5], "label": "Surfing"}]},
        "bcdefghijkl": {"subset": "validation", "annotations": [{"segment": [0.5, 3.0], "label": "Archery"}]},
        "cdefghijklm": {"subset": "testing", "annotations": []}}}))
    _write_video(tmp_path / "v" / "v_abcdefghijk.mp4")
    summary = write_dataset_manifest(DatasetManifestConfig(dataset="activitynet", videos=tmp_path / "v",
                                                           lists=(annotations,), out=tmp_path / "anet.csv"))
    clips = {c.clip_id: c for c in read_clip_list(tmp_path / "anet.csv")}
    assert {k: (c.segment, c.split, c.class_name) for k, c in clips.items()} == {
        "abcdefghijk_0": (Segment(1.0, 5.0), "training", "Surfing"),
        "abcdefghijk_1": (Segment(9.0, 12.5), "training", "Surfing")}
    assert summary.missing == {"training": 0, "validation": 1}


def test_kinetics_csvs_cut_files_and_full_videos(tmp_path):
    train, val = tmp_path / "train.csv", tmp_path / "validate.csv"
    train.write_text("label,youtube_id,time_start,time_end,split\n"
                     "abseiling,--07WQ2iBlw,1,11,train\n\"air drumming\",-0pBnwNKyZs,35,45,train\n")
    val.write_text("label,youtube_id,time_start,time_end,split\nabseiling,0wR5jVB-WPk,417,427,val\n")
    _write_video(tmp_path / "k" / "abseiling" / "--07WQ2iBlw_000001_000011.mp4")
    _write_video(tmp_path / "k" / "-0pBnwNKyZs.mkv")
    result = CliRunner().invoke(cli, ["manifest", "kinetics", "--videos", str(tmp_path / "k"), "--csv", str(train),
                                      "--csv", str(val), "--out", str(tmp_path / "kinetics.csv")])
    assert result.exit_code == 0, result.output
    assert "train: 2 found, 0 missing" in result.output and "val: 0 found, 1 missing" in result.output
    clips = {c.clip_id: c for c in read_clip_list(tmp_path / "kinetics.csv")}
    assert clips["--07WQ2iBlw_000001_000011"].segment is None
    assert clips["-0pBnwNKyZs_000035_000045"].segment == Segment(35, 45)
    assert clips["-0pBnwNKyZs_000035_000045"].class_name == "air drumming"
    val.write_text("youtube_id,start\nx,1\n")
    bad = CliRunner().invoke(cli, ["manifest", "kinetics", "--videos", str(tmp_path / "k"), "--csv", str(val),
                                   "--out", str(tmp_path / "k2.csv")])
    assert bad.exit_code == 1 and "validate.csv" in bad.output and "label" in bad.output
    assert not (tmp_path / "k2.csv").exists()


def test_a_clip_listed_twice_is_refused(tmp_path):
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text("abcdefghijk,1,dog,train\nabcdefghijk,1,dog,test\n")
    _write_video(tmp_path / "v" / "abcdefghijk_000001.mp4")
    with pytest.raises(InputError, match="1 clip\\(s\\) listed more than once: \\['abcdefghijk_000001'\\]"):
        write_dataset_manifest(DatasetManifestConfig(dataset="vggsound", videos=tmp_path / "v", lists=(csv_path,),
                                                     out=tmp_path / "m.csv"))


def test_list_files_that_are_not_text_are_one_line_errors(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("trainlist01.txt", "testlist01.txt", "vggsound.csv"):
        (lists / name).write_bytes(b"\xff\xfe\x00binary")
    _write_video(tmp_path / "v" / "x.mp4")
    for dataset, given, what in (("ucf101", lists, "UCF-101's train list"),
                                 ("vggsound", lists / "vggsound.csv", "vggsound.csv")):
        with pytest.raises(InputError, match=f"not a UTF-8 text file .*; expected {what}"):
            write_dataset_manifest(DatasetManifestConfig(dataset=dataset, videos=tmp_path / "v", lists=(given,),
                                                         out=tmp_path / "m.csv"))
    assert not (tmp_path / "m.csv").exists()
