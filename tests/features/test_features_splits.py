import pytest

from features.splits import ROLES_BY_NAME, SplitRole, SplitRoles, split_role

TRAIN, VALIDATION, TEST = SplitRole.TRAIN, SplitRole.VALIDATION, SplitRole.TEST


@pytest.mark.parametrize(("name", "role"), [
    ("seen", TRAIN), ("unseen", TEST), (" Unseen ", TEST),  # the synthetic benchmark; `curate build`'s split
    ("train", TRAIN), ("training", TRAIN), ("test", TEST), ("testing", TEST), ("val", VALIDATION),
    ("validation", VALIDATION), ("test_seen", TEST), ("TEST-unseen", TEST), ("test1", TEST),
])
def test_dataset_split_names_have_their_role(name, role):
    assert split_role(name) is role


@pytest.mark.parametrize("name", ["latest", "contest", "attestation", "protest_clips", "testimony", "seen_unseen"])
def test_a_name_that_only_contains_test_is_not_a_test_split(name):
    assert split_role(name) is not TEST
    assert ROLES_BY_NAME.test_splits([name, "train"]) == []


def test_stated_roles_win_over_the_name():
    roles = SplitRoles({"holdout": TEST, "stage_2_test_seen": VALIDATION})
    assert roles.role("holdout") is TEST and split_role("holdout") is TRAIN
    assert roles.role("stage_2_test_seen") is VALIDATION
    assert roles.role("unseen") is TEST  # names not stated keep their name's role
    assert roles.test_splits(["holdout", "unseen", "seen", "holdout", "stage_2_test_seen"]) == ["holdout", "unseen"]
