"""The built-in benchmark's "pretrained" video classifier: a Kinetics head fitted on the random-init backbone.

The paper's SE target phi(s_v) + phi(s_t) and its decision rule ||f(x) - phi(s_v(x)) - phi(c)|| need s_v, the
Kinetics-400 class the pretrained video backbone predicts, to say something about the clip. A random-init
backbone's own head predicts noise, so on the built-in benchmark that term only adds noise. Here the frozen
random-init backbone stays as it is and only its classifier is fitted: a multinomial logistic regression of the
CLS token of every view on the pretraining clips of `curate.synthetic` (Kinetics-400 labels rendered from their
name vectors by the benchmark's rule). Labels without pretraining clips get a logit far below any fitted one, so
s_v is always a pretraining class. The head is written as the state dict of the backbone's `head` module
(`kinetics_head.safetensors`), which extraction loads (`extract.mvit.build_mvit`) so that the store's Kinetics
logits come from it; `kinetics_head.json` records what it was fitted on and its accuracy on held-out clips.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from common.errors import InputError
from common.files import json_text, sha256_file, write_texts
from extract.config import ExtractConfig
from extract.mvit import KINETICS400_CATEGORIES
from features.manifest import read_manifest

__all__ = ["HEAD_FILE", "KineticsHead", "fit_kinetics_head", "held_out_accuracy", "reusable_head"]

logger = logging.getLogger(__name__)

HEAD_FILE = "kinetics_head.safetensors"
_RECORD_FILE = "kinetics_head.json"
_ABSENT_LOGIT = -1.0e4  # the bias of a label without pretraining clips: never the argmax, finite in float32
_L2 = 1e-3  # weight decay of the logistic regression, on standardised features
_ITERATIONS = 200


@dataclass(frozen=True)
class KineticsHead:
    """What `fit_kinetics_head` wrote.

    Attributes:
        path: the head's state dict (`1.weight` (400, D), `1.bias` (400,): the backbone's `head` Sequential).
        classes: the Kinetics-400 labels it can predict (those with pretraining clips).
        held_out_accuracy: accuracy (fraction) on the last clip of every class, from a fit without those clips.
        train_accuracy: accuracy of the final head on all the clips it was fitted on.
    """

    path: Path
    classes: tuple[str, ...]
    held_out_accuracy: float
    train_accuracy: float


def _cls_features(manifest: Path, extract: ExtractConfig, progress: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CLS token of every view of every pretraining clip, its Kinetics index and its clip number within the class.

    Shapes: -> features (N * V, D) float32, labels (N * V,), clip numbers (N * V,).
    """
    from tqdm import tqdm

    from extract.pipeline import ClipExtractor

    rows = read_manifest(manifest)
    index = {name: k for k, name in enumerate(KINETICS400_CATEGORIES)}
    unknown = sorted({row.class_name for row in rows} - set(index))
    if unknown:
        raise InputError(f"{manifest}: class names that are not Kinetics-400 labels: {unknown[:3]}")
    extractor = ClipExtractor(extract)
    features, labels, numbers, seen = [], [], [], {}
    try:
        clips = extractor.extract_many([row.path for row in rows])
        for row, (path, result) in tqdm(zip(rows, clips, strict=True), total=len(rows), desc="pretraining clips",
                                        unit="clip", disable=not progress):
            if isinstance(result, Exception):
                raise InputError(f"{path}: pretraining clip could not be extracted: {result}")
            cls = result.video_tokens[:, 0].astype(np.float32)  # (V, Nv, D) -> (V, D)
            features.append(cls)
            labels += [index[row.class_name]] * len(cls)
            numbers += [seen.setdefault(row.class_name, 0)] * len(cls)
            seen[row.class_name] += 1
    finally:
        extractor.close()
    return np.concatenate(features), np.asarray(labels), np.asarray(numbers)


def _fit(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression over the 400 labels (absent ones pinned far below), on raw CLS tokens.

    Features are standardised for the fit and the scaling is folded back into the weights, so the head reads
    the CLS token as the backbone gives it.

    Shapes: features (N, D), labels (N,) -> weight (400, D), bias (400,).
    """
    x = torch.from_numpy(features).double()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    z = (x - mean) / std
    present = torch.from_numpy(np.unique(labels))
    target = torch.searchsorted(present, torch.from_numpy(labels))
    generator = torch.Generator().manual_seed(seed)
    weight = (0.01 * torch.randn(len(present), x.shape[1], generator=generator, dtype=torch.float64)).requires_grad_()
    bias = torch.zeros(len(present), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight.T + bias, target) + _L2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    full_weight = torch.zeros(len(KINETICS400_CATEGORIES), x.shape[1], dtype=torch.float64)
    full_bias = torch.full((len(KINETICS400_CATEGORIES),), _ABSENT_LOGIT, dtype=torch.float64)
    with torch.no_grad():
        full_weight[present] = weight / std  # (x - mean) / std @ W.T = x @ (W / std).T - mean @ (W / std).T
        full_bias[present] = bias - (weight / std) @ mean
    return full_weight.float(), full_bias.float()


def _accuracy(weight: torch.Tensor, bias: torch.Tensor, features: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy over views (each view's logits reach the store)."""
    logits = torch.from_numpy(features) @ weight.T + bias
    return float((logits.argmax(dim=1).numpy() == labels).mean())


def held_out_accuracy(features: np.ndarray, labels: np.ndarray, numbers: np.ndarray, seed: int) -> float:
    """Accuracy on the views of every class's last clip, of a head fitted without them."""
    last = numbers == np.array([numbers[labels == label].max() for label in labels])
    weight, bias = _fit(features[~last], labels[~last], seed)
    return _accuracy(weight, bias, features[last], labels[last])


def reusable_head(manifest: Path, extract: ExtractConfig, out_dir: Path, seed: int = 0) -> KineticsHead | None:
    """The head `fit_kinetics_head` wrote in `out_dir` from these very clips, config and seed; None if there is
    none, or it was fitted otherwise, or its file changed since."""
    record_path, path = Path(out_dir) / _RECORD_FILE, Path(out_dir) / HEAD_FILE
    if not record_path.is_file() or not path.is_file():
        return None
    record = json.loads(record_path.read_text(encoding="utf-8"))
    if (record.get("manifest_sha256") != sha256_file(manifest) or record.get("extract") != extract.to_dict()
            or record.get("seed") != seed or record.get("head_sha256") != sha256_file(path)):
        return None
    return KineticsHead(path, tuple(record["classes"]), record["held_out_accuracy"], record["train_accuracy"])


def fit_kinetics_head(manifest: Path, extract: ExtractConfig, out_dir: Path, seed: int = 0,
                      progress: bool = False) -> KineticsHead:
    """Fit the Kinetics head of `extract`'s random-init video backbone on the pretraining clips of `manifest`.

    Args:
        manifest: `pretraining/manifest.csv` of a synthetic benchmark (class names are Kinetics-400 labels).
        extract: the extraction config whose video backbone the head is for (random-init).
        out_dir: where `kinetics_head.safetensors` and `kinetics_head.json` go.
        seed: seeds the fit's initial weights.
        progress: show a progress bar.

    Raises:
        InputError: a backbone with weights (this head is for random-init ones), a class name that is not a
            Kinetics-400 label, a class with fewer than 2 clips, or a clip that cannot be extracted.
    """
    if not extract.random_init:
        raise InputError("a Kinetics head fitted on synthetic pretraining clips is for random-init backbones only; "
                         "a backbone with weights has its own")
    started = time.perf_counter()
    features, labels, numbers = _cls_features(Path(manifest), extract, progress)
    fewest = min(int(numbers[labels == label].max()) + 1 for label in np.unique(labels))
    if fewest < 2:
        raise InputError(f"{manifest}: a pretraining class with {fewest} clip; the head's held-out accuracy needs "
                         "at least 2 clips per class")
    held_out = held_out_accuracy(features, labels, numbers, seed)
    weight, bias = _fit(features, labels, seed)
    train = _accuracy(weight, bias, features, labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / HEAD_FILE
    save_file({"1.weight": weight.contiguous(), "1.bias": bias.contiguous()}, str(path))
    classes = tuple(KINETICS400_CATEGORIES[k] for k in np.unique(labels))
    record = {"manifest": str(manifest), "manifest_sha256": sha256_file(manifest), "seed": seed,
              "extract": extract.to_dict(), "classes": list(classes), "views": int(len(labels)),
              "held_out_accuracy": held_out, "train_accuracy": train,
              "head_sha256": sha256_file(path), "seconds": round(time.perf_counter() - started, 1)}
    write_texts({out_dir / _RECORD_FILE: json_text(record)})
    logger.info("Kinetics head on %d pretraining classes: held-out view accuracy %.1f%%, train %.1f%% -> %s",
                len(classes), 100 * held_out, 100 * train, path)
    return KineticsHead(path, classes, held_out, train)

