"""Copy a token store into the shard layout (`cli.py store convert`): the same clips, statuses, values and identity.

A store made in one file per clip and array (before shards) works as it is; converting it cuts its files about
300-fold (541k files and 1.2M folders at 175k clips) and gives training start-up the recorded s_v. The copy is made
under a temporary name beside `out` and renamed into place when whole, so a killed conversion leaves no store at
`out` (run it again). The copy keeps the store's `store_id` and creation time, so its identity is the original's:
runs trained on the original accept it, as they accept a copied folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import zarr

from common.files import sibling_temporary
from features.config import StoreConfig
from features.manifest import ManifestRow
from features.store import DONE, FAILED, TokenStore

__all__ = ["convert_store"]

logger = logging.getLogger(__name__)

_CLIPS_PER_READ = 64  # clips read from the source at a time: bounded memory whatever the block size


def convert_store(source: Path, out: Path, clips_per_block: int | None = None) -> TokenStore:
    """Write the store at `source` again at `out` in shards of `clips_per_block` clips (default: StoreConfig's).

    Raises:
        FileExistsError: `out` exists.
        features.store.StoreError: `source` is not a token store.
        features.chunks.DamagedClipError: a done clip of `source` is damaged (run `extract` over it first).
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists")
    old = TokenStore.open(source)
    labels, splits = old._stored_names  # as stored: the identity hashes them so
    segments = old.segments(np.arange(old.num_clips))
    rows = [ManifestRow(str(clip), Path(str(path)), str(label), str(split), segment) for clip, path, label, split,
            segment in zip(old.clip_ids, old.paths, labels, splits, segments, strict=True)]
    config = StoreConfig(**{**old.store_config.to_dict(), "shard_blocks": True,
                            "clips_per_block": clips_per_block or StoreConfig().clips_per_block})
    staging = sibling_temporary(out, f"converting-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        TokenStore.create(staging, rows, old.token_layout, old.extract_config,
                                {**old.provenance, "converted_from": str(Path(source).resolve())}, config)
        group = zarr.open_group(str(staging), mode="r+")
        if "store_id" in old._group.attrs:
            group.attrs["store_id"] = old._group.attrs["store_id"]
        else:  # made before `store_id`: its identity comes from the rest, and so must the copy's
            del group.attrs["store_id"]
        _copy_clips(old, TokenStore.open(staging, mode="r+"))
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    new = TokenStore.open(out)
    logger.info("%s: %d clips copied into shards of %d clips at %s", source, new.num_clips, config.clips_per_block,
                out)
    return new


def _copy_clips(old: TokenStore, new: TokenStore) -> None:
    status, reasons, decoded = old.status, old.failure_reasons, old.decoded_s
    for start, stop in new.block_ranges():
        done = np.flatnonzero(status[start:stop] == DONE) + start
        for first in range(0, done.size, _CLIPS_PER_READ):
            index = done[first:first + _CLIPS_PER_READ]
            values = old.read(index)
            new.stage_clips(index.tolist(), [SimpleNamespace(
                **{name: column[row] for name, column in values.items()},
                decoded_s=None if np.isnan(decoded[clip]) else float(decoded[clip]))
                for row, clip in enumerate(index.tolist())])
        new.commit_staged()
        failed = np.flatnonzero(status[start:stop] == FAILED) + start
        new.mark_failed(failed.tolist(), [str(reasons[clip]) for clip in failed])
