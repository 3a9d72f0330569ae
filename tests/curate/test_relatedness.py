"""curate.relatedness: SR (eq. 1) on a tiny vector file with hand-computed values, groups, outputs, CLI."""

import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from curate import classlists
from curate import relatedness as rel
from curate.config import RelatednessConfig
from text import class_embeddings as ce
from text.class_names import tokenize_class_name


def _write_text_vectors(path, vectors):
    dim = len(next(iter(vectors.values())))
    lines = [f"{len(vectors)} {dim}"] + [f"{word} {' '.join(f'{x:.9f}' for x in v)}" for word, v in vectors.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _at_distance(d):
    """A unit vector at cosine distance d from east = (1, 0, 0) and distance 1 from north = (0, 1, 0)."""
    return [1.0 - d, 0.0, math.sqrt(1.0 - (1.0 - d) ** 2)]


# SR of each word's class against east / north, by construction; the four boundaries exactly, then just past.
_DISTANCES = {
    "alpha": 0.1,
    "bravo": 0.33,
    "charlie": 0.66,
    "delta": 0.8,
    "echo": 0.100002,
    "foxtrot": 0.330002,
    "golf": 0.660002,
    "hotel": 0.800002,
    "india": 0.05,
}


@pytest.fixture
def tiny_source(tmp_path):
    vectors = {"east": [1.0, 0.0, 0.0], "north": [0.0, 1.0, 0.0], "up": [0.0, 0.0, 1.0], "south": [0.0, -1.0, 0.0]}
    vectors |= {word: _at_distance(d) for word, d in _DISTANCES.items()}
    vectors["bigger"] = [5.0, 0.0, 0.0]  # same direction as east, other length: cosine ignores length
    path = _write_text_vectors(tmp_path / "tiny.txt", vectors)
    return ce.load_embedding_source(f"word2vec:{path}")


@pytest.mark.parametrize(
    ("sr", "group"),
    [
        (0.0, "overlap"),
        (0.1, "overlap"),
        (0.1000004, "overlap"),  # rounds to 0.1 at SR_DECIMALS = 6
        (0.100001, "easy"),
        (0.33, "easy"),
        (0.330001, "medium"),
        (0.66, "medium"),
        (0.660001, "hard"),
        (0.8, "hard"),
        (0.800001, "too-far"),
        (1.7, "too-far"),
    ],
)
def test_relatedness_group_boundaries(sr, group):
    assert rel.relatedness_group(sr) == group


def test_relatedness_group_rejects_negative_and_nan():
    with pytest.raises(ValueError, match="cosine distance"):
        rel.relatedness_group(-0.5)
    with pytest.raises(ValueError, match="cosine distance"):
        rel.relatedness_group(float("nan"))


def test_semantic_relatedness_hand_computed(tiny_source):
    classes = list(_DISTANCES) + ["east up", "Bigger", "south"]
    seen = {"setA": ["east", "north"], "setB": ["North"]}
    rows = rel.semantic_relatedness(classes, seen, tiny_source)
    by_class = {row.class_name: row for row in rows}
    assert [row.class_name for row in rows] == classes
    expected_groups = {
        "alpha": "overlap",
        "bravo": "easy",
        "charlie": "medium",
        "delta": "hard",
        "echo": "easy",
        "foxtrot": "medium",
        "golf": "hard",
        "hotel": "too-far",
        "india": "overlap",
    }
    for word, d in _DISTANCES.items():
        row = by_class[word]
        assert row.sr == pytest.approx(d, abs=1e-9), word
        assert row.group == expected_groups[word], word
        assert (row.nearest_seen_class, row.nearest_seen_dataset) == ("east", "setA")
    # Multi-word name: mean of (1,0,0) and (0,0,1) -> distance 1 - 1/sqrt(2) to east.
    assert by_class["east up"].sr == pytest.approx(round(1 - 1 / math.sqrt(2), 6), abs=1e-12)
    assert by_class["east up"].words == ("east", "up") and by_class["east up"].group == "easy"
    assert by_class["Bigger"].sr == 0.0 and by_class["Bigger"].flag.startswith("overlap: SR <= 0.1 to 'east'")
    # south is opposite north and orthogonal to east: SR = 1; "north" and "North" tie across both datasets.
    assert by_class["south"].sr == pytest.approx(1.0) and by_class["south"].group == "too-far"
    assert by_class["south"].nearest_seen_class == "east" and by_class["south"].flag.startswith("too far")
    assert by_class["bravo"].flag == ""


def test_ties_report_every_dataset(tiny_source):
    rows = rel.semantic_relatedness(["alpha", "north"], {"setA": ["east"], "setB": ["East", "south"]}, tiny_source)
    assert rows[0].nearest_seen_dataset == "setA;setB" and rows[0].nearest_seen_class == "east"
    assert rows[1].sr == pytest.approx(1.0) and rows[1].nearest_seen_dataset == "setA;setB"


def test_semantic_relatedness_needs_seen_classes_and_known_words(tiny_source):
    with pytest.raises(ValueError, match="at least one seen class"):
        rel.semantic_relatedness(["alpha"], {"setA": []}, tiny_source)
    with pytest.raises(ce.MissingWordsError, match="'zulu'"):
        rel.semantic_relatedness(["zulu"], {"setA": ["east"]}, tiny_source)
    assert rel.semantic_relatedness([], {"setA": ["east"]}, tiny_source) == []


def test_default_seen_excludes_the_evaluated_list():
    assert rel.default_seen("ucf101") == ("kinetics400", "kinetics600", "kinetics700", "vggsound", "activitynet")
    assert "activitynet" not in rel.default_seen("ActivityNet200")
    assert rel.default_seen("hmdb51") == rel.DATASETS
    assert rel.default_seen("my_classes.txt") == rel.DATASETS


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="'kinetics999' is neither a shipped list .* nor a class file"):
        RelatednessConfig(classes="ucf101", out_dir=tmp_path, seen=("kinetics999",))
    for edges in ((0.1, 0.33, 0.66), (0.3, 0.2, 0.5, 0.8), (0.0, 0.2, 0.5, 0.8)):
        with pytest.raises(ValueError, match="edges must be 4 increasing SR values"):
            RelatednessConfig(classes="ucf101", out_dir=tmp_path, edges=edges)
    with pytest.raises(ValueError, match="twice"):
        RelatednessConfig(classes="ucf101", out_dir=tmp_path, seen=("activitynet", "activitynet200"))
    with pytest.raises(ValueError, match="a source that embeds any name"):
        RelatednessConfig(classes="ucf101", out_dir=tmp_path, embeddings="avca:ucf")
    with pytest.raises(ValueError, match="at least one"):
        RelatednessConfig(classes="ucf101", out_dir=tmp_path, seen=())


@pytest.fixture
def hmdb_vectors(tmp_path):
    """Random 6-d vectors for every word of the HMDB-51 list (so it can serve as the seen list)."""
    words = sorted({w for name in classlists.load_classlist("hmdb51") for w in tokenize_class_name(name)})
    rng = np.random.default_rng(0)
    return _write_text_vectors(tmp_path / "hmdb.txt", dict(zip(words, rng.normal(size=(len(words), 6)), strict=True)))


def test_run_relatedness_writes_csv_png_markdown_json(tmp_path, hmdb_vectors):
    class_file = tmp_path / "classes.txt"
    class_file.write_text("# candidates\nbrush hair\n\nride horse\nclimb stairs pour\n")
    config = RelatednessConfig(
        classes=str(class_file), out_dir=tmp_path / "out", embeddings=f"word2vec:{hmdb_vectors}", seen=("hmdb51",)
    )
    summary = rel.run_relatedness(config)
    assert summary.n_classes == 3 and summary.seen == ("hmdb51",)
    with summary.csv_path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["class"] for r in table] == ["brush hair", "ride horse", "climb stairs pour"]
    assert table[0]["sr"] == "0.000000" and table[0]["group"] == "overlap"
    assert table[0]["nearest_seen_class"] == "brush_hair" and table[0]["nearest_seen_dataset"] == "hmdb51"
    assert table[1]["nearest_seen_class"] == "ride_horse"
    # The third class against every HMDB class by hand: min cosine distance of the mean word vectors.
    source = ce.load_embedding_source(f"word2vec:{hmdb_vectors}")
    phi = source.embed(["climb stairs pour"])[0]
    seen = source.embed(classlists.load_classlist("hmdb51"))
    expected = min(1 - phi @ s / np.linalg.norm(phi) / np.linalg.norm(s) for s in seen)
    assert float(table[2]["sr"]) == pytest.approx(expected, abs=2e-6)
    assert sum(summary.counts.values()) == 3 and summary.counts["overlap"] >= 2
    assert summary.share_sr_below_0_2 == pytest.approx(sum(float(r["sr"]) < 0.2 for r in table) / 3)
    assert summary.png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [rel.RelatednessRow(r["class"], (), float(r["sr"]), r["group"], "", "") for r in table]
    axes = rel.sr_histogram_figure(rows, "a long title " * 20).axes[0]
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == [f"{g} ({summary.counts[g]})" for g in ("overlap", "easy", "medium", "hard", "too-far")]
    assert [t.get_text() for t in axes.texts] == ["0.1", "0.33", "0.66", "0.8"]  # the group edges, labelled
    assert len(axes.get_title().splitlines()) == 3  # wrapped, not cut off
    markdown = summary.markdown_path.read_text()
    assert "| overlap | SR <= 0.1 |" in markdown and "SR < 0.2:" in markdown
    record = json.loads(summary.json_path.read_text())
    assert record["config"]["seen"] == ["hmdb51"] and record["embedding"]["spec"] == f"word2vec:{hmdb_vectors}"
    assert record["seen_sources"]["hmdb51"].startswith("shipped list hmdb51: open-mmlab/mmaction2")


def _relatedness_of(class_file, vectors, out):
    """`cli.py relatedness` of a class file against HMDB-51 with the test's word vectors."""
    return CliRunner().invoke(cli, ["relatedness", "--classes", str(class_file), "--seen", "hmdb51",
                                    "--embeddings", f"word2vec:{vectors}", "--out-dir", str(out)])


def test_cli_relatedness_writes_outputs(tmp_path, hmdb_vectors):
    class_file = tmp_path / "classes.txt"
    class_file.write_text("smile laugh\nkick ball\n")
    out = tmp_path / "rel"
    result = _relatedness_of(class_file, hmdb_vectors, out)
    assert result.exit_code == 0, result.output
    assert "2 classes vs hmdb51" in result.output and "SR < 0.2" in result.output
    assert (out / "relatedness.csv").read_text().count("\n") == 3
    assert (out / "relatedness.png").stat().st_size > 1000


def test_cli_relatedness_reports_errors_in_one_line(tmp_path, hmdb_vectors):
    result = CliRunner().invoke(
        cli, ["relatedness", "--classes", str(tmp_path / "absent.txt"), "--embeddings", f"word2vec:{hmdb_vectors}"]
    )
    assert result.exit_code == 1 and "Error: class file" in result.output
    result = CliRunner().invoke(cli, ["relatedness", "--classes", "ucf101", "--seen", "kinetics9"])
    assert result.exit_code == 1 and "'kinetics9' is neither a shipped list" in result.output
    class_file = tmp_path / "classes.txt"
    class_file.write_text("zumba dancing\n")
    result = _relatedness_of(class_file, hmdb_vectors, tmp_path / "o")
    assert result.exit_code == 1 and "'zumba'" in result.output and "--missing skip" in result.output


def test_own_training_classes_and_edges(tmp_path, hmdb_vectors):
    own = tmp_path / "my_training_classes.txt"
    own.write_text("brush hair\nride horse\n")
    classes = tmp_path / "candidates.txt"
    classes.write_text("brush hair\nride horse\nclimb stairs pour\n")
    vectors = f"word2vec:{hmdb_vectors}"
    paper = rel.run_relatedness(RelatednessConfig(classes=str(classes), out_dir=tmp_path / "a", embeddings=vectors,
                                                  seen=(str(own),)))
    table = {r["class"]: r for r in csv.DictReader(paper.csv_path.open(newline=""))}
    assert table["brush hair"]["group"] == "overlap" and table["brush hair"]["nearest_seen_dataset"] == str(own)
    sr = float(table["climb stairs pour"]["sr"])
    record = json.loads(paper.json_path.read_text())
    assert record["seen_sources"][str(own)] == f"file {own.resolve()}"
    # edges put the same SR in another group; the report, the groups record and the figure follow them
    edges = (sr / 4, sr / 2, sr * 2, sr * 3)  # sr lies in (sr/2, 2 sr]: medium
    moved = rel.run_relatedness(RelatednessConfig(classes=str(classes), out_dir=tmp_path / "b", embeddings=vectors,
                                                  seen=(str(own),), edges=edges))
    assert moved.counts["medium"] == 1 and json.loads(moved.json_path.read_text())["groups"]["easy"] == sr / 2
    assert f"| medium | ({sr / 2:g}, {sr * 2:g}] | 1 |" in moved.markdown_path.read_text()
    assert set(json.loads(moved.json_path.read_text())["empty_groups"]) == {"easy", "hard"}
    axes = rel.sr_histogram_figure([], "t", edges=edges).axes[0]
    assert [t.get_text() for t in axes.texts] == [f"{e:g}" for e in edges]


def _extents(figure, artists):
    renderer = figure.canvas.get_renderer()
    return [artist.get_window_extent(renderer) for artist in artists]


def _assert_readable(figure, axes, captions):
    """Captions cover no other caption nor the title, and the title lies wholly inside the figure (not cut off)."""
    figure.draw_without_rendering()
    boxes = _extents(figure, captions)
    (title,) = _extents(figure, [axes.title])
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(not box.overlaps(title) for box in boxes)
    whole = figure.bbox
    assert whole.x0 <= title.x0 and title.x1 <= whole.x1 and title.y1 <= whole.y1


def test_histogram_captions_of_close_edges_do_not_overlap():
    rows = [rel.RelatednessRow(f"c{i}", (), sr, rel.relatedness_group(sr, (0.1, 0.12, 0.66, 0.7)), "", "")
            for i, sr in enumerate((0.05, 0.11, 0.3, 0.68))]
    figure = rel.sr_histogram_figure(rows, "a long title of many words " * 8, edges=(0.1, 0.12, 0.66, 0.7))
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.texts] == ["0.1", "0.12", "0.66", "0.7"]
    assert axes.texts[1].xyann[1] > axes.texts[0].xyann[1] == axes.texts[2].xyann[1]  # 0.12 moved up one row
    _assert_readable(figure, axes, axes.texts)
    # no bar spans a group edge: every edge is a bin boundary
    lefts = sorted({round(p.get_x(), 6) for p in axes.patches} | {round(p.get_x() + p.get_width(), 6)
                                                                  for p in axes.patches})
    assert {0.1, 0.12, 0.66, 0.7} <= set(lefts)
    assert all(float(tick).is_integer() for tick in axes.get_yticks())  # class counts: no fractional ticks
