"""Real media files for the extract tests, written with PyAV (H.264 / AAC mp4, or H.264 / PCM mkv)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from curate.encode import write_mp4
from tests import media
from tests.media import numbered_frames

_BITS = 8


def _numbered_frames(count: int, height: int, width: int) -> np.ndarray:
    return numbered_frames(count, height, width, _BITS)


def frame_number(rgb: np.ndarray) -> int:
    return media.frame_number(rgb, _BITS, margin_px=2)


@pytest.fixture
def numbered_clip(tmp_path):
    """`numbered_clip(name, frames, fps, size=(H, W), audio=None, rate=16000)` -> an mp4 of numbered frames."""

    def make(name: str, frames: int, fps: float, size=(48, 64), audio: np.ndarray | None = None,
             rate: int = 16000) -> Path:
        return write_mp4(tmp_path / name, _numbered_frames(frames, *size), fps, audio, rate, crf=0)

    return make


@pytest.fixture
def timed_clip(tmp_path):
    """`timed_clip(name, pts_ms, rotation=0)` -> an mp4 whose frames have the given presentation times (VFR)."""

    def make(name: str, pts_ms: list[int], rotation: int = 0, size=(48, 64)) -> Path:
        path = tmp_path / name
        frames = _numbered_frames(len(pts_ms), *size)
        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=30, options={"threads": "1", "crf": "0"})
            stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
            if rotation:
                stream.set_display_rotation(rotation)
            for rgb, pts in zip(frames, pts_ms, strict=True):
                rgb = rgb.copy()
                rgb[:8, :16] = 255  # a white mark in the top-left corner shows the orientation
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return path

    return make


@pytest.fixture
def pcm_clip(tmp_path):
    """`pcm_clip(name, audio_samples)` -> an mkv with 10 H.264 frames and exactly that many 16 kHz PCM samples."""

    def make(name: str, audio_samples: int) -> Path:
        path = tmp_path / name
        with av.open(str(path), "w", format="matroska") as container:
            video = container.add_stream("libx264", rate=25, options={"threads": "1"})
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            audio = container.add_stream("pcm_s16le", rate=16000)
            audio.layout = "mono"
            for rgb in _numbered_frames(10, 48, 64):
                container.mux(video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
            container.mux(video.encode(None))
            samples = (np.sin(np.arange(audio_samples) * 0.3) * 8000).astype(np.int16)[None]  # (1, S)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, 0
            container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
        return path

    return make


def tone(seconds: float, hz: float, rate: int = 16000, amplitude: float = 0.3, phase: float = 0.0) -> np.ndarray:
    """A sine wave, float32 (S,)."""
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t + phase)).astype(np.float32)


@pytest.fixture
def helpers():
    """Plain helper functions shared by the extract tests (conftest modules are not importable)."""
    return type("Helpers", (), {"frame_number": staticmethod(frame_number), "tone": staticmethod(tone)})
