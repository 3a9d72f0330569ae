"""How learnable is zero-shot on the synthetic benchmark? Per-clip features -> class embedding, ZSL on unseen classes.

Renders a benchmark with `curate.synthetic.make_synthetic` (or reads one), computes per-clip features, then over
many random seen / unseen splits of its classes fits two linear heads on the seen classes and scores the unseen
clips against the unseen classes only (ZSL, mean per-class accuracy, as docs/eval.md defines it):
- `regression`: ridge from standardised features to the class embedding; nearest unseen embedding by cosine.
- `prototype`: ridge from class embedding to the class's mean feature; nearest predicted unseen prototype.
A control shuffles the embeddings among the seen classes (it must fall to chance).

Features (`--features`):
- `stats`: simple global statistics (RGB mean / percentiles, log-mel band means, beat-envelope spectrum).
- `backbones`: random-init torchvision `mvit_v2_s` (1 view of 16 frames at 224 px; CLS and mean token) and a
  random-init AST-shaped timm ViT-B on a 128-bin kaldi fbank (patch tokens mean-pooled over time per
  frequency row). This is what the real extractor keeps (docs/extract.md, "What is stored per clip"), minus pretrained
  weights.
- `pipeline`: the toolkit's own extractor, `extract.pipeline.ClipExtractor` with a profile of
  `extract.config.PROFILES` (default `cpu-small`); video tokens averaged over views, audio tokens flattened.

    python bench/synthetic_probe.py --features stats --seeds 0 1 2
    python bench/synthetic_probe.py --features backbones --seeds 0 --splits 40
    python bench/synthetic_probe.py --features pipeline --profile cpu-small --seeds 0

Prints one JSON line (versions, settings, per-seed and overall results).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.config import SyntheticConfig  # noqa: E402
from curate.synthetic import make_synthetic  # noqa: E402
from text.class_embeddings import AVCA_TABLES  # noqa: E402


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray | None, int]:
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return frames, None, 0
        rate = container.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1).mean(axis=0)  # (S,)
    return frames, audio, rate


def _mel_16k(audio: np.ndarray, rate: int):
    import torch
    import torchaudio

    wave = torchaudio.functional.resample(torch.from_numpy(audio.astype(np.float32)), rate, 16000)
    fbank = torchaudio.compliance.kaldi.fbank(wave[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                                              window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)
    return (fbank + 4.2677393) / (2 * 4.5689974)  # (S, 128), AST's normalisation


def _stats_features(frames: np.ndarray, audio: np.ndarray | None, rate: int) -> tuple[np.ndarray, np.ndarray]:
    pixels = frames.reshape(-1, 3).astype(np.float32) / 255.0
    video = np.concatenate([pixels.mean(0), np.percentile(pixels, [5, 50, 95], axis=0).ravel()])
    if audio is None:
        return video, np.full(128 // 4 + 12, np.nan)
    mel = _mel_16k(audio, rate).numpy()  # (S, 128)
    bands = mel.reshape(mel.shape[0], 32, 4).mean(axis=(0, 2))  # (32,)
    envelope = np.exp(mel).sum(axis=1)  # (S,) at 100 Hz
    envelope = envelope - envelope.mean()
    power = np.abs(np.fft.rfft(envelope, n=512)) ** 2
    freqs = np.fft.rfftfreq(512, 0.01)
    edges = np.geomspace(0.7, 12.0, 13)
    beat = np.log([power[(freqs >= lo) & (freqs < hi)].mean() + 1e-9 for lo, hi in zip(edges[:-1], edges[1:],
                                                                                        strict=True)])
    return video, np.concatenate([bands, beat])


class _Backbones:
    """Random-init video and audio backbones (seeded), features as the extractor would pool them."""

    def __init__(self) -> None:
        import timm
        import torch
        from torchvision.models.video import mvit_v2_s

        torch.manual_seed(0)
        self.torch = torch
        self.mvit = mvit_v2_s(weights=None).eval()
        self.ast = timm.models.vision_transformer.VisionTransformer(
            img_size=(128, 400), patch_size=16, in_chans=1, num_classes=0, embed_dim=768, depth=12, num_heads=12,
        ).eval()
        self._tokens = None
        self.mvit.norm.register_forward_hook(lambda _m, _i, out: setattr(self, "_tokens", out))

    def __call__(self, frames: np.ndarray, audio: np.ndarray | None, rate: int) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            index = np.linspace(0, frames.shape[0] - 1, 16).round().astype(int)
            clip = torch.from_numpy(frames[index]).permute(3, 0, 1, 2).float() / 255.0  # (T, H, W, 3) -> (3, T, H, W)
            clip = torch.nn.functional.interpolate(clip, size=(224, 224), mode="bilinear", align_corners=False)
            self.mvit(((clip - 0.45) / 0.225)[None])  # (1, 3, 16, 224, 224)
            tokens = self._tokens[0]  # (393, 768)
            video = torch.cat([tokens[0], tokens[1:].mean(0)]).numpy()
            if audio is None:
                return video, np.full(8 * 768, np.nan)
            mel = _mel_16k(audio, rate)[:400]  # (S, 128)
            mel = torch.nn.functional.pad(mel, (0, 0, 0, 400 - mel.shape[0])).T[None, None]  # (1, 1, 128, 400)
            grid = self.ast.forward_features(mel)[0, 1:].reshape(8, 25, 768)  # (F', T', D)
            return video, grid.mean(1).reshape(-1).numpy()  # time-pooled per frequency row


class _Pipeline:
    """The toolkit's extractor (random-init in the CPU profiles); per-clip features from its stored tokens."""

    def __init__(self, profile: str) -> None:
        from extract.config import PROFILES
        from extract.pipeline import ClipExtractor

        self.extractor = ClipExtractor(PROFILES[profile])

    def many(self, paths: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        video, audio = [], []
        for _, result in self.extractor.extract_many(paths):
            if isinstance(result, Exception):
                raise result
            tokens = result.video_tokens.astype(np.float32).mean(axis=0)  # (V, Nv, Dv) -> (Nv, Dv)
            video.append(tokens.reshape(-1))
            audio.append(result.audio_tokens.astype(np.float32).reshape(-1) if result.has_audio
                         else np.full(result.audio_tokens.size, np.nan))
        return video, audio


def _zsl(features: np.ndarray, labels: np.ndarray, emb: np.ndarray, seen: np.ndarray, unseen: np.ndarray,
         head: str, alpha: float) -> float:
    from sklearn.linear_model import Ridge

    train = np.isin(labels, seen)
    test = np.isin(labels, unseen)
    mean, std = np.nanmean(features[train], 0), np.nanstd(features[train], 0) + 1e-6
    x = (features - mean) / std
    x = np.nan_to_num(x)  # missing audio -> the training mean
    if head == "regression":
        model = Ridge(alpha=alpha).fit(x[train], emb[labels[train]])
        pred = model.predict(x[test])
        pred /= np.linalg.norm(pred, axis=1, keepdims=True)
        cand = emb[unseen] / np.linalg.norm(emb[unseen], axis=1, keepdims=True)
        choice = unseen[np.argmax(pred @ cand.T, axis=1)]
    else:
        means = np.stack([x[labels == c].mean(0) for c in seen])  # after nan_to_num: missing audio = mean
        model = Ridge(alpha=alpha).fit(emb[seen], means)
        protos = model.predict(emb[unseen])
        distance = ((x[test][:, None, :] - protos[None]) ** 2).sum(-1)
        choice = unseen[np.argmin(distance, axis=1)]
    truth = labels[test]
    return float(np.mean([np.mean(choice[truth == c] == c) for c in unseen]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", choices=["stats", "backbones", "pipeline"], default="stats")
    parser.add_argument("--profile", default="cpu-small", help="extract profile for --features pipeline")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--splits", type=int, default=40, help="random seen / unseen splits per benchmark")
    parser.add_argument("--unseen", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=None, help="keep benchmarks here (default: a temp dir)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    extractor = {"stats": lambda: _stats_features, "backbones": _Backbones,
                 "pipeline": lambda: _Pipeline(args.profile)}[args.features]()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="synthetic_probe_"))
    results, started = {}, time.perf_counter()
    for seed in args.seeds:
        out = work / f"seed{seed}"
        if not (out / "manifest.csv").is_file():
            make_synthetic(SyntheticConfig(out_dir=out, seed=seed, workers=args.workers))
        rows = [line.split(",") for line in (out / "manifest.csv").read_text().splitlines()[1:]]
        class_rows = [line.split(",") for line in (out / "classes.csv").read_text().splitlines()[1:]]
        names = [r[0] for r in class_rows]
        with np.load(AVCA_TABLES["vggsound"].path) as table:
            emb = table["emb"][[int(r[3]) for r in class_rows]].astype(np.float64)
        labels = np.array([names.index(r[2]) for r in rows])
        t0 = time.perf_counter()
        if isinstance(extractor, _Pipeline):
            video, audio = extractor.many([out / r[1] for r in rows])
        else:
            video, audio = zip(*(extractor(*_decode(out / r[1])) for r in rows), strict=True)
        feature_s = (time.perf_counter() - t0) / len(rows)
        sets = {"video": np.stack(video), "audio": np.stack(audio)}
        sets["both"] = np.concatenate([sets["video"], sets["audio"]], axis=1)
        split_rng = np.random.default_rng(1000 + seed)
        splits = [split_rng.permutation(len(names)) for _ in range(args.splits)]
        seed_result = {"feature_s_per_clip": round(feature_s, 3)}
        for name, x in sets.items():
            for head, alpha in (("regression", 10.0), ("prototype", 1.0)):
                accs = [_zsl(x, labels, emb, np.sort(p[args.unseen:]), np.sort(p[:args.unseen]), head, alpha)
                        for p in splits]
                seed_result[f"{name}_{head}"] = round(100 * float(np.mean(accs)), 1)
                if name == "both":
                    seed_result[f"{name}_{head}_share_3x_chance"] = round(
                        float(np.mean(np.array(accs) >= 3.0 / args.unseen)), 2)
        control_rng = np.random.default_rng(7)
        shuffled = emb.copy()
        accs = []
        for p in splits:
            seen, unseen = np.sort(p[args.unseen:]), np.sort(p[:args.unseen])
            shuffled[seen] = emb[control_rng.permutation(seen)]
            accs.append(_zsl(sets["both"], labels, shuffled, seen, unseen, "prototype", 1.0))
        seed_result["control_shuffled_prototype"] = round(100 * float(np.mean(accs)), 1)
        results[f"seed{seed}"] = seed_result
    keys = [k for k in next(iter(results.values())) if k != "feature_s_per_clip"]
    overall = {k: round(float(np.mean([r[k] for r in results.values()])), 2) for k in keys}
    print(json.dumps({
        "bench": "synthetic_probe", "device": f"cpu ({platform.processor() or platform.machine()})",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "pyav": av.__version__},
        "settings": {"features": args.features, "profile": args.profile if args.features == "pipeline" else None,
                     "seeds": args.seeds, "splits": args.splits, "unseen": args.unseen,
                     "config": "SyntheticConfig defaults (24 classes x 8 clips, ~4 s)",
                     "chance_zsl": round(100 / args.unseen, 1)},
        "results": results, "overall": overall, "elapsed_s": round(time.perf_counter() - started, 1),
    }))


if __name__ == "__main__":
    main()
