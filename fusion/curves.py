"""The training-curve figure of a run directory: loss parts and validation scores per epoch, from log.jsonl.

`train` writes `training_curves.png` beside `log.jsonl` (`TrainingCurves`); `training_curves_figure` is what
tests read back (axes, line labels).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.files import atomic_write
from eval.metrics import EvalResult, percent

__all__ = ["training_curves_figure", "write_training_curves", "TrainingCurves"]

# (log.jsonl key, legend label) of the loss panel; the parts are unweighted, `loss` is the weighted total
_LOSSES = (("loss", "total (weighted)"), ("loss_task", "TASK"), ("loss_se", "SE"), ("loss_mlm", "MLM"))
# (`EvalResult` field of the log's `val`, legend label) of the validation panel, drawn in percent
_SCORES = (("zsl", "ZSL"), ("gzsl_hm", "GZSL HM, raw"), ("calibrated_gzsl_hm", "GZSL HM, calibrated"),
           ("seen_accuracy", "seen accuracy"))


def training_curves_figure(log_lines: list[dict], title: str) -> Figure:
    """Two panels: the training losses per epoch, and the validation scores per epoch with the best epoch marked."""
    epochs = [line["epoch"] for line in log_lines]
    figure = Figure(figsize=(11, 4), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    losses, scores = figure.subplots(1, 2)
    for key, label in _LOSSES:
        values = [line.get(key) for line in log_lines]
        if any(v is not None for v in values):
            losses.plot(epochs, [float("nan") if v is None else v for v in values], marker=".", label=label)
    losses.set_xlabel("epoch")
    losses.set_ylabel("training loss (epoch mean)")
    losses.set_title("training losses", fontsize=10)
    losses.legend(fontsize=8)
    drawn = False
    results = [EvalResult.from_json(line.get("val", {})) for line in log_lines]
    for name, label in _SCORES:
        values = [percent(getattr(result, name)) for result in results]
        if any(v is not None for v in values):
            scores.plot(epochs, [float("nan") if v is None else v for v in values], marker=".", label=label)
            drawn = True
    best = log_lines[-1].get("best_epoch") if log_lines else None
    if best is not None:
        scores.axvline(best, color="black", linestyle="--", linewidth=0.8, label=f"best epoch ({best})")
    if drawn:
        scores.set_ylim(0, 100)
        scores.legend(fontsize=8)
    else:
        scores.text(0.5, 0.5, "no validation split: nothing selects an epoch", ha="center", va="center",
                    transform=scores.transAxes)
    scores.set_xlabel("epoch")
    scores.set_ylabel("validation score (%)")
    scores.set_title("validation (selects best.pt)", fontsize=10)
    figure.suptitle(title, fontsize=10)
    return figure


def write_training_curves(run_dir: Path) -> Path:
    """Draw `run_dir/log.jsonl` into `run_dir/training_curves.png`."""
    run_dir = Path(run_dir)
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines() if line]
    figure = training_curves_figure(lines, f"{run_dir.name}: {len(lines)} epoch(s)")
    return atomic_write(run_dir / "training_curves.png", lambda path: figure.savefig(path, format="png"))


class TrainingCurves:
    """The trainer's figure: redrawn after an epoch when `every_s` seconds have passed (a long run can be
    watched while it trains), and always when the run ends (`draw`)."""

    def __init__(self, run_dir: Path, every_s: float = 60.0) -> None:
        self.run_dir, self.every_s = Path(run_dir), every_s
        self._drawn = time.perf_counter()

    def after_epoch(self) -> None:
        if time.perf_counter() - self._drawn > self.every_s:
            self.draw()

    def draw(self) -> Path:
        self._drawn = time.perf_counter()
        return write_training_curves(self.run_dir)
