"""The role of a split: training data, validation data (where an epoch or a beta may be chosen), or test data.

A manifest's `split` column is free text, and so is a store's. Every room that must keep selection off test data
(the trainer's planner, calibrated stacking, zero-shot's validation split) asks `SplitRoles.role` instead of
looking at the name itself, so one rule decides what is test data:

- a role stated explicitly (a protocol knows its stages: `curate.splits.STAGE_ROLES`) wins;
- otherwise the name decides, word by word (words are the letters between `_`, `-`, digits, ...): a word `test` or
  `testing` makes it test data (AVCA's `stage_2_test_seen`, UCF-101's and Kinetics' `test`, ActivityNet's
  `testing`), and so does the name `unseen` (the synthetic benchmark's and `curate build`'s test classes); then a
  word `val`, `valid` or `validation` makes it validation data (`stage_1_val_unseen`, Kinetics' `val`); anything
  else is training data (`seen`, `train`, `stage_1_train`). Whole words, so `latest` or `contest` is no test split.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["SplitRole", "SplitRoles", "ROLES_BY_NAME", "split_role"]

_TEST_WORDS = frozenset({"test", "testing"})
_VALIDATION_WORDS = frozenset({"val", "valid", "validation"})
_TEST_NAMES = frozenset({"unseen"})  # test classes by name: the synthetic benchmark and the evaluation set
_WORD_SEPARATORS = re.compile(r"[^a-z]+")


class SplitRole(enum.Enum):
    """What the clips of a split may be used for."""

    TRAIN = "train"  # trained on, when a run names the split
    VALIDATION = "validation"  # never trained on by the protocols; an epoch or a beta may be chosen on it
    TEST = "test"  # evaluated only: nothing (epoch, beta, checkpoint) is ever chosen on it


def split_role(name: str) -> SplitRole:
    """The role that a split's name gives it (the module docstring states the rule)."""
    name = name.strip().lower()
    words = set(_WORD_SEPARATORS.split(name))
    if name in _TEST_NAMES or words & _TEST_WORDS:
        return SplitRole.TEST
    if words & _VALIDATION_WORDS:
        return SplitRole.VALIDATION
    return SplitRole.TRAIN


@dataclass(frozen=True)
class SplitRoles:
    """The roles of split names: those stated explicitly (by a protocol), the naming rule (`split_role`) for others.

    Attributes:
        stated: split name -> role, for the names whose role is not (only) their name's.
    """

    stated: Mapping[str, SplitRole] = field(default_factory=dict)

    def role(self, split: str) -> SplitRole:
        """The role of `split`: the stated one, else its name's."""
        return self.stated.get(split) or split_role(split)

    def test_splits(self, splits: Iterable[str]) -> list[str]:
        """The names among `splits` that are test data, sorted, each once."""
        return sorted({split for split in splits if self.role(split) is SplitRole.TEST})


ROLES_BY_NAME = SplitRoles()  # no stated roles: every split's name decides
