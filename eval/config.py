"""Configuration of the evaluation library: report tables and figures (defaults live here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.settings import Seed, check_fields, config_dict, setting

__all__ = ["ReportConfig", "PlotConfig"]


@dataclass(frozen=True)
class PlotConfig:
    """Figures written beside a report."""

    tsne: bool = setting(True)  # t-SNE of predicted and class embeddings (the paper's Fig. 6-7)
    tsne_max_points: int = setting(2000)  # clips drawn at most (a deterministic sample); t-SNE is O(N log N) on CPU
    tsne_perplexity: float = setting(30.0)  # capped at (points - 1) / 3 for small sets
    tsne_iterations: int = setting(1000)  # optimisation steps (sklearn's max_iter, at least 250)
    per_class_bars: bool = setting(True)  # per-class accuracy bar chart
    seed: Seed = setting(0)  # t-SNE initialisation and point sampling

    def __post_init__(self) -> None:
        check_fields(self)
        if self.tsne_max_points < 2:
            raise InputError(f"tsne_max_points must be >= 2, got {self.tsne_max_points}")
        if self.tsne_iterations < 250:
            raise InputError(f"tsne_iterations must be >= 250 (sklearn), got {self.tsne_iterations}")
        if self.tsne_perplexity <= 0:
            raise InputError(f"tsne_perplexity must be > 0, got {self.tsne_perplexity}")


@dataclass(frozen=True)
class ReportConfig:
    """`cli.py report`: compare evaluated runs side by side."""

    runs: tuple[Path, ...] = setting()  # folders with a metrics.json (zeroshot --out; a protocol --out stands for its
    # seeds)
    out: Path | None = setting(None, affects_result=False,
                               help="Folder for comparison.md and comparison.json (default: print the table only).")
    group_seeds: bool = setting(True, help="Pool runs that differ only in their seed into one row (mean ± std).")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.runs:
            raise InputError("give at least one run folder")

    def to_dict(self) -> dict:
        return {**config_dict(self), "runs": [str(r) for r in self.runs]}
