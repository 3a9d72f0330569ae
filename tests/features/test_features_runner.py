"""The extraction runner on real mp4 files with the cpu-small profile (random-init backbones)."""

import csv
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from common.media import Segment
from features.chunks import DamagedClipError
from features.config import RunnerConfig, StoreConfig
from features.lease import lease_path
from features.runner import build_extract_config, failures_csv_path, run_extraction
from features.store import DONE, FAILED, PENDING, StoreError, TokenStore
from tests.media import truncated_playable
from tests.processes import start_command, stop_and_collect, wait_for_workers

REPO = Path(__file__).resolve().parents[2]
CPU_SMALL = build_extract_config("cpu-small")


def _run(videos, out, **overrides):
    return run_extraction(RunnerConfig(videos=videos, out=out, extract=overrides.pop("extract", CPU_SMALL),
                                       progress=False, **overrides))


def _assert_same_store(a: Path, b: Path):
    left, right = TokenStore.open(a), TokenStore.open(b)
    assert left.clip_ids.tolist() == right.clip_ids.tolist()
    assert left.labels.tolist() == right.labels.tolist() and left.splits.tolist() == right.splits.tolist()
    np.testing.assert_array_equal(left.status, right.status)
    assert left.failure_reasons.tolist() == right.failure_reasons.tolist()
    done = left.indices()
    ours, theirs = left.read(done), right.read(done)
    for name in ("has_audio", "audio_frames"):
        np.testing.assert_array_equal(ours[name], theirs[name])
    for name in ("video_tokens", "audio_tokens", "kinetics_logits"):
        # Equal up to floating-point reduction order (views batched differently), i.e. within fp16 rounding.
        np.testing.assert_allclose(ours[name].astype(np.float32), theirs[name].astype(np.float32),
                                   rtol=2e-3, atol=2e-3)


def test_run_records_failures_and_a_rerun_skips_everything(clip_folder, tmp_path):
    _, manifest = clip_folder
    summary = _run(manifest, tmp_path / "store.zarr")
    assert (summary.clips, summary.done, summary.failed, summary.pending) == (8, 6, 2, 0)
    assert summary.extracted == 6 and summary.skipped == 0
    store = TokenStore.open(tmp_path / "store.zarr")
    reasons = dict(zip(store.clip_ids.tolist(), store.failure_reasons.tolist(), strict=True))
    assert reasons["barking/empty"] and reasons["drumming/truncated"] and reasons["barking/clip0"] == ""
    data = store.read(store.indices())
    assert data["has_audio"].sum() == 5  # drumming/clip1 has no audio track: done, not failed
    assert data["video_tokens"].dtype == np.float16 and np.isfinite(data["video_tokens"]).all()
    with failures_csv_path(tmp_path / "store.zarr").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(r["path"]).name for r in rows) == ["empty.mp4", "truncated.mp4"]
    assert all(r["reason"] for r in rows)
    assert store.provenance["video"]["weights"] == "random-init" or "random-init" in json.dumps(store.provenance)

    again = _run(manifest, tmp_path / "store.zarr")
    assert (again.extracted, again.skipped, again.done, again.failed) == (0, 8, 6, 2)
    retried = _run(manifest, tmp_path / "store.zarr", retry_failed=True)
    assert (retried.extracted, retried.skipped, retried.failed) == (0, 6, 2)
    excel = manifest.with_name("excel.csv")  # the same list saved as "CSV UTF-8": a byte-order mark, CRLF
    excel.write_bytes(b"\xef\xbb\xbf" + manifest.read_text().replace("\n", "\r\n").encode())
    assert _run(excel, tmp_path / "store.zarr").skipped == 8
    unlabelled = manifest.with_name("unlabelled.csv")
    unlabelled.write_text(manifest.read_text().replace(",barking,", ",,"))
    with pytest.raises(ValueError, match=r"unlabelled.csv: 4 bad row\(s\), nothing extracted: empty class_name"):
        _run(unlabelled, tmp_path / "new.zarr")
    assert not (tmp_path / "new.zarr").exists()


@pytest.mark.parametrize("shard_blocks", [True, False], ids=["shards", "one-file-per-clip"])
def test_one_pipeline_over_all_blocks_and_a_failed_write_spares_the_other_blocks(clip_folder, tmp_path, caplog,
                                                                                  shard_blocks):
    from extract.pipeline import ClipExtractor
    from features.manifest import read_clip_list

    _, manifest = clip_folder
    _run(manifest, tmp_path / "reference.zarr")
    one_clip_blocks = StoreConfig(clips_per_block=1, shard_blocks=shard_blocks)
    with caplog.at_level(logging.DEBUG, logger="extract.pipeline"):
        _run(manifest, tmp_path / "small_blocks.zarr", store=one_clip_blocks)
    forwards = [r for r in caplog.records if "from queueing to tokens" in r.getMessage()]
    assert len(forwards) == 1  # the 6 usable clips of 8 one-clip blocks share one batch: no restart per block
    _assert_same_store(tmp_path / "reference.zarr", tmp_path / "small_blocks.zarr")
    caplog.clear()

    target = tmp_path / "s.zarr"  # made as the runner makes it, so that the run resumes it
    layout = ClipExtractor(CPU_SMALL).token_layout()
    store = TokenStore.create(target, read_clip_list(manifest), layout, CPU_SMALL.to_dict(), {}, one_clip_blocks)
    blocked = int(np.flatnonzero(store.clip_ids == "barking/clip1")[0])
    if shard_blocks:
        (target / "video_tokens" / f"c.{blocked}.0.0.0").mkdir()  # a folder where the block's shard goes
    else:
        (target / "video_tokens" / "c").mkdir(parents=True)
        (target / "video_tokens" / "c" / str(blocked)).write_text("a file where the clip's chunk folder goes")
    with caplog.at_level(logging.INFO, logger="extract.pipeline"):
        summary = _run(manifest, target, store=one_clip_blocks)
    assert len(summary.block_errors) == 1 and summary.block_errors[0].startswith(f"block {blocked}: ")
    assert (summary.done, summary.failed, summary.pending) == (5, 2, 1)
    assert TokenStore.open(target).status[blocked] == PENDING
    pools = [r for r in caplog.records if r.getMessage().startswith("decoding in")]
    assert len(pools) == 1  # the pipeline restarted after the error reuses the decode processes
    if shard_blocks:
        (target / "video_tokens" / f"c.{blocked}.0.0.0").rmdir()
    else:
        (target / "video_tokens" / "c" / str(blocked)).unlink()
    assert _run(manifest, target, store=one_clip_blocks).extracted == 1
    _assert_same_store(tmp_path / "reference.zarr", target)


@pytest.mark.slow
def test_folder_input_keeps_equal_stems_apart(clip_folder, tmp_path):
    folder, _ = clip_folder
    summary = _run(folder, tmp_path / "store.zarr")
    store = TokenStore.open(tmp_path / "store.zarr")
    assert summary.clips == 8 and "barking/clip0" in store.clip_ids and "drumming/clip0" in store.clip_ids
    assert set(store.labels.tolist()) == {"barking", "drumming"}


@pytest.mark.slow
def test_one_and_three_workers_make_the_same_store(clip_folder, tmp_path):
    _, manifest = clip_folder
    store_config = StoreConfig(clips_per_block=2)  # four blocks, so three workers share the work
    _run(manifest, tmp_path / "one.zarr", store=store_config)
    three = _run(manifest, tmp_path / "three.zarr", store=store_config, workers=3)
    assert three.dashboard and (three.done, three.failed) == (6, 2)
    _assert_same_store(tmp_path / "one.zarr", tmp_path / "three.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("layout", [["--clips-per-block", "2"], ["--no-shard"]], ids=["shards", "one-file-per-clip"])
def test_sigkill_at_several_points_then_resume_equals_an_uninterrupted_run(clip_folder, tmp_path, layout):
    _, manifest = clip_folder
    _run(manifest, tmp_path / "reference.zarr")
    target = tmp_path / "killed.zarr"
    # One clip per forward (2 views), so that clips reach the writer, and the disk, one at a time to be killed between.
    command = [sys.executable, str(REPO / "cli.py"), "extract", "--videos", str(manifest), "--out", str(target),
               "--profile", "cpu-small", "--no-progress", "--batch-views", "2", *layout]
    kills_mid_run = 0
    for kill_after_done in (1, 2, 4):
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            if (target / "zarr.json").exists():
                status = TokenStore.open(target).status
                if (status == DONE).sum() >= kill_after_done:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait()
                    killed = TokenStore.open(target)
                    kills_mid_run += killed.counts()["pending"] > 0
                    assert killed.damaged_clips() == {}  # every done clip has whole data: no shard half-written
                    break
            time.sleep(0.01)
        process.wait()
    assert kills_mid_run >= 2, "the runs finished before they could be killed; the test needs slower clips"
    counts = TokenStore.open(target).counts()
    log = tmp_path / "stderr.log"  # the resume's progress, in a file as under a batch scheduler: lines, not bars
    with log.open("w") as stderr:
        resumed = subprocess.run([part for part in command if part != "--no-progress"], cwd=REPO, text=True,
                                 stdout=subprocess.PIPE, stderr=stderr)
    assert resumed.returncode == 0, log.read_text()
    assert "\r" not in log.read_text() and f"extract: {counts['pending']} / {counts['pending']} clips in " in (
        log.read_text())
    # Only the clips not done at the kill are redone (of them, those not failing).
    assert f": {counts['pending'] - (2 - counts['failed'])} extracted," in resumed.stdout
    assert not list(target.rglob(".*writing*"))  # the killed writers' unfinished shards were removed
    _assert_same_store(tmp_path / "reference.zarr", target)
    assert (TokenStore.open(target).status == FAILED).sum() == 2


@pytest.mark.slow
def test_clear_errors_before_any_work(clip_folder, tmp_path):
    _, manifest = clip_folder
    runner = CliRunner()
    missing = runner.invoke(cli, ["extract", "--videos", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "s")])
    assert missing.exit_code == 1 and "nope.csv: no such manifest" in missing.output
    no_weights = runner.invoke(cli, ["extract", "--videos", str(manifest), "--out", str(tmp_path / "w.zarr"),
                                     "--profile", "paper"], env={"TORCH_HOME": str(tmp_path / "empty-hub")})
    assert no_weights.exit_code == 1 and "Error:" in no_weights.output and "weights" in no_weights.output.lower()
    assert not (tmp_path / "w.zarr").exists()

    _run(manifest, tmp_path / "store.zarr")
    other = build_extract_config("cpu-small", temporal_views=3)
    with pytest.raises(StoreError, match="different extraction config"):
        _run(manifest, tmp_path / "store.zarr", extract=other)
    # the profile's name and how fast tokens are made are not compared: the same store resumes (nothing to do)
    renamed = replace(CPU_SMALL, profile="my-cpu", decode_threads=1, batch_views=4, attention="sdpa")
    assert _run(manifest, tmp_path / "store.zarr", extract=renamed).extracted == 0
    reordered = tmp_path / "videos" / "other.csv"
    lines = manifest.read_text().splitlines()
    reordered.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    with pytest.raises(StoreError, match="different clip list"):
        _run(reordered, tmp_path / "store.zarr")


@pytest.mark.slow
def test_inspect_json(clip_folder, tmp_path):
    _, manifest = clip_folder
    _run(manifest, tmp_path / "store.zarr")
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "store.zarr"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["clips"], summary["done"], summary["failed"], summary["pending"]) == (8, 6, 2, 0)
    assert summary["extract_config"]["profile"] == "cpu-small"
    assert summary["splits"]["seen"]["done"] == 3
    assert summary["no_audio"] == 1 and summary["failed_by_reason"] == {
        "cannot be opened as media, not a media file or truncated": 1, "empty file": 1}
    assert [f["clip_id"] for f in summary["first_failures"]] == ["barking/empty", "drumming/truncated"]
    assert summary["first_failures"][0]["reason"] == "empty file (0 bytes)"
    text = CliRunner().invoke(cli, ["inspect", str(tmp_path / "store.zarr")])
    assert text.exit_code == 0 and "6 done, 2 failed, 0 pending" in text.output
    assert "0 partial, 1 without audio; failed: 1 cannot be opened as media" in text.output
    assert "\n  failed barking/empty: empty file (0 bytes)\n" in text.output


@pytest.mark.slow
def test_gpu_cluster_pins_one_gpu_per_worker_process(tmp_path):
    """`--gpus N` starts N worker processes, each seeing only its own GPU (checked without a GPU: the pinning is
    the environment each worker process gets)."""
    from distributed import Client

    from features.runner import _local_cluster

    config = RunnerConfig(videos=tmp_path, out=tmp_path / "s.zarr", extract=CPU_SMALL, gpus=2, progress=False)
    with _local_cluster(config) as cluster, Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        visible = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        threads = {info["nthreads"] for info in client.scheduler_info()["workers"].values()}
    assert sorted(visible.values()) == ["0", "1"] and threads == {1}


def test_segments_of_a_long_video_are_clips_and_one_past_its_end_fails(tmp_path, write_clip):
    long = write_clip(tmp_path / "videos" / "long.mp4", seconds=4.0, index=2)
    manifest = tmp_path / "videos" / "segments.csv"
    manifest.write_text("path,clip_id,class_name,split,start_s,end_s\n"
                        "long.mp4,whole,a,seen,,\nlong.mp4,first,a,seen,0.0,1.5\n"
                        "long.mp4,second,a,seen,2.5,4.0\nlong.mp4,late,a,seen,6.0,16.0\n")
    summary = _run(manifest, tmp_path / "s.zarr")
    assert (summary.done, summary.failed) == (3, 1)
    store = TokenStore.open(tmp_path / "s.zarr")
    assert store.segments(range(4)) == [None, Segment(0.0, 1.5), Segment(2.5, 4.0), Segment(6.0, 16.0)]
    assert "segment 6-16 s starts after the end of the video (4.00 s)" in store.failure_reasons[3]
    assert store.paths[1] == str(long.resolve())
    tokens = store.read([0, 1, 2])["video_tokens"].astype(np.float32)  # the moving square is elsewhere in each
    assert not np.allclose(tokens[1], tokens[2], atol=1e-2) and not np.allclose(tokens[0], tokens[1], atol=1e-2)
    again = _run(manifest, tmp_path / "s.zarr")
    assert again.skipped == 4 and again.extracted == 0
    manifest.write_text(manifest.read_text().replace("2.5,4.0", "2.0,4.0"))
    with pytest.raises(StoreError, match="different clip list"):
        _run(manifest, tmp_path / "s.zarr")


@pytest.mark.slow
def test_a_store_follows_its_moved_data_folder(clip_folder, tmp_path, write_clip):
    folder, manifest = clip_folder
    first = _run(manifest, tmp_path / "s.zarr")
    assert (first.done, first.failed) == (6, 2)
    before = TokenStore.open(tmp_path / "s.zarr")
    done = before.indices()
    tokens = before.read(done)["video_tokens"]

    moved = tmp_path / "moved" / "videos"
    moved.parent.mkdir()
    folder.rename(moved)
    write_clip(moved / "barking" / "empty.mp4", index=7)  # fixed in the new place; retried below
    again = _run(moved / "manifest.csv", tmp_path / "s.zarr", retry_failed=True)
    assert (again.skipped, again.extracted, again.done, again.failed) == (6, 1, 7, 1)
    store = TokenStore.open(tmp_path / "s.zarr")
    assert all(Path(p).is_relative_to(moved) for p in store.paths)
    np.testing.assert_array_equal(store.read(done)["video_tokens"], tokens)  # done clips were not redone
    assert store.provenance["relocations"][0]["clips_moved"] == 8
    relabelled = moved / "relabelled.csv"
    relabelled.write_text((moved / "manifest.csv").read_text().replace(",barking,", ",dog,"))
    with pytest.raises(StoreError, match="clip ids, labels, splits or segments differ"):
        _run(relabelled, tmp_path / "s.zarr")


def test_a_complete_store_on_a_read_only_file_system(clip_folder, tmp_path, read_only_copy):
    _, manifest = clip_folder
    _run(manifest, tmp_path / "stores" / "s.zarr")
    store = read_only_copy(tmp_path / "stores") / "s.zarr"
    runner = CliRunner()
    inspected = runner.invoke(cli, ["inspect", str(store), "--json"])
    assert inspected.exit_code == 0, inspected.output
    assert json.loads(inspected.output)["done"] == 6
    command = ["extract", "--videos", str(manifest), "--profile", "cpu-small", "--no-progress"]
    again = runner.invoke(cli, [*command, "--out", str(store)])
    assert again.exit_code == 0, again.output
    assert "0 extracted" in again.output or "extracted 0" in again.output, again.output
    new = runner.invoke(cli, [*command, "--out", str(store.parent / "new.zarr")])
    assert new.exit_code == 1 and new.output.count("\n") == 1, new.output
    assert str(store.parent / ".new.zarr") in new.output and "Read-only file system" in new.output


@pytest.mark.slow
def test_one_extract_per_store_and_a_killed_holders_lease_is_taken_over(clip_folder, tmp_path):
    _, manifest = clip_folder
    target, killed = tmp_path / "s.zarr", tmp_path / "killed.zarr"

    def command(out, *extra):
        return [sys.executable, str(REPO / "cli.py"), "extract", "--videos", str(manifest), "--out", str(out),
                "--profile", "cpu-small", "--no-progress", *extra]

    def started(out):
        process = subprocess.Popen(command(out), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while process.poll() is None and not lease_path(out).exists():
            time.sleep(0.01)
        return process

    first = started(target)
    waiting = subprocess.Popen(command(target, "--wait"), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    refused = subprocess.run(command(target), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, "the first extract ended before the second asked; the test needs slower clips"
    assert refused.returncode == 1 and refused.stdout == ""
    error = refused.stderr.strip().splitlines()[-1]  # the log lines before it are INFO lines
    assert error.startswith(f"Error: {target}: another extract is running on this store (host ")
    assert f"pid {first.pid}, since " in error and "--wait" in error
    first_out, first_err = first.communicate(timeout=120)
    assert first.returncode == 0 and " 6 extracted, 2 failed, 0 skipped" in first_out, first_err
    waited_out, waited_err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, waited_err
    assert " 0 extracted, 2 failed, 8 skipped" in waited_out and "waiting for the lease" in waited_err
    assert not lease_path(target).exists()

    holder = started(killed)
    time.sleep(1.0)  # into its run: building backbones or extracting
    holder.kill()
    holder.wait()
    assert lease_path(killed).exists()  # left behind by SIGKILL: this host, its process gone -> stale at once
    _run(manifest, killed)
    _assert_same_store(target, killed)
    assert not lease_path(killed).exists()


def test_a_file_that_plays_in_part_is_extracted_and_recorded_as_partial(clip_folder, tmp_path, write_clip):
    folder, manifest = clip_folder
    long = write_clip(tmp_path / "long.mp4", seconds=4.0, index=5)
    truncated_playable(long, folder / "barking" / "cut.mp4", 0.5)  # plays for about 2 of its 4 s
    manifest.write_text(manifest.read_text() + "barking/cut.mp4,barking,seen\n")
    summary = _run(manifest, tmp_path / "s.zarr")
    assert (summary.done, summary.failed) == (7, 2)  # the cut file is done; the two broken ones still fail
    store = TokenStore.open(tmp_path / "s.zarr")
    cut = store.clip_ids.tolist().index("barking/cut")
    assert store.status[cut] == DONE and 1.0 < store.decoded_s[cut] < 3.0
    assert np.isnan(np.delete(store.decoded_s, cut)).all()
    with failures_csv_path(tmp_path / "s.zarr").open() as handle:
        assert "cut.mp4" not in handle.read()
    info = store.summary()
    assert info["partial"] == 1 and info["first_partial"][0]["clip_id"] == "barking/cut"
    text = CliRunner().invoke(cli, ["inspect", str(tmp_path / "s.zarr")])
    assert "1 partial, 1 without audio" in text.output
    strict = _run(manifest, tmp_path / "strict.zarr", extract=build_extract_config("cpu-small", strict_media=True))
    assert (strict.done, strict.failed) == (6, 3)
    reasons = TokenStore.open(tmp_path / "strict.zarr").failure_reasons
    assert reasons[cut] == "truncated: the file ends inside a packet near 1.60 s"
    with pytest.raises(StoreError, match="different extraction config .*strict_media"):
        _run(manifest, tmp_path / "s.zarr", extract=build_extract_config("cpu-small", strict_media=True))


def test_an_image_named_mp4_and_a_one_frame_file_fail_and_the_run_goes_on(clip_folder, tmp_path, write_clip):
    folder, manifest = clip_folder
    Image.new("RGB", (64, 48), (200, 30, 30)).save(folder / "barking" / "photo.mp4", format="JPEG")
    Image.new("RGB", (64, 48), (30, 200, 30)).save(folder / "drumming" / "drawing.mp4", format="PNG")
    write_clip(folder / "barking" / "one_frame.mp4", seconds=0.04)  # one frame at 25 fps, with its sound
    manifest.write_text(manifest.read_text() + "barking/photo.mp4,barking,seen\ndrumming/drawing.mp4,drumming,unseen\n"
                        "barking/one_frame.mp4,barking,seen\n")
    summary = _run(manifest, tmp_path / "s.zarr")
    assert (summary.done, summary.failed, summary.pending) == (6, 5, 0)
    store = TokenStore.open(tmp_path / "s.zarr")
    reasons = dict(zip(store.clip_ids.tolist(), store.failure_reasons.tolist(), strict=True))
    for clip_id in ("barking/photo", "drumming/drawing", "barking/one_frame"):
        assert reasons[clip_id] == "1 video frame(s), not a video (a still image?); a clip needs at least 2"
    with failures_csv_path(tmp_path / "s.zarr").open() as handle:
        assert sum("a clip needs at least 2" in row["reason"] for row in csv.DictReader(handle)) == 3


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_extract_with_two_workers_ends_in_one_line_and_leaves_no_process(tmp_path, write_clip, stop):
    """Ctrl-C (SIGINT to the whole group, as a terminal sends it) or SIGTERM (`kill PID`) during an extract on two
    Dask workers: one line naming the rerun, exit code 128 + the signal, and no process of the command left."""
    for i in range(12):
        write_clip(tmp_path / "videos" / ("a" if i % 2 else "b") / f"clip{i}.mp4", seconds=3.0, index=i)
    command = ["extract", "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "s.zarr"), "--profile",
               "cpu-small", "--workers", "2", "--no-progress"]
    process = start_command(*command)
    wait_for_workers(process, "spawn_main", 2)  # the two Dask worker processes
    wait_for_workers(process, "forkserver", 1)  # and a decode pool: extracting
    err = stop_and_collect(process, stop)
    assert process.returncode == 128 + stop and "KeyboardInterrupt" not in err, err
    rerun = shlex.join([sys.executable, str(REPO / "cli.py"), *command])
    assert [line for line in err.splitlines() if line.startswith("Interrupted")] == [
        f"Interrupted ({stop.name}); rerun the same command to resume: {rerun}"]


@pytest.mark.slow
def test_a_real_scheduler_and_two_workers_on_localhost(clip_folder, tmp_path):
    """The multi-machine path: `dask scheduler` and `dask worker` processes, as on a cluster, on this host."""
    from distributed import Client

    _, manifest = clip_folder
    blocks = StoreConfig(clips_per_block=2)  # four blocks for two workers
    _run(manifest, tmp_path / "one.zarr", store=blocks)
    dask, env = str(Path(sys.executable).with_name("dask")), {**os.environ, "PYTHONPATH": str(REPO)}
    processes = []

    def start(*command):
        processes.append(subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        return processes[-1]

    def worker(name, *prefix):
        return start(*prefix, dask, "worker", address, "--name", name, "--nthreads", "1", "--no-nanny",
                     "--dashboard-address", "127.0.0.1:0")

    def wait_for_workers(client, count):
        deadline = time.monotonic() + 60
        while len(client.scheduler_info()["workers"]) != count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(client.scheduler_info()["workers"]) == count

    try:
        start(dask, "scheduler", "--scheduler-file", str(tmp_path / "scheduler.json"), "--host", "127.0.0.1",
              "--port", "0", "--dashboard-address", "127.0.0.1:0")
        deadline = time.monotonic() + 60
        while not (tmp_path / "scheduler.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads((tmp_path / "scheduler.json").read_text())["address"]
        first, _ = worker("w1"), worker("w2")
        with Client(address) as client:
            wait_for_workers(client, 2)
            two = _run(manifest, tmp_path / "two.zarr", store=blocks, scheduler=address)
            assert (two.done, two.failed, two.pending, two.block_errors) == (6, 2, 0, [])
            _assert_same_store(tmp_path / "one.zarr", tmp_path / "two.zarr")

            killed = tmp_path / "killed.zarr"  # a worker SIGKILLed mid-run: its blocks go to the other one
            run = threading.Thread(target=_run, args=(manifest, killed), kwargs={"store": blocks,
                                                                                 "scheduler": address})
            run.start()
            while run.is_alive() and not ((killed / "zarr.json").exists() and
                                          (TokenStore.open(killed).status == DONE).any()):
                time.sleep(0.01)
            mid_run = TokenStore.open(killed).counts()["pending"] > 0
            first.kill()
            run.join(timeout=120)
            assert mid_run, "the run ended before the worker could be killed; the test needs slower clips"
            assert TokenStore.open(killed).counts() == {"pending": 0, "done": 6, "failed": 2}
            _assert_same_store(tmp_path / "one.zarr", killed)

            hidden = tmp_path / "hidden"  # a worker in a mount namespace where this folder is an empty tmpfs
            hidden.mkdir()
            worker("blind", "unshare", "--mount", "sh", "-c", f"mount -t tmpfs none {hidden} && exec \"$@\"", "sh")
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            if len(client.scheduler_info()["workers"]) < 2:
                pytest.skip("cannot start a worker in its own mount namespace here (unshare --mount needs root)")
            result = CliRunner().invoke(cli, ["extract", "--videos", str(manifest), "--out", str(hidden / "s.zarr"),
                                              "--profile", "cpu-small", "--no-progress", "--scheduler", address])
            assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
            assert result.output.startswith(f"Error: {hidden / 's.zarr'}: not visible to Dask worker(s) blind "
                                            "(tcp://127.0.0.1:")  # the one that cannot see it, and only that one
            assert "every worker must see the store at the same path" in result.output and "w2" not in result.output
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_damaged_chunks_are_inspected_refused_on_read_and_extracted_again(clip_folder, tmp_path, caplog):
    import shutil

    _, manifest = clip_folder
    store_path = tmp_path / "store.zarr"
    _run(manifest, store_path, store=StoreConfig(shard_blocks=False))
    shutil.copytree(store_path, tmp_path / "clean.zarr")
    store = TokenStore.open(store_path)
    index = {clip_id: i for i, clip_id in enumerate(store.clip_ids.tolist())}
    deleted, truncated, extended = index["barking/clip0"], index["drumming/clip0"], index["barking/clip1"]
    (store_path / "video_tokens" / "c" / str(deleted) / "0" / "0" / "0").unlink()
    audio = store_path / "audio_tokens" / "c" / str(truncated) / "0" / "0"
    audio.write_bytes(audio.read_bytes()[:-2])
    logits = store_path / "kinetics_logits" / "c" / str(extended) / "0" / "0"
    logits.write_bytes(logits.read_bytes() + b"\0" * 4)

    summary = json.loads(CliRunner().invoke(cli, ["inspect", str(store_path), "--json"]).output)
    assert summary["done"] == 6 and summary["damaged"] == 3
    assert {row["clip_id"] for row in summary["first_damaged"]} == {"barking/clip0", "drumming/clip0",
                                                                     "barking/clip1"}
    text = CliRunner().invoke(cli, ["inspect", str(store_path)]).output
    assert "; 3 damaged" in text and "\n  damaged barking/clip0: video_tokens: chunk file " in text
    for clip_id, array in (("barking/clip0", "video_tokens"), ("drumming/clip0", "audio_tokens"),
                           ("barking/clip1", "kinetics_logits")):
        with pytest.raises(DamagedClipError, match=f"clip '{clip_id}' .* its {array} data is damaged"):
            TokenStore.open(store_path).read([index[clip_id]])

    with caplog.at_level(logging.WARNING, logger="features.runner"):
        again = _run(manifest, store_path)
    assert "3 done clips have damaged token data" in caplog.text
    assert (again.extracted, again.done, again.failed, again.pending) == (3, 6, 2, 0)
    assert TokenStore.open(store_path).damaged_clips() == {}
    _assert_same_store(store_path, tmp_path / "clean.zarr")


def test_damaged_shards_are_inspected_refused_on_read_and_extracted_again(clip_folder, tmp_path, caplog):
    import shutil

    _, manifest = clip_folder
    store_path = tmp_path / "store.zarr"
    _run(manifest, store_path, store=StoreConfig(clips_per_block=3))  # shards of clips 0-2, 3-5, 6-7
    shutil.copytree(store_path, tmp_path / "clean.zarr")
    store = TokenStore.open(store_path)
    (store_path / "video_tokens" / "c.0.0.0.0").unlink()
    audio = store_path / "audio_tokens" / "c.2.0.0"
    audio.write_bytes(audio.read_bytes()[:-2])
    done = set(store.indices().tolist())
    damaged = sorted(done & {0, 1, 2, 6, 7})
    summary = json.loads(CliRunner().invoke(cli, ["inspect", str(store_path), "--json"]).output)
    assert summary["damaged"] == len(damaged) > 0 and summary["layout"].startswith("shards")
    for clip in damaged:
        with pytest.raises(DamagedClipError, match=f"clip '{store.clip_ids[clip]}' .* data is damaged"):
            TokenStore.open(store_path).read([clip])
    with caplog.at_level(logging.WARNING, logger="features.runner"):
        again = _run(manifest, store_path)
    assert f"{len(damaged)} done clips have damaged token data" in caplog.text
    assert (again.extracted, again.done, again.failed, again.pending) == (len(damaged), 6, 2, 0)
    assert TokenStore.open(store_path).damaged_clips() == {}
    _assert_same_store(store_path, tmp_path / "clean.zarr")
