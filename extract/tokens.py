"""What is kept of the backbones' tokens: prefix tokens plus an average-pooled token grid, on the device.

Storage arithmetic (paper profile, fp16, docs/extract.md): per view the MViT CLS token and the 8 x 7 x 7 grid
pooled to 4 x 2 x 2 = 17 tokens x 768, 12 views = 204 tokens; AST's CLS and DIST and the 12 x 101 patch grid
pooled over time to 12 x 8 = 98 tokens x 768; (204 + 98) x 768 x 2 B = 453 KiB per clip, against 8.7 MiB for
every token. Pooling uses `adaptive_avg_pool*d` (PyTorch's bins: start floor(i * n / m), end ceil((i + 1) * n / m)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["pool_video_tokens", "pool_audio_tokens"]


def pool_video_tokens(tokens: torch.Tensor, grid: tuple[int, int, int], pooled_grid: tuple[int, int, int]
                      ) -> torch.Tensor:
    """Keep the CLS token and average-pool the (T, H, W) token grid to `pooled_grid`.

    Args:
        tokens: MViT final-norm tokens, CLS first, then the grid in T, H, W order.
        grid: (T, H, W) of the token grid.
        pooled_grid: (t, h, w) after pooling, each at most the grid's size.

    Returns:
        CLS then the pooled grid in t, h, w order.

    Shapes:
        tokens: (B, 1 + T * H * W, D). returns (B, 1 + t * h * w, D).
    """
    _check(tokens, 1, grid, pooled_grid)
    batch, _, width = tokens.shape
    x = tokens[:, 1:].transpose(1, 2).reshape(batch, width, *grid)  # (B, T*H*W, D) -> (B, D, T, H, W)
    x = F.adaptive_avg_pool3d(x, pooled_grid)  # -> (B, D, t, h, w)
    x = x.flatten(2).transpose(1, 2)  # (B, D, t, h, w) -> (B, t*h*w, D)
    return torch.cat([tokens[:, :1], x], dim=1)  # -> (B, 1 + t*h*w, D)


def pool_audio_tokens(tokens: torch.Tensor, grid: tuple[int, int], pooled_time: int) -> torch.Tensor:
    """Keep CLS and DIST and average-pool the (F, T) patch grid over time only, to `pooled_time` columns.

    Every frequency row is kept: pitch and timbre live there, and a random-init AST keeps them
    (docs/synthetic.md).

    Args:
        tokens: AST final-norm tokens: CLS, DIST, then the grid in frequency-major order.
        grid: (F, T) of the patch grid.
        pooled_time: time columns after pooling, at most T.

    Returns:
        CLS, DIST, then the (F, pooled_time) grid in frequency-major order.

    Shapes:
        tokens: (B, 2 + F * T, D). returns (B, 2 + F * pooled_time, D).
    """
    _check(tokens, 2, grid, (grid[0], pooled_time))
    batch, _, width = tokens.shape
    x = tokens[:, 2:].transpose(1, 2).reshape(batch, width, *grid)  # (B, F*T, D) -> (B, D, F, T)
    x = F.adaptive_avg_pool2d(x, (grid[0], pooled_time))  # -> (B, D, F, t)
    x = x.flatten(2).transpose(1, 2)  # (B, D, F, t) -> (B, F*t, D)
    return torch.cat([tokens[:, :2], x], dim=1)  # -> (B, 2 + F*t, D)


def _check(tokens: torch.Tensor, prefix: int, grid: tuple[int, ...], pooled: tuple[int, ...]) -> None:
    expected = prefix + math.prod(grid)
    if tokens.ndim != 3 or tokens.shape[1] != expected:
        raise ValueError(f"tokens must be (B, {expected}, D) for {prefix} prefix tokens and grid {tuple(grid)}, got "
                         f"{tuple(tokens.shape)}")
    if len(pooled) != len(grid) or any(p < 1 or p > g for p, g in zip(pooled, grid, strict=True)):
        raise ValueError(f"pooled grid {tuple(pooled)} must be between 1 and the grid {tuple(grid)} per axis")

