"""The built-in synthetic audio-visual zero-shot benchmark: real H.264 / AAC mp4 clips rendered from class names.

Each class is a real class name from a public benchmark (VGGSound, UCF-101 or ActivityNet) with its shipped 300-d
fastText class-name embedding (`data/avgzsl/class_embeddings`, AVCA-GZSL, MIT). A clip's picture and sound are a
fixed function of its class's embedding plus per-clip randomness, so a model that learns content -> embedding on
the seen classes can recognise the unseen ones: the zero-shot assumption holds by construction.

The rendering function (docs/synthetic.md records the measurements that shaped it): the top principal components of the
chosen classes' embeddings, standardised over those classes, set global statistics that random-init backbones
keep (background colour and brightness, object colour and size; pitch on a log scale, harmonic mix, beat rate,
a noise band). PCs 1, 3, 5, 7 reach the video only, PCs 2, 4, 6, 8 the audio only and PCs 9-10 both, so
fusion matters. Motion, shape, positions, phases and noise are per-clip nuisances. `_PARAMETERS` is the exact
mapping; docs/synthetic.md and the README.md written beside the clips describe it.

With `vectors` a word-vector source (raw GloVe vectors, say) instead of the table's, the same rule can render
"pretraining" classes named after Kinetics-400 labels: their vectors are scored on the benchmark classes'
principal components (the same centring and scale), so a pretraining class looks and sounds like the benchmark
classes whose names are near its name. `curate.pretrain` fits the random-init video backbone's Kinetics head on
them, which makes s_v, the Kinetics class the backbone predicts, mean something on the benchmark.

Output (byte-for-byte deterministic for a config): `clips/<class>/<class>_<k>.mp4`, `manifest.csv`
(`clip_id,path,class_name,split,has_audio,duration_s,...`), `classes.csv` (one row per class with its embedding
source, table index, principal-component scores and rendering parameters), `benchmark.json` and `README.md`;
with pretraining classes also `pretraining/` (`clips/`, `manifest.csv` with split `pretraining`, `classes.csv`).
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
import math
import multiprocessing
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from common.errors import InputError
from common.files import sha256_file, write_csv, write_json, write_text
from common.names import canonical_names
from common.processes import worker_pool
from common.progress import track
from curate import encode
from curate.config import SyntheticConfig, round_half_up
from features.manifest import ManifestRow, write_manifest
from text.class_embeddings import AVCA_TABLES, kinetics400_embeddings, load_embedding_source

__all__ = ["PRETRAINING_SPLIT", "SyntheticSummary", "make_synthetic", "class_parameters"]

logger = logging.getLogger(__name__)

# Bumped whenever the rendering function changes, so benchmarks made by different versions are told apart.
RENDER_VERSION = 1
_COMPONENTS = 10  # principal components that drive the rendering
_ROUND_DECIMALS = 6  # PC scores are rounded before rendering: classes.csv holds exactly what was rendered
_FLOAT_TOLERANCE = 1e-9
PRETRAINING_SPLIT = "pretraining"  # the split column of pretraining/manifest.csv


@dataclass(frozen=True)
class SyntheticSummary:
    """What `make_synthetic` wrote.

    Attributes:
        out_dir: the benchmark folder.
        manifest_path: `out_dir / "manifest.csv"`.
        seen_classes: seen class names, sorted.
        unseen_classes: unseen class names, sorted.
        n_clips: clips written.
        n_no_audio: clips without an audio track.
        n_portrait: portrait clips.
        short_clip_id: the clip shorter than one 16-frame view.
        elapsed_s: wall time of the generation.
        pretraining_manifest_path: `out_dir / "pretraining" / "manifest.csv"`, None without pretraining classes.
    """

    out_dir: Path
    manifest_path: Path
    seen_classes: tuple[str, ...]
    unseen_classes: tuple[str, ...]
    n_clips: int
    n_no_audio: int
    n_portrait: int
    short_clip_id: str
    elapsed_s: float
    pretraining_manifest_path: Path | None = None


@dataclass(frozen=True)
class _Parameter:
    """One rendering parameter: `low -> high` as the standardised PC score goes from -inf to +inf."""

    name: str
    component: int  # 1-based principal component
    modality: str  # "video" or "audio"
    low: float
    high: float
    log_scale: bool  # geometric instead of linear interpolation
    jitter: float  # per-clip noise: relative (log scale) or absolute (linear), uniform in [-jitter, jitter]
    meaning: str


# The class -> content mapping. u = Phi(z) in (0, 1), z the class's standardised score on `component`;
# value = low + (high - low) * u, or low * (high / low) ** u on a log scale. Only global statistics carry
# class information: random-init backbones keep them and lose geometry (docs/synthetic.md). Odd PCs up to 7
# reach the video only and even PCs up to 8 the audio only, so both modalities get strong components even
# when few classes span few components; PCs 9-10 reach both.
_PARAMETERS = (
    _Parameter("bg_cr", 1, "video", -0.15, 0.15, False, 0.015, "background chroma Cr (red - green), BT.601"),
    _Parameter("pitch_hz", 2, "audio", 110.0, 1760.0, True, 0.03, "fundamental of the tone (4 octaves)"),
    _Parameter("bg_cb", 3, "video", -0.15, 0.15, False, 0.015, "background chroma Cb (blue - yellow), BT.601"),
    _Parameter("harmonic_decay", 4, "audio", 0.4, 3.0, False, 0.1,
               "timbre: harmonic h has amplitude h^-decay (buzz -> pure tone)"),
    _Parameter("bg_luma", 5, "video", 0.2, 0.8, False, 0.03, "background luma Y in [0, 1]"),
    _Parameter("beat_hz", 6, "audio", 1.0, 8.0, True, 0.05, "rate of the tone's pulses"),
    _Parameter("object_hue_deg", 7, "video", 0.0, 300.0, False, 8.0, "hue of every moving object (HSV)"),
    _Parameter("noise_centre_hz", 8, "audio", 400.0, 6000.0, True, 0.05,
               "centre of a band of noise under the tone (Gaussian in log-frequency, sd 1/6 octave)"),
    _Parameter("object_size", 9, "video", 0.08, 0.28, False, 0.015,
               "object radius / short side of the frame (each object then x U(0.9, 1.1))"),
    _Parameter("noise_level", 9, "audio", 0.05, 0.6, False, 0.03, "noise-band amplitude / tone amplitude"),
    _Parameter("object_saturation", 10, "video", 0.25, 1.0, False, 0.05, "saturation of the objects (HSV)"),
    _Parameter("beat_duty", 10, "audio", 0.2, 0.85, False, 0.03, "share of each beat period the tone sounds"),
)

_SHAPES = ("disk", "square", "diamond")
_OTHER_AUDIO_FORMATS = ((44100, 2), (22050, 1))  # (sample rate, channels), alternating over the chosen clips
# Seed-sequence stream ids: each kind of draw has its own stream, so changing one never shifts another.
_STREAM_CLASSES, _STREAM_SPLIT, _STREAM_SPECIAL, _STREAM_CLIP = 0, 1, 2, 3
_STREAM_PRETRAINING_CLASSES, _STREAM_PRETRAINING_CLIP = 4, 5


@dataclass(frozen=True)
class _ClipJob:
    """Everything one worker needs to render and encode one clip (picklable)."""

    path: Path
    params: tuple[tuple[str, float], ...]
    seed: tuple[int, ...]
    n_frames: int
    height: int
    width: int
    fps: float
    sample_rate_hz: int  # 0 without audio
    channels: int  # 0 without audio


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _load_table(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shipped embedding table missing; restore data/ from the repository")
    with np.load(path, allow_pickle=False) as table:
        names, emb = list(canonical_names((str(n) for n in table["names"]), str(path))), table["emb"].astype(np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(names):
        raise InputError(f"{path}: expected emb (C, E) matching {len(names)} names, got {emb.shape}")
    return names, emb


@dataclass(frozen=True)
class _Components:
    """The chosen classes' top principal components: what scores any vector by the same rule.

    Shapes: mean (E,), axes (k, E) (signed), scale (k,): each component's score std over the chosen classes.
    """

    mean: np.ndarray
    axes: np.ndarray
    scale: np.ndarray
    explained: np.ndarray  # explained variance ratio of the components used

    def scores(self, emb: np.ndarray) -> np.ndarray:
        """Standardised, rounded scores; components beyond the data's rank score 0. Shapes: (N, E) -> (N, 10)."""
        k = self.axes.shape[0]
        padded = np.zeros((emb.shape[0], _COMPONENTS))
        scores = (emb - self.mean) @ self.axes.T / self.scale  # (N, E) -> (N, k)
        padded[:, :k] = np.round(scores, _ROUND_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
        return padded


def _principal_components(emb: np.ndarray) -> _Components:
    """The top principal components of the chosen classes' embeddings, scaled to unit score std over them.

    Components beyond the data's rank (fewer than `_COMPONENTS` + 1 classes) are left out (they score 0, the
    middle of every parameter range). The sign of each component is fixed so that its largest-magnitude loading
    is positive.

    Shapes:
        emb: (C, E).
    """
    mean = emb.mean(axis=0)  # (E,)
    centred = emb - mean  # (C, E)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(C, E), E)
    rank = int(np.sum(singular > 1e-8 * max(singular[0], _FLOAT_TOLERANCE)))
    k = min(_COMPONENTS, rank)
    vt = vt[:k]  # (k, E)
    axes = vt * np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])[:, None]
    scale = (centred @ axes.T).std(axis=0)  # (k,)
    return _Components(mean, axes, scale, singular[:k] ** 2 / np.sum(singular**2))


def class_parameters(scores: np.ndarray) -> list[dict[str, float]]:
    """Rendering parameters of each class from its standardised principal-component scores (`_PARAMETERS`).

    Args:
        scores: standardised PC scores, column j = PC j + 1.

    Returns:
        Per class, parameter name -> value.

    Shapes:
        scores: (C, 10).
    """
    if scores.ndim != 2 or scores.shape[1] != _COMPONENTS:
        raise ValueError(f"scores must be (C, {_COMPONENTS}), got {scores.shape}")
    result = []
    for row in scores:
        params = {}
        for p in _PARAMETERS:
            u = 0.5 * (1.0 + math.erf(row[p.component - 1] / math.sqrt(2.0)))  # standard normal CDF
            value = p.low * (p.high / p.low) ** u if p.log_scale else p.low + (p.high - p.low) * u
            params[p.name] = round(value, _ROUND_DECIMALS)
        result.append(params)
    return result


def _jittered(params: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    out = {}
    for p in _PARAMETERS:
        delta = rng.uniform(-p.jitter, p.jitter)
        out[p.name] = params[p.name] * (1.0 + delta) if p.log_scale else params[p.name] + delta
    return out


def _ycbcr_to_rgb(y: float, cb: float, cr: float) -> np.ndarray:
    # Full-range BT.601, the matrix H.264's yuv420p output is usually read back with.
    return np.clip([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 0.0, 1.0)


def _bounce(start: np.ndarray, low: float, high: float) -> np.ndarray:
    """Positions of a point moving linearly inside [low, high], reflected at the walls (a triangle wave)."""
    span = max(high - low, 1e-6)
    phase = np.mod(start - low, 2.0 * span)
    return low + np.where(phase > span, 2.0 * span - phase, phase)


def _render_video(p: dict[str, float], job: _ClipJob, rng: np.random.Generator) -> np.ndarray:
    """Background of the class's colour with a random gradient, 1-3 moving objects of the class's colour and size.

    Shapes:
        returns (T, H, W, 3) uint8.
    """
    t_count, height, width = job.n_frames, job.height, job.width
    short = min(height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W) each
    background = _ycbcr_to_rgb(p["bg_luma"], p["bg_cb"], p["bg_cr"]).astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = ((xs - width / 2) * math.cos(angle) + (ys - height / 2) * math.sin(angle)) / short  # (H, W)
    frames = np.empty((t_count, height, width, 3), dtype=np.float32)
    frames[:] = np.clip(background + rng.uniform(0.0, 0.12) * ramp[..., None], 0.0, 1.0)  # (H, W, 3) -> (T, ...)

    colour = np.array(colorsys.hsv_to_rgb((p["object_hue_deg"] % 360.0) / 360.0,
                                          float(np.clip(p["object_saturation"], 0.0, 1.0)), 0.9), dtype=np.float32)
    times = np.arange(t_count, dtype=np.float64) / job.fps  # (T,)
    direction = rng.integers(0, 8) * math.pi / 4  # one motion direction per clip, one of 8
    for _ in range(int(rng.integers(1, 4))):
        radius = max(p["object_size"], 0.02) * short * rng.uniform(0.9, 1.1)
        speed = rng.uniform(0.1, 0.6) * short  # pixels per second
        x = _bounce(rng.uniform(radius, width - radius) + speed * math.cos(direction) * times, radius, width - radius)
        y = _bounce(rng.uniform(radius, height - radius) + speed * math.sin(direction) * times, radius,
                    height - radius)
        dx = np.abs(xs[None] - x.astype(np.float32)[:, None, None])  # (T, H, W)
        dy = np.abs(ys[None] - y.astype(np.float32)[:, None, None])  # (T, H, W)
        shape = _SHAPES[int(rng.integers(0, len(_SHAPES)))]
        if shape == "disk":
            distance = np.sqrt(dx * dx + dy * dy) - radius
        elif shape == "square":  # the half side that gives the disk's area
            distance = np.maximum(dx, dy) - radius * math.sqrt(math.pi) / 2
        else:
            distance = dx + dy - radius * math.sqrt(math.pi / 2)
        alpha = np.clip(0.5 - distance, 0.0, 1.0)[..., None]  # anti-aliased edge, (T, H, W, 1)
        blend = colour - frames
        blend *= alpha
        frames += blend
    frames *= 255.0
    # Sensor noise on the luma, uniform in +-4 levels (integer draws are several times faster than normal ones).
    frames += rng.integers(-4, 5, size=(t_count, height, width, 1), dtype=np.int8)  # (T, H, W, 1) over RGB
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _render_audio(p: dict[str, float], job: _ClipJob, rng: np.random.Generator) -> np.ndarray:
    """A pulsing harmonic tone (class pitch, timbre, beat rate, duty) over a band of noise (class centre, level).

    Stereo clips pan the same signal, so the mean of the channels is the mono signal.

    Shapes:
        returns (C, S) float32 in [-1, 1].
    """
    rate = job.sample_rate_hz
    n_samples = int(round(job.n_frames / job.fps * rate))
    t = np.arange(n_samples, dtype=np.float64) / rate  # (S,)
    f0 = p["pitch_hz"]
    harmonics = np.arange(1, int(min(7000.0, 0.45 * rate) // f0) + 1)  # below the Nyquist of 16 kHz audio
    amplitudes = harmonics.astype(np.float64) ** -max(p["harmonic_decay"], 0.1)
    phases = rng.uniform(0.0, 2.0 * math.pi, size=harmonics.size)
    tone = np.zeros(n_samples)
    for h, a, phi in zip(harmonics, amplitudes, phases, strict=True):
        tone += a * np.sin(2.0 * math.pi * h * f0 * t + phi)
    tone /= np.max(np.abs(tone)) + 1e-9

    # Trapezoid pulses: on for `beat_duty` of each period, 10 ms ramps, a quiet floor between pulses.
    beat_phase = np.mod(p["beat_hz"] * t + rng.uniform(0.0, 1.0), 1.0)  # (S,)
    period_s, ramp_s, duty = 1.0 / p["beat_hz"], 0.01, float(np.clip(p["beat_duty"], 0.05, 0.95))
    on = np.clip(np.minimum(beat_phase, duty - beat_phase) * period_s / ramp_s, 0.0, 1.0)
    envelope = 0.1 + 0.9 * on

    # Band of noise: white noise shaped in the frequency domain by a Gaussian in log-frequency (sd 1/6 octave).
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, 1.0 / rate)
    octaves = np.log2(np.maximum(freqs, 1.0) / p["noise_centre_hz"])
    band = np.fft.irfft(spectrum * np.exp(-0.5 * (octaves / (1.0 / 6.0)) ** 2), n=n_samples)
    band /= np.sqrt(np.mean(band**2)) * 3.0 + 1e-9  # roughly unit peak

    signal = tone * envelope + max(p["noise_level"], 0.0) * band
    signal *= rng.uniform(0.3, 0.6) / (np.max(np.abs(signal)) + 1e-9)
    signal += rng.normal(0.0, 0.002, size=n_samples)  # a noise floor, as in any recording
    if job.channels == 2:
        pan = rng.uniform(-0.3, 0.3)
        signal = np.stack([signal * (1.0 + pan), signal * (1.0 - pan)])  # (S,) -> (2, S); mean = signal
    else:
        signal = signal[None]  # (S,) -> (1, S)
    # Quantise to 16-bit levels: float rounding differences between machines then almost never reach the
    # encoder, which keeps the files identical across machines.
    return (np.clip(np.rint(signal * 32768.0), -32768, 32767) / 32768.0).astype(np.float32)


def _render_clip(job: _ClipJob) -> Path:
    rng = np.random.default_rng(list(job.seed))
    params = _jittered(dict(job.params), rng)
    video = _render_video(params, job, rng)
    if job.channels:
        encode.write_mp4(job.path, video, job.fps, _render_audio(params, job, rng), job.sample_rate_hz)
    else:
        encode.write_mp4(job.path, video, job.fps)  # no audio stream at all
    return job.path


def _special_counts(fraction: float, n: int) -> int:
    return max(1, round_half_up(fraction * n)) if fraction > 0 else 0


def _run_jobs(jobs: list[_ClipJob], workers: int, progress: bool) -> Iterator[Path]:
    bar = dict(total=len(jobs), description="make-synthetic", unit="clips", enabled=progress)
    if workers == 1:
        yield from track(map(_render_clip, jobs), **bar)
        return
    # Spawned workers: no inherited state (threads, locks) from the parent; results are deterministic
    # because every clip carries its own seed. They end with the command (Ctrl-C, SIGTERM, a kill): worker_pool.
    with worker_pool(workers, multiprocessing.get_context("spawn")) as pool:
        yield from track(pool.map(_render_clip, jobs, chunksize=4), **bar)


def _readme(config: SyntheticConfig, n_seen: int, n_unseen: int, n_clips: int, short_clip_id: str) -> str:
    rows = "\n".join(
        f"| `{p.name}` | PC{p.component} | {p.modality} | {p.low:g} -> {p.high:g}{', log' if p.log_scale else ''} | "
        + (f"±{p.jitter * 100:g}%" if p.log_scale else f"±{p.jitter:g}") + f" | {p.meaning} |"
        for p in _PARAMETERS
    )
    return f"""# Synthetic audio-visual zero-shot benchmark

Made by `python cli.py make-synthetic` (render version {RENDER_VERSION}), seed {config.seed}: {n_clips} clips of
{n_seen} seen and {n_unseen} unseen classes drawn from the `{config.embedding_table}` class-name embeddings
(`avca:{config.embedding_table}`: AVCA-GZSL's 300-d fastText embeddings, MIT / CC BY-SA 3.0, see the
toolkit's data/README.md). The exact configuration is in `benchmark.json`.

## Files
- `manifest.csv`: `clip_id,path,class_name,split,has_audio,duration_s,width_px,height_px,fps,sample_rate_hz,
  audio_channels`; `split` is `seen` or `unseen`; `path` is relative to this folder; `has_audio` is 0 or 1.
- `classes.csv`: `name,split,embedding_source,embedding_index` (row of the table), the standardised
  principal-component scores `pc1..pc10` and the rendering parameters below.
- `clips/<class>/<class>_<k>.mp4`: H.264 (yuv420p) video and, when `has_audio` is 1, AAC audio.

## How content follows from the class name
1. Take the embeddings of the chosen classes (seen and unseen), centre them, and compute their top 10
   principal components (SVD; each component's sign makes its largest-magnitude loading positive). Each
   class's score on each component is divided by that component's standard deviation over the classes and
   rounded to 6 decimals (`pc1..pc10` in classes.csv). Components beyond the data's rank score 0.
2. u = Phi(score) (standard normal CDF) maps every score into (0, 1); each parameter is `low + (high - low) * u`
   (linear) or `low * (high / low) ** u` (log), rounded to 6 decimals:

| parameter | from | modality | range | per-clip jitter | meaning |
|---|---|---|---|---|---|
{rows}

PCs 1, 3, 5, 7 reach the video only, 2, 4, 6, 8 the audio only, 9-10 both: a model needs both modalities
to see all 10 components. Clips without audio keep only the video part.
3. Per clip (seeded by the seed, the class's table index and the clip number): the jitter above; video: a
   background gradient of random direction and strength, 1-3 objects (disk, square or diamond, equal areas)
   moving in one of 8 directions at 0.1-0.6 short sides per second and bouncing off the borders, sensor
   noise; audio: harmonic phases, beat phase, gain 0.3-0.6 of full scale, a noise floor, stereo panning.

## Special clips
- `{short_clip_id}` lasts {config.short_clip_seconds:g} s, shorter than one 16-frame view (64 frames at 30 fps).
- About {config.no_audio_fraction:.0%} of the clips have no audio track (`has_audio` 0), about
  {config.portrait_fraction:.0%} are portrait ({config.frame_height_px}x{config.frame_width_px}), and about
  {config.other_audio_fraction:.0%} of the clips with audio are 44.1 kHz stereo or 22.05 kHz mono instead of
  {config.sample_rate_hz} Hz mono. Durations are `seconds x U(0.75, 1.25)`, a whole number of frames.
"""


def make_synthetic(config: SyntheticConfig, progress: bool = False) -> SyntheticSummary:
    """Render the synthetic benchmark of `config` into `config.out_dir`.

    Args:
        config: what to generate.
        progress: show the progress on stderr (`common.progress`).

    Returns:
        A summary of what was written.

    Raises:
        FileExistsError: `out_dir` exists and is not empty.
        FileNotFoundError: the shipped embedding table is missing.
        ValueError: the embedding table has fewer classes than asked for.
    """
    start = time.perf_counter()
    out_dir = Path(config.out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder; choose a new output folder")
    table = AVCA_TABLES[config.embedding_table].path
    names, table_emb = _load_table(table)
    source = None if config.vectors == "table" else load_embedding_source(config.vectors)
    candidates = [i for i, name in enumerate(names) if source is None or source.can_embed(name)]
    if config.classes > len(candidates):
        raise InputError(f"{table}: {len(candidates)} classes {config.vectors} can embed, fewer than the "
                         f"{config.classes} asked for; ask for fewer classes")

    # Deterministic draws, each from its own seed stream.
    drawn = np.random.default_rng([config.seed, _STREAM_CLASSES]).choice(len(candidates), config.classes,
                                                                         replace=False)
    chosen = sorted((candidates[j] for j in drawn.tolist()), key=lambda i: names[i])  # name order, as all_class.txt
    n_unseen = round_half_up(config.unseen_fraction * config.classes)
    unseen_pos = set(np.random.default_rng([config.seed, _STREAM_SPLIT]).choice(config.classes, n_unseen,
                                                                                 replace=False).tolist())
    emb = table_emb[chosen] if source is None else source.embed([names[i] for i in chosen]).astype(np.float64)
    components = _principal_components(emb)
    scores, explained = components.scores(emb), components.explained
    params = class_parameters(scores)
    embedding_source = f"avca:{config.embedding_table}" if source is None else config.vectors

    # Clips in (class, k) order; special roles from independent permutations.
    n_clips = config.classes * config.clips_per_class
    special = np.random.default_rng([config.seed, _STREAM_SPECIAL])
    short_clip = int(special.integers(0, n_clips))
    no_audio = set(special.permutation([i for i in range(n_clips) if i != short_clip])
                   [:_special_counts(config.no_audio_fraction, n_clips)].tolist())
    portrait = set(special.permutation(n_clips)[:_special_counts(config.portrait_fraction, n_clips)].tolist())
    with_audio = [i for i in range(n_clips) if i not in no_audio]
    n_other_audio = round_half_up(config.other_audio_fraction * len(with_audio))
    other_audio = special.permutation(with_audio)[:n_other_audio].tolist()
    audio_format = {clip: _OTHER_AUDIO_FORMATS[j % len(_OTHER_AUDIO_FORMATS)] for j, clip in enumerate(other_audio)}
    durations_s = config.seconds * special.uniform(0.75, 1.25, size=n_clips)
    durations_s[short_clip] = config.short_clip_seconds

    jobs, manifest, classes_rows = [], [], []
    for c, table_index in enumerate(chosen):
        name, slug = names[table_index], _slug(names[table_index])
        split = "unseen" if c in unseen_pos else "seen"
        classes_rows.append([name, split, embedding_source, table_index]
                            + [f"{s:.6f}" for s in scores[c]] + [f"{params[c][p.name]:.6f}" for p in _PARAMETERS])
        for k in range(config.clips_per_class):
            i = c * config.clips_per_class + k
            rel = f"clips/{slug}/{slug}_{k:03d}.mp4"
            n_frames = max(2, round(durations_s[i] * config.fps))
            width, height = config.frame_width_px, config.frame_height_px
            if i in portrait:
                width, height = height, width
            rate, channels = (0, 0) if i in no_audio else audio_format.get(i, (config.sample_rate_hz, 1))
            jobs.append(_ClipJob(out_dir / rel, tuple(params[c].items()), (config.seed, _STREAM_CLIP, table_index, k),
                                 n_frames, height, width, config.fps, rate, channels))
            manifest.append(ManifestRow(rel[:-len(".mp4")], out_dir / rel, name, split, has_audio=channels > 0,
                                        duration_s=n_frames / config.fps, width_px=width, height_px=height,
                                        fps=float(config.fps), sample_rate_hz=rate, audio_channels=channels))

    pretraining = _pretraining(config, source, components, {names[i].casefold() for i in chosen}, out_dir)
    for job in jobs + pretraining.jobs:
        job.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in _run_jobs(jobs + pretraining.jobs, config.workers, progress):
        pass

    header = ["name", "split", "embedding_source", "embedding_index"]
    header += [f"pc{j + 1}" for j in range(_COMPONENTS)] + [p.name for p in _PARAMETERS]
    write_csv(out_dir / "classes.csv", header, classes_rows)
    pretraining_manifest = None
    if pretraining.jobs:
        write_csv(out_dir / "pretraining" / "classes.csv", header, pretraining.classes_rows)
        pretraining_manifest = write_manifest(out_dir / "pretraining" / "manifest.csv", pretraining.manifest,
                                              whole_files=True)
    seen = tuple(row[0] for row in classes_rows if row[1] == "seen")
    unseen = tuple(row[0] for row in classes_rows if row[1] == "unseen")
    short_clip_id = manifest[short_clip].clip_id
    record = {
        "render_version": RENDER_VERSION,
        # out_dir is left out: the same benchmark written elsewhere must be byte-identical.
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("out_dir", "workers")},
        "embedding_table": {"source": f"avca:{config.embedding_table}",
                            "file": f"data/avgzsl/class_embeddings/{table.name}",
                            "sha256": sha256_file(table)},
        **({} if source is None else {"vectors": source.provenance()}),
        **({"pretraining_classes": [row[0] for row in pretraining.classes_rows]} if pretraining.jobs else {}),
        "explained_variance_ratio": [round(float(v), 6) for v in explained],
        "parameters": [dataclasses.asdict(p) for p in _PARAMETERS],
        "seen_classes": list(seen),
        "unseen_classes": list(unseen),
        "short_clip_id": short_clip_id,
        "pyav_version": av.__version__,
    }
    write_json(out_dir / "benchmark.json", record)
    write_text(out_dir / "README.md", _readme(config, len(seen), len(unseen), n_clips, short_clip_id))
    # The manifest is written last: its presence means the benchmark is complete.
    write_manifest(out_dir / "manifest.csv", sorted(manifest, key=lambda row: row.clip_id), whole_files=True)
    summary = SyntheticSummary(out_dir, out_dir / "manifest.csv", tuple(sorted(seen)), tuple(sorted(unseen)),
                               n_clips, len(no_audio), len(portrait), short_clip_id, time.perf_counter() - start,
                               pretraining_manifest)
    logger.info("wrote %d clips (%d seen / %d unseen classes) and %d pretraining clips to %s in %.1f s", n_clips,
                len(seen), len(unseen), len(pretraining.jobs), out_dir, summary.elapsed_s)
    return summary


@dataclass(frozen=True)
class _Pretraining:
    """The pretraining classes' clips to render, their manifest rows and classes.csv rows."""

    jobs: list[_ClipJob]
    manifest: list[ManifestRow]
    classes_rows: list[list]


def _pretraining(config: SyntheticConfig, source, components: _Components, benchmark_names: set[str],
                 out_dir: Path) -> _Pretraining:
    """Video-only clips of Kinetics-400 labels, scored on the benchmark classes' components (the same rule).

    A label spelled like a benchmark class is left out: the backbone would otherwise have seen that class.
    """
    if not config.pretraining_classes:
        return _Pretraining([], [], [])
    labels, label_emb = kinetics400_embeddings(source)
    candidates = [k for k, label in enumerate(labels) if label.casefold() not in benchmark_names]
    if config.pretraining_classes > len(candidates):
        raise InputError(f"pretraining_classes {config.pretraining_classes}: only {len(candidates)} Kinetics-400 "
                         "labels differ from the benchmark's names; ask for fewer")
    drawn = np.random.default_rng([config.seed, _STREAM_PRETRAINING_CLASSES]).choice(
        len(candidates), config.pretraining_classes, replace=False)
    kinetics_indices = sorted(candidates[j] for j in drawn.tolist())
    scores = components.scores(label_emb[kinetics_indices].astype(np.float64))
    params = class_parameters(scores)
    durations = np.random.default_rng([config.seed, _STREAM_PRETRAINING_CLIP]).uniform(
        0.75, 1.25, size=(len(kinetics_indices), config.pretraining_clips_per_class)) * config.seconds
    jobs, manifest, classes_rows = [], [], []
    for c, kinetics_index in enumerate(kinetics_indices):
        name, slug = labels[kinetics_index], _slug(labels[kinetics_index])
        classes_rows.append([name, PRETRAINING_SPLIT, config.vectors, kinetics_index]
                            + [f"{v:.6f}" for v in scores[c]] + [f"{params[c][p.name]:.6f}" for p in _PARAMETERS])
        for k in range(config.pretraining_clips_per_class):
            rel = f"clips/{slug}/{slug}_{k:03d}.mp4"
            path = out_dir / "pretraining" / rel
            n_frames = max(2, round(durations[c, k] * config.fps))
            jobs.append(_ClipJob(path, tuple(params[c].items()),
                                 (config.seed, _STREAM_PRETRAINING_CLIP, kinetics_index, k), n_frames,
                                 config.frame_height_px, config.frame_width_px, config.fps, 0, 0))
            manifest.append(ManifestRow(rel[:-len(".mp4")], path, name, PRETRAINING_SPLIT, has_audio=False,
                                        duration_s=n_frames / config.fps, width_px=config.frame_width_px,
                                        height_px=config.frame_height_px, fps=float(config.fps), sample_rate_hz=0,
                                        audio_channels=0))
    return _Pretraining(jobs, sorted(manifest, key=lambda row: row.clip_id), classes_rows)
