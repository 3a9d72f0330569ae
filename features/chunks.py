"""Where a store's token data lies on disk, clip by clip, and whether a done clip's files are whole.

Each token array (`video_tokens`, `audio_tokens`, `kinetics_logits`) holds one clip per chunk file
(`STORE/<array>/c/<clip>/0/0...`), or one block of clips per shard file with `shard_blocks`. An uncompressed chunk
is, by the Zarr v3 spec, the clip's values in C order (little-endian "bytes" codec): it has a fixed size, and it
is read and written here as a plain file (Zarr-python's per-chunk overhead made batch reads about 8x slower than
np.load of the same bytes, bench/store_io.py). A compressed chunk or a shard has no fixed size.

Integrity: a done clip's file that is missing, or (uncompressed) not exactly its size, is damage, found with one
`os.stat` per clip and array and no read of token data (`ClipChunks.damaged`). A compressed chunk or a shard is
checked for presence that way, and its bytes when Zarr decodes them. Every read of a damaged clip raises
`DamagedClipError` naming the store, the clip and the array; it never reads zeros. The token arrays are written
with every chunk present (`features.store` sets Zarr's `write_empty_chunks`): which clips must have their files
is the store's to say (`must_exist`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import zarr

from common.errors import InputError

__all__ = ["DamagedClipError", "ClipChunks", "is_raw_per_clip", "write_raw_chunks"]

class DamagedClipError(InputError):
    """A done clip whose token data is missing, cut short, too long or does not decode (the message names it)."""


class ClipChunks:
    """The chunk (or shard) files of a store's token arrays.

    Args:
        store_path: the store folder.
        clip_ids: the store's clip ids, to name a damaged clip.
        arrays: the token arrays by name.
        raw: the arrays whose chunks are plain uncompressed files (`is_raw_per_clip`).
        must_exist: `must_exist(name, clip indices)` says per clip whether its file of array `name` must exist (a
            done clip's); asked only of clips whose file is missing, or by `damaged`.
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
        # The exact byte size of a clip's file (None: compressed or sharded, no fixed size).
        self.expected_bytes = {name: int(np.prod(array.shape[1:])) * np.dtype(array.dtype).itemsize
                               if name in raw else None for name, array in arrays.items()}

    def file(self, name: str, clip: int) -> str:
        """The file holding clip `clip` of array `name`: its chunk, or the shard of its block."""
        folder, per_file, encoding, rest = self._keys[name]
        return os.path.join(folder, encoding.encode_chunk_key((clip // per_file, *rest)))

    def damaged(self, index: np.ndarray) -> dict[int, str]:
        """Of the clips `index` (ascending), those whose files must exist and are missing or of the wrong size:
        clip index -> the first problem found, e.g. "video_tokens: chunk file ... missing"."""
        problems: dict[int, str] = {}
        for name in self._keys:
            for clip in index[self._must_exist(name, index)].tolist():
                if clip not in problems:
                    problem = self._problem(name, clip)
                    if problem is not None:
                        problems[clip] = f"{name}: {problem}"
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

    def read_raw(self, name: str, index: np.ndarray, clip_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Read uncompressed chunks straight from their files: (len(index), *clip_shape); a pending clip is zeros.

        Raises:
            DamagedClipError: a done clip's file is missing, or any file is not exactly a clip's size.
        """
        out = np.zeros((len(index), *clip_shape), dtype=dtype)
        missing = []
        for row, clip in enumerate(index.tolist()):
            chunk = self.file(name, clip)
            try:
                values = np.fromfile(chunk, dtype=dtype)
            except FileNotFoundError:
                missing.append(clip)
                continue
            self._check_size(name, clip, chunk, values.nbytes)
            out[row] = values.reshape(clip_shape)
        self._check_missing(name, missing)
        return out

    def read_raw_views(self, name: str, index: np.ndarray, views: np.ndarray, view_shape: tuple[int, ...],
                       dtype: np.dtype) -> np.ndarray:
        """Read view views[i] of clip index[i] from uncompressed chunk files (a view is a contiguous run of bytes).

        Shapes:
            index (B,), views (B,) -> (B, *view_shape)

        Raises:
            DamagedClipError: as `read_raw`.
        """
        count = int(np.prod(view_shape))
        out = np.zeros((len(index), *view_shape), dtype=dtype)
        missing = []
        for row, (clip, view) in enumerate(zip(index.tolist(), views.tolist(), strict=True)):
            chunk = self.file(name, clip)
            try:
                size = os.stat(chunk).st_size
            except FileNotFoundError:
                missing.append(clip)
                continue
            self._check_size(name, clip, chunk, size)
            out[row] = np.fromfile(chunk, dtype=dtype, count=count, offset=view * count * dtype.itemsize
                                   ).reshape(view_shape)
        self._check_missing(name, missing)
        return out

    def read_decoded(self, name: str, array: zarr.Array, index: np.ndarray) -> np.ndarray:
        """Read compressed or sharded clips through Zarr: (len(index), ...).

        Raises:
            DamagedClipError: a done clip's file is missing, or a chunk does not decode (cut short, extended,
                overwritten), naming the first such clip.
        """
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
        if size != self.expected_bytes[name]:
            raise self._error(name, clip, f"chunk file {chunk} has {size} bytes, {self.expected_bytes[name]} expected")

    def _check_missing(self, name: str, clips: Sequence[int]) -> None:
        """Raise for the first of `clips` (their files of `name` are missing) that must have one.

        Only reached when a file is missing (a pending clip, or damage), so a store in good order reads no status.
        """
        if not clips:
            return
        index = np.asarray(clips, dtype=np.int64)
        required = index[self._must_exist(name, index)]
        if required.size:
            clip = int(required[0])
            raise self._error(name, clip, f"chunk file {self.file(name, clip)} missing")

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
    """True when each clip's chunk is a plain little-endian file on local disk (`ClipChunks.read_raw`)."""
    from zarr.codecs import BytesCodec
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    from zarr.storage import LocalStore

    metadata = array.metadata
    codecs = metadata.codecs
    return (
        isinstance(array.store, LocalStore)
        and array.shards is None
        and array.chunks == (1, *array.shape[1:])
        and len(codecs) == 1 and isinstance(codecs[0], BytesCodec) and codecs[0].endian is not None
        and codecs[0].endian.value == "little"
        and isinstance(metadata.chunk_key_encoding, DefaultChunkKeyEncoding)
        and metadata.chunk_key_encoding.separator == "/"
    )
