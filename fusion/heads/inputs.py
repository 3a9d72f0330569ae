"""The per-clip vectors the comparison heads take: the one rule that reduces a clip's tokens to two vectors.

The AVCA-GZSL family (DeViSE, ALE, SJE, CJME, AVGZSLNet, AVCA) was written for one audio and one video feature per
clip: AVCA-GZSL averages its per-second SeLaVi / C3D / VGGish features over the clip. Our stores hold tokens, so:

- a store of imported features (`TokenLayout.source` "avca-h5" or "tcaf-pkl"): the tokens are time segments of
  those features, and the vector is their mean, which is AVCA-GZSL's own per-clip average;
- an extracted store: the video vector is the MViT CLS token averaged over the views (the token the backbone's
  classifier reads; the view mean is the multi-view test of SlowFast and MViT), the audio vector the mean of AST's
  CLS and DIST tokens (the two tokens AST's classifier averages). The pooled grid tokens are left out: they are
  local features that the backbones never trained to summarise the clip.

A clip without audio keeps the zeros the store holds for it (its audio vector is 0): the peers have no notion of
a missing track (their features exist for every clip, a silent one included), so nothing is learned for it.

ClipClap takes the same two vectors: on a store of another profile its input is this rule's pair, so that MZST and
ClipClap compare on one input per setting.

TCaF (`fusion.heads.tcaf`) takes time steps instead (`clip_steps`), one sequence per modality:

- an imported store: the stored tokens are the time segments of the peers' per-step features (TCAF-GZSL's own
  input, resampled to the store's segment count by `import-avca`), so they are the steps as they are;
- an extracted store: the video steps are the temporal views, each the MViT CLS token averaged over the view's
  spatial crops (a view sees 16 frames of one stretch of the clip, as a C3D or SeLaVi step sees a stretch: the CLS
  token is what the backbone summarises it to); the audio steps are the columns of AST's pooled token grid, each
  averaged over its frequency bands (a column is one stretch of the clip's time; AST's CLS and DIST tokens summarise
  the whole clip, so they are no step; a store that kept no grid has one audio step, the CLS and DIST mean). The
  crops per view and the grid's bands are the store's (`store_steps`).

A clip without audio: zero audio steps, as above.
"""

from __future__ import annotations

from typing import Any

import torch

from common.errors import InputError
from extract.outputs import TokenLayout

__all__ = ["clip_vectors", "clip_steps", "store_steps"]


def clip_vectors(video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor,
                 extracted: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip's video and audio vectors from its tokens (the rule of the module docstring).

    Args:
        video_tokens: all views (B, V, Nv, Dv), or one view per clip (B, Nv, Dv).
        audio_tokens: the clip's audio tokens.
        has_audio: whether each clip has an audio track.
        extracted: tokens of an extracted store (CLS tokens first); False: imported time segments.

    Shapes:
        video_tokens (B, V, Nv, Dv) or (B, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> video (B, Dv),
        audio (B, Da)
    """
    if video_tokens.dim() == 3:
        video_tokens = video_tokens.unsqueeze(1)  # (B, Nv, Dv) -> (B, 1, Nv, Dv)
    if extracted:
        video = video_tokens[:, :, 0].mean(dim=1)  # CLS of each view (B, V, Dv) -> (B, Dv)
        audio = audio_tokens[:, :2].mean(dim=1)  # CLS and DIST (B, 2, Da) -> (B, Da)
    else:
        video = video_tokens.mean(dim=(1, 2))  # (B, V, Nv, Dv) -> (B, Dv)
        audio = audio_tokens.mean(dim=1)  # (B, Na, Da) -> (B, Da)
    audio = audio * has_audio.to(audio.dtype).unsqueeze(1)  # a clip without audio: zeros, whatever was stored
    return video, audio


def store_steps(layout: TokenLayout) -> dict[str, Any]:
    """The store's sizes that `clip_steps` needs on an extracted store: spatial crops per temporal view and the
    frequency bands of AST's stored grid (1 and 1 on an imported store, whose tokens are the steps)."""
    if layout.source != "extracted":
        return {"crops": 1, "audio_bands": 1}
    bands = layout.audio_token_grid[0] if layout.audio_token_grid else 1
    return {"crops": layout.crops, "audio_bands": int(bands)}


def clip_steps(video_tokens: torch.Tensor, audio_tokens: torch.Tensor, has_audio: torch.Tensor, extracted: bool,
               crops: int, audio_bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip's video and audio time steps from its tokens (the rule of the module docstring).

    Args:
        video_tokens: all views (B, V, Nv, Dv) in the store's view order (temporal_view * crops + crop), or one view
            per clip (B, Nv, Dv).
        audio_tokens: the clip's audio tokens; on an extracted store CLS, DIST, then the (bands, T) grid row-major.
        crops: spatial crops per temporal view (extracted stores).
        audio_bands: frequency bands of the stored audio grid (extracted stores).

    Shapes:
        video_tokens (B, V, Nv, Dv), audio_tokens (B, Na, Da), has_audio (B,) -> video (B, Tv, Dv), audio (B, Ta, Da)

    Raises:
        InputError: views that are not a whole number of temporal views, or a grid not of `audio_bands` rows.
    """
    if video_tokens.dim() == 3:
        video_tokens = video_tokens.unsqueeze(1)  # (B, Nv, Dv) -> (B, 1, Nv, Dv)
    if extracted:
        b, views, _, dv = video_tokens.shape
        grid = max(audio_tokens.shape[1] - 2, 0)
        if views % crops or grid % audio_bands:
            raise InputError(f"{views} views are not whole temporal views of {crops} crops, or {grid} audio grid "
                             f"tokens not {audio_bands} bands")
        video = video_tokens[:, :, 0].reshape(b, views // crops, crops, dv).mean(dim=2)  # (B, V, Dv) -> (B, Tv, Dv)
        if grid:
            audio = audio_tokens[:, 2:].unflatten(1, (audio_bands, -1)).mean(dim=1)  # (B, F, Ta, Da) -> (B, Ta, Da)
        else:  # a store that kept no grid: one step, the clip's summary tokens (as `clip_vectors` reads them)
            audio = audio_tokens[:, :2].mean(dim=1, keepdim=True)  # (B, 1, Da)
    else:
        video = video_tokens.flatten(1, 2)  # (B, 1, Nv, Dv): the segments -> (B, Nv, Dv)
        audio = audio_tokens
    audio = audio * has_audio.to(audio.dtype)[:, None, None]
    return video, audio
