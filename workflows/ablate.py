"""The paper's ablation table (Table 7, with Table 8's normalisation and a control), trained and evaluated alike.

`run_ablation` trains every row once per seed with the same training options, split and seeds, evaluates each run
as `zeroshot` does by default (ZSL / GZSL on the store's `seen` / `unseen` split column, calibrated stacking with
beta chosen on the run's own validation clips) and writes `ablation.json` and `ablation.md`. A row is the common
training options plus the row's change (`ROWS`); rows whose settings come out equal share their runs (e.g.
`normalised` when the embedding source is stored normalised). The `concat` row trains nothing of its own: it
reads the `audio-only` and `video-only` runs side by side (each branch optimised on its own, as in the paper).

Runs live in `<out>/runs/<row>-seed<s>` and evaluations in `<out>/report/<row>-seed<s>`; a rerun reuses every
finished run with the same settings (`fusion.trainer.train_or_reuse`) and redoes only the evaluation.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.files import json_text, write_texts
from eval import report
from eval.config import PlotConfig
from eval.metrics import EvalResult
from eval.report import format_mean_std
from workflows.config import AblateConfig, ZeroShotConfig

__all__ = ["RowSpec", "ROWS", "METRICS", "MetricSummary", "AblationRow", "AblationResult", "run_ablation"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowSpec:
    """What one row of the table is: its label and how it differs from the common training options."""

    label: str  # the row's name in the table, after the paper's wording
    ablations: tuple[str, ...] = ()  # fusion.config.ABLATIONS applied on top of the common ones
    control: bool = False  # class embeddings shuffled among the seen classes (zero-shot must fall to chance)
    parts: tuple[str, ...] = ()  # rows whose runs stand side by side (feature concatenation); trains nothing
    options: tuple[tuple[str, str], ...] = ()  # training fields the row sets over the common options
    rule: str | None = None  # the decision rule it evaluates with (`eval.metrics.RULES`); None: the run's own


# workflows.config.ABLATION_ROWS names these, in this order.
ROWS: dict[str, RowSpec] = {
    "full": RowSpec("MZST: AVT fusion + L_TASK + L_SE + L_MLM"),
    "concat": RowSpec("Feature concatenation: audio-only and video-only heads, f(x) side by side",
                      parts=("audio-only", "video-only")),
    "no-text": RowSpec("AVT fusion without the text stream (L_TASK + L_SE)", ("no-text",)),
    "task": RowSpec("AVT fusion + L_TASK (zero-shot by ConSE)", ("task",)),
    "task+se": RowSpec("AVT fusion + L_TASK + L_SE (text stream kept, MLM weight 0)", ("no-mlm",)),
    "audio-only": RowSpec("MZST on audio only", ("audio-only",)),
    "video-only": RowSpec("MZST on video only", ("video-only",)),
    "normalised": RowSpec("MZST, L2-normalised class embeddings (Table 8)", ("normalised",)),
    "control": RowSpec("Control: MZST with the class embeddings shuffled among the seen classes", control=True),
    # Labels stand in Markdown tables: no "|" in them.
    "class-target": RowSpec("MZST, SE target phi(class) only (so the plain rule)", ("no-se",)),
    "plain-rule": RowSpec("MZST (target phi(s_v) + phi(class)) evaluated with the plain rule", rule="plain"),
    "sequential": RowSpec("MZST, eq. 2's fusion order (text reads the AV-updated fusion tokens)", ("sequential",)),
    "eq5": RowSpec("MZST, eq. 5's loss weights (SE weight 1)", ("eq5",)),
    "sentence": RowSpec("MZST, sentence-encoder class embeddings (MiniLM; Table 8's S2V analogue)",
                        options=(("embeddings", "minilm"),)),
}

# (`eval.metrics.EvalResult` field, column title), percent
METRICS: tuple[tuple[str, str], ...] = (
    ("zsl", "ZSL"), ("gzsl_s", "S"), ("gzsl_u", "U"), ("gzsl_hm", "HM"),
    ("calibrated_gzsl_s", "S (cal.)"), ("calibrated_gzsl_u", "U (cal.)"), ("calibrated_gzsl_hm", "HM (cal.)"),
)
_NEEDS_AUDIO = ("audio-only", "concat")
_JUDGED = ("zsl", "calibrated_gzsl_hm")  # the differences the reading judges against the seed spread


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one row over the seeds (percent, two decimals); std is None with one seed."""

    mean: float | None
    std: float | None
    seeds: tuple[float | None, ...]

    @classmethod
    def of(cls, values: list[float | None]) -> MetricSummary:
        known = [v for v in values if v is not None]
        mean = round(statistics.fmean(known), 2) if known else None
        std = round(statistics.stdev(known), 2) if len(known) > 1 else None
        return cls(mean=mean, std=std, seeds=tuple(None if v is None else round(v, 2) for v in values))

    def cell(self) -> str:
        return format_mean_std(self.mean, self.std)


@dataclass(frozen=True)
class AblationRow:
    """A row of the table: its runs' metrics over the seeds."""

    name: str
    label: str
    metrics: dict[str, MetricSummary]
    same_as: str | None  # the row whose runs it shares (equal settings), if any
    runs: tuple[str, ...]  # run folders (a concatenation: its parts' folders, per seed)
    peer_text_order: bool  # its runs gave class vectors in AVCA-GZSL's order, not by name


@dataclass(frozen=True)
class AblationResult:
    """What `run_ablation` wrote."""

    rows: tuple[AblationRow, ...]
    chance: dict[str, float]
    markdown: str
    json_path: Path
    markdown_path: Path

    def summary(self) -> str:
        """One line for the CLI."""
        cells = [f"{row.name} {row.metrics['zsl'].cell()}" for row in self.rows]
        return f"ZSL (chance {self.chance['zsl']:.2f}): " + "; ".join(cells)


def run_ablation(config: AblateConfig) -> AblationResult:
    """Train and evaluate every row of `config.rows` for every seed; write `ablation.json` and `ablation.md`.

    Every run's settings are built and checked before anything trains.

    Raises:
        FileNotFoundError: no such store.
        InputError: training options without a validation source, a store without audio for a row that needs
            it, or options the rows cannot take.
    """
    from features.store import DONE, TokenStore

    store = TokenStore.open(config.store)
    done = store.indices(DONE)
    needs_audio = [r for r in config.rows if r in _NEEDS_AUDIO]
    if needs_audio and not store.read(done, ["has_audio"])["has_audio"].any():
        raise InputError(f"{store.path} has no clip with audio: rows {needs_audio} need it; leave them out of "
                         "`rows`")
    trained = _trained_rows(config.rows)
    plans = {(row, seed): _train_config(config, row, seed) for row in trained for seed in config.seeds}
    if not plans[(trained[0], config.seeds[0])].has_validation:
        raise InputError("every run chooses its epoch and calibrated-stacking beta on validation clips: give "
                         "`val_unseen_fraction`, `val_splits` or `val_store`")
    same_as = _shared_runs(plans, trained, config.seeds[0])
    out = Path(config.out)
    rows, evaluated = [], []
    for position, name in enumerate(config.rows, start=1):
        spec = ROWS[name]
        states, metrics_per_seed, runs, orders = [], [], [], []
        for seed in config.seeds:
            parts = spec.parts or (name,)
            run_dirs = []
            for part in parts:
                part_config = plans[(same_as.get(part, part), seed)]
                states.append(_train_or_reuse(part_config))
                run_dirs.append(part_config.out)
            evaluation = _evaluate(config, store.path, run_dirs, out / "report" / f"{name}-seed{seed}", name,
                                   spec.rule)
            metrics_per_seed.append(evaluation.result)
            orders.append(bool(evaluation.metrics["peer_text_order"]))
            evaluated.append(metrics_per_seed[-1])
            runs += [str(r) for r in run_dirs]
        summaries = {key: MetricSummary.of([m.percent(key) for m in metrics_per_seed]) for key, _ in METRICS}
        rows.append(AblationRow(name=name, label=spec.label, metrics=summaries, same_as=same_as.get(name),
                                runs=tuple(runs), peer_text_order=any(orders)))
        logger.info("[%d/%d] %s: %s over %d seed(s) (runs %s); ZSL %s, HM (cal.) %s", position, len(config.rows),
                    name, spec.label, len(config.seeds), _count(states), summaries["zsl"].cell(),
                    summaries["calibrated_gzsl_hm"].cell())
    first = evaluated[0]  # every row is evaluated on the same clips and candidate classes
    chance = {key: round(value, 2) for key, value in report.chance_values(first).items() if key in dict(METRICS)}
    honesty = report.data_caveats([store.provenance])
    markdown = _markdown(config, rows, chance, first, honesty)
    payload = {"rows": {row.name: {key: vars(summary) for key, summary in row.metrics.items()} for row in rows},
               "labels": {row.name: row.label for row in rows},
               "same_runs_as": {row.name: row.same_as for row in rows if row.same_as},
               "class_vectors": {row.name: report.class_vectors_cell(row.peer_text_order) for row in rows},
               "chance": chance, "seeds": list(config.seeds), "unit": "percent",
               "seen_classes": first.num_seen_classes, "unseen_classes": first.num_unseen_classes,
               "test_clips": first.num_clips, **honesty, "config": config.to_dict()}
    json_path, markdown_path = out / "ablation.json", out / "ablation.md"
    payload = json.loads(json.dumps(payload, default=str))  # tuples -> lists, paths -> strings
    write_texts({json_path: json_text(payload), markdown_path: markdown})  # both or neither replaced
    return AblationResult(rows=tuple(rows), chance=chance, markdown=markdown, json_path=json_path,
                          markdown_path=markdown_path)


def _trained_rows(rows: tuple[str, ...]) -> list[str]:
    """The rows that train runs: the asked-for ones, a concatenation's parts instead of it, in table order."""
    wanted = {part for row in rows for part in (ROWS[row].parts or (row,))}
    return [row for row in ROWS if row in wanted]


def _train_config(config: AblateConfig, row: str, seed: int):
    from fusion.config import train_config_from_options

    spec = ROWS[row]
    options = {**config.train, **dict(spec.options), "store": config.store,
               "out": Path(config.out) / "runs" / f"{row}-seed{seed}", "seed": seed, "device": config.device,
               "shuffle_class_embeddings": spec.control}
    return train_config_from_options(options, preset=config.preset, ablations=config.ablations + spec.ablations)


def _shared_runs(plans: dict, trained: list[str], seed: int) -> dict[str, str]:
    """Row -> the earlier row with exactly the same training settings (it reuses that row's runs)."""
    from fusion.run_dir import changed_settings

    same: dict[str, str] = {}
    for position, row in enumerate(trained):
        recorded = json.loads(json.dumps(plans[(row, seed)].to_dict()))
        for earlier in trained[:position]:
            if earlier not in same and not changed_settings(recorded, plans[(earlier, seed)]):
                same[row] = earlier
                break
    return same


def _train_or_reuse(train_config) -> str:
    from fusion.trainer import train_or_reuse

    return train_or_reuse(train_config)


def _evaluate(config: AblateConfig, store: Path, run_dirs: list[Path], out: Path, label: str, rule: str | None):
    from workflows.zeroshot import RUN_VALIDATION, run_zeroshot

    result = run_zeroshot(ZeroShotConfig(
        run_dir=run_dirs[0], concat_runs=tuple(run_dirs[1:]), store=store, calibrated_stacking=True, rule=rule,
        val_split=RUN_VALIDATION, out=out, label=label, batch_size=config.batch_size, device=config.device,
        plots=PlotConfig(tsne=False, per_class_bars=False)))
    return result


def _count(states: list[str]) -> str:
    counts = {state: states.count(state) for state in ("trained", "resumed", "reused") if state in states}
    return ", ".join(f"{n} {state}" for state, n in counts.items())


def _markdown(config: AblateConfig, rows: list[AblationRow], chance: dict[str, float], first: EvalResult,
              honesty: dict[str, Any]) -> str:
    seeds = len(config.seeds)
    spread = "mean ± sample std over the seeds" if seeds > 1 else "one seed, so no spread"
    lines = [f"# Ablations (the paper's Table 7), {seeds} seed(s)", "", *report.caveat_lines(honesty, "the variants")]
    lines += [f"Store `{config.store}`: {first.num_seen_classes} seen and {first.num_unseen_classes} unseen "
              f"candidate classes, {first.num_clips} test clips; seeds {', '.join(map(str, config.seeds))}; "
              f"percent, {spread}. Epoch and calibrated-stacking beta of every run come from its validation clips.",
              "", "| Model | Row | Class vectors | " + " | ".join(title for _, title in METRICS) + " |",
              "| --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]
    for row in rows:
        lines.append(f"| {row.label} | `{row.name}` | {report.class_vectors_cell(row.peer_text_order)} | "
                     + " | ".join(row.metrics[k].cell() for k, _ in METRICS) + " |")
    lines.append("| Chance | | | " + " | ".join(f"{chance[k]:.2f}" for k, _ in METRICS)
                 + " |")
    lines.append("")
    for row in rows:
        if row.same_as:
            evaluated = (f", evaluated with the {ROWS[row.name].rule} rule" if ROWS[row.name].rule else "")
            lines.append(f"- `{row.name}` trains with exactly the settings of `{row.same_as}`: it shares its "
                         f"runs{evaluated}.")
    lines += ["", "## Differences from `full` against the seed spread", "", *_reading(rows, seeds), ""]
    return "\n".join(lines)


def _reading(rows: list[AblationRow], seeds: int) -> list[str]:
    """One line per judged metric: each row's difference from `full`, and whether it exceeds the seed spread."""
    full = next((row for row in rows if row.name == "full"), None)
    if full is None:
        return ["The `full` row was not run: nothing to compare with."]
    if seeds < 2:
        return ["One seed: there is no seed spread to judge the differences against."]
    lines = ["A difference exceeds the seed spread when |mean(row) − mean(full)| > std(row) + std(full)."]
    for key, title in METRICS:
        if key not in _JUDGED or full.metrics[key].mean is None:
            continue
        base = full.metrics[key]
        verdicts = []
        for row in rows:
            value = row.metrics[key]
            if row is full or value.mean is None or (row.same_as == "full" and ROWS[row.name].rule is None):
                continue
            difference = value.mean - base.mean
            bound = (value.std or 0.0) + (base.std or 0.0)
            exceeds = "exceeds" if math.fabs(difference) > bound else "within"
            verdicts.append(f"`{row.name}` {difference:+.2f} ({exceeds} {bound:.2f})")
        lines.append(f"- {title} (`full` {base.cell()}): " + "; ".join(verdicts) + ".")
    return lines
