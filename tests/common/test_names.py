"""common.names: one spelling of class and split names, and the checks of a list of names a user gives."""

import unicodedata

import numpy as np
import pytest

from common.errors import InputError
from common.names import canonical_name, canonical_name_array, canonical_names

NFD = unicodedata.normalize("NFD", "café crème")
NFC = unicodedata.normalize("NFC", "café crème")


def test_one_spelling_nfc_trimmed_and_collapsed_case_kept():
    assert NFD != NFC and canonical_name(NFD) == NFC
    assert canonical_name("  playing \t guitar\u00a0 ") == "playing guitar"
    assert canonical_name("Archery") == "Archery" != canonical_name("archery")
    assert canonical_name("   ") == ""


def test_a_list_of_names_is_canonical_and_refuses_empty_or_repeated_entries():
    assert canonical_names(["foghorn ", NFD], "`class_names`") == ("foghorn", NFC)
    with pytest.raises(InputError, match=r"^`class_names`: 'foghorn' is given twice \(entries 1 'foghorn' and 2 "):
        canonical_names(["foghorn", "foghorn "], "`class_names`")
    with pytest.raises(InputError, match="given twice"):
        canonical_names([NFC, NFD], "`class_names`")
    with pytest.raises(InputError, match="^`class_names`: no class names$"):
        canonical_names(["", " ", ""], "`class_names`")
    with pytest.raises(InputError, match="entry 2 of the class names is empty"):
        canonical_names(["a", "", "b"], "`class_names`")


def test_an_array_of_names_is_normalised_name_by_name():
    names = np.array(["unseen ", "seen", NFD, "unseen", " seen"], dtype=object)
    assert canonical_name_array(names).tolist() == ["unseen", "seen", NFC, "unseen", "seen"]
    assert canonical_name_array(np.array([], dtype=object)).tolist() == []
