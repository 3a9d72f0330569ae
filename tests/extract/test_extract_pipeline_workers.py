"""The pipeline's decode workers (processes or threads) and its host-to-device path, on real mp4 files."""

import logging
import multiprocessing
import os
import signal
from concurrent.futures import BrokenExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.errors import InputError
from common.media import MediaError
from curate.encode import write_mp4
from extract.config import PROFILES
from extract.decode_pool import DecodePool
from extract.pipeline import ClipExtractor
from extract.transfer import HostToDevice

SMALL = PROFILES["cpu-small"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Five short clips (one silent) and a text file named like a clip, in the order a manifest would list them."""
    folder = tmp_path_factory.mktemp("clips")
    made = []
    for i in range(5):
        frames = np.zeros((40, 72, 96, 3), dtype=np.uint8)
        frames[:] = ((53 * i) % 256, 120, (200 - 31 * i) % 256)
        for t in range(len(frames)):
            frames[t, t:t + 12, 2 * t:2 * t + 12] = 255
        audio = None if i == 2 else 0.3 * np.sin(2 * np.pi * (250 + 120 * i) * np.arange(25600) / 16000)
        made.append(write_mp4(folder / f"clip{i}.mp4", frames, 25, audio, 16000))
    (folder / "notes.mp4").write_text("not media\n")
    made.insert(3, folder / "notes.mp4")
    return made


def _extract_all(config, paths):
    extractor = ClipExtractor(config)
    try:
        return list(extractor.extract_many(paths)), extractor
    finally:
        extractor.close()


def test_processes_and_threads_give_the_same_tokens_and_errors(paths):
    in_processes, _ = _extract_all(replace(SMALL, decode_in="processes"), paths)
    in_threads, _ = _extract_all(replace(SMALL, decode_in="threads"), paths)
    assert [p for p, _ in in_processes] == [p for p, _ in in_threads] == paths
    bad = in_processes[3][1]
    assert isinstance(bad, MediaError) and bad.path == paths[3]  # raised in a worker process, pickled back
    assert isinstance(in_threads[3][1], MediaError) and in_threads[3][1].reason == bad.reason
    for (_, ours), (_, theirs) in zip(in_processes, in_threads, strict=True):
        if isinstance(ours, MediaError):
            continue
        assert (ours.has_audio, ours.audio_frames) == (theirs.has_audio, theirs.audio_frames)
        for name in ("video_tokens", "audio_tokens", "kinetics_logits"):
            np.testing.assert_allclose(getattr(ours, name).astype(np.float32),
                                       getattr(theirs, name).astype(np.float32), rtol=1e-3, atol=1e-3)
    assert not in_processes[2][1].has_audio and in_processes[0][1].has_audio


def test_the_decode_pool_serves_every_call_until_closed(paths, caplog):
    extractor = ClipExtractor(SMALL)
    try:
        with caplog.at_level(logging.INFO, logger="extract.pipeline"):
            first = list(extractor.extract_many(paths[:2]))
            second = list(extractor.extract_many(paths[2:4]))
        started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding in")]
        assert started == [f"decoding in {extractor.threads.helper_threads} processes"]  # one pool, both calls
        assert [p for p, _ in first + second] == paths[:4]
        extractor.close()
        again = list(extractor.extract_many(paths[:1]))  # a new pool after close
        np.testing.assert_array_equal(again[0][1].video_tokens, first[0][1].video_tokens)
    finally:
        extractor.close()


def test_a_killed_decode_process_fails_the_call_and_the_next_call_starts_a_new_pool(paths):
    extractor = ClipExtractor(SMALL)
    try:
        reference = list(extractor.extract_many(paths[:2]))
        many = extractor.extract_many(paths * 30)  # more than the clips decoded ahead
        next(many)
        for pid in list(extractor._decode_pool._executor._processes):  # as the OOM killer would
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenExecutor):
            list(many)
        again = list(extractor.extract_many(paths[:2]))
        for (_, ours), (_, theirs) in zip(again, reference, strict=True):
            np.testing.assert_array_equal(ours.video_tokens, theirs.video_tokens)
    finally:
        extractor.close()


def _pool_mode(results) -> None:
    pool = DecodePool(SMALL, 1, "processes", make_views=True)
    try:
        results.put(pool.mode)
    finally:
        pool.close()


def test_a_daemonic_process_decodes_in_threads():
    # A Dask Nanny's worker is daemonic unless `distributed.worker.daemon` is False; it cannot start children.
    context = multiprocessing.get_context("forkserver")
    results = context.Queue()
    process = context.Process(target=_pool_mode, args=(results,), daemon=True)
    process.start()
    try:
        assert results.get(timeout=120) == "threads"
    finally:
        process.join(timeout=60)
    assert process.exitcode == 0


def test_decode_in_names_processes_or_threads():
    assert replace(SMALL, decode_in="threads").decode_in == "threads"
    with pytest.raises(InputError, match="decode_in must be one of"):
        replace(SMALL, decode_in="fork")


def test_on_the_cpu_nothing_is_copied():
    sender = HostToDevice(torch.device("cpu"), slots=1)
    frames = torch.arange(24, dtype=torch.uint8).reshape(2, 2, 2, 3)
    assert sender.send(frames) is frames and sender.bytes_sent == 0
    with pytest.raises(ValueError, match="slots"):
        HostToDevice(torch.device("cpu"), slots=0)


@pytest.mark.gpu
def test_copies_through_reused_pinned_buffers_arrive_intact():
    sender = HostToDevice(torch.device("cuda"), slots=2)
    generator = torch.Generator().manual_seed(0)
    sent = [torch.randint(0, 256, (16, 90, 160, 3), dtype=torch.uint8, generator=generator) for _ in range(5)]
    sent.append(torch.randn(3, 512, 128, generator=generator))  # an fbank batch: float32 through the same buffers
    on_device = [sender.send(t) for t in sent]  # more tensors than buffers: each buffer is reused
    for host, device in zip(sent, on_device, strict=True):
        assert device.is_cuda and device.dtype == host.dtype
        torch.testing.assert_close(device.cpu(), host, rtol=0, atol=0)
    assert sender.bytes_sent == sum(t.nbytes for t in sent)


@pytest.mark.gpu
def test_extract_many_on_cuda_matches_the_cpu(paths):
    on_gpu, _ = _extract_all(replace(SMALL, device="cuda"), paths)
    on_cpu, _ = _extract_all(SMALL, paths)
    for (_, gpu), (_, cpu) in zip(on_gpu, on_cpu, strict=True):
        assert isinstance(gpu, MediaError) == isinstance(cpu, MediaError)
        if isinstance(cpu, MediaError):
            continue
        for name in ("video_tokens", "audio_tokens"):
            a, b = (getattr(t, name).astype(np.float64).ravel() for t in (gpu, cpu))
            if np.linalg.norm(b) > 0:
                assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99, name
