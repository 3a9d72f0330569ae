import math

import pytest
import torch

from fusion.config import FusionConfig, apply_ablations
from fusion.losses import (
    FusionLoss,
    LossWeights,
    MaskedWordLoss,
    SemanticEmbeddingLoss,
    kinetics_class,
    loss_weights,
    se_targets,
)
from fusion.model import FusionOutput
from text.vocabulary import CLS, IGNORE_INDEX, MASK, PAD, SPECIAL_WORDS, Vocabulary, mask_words


def _words(name: str) -> list[str]:
    return name.lower().split()


@pytest.mark.parametrize("epoch, expected", [(1, 0.25), (20, 0.25), (21, 0.1), (40, 0.1), (41, 0.05), (100, 0.05)])
def test_default_schedule_is_the_papers(epoch, expected):
    weights = loss_weights(FusionConfig(), epoch)
    assert weights == LossWeights(task=1.0, se=expected, mlm=expected)


def test_constant_custom_and_disabled_weights():
    config = FusionConfig(se_weights=(1.0,), mlm_weights=(0.5, 0.0), weight_milestones_epochs=(3,))
    assert [loss_weights(config, e).mlm for e in (1, 3, 4)] == [0.5, 0.5, 0.0]
    assert {loss_weights(config, e).se for e in range(1, 10)} == {1.0}
    assert loss_weights(apply_ablations(FusionConfig(), ["no-text"]), 1).mlm == 0.0
    with pytest.raises(ValueError, match="from 1"):
        loss_weights(config, 0)


def test_kinetics_class_averages_softmax_not_logits():
    # View 0 is very sure of class 0, view 1 mildly prefers class 1 twice over: mean logits pick 1, mean softmax 0.
    logits = torch.tensor([[[10.0, 0.0, 0.0], [-20.0, 1.0, 0.0]]])
    assert logits.mean(1).argmax(-1).item() == 1
    assert kinetics_class(logits).tolist() == [0]
    with pytest.raises(ValueError, match="B, V, K"):
        kinetics_class(logits[0])


def test_se_target_and_loss_by_hand():
    classes = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    kinetics = torch.tensor([[0.5, 0.5], [1.0, 1.0], [3.0, 0.0]])
    labels, pred = torch.tensor([1, 0]), torch.tensor([2, 0])
    target = se_targets(labels, classes, pred, kinetics)
    assert torch.equal(target, torch.tensor([[3.0, 2.0], [1.5, 0.5]]))
    assert torch.equal(se_targets(labels, classes), torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
    f = torch.tensor([[3.0, 0.0], [0.5, 0.5]])
    assert SemanticEmbeddingLoss()(f, target).item() == pytest.approx((4.0 + 1.0) / 2)  # ((0+4) + (1+0)) / 2
    with pytest.raises(ValueError, match="both"):
        se_targets(labels, classes, pred, None)


def test_masked_word_loss_counts_masked_positions_only():
    logits = torch.zeros(1, 3, 5)
    logits[0, 1, 4] = 10.0
    targets = torch.tensor([[IGNORE_INDEX, 4, IGNORE_INDEX]])
    expected = -math.log(math.exp(10) / (math.exp(10) + 4))
    assert MaskedWordLoss()(logits, targets).item() == pytest.approx(expected, rel=1e-3)


def test_fusion_loss_weights_the_parts():
    out = FusionOutput(embedding=torch.zeros(2, 2), task_logits=torch.zeros(2, 3), mlm_logits=torch.zeros(2, 2, 5))
    targets = torch.tensor([[IGNORE_INDEX, 4], [IGNORE_INDEX, 5 - 1]])
    parts = FusionLoss()(out, torch.tensor([0, 1]), torch.ones(2, 2), LossWeights(1.0, 0.25, 0.1), targets)
    assert parts.task.item() == pytest.approx(math.log(3)) and parts.se.item() == pytest.approx(2.0)
    assert parts.mlm.item() == pytest.approx(math.log(5))
    assert parts.total.item() == pytest.approx(math.log(3) + 0.25 * 2.0 + 0.1 * math.log(5))
    no_text = FusionOutput(embedding=out.embedding, task_logits=out.task_logits)
    assert FusionLoss()(no_text, torch.tensor([0, 1]), torch.ones(2, 2), LossWeights(1.0, 0.25, 0.1)).mlm is None


def test_vocabulary_from_class_names():
    vocabulary = Vocabulary.from_class_names(["Playing guitar", "dog barking", "playing drums"], _words)
    assert vocabulary.words == SPECIAL_WORDS + ("barking", "dog", "drums", "guitar", "playing")
    ids = vocabulary.encode_names(["playing guitar", "dog", "flying kite"], _words)
    assert ids.tolist() == [[CLS, 8, 7], [CLS, 5, PAD], [CLS, 2, 2]]  # unknown words -> UNK (2)
    with pytest.raises(ValueError, match="no word"):
        Vocabulary.from_class_names(["   "], _words)


def test_mask_words_masks_only_words_at_least_one_per_name_and_is_seeded():
    ids = torch.tensor([[CLS, 5, 6, 7], [CLS, 8, PAD, PAD], [CLS, 9, 10, PAD]]).repeat(200, 1)
    inputs, targets = mask_words(ids, 0.15, torch.Generator().manual_seed(0))
    masked = inputs == MASK
    assert masked.any(dim=1).all()
    assert not masked[:, 0].any() and not masked[ids == PAD].any()
    assert torch.equal(targets[masked], ids[masked]) and (targets[~masked] == IGNORE_INDEX).all()
    assert torch.equal(inputs[~masked], ids[~masked])
    # 3-word names: 3 x 0.15 drawn, plus one forced word when none was (0.85^3): 1.064 of 3 words expected.
    rate = masked[::3, 1:].float().mean().item()
    assert 0.31 < rate < 0.40
    again, _ = mask_words(ids, 0.15, torch.Generator().manual_seed(0))
    other, _ = mask_words(ids, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(again, inputs) and not torch.equal(other, inputs)
