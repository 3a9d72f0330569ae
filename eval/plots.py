"""Figures of an evaluation: t-SNE of predicted and class embeddings (the paper's Fig. 6-7), per-class accuracy,
methods side by side.

Figures are drawn with matplotlib's object API on an Agg canvas, so nothing here touches pyplot's global state
or needs a display. Each figure has a `*_figure` builder (what tests read back: axes, legend entries, label
boxes) and a `plot_*` function that saves it.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["tsne_embedding", "tsne_figure", "plot_tsne", "per_class_figure", "plot_per_class_accuracy",
           "comparison_figure", "plot_comparison"]

logger = logging.getLogger(__name__)

_SEEN_COLOUR, _UNSEEN_COLOUR = "#4C72B0", "#DD8452"
# Classes beyond this many get no colour legend (it would be taller than the plot); their labels remain.
_MAX_LEGEND_CLASSES = 30
# Where a label may go around its anchor (points), nearest first; a label that fits nowhere is left out.
_LABEL_OFFSETS = [(0, 0)] + [(round(r * np.cos(a)), round(r * np.sin(a)))
                             for r in (12, 24, 36) for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]


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


def tsne_figure(
    predicted: np.ndarray,
    labels: np.ndarray,
    class_embeddings: np.ndarray,
    class_names: Sequence[str],
    unseen: Sequence[bool] | None = None,
    max_points: int = 2000,
    perplexity: float = 30.0,
    iterations: int = 1000,
    seed: int = 0,
    title: str = "t-SNE of predicted embeddings f(x) and class embeddings phi(c)",
) -> Figure:
    """Embed predicted embeddings and class embeddings jointly with t-SNE and draw them.

    Each clip is a dot coloured by its true class; each class embedding is a star (seen) or a diamond (unseen)
    of the same colour. Class names sit at the centroid of their clips (at the class embedding for a class
    without clips), moved aside where they would overlap; a name that fits nowhere is left to the legend.
    Beyond `max_points` clips a deterministic sample is drawn.

    Args:
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

    with_legend = len(class_names) <= _MAX_LEGEND_CLASSES
    figure = Figure(figsize=(12.5 if with_legend else 10, 8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours = _class_colours(len(class_names))
    known = labels >= 0
    axes.scatter(clips[~known, 0], clips[~known, 1], s=14, c="#BBBBBB", alpha=0.7, linewidths=0)
    axes.scatter(clips[known, 0], clips[known, 1], s=22, c=colours[labels[known]], alpha=0.85,
                 edgecolors="#333333", linewidths=0.3)
    for is_unseen, marker in ((False, "*"), (True, "D")):
        rows = np.flatnonzero(unseen == is_unseen)
        axes.scatter(classes[rows, 0], classes[rows, 1], s=170 if marker == "*" else 70, c=colours[rows],
                     marker=marker, edgecolors="black", linewidths=0.9, zorder=3)
    anchors = np.array([clips[labels == c].mean(axis=0) if (labels == c).any() else classes[c]
                        for c in range(len(class_names))])  # (C, 2)
    axes.set_xticks([])
    axes.set_yticks([])
    kinds = [Line2D([], [], linestyle="", marker="o", markersize=5, color="#777777", label="clip (colour: true class)"),
             Line2D([], [], linestyle="", marker="*", markersize=12, markerfacecolor="white", color="black",
                    label="seen class embedding"),
             Line2D([], [], linestyle="", marker="D", markersize=7, markerfacecolor="white", color="black",
                    label="unseen class embedding")]
    if not known.all():
        kinds.append(Line2D([], [], linestyle="", marker="o", markersize=5, color="#BBBBBB",
                            label="clip of no listed class"))
    first = axes.legend(handles=kinds, loc="upper left", fontsize=8, framealpha=0.85)
    if with_legend:
        axes.add_artist(first)
        figure.legend(handles=[Patch(color=colours[c], label=f"{name} (unseen)" if unseen[c] else name)
                               for c, name in enumerate(class_names)],
                      loc="outside right upper", fontsize=7, title="classes", title_fontsize=8)
    axes.set_title(title + "\nnames at the centroid of their class's clips; unseen names in bold", fontsize=10)
    place_labels(axes, anchors, class_names, bold=unseen)
    return figure


def plot_tsne(path: Path, *args, **kwargs) -> Path:
    """Write `tsne_figure(*args, **kwargs)` as a PNG."""
    return _save(tsne_figure(*args, **kwargs), path)


def place_labels(axes, anchors: np.ndarray, names: Sequence[str], bold: Sequence[bool]) -> list:
    """Write each name near its anchor where it overlaps no name placed before it, nor leaves the axes.

    Returns the annotations placed (names that fit nowhere are left out). Needs the figure's canvas.

    Shapes:
        anchors (C, 2) in data coordinates
    """
    figure = axes.get_figure()
    if figure.get_layout_engine() is not None:
        figure.get_layout_engine().execute(figure)  # place the axes first: label boxes are in display units
    renderer = figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    placed, boxes = [], []
    for (x, y), name, is_bold in zip(anchors, names, bold, strict=True):
        for dx, dy in _LABEL_OFFSETS:
            text = axes.annotate(
                name, (x, y), xytext=(dx, dy), textcoords="offset points", ha="center", va="center", fontsize=7,
                fontweight="bold" if is_bold else "normal", zorder=4,
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.75, "linewidth": 0},
                arrowprops=None if (dx, dy) == (0, 0) else {"arrowstyle": "-", "linewidth": 0.5, "color": "#555555"})
            box = text.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in boxes):
                placed.append(text)
                boxes.append(box)
                break
            text.remove()
    return placed


def per_class_figure(
    class_names: Sequence[str],
    accuracy_pct: Mapping[str, Sequence[float]],
    unseen: Sequence[bool] | None = None,
    title: str = "Per-class accuracy",
) -> Figure:
    """Horizontal bars of per-class accuracy (percent), one panel per measure, side by side (shared rows).

    Rows: unseen classes above seen ones, each part sorted by its last panel with a value. A bar of 0 is marked
    "0" so that an empty row reads as zero, not as missing; NaN (a class the measure does not cover, e.g. a
    seen class under ZSL) shows "n/a". Classes that are NaN in every panel are left out.

    Args:
        accuracy_pct: panel title -> accuracy per class (e.g. "GZSL, raw", "GZSL, calibrated").
    """
    panels = {name: np.asarray(values, dtype=np.float64) for name, values in accuracy_pct.items()}
    if not panels:
        raise ValueError("no accuracy to plot")
    for name, values in panels.items():
        if values.size != len(class_names):
            raise ValueError(f"{len(class_names)} class names for {values.size} accuracies ({name})")
    unseen = np.zeros(len(class_names), dtype=bool) if unseen is None else np.asarray(unseen, dtype=bool)
    stacked = np.stack(list(panels.values()))  # (P, C)
    keep = np.flatnonzero(~np.isnan(stacked).all(axis=0))
    # sort key per class: its value in the rightmost panel that covers it (ZSL covers no seen class)
    last = np.array([column[~np.isnan(column)][-1] if (~np.isnan(column)).any() else -1.0 for column in stacked.T])
    # matplotlib draws row 0 at the bottom: seen classes first, then unseen on top, each ascending
    order = keep[np.lexsort((last[keep], unseen[keep]))]
    figure = Figure(figsize=(3.2 + 2.6 * len(panels), max(2.8, 0.2 * len(order) + 1.6)), dpi=110,
                    layout="constrained")
    FigureCanvasAgg(figure)
    rows = np.arange(len(order))
    colours = [_UNSEEN_COLOUR if unseen[i] else _SEEN_COLOUR for i in order]
    first = None
    for index, (name, values) in enumerate(panels.items()):
        axes = figure.add_subplot(1, len(panels), index + 1, sharey=first)
        first = first or axes
        shown = values[order]
        axes.barh(rows, np.nan_to_num(shown, nan=0.0), color=colours)
        for row, value in zip(rows, shown, strict=True):
            if np.isnan(value) or value == 0:
                axes.text(1, row, "n/a" if np.isnan(value) else "0", va="center", fontsize=7,
                          color="#999999" if np.isnan(value) else "black")
        axes.set_xlim(0, 100)
        axes.set_xlabel("accuracy (%)")
        axes.set_title(name, fontsize=9)
        axes.grid(axis="x", linewidth=0.4, alpha=0.5)
        if index == 0:
            axes.set_yticks(rows, [class_names[i] for i in order], fontsize=7)
        else:
            axes.tick_params(labelleft=False)
    handles = [Patch(color=_UNSEEN_COLOUR, label="unseen class"), Patch(color=_SEEN_COLOUR, label="seen class")]
    figure.legend(handles=[h for h, present in zip(handles, (unseen[keep].any(), (~unseen[keep]).any()),
                                                    strict=True) if present],
                  loc="outside upper right", fontsize=8, ncols=2)
    figure.suptitle(title, fontsize=10)
    return figure


def plot_per_class_accuracy(path: Path, *args, **kwargs) -> Path:
    """Write `per_class_figure(*args, **kwargs)` as a PNG."""
    return _save(per_class_figure(*args, **kwargs), path)


def comparison_figure(
    values: Mapping[str, Mapping[str, Sequence[float]]],
    chance: Mapping[str, float],
    title: str,
) -> Figure:
    """Grouped bars: one group per metric, one bar per method (its mean over seeds), the seeds as dots on it, a
    whisker of ± one sample std, the value above it; a dashed line across each group at chance.

    Args:
        values: method -> metric title -> the seeds' values (percent; NaN where a seed has none).
        chance: metric title -> uniform guessing's value (percent); metrics without one get no line.
    """
    methods = list(values)
    metrics = list(dict.fromkeys(title for per_metric in values.values() for title in per_metric))
    if not methods or not metrics:
        raise ValueError("no values to plot")
    width = 0.8 / len(methods)
    figure = Figure(figsize=(max(6.5, 1.1 + len(metrics) * (0.35 + 0.42 * len(methods))), 4.8), dpi=110,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    from matplotlib import colormaps

    colours = [colormaps["tab10"](m % 10) for m in range(len(methods))]
    top = 0.0
    for m, method in enumerate(methods):
        for g, metric in enumerate(metrics):
            seeds = np.asarray(values[method].get(metric, ()), dtype=np.float64)
            seeds = seeds[~np.isnan(seeds)]
            if not seeds.size:
                continue
            x, mean = g - 0.4 + width * (m + 0.5), float(seeds.mean())
            std = float(seeds.std(ddof=1)) if seeds.size > 1 else 0.0
            whisker = [[min(std, mean)], [min(std, 100.0 - mean)]]  # inside the 0-100 an accuracy can take
            axes.bar(x, mean, width * 0.92, color=colours[m], label=method if g == 0 else None,
                     yerr=whisker if std else None, capsize=3, error_kw={"linewidth": 0.9})
            axes.scatter(np.full(seeds.size, x), seeds, s=9, color="black", zorder=3, linewidths=0)
            axes.text(x, max(mean + whisker[1][0], float(seeds.max())) + 1.5, f"{mean:.1f}", ha="center",
                      va="bottom", fontsize=7, rotation=90,
                      bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
            top = max(top, mean + whisker[1][0], float(seeds.max()))
    for g, metric in enumerate(metrics):
        if metric in chance:
            axes.hlines(chance[metric], g - 0.45, g + 0.45, colors="#C44E52", linestyles="--", linewidth=1.2,
                        label="chance" if not g or all(t not in chance for t in metrics[:g]) else None, zorder=4)
    axes.set_xticks(range(len(metrics)), [textwrap.fill(metric, 12) for metric in metrics])
    axes.set_xlim(-0.55, len(metrics) - 0.45)
    axes.set_ylim(0, min(100.0, max(top, *chance.values(), 1.0)) + 12)  # room for the values above the whiskers
    axes.set_yticks([tick for tick in axes.get_yticks() if tick <= 100])
    axes.set_ylabel("accuracy (%)")
    axes.grid(axis="y", linewidth=0.4, alpha=0.5)
    axes.set_axisbelow(True)
    figure.legend(*axes.get_legend_handles_labels(), loc="outside right upper", fontsize=8,
                  title="bar: mean over seeds\ndots: seeds; whisker: ± std", title_fontsize=7)
    axes.set_title(title, fontsize=10)
    return figure


def plot_comparison(path: Path, *args, **kwargs) -> Path:
    """Write `comparison_figure(*args, **kwargs)` as a PNG."""
    return _save(comparison_figure(*args, **kwargs), path)


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
