"""Which clips trained a run is known by store identity, not path: a copied, moved or linked store evaluates as the
original, another store that reuses the clip ids is told apart, and runs recorded before identities still work."""

import json
import logging
import shutil

import pytest

from common.errors import InputError
from eval.config import PlotConfig
from tests.workflows.conftest import default_plan
from workflows.config import ZeroShotConfig
from workflows.zeroshot import run_zeroshot

_NO_PLOTS = PlotConfig(tsne=False, per_class_bars=False)
# The fixture store's seen classes train on 8 clips each and validate on 3 (tests/workflows/conftest.py).
_SEEN_CLASSES, _USED_CLIPS_PER_SEEN_CLASS = 6, 8 + 3


def _numbers(run, store, tmp_path, name):
    """metrics.json and predictions.csv of a calibrated zero-shot evaluation, less what names the store's path."""
    result = run_zeroshot(ZeroShotConfig(run_dir=run, store=store, plots=_NO_PLOTS, out=tmp_path / name,
                                         calibrated_stacking=True, val_split="run"))
    metrics = {k: v for k, v in result.metrics.items() if k not in ("config", "store", "group", "classes_from")}
    return metrics, (tmp_path / name / "predictions.csv").read_text()


def test_the_run_records_its_stores_identity(eval_run, eval_store):
    classes = json.loads((eval_run / "classes.json").read_text())
    assert classes["train_store_identity"] == eval_store.identity
    assert classes["validation"]["store_identity"] == eval_store.identity


def test_a_copied_moved_or_linked_store_evaluates_as_the_original(eval_run, eval_store, tmp_path):
    original, predictions = _numbers(eval_run, eval_store.path, tmp_path, "original")
    assert original["includes_training_clips"] is False
    shutil.copytree(eval_store.path, tmp_path / "copy.zarr")
    assert _numbers(eval_run, tmp_path / "copy.zarr", tmp_path, "copy") == (original, predictions)
    (tmp_path / "copy.zarr").rename(tmp_path / "moved.zarr")
    assert _numbers(eval_run, tmp_path / "moved.zarr", tmp_path, "moved") == (original, predictions)
    (tmp_path / "link.zarr").symlink_to(tmp_path / "moved.zarr")
    assert _numbers(eval_run, tmp_path / "link.zarr", tmp_path, "link") == (original, predictions)


def test_a_moved_store_evaluates_as_before_and_another_at_its_path_is_told_apart(eval_vectors, store_builder,
                                                                                 run_trainer, tmp_path, caplog):
    path = tmp_path / "s.zarr"
    store_builder(path, eval_vectors, default_plan())
    run = run_trainer(path, tmp_path / "run", eval_vectors)
    before = _numbers(run, path, tmp_path, "before")
    path.rename(tmp_path / "moved.zarr")  # the run's validation clips are found in the moved store too
    assert _numbers(run, tmp_path / "moved.zarr", tmp_path, "moved") == before
    store_builder(path, eval_vectors, default_plan(), seed=3)  # same clip ids, labels and splits; other tokens
    with caplog.at_level(logging.WARNING, logger="workflows.zeroshot"):
        after = run_zeroshot(ZeroShotConfig(run_dir=run, store=path, plots=_NO_PLOTS)).metrics
    assert after["num_clips"] == before[0]["num_clips"] + _USED_CLIPS_PER_SEEN_CLASS * _SEEN_CLASSES
    assert f"{path} is not a store the run {run} trained or validated on (another identity) but holds" in caplog.text
    with pytest.raises(InputError, match="cannot resume against a different store .* clips or stores differ"):
        run_trainer(path, run, eval_vectors, resume=True)


def test_a_run_recorded_before_store_identities_is_matched_by_path_with_a_warning(eval_run, eval_store, tmp_path,
                                                                                  caplog):
    old_run = tmp_path / "old_run"
    shutil.copytree(eval_run, old_run)
    classes = json.loads((old_run / "classes.json").read_text())
    del classes["train_store_identity"], classes["validation"]["store_identity"]
    (old_run / "classes.json").write_text(json.dumps(classes))
    expected = run_zeroshot(ZeroShotConfig(run_dir=eval_run, store=eval_store.path, plots=_NO_PLOTS)).metrics
    with caplog.at_level(logging.WARNING, logger="workflows.zeroshot"):
        old = run_zeroshot(ZeroShotConfig(run_dir=old_run, store=eval_store.path, plots=_NO_PLOTS)).metrics
    assert old["num_clips"] == expected["num_clips"] and old["gzsl_hm"] == expected["gzsl_hm"]
    assert f"{old_run} records no identity of its training store" in caplog.text


def test_a_copy_of_the_training_store_is_no_validation_store(eval_store, eval_vectors, run_trainer, tmp_path):
    shutil.copytree(eval_store.path, tmp_path / "copy.zarr")
    with pytest.raises(InputError, match="is the training store \\(or a copy of it\\)"):
        run_trainer(eval_store.path, tmp_path / "run", eval_vectors, val_store=tmp_path / "copy.zarr")
