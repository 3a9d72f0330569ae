"""Where a store's token data lies on disk, clip by clip, and whether a done clip's data is whole.

Each token array (`video_tokens`, `audio_tokens`, `kinetics_logits`) holds one block of clips per shard file
(`STORE/<array>/c.<block>.0.0...`, `shard_blocks`, the default; `features.shards`), or, in stores made before,
one clip per chunk file (`STORE/<array>/c/<clip>/0/0...`). An uncompressed chunk is, by the Zarr v3 spec, the
clip's values in C order (little-endian "bytes" codec): it has a fixed size, and it is read here straight from its
file, at the offset its shard's index gives (Zarr-python's per-chunk overhead made batch reads about 8x slower
than np.load of the same bytes, bench/store_io.py). A compressed chunk has no fixed size and is read through Zarr.

Integrity: a done clip whose data is missing, or (uncompressed) not exactly its size, is damage, found without
reading token data (`ClipChunks.damaged`): one read of each shard's index (a missing shard or chunk, an index that
does not match its checksum, an entry past the data), or one `os.stat` per clip and array in the one-file-per-clip
layout. A compressed chunk's bytes are checked when Zarr decodes them. Every read of a damaged clip raises
`DamagedClipError` naming the store, the clip and the array; it never reads zeros. Which clips must have data is
the store's to say (`must_exist`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import zarr

from common.errors import InputError
from features.shards import EMPTY, ShardIndexError, read_index

__all__ = ["DamagedClipError", "ClipChunks", "is_raw_per_clip", "is_indexed_shard", "write_raw_chunks"]

class DamagedClipError(InputError):
    """A done clip whose token data is missing, cut short, too long or does not decode (the message names it)."""


class ClipChunks:
    """The chunk and shard files of a store's token arrays.

    Args:
        store_path: the store folder.
        clip_ids: the store's clip ids, to name a damaged clip.
        arrays: the token arrays by name.
        raw: the arrays whose chunks are plain uncompressed bytes, one clip each (`is_raw_per_clip`).
        must_exist: `must_exist(name, clip indices)` says per clip whether its data in array `name` must exist (a
            done clip's); asked only of clips whose data is missing, or by `damaged`.
    """

    def __init__(self, store_path: Path, clip_ids: np.ndarray, arrays: dict[str, zarr.Array], raw: Collection[str],
                 must_exist: Callable[[str, np.ndarray], np.ndarray]) -> None:
        self._store_path = store_path
        self._clip_ids = clip_ids
        self._must_exist = must_exist
        # Per array what names its files, joined as strings: a Path per clip cost more than the `os.stat` of its file.
        self._keys = {name: (str(store_path / name), array.shards[0] if array.shards is not None else 1,
                             array.metadata.chunk_key_encoding, (0,) * (array.ndim - 1))
                      for name, array in arrays.items()}
        self._sharded = {name for name, array in arrays.items() if is_indexed_shard(array)}  # indexes read here
        # The exact byte size of a clip's chunk (None: compressed, no fixed size).
        self.expected_bytes = {name: int(np.prod(array.shape[1:])) * np.dtype(array.dtype).itemsize
                               if name in raw else None for name, array in arrays.items()}
        # Shard file -> ((size, the index's checksum), its index): a shard rewritten since is read again. Not the
        # inode and mtime: a rewritten shard can reuse a freed inode within one coarse mtime tick, and a stale index
        # would read another clip's bytes.
        self._indexes: dict[str, tuple[tuple[int, bytes], np.ndarray]] = {}

    def file(self, name: str, clip: int) -> str:
        """The file holding clip `clip` of array `name`: its chunk, or the shard of its block."""
        folder, per_file, encoding, rest = self._keys[name]
        return os.path.join(folder, encoding.encode_chunk_key((clip // per_file, *rest)))

    def damaged(self, index: np.ndarray) -> dict[int, str]:
        """Of the clips `index` (ascending), those whose data must exist and is missing or of the wrong size:
        clip index -> the first problem found, e.g. "video_tokens: chunk file ... missing"."""
        problems: dict[int, str] = {}
        for name in self._keys:
            clips = index[self._must_exist(name, index)]
            found = (self._shard_problems(name, clips) if name in self._sharded else
                     {clip: problem for clip in clips.tolist() if (problem := self._problem(name, clip)) is not None})
            for clip, problem in found.items():
                problems.setdefault(clip, f"{name}: {problem}")
        return dict(sorted(problems.items()))

    def _problem(self, name: str, clip: int) -> str | None:
        chunk = self.file(name, clip)
        try:
            size = os.stat(chunk).st_size
        except FileNotFoundError:
            return f"chunk file {chunk} missing"
        expected = self.expected_bytes[name]
        if size == 0 or (expected is not None and size != expected):
            return f"chunk file {chunk} has {size} bytes" + (f", {expected} expected" if expected is not None else "")
        return None

    def _shard_problems(self, name: str, clips: np.ndarray) -> dict[int, str]:
        """Clip -> problem for those of `clips` whose shard is missing or damaged, or lacks or cuts their chunk:
        one read of each shard's index."""
        problems: dict[int, str] = {}
        per_file, expected = self._keys[name][1], self.expected_bytes[name]
        clips = np.sort(clips)
        for members in np.split(clips, np.flatnonzero(np.diff(clips // per_file)) + 1) if clips.size else ():
            members = members.tolist()
            path = self.file(name, members[0])
            try:
                entries = self._read_index(name, path)
            except FileNotFoundError:
                problems.update((clip, f"shard file {path} missing") for clip in members)
                continue
            except ShardIndexError as error:
                problems.update((clip, f"shard file {path} damaged: {error}") for clip in members)
                continue
            for clip in members:
                offset, length = (int(v) for v in entries[clip % per_file])
                if offset == EMPTY:
                    problems[clip] = f"chunk missing from shard file {path}"
                elif expected is not None and length != expected:
                    problems[clip] = f"chunk in shard file {path} has {length} bytes, {expected} expected"
        return problems

    def _read_index(self, name: str, path: str, fd: int | None = None) -> np.ndarray:
        """A shard's index, from the cache while the file's size and index checksum are those it was read with.

        Raises:
            FileNotFoundError: no such shard. ShardIndexError: its index is damaged.
        """
        own = fd is None
        if own:
            fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            key = (size, os.pread(fd, 4, size - 4) if size >= 4 else b"")
            cached = self._indexes.get(path)
            if cached is None or cached[0] != key:
                cached = (key, read_index(fd, size, self._keys[name][1]))
                self._indexes[path] = cached
            return cached[1]
        finally:
            if own:
                os.close(fd)

    def read_raw(self, name: str, index: np.ndarray, clip_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Read uncompressed clips straight from their files: (len(index), *clip_shape); a pending clip is zeros.

        Raises:
            DamagedClipError: a done clip's data is missing, or any chunk is not exactly a clip's size.
        """
        return self._read_ranges(name, index, np.zeros(len(index), dtype=np.int64), clip_shape, dtype)

    def read_raw_views(self, name: str, index: np.ndarray, views: np.ndarray, view_shape: tuple[int, ...],
                       dtype: np.dtype) -> np.ndarray:
        """Read view views[i] of clip index[i] from uncompressed chunks (a view is a contiguous run of bytes).

        Shapes:
            index (B,), views (B,) -> (B, *view_shape)

        Raises:
            DamagedClipError: as `read_raw`.
        """
        return self._read_ranges(name, index, views * int(np.prod(view_shape)) * dtype.itemsize, view_shape, dtype)

    def _read_ranges(self, name: str, index: np.ndarray, starts: np.ndarray, shape: tuple[int, ...],
                     dtype: np.dtype) -> np.ndarray:
        """Per clip index[i] the `shape` values from byte starts[i] of its chunk: (len(index), *shape). Each file
        (a clip's chunk, or a shard holding several of the clips) is opened once."""
        nbytes = int(np.prod(shape)) * dtype.itemsize
        out = np.zeros((len(index), *shape), dtype=dtype)
        by_file: dict[str, list[tuple[int, int]]] = {}
        for row, clip in enumerate(index.tolist()):
            by_file.setdefault(self.file(name, clip), []).append((row, clip))
        missing: list[int] = []
        for path, members in by_file.items():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                missing += [clip for _, clip in members]
                continue
            try:
                for row, clip, offset in self._chunk_offsets(name, path, fd, members, missing):
                    data = os.pread(fd, nbytes, offset + int(starts[row]))
                    if len(data) != nbytes:
                        raise self._error(name, clip, f"file {path} ends inside the clip's data")
                    out[row] = np.frombuffer(data, dtype=dtype).reshape(shape)
            finally:
                os.close(fd)
        self._check_missing(name, missing)
        return out

    def _chunk_offsets(self, name: str, path: str, fd: int, members: list[tuple[int, int]],
                       missing: list[int]) -> list[tuple[int, int, int]]:
        """(row, clip, offset of its chunk in the open file) of the clips whose chunk is there; the clips whose
        chunk a shard lacks are added to `missing`.

        Raises:
            DamagedClipError: a chunk not of a clip's size, or a shard whose index is damaged when one of its clips
                must have data.
        """
        if name not in self._sharded:
            size = os.fstat(fd).st_size
            for _, clip in members:
                self._check_size(name, clip, f"chunk file {path}", size)
            return [(row, clip, 0) for row, clip in members]
        try:
            entries = self._read_index(name, path, fd)
        except ShardIndexError as error:
            clips = np.array([clip for _, clip in members], dtype=np.int64)
            required = clips[self._must_exist(name, clips)]
            if required.size:
                raise self._error(name, int(required[0]), f"shard file {path} damaged: {error}") from error
            return []  # only pending clips: zeros
        found = []
        for row, clip in members:
            offset, length = (int(v) for v in entries[clip % self._keys[name][1]])
            if offset == EMPTY:
                missing.append(clip)
                continue
            self._check_size(name, clip, f"chunk in shard file {path}", length)
            found.append((row, clip, offset))
        return found

    def read_decoded(self, name: str, array: zarr.Array, index: np.ndarray) -> np.ndarray:
        """Read compressed clips through Zarr: (len(index), ...).

        Raises:
            DamagedClipError: a done clip's data is missing, or a chunk does not decode (cut short, extended,
                overwritten), naming the first such clip.
        """
        if name in self._sharded:  # Zarr reads a chunk absent from its shard as zeros: a done clip's is damage
            required = index[self._must_exist(name, index)]
            problems = self._shard_problems(name, required)
            if problems:
                clip = min(problems)
                raise self._error(name, clip, problems[clip])
        else:
            self._check_missing(name, [clip for clip in index.tolist() if not os.path.exists(self.file(name, clip))])
        try:
            return np.asarray(array.get_orthogonal_selection((index,)))
        except (RuntimeError, ValueError):  # zstd's and the shard checksum's errors: find the clip, one by one
            for clip in index.tolist():
                try:
                    array[clip]
                except (RuntimeError, ValueError) as error:
                    raise self._error(name, clip, f"chunk does not decode: {error}") from error
            raise

    def _check_size(self, name: str, clip: int, chunk: str, size: int) -> None:
        """Raise unless `size`, that of the clip's chunk (`chunk` names it), is a clip's."""
        if size != self.expected_bytes[name]:
            raise self._error(name, clip, f"{chunk} has {size} bytes, {self.expected_bytes[name]} expected")

    def _check_missing(self, name: str, clips: Sequence[int]) -> None:
        """Raise for the first of `clips` (their data in `name` is missing) that must have data.

        Only reached when data is missing (a pending clip, or damage), so a store in good order reads no status.
        """
        if not clips:
            return
        index = np.asarray(clips, dtype=np.int64)
        required = index[self._must_exist(name, index)]
        if required.size:
            clip = int(required[0])
            where = "shard" if name in self._sharded else "chunk"
            raise self._error(name, clip, f"{where} file {self.file(name, clip)} missing"
                              + (" or lacks the clip's chunk" if name in self._sharded else ""))

    def _error(self, name: str, clip: int, problem: str) -> DamagedClipError:
        return DamagedClipError(f"{self._store_path}: clip {self._clip_ids[clip]!r} (index {clip}) is done but its "
                                f"{name} data is damaged ({problem}); run extract over the store again, it "
                                "re-extracts damaged clips")


def write_raw_chunks(folder: str, sorted_index: np.ndarray, values: Sequence[np.ndarray]) -> None:
    """Write one-clip chunks of an uncompressed array (its chunk folder `STORE/<array>/c`) as files, each to a
    temporary file renamed into place, as Zarr's local store does: a killed writer leaves the old chunk or the new
    one.

    One file write per clip instead of a Zarr call: Zarr's per-call overhead was most of a clip's write time.
    """
    suffix = ("0",) * values[0].ndim if values else ()
    for clip, value in zip(sorted_index, values, strict=True):
        target = os.path.join(folder, str(int(clip)), *suffix)
        staging = os.path.join(os.path.dirname(target), f".{suffix[-1]}.writing-{os.getpid()}")
        data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
        try:
            file = open(staging, "wb")  # noqa: SIM115 - the folder is made only when missing (a new clip)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            file = open(staging, "wb")  # noqa: SIM115
        with file:
            file.write(data)
        os.replace(staging, target)


def is_raw_per_clip(array: zarr.Array) -> bool:
    """True when each clip's chunk is plain little-endian bytes on local disk that `ClipChunks.read_raw` reads
    itself: a file of its own (`STORE/<array>/c/<clip>/0...`), or a byte range of an indexed shard."""
    from zarr.codecs import BytesCodec
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    from zarr.storage import LocalStore

    metadata = array.metadata
    codecs = metadata.codecs[0].codecs if array.shards is not None else metadata.codecs
    return (
        isinstance(array.store, LocalStore)
        and array.chunks == (1, *array.shape[1:])
        and len(codecs) == 1 and isinstance(codecs[0], BytesCodec) and codecs[0].endian is not None
        and codecs[0].endian.value == "little"
        and isinstance(metadata.chunk_key_encoding, DefaultChunkKeyEncoding)
        and (is_indexed_shard(array) if array.shards is not None else metadata.chunk_key_encoding.separator == "/")
    )


def is_indexed_shard(array: zarr.Array) -> bool:
    """True when the array is sharded one block of whole clips per shard, with Zarr's default shard index (little-
    endian, CRC32C, at the end) that `features.shards` reads and writes."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    codecs = array.metadata.codecs
    if array.shards is None or array.shards[1:] != array.shape[1:] or len(codecs) != 1:
        return False
    sharding = codecs[0]
    return (isinstance(sharding, ShardingCodec) and sharding.index_location == ShardingCodecIndexLocation.end
            and len(sharding.index_codecs) == 2 and isinstance(sharding.index_codecs[0], BytesCodec)
            and sharding.index_codecs[0].endian is not None and sharding.index_codecs[0].endian.value == "little"
            and isinstance(sharding.index_codecs[1], Crc32cCodec))
