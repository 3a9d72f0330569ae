"""eval.metrics against hand-computed cases (AVCA-GZSL's semantics, docs/eval.md)."""

import numpy as np
import pytest

from eval import metrics

# Six clips, classes 0 and 1 seen, 2 and 3 unseen. Predictions worked out by hand in the comments.
_Y = np.array([0, 0, 1, 2, 3, 3])
_D = np.array(
    [
        [0.1, 0.5, 0.3, 0.9],  # beta 0: 0 (right); 0.15: 0 (0.25 < 0.3); 0.3: 2
        [0.2, 0.1, 0.9, 0.9],  # always 1 (wrong)
        [0.9, 0.2, 0.4, 0.9],  # beta 0: 1 (right); 0.15: 1 (0.35 < 0.4); 0.3: 2
        [0.1, 0.9, 0.2, 0.9],  # beta 0: 0; 0.15: 2 (0.25 > 0.2, right)
        [0.5, 0.9, 0.9, 0.6],  # beta 0: 0; 0.15: 3 (0.65 > 0.6, right)
        [0.9, 0.9, 0.2, 0.3],  # always 2 (wrong)
    ]
)
_SEEN, _UNSEEN = np.array([0, 1]), np.array([2, 3])


def test_class_distances_rules_by_hand():
    plain = metrics.class_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [0.0, 1.0]]), rule="plain")
    np.testing.assert_allclose(plain, [[5.0, 1.0]])
    kinetics = metrics.class_distances(
        np.array([[1.0, 1.0]]), np.array([[0.0, 1.0], [3.0, 4.0]]), rule="kinetics", offsets=np.array([[1.0, 0.0]])
    )
    np.testing.assert_allclose(kinetics, [[0.0, np.sqrt(18.0)]], atol=1e-12)
    cosine = metrics.class_distances(np.array([[1.0, 0.0]]), np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]), "cosine")
    np.testing.assert_allclose(cosine, [[0.0, 1.0, 2.0]], atol=1e-12)
    # cosine with offsets compares the direction of f(x) - phi(s_v(x))
    shifted = metrics.class_distances(
        np.array([[2.0, 1.0]]), np.array([[0.0, 5.0], [1.0, 0.0]]), rule="cosine", offsets=np.array([[2.0, 0.0]])
    )
    np.testing.assert_allclose(shifted, [[0.0, 1.0]], atol=1e-12)


def test_class_distances_match_brute_force():
    rng = np.random.default_rng(0)
    pred, emb, off = rng.normal(size=(7, 5)), rng.normal(size=(4, 5)), rng.normal(size=(7, 5))
    brute = np.linalg.norm((pred - off)[:, None, :] - emb[None, :, :], axis=2)
    np.testing.assert_allclose(metrics.class_distances(pred, emb, "kinetics", off), brute, rtol=1e-10, atol=1e-10)
    assert metrics.class_distances(pred, emb, "plain").shape == (7, 4)


@pytest.mark.parametrize(
    ("rule", "offsets", "match"),
    [("kinetics", None, "needs offsets"), ("plain", np.zeros((1, 2)), "takes no offsets"), ("l1", None, "unknown")],
)
def test_class_distances_rejects_rule_misuse(rule, offsets, match):
    with pytest.raises(ValueError, match=match):
        metrics.class_distances(np.zeros((1, 2)), np.ones((3, 2)), rule=rule, offsets=offsets)


def test_class_distances_rejects_dim_mismatch_and_nan():
    with pytest.raises(ValueError, match="dim 2 but class embeddings 3"):
        metrics.class_distances(np.zeros((1, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.class_distances(np.array([[np.nan, 0.0]]), np.ones((3, 2)))


def test_ties_go_to_lowest_class_id():
    d = np.array([[1.0, 1.0, 2.0, 1.0]])
    assert metrics.nearest_class(d, np.array([3, 2, 1, 0])).tolist() == [0]
    assert metrics.nearest_class(d, np.array([3, 1])).tolist() == [1]
    # a seen class (0) and an unseen class (2) at the same distance: GZSL predicts the lower id, 0
    tie = np.array([[0.5, 0.9, 0.5, 0.9]])
    assert metrics.gzsl_predictions(tie, np.array([2]), _SEEN, _UNSEEN).tolist() == [0]
    result = metrics.gzsl(np.concatenate([tie, tie]), np.array([0, 2]), np.array([0]), np.array([2]))
    assert (result.s, result.u) == (1.0, 0.0)


def test_per_class_accuracy_class_without_samples_is_nan_and_left_out_of_mean():
    y_true, y_pred = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0])
    acc = metrics.per_class_accuracy(y_true, y_pred, np.array([0, 1, 2]))
    np.testing.assert_allclose(acc[:2], [0.5, 2 / 3])
    assert np.isnan(acc[2])
    # (0.5 + 2/3) / 2, not (0.5 + 2/3 + 0) / 3 and not NaN
    assert metrics.mean_class_accuracy(y_true, y_pred, np.array([0, 1, 2])) == pytest.approx(7 / 12)
    with pytest.raises(ValueError, match="none of the 1 classes"):
        metrics.mean_class_accuracy(y_true, y_pred, np.array([5]))


def test_zsl_by_hand_ignores_seen_samples():
    # unseen candidates only: clip 3 -> 2 (right), clip 4 -> 3 (right), clip 5 -> 2 (wrong): (1 + 1/2) / 2
    assert metrics.zsl(_D, _Y, _UNSEEN) == pytest.approx(0.75)
    assert metrics.zsl(_D[3:], _Y[3:], _UNSEEN) == pytest.approx(0.75)


def test_gzsl_by_hand_beta_zero_and_calibrated():
    raw = metrics.gzsl(_D, _Y, _SEEN, _UNSEEN, beta=0.0)
    assert (raw.s, raw.u, raw.hm, raw.beta) == (pytest.approx(0.75), 0.0, 0.0, 0.0)
    calibrated = metrics.gzsl(_D, _Y, _SEEN, _UNSEEN, beta=0.15)
    assert (calibrated.s, calibrated.u, calibrated.hm) == pytest.approx((0.75, 0.75, 0.75))
    too_much = metrics.gzsl(_D, _Y, _SEEN, _UNSEEN, beta=0.3)
    assert (too_much.s, too_much.u, too_much.hm) == (0.0, pytest.approx(0.75), 0.0)
    assert metrics.gzsl_predictions(_D, _Y, _SEEN, _UNSEEN, beta=0.15).tolist() == [0, 1, 1, 2, 3, 2]


def test_gzsl_unseen_class_without_samples_is_left_out():
    # class 4: an unseen candidate far from every clip, with no test clip of its own
    d = np.concatenate([_D, np.full((6, 1), 9.0)], axis=1)
    result = metrics.gzsl(d, _Y, _SEEN, np.array([2, 3, 4]), beta=0.15)
    assert result.u == pytest.approx(0.75)
    assert metrics.zsl(d, _Y, np.array([2, 3, 4])) == pytest.approx(0.75)


def test_select_beta_picks_best_hm_then_smallest_beta():
    assert metrics.select_beta(_D, _Y, _SEEN, _UNSEEN, betas=[0.0, 0.15, 0.3]) == (0.15, pytest.approx(0.75))
    # 0.15 and 0.16 give the same predictions: the smaller wins whatever the order
    assert metrics.select_beta(_D, _Y, _SEEN, _UNSEEN, betas=[0.16, 0.3, 0.15])[0] == 0.15
    # beta = 0 is an ordinary candidate, chosen when nothing beats it
    balanced = np.array([[0.1, 0.9], [0.9, 0.1]])
    assert metrics.select_beta(balanced, np.array([0, 1]), [0], [1]) == (0.0, 1.0)
    assert metrics.DEFAULT_BETAS.tolist() == pytest.approx([0.2 * k for k in range(16)])


def test_harmonic_mean():
    assert metrics.harmonic_mean(0.0, 0.0) == 0.0
    assert metrics.harmonic_mean(0.5, 1.0) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        metrics.harmonic_mean(-0.1, 0.5)


def test_gzsl_rejects_bad_ids():
    with pytest.raises(ValueError, match="both seen and unseen"):
        metrics.gzsl(_D, _Y, np.array([0, 2]), _UNSEEN)
    with pytest.raises(ValueError, match="neither seen nor unseen"):
        metrics.gzsl(_D, _Y, np.array([0]), _UNSEEN)
    with pytest.raises(ValueError, match=r"lie in \[0, 4\)"):
        metrics.gzsl(_D, _Y, _SEEN, np.array([2, 3, 7]))
    with pytest.raises(ValueError, match="6 labels but distances have 5 rows"):
        metrics.zsl(_D[:5], _Y, _UNSEEN)
    with pytest.raises(ValueError, match="none of the 2 classes"):
        metrics.gzsl(_D[:3], _Y[:3], _SEEN, _UNSEEN)  # no unseen sample: U undefined
    with pytest.raises(ValueError, match="no sample belongs to an unseen class"):
        metrics.zsl(_D[:3], _Y[:3], _UNSEEN)


def test_validation_result_by_hand():
    result = metrics.validation_result(_D, _Y, _SEEN, _UNSEEN, betas=[0.0, 0.15, 0.3])
    assert (result.num_clips, result.num_seen_classes, result.num_unseen_classes) == (6, 2, 2)
    assert (result.zsl, result.gzsl_s, result.gzsl_u, result.gzsl_hm) == (pytest.approx(0.75), pytest.approx(0.75),
                                                                          0.0, 0.0)
    # beta 0.15 is chosen on these clips: S = U = HM = 0.75 (test_gzsl_by_hand_beta_zero_and_calibrated)
    assert result.calibrated_beta == 0.15 and result.calibrated_val_split is None
    assert (result.calibrated_gzsl_s, result.calibrated_gzsl_u, result.calibrated_gzsl_hm,
            result.calibrated_val_hm) == pytest.approx((0.75, 0.75, 0.75, 0.75))
    assert result.seen_accuracy is None and result.selection("calibrated_gzsl_hm") == "calibrated_gzsl_hm"
    # seen clips only: nearest seen class, 0 -> 0 (right), 1 -> 1 (wrong), 2 -> 1 (right): (1/2 + 1) / 2
    seen_only = metrics.validation_result(_D[:3], _Y[:3], _SEEN, _UNSEEN)
    assert seen_only.seen_accuracy == pytest.approx(0.75) and seen_only.zsl is None and seen_only.gzsl_hm is None
    assert seen_only.selection("gzsl_hm") == "seen_accuracy" and seen_only.calibrated_beta is None
    unseen_only = metrics.validation_result(_D[3:], _Y[3:], _SEEN, _UNSEEN)
    assert unseen_only.zsl == pytest.approx(0.75) and unseen_only.selection("calibrated_gzsl_hm") == "zsl"


def test_eval_result_json_is_percent_and_reads_back():
    result = metrics.EvalResult(zsl=0.5, gzsl_s=0.75, gzsl_u=0.25, gzsl_hm=0.375, num_clips=12, num_seen_classes=3,
                                num_unseen_classes=2, calibrated_beta=0.4, calibrated_gzsl_s=0.5,
                                calibrated_gzsl_u=0.5, calibrated_gzsl_hm=0.5, calibrated_val_split="val",
                                calibrated_val_hm=0.625)
    written = result.to_json()
    assert written == {"zsl": 50.0, "gzsl_s": 75.0, "gzsl_u": 25.0, "gzsl_hm": 37.5, "num_clips": 12,
                       "num_seen_classes": 3, "num_unseen_classes": 2, "calibrated_beta": 0.4,
                       "calibrated_gzsl_s": 50.0, "calibrated_gzsl_u": 50.0, "calibrated_gzsl_hm": 50.0,
                       "calibrated_val_split": "val", "calibrated_val_hm": 62.5}
    assert metrics.EvalResult.from_json({**written, "label": "run", "per_class": []}) == result
    assert result.percent("calibrated_val_hm") == 62.5 and result.percent("calibrated_beta") == 0.4
    # undefined values are written as null; the calibrated part and seen accuracy only where measured
    assert metrics.EvalResult(zsl=0.5, num_clips=4).to_json() == {
        "zsl": 50.0, "gzsl_s": None, "gzsl_u": None, "gzsl_hm": None, "num_clips": 4, "num_seen_classes": None,
        "num_unseen_classes": None}
    assert metrics.EvalResult(seen_accuracy=0.25).to_json()["seen_accuracy"] == 25.0


def test_eval_result_writer_and_reader_agree():
    rng = np.random.default_rng(0)
    fractions = [a / b for b in range(1, 60) for a in range(b + 1)] + rng.random(2000).tolist()
    for value in fractions:
        result = metrics.EvalResult(zsl=value, gzsl_hm=value, calibrated_beta=0.2, calibrated_gzsl_hm=value)
        written = result.to_json()
        again = metrics.EvalResult.from_json(written)
        assert again.to_json() == written  # a JSON read and written again is the same JSON, to the last bit
        assert again.zsl == pytest.approx(value, rel=1e-15, abs=1e-17)


def test_eval_result_refuses_what_is_not_a_result():
    with pytest.raises(ValueError, match="EvalResult.zsl must be a fraction"):
        metrics.EvalResult(zsl=75.0)
    with pytest.raises(ValueError, match="EvalResult.gzsl_hm must be a fraction"):
        metrics.EvalResult(gzsl_hm=float("nan"))
    with pytest.raises(ValueError, match="calibrated value without `calibrated_beta`"):
        metrics.EvalResult(calibrated_gzsl_hm=0.5)
    with pytest.raises(ValueError, match="metric 'zsl' must be a number, got '45'"):
        metrics.EvalResult.from_json({"zsl": "45"})
    with pytest.raises(ValueError, match="metric 'calibrated_val_split' must be a string"):
        metrics.EvalResult.from_json({"calibrated_beta": 0.2, "calibrated_val_split": 3})
    with pytest.raises(ValueError, match="EvalResult.gzsl_s must be a fraction"):
        metrics.EvalResult.from_json({"gzsl_s": 120.0})  # 120 percent
    with pytest.raises(KeyError, match="'gzsl_hm_calibrated' is not a metric"):
        metrics.EvalResult().percent("gzsl_hm_calibrated")


def test_every_table_of_metric_names_names_result_fields():
    """The tables that pick metrics to show or select by name `EvalResult` fields, never free strings."""
    import dataclasses

    import click

    import cli
    from eval import report
    from fusion import config, curves
    from workflows import ablate, demo

    names = {f.name for f in dataclasses.fields(metrics.EvalResult)}
    assert {key for key, _, _ in report.COLUMNS if not key.startswith(("mzsl_", "top"))} <= names
    assert {key for key, _ in ablate.METRICS} | set(ablate._JUDGED) | set(demo._METRICS) <= names
    assert {key for key, _ in curves._SCORES} | set(config.SELECTION_METRICS) <= names
    (select_by,) = [p for p in cli.train_fusion_command.params if p.name == "select_by"]
    assert isinstance(select_by.type, click.Choice) and tuple(select_by.type.choices) == config.SELECTION_METRICS
    assert config.TrainConfig.select_by in config.SELECTION_METRICS


def test_eval_result_reads_the_trainers_earlier_validation_record():
    """A run resumed across the change keeps one unit: its old log lines (fractions, other names) read as the
    values they hold, not 100x smaller."""
    earlier = {"clips": 12, "zsl": 0.5, "gzsl_s": 0.75, "gzsl_u": 0.25, "gzsl_hm": 0.375,
               "gzsl_hm_calibrated": 0.6, "calibration_beta": 0.4, "selection": "gzsl_hm_calibrated",
               "score": 0.6, "rank": [0.6, 0.5]}
    result = metrics.EvalResult.from_json(earlier)
    assert result.num_clips == 12 and result.calibrated_beta == 0.4
    assert (result.zsl, result.gzsl_s, result.gzsl_u, result.gzsl_hm, result.calibrated_gzsl_hm) == pytest.approx(
        (0.5, 0.75, 0.25, 0.375, 0.6))
    assert metrics.EvalResult.from_json(result.to_json()) == result
