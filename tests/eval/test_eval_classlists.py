"""eval.classlists: the shipped class lists and a user's class file."""

import pytest

from eval import classlists

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


def test_read_class_file_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\n\nplaying guitar\n  riding horse  \n   # indented comment\nC# programming\n")
    assert classlists.read_class_file(path) == ["playing guitar", "riding horse", "C# programming"]


def test_read_class_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        classlists.read_class_file(tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no class names"):
        classlists.read_class_file(empty)
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\n a\n")
    with pytest.raises(ValueError, match=r"'a' \(lines 1 and 3\)"):
        classlists.read_class_file(dup)
