"""text.class_names: the words of a class name and the user's class file (name maps: test_class_embeddings.py)."""

import unicodedata

import pytest

from common.errors import InputError
from text.class_names import read_class_file, tokenize_class_name


def test_read_class_file_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\n\nplaying guitar\n  riding horse  \n   # indented comment\nC# programming\n")
    assert read_class_file(path) == ["playing guitar", "riding horse", "C# programming"]


def test_read_class_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_class_file(tmp_path / "absent.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no class names"):
        read_class_file(empty)
    dup = tmp_path / "dup.txt"
    dup.write_text("a\nb\n a\n")
    with pytest.raises(ValueError, match=r"'a' \(lines 1 and 3\)"):
        read_class_file(dup)


# --- tokenisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("ApplyEyeMakeup", ["apply", "eye", "makeup"]),
        ("BMXRacing", ["bmx", "racing"]),
        ("YoYo", ["yo", "yo"]),
        ("brush_hair", ["brush", "hair"]),
        ("passing American football (not in game)", ["passing", "american", "football"]),
        ("passing American football (in game)", ["passing", "american", "football", "game"]),
        ("throwing ball (not baseball or American football)", ["throwing", "ball"]),
        ("curling (sport)", ["curling", "sport"]),
        ("bird chirping, tweeting", ["bird", "chirping", "tweeting"]),
        ("bee, wasp, etc. buzzing", ["bee", "wasp", "buzzing"]),
        ("riding or walking with horse", ["riding", "walking", "horse"]),
        ("hula-hooping", ["hula", "hooping"]),
        ("The Who", ["who"]),
        ("to be or not", ["be", "not"]),
        ("on and on", ["on", "and", "on"]),  # nothing but stop words: all are kept
        ("()", []),
    ],
)
def test_tokenize_class_name(name, words):
    assert tokenize_class_name(name) == words


def test_a_class_file_reads_names_in_one_spelling_with_or_without_a_byte_order_mark(tmp_path):
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    path = tmp_path / "classes.txt"
    path.write_text(f"\ufeffArchery\n  playing   guitar \n{nfd}\narchery\n", encoding="utf-8")
    assert read_class_file(path) == ["Archery", "playing guitar", nfc, "archery"]  # case kept: two classes
    for twice in (f"{nfc}\n{nfd}\n", "foo \nfoo\n", "\ufefffoo\nfoo\n"):
        path.write_text(twice, encoding="utf-8")
        with pytest.raises(InputError, match=r"listed twice: '.*' \(lines 1 and 2\)"):
            read_class_file(path)
