"""The paper's phi(s_v) term end to end on the built-in data: an error in it must show in the numbers.

A small built-in benchmark with pretraining classes, the random-init video backbone's Kinetics head fitted on
them, extraction with that head, a head trained on the paper's target phi(s_v) + phi(s_t) and scored with the
Kinetics rule ||f(x) - phi(s_v(x)) - phi(c)||. The rule must undo the target: on the clips the head trained on,
seen classes are recognised far better than when the term's sign is flipped in the target. An error at scoring
only (s_v of another clip, or one row off in the label table) is not caught this way: in 50 dimensions a wrong
offset is nearly orthogonal to the differences between the few candidate classes and shifts all their
distances alike (measured: S stays 1.0), which docs/eval.md's `plain-rule` row shows on the demo's data.
"""

from __future__ import annotations

import pytest
import torch

from curate.config import SyntheticConfig
from curate.pretrain import fit_kinetics_head
from curate.synthetic import make_synthetic
from extract.config import PROFILES
from features.config import RunnerConfig
from features.runner import run_extraction
from fusion import losses, trainer
from fusion.config import FusionConfig, TrainConfig
from workflows.config import ZeroShotConfig
from workflows.zeroshot import run_zeroshot

_EXTRACT = PROFILES["cpu-small"]
_MARGIN = 0.5  # S on the trained clips, measured: 1.0 as is, 0.27 with the sign flipped


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinetics-term")
    bench = make_synthetic(SyntheticConfig(out_dir=root / "data", classes=8, clips_per_class=3, seconds=1.0,
                                           vectors="glove-6b-50d", pretraining_classes=4,
                                           pretraining_clips_per_class=3, workers=1))
    head = fit_kinetics_head(bench.pretraining_manifest_path, _EXTRACT, root / "head")
    store = root / "tokens.zarr"
    run_extraction(RunnerConfig(videos=bench.manifest_path, out=store, extract=_EXTRACT, kinetics_head=head.path,
                                progress=False))
    return root, store


def _train(store, out):
    # SE weight 1 and enough steps to fit the few training clips closely: what is tested is that the rule undoes
    # the target, on the clips where the target was fitted.
    fusion = FusionConfig(width=64, num_blocks=1, num_heads=2, dropout=0.0, se_weights=(1.0,))
    trainer.train(TrainConfig(store=store, out=out, embeddings="glove-6b-50d", fusion=fusion, epochs=80, batch_size=8,
                              lr=1e-2, warmup_epochs=0.0, val_unseen_fraction=0.2, progress=False, prefetch_batches=0))
    return out


def _seen_accuracy(run_dir, store) -> float:
    """S with the run's rule (kinetics) over every clip, the trained ones included, after the last epoch."""
    result = run_zeroshot(ZeroShotConfig(run_dir=run_dir, store=store, include_training_clips=True,
                                         checkpoint="last"))
    assert result.metrics["rule"] == "kinetics"
    return result.result.gzsl_s


@pytest.fixture(scope="module")
def paper_run(world):
    root, store = world
    return _train(store, root / "run"), _seen_accuracy(root / "run", store)


@pytest.mark.slow
def test_a_flipped_sign_of_phi_s_v_in_the_target_is_caught(world, paper_run, monkeypatch):
    root, store = world

    def flipped(labels, class_embeddings, kinetics_pred=None, kinetics_embeddings=None):
        return losses.se_targets(labels, class_embeddings, kinetics_pred,
                                 None if kinetics_embeddings is None else -kinetics_embeddings)

    monkeypatch.setattr(trainer, "se_targets", flipped)
    broken = _seen_accuracy(_train(store, root / "flipped"), store)
    assert paper_run[1] > broken + _MARGIN, (paper_run[1], broken)
    assert torch.equal(losses.se_targets(torch.tensor([0]), torch.ones(1, 2), torch.tensor([0]), torch.ones(1, 2)),
                       torch.full((1, 2), 2.0))  # the patch stayed in the test
