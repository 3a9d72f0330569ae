"""Import the peers' precomputed features into a token store, so that MZST heads train on them ("MZST (VGG+)").

AVCA-GZSL layout (`src/dataset.py`, `src/utils.py:read_features`): `<features>/{audio,video}/<stage>/<Class>.h5`,
one file per class and stage, with datasets `data` (clips, D) and `video_urls` (clips,) of byte strings; the
audio and video files of a class list the same clips. TCAF-GZSL uses the same folders with `<Class>.pkl`:
a pickled dict with `features` (one (T, D) sequence per clip), `video_names` and `fps`. Unpickling runs code
from the file, so `.pkl` files are read only with `trust_pickle=True`.

Mapping to the store (docs/ARCHITECTURE.md): a per-clip vector becomes `video_tokens` (V=1, Nv=1, Dv) and
`audio_tokens` (Na=1, Da); a temporal sequence is cut into `sequence_tokens` equal time segments and each is
averaged (a shorter sequence repeats its steps), because the store holds a fixed token count per clip and
has no padding mask. Kinetics logits are absent (`kinetics_classes: 0`, `has_kinetics_logits: false`): train
such stores with `se_target "class"`. Tokens are stored as float16 like every store; values beyond its range
raise. Clip ids are the file stems of the `video_urls` (e.g. "v_ApplyEyeMakeup_g01_c02"), which are the ids of
the split CSVs (`curate.splits`); labels are class names spelled as in `all_class.txt`. A clip found in several
stage folders is stored once, under the first stage in `curate.splits.STAGES` order (the protocols take stage
membership from the split files, not from the store's split column); its features must agree.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from curate import splits
from curate.config import AVCAImportConfig
from extract.outputs import ClipTokens, TokenLayout

__all__ = ["ImportSummary", "import_avca_features", "resample_sequence"]

logger = logging.getLogger(__name__)

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_MEDIA_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".wav"})


@dataclass(frozen=True)
class ImportSummary:
    """What an import wrote."""

    store: Path
    clips: int
    classes: int
    stages: dict[str, int]  # clips per stage folder, before removing clips repeated across stages
    duplicates: int  # clips found in more than one stage folder (stored once)
    format: str  # "avca-h5" or "tcaf-pkl"
    token_layout: TokenLayout


@dataclass
class _Clip:
    clip_id: str
    label: str
    stage: str
    video: np.ndarray  # (Tv, Dv) float32
    audio: np.ndarray  # (Ta, Da) float32
    source: Path


def resample_sequence(values: np.ndarray, tokens: int) -> np.ndarray:
    """Cut a (T, D) sequence into `tokens` equal time segments and average each (T < tokens repeats steps).

    Shapes:
        values (T, D) -> (tokens, D)
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] == 0:
        raise InputError(f"expected a non-empty (T, D) sequence, got shape {values.shape}")
    steps = values.shape[0]
    if steps == tokens:
        return values
    if steps < tokens:
        return values[np.floor(np.arange(tokens) * steps / tokens).astype(np.int64)]  # (tokens, D)
    edges = np.round(np.linspace(0, steps, tokens + 1)).astype(np.int64)
    return np.stack([values[a:b].mean(axis=0) for a, b in zip(edges[:-1], edges[1:], strict=True)])  # (tokens, D)


def import_avca_features(config: AVCAImportConfig) -> ImportSummary:
    """Read AVCA (`.h5`) or TCAF (`.pkl`) feature folders and write them as a new token store.

    Raises:
        FileNotFoundError: the feature folder or a modality's stage folder is missing.
        FileExistsError: the output store exists.
        ValueError: `.pkl` files without `trust_pickle`, a class unknown to the dataset, audio and video files
            that list different clips, inconsistent feature sizes, values beyond float16, or a clip repeated
            across stages with different features.
    """
    from features.config import StoreConfig
    from features.manifest import ManifestRow
    from features.store import TokenStore, code_version, now_utc, package_versions

    root = Path(config.features)
    out = Path(config.out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; choose a new `out`")
    class_split = splits.load_class_split(config.dataset)
    stages, file_format = _stage_folders(root, config.stages)
    if file_format == "tcaf-pkl" and not config.trust_pickle:
        raise InputError(
            f"{root} holds TCAF .pkl files: unpickling runs code from the file; set `trust_pickle` only if you "
            "trust where they come from"
        )
    clips: dict[str, _Clip] = {}
    per_stage: dict[str, int] = {}
    duplicates = 0
    for stage in stages:
        stage_clips = _read_stage(root, stage, class_split, file_format)
        per_stage[stage] = len(stage_clips)
        for clip in stage_clips:
            first = clips.get(clip.clip_id)
            if first is None:
                clips[clip.clip_id] = clip
                continue
            duplicates += 1
            if first.label != clip.label or not (_same(first.video, clip.video) and _same(first.audio, clip.audio)):
                raise InputError(
                    f"clip {clip.clip_id!r} is in {first.stage} ({first.label}) and {stage} ({clip.label}) with "
                    "different features or classes"
                )
    if not clips:
        raise InputError(f"{root}: the stage folders hold no clips")
    ordered = list(clips.values())
    layout = _layout(ordered, file_format, config.sequence_tokens)
    records = [ManifestRow(clip_id=c.clip_id, path=c.source, class_name=c.label, split=c.stage) for c in ordered]
    extract_config = {
        "importer": "avca",
        "format": file_format,
        "features": str(root.resolve()),
        "dataset": class_split.dataset,
        "stages": list(stages),
        "sequence_tokens": config.sequence_tokens,
        "temporal": _is_temporal(ordered, file_format),
    }
    provenance = {
        "video_weights": "imported features (not extracted here)",
        "audio_weights": "imported features (not extracted here)",
        "source": f"{file_format} feature folder {root.resolve()}",
        "packages": package_versions(),
        "code_version": code_version(),
        "created": now_utc(),
    }
    store = TokenStore.create(out, records, layout, extract_config, provenance,
                              StoreConfig(clips_per_block=config.clips_per_block))
    for start, stop in store.block_ranges():
        block = ordered[start:stop]
        tokens = [_tokens(c, layout) for c in block]
        store.write_clips(list(range(start, stop)), tokens)
    logger.info("imported %d clips of %d classes from %s into %s", len(ordered), len({c.label for c in ordered}),
                root, out)
    return ImportSummary(store=out, clips=len(ordered), classes=len({c.label for c in ordered}), stages=per_stage,
                         duplicates=duplicates, format=file_format, token_layout=layout)


def _stage_folders(root: Path, wanted: tuple[str, ...]) -> tuple[tuple[str, ...], str]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such feature folder (expected audio/ and video/ inside)")
    for modality in ("audio", "video"):
        if not (root / modality).is_dir():
            raise FileNotFoundError(f"{root / modality} not found: an AVCA feature folder holds audio/ and video/")
    present = tuple(s for s in splits.STAGES if (root / "audio" / s).is_dir() or (root / "video" / s).is_dir())
    stages = wanted or present
    if not stages:
        raise FileNotFoundError(f"{root}/audio has none of the stage folders {splits.STAGES}")
    suffixes = set()
    for stage in stages:
        for modality in ("audio", "video"):
            folder = root / modality / stage
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder} not found (stage {stage} needs both modalities)")
            suffixes |= {p.suffix for p in folder.iterdir() if p.suffix in (".h5", ".pkl")}
    if len(suffixes) > 1:
        raise InputError(f"{root} mixes .h5 and .pkl feature files; import one format at a time")
    if not suffixes:
        raise InputError(f"{root}: no .h5 or .pkl feature files in the stage folders {list(stages)}")
    return stages, "avca-h5" if suffixes == {".h5"} else "tcaf-pkl"


def _read_stage(root: Path, stage: str, class_split: splits.ClassSplit, file_format: str) -> list[_Clip]:
    suffix = ".h5" if file_format == "avca-h5" else ".pkl"
    audio_files = {p.stem: p for p in sorted((root / "audio" / stage).glob(f"*{suffix}"))}
    video_files = {p.stem: p for p in sorted((root / "video" / stage).glob(f"*{suffix}"))}
    if set(audio_files) != set(video_files):
        only = sorted(set(audio_files) ^ set(video_files))
        raise InputError(f"{root}/{{audio,video}}/{stage}: classes with features of one modality only: {only[:5]}")
    clips = []
    for name in sorted(audio_files):
        label = class_split.canonical(name)  # raises ValueError naming all_class.txt for an unknown class
        audio, audio_ids = _read_file(audio_files[name], file_format)
        video, video_ids = _read_file(video_files[name], file_format)
        if sorted(audio_ids) != sorted(video_ids) or len(set(audio_ids)) != len(audio_ids):
            raise InputError(f"{audio_files[name]} and {video_files[name]} list different (or repeated) clips")
        video_row = {clip_id: i for i, clip_id in enumerate(video_ids)}  # AVCA assumes equal order; we match ids
        for i, clip_id in enumerate(audio_ids):
            clips.append(_Clip(clip_id=clip_id, label=label, stage=stage, video=video[video_row[clip_id]],
                               audio=audio[i], source=audio_files[name]))
    return clips


def _read_file(path: Path, file_format: str) -> tuple[list[np.ndarray], list[str]]:
    """Per-clip (T, D) float32 arrays and clip ids of one feature file."""
    if file_format == "avca-h5":
        import h5py

        with h5py.File(path, "r") as f:
            if "data" not in f or "video_urls" not in f:
                raise InputError(f"{path}: an AVCA feature file needs datasets 'data' and 'video_urls'")
            data = np.asarray(f["data"][()], dtype=np.float32)
            urls = [u.decode("utf-8") if isinstance(u, bytes) else str(u) for u in f["video_urls"][()]]
        if data.ndim not in (2, 3):
            raise InputError(f"{path}: 'data' must be (clips, D) or (clips, T, D), got shape {data.shape}")
        sequences = [row[None, :] if data.ndim == 2 else row for row in data]  # (D,) -> (1, D)
    else:
        with open(path, "rb") as f:
            payload = pickle.load(f)  # only reached with trust_pickle (checked by the caller)
        if not isinstance(payload, dict) or "features" not in payload or "video_names" not in payload:
            raise InputError(f"{path}: a TCAF feature file is a dict with 'features' and 'video_names'")
        sequences = [np.atleast_2d(np.asarray(x, dtype=np.float32)) for x in payload["features"]]
        urls = [str(u) for u in payload["video_names"]]
    if len(sequences) != len(urls):
        raise InputError(f"{path}: {len(sequences)} feature rows but {len(urls)} clip names")
    return sequences, [_clip_id(u) for u in urls]


def _clip_id(url: str) -> str:
    """The file stem AVCA's split CSVs use: folders and a media extension removed."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    stem, dot, suffix = name.rpartition(".")
    return stem if dot and f".{suffix.lower()}" in _MEDIA_SUFFIXES else name


def _layout(clips: list[_Clip], file_format: str, sequence_tokens: int) -> TokenLayout:
    dims_v = {c.video.shape[1] for c in clips}
    dims_a = {c.audio.shape[1] for c in clips}
    if len(dims_v) != 1 or len(dims_a) != 1:
        raise InputError(f"feature sizes differ between files: video {sorted(dims_v)}, audio {sorted(dims_a)}")
    tokens = sequence_tokens if _is_temporal(clips, file_format) else 1
    return TokenLayout(views=1, video_tokens=tokens, video_dim=dims_v.pop(), audio_tokens=tokens,
                       audio_dim=dims_a.pop(), kinetics_classes=0, source=file_format)


def _is_temporal(clips: list[_Clip], file_format: str) -> bool:
    """TCAF features, or AVCA files with a time axis: sequences, resampled to `sequence_tokens` segment means."""
    return file_format == "tcaf-pkl" or any(c.video.shape[0] > 1 or c.audio.shape[0] > 1 for c in clips)


def _tokens(clip: _Clip, layout: TokenLayout) -> ClipTokens:
    video = resample_sequence(clip.video, layout.video_tokens)  # (Tv, Dv) -> (Nv, Dv)
    audio = resample_sequence(clip.audio, layout.audio_tokens)  # (Ta, Da) -> (Na, Da)
    for name, values in (("video", video), ("audio", audio)):
        if not np.all(np.isfinite(values)) or np.abs(values).max() > _FLOAT16_MAX:
            raise InputError(f"clip {clip.clip_id!r} ({clip.source}): {name} features are NaN/inf or exceed float16")
    return ClipTokens(
        video_tokens=video[None].astype(np.float16),  # (Nv, Dv) -> (1, Nv, Dv): one view
        kinetics_logits=np.zeros((1, 0), dtype=np.float32),  # (V, K = 0): imported features carry no logits
        audio_tokens=audio.astype(np.float16),
        has_audio=True,
        audio_frames=int(clip.audio.shape[0]),  # time steps of the source audio sequence
    )


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-6)
