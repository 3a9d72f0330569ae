"""View sampling (SlowFast test-time semantics on a time grid), crops, and the views tensor."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torchvision.models.video import MViT_V2_S_Weights

from extract import views
from extract.config import PROFILES, VideoConfig
from extract.mvit import VIDEO_MEAN, VIDEO_STD

PAPER = PROFILES["paper"].video  # 3 crops x 4 views of 16 frames, stride 4 at 30 fps


def test_view_starts_by_hand():
    # delta = 300 - 64 = 236; floor(236 / 3) = 78
    assert views.view_starts(300, 64, 4) == [0, 78, 156, 234]
    assert views.view_starts(300, 64, 5) == [0, 59, 118, 177, 236]  # floor(236 / 4) = 59
    assert views.view_starts(300, 64, 1) == [118]  # one view is centred: floor(236 / 2)
    assert views.view_starts(40, 64, 4) == [0, 0, 0, 0]  # shorter than a view: delta = 0
    with pytest.raises(ValueError):
        views.view_starts(0, 64, 4)


def test_grid_indices_follow_slowfast_linspace_and_repeat_the_last_frame():
    grid = views.view_grid_indices(300, PAPER)
    assert grid.shape == (4, 16)
    # linspace(0, 63, 16) truncated: steps of 4.2
    assert grid[0].tolist() == [0, 4, 8, 12, 16, 21, 25, 29, 33, 37, 42, 46, 50, 54, 58, 63]
    assert grid[3].tolist() == (grid[0] + 234).tolist()
    short = views.view_grid_indices(40, PAPER)  # 40 grid frames < 64: every view clamps to the last frame
    assert (short == short[0]).all()
    assert short[0].tolist()[:10] == [0, 4, 8, 12, 16, 21, 25, 29, 33, 37] and short[0, 10:].tolist() == [39] * 6


def test_view_times_use_the_sampling_grid():
    times = views.view_times(10.0, PAPER)  # 300 grid frames at 30 fps
    np.testing.assert_allclose(times, views.view_grid_indices(300, PAPER) / 30.0)
    assert times.shape == (4, 16) and times[-1, -1] == pytest.approx(297 / 30)
    with pytest.raises(ValueError):
        views.view_times(0.0, PAPER)


def test_resized_size_floors_the_long_side():
    assert views.resized_size(120, 160, 224) == (224, 298)  # 160 / 120 * 224 = 298.7
    assert views.resized_size(160, 120, 224) == (298, 224)  # portrait
    assert views.resized_size(100, 100, 256) == (256, 256)


def test_crop_offsets_landscape_portrait_and_centre():
    assert views.crop_offsets(224, 398, 224, 3) == [(0, 0), (0, 87), (0, 174)]  # left / centre (ceil) / right
    assert views.crop_offsets(398, 224, 224, 3) == [(0, 0), (87, 0), (174, 0)]  # top / centre / bottom
    assert views.crop_offsets(256, 341, 224, 1) == [(16, 59)]  # ceil(117 / 2) = 59, as SlowFast
    with pytest.raises(ValueError):
        views.crop_offsets(100, 300, 224, 3)


def test_make_views_orders_views_temporal_major_and_crops_left_to_right():
    config = replace(PAPER, architecture="mvit_tiny", crop_size_px=32, frames_per_view=4, temporal_views=2)
    n, height, width = 5, 32, 96  # landscape; short side already 32, so no resize
    frames = torch.zeros(n, height, width, 3, dtype=torch.uint8)
    for i in range(n):
        frames[i, :, :, 0] = 10 * i  # red tells the frame
    frames[:, :, :, 1] = torch.arange(width, dtype=torch.uint8)  # green tells the column
    frame_index = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    out = views.make_views(frames, frame_index, config, VIDEO_MEAN, VIDEO_STD)
    assert out.shape == (6, 3, 4, 32, 32) and out.dtype == torch.float32
    red = out[:, 0, :, 0, 0] * VIDEO_STD[0] + VIDEO_MEAN[0]  # back to [0, 1]
    for v in range(6):
        np.testing.assert_allclose(red[v].numpy() * 255, 10 * frame_index[v // 3].numpy(), atol=1e-3)
    first_column = (out[:, 1, 0, 0, 0] * VIDEO_STD[1] + VIDEO_MEAN[1]) * 255
    np.testing.assert_allclose(first_column.numpy(), [0, 32, 64] * 2, atol=1e-3)  # left, centre, right crops


def test_single_crop_matches_torchvision_weights_transforms():
    # 1 crop: short side 256, centre 224, the weights' mean / std: torchvision's own preset is the reference. It
    # resizes uint8 frames (rounding to whole levels); we resize in float, so they differ by at most half a level.
    config = replace(PROFILES["mvit-1x5"].video, temporal_views=1)
    assert config.resize_short_side_px == 256
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (16, 240, 300, 3), dtype=torch.uint8, generator=generator)
    ours = views.make_views(frames, torch.arange(16)[None], config, VIDEO_MEAN, VIDEO_STD)[0]  # (3, 16, 224, 224)
    reference = MViT_V2_S_Weights.KINETICS400_V1.transforms()(frames.permute(0, 3, 1, 2))  # (3, 16, 224, 224)
    assert ours.shape == reference.shape
    half_level = 0.5 / 255 / VIDEO_STD[0]
    torch.testing.assert_close(ours, reference, atol=half_level + 1e-5, rtol=0)
    assert (ours - reference).abs().mean() < 0.6 * half_level  # uniform rounding: a quarter level on average


def test_video_config_properties():
    assert PAPER.views == 12 and PAPER.resize_short_side_px == 224
    assert PAPER.view_span_s == pytest.approx(64 / 30)
    with pytest.raises(ValueError, match="crops"):
        VideoConfig(crops=2)
