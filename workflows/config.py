"""Configuration of the workflows: zero-shot evaluation of a run, the AVCA and MZSL-50 protocols, the ablation table,
the benchmark of methods (defaults live here; the demo's are `workflows.demo.DemoConfig`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from common.errors import InputError
from common.names import canonical_names
from common.settings import Seed, check_fields, config_dict, setting
from eval import metrics
from eval.config import PlotConfig
from eval.gzsl import BETA_RULES, PEER_BETA_RULE_NEEDS
from fusion.config import RECIPE_DATASETS

__all__ = [
    "DEFAULT_BETAS",
    "ABLATION_ROWS",
    "DEFAULT_ABLATION_ROWS",
    "AblateConfig",
    "ZeroShotConfig",
    "AVCAProtocolConfig",
    "MZSLProtocolConfig",
    "BENCHMARK_PROTOCOLS",
    "BenchmarkConfig",
    "named_stores",
]

DEFAULT_BETAS: tuple[float, ...] = tuple(float(b) for b in metrics.DEFAULT_BETAS)  # 0, 0.2, ..., 3.0
_RULES = metrics.RULES
_CHECKPOINTS = ("best", "last")


def _beta_rule() -> str:
    """The `beta_rule` field of every config whose calibrated stacking chooses beta (one declaration for all)."""
    return setting("ours", choices=BETA_RULES,
                   help="How calibrated stacking chooses beta on validation: ours (the best HM of the head's "
                        "decision) or peers (AVCA-GZSL: the mean of the audio, video and both betas; cjme, "
                        "avgzslnet, avca).")


def _check_betas(betas: tuple[float, ...], beta_rule: str) -> None:
    if beta_rule not in BETA_RULES:
        raise InputError(f"beta_rule must be one of {BETA_RULES}, got {beta_rule!r}")
    if not betas:
        raise InputError("betas must hold at least one value")
    if any(b < 0 for b in betas):
        raise InputError(f"betas must be >= 0 (beta penalises seen classes), got {betas}")


@dataclass(frozen=True)
class ZeroShotConfig:
    """`cli.py zeroshot`: nearest-class zero-shot inference of a trained run on a token store.

    Classes: without `classes` / `class_names` / `seen` / `unseen`, the seen and unseen classes are the labels
    of the store's clips with split "seen" / "unseen". `classes` (a file, one name per line) or `class_names`
    ranks every clip against those names (open vocabulary; clips whose label is among them are scored).
    `seen` + `unseen` files name the two class sets of GZSL explicitly.
    """

    run_dir: Path = setting(flag="--run", help="Run directory written by train-fusion.")
    store: Path = setting(help="Token store of the clips to recognise.")
    concat_runs: tuple[Path, ...] = setting(())  # runs trained apart on the same classes and clips (e.g. run_dir
    # audio-only, these video-only) whose f(x) stand beside run_dir's, against repeated class embeddings (feature
    # concatenation)
    checkpoint: str = setting("best", choices=_CHECKPOINTS, help="best.pt (chosen on validation) or last.pt.")
    classes: Path | None = setting(None,
                                   help="Open vocabulary: rank every clip against these class names (one per line).")
    class_names: tuple[str, ...] = setting((), help='Open vocabulary typed here: "name a,name b,...".')
    seen: Path | None = setting(None,
                                help="Seen class names for GZSL (one per line); default: labels of the store's split "
                                     "'seen'.")
    unseen: Path | None = setting(None,
                                  help="Unseen class names for ZSL / GZSL; default: labels of the store's split "
                                       "'unseen'.")
    rule: str | None = setting(None, choices=_RULES,
                               help="Decision rule: kinetics ||f(x)-phi(s_v)-phi(c)||, plain ||f(x)-phi(c)||, cosine "
                                    "(default: the run's).")
    calibrated_stacking: bool = setting(False,
                                        help="Also report GZSL with a seen-class penalty beta chosen on `val_split` "
                                             "(never on test clips).")
    val_split: str | None = setting(None,
                                    help="Validation split for beta (of `val_store`, or of `store`); 'run': the clips "
                                         "the run validated on (its classes.json), e.g. classes held out by the "
                                         "trainer's val_unseen_fraction.")
    val_store: Path | None = setting(None,
                                     help="A separate store holding the validation split (with 'run': where the run's "
                                          "validation clips are).")
    betas: tuple[float, ...] = setting(DEFAULT_BETAS)  # calibrated-stacking sweep
    beta_rule: str = _beta_rule()
    splits: tuple[str, ...] = setting((), help="Score only clips of these store splits (empty: all done clips).")
    include_training_clips: bool = setting(False,
                                           help="Also score clips the run trained or validated on (S is then biased; "
                                                "marked in the report).")
    out: Path | None = setting(None, affects_result=False,
                               help="Report folder: metrics, predictions, report.md, figures.")
    label: str | None = setting(None, help="Row name in reports (default: the run folder's name).")
    top_k: int = setting(5, help="Candidates listed per clip (open vocabulary).")
    missing: str | None = setting(None, choices=("error", "skip"),
                                  help="New names with words the run's vectors lack: error, or skip those words "
                                       "(the run's own classes keep their recorded embeddings; default: the run's "
                                       "rule).")
    worst_classes: int = setting(5)  # classes shown with their confusions
    batch_size: int = setting(64, affects_result=False, help="Clips per forward pass.")
    device: str = setting("cpu", affects_result=False, choices=("cpu", "cuda"), help="Where the head runs.")
    plots: PlotConfig = setting(factory=PlotConfig, affects_result=False)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.checkpoint not in _CHECKPOINTS:
            raise InputError(f"checkpoint must be one of {_CHECKPOINTS}, got {self.checkpoint!r}")
        if self.rule is not None and self.rule not in _RULES:
            raise InputError(f"rule must be one of {_RULES}, got {self.rule!r}")
        if self.missing not in (None, "error", "skip"):
            raise InputError(f"missing must be 'error' or 'skip', got {self.missing!r}")
        vocabulary = self.classes is not None or bool(self.class_names)
        if self.class_names:  # "a,a" or ",,," is a mistake, not a vocabulary of one class or none
            canonical_names(self.class_names, "`class_names`")
        if self.classes is not None and self.class_names:
            raise InputError("give `classes` or `class_names`, not both")
        if (self.seen is None) != (self.unseen is None):
            raise InputError("`seen` and `unseen` go together")
        if vocabulary and self.seen is not None:
            raise InputError("`classes` / `class_names` (open vocabulary) and `seen` / `unseen` (GZSL) exclude each "
                             "other")
        if self.calibrated_stacking and self.val_split is None:
            raise InputError(
                "`calibrated_stacking` needs `val_split` (of `val_store`, or clips of `store`): beta is chosen "
                "on validation data only, never on the evaluated clips"
            )
        if self.val_split is not None and not self.val_split.strip():
            raise InputError("`val_split` is empty")
        if self.val_store is not None and self.val_split is None:
            raise InputError("`val_store` needs `val_split` (which split of that store is validation)")
        if self.calibrated_stacking and vocabulary:
            raise InputError("`calibrated_stacking` applies to GZSL (seen / unseen classes), not to a class list")
        if self.val_split is not None and self.val_split in self.splits and self.val_store is None:
            raise InputError(f"split {self.val_split!r} cannot be both validation and evaluated")
        _check_betas(self.betas, self.beta_rule)
        if self.top_k < 1 or self.worst_classes < 0 or self.batch_size < 1:
            raise InputError("top_k and batch_size must be >= 1, worst_classes >= 0")

    def to_dict(self) -> dict:
        return {**config_dict(self), "concat_runs": [str(r) for r in self.concat_runs], "plots": asdict(self.plots)}


# Training options a protocol sets itself (which clips train and validate, the seed, the run folder).
_PROTOCOL_OWNED = ("store", "out", "train_splits", "val_store", "val_splits", "val_unseen_fraction", "seed", "resume",
                   "device", "schedule_epochs")


def _check_protocol_settings(seeds: tuple[int, ...], train: dict, betas: tuple[float, ...], beta_rule: str) -> None:
    if not seeds:  # repeated ones: `check_fields`
        raise InputError("give at least one seed")
    owned = sorted(set(train) & set(_PROTOCOL_OWNED))
    if owned:
        raise InputError(f"training options {owned} are set by the protocol; leave them out")
    _check_betas(betas, beta_rule)
    method = train.get("method", "mzst")
    if beta_rule == "peers" and isinstance(method, str):
        from fusion.heads import takes_peer_beta_rule  # torch: only where the rule is asked for

        if not takes_peer_beta_rule(method):
            raise InputError(f"{PEER_BETA_RULE_NEEDS}, not {method!r}: use 'ours'")


@dataclass(frozen=True)
class AVCAProtocolConfig:
    """`cli.py protocol avca`: the AVCA two-stage protocol on VGGSound / UCF / ActivityNet (docs/eval.md).

    The store holds the benchmark's videos with `clip_id` = AVCA's video id (the split CSVs' `filename`, e.g.
    "v_ApplyEyeMakeup_g01_c02") and `split` = the video's stage (stage_1_train, stage_1_val_seen,
    stage_1_val_unseen, stage_2_test_seen or stage_2_test_unseen; `import-avca` writes such stores). Stage 1
    trains on stage_1_train and selects the epoch (and beta) on stage_1_val_{seen,unseen}; stage 2 retrains on
    stage_2_train (= the three stage-1 parts) for that many epochs and is tested once on stage_2_test_{seen,unseen}.
    """

    dataset: str = setting()  # "UCF", "ActivityNet" or "VGGSound"
    store: Path = setting(help="Token store of the benchmark (clip_id = AVCA video id, split = its stage; see "
                               "import-avca).")
    out: Path = setting(affects_result=False,
                        help="Output folder (seed_<s>/stage1, stage2, test; metrics.json; summary.md).")
    split: str = setting("main_split", choices=("main_split", "cls_split"),
                         help="main_split (SeLaVi features) or cls_split (C3D / VGGish).")
    train: dict = setting(factory=dict)  # TrainConfig / FusionConfig fields (epochs, lr, width, ...)
    preset: str | None = setting(None)  # fusion.config.PRESETS head size
    ablations: tuple[str, ...] = setting(())  # fusion.config.ABLATIONS names
    calibrated_stacking: bool = setting(False, help="Also report GZSL with beta chosen on the stage-1 validation "
                                                    "clips and applied to the test.")
    betas: tuple[float, ...] = setting(DEFAULT_BETAS)
    beta_rule: str = _beta_rule()
    seeds: tuple[Seed, ...] = setting((0,), help="Seeds; each runs every stage (reports give mean +- std).")
    device: str = setting("cpu", affects_result=False, choices=("cpu", "cuda"),
                          help="Where training and inference run.")
    batch_size: int = setting(64, affects_result=False, help="Inference batch size.")
    plots: PlotConfig = setting(factory=PlotConfig, affects_result=False)
    splits_root: Path | None = setting(None)  # folder holding <DS>/class-split (None: the shipped data/avgzsl)

    def __post_init__(self) -> None:
        check_fields(self)
        from curate import splits  # a leaf module; kept local so that this module stays import-light

        splits.dataset_folder(self.dataset)  # raises ValueError for an unknown dataset
        if self.split not in splits.SPLITS:
            raise InputError(f"split must be one of {splits.SPLITS}, got {self.split!r}")
        _check_protocol_settings(self.seeds, self.train, self.betas, self.beta_rule)

    def to_dict(self) -> dict:
        return {**config_dict(self), "plots": asdict(self.plots)}


@dataclass(frozen=True)
class MZSLProtocolConfig:
    """`cli.py protocol mzsl`: the paper's MZSL-50 protocol.

    Train on all classes of a benchmark dataset (clips of `train_splits` of `train_store`) and evaluate zero-shot
    on `eval_store`, whose classes carry easy / medium / hard groups (`groups`: a CSV with columns
    `class_name,group`, e.g. the evaluation set's manifest). The epoch is chosen in a first stage that holds out
    `val_unseen_fraction` of the training classes as validation-unseen; the second stage retrains on all
    training clips for that many epochs (0: no first stage, `epochs` of the training options). GZSL: seen = the
    benchmark's test clips (`test_split` of `train_store`), unseen = the evaluation set.
    """

    train_store: Path = setting(help="Token store of the benchmark dataset the head trains on (all its classes).")
    eval_store: Path = setting(help="Token store of the MZSL evaluation set (unseen).")
    groups: Path = setting(help="CSV with class_name,group (easy / medium / hard), e.g. the evaluation set's "
                                "manifest.")
    out: Path = setting(affects_result=False, help="Output folder (seed_<s>/..., metrics.json, summary.md).")
    train_splits: tuple[str, ...] = setting(("train",), help="Splits of `train_store` that train the head.")
    test_split: str | None = setting("test", help="Split of `train_store` whose clips are the GZSL seen part (none: "
                                                  "ZSL only).")
    val_unseen_fraction: float = setting(0.2, help="Stage 1 holds out this share of training classes to choose the "
                                                   "epoch (0: no stage 1).")
    val_seen_fraction: float = setting(0.2)  # stage 1: share of the other classes' clips held out as validation-seen
    train: dict = setting(factory=dict)
    preset: str | None = setting(None)
    ablations: tuple[str, ...] = setting(())
    calibrated_stacking: bool = setting(False)  # also choose beta on the stage-1 hold-out and apply it to the GZSL test
    betas: tuple[float, ...] = setting(DEFAULT_BETAS)
    beta_rule: str = _beta_rule()
    seeds: tuple[Seed, ...] = setting((0,))
    device: str = setting("cpu", affects_result=False)
    batch_size: int = setting(64, affects_result=False)
    plots: PlotConfig = setting(factory=PlotConfig, affects_result=False)
    allow_overlap: bool = setting(False, help="Run although the leak check (workflows.leaks) finds overlaps; they are "
                                              "recorded in metrics.json.")
    near_duplicates: bool = setting(False, help="Leak check: also compare video fingerprints (decodes every file).")

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.train_splits:
            raise InputError("give at least one training split")
        if self.test_split is not None and self.test_split in self.train_splits:
            raise InputError(f"test split {self.test_split!r} is also a training split")
        if not 0 <= self.val_unseen_fraction < 1 or not 0 <= self.val_seen_fraction < 1:
            raise InputError("val_unseen_fraction and val_seen_fraction must be in [0, 1)")
        if self.calibrated_stacking and not self.val_unseen_fraction:
            raise InputError("calibrated stacking chooses beta on the stage-1 hold-out: set val_unseen_fraction > 0")
        if self.calibrated_stacking and self.test_split is None:
            raise InputError("calibrated stacking is a GZSL option: give a test split (the seen part)")
        _check_protocol_settings(self.seeds, self.train, self.betas, self.beta_rule)

    def to_dict(self) -> dict:
        return {**config_dict(self), "plots": asdict(self.plots)}


# The rows of `cli.py ablate` (workflows.ablate.ROWS says what each one is); the default is the paper's Table 7 with
# single modalities, Table 8's normalisation and the control; "sequential" and "eq5" are the two readings of the
# paper we had to choose between.
ABLATION_ROWS = ("full", "concat", "no-text", "task", "task+se", "audio-only", "video-only", "normalised", "control",
                 "class-target", "plain-rule", "sequential", "eq5", "sentence")
DEFAULT_ABLATION_ROWS = ABLATION_ROWS[:11]
# Training options each row sets itself.
_ABLATION_OWNED = ("store", "out", "seed", "resume", "device", "shuffle_class_embeddings")


@dataclass(frozen=True)
class AblateConfig:
    """`cli.py ablate`: every ablation row trained with the same options, split and seeds, evaluated alike.

    Each row is one run per seed on `store`, trained with `train` (train-fusion's fields; they must name a
    validation source, which chooses each run's epoch and calibrated-stacking beta) plus `ablations`, then the
    row's own change. Each run is evaluated as `zeroshot` does by default: ZSL / GZSL on the store's `seen` /
    `unseen` split column, calibrated stacking with beta from the run's validation clips.
    """

    store: Path = setting(help="Token store with seen / unseen splits.")
    out: Path = setting(affects_result=False,
                        help="Folder for runs/, report/, ablation.json and ablation.md; a rerun reuses finished runs.")
    rows: tuple[str, ...] = setting(DEFAULT_ABLATION_ROWS,
                                    help=f"Rows to train and evaluate, of {', '.join(ABLATION_ROWS)} "
                                         "(docs/eval.md).")
    seeds: tuple[Seed, ...] = setting((0, 1, 2), help="Seeds; each row trains once per seed.")
    train: dict = setting(factory=dict)  # TrainConfig / FusionConfig fields shared by every row
    preset: str | None = setting(None)  # fusion.config.PRESETS head size
    ablations: tuple[str, ...] = setting(())  # fusion.config.ABLATIONS applied to every row before the row's own change
    batch_size: int = setting(64, affects_result=False)  # inference batch size
    device: str = setting("cpu", affects_result=False)

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = [r for r in self.rows if r not in ABLATION_ROWS]
        if unknown:
            raise InputError(f"unknown ablation row(s) {unknown}; choose from {', '.join(ABLATION_ROWS)}")
        if not self.rows or len(set(self.rows)) != len(self.rows):
            raise InputError(f"give distinct ablation rows, got {self.rows}")
        if not self.seeds:  # repeated ones: `check_fields`
            raise InputError("give at least one seed")
        owned = sorted(set(self.train) & set(_ABLATION_OWNED))
        if owned:
            raise InputError(f"training options {owned} are set per row and seed; leave them out")

    def to_dict(self) -> dict:
        return config_dict(self)


BENCHMARK_PROTOCOLS = ("avca", "mzsl")
# Training options the benchmark sets per method (its rows).
_BENCHMARK_OWNED = ("method", "recipe")


@dataclass(frozen=True)
class BenchmarkConfig:
    """`cli.py benchmark`: every method through one protocol, every seed, one table in the paper's layout.

    Each method runs `protocol` with `settings` into `<out>/<method>` (`workflows.protocols`: a rerun reuses
    finished runs). The training options of `settings.train` go to the methods that take them
    (`fusion.config.method_options`: the MZST head's size to mzst, `n_batches` to the comparison heads, epochs and
    learning rate to all); `settings.preset` and `settings.ablations` to mzst only; `recipe` to the comparison heads
    only (MZST keeps its own defaults).
    """

    protocol: str = setting(choices=BENCHMARK_PROTOCOLS,
                            help="avca: the AVCA two-stage protocol (the paper's Tables 5 / 6: ZSL, S, U, HM); mzsl: "
                                 "the MZSL-50 protocol (Table 3: E, M, H and their averages).")
    settings: AVCAProtocolConfig | MZSLProtocolConfig = setting()  # the protocol's settings, shared by every method
    # (its `out` is replaced by `<out>/<method>`)
    out: Path = setting(affects_result=False,
                        help="Folder for <method>/ (each method's protocol run), table.md, table.json and table.png; a "
                             "rerun reuses every finished run.")
    methods: tuple[str, ...] = setting((), help="Methods, comma-separated: mzst and the registered comparison heads "
                                                "(default: all of them).")
    recipe: str | None = setting(None, choices=RECIPE_DATASETS,
                                 help="The comparison heads' training as AVCA-GZSL ran it on this dataset (default: "
                                      "the peers' shared training); MZST keeps its own.")
    beta_rule: str = _beta_rule()  # "peers": for the methods that score audio, video and both; ours for the others
    feature_stores: tuple[str, ...] = setting(
        (), help="avca: compare feature settings: NAME=STORE pairs, comma-separated (e.g. "
                 "mvit-ast=paper.zarr,clipclap=clipclap.zarr); every method runs on every store into "
                 "<out>/<NAME>/<method>, one row per store and method. The stores must hold the same test clips.")

    def __post_init__(self) -> None:
        check_fields(self)
        named_stores(self.feature_stores)  # well-formed pairs
        if self.feature_stores and self.protocol != "avca":
            raise InputError("`feature_stores` compares stores under the avca protocol only: the mzsl protocol reads "
                             "two stores per run; run one benchmark per pair of stores")
        _check_betas(self.settings.betas, self.beta_rule)
        if self.settings.beta_rule != "ours":
            raise InputError("the benchmark sets the beta rule per method: give `beta_rule` to the benchmark, not to "
                             "its protocol settings")
        expected = AVCAProtocolConfig if self.protocol == "avca" else MZSLProtocolConfig
        if self.protocol not in BENCHMARK_PROTOCOLS or not isinstance(self.settings, expected):
            raise InputError(f"protocol must be one of {BENCHMARK_PROTOCOLS} with its settings, got {self.protocol!r} "
                             f"with {type(self.settings).__name__}")
        if len(set(self.methods)) != len(self.methods) or any(not m.strip() for m in self.methods):
            raise InputError(f"give distinct method names, got {self.methods}")
        owned = sorted(set(self.settings.train) & set(_BENCHMARK_OWNED))
        if owned:
            raise InputError(f"training options {owned} are set per row by the benchmark (`methods`, `recipe`); leave "
                             "them out")

    @classmethod
    def of(cls, protocol: str, settings: dict, **fields) -> BenchmarkConfig:
        """The config from the protocol's settings as the command line gives them: the fields of either protocol,
        None where not given; `test_split` "none" for none.

        Raises:
            InputError: a setting of the other protocol, or one this protocol needs left out.
        """
        kind = AVCAProtocolConfig if protocol == "avca" else MZSLProtocolConfig
        own = {f.name for f in dataclasses.fields(kind)}
        stray = sorted(name for name, value in settings.items() if name not in own and value not in (None, False))
        if stray:
            raise InputError(f"{', '.join(f'`{name}`' for name in stray)}: not a setting of the {protocol} protocol")
        given = {name: value for name, value in settings.items() if name in own and value is not None}
        if str(given.get("test_split", "")).lower() == "none":
            given["test_split"] = None
        if fields.get("feature_stores") and protocol == "avca":  # each row's store comes from `feature_stores`
            if "store" in given:
                raise InputError("give the stores in `feature_stores` only, not `store` besides")
            given["store"] = next(iter(named_stores(fields["feature_stores"]).values()))
        needed = [f.name for f in dataclasses.fields(kind) if f.default is dataclasses.MISSING
                  and f.default_factory is dataclasses.MISSING and f.name not in given and f.name != "out"]
        if needed:
            raise InputError(f"the {protocol} protocol needs {', '.join(f'`{name}`' for name in needed)}")
        beta_rule = given.pop("beta_rule", "ours")  # set per method by the benchmark
        return cls(protocol=protocol, settings=kind(out=fields["out"], **given), beta_rule=beta_rule, **fields)

    def to_dict(self) -> dict:
        return {**config_dict(self), "settings": self.settings.to_dict()}


def named_stores(pairs: tuple[str, ...]) -> dict[str, Path]:
    """`feature_stores`' NAME=STORE pairs as name -> store, in the given order.

    Raises:
        InputError: a pair without "=", an empty name or path, a name that is not a folder name, a repeated name.
    """
    stores: dict[str, Path] = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        name, path = name.strip(), path.strip()
        if not name or not path or not re.fullmatch(r"[\w+-][\w.+-]*", name) or name in stores:
            raise InputError(f"feature_stores: {pair!r} is not NAME=STORE with a distinct NAME of letters, digits, "
                             "'.', '+', '-' or '_' (it names the rows' folder)")
        stores[name] = Path(path)
    return stores
