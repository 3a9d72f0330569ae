"""MViT-v2's pooling attention with its decomposed relative-position bias run as one fused attention kernel.

torchvision's `MultiscaleAttention.forward` writes the (B, heads, Nq, Nk) score matrix, adds the bias of
`_add_rel_pos` into it (built from CPU index tensors on every call: a host-to-device copy each), then softmax and
the product with v: four passes over the largest tensor of the block, the elementwise work that dominates MViT-v2
on a GPU. `FusedMultiscaleAttention` runs the same torchvision submodules (qkv, the q / k / v `Pool`s, project)
and parameters under the same names, so the state dict keys are torchvision's and its checkpoints load unchanged.
Only the attention differs. Per query token i = (t, y, x) the bias towards key j = (t', y', x') is
q_i . (R_t[t, t'] + R_h[y, y'] + R_w[x, x']) (MViTv2, eq. 4), so it decomposes into three small tables
q_i . R_t[t, :], q_i . R_h[y, :], q_i . R_w[x, :] of k_t, k_h and k_w columns. Kernels (`ATTENTION_KERNELS` of
extract/config.py):

- `sdpa`: the tables folded into the dot product. q gets the k_t + k_h + k_w table entries as extra features
  and each key the matching one-hot features, so q_i . k_j adds exactly the bias; one
  `F.scaled_dot_product_attention` without a mask (flash / cuDNN / efficient kernels stay eligible) and nothing
  of size Nq x Nk is written. Head dims are zero-padded to a multiple of 8 (what the flash kernels take).
- `sdpa-mask`: the bias expanded to a (B, heads, Nq, Nk) float mask for `F.scaled_dot_product_attention`.
- `flex`: FlexAttention with a `score_mod` that adds the three table entries per score. Fused only when compiled
  (torch.compile of the backbone, or `torch.compile(flex_attention)` which this module uses on CUDA when the
  backbone runs eager); eager on the CPU it is PyTorch's unfused reference.

The relative-position indices are built once, on the module's device (non-persistent buffers), for the fixed
input of the backbone: a forward makes no host-to-device copy and no host sync.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import flex_attention
from torchvision.models.video.mvit import MultiscaleAttention, _interpolate

__all__ = ["FusedMultiscaleAttention", "pooled_grid"]

_FLASH_HEAD_MULTIPLE = 8  # flash attention takes head dims that are multiples of 8


def _relative_index(q_size: int, k_size: int) -> torch.Tensor:
    """(q_size, k_size) rows of the relative-position table per (query, key) position along one axis.

    The distance of query position a to key position b with both axes scaled to the finer one (MViTv2's
    pooled-resolution rule); offset so that the farthest pair is row 0. Evaluated in float32 and truncated,
    as torchvision does, so the rows are the same.
    """
    q_ratio, k_ratio = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    distance = torch.arange(q_size)[:, None] * q_ratio - (torch.arange(k_size)[None, :] + (1.0 - k_size)) * k_ratio
    return distance.long()


@functools.cache
def _compiled_flex():
    """FlexAttention compiled once per process: eager `flex_attention` is an unfused reference."""
    return torch.compile(flex_attention, dynamic=False)


class FusedMultiscaleAttention(nn.Module):
    """A torchvision `MultiscaleAttention` (its modules and parameters, shared) with a fused attention kernel.

    Args:
        source: the torchvision module; its submodules and parameters are taken over, not copied.
        input_thw: (T, H, W) token grid this block receives (fixed: the backbone's input size is fixed).
        kernel: "sdpa", "sdpa-mask" or "flex" (module docstring).
    """

    def __init__(self, source: MultiscaleAttention, input_thw: tuple[int, int, int], kernel: str) -> None:
        super().__init__()
        if kernel not in ("sdpa", "sdpa-mask", "flex"):
            raise ValueError(f"fused attention kernel must be sdpa, sdpa-mask or flex, got {kernel!r}")
        self.kernel = kernel
        self.num_heads, self.head_dim, self.output_dim = source.num_heads, source.head_dim, source.output_dim
        self.scale = source.scaler
        self.residual_pool, self.residual_with_cls_embed = source.residual_pool, source.residual_with_cls_embed
        # Same attribute names as torchvision's module: the state dict keys do not change.
        self.qkv, self.project = source.qkv, source.project
        self.pool_q, self.pool_k, self.pool_v = source.pool_q, source.pool_k, source.pool_v
        self.rel_pos_h, self.rel_pos_w, self.rel_pos_t = source.rel_pos_h, source.rel_pos_w, source.rel_pos_t
        self.input_thw = tuple(input_thw)
        self.q_thw = pooled_grid(self.input_thw, self.pool_q)
        self.k_thw = pooled_grid(self.input_thw, self.pool_k)
        self.has_rel_pos = self.rel_pos_h is not None
        device = source.qkv.weight.device
        if self.has_rel_pos:
            for axis, q_size, k_size in zip("thw", self.q_thw, self.k_thw, strict=True):
                self.register_buffer(f"index_{axis}", _relative_index(q_size, k_size).to(device), persistent=False)
        key_features = sum(self.k_thw) if self.has_rel_pos else 0
        self.padded_dim = -(-(self.head_dim + key_features) // _FLASH_HEAD_MULTIPLE) * _FLASH_HEAD_MULTIPLE
        if kernel == "sdpa" and self.has_rel_pos:
            self.register_buffer("key_one_hot", self._key_one_hot().to(device), persistent=False)

    def _key_one_hot(self) -> torch.Tensor:
        """(1 + Nk, padded_dim - head_dim): per key the one-hot of its t, its y and its x (zero row for CLS)."""
        k_t, k_h, k_w = self.k_thw
        t, y, x = torch.meshgrid(torch.arange(k_t), torch.arange(k_h), torch.arange(k_w), indexing="ij")
        features = torch.cat([F.one_hot(t.flatten(), k_t), F.one_hot(y.flatten(), k_h),
                              F.one_hot(x.flatten(), k_w)], dim=1).float()  # (Nk, k_t + k_h + k_w)
        return F.pad(features, (0, self.padded_dim - self.head_dim - features.shape[1], 1, 0))

    def forward(self, x: torch.Tensor, thw: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Shapes: x (B, 1 + T*H*W, C_in) -> (B, 1 + T'*H'*W', C_out), with thw (T, H, W) -> (T', H', W')."""
        if tuple(thw) != self.input_thw:
            raise ValueError(f"attention built for a {self.input_thw} token grid, got {tuple(thw)}")
        batch, tokens, _ = x.shape
        qkv = self.qkv(x)  # (B, N, 3 * C_out): bfloat16 under bf16 autocast
        q, k, v = qkv.reshape(batch, tokens, 3, self.num_heads, self.head_dim).transpose(1, 3).unbind(dim=2)
        if self.pool_k is not None:
            k = self.pool_k(k, thw)[0]  # (B, heads, 1 + Nk, head_dim)
        if self.pool_v is not None:
            v = self.pool_v(v, thw)[0]
        if self.pool_q is not None:
            q = self.pool_q(q, thw)[0]  # (B, heads, 1 + Nq, head_dim)
        # The pools' LayerNorms return float32 under autocast; the kernel takes one dtype (autocast's matmul's).
        q, k, v = q.to(qkv.dtype), k.to(qkv.dtype), v.to(qkv.dtype)
        out = self._attend(q, k, v)  # (B, heads, 1 + Nq, head_dim)
        if self.residual_pool:
            first = 0 if self.residual_with_cls_embed else 1
            out[:, :, first:] += q[:, :, first:]
        out = out.transpose(1, 2).reshape(batch, -1, self.output_dim)  # (B, 1 + Nq, C_out)
        return self.project(out), self.q_thw

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.has_rel_pos:
            return F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        tables = self._bias_tables(q)  # 3 x (B, heads, Nq, k_t | k_h | k_w), without the CLS query
        if self.kernel == "sdpa":
            return self._attend_folded(q, k, v, tables)
        if self.kernel == "sdpa-mask":
            rel_t, rel_h, rel_w = (table.unflatten(2, self.q_thw) for table in tables)  # (B, heads, T, H, W, k_*)
            bias = (rel_t[..., :, None, None] + rel_h[..., None, :, None] + rel_w[..., None, None, :])
            bias = F.pad(bias.flatten(5).flatten(2, 4), (1, 0, 1, 0))  # (B, heads, 1 + Nq, 1 + Nk); CLS rows 0
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self._attend_flex(q, k, v, tables)

    def _bias_tables(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q_i . R_axis[i's position, key position] per axis; the parameters interpolated as torchvision does when
        their length does not fit the grids (a no-op for the published configurations)."""
        batch, heads, _, dim = q.shape
        grid_q = q[:, :, 1:].reshape(batch, heads, *self.q_thw, dim)  # (B, heads, T, H, W, head_dim)
        axes = ((self.rel_pos_t, self.index_t, "t"), (self.rel_pos_h, self.index_h, "h"),
                (self.rel_pos_w, self.index_w, "w"))
        tables = []
        for parameter, index, axis in axes:
            relative = _interpolate(parameter, 2 * max(index.shape) - 1)[index]  # (q_axis, k_axis, head_dim)
            # (B, heads, T, H, W, head_dim) x (q_axis, k_axis, head_dim) -> (B, heads, T, H, W, k_axis)
            table = torch.einsum(f"bnthwc,{axis}kc->bnthwk", grid_q, relative.to(q.dtype))
            tables.append(table.flatten(2, 4))  # (B, heads, Nq, k_axis)
        return tuple(tables)

    def _attend_folded(self, q, k, v, tables) -> torch.Tensor:
        """softmax(q_i . k_j * scale + bias_ij) v with the bias as extra features: q' = (q * scale, tables),
        k' = (k, one-hot of the key's t, y, x), scale 1; CLS rows and columns get zero features (no bias)."""
        pad = self.padded_dim - self.head_dim
        extra = F.pad(torch.cat(tables, dim=-1), (0, 0, 1, 0))  # (B, heads, 1 + Nq, k_t + k_h + k_w)
        q_folded = torch.cat([q * self.scale, F.pad(extra, (0, pad - extra.shape[-1]))], dim=-1)
        one_hot = self.key_one_hot.to(k.dtype).expand(*k.shape[:2], -1, -1)  # (B, heads, 1 + Nk, pad)
        k_folded = torch.cat([k, one_hot], dim=-1)
        out = F.scaled_dot_product_attention(q_folded, k_folded, F.pad(v, (0, pad)), scale=1.0)
        return out[..., :self.head_dim]

    def _attend_flex(self, q, k, v, tables) -> torch.Tensor:
        rel_t, rel_h, rel_w = tables
        _, k_h, k_w = self.k_thw

        def add_bias(score, b, h, q_index, kv_index):
            i, j = (q_index - 1).clamp(min=0), (kv_index - 1).clamp(min=0)  # grid positions (CLS: masked below)
            bias = rel_t[b, h, i, j // (k_h * k_w)] + rel_h[b, h, i, (j // k_w) % k_h] + rel_w[b, h, i, j % k_w]
            return torch.where((q_index > 0) & (kv_index > 0), score + bias, score)

        compiled = q.is_cuda and not torch.compiler.is_compiling()
        attend = _compiled_flex() if compiled else flex_attention
        return attend(q, k, v, score_mod=add_bias, scale=self.scale)


def pooled_grid(thw: tuple[int, int, int], pool: nn.Module | None) -> tuple[int, int, int]:
    """Grid after a torchvision `Pool` (its Conv3d's output size), or `thw` without one."""
    if pool is None:
        return thw
    conv = pool.pool
    return tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(thw, conv.padding, conv.kernel_size, conv.stride,
                                                                strict=True))
