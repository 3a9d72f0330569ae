"""Command line of the MZST toolkit: `python cli.py --help`.

This module only parses options, builds the stage's config dataclass and calls one public function of the
stage. Heavy imports (torch, zarr, dask) happen inside the commands so that `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from pathlib import Path

import click

from common.errors import InputError, interruptible, is_user_error
from common.threads import set_requested_threads

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

    return interruptible(wrapper, {"extract": "", "train-fusion": "--resume", "protocol": "", "demo": "", "ablate": ""})


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
    """A comma-separated list ("a, b,c" -> ("a", "b", "c"); blank items dropped), items converted by `item`."""

    name = "list"

    def __init__(self, item: type = str) -> None:
        self.item = item

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(self.item(part.strip()) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"expected comma-separated {self.item.__name__} values, got {value!r}", param, ctx)


class _KeyValue(click.ParamType):
    """KEY=VALUE with a JSON value (a string when it is not JSON; lists become tuples), as a (key, value) pair."""

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
INTEGERS = _CommaList(int)


def _options(*options):
    """One decorator for a set of options several commands share."""

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


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


# Option defaults repeat curate.config.SyntheticConfig's so that --help shows them without importing the
# library; tests/curate/test_synthetic.py checks that they agree.
@cli.command("make-synthetic")
@click.argument("out_dir", type=NEW_DIR)
@click.option("--classes", type=int, default=24, show_default=True,
              help="Number of classes drawn from the embedding table.")
@click.option("--clips-per-class", type=int, default=8, show_default=True, help="Clips rendered per class.")
@click.option("--seconds", type=float, default=4.0, show_default=True,
              help="Nominal clip length in seconds; each clip lasts seconds x U(0.75, 1.25).")
@click.option("--unseen-fraction", type=float, default=0.25, show_default=True,
              help="Share of the classes held out as unseen.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the class draw, the split and every clip; same seed, same bytes.")
@click.option("--embedding-table", type=click.Choice(["vggsound", "ucf", "activitynet"]), default="vggsound",
              show_default=True, help="Shipped 300-d class-name embeddings the classes come from.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Processes rendering and encoding clips (the output does not depend on it).")
@_user_errors
def make_synthetic(out_dir: Path, **options) -> None:
    """Render the built-in synthetic audio-visual benchmark into OUT_DIR.

    Real H.264 / AAC mp4 clips whose picture and sound are a fixed function of real class names' embeddings,
    plus manifest.csv, classes.csv, benchmark.json and README.md (docs/synthetic.md).
    """
    from curate.config import SyntheticConfig
    from curate.synthetic import make_synthetic

    config = SyntheticConfig(out_dir=out_dir, **options)
    summary = make_synthetic(config, progress=True)
    click.echo(f"Wrote {summary.n_clips} clips ({len(summary.seen_classes)} seen / {len(summary.unseen_classes)} "
               f"unseen classes, {summary.n_no_audio} without audio, {summary.n_portrait} portrait) in "
               f"{summary.elapsed_s:.1f} s: {summary.manifest_path}")


# --- the main job --------------------------------------------------------------------------------------


@cli.command("demo")
@click.option("--out", type=NEW_DIR, default=Path("runs/demo"), show_default=True,
              help="Folder for the benchmark, store, runs and report; a second run reuses what is finished.")
@click.option("--seeds", type=INTEGERS, default="0,1,2", show_default=True,
              help="Comma-separated training seeds (mean +- std).")
@click.option("--epochs", type=int, default=40, show_default=True, help="Training epochs per run.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@_user_errors
def demo_command(out: Path, seeds: tuple[int, ...], epochs: int, progress: bool) -> None:
    """Run the whole pipeline on the built-in synthetic benchmark and print the ZSL / GZSL table.

    make-synthetic -> extract (cpu-small, random-init backbones) -> train-fusion (one run per seed, plus a control
    with shuffled class embeddings) -> zeroshot -> OUT/demo_results.json and OUT/report/.
    """
    from workflows.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=out, seeds=seeds, epochs=epochs, progress=progress))
    r = result.results
    click.echo(f"\n{r['note']}\n\n{result.table}\n")
    click.echo(f"ZSL {r['zsl']:.2f}% = {r['zsl_over_chance']:.1f}x chance ({r['chance_zsl']:.2f}%); control "
               f"{r['control_zsl']:.2f}% = {r['control_zsl_over_chance']:.1f}x chance. {r['seconds']:.0f} s. "
               f"Results: {result.results_path}; report: {result.report_dir / 'README.md'}")


# --- features: extract, inspect ------------------------------------------------------------------------


@cli.command("extract")
@click.option("--videos", required=True, type=ANY_PATH,
              help="A manifest CSV (clip_id,path,class_name,split[,start_s,end_s]), a folder, or a video.")
@click.option("--out", required=True, type=ANY_PATH,
              help="Token store to create, or to resume when it exists (same config and clip list).")
@click.option("--gpus", type=int, default=0, show_default=True,
              help="GPUs to use: one Dask worker process per GPU (0: CPU).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="CPU worker processes when --gpus 0 (1 runs in this process).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler to run on (multi-node).")
@click.option("--profile", type=click.Choice(["paper", "mvit-1x5", "cpu-small"]), default="paper", show_default=True,
              help="Extraction preset (docs/extract.md): paper = 3 crops x 4 views, MViT-v2-S + AST ViT-B.")
@click.option("--crops", type=click.Choice(["1", "3"]), default=None, help="Crops per temporal view (profile's).")
@click.option("--temporal-views", type=int, default=None,
              help="Temporal views per clip (profile's); a clip has crops x temporal views views in all.")
@click.option("--video-weights", type=EXISTING_FILE, default=None,
              help="MViT-v2-S weights in torchvision format (default: the torch hub cache).")
@click.option("--audio-weights", type=click.Path(exists=True, path_type=Path), default=None,
              help="AST weights (file or HF model folder): original AST, HF transformers, or timm DeiT-base-384.")
@click.option("--random-init", is_flag=True, help="Random backbones instead of weights (recorded in the store).")
@click.option("--full-tokens", is_flag=True, help="Keep every token (about 8.7 MiB per clip) instead of pooled ones.")
@click.option("--retry-failed", is_flag=True, help="Also retry clips that failed in an earlier run.")
@click.option("--compile", is_flag=True, help="torch.compile the backbones (GPU runs).")
@click.option("--batch-views", type=int, default=None, help="Video views per backbone forward (profile's).")
@click.option("--clips-per-block", type=int, default=None,
              help="Clips per unit of work and per status chunk (default 32; fixed when the store is created).")
@click.option("--shard", is_flag=True, help="Bundle each block's chunks into one Zarr shard file (fewer files).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@click.option("--wait", is_flag=True, help="If another extract holds the store, wait for it instead of stopping.")
@click.option("--strict", "strict_media", is_flag=True,
              help="Fail files that decode only in part (default: keep the decodable part).")
@_extra_option_for("extraction (extract/config.py; video.X for a view setting)", "precision=fp32")
@_user_errors
def extract_command(videos: Path, out: Path, crops: str | None, clips_per_block: int | None, shard: bool, extra,
                    **options) -> None:
    """Run the frozen backbones over every clip into a Zarr token store (resumable; bad clips are recorded)."""
    from features.config import RunnerConfig, StoreConfig
    from features.runner import build_extract_config, run_extraction

    run = {name: options.pop(name) for name in ("workers", "scheduler", "video_weights", "audio_weights",
                                                "retry_failed", "progress", "wait")} | {"gpus": options["gpus"]}
    extract = build_extract_config(crops=int(crops) if crops else None, options=dict(extra), **options)
    store = StoreConfig(**({"clips_per_block": clips_per_block} if clips_per_block else {}), shard_blocks=shard)
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
@_user_errors
def inspect_command(store: Path, as_json: bool) -> None:
    """Summarise a token store: clip counts by status and split, layout, config and provenance."""
    from features.store import TokenStore

    summary = TokenStore.open(store).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    layout = summary["token_layout"]
    click.echo(f"{summary['store']}: {summary['clips']} clips: {summary['done']} done, {summary['failed']} failed, "
               f"{summary['pending']} pending; {summary['classes']} classes; "
               f"{summary['bytes_on_disk'] / max(summary['done'], 1) / 2**10:.0f} KiB per done clip")
    click.echo(f"video tokens (V, Nv, Dv) = ({layout['V']}, {layout['Nv']}, {layout['Dv']}), audio tokens "
               f"(Na, Da) = ({layout['Na']}, {layout['Da']}); profile {summary['extract_config'].get('profile')}")
    for split, counts in summary["splits"].items():
        click.echo(f"  split {split}: " + ", ".join(f"{n} {name}" for name, n in counts.items()))
    click.echo(f"{summary['partial']} partial, {summary['no_audio']} without audio; failed: " + (", ".join(
        f"{n} {kind}" for kind, n in summary["failed_by_reason"].items()) or "none") + "".join(
        f"\n  failed {failure['clip_id']}: {failure['reason']}" for failure in summary["first_failures"]))


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
    click.option("--val-store", type=ANY_PATH, default=None, help="A separate validation store."),
    click.option("--val-split", "val_splits", type=NAMES, default=None,
                 help="Comma-separated validation split(s) of --store (or of --val-store); never a test split."),
    click.option("--val-unseen-fraction", type=float, default=None,
                 help="Hold out this share of the training classes as validation-unseen (plus --val-seen-fraction of "
                      "the other classes' clips as validation-seen); for stores with only seen / unseen splits."),
    click.option("--val-seen-fraction", type=float, default=None,
                 help="With --val-unseen-fraction: share of each kept class's clips held out as validation-seen "
                      "(default 0.2)."),
    click.option("--select-by", type=click.Choice(["gzsl_hm", "gzsl_hm_calibrated", "zsl"]), default=None,
                 help="Validation score that picks best.pt: HM after calibrated stacking with beta chosen on the "
                      "validation data (default; AVCA stage 1), raw GZSL HM, or ZSL; ties go to the higher ZSL."),
    click.option("--test-seen-fraction", type=float, default=None,
                 help="Hold out this share of each training class's clips as test-seen (never trained or validated "
                      "on; zeroshot scores them as GZSL's seen part); for stores with only seen / unseen splits."),
    click.option("--shuffle-class-embeddings", is_flag=True, default=None,
                 help="Control run: train on a permutation of the training classes' embeddings (ZSL falls to chance)."),
    click.option("--train-splits", type=NAMES, default=None,
                 help="Comma-separated store splits that train the head (default seen)."),
    click.option("--classes", "classes_file", type=ANY_PATH, default=None,
                 help="Training class list, one per line, class id = line order (default: sorted training labels)."),
    click.option("--embeddings", default=None,
                 help="Class-name embeddings: glove-6b-50d (default), word2vec:PATH, fasttext:PATH, avca:ucf|..."),
    click.option("--name-map", type=ANY_PATH, default=None, help="CSV original,manual: names rewritten first."),
    click.option("--missing", type=click.Choice(["error", "skip"]), default=None, help="Unknown words: error or skip."),
    click.option("--se-target", type=click.Choice(["kinetics+class", "class"]), default=None,
                 help="SE regression target: phi(s_v) + phi(class) (paper, default) or phi(class) only."),
    click.option("--view-mode", type=click.Choice(["ensemble", "mean"]), default=None,
                 help="ensemble (default): one random view per step, mean of f(x) over views at inference; "
                      "mean: tokens averaged over views."),
    click.option("--conse-top-t", type=int, default=None, help="T of ConSE, for heads without SE (default 10)."),
    click.option("--epochs", type=int, default=None, help="Training epochs (default 100)."),
    click.option("--batch-size", type=int, default=None, help="Clips per step (default 64)."),
    click.option("--lr", type=float, default=None, help="Peak AdamW learning rate (default 1e-4)."),
    click.option("--weight-decay", type=float, default=None, help="AdamW decay of weight matrices (default 0.05)."),
    click.option("--lr-schedule", type=click.Choice(["cosine", "step"]), default=None,
                 help="After linear warmup: cosine decay (default) or x0.1 steps after epochs 20 and 40."),
    click.option("--warmup-epochs", type=float, default=None, help="Linear warmup length in epochs (default 2)."),
    click.option("--grad-clip-norm", type=float, default=None, help="Gradient norm clipping, 0 = off (default 1.0)."),
    click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
                 help="cpu (default) or cuda (bf16 autocast); no silent fallback."),
    click.option("--progress/--no-progress", default=None, help="Show a progress bar (default on)."),
    click.option("--require-complete", is_flag=True, default=None, help="Refuse a store with pending clips."),
)


@cli.command("train-fusion")
@click.option("--store", type=ANY_PATH, default=None, help="Training token store.")
@click.option("--out", type=ANY_PATH, default=None,
              help="Run directory (created; must be empty unless --resume); with a run's --config, that run's folder.")
@click.option("--config", "config_file", type=EXISTING_FILE, default=None,
              help="A run's config.json (or a TrainConfig JSON) to start from; explicit options override it.")
@_training_options
@click.option("--seed", type=int, default=None, help="Seed of init, data order, views, masks, dropout (default 0).")
@click.option("--resume", is_flag=True, default=None, help="Continue the run in --out from its last.pt.")
@_user_errors
def train_fusion_command(config_file: Path | None, preset: str | None, ablations: tuple[str, ...], extra, **options):
    """Train the MZST fusion head on a token store (writes config, classes, checkpoints, log to --out)."""
    from fusion.config import train_config_from_options
    from fusion.trainer import train

    base = None
    if config_file is not None:
        try:
            recorded = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise click.BadParameter(f"{config_file}: not a JSON file ({error})", param_hint="--config") from error
        base = recorded.get("train", recorded) if isinstance(recorded, dict) else None
        if base is None:
            raise click.BadParameter(f"{config_file}: not a training config (a JSON object)", param_hint="--config")
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
@click.option("--run", "run_dir", required=True, type=EXISTING_DIR, help="Run directory written by train-fusion.")
@click.option("--store", required=True, type=EXISTING_DIR, help="Token store of the clips to recognise.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best.pt (chosen on validation) or last.pt.")
@click.option("--classes", type=EXISTING_FILE, default=None,
              help="Open vocabulary: rank every clip against these class names (one per line).")
@click.option("--class-names", type=NAMES, default="", help='Open vocabulary typed here: "name a,name b,...".')
@click.option("--seen", type=EXISTING_FILE, default=None,
              help="Seen class names for GZSL (one per line); default: labels of the store's split 'seen'.")
@click.option("--unseen", type=EXISTING_FILE, default=None,
              help="Unseen class names for ZSL / GZSL; default: labels of the store's split 'unseen'.")
@click.option("--rule", type=click.Choice(["kinetics", "plain", "cosine"]), default=None,
              help="Decision rule: kinetics ||f(x)-phi(s_v)-phi(c)||, plain ||f(x)-phi(c)||, cosine (default: run's).")
@click.option("--calibrated-stacking", is_flag=True,
              help="Also report GZSL with a seen-class penalty beta chosen on --val-split (never on test clips).")
@click.option("--val-split", default=None,
              help="Validation split for beta (of --val-store, or of --store); 'run': the clips the run validated on.")
@click.option("--val-store", type=EXISTING_DIR, default=None, help="A separate store holding the validation split.")
@click.option("--splits", type=NAMES, default="", help="Score only clips of these comma-separated store splits.")
@click.option("--include-training-clips", is_flag=True,
              help="Also score clips the run trained or validated on (S is then biased; marked in the report).")
@click.option("--out", type=NEW_DIR, default=None, help="Report folder: metrics, predictions, report.md, figures.")
@click.option("--label", default=None, help="Row name in reports (default: the run folder's name).")
@click.option("--top-k", default=5, show_default=True, type=int, help="Candidates listed per clip (open vocabulary).")
@click.option("--missing", type=click.Choice(["error", "skip"]), default=None,
              help="New names with words the run's vectors lack: error, or skip those words (default: the run's).")
@click.option("--no-plots", is_flag=True, help="Skip the t-SNE and per-class accuracy figures.")
@click.option("--batch-size", default=64, show_default=True, type=int, help="Clips per forward pass.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Where the head runs (default cpu).")
@_user_errors
def zeroshot_command(no_plots: bool, **options) -> None:
    """Zero-shot recognition: nearest class per clip, ZSL and GZSL S / U / HM (or a ranking of any class names)."""
    from eval.config import PlotConfig, ZeroShotConfig
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
    click.option("--preset", default=None, help="Head size preset of train-fusion (e.g. default, demo)."),
    click.option("--ablation", "ablations", multiple=True, help="Ablation of train-fusion; repeatable."),
    _extra_option,
    click.option("--calibrated-stacking", is_flag=True,
                 help="Also report GZSL with beta chosen on the stage-1 validation clips."),
    click.option("--seeds", type=INTEGERS, default="0", show_default=True,
                 help="Comma-separated seeds; each runs every stage."),
    click.option("--batch-size", default=64, show_default=True, type=int, help="Inference batch size."),
    click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                 help="Where training and inference run."),
    click.option("--no-plots", is_flag=True, help="Skip the t-SNE and per-class accuracy figures."),
)


def _protocol_settings(epochs, lr, train_batch_size, embeddings, preset, ablations, extra, calibrated_stacking,
                       seeds, batch_size, device, no_plots, **fields) -> dict:
    """The protocol config fields: the command's own (`fields`) and those the shared options give."""
    from eval.config import PlotConfig

    train = {**_given(epochs=epochs, lr=lr, batch_size=train_batch_size, embeddings=embeddings), **dict(extra)}
    return dict(fields, train=train, preset=preset, ablations=tuple(ablations), calibrated_stacking=calibrated_stacking,
                seeds=seeds, device=device, batch_size=batch_size,
                plots=PlotConfig(tsne=not no_plots, per_class_bars=not no_plots))


@cli.group("protocol")
def protocol_group() -> None:
    """Run an evaluation protocol end to end: train (stage 1 selects, stage 2 retrains), test once, report."""


@protocol_group.command("avca")
@click.option("--dataset", required=True, type=click.Choice(["UCF", "ActivityNet", "VGGSound"], case_sensitive=False),
              help="Benchmark whose shipped split files define the stages.")
@click.option("--store", required=True, type=EXISTING_DIR,
              help="Token store of the benchmark (clip_id = AVCA video id, split = its stage; see import-avca).")
@click.option("--out", required=True, type=NEW_DIR,
              help="Output folder (seed_<s>/stage1, stage2, test; metrics.json; summary.md).")
@click.option("--split", type=click.Choice(["main_split", "cls_split"]), default="main_split", show_default=True,
              help="main_split (SeLaVi features) or cls_split (C3D / VGGish).")
@_protocol_training_options
@_user_errors
def protocol_avca_command(dataset: str, store: Path, out: Path, split: str, **training) -> None:
    """AVCA two-stage protocol: select epoch (and beta) on stage-1 validation, retrain on train + val, test once."""
    from eval.config import AVCAProtocolConfig
    from workflows.protocols import run_avca_protocol

    config = AVCAProtocolConfig(dataset=dataset, store=store, out=out, split=split, **_protocol_settings(**training))
    click.echo(run_avca_protocol(config).summary() + f"; wrote {out}")


@protocol_group.command("mzsl")
@click.option("--train-store", required=True, type=EXISTING_DIR,
              help="Token store of the benchmark dataset the head trains on (all its classes).")
@click.option("--eval-store", required=True, type=EXISTING_DIR, help="Token store of the MZSL evaluation set (unseen).")
@click.option("--groups", required=True, type=EXISTING_FILE,
              help="CSV with class_name,group (easy / medium / hard), e.g. the evaluation set's manifest.")
@click.option("--out", required=True, type=NEW_DIR, help="Output folder (seed_<s>/..., metrics.json, summary.md).")
@click.option("--allow-overlap", is_flag=True, help="Run despite leak-check overlaps (recorded in metrics.json).")
@click.option("--near-duplicates", is_flag=True, help="Leak check: also compare video fingerprints (decodes files).")
@click.option("--train-splits", type=NAMES, default="train", show_default=True,
              help="Comma-separated splits of --train-store that train the head.")
@click.option("--test-split", default="test", show_default=True,
              help="Split of --train-store that is the GZSL seen part ('none': ZSL only).")
@click.option("--val-unseen-fraction", default=0.2, show_default=True, type=float,
              help="Stage 1 holds out this share of training classes to choose the epoch (0: no stage 1).")
@_protocol_training_options
@_user_errors
def protocol_mzsl_command(out: Path, test_split: str, **options) -> None:
    """MZSL-50 protocol: train on a benchmark, ZSL by easy / medium / hard group and GZSL on the evaluation set."""
    from eval.config import MZSLProtocolConfig
    from workflows.protocols import run_mzsl_protocol

    test_split = None if test_split.lower() == "none" else test_split
    config = MZSLProtocolConfig(out=out, test_split=test_split, **_protocol_settings(**options))
    click.echo(run_mzsl_protocol(config).summary() + f"; wrote {out}")


@cli.command("ablate")
@click.option("--store", required=True, type=EXISTING_DIR, help="Token store with seen / unseen splits.")
@click.option("--out", required=True, type=NEW_DIR,
              help="Folder for runs/, report/, ablation.json and ablation.md; a rerun reuses finished runs.")
@click.option("--rows", type=NAMES, default=None,
              help="Comma-separated rows: full, concat, no-text, task, task+se, audio-only, video-only, normalised, "
                   "control (the default: all of these), sequential, eq5, sentence (docs/eval.md).")
@click.option("--seeds", type=INTEGERS, default="0,1,2", show_default=True, help="Seeds; each row trains per seed.")
@_training_options
@_user_errors
def ablate_command(store: Path, out: Path, rows, seeds, preset, ablations, device, extra, **options) -> None:
    """Train and evaluate every ablation row (the paper's Table 7) with the same split and seeds; print the table."""
    from eval.config import AblateConfig
    from workflows.ablate import run_ablation

    config = AblateConfig(store=store, out=out, seeds=seeds, train={**_given(**options), **dict(extra)}, preset=preset,
                          ablations=ablations, device=device or "cpu", **_given(rows=rows))
    result = run_ablation(config)
    click.echo(result.markdown)
    click.echo(f"{result.summary()}; wrote {result.json_path} and {result.markdown_path}")


# --- eval: report -------------------------------------------------------------------------------------


@cli.command("report")
@click.argument("runs", nargs=-1, required=True, type=EXISTING_DIR)
@click.option("--out", type=NEW_DIR, default=None,
              help="Folder for comparison.md and comparison.json (default: print the table only).")
@click.option("--group-seeds/--no-group-seeds", default=True, show_default=True,
              help="Pool runs that differ only in their seed into one row (mean ± std).")
@_user_errors
def report_command(runs: tuple[Path, ...], out: Path | None, group_seeds: bool) -> None:
    """Compare evaluated runs side by side (each RUN folder holds a metrics.json from zeroshot / protocol)."""
    from eval.config import ReportConfig
    from eval.report import write_report

    summary = write_report(ReportConfig(runs=runs, out=out, group_seeds=group_seeds))
    click.echo(summary.markdown, nl=False)
    where = f"; wrote {', '.join(str(p) for p in summary.paths)}" if summary.paths else ""
    click.echo(f"{len(runs)} runs in {len(summary.rows)} rows{where}")


# --- eval: import-avca --------------------------------------------------------------------------------


@cli.command("import-avca")
@click.option("--features", required=True, type=EXISTING_DIR,
              help="AVCA-GZSL / TCAF feature folder holding audio/<stage>/<Class>.h5 (or .pkl) and video/...")
@click.option("--dataset", required=True, type=click.Choice(["UCF", "ActivityNet", "VGGSound"], case_sensitive=False),
              help="Benchmark whose all_class.txt names the class files.")
@click.option("--out", required=True, type=ANY_PATH, help="The token store to create.")
@click.option("--stages", type=NAMES, default="", help="Stage folders to import, comma-separated (default: all).")
@click.option("--trust-pickle", is_flag=True,
              help="Allow TCAF .pkl files; unpickling runs code from the file, so only for files you trust.")
@click.option("--sequence-tokens", default=8, show_default=True, type=int,
              help="Tokens per modality kept from temporal (TCAF) features, as segment means.")
@_user_errors
def import_avca_command(features: Path, dataset: str, out: Path, stages: tuple[str, ...], trust_pickle: bool,
                        sequence_tokens: int) -> None:
    """Import AVCA-GZSL (.h5) or TCAF (.pkl) features into a token store that fusion heads train on."""
    from curate.importers import import_avca_features
    from eval.config import AVCAImportConfig

    config = AVCAImportConfig(features=features, dataset=dataset, out=out, trust_pickle=trust_pickle, stages=stages,
                              sequence_tokens=sequence_tokens)
    summary = import_avca_features(config)
    click.echo(f"imported {summary.clips} clips of {summary.classes} classes ({summary.format}, "
               f"{summary.duplicates} repeated across stages) into {summary.store}")


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


# Options shared by relatedness and curate select: the seen lists and the embeddings (phi of eq. 1); build: edges.
_edges_option = click.option("--edges", type=_CommaList(float), default="0.1,0.33,0.66,0.8", show_default=True,
                             help="Upper SR bounds of overlap, easy, medium and hard.")
_relatedness_options = _options(
    click.option("--seen", type=NAMES, default=None,
                 help="Seen lists: shipped names or class files (default: the six standard lists but the scored one)."),
    _edges_option,
    click.option("--embeddings", default="glove-6b-50d", show_default=True,
                 help="Word vectors: glove-6b-50d, word2vec:PATH (binary or text), fasttext:PATH (.bin, mean of "
                      "word vectors) or fasttext-phrase:PATH (vector of the whole name, as AVCA-GZSL)."),
    click.option("--name-map", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="CSV with columns original,manual: names rewritten before embedding (e.g. AVCA-GZSL's "
                      "*_w2v_class_names.csv)."),
    click.option("--missing", type=click.Choice(["error", "skip"]), default="error", show_default=True,
                 help="Words not in the vectors: error lists them all; skip drops them from their names."),
    click.option("--compare", default=None, help="A second source (e.g. minilm): both SR distributions side by side."),
)


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
    from curate.config import RelatednessConfig
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
@_options(*(click.option(f"--{name}", type=kind, default=None, help=f"{text} (default {default}).")
            for name, kind, text, default in (("rows", int, "Page rows", 10), ("columns", int, "Page columns", 10),
                        ("seconds-per-frame", float, "Seconds between cells", "1.0: 1 fps"),
                        ("max-pages", int, "Pages per video at most; a longer video gets a wider stride", 10),
                        ("cell-width-px", int, "Cell width in px", 192), ("cell-height-px", int, "Cell height", 108),
                        ("image-format", click.Choice(["jpg", "png"]), "Image format", "jpg"),
                        ("jpeg-quality", int, "JPEG quality 1-95", 85))))
@click.option("--workers", type=int, default=2, show_default=True, help="Processes decoding videos in parallel.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
@_user_errors
def curate_filmstrips_command(videos: Path, out_dir: Path, classes: Path | None, workers: int, progress: bool,
                              **layout_options) -> None:
    """Filmstrips of 10 x 10 frames at 1 fps, as many pages as a video needs; failed videos go to failures.csv."""
    from curate.config import FilmstripConfig, FilmstripLayout
    from curate.render import make_filmstrips

    layout = FilmstripLayout(**_given(**layout_options))
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds each reviewer's own order of the videos.")
@_user_errors
def curate_sheets_command(**options) -> None:
    """Write one blank annotation sheet per reviewer (label each video yes / no / unsure, optionally a span)."""
    from curate.config import SheetsConfig
    from curate.sheets import make_sheets

    summary = make_sheets(SheetsConfig(**options))
    click.echo(f"{len(summary.sheets)} sheets of {summary.n_videos} videos ({summary.n_failed} without a filmstrip "
               f"left out) in {options['out_dir']}")


@curate_group.command("merge")
@click.argument("sheets", nargs=-1, required=True, type=EXISTING_FILE)
@click.option("--out-dir", required=True, type=NEW_DIR, help="Folder for decisions.csv, agreement.json, agreement.md.")
@click.option("--min-reviewers", type=int, default=2, show_default=True,
              help="Videos labelled by fewer reviewers are reported as too-few-reviews, not decided.")
@_user_errors
def curate_merge_command(**options) -> None:
    """Merge filled SHEETS (one per reviewer): keep all-yes videos, drop mixed ones, report Fleiss' / Cohen's kappa."""
    from curate.config import MergeConfig
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
@click.option("--min-videos-per-class", type=int, default=1, show_default=True, help="Drop classes with fewer videos.")
@_edges_option
@click.option("--require-audio", is_flag=True, help="Drop videos without an audio track (reported per class anyway).")
@_user_errors
def curate_build_command(**options) -> None:
    """Write the evaluation set: manifest (split unseen, group, SR), class table, Table 2 / Fig. 3 statistics."""
    from curate.build import build_evaluation_set
    from curate.config import BuildConfig

    s = build_evaluation_set(BuildConfig(**options))
    groups = ", ".join(f"{g} {n['classes']}/{n['videos']}" for g, n in s.groups.items())
    silent = sum(n for n, _ in s.without_audio.values())
    click.echo(f"{s.n_classes} classes, {s.n_videos} videos (classes/videos: {groups}); {sum(s.dropped.values())} "
               f"videos dropped; {silent} without audio (statistics.md); manifest {s.manifest_path}")


if __name__ == "__main__":
    cli()
