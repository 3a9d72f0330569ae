"""The synthetic benchmark: layout of its outputs, determinism, real streams, class-dependent content, CLI."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import av
import click
import numpy as np
import pytest
from click.testing import CliRunner

import cli
from curate import synthetic
from curate.config import SyntheticConfig
from features.manifest import read_manifest
from tests.processes import REPO, start_command, stop_and_collect, wait_for_workers
from text.class_embeddings import AVCA_TABLES

# Small enough for seconds: 4 classes (3 seen / 1 unseen) x 2 clips of about 1 s.
_SMALL = dict(classes=4, clips_per_class=2, seconds=1.0, workers=1)
_MANIFEST_COLUMNS = ["clip_id", "path", "class_name", "split", "has_audio", "duration_s", "width_px", "height_px",
                     "fps", "sample_rate_hz", "audio_channels"]
_VIEW_SECONDS = 64 / 30  # one 16-frame view at 30 fps x stride 4


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, synthetic.SyntheticSummary]:
    out = tmp_path_factory.mktemp("synthetic") / "bench"
    return out, synthetic.make_synthetic(SyntheticConfig(out_dir=out, **_SMALL))


@pytest.fixture(scope="module")
def manifest(bench) -> list[dict[str, str]]:
    return _read_csv(bench[0] / "manifest.csv")


def test_manifest_columns_and_paths(bench, manifest):
    out, summary = bench
    with (out / "manifest.csv").open(encoding="utf-8") as handle:
        assert handle.readline().strip().split(",") == _MANIFEST_COLUMNS
    assert len(manifest) == summary.n_clips == 8
    for row in manifest:
        assert (out / row["path"]).is_file()
        assert not Path(row["path"]).is_absolute()
        assert row["clip_id"] == row["path"].removesuffix(".mp4")
        assert row["split"] in ("seen", "unseen")
        assert row["has_audio"] in ("0", "1")
    assert len({row["clip_id"] for row in manifest}) == len(manifest)
    per_class = {}
    for row in manifest:
        per_class.setdefault(row["class_name"], set()).add(row["split"])
    assert len(per_class) == 4 and all(len(splits) == 1 for splits in per_class.values())
    assert sorted(name for name, splits in per_class.items() if splits == {"unseen"}) == list(summary.unseen_classes)
    assert len(summary.unseen_classes) == 1 and len(summary.seen_classes) == 3
    assert {"README.md", "benchmark.json", "classes.csv", "manifest.csv"} <= {p.name for p in out.iterdir()}


def test_streams_are_as_claimed(bench, manifest):
    out, _ = bench
    for row in manifest:
        with av.open(str(out / row["path"])) as container:
            video, audio = container.streams.video, container.streams.audio
            assert len(video) == 1 and video[0].codec_context.name == "h264"
            assert (video[0].width, video[0].height) == (int(row["width_px"]), int(row["height_px"]))
            assert len(audio) == int(row["has_audio"])
            if audio:
                assert audio[0].codec_context.name == "aac"
                assert audio[0].rate == int(row["sample_rate_hz"])
                assert audio[0].channels == int(row["audio_channels"])
            frames = sum(1 for _ in container.decode(video=0))
        assert frames / float(row["fps"]) == pytest.approx(float(row["duration_s"]), abs=0.05)
        with av.open(str(out / row["path"])) as container:
            assert container.duration / 1e6 == pytest.approx(float(row["duration_s"]), abs=0.15)


def test_special_clips_present(bench, manifest):
    _, summary = bench
    # The small fixture's clips all last about 1 s; the short clip is the one of `short_clip_seconds`.
    short = [row for row in manifest if float(row["duration_s"]) < 0.75 - 0.04]
    assert [row["clip_id"] for row in short] == [summary.short_clip_id]
    assert float(short[0]["duration_s"]) == pytest.approx(0.6) and 0.6 < _VIEW_SECONDS
    assert short[0]["has_audio"] == "1"
    portrait = [row for row in manifest if int(row["height_px"]) > int(row["width_px"])]
    assert len(portrait) == summary.n_portrait >= 1
    assert sum(row["has_audio"] == "0" for row in manifest) == summary.n_no_audio >= 1
    rates = {(row["sample_rate_hz"], row["audio_channels"]) for row in manifest if row["has_audio"] == "1"}
    assert ("16000", "1") in rates and len(rates) >= 2  # other rates / stereo exercise resampling and downmix
    others = [float(row["duration_s"]) for row in manifest if row["clip_id"] != summary.short_clip_id]
    assert all(0.75 - 0.04 <= d <= 1.25 + 0.04 for d in others)


def test_classes_consistent_with_embedding_table(bench, manifest):
    out, _ = bench
    rows = _read_csv(out / "classes.csv")
    with np.load(AVCA_TABLES["vggsound"].path) as table:
        names = [str(n) for n in table["names"]]
        emb = table["emb"].astype(np.float64)
    assert [row["name"] for row in rows] == sorted(row["name"] for row in rows)
    for row in rows:
        assert row["embedding_source"] == "avca:vggsound"
        assert names[int(row["embedding_index"])] == row["name"]
    assert {row["name"]: row["split"] for row in rows} == {row["class_name"]: row["split"] for row in manifest}
    # The recorded scores are the chosen classes' standardised PCA scores (up to sign), and the recorded
    # rendering parameters follow from them.
    scores = np.array([[float(row[f"pc{j}"]) for j in range(1, 11)] for row in rows])
    chosen = emb[[int(row["embedding_index"]) for row in rows]]
    centred = chosen - chosen.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:3].T
    expected /= expected.std(axis=0)
    np.testing.assert_allclose(np.abs(scores[:, :3]), np.abs(expected), atol=1e-5)
    assert np.all(scores[:, 3:] == 0.0)  # 4 classes span only 3 components
    params = synthetic.class_parameters(scores)
    for row, p in zip(rows, params, strict=True):
        for name, value in p.items():
            assert float(row[name]) == pytest.approx(value, abs=1e-6)


@pytest.mark.slow
def test_deterministic_for_a_seed(bench, tmp_path):
    out, _ = bench
    again = synthetic.make_synthetic(SyntheticConfig(out_dir=tmp_path / "again", **dict(_SMALL, workers=2)))
    assert _hashes(again.out_dir) == _hashes(out)
    other = synthetic.make_synthetic(SyntheticConfig(out_dir=tmp_path / "other", **dict(_SMALL, seed=1)))
    other_hashes, hashes = _hashes(other.out_dir), _hashes(out)
    assert other_hashes["manifest.csv"] != hashes["manifest.csv"]
    assert not set(other_hashes.items()) & {(k, v) for k, v in hashes.items() if k.endswith(".mp4")}


def _mean_colour(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.mean([f.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0) for f in container.decode(video=0)],
                       axis=0)


def _log_spectrum(path: Path, bins: np.ndarray) -> np.ndarray:
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray().mean(axis=0) for f in container.decode(audio=0)])  # (S,)
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1.0 / rate)
    return np.log(np.array([power[(freqs >= lo) & (freqs < hi)].mean() for lo, hi in zip(bins[:-1], bins[1:],
                                                                                          strict=True)]) + 1e-12)


def _within_between(features: dict[str, np.ndarray], labels: dict[str, str]) -> tuple[float, float]:
    within, between = [], []
    ids = sorted(features)
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            distance = float(np.linalg.norm(features[a] - features[b]))
            (within if labels[a] == labels[b] else between).append(distance)
    return float(np.mean(within)), float(np.mean(between))


@pytest.mark.slow
def test_content_depends_on_class(tmp_path):
    # More clips per class than the small fixture, so within-class spread is measured on several pairs.
    summary = synthetic.make_synthetic(SyntheticConfig(out_dir=tmp_path / "b", classes=4, clips_per_class=4,
                                                                 seconds=1.0, no_audio_fraction=0.0, workers=1))
    rows = [r for r in _read_csv(summary.manifest_path) if r["clip_id"] != summary.short_clip_id]
    labels = {r["clip_id"]: r["class_name"] for r in rows}
    colours = {r["clip_id"]: _mean_colour(tmp_path / "b" / r["path"]) for r in rows}
    within, between = _within_between(colours, labels)
    assert between > 2.0 * within
    bins = np.geomspace(100.0, 7000.0, 25)
    spectra = {r["clip_id"]: _log_spectrum(tmp_path / "b" / r["path"], bins) for r in rows}
    within, between = _within_between(spectra, labels)
    assert between > 1.5 * within


def test_existing_output_refused(bench):
    out, _ = bench
    with pytest.raises(FileExistsError, match="not an empty folder"):
        synthetic.make_synthetic(SyntheticConfig(out_dir=out, **_SMALL))


@pytest.mark.parametrize("field, value", [
    ("classes", 1), ("clips_per_class", 0), ("unseen_fraction", 0.0), ("unseen_fraction", 0.99),
    ("embedding_table", "kinetics"), ("frame_width_px", 161), ("fps", 0.0), ("sample_rate_hz", 100),
    ("no_audio_fraction", 0.9), ("short_clip_seconds", 5.0), ("workers", 0), ("seed", -1), ("seconds", 0.1),
])
def test_config_rejects_bad_values(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(out_dir=tmp_path, **{field: value})


def test_too_many_classes_for_table(tmp_path):
    with pytest.raises(ValueError, match="fewer than the 150"):
        synthetic.make_synthetic(SyntheticConfig(out_dir=tmp_path / "x", classes=150, clips_per_class=1,
                                                           embedding_table="ucf", workers=1))


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli"
    args = ["make-synthetic", str(out), "--classes", "4", "--clips-per-class", "1", "--seconds", "1",
            "--seed", "3", "--embedding-table", "activitynet", "--workers", "1"]
    result = CliRunner().invoke(cli.cli, args)
    assert result.exit_code == 0, result.output
    assert "Wrote 4 clips (3 seen / 1 unseen classes" in result.output
    rows = _read_csv(out / "manifest.csv")
    assert len(rows) == 4 and all((out / r["path"]).is_file() for r in rows)
    assert {r["embedding_source"] for r in _read_csv(out / "classes.csv")} == {"avca:activitynet"}
    again = CliRunner().invoke(cli.cli, args)
    assert again.exit_code == 1 and "Error:" in again.output and str(out) in again.output


def test_progress_in_a_log_file_is_lines_not_bars(tmp_path):
    """Standard error to a file, as under a batch scheduler: progress is a line (here only the last, the interval
    being the default 30 s), never a bar redrawn with carriage returns."""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        done = subprocess.run([sys.executable, str(REPO / "cli.py"), "make-synthetic", str(tmp_path / "out"),
                               "--classes", "4", "--clips-per-class", "2", "--seconds", "1", "--workers", "2"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120)
    assert done.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text and "%|" not in text and "it/s" not in text
    assert re.search(r"INFO common.progress: make-synthetic: 8 / 8 clips in 0:00:\d\d \([0-9.]+ clips/s\)\n", text)


def test_cli_defaults_match_config():
    command = cli.cli.commands["make-synthetic"]
    fields = {f.name: f.default for f in dataclasses.fields(SyntheticConfig)}
    options = [p for p in command.params if isinstance(p, click.Option) and p.name != "help"]
    assert options
    for option in options:
        assert option.default == fields[option.name], option.name


def test_docs_describe_every_parameter(bench):
    # docs/synthetic.md and the generated README.md state the mapping; both must match the code's table.
    docs = (Path(__file__).resolve().parents[2] / "docs" / "synthetic.md").read_text(encoding="utf-8")
    readme = (bench[0] / "README.md").read_text(encoding="utf-8")
    parameters = synthetic.class_parameters(np.zeros((1, 10)))[0]
    rows = {p["name"]: p for p in json.loads((bench[0] / "benchmark.json").read_text())["parameters"]}
    assert set(rows) == set(parameters)
    for name, row in rows.items():
        cells = f"| `{name}` | PC{row['component']} | {row['modality']} |"
        assert cells in docs, cells
        assert cells in readme, cells


def test_manifest_reads_back_typed_through_the_contract(bench, manifest):
    out, summary = bench
    rows = read_manifest(summary.manifest_path)
    assert [row.clip_id for row in rows] == [row["clip_id"] for row in manifest]
    assert all(row.segment is None and row.group is None and row.path == (out / f"{row.clip_id}.mp4").resolve()
               for row in rows)
    assert sum(not row.has_audio for row in rows) == summary.n_no_audio
    assert all((row.sample_rate_hz == 0) == (not row.has_audio) for row in rows)
    assert sum(row.height_px > row.width_px for row in rows) == summary.n_portrait


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_make_synthetic_leaves_no_rendering_worker(tmp_path, stop):
    """SIGTERM (`kill PID`) and Ctrl-C (SIGINT to the whole group, as a terminal sends it) end the command in one
    line; after SIGKILL, which runs no clean-up, the kernel ends the workers (they die with their parent)."""
    process = start_command("make-synthetic", str(tmp_path / "bench"), "--classes", "8", "--clips-per-class", "8",
                            "--workers", "2")
    wait_for_workers(process, "spawn_main", 2)
    err = stop_and_collect(process, stop, after=1.0)  # into the rendering
    if stop == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
        return
    assert process.returncode == 128 + stop and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.splitlines()[-1] == f"Interrupted ({stop.name})"  # make-synthetic starts over: no rerun named
