"""From a dataset download to the AVCA protocol with no hand editing: manifest avca -> extract -> protocol avca."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from curate import splits
from extract.encode import write_mp4

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
