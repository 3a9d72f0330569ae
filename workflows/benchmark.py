"""`cli.py benchmark`: every method through one protocol and every seed, one table in the paper's layout.

A method is "mzst" (`fusion.model`) or a registered comparison head (`fusion.heads.list_heads`); by default all
of them, so a head registered later joins without a change here. Each method runs the protocol
(`workflows.protocols`) into `<out>/<method>`: its seeds, stages, test evaluations, `metrics.json` and
`summary.md`, as `protocol avca` / `protocol mzsl` write them; a rerun reuses every finished stage and redoes
only the (cheap) evaluations and the table. The methods' names and the training options are checked before
anything trains. With `feature_stores` (AVCA protocol) the rows compare feature settings too: every method runs on
every named store into `<out>/<name>/<method>`, one row per (feature setting, method), and the stores must hold
the same test clips (checked before anything trains).

The table reads each seed's test `metrics.json` back (`eval.report.comparison_rows`, through
`eval.metrics.EvalResult`) and writes the paper's layout: for the AVCA protocol its Tables 5 / 6 (ZSL, S, U, HM,
and HM after calibrated stacking when the protocol calibrated), for MZSL its Table 3 (E, M, H and both
averages). One row per method, mean ± sample std over the seeds, a chance row, and the class-vector assignment
each row used: `table.md`, `table.json` and `table.png`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.files import json_text, write_texts
from curate import splits
from eval import report
from eval.metrics import EvalResult
from eval.report import COLUMNS, ComparisonRow
from workflows.config import BenchmarkConfig, named_stores

__all__ = ["TABLE_COLUMNS", "HEADLINE", "BenchmarkResult", "available_methods", "run_benchmark"]

logger = logging.getLogger(__name__)

# The paper's columns per protocol (`eval.report.COLUMNS` keys): Tables 5 / 6 and Table 3. The calibrated HM is
# shown when the protocol calibrated.
TABLE_COLUMNS = {
    "avca": ("zsl", "gzsl_s", "gzsl_u", "gzsl_hm", "calibrated_gzsl_hm"),
    "mzsl": ("mzsl_easy", "mzsl_medium", "mzsl_hard", "mzsl_avg_unweighted", "mzsl_avg_class_weighted"),
}
# The columns the reading of the table ranks the methods by.
HEADLINE = {"avca": ("zsl", "gzsl_hm", "calibrated_gzsl_hm"), "mzsl": ("mzsl_avg_unweighted",)}
_TITLES = {key: title for key, title, _ in COLUMNS}


@dataclass(frozen=True)
class BenchmarkResult:
    """What `run_benchmark` wrote: the rows (one per method), chance per column, the table and its files."""

    protocol: str
    rows: tuple[ComparisonRow, ...]
    columns: tuple[str, ...]
    chance: dict[str, float]
    markdown: str
    paths: tuple[Path, ...]

    def summary(self) -> str:
        """One line for the CLI."""
        key = next(k for k in (*HEADLINE[self.protocol], *self.columns) if k in self.columns and k in self.chance)
        cells = [f"{row.label} {row.cell(key)}" for row in self.rows]
        return f"{_TITLES[key]} (chance {self.chance[key]:.2f}): " + "; ".join(cells)


def available_methods() -> list[str]:
    """mzst and every registered comparison head, in that order."""
    from fusion.heads import list_heads

    return ["mzst", *list_heads()]


def run_benchmark(config: BenchmarkConfig) -> BenchmarkResult:
    """Run every method of `config.methods` (default: all) through the protocol for every seed; write the table.

    Raises:
        FileNotFoundError: a missing store, split or groups file.
        InputError: an unknown method or a training option no method takes (before anything trains), what the
            protocol refuses (when the method's turn comes), or methods tested on different clips or classes.
    """
    from workflows.protocols import run_avca_protocol, run_mzsl_protocol

    methods = _methods(config.methods)
    _check_options(config, methods)
    stores = named_stores(config.feature_stores)
    features = _check_same_test_clips(config, stores) if stores else {}
    # one row per (feature setting, method); without `feature_stores` one unnamed setting, the protocol's store
    plans = {_Row(method, feature): _protocol_config(config, method, feature, store)
             for feature, store in (stores.items() if stores else [(None, None)]) for method in methods}
    run = run_avca_protocol if config.protocol == "avca" else run_mzsl_protocol
    entries: dict[_Row, list[tuple[str, dict]]] = {}
    title = ""
    for position, (key, plan) in enumerate(plans.items(), start=1):
        logger.info("[%d/%d] %s: %s protocol, seeds %s -> %s", position, len(plans), key.label, config.protocol,
                    ",".join(map(str, config.settings.seeds)), plan.out)
        result = run(plan)
        title = result.metrics["title"]
        # read back what the protocol wrote: the table holds the numbers of the runs' metrics.json, not copies
        entries[key] = [(str(result.out / sub), report.load_metrics(result.out / sub))
                        for sub in result.metrics["seed_runs"]]
    rows = []
    for key, plan in plans.items():
        pooled = report.comparison_rows(entries[key])
        if len(pooled) != 1:
            raise InputError(f"{plan.out}: its seeds ran with different settings; rerun into a new `out`")
        rows.append(dataclasses.replace(pooled[0], label=key.label))
    keys = list(plans)
    first = EvalResult.from_json(entries[keys[0]][0][1])
    tested = {k.label: [(r.num_clips, r.num_seen_classes, r.num_unseen_classes)
                        for r in (EvalResult.from_json(metrics) for _, metrics in entries[k])] for k in keys}
    differ = [label for label, seen in tested.items() if set(seen) != {(first.num_clips, first.num_seen_classes,
                                                                        first.num_unseen_classes)}]
    if differ:  # one chance row and one comparison need the same test for every row
        raise InputError(f"{config.out}: {differ} were tested on other clips or classes than {keys[0].label} "
                         f"(clips, seen, unseen: {tested}); rerun into a new `out`")
    chance = report.chance_values(first)
    columns = tuple(key for key in TABLE_COLUMNS[config.protocol]
                    if any(not math.isnan(v) for row in rows for v in row.values[key]))
    caveats = report.data_caveats(_store_provenances(config, stores))
    markdown = _markdown(config, title, rows, columns, chance, first, caveats,
                         [features[key.feature]["cell"] for key in keys] if features else None)
    out = Path(config.out)
    compared = report.comparison_json(rows)
    for row, key in zip(compared["rows"], keys, strict=True):
        if key.feature is not None:  # which store each row stands on
            row.update(features=key.feature, method=key.method,
                       store={k: v for k, v in features[key.feature].items() if k != "cell"})
    record = {"protocol": config.protocol, "title": title, "methods": methods, "table_columns": list(columns),
              **compared,
              "chance": {key: round(value, 2) for key, value in chance.items() if key in columns},
              "seeds": list(config.settings.seeds), "seen_classes": first.num_seen_classes,
              "unseen_classes": first.num_unseen_classes, "test_clips": first.num_clips, **caveats,
              "config": config.to_dict()}
    paths = write_texts({out / "table.md": markdown, out / "table.json": json_text(record)})
    said = [text for flag, text in (("random_init", "RANDOM-INIT backbones"), ("synthetic_data", "SYNTHETIC data"))
            if caveats[flag]]
    figure = _plot(out / "table.png", rows, columns, chance, f"{title}: {len(config.settings.seeds)} seed(s)" + (
        f"\n{' and '.join(said)}: says nothing about accuracy on real videos" if said else ""))
    return BenchmarkResult(protocol=config.protocol, rows=tuple(rows), columns=columns, chance=chance,
                           markdown=markdown, paths=(*paths, figure))


def _methods(asked: tuple[str, ...]) -> list[str]:
    """The asked methods (all when none), checked against the registry."""
    known = available_methods()
    unknown = [m for m in asked if m not in known]
    if unknown:
        raise InputError(f"unknown method(s) {unknown} in `methods`; choose from {', '.join(known)}")
    return list(asked) or known


@dataclass(frozen=True)
class _Row:
    """A row of the table: a method, on a named feature setting (`feature_stores`) or on the protocol's store."""

    method: str
    feature: str | None

    @property
    def label(self) -> str:
        return self.method if self.feature is None else f"{self.method} · {self.feature}"


def _check_same_test_clips(config: BenchmarkConfig, stores: dict[str, Path]) -> dict[str, dict]:
    """Refuse feature stores whose AVCA test stages hold other clips than the first's (before anything trains):
    rows of one table compare feature settings only on the same clips. Returns per name what the table records
    of its store: path, profile, backbone architectures, and its "Features" cell.

    Raises:
        FileNotFoundError: a missing store or split file.
        InputError: a store's test clips differ from the first store's, or what `avca_stage_indices` refuses.
    """
    from features.store import TokenStore
    from workflows.protocols import AVCA_STAGES, avca_stage_indices

    settings = config.settings
    root = Path(settings.splits_root) if settings.splits_root is not None else splits.DATA_ROOT
    class_split = splits.load_class_split(settings.dataset, settings.split, root)
    tested, described = {}, {}
    for name, path in stores.items():
        store = TokenStore.open(path)
        indices = avca_stage_indices(store, class_split, root)
        tested[name] = {str(c) for stage in AVCA_STAGES if stage.startswith("stage_2_test")
                        for c in store.clip_ids[indices[stage]]}
        extract = store.extract_config
        video, audio = (extract.get(part, {}).get("architecture") for part in ("video", "audio"))
        profile = extract.get("profile")
        described[name] = {"path": str(path), "profile": profile, "video": video, "audio": audio,
                           "random_init": bool(store.provenance.get("random_init")),
                           "cell": f"{profile or 'no profile'}" + (f": {video} + {audio}" if video and audio else "")}
    first = next(iter(stores))
    for name, clips in tested.items():
        if clips != tested[first]:
            other = sorted(clips ^ tested[first])
            raise InputError(f"{stores[name]}: its test clips differ from {stores[first]}'s in {len(other)} clip(s), "
                             f"e.g. {other[0]!r}; `feature_stores` compares feature settings of the same clips")
    return described


def _protocol_config(config: BenchmarkConfig, method: str, feature: str | None = None, store: Path | None = None):
    """The protocol config of one row: the training options its method takes, its recipe, its store, its folder
    (`<out>/<method>`, or `<out>/<feature>/<method>` for a named feature setting)."""
    from fusion.config import method_options

    settings = config.settings
    taken = method_options(method)
    train = {key: value for key, value in settings.train.items() if key in taken}
    train["method"] = method
    if method != "mzst" and config.recipe is not None:
        train["recipe"] = config.recipe
    mzst = method == "mzst"  # a preset and ablations are the MZST head's
    folder = Path(config.out) / method if feature is None else Path(config.out) / feature / method
    stores = {} if store is None else {"store": store}
    return dataclasses.replace(settings, out=folder, train=train, **stores,
                               preset=settings.preset if mzst else None, ablations=settings.ablations if mzst else (),
                               beta_rule=_beta_rule(config.beta_rule, method))


def _beta_rule(asked: str, method: str) -> str:
    """The beta rule of a method's row: the peers' rule where asked and the method scores audio, video and both;
    ours otherwise (the table's text says which rows used which)."""
    from fusion.heads import takes_peer_beta_rule

    return "peers" if asked == "peers" and takes_peer_beta_rule(method) else "ours"


def _check_options(config: BenchmarkConfig, methods: list[str]) -> None:
    """Refuse training options that no asked method takes (a typo would otherwise change nothing); say which
    options only some methods take.

    Raises:
        InputError: an option no method takes, a preset or ablations without mzst.
    """
    from fusion.config import method_options

    if "mzst" not in methods and (config.settings.preset is not None or config.settings.ablations):
        raise InputError(f"a preset and ablations are the MZST head's, and mzst is not among the methods {methods}")
    takers = {key: [m for m in methods if key in method_options(m)] for key in config.settings.train}
    unused = sorted(key for key, who in takers.items() if not who)
    if unused:
        raise InputError(f"training option(s) {unused} are taken by none of the methods {methods}")
    for key, who in takers.items():
        if len(who) < len(methods):
            logger.info("training option %s applies to %s only", key, ", ".join(who))


def _store_provenances(config: BenchmarkConfig, named: dict[str, Path]) -> list[dict]:
    from features.store import TokenStore

    settings = config.settings
    stores = list(named.values()) or (
        [settings.store] if config.protocol == "avca" else [settings.train_store, settings.eval_store])
    return [TokenStore.open(store).provenance for store in stores]


def _markdown(config: BenchmarkConfig, title: str, rows: list[ComparisonRow], columns: tuple[str, ...],
              chance: dict[str, float], first: EvalResult, caveats: dict[str, bool],
              features: list[str] | None) -> str:
    seeds = config.settings.seeds
    spread = "mean ± sample std over the seeds" if len(seeds) > 1 else "one seed, so no spread"
    heads = (f"the comparison heads with AVCA-GZSL's {config.recipe} recipe" if config.recipe is not None
             else "the comparison heads with the peers' shared training")
    compared = (f"{len(rows)} rows ({len(config.feature_stores)} feature settings x methods)" if features
                else f"{len(rows)} method(s)")
    lines = [f"# Benchmark: {title}, {compared}, {len(seeds)} seed(s)", "",
             *report.caveat_lines(caveats, "the methods"),
             f"{first.num_seen_classes} seen and {first.num_unseen_classes} unseen candidate classes, "
             f"{first.num_clips} test clips; seeds {', '.join(map(str, seeds))}; percent, {spread}. Every method ran "
             f"the same protocol (`<out>/{'<feature>/' if features else ''}<method>`): {_stages(config)}, tested "
             f"once. MZST with its own settings, {heads}. Chance: uniform guessing among the candidates.", "",
             *([f"Features: each row's token store (`feature_stores`), the same test clips in each: "
                f"{'; '.join(f'{name} = {path}' for name, path in named_stores(config.feature_stores).items())}.",
                ""] if features else []),
             *_beta_rule_lines(config, [row.label for row in rows], columns),
             report.comparison_markdown(rows, columns, first_column="Method", class_vectors=True, chance=chance,
                                        extra_columns={"Features": features} if features else None),
             "## Reading", "", *_reading(rows, columns, chance, config.protocol, len(seeds)), ""]
    return "\n".join(lines)


def _beta_rule_lines(config: BenchmarkConfig, methods: list[str], columns: tuple[str, ...]) -> list[str]:
    """Which beta rule the calibrated columns of each row used, when the peers' rule was asked for."""
    if config.beta_rule != "peers" or not any(key.startswith("calibrated_") for key in columns):
        return []
    peers = [m for m in methods if _beta_rule("peers", m) == "peers"]
    ours = [m for m in methods if m not in peers]
    line = (f"Calibrated stacking's beta: the peers' rule (the mean of the best audio, video and both betas on "
            f"validation) for {', '.join(peers) or 'no method'}")
    return [line + (f"; ours (the best HM of the head's decision) for {', '.join(ours)}, which score one way only."
                    if ours else "."), ""]


def _stages(config: BenchmarkConfig) -> str:
    """How the protocol chose what it tested, as its settings say."""
    settings = config.settings
    if config.protocol == "mzsl" and not settings.val_unseen_fraction:
        return "no stage 1 (the training options' epochs), trained on every training clip"
    chosen = "the epoch and the calibrated-stacking beta" if settings.calibrated_stacking else "the epoch"
    return f"{chosen} chosen on stage-1 validation, stage 2 retrained on training and validation clips"


def _reading(rows: list[ComparisonRow], columns: tuple[str, ...], chance: dict[str, float], protocol: str,
             seeds: int) -> list[str]:
    """Sentences that follow from the numbers: per headline column, the best method, its lead over the next
    against the seed spread, and the methods whose mean minus std does not clear chance."""
    lines = []
    for key in HEADLINE[protocol]:
        if key not in columns:
            continue
        ranked = sorted(((row.mean_std(key), row) for row in rows if not math.isnan(row.mean_std(key)[0])),
                        key=lambda item: -item[0][0])
        if not ranked:
            continue
        (best, best_std), leader = ranked[0]
        tied = [row.label for (mean, _), row in ranked if round(mean, 2) == round(best, 2)]  # as the table prints
        line = (f"- {_TITLES[key]}: highest `{leader.label}` ({report.format_mean_std(best, best_std)})"
                if len(tied) == 1 else f"- {_TITLES[key]}: " + ", ".join(f"`{m}`" for m in tied)
                + f" share the highest mean ({best:.2f})")
        if len(tied) == 1 and len(ranked) > 1:
            (second, second_std), runner_up = ranked[1]
            bound = (best_std or 0.0) + (second_std or 0.0)
            if seeds < 2:
                verdict = "one seed, no spread to judge it against"
            else:
                verdict = ("more than" if best - second > bound else "within") + f" the summed seed std {bound:.2f}"
            line += f", {best - second:.2f} ahead of `{runner_up.label}` ({verdict})"
        if key in chance:
            margin = " by more than one std" if seeds > 1 else ""
            low = [row.label for (mean, std), row in ranked if mean - (std or 0.0) <= chance[key]]
            line += (f"; not above chance {chance[key]:.2f}{margin}: " + ", ".join(f"`{m}`" for m in low) if low
                     else f"; every method is above chance {chance[key]:.2f}{margin}")
        lines.append(line + ".")
    return lines


def _plot(path: Path, rows: list[ComparisonRow], columns: tuple[str, ...], chance: dict[str, float],
          title: str) -> Path:
    from eval.plots import plot_comparison

    values = {f"{row.label} ({report.class_vectors_cell(row.peer_text_order)})": {
        _TITLES[key]: row.values[key] for key in columns} for row in rows}
    return plot_comparison(path, values, {_TITLES[key]: chance[key] for key in columns if key in chance}, title)
