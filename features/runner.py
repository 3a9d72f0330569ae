"""Resumable extraction of a clip list into a token store, on one process or a Dask cluster.

The work is cut into blocks of `clips_per_block` clips (features.store): each block goes to exactly one
writer, so no chunk or shard ever has two writers. Within a block, clips are decoded ahead while the
backbones run (extract.pipeline.ClipExtractor.extract_many) and each clip is written, then marked done, as
soon as it is ready, so an interrupted run loses at most the clips in flight. Re-running the same command
skips done clips and retries pending ones; a clip that cannot be decoded is recorded as failed with its
reason and the run goes on. One run at a time writes a store: the runner holds its lease (features.lease) and
its Dask workers write only the blocks it hands them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from extract.config import PROFILES, ExtractConfig
from extract.errors import InputError
from extract.files import read_csv, write_csv
from extract.media import MediaError
from extract.threads import requested_threads, set_requested_threads
from features.config import RunnerConfig
from features.lease import StoreLease
from features.manifest import ClipRecord, read_clip_list
from features.store import DONE, FAILED, PENDING, StoreError, TokenStore, code_version, now_utc, package_versions

__all__ = ["ExtractionSummary", "build_extract_config", "failures_csv_path", "run_extraction"]

logger = logging.getLogger(__name__)

# Extraction settings that change how fast tokens are made, not what they are: a store may be resumed with
# other values of these (e.g. on a GPU machine after a CPU start).
_RUNTIME_KEYS = frozenset({"device", "compile", "compile_mode", "attention", "batch_views", "decode_threads"})


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


def _run_holding_the_lease(config: RunnerConfig, clips: Sequence[ClipRecord], started: float) -> ExtractionSummary:
    from extract.pipeline import ClipExtractor

    extractor = ClipExtractor(config.extract, video_weights=config.video_weights, audio_weights=config.audio_weights)
    store = _open_or_create(config, clips, extractor)

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
    with tqdm(total=total, unit="clip", desc="extract", disable=not config.progress, dynamic_ncols=True) as bar:
        if _uses_dask(config):
            del extractor  # the workers build their own
            dashboard = _run_on_dask(config, store, blocks, bar, block_errors)
        else:
            for start, index in blocks:
                try:
                    _extract_block(store, index, extractor, on_clip=lambda: bar.update(1))
                except Exception as error:  # noqa: BLE001 - recorded; the block's clips stay pending for a re-run
                    logger.exception("block starting at clip %d failed", start)
                    block_errors.append(f"block {start}: {type(error).__name__}: {error}")

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


def _open_or_create(config: RunnerConfig, clips: Sequence[ClipRecord], extractor) -> TokenStore:
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
    differences = sorted(
        key for key in set(extract_dict) | set(recorded)
        if key not in _RUNTIME_KEYS and extract_dict.get(key) != recorded.get(key)
    )
    if differences or layout != store.token_layout:
        raise StoreError(f"{config.out}: made with a different extraction config (differs in "
                         f"{', '.join(differences) or 'token layout'}); choose a new `out` or the same settings")
    same_clips = (store.clip_ids.tolist() == [c.clip_id for c in clips]
                  and store.labels.tolist() == [c.label for c in clips]
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


def _extract_block(store: TokenStore, index: np.ndarray, extractor, on_clip: Callable[[], None] | None = None) -> int:
    """Extract the clips `index` (all in one block) and write each as soon as it is ready."""
    paths = [Path(p) for p in store.paths[index]]
    clips = extractor.extract_many(paths, segments=store.segments(index))
    for clip_index, (_, result) in zip(index, clips, strict=True):
        if isinstance(result, MediaError):
            logger.warning("failed: %s", result)
            store.mark_failed([int(clip_index)], [result.reason])
        else:
            store.write_clips([int(clip_index)], [result])
        if on_clip is not None:
            on_clip()
    return len(index)


# --- Dask -----------------------------------------------------------------------------------------------

def _uses_dask(config: RunnerConfig) -> bool:
    return config.scheduler is not None or config.gpus > 1 or config.workers > 1


def _run_on_dask(config: RunnerConfig, store: TokenStore, blocks, bar: tqdm, block_errors: list[str]) -> str | None:
    from distributed import Client, as_completed

    cluster = None if config.scheduler else _local_cluster(config)
    client = Client(config.scheduler) if config.scheduler else Client(cluster)
    try:
        dashboard = client.dashboard_link
        logger.info("Dask dashboard: %s", dashboard)
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        _check_workers_see(client, store.path)
        # Each worker process plans its threads on its share of the cores, with this process's explicit count.
        requested, _ = requested_threads()
        futures = {
            client.submit(
                _worker_extract_block, str(store.path.resolve()), index, config.extract, config.video_weights,
                config.audio_weights, n_workers, requested, key=f"extract-block-{start}-{os.getpid()}", pure=False,
            ): (start, index.size)
            for start, index in blocks
        }
        for future in as_completed(futures):
            start, size = futures[future]
            try:
                future.result()
            except Exception as error:  # noqa: BLE001 - recorded; the block's clips stay pending for a re-run
                logger.error("block starting at clip %d failed on a worker: %s", start, error)
                block_errors.append(f"block {start}: {type(error).__name__}: {error}")
            bar.update(size)
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


def _worker_extract_block(store_path: str, index: np.ndarray, extract: ExtractConfig, video_weights, audio_weights,
                          thread_share: int, requested: int | None) -> int:
    """Runs on a Dask worker: build (once per process) the extractor, then extract one block."""
    import json

    from extract.pipeline import ClipExtractor

    key = json.dumps([extract.to_dict(), str(video_weights), str(audio_weights)], sort_keys=True)
    if key not in _WORKER_EXTRACTORS:
        set_requested_threads(requested)
        _WORKER_EXTRACTORS.clear()
        _WORKER_EXTRACTORS[key] = ClipExtractor(extract, video_weights=video_weights, audio_weights=audio_weights,
                                                thread_share=thread_share)
    store = TokenStore.open(store_path, mode="r+")
    return _extract_block(store, index, _WORKER_EXTRACTORS[key])


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
