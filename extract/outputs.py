"""What the extraction stage hands to the token store: one clip's tokens (`ClipTokens`) and their shapes for a
whole store (`TokenLayout`). Numpy only, so that the store and the stages after it read the contract without
importing the backbones.

`TokenLayout` is made by `extract.pipeline.ClipExtractor.token_layout()` (or by an importer of foreign
features), recorded in the store's `token_layout` attribute by `features.store`, and read by `fusion` to size
the head. It is stored under the short keys of the project's shape letters (V, Nv, Dv, Na, Da; docs/ARCHITECTURE.md),
which `to_dict` / `from_dict` map to the field names below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import InputError

__all__ = ["ClipTokens", "TokenLayout", "kinetics_class"]

# field name -> key in the store's `token_layout` attribute
_STORED_KEYS = {"views": "V", "video_tokens": "Nv", "video_dim": "Dv", "audio_tokens": "Na", "audio_dim": "Da"}
_VIEW_ORDER = "temporal_view * crops + crop"


@dataclass(frozen=True)
class TokenLayout:
    """The shapes of every clip's tokens in one store, and the grids behind them.

    The grids are those of the extracting backbones; a store of imported features (`curate.importers`) has none.
    """

    views: int  # V: views per clip (crops x temporal views)
    video_tokens: int  # Nv: the MViT CLS token then the kept (pooled) token grid
    video_dim: int  # Dv
    audio_tokens: int  # Na: AST CLS, DIST, then the kept (time-pooled) patch grid
    audio_dim: int  # Da
    kinetics_classes: int  # K: Kinetics-400 logits per view (0: the store holds none)
    crops: int = 1
    temporal_views: int = 1
    video_grid: tuple[int, ...] | None = None  # (T, H, W) of the backbone's token grid
    video_token_grid: tuple[int, ...] | None = None  # (T, H, W) of the stored grid, after the CLS token
    audio_grid: tuple[int, ...] | None = None  # (F, T) of AST's patch grid
    audio_token_grid: tuple[int, ...] | None = None  # (F, T) of the stored grid, after CLS and DIST
    full_tokens: bool = False  # every token kept (no pooling)
    source: str = "extracted"  # "extracted", or the format of imported features ("avca-h5", "tcaf-pkl")

    def __post_init__(self) -> None:
        for name in ("views", "video_tokens", "video_dim", "audio_tokens", "audio_dim", "crops", "temporal_views"):
            if getattr(self, name) < 1:
                raise InputError(f"token layout: {name} must be >= 1, got {getattr(self, name)}")
        if self.kinetics_classes < 0:
            raise InputError(f"token layout: kinetics_classes must be >= 0, got {self.kinetics_classes}")

    @property
    def view_order(self) -> str:
        """How view v indexes crops and temporal views (SlowFast's ensemble order)."""
        return _VIEW_ORDER

    def shape(self, name: str) -> tuple[int, ...]:
        """The per-clip shape of a `ClipTokens` array field."""
        shapes = {"video_tokens": (self.views, self.video_tokens, self.video_dim),
                  "audio_tokens": (self.audio_tokens, self.audio_dim),
                  "kinetics_logits": (self.views, self.kinetics_classes)}
        return shapes[name]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the stored keys (V, Nv, Dv, Na, Da) and lists for grids."""
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            values[_STORED_KEYS.get(field.name, field.name)] = list(value) if isinstance(value, tuple) else value
        values["view_order"] = _VIEW_ORDER
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TokenLayout:
        """Inverse of `to_dict` (a store's `token_layout` attribute).

        Raises:
            InputError: a missing required key or an unknown one.
        """
        stored_to_field = {stored: name for name, stored in _STORED_KEYS.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            name = stored_to_field.get(key, key)
            if name == "view_order":
                continue
            if name not in known:
                raise InputError(f"token layout has an unknown key {key!r}; was it written by another version?")
            kwargs[name] = tuple(value) if isinstance(value, list) else value
        missing = [stored for name, stored in {**_STORED_KEYS, "kinetics_classes": "kinetics_classes"}.items()
                   if name not in kwargs]
        if missing:
            raise InputError(f"token layout lacks {missing}: {dict(values)}")
        return cls(**kwargs)


@dataclass
class ClipTokens:
    """The tokens of one clip, as the token store holds them (docs/ARCHITECTURE.md).

    Attributes:
        video_tokens: per view the MViT CLS token then the pooled token grid, float16.
        kinetics_logits: the video backbone's Kinetics-400 classifier logits per view, float32 ((V, 0) for
            imported features without them).
        audio_tokens: AST CLS, DIST, then the time-pooled patch grid, float16; zeros when `has_audio` is False.
        has_audio: the clip has a decodable audio track of at least 25 ms.
        audio_frames: valid fbank frames before padding or cutting (0 without audio).
        decoded_s: for a partial file (its video broke part-way, `extract.decode`) the seconds decoded and used;
            None for a whole clip.

    Shapes:
        video_tokens: (V, Nv, Dv). kinetics_logits: (V, K). audio_tokens: (Na, Da).
    """

    video_tokens: np.ndarray
    kinetics_logits: np.ndarray
    audio_tokens: np.ndarray
    has_audio: bool
    audio_frames: int
    decoded_s: float | None = None


def kinetics_class(kinetics_logits: np.ndarray) -> np.ndarray:
    """s_v: the Kinetics class the video backbone predicts for each clip (argmax of the view-averaged softmax).

    Defined once here, in numpy, so that the store records it at extraction and the trainer's and inference's
    per-batch values are the same numbers.

    Shapes:
        kinetics_logits (B, V, K) -> (B,) int64
    """
    logits = np.asarray(kinetics_logits, dtype=np.float32)
    if logits.ndim != 3:
        raise ValueError(f"kinetics_logits must be (B, V, K), got shape {logits.shape}")
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))  # (B, V, K), shifted: no overflow
    return (exp / exp.sum(axis=-1, keepdims=True)).mean(axis=1).argmax(axis=-1).astype(np.int64)  # (B, K) -> (B,)
