"""Fixtures of the eval tests: a tiny word-vector file, a learnable token store and a briefly trained run.

A clip's tokens are fixed random linear maps of its class-name embedding plus noise (so the zero-shot
assumption holds by construction), and the Kinetics logits peak on one class per class name. The store's
splits: "seen" (training clips), "val" (seen-class clips and clips of validation-unseen classes), "test_seen"
(held-out clips of the seen classes) and "unseen" (test-unseen classes).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from curate import splits
from extract.outputs import TokenLayout
from features.manifest import ManifestRow
from features.store import TokenStore
from text.class_embeddings import load_embedding_source
from text.class_names import tokenize_class_name

SEEN = ["playing guitar", "dog barking", "riding bike", "cooking pasta", "opera singing", "chopping wood"]
VAL_UNSEEN = ["car engine", "ballet dancing"]
UNSEEN = ["playing piano", "cat meowing", "riding horse"]
EXTRA = ["blowing trumpet"]  # a name only the open-vocabulary test types
LAYOUT = {"V": 2, "Nv": 3, "Dv": 12, "Na": 2, "Da": 8, "kinetics_classes": 400}
WORD_DIM = 8


@pytest.fixture(scope="session")
def eval_vectors(write_word_vectors) -> Path:
    """A word2vec text file with random vectors for every word of the class names and the Kinetics-400 labels."""
    return write_word_vectors(SEEN + VAL_UNSEEN + UNSEEN + EXTRA, WORD_DIM, seed=11)


def _vectors(path: Path) -> dict[str, np.ndarray]:
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return {r.split()[0]: np.array(r.split()[1:], dtype=np.float64) for r in rows}


def build_store(path: Path, vectors_file: Path | None, plan: list[tuple[str, str, int]], layout: dict = LAYOUT,
                noise: float = 0.2, seed: int = 0, clip_id=None, phi=None,
                scramble: tuple[str, ...] = (), has_audio: bool = True) -> TokenStore:
    """A done store: `plan` lists (class name, split, clips); tokens are linear maps of phi(name) + noise.

    `phi(name)` defaults to the mean word vector of `vectors_file`; `clip_id(name, split, k)` names clips; clips
    of the `scramble` splits get pure noise instead (same everything else), to show a result does not depend
    on them. `has_audio=False` marks every clip as having no audio track.
    """
    if phi is None:
        vectors = _vectors(vectors_file)

        def phi(name):
            return np.mean([vectors[w] for w in tokenize_class_name(name)], axis=0)

    dim = len(phi(plan[0][0]))
    rng = np.random.default_rng(seed)
    video_map = rng.normal(size=(layout["Nv"], layout["Dv"], dim)) / np.sqrt(dim)
    audio_map = rng.normal(size=(layout["Na"], layout["Da"], dim)) / np.sqrt(dim)
    names = sorted({name for name, _, _ in plan})
    kinetics_of = {name: (37 * k + 5) % 400 for k, name in enumerate(names)}
    clips, tokens = [], []
    for name, split, count in plan:
        vector = phi(name)
        for k in range(count):
            i = len(clips)
            clip_rng = np.random.default_rng([seed, i])
            cid = clip_id(name, split, k) if clip_id else f"{split}/{name}/{k}"
            clips.append(ManifestRow(cid, Path(f"/data/{i}.mp4"), name, split))
            video = np.einsum("ndw,w->nd", video_map, vector)[None] + noise * clip_rng.normal(
                size=(layout["V"], layout["Nv"], layout["Dv"]))
            audio = np.einsum("ndw,w->nd", audio_map, vector) + noise * clip_rng.normal(size=(layout["Na"],
                                                                                             layout["Da"]))
            if split in scramble:
                video, audio = clip_rng.normal(size=video.shape), clip_rng.normal(size=audio.shape)
            fields = {"video_tokens": video.astype(np.float16), "audio_tokens": audio.astype(np.float16),
                      "has_audio": has_audio, "audio_frames": 100 if has_audio else 0}
            if layout["kinetics_classes"]:
                kinetics = clip_rng.normal(size=(layout["V"], layout["kinetics_classes"]))
                kinetics[:, kinetics_of[name]] += 6.0
                fields["kinetics_logits"] = kinetics.astype(np.float32)
            tokens.append(SimpleNamespace(**fields))
    store = TokenStore.create(path, clips, TokenLayout.from_dict(layout), {"profile": "eval-test"},
                              {"weights": "random-init"})
    for start, stop in store.block_ranges():
        store.write_clips(list(range(start, stop)), tokens[start:stop])
    return TokenStore.open(path)


def default_plan() -> list[tuple[str, str, int]]:
    return ([(n, "seen", 8) for n in SEEN] + [(n, "val", 3) for n in SEEN] + [(n, "val", 4) for n in VAL_UNSEEN]
            + [(n, "test_seen", 3) for n in SEEN] + [(n, "unseen", 4) for n in UNSEEN])


@pytest.fixture(scope="session")
def classes() -> SimpleNamespace:
    """The class names of the fixtures' store."""
    return SimpleNamespace(seen=list(SEEN), val_unseen=list(VAL_UNSEEN), unseen=list(UNSEEN), extra=list(EXTRA))


@pytest.fixture(scope="session")
def store_builder():
    """`build_store(path, vectors_file, plan, layout=..., ...)` for tests that need their own store."""
    return build_store


@pytest.fixture(scope="session")
def run_trainer():
    """`train_run(store_path, out, vectors, **overrides)`: a tiny head trained for a few epochs."""
    return train_run


@pytest.fixture(scope="session")
def eval_store(tmp_path_factory, eval_vectors) -> TokenStore:
    return build_store(tmp_path_factory.mktemp("stores") / "eval.zarr", eval_vectors, default_plan())


@pytest.fixture(scope="module")
def mzsl_stores(tmp_path_factory, eval_vectors):
    """An MZSL setting: a benchmark store (the seen classes' "train" and "test" clips), an evaluation store (the
    unseen and validation-unseen classes' "mzsl" clips) and its groups file (1 easy, 2 medium, 2 hard classes)."""
    root = tmp_path_factory.mktemp("mzsl")
    bench = build_store(root / "bench.zarr", eval_vectors,
                        [(n, "train", 8) for n in SEEN] + [(n, "test", 3) for n in SEEN])
    evaluation = build_store(root / "mzsl.zarr", eval_vectors, [(n, "mzsl", 4) for n in UNSEEN + VAL_UNSEEN], seed=1)
    groups = root / "groups.csv"
    assigned = ["easy", "medium", "medium", "hard", "hard"]
    groups.write_text("class_name,group\n" + "".join(f"{n},{g}\n" for n, g in zip(UNSEEN + VAL_UNSEEN, assigned,
                                                                                  strict=True)))
    return bench, evaluation, groups


# clips taken per class from each stage's CSV
_PER_STAGE = {"stage_1_train": 4, "stage_1_val_seen": 2, "stage_1_val_unseen": 4, "stage_2_test_seen": 2,
              "stage_2_test_unseen": 3}


@pytest.fixture(scope="session")
def ucf_plan() -> tuple[list[tuple[str, str, int]], dict]:
    """A subset of UCF-GZSL main_split: 6 train classes, 3 val-unseen, 3 test-unseen; real video ids and stages.

    Returns (the plan of `build_store`, the video ids per (class, stage))."""
    ucf = splits.load_class_split("UCF")
    train, val_unseen, test_unseen = (list(ucf.stages[s])[:n] for s, n in
                                      (("stage_1_train", 6), ("stage_1_val_unseen", 3), ("stage_2_test_unseen", 3)))
    wanted = {"stage_1_train": train, "stage_1_val_seen": train, "stage_1_val_unseen": val_unseen,
              "stage_2_test_seen": train + val_unseen, "stage_2_test_unseen": test_unseen}
    ids, plan = {}, []
    for stage, names in wanted.items():
        videos = splits.load_stage_videos(ucf, stage)
        for name in names:
            mine = [v for v, label in zip(videos.video_ids, videos.labels, strict=True) if label == name]
            ids[(name, stage)] = mine[: _PER_STAGE[stage]]
            plan.append((name, stage, len(ids[(name, stage)])))
    return plan, ids


@pytest.fixture(scope="module")
def ucf_stores(tmp_path_factory, ucf_plan):
    """Two stores of `ucf_plan` whose tokens map AVCA's UCF vectors: clean, and one whose test clips are noise."""
    table = load_embedding_source("avca:ucf", normalise=True)
    plan, ids = ucf_plan

    def phi(name):
        return table.embed([name])[0]

    root = tmp_path_factory.mktemp("ucf")
    layout = {"V": 1, "Nv": 1, "Dv": 16, "Na": 1, "Da": 12, "kinetics_classes": 0}
    common = {"layout": layout, "phi": phi, "clip_id": lambda name, stage, k: ids[(name, stage)][k], "noise": 0.05}
    clean = build_store(root / "clean.zarr", None, plan, **common)
    noisy = build_store(root / "noisy.zarr", None, plan, scramble=("stage_2_test_seen", "stage_2_test_unseen"),
                        **common)
    return clean, noisy


def train_run(store_path: Path, out: Path, vectors: Path, **overrides):
    """Train a tiny head on a store (a few epochs, seconds on CPU) and return the run directory."""
    from fusion.config import FusionConfig, TrainConfig
    from fusion.trainer import train

    fusion = FusionConfig(width=32, num_blocks=1, num_heads=2, dropout=0.0,
                          **overrides.pop("fusion", {}))
    config = TrainConfig(**{
        "store": store_path, "out": out, "fusion": fusion, "embeddings": f"word2vec:{vectors}",
        "train_splits": ("seen",), "val_splits": ("val",), "epochs": 3, "batch_size": 16, "lr": 3e-3,
        "warmup_epochs": 0.0, "progress": False, "prefetch_batches": 0, **overrides,
    })
    train(config)
    return out


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory, eval_store, eval_vectors) -> Path:
    return train_run(eval_store.path, tmp_path_factory.mktemp("runs") / "run", eval_vectors)
