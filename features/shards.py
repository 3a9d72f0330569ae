"""Zarr v3 shard files of a token array, written whole and read by byte range (`features.store`, `features.chunks`).

A shard holds one block of clips of one array: the clips' chunks, one per clip in any order, then an index of
(offset, length) per clip (uint64 little-endian, 2**64 - 1 for an absent chunk) and the CRC32C of the index, as
Zarr's `sharding_indexed` codec writes them with the index at the end; Zarr reads these files, and the store reads a
clip's bytes straight from its shard at the offset its index gives.

Writing: the clips of a shard are appended to a temporary file beside it as they are extracted (`StagedShard`), and
only when the block is finished (or the writer stops) are the old shard's other chunks copied in, the index written
and the file renamed over the shard. A killed writer leaves the old shard, or none, and a temporary file that the
next run removes (`remove_staging`): a shard is never half-written, and the clips it had not committed are redone.
"""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c
import numpy as np

__all__ = ["EMPTY", "ShardIndexError", "StagedShard", "read_index", "remove_staging"]

EMPTY = 2**64 - 1  # an absent chunk's offset and length in the index
_STAGING_SUFFIX = ".writing"


class ShardIndexError(ValueError):
    """A shard file whose index cannot be read: shorter than its index, or the index's checksum does not match."""


def index_bytes(chunks: int) -> int:
    """Bytes of the index (and its checksum) at the end of a shard of `chunks` chunks."""
    return 16 * chunks + 4


def read_index(fd: int, file_size: int, chunks: int) -> np.ndarray:
    """The (offset, length) of each chunk of an open shard file, checked: (chunks, 2) uint64, EMPTY for absent.

    Raises:
        ShardIndexError: the file is too short, its index checksum does not match, or an entry points past the
            chunk data (the file was cut short, extended or overwritten at its end).
    """
    size = index_bytes(chunks)
    if file_size < size:
        raise ShardIndexError(f"{file_size} bytes, shorter than its index of {size}")
    tail = os.pread(fd, size, file_size - size)
    if len(tail) != size or google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
        raise ShardIndexError(f"its index (the last {size} bytes of {file_size}) does not match its checksum")
    entries = np.frombuffer(tail[:-4], dtype="<u8").reshape(chunks, 2)
    present = entries[:, 0] != EMPTY
    if (entries[present].sum(axis=1) > file_size - size).any():
        raise ShardIndexError("its index points past its chunk data")
    return entries


class StagedShard:
    """The chunks of one shard being written, in a temporary file beside it until `commit` renames it into place.

    Args:
        target: the shard file.
        chunks: chunks per shard (clips per block).
        zstd_level: compress each chunk with zstd at this level (the array's chunk codecs); None: raw bytes.
    """

    def __init__(self, target: str, chunks: int, zstd_level: int | None = None) -> None:
        self.target = target
        self.chunks = chunks
        self._zstd_level = zstd_level
        folder, name = os.path.split(target)
        os.makedirs(folder, exist_ok=True)
        self._temporary = os.path.join(folder, f".{name}.{os.getpid()}{_STAGING_SUFFIX}")
        self._file = open(self._temporary, "wb")  # noqa: SIM115 - closed by `commit` or `abandon`
        self._entries: dict[int, tuple[int, int]] = {}  # position in the shard -> (offset, length)

    def add(self, position: int, values: np.ndarray) -> None:
        """Append the chunk of `values` (C order, little-endian) at `position` (a later one replaces it)."""
        data = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).tobytes()
        if self._zstd_level is not None:
            import numcodecs

            data = numcodecs.Zstd(level=self._zstd_level).encode(data)
        self._add(position, data)

    def _add(self, position: int, data: bytes) -> None:
        self._entries[position] = (self._file.tell(), len(data))
        self._file.write(data)

    def commit(self) -> None:
        """Copy in the old shard's chunks not staged again, write the index and rename the file over the shard.

        An old shard whose index is damaged contributes nothing: its done clips are damaged already
        (`TokenStore.damaged_clips`), and extraction redoes them.
        """
        try:
            old = os.open(self.target, os.O_RDONLY)
        except FileNotFoundError:
            old = None
        if old is not None:
            try:
                entries = read_index(old, os.fstat(old).st_size, self.chunks)
                for position in np.flatnonzero(entries[:, 0] != EMPTY).tolist():
                    if position not in self._entries:
                        offset, length = (int(v) for v in entries[position])
                        self._add(position, os.pread(old, length, offset))
            except ShardIndexError:
                pass
            finally:
                os.close(old)
        index = np.full((self.chunks, 2), EMPTY, dtype="<u8")
        for position, entry in self._entries.items():
            index[position] = entry
        raw = index.tobytes()
        self._file.write(raw + google_crc32c.value(raw).to_bytes(4, "little"))
        self._file.close()
        os.replace(self._temporary, self.target)

    def abandon(self) -> None:
        """Drop the staged chunks (the shard stays as it was)."""
        self._file.close()
        Path(self._temporary).unlink(missing_ok=True)


def remove_staging(folders: list[Path]) -> int:
    """Delete the temporary files of shards that killed writers left in `folders` (call with no writer running).

    Returns how many were removed.
    """
    removed = 0
    for folder in folders:
        for leftover in folder.rglob(f".*{_STAGING_SUFFIX}") if folder.is_dir() else ():
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed
