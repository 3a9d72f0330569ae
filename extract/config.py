"""Configuration of the extraction stage: how clips become views and spectrograms, and which frozen backbones
turn them into tokens. Every default lives here, once; `PROFILES` holds the named presets.

Profiles (docs/extract.md explains each):
- `paper`: the MZST paper's setting: 3 crops x 4 temporal views of 16 frames, torchvision `mvit_v2_s`, AST ViT-B
  on 1024 fbank frames, pooled tokens, bf16 on a CUDA device.
- `mvit-1x5`: the published MViT-v2-S Kinetics-400 protocol (1 crop x 5 views); otherwise as `paper`.
- `clipclap`: ClipClap-GZSL's setting (extract/clip_clap.py): CLIP ViT-B/32's image embedding of the clip's middle
  frame and CLAP's (LAION HTSAT, unfused) audio embedding of the centred 10 s, one vector each, fp32.
- `clipclap-cpu-small`: the same on tiny random-init towers, for tests and demos on a CPU.
- `cpu-small`: tests and the demo on a laptop CPU: 1 crop x 2 views at 112 px and small random-init backbones
  built with the same classes (torchvision `MViT`, timm `VisionTransformerDistilled`) on 512 fbank frames.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from common.errors import InputError
from common.settings import Seed, check_fields, setting

__all__ = [
    "VIDEO_ARCHITECTURES",
    "AUDIO_ARCHITECTURES",
    "CLIP_ARCHITECTURES",
    "CLAP_ARCHITECTURES",
    "ATTENTION_KERNELS",
    "COMPILE_MODES",
    "VideoConfig",
    "AudioConfig",
    "TokenConfig",
    "ExtractConfig",
    "PROFILES",
]

# Architectures with published weights take a fixed input; the small ones exist only with random weights.
CLIP_ARCHITECTURES = ("clip_vit_b32", "clip_tiny")  # image towers, one vector per frame (extract/clip_clap.py)
CLAP_ARCHITECTURES = ("clap_htsat_unfused", "clap_tiny")  # audio towers, one vector per clip
VIDEO_ARCHITECTURES = ("mvit_v2_s", "mvit_tiny", *CLIP_ARCHITECTURES)
AUDIO_ARCHITECTURES = ("ast_vit_b", "ast_tiny", *CLAP_ARCHITECTURES)
_DECODE_IN = ("processes", "threads")
# (frames per view, crop size px): the weights' meta; CLIP (None) takes any number of frames
_PRETRAINED_VIDEO_INPUT = {"mvit_v2_s": (16, 224), "clip_vit_b32": (None, 224)}
_PRETRAINED_AUDIO_INPUT = {"ast_vit_b": (128, 1024), "clap_htsat_unfused": (64, 1000)}  # (mel bins, 10 ms frames):
# AST's AudioSet checkpoints; LAION CLAP's 10 s window
_SAMPLE_RATES_HZ = {"clap_htsat_unfused": 48000, "clap_tiny": 48000}  # CLAP's feature extractor; AST's 16 kHz else
_PRECISIONS = ("fp32", "bf16", "bf16-pure")
_FRAME_SCALINGS = ("reference", "worker", "decoder")
# torchvision's own attention forward, or a fused kernel of extract/mvit_attention.py (docs/extract.md compares them)
ATTENTION_KERNELS = ("torchvision", "sdpa", "sdpa-mask", "flex")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
_CROP_MULTIPLE_PX = 16  # MViT's patch stride (4) times mvit_tiny's two spatial query poolings (2 x 2)


@dataclass(frozen=True)
class VideoConfig:
    """Video views: SlowFast test-time multi-view sampling (docs/extract.md, "Video").

    Temporal view i of n covers `frames_per_view * frame_stride` frames of a `sampling_fps` time grid and starts
    at `i * floor(delta / (n - 1))` grid frames (`delta` = clip length minus view span, at least 0; one view is
    centred). With 3 crops the short side is resized to `crop_size_px` and crops are taken at the start, centre
    and end of the long side (left / centre / right, or top / centre / bottom for portrait video); with 1 crop
    the short side is resized to `crop_size_px * 256 / 224` and the centre is cropped (`resize_short_side_px`).
    View v = temporal_view * crops + crop (SlowFast's ensemble order).
    """

    architecture: str = setting("mvit_v2_s")  # one of VIDEO_ARCHITECTURES
    crops: int = setting(3)  # spatial crops per temporal view: 1 (centre) or 3
    temporal_views: int = setting(4)  # temporal views per clip
    frames_per_view: int = setting(16)  # frames fed to the backbone per view (mvit_v2_s: 16; CLIP: any, averaged)
    frame_stride: int = setting(4)  # a view takes every `frame_stride`-th frame of the `sampling_fps` grid
    sampling_fps: float = setting(30.0)  # the time grid the views are sampled on (K400 "16x4" at 30 fps = 7.5 fps)
    crop_size_px: int = setting(224)  # side of the square crop fed to the backbone (mvit_v2_s: 224)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.architecture not in VIDEO_ARCHITECTURES:
            raise InputError(f"video architecture must be one of {VIDEO_ARCHITECTURES}, got {self.architecture!r}")
        if self.crops not in (1, 3):
            raise InputError(f"crops must be 1 or 3 (SlowFast test-time crops), got {self.crops}")
        if self.temporal_views < 1:
            raise InputError(f"temporal_views must be >= 1, got {self.temporal_views}")
        if self.architecture in CLIP_ARCHITECTURES:
            if self.frames_per_view < 1:
                raise InputError(f"frames_per_view must be >= 1, got {self.frames_per_view}")
        elif self.frames_per_view < 2 or self.frames_per_view % 2:
            raise InputError(f"frames_per_view must be even and >= 2 (MViT's temporal patch stride is 2), "
                             f"got {self.frames_per_view}")
        if self.frame_stride < 1:
            raise InputError(f"frame_stride must be >= 1, got {self.frame_stride}")
        if not self.sampling_fps > 0:
            raise InputError(f"sampling_fps must be > 0, got {self.sampling_fps}")
        if self.crop_size_px < _CROP_MULTIPLE_PX or self.crop_size_px % _CROP_MULTIPLE_PX:
            raise InputError(f"crop_size_px must be a positive multiple of {_CROP_MULTIPLE_PX}, "
                             f"got {self.crop_size_px}")
        fixed = _PRETRAINED_VIDEO_INPUT.get(self.architecture)
        if fixed is not None and (fixed[0] or self.frames_per_view, fixed[1]) != (self.frames_per_view,
                                                                                self.crop_size_px):
            raise InputError(f"{self.architecture} takes exactly {fixed[0] or 'any number of'} frames of "
                             f"{fixed[1]} px, got frames_per_view={self.frames_per_view}, "
                             f"crop_size_px={self.crop_size_px}")

    @property
    def views(self) -> int:
        """V: views per clip (crops x temporal views)."""
        return self.crops * self.temporal_views

    @property
    def resize_short_side_px(self) -> int:
        """Short side after resizing: the crop size for 3 crops or CLIP (its preprocessing), 256/224 of it for 1 crop
        (SlowFast / torchvision)."""
        if self.crops == 3 or self.architecture in CLIP_ARCHITECTURES:
            return self.crop_size_px
        return round(self.crop_size_px * 256 / 224)

    @property
    def view_span_s(self) -> float:
        """Seconds covered by one temporal view."""
        return self.frames_per_view * self.frame_stride / self.sampling_fps


@dataclass(frozen=True)
class AudioConfig:
    """Audio: mono (mean of channels) at `sample_rate_hz`, Kaldi fbank with AST's arguments, `target_frames` frames
    (CLAP: 48 kHz, CLAP's own log-mel of a `target_frames` x 10 ms window, extract/clip_clap.py).

    A clip longer than the fbank window (`target_frames` frames of 10 ms, 10.24 s for 1024) is cut to the window
    centred on the middle of the span the video views cover; shorter clips are padded with zeros in the log-mel
    domain, as AST does.
    """

    architecture: str = setting("ast_vit_b")  # one of AUDIO_ARCHITECTURES
    sample_rate_hz: int = setting(16000)  # AST's rate (CLAP's: 48000); audio is resampled to it
    num_mel_bins: int = setting(128)  # F: mel bins of the fbank
    target_frames: int = setting(1024)  # fbank frames fed to the backbone (pad or cut); 10 ms each

    def __post_init__(self) -> None:
        check_fields(self)
        if self.architecture not in AUDIO_ARCHITECTURES:
            raise InputError(f"audio architecture must be one of {AUDIO_ARCHITECTURES}, got {self.architecture!r}")
        rate = _SAMPLE_RATES_HZ.get(self.architecture, 16000)
        if self.sample_rate_hz != rate:
            raise InputError(f"sample_rate_hz must be {rate} for {self.architecture} (its input assumes it), got "
                             f"{self.sample_rate_hz}")
        if self.num_mel_bins < 16 or self.target_frames < 16:
            raise InputError(f"num_mel_bins and target_frames must be >= 16 (one 16 x 16 patch), got "
                             f"{self.num_mel_bins} and {self.target_frames}")
        fixed = _PRETRAINED_AUDIO_INPUT.get(self.architecture)
        if fixed is not None and (self.num_mel_bins, self.target_frames) != fixed:
            raise InputError(f"{self.architecture} takes exactly {fixed[0]} mel bins x {fixed[1]} frames, got "
                             f"num_mel_bins={self.num_mel_bins}, target_frames={self.target_frames}")

    @property
    def window_samples(self) -> int:
        """Samples that give exactly `target_frames` fbank frames (25 ms window, 10 ms shift); for CLAP,
        `target_frames` x 10 ms (its feature extractor's `max_length_s`: a longer window would be cut at random)."""
        if self.architecture in CLAP_ARCHITECTURES:
            return self.target_frames * self.sample_rate_hz // 100
        return (self.target_frames - 1) * self.sample_rate_hz // 100 + self.sample_rate_hz * 25 // 1000


@dataclass(frozen=True)
class TokenConfig:
    """What is stored per clip when `ExtractConfig.full_tokens` is False (docs/extract.md has the arithmetic).

    Video: per view the CLS token and the (T, H, W) token grid (8 x 7 x 7 for mvit_v2_s) adaptively
    average-pooled to `video_pooled_grid`. Audio: CLS, DIST and the (F, T) patch grid (12 x 101 for AST)
    average-pooled over time to `audio_pooled_time` columns, each frequency row kept.
    """

    video_pooled_grid: tuple[int, int, int] = setting((4, 2, 2))  # (T, H, W) after pooling: 17 tokens per view with CLS
    audio_pooled_time: int = setting(8)  # time columns after pooling: 2 + 12 x 8 = 98 tokens for AST

    def __post_init__(self) -> None:
        check_fields(self)
        if len(self.video_pooled_grid) != 3 or min(self.video_pooled_grid) < 1:
            raise InputError(f"video_pooled_grid must be three sizes >= 1, got {self.video_pooled_grid}")
        if self.audio_pooled_time < 1:
            raise InputError(f"audio_pooled_time must be >= 1, got {self.audio_pooled_time}")


@dataclass(frozen=True)
class ExtractConfig:
    """One extraction setting; recorded in the token store (`to_dict`).

    Override a preset with `dataclasses.replace`, e.g. `replace(PROFILES["paper"], video=replace(
    PROFILES["paper"].video, crops=1))`. The fields declared `affects_result=False` (`device`, `compile`,
    `compile_mode`, `attention`, `batch_views`, `decode_threads`, `decode_in`) change speed, not tokens beyond
    rounding, and `profile` only names where the config came from: a store may be resumed with other values of
    them. Everything else defines the tokens.
    """

    profile: str = setting("paper", affects_result=False)  # name of the preset this config came from (informational)
    video: VideoConfig = setting(factory=VideoConfig)
    audio: AudioConfig = setting(factory=AudioConfig)
    tokens: TokenConfig = setting(factory=TokenConfig)
    full_tokens: bool = setting(False, help="Keep every token (about 8.7 MiB per clip) instead of pooled ones.")
    random_init: bool = setting(False, help="Random backbones instead of weights (recorded in the store).")
    seed: Seed = setting(0)  # seeds random init: every process builds bit-identical random backbones
    precision: str = setting("bf16")  # backbone forwards: "bf16" (autocast), "bf16-pure" (weights and inputs cast to
    # bfloat16, no autocast) or "fp32"
    attention: str = setting("sdpa", affects_result=False)  # MViT-v2 attention kernel, one of ATTENTION_KERNELS; equal
    # tokens up to rounding
    device: str = setting("cuda", affects_result=False)  # torch device of the backbones and of resize / crop /
    # normalise ("cpu", "cuda:1")
    compile: bool = setting(False, affects_result=False, help="torch.compile the backbones (GPU runs).")
    compile_mode: str = setting("default", affects_result=False)  # torch.compile's `mode` when `compile` is set, one of
    # COMPILE_MODES
    batch_views: int = setting(96, affects_result=False)  # video views per backbone forward; views of several clips
    # share a forward
    decode_threads: int = setting(32, affects_result=False)  # at most this many clips decoded concurrently (one worker
    # each, single-threaded codecs); in practice the usable cores decide (common/threads.py): on a GPU torch keeps one
    # and the decode workers take the rest (15 on a 16-core, 1-GPU machine), since 8 workers cap decoding near 55
    # clips/s
    strict_media: bool = setting(False, flag="--strict",
                                 help="Fail files that decode only in part (default: keep the decodable part).")
    frame_scaling: str = setting("reference")  # where frames are scaled to the views' short side: "reference"
    # (full-size RGB frames resized by torch on `device`, bilinear without antialiasing, as torchvision's weights
    # transforms),
    # "worker" (the same filter on the uint8 frames in the decode worker: 10x fewer bytes per 720p clip, each pixel
    # within 1 level of 255 of the reference) or "decoder" (swscale's bilinear during the RGB conversion, when the
    # source is at least 2x larger: the same bytes, less CPU, tokens within docs/extract.md's wider stated
    # tolerance). Stores made before this field existed did "reference".
    decode_in: str = setting("processes", affects_result=False)  # "processes" or "threads": where clips decode
    # (extract/decode_pool.py says why)

    def __post_init__(self) -> None:
        for name, kind in (("video", VideoConfig), ("audio", AudioConfig), ("tokens", TokenConfig)):
            if not isinstance(getattr(self, name), kind):
                raise InputError(f"{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        check_fields(self)
        if not self.profile:
            raise InputError("profile must be a non-empty name")
        if self.precision not in _PRECISIONS:
            raise InputError(f"precision must be one of {_PRECISIONS}, got {self.precision!r}")
        if self.attention not in ATTENTION_KERNELS:
            raise InputError(f"attention must be one of {ATTENTION_KERNELS}, got {self.attention!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise InputError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}")
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.batch_views < 1:
            raise InputError(f"batch_views must be >= 1, got {self.batch_views}")
        if self.frame_scaling not in _FRAME_SCALINGS:
            raise InputError(f"frame_scaling must be one of {_FRAME_SCALINGS}, got {self.frame_scaling!r}")
        if self.decode_threads < 1:
            raise InputError(f"decode_threads must be >= 1, got {self.decode_threads}")
        if self.decode_in not in _DECODE_IN:
            raise InputError(f"decode_in must be one of {_DECODE_IN}, got {self.decode_in!r}")
        small = [a for a in (self.video.architecture, self.audio.architecture)
                 if a not in _PRETRAINED_VIDEO_INPUT and a not in _PRETRAINED_AUDIO_INPUT]
        if small and not self.random_init:
            raise InputError(f"{' and '.join(small)} exist only with random weights (no published checkpoint); "
                             "set `random_init=True` or use the paper / mvit-1x5 profile")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists, so it compares equal to what a store reads back)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> ExtractConfig:
        """Inverse of `to_dict`; unknown or missing keys raise ValueError."""
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown extract config keys {unknown}; known: {sorted(known)}")
        parts = {"video": VideoConfig, "audio": AudioConfig, "tokens": TokenConfig}
        for name, kind in parts.items():
            if name in data:
                data[name] = _sub_config(kind, data[name], name)
        return cls(**data)


def _sub_config(kind: type, values: dict, name: str):
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"unknown {name} config keys {unknown}; known: {sorted(known)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**values)


# The GPU profiles scale frames in the decode workers: a full-size 720p clip's frames (171 MB) would cap the transfer
# to the device below the 100 clips/s per GPU that extraction aims at; "worker" keeps the reference's filter (tokens
# as good as equal), "decoder" is the cheaper opt-in. A store made with the reference before then resumes only with
# frame_scaling="reference" (the runner names the field that differs).
PROFILES: dict[str, ExtractConfig] = {
    "paper": ExtractConfig(profile="paper", frame_scaling="worker"),
    "mvit-1x5": ExtractConfig(profile="mvit-1x5", video=VideoConfig(crops=1, temporal_views=5), batch_views=80,
                              frame_scaling="worker"),
    "clipclap": ExtractConfig(
        profile="clipclap",
        video=VideoConfig(architecture="clip_vit_b32", crops=1, temporal_views=1, frames_per_view=1, frame_stride=1),
        audio=AudioConfig(architecture="clap_htsat_unfused", sample_rate_hz=48000, num_mel_bins=64, target_frames=1000),
        precision="fp32", batch_views=256, frame_scaling="worker",
    ),
    "clipclap-cpu-small": ExtractConfig(
        profile="clipclap-cpu-small",
        video=VideoConfig(architecture="clip_tiny", crops=1, temporal_views=2, frames_per_view=2, frame_stride=4,
                          crop_size_px=32),
        audio=AudioConfig(architecture="clap_tiny", sample_rate_hz=48000, num_mel_bins=16, target_frames=200),
        random_init=True, precision="fp32", device="cpu", batch_views=16, decode_threads=2,
    ),
    "cpu-small": ExtractConfig(
        profile="cpu-small",
        video=VideoConfig(architecture="mvit_tiny", crops=1, temporal_views=2, crop_size_px=112),
        audio=AudioConfig(architecture="ast_tiny", target_frames=512),
        random_init=True,
        precision="fp32",
        attention="torchvision",  # the reference: on a CPU the fused kernels gain little (BENCHMARKS.md)
        device="cpu",
        batch_views=16,
        decode_threads=2,
    ),
}
