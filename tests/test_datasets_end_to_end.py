"""From a dataset download to the AVCA protocol with no hand editing: manifest avca -> extract -> protocol avca."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from curate import splits
from curate.encode import write_mp4

# Videos taken from each stage: (classes, videos per class).
_TAKEN = {"stage_1_train": (3, 2), "stage_1_val_seen": (2, 1), "stage_1_val_unseen": (2, 1),
          "stage_2_test_seen": (2, 1), "stage_2_test_unseen": (2, 1)}


def _ucf_download(root, seed: int = 0) -> int:
    """A few UCF-GZSL videos of every stage in class folders, named by their id (`Class/v_*.mp4`, H.264 + AAC)."""
    class_split = splits.load_class_split("UCF")
    rng = np.random.default_rng(seed)
    written = 0
    for stage, (classes, per_class) in _TAKEN.items():
        videos = splits.load_stage_videos(class_split, stage)
        by_class: dict[str, list[str]] = {}
        for video_id, label in zip(videos.video_ids, videos.labels, strict=True):
            by_class.setdefault(label, []).append(video_id)
        for label in sorted(by_class)[:classes]:
            tone = 200 + 40 * class_split.class_id(label)
            for video_id in by_class[label][:per_class]:
                frames = np.full((25, 48, 64, 3), (7 * class_split.class_id(label)) % 256, np.uint8)
                frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
                t = np.arange(16000) / 16000
                (root / label).mkdir(parents=True, exist_ok=True)
                write_mp4(root / label / f"{video_id}.mp4", frames, 25, 0.3 * np.sin(2 * np.pi * tone * t), 16000)
                written += 1
    return written


@pytest.mark.slow
def test_a_ucf_download_runs_the_avca_protocol(tmp_path):
    written = _ucf_download(tmp_path / "UCF-101")
    runner = CliRunner()
    manifest = runner.invoke(cli, ["manifest", "avca", "--dataset", "ucf", "--videos", str(tmp_path / "UCF-101"),
                                   "--out", str(tmp_path / "manifests" / "ucf.csv")])
    assert manifest.exit_code == 0, manifest.output
    assert f"wrote {written} clips" in manifest.output
    extract = runner.invoke(cli, ["extract", "--videos", str(tmp_path / "manifests" / "ucf.csv"),
                                  "--out", str(tmp_path / "ucf.zarr"), "--profile", "cpu-small", "--random-init",
                                  "--no-progress"])
    assert extract.exit_code == 0, extract.output
    protocol = runner.invoke(cli, ["protocol", "avca", "--dataset", "UCF", "--store", str(tmp_path / "ucf.zarr"),
                                   "--out", str(tmp_path / "avca"), "--epochs", "2", "--preset", "demo",
                                   "--train-batch-size", "4", "--option", "progress=false", "--no-plots"])
    assert protocol.exit_code == 0, protocol.output
    assert f"clips used {written} of 6,816 listed" in protocol.output
    metrics = json.loads((tmp_path / "avca" / "metrics.json").read_text())
    assert metrics["clips"]["stage_1_train"] == {"used": 6, "listed": 3174}
    assert 0 <= metrics["zsl"] <= 100 and metrics["protocol"] == "avca"


def _ucf101_download(root, lists, train: dict[str, int], test: dict[str, int], seed: int = 1) -> None:
    """UCF-101 videos named as the dataset names them, and a fold-1 train / test list of them."""
    lists.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, per_class in (("train", train), ("test", test)):
        lines = []
        for k, (label, count) in enumerate(per_class.items()):
            for clip in range(count):
                name = f"{label}/v_{label}_g{8 + clip if split == 'train' else 1 + clip:02d}_c01.avi"
                frames = np.full((25, 48, 64, 3), 40 * k, np.uint8) + rng.integers(0, 20, (25, 48, 64, 3), np.uint8)
                (root / label).mkdir(parents=True, exist_ok=True)
                write_mp4((root / name).with_suffix(".mp4"), frames, 25, None, 16000)
                lines.append(name)
        (lists / f"{split}list01.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_ucf101_downloads_run_the_mzsl_protocol(tmp_path):
    seen = {"ApplyEyeMakeup": 2, "Archery": 2, "BabyCrawling": 2, "BalanceBeam": 2}
    _ucf101_download(tmp_path / "UCF-101", tmp_path / "lists", seen, dict.fromkeys(seen, 1))
    _ucf101_download(tmp_path / "eval", tmp_path / "eval_lists", {}, {"BandMarching": 2, "BaseballPitch": 2},
                     seed=2)  # other bytes than the training videos: the leak check compares files
    (tmp_path / "groups.csv").write_text("class_name,group\nBandMarching,easy\nBaseballPitch,hard\n")
    runner = CliRunner()
    for name, videos, lists in (("train", "UCF-101", "lists"), ("eval", "eval", "eval_lists")):
        made = runner.invoke(cli, ["manifest", "ucf101", "--videos", str(tmp_path / videos), "--lists",
                                   str(tmp_path / lists), "--out", str(tmp_path / f"{name}.csv")])
        assert made.exit_code == 0, made.output
        extracted = runner.invoke(cli, ["extract", "--videos", str(tmp_path / f"{name}.csv"), "--out",
                                        str(tmp_path / f"{name}.zarr"), "--profile", "cpu-small", "--random-init",
                                        "--no-progress"])
        assert extracted.exit_code == 0, extracted.output
    protocol = runner.invoke(cli, ["protocol", "mzsl", "--train-store", str(tmp_path / "train.zarr"),
                                   "--eval-store", str(tmp_path / "eval.zarr"),
                                   "--groups", str(tmp_path / "groups.csv"),
                                   "--out", str(tmp_path / "mzsl"), "--val-unseen-fraction", "0.25", "--epochs", "2",
                                   "--preset", "demo", "--train-batch-size", "4", "--option", "progress=false",
                                   "--no-plots"])
    if protocol.exception is not None and not isinstance(protocol.exception, SystemExit):
        raise protocol.exception
    assert protocol.exit_code == 0, protocol.output
    metrics = json.loads((tmp_path / "mzsl" / "metrics.json").read_text())
    assert metrics["clips"] == {"train": {"used": 8, "listed": 8}, "test": {"used": 4, "listed": 4},
                                "eval": {"used": 4, "listed": 4}}
    assert "clips used 16 of 16 listed, 100.0%" in protocol.output
