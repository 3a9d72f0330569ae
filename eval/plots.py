"""Figures of an evaluation: t-SNE of predicted and class embeddings (the paper's Fig. 6-7), per-class accuracy.

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here touches pyplot's global state
or needs a display.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["tsne_embedding", "plot_tsne", "plot_per_class_accuracy"]

logger = logging.getLogger(__name__)

_SEEN_COLOUR, _UNSEEN_COLOUR = "#4C72B0", "#DD8452"


def tsne_embedding(points: np.ndarray, perplexity: float = 30.0, seed: int = 0, iterations: int = 1000) -> np.ndarray:
    """2-D t-SNE of the rows of `points` (sklearn, PCA initialisation, deterministic for a seed).

    The perplexity is capped at (N - 1) / 3 so that small sets still embed (sklearn requires perplexity < N).

    Shapes:
        points (N, E) -> (N, 2)
    """
    from sklearn.manifold import TSNE

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 2:
        raise ValueError(f"t-SNE needs at least 2 points of shape (N, E), got {points.shape}")
    perplexity = min(perplexity, max((points.shape[0] - 1) / 3.0, 1.0))
    if points.shape[0] < 4:
        # sklearn's PCA initialisation needs more points than components; so few points need no projection
        return np.pad(points[:, :2], ((0, 0), (0, max(0, 2 - points.shape[1]))))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=iterations)
    return tsne.fit_transform(points)


def plot_tsne(
    path: Path,
    predicted: np.ndarray,
    labels: np.ndarray,
    class_embeddings: np.ndarray,
    class_names: Sequence[str],
    unseen: Sequence[bool] | None = None,
    max_points: int = 2000,
    perplexity: float = 30.0,
    iterations: int = 1000,
    seed: int = 0,
    title: str = "Predicted embeddings (dots) and class embeddings (stars)",
) -> Path:
    """Embed predicted embeddings and class embeddings jointly with t-SNE and draw them (PNG).

    Each clip is a dot coloured by its true class; each class embedding is a star of the same colour with
    its name (unseen classes' names in bold). Beyond `max_points` clips a deterministic sample is drawn.

    Args:
        path: the PNG to write.
        predicted: f(x) per clip (after subtracting phi(s_v(x)) when the run's rule is "kinetics").
        labels: row of `class_embeddings` per clip (-1: a clip of no listed class, drawn grey).
        class_embeddings: phi(c) per class.
        class_names: name per class.
        unseen: per class, True for an unseen class.

    Shapes:
        predicted (N, E), labels (N,), class_embeddings (C, E)
    """
    predicted, class_embeddings = np.asarray(predicted), np.asarray(class_embeddings)
    labels = np.asarray(labels, dtype=np.int64)
    if predicted.shape[0] != labels.shape[0] or predicted.shape[1] != class_embeddings.shape[1]:
        raise ValueError(f"shapes disagree: predicted {predicted.shape}, labels {labels.shape}, "
                         f"class embeddings {class_embeddings.shape}")
    if len(class_names) != class_embeddings.shape[0]:
        raise ValueError(f"{len(class_names)} class names for {class_embeddings.shape[0]} class embeddings")
    if predicted.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(predicted.shape[0], max_points, replace=False))
        predicted, labels = predicted[keep], labels[keep]
    xy = tsne_embedding(np.concatenate([predicted, class_embeddings]), perplexity=perplexity, seed=seed,
                        iterations=iterations)
    clips, classes = xy[: len(predicted)], xy[len(predicted):]  # (N + C, 2) -> (N, 2), (C, 2)
    unseen = np.zeros(len(class_names), dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool)

    figure = Figure(figsize=(9, 8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = _class_colours(len(class_names))
    known = labels >= 0
    axes.scatter(clips[~known, 0], clips[~known, 1], s=8, c="#BBBBBB", alpha=0.6, linewidths=0)
    axes.scatter(clips[known, 0], clips[known, 1], s=10, c=colours[labels[known]], alpha=0.7, linewidths=0)
    axes.scatter(classes[:, 0], classes[:, 1], s=160, c=colours, marker="*", edgecolors="black", linewidths=0.8)
    for (x, y), name, is_unseen in zip(classes, class_names, unseen, strict=True):
        axes.annotate(name, (x, y), fontsize=7, fontweight="bold" if is_unseen else "normal",
                      xytext=(3, 3), textcoords="offset points")
    axes.set_title(title + ("; unseen class names in bold" if unseen.any() else ""), fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    return _save(figure, path)


def plot_per_class_accuracy(
    path: Path,
    class_names: Sequence[str],
    accuracy_pct: Sequence[float],
    unseen: Sequence[bool] | None = None,
    title: str = "Per-class accuracy",
) -> Path:
    """Horizontal bars of per-class accuracy (percent), sorted, seen and unseen classes in two colours (PNG).

    Classes without test clips (NaN) are left out.
    """
    accuracy = np.asarray(accuracy_pct, dtype=np.float64)
    if len(class_names) != accuracy.size:
        raise ValueError(f"{len(class_names)} class names for {accuracy.size} accuracies")
    unseen = np.zeros(accuracy.size, dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool)
    keep = np.flatnonzero(~np.isnan(accuracy))
    order = keep[np.argsort(accuracy[keep], kind="stable")]
    figure = Figure(figsize=(7, max(2.5, 0.22 * len(order) + 1.2)), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(np.arange(len(order)), accuracy[order],
              color=[_UNSEEN_COLOUR if unseen[i] else _SEEN_COLOUR for i in order])
    axes.set_yticks(np.arange(len(order)), [class_names[i] for i in order], fontsize=7)
    axes.set_xlim(0, 100)
    axes.set_xlabel("accuracy (%)")
    axes.set_title(title + (" (orange: unseen, blue: seen)" if unseen.any() else ""), fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _class_colours(n: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n <= 20 else "turbo"]
    return np.array([cmap(i / max(n - 1, 1)) if n > 20 else cmap(i) for i in range(n)])  # (C, 4) RGBA


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    logger.debug("wrote %s", path)
    return path
