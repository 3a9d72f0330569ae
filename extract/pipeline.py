"""Clips to tokens: decode (PyAV), views and fbank, frozen MViT-v2-S and AST forwards, pooled tokens (or, with the
clipclap profiles, CLIP image and CLAP audio vectors: extract/backbones.py picks the towers).

`ClipExtractor` builds both frozen backbones once; `extract_many` decodes the next clips in worker processes
(extract/decode_pool.py) while the backbones run on the current ones, batches the views of several clips into one
forward, and yields results in input order. On CUDA the frames go to the device through pinned buffers on a copy
stream (extract/transfer.py) and the next batch is queued on the device before the current one's tokens are read
back, so copies, views and both backbones of consecutive batches overlap. A clip that cannot be used yields its
`MediaError` instead of tokens; the batch goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError
from common.media import MediaError, Segment
from common.threads import apply_thread_plan, plan_threads
from extract import backbones, mvit, tokens, views
from extract.config import ExtractConfig
from extract.decode_pool import DecodePool, PreparedClip, prepare_clip
from extract.outputs import ClipTokens, TokenLayout
from extract.transfer import HostToDevice

__all__ = ["ClipExtractor"]

logger = logging.getLogger(__name__)


@dataclass
class _Launched:
    """One batch queued on the device: its outputs are (or will be, once `ready` has happened) on the host."""

    clips: list[PreparedClip]
    video: torch.Tensor  # (B * V, Nv, Dv) float16
    kinetics: torch.Tensor  # (B * V, K) float32
    audio: torch.Tensor | None  # (B_a, Na, Da) float16 of the clips with audio; None: none has
    ready: torch.cuda.Event | None  # the copies back to the host (CUDA); None: already there (CPU)
    started: float  # perf_counter when the batch was queued


class ClipExtractor:
    """Frozen MViT-v2-S and AST (or CLIP and CLAP) turning media files into `ClipTokens`.

    Args:
        config: extraction settings (a profile of extract.config.PROFILES, possibly overridden).
        video_weights: torchvision-format mvit_v2_s weights (None: the torch hub cache file), or HF CLIP weights
            (required). Must be None with `config.random_init`.
        audio_weights: AST weights (AST original, HF transformers, or timm DeiT) or HF CLAP weights; required
            unless `config.random_init`.
        thread_share: processes sharing this machine's cores (Dask workers); sets this one's threads
            (`common.threads.plan_threads`).
        kinetics_head: a Kinetics head fitted on the random-init video backbone (`extract.mvit.build_mvit`).

    Raises:
        FileNotFoundError: missing weights without `config.random_init` (names the file and how to get it).
        InputError: a CUDA device without CUDA, weights that do not fit, or a pooled grid larger than the grid.
    """

    def __init__(self, config: ExtractConfig, video_weights: Path | None = None,
                 audio_weights: Path | None = None, thread_share: int = 1,
                 kinetics_head: Path | None = None) -> None:
        self.config = config
        self.device = _device(config.device)
        # At most `decode_threads` decode workers beside torch's threads, never more in all than usable cores.
        self.threads = plan_threads(config.decode_threads, share=thread_share,
                                    torch_on_device=self.device.type == "cuda")
        apply_thread_plan(self.threads)
        video, self._video_provenance = backbones.build_video(config, video_weights, kinetics_head)
        audio, self._audio_provenance = backbones.build_audio(config, audio_weights)
        # bf16-pure: weights (and, in `_run`, inputs) in bfloat16; fp32 and bf16 autocast keep float32 weights.
        self._dtype = torch.bfloat16 if config.precision == "bf16-pure" else torch.float32
        self.video_backbone = video.to(self.device, self._dtype)
        self.audio_backbone = audio.to(self.device, self._dtype)
        if not config.full_tokens and video.grid is not None:  # fails here rather than on the first clip
            tokens.pool_video_tokens(torch.zeros(1, 1 + math.prod(video.grid), 1), video.grid,
                                     config.tokens.video_pooled_grid)
        if not config.full_tokens and audio.grid is not None:
            tokens.pool_audio_tokens(torch.zeros(1, 2 + math.prod(audio.grid), 1), audio.grid,
                                     config.tokens.audio_pooled_time)
        self._clips_per_batch = max(1, config.batch_views // config.video.views)
        self._decode_pool: DecodePool | None = None  # started by the first `extract_many`, kept until `close`
        self._to_device = HostToDevice(self.device, slots=2 * self._clips_per_batch)  # this batch and the next
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
        """Tokens of one clip: a media file, or a segment of it (decoded in this thread).

        Raises:
            MediaError: the clip cannot be used (the message names the file and the reason).
        """
        prepared = prepare_clip(Path(path), segment, self.config, make_views=self.device.type == "cpu")
        if isinstance(prepared, MediaError):
            raise prepared
        result = _finite(Path(path), self._collect(self._launch([prepared]))[0])
        if isinstance(result, MediaError):
            raise result
        return result

    def extract_many(self, paths: Iterable[str | Path], prefetch: int = 2,
                     segments: Iterable[Segment | None] | None = None
                     ) -> Iterator[tuple[Path, ClipTokens | MediaError]]:
        """Tokens of many clips, in input order; a clip that cannot be used gives its MediaError instead.

        One call is one pipeline: give it all the clips there are (every block of a worker), so that decoding
        never waits for a new call to start.

        Args:
            paths: media files.
            prefetch: batches decoded ahead of the one in the backbones (at least one clip per decode worker).
            segments: per path the segment that is the clip, or None for the whole file (default: all None).
        """
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        per_batch = self._clips_per_batch
        in_flight = max(per_batch * (1 + prefetch), per_batch + self.threads.helper_threads)
        remaining = iter(paths)
        remaining_segments = iter(segments) if segments is not None else None
        pool = self._decoding()
        pending: deque[tuple[Path, Future]] = deque()

        def next_batch() -> list[tuple[Path, PreparedClip | MediaError]]:
            try:
                while len(pending) < in_flight:
                    path = next(remaining, None)
                    if path is None:
                        break
                    segment = None if remaining_segments is None else next(remaining_segments)
                    pending.append((Path(path), pool.submit(Path(path), segment)))
                batch = [pending.popleft() for _ in range(min(per_batch, len(pending)))]
                return [(path, future.result()) for path, future in batch]
            except BrokenExecutor:  # a decode process died (a crash in a codec, the OOM killer): no clip comes back
                self.close()  # from this pool again; the caller records the error and the next call starts anew
                raise

        try:
            batch = next_batch()
            launched = self._launch(_usable(batch))
            while batch:
                # Queue the next batch on the device before reading this one back: the device never waits for us.
                following = next_batch()
                launched_next = self._launch(_usable(following))
                outputs = iter(self._collect(launched))
                for path, result in batch:
                    yield path, result if isinstance(result, MediaError) else _finite(path, next(outputs))
                batch, launched = following, launched_next
        finally:
            for _, future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the decode workers (a later `extract_many` starts new ones)."""
        if self._decode_pool is not None:
            self._decode_pool.close()
            self._decode_pool = None

    def token_layout(self) -> TokenLayout:
        """Shapes of `ClipTokens` and the grids behind them (recorded in the store)."""
        cfg = self.config
        video_grid, audio_grid = self.video_backbone.grid, self.audio_backbone.grid
        if video_grid is None:  # CLIP / CLAP: one vector per view and per clip, no grid, no classifier
            return TokenLayout(
                views=cfg.video.views, video_tokens=1, video_dim=self.video_backbone.width, audio_tokens=1,
                audio_dim=self.audio_backbone.width, kinetics_classes=0, crops=cfg.video.crops,
                temporal_views=cfg.video.temporal_views, full_tokens=cfg.full_tokens,
            )
        video_grid, audio_grid = tuple(video_grid), tuple(audio_grid)
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

    def _decoding(self) -> DecodePool:
        if self._decode_pool is None:
            self._decode_pool = DecodePool(self.config, self.threads.helper_threads, self.config.decode_in,
                                           make_views=self.device.type == "cpu")  # on a GPU the device makes them
            logger.info("decoding in %d %s", self.threads.helper_threads, self._decode_pool.mode)
        return self._decode_pool

    # --- backbone side (calling thread) -----------------------------------------------------------------

    def _launch(self, clips: list[PreparedClip]) -> _Launched | None:
        """Queue a batch: frames to the device, views, both backbones, tokens back to the host (all asynchronous on
        CUDA; on a CPU device done when this returns). None for no clips."""
        if not clips:
            return None
        cfg = self.config
        started = time.perf_counter()
        with torch.inference_mode():
            # Every clip's copy is queued before any view is made: clip i+1's copy runs beside clip i's kernels.
            sent = [(self._to_device.send(c.frames if c.views is None else c.views), c) for c in clips]
            clip_views = torch.cat([self._views(pixels, c) for pixels, c in sent])  # (B * V, 3, T, S, S)
            kept, logits = [], []
            for chunk in clip_views.split(cfg.batch_views):
                video_tokens, video_logits = self._run(self._video_forward, chunk, cfg.batch_views)
                kept.append(self._keep_video(video_tokens))
                logits.append(video_logits.float())
            video, kinetics = torch.cat(kept), torch.cat(logits)  # (B * V, Nv, Dv) float16, (B * V, K) float32
            audio = None
            fbanks = [c.fbank for c in clips if c.fbank is not None]
            if fbanks:
                fbank = self._to_device.send(torch.stack(fbanks))  # (B_a, S, F)
                audio = torch.cat([self._keep_audio(self._run(self._audio_forward, chunk, self._clips_per_batch))
                                   for chunk in fbank.split(self._clips_per_batch)])  # (B_a, Na, Da)
            ready = None
            if self.device.type == "cuda":  # pinned host copies, read by `_collect` once `ready` has happened
                video, kinetics = video.to("cpu", non_blocking=True), kinetics.to("cpu", non_blocking=True)
                audio = audio.to("cpu", non_blocking=True) if audio is not None else None
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(self.device))
        return _Launched(clips, video, kinetics, audio, ready, started)

    def _collect(self, launched: _Launched | None) -> list[ClipTokens]:
        """The tokens of a launched batch, per clip (waits for the device)."""
        if launched is None:
            return []
        if launched.ready is not None:
            launched.ready.synchronize()
        n_views = self.config.video.views
        video, kinetics = launched.video.numpy(), launched.kinetics.numpy()
        audio = launched.audio.numpy() if launched.audio is not None else None
        silent = np.zeros(self.token_layout().shape("audio_tokens"), dtype=np.float16)
        with_audio = [i for i, c in enumerate(launched.clips) if c.fbank is not None]
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
            for i, clip in enumerate(launched.clips)
        ]
        logger.debug("%d clips (%d views) in %.3f s from queueing to tokens", len(out), len(out) * n_views,
                     time.perf_counter() - launched.started)
        return out

    def _views(self, pixels: torch.Tensor, clip: PreparedClip) -> torch.Tensor:
        """A clip's views from its pixels on the device: made already (CPU decode worker), or from its frames."""
        if clip.views is not None:
            return pixels
        return views.make_views(pixels, clip.frame_index, self.config.video,
                                *backbones.pixel_statistics(self.config.video))

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
        if not self.config.full_tokens and self.video_backbone.grid is not None:
            video_tokens = tokens.pool_video_tokens(video_tokens, self.video_backbone.grid,
                                                    self.config.tokens.video_pooled_grid)
        return video_tokens.half()

    def _keep_audio(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 2 + F*T, D) -> (B, Na, D) float16, still on the device."""
        audio_tokens = audio_tokens.float()
        if not self.config.full_tokens and self.audio_backbone.grid is not None:
            audio_tokens = tokens.pool_audio_tokens(audio_tokens, self.audio_backbone.grid,
                                                    self.config.tokens.audio_pooled_time)
        return audio_tokens.half()


def _usable(batch: list[tuple[Path, PreparedClip | MediaError]]) -> list[PreparedClip]:
    return [result for _, result in batch if not isinstance(result, MediaError)]


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
