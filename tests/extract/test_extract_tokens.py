"""Token pooling against hand-computed means."""

import pytest
import torch

from extract.tokens import pool_audio_tokens, pool_video_tokens


def test_video_pooling_keeps_cls_and_averages_grid_cells():
    grid = (2, 2, 4)  # T, H, W
    values = torch.arange(16, dtype=torch.float32)  # token k of the grid holds k in every channel
    tokens = torch.cat([torch.full((1, 1, 3), -1.0), values.view(1, 16, 1).expand(1, 16, 3)], dim=1)
    pooled = pool_video_tokens(tokens, grid, (1, 1, 2))
    assert pooled.shape == (1, 3, 3)
    assert pooled[0, 0].tolist() == [-1.0] * 3  # CLS untouched
    # Output cell w=0 averages grid columns 0-1 over all t, h: indices (t*8 + h*4 + w) for w in {0, 1}.
    left = [t * 8 + h * 4 + w for t in range(2) for h in range(2) for w in range(2)]
    assert pooled[0, 1, 0].item() == pytest.approx(sum(left) / 8)
    assert pooled[0, 2, 0].item() == pytest.approx(sum(i + 2 for i in left) / 8)
    full = pool_video_tokens(tokens, grid, grid)
    assert torch.equal(full, tokens)  # pooling to the grid itself changes nothing


def test_audio_pooling_averages_over_time_per_frequency_row():
    grid = (2, 6)  # F, T: row f, column t holds 10 f + t
    values = torch.tensor([[10.0 * f + t for t in range(6)] for f in range(2)]).view(1, 12, 1)
    tokens = torch.cat([torch.tensor([[[7.0], [8.0]]]), values], dim=1)  # CLS, DIST, grid
    pooled = pool_audio_tokens(tokens, grid, 3)
    assert pooled.shape == (1, 2 + 2 * 3, 1)
    assert pooled[0, :, 0].tolist() == [7.0, 8.0, 0.5, 2.5, 4.5, 10.5, 12.5, 14.5]


def test_uneven_bins_follow_adaptive_pooling():
    # 101 AST time columns into 8: bins [floor(i * 101 / 8), ceil((i + 1) * 101 / 8)) overlap by one column.
    tokens = torch.cat([torch.zeros(1, 2, 1), torch.arange(101, dtype=torch.float32).view(1, 101, 1)], dim=1)
    pooled = pool_audio_tokens(tokens, (1, 101), 8)[0, 2:, 0]
    assert pooled[0].item() == pytest.approx(sum(range(0, 13)) / 13)  # columns 0..12
    assert pooled[-1].item() == pytest.approx(sum(range(88, 101)) / 13)  # columns 88..100


def test_shape_errors():
    with pytest.raises(ValueError, match=r"tokens must be \(B, 17, D\)"):
        pool_video_tokens(torch.zeros(1, 16, 4), (4, 2, 2), (2, 1, 1))
    with pytest.raises(ValueError, match="between 1 and the grid"):
        pool_video_tokens(torch.zeros(1, 17, 4), (4, 2, 2), (8, 1, 1))
    with pytest.raises(ValueError, match="between 1 and the grid"):
        pool_audio_tokens(torch.zeros(1, 14, 4), (2, 6), 7)
