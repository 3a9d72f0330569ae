"""Pretraining classes (Kinetics labels rendered by the benchmark's rule) and the Kinetics head fitted on them."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from common.errors import InputError
from curate import pretrain, synthetic
from curate.config import SyntheticConfig
from extract.config import PROFILES, VideoConfig
from extract.mvit import KINETICS400_CATEGORIES, build_mvit
from extract.pipeline import ClipExtractor
from features.config import RunnerConfig
from features.manifest import read_manifest
from features.runner import run_extraction
from features.store import StoreError
from text.class_embeddings import load_embedding_source

_SMALL = dict(classes=4, clips_per_class=2, seconds=1.0, workers=1, vectors="glove-6b-50d", pretraining_classes=3,
              pretraining_clips_per_class=2)
_EXTRACT = PROFILES["cpu-small"]


def _rows(path):
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "bench"
    summary = synthetic.make_synthetic(SyntheticConfig(out_dir=out, **_SMALL))
    head = pretrain.fit_kinetics_head(summary.pretraining_manifest_path, _EXTRACT, out / "pretraining")
    return out, summary, head


def test_pretraining_classes_are_kinetics_labels_scored_on_the_benchmarks_components(world):
    out, summary, _ = world
    clips = read_manifest(summary.pretraining_manifest_path)
    labels = sorted({clip.class_name for clip in clips})
    assert len(clips) == 6 and {clip.split for clip in clips} == {synthetic.PRETRAINING_SPLIT}
    assert set(labels) <= set(KINETICS400_CATEGORIES) and not {c.has_audio for c in clips} - {False}
    benchmark = _rows(out / "classes.csv")
    assert not set(labels) & {row["name"] for row in benchmark}
    # The same rule, recomputed here: centre, project and scale with the benchmark classes' components.
    glove = load_embedding_source("glove-6b-50d")
    emb = glove.embed([row["name"] for row in benchmark]).astype(np.float64)
    centred = emb - emb.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:int(np.sum(singular > 1e-8 * singular[0]))]
    vt *= np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])[:, None]
    scale = (centred @ vt.T).std(axis=0)
    rows = _rows(out / "pretraining" / "classes.csv")
    assert [row["name"] for row in rows] == labels and {row["embedding_source"] for row in rows} == {"glove-6b-50d"}
    expected = (glove.embed(labels) - emb.mean(axis=0)) @ vt.T / scale
    written = np.array([[float(row[f"pc{j + 1}"]) for j in range(len(vt))] for row in rows])
    np.testing.assert_allclose(written, expected, atol=2e-6)
    params = synthetic.class_parameters(np.array([[float(row[f"pc{j + 1}"]) for j in range(10)] for row in rows]))
    assert [f"{p['bg_cr']:.6f}" for p in params] == [row["bg_cr"] for row in rows]


def test_pretraining_needs_word_vectors(tmp_path):
    with pytest.raises(InputError, match="word-vector source"):
        SyntheticConfig(out_dir=tmp_path, pretraining_classes=3)


def test_extraction_scores_with_the_fitted_head(world):
    out, summary, head = world
    assert head.classes == tuple(sorted({c.class_name for c in read_manifest(summary.pretraining_manifest_path)},
                                        key=KINETICS400_CATEGORIES.index))
    assert head.train_accuracy > 0.9  # 3 classes of distinct colours
    extractor = ClipExtractor(_EXTRACT, kinetics_head=head.path)
    try:
        tokens = extractor.extract(read_manifest(out / "manifest.csv")[0].path)
    finally:
        extractor.close()
    state = load_file(str(head.path))
    cls = torch.from_numpy(tokens.video_tokens[:, 0].astype(np.float32))  # stored in float16
    expected = (cls @ state["1.weight"].T + state["1.bias"]).numpy()
    np.testing.assert_allclose(tokens.kinetics_logits, expected, rtol=1e-2, atol=5e-2)
    allowed = {KINETICS400_CATEGORIES.index(name) for name in head.classes}
    assert set(tokens.kinetics_logits.argmax(axis=1).tolist()) <= allowed  # s_v is always a pretraining class
    assert extractor.provenance()["video"]["kinetics_head_sha256"] == pretrain.sha256_file(head.path)


def test_a_head_is_reused_only_for_the_same_clips_config_and_seed(world):
    out, summary, head = world
    folder = out / "pretraining"
    assert pretrain.reusable_head(summary.pretraining_manifest_path, _EXTRACT, folder) == head
    assert pretrain.reusable_head(summary.pretraining_manifest_path, _EXTRACT, folder, seed=1) is None
    other = dataclasses.replace(_EXTRACT, video=dataclasses.replace(_EXTRACT.video, crop_size_px=96))
    assert pretrain.reusable_head(summary.pretraining_manifest_path, other, folder) is None


def test_a_head_is_for_random_init_backbones_only(world):
    with pytest.raises(InputError, match="random-init"):
        build_mvit(VideoConfig(), None, random_init=False, seed=0, kinetics_head=world[2].path)
    with pytest.raises(InputError, match="random-init"):
        pretrain.fit_kinetics_head(world[1].pretraining_manifest_path, PROFILES["paper"], world[0] / "x")


def test_a_store_resumes_only_with_the_head_it_was_made_with(world, tmp_path):
    out, _, head = world
    store = tmp_path / "tokens.zarr"
    config = RunnerConfig(videos=out / "manifest.csv", out=store, extract=_EXTRACT, progress=False)
    run_extraction(config)
    with pytest.raises(StoreError, match="fitted Kinetics head"):
        run_extraction(dataclasses.replace(config, kinetics_head=head.path))
