"""curate select / filmstrips / sheets / merge / build: select by SR (exact groups on constructed vectors, and
GloVe), filmstrips of the synthetic benchmark's clips with undecodable videos recorded, annotation sheets, merging
with hand-computed Fleiss' / Cohen's kappa, the final manifest (read back by features.manifest and workflows.protocols)
and its statistics, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math

import click
import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import cohen_kappa_score

from cli import cli
from curate import classlists, tables
from curate.build import build_evaluation_set
from curate.config import BuildConfig, FilmstripConfig, MergeConfig, SelectConfig, SheetsConfig, SyntheticConfig
from curate.encode import write_mp4
from curate.merge import cohen_kappa, fleiss_kappa, label_counts, merge_annotations
from curate.render import make_filmstrips
from curate.select import select_classes
from curate.sheets import make_sheets
from curate.synthetic import make_synthetic
from features.manifest import read_clip_list
from text import class_embeddings as ce
from text.class_names import tokenize_class_name
from workflows.protocols import read_groups

_PNG = b"\x89PNG\r\n\x1a\n"


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write_rows(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _fill(sheet, labels):
    """Write `labels` (clip_id -> label) into a blank sheet, keeping its other columns."""
    rows = _rows(sheet)
    for row in rows:
        row["label"] = labels[row["clip_id"]]
    _write_rows(sheet, list(rows[0]), [list(row.values()) for row in rows])


# --- kappa ------------------------------------------------------------------------------------------------------


def test_fleiss_kappa_of_the_published_example():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories; P_bar 0.378, P_e 0.213.
    counts = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                       [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    p_bar, p_e = 0.378021978021978, 0.21275510204081632
    assert fleiss_kappa(counts) == pytest.approx((p_bar - p_e) / (1 - p_e), abs=1e-12)
    assert round(fleiss_kappa(counts), 3) == 0.210


def test_fleiss_kappa_by_hand_undefined_and_invalid():
    labels = np.array([["yes", "yes", "yes"], ["yes", "yes", "no"], ["no", "no", "no"], ["yes", "unsure", "yes"]])
    counts = label_counts(labels)
    np.testing.assert_array_equal(counts, [[3, 0, 0], [2, 1, 0], [0, 3, 0], [2, 0, 1]])
    # P_bar = (1 + 1/3 + 1 + 1/3) / 4 = 2/3; p = (7, 4, 1) / 12, P_e = 66/144; kappa = (96 - 66) / (144 - 66) = 5/13.
    assert fleiss_kappa(counts) == pytest.approx(5 / 13, abs=1e-12)
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) is None  # every rating "yes": 0 / 0
    assert fleiss_kappa(np.array([[2, 0], [0, 2]])) == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[1, 1], [1, 1]])) == pytest.approx(-1.0)  # two raters never agree
    # Subjects with 3 and 2 raters: P = (1/3, 0), P_bar = 1/6; p = (3, 2) / 5, P_e = 13/25 -> -53/72.
    assert fleiss_kappa(np.array([[2, 1], [1, 1]])) == pytest.approx(-53 / 72, abs=1e-12)
    with pytest.raises(ValueError, match=">= 2"):
        fleiss_kappa(np.array([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match="at least one subject"):
        fleiss_kappa(np.zeros((0, 3)))


def test_cohen_kappa_by_hand_and_against_scikit_learn():
    # p_o = 3/4; marginals A (3/4 yes, 1/4 no), B (1/2 yes, 1/4 no, 1/4 unsure): p_e = 3/8 + 1/16 = 7/16 -> 5/9.
    assert cohen_kappa(["yes", "yes", "no", "yes"], ["yes", "yes", "no", "unsure"]) == pytest.approx(5 / 9)
    assert cohen_kappa(["yes", "yes"], ["yes", "yes"]) is None
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.choice(tables.LABELS, size=25, p=[0.6, 0.3, 0.1])
        b = np.where(rng.random(25) < 0.7, a, rng.choice(tables.LABELS, size=25))
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    with pytest.raises(ValueError, match="same"):
        cohen_kappa(["yes"], ["yes", "no"])


# --- merge (hand-made sheets) -------------------------------------------------------------------------------------


_HAND = {  # video -> (class, labels of a, b, c)
    "v1": ("class x", ("yes", "yes", "yes")),
    "v2": ("class x", ("yes", "yes", "no")),
    "v3": ("class y", ("no", "no", "no")),
    "v4": ("class y", ("yes", "unsure", "yes")),
    "v5": ("class z", ("yes", "yes", "yes")),
}


def _hand_sheets(folder, hand=_HAND, reviewers=("a", "b", "c")):
    folder.mkdir(parents=True, exist_ok=True)
    return tuple(_write_rows(folder / f"{name}.csv", ("clip_id", "class_name", "filmstrip", "label"),
                             [[clip, cls, f"{clip}.jpg", labels[r]] for clip, (cls, labels) in hand.items()])
                 for r, name in enumerate(reviewers))


def test_merge_keeps_unanimous_yes_and_reports_hand_computed_agreement(tmp_path):
    sheets = _hand_sheets(tmp_path / "sheets")
    summary = merge_annotations(MergeConfig(sheets=sheets, out_dir=tmp_path / "merged"))
    assert summary.reviewers == ("a", "b", "c") and summary.n_videos == 5
    assert summary.decisions == {"keep": 2, "mixed": 2, "rejected": 1, "too-few-reviews": 0}
    decisions = {row["clip_id"]: row for row in _rows(summary.decisions_path)}
    assert {k: v["decision"] for k, v in decisions.items()} == {"v1": "keep", "v2": "mixed", "v3": "rejected",
                                                                "v4": "mixed", "v5": "keep"}
    assert (decisions["v4"]["yes"], decisions["v4"]["unsure"], decisions["v4"]["label_b"]) == ("2", "1", "unsure")
    # Overall counts (3,0,0) (2,1,0) (0,3,0) (2,0,1) (3,0,0): P_bar = 11/15, p = (10, 4, 1) / 15,
    # P_e = 117/225, kappa = (165 - 117) / (225 - 117) = 4/9; yes vs not yes: P_e = (100 + 25) / 225 -> 0.4.
    assert summary.fleiss_kappa == pytest.approx(4 / 9)
    assert summary.fleiss_kappa_keep == pytest.approx(0.4)
    assert summary.unanimous == pytest.approx(3 / 5)
    record = json.loads(summary.agreement_json.read_text())
    per_class = record["classes"]
    assert per_class["class x"]["fleiss_kappa"] == pytest.approx(-0.2)  # p = (5, 1, 0)/6: (24 - 26) / (36 - 26)
    assert per_class["class y"]["fleiss_kappa"] == pytest.approx(5 / 11)  # p = (2, 3, 1)/6: (24 - 14) / (36 - 14)
    assert per_class["class z"]["fleiss_kappa"] is None  # every label yes: undefined, shown as n/a
    assert per_class["class x"]["decisions"] == {"keep": 1, "mixed": 1, "rejected": 0, "too-few-reviews": 0}
    a, b = [labels[0] for _, labels in _HAND.values()], [labels[1] for _, labels in _HAND.values()]
    assert record["overall"]["cohen_kappa"]["a~b"] == pytest.approx(cohen_kappa_score(a, b))
    markdown = summary.agreement_md.read_text()
    assert "| **all** | 5 | 2 | 2 | 1 | 0 | 60.0% | 0.444 | 0.400 |" in markdown
    assert "| class z | 1 | 1 | 0 | 0 | 0 | 100.0% | n/a | n/a |" in markdown


def test_merge_reads_y_and_n_as_yes_and_no(tmp_path):
    short = {clip: (name, tuple({"yes": "Y", "no": "n"}.get(label, label) for label in labels))
             for clip, (name, labels) in _HAND.items()}
    full = merge_annotations(MergeConfig(sheets=_hand_sheets(tmp_path / "full"), out_dir=tmp_path / "a"))
    typed = merge_annotations(MergeConfig(sheets=_hand_sheets(tmp_path / "short", short), out_dir=tmp_path / "b"))
    assert typed.decisions == full.decisions and typed.fleiss_kappa == pytest.approx(4 / 9)
    assert _rows(typed.decisions_path) == _rows(full.decisions_path)


def test_merge_rejects_unlabelled_wrong_or_contradicting_sheets(tmp_path):
    sheets = _hand_sheets(tmp_path / "ok")
    with pytest.raises(ValueError, match="at least 2 reviewers"):
        MergeConfig(sheets=sheets[:1], out_dir=tmp_path / "m")
    with pytest.raises(ValueError, match="`min_reviewers` must be between 1 and the 3 sheets, got 4"):
        MergeConfig(sheets=sheets, out_dir=tmp_path / "m", min_reviewers=4)
    blank = {clip: (name, (labels[0], "", labels[2])) for clip, (name, labels) in _HAND.items()}
    with pytest.raises(ValueError, match=r"b\.csv: no row has a label"):
        merge_annotations(MergeConfig(sheets=_hand_sheets(tmp_path / "blank", blank), out_dir=tmp_path / "m"))
    wrong = dict(_HAND, v3=("class y", ("no", "maybe", "no")))
    with pytest.raises(ValueError, match="yes, no or unsure.*'maybe'"):
        merge_annotations(MergeConfig(sheets=_hand_sheets(tmp_path / "wrong", wrong), out_dir=tmp_path / "m"))
    other = _hand_sheets(tmp_path / "other", dict(_HAND, v5=("class q", ("yes",) * 3)), ("d",))
    with pytest.raises(ValueError, match="gives clip 'v5' the class 'class q'.*gives it 'class z'"):
        merge_annotations(MergeConfig(sheets=(sheets[0], *other), out_dir=tmp_path / "m"))
    span = tmp_path / "span"
    span.mkdir()
    bad = (_write_rows(span / "a.csv", ("clip_id", "class_name", "label", "start_s", "end_s"),
                       [["v1", "x", "yes", "5", ""]]), sheets[1])
    with pytest.raises(ValueError, match=r"a\.csv line 2: start_s,end_s must both be seconds"):
        merge_annotations(MergeConfig(sheets=bad, out_dir=tmp_path / "m"))
    assert not (tmp_path / "m").exists()  # nothing written on error


# video -> (class, {reviewer: (label, start_s, end_s)}): c has no row for v1, b leaves v3 blank, only a saw v4
_PARTIAL = {
    "v1": ("x", {"a": ("yes", "", ""), "b": ("yes", "", "")}),
    "v2": ("x", {"a": ("yes", "", ""), "b": ("no", "", ""), "c": ("yes", "", "")}),
    "v3": ("y", {"a": ("no", "", ""), "b": ("", "", ""), "c": ("no", "", "")}),
    "v4": ("y", {"a": ("yes", "", ""), "c": ("", "", "")}),
    "v5": ("z", {"a": ("yes", "2", "10"), "b": ("yes", "4", "12.5"), "c": ("yes", "", "")}),
    "v6": ("z", {"a": ("yes", "0", "3"), "b": ("y", "5", "8"), "c": ("yes", "", "")}),
}


def _partial_sheets(folder):
    folder.mkdir(parents=True, exist_ok=True)
    return tuple(_write_rows(folder / f"{r}.csv", ("clip_id", "class_name", "label", "start_s", "end_s"),
                             [[clip, name, *by[r]] for clip, (name, by) in _PARTIAL.items() if r in by])
                 for r in ("a", "b", "c"))


def test_merge_when_not_every_reviewer_saw_every_video(tmp_path, caplog):
    sheets = _partial_sheets(tmp_path / "sheets")
    summary = merge_annotations(MergeConfig(sheets=sheets, out_dir=tmp_path / "m"))  # at least 2 reviewers
    rows = {row["clip_id"]: row for row in _rows(summary.decisions_path)}
    assert {k: r["decision"] for k, r in rows.items()} == {"v1": "keep", "v2": "mixed", "v3": "rejected",
                                                           "v4": "too-few-reviews", "v5": "keep", "v6": "mixed"}
    assert summary.too_few_reviews == ("v4",) and summary.labelled == {"a": 6, "b": 4, "c": 4}
    assert (rows["v5"]["start_s"], rows["v5"]["end_s"]) == ("4", "10")  # where the spans given with a yes overlap
    assert (rows["v1"]["start_s"], rows["v1"]["label_c"], rows["v3"]["label_b"]) == ("", "", "")
    # Fleiss over the 5 videos with >= 2 labels: P = (1, 1/3, 1, 1, 1), P_bar = 13/15; p = (10, 3, 0) / 13,
    # P_e = 109/169 -> (13 * 169 - 109 * 15) / (15 * 60) = 562/900.
    assert summary.fleiss_kappa == pytest.approx(562 / 900, abs=1e-12)
    record = json.loads(summary.agreement_json.read_text())
    both = [clip for clip, (_, by) in _PARTIAL.items() if by.get("a", ("",))[0] and by.get("b", ("",))[0]]
    a, b = ([{"y": "yes"}.get(_PARTIAL[c][1][r][0], _PARTIAL[c][1][r][0]) for c in both] for r in "ab")
    assert record["overall"]["cohen_kappa"]["a~b"] == pytest.approx(cohen_kappa_score(a, b))
    assert record["overall"]["cohen_kappa"]["b~c"] == pytest.approx(cohen_kappa_score(["no", "yes", "yes"],
                                                                                     ["yes", "yes", "yes"]))
    assert record["span_conflicts"] == 1 and record["decisions"]["too-few-reviews"] == 1
    markdown = summary.agreement_md.read_text()
    assert "a 6, b 4, c 4 videos labelled" in markdown and "fewer than 2 reviewers**: 1" in markdown
    assert "Videos with too few reviewers (label them, or lower --min-reviewers): v4" in markdown
    assert any("b labelled 4 of 6 videos" in r.getMessage() for r in caplog.records)
    strict = merge_annotations(MergeConfig(sheets=sheets, out_dir=tmp_path / "m3", min_reviewers=3))
    assert strict.too_few_reviews == ("v1", "v3", "v4") and strict.decisions["keep"] == 1


# --- select ---------------------------------------------------------------------------------------------------------


# Candidate word -> intended SR: an anchor seen class's direction mixed with a direction orthogonal to every
# seen class, so cos(v, s) = (1 - SR) cos(anchor, s) and the nearest seen class is the anchor at exactly SR.
_TARGET_SR = {"xoverlap": 0.05, "xeasy": 0.2, "xmedium": 0.5, "xhard": 0.7, "xfar": 0.9}


def _write_vectors(path, vectors):
    lines = [f"{len(vectors)} {len(next(iter(vectors.values())))}"]
    lines += [f"{word} " + " ".join(f"{x:.9f}" for x in vector) for word, vector in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def constructed_vectors(tmp_path_factory):
    """(vectors file with every HMDB-51 word and the _TARGET_SR words, anchor HMDB class of each candidate)."""
    folder = tmp_path_factory.mktemp("vectors")
    hmdb = classlists.load_classlist("hmdb51")
    words = sorted({w for name in hmdb for w in tokenize_class_name(name)})
    rng = np.random.default_rng(0)
    vectors = dict(zip(words, rng.normal(size=(len(words), 128)), strict=True))
    seen = ce.load_embedding_source(f"word2vec:{_write_vectors(folder / 'hmdb.txt', vectors)}").embed(hmdb)
    basis, _ = np.linalg.qr(seen.T.astype(np.float64))  # (128, 51): the span of the seen classes
    anchors = {}
    for k, (word, sr) in enumerate(_TARGET_SR.items()):
        anchor = seen[7 * k + 3].astype(np.float64)
        other = rng.normal(size=128)
        other -= basis @ (basis.T @ other)  # orthogonal to every seen class
        vectors[word] = (1 - sr) * anchor / np.linalg.norm(anchor) + math.sqrt(1 - (1 - sr) ** 2) * (
            other / np.linalg.norm(other))
        anchors[word] = hmdb[7 * k + 3]
    return _write_vectors(folder / "all.txt", vectors), anchors


def test_select_keeps_0_1_to_0_8_with_groups(tmp_path, constructed_vectors):
    vectors, anchors = constructed_vectors
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("# candidates\n" + "\n".join(_TARGET_SR) + "\n")
    summary = select_classes(SelectConfig(candidates=str(candidates), out_dir=tmp_path / "select",
                                                  seen=("hmdb51",), embeddings=f"word2vec:{vectors}"))
    assert summary.n_candidates == 5 and summary.kept == ("xeasy", "xmedium", "xhard")
    assert summary.counts == {"overlap": 1, "easy": 1, "medium": 1, "hard": 1, "too-far": 1}
    table = tables.read_class_table(summary.classes_path)
    assert [(row.class_name, row.group) for row in table] == [("xeasy", "easy"), ("xmedium", "medium"),
                                                              ("xhard", "hard")]
    for row in table:
        assert row.sr == pytest.approx(_TARGET_SR[row.class_name], abs=1e-5)
        assert (row.nearest_seen_class, row.nearest_seen_dataset) == (anchors[row.class_name], "hmdb51")
    every = {row["class"]: row for row in _rows(summary.relatedness_csv)}  # the report keeps the flagged ones
    assert every["xoverlap"]["flag"].startswith("overlap") and every["xfar"]["flag"].startswith("too far")
    assert summary.histogram_png.read_bytes()[:8] == _PNG


def test_select_merges_respelled_candidates_and_skips_unknown_names(tmp_path, constructed_vectors, caplog):
    vectors, _ = constructed_vectors
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("xeasy\nXEasy\nqqzz\nxhard\n")  # a respelling, and a name with no known word
    config = SelectConfig(candidates=str(candidates), out_dir=tmp_path / "select", seen=("hmdb51",),
                          embeddings=f"word2vec:{vectors}", missing="skip")
    summary = select_classes(config)
    assert summary.n_candidates == 2 and summary.kept == ("xeasy", "xhard")
    messages = [r.getMessage() for r in caplog.records]
    assert any("'XEasy' is 'xeasy' spelled otherwise" in m for m in messages)
    assert any("1 class(es) skipped" in m and "'qqzz'" in m for m in messages)
    with pytest.raises(ValueError, match="qqzz"):  # without skip the unknown word is an error, as before
        select_classes(SelectConfig(candidates=str(candidates), out_dir=tmp_path / "again", seen=("hmdb51",),
                                    embeddings=f"word2vec:{vectors}"))


def test_select_with_the_default_glove_vectors(tmp_path):
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("playing guitar\nknitting a scarf\n")
    summary = select_classes(SelectConfig(candidates=str(candidates), out_dir=tmp_path / "select"))
    assert summary.seen == ("kinetics400", "kinetics600", "kinetics700", "vggsound", "ucf101", "activitynet")
    assert summary.kept == ("knitting a scarf",) and summary.counts["overlap"] == 1  # Kinetics' own class
    # UCF-101 against the other five lists under the same vectors (docs/curation.md's table)
    assert summary.reference == "ucf101" and summary.reference_counts == {"overlap": 54, "easy": 43, "medium": 4,
                                                                          "hard": 0, "too-far": 0}
    table = summary.distribution_table().splitlines()
    assert table[0].split() == ["SR", "group", "candidates", "ucf101", "(reference)"]
    assert table[1].split() == ["overlap", "1", "(50%)", "54", "(53%)"] and table[3].split()[:2] == ["medium", "0"]
    assert table[-1].startswith("warning: no candidate in group(s) medium, hard")
    (row,) = tables.read_class_table(summary.classes_path)
    assert row.group == "easy" and 0.1 < row.sr <= 0.33 and row.nearest_seen_class == "knitting"


def test_build_refuses_a_hand_edited_table_that_select_could_not_have_written(tmp_path):
    def build(rows, **kw):
        table = _write_rows(tmp_path / "classes.csv", ("class_name", "sr", "group"), rows)
        return build_evaluation_set(BuildConfig(decisions=tmp_path / "d.csv", classes=table,
                                                filmstrips=tmp_path / "f.csv", out_dir=tmp_path / "out", **kw))

    contradicts = r"1 class\(es\) whose group contradicts.*'xhard' \(SR 0.5 is medium, not hard"
    with pytest.raises(ValueError, match=contradicts):
        build([["xeasy", "0.2", "easy"], ["xhard", "0.5", "hard"]])
    with pytest.raises(ValueError, match=r"'xeasy' \(SR 0.2 is medium, not easy"):  # other edges, other groups
        build([["xeasy", "0.2", "easy"]], edges=(0.1, 0.15, 0.66, 0.8))
    with pytest.raises(ValueError, match=r"1 class\(es\) are seen.*'Getting Tattoos' \(kinetics400: 'getting a tat"):
        build([["Getting Tattoos", "0.2", "easy"], ["xeasy", "0.2", "easy"]])
    own = tmp_path / "my_training_classes.txt"  # the seen lists select scored the table against (relatedness.json)
    own.write_text("making origami\n")
    (tmp_path / "relatedness.json").write_text(json.dumps({"config": {"seen": [str(own), "hmdb51"]}}))
    with pytest.raises(ValueError, match=r"2 class\(es\) are seen.*'Make Origami' \(.*my_training_classes.txt: "
                                         r"'making origami'\); 'Falling-Floor' \(hmdb51: 'fall_floor'\)"):
        build([["xeasy", "0.2", "easy"], ["Make Origami", "0.2", "easy"], ["Falling-Floor", "0.2", "easy"]])
    with pytest.raises(FileNotFoundError):  # a consistent table gets as far as reading the decisions
        build([["xeasy", "0.2", "easy"]])


def test_class_table_validation(tmp_path):
    bad = _write_rows(tmp_path / "bad.csv", ("class_name", "sr", "group"), [["a", "0.2", "easy"], ["b", "x", "hard"]])
    with pytest.raises(ValueError, match="line 3: sr 'x'"):
        tables.read_class_table(bad)
    flagged = _write_rows(tmp_path / "flagged.csv", ("class_name", "sr", "group"), [["a", "0.05", "overlap"]])
    with pytest.raises(ValueError, match="not one of"):
        tables.read_class_table(flagged)
    twice = _write_rows(tmp_path / "twice.csv", ("class_name", "sr", "group"), [["a", "0.2", "easy"]] * 2)
    with pytest.raises(ValueError, match="listed twice"):
        tables.read_class_table(twice)
    padded = _write_rows(tmp_path / "padded.csv", ("class_name", "sr", "group"),
                         [["a ", "0.2", "easy"], [" a", "0.3", "hard"]])
    with pytest.raises(ValueError, match="line 3: class 'a' is listed twice"):  # one class after normalisation
        tables.read_class_table(padded)
    with pytest.raises(ValueError, match="missing sr"):
        tables.read_class_table(_write_rows(tmp_path / "cols.csv", ("class_name", "group"), [["a", "easy"]]))


# --- the synthetic benchmark's clips: filmstrips, sheets, merge, build ---------------------------------------------


@pytest.fixture(scope="module")
def curation(tmp_path_factory):
    """Filmstrips of a tiny synthetic benchmark's clips plus three bad videos, for three of its four classes."""
    root = tmp_path_factory.mktemp("curation")
    synthetic = make_synthetic(SyntheticConfig(out_dir=root / "syn", classes=4, clips_per_class=3, seconds=2.0,
                                               workers=1))
    manifest = _rows(synthetic.manifest_path)
    classes = sorted({row["class_name"] for row in manifest})
    candidates = root / "candidates"
    candidates.mkdir()
    (candidates / "broken.mp4").write_text("not a video at all\n" * 20)
    (candidates / "empty.mp4").write_bytes(b"")
    rows = [[row["clip_id"], f"../syn/{row['path']}", row["class_name"]] for row in manifest]
    rows += [["broken", "broken.mp4", classes[0]], ["empty", "empty.mp4", classes[1]],
             ["missing", "missing.mp4", classes[2]]]
    videos = _write_rows(candidates / "videos.csv", ("clip_id", "path", "class_name"), rows)
    table = _write_rows(root / "classes.csv", ("class_name", "sr", "group"),
                        [[classes[0], "0.2", "easy"], [classes[1], "0.45", "medium"], [classes[2], "0.7", "hard"]])
    summary = make_filmstrips(FilmstripConfig(videos=videos, out_dir=root / "filmstrips", classes=table,
                                                      workers=2))
    return {"root": root, "synthetic": synthetic, "manifest": manifest, "classes": classes, "table": table,
            "summary": summary}


@pytest.mark.slow
def test_filmstrips_of_synthetic_clips_record_undecodable_videos(curation):
    summary, manifest = curation["summary"], {row["clip_id"]: row for row in curation["manifest"]}
    assert (summary.n_videos, summary.n_ok, summary.n_failed, summary.n_skipped) == (12, 9, 3, 3)
    index = {row["clip_id"]: row for row in _rows(summary.index_path)}
    failed = {clip: row["reason"] for clip, row in index.items() if row["status"] == "failed"}
    assert set(failed) == {"broken", "empty", "missing"}
    assert "not a media file" in failed["broken"] and "empty file" in failed["empty"]
    assert "file not found" in failed["missing"]
    assert {row["clip_id"]: row["reason"] for row in _rows(summary.failures_path)} == failed
    folder = summary.index_path.parent
    for clip, row in index.items():
        if row["status"] != "ok":
            continue
        truth = manifest[clip]
        assert (folder / row["video"]).resolve() == (curation["synthetic"].out_dir / truth["path"]).resolve()
        assert (folder / row["filmstrip"]).is_file() and row["filmstrip"] == f"filmstrips/{clip}.jpg"
        for column in ("has_audio", "width_px", "height_px", "fps", "sample_rate_hz", "audio_channels"):
            assert row[column] == truth[column], (clip, column)
        assert float(row["duration_s"]) == pytest.approx(float(truth["duration_s"]), abs=1e-3)
        assert int(row["frames"]) == math.ceil(float(truth["duration_s"]) - 1e-6)  # cells at 0, 1, ... s
    assert curation["classes"][3] not in {row["class_name"] for row in index.values()}  # not in the class table


def test_filmstrip_images_stay_in_the_output_folder_whatever_the_clip_id(tmp_path):
    videos = tmp_path / "lists"
    videos.mkdir()
    write_mp4(tmp_path / "v.mp4", np.zeros((5, 32, 32, 3), np.uint8), 5)
    clip_list = _write_rows(videos / "videos.csv", ("path", "class_name"), [["../v.mp4", "c"]])  # id "../v"
    summary = make_filmstrips(FilmstripConfig(videos=clip_list, out_dir=tmp_path / "out", workers=1))
    (row,) = _rows(summary.index_path)
    assert row["clip_id"] == "../v" and row["status"] == "ok"
    assert row["filmstrip"].startswith("filmstrips/v~") and (tmp_path / "out" / row["filmstrip"]).is_file()
    assert not (tmp_path / "out" / "v.jpg").exists()


@pytest.mark.slow
def test_sheets_one_blank_sheet_per_reviewer_never_overwritten(curation, tmp_path):
    index = curation["summary"].index_path
    summary = make_sheets(SheetsConfig(filmstrips=index, reviewers=("alice", "bob"), out_dir=tmp_path))
    assert [p.name for p in summary.sheets] == ["alice.csv", "bob.csv"]
    assert (summary.n_videos, summary.n_failed) == (9, 3)
    alice, bob = _rows(summary.sheets[0]), _rows(summary.sheets[1])
    assert list(alice[0]) == ["clip_id", "class_name", "video", "filmstrip", "pages", "label", "start_s", "end_s"]
    # the same videos, each reviewer in an own order (seeded: a rerun writes the same sheets)
    assert sorted(alice, key=str) == sorted(bob, key=str) and alice != bob
    again = make_sheets(SheetsConfig(filmstrips=index, reviewers=("alice",), out_dir=tmp_path / "again"))
    assert [row["clip_id"] for row in _rows(again.sheets[0])] == [row["clip_id"] for row in alice]
    assert all(row["label"] == "" and (tmp_path / row["filmstrip"]).is_file() for row in alice)
    assert all((tmp_path / row["video"]).is_file() for row in alice)
    with pytest.raises(FileExistsError, match="may hold labels"):
        make_sheets(SheetsConfig(filmstrips=index, reviewers=("carol", "bob"), out_dir=tmp_path))
    assert not (tmp_path / "carol.csv").exists()
    with pytest.raises(ValueError, match="file names"):
        SheetsConfig(filmstrips=index, reviewers=("al/ice",), out_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct"):
        SheetsConfig(filmstrips=index, reviewers=("bob", "Bob"), out_dir=tmp_path)


def _annotate(curation, folder, bob_also_rejects: int | None = None):
    """Three reviewers: all yes except a mixed video (bob: no), a rejected one (all no) and an unsure (carol);
    bob also says no to the easy class's video `bob_also_rejects` when given."""
    sheets = make_sheets(SheetsConfig(filmstrips=curation["summary"].index_path,
                                              reviewers=("alice", "bob", "carol"), out_dir=folder)).sheets
    clips = [row["clip_id"] for row in _rows(sheets[0])]
    by_class = {}
    for row in _rows(sheets[0]):
        by_class.setdefault(row["class_name"], []).append(row["clip_id"])
    easy, medium, hard = (by_class[name] for name in curation["classes"][:3])
    special = {"bob": {easy[0]: "no", medium[0]: "no"}, "alice": {medium[0]: "no"},
               "carol": {medium[0]: "no", hard[1]: "unsure"}}
    if bob_also_rejects is not None:
        special["bob"][easy[bob_also_rejects]] = "no"
    for sheet in sheets:
        _fill(sheet, {clip: special.get(sheet.stem, {}).get(clip, "yes") for clip in clips})
    return sheets, {"mixed": {easy[0], hard[1]}, "rejected": {medium[0]}}


@pytest.mark.slow
def test_build_the_evaluation_set_from_synthetic_annotations(curation, tmp_path):
    sheets, expected = _annotate(curation, tmp_path / "sheets")
    merged = merge_annotations(MergeConfig(sheets=sheets, out_dir=tmp_path / "merged"))
    assert merged.decisions == {"keep": 6, "mixed": 2, "rejected": 1, "too-few-reviews": 0}
    summary = build_evaluation_set(BuildConfig(decisions=merged.decisions_path, classes=curation["table"],
                                                       filmstrips=curation["summary"].index_path,
                                                       out_dir=tmp_path / "final"))
    easy, medium, hard = curation["classes"][:3]
    assert (summary.n_classes, summary.n_videos) == (3, 6)
    assert summary.groups == {"easy": {"classes": 1, "videos": 2}, "medium": {"classes": 1, "videos": 2},
                              "hard": {"classes": 1, "videos": 2}}
    assert summary.dropped == {"could not be decoded": 3, "mixed annotations": 2, "no reviewer said yes": 1}

    rows = _rows(summary.manifest_path)
    assert list(rows[0]) == ["clip_id", "path", "class_name", "split", "start_s", "end_s", "group", "sr", "has_audio",
                             "duration_s", "width_px", "height_px", "fps", "sample_rate_hz", "audio_channels"]
    assert {row["split"] for row in rows} == {"unseen"}
    assert {(row["class_name"], row["group"], row["sr"]) for row in rows} == {
        (easy, "easy", "0.200000"), (medium, "medium", "0.450000"), (hard, "hard", "0.700000")}
    dropped_clips = expected["mixed"] | expected["rejected"]
    assert not dropped_clips & {row["clip_id"] for row in rows}
    # The manifest contract: features.manifest reads it, paths resolve to the clips, workflows.protocols its groups.
    synthetic = {row["clip_id"]: row for row in curation["manifest"]}
    records = read_clip_list(summary.manifest_path)
    assert len(records) == 6 and {r.split for r in records} == {"unseen"}
    for record in records:
        assert record.path == (curation["synthetic"].out_dir / synthetic[record.clip_id]["path"]).resolve()
        assert record.class_name == synthetic[record.clip_id]["class_name"] and record.path.is_file()
    assert read_groups(summary.manifest_path) == {easy: "easy", medium: "medium", hard: "hard"}

    dropped = {row["clip_id"]: row["reason"] for row in _rows(summary.dropped_path)}
    assert dropped["broken"].startswith("could not be decoded: cannot be opened as media")
    assert dropped["empty"] == "could not be decoded: empty file (0 bytes)"
    assert dropped["missing"] == "could not be decoded: file not found"
    assert {clip for clip, reason in dropped.items() if reason.startswith("mixed")} == expected["mixed"]
    table = {row["class_name"]: row for row in _rows(summary.classes_path)}
    assert table[easy]["videos"] == "2" and table[hard]["group"] == "hard"
    statistics = summary.statistics_md.read_text()
    assert "| easy | (0.1, 0.33] | 1 | 2 | 2 / 2.0 / 2 |" in statistics
    assert "| **all** | (0.1, 0.8] | 3 | 6 | 2 / 2.0 / 2 |" in statistics
    assert "- could not be decoded: 3" in statistics
    assert summary.figure_png.read_bytes()[:8] == _PNG
    record = json.loads((tmp_path / "final" / "build.json").read_text())
    assert record["videos"] == 6 and record["dropped"]["mixed annotations"] == 2


@pytest.mark.slow
def test_build_drops_thin_classes_and_refuses_foreign_decisions(curation, tmp_path):
    sheets, _ = _annotate(curation, tmp_path / "sheets", bob_also_rejects=1)  # the easy class keeps 1 video
    merged = merge_annotations(MergeConfig(sheets=sheets, out_dir=tmp_path / "merged"))
    inputs = dict(decisions=merged.decisions_path, classes=curation["table"],
                  filmstrips=curation["summary"].index_path)
    summary = build_evaluation_set(BuildConfig(**inputs, out_dir=tmp_path / "final", min_videos_per_class=2))
    easy = curation["classes"][0]
    assert summary.dropped_classes == (easy,) and (summary.n_classes, summary.n_videos) == (2, 4)
    assert summary.dropped["class has fewer than 2 kept videos"] == 1
    assert easy not in {row["class_name"] for row in _rows(summary.manifest_path)}
    assert f"Classes dropped for want of videos: {easy}" in summary.statistics_md.read_text()
    with pytest.raises(ValueError, match="no video is left"):
        build_evaluation_set(BuildConfig(**inputs, out_dir=tmp_path / "none", min_videos_per_class=3))
    rows = _rows(merged.decisions_path)
    foreign = _write_rows(tmp_path / "foreign.csv", list(rows[0]),
                          [list(row.values()) for row in rows] + [["someone_else", easy, "keep"] + [""] * 6])
    with pytest.raises(ValueError, match="'someone_else' is not in the filmstrip index"):
        build_evaluation_set(BuildConfig(**dict(inputs, decisions=foreign), out_dir=tmp_path / "x"))


# --- CLI --------------------------------------------------------------------------------------------------------------


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_curate_end_to_end_from_a_class_folder(tmp_path, constructed_vectors):
    vectors, _ = constructed_vectors
    folder = tmp_path / "videos"
    rng = np.random.default_rng(1)
    for name in _TARGET_SR:  # <class>/<video>: two short clips per candidate class
        (folder / name).mkdir(parents=True)
        for k in range(2):
            frames = rng.integers(0, 255, size=(10 + 5 * k, 32, 48, 3), dtype=np.uint8)
            write_mp4(folder / name / f"clip{k}.mp4", frames, 5)
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("\n".join(_TARGET_SR) + "\n")
    work = tmp_path / "work"
    output = _invoke(["curate", "select", "--candidates", str(candidates), "--seen", "hmdb51", "--embeddings",
                      f"word2vec:{vectors}", "--out-dir", str(work / "select"), "--reference", "none"])
    assert "kept 3 of 5 candidate classes" in output and "(reference)" not in output
    assert output.splitlines()[0].split() == ["SR", "group", "candidates"] and output.splitlines()[4].split() == [
        "hard", "1", "(20%)"]
    output = _invoke(["curate", "filmstrips", "--videos", str(folder), "--out-dir", str(work / "strips"),
                      "--classes", str(work / "select" / "classes.csv"), "--workers", "1", "--no-progress",
                      "--rows", "2", "--columns", "5", "--image-format", "png"])
    assert "6 filmstrips (6 pages; 0 at a wider stride), 0 videos failed, 4 skipped" in output
    assert (work / "strips" / "filmstrips" / "xeasy" / "clip0.png").is_file()
    output = _invoke(["curate", "sheets", "--filmstrips", str(work / "strips" / "filmstrips.csv"),
                      "--reviewers", "ann,ben", "--out-dir", str(work / "sheets")])
    assert "2 sheets of 6 videos" in output
    merge = ["curate", "merge", str(work / "sheets" / "ann.csv"), str(work / "sheets" / "ben.csv"),
             "--out-dir", str(work / "merged")]
    result = CliRunner().invoke(cli, merge)  # blank sheets: a one-line error, exit 1
    assert result.exit_code == 1 and "Error: " in result.output and "no row has a label" in result.output
    labels = {"xhard/clip1": "no"}
    for name in ("ann", "ben"):
        _fill(work / "sheets" / f"{name}.csv", {f"{c}/clip{k}": labels.get(f"{c}/clip{k}", "yes")
                                                 for c in _TARGET_SR for k in range(2)})
    output = _invoke(merge)
    assert "6 videos, 2 reviewers: keep 5, mixed 0, rejected 1" in output
    output = _invoke(["curate", "build", "--decisions", str(work / "merged" / "decisions.csv"), "--classes",
                      str(work / "select" / "classes.csv"), "--filmstrips", str(work / "strips" / "filmstrips.csv"),
                      "--out-dir", str(work / "final")])
    assert "3 classes, 5 videos (classes/videos: easy 1/2, medium 1/2, hard 1/1); 1 videos dropped" in output
    records = read_clip_list(work / "final" / "manifest.csv")
    assert sorted(r.clip_id for r in records) == sorted(f"{c}/clip{k}" for c in ("xeasy", "xmedium", "xhard")
                                                       for k in range(2) if f"{c}/clip{k}" != "xhard/clip1")
    assert all(r.path.is_file() and r.path.parent.name == r.class_name for r in records)


def test_cli_filmstrip_help_states_the_layout_defaults():
    from dataclasses import fields

    from curate.config import FilmstripLayout

    command = cli.commands["curate"].commands["filmstrips"]
    context = click.Context(command)
    options = {param.name: " ".join(param.get_help_record(context)[1].split()) for param in command.params}
    for field in fields(FilmstripLayout):
        assert f"[default: {getattr(FilmstripLayout(), field.name)}]" in options[field.name], field.name
