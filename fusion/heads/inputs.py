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
"""

from __future__ import annotations

import torch

__all__ = ["clip_vectors"]


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
