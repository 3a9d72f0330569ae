"""Report tables: one evaluated run as Markdown, and several runs side by side (mean +- std over seeds).

Every evaluation writes a `metrics.json` whose headline values are percentages (fractions x 100) under the keys
of `COLUMNS`, plus `label` (the row name), `group` (runs that differ only in their seed share it) and `seed`.
ZSL / GZSL values are read through `eval.metrics.EvalResult` (their one writer and reader); the MZSL groups and an
open vocabulary's top-k are written by the protocols and `zeroshot` under their own keys. Tables print two
decimals; a row that pools several seeds prints `mean ± std` (sample standard deviation, ddof = 1) and the number
of seeds. A row whose runs gave class vectors in AVCA-GZSL's order (`peer_text_order` in metrics.json) says so in a
column "Class vectors", shown when some row did (always in the benchmark's and the ablation's tables:
`class_vectors_cell` writes it for all of them). Chance per column (`chance_values`) and the caveat of tables on
random-init backbones or synthetic data (`data_caveats`, `caveat_lines`) live here too, so every table says them
alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import json_text, write_texts
from eval.config import ReportConfig
from eval.metrics import EvalResult, percent

__all__ = [
    "COLUMNS",
    "ComparisonRow",
    "ReportSummary",
    "load_metrics",
    "column_values",
    "comparison_rows",
    "comparison_markdown",
    "comparison_json",
    "class_vectors_cell",
    "chance_values",
    "data_caveats",
    "caveat_lines",
    "format_mean_std",
    "run_markdown",
    "group_key",
    "write_report",
]

logger = logging.getLogger(__name__)

# (metrics.json key, column title, is a percentage); the ZSL / GZSL keys are `EvalResult` fields. Only columns that
# some run reports are shown.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("zsl", "ZSL", True),
    ("gzsl_s", "S", True),
    ("gzsl_u", "U", True),
    ("gzsl_hm", "HM", True),
    ("calibrated_beta", "beta", False),
    ("calibrated_gzsl_s", "S (cal.)", True),
    ("calibrated_gzsl_u", "U (cal.)", True),
    ("calibrated_gzsl_hm", "HM (cal.)", True),
    ("mzsl_easy", "E", True),
    ("mzsl_medium", "M", True),
    ("mzsl_hard", "H", True),
    ("mzsl_avg_unweighted", "Avg (E+M+H)/3", True),  # the paper's Table 3
    ("mzsl_avg_class_weighted", "Avg, class-weighted", True),  # the paper's text: weighted by classes per group
    ("top1", "Top-1", True),
    ("topk", "Top-k", True),
)


@dataclass(frozen=True)
class ComparisonRow:
    """One row of a comparison: a run, or several seeds of one configuration.

    Attributes:
        label: row name.
        runs: the folders pooled into this row.
        seeds: their seeds (None where a run records none).
        values: column key -> the runs' values (percent, or beta), NaN where a run lacks the key.
        peer_text_order: the runs' class vectors were given in AVCA-GZSL's order, not by name.
    """

    label: str
    runs: tuple[str, ...]
    seeds: tuple[int | None, ...]
    values: dict[str, tuple[float, ...]]
    peer_text_order: bool = False

    def mean_std(self, key: str) -> tuple[float, float | None]:
        """Mean and sample std (None for one run) of a column over the runs that report it."""
        values = np.array([v for v in self.values.get(key, ()) if not math.isnan(v)])
        if values.size == 0:
            return math.nan, None
        return float(values.mean()), (float(values.std(ddof=1)) if values.size > 1 else None)

    def cell(self, key: str) -> str:
        """The table cell of a column: mean ± std, and "(k of n runs)" where only some runs report it, so that a
        mean over fewer runs than the row's "Seeds" never reads as one over all of them."""
        reported = sum(not math.isnan(v) for v in self.values.get(key, ()))
        text = format_mean_std(*self.mean_std(key))
        return text if reported in (0, len(self.runs)) else f"{text} ({reported} of {len(self.runs)} runs)"


@dataclass(frozen=True)
class ReportSummary:
    """What `write_report` produced."""

    markdown: str
    rows: tuple[ComparisonRow, ...]
    paths: tuple[Path, ...]


def load_metrics(folder: Path) -> dict:
    """Read `folder/metrics.json` (written by `zeroshot --out` or `protocol`).

    Raises:
        FileNotFoundError: no metrics.json there.
        ValueError: not a JSON object.
    """
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; evaluate the run first, writing its report to {folder} "
                                "(the zeroshot or protocol command)")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(metrics, dict):
        raise InputError(f"{path}: expected a JSON object")
    return metrics


def comparison_rows(entries: Sequence[tuple[str, dict]], group_seeds: bool = True) -> list[ComparisonRow]:
    """Rows of a comparison, in first-appearance order.

    Args:
        entries: (run folder, its metrics.json) pairs.
        group_seeds: pool runs that share `group` into one row (mean ± std over their seeds).
    """
    groups: dict[str, list[tuple[str, dict]]] = {}
    for folder, metrics in entries:
        key = metrics.get("group") if group_seeds and metrics.get("group") else f"run:{folder}"
        groups.setdefault(key, []).append((folder, metrics))
    rows = []
    for members in groups.values():
        labels = sorted({m.get("label") or Path(f).name for f, m in members})
        columns = [_column_values_of(f, m) for f, m in members]
        values = {key: tuple(_number(c[key]) for c in columns) for key, _, _ in COLUMNS}
        rows.append(ComparisonRow(
            label=" / ".join(labels),
            runs=tuple(f for f, _ in members),
            seeds=tuple(m.get("seed") for _, m in members),
            values=values,
            peer_text_order=any(bool(m.get("peer_text_order")) for _, m in members),
        ))
    return rows


def comparison_markdown(rows: Sequence[ComparisonRow], columns: Sequence[str] | None = None,
                        first_column: str = "Run", class_vectors: bool | None = None,
                        chance: Mapping[str, float] | None = None,
                        extra_columns: Mapping[str, Sequence[str]] | None = None) -> str:
    """A Markdown table: one row per configuration, `mean ± std` over seeds.

    Args:
        columns: the `COLUMNS` keys to show, in this order (default: every column some row reports).
        first_column: the title of the row names' column.
        class_vectors: show the column "Class vectors" always (True), or only when some row gave class vectors in
            AVCA-GZSL's order (None).
        chance: uniform guessing's value per column key (`chance_values`), written as a last row "Chance".
        extra_columns: title -> one text cell per row, shown after the row names (e.g. each row's features).
    """
    titles = {key: title for key, title, _ in COLUMNS}
    if columns is None:
        columns = [key for key, _, _ in COLUMNS
                   if any(not math.isnan(v) for row in rows for v in row.values.get(key, ()))]
    orders = class_vectors or any(row.peer_text_order for row in rows)  # which vector each class got moves every number
    extra = dict(extra_columns or {})
    header = [first_column, *extra, "Seeds", *(["Class vectors"] if orders else []), *(titles[key] for key in columns)]
    lines = [_md_row(header), _md_row(["---"] * len(header))]
    for r, row in enumerate(rows):
        cells = [row.label, *(cells_of[r] for cells_of in extra.values()), str(len(row.runs))]
        if orders:
            cells.append(class_vectors_cell(row.peer_text_order))
        cells += [row.cell(key) for key in columns]
        lines.append(_md_row(cells))
    if chance is not None:
        lines.append(_md_row(["Chance", *([""] * len(extra)), "", *([""] if orders else []),
                              *(format_mean_std(chance.get(key), None) for key in columns)]))
    return "\n".join(lines) + "\n"


def class_vectors_cell(peer_text_order: bool) -> str:
    """Which class vector each class got, as tables write it: by name, or AVCA-GZSL's order (`peer_text_order`)."""
    return "AVCA-GZSL order" if peer_text_order else "by name"


def chance_values(result: EvalResult) -> dict[str, float]:
    """Uniform guessing's value (percent) of the columns an evaluation with these candidates has.

    ZSL, and the MZSL groups and averages (per-class ZSL accuracy among the same candidates): 1 / unseen classes.
    S, U and HM, raw or calibrated: 1 / (seen + unseen classes), every candidate alike (HM of two equal values is
    that value). Columns whose candidates the evaluation lacks are left out.
    """
    seen, unseen = result.num_seen_classes or 0, result.num_unseen_classes or 0
    chance: dict[str, float] = {}
    if unseen:
        chance.update({key: 100.0 / unseen for key in ("zsl", "mzsl_easy", "mzsl_medium", "mzsl_hard",
                                                       "mzsl_avg_unweighted", "mzsl_avg_class_weighted")})
    if seen and unseen:
        chance.update({key: 100.0 / (seen + unseen) for key in ("gzsl_s", "gzsl_u", "gzsl_hm", "calibrated_gzsl_s",
                                                                "calibrated_gzsl_u", "calibrated_gzsl_hm")})
    return chance


def data_caveats(provenances: Sequence[Mapping]) -> dict[str, bool]:
    """Whether numbers stand on random-init backbones or on the built-in synthetic benchmark: the token stores'
    provenance records (`TokenStore.provenance`) of every store an evaluation read."""
    def synthetic(provenance: Mapping) -> bool:
        source = provenance.get("source")
        return source is not None and (Path(source).parent / "benchmark.json").is_file()

    return {"random_init": any(bool(p.get("random_init")) for p in provenances),
            "synthetic_data": any(synthetic(p) for p in provenances)}


def caveat_lines(caveats: Mapping[str, bool], compared: str) -> list[str]:
    """The bold warning a table on random-init backbones or synthetic data opens with (no lines otherwise).

    Args:
        caveats: `data_caveats`.
        compared: what the numbers do compare, e.g. "the variants".
    """
    flags = (("random_init", "the backbones are RANDOM-INIT"),
             ("synthetic_data", "the data is the built-in SYNTHETIC benchmark"))
    said = [text for flag, text in flags if caveats[flag]]
    if not said:
        return []
    caveat = " and ".join(said)
    return [f"**{caveat[0].upper()}{caveat[1:]}: these numbers compare {compared} on this data; they say nothing "
            "about accuracy on real videos.**", ""]


def comparison_json(rows: Sequence[ComparisonRow]) -> dict:
    """The comparison as JSON: per row and column the values, mean and std, two decimals."""
    out = []
    for row in rows:
        columns = {}
        for key, _, _ in COLUMNS:
            mean, std = row.mean_std(key)
            if math.isnan(mean):
                continue
            columns[key] = {
                "mean": round(mean, 2),
                "std": None if std is None else round(std, 2),
                "values": [None if math.isnan(v) else round(v, 2) for v in row.values[key]],
            }
        out.append({"label": row.label, "runs": list(row.runs), "seeds": list(row.seeds),
                    "peer_text_order": row.peer_text_order, "class_vectors": class_vectors_cell(row.peer_text_order),
                    "metrics": columns})
    return {"columns": {key: title for key, title, _ in COLUMNS}, "unit": "percent (beta: distance units)",
            "rows": out}


def _imported_note(imported: dict | None) -> str | None:
    """Where a run made from a peer's checkpoint came from (`fusion.peer_checkpoint`), or None."""
    if not imported:
        return None
    return (f"{imported['code']} {imported['method']} checkpoint {imported['checkpoint']} (sha256 "
            f"{imported['sha256'][:12]}..., {imported['dataset']} {imported['split']}, stage {imported['stage']}, "
            f"epoch {imported['epoch']})")


def run_markdown(metrics: dict) -> str:
    """One evaluated run as Markdown: headline table, per-class accuracy, worst classes and their confusions."""
    title = metrics.get("label") or "zero-shot evaluation"
    result = EvalResult.from_json(metrics)
    lines = [f"# {title}", ""]
    described = [(k, v) for k, v in (
        ("protocol", metrics.get("protocol")),
        ("decision rule", metrics.get("rule")),
        ("checkpoint", metrics.get("checkpoint")),
        ("imported from the peers' code", _imported_note(metrics.get("imported"))),
        ("clips", result.num_clips),
        ("seen / unseen classes", _pair(result.num_seen_classes, result.num_unseen_classes)),
        ("chance (uniform guessing)", _chance_note(metrics, result)),
        ("calibrated stacking", _calibration_note(result)),
        ("training clips", "included on request: S measures clips the head trained or validated on"
         if metrics.get("includes_training_clips") else None),
    ) if v is not None]
    lines += [f"- {k}: {v}" for k, v in described] + [""]
    lines.append(comparison_markdown(comparison_rows([(title, metrics)], group_seeds=False)))
    if metrics.get("groups"):
        lines += ["## Difficulty groups", "", _md_row(["Group", "Classes", "ZSL"]), _md_row(["---"] * 3)]
        lines += [_md_row([group, str(v["classes"]), format_mean_std(v["zsl"], None)])  # "–" for an empty group
                  for group, v in metrics["groups"].items()]
        lines.append("")
    per_class = metrics.get("per_class") or []
    if per_class:
        keys = [k for k in ("gzsl_acc", "zsl_acc", "top1_acc") if any(r.get(k) is not None for r in per_class)]
        lines += ["## Per-class accuracy (%)", "", _md_row(["Class", "Split", "Clips", *keys]),
                  _md_row(["---"] * (3 + len(keys)))]
        for r in per_class:
            if r.get("clips") == 0:
                continue  # a candidate without evaluated clips has no accuracy
            lines.append(_md_row([r["class"], r.get("split", ""), str(r.get("clips", "")),
                                  *(format_mean_std(r.get(k), None) for k in keys)]))
        lines.append("")
    worst = metrics.get("worst_classes") or []
    if worst:
        lines += ["## Worst classes and what they were taken for", "", _md_row(["Class", "Accuracy", "Predicted as"]),
                  _md_row(["---"] * 3)]
        for r in worst:
            confused = ", ".join(f"{c['class']} ({c['share']:.2f}%)" for c in r["confused_with"])
            lines.append(_md_row([r["class"], format_mean_std(r["acc"], None), confused]))
        lines.append("")
    return "\n".join(lines)


def group_key(values: dict) -> str:
    """A short hash of what makes runs comparable: runs with the same key pool into one row (mean +- std)."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_report(config: ReportConfig) -> ReportSummary:
    """Compare evaluated runs side by side; write `comparison.md` and `comparison.json` when `config.out` is set.

    Raises:
        FileNotFoundError: a run folder without metrics.json.
    """
    entries = [entry for folder in config.runs for entry in _expand(Path(folder))]
    rows = comparison_rows(entries, group_seeds=config.group_seeds)
    markdown = comparison_markdown(rows)
    paths: tuple[Path, ...] = ()
    if config.out is not None:
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {**comparison_json(rows), "config": config.to_dict()}
        paths = write_texts({out / "comparison.md": markdown, out / "comparison.json": json_text(record)})
        logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return ReportSummary(markdown=markdown, rows=tuple(rows), paths=paths)


def _expand(folder: Path) -> list[tuple[str, dict]]:
    """A protocol folder lists its seeds' evaluations (`seed_runs`): compare those; other folders are one run."""
    metrics = load_metrics(folder)
    if metrics.get("seed_runs"):
        return [(str(folder / sub), load_metrics(folder / sub)) for sub in metrics["seed_runs"]]
    return [(str(folder), metrics)]


_RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(EvalResult))


def column_values(metrics: dict) -> dict[str, float | None]:
    """The values of `COLUMNS` in a metrics.json, as written: ZSL / GZSL through their reader (`EvalResult`), the
    MZSL groups and top-k by their writers' keys; None where the evaluation has no such value.

    Raises:
        ValueError: a ZSL / GZSL value that is not a number, or not a percentage in [0, 100].
    """
    result = EvalResult.from_json(metrics)
    return {key: result.percent(key) if key in _RESULT_FIELDS else metrics.get(key) for key, _, _ in COLUMNS}


def _column_values_of(folder: str, metrics: dict) -> dict[str, float | None]:
    try:
        return column_values(metrics)
    except ValueError as error:
        raise InputError(f"{Path(folder) / 'metrics.json'}: {error}") from error


def _number(value) -> float:
    return math.nan if value is None else float(value)


def format_mean_std(mean: float | None, std: float | None) -> str:
    """A table cell: "12.34", "12.34 ± 0.56" (std over seeds), "–" for no value (None or NaN)."""
    if mean is None or math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _pair(a, b) -> str | None:
    return None if a is None and b is None else f"{a} / {b}"


def _chance_note(metrics: dict, result: EvalResult) -> str | None:
    """Chance beside the accuracies: 1 / candidates for ZSL, GZSL (over seen + unseen) and a vocabulary's top-1."""
    seen, unseen = result.num_seen_classes or 0, result.num_unseen_classes or 0
    parts = []
    if unseen and result.zsl is not None:
        parts.append(f"ZSL {100 / unseen:.2f}% (1 of {unseen})")
    if seen and unseen and result.gzsl_hm is not None:
        parts.append(f"GZSL S and U {100 / (seen + unseen):.2f}% (1 of {seen + unseen})")
    if metrics.get("top1") is not None and metrics.get("num_classes"):
        k, n = metrics.get("top_k") or 1, metrics["num_classes"]
        parts.append(f"top-1 {100 / n:.2f}%, top-{k} {100 * min(k, n) / n:.2f}% (of {n})")
    return "; ".join(parts) or None


def _calibration_note(result: EvalResult) -> str | None:
    if result.calibrated_beta is None:
        return None
    validation_hm = percent(result.calibrated_val_hm)
    return (f"beta = {result.calibrated_beta:g}, chosen on {result.calibrated_val_split!r} "
            f"(validation HM {math.nan if validation_hm is None else validation_hm:.2f}%)")
