"""Which frozen towers an extraction setting uses: MViT-v2 / AST (the paper's) or CLIP / CLAP (ClipClap-GZSL's),
chosen by the architecture names of `extract.config`, with the pixel statistics and audio input each expects."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.errors import InputError
from extract import ast_audio, clip_clap, mvit, spectrogram
from extract.config import CLAP_ARCHITECTURES, CLIP_ARCHITECTURES, AudioConfig, ExtractConfig, VideoConfig

__all__ = ["build_video", "build_audio", "pixel_statistics", "audio_input"]


def build_video(config: ExtractConfig, weights: Path | None,
                kinetics_head: Path | None = None) -> tuple[nn.Module, dict]:
    """The frozen video tower of `config` (random-init with `config.seed`) and its provenance; `kinetics_head`:
    MViT's fitted Kinetics head (`extract.mvit.build_mvit`), which a CLIP tower, having no classifier, refuses."""
    if config.video.architecture in CLIP_ARCHITECTURES:
        if kinetics_head is not None:
            raise InputError(f"{kinetics_head}: a Kinetics head is MViT's; the CLIP image tower has no classifier")
        return clip_clap.build_clip_image(config.video, weights, config.random_init, config.seed)
    return mvit.build_mvit(config.video, weights, config.random_init, config.seed, config.attention, kinetics_head)


def build_audio(config: ExtractConfig, weights: Path | None) -> tuple[nn.Module, dict]:
    """The frozen audio tower of `config` (random-init with `config.seed + 1`) and its provenance."""
    if config.audio.architecture in CLAP_ARCHITECTURES:
        return clip_clap.build_clap_audio(config.audio, weights, config.random_init, config.seed + 1)
    return ast_audio.build_ast(config.audio, weights, config.random_init, config.seed + 1)


def pixel_statistics(config: VideoConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) on [0, 1] RGB that the video tower's weights were trained with."""
    if config.architecture in CLIP_ARCHITECTURES:
        return clip_clap.CLIP_MEAN, clip_clap.CLIP_STD
    return mvit.VIDEO_MEAN, mvit.VIDEO_STD


def audio_input(waveform: torch.Tensor, config: AudioConfig) -> tuple[torch.Tensor, int]:
    """The audio tower's input of a mono window and its frames that hold audio: AST's fbank or CLAP's log-mel.

    Shapes: waveform (S,) -> (frames, mel bins) float32.
    """
    if config.architecture in CLAP_ARCHITECTURES:
        return clip_clap.clap_features(waveform, config)
    return spectrogram.log_mel(waveform, config.sample_rate_hz, config.num_mel_bins, config.target_frames)
