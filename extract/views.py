"""Multi-view sampling for the video backbone: which frames (by presentation time) and which crops.

Semantics follow SlowFast's test-time multi-view testing (facebookresearch/SlowFast `slowfast/datasets/decoder.py`
`get_start_end_idx` with `use_offset=True` and `temporal_sampling`; `slowfast/datasets/transform.py`
`random_short_side_scale_jitter` and `uniform_crop`, Apache-2.0), re-expressed on a time grid so that variable
frame rates and headers that lie about the frame count change nothing:

1. The clip lasts `duration_s` (first frame's time to the end of the last frame). On a grid of `sampling_fps`,
   it has `video_size = max(1, round(duration_s * sampling_fps))` grid frames; a view spans
   `clip_size = frames_per_view * frame_stride` grid frames.
2. Temporal view i of n starts at `i * floor(delta / (n - 1))` (one view: `floor(delta / 2)`), `delta =
   max(video_size - clip_size, 0)`; its `frames_per_view` grid indices are `linspace(start, start + clip_size - 1)`
   (float32, as SlowFast), clamped to `video_size - 1` and truncated, so short clips repeat their last frame.
3. Grid index g is time `g / sampling_fps`; the frame shown at that time is used (`common.media`'s rule: the
   last frame whose presentation time is <= it; the first frame for earlier times).
4. Frames are resized (bilinear, no antialias, as torchvision's `MViT_V2_S_Weights` transforms) so the short
   side is `resize_short_side_px`, cropped, and normalised with the weights' mean and std. Frames the decoder
   already scaled to that short side (`ExtractConfig.frame_scaling` "decoder") are cropped at their own size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from extract.config import VideoConfig

__all__ = [
    "view_starts",
    "view_grid_indices",
    "view_times",
    "resized_size",
    "crop_offsets",
    "make_views",
]

def view_starts(video_size: int, clip_size: int, n_views: int) -> list[int]:
    """Start grid index of each temporal view (SlowFast `get_start_end_idx`, test mode, `use_offset=True`).

    Args:
        video_size: grid frames in the clip.
        clip_size: grid frames spanned by one view.
        n_views: temporal views.
    """
    if video_size < 1 or clip_size < 1 or n_views < 1:
        raise ValueError(f"video_size, clip_size and n_views must be >= 1, got {video_size}, {clip_size}, {n_views}")
    delta = max(video_size - clip_size, 0)
    if n_views == 1:
        return [delta // 2]
    step = delta // (n_views - 1)
    return [i * step for i in range(n_views)]


def view_grid_indices(video_size: int, config: VideoConfig) -> np.ndarray:
    """Grid indices of the frames of every temporal view.

    Shapes:
        returns (temporal_views, frames_per_view) int64.
    """
    clip_size = config.frames_per_view * config.frame_stride
    rows = []
    for start in view_starts(video_size, clip_size, config.temporal_views):
        # float32 linspace, clamp, truncate: exactly SlowFast's `temporal_sampling`.
        index = torch.linspace(start, start + clip_size - 1, config.frames_per_view)
        rows.append(torch.clamp(index, 0, video_size - 1).long())
    return torch.stack(rows).numpy()


def view_times(duration_s: float, config: VideoConfig) -> np.ndarray:
    """Sample times (seconds from the first frame) of every temporal view of a clip lasting `duration_s`.

    Shapes:
        returns (temporal_views, frames_per_view) float64.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    video_size = max(1, round(duration_s * config.sampling_fps))
    return view_grid_indices(video_size, config) / config.sampling_fps


def resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after resizing the short side to `short_side`, the long side floored (SlowFast, torchvision)."""
    if width < height:
        return math.floor(height / width * short_side), short_side
    return short_side, math.floor(width / height * short_side)


def crop_offsets(height: int, width: int, size: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of each square crop of side `size` in a (height, width) frame (SlowFast `uniform_crop`).

    One crop: the centre. Three crops: start, centre and end of the long side (left / centre / right for
    landscape and square frames, top / centre / bottom for portrait), centred on the short side. The centre
    offset is rounded up, as SlowFast does.
    """
    if size > min(height, width):
        raise ValueError(f"crop of {size} px does not fit a {height}x{width} frame")
    if crops not in (1, 3):
        raise ValueError(f"crops must be 1 or 3, got {crops}")
    top, left = math.ceil((height - size) / 2), math.ceil((width - size) / 2)
    if crops == 1:
        return [(top, left)]
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


def resize_frames(frames: torch.Tensor, config: VideoConfig) -> torch.Tensor:
    """The decoded frames at the views' short side, still uint8: the reference's filter (`make_views`: bilinear,
    no antialiasing) run on the integers by torch's uint8 kernel, so that a decode worker sends the device 10x
    fewer bytes of a 720p clip at most 1 level (of 255) from the reference's float resize. Frames already at the
    short side come back unchanged.

    Shapes: (N, H, W, 3) uint8 -> (N, H', W', 3) uint8, min(H', W') = `config.resize_short_side_px`.
    """
    height, width = frames.shape[1:3]
    if min(height, width) == config.resize_short_side_px:
        return frames
    size = resized_size(height, width, config.resize_short_side_px)
    channels_first = frames.permute(0, 3, 1, 2)  # (N, 3, H, W) as a view: channels-last memory, torch's fast path
    resized = F.interpolate(channels_first, size=size, mode="bilinear", align_corners=False, antialias=False)
    return resized.permute(0, 2, 3, 1).contiguous()  # -> (N, H', W', 3)


def make_views(frames: torch.Tensor, frame_index: torch.Tensor, config: VideoConfig, mean: tuple[float, ...],
               std: tuple[float, ...]) -> torch.Tensor:
    """Resize, crop and normalise the decoded frames into the backbone's views, on the frames' device.

    Args:
        frames: the distinct frames the views use, RGB uint8: any size, or already at the resize short side
            (not resized again; the crops are taken from their own size).
        frame_index: for every temporal view and frame position, the row of `frames` to use.
        config: the view settings.
        mean: per-channel mean on [0, 1] RGB (the weights' meta).
        std: per-channel standard deviation on [0, 1] RGB.

    Returns:
        Views in SlowFast's ensemble order (v = temporal_view * crops + crop), float32.

    Shapes:
        frames: (N, H, W, 3). frame_index: (temporal_views, T). returns (V, 3, T, S, S), S = crop_size_px.
    """
    n_temporal, n_frames = frame_index.shape
    size = config.crop_size_px
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (N, H, W, 3) -> (N, 3, H, W)
    height, width = x.shape[2:]
    if min(height, width) != config.resize_short_side_px:
        height, width = resized_size(height, width, config.resize_short_side_px)
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    crops = torch.stack([x[:, :, top:top + size, left:left + size]
                         for top, left in crop_offsets(height, width, size, config.crops)])  # (C, N, 3, S, S)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 1, 3, 1, 1)
    crops = (crops - mean_t) / std_t
    views = crops[:, frame_index.to(x.device)]  # (C, N, 3, S, S) -> (C, n_t, T, 3, S, S)
    views = views.permute(1, 0, 3, 2, 4, 5)  # (C, n_t, T, 3, S, S) -> (n_t, C, 3, T, S, S)
    return views.reshape(n_temporal * config.crops, 3, n_frames, size, size)  # -> (V, 3, T, S, S)
