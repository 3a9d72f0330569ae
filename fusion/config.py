"""Configuration of the MZST fusion head and of its training (defaults documented once, here).

`FusionConfig` is the head and its losses, including every ablation of the paper's Tables 7 and 8 as a field
(never a copy of the model); `TrainConfig` is one training run. `PRESETS` holds named head sizes and
`ABLATIONS` the field overrides that reproduce each ablation row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.errors import InputError
from common.settings import Seed, check_fields, setting
from text.class_embeddings import EmbeddingSpec

__all__ = [
    "FUSION_MODES",
    "FUSION_ORDERS",
    "ZERO_SHOT_EMBEDDINGS",
    "MODALITIES",
    "VIEW_MODES",
    "SE_TARGETS",
    "LR_SCHEDULES",
    "SELECTION_METRICS",
    "DEVICES",
    "RESIDENT_STORE",
    "LR_BATCH_SCALING",
    "ARCHITECTURE_FIELDS",
    "FusionConfig",
    "TrainConfig",
    "PRESETS",
    "ABLATIONS",
    "apply_ablations",
    "embedding_settings",
    "train_config_from_options",
    "method_options",
    "RECIPE_DATASETS",
    "HEAD_FUSION_SETTINGS",
    "PeerImportConfig",
]

FUSION_MODES = ("bottleneck", "concat")
FUSION_ORDERS = ("parallel", "sequential")
ZERO_SHOT_EMBEDDINGS = ("se", "conse")
MODALITIES = ("av", "audio", "video")
VIEW_MODES = ("ensemble", "mean")
SE_TARGETS = ("kinetics+class", "class")
LR_SCHEDULES = ("cosine", "step")
# The `eval.metrics.EvalResult` fields that `select_by` may name.
SELECTION_METRICS = ("gzsl_hm", "calibrated_gzsl_hm", "zsl")
# Earlier names of selection metrics, as config.json files of runs made before still hold them.
_RENAMED_SELECTION_METRICS = {"gzsl_hm_calibrated": "calibrated_gzsl_hm"}
DEVICES = ("cpu", "cuda")
RESIDENT_STORE = ("auto", "on", "off")
LR_BATCH_SCALING = ("none", "sqrt", "linear")
# The datasets whose AVCA-GZSL run scripts give a comparison head its recipe (`fusion.heads`).
RECIPE_DATASETS = ("ucf", "activitynet", "vggsound")
# What a comparison head's run sets in the MZST head's config: no phi(s_v) term (so the planner embeds no Kinetics
# labels and the decision rule is "plain"), no text stream, no MLM.
HEAD_FUSION_SETTINGS: dict[str, Any] = {"se_target": "class", "use_text": False, "mlm_weights": (0.0,)}
# Training settings of the MZST head's AdamW and warmup schedule, which a comparison head (Adam and a plateau
# schedule, `fusion.heads.training`) cannot take.
_MZST_TRAINING = ("lr_schedule", "warmup_epochs", "min_lr_ratio", "lr_milestones_epochs", "lr_step_gamma",
                  "lr_batch_scaling", "lr_reference_batch", "compile")

# Fields that shape the parameters of the model: a checkpoint only loads into a model built with the same.
ARCHITECTURE_FIELDS = ("width", "num_blocks", "num_heads", "num_fusion_tokens", "mlp_ratio", "fusion_mode",
                       "use_text", "modalities")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name} must be one of {choices}, got {value!r}")


def _check_keys(cls: type, values: Mapping[str, Any], what: str) -> None:
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise InputError(f"{what} has unknown field(s) {sorted(unknown)}; was it written by another version?")


@dataclass(frozen=True)
class FusionConfig:
    """The AVT fusion head, its heads and losses, and the ablation switches.

    The loss is `L = task_weight * TASK + lambda_SE(epoch) * SE + sigma(epoch) * MLM`. `se_weights` and
    `mlm_weights` are step schedules over epochs: one value (constant) or one more value than
    `weight_milestones_epochs` (value k applies from the epoch after milestone k-1 up to milestone k, 1-based
    epochs). The default is the paper's 0.25 (epochs 1-20), 0.1 (21-40), 0.05 (41-) for both (the paper names
    lambda1, lambda2 without saying what they weight; docs/fusion.md, "Losses").
    """

    width: int = setting(512)  # D, the width of every token in the head
    num_blocks: int = setting(4)  # K fusion blocks (an AV+F layer, then a T+F layer)
    num_heads: int = setting(8)  # attention heads per layer; must divide width
    num_fusion_tokens: int = setting(4)  # L bottleneck tokens, initialised N(0, 0.02)
    mlp_ratio: float = setting(4.0)  # hidden width of each layer's FFN as a multiple of width
    dropout: float = setting(0.1)  # dropout on the residual branches, inside the FFNs and on the heads' input
    attention_dropout: float = setting(0.0)  # dropout on attention probabilities (0, as in ViT: it costs ~20% of a CPU
    # step)
    fusion_mode: str = setting("bottleneck")  # "bottleneck" (the paper's AVT network) or "concat" (one network on
    # pooled, concatenated modality features; the paper's Table 7 row trains one head per modality instead:
    # workflows.ablate)
    fusion_order: str = setting("parallel")  # text pass: the T+F layer reads the block's incoming fusion tokens, as the
    # AV+F layer does (MBT); "sequential": the fusion tokens after the block's AV+F update (eq. 2 as written)
    use_text: bool = setting(True)  # False: no T+F layers and no MLM loss (Table 7: bottleneck without text)
    modalities: str = setting("av")  # "av", or "audio" / "video" only (the other modality is left out)
    view_mode: str = setting("ensemble", choices=VIEW_MODES,
                             help="ensemble: one random view per step, mean of f(x) over views at inference; mean: "
                                  "tokens averaged over views, one pass.")
    se_target: str = setting("kinetics+class", choices=SE_TARGETS,
                             help="SE regression target: phi(s_v) + phi(class) (the paper's) or phi(class) only.")
    normalise_embeddings: bool = setting(False)  # L2-normalise the class-name embeddings (Table 8; raw is the paper's)
    zero_shot_embedding: str = setting("se")  # f(x) for zero-shot: the SE head's output, or "conse": the convex
    # combination of the top `conse_top_t` seen-class embeddings weighted by the TASK softmax (ConSE, Norouzi et al.
    # 2014)
    conse_top_t: int = setting(10,
                               help="T of ConSE, for heads without SE: the top seen classes combined (capped at the "
                                    "number of seen classes).")
    task_weight: float = setting(1.0)  # weight of the cross-entropy over seen classes
    se_weights: tuple[float, ...] = setting((0.25, 0.1, 0.05))  # lambda_SE step schedule; (1.0,) is eq. 5 as written
    mlm_weights: tuple[float, ...] = setting((0.25, 0.1, 0.05))  # sigma step schedule (all 0: no MLM)
    weight_milestones_epochs: tuple[int, ...] = setting((20, 40))  # last epoch of each step of the schedules
    mlm_mask_probability: float = setting(0.15)  # each word of a class name is masked with this probability (>= 1 word)

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("width", "num_blocks", "num_heads", "num_fusion_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.num_heads:
            raise InputError(f"num_heads ({self.num_heads}) must divide width ({self.width})")
        if self.mlp_ratio <= 0:
            raise InputError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0 <= self.dropout < 1 or not 0 <= self.attention_dropout < 1:
            raise InputError(f"dropout and attention_dropout must be in [0, 1), got {self.dropout}, "
                             f"{self.attention_dropout}")
        _check_choice("fusion_mode", self.fusion_mode, FUSION_MODES)
        _check_choice("modalities", self.modalities, MODALITIES)
        _check_choice("view_mode", self.view_mode, VIEW_MODES)
        _check_choice("se_target", self.se_target, SE_TARGETS)
        _check_choice("fusion_order", self.fusion_order, FUSION_ORDERS)
        _check_choice("zero_shot_embedding", self.zero_shot_embedding, ZERO_SHOT_EMBEDDINGS)
        if self.conse_top_t < 1:
            raise InputError(f"conse_top_t must be >= 1, got {self.conse_top_t}")
        if self.zero_shot_embedding == "conse" and self.se_target != "class":
            raise InputError("ConSE embeddings are combinations of class embeddings, without the phi(s_v) term: "
                             "set `se_target='class'` (the 'task' ablation sets both)")
        if self.task_weight < 0:
            raise InputError(f"task_weight must be >= 0, got {self.task_weight}")
        milestones = tuple(self.weight_milestones_epochs)
        if any(m < 1 for m in milestones) or list(milestones) != sorted(set(milestones)):
            raise InputError(f"weight_milestones_epochs must be increasing epochs >= 1, got {milestones}")
        for name in ("se_weights", "mlm_weights"):
            weights = tuple(getattr(self, name))
            if len(weights) not in (1, len(milestones) + 1):
                raise InputError(f"{name} needs 1 value (constant) or {len(milestones) + 1} (one per step of "
                                 f"weight_milestones_epochs={milestones}), got {weights}")
            if any(w < 0 for w in weights):
                raise InputError(f"{name} must be >= 0, got {weights}")
        if self.zero_shot_embedding == "se" and not any(self.se_weights):
            raise InputError("without the SE loss (se_weights all 0) the SE head is untrained: set "
                             "`zero_shot_embedding='conse'` (the 'task' ablation)")
        if not 0 < self.mlm_mask_probability <= 1:
            raise InputError(f"mlm_mask_probability must be in (0, 1], got {self.mlm_mask_probability}")
        if any(self.mlm_weights) and not self.use_text:
            raise InputError("mlm_weights must all be 0 without the text stream (use_text=False); "
                             "use the 'no-text' ablation, which sets both")
        if self.fusion_mode == "concat" and self.use_text:
            raise InputError("fusion_mode 'concat' has no fusion tokens to carry text: set use_text=False "
                             "(the 'concat' ablation sets it)")

    @property
    def uses_mlm(self) -> bool:
        """Whether any epoch trains the MLM loss (and so runs the text pass)."""
        return self.use_text and any(w > 0 for w in self.mlm_weights)

    @property
    def decision_rule(self) -> str:
        """The zero-shot rule consistent with the SE target (`eval.metrics.RULES`; docs/fusion.md)."""
        return "kinetics" if self.se_target == "kinetics+class" else "plain"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FusionConfig:
        """Rebuild from `to_dict()` output (JSON turns tuples into lists)."""
        _check_keys(cls, values, "fusion config")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True)
class TrainConfig:
    """One training run of the fusion head on a token store.

    Training clips are the done clips of `store` whose split is in `train_splits`. Validation comes from one of
    (a) `val_store` (its done clips, filtered by `val_splits` when given), (b) `val_splits` of `store`, or
    (c) `val_unseen_fraction` > 0: a deterministic share of the training classes held out as validation-unseen
    plus `val_seen_fraction` of the remaining classes' clips as validation-seen (AVCA stage-1 style). No
    validation: only `last.pt` is written. Test splits (`features.splits`) never validate.
    """

    store: Path = setting(help="Training token store.")
    out: Path = setting(affects_result=False,
                        help="Run directory (created; must be empty unless `resume`); with a run's config, that run's "
                             "folder.")
    fusion: FusionConfig = setting(factory=FusionConfig)
    embeddings: str = setting("glove-6b-50d",
                              help="Class-name embeddings: glove-6b-50d, word2vec:PATH, fasttext:PATH, avca:ucf|..., "
                                   "clip:PATH, clap:PATH, clipclap:CLIP_PATH,CLAP_PATH (text.class_embeddings).")
    name_map: Path | None = setting(None, help="CSV original,manual: class names rewritten before embedding.")
    missing: str = setting("error", choices=("error", "skip"),
                           help="Words the vectors lack: error lists them all, skip drops them from their names.")
    peer_text_order: bool = setting(False,
                                    help="AVCA tables only: give class vectors as AVCA-GZSL's code does (class id i of "
                                         "the sorted original names gets the i-th vector sorted by manual name; "
                                         "another class's vector for most classes) to reproduce the peers' numbers; "
                                         "by name otherwise.")
    classes_file: Path | None = setting(None, flag="--classes",
                                        help="Training class list, one per line, class id = line order (default: "
                                             "sorted training labels).")
    train_splits: tuple[str, ...] = setting(("seen",), help="Store splits whose clips train the head.")
    val_store: Path | None = setting(None, help="A separate validation store.")
    val_splits: tuple[str, ...] = setting((), flag="--val-split",
                                          help="Validation split(s) of `store` (or of `val_store`); never a test "
                                               "split.")
    val_unseen_fraction: float = setting(0.0,
                                         help="Hold out this share of the training classes as validation-unseen (plus "
                                              "`val_seen_fraction` of the other classes' clips as validation-seen); "
                                              "for stores with only seen / unseen splits.")
    val_seen_fraction: float = setting(0.2,
                                       help="With `val_unseen_fraction`: share of each kept class's clips held out as "
                                            "validation-seen (rounded; at least 1 clip of a class with 2 or more, so "
                                            "small stores still validate GZSL).")
    val_split_seed: Seed = setting(0)  # seed of that hold-out draw (independent of `seed` so seeds share one split)
    test_seen_fraction: float = setting(0.0,
                                        help="Hold out this share of each training class's clips as test-seen (never "
                                             "trained, validated or selected on; zeroshot scores them as GZSL's seen "
                                             "part); for stores with only seen / unseen splits.")
    shuffle_class_embeddings: bool = setting(False,
                                             help="Control run: SE targets use a permutation of the training classes' "
                                                  "embeddings (seeded by `val_split_seed`), so nothing links content "
                                                  "to names; zero-shot falls to chance.")
    # Not raw HM by default: it is 0 in most epochs while GZSL collapses onto the seen classes (docs/fusion.md,
    # "Which clips train and validate"), so it would pick an arbitrary early epoch. Without a seen part of the
    # validation data, ZSL selects; without an unseen part, seen accuracy.
    select_by: str = setting("calibrated_gzsl_hm", choices=SELECTION_METRICS,
                             help="Validation score that picks best.pt: HM after calibrated stacking with beta chosen "
                                  "on the validation data (AVCA's stage 1), raw GZSL HM, or ZSL; ties go to the "
                                  "higher ZSL.")
    epochs: int = setting(100, help="Training epochs.")
    schedule_epochs: int | None = setting(None)  # epochs the lr schedule spans (None: `epochs`); a run that stops
    # before the end of its schedule is AVCA's stage 2: stage 1's whole schedule, checkpoint at the selected epoch
    batch_size: int = setting(64, help="Clips per step.")
    eval_batch_size: int = setting(128, affects_result=False)
    lr: float = setting(1e-4, help="Peak AdamW learning rate.")
    weight_decay: float = setting(0.05,
                                  help="AdamW decay of weight matrices (not of norms, biases, embeddings, tokens).")
    lr_schedule: str = setting("cosine", choices=LR_SCHEDULES,
                               help="After linear warmup: cosine decay to lr x `min_lr_ratio`, or steps of "
                                    "`lr_step_gamma` after each of `lr_milestones_epochs`.")
    warmup_epochs: float = setting(2.0, help="Linear warmup length in epochs (both schedules).")
    min_lr_ratio: float = setting(0.01)  # cosine floor as a fraction of lr
    lr_milestones_epochs: tuple[int, ...] = setting((20, 40))  # "step": lr *= lr_step_gamma after each of these epochs
    lr_step_gamma: float = setting(0.1)
    grad_clip_norm: float = setting(1.0, help="Maximum global gradient norm (0: no clipping).")
    seed: Seed = setting(0, help="Seed of init, data order, views, masks and dropout.")
    device: str = setting("cpu", affects_result=False, choices=DEVICES,
                          help="cpu or cuda (bf16 autocast); no silent fallback.")
    resume: bool = setting(False, affects_result=False, help="Continue the run in `out` from its last.pt.")
    prefetch_batches: int = setting(2, affects_result=False)  # batches read ahead in a background thread
    resident_store: str = setting("auto", affects_result=False)  # "on": the training clips' tokens are read once onto
    # the device and batched there; "auto": so on CUDA when they fit in `resident_share` of its free memory; "off":
    # streamed per batch
    resident_share: float = setting(0.5, affects_result=False)  # share of the device's free memory a resident store may
    # take ("auto")
    compile: bool = setting(False, affects_result=False)  # torch.compile the head's forward (fixed shapes; pays off on
    # a GPU)
    lr_batch_scaling: str = setting("none")  # the peak lr is `lr` at `lr_reference_batch` clips, scaled to
    # `batch_size`: "sqrt" (x sqrt(batch / reference), the rule for Adam-type optimisers), "linear" (x batch /
    # reference), "none"
    lr_reference_batch: int = setting(64)  # the batch size `lr` is given for
    progress: bool = setting(True, affects_result=False, help="Show progress: a bar, or log lines off a terminal.")
    log_every_steps: int = setting(50, affects_result=False)  # a log line every this many steps
    require_complete: bool = setting(False, affects_result=False,
                                     help="Refuse a store that extract is still filling (pending clips); without it, "
                                          "training warns with their count.")
    method: str = setting("mzst",
                          help="The head: mzst (the fusion head), or a comparison head: devise, ale, sje, cjme, "
                               "avgzslnet, avca, tcaf, clipclap (docs/fusion.md, Comparison heads).")
    recipe: str | None = setting(None, choices=RECIPE_DATASETS,
                                 help="A comparison head's training as AVCA-GZSL's run scripts give it for a dataset "
                                      "(epochs, lr, batch size, n_batches, dropouts); options given override it.")
    head: dict[str, Any] = setting(factory=dict)  # a comparison head's config values, complete (its recipe and the
    # options applied; `fusion.heads.head_config`); empty for mzst

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.schedule_epochs is not None and self.schedule_epochs < self.epochs:
            raise InputError(f"schedule_epochs ({self.schedule_epochs}) must be >= epochs ({self.epochs}): a run "
                             "can stop before the end of its schedule, not after it")
        if self.lr <= 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip_norm < 0 or self.warmup_epochs < 0:
            raise InputError("weight_decay, grad_clip_norm and warmup_epochs must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise InputError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 < self.lr_step_gamma <= 1:
            raise InputError(f"lr_step_gamma must be in (0, 1], got {self.lr_step_gamma}")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("select_by", self.select_by, SELECTION_METRICS)
        _check_choice("device", self.device, DEVICES)
        if not self.train_splits:
            raise InputError("train_splits is empty; name the store splits that train the head (e.g. seen)")
        if set(self.train_splits) & set(self.val_splits) and self.val_store is None:
            raise InputError(f"splits {sorted(set(self.train_splits) & set(self.val_splits))} are both training "
                             "and validation splits")
        if not 0 <= self.val_unseen_fraction < 1 or not 0 <= self.val_seen_fraction < 1:
            raise InputError("val_unseen_fraction and val_seen_fraction must be in [0, 1)")
        if not 0 <= self.test_seen_fraction < 1:
            raise InputError(f"test_seen_fraction must be in [0, 1), got {self.test_seen_fraction}")
        if self.val_unseen_fraction and (self.val_store is not None or self.val_splits):
            raise InputError("choose one validation source: val_store, val_splits or val_unseen_fraction")
        if self.prefetch_batches < 0:
            raise InputError(f"prefetch_batches must be >= 0, got {self.prefetch_batches}")
        _check_choice("resident_store", self.resident_store, RESIDENT_STORE)
        _check_choice("lr_batch_scaling", self.lr_batch_scaling, LR_BATCH_SCALING)
        if not 0 < self.resident_share <= 1 or self.lr_reference_batch < 1:
            raise InputError("resident_share must be in (0, 1] and lr_reference_batch >= 1")
        self._check_method()
        spec = self.embedding_spec
        if spec.is_table and not self.fusion.normalise_embeddings:
            raise InputError(f"the {spec.text} table is stored L2-normalised (raw vectors do not exist): train on it "
                             "with `normalise_embeddings=True`, or pick a word-vector source for raw embeddings")
        if self.fusion.se_target == "kinetics+class" and not spec.has_kinetics_labels:
            raise InputError(f"{spec.text} holds only its dataset's class names, no Kinetics-400 labels for the SE "
                             "target's phi(s_v) term: set `se_target='class'`, or pick a word-vector source")

    def _check_method(self) -> None:
        """A setting the run's head cannot take is refused in one line, never ignored."""
        if self.method == "mzst":
            if self.head or self.recipe is not None:
                raise InputError("`recipe` and head settings belong to the comparison heads (`method`); the MZST head "
                                 "takes a preset and ablations")
            return
        defaults = TrainConfig.__dataclass_fields__
        taken = [name for name in _MZST_TRAINING if getattr(self, name) != _default(defaults[name])]
        head_fusion = dataclasses.replace(FusionConfig(), **HEAD_FUSION_SETTINGS,
                                          normalise_embeddings=self.fusion.normalise_embeddings)
        taken += [f.name for f in dataclasses.fields(FusionConfig)
                  if getattr(self.fusion, f.name) != getattr(head_fusion, f.name)]
        if taken:
            raise InputError(f"method {self.method!r} cannot take {', '.join(f'`{n}`' for n in taken)}: settings of "
                             "the MZST head (a comparison head has no text stream, no phi(s_v) term, no MLM, no views "
                             "of its own, and trains with Adam and a plateau schedule)")

    @property
    def embedding_spec(self) -> EmbeddingSpec:
        """The class-name embedding source of the run (`embeddings`, `name_map`, `fusion.normalise_embeddings`)."""
        return EmbeddingSpec.parse(self.embeddings, name_map=self.name_map,
                                   normalise=self.fusion.normalise_embeddings, missing=self.missing,
                                   peer_text_order=self.peer_text_order)

    @property
    def has_validation(self) -> bool:
        return self.val_store is not None or bool(self.val_splits) or self.val_unseen_fraction > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: paths as strings, the fusion config nested."""
        values = asdict(self)
        for key, value in values.items():
            if isinstance(value, Path):
                values[key] = str(value)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Rebuild from `to_dict()` output."""
        _check_keys(cls, values, "training config")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key == "fusion":
                value = FusionConfig.from_dict(value)
            elif key in _PATH_FIELDS and value is not None:
                value = Path(value)
            elif isinstance(value, list):
                value = tuple(value)
            elif key == "select_by":
                value = _RENAMED_SELECTION_METRICS.get(value, value)
            kwargs[key] = value
        return cls(**kwargs)


_PATH_FIELDS = ("store", "out", "name_map", "classes_file", "val_store")


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default

# Named head sizes. "demo" trains ~150 clips for tens of epochs on 2 CPU cores in about a minute
# (BENCHMARKS.md, bench/fusion_step.py).
PRESETS: dict[str, FusionConfig] = {
    "default": FusionConfig(),
    "demo": FusionConfig(width=128, num_blocks=2, num_heads=4, dropout=0.1),
}

# Field overrides for the ablations of the paper's Tables 7 (fusion, text, losses) and 8 (normalisation), plus
# single-modality runs and the two readings of the paper we had to choose between. "no-se" drops the phi(s_v)
# term of the SE target; "task" drops the SE loss itself (L_TASK only) and recognises by ConSE over the TASK
# logits. With our leakage-free design (SE and TASK read an AV-only pass) "no-mlm" and "no-text" leave the same
# AV path: text reaches the AV weights only through MLM gradients. "sequential" is eq. 2's fusion order, "eq5"
# eq. 5's weights (SE weight 1; sigma keeps the step schedule).
ABLATIONS: dict[str, dict[str, Any]] = {
    "concat": {"fusion_mode": "concat", "use_text": False, "mlm_weights": (0.0,)},
    "no-text": {"use_text": False, "mlm_weights": (0.0,)},
    "no-se": {"se_target": "class"},
    "no-mlm": {"mlm_weights": (0.0,)},
    "normalised": {"normalise_embeddings": True},
    "audio-only": {"modalities": "audio"},
    "video-only": {"modalities": "video"},
    "task": {"se_weights": (0.0,), "se_target": "class", "zero_shot_embedding": "conse", "use_text": False,
             "mlm_weights": (0.0,)},
    "sequential": {"fusion_order": "sequential"},
    "eq5": {"se_weights": (1.0,)},
}


def apply_ablations(config: FusionConfig, names: tuple[str, ...] | list[str]) -> FusionConfig:
    """`config` with the overrides of each named ablation applied in order.

    Raises:
        ValueError: an unknown ablation name, or a combination the config rejects.
    """
    overrides: dict[str, Any] = {}
    for name in names:
        if name not in ABLATIONS:
            raise InputError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        overrides.update(ABLATIONS[name])
    return dataclasses.replace(config, **overrides)


def embedding_settings(embeddings: str) -> dict[str, Any]:
    """The head's settings a class-embedding source requires (`FusionConfig` fields; none for word vectors).

    A table (`EmbeddingSpec.is_table`) exists only L2-normalised and holds no Kinetics-400 labels, so the SE
    target regresses phi(class) only; the demo and the AVCA protocol train on AVCA's tables with these.
    """
    spec = EmbeddingSpec.parse(embeddings)
    settings: dict[str, Any] = {}
    if spec.is_table:
        settings["normalise_embeddings"] = True
    if not spec.has_kinetics_labels:
        settings["se_target"] = "class"
    return settings


def train_config_from_options(
    options: Mapping[str, Any],
    base: Mapping[str, Any] | None = None,
    preset: str | None = None,
    ablations: tuple[str, ...] = (),
) -> TrainConfig:
    """Build a training config from flat option values (the CLI's), over a base config and a preset.

    Precedence: `base` (a recorded `TrainConfig.to_dict()`, e.g. a run's config.json "train" entry) < `preset`
    (head size) < `ablations` < `options`. Keys of `options` are field names of `TrainConfig` or of
    `FusionConfig` (the latter go into the nested fusion config); for a comparison head (`method`), also of
    its config (they go into `head`), and its `recipe` comes between `base` and `options`.

    Raises:
        ValueError: unknown preset, ablation or option name, or invalid values.
    """
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"fusion"}
    fusion_fields = {f.name for f in dataclasses.fields(FusionConfig)}
    base_values = dict(base or {})
    method = options.get("method", base_values.get("method", "mzst"))
    head_values: dict[str, Any] = {}
    recipe_values: dict[str, Any] = {}
    if method != "mzst":
        options, head_values, recipe_values = _head_options(method, options, base_values, train_fields, preset,
                                                            ablations)
    unknown = set(options) - train_fields - fusion_fields
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)}")
    fusion = FusionConfig.from_dict(base_values.pop("fusion")) if "fusion" in base_values else FusionConfig()
    if preset is not None:
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        size = {name: getattr(PRESETS[preset], name) for name in ARCHITECTURE_FIELDS + ("dropout", "attention_dropout")
                if name not in ("fusion_mode", "use_text", "modalities")}
        fusion = dataclasses.replace(fusion, **size)
    fusion = apply_ablations(fusion, ablations)
    if method != "mzst":
        fusion = dataclasses.replace(fusion, **HEAD_FUSION_SETTINGS)
    fusion = dataclasses.replace(fusion, **{k: v for k, v in options.items() if k in fusion_fields})
    merged = {**base_values, **recipe_values, **{k: v for k, v in options.items() if k in train_fields},
              **head_values}
    missing = {"store", "out"} - set(merged)
    if missing:
        raise InputError(f"missing {sorted(missing)}: give `store` and `out` (or a recorded config that has them)")
    return TrainConfig.from_dict({**merged, "fusion": fusion.to_dict()})


def method_options(method: str) -> frozenset[str]:
    """The option names (keys of `train_config_from_options`'s `options`) a run of `method` takes: for MZST every
    training and head field; for a comparison head the training fields but the MZST head's optimiser and schedule,
    its own config's fields and the class-embedding normalisation (its runs fix the other head fields).

    Raises:
        InputError: an unknown method.
    """
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"fusion"}
    if method == "mzst":
        return frozenset(train_fields | {f.name for f in dataclasses.fields(FusionConfig)})
    from fusion.heads import head_entry

    own = {f.name for f in dataclasses.fields(head_entry(method).config_class)}
    return frozenset((train_fields - set(_MZST_TRAINING) - {"head"}) | own | {"normalise_embeddings"})


def _head_options(method: str, options: Mapping[str, Any], base: dict[str, Any], train_fields: set[str],
                  preset: str | None, ablations: tuple[str, ...]) -> tuple[dict, dict, dict]:
    """A comparison head's run: (the options left for the training and fusion configs, its `method` and `head`
    values, the training values its recipe gives). Its own settings win over same-named fusion fields (`dropout`).

    The recipe (`recipe`, or the peers' shared training without one) applies to a new run; a recorded run of the
    same method keeps its recorded values unless a recipe is given again.
    """
    from fusion.heads import head_entry, resolve_head_settings

    if preset is not None or ablations:
        raise InputError(f"method {method!r} takes no preset or ablation (the MZST head's); choose its `recipe` and "
                         "its settings")
    own = {f.name for f in dataclasses.fields(head_entry(method).config_class)}
    same_method = base.get("method", "mzst") == method
    recipe = options.get("recipe")
    recorded = dict(base.get("head") or {}) if same_method and recipe is None else {}
    recipe_train, head = resolve_head_settings(method, recipe, train_fields,
                                               {**recorded, **{k: v for k, v in options.items() if k in own}})
    left = {k: v for k, v in options.items() if k not in own}
    return left, {"head": head, "method": method}, recipe_train if recipe is not None or not same_method else {}


@dataclass(frozen=True)
class PeerImportConfig:
    """`cli.py import-peer-model`: a checkpoint of AVCA-GZSL's, TCAF-GZSL's or ClipClap-GZSL's own code -> a run
    directory (`fusion.peer_checkpoint`)."""

    method: str = setting(help="The checkpoint's method: devise, ale, sje, cjme, avgzslnet, avca (AVCA-GZSL; its "
                               "DeviseModel serves the first three), tcaf (TCAF-GZSL) or clipclap (ClipClap-GZSL).")
    checkpoint: Path = setting(help="The peer's checkpoint (.pt, {'epoch', 'model', 'optimizer'}), e.g. "
                                    "runs/cjme_ucf_all_main/checkpoints/CJME_score_ckpt_<epoch>.pt of its model.zip.")
    dataset: str = setting(choices=RECIPE_DATASETS, help="The benchmark the checkpoint was trained on.")
    out: Path = setting(affects_result=False, help="The run directory to create.")
    split: str = setting("main_split", choices=("main_split", "cls_split"),
                         help="The benchmark split it was trained on (main_split: SeLaVi features; cls_split: C3D / "
                              "VGGish).")
    stage: int = setting(2, help="The protocol stage it was trained in: 2 (model.zip's `all` runs, trained on "
                                 "stage_2_train classes) or 1 (the `val` runs, stage_1_train classes).")
    embeddings: str | None = setting(None, help="Class-name embeddings as train-fusion takes them (default: the "
                                                "dataset's AVCA table, avca:<dataset>).")
    name_map: Path | None = setting(None, help="CSV original,manual: class names rewritten before embedding.")
    peer_text_order: bool = setting(False, help="AVCA tables only: give class vectors as AVCA-GZSL's code does, to "
                                                "reproduce its published numbers; by name otherwise.")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.stage not in (1, 2):
            raise InputError(f"stage must be 1 or 2, got {self.stage}")

    @property
    def embedding_spec(self) -> str:
        return self.embeddings or f"avca:{self.dataset}"
