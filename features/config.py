"""Configuration of the token store and of the extraction runner (defaults documented once, here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import InputError
from common.settings import check_fields, setting
from extract.config import ExtractConfig

__all__ = ["StoreConfig", "RunnerConfig"]

_COMPRESSORS = ("zstd", "none")


@dataclass(frozen=True)
class StoreConfig:
    """How the Zarr v3 token store is laid out on disk.

    The defaults were chosen by measurement (bench/store_io.py, bench/store_scale.py, BENCHMARKS.md): fp16 tokens
    compress only about 1.09x with zstd, while decompression made batch reads about 4x slower, so token arrays are
    stored uncompressed by default; one clip per chunk keeps random access by clip index to one byte range, and one
    shard file per block of 512 clips keeps a 175k-clip store near 3,000 files (one file per clip made 541k, too
    many for a cluster's file system). A killed extract redoes at most the clips of the blocks it was writing.
    """

    clips_per_block: int = setting(512, affects_result=False,
                                   help="Clips per unit of work of one writer, per shard file and per status chunk "
                                        "(fixed when the store is created).")
    compressor: str = setting("none", affects_result=False)  # "none" or "zstd" for the token arrays
    compression_level: int = setting(1, affects_result=False)  # zstd level (1-22)
    shard_blocks: bool = setting(True, affects_result=False, flag="--shard",
                                 help="One Zarr shard file per block and token array (fewer files); --no-shard: one "
                                      "file per clip and array, as stores made before.")

    def __post_init__(self) -> None:
        check_fields(self)
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

    videos: Path = setting(help="A manifest CSV (clip_id,path,class_name,split[,start_s,end_s]), a folder, or a video.")
    out: Path = setting(affects_result=False,
                        help="Token store to create, or to resume when it exists (same config and clip list).")
    extract: ExtractConfig = setting()  # how clips become tokens (what every worker builds its extractor from)
    store: StoreConfig = setting(factory=StoreConfig, affects_result=False)
    gpus: int = setting(0, affects_result=False, help="GPUs to use: one Dask worker process per GPU (0: CPU).")
    workers: int = setting(1, affects_result=False,
                           help="CPU worker processes when `gpus` is 0 (1 runs in this process).")
    scheduler: str | None = setting(None, affects_result=False,
                                    help="Address of an existing Dask scheduler to run on (multi-node).")
    video_weights: Path | None = setting(None,
                                         help="MViT-v2-S weights in torchvision format (default: the torch hub "
                                              "cache), or for the clipclap profile an HF CLIP model folder or file.")
    kinetics_head: Path | None = setting(None, help="A Kinetics head fitted on the random-init video backbone "
                                         "(curate.pretrain's kinetics_head.safetensors).")
    audio_weights: Path | None = setting(None,
                                         help="AST weights (file or HF model folder): original AST, HF transformers, "
                                              "or timm DeiT-base-384; for the clipclap profile HF CLAP weights.")
    retry_failed: bool = setting(False,
                                 help="Also retry clips that failed in an earlier run (pending clips are always "
                                      "retried).")
    progress: bool = setting(True, affects_result=False, help="Show progress: a bar, or log lines off a terminal.")
    wait: bool = setting(False, affects_result=False,
                         help="If another extract holds the store, wait for it instead of stopping.")
    lease_timeout_s: float = setting(60.0, affects_result=False)  # a store lease without a heartbeat for this long is
    # stale and taken over

    def __post_init__(self) -> None:
        check_fields(self)
        if self.gpus < 0:
            raise InputError(f"`gpus` must be >= 0, got {self.gpus}")
        if self.workers < 1:
            raise InputError(f"`workers` must be >= 1, got {self.workers}")
        if self.lease_timeout_s <= 0:
            raise InputError(f"`lease_timeout_s` must be > 0, got {self.lease_timeout_s}")
        if self.gpus and self.workers != 1:
            raise InputError("`workers` is for CPU runs; with `gpus=N` the run uses one worker per GPU")
