"""The MLM vocabulary of class-name words and the masking of words for the MLM loss.

The vocabulary holds the words of the training class names as the embedding source tokenises them
(`EmbeddingSource.tokenize`), after four special entries: PAD, MASK, UNK and CLS_T (the text stream's
class token). Masking follows the paper's description (mask words of the class name, predict their ids):
each word is replaced by MASK with a probability, and at least one word per name always is. Unlike BERT there
is no 80/10/10 random-word / keep split: names are two or three words long, so every masked word matters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from common.errors import InputError

__all__ = ["PAD", "MASK", "UNK", "CLS", "SPECIAL_WORDS", "IGNORE_INDEX", "Vocabulary", "mask_words"]

PAD, MASK, UNK, CLS = 0, 1, 2, 3
SPECIAL_WORDS = ("<pad>", "<mask>", "<unk>", "<cls>")
IGNORE_INDEX = -100  # target of unmasked positions: cross-entropy skips them


@dataclass(frozen=True)
class Vocabulary:
    """Word <-> id table; ids 0-3 are the special entries, then the words in sorted order."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.words[: len(SPECIAL_WORDS)]) != SPECIAL_WORDS:
            raise ValueError(f"a vocabulary starts with {SPECIAL_WORDS}, got {self.words[:4]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("a vocabulary has no duplicate words")

    @classmethod
    def from_class_names(cls, names: Sequence[str], tokenize: Callable[[str], list[str]]) -> Vocabulary:
        """The vocabulary of the words of `names`.

        Raises:
            ValueError: a name without any word.
        """
        words: set[str] = set()
        for name in names:
            tokens = tokenize(name)
            if not tokens:
                raise InputError(f"class name {name!r} has no word to build the MLM vocabulary from")
            words.update(tokens)
        return cls(SPECIAL_WORDS + tuple(sorted(words)))

    def __len__(self) -> int:
        return len(self.words)

    def encode_names(self, names: Sequence[str], tokenize: Callable[[str], list[str]]) -> torch.Tensor:
        """Ids of `[CLS_T, words...]` per name, padded with PAD; unknown words map to UNK.

        Shapes:
            names (C,) -> (C, 1 + max words per name) int64
        """
        index = {word: i for i, word in enumerate(self.words)}
        rows = [[CLS] + [index.get(word, UNK) for word in tokenize(name)] for name in names]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), PAD, dtype=torch.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids


def mask_words(
    ids: torch.Tensor, probability: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask words of each name for the MLM loss.

    Each word (not PAD, not CLS_T) is masked with `probability`; a name that drew none gets one word chosen
    uniformly at random, so every name contributes a target.

    Args:
        ids: `[CLS_T, words..., PAD...]` rows from `Vocabulary.encode_names`.
        probability: chance that a word is masked.
        generator: the source of randomness (seeded by the trainer for reproducible runs).

    Returns:
        (input ids with MASK at the masked positions, target ids: the original id there, IGNORE_INDEX elsewhere).

    Shapes:
        ids (B, L) -> (B, L), (B, L)
    """
    is_word = (ids != PAD) & (ids != CLS)  # (B, L)
    if not bool(is_word.any(dim=1).all()):
        raise ValueError("every name needs at least one word to mask")
    draw = torch.rand(ids.shape, generator=generator, device=ids.device) < probability
    masked = draw & is_word
    # One word per row that drew none: the highest random score among its words wins.
    scores = torch.rand(ids.shape, generator=generator, device=ids.device).masked_fill(~is_word, -1.0)
    forced = torch.zeros_like(masked).scatter_(1, scores.argmax(dim=1, keepdim=True), True)  # (B, L)
    masked = torch.where(masked.any(dim=1, keepdim=True), masked, forced)
    inputs = ids.masked_fill(masked, MASK)
    targets = ids.masked_fill(~masked, IGNORE_INDEX)
    return inputs, targets
