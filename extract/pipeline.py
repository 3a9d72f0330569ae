"""Clips to tokens: decode (PyAV), views and fbank, frozen MViT-v2-S and AST forwards, pooled tokens.

`ClipExtractor` builds both frozen backbones once; `extract_many` decodes the next clips in a thread pool
(PyAV and torch release the GIL) while the backbones run on the current ones, batches the views of several clips
into one forward, and yields results in input order. A clip that cannot be used yields its `MediaError` instead
of tokens; the batch goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from extract import ast_audio, mvit, spectrogram, tokens, views
from extract.config import ExtractConfig
from extract.decode import decode_clip
from extract.errors import InputError
from extract.media import MediaError, Segment
from extract.outputs import ClipTokens, TokenLayout
from extract.threads import apply_thread_plan, plan_threads

__all__ = ["ClipExtractor"]

logger = logging.getLogger(__name__)


@dataclass
class _Prepared:
    """One decoded clip ready for the backbones: views made (CPU device) or frames to make them from (GPU)."""

    path: Path
    views: torch.Tensor | None  # (V, 3, T, S, S) float32 when made in the decode thread
    frames: torch.Tensor  # (N, H, W, 3) uint8
    frame_index: torch.Tensor  # (temporal_views, T) rows of `frames`
    fbank: torch.Tensor | None  # (S, F) float32; None without audio
    audio_frames: int
    decoded_s: float | None  # seconds decoded of a partial file; None: the whole clip


class ClipExtractor:
    """Frozen MViT-v2-S and AST turning media files into `ClipTokens`.

    Args:
        config: extraction settings (a profile of extract.config.PROFILES, possibly overridden).
        video_weights: torchvision-format mvit_v2_s weights; None: the torch hub cache file. Must be None with
            `config.random_init`.
        audio_weights: AST weights (AST original, HF transformers, or timm DeiT); required unless
            `config.random_init`.
        thread_share: processes sharing this machine's cores (Dask workers); sets this one's threads
            (`extract.threads.plan_threads`).

    Raises:
        FileNotFoundError: missing weights without `config.random_init` (names the file and how to get it).
        InputError: a CUDA device without CUDA, weights that do not fit, or a pooled grid larger than the grid.
    """

    def __init__(self, config: ExtractConfig, video_weights: Path | None = None,
                 audio_weights: Path | None = None, thread_share: int = 1) -> None:
        self.config = config
        self.device = _device(config.device)
        # At most `decode_threads` decode threads beside torch's, never more threads in all than usable cores.
        self.threads = plan_threads(config.decode_threads, share=thread_share)
        apply_thread_plan(self.threads)
        video, self._video_provenance = mvit.build_mvit(config.video, video_weights, config.random_init, config.seed,
                                                        config.attention)
        audio, self._audio_provenance = ast_audio.build_ast(config.audio, audio_weights, config.random_init,
                                                            config.seed + 1)
        # bf16-pure: weights (and, in `_run`, inputs) in bfloat16; fp32 and bf16 autocast keep float32 weights.
        self._dtype = torch.bfloat16 if config.precision == "bf16-pure" else torch.float32
        self.video_backbone = video.to(self.device, self._dtype)
        self.audio_backbone = audio.to(self.device, self._dtype)
        if not config.full_tokens:  # fails here rather than on the first clip
            tokens.pool_video_tokens(torch.zeros(1, 1 + math.prod(video.grid), 1), video.grid,
                                     config.tokens.video_pooled_grid)
            tokens.pool_audio_tokens(torch.zeros(1, 2 + math.prod(audio.grid), 1), audio.grid,
                                     config.tokens.audio_pooled_time)
        self._clips_per_batch = max(1, config.batch_views // config.video.views)
        self._video_forward: Callable = self.video_backbone
        self._audio_forward: Callable = self.audio_backbone
        if config.compile:
            # Fixed shapes: batches are padded to full size, so each backbone compiles once.
            self._video_forward = torch.compile(self.video_backbone, dynamic=False, mode=config.compile_mode)
            self._audio_forward = torch.compile(self.audio_backbone, dynamic=False, mode=config.compile_mode)
        logger.info("extractor %s on %s: video %s (%s), audio %s (%s), %d views per clip", config.profile,
                    self.device, config.video.architecture, self._video_provenance["weights"],
                    config.audio.architecture, self._audio_provenance["weights"], config.video.views)

    # --- public API -------------------------------------------------------------------------------------

    def extract(self, path: str | Path, segment: Segment | None = None) -> ClipTokens:
        """Tokens of one clip: a media file, or a segment of it.

        Raises:
            MediaError: the clip cannot be used (the message names the file and the reason).
        """
        prepared = self._prepare(Path(path), segment)
        if isinstance(prepared, MediaError):
            raise prepared
        result = _finite(Path(path), self._forward([prepared])[0])
        if isinstance(result, MediaError):
            raise result
        return result

    def extract_many(self, paths: Iterable[str | Path], prefetch: int = 2,
                     segments: Iterable[Segment | None] | None = None
                     ) -> Iterator[tuple[Path, ClipTokens | MediaError]]:
        """Tokens of many clips, in input order; a clip that cannot be used gives its MediaError instead.

        Args:
            paths: media files.
            prefetch: batches decoded ahead of the one in the backbones (0: decode, then run, in turn).
            segments: per path the segment that is the clip, or None for the whole file (default: all None).
        """
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        per_batch = self._clips_per_batch
        remaining = iter(paths)
        remaining_segments = iter(segments) if segments is not None else None
        pool = ThreadPoolExecutor(self.threads.helper_threads, thread_name_prefix="mzst-decode")
        pending: deque[tuple[Path, Future]] = deque()
        try:
            while True:
                # Submit this batch and the `prefetch` after it: those decode while this one runs.
                while len(pending) < per_batch * (1 + prefetch):
                    path = next(remaining, None)
                    if path is None:
                        break
                    segment = None if remaining_segments is None else next(remaining_segments)
                    pending.append((Path(path), pool.submit(self._prepare, Path(path), segment)))
                if not pending:
                    return
                batch = [pending.popleft() for _ in range(min(per_batch, len(pending)))]
                results = [(path, future.result()) for path, future in batch]
                ready = [r for _, r in results if not isinstance(r, MediaError)]
                outputs = iter(self._forward(ready) if ready else [])
                for path, result in results:
                    yield path, result if isinstance(result, MediaError) else _finite(path, next(outputs))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def token_layout(self) -> TokenLayout:
        """Shapes of `ClipTokens` and the grids behind them (recorded in the store)."""
        cfg = self.config
        video_grid, audio_grid = tuple(self.video_backbone.grid), tuple(self.audio_backbone.grid)
        video_kept = video_grid if cfg.full_tokens else tuple(cfg.tokens.video_pooled_grid)
        audio_kept = audio_grid if cfg.full_tokens else (audio_grid[0], cfg.tokens.audio_pooled_time)
        return TokenLayout(
            views=cfg.video.views, video_tokens=1 + math.prod(video_kept), video_dim=self.video_backbone.width,
            audio_tokens=2 + math.prod(audio_kept), audio_dim=self.audio_backbone.width,
            kinetics_classes=len(mvit.KINETICS400_CATEGORIES), crops=cfg.video.crops,
            temporal_views=cfg.video.temporal_views, video_grid=video_grid, video_token_grid=video_kept,
            audio_grid=audio_grid, audio_token_grid=audio_kept, full_tokens=cfg.full_tokens,
        )

    def provenance(self) -> dict:
        """Where each backbone's weights came from (path and SHA-256, or "random-init"), architecture, size."""
        return {"video": dict(self._video_provenance), "audio": dict(self._audio_provenance),
                "random_init": self.config.random_init, "seed": self.config.seed}

    # --- decode side (worker threads) -------------------------------------------------------------------

    def _prepare(self, path: Path, segment: Segment | None = None) -> _Prepared | MediaError:
        cfg = self.config
        try:
            clip = decode_clip(path, cfg.video, cfg.audio, segment=segment, strict=cfg.strict_media,
                               scale_frames=cfg.frame_scaling == "decoder")
        except MediaError as error:
            return error
        frames = torch.from_numpy(clip.frames)
        frame_index = torch.from_numpy(clip.frame_index)
        made = None
        if self.device.type == "cpu":  # off the backbones' thread; on a GPU the device does it
            made = views.make_views(frames, frame_index, cfg.video, mvit.VIDEO_MEAN, mvit.VIDEO_STD)
        fbank, valid = None, 0
        if clip.has_audio:
            fbank, valid = spectrogram.log_mel(torch.from_numpy(clip.audio), cfg.audio.sample_rate_hz,
                                               cfg.audio.num_mel_bins, cfg.audio.target_frames)
        return _Prepared(path, made, frames, frame_index, fbank, valid, clip.duration_s if clip.partial else None)

    # --- backbone side (calling thread) -----------------------------------------------------------------

    def _forward(self, clips: list[_Prepared]) -> list[ClipTokens]:
        cfg = self.config
        started = time.perf_counter()
        n_views = cfg.video.views
        with torch.inference_mode():
            clip_views = torch.cat([self._views(c) for c in clips])  # (B * V, 3, T, S, S)
            kept, logits = [], []
            for chunk in clip_views.split(cfg.batch_views):
                video_tokens, video_logits = self._run(self._video_forward, chunk, cfg.batch_views)
                kept.append(self._keep_video(video_tokens))
                logits.append(video_logits.float())
            video = torch.cat(kept).cpu().numpy()  # (B * V, Nv, Dv) float16
            kinetics = torch.cat(logits).cpu().numpy()  # (B * V, 400) float32
            with_audio = [i for i, c in enumerate(clips) if c.fbank is not None]
            audio = np.zeros((0,), dtype=np.float16)
            if with_audio:
                fbanks = torch.stack([clips[i].fbank for i in with_audio]).to(self.device)  # (B_a, S, F)
                audio = torch.cat([self._keep_audio(self._run(self._audio_forward, chunk, self._clips_per_batch))
                                   for chunk in fbanks.split(self._clips_per_batch)]).cpu().numpy()  # (B_a, Na, Da)
        silent = np.zeros(self.token_layout().shape("audio_tokens"), dtype=np.float16)
        audio_row = {clip: row for row, clip in enumerate(with_audio)}
        out = [
            ClipTokens(
                video_tokens=video[i * n_views:(i + 1) * n_views],
                kinetics_logits=kinetics[i * n_views:(i + 1) * n_views],
                audio_tokens=audio[audio_row[i]] if i in audio_row else silent.copy(),
                has_audio=i in audio_row,
                audio_frames=clip.audio_frames,
                decoded_s=clip.decoded_s,
            )
            for i, clip in enumerate(clips)
        ]
        logger.debug("forward of %d clips (%d views) in %.3f s", len(clips), len(clips) * n_views,
                     time.perf_counter() - started)
        return out

    def _views(self, clip: _Prepared) -> torch.Tensor:
        if clip.views is not None:
            return clip.views.to(self.device)
        frames = clip.frames.to(self.device, non_blocking=True)
        return views.make_views(frames, clip.frame_index, self.config.video, mvit.VIDEO_MEAN, mvit.VIDEO_STD)

    def _run(self, forward: Callable, batch: torch.Tensor, size: int):
        """Run one backbone (under autocast when bf16, on a bfloat16 batch when bf16-pure); with torch.compile, pad
        the batch to `size` so the compiled shape never changes."""
        n = batch.shape[0]
        if self.config.compile and n < size:
            batch = torch.cat([batch, batch.new_zeros((size - n, *batch.shape[1:]))])  # (n, ...) -> (size, ...)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            out = forward(batch.to(self._dtype))
        return tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n]

    def _keep_video(self, video_tokens: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 1 + T*H*W, D) -> (B, Nv, D) float16, still on the device."""
        video_tokens = video_tokens.float()
        if not self.config.full_tokens:
            video_tokens = tokens.pool_video_tokens(video_tokens, self.video_backbone.grid,
                                                    self.config.tokens.video_pooled_grid)
        return video_tokens.half()

    def _keep_audio(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 2 + F*T, D) -> (B, Na, D) float16, still on the device."""
        audio_tokens = audio_tokens.float()
        if not self.config.full_tokens:
            audio_tokens = tokens.pool_audio_tokens(audio_tokens, self.audio_backbone.grid,
                                                    self.config.tokens.audio_pooled_time)
        return audio_tokens.half()


def _finite(path: Path, clip: ClipTokens) -> ClipTokens | MediaError:
    """The clip's tokens, or a MediaError when a backbone gave NaN or inf (an overflow on odd input, broken weights):
    such tokens would poison every batch they train in, so the clip is failed, with the arrays named."""
    bad = [name for name in ("video_tokens", "kinetics_logits", "audio_tokens")
           if not np.isfinite(getattr(clip, name)).all()]
    if bad:
        return MediaError(path, f"backbone output is not finite (NaN or inf in {', '.join(bad)})")
    return clip


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but torch {torch.__version__} sees no CUDA device; extract "
                             "on the CPU (`gpus=0`) with a CPU profile such as cpu-small")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA devices exist")
    return device
