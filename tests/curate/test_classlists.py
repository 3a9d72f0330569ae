"""curate.classlists: the shipped class lists."""

import unicodedata

import pytest

from curate import classlists

_COUNTS = {
    "kinetics400": 400,
    "kinetics600": 600,
    "kinetics700": 700,
    "ucf101": 101,
    "hmdb51": 51,
    "activitynet200": 200,
    "vggsound": 309,
}


@pytest.mark.parametrize(("name", "count"), sorted(_COUNTS.items()))
def test_shipped_lists_have_the_source_counts(name, count):
    names = classlists.load_classlist(name)
    assert len(names) == len(set(names)) == count
    assert all(n == n.strip() and n for n in names)
    assert classlists.CLASSLIST_SOURCES[name]


def test_lists_keep_the_source_spelling_and_order():
    assert classlists.available_classlists() == list(_COUNTS)
    k400 = classlists.load_classlist("kinetics400")
    assert k400[0] == "abseiling" and "dying hair" in k400
    ucf = classlists.load_classlist("UCF101")
    assert ucf[0] == "ApplyEyeMakeup" and ucf[-1] == "YoYo" and "HandstandPushups" in ucf
    assert classlists.load_classlist("activitynet") == classlists.load_classlist("activitynet200")
    assert "bird chirping, tweeting" in classlists.load_classlist("vggsound")


def test_unknown_list_names_the_shipped_ones():
    with pytest.raises(ValueError, match="unknown class list 'kinetics999'.*kinetics400"):
        classlists.load_classlist("kinetics999")
    assert classlists.canonical_classlist(" ActivityNet ") == "activitynet200"


def test_normalised_names_compare_spellings():
    n = classlists.normalised_name
    assert n("Air Conditioning Noise") == n("air-conditioning noises") == "air condition nois"
    assert n("Playing the Guitars") == n("plays guitar") == n("played guitar") == "play guitar"
    assert n("getting a tattoo") == "get tattoo" and n("tattooing") == "tattoo" and n("Origami") == n("origami")
    assert n("dancing") == n("dance") and n("glass") == "glass" and n("ponies") == "pony"
    assert n("playing piano") != n("playing guitar")
    assert n(unicodedata.normalize("NFD", "café racing")) == n(unicodedata.normalize("NFC", "café racing"))


def test_merge_spellings_keeps_the_first_and_says_so(caplog):
    merged = classlists.merge_spellings(["Origami", "making tea", "origami", "Making Teas"], "candidates.txt")
    assert merged == ["Origami", "making tea"]
    assert sum("merged into the first" in r.getMessage() for r in caplog.records) == 2
