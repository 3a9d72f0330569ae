"""Configuration of the token store and of the extraction runner (defaults documented once, here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.errors import InputError
from extract.config import ExtractConfig

__all__ = ["StoreConfig", "RunnerConfig"]

_COMPRESSORS = ("zstd", "none")


@dataclass(frozen=True)
class StoreConfig:
    """How the Zarr v3 token store is laid out on disk.

    The defaults were chosen by measurement (bench/store_io.py, BENCHMARKS.md): fp16 tokens compress only
    about 1.09x with zstd, while decompression made batch reads about 4x slower, so token arrays are stored
    uncompressed by default; one clip per chunk keeps random access by clip index to one file per array.
    """

    clips_per_block: int = 32  # unit of work of one writer; status / reason / small arrays chunk by it
    compressor: str = "none"  # "none" or "zstd" for the token arrays
    compression_level: int = 1  # zstd level (1-22)
    shard_blocks: bool = False  # bundle each block's per-clip chunks into one shard file (zarr sharding)

    def __post_init__(self) -> None:
        if self.clips_per_block < 1:
            raise InputError(f"clips_per_block must be >= 1, got {self.clips_per_block}")
        if self.compressor not in _COMPRESSORS:
            raise InputError(f"compressor must be one of {_COMPRESSORS}, got {self.compressor!r}")
        if not 1 <= self.compression_level <= 22:
            raise InputError(f"compression_level must be in 1..22, got {self.compression_level}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunnerConfig:
    """One extraction run: which clips, where to, and on which workers.

    `gpus > 0` starts a local Dask cluster of that many worker processes, each pinned to one GPU; `gpus = 0`
    runs on CPUs with `workers` processes (1 runs in this process, without Dask); `scheduler` joins an
    existing Dask cluster instead (every worker must see the store path, e.g. on a shared file system).
    """

    videos: Path  # manifest CSV, a folder scanned for media files, or one media file
    out: Path  # the store folder (created, or resumed when it exists with the same config)
    extract: ExtractConfig  # how clips become tokens (what every worker builds its extractor from)
    store: StoreConfig = field(default_factory=StoreConfig)
    gpus: int = 0  # local GPU workers (one process per GPU)
    workers: int = 1  # CPU worker processes when gpus == 0
    scheduler: str | None = None  # address of an existing Dask scheduler (multi-node)
    video_weights: Path | None = None  # MViT-v2-S weights (torchvision format); None: torch hub cache
    audio_weights: Path | None = None  # AST weights (original AST, HF transformers, or timm DeiT format)
    retry_failed: bool = False  # also retry clips recorded as failed (pending clips are always retried)
    progress: bool = True  # show a progress bar
    wait: bool = False  # when another extract holds the store's lease: wait for it (False: stop, naming it)
    lease_timeout_s: float = 60.0  # a store lease without a heartbeat for this long is stale and taken over

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise InputError(f"`gpus` must be >= 0, got {self.gpus}")
        if self.workers < 1:
            raise InputError(f"`workers` must be >= 1, got {self.workers}")
        if self.lease_timeout_s <= 0:
            raise InputError(f"`lease_timeout_s` must be > 0, got {self.lease_timeout_s}")
        if self.gpus and self.workers != 1:
            raise InputError("`workers` is for CPU runs; with `gpus=N` the run uses one worker per GPU")
