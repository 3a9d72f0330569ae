"""Real mp4 clips for the runner tests: tiny H.264 / AAC files whose colour and pitch differ per clip."""

from pathlib import Path

import numpy as np
import pytest

from curate.encode import write_mp4


def write_test_clip(path: Path, seconds: float = 1.2, index: int = 0, audio: bool = True, size=(48, 64)) -> Path:
    """A clip of a flat colour with a moving square and a tone, both set by `index`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fps, height, width = 25, *size
    frames = np.zeros((round(seconds * fps), height, width, 3), dtype=np.uint8)
    frames[:] = ((37 * index) % 256, (91 * index + 40) % 256, (53 * index + 90) % 256)
    for t in range(len(frames)):
        top, left = (2 * t) % (height - 8), (3 * t) % (width - 8)
        frames[t, top:top + 8, left:left + 8] = 255
    waveform = None
    if audio:
        time = np.arange(round(seconds * 16000)) / 16000
        waveform = 0.3 * np.sin(2 * np.pi * (200 + 150 * index) * time)
    return write_mp4(path, frames, fps, waveform, 16000)


@pytest.fixture
def clip_folder(tmp_path):
    """Six clips in two class folders (one without audio, equal stems across folders), a zero-byte file,
    and a truncated file; returns (folder, manifest path)."""
    folder = tmp_path / "videos"
    paths = []
    for i in range(6):
        label = "drumming" if i % 2 else "barking"
        paths.append(write_test_clip(folder / label / f"clip{i // 2}.mp4", index=i, audio=i != 3))
    (folder / "barking" / "empty.mp4").write_bytes(b"")
    good = paths[0].read_bytes()
    (folder / "drumming" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    manifest = folder / "manifest.csv"
    rows = ["path,class_name,split"] + [
        f"{p.relative_to(folder).as_posix()},{p.parent.name},{'seen' if p.parent.name == 'barking' else 'unseen'}"
        for p in sorted(folder.rglob("*.mp4"))]
    manifest.write_text("\n".join(rows) + "\n")
    return folder, manifest


@pytest.fixture
def write_clip():
    """`write_clip(path, seconds=1.2, index=0, audio=True)`: `write_test_clip` for tests of this package."""
    return write_test_clip
