"""Resumable extraction of a clip list into a token store, on one process or a Dask cluster.

The work is cut into blocks of `clips_per_block` clips (features.store): each block goes to exactly one
writer, so no chunk or shard ever has two writers. A worker runs one pipeline over all the blocks it is given
(extract.pipeline.ClipExtractor.extract_many: clips decoded ahead while the backbones run, with no restart at a
block's end), and a writer thread beside it writes the clips as they come, batched per block, each batch marked
done only after its tokens are on disk, so an interrupted run loses at most the clips in flight and the thread
that drives the GPU never waits for the disk. Re-running the same command skips done clips and retries pending
ones (and done clips whose token data was damaged since, `TokenStore.damaged_clips`); a clip that cannot be
decoded is recorded as failed with its reason and the run goes on. One run at a time writes a store: the runner
holds its lease (features.lease) and its Dask workers write only the blocks it hands them, a few tasks of
consecutive blocks per worker.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import read_csv, write_csv
from common.media import MediaError
from common.progress import Progress, progress_bar
from common.settings import result_values
from common.threads import requested_threads, set_requested_threads
from extract.config import PROFILES, ExtractConfig
from extract.outputs import ClipTokens
from features.config import RunnerConfig
from features.lease import StoreLease
from features.manifest import ManifestRow, read_clip_list
from features.store import DONE, FAILED, PENDING, StoreError, TokenStore, code_version, now_utc, package_versions

__all__ = ["ExtractionSummary", "build_extract_config", "failures_csv_path", "run_extraction"]

logger = logging.getLogger(__name__)

# Dask tasks per worker: each task is one pipeline over its consecutive blocks; a few per worker balance the load
# and bound what a killed worker's task redoes elsewhere.
_TASKS_PER_WORKER = 4
# Extracted clips waiting for the writer thread, at most: a slow disk slows the pipeline instead of filling memory.
_WRITE_QUEUE_CLIPS = 256


@dataclass
class ExtractionSummary:
    """What a run did, for the one-line CLI summary and for scripts."""

    store: str
    clips: int
    done: int  # done clips in the store after the run
    failed: int  # failed clips in the store after the run
    pending: int  # clips still pending (non-zero only after block errors)
    skipped: int  # clips already done (or failed, without retry) before the run
    extracted: int  # clips this run made done
    seconds: float
    clips_per_second: float
    failures_csv: str | None
    dashboard: str | None = None
    block_errors: list[str] = field(default_factory=list)


def build_extract_config(
    profile: str,
    crops: int | None = None,
    temporal_views: int | None = None,
    random_init: bool = False,
    full_tokens: bool = False,
    gpus: int = 0,
    compile: bool = False,
    batch_views: int | None = None,
    strict_media: bool = False,
    options: dict | None = None,
) -> ExtractConfig:
    """The extraction config of a run: a named profile with the command line's overrides (None: the profile's).

    The device follows the workers: CUDA when the run has GPUs, else CPU (never a silent fallback). `options` sets
    any other field by name, a view / audio / token field as "video.frame_stride" (applied last; an unknown name
    is an InputError listing the known ones).
    """
    if profile not in PROFILES:
        raise InputError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    base = PROFILES[profile]
    overrides = {"crops": crops, "temporal_views": temporal_views}
    video = replace(base.video, **{k: v for k, v in overrides.items() if v is not None})
    config = replace(
        base, video=video, random_init=base.random_init or random_init, full_tokens=full_tokens,
        device="cuda" if gpus else "cpu", compile=compile,
        precision=base.precision if gpus else "fp32",  # bf16 autocast is a GPU speed setting
        batch_views=batch_views or base.batch_views, strict_media=strict_media,
    )
    return _with_options(config, options or {})


def _with_options(config: ExtractConfig, options: dict) -> ExtractConfig:
    fields = config.to_dict()
    for name, value in options.items():
        part, _, sub = name.rpartition(".")
        if part and not isinstance(fields.get(part), dict):
            raise InputError(f"extraction option {name!r}: {part!r} is not a group of settings; groups: "
                             f"{sorted(k for k, v in fields.items() if isinstance(v, dict))}")
        (fields[part] if part else fields)[sub] = value
    return ExtractConfig.from_dict(fields)


def failures_csv_path(store_path: str | Path) -> Path:
    """`<STORE>.failures.csv`, next to the store."""
    return Path(f"{Path(store_path)}.failures.csv")


def run_extraction(config: RunnerConfig) -> ExtractionSummary:
    """Extract every pending clip of `config.videos` into the store `config.out`.

    Everything that can be checked is checked before any clip is touched: the clip list, the weights (the
    backbones are built once here), and, when the store exists, that it was made with the same extraction
    config and clip list.

    Raises:
        FileNotFoundError: a missing manifest / folder / media file, or missing weights without random init.
        ValueError: a malformed manifest, or an existing store made with another config or clip list.
        features.lease.LeaseHeldError: another extract holds the store (without `wait`).
    """
    started = time.perf_counter()
    clips = read_clip_list(config.videos)
    with StoreLease(config.out, config.lease_timeout_s, wait=config.wait):
        return _run_holding_the_lease(config, clips, started)


def _run_holding_the_lease(config: RunnerConfig, clips: Sequence[ManifestRow], started: float) -> ExtractionSummary:
    from extract.pipeline import ClipExtractor

    extractor = ClipExtractor(config.extract, video_weights=config.video_weights, audio_weights=config.audio_weights,
                              kinetics_head=config.kinetics_head)
    store = _open_or_create(config, clips, extractor)
    if store.remove_staging():  # no writer runs yet: what is there was left by killed ones
        logger.info("%s: removed the unfinished shards of an interrupted run", store.path)
    damaged = store.damaged_clips()
    if damaged:  # a chunk file deleted, cut short or extended since: the clip's tokens are made again
        first = next(iter(damaged))
        logger.warning("%s: %d done clips have damaged token data (e.g. %r: %s); extracting them again", store.path,
                       len(damaged), str(store.clip_ids[first]), damaged[first])
        store.mark_pending(list(damaged))

    status = store.status
    todo_mask = (status == PENDING) | ((status == FAILED) if config.retry_failed else False)
    skipped = int((~todo_mask).sum())
    blocks = [(start, np.flatnonzero(todo_mask[start:stop]) + start) for start, stop in store.block_ranges()]
    blocks = [(start, index) for start, index in blocks if index.size]
    total = int(sum(index.size for _, index in blocks))
    logger.info("%s: %d clips, %d to extract, %d skipped (done%s)", store.path, len(clips), total, skipped,
                "" if config.retry_failed else " or failed")

    block_errors: list[str] = []
    dashboard = None
    with progress_bar(total, "extract", "clips", enabled=config.progress) as bar:
        if _uses_dask(config):
            del extractor  # the workers build their own
            dashboard = _run_on_dask(config, store, blocks, bar, block_errors)
        else:
            try:
                block_errors += _extract_blocks(store, blocks, extractor, on_clip=lambda: bar.update(1))
            finally:
                extractor.close()

    counts = store.counts()
    failures = _write_failures_csv(store)
    seconds = time.perf_counter() - started
    extracted = counts["done"] - int((status == DONE).sum())
    return ExtractionSummary(
        store=str(store.path), clips=store.num_clips, done=counts["done"], failed=counts["failed"],
        pending=counts["pending"], skipped=skipped, extracted=extracted, seconds=round(seconds, 2),
        clips_per_second=round(total / seconds, 3) if seconds else 0.0,
        failures_csv=str(failures) if failures else None, dashboard=dashboard, block_errors=block_errors,
    )


def _open_or_create(config: RunnerConfig, clips: Sequence[ManifestRow], extractor) -> TokenStore:
    layout = extractor.token_layout()
    extract_dict = config.extract.to_dict()
    if not config.out.exists():
        provenance = {**extractor.provenance(), "packages": package_versions(), "code_version": code_version(),
                      "created": now_utc(), "source": str(config.videos)}
        return TokenStore.create(config.out, clips, layout, extract_dict, provenance, config.store)
    store = TokenStore.open(config.out, mode="r+")
    try:  # a field added since the store was made counts as its default, which is what that store did
        recorded = ExtractConfig.from_dict(store.extract_config).to_dict()
    except InputError:  # not an extraction config of this code (an imported store): compared as it is
        recorded = store.extract_config
    # Settings that change how fast tokens are made, not what they are (`affects_result=False`), may differ: a
    # store resumes on a GPU machine after a CPU start.
    wanted, made = result_values(ExtractConfig, extract_dict), result_values(ExtractConfig, recorded)
    differences = sorted(key for key in set(wanted) | set(made) if wanted.get(key) != made.get(key))
    if differences or layout != store.token_layout:
        # a setting of its own (not a group such as `video`) can be named with the store's value, to resume as it was
        settings = [f"`{key}={recorded[key]!r}`" for key in differences
                    if key in recorded and not isinstance(recorded[key], dict | list)]
        raise StoreError(f"{config.out}: made with a different extraction config (differs in "
                         f"{', '.join(differences) or 'token layout'}); choose a new `out` or the same settings"
                         + (f" (the store's: {', '.join(settings)})" if settings else ""))
    head, made_head = (provenance.get("video", {}).get("kinetics_head_sha256")
                       for provenance in (extractor.provenance(), store.provenance))
    if head != made_head:  # the Kinetics logits of its done clips came from another head (or the random one)
        raise StoreError(f"{config.out}: made with {'no' if made_head is None else 'another'} fitted Kinetics head "
                         f"than {config.kinetics_head or 'none'}; choose a new `out` or the same head")
    for tower, given in (("video", config.video_weights), ("audio", config.audio_weights)):
        now, made = (provenance.get(tower, {}).get("sha256") for provenance in (extractor.provenance(),
                                                                                 store.provenance))
        if made is not None and now != made:  # the done clips' tokens came from other weights: mixing them is silent
            raise StoreError(f"{config.out}: its {tower} tokens were made with other weights ({made[:12]}) than "
                             f"{given or 'the default ones'} ({str(now)[:12]}); choose a new `out` or the same weights")
    same_clips = (store.clip_ids.tolist() == [c.clip_id for c in clips]
                  and store.labels.tolist() == [c.class_name for c in clips]
                  and store.splits.tolist() == [c.split for c in clips]
                  and store.segments(np.arange(store.num_clips)) == [c.segment for c in clips])
    if not same_clips:
        raise StoreError(f"{config.out}: made from a different clip list than {config.videos} (clip ids, labels, "
                         "splits or segments differ); choose a new `out` for new clips")
    moved = store.relocate([c.path for c in clips], str(config.videos))
    if moved:  # the same clips in a moved data folder: done clips stay done, the rest are read from there
        logger.info("%s: %d clip paths moved (same clip ids, labels, splits and segments); reading them from %s",
                    store.path, moved, config.videos)
    return store


def _extract_blocks(store: TokenStore, blocks: Sequence[tuple[int, np.ndarray]], extractor,
                    on_clip: Callable[[], None] | None = None) -> list[str]:
    """Extract the clips of `blocks` ((start, clip indices) each) in one pipeline, written as they are ready.

    A block whose extraction or writing raises is recorded (its clips not yet written stay pending for a re-run)
    and a new pipeline takes the clips of the other blocks not yet written. Returns the block errors, one line each.
    """
    errors: list[str] = []
    remaining = list(blocks)
    while remaining:
        index = np.concatenate([clips for _, clips in remaining])
        block_of_clip = np.repeat([start for start, _ in remaining], [clips.size for _, clips in remaining])
        handed = 0
        writer = _StoreWriter(store)
        try:
            with writer:
                results = extractor.extract_many([Path(p) for p in store.paths[index]], segments=store.segments(index))
                for clip_index, (_, result) in zip(index, results, strict=True):
                    writer.put(int(clip_index), result)
                    handed += 1
                    if on_clip is not None:
                        on_clip()
            remaining = []
        except Exception as error:  # noqa: BLE001 - recorded; the block's clips stay pending for a re-run
            failed = writer.failed_block if writer.failed_block is not None else int(
                block_of_clip[min(handed, index.size - 1)])
            logger.exception("block starting at clip %d failed", failed)
            errors.append(f"block {failed}: {type(error).__name__}: {error}")
            written = np.array(sorted(writer.written), dtype=np.int64)
            remaining = [(start, clips[~np.isin(clips, written)]) for start, clips in remaining if start != failed]
            remaining = [(start, clips) for start, clips in remaining if clips.size]
    return errors


class _StoreWriter:
    """Writes extracted clips into the store from a thread of its own, in batches: what has arrived, per block.

    Batches cut the store's per-call cost (13.8 ms per clip written one by one; BENCHMARKS.md); a block never shares a
    chunk with another, so a batch inside one block is one writer's. The tokens are in place before the status
    marks them done (features.store), so a kill at any point leaves every clip done with its tokens or pending. In
    a sharded store the clips of a block are staged and committed (their shards rewritten whole) when the next
    block's first clip arrives or the writing ends: once per block, not per batch. A write error ends the writing
    (the clips after it stay pending) and is raised by the next `put` or at the end of the `with`.
    """

    def __init__(self, store: TokenStore) -> None:
        self._store = store
        self._queue: queue.Queue = queue.Queue(maxsize=_WRITE_QUEUE_CLIPS)
        self._error: BaseException | None = None
        self.failed_block: int | None = None  # start of the block whose write raised
        self.written: set[int] = set()  # clips written (done or failed); read once the `with` has ended
        self._staged: list[int] = []  # clips staged in the store, not yet committed
        self._thread = threading.Thread(target=self._write_all, name="mzst-store-writer", daemon=True)

    def __enter__(self) -> _StoreWriter:
        self._thread.start()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._queue.put(None)
        self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def put(self, clip_index: int, result: ClipTokens | MediaError) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((clip_index, result))

    def _write_all(self) -> None:
        block = self._store.store_config.clips_per_block
        finished = False
        staged_block = None
        while not finished:
            batch = [self._queue.get()]
            while batch[-1] is not None and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            finished = batch[-1] is None
            if self._error is not None:
                continue  # after an error: drain, so that `put` never blocks
            items = [item for item in batch if item is not None]
            for start in sorted({clip // block * block for clip, _ in items}):
                in_block = [item for item in items if item[0] // block * block == start]
                try:
                    if staged_block not in (None, start):
                        self._commit()  # the staged block is finished
                    staged_block = start
                    self._write(in_block)
                except BaseException as error:  # noqa: BLE001 - handed to the pipeline's thread
                    self._error, self.failed_block = error, staged_block
                    self._store.abandon_staged()
                    break
        if self._error is None:
            try:
                self._commit()
            except BaseException as error:  # noqa: BLE001 - raised at the end of the `with`
                self._error, self.failed_block = error, staged_block
                self._store.abandon_staged()

    def _commit(self) -> None:
        self._store.commit_staged()
        self.written.update(self._staged)
        self._staged = []

    def _write(self, items: list[tuple[int, ClipTokens | MediaError]]) -> None:
        failed = [(clip, result) for clip, result in items if isinstance(result, MediaError)]
        for _, error in failed:
            logger.warning("failed: %s", error)
        done = [(clip, result) for clip, result in items if not isinstance(result, MediaError)]
        self._store.stage_clips([clip for clip, _ in done], [tokens for _, tokens in done])
        self._staged += [clip for clip, _ in done]
        self._store.mark_failed([clip for clip, _ in failed], [error.reason for _, error in failed])
        self.written.update(clip for clip, _ in failed)
        if not self._store.stages_blocks:
            self._commit()


# --- Dask -----------------------------------------------------------------------------------------------

def _uses_dask(config: RunnerConfig) -> bool:
    return config.scheduler is not None or config.gpus > 1 or config.workers > 1


def _run_on_dask(config: RunnerConfig, store: TokenStore, blocks, bar: Progress, block_errors: list[str]) -> str | None:
    import dask
    from distributed import Client, as_completed

    # Our own cluster's workers are not daemonic, so that they can start their decode processes (a cluster
    # joined by `scheduler` is configured by whoever started it; daemonic workers decode in threads, and log it),
    # and leave Ctrl-C to this process, which closes the cluster (`common.processes.dask_setup`).
    with dask.config.set({"distributed.worker.daemon": False, "distributed.worker.preload": ["common.processes"]}):
        cluster = None if config.scheduler else _local_cluster(config)
        client = Client(config.scheduler) if config.scheduler else Client(cluster)
        try:
            dashboard = client.dashboard_link
            logger.info("Dask dashboard: %s", dashboard)
            n_workers = max(1, len(client.scheduler_info()["workers"]))
            _check_workers_see(client, store.path)
            # Each worker process plans its threads on its share of the cores, with this process's explicit count.
            requested, _ = requested_threads()
            per_task = max(1, math.ceil(len(blocks) / (n_workers * _TASKS_PER_WORKER)))
            tasks = [blocks[i:i + per_task] for i in range(0, len(blocks), per_task)]
            futures = {
                client.submit(
                    _worker_extract_blocks, str(store.path.resolve()), task, config.extract, config.video_weights,
                    config.audio_weights, config.kinetics_head, n_workers, requested,
                    key=f"extract-blocks-{task[0][0]}-{os.getpid()}", pure=False,
                ): task
                for task in tasks
            }
            for future in as_completed(futures):
                task = futures[future]
                try:
                    block_errors += future.result()
                except Exception as error:  # noqa: BLE001 - recorded; the task's clips stay pending for a re-run
                    logger.error("blocks %d to %d failed on a worker: %s", task[0][0], task[-1][0], error)
                    block_errors.append(f"blocks {task[0][0]}-{task[-1][0]}: {type(error).__name__}: {error}")
                bar.update(sum(index.size for _, index in task))
            return dashboard
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _check_workers_see(client, store_path: Path) -> None:
    """Before any work: every worker must see the store at this path (a shared file system), else one line names
    the path and the workers that do not."""
    blind = {address: where for address, (sees, where) in
             client.run(_sees_store, str(store_path.resolve())).items() if not sees}
    if blind:
        workers = ", ".join(f"{where[0]} ({address} on {where[1]})" for address, where in sorted(blind.items()))
        raise StoreError(f"{store_path.resolve()}: not visible to Dask worker(s) {workers}; every worker must see "
                         "the store at the same path (a shared file system mounted there)")


def _sees_store(store_path: str, dask_worker=None) -> tuple[bool, tuple[str, str]]:
    """Runs on each worker (`Client.run` passes it as `dask_worker`): whether the store is there, and the worker's
    (name, host name)."""
    import socket

    return (Path(store_path) / "zarr.json").is_file(), (str(dask_worker.name), socket.gethostname())


def _local_cluster(config: RunnerConfig):
    """One worker process per GPU (each sees only its own GPU), or `workers` CPU processes."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    if config.gpus:
        workers = {
            f"gpu-{gpu}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(gpu)}}}
            for gpu in range(config.gpus)
        }
        return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                           silence_logs=logging.WARNING)
    return LocalCluster(n_workers=config.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.WARNING)


_WORKER_EXTRACTORS: dict[str, object] = {}


def _worker_extract_blocks(store_path: str, blocks: list[tuple[int, np.ndarray]], extract: ExtractConfig,
                           video_weights, audio_weights, kinetics_head, thread_share: int,
                           requested: int | None) -> list[str]:
    """Runs on a Dask worker: build (once per process) the extractor, then extract a task's blocks in one pipeline.

    Clips already done are skipped: a task re-run after its first worker was killed redoes only what is left.
    """
    import json

    from extract.pipeline import ClipExtractor

    key = json.dumps([extract.to_dict(), str(video_weights), str(audio_weights), str(kinetics_head)], sort_keys=True)
    if key not in _WORKER_EXTRACTORS:
        set_requested_threads(requested)
        for previous in _WORKER_EXTRACTORS.values():
            previous.close()
        _WORKER_EXTRACTORS.clear()
        _WORKER_EXTRACTORS[key] = ClipExtractor(extract, video_weights=video_weights, audio_weights=audio_weights,
                                                thread_share=thread_share, kinetics_head=kinetics_head)
    store = TokenStore.open(store_path, mode="r+")
    status = store.status
    left = [(start, index[status[index] != DONE]) for start, index in blocks]
    return _extract_blocks(store, [(start, index) for start, index in left if index.size], _WORKER_EXTRACTORS[key])


def _write_failures_csv(store: TokenStore) -> Path | None:
    """Rewrite `<STORE>.failures.csv` (path,reason) from the store; remove it when nothing failed.

    A file that already says the same is left alone: a complete store on a read-only file system resumes as a
    no-op instead of failing on a write it does not need.
    """
    target = failures_csv_path(store.path)
    failed = np.flatnonzero(store.status == FAILED)
    if not failed.size:
        if target.exists():
            target.unlink()
        return None
    reasons = store.failure_reasons
    rows = [[str(store.paths[i]), str(reasons[i])] for i in failed]
    if target.is_file() and [[r["path"], r["reason"]] for r in read_csv(target, ("path", "reason"),
                                                                         "failures CSV")] == rows:
        return target
    return write_csv(target, ("path", "reason"), rows)
