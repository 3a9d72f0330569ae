"""Command line of the MZST toolkit: `python cli.py --help`.

This module only parses options, builds the stage's config dataclass and calls one public function of the
stage. An option that sets a config field is built from that field's declaration (`common.settings.setting`:
default, help, flag, choices), so the config modules are imported here; they import no torch, zarr or dask.
Heavy imports happen inside the commands so that `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from dataclasses import MISSING
from pathlib import Path

import click

from common.errors import InputError, interruptible, is_user_error
from common.settings import Setting, check_values, setting_of
from common.threads import set_requested_threads
from curate.config import (
    AVCAImportConfig,
    BuildConfig,
    FilmstripConfig,
    FilmstripLayout,
    MergeConfig,
    RelatednessConfig,
    SheetsConfig,
    SyntheticConfig,
)
from eval.config import ReportConfig
from extract.config import ExtractConfig
from features.config import RunnerConfig, StoreConfig
from fusion.config import RECIPE_DATASETS, FusionConfig, PeerImportConfig, TrainConfig
from workflows.config import AblateConfig, AVCAProtocolConfig, BenchmarkConfig, MZSLProtocolConfig, ZeroShotConfig
from workflows.demo import DemoConfig

# A config field named in a library message: `resume`, `resume=True`, `se_target='class'` (common.errors).
_FIELD = re.compile(r"`([a-z_][a-z0-9_]*)(?:=([^`]*))?`")
# Fields that a command sets through another option than their own.
_FIELD_OPTIONS = {"normalise_embeddings": "--ablation normalised"}

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
NEW_DIR = click.Path(file_okay=False, path_type=Path)
ANY_PATH = click.Path(path_type=Path)


def _user_errors(command):
    """One line for bad input (options named as this command's) and for Ctrl-C / SIGTERM (a resuming rerun named)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (InputError, OSError) as error:  # one line "Error: ..." with exit code 1 for what the user can fix
            if not is_user_error(error):  # anything else is a bug and keeps its traceback
                raise
            raise click.ClickException(_as_options(str(error), click.get_current_context().command)) from error

    return interruptible(wrapper, {"extract": "", "train-fusion": "--resume", "protocol": "", "demo": "", "ablate": "",
                                   "benchmark": ""})


def _as_options(message: str, command: click.Command) -> str:
    """Write each backticked config field of a library message as the command's option (`resume` -> --resume)."""
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}

    def option_text(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        option = options.get(name)
        if option is None:  # a field without a flag of its own: --option K=V where the command has it
            if "extra" in options and name not in _FIELD_OPTIONS and value is not None:
                return f"{options['extra'].opts[0]} {name}={value.strip().strip(chr(39))}"
            return _FIELD_OPTIONS.get(name, match.group(0))
        if option.is_flag:
            off = value is not None and value.strip() == "False"
            return (option.secondary_opts or [f"no {option.opts[0]}"])[0] if off else option.opts[0]
        return option.opts[0] if value is None else f"{option.opts[0]} {value.strip().strip(chr(39))}"

    return _FIELD.sub(option_text, message)


class _CommaList(click.ParamType):
    """A comma-separated list ("a, b,c" -> ("a", "b", "c"); blank items dropped unless `keep_blank`), items converted
    by `item`. With `keep_blank` ("a,,b" -> ("a", "", "b")) the config refuses the blank entries: a list of class
    names with a hole or ",,," is a mistake, not a shorter list."""

    name = "list"

    def __init__(self, item: type = str, keep_blank: bool = False) -> None:
        self.item, self.keep_blank = item, keep_blank

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        if not str(value).strip():  # not given
            return ()
        try:
            return tuple(self.item(part.strip()) for part in str(value).split(",") if self.keep_blank or part.strip())
        except ValueError:
            self.fail(f"expected comma-separated {self.item.__name__} values, got {value!r}", param, ctx)


class _KeyValue(click.ParamType):
    """KEY=VALUE with a JSON value (a string when it is not JSON; lists become tuples), as a (key, value) pair.

    The value's type is checked by the config it sets (`common.settings.check_fields`): text that is not JSON
    fits a text field, and a value that does not fit its field ("yes" for a flag, "abc" for a number) is one line
    naming the field and the type it takes.
    """

    name = "key=value"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = text
        return key.strip(), tuple(parsed) if isinstance(parsed, list) else parsed


NAMES = _CommaList(str)
CLASS_NAMES = _CommaList(str, keep_blank=True)
INTEGERS = _CommaList(int)


def _options(*options):
    """One decorator for a set of options several commands share."""

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


class _FieldOption(click.Option):
    """An option built from the declaration (`common.settings.setting`) of a field of the config class `config`."""

    def __init__(self, *args, config: type, setting: Setting, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.config, self.setting = config, setting


def _shown(setting: Setting) -> str:
    """A field's default as `--help` shows it ("" when there is nothing to show)."""
    default = setting.default
    if default is MISSING or default is None or default is False or default in ("", ()):
        return ""
    if default is True:
        return setting.flag.removeprefix("--")
    return ",".join(map(str, default)) if setting.sequence else str(default)


def _field_options(config_cls: type, *names: str, keep_base: bool = False, types: dict | None = None):
    """Options for fields of `config_cls`, each with the flag, type, choices, default and help its declaration gives.

    A bool field is a flag (`--x/--no-x` when it defaults to True); a tuple field takes comma-separated values; a
    path takes any path unless `types` names a click type for it. With `keep_base` an option is None unless given
    (the command starts from a recorded config, a preset or a protocol's own values) and its help still shows the
    field's default. A backticked field name in a help text becomes that field's option.
    """

    def build(name: str) -> click.Option:
        setting = setting_of(config_cls, name)
        if setting.help is None:
            raise TypeError(f"{config_cls.__name__}.{name} declares no help for the command line")
        text = re.sub(r"`(\w+)`", lambda m: _flag_of(config_cls, m.group(1)) or m.group(0), setting.help)
        required, shown = setting.required and not keep_base, _shown(setting)
        decls, kwargs = [setting.flag, name], {}
        if not required:  # click takes a given default, even None, as the value of a required option
            kwargs["default"] = None if keep_base else setting.default
        if setting.value_type is bool and setting.default is True:
            decls[0] = f"{setting.flag}/--no-{setting.flag.removeprefix('--')}"
        elif setting.value_type is bool:
            kwargs["is_flag"] = True
        else:
            kwargs["type"] = (types or {}).get(name) or _click_type(setting)
            if setting.sequence and kwargs.get("default") is not None:
                kwargs["default"] = shown
        if keep_base and shown:  # click would show a string default in parentheses: written as click writes values
            text += f"  [default: {shown}]"
        return click.option(*decls, cls=_FieldOption, config=config_cls, setting=setting, required=required,
                            show_default=bool(shown) and not keep_base, help=text, **kwargs)

    return _options(*(build(name) for name in names))


def _click_type(setting: Setting) -> click.ParamType | type:
    if setting.choices:
        return click.Choice(setting.choices)
    if setting.sequence:
        return _CommaList(setting.value_type)
    return ANY_PATH if setting.value_type is Path else setting.value_type


def _flag_of(config_cls: type, name: str) -> str | None:
    """The option of a field the command line sets (one with help), else None."""
    try:
        setting = setting_of(config_cls, name)
    except (KeyError, TypeError):
        return None
    return setting.flag if setting.help is not None else None


def _extra_option_for(fields: str, example: str):
    return click.option("--option", "extra", multiple=True, type=_KeyValue(),
                        help=f"Any other {fields} field as KEY=VALUE (JSON), e.g. --option {example}; repeatable.")


def _given(**values) -> dict:
    """The options the user gave: those that are not None (options without a default are None when not given)."""
    return {name: value for name, value in values.items() if value is not None}


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads (default: from the usable cores).")
def cli(verbose: bool, threads: int | None) -> None:
    """Multimodal (audio + video) zero-shot action recognition: MZST model and MZSL protocol.

    Stages: make-synthetic (built-in data) -> extract (frozen backbones to a token store) -> train-fusion
    (AVT fusion head on cached tokens) -> zeroshot (ZSL / GZSL on any class list).
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    set_requested_threads(threads)  # the rule for every stage's threads: common/threads.py


# --- commands -----------------------------------------------------------------------------------------
# Each command: options -> config dataclass -> one library call -> a one-line summary.


@cli.command("make-synthetic")
@click.argument("out_dir", type=NEW_DIR)
@_field_options(SyntheticConfig, "classes", "clips_per_class", "seconds", "unseen_fraction", "seed", "embedding_table",
                "vectors", "pretraining_classes", "workers")
@_user_errors
def make_synthetic(out_dir: Path, **options) -> None:
    """Render the built-in synthetic audio-visual benchmark into OUT_DIR.

    Real H.264 / AAC mp4 clips whose picture and sound are a fixed function of real class names' embeddings,
    plus manifest.csv, classes.csv, benchmark.json and README.md (docs/synthetic.md).
    """
    from curate.synthetic import make_synthetic

    config = SyntheticConfig(out_dir=out_dir, **options)
    summary = make_synthetic(config, progress=True)
    click.echo(f"Wrote {summary.n_clips} clips ({len(summary.seen_classes)} seen / {len(summary.unseen_classes)} "
               f"unseen classes, {summary.n_no_audio} without audio, {summary.n_portrait} portrait) in "
               f"{summary.elapsed_s:.1f} s: {summary.manifest_path}")


# --- the main job --------------------------------------------------------------------------------------


@cli.command("demo")
@_field_options(DemoConfig, "out", "seeds", "epochs", "se_target", "progress", types={"out": NEW_DIR})
@_user_errors
def demo_command(**options) -> None:
    """Run the whole pipeline on the built-in synthetic benchmark and print the ZSL / GZSL table.

    make-synthetic -> extract (cpu-small, random-init backbones) -> train-fusion (one run per seed, plus a control
    with shuffled class embeddings) -> zeroshot -> OUT/demo_results.json and OUT/report/.
    """
    from workflows.demo import objective_text, run_demo

    result = run_demo(DemoConfig(**options))
    r = result.results
    click.echo(f"\n{r['note']}\n\n{objective_text(r)}\n\n{result.table}\n")
    click.echo(f"ZSL {r['zsl']:.2f}% = {r['zsl_over_chance']:.1f}x chance ({r['chance_zsl']:.2f}%); control "
               f"{r['control_zsl']:.2f}% = {r['control_zsl_over_chance']:.1f}x chance. {r['seconds']:.0f} s. "
               f"Results: {result.results_path}; report: {result.report_dir / 'README.md'}")


# --- features: extract, inspect ------------------------------------------------------------------------


@cli.command("extract")
@_field_options(RunnerConfig, "videos", "out", "gpus", "workers", "scheduler")
@click.option("--profile", type=click.Choice(["paper", "mvit-1x5", "cpu-small", "clipclap", "clipclap-cpu-small"]),
              default="paper", show_default=True, help="Extraction preset (docs/extract.md): paper = 3 crops x 4 "
              "views, MViT-v2-S + AST ViT-B; clipclap = CLIP ViT-B/32 middle frame + CLAP audio, as ClipClap-GZSL.")
@click.option("--crops", type=click.Choice(["1", "3"]), default=None, help="Crops per temporal view (profile's).")
@click.option("--temporal-views", type=int, default=None,
              help="Temporal views per clip (profile's); a clip has crops x temporal views views in all.")
@click.option("--batch-views", type=int, default=None, help="Video views per backbone forward (profile's).")
@_field_options(RunnerConfig, "video_weights", "kinetics_head", "audio_weights", "retry_failed", "progress", "wait",
                types={"video_weights": click.Path(exists=True, path_type=Path), "kinetics_head": EXISTING_FILE,
                       "audio_weights": click.Path(exists=True, path_type=Path)})
@_field_options(ExtractConfig, "random_init", "full_tokens", "compile", "strict_media")
@_field_options(StoreConfig, "clips_per_block", "shard_blocks")
@_extra_option_for("extraction (extract/config.py; video.X for a view setting)", "precision=fp32")
@_user_errors
def extract_command(videos: Path, out: Path, crops: str | None, clips_per_block: int, shard_blocks: bool, extra,
                    **options) -> None:
    """Run the frozen backbones over every clip into a Zarr token store (resumable; bad clips are recorded)."""
    from features.runner import build_extract_config, run_extraction

    run = {name: options.pop(name) for name in ("workers", "scheduler", "video_weights", "kinetics_head",
                                                "audio_weights", "retry_failed", "progress", "wait")}
    run["gpus"] = options["gpus"]
    extract = build_extract_config(crops=int(crops) if crops else None, options=dict(extra), **options)
    store = StoreConfig(clips_per_block=clips_per_block, shard_blocks=shard_blocks)
    summary = run_extraction(RunnerConfig(videos=videos, out=out, extract=extract, store=store, **run))
    click.echo(f"{summary.store}: {summary.extracted} extracted, {summary.failed} failed, {summary.skipped} skipped, "
               f"{summary.pending} pending of {summary.clips} clips; {summary.clips_per_second:.2f} clips/s in "
               f"{summary.seconds:.1f} s" + (f"; failures: {summary.failures_csv}" if summary.failures_csv else ""))
    if summary.block_errors:
        raise click.ClickException(f"{len(summary.block_errors)} block(s) hit errors, their clips stay pending "
                                   f"(re-run to retry): {summary.block_errors[0]}")


@cli.command("inspect")
@click.argument("store", type=ANY_PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the full summary as JSON (for scripts).")
@click.option("--disk-usage", is_flag=True, help="Also add up the size of every file of the store (slow when large).")
@_user_errors
def inspect_command(store: Path, as_json: bool, disk_usage: bool) -> None:
    """Summarise a token store: clip counts by status and split, layout, config and provenance."""
    from features.store import TokenStore
    from features.summary import summary_text

    summary = TokenStore.open(store).summary(disk_usage)
    click.echo(json.dumps(summary, indent=2) if as_json else summary_text(summary))


# --- fusion: train-fusion -----------------------------------------------------------------------------


# How a head trains (train-fusion's options; ablate trains every row with them).
_extra_option = _extra_option_for("training", "width=256")
_training_options = _options(
    _extra_option,
    click.option("--preset", type=click.Choice(["default", "demo"]), default=None,
                 help="Head size: default (width 512, 4 blocks, 8 heads) or demo (width 128, 2 blocks, 4 heads)."),
    click.option("--ablation", "ablations", multiple=True,
                 type=click.Choice(["concat", "no-text", "no-se", "no-mlm", "normalised", "audio-only", "video-only",
                                     "task", "sequential", "eq5"]),
                 help="Paper ablation (Tables 7, 8; repeatable): concat = no fusion, no-text = bottleneck without "
                      "text, no-se = SE regresses phi(class) only, no-mlm, normalised embeddings, one modality, "
                      "task = L_TASK only (ConSE), sequential = eq. 2's fusion order, eq5 = SE weight 1."),
    _field_options(TrainConfig, "val_store", "val_splits", "val_unseen_fraction", "val_seen_fraction", keep_base=True),
    _field_options(TrainConfig, "select_by", keep_base=True),
    _field_options(TrainConfig, "test_seen_fraction", "shuffle_class_embeddings", "train_splits", "classes_file",
                   "embeddings", "name_map", "missing", "peer_text_order", keep_base=True),
    _field_options(FusionConfig, "se_target", "view_mode", "conse_top_t", keep_base=True),
    _field_options(TrainConfig, "epochs", "batch_size", "lr", "weight_decay", "lr_schedule", "warmup_epochs",
                   "grad_clip_norm", "device", "progress", "require_complete", keep_base=True),
)


@cli.group("store")
def store_group() -> None:
    """Token store maintenance."""


@store_group.command("convert")
@click.argument("source", type=EXISTING_DIR)
@click.argument("out", type=NEW_DIR)
@_field_options(StoreConfig, "clips_per_block")
@_user_errors
def store_convert_command(source: Path, out: Path, clips_per_block: int) -> None:
    """Copy a store made in one file per clip into shards (same clips, values and identity; far fewer files)."""
    from features.convert import convert_store

    store = convert_store(source, out, clips_per_block)
    click.echo(f"{out}: {store.num_clips} clips, layout {store.clips_per_shard} clips per shard; {source} is unchanged")


@cli.command("train-fusion")
@_field_options(TrainConfig, "store", "out", keep_base=True)
@click.option("--config", "config_file", type=EXISTING_FILE, default=None,
              help="A run's config.json (or a TrainConfig JSON) to start from; explicit options override it.")
@_training_options
@_field_options(TrainConfig, "method", "recipe", "seed", "resume", keep_base=True)
@_user_errors
def train_fusion_command(config_file: Path | None, preset: str | None, ablations: tuple[str, ...], extra, **options):
    """Train the MZST fusion head, or a comparison head (--method), on a token store (writes config, classes,
    checkpoints, log to --out)."""
    from fusion.config import train_config_from_options
    from fusion.trainer import train

    base = None
    if config_file is not None:
        try:
            recorded = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise click.BadParameter(f"{config_file}: not a JSON file ({error})", param_hint="--config") from error
        base = recorded.get("train", recorded) if isinstance(recorded, dict) else None
        if not isinstance(base, dict):
            raise click.BadParameter(f"{config_file}: not a training config (a JSON object)", param_hint="--config")
        check_values(TrainConfig, base, str(config_file))  # a value of the wrong type: one line naming the file
    given = {**_given(**options), **dict(extra)}
    if config_file is not None and "train" in recorded and "out" not in given:
        given["out"] = config_file.parent  # a run's own config.json: the run is where that file is now
    config = train_config_from_options(given, base=base, preset=preset, ablations=ablations)
    summary = train(config)
    best = ("no validation, only last.pt" if summary.best_epoch is None
            else f"best epoch {summary.best_epoch} by {summary.best_metric} {100 * summary.best_score:.2f}")
    click.echo(f"trained {summary.epochs} epochs on {summary.train_clips} clips of {summary.num_classes} classes "
               f"({summary.val_clips} validation clips; {best}); run in {summary.run_dir}")


# --- eval: zeroshot -----------------------------------------------------------------------------------


@cli.command("zeroshot")
@_field_options(ZeroShotConfig, "run_dir", "store", "checkpoint", "classes", "class_names", "seen", "unseen", "rule",
                "calibrated_stacking", "beta_rule", "val_split", "val_store", "splits", "include_training_clips", "out",
                "label", "top_k", "missing", types={"run_dir": EXISTING_DIR, "store": EXISTING_DIR,
                                           "classes": EXISTING_FILE, "class_names": CLASS_NAMES,
                                           "seen": EXISTING_FILE, "unseen": EXISTING_FILE, "val_store": EXISTING_DIR,
                                           "out": NEW_DIR})
@click.option("--no-plots", is_flag=True, help="Skip the t-SNE and per-class accuracy figures.")
@_field_options(ZeroShotConfig, "batch_size", "device")
@_user_errors
def zeroshot_command(no_plots: bool, **options) -> None:
    """Zero-shot recognition: nearest class per clip, ZSL and GZSL S / U / HM (or a ranking of any class names)."""
    from eval.config import PlotConfig
    from workflows.zeroshot import run_zeroshot

    config = ZeroShotConfig(**options, plots=PlotConfig(tsne=not no_plots, per_class_bars=not no_plots))
    click.echo(run_zeroshot(config).summary() + (f"; wrote {config.out}" if config.out is not None else ""))


# --- eval: protocol -----------------------------------------------------------------------------------


# Options shared by the protocols: how the head trains (the protocol decides which clips).
_protocol_training_options = _options(
    click.option("--epochs", type=int, default=None, help="Stage-1 epochs (the most stage 2 can get)."),
    click.option("--lr", type=float, default=None, help="Peak learning rate (default: train-fusion's)."),
    click.option("--train-batch-size", type=int, default=None, help="Training batch size."),
    click.option("--embeddings", default=None,
                 help="Class-name embedding source spec (avca: default AVCA's table; mzsl: glove-6b-50d)."),
    _field_options(TrainConfig, "peer_text_order", keep_base=True),
    click.option("--preset", default=None, help="Head size preset of train-fusion (e.g. default, demo)."),
    click.option("--ablation", "ablations", multiple=True, help="Ablation of train-fusion; repeatable."),
    _extra_option,
    # the same fields, with the same defaults, in both protocols' configs
    _field_options(AVCAProtocolConfig, "calibrated_stacking", "beta_rule", "seeds", "batch_size", "device"),
    click.option("--no-plots", is_flag=True, help="Skip the t-SNE and per-class accuracy figures."),
)


# The head a protocol trains (a benchmark sets it per row).
_method_options = _options(
    click.option("--method", default=None,
                 help="The head: mzst (default) or a comparison head (fusion.heads: devise ... avca, tcaf, clipclap)."),
    click.option("--recipe", type=click.Choice(RECIPE_DATASETS), default=None,
                 help="A comparison head's training as AVCA-GZSL ran it on this dataset."),
)


def _protocol_settings(epochs, lr, train_batch_size, embeddings, peer_text_order, preset, ablations, method, recipe,
                       extra, calibrated_stacking, seeds, batch_size, device, no_plots, **fields) -> dict:
    """The protocol config fields: the command's own (`fields`) and those the shared options give."""
    from eval.config import PlotConfig

    train = {**_given(epochs=epochs, lr=lr, batch_size=train_batch_size, embeddings=embeddings,
                      peer_text_order=peer_text_order, method=method, recipe=recipe), **dict(extra)}
    return dict(fields, train=train, preset=preset, ablations=tuple(ablations), calibrated_stacking=calibrated_stacking,
                seeds=seeds, device=device, batch_size=batch_size,
                plots=PlotConfig(tsne=not no_plots, per_class_bars=not no_plots))


@cli.group("protocol")
def protocol_group() -> None:
    """Run an evaluation protocol end to end: train (stage 1 selects, stage 2 retrains), test once, report."""


@protocol_group.command("avca")
@click.option("--dataset", required=True, type=click.Choice(["UCF", "ActivityNet", "VGGSound"], case_sensitive=False),
              help="Benchmark whose shipped split files define the stages.")
@_field_options(AVCAProtocolConfig, "store", "out", "split", types={"store": EXISTING_DIR, "out": NEW_DIR})
@_protocol_training_options
@_method_options
@_user_errors
def protocol_avca_command(dataset: str, store: Path, out: Path, split: str, **training) -> None:
    """AVCA two-stage protocol: select epoch (and beta) on stage-1 validation, retrain on train + val, test once."""
    from workflows.protocols import run_avca_protocol

    config = AVCAProtocolConfig(dataset=dataset, store=store, out=out, split=split, **_protocol_settings(**training))
    click.echo(run_avca_protocol(config).summary() + f"; wrote {out}")


@protocol_group.command("mzsl")
@_field_options(MZSLProtocolConfig, "train_store", "eval_store", "groups", "out", "allow_overlap", "near_duplicates",
                "train_splits", "test_split", "val_unseen_fraction", types={"train_store": EXISTING_DIR,
                                                                            "eval_store": EXISTING_DIR,
                                                                            "groups": EXISTING_FILE, "out": NEW_DIR})
@_protocol_training_options
@_method_options
@_user_errors
def protocol_mzsl_command(out: Path, test_split: str, **options) -> None:
    """MZSL-50 protocol: train on a benchmark, ZSL by easy / medium / hard group and GZSL on the evaluation set."""
    from workflows.protocols import run_mzsl_protocol

    test_split = None if test_split.lower() == "none" else test_split
    config = MZSLProtocolConfig(out=out, test_split=test_split, **_protocol_settings(**options))
    click.echo(run_mzsl_protocol(config).summary() + f"; wrote {out}")


@cli.command("ablate")
@_field_options(AblateConfig, "store", "out", "rows", "seeds", types={"store": EXISTING_DIR, "out": NEW_DIR})
@_training_options
@_user_errors
def ablate_command(store: Path, out: Path, rows, seeds, preset, ablations, device, extra, **options) -> None:
    """Train and evaluate every ablation row (the paper's Table 7) with the same split and seeds; print the table."""
    from workflows.ablate import run_ablation

    config = AblateConfig(store=store, out=out, rows=rows, seeds=seeds, train={**_given(**options), **dict(extra)},
                          preset=preset, ablations=ablations, device=device or "cpu")
    result = run_ablation(config)
    click.echo(result.markdown)
    click.echo(f"{result.summary()}; wrote {result.json_path} and {result.markdown_path}")


@cli.command("benchmark")
@_field_options(BenchmarkConfig, "protocol", "methods", "recipe", "feature_stores", "out", types={"out": NEW_DIR})
@click.option("--dataset", type=click.Choice(["UCF", "ActivityNet", "VGGSound"], case_sensitive=False), default=None,
              help="avca: the benchmark whose shipped split files define the stages.")
@_field_options(AVCAProtocolConfig, "store", "split", keep_base=True, types={"store": EXISTING_DIR})
@_field_options(MZSLProtocolConfig, "train_store", "eval_store", "groups", "allow_overlap", "train_splits",
                "test_split", "val_unseen_fraction", keep_base=True,
                types={"train_store": EXISTING_DIR, "eval_store": EXISTING_DIR, "groups": EXISTING_FILE})
@_protocol_training_options
@_user_errors
def benchmark_command(protocol: str, methods, recipe, feature_stores, out: Path, **options) -> None:
    """Every method (mzst and the comparison heads) through one protocol and every seed: the paper's table."""
    from workflows.benchmark import run_benchmark

    settings = _protocol_settings(method=None, recipe=None, **options)  # the benchmark sets them per row
    config = BenchmarkConfig.of(protocol, settings, out=out, methods=methods, recipe=recipe,
                                feature_stores=feature_stores)
    result = run_benchmark(config)
    click.echo(result.markdown)
    click.echo(f"{result.summary()}; wrote {', '.join(str(p) for p in result.paths)}")


# --- eval: report -------------------------------------------------------------------------------------


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, type=EXISTING_DIR)
@_field_options(ReportConfig, "out", "group_seeds", types={"out": NEW_DIR})
@_user_errors
def report_command(runs: tuple[Path, ...], out: Path | None, group_seeds: bool) -> None:
    """Compare evaluated runs side by side (each RUN folder holds a metrics.json from zeroshot / protocol)."""
    from eval.report import write_report

    summary = write_report(ReportConfig(runs=runs, out=out, group_seeds=group_seeds))
    click.echo(summary.markdown, nl=False)
    where = f"; wrote {', '.join(str(p) for p in summary.paths)}" if summary.paths else ""
    click.echo(f"{len(runs)} runs in {len(summary.rows)} rows{where}")


# --- eval: import-avca --------------------------------------------------------------------------------


@cli.command("import-avca")
@_field_options(AVCAImportConfig, "features", types={"features": EXISTING_DIR})
@click.option("--dataset", required=True, type=click.Choice(["UCF", "ActivityNet", "VGGSound"], case_sensitive=False),
              help="Benchmark whose all_class.txt names the class files.")
@_field_options(AVCAImportConfig, "out", "stages", "trust_pickle", "sequence_tokens")
@_user_errors
def import_avca_command(**options) -> None:
    """Import AVCA-GZSL (.h5) or TCAF (.pkl) features into a token store that fusion heads train on."""
    from curate.importers import import_avca_features

    summary = import_avca_features(AVCAImportConfig(**options))
    click.echo(f"imported {summary.clips} clips of {summary.classes} classes ({summary.format}, "
               f"{summary.duplicates} repeated across stages) into {summary.store}")


@cli.command("import-peer-model")
@_field_options(PeerImportConfig, "method", "checkpoint", "dataset", "out", "split", "stage", "embeddings", "name_map",
                "peer_text_order", types={"checkpoint": EXISTING_FILE, "out": NEW_DIR})
@_user_errors
def import_peer_model_command(**options) -> None:
    """Make a run directory of a checkpoint of AVCA-GZSL's, TCAF-GZSL's or ClipClap-GZSL's own code, for zeroshot."""
    from fusion.peer_checkpoint import import_peer_model

    run = import_peer_model(PeerImportConfig(**options))
    click.echo(f"imported {run.method} (epoch {run.epoch}, {run.classes} training classes, video {run.dims.video_dim} "
               f"+ audio {run.dims.audio_dim} -> {run.dims.embedding_dim}) into {run.run_dir}")


# --- curate: manifests of dataset downloads -----------------------------------------------------------------


@cli.group("manifest")
def manifest_group() -> None:
    """Write the manifest of a dataset download (docs/datasets.md), for extract and the protocols."""


@manifest_group.command("avca")
@click.option("--dataset", required=True, type=click.Choice(["ucf", "vggsound", "activitynet"], case_sensitive=False),
              help="AVCA-GZSL benchmark whose split files name the videos.")
@click.option("--split", default="main_split", show_default=True, type=click.Choice(["main_split", "cls_split"]),
              help="Benchmark split (main_split: SeLaVi features; cls_split: C3D / VGGish).")
@click.option("--videos", required=True, type=EXISTING_DIR,
              help="The download folder, scanned recursively: UCF-101 Class/v_*.avi; VGGSound <ytid>_<start:06d>.*, "
                   "<ytid>_<start>_<end>.* or full videos <ytid>.*; ActivityNet full videos v_<ytid>.*.")
@click.option("--annotations", type=EXISTING_FILE, default=None,
              help="ActivityNet's activity_net.v1-3.min.json: its i-th segment of a video is AVCA's id <ytid>_<i>.")
@click.option("--out", required=True, type=ANY_PATH,
              help="The manifest CSV (clip_id,path,class_name,split,...); ids not found go to NAME.missing.csv.")
@_user_errors
def manifest_avca_command(dataset: str, split: str, videos: Path, annotations: Path | None, out: Path) -> None:
    """One manifest row per AVCA video found: clip_id = AVCA's id, split = its stage (what protocol avca reads),
    start_s,end_s where the clip is a segment of a longer video."""
    from curate.config import AVCAManifestConfig
    from curate.manifests import write_avca_manifest

    click.echo(write_avca_manifest(AVCAManifestConfig(dataset=dataset, videos=videos, out=out, split=split,
                                                      annotations=annotations)).report())


def _dataset_manifest_command(dataset: str, lists_help: str, lists_option: str, fold: bool = False):
    """`manifest <dataset>`: the whole official dataset from its own lists (one command per dataset)."""
    list_type = EXISTING_DIR if dataset == "ucf101" else EXISTING_FILE

    @click.option("--videos", required=True, type=EXISTING_DIR, help="The download folder, scanned recursively.")
    @click.option(lists_option, "lists", required=True, multiple=dataset == "kinetics", type=list_type, help=lists_help)
    @click.option("--out", required=True, type=ANY_PATH,
                  help="The manifest CSV (clip_id,path,class_name,split,start_s,end_s); missing clips go to "
                       "NAME.missing.csv beside it.")
    @_user_errors
    def command(videos: Path, lists, out: Path, fold: int = 1) -> None:
        from curate.config import DatasetManifestConfig
        from curate.manifests import write_dataset_manifest

        lists = tuple(lists) if isinstance(lists, tuple) else (lists,)
        click.echo(write_dataset_manifest(DatasetManifestConfig(dataset=dataset, videos=videos, lists=lists, out=out,
                                                                fold=fold)).report())

    command.__doc__ = (f"The whole {dataset} dataset from its own lists: split = the dataset's own, clip ids as "
                       "the dataset names its clips (docs/datasets.md).")
    if fold:
        command = click.option("--fold", type=click.IntRange(1, 3), default=1, show_default=True,
                               help="UCF-101's train / test split.")(command)
    return manifest_group.command(dataset)(command)


_dataset_manifest_command("ucf101", "UCF-101's ucfTrainTestlist folder (trainlist0N.txt, testlist0N.txt).", "--lists",
                          fold=True)
_dataset_manifest_command("vggsound", "vggsound.csv (youtube_id,start_seconds,label,split).", "--csv")
_dataset_manifest_command("activitynet", "activity_net.v1-3.min.json (every annotated segment is a clip).",
                          "--annotations")
_dataset_manifest_command("kinetics", "An official Kinetics CSV (label,youtube_id,time_start,time_end,split); "
                                      "repeatable (train.csv, validate.csv, test.csv).", "--csv")


# --- curate: relatedness, and building an evaluation set ---------------------------------------------------


# Options shared by relatedness and curate select (whose fields are the same): the seen lists, the embeddings (phi of
# eq. 1) and the SR edges.
_relatedness_options = _field_options(RelatednessConfig, "seen", "edges", "embeddings", "name_map", "missing",
                                      "compare", types={"name_map": click.Path(dir_okay=False, path_type=Path)})


@cli.command("relatedness")
@click.option("--classes", required=True,
              help="Class file (one name per line; blank lines and # comments ignored) or a shipped list: "
                   "kinetics400, kinetics600, kinetics700, ucf101, hmdb51, activitynet, vggsound.")
@_relatedness_options
@click.option("--out-dir", type=NEW_DIR, default=Path("runs/relatedness"), show_default=True,
              help="Folder for relatedness.csv, .png (histogram), .md (summary) and .json.")
@_user_errors
def relatedness_command(classes: str, out_dir: Path, **embedding) -> None:
    """Semantic relatedness SR of each class to the seen datasets (the paper's equation 1), its group and flags."""
    from curate.relatedness import run_relatedness

    summary = run_relatedness(RelatednessConfig(classes=classes, out_dir=out_dir, **embedding))
    counts = ", ".join(f"{group} {count}" for group, count in summary.counts.items())
    other = "" if summary.compare_counts is None else "; under --compare: " + ", ".join(
        f"{group} {count}" for group, count in summary.compare_counts.items())
    click.echo(f"{summary.n_classes} classes vs {','.join(summary.seen)}: {counts}; "
               f"SR < 0.2: {summary.share_sr_below_0_2:.1%}{other}; wrote {summary.csv_path.parent}")


@cli.group("curate")
def curate_group() -> None:
    """Build an MZSL-style evaluation set (docs/curation.md): select -> filmstrips -> sheets -> merge -> build."""


@curate_group.command("select")
@click.option("--candidates", required=True, help="Candidate class names: a file (one per line) or a shipped list.")
@_relatedness_options
@click.option("--reference", default="ucf101", show_default=True, help="A shipped list whose SR groups are printed "
              "beside the candidates' (vs the other standard lists); 'none': no reference.")
@click.option("--out-dir", required=True, type=NEW_DIR, help="Folder for classes.csv, relatedness.csv/.png/.md/.json.")
@_user_errors
def curate_select_command(reference: str, **options) -> None:
    """Keep candidate classes between the overlap and hard SR edges, graded easy / medium / hard."""
    from curate.config import SelectConfig
    from curate.select import select_classes

    summary = select_classes(SelectConfig(reference=None if reference == "none" else reference, **options))
    click.echo(f"{summary.distribution_table()}\nkept {len(summary.kept)} of {summary.n_candidates} candidate classes; "
               f"class table {summary.classes_path}")


@curate_group.command("filmstrips")
@click.option("--videos", required=True, type=click.Path(exists=True, path_type=Path),
              help="Candidate videos: CSV with path,class_name (paths relative to it) or a folder <class>/<video>.")
@click.option("--out-dir", required=True, type=NEW_DIR, help="Folder for filmstrips/, filmstrips.csv (index), "
              "failures.csv; a rerun skips the videos done, a new batch adds to the index.")
@click.option("--classes", type=EXISTING_FILE, default=None, help="Class table of curate select: its classes only.")
@_field_options(FilmstripLayout, "rows", "columns", "seconds_per_frame", "max_pages", "cell_width_px", "cell_height_px",
                "image_format", "jpeg_quality")
@_field_options(FilmstripConfig, "workers")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress.")
@_user_errors
def curate_filmstrips_command(videos: Path, out_dir: Path, classes: Path | None, workers: int, progress: bool,
                              **layout_options) -> None:
    """Filmstrips of 10 x 10 frames at 1 fps, as many pages as a video needs; failed videos go to failures.csv."""
    from curate.render import make_filmstrips

    layout = FilmstripLayout(**layout_options)
    s = make_filmstrips(FilmstripConfig(videos=videos, out_dir=out_dir, classes=classes, layout=layout,
                                        workers=workers, progress=progress))
    click.echo(f"{s.n_ok} filmstrips ({s.n_pages} pages; {s.n_widened} at a wider stride), {s.n_failed} videos failed"
               + (f", {s.n_skipped} skipped (class not in the table)" if s.n_skipped else "")
               + (f", {s.n_done_before} done before" if s.n_done_before else "")
               + f"; {s.videos_per_s:.1f} videos/s; index {s.index_path} ({s.n_index} videos)")


@curate_group.command("sheets")
@click.option("--filmstrips", required=True, type=EXISTING_FILE, help="The filmstrips.csv index of curate filmstrips.")
@click.option("--reviewers", required=True, type=NAMES, help="Comma-separated reviewers; one sheet <name>.csv each.")
@click.option("--out-dir", required=True, type=NEW_DIR, help="Folder for the sheets (never overwritten).")
@_field_options(SheetsConfig, "seed")
@_user_errors
def curate_sheets_command(**options) -> None:
    """Write one blank annotation sheet per reviewer (label each video yes / no / unsure, optionally a span)."""
    from curate.sheets import make_sheets

    summary = make_sheets(SheetsConfig(**options))
    click.echo(f"{len(summary.sheets)} sheets of {summary.n_videos} videos ({summary.n_failed} without a filmstrip "
               f"left out) in {options['out_dir']}")


@curate_group.command("merge")
@click.argument("sheets", nargs=-1, required=True, type=EXISTING_FILE)
@click.option("--out-dir", required=True, type=NEW_DIR, help="Folder for decisions.csv, agreement.json, agreement.md.")
@_field_options(MergeConfig, "min_reviewers")
@_user_errors
def curate_merge_command(**options) -> None:
    """Merge filled SHEETS (one per reviewer): keep all-yes videos, drop mixed ones, report Fleiss' / Cohen's kappa."""
    from curate.merge import merge_annotations

    s = merge_annotations(MergeConfig(**options))
    kappa = "n/a" if s.fleiss_kappa is None else f"{s.fleiss_kappa:.3f}"
    click.echo(f"{s.n_videos} videos, {len(s.reviewers)} reviewers: " + ", ".join(f"{d} {n}" for d, n in s.decisions
               .items()) + f"; Fleiss' kappa {kappa}; unanimous {s.unanimous:.1%}; wrote {options['out_dir']}")


@curate_group.command("build")
@click.option("--decisions", required=True, type=EXISTING_FILE, help="decisions.csv of curate merge.")
@click.option("--classes", required=True, type=EXISTING_FILE, help="Class table of curate select (class_name,...).")
@click.option("--filmstrips", required=True, type=EXISTING_FILE, help="filmstrips.csv index of curate filmstrips.")
@click.option("--out-dir", required=True, type=NEW_DIR, help="Folder for manifest.csv, classes.csv, dropped.csv, "
              "statistics.md, videos_per_class.png.")
@_field_options(BuildConfig, "min_videos_per_class")
@_field_options(BuildConfig, "edges", "require_audio")
@_user_errors
def curate_build_command(**options) -> None:
    """Write the evaluation set: manifest (split unseen, group, SR), class table, Table 2 / Fig. 3 statistics."""
    from curate.build import build_evaluation_set

    s = build_evaluation_set(BuildConfig(**options))
    groups = ", ".join(f"{g} {n['classes']}/{n['videos']}" for g, n in s.groups.items())
    silent = sum(n for n, _ in s.without_audio.values())
    click.echo(f"{s.n_classes} classes, {s.n_videos} videos (classes/videos: {groups}); {sum(s.dropped.values())} "
               f"videos dropped; {silent} without audio (statistics.md); manifest {s.manifest_path}")


if __name__ == "__main__":
    cli()
