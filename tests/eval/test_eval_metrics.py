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
