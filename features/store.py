"""The token store: one Zarr v3 group per dataset x extraction config, written and read only through here.

Layout (n = clips; V, Nv, Dv, Na, Da, K from the group's `token_layout` attribute, an `extract.outputs.TokenLayout`):

| array | dtype | shape | chunks |
|---|---|---|---|
| `clip_id`, `path`, `label`, `split` | string | (n,) | one chunk (written once, at creation) |
| `segment_start_s`, `segment_end_s` (NaN: the whole file) | float64 | (n,) | one chunk (idem) |
| `status` (0 pending, 1 done, 2 failed) | uint8 | (n,) | one block |
| `failure_reason` | string | (n,) | one block |
| `has_audio` | bool | (n,) | one block |
| `audio_frames` | int32 | (n,) | one block |
| `kinetics_class` (s_v, -1 until done; absent when K = 0 and in stores made before it) | int16 | (n,) | one block |
| `video_tokens` | float16 | (n, V, Nv, Dv) | one clip, in one shard file per block (`shard_blocks`) |
| `audio_tokens` | float16 | (n, Na, Da) | idem |
| `kinetics_logits` (absent when K = 0) | float32 | (n, V, K) | idem |

Files: with `shard_blocks` (the default) a store holds about 9 files per block of `clips_per_block` clips, named
`<array>/c.<block>...` (no folder per chunk). Stores made before it hold one file per clip and token array
(`<array>/c/<clip>/0/0...`, `shard_blocks=False`): they are read and resumed as they are (`layout` names which).

Safety: every per-clip array is chunked so that a block of `clips_per_block` clips never shares a chunk or
shard with another block, and the runner gives each block to exactly one writer (two writers on one shard
lose data). A shard is written whole, renamed into place (`features.shards`): its clips wait in a temporary file
beside it until their block is finished (`stage_clips`, `commit_staged`), so a killed writer leaves the old shard
and redoes the unfinished block's clips. Zarr's local store, and `features.chunks` for one-clip chunk files, write
each chunk to a temporary file and rename it. A clip's status becomes "done" only after its tokens are in place.
The store itself is created in a temporary folder and renamed into place, so a half-created store never
exists.

Identity (`TokenStore.identity`): a SHA-256 over a random id made once when the store is created (the group
attribute `store_id`), its creation time, extraction config, token layout and clip list (ids, labels, splits,
segments). A copied, moved or symlinked store keeps it; another store with the same clip ids has another one. A
store made before `store_id` existed gets one from the rest alone.

Integrity (`TokenStore.damaged_clips`, `features.chunks`): a done clip whose chunk file is missing or of the
wrong size is found without reading token data; reading it raises `features.chunks.DamagedClipError` naming the
clip and the array, never zeros; `extract` makes such clips pending and extracts them again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.codecs

from common.errors import InputError
from common.files import sibling_temporary
from common.media import Segment
from common.names import canonical_name, canonical_name_array
from extract.outputs import ClipTokens, TokenLayout, kinetics_class
from features.chunks import ClipChunks, is_indexed_shard, is_raw_per_clip, write_raw_chunks
from features.config import StoreConfig
from features.manifest import ManifestRow
from features.provenance import code_version, now_utc, package_versions
from features.shards import StagedShard, remove_staging

__all__ = [
    "PENDING",
    "DONE",
    "FAILED",
    "STATUS_NAMES",
    "StoreError",
    "TokenStore",
    "open_dask_arrays",
    "package_versions",
    "code_version",
    "now_utc",
]

logger = logging.getLogger(__name__)

PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}
STORE_FORMAT = "mzst-token-store"
STORE_FORMAT_VERSION = 1
_META_ARRAYS = ("clip_id", "path", "label", "split")
_SEGMENT_ARRAYS = ("segment_start_s", "segment_end_s")  # absent in stores of whole files made before segments
# Seconds decoded of a partial clip (NaN: the whole clip); absent in stores made before partial clips were kept.
_DECODED_ARRAY = "decoded_s"
# s_v per clip (`extract.outputs.kinetics_class`), written with the clip's logits: training reads one array instead of
# every clip's logits.
_KINETICS_CLASS_ARRAY = "kinetics_class"


class StoreError(InputError):
    """A store that does not exist, is not a token store, or does not match what the caller expects."""


def _token_arrays(layout: TokenLayout) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Per-clip token arrays: name -> (dtype, per-clip shape)."""
    arrays = {"video_tokens": ("float16", layout.shape("video_tokens")),
              "audio_tokens": ("float16", layout.shape("audio_tokens"))}
    if layout.kinetics_classes:
        arrays["kinetics_logits"] = ("float32", layout.shape("kinetics_logits"))
    return arrays


_SMALL_ARRAYS = {"has_audio": ("bool", ()), "audio_frames": ("int32", ())}


class TokenStore:
    """A token store opened for reading (`mode="r"`) or for the runner's writes (`mode="r+"`)."""

    def __init__(self, group: zarr.Group, path: Path, writable: bool) -> None:
        self._group = group
        self.path = path
        self.writable = writable
        attrs = dict(group.attrs)
        self.token_layout = TokenLayout.from_dict(attrs["token_layout"])
        self.extract_config: dict = attrs["extract_config"]
        self.provenance: dict = attrs["provenance"]
        self.store_config = StoreConfig(**attrs["store_config"])
        self.num_clips: int = group["status"].shape[0]
        # Clip metadata never changes after creation: read it once.
        self.clip_ids, self.paths, *self._stored_names = (np.asarray(group[name][:]) for name in _META_ARRAYS)
        # One spelling, also of a store written before it ("unseen " is "unseen"); `identity` hashes names as stored.
        self.labels, self.splits = (canonical_name_array(names) for names in self._stored_names)
        self.segment_bounds = (np.stack([np.asarray(group[name][:]) for name in _SEGMENT_ARRAYS], axis=1)
                               if _SEGMENT_ARRAYS[0] in group else np.full((self.num_clips, 2), np.nan))  # (n, 2)
        self.fields = tuple(_token_arrays(self.token_layout)) + tuple(_SMALL_ARRAYS)
        self.scalar_fields = tuple(_SMALL_ARRAYS)  # one value per clip: a reader reads them once, not per batch
        token_arrays = {name: group[name] for name in _token_arrays(self.token_layout)}
        self._raw = {name for name, array in token_arrays.items() if is_raw_per_clip(array)}  # read as plain bytes
        self._shards = {name: array.shards[0] for name, array in token_arrays.items() if is_indexed_shard(array)}
        self.clips_per_shard = next(iter(self._shards.values()), None)  # None: one file per clip (older stores)
        self._chunks = ClipChunks(path, self.clip_ids, token_arrays, self._raw, self._must_have_chunk)
        # Staged, not yet committed: (array, block start) -> its shard's temporary file; and per staged batch the
        # clip indices with their one-value-per-clip fields.
        self._staged_shards: dict[tuple[str, int], StagedShard] = {}
        self._staged_values: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        # Array handles, opened once: opening one reads its zarr.json, which cost more than a batch's write of it.
        self._arrays: dict[str, zarr.Array] = {}
        self._has_decoded = _DECODED_ARRAY in group
        self._has_kinetics_class = _KINETICS_CLASS_ARRAY in group

    # --- creation and opening ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | Path,
        clips: Sequence[ManifestRow],
        token_layout: TokenLayout,
        extract_config: dict,
        provenance: dict,
        store_config: StoreConfig | None = None,
    ) -> TokenStore:
        """Create an empty store (all clips pending) for `clips`, atomically.

        Raises:
            FileExistsError: `path` exists.
            InputError: no clips.
        """
        path = Path(path)
        store_config = store_config or StoreConfig()
        if path.exists():
            raise FileExistsError(f"{path}: already exists")
        if not clips:
            raise InputError(f"{path}: cannot create a store without clips")
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(path)
        staging = sibling_temporary(path, f"creating-{os.getpid()}")
        n, block = len(clips), store_config.clips_per_block
        # Chunk files named c.<i>... in the array's folder: no folder per chunk (inodes are scarce on clusters).
        keys = {"chunk_key_encoding": {"name": "default", "separator": "."}} if store_config.shard_blocks else {}
        group = zarr.open_group(str(staging), mode="w-", zarr_format=3, attributes={
            "format": STORE_FORMAT,
            "format_version": STORE_FORMAT_VERSION,
            "token_layout": token_layout.to_dict(),
            "extract_config": extract_config,
            "provenance": provenance,
            "store_config": store_config.to_dict(),
            "store_id": uuid.uuid4().hex,  # made once: copies of the store share it, other stores never do
        })
        for name, values in zip(_META_ARRAYS, _clip_columns(clips), strict=True):
            column = group.create_array(name, shape=(n,), dtype=str, chunks=(n,),
                                        compressors=zarr.codecs.ZstdCodec(level=3))
            column[:] = values
        for name, values in zip(_SEGMENT_ARRAYS, _segment_columns(clips), strict=True):
            group.create_array(name, shape=(n,), dtype="float64", chunks=(n,), fill_value=np.nan)[:] = values
        group.create_array(_DECODED_ARRAY, shape=(n,), dtype="float64", chunks=(block,), fill_value=np.nan, **keys)
        group.create_array("status", shape=(n,), dtype="uint8", chunks=(block,), fill_value=PENDING, **keys)
        group.create_array("failure_reason", shape=(n,), dtype=str, chunks=(block,), fill_value="", **keys)
        for name, (dtype, _) in _SMALL_ARRAYS.items():
            group.create_array(name, shape=(n,), dtype=dtype, chunks=(block,), fill_value=0, **keys)
        if token_layout.kinetics_classes:
            group.create_array(_KINETICS_CLASS_ARRAY, shape=(n,), dtype="int16", chunks=(block,), fill_value=-1,
                               **keys)
        compressors = (zarr.codecs.ZstdCodec(level=store_config.compression_level),
                       ) if store_config.compressor == "zstd" else None
        for name, (dtype, clip_shape) in _token_arrays(token_layout).items():
            group.create_array(
                name, shape=(n, *clip_shape), dtype=dtype, chunks=(1, *clip_shape), fill_value=0,
                shards=(block, *clip_shape) if store_config.shard_blocks else None, compressors=compressors,
                dimension_names=("clip", *_DIMENSION_NAMES[name]), **keys,
            )
        os.replace(staging, path)
        logger.info("created store %s: %d clips, layout %s", path, n, token_layout)
        return cls.open(path, mode="r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> TokenStore:
        """Open an existing store; `mode` "r" (read only) or "r+" (the runner's writes).

        Raises:
            StoreError: `path` is missing, is not a token store, or its metadata is damaged (an array folder
                deleted, a zarr.json that is not one).
        """
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: not a token store (no zarr.json); create it with `cli.py extract`")
        try:
            group = zarr.open_group(str(path), mode=mode, zarr_format=3)
            if group.attrs.get("format") != STORE_FORMAT:
                raise StoreError(f"{path}: a Zarr group but not an MZST token store (format="
                                 f"{group.attrs.get('format')!r})")
            if group.attrs.get("format_version") != STORE_FORMAT_VERSION:
                raise StoreError(f"{path}: store format version {group.attrs.get('format_version')}, this code "
                                 f"reads {STORE_FORMAT_VERSION}")
            return cls(group, path, writable=mode == "r+")
        except StoreError:
            raise
        except KeyError as error:  # Zarr's word for an array whose folder is gone
            raise StoreError(f"{path}: damaged store, {error} is missing (an array folder deleted?); extract into a "
                             "new store") from error
        except (ValueError, TypeError) as error:  # a zarr.json that is not JSON, or JSON of the wrong shape
            raise StoreError(f"{_metadata_problem(path)}: damaged store metadata ({type(error).__name__}: {error}); "
                             "extract into a new store") from error

    @functools.cached_property
    def identity(self) -> str:
        """What tells this store from every other whatever its path (the module docstring): a SHA-256, hex."""
        record = [self._group.attrs.get("store_id"), self.provenance.get("created"), self.extract_config,
                  self.token_layout.to_dict(), self.clip_ids.tolist(), *(n.tolist() for n in self._stored_names),
                  self.segment_bounds.tolist()]
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()

    # --- per-clip state ---------------------------------------------------------------------------------

    @property
    def status(self) -> np.ndarray:
        """Current status of every clip, read fresh from disk: (n,) uint8."""
        return np.asarray(self._array("status")[:])

    @property
    def failure_reasons(self) -> np.ndarray:
        return np.asarray(self._group["failure_reason"][:])

    @property
    def decoded_s(self) -> np.ndarray:
        """Per clip the seconds decoded of a partial file, NaN for a whole clip (or a pending / failed one): (n,)."""
        if _DECODED_ARRAY not in self._group:
            return np.full(self.num_clips, np.nan)
        return np.asarray(self._group[_DECODED_ARRAY][:])

    def kinetics_classes(self, indices: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """s_v of clips (`extract.outputs.kinetics_class` of their logits, recorded at extraction; -1: not done):
        (len(indices),) int64. None for a store without it (no Kinetics logits, or made before it was recorded)."""
        if not self._has_kinetics_class:
            return None
        index = np.asarray(indices, dtype=np.int64)
        return np.asarray(self._group[_KINETICS_CLASS_ARRAY][:])[index].astype(np.int64)

    def segments(self, indices: Sequence[int] | np.ndarray) -> list[Segment | None]:
        """The segment of the file that each clip is (None: the whole file)."""
        return [None if np.isnan(start) else Segment(float(start), float(end))
                for start, end in self.segment_bounds[np.asarray(indices, dtype=np.int64)]]

    def block_ranges(self) -> list[tuple[int, int]]:
        """[start, stop) clip ranges of the blocks: the unit one writer owns."""
        block = self.store_config.clips_per_block
        return [(start, min(start + block, self.num_clips)) for start in range(0, self.num_clips, block)]

    def counts(self) -> dict[str, int]:
        status = self.status
        return {name: int((status == code).sum()) for code, name in STATUS_NAMES.items()}

    def indices(self, status: int | None = DONE, splits: Sequence[str] | None = None) -> np.ndarray:
        """Clip indices with the given status (None: any) and split (None: any, names in any spelling that
        `common.names.canonical_name` makes one), ascending."""
        keep = np.ones(self.num_clips, dtype=bool)
        if status is not None:
            keep &= self.status == status
        if splits is not None:
            keep &= np.isin(self.splits, [canonical_name(split) for split in splits])
        return np.flatnonzero(keep)

    # --- writes (runner only) ---------------------------------------------------------------------------

    def write_clips(self, indices: Sequence[int], clip_tokens: Sequence[ClipTokens]) -> None:
        """Write the tokens of clips, then mark them done (`stage_clips` then `commit_staged`).

        Args:
            indices: clip indices, all inside one block (the caller's block).
            clip_tokens: the clips' tokens.

        Raises:
            ValueError: a shape or dtype that does not match the store's token layout.
        """
        self.stage_clips(indices, clip_tokens)
        self.commit_staged()

    @property
    def stages_blocks(self) -> bool:
        """Whether written clips wait for `commit_staged` to rewrite their shards: commit once per block, not per
        batch (each commit rewrites the shard whole)."""
        return bool(self._shards)

    def stage_clips(self, indices: Sequence[int], clip_tokens: Sequence[ClipTokens]) -> None:
        """Write the tokens of clips (of one block), done only at `commit_staged`: in a sharded store they wait in
        their shards' temporary files, so that a killed writer never leaves a shard half-written."""
        self._check_writable()
        if len(indices) != len(clip_tokens):
            raise ValueError(f"{len(indices)} indices for {len(clip_tokens)} clips")
        if not len(indices):
            return
        order = np.argsort(indices)
        index = np.asarray(indices, dtype=np.int64)[order]
        tokens = [clip_tokens[i] for i in order]
        decoded = np.array([np.nan if getattr(t, "decoded_s", None) is None else t.decoded_s for t in tokens])
        if not self._has_decoded and not np.isnan(decoded).all():
            raise StoreError(f"{self.path}: made before partial clips were kept, it cannot record one; extract "
                             "into a new store, or set `strict_media=True` to fail such files")
        values = {"has_audio": np.array([bool(t.has_audio) for t in tokens]),
                  "audio_frames": np.array([int(t.audio_frames) for t in tokens], dtype=np.int32)}
        if self._has_decoded:
            values[_DECODED_ARRAY] = decoded
        for name, (dtype, clip_shape) in _token_arrays(self.token_layout).items():
            arrays = [_checked(getattr(t, name), dtype, clip_shape, name, self.path) for t in tokens]
            if name == "kinetics_logits" and self._has_kinetics_class:
                values[_KINETICS_CLASS_ARRAY] = kinetics_class(np.stack(arrays)).astype(np.int16)
            if name in self._shards:
                self._stage_in_shard(name, index, arrays)
            elif name in self._raw:
                write_raw_chunks(str(self.path / name / "c"), index, arrays)
            else:
                self._set(name, index, np.stack(arrays))  # (k, *clip_shape)
        self._staged_values.append((index, values))

    def _stage_in_shard(self, name: str, index: np.ndarray, arrays: list[np.ndarray]) -> None:
        per_shard = self._shards[name]
        codecs = self._group[name].metadata.codecs[0].codecs  # the sharding codec's chunk codecs
        level = next((codec.level for codec in codecs if isinstance(codec, zarr.codecs.ZstdCodec)), None)
        for clip, values in zip(index.tolist(), arrays, strict=True):
            block = clip // per_shard * per_shard
            if (name, block) not in self._staged_shards:
                self._staged_shards[name, block] = StagedShard(self._chunks.file(name, clip), per_shard, level)
            self._staged_shards[name, block].add(clip - block, values)

    def commit_staged(self) -> None:
        """Put the staged clips' shards in place whole, then record the clips' values and mark them done."""
        for shard in self._staged_shards.values():
            shard.commit()
        self._staged_shards.clear()
        staged, self._staged_values = self._staged_values, []
        for index, values in staged:
            for name, column in values.items():
                self._set(name, index, column)
            # Status last: a clip is done only once its data is on disk. Only a clip that failed before has a
            # reason to clear (a string array's read-modify-write is the dearest of these writes).
            if (np.asarray(self._array("status").get_orthogonal_selection((index,))) == FAILED).any():
                self._set("failure_reason", index, np.array([""] * len(index), dtype=object))
            self._set("status", index, np.full(len(index), DONE, dtype=np.uint8))

    def abandon_staged(self) -> None:
        """Drop the staged clips (they stay as they were: pending, or done with their earlier data)."""
        for shard in self._staged_shards.values():
            shard.abandon()
        self._staged_shards.clear()
        self._staged_values = []

    def remove_staging(self) -> int:
        """Delete shards' temporary files left by killed writers; only while no writer runs (under the lease)."""
        return remove_staging([self.path / name for name in self._shards])

    def relocate(self, paths: Sequence[Path], source: str) -> int:
        """Point the clips at the files' new places (the same clips, moved with their data folder).

        The clip list (ids, labels, splits, segments) is the caller's to check; done clips stay done. Each move is
        recorded in the provenance under "relocations". Returns how many paths changed.
        """
        self._check_writable()
        new = np.array([str(p) for p in paths], dtype=object)
        if new.shape != self.paths.shape:
            raise ValueError(f"{len(new)} paths for {self.num_clips} clips")
        moved = int((new != self.paths).sum())
        if moved:
            self._group["path"][:] = new
            provenance = dict(self.provenance)
            provenance["relocations"] = [*provenance.get("relocations", []),
                                         {"source": source, "clips_moved": moved, "at": now_utc()}]
            self._group.attrs["provenance"] = provenance
            self.paths, self.provenance = new, provenance
        return moved

    def mark_pending(self, indices: Sequence[int]) -> None:
        """Make clips pending again (done clips whose token data is damaged: `extract` redoes them)."""
        self._check_writable()
        if len(indices):
            index = np.sort(np.asarray(indices, dtype=np.int64))
            self._set("status", index, np.full(len(index), PENDING, dtype=np.uint8))

    def mark_failed(self, indices: Sequence[int], reasons: Sequence[str]) -> None:
        """Record clips as failed with a one-line reason each."""
        self._check_writable()
        if not indices:
            return
        index = np.asarray(indices, dtype=np.int64)
        order = np.argsort(index)
        one_line = np.array([" ".join(str(reasons[i]).split()) for i in order], dtype=object)
        self._set("failure_reason", index[order], one_line)
        self._set("status", index[order], np.full(len(index), FAILED, dtype=np.uint8))

    def _set(self, name: str, sorted_index: np.ndarray, values: np.ndarray) -> None:
        """Write `values` at ascending clip indices, one slice per run of consecutive indices.

        Slices rather than an orthogonal selection: zarr 3.1 rejects orthogonal writes into sharded arrays.
        """
        breaks = np.flatnonzero(np.diff(sorted_index) != 1) + 1
        for run in np.split(np.arange(len(sorted_index)), breaks):
            start = int(sorted_index[run[0]])
            self._array(name)[start:start + len(run)] = values[run[0]:run[-1] + 1]

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            array = self._group[name]
            # Zarr leaves out a chunk that is all fill value; a token array writes every clip's chunk, so that a
            # done clip without one is damage (stores written before may lack the zero audio of a silent clip).
            self._arrays[name] = (array.with_config({"write_empty_chunks": True}) if name in self._chunks.expected_bytes
                                  else array)
        return self._arrays[name]

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")

    # --- reads ------------------------------------------------------------------------------------------

    def read(self, indices: Sequence[int] | np.ndarray, fields: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Read clips by index (any order, repeats allowed); only done clips hold data.

        Returns:
            field -> array with a leading axis of len(indices), in the order of `indices`.

        Raises:
            ValueError: an unknown field or an index out of range.
            features.chunks.DamagedClipError: a done clip whose token data is missing, of the wrong size or does not
                decode (never read as zeros).
        """
        fields = self.fields if fields is None else tuple(fields)
        unknown = [f for f in fields if f not in self.fields]
        if unknown:
            raise ValueError(f"{self.path}: no field(s) {unknown}; the store has {list(self.fields)}")
        index = np.asarray(indices, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.num_clips):
            raise ValueError(f"{self.path}: clip index out of range 0..{self.num_clips - 1}")
        # Zarr reads a sorted, unique selection fastest; restore the caller's order afterwards.
        unique, inverse = np.unique(index, return_inverse=True)
        out = {}
        for name in fields:
            array = self._group[name]
            if name in self._raw:
                values = self._chunks.read_raw(name, unique, array.shape[1:], np.dtype(array.dtype).newbyteorder("<"))
            elif name in self._chunks.expected_bytes:
                values = self._chunks.read_decoded(name, array, unique)
            else:
                values = np.asarray(array.get_orthogonal_selection((unique,)))
            out[name] = values[inverse]
        return out

    def read_views(self, indices: Sequence[int] | np.ndarray, views: Sequence[int] | np.ndarray,
                   name: str = "video_tokens") -> np.ndarray:
        """One view per clip of a per-view field (`video_tokens`, `kinetics_logits`): clip indices[i], view views[i].

        An uncompressed store reads only those bytes (a view is a contiguous run of a clip's chunk file); a
        compressed one decompresses the clip's chunk and keeps the view.

        Shapes:
            indices (B,), views (B,) -> (B, *per-view shape), e.g. (B, Nv, Dv)
        """
        index, view = np.asarray(indices, dtype=np.int64), np.asarray(views, dtype=np.int64)
        if index.shape != view.shape:
            raise ValueError(f"{index.size} clip indices but {view.size} views")
        array = self._group[name]
        if index.size and (index.min() < 0 or index.max() >= self.num_clips or view.min() < 0
                           or view.max() >= array.shape[1]):
            raise ValueError(f"{self.path}: clip index or view out of range for {name} {array.shape}")
        if name not in self._raw:
            return self.read(index, [name])[name][np.arange(index.size), view]  # (B, V, ...) -> (B, ...)
        return self._chunks.read_raw_views(name, index, view, array.shape[2:], np.dtype(array.dtype).newbyteorder("<"))

    def field_shapes(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Per-clip fields: name -> (dtype, per-clip shape)."""
        return {name: (str(self._group[name].dtype), tuple(self._group[name].shape[1:])) for name in self.fields}

    # --- integrity (the module docstring) ---------------------------------------------------------------

    def damaged_clips(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[int, str]:
        """Done clips (of `indices`; None: all) whose token data is missing or of the wrong size.

        One `os.stat` per clip and token array, no read of token data; an uncompressed chunk must have its exact
        size, a compressed chunk or a shard only exist (its bytes are checked when it is decoded).

        Returns:
            clip index -> the first problem found, e.g. "video_tokens: chunk file ... missing", ascending.
        """
        index = np.arange(self.num_clips) if indices is None else np.unique(np.asarray(indices, dtype=np.int64))
        return self._chunks.damaged(index)

    def _must_have_chunk(self, name: str, index: np.ndarray) -> np.ndarray:
        """Per clip of `index` whether its chunk file of token array `name` must exist: a done clip's, but for the
        all-zero audio tokens of a clip without audio, which Zarr left out of stores written before every chunk
        was (`_array`)."""
        must = np.asarray(self._array("status").get_orthogonal_selection((index,))) == DONE
        if name == "audio_tokens":
            must &= np.asarray(self._array("has_audio").get_orthogonal_selection((index,)))
        return must

    def summary(self, disk_usage: bool = False) -> dict:
        """A JSON-able summary for people and scripts (`cli.py inspect`, `features.summary`)."""
        from features.summary import store_summary

        return store_summary(self, disk_usage)


_DIMENSION_NAMES = {"video_tokens": ("view", "video_token", "video_dim"), "audio_tokens": ("audio_token", "audio_dim"),
                    "kinetics_logits": ("view", "kinetics_class")}


def _remove_stale_staging(path: Path) -> None:
    """Delete half-created stores left by killed processes (named after their process id)."""
    for staging in path.parent.glob(sibling_temporary(path, "creating-*").name):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        shutil.rmtree(staging, ignore_errors=True)


def _metadata_problem(path: Path) -> Path:
    """The first metadata file of a store that is not JSON (the group's, then each array's), else the store."""
    for file in (path / "zarr.json", *sorted(path.glob("*/zarr.json"))):
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except ValueError:
            return file
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _clip_columns(clips: Sequence[ManifestRow]) -> tuple[np.ndarray, ...]:
    return tuple(np.array(column, dtype=object) for column in (
        [c.clip_id for c in clips], [str(c.path) for c in clips], [c.class_name for c in clips],
        [c.split for c in clips]))


def _segment_columns(clips: Sequence[ManifestRow]) -> tuple[np.ndarray, np.ndarray]:
    bounds = np.array([(np.nan, np.nan) if c.segment is None else (c.segment.start_s, c.segment.end_s)
                       for c in clips], dtype=np.float64)  # (n, 2)
    return bounds[:, 0], bounds[:, 1]


def _checked(values: Any, dtype: str, shape: tuple[int, ...], name: str, path: Path) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != shape:
        raise InputError(f"{path}: {name} has shape {array.shape}, the store's layout says {shape}")
    if array.dtype != np.dtype(dtype):
        raise InputError(f"{path}: {name} has dtype {array.dtype}, the store holds {dtype}")
    return array


def open_dask_arrays(path: str | Path) -> dict[str, Any]:
    """Open every array of a store lazily as dask arrays (nothing is read until computed)."""
    import dask.array as da

    store = TokenStore.open(path)
    return {name: da.from_zarr(store._group[name]) for name in (*_META_ARRAYS, "status", *store.fields)}
