"""ClipExtractor end to end on real mp4 files (cpu-small), plus the paper profiles' layouts and construction errors."""

import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from common.media import MediaError
from curate.encode import write_mp4
from extract.config import PROFILES
from extract.outputs import ClipTokens, TokenLayout
from extract.pipeline import ClipExtractor

SMALL = PROFILES["cpu-small"]
REPO = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)


def _clip(path: Path, colour, hz: float | None, seed: int, seconds: float = 4.0, size=(120, 160)) -> Path:
    """A demo-like clip: flat colour, a moving square and sensor noise; a pulsing tone (nuisances from `seed`)."""
    rng = np.random.default_rng(seed)
    count, (height, width) = round(seconds * 25), size
    frames = np.empty((count, height, width, 3), np.float32)
    frames[:] = colour
    x0, y0, (vx, vy) = rng.uniform(0, width - 20), rng.uniform(0, height - 20), rng.uniform(-1.5, 1.5, 2)
    for t in range(count):
        x, y = int(x0 + vx * t) % (width - 20), int(y0 + vy * t) % (height - 20)
        frames[t, y:y + 20, x:x + 20] = rng.uniform(0, 255, 3)
    frames += rng.integers(-4, 5, frames.shape)
    audio = None
    if hz is not None:
        t = np.arange(round(seconds * 16000)) / 16000
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 3) * t)
        audio = 0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6)) * envelope + 0.01 * rng.standard_normal(t.size)
    return write_mp4(path, np.clip(frames, 0, 255).astype(np.uint8), 25, audio, 16000)


@pytest.fixture(scope="module")
def extractor():
    return ClipExtractor(SMALL)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for seed in range(3):
        made["red", seed] = _clip(folder / f"red{seed}.mp4", (200, 30, 30), 200, seed)
        made["blue", seed] = _clip(folder / f"blue{seed}.mp4", (30, 30, 200), 2000, 100 + seed)
    made["silent"] = _clip(folder / "silent.mp4", (30, 200, 30), None, 7)
    made["portrait"] = _clip(folder / "portrait.mp4", (90, 90, 90), 500, 8, seconds=1.0, size=(160, 120))
    (folder / "notes.mp4").write_text("not media\n")
    made["bad"] = folder / "notes.mp4"
    return made


def _check(tokens: ClipTokens, layout: TokenLayout) -> None:
    assert tokens.video_tokens.shape == (layout.views, layout.video_tokens, layout.video_dim)
    assert tokens.video_tokens.dtype == np.float16
    assert tokens.kinetics_logits.shape == (layout.views, layout.kinetics_classes)
    assert tokens.kinetics_logits.dtype == np.float32
    assert tokens.audio_tokens.shape == layout.shape("audio_tokens") and tokens.audio_tokens.dtype == np.float16
    assert np.isfinite(tokens.video_tokens).all() and np.isfinite(tokens.audio_tokens).all()


def test_cpu_small_tokens_have_the_layouts_shapes(extractor, clips):
    layout = extractor.token_layout()
    assert (layout.views, layout.video_tokens, layout.video_dim, layout.audio_tokens, layout.audio_dim) == (
        2, 17, 384, 98, 192)
    assert TokenLayout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout  # what a store records
    with_audio = extractor.extract(clips["red", 0])
    _check(with_audio, layout)
    assert with_audio.has_audio and abs(with_audio.audio_frames - 398) <= 3  # 4 s: (64000 - 400) // 160 + 1
    silent = extractor.extract(clips["silent"])
    _check(silent, layout)
    assert not silent.has_audio and silent.audio_frames == 0 and not silent.audio_tokens.any()
    assert silent.video_tokens.any()
    _check(extractor.extract(clips["portrait"]), layout)
    with pytest.raises(MediaError, match="notes.mp4: cannot be opened"):
        extractor.extract(clips["bad"])


def test_extract_many_keeps_order_and_yields_errors_in_place(extractor, clips):
    order = [clips["red", 0], clips["bad"], clips["silent"], clips["blue", 1], clips["bad"].with_name("gone.mp4"),
             clips["portrait"]]
    results = list(extractor.extract_many(order, prefetch=1))
    assert [path for path, _ in results] == order
    kinds = [type(result).__name__ for _, result in results]
    assert kinds == ["ClipTokens", "MediaError", "ClipTokens", "ClipTokens", "MediaError", "ClipTokens"]
    assert results[4][1].reason == "file not found" and results[4][1].path == order[4]
    alone = extractor.extract(clips["blue", 1])
    batched = results[3][1]  # decoded in a thread, batched with other clips: the same tokens up to rounding
    np.testing.assert_allclose(batched.video_tokens.astype(np.float32), alone.video_tokens.astype(np.float32),
                               atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(batched.audio_tokens.astype(np.float32), alone.audio_tokens.astype(np.float32),
                               atol=2e-3, rtol=2e-3)
    assert [type(r).__name__ for _, r in extractor.extract_many(order[:2], prefetch=0)] == ["ClipTokens", "MediaError"]
    with pytest.raises(ValueError, match="prefetch"):
        next(extractor.extract_many(order, prefetch=-1))


@pytest.mark.slow
def test_non_finite_backbone_output_fails_the_clip(clips):
    broken = ClipExtractor(SMALL)
    with torch.no_grad():
        next(broken.audio_backbone.parameters()).fill_(float("nan"))  # an audio track now gives NaN tokens
    results = dict(broken.extract_many([clips["red", 0], clips["silent"]]))
    failed, silent = results[clips["red", 0]], results[clips["silent"]]
    assert isinstance(failed, MediaError) and failed.reason == "backbone output is not finite (NaN or inf in " \
        "audio_tokens)"
    assert isinstance(silent, ClipTokens) and np.isfinite(silent.video_tokens).all()  # no audio: unaffected
    with pytest.raises(MediaError, match="red0.mp4: backbone output is not finite"):
        broken.extract(clips["red", 0])


def test_random_init_small_profile_keeps_colour_and_pitch(extractor, clips):
    """Random backbones keep global statistics (docs/synthetic.md): red / 200 Hz clips and blue / 2 kHz clips must
    be far apart compared with clips of one kind that differ in motion, phase, envelope and noise."""
    keys = [(colour, seed) for colour in ("red", "blue") for seed in range(3)]
    tokens = dict(zip(keys, (r for _, r in extractor.extract_many([clips[k] for k in keys])), strict=True))
    for name, features in (("video", lambda r: r.video_tokens.astype(np.float32).mean(0)),
                           ("audio", lambda r: r.audio_tokens.astype(np.float32))):
        def distance(a, b, features=features):
            return float(np.linalg.norm(features(tokens[a]) - features(tokens[b])))

        within = max(distance((c, i), (c, j)) for c in ("red", "blue") for i in range(3) for j in range(i + 1, 3))
        between = min(distance(("red", i), ("blue", j)) for i in range(3) for j in range(3))
        logger.info("%s tokens: nearest other-kind clip %.1f, farthest same-kind clip %.1f (ratio %.1f)", name,
                    between, within, between / within)
        assert between > 2 * within, name


def test_full_tokens_keep_every_token(clips):
    full = ClipExtractor(replace(SMALL, full_tokens=True))
    layout = full.token_layout()
    assert (layout.video_tokens, layout.audio_tokens) == (1 + 8 * 7 * 7, 2 + 12 * 50) and layout.full_tokens
    _check(full.extract(clips["red", 1]), layout)


def test_bf16_autocast_gives_close_tokens(extractor, clips):
    bf16 = ClipExtractor(replace(SMALL, precision="bf16")).extract(clips["red", 2])
    fp32 = extractor.extract(clips["red", 2])
    for a, b in ((bf16.video_tokens, fp32.video_tokens), (bf16.audio_tokens, fp32.audio_tokens)):
        a, b = a.astype(np.float32).ravel(), b.astype(np.float32).ravel()
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


@pytest.mark.slow
def test_fresh_process_builds_identical_backbones_and_tokens(extractor, clips):
    script = (
        "import sys, json; sys.path.insert(0, '.'); import numpy as np; "
        "from extract.config import PROFILES; from extract.pipeline import ClipExtractor; "
        "e = ClipExtractor(PROFILES['cpu-small']); "
        "d = lambda m: float(sum(v.double().sum() * (i + 1) for i, v in enumerate(m.state_dict().values()))); "
        f"t = e.extract({str(clips['blue', 0])!r}); "
        "print(json.dumps([d(e.video_backbone), d(e.audio_backbone), t.video_tokens.astype(float).tolist(), "
        "t.audio_tokens.astype(float).tolist()]))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    video_digest, audio_digest, video, audio = json.loads(run.stdout)

    def digest(module):
        return float(sum(v.double().sum() * (i + 1) for i, v in enumerate(module.state_dict().values())))

    assert (video_digest, audio_digest) == (digest(extractor.video_backbone), digest(extractor.audio_backbone))
    here = extractor.extract(clips["blue", 0])
    np.testing.assert_allclose(np.array(video), here.video_tokens.astype(float), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(np.array(audio), here.audio_tokens.astype(float), atol=2e-3, rtol=2e-3)


def test_provenance_records_random_init(extractor):
    provenance = extractor.provenance()
    assert json.loads(json.dumps(provenance)) == provenance
    assert provenance["random_init"] and provenance["video"]["weights"] == "random-init"
    assert provenance["audio"]["sha256"] == "random-init" and provenance["audio"]["seed"] == SMALL.seed + 1
    assert provenance["video"]["architecture"] == "mvit_tiny" and provenance["video"]["parameters"] > 0


@pytest.mark.slow  # builds the full-size MViT-v2-S and AST
def test_paper_profiles_layouts_without_a_forward():
    paper = ClipExtractor(replace(PROFILES["paper"], device="cpu", random_init=True))
    layout = paper.token_layout()
    assert {k: layout.to_dict()[k] for k in ("V", "Nv", "Dv", "Na", "Da", "kinetics_classes")} == {
        "V": 12, "Nv": 17, "Dv": 768, "Na": 98, "Da": 768, "kinetics_classes": 400}
    assert layout.video_grid == (8, 7, 7) and layout.audio_grid == (12, 101)
    fp16_bytes = (layout.views * layout.video_tokens * layout.video_dim + layout.audio_tokens * layout.audio_dim) * 2
    assert fp16_bytes == 453 * 1024
    assert paper.provenance()["video"]["parameters"] == 34_537_744
    full = ClipExtractor(replace(PROFILES["mvit-1x5"], device="cpu", random_init=True, full_tokens=True))
    layout = full.token_layout()
    assert (layout.views, layout.video_tokens, layout.audio_tokens) == (5, 393, 1214)


def test_construction_errors_come_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="mvit_v2_s-ae3be167.pth"):
        ClipExtractor(replace(PROFILES["paper"], device="cpu"))
    with pytest.raises(ValueError, match="cuda:99"):
        ClipExtractor(replace(SMALL, device="cuda:99"))
    with pytest.raises(ValueError, match="pooled grid"):
        ClipExtractor(replace(SMALL, tokens=replace(SMALL.tokens, audio_pooled_time=64)))  # 50 time columns


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_tokens_match_the_cpu_tokens(extractor, clips, precision):
    on_gpu = ClipExtractor(replace(SMALL, device="cuda", precision=precision))
    for key in (("red", 0), "silent", "portrait"):
        gpu, cpu = on_gpu.extract(clips[key]), extractor.extract(clips[key])
        assert gpu.has_audio == cpu.has_audio and gpu.audio_frames == cpu.audio_frames
        for a, b in ((gpu.video_tokens, cpu.video_tokens), (gpu.audio_tokens, cpu.audio_tokens),
                     (gpu.kinetics_logits, cpu.kinetics_logits)):
            a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            if np.linalg.norm(b) > 0:
                assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99, key


def test_decode_and_torch_threads_share_the_cores(monkeypatch):
    # common/threads.py: OMP_NUM_THREADS sets torch's, the decode threads get the rest (at most decode_threads)
    from common.threads import usable_cores

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        threads = ClipExtractor(replace(SMALL, decode_threads=64)).threads
        assert torch.get_num_threads() == 1 and threads.torch_threads == 1
        assert threads.helper_threads == max(1, usable_cores() - 1)
    finally:
        torch.set_num_threads(before)
