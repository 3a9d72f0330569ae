"""eval.report (tables, mean ± std over seeds) and eval.plots (PNG figures)."""

import json

import numpy as np
import pytest

from eval import plots, report
from eval.config import ReportConfig


def _write(folder, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_report_pools_seeds_and_keeps_other_runs_apart(tmp_path):
    a = _write(tmp_path / "a_s0", label="mzst", group="g1", seed=0, zsl=44.0, gzsl_s=80.0, gzsl_u=10.0, gzsl_hm=17.777)
    b = _write(tmp_path / "a_s1", label="mzst", group="g1", seed=1, zsl=46.0, gzsl_s=82.0, gzsl_u=12.0, gzsl_hm=20.94)
    c = _write(tmp_path / "base", label="baseline", group="g2", seed=0, zsl=20.0, gzsl_s=90.0, gzsl_u=1.0,
               gzsl_hm=1.978, calibrated_beta=0.4, calibrated_gzsl_hm=30.0)
    summary = report.write_report(ReportConfig(runs=(a, b, c), out=tmp_path / "cmp"))
    assert [row.label for row in summary.rows] == ["mzst", "baseline"]
    assert summary.rows[0].seeds == (0, 1)
    # mean 45, sample std sqrt(2) = 1.41
    assert "| mzst | 2 | 45.00 ± 1.41 | 81.00 ± 1.41 | 11.00 ± 1.41 | 19.36 ± 2.24 | – | – |" in summary.markdown
    assert "| baseline | 1 | 20.00 | 90.00 | 1.00 | 1.98 | 0.40 | 30.00 |" in summary.markdown
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert saved["rows"][0]["metrics"]["zsl"] == {"mean": 45.0, "std": 1.41, "values": [44.0, 46.0]}
    assert "calibrated_beta" not in saved["rows"][0]["metrics"]
    assert (tmp_path / "cmp" / "comparison.md").read_text() == summary.markdown


def test_report_without_grouping_lists_every_run(tmp_path):
    a = _write(tmp_path / "a", group="g", seed=0, zsl=40.0)
    b = _write(tmp_path / "b", group="g", seed=1, zsl=50.0)
    summary = report.write_report(ReportConfig(runs=(a, b), group_seeds=False))
    assert [row.label for row in summary.rows] == ["a", "b"]
    assert summary.paths == ()
    assert "| a | 1 | 40.00 |" in summary.markdown


def test_a_row_whose_class_vectors_took_the_peers_order_says_so(tmp_path):
    by_name = _write(tmp_path / "ours", label="ours", group="g1", seed=0, zsl=40.0, peer_text_order=False)
    peer = _write(tmp_path / "peer", label="as published", group="g2", seed=0, zsl=30.0, peer_text_order=True)
    summary = report.write_report(ReportConfig(runs=(by_name, peer), out=tmp_path / "cmp"))
    assert "| Run | Seeds | Class vectors | ZSL |" in summary.markdown
    assert "| ours | 1 | by name | 40.00 |" in summary.markdown
    assert "| as published | 1 | AVCA-GZSL order | 30.00 |" in summary.markdown
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [row["peer_text_order"] for row in saved["rows"]] == [False, True]
    # tables of runs that all gave vectors by name (and runs recorded before the option) keep their columns
    assert "Class vectors" not in report.write_report(ReportConfig(runs=(by_name,))).markdown


def test_a_benchmark_table_shows_chosen_columns_the_assignment_and_chance(tmp_path):
    from eval.metrics import EvalResult

    runs = [(str(tmp_path / f"s{s}"), {"label": "devise", "group": "g", "seed": s, "zsl": z, "gzsl_s": 60.0,
                                       "gzsl_u": 5.0, "gzsl_hm": 9.23, "peer_text_order": True})
            for s, z in ((0, 40.0), (1, 44.0))]
    chance = report.chance_values(EvalResult(num_seen_classes=6, num_unseen_classes=3))
    assert chance["zsl"] == pytest.approx(100 / 3) and chance["mzsl_hard"] == pytest.approx(100 / 3)
    assert chance["gzsl_hm"] == pytest.approx(100 / 9) and chance["calibrated_gzsl_u"] == pytest.approx(100 / 9)
    assert report.chance_values(EvalResult(num_unseen_classes=3)).keys() == {
        "zsl", "mzsl_easy", "mzsl_medium", "mzsl_hard", "mzsl_avg_unweighted", "mzsl_avg_class_weighted"}
    markdown = report.comparison_markdown(report.comparison_rows(runs), ["zsl", "gzsl_hm"], first_column="Method",
                                          class_vectors=True, chance=chance)
    assert markdown.splitlines() == ["| Method | Seeds | Class vectors | ZSL | HM |", "| --- | --- | --- | --- | --- |",
                                     "| devise | 2 | AVCA-GZSL order | 42.00 ± 2.83 | 9.23 ± 0.00 |",
                                     "| Chance |  |  | 33.33 | 11.11 |"]


def test_a_mean_over_fewer_runs_than_the_row_pools_says_how_many(tmp_path):
    a = _write(tmp_path / "s0", label="m", group="g", seed=0, zsl=40.0, calibrated_beta=0.5,
               calibrated_gzsl_hm=30.0)
    b = _write(tmp_path / "s1", label="m", group="g", seed=1, zsl=44.0)
    markdown = report.write_report(ReportConfig(runs=(a, b))).markdown
    assert "| m | 2 | 42.00 ± 2.83 |" in markdown
    assert "| 30.00 (1 of 2 runs) |" in markdown


def test_report_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json not found; evaluate the run first"):
        report.write_report(ReportConfig(runs=(tmp_path,)))
    with pytest.raises(ValueError, match="at least one run"):
        ReportConfig(runs=())


def test_run_markdown_lists_classes_and_confusions():
    metrics = {
        "label": "run1", "rule": "kinetics", "zsl": 50.0, "gzsl_s": 75.0, "gzsl_u": 25.0, "gzsl_hm": 37.5,
        "calibrated_beta": 0.2, "calibrated_val_split": "val", "calibrated_val_hm": 40.0, "calibrated_gzsl_hm": 41.0,
        "num_seen_classes": 3, "num_unseen_classes": 2,
        "per_class": [{"class": "dog", "split": "unseen", "clips": 4, "gzsl_acc": 25.0, "zsl_acc": 50.0}],
        "worst_classes": [{"class": "dog", "acc": 25.0, "confused_with": [{"class": "cat", "share": 75.0}]}],
    }
    text = report.run_markdown(metrics)
    assert "| dog | unseen | 4 | 25.00 | 50.00 |" in text
    assert "| dog | 25.00 | cat (75.00%) |" in text
    assert "beta = 0.2, chosen on 'val'" in text
    assert "| run1 | 1 | 50.00 | 75.00 | 25.00 | 37.50 | 0.20 | 41.00 |" in text  # only reported columns
    assert "- chance (uniform guessing): ZSL 50.00% (1 of 2); GZSL S and U 20.00% (1 of 5)" in text


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def _tsne_inputs(classes=4, per_class=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 6)) * 5
    labels = np.repeat(np.arange(classes), per_class)
    labels[:3] = -1  # clips of no listed class are drawn grey
    predicted = centres[np.maximum(labels, 0)] + rng.normal(size=(labels.size, 6))
    return predicted, labels, centres


def test_tsne_plot_writes_png_and_samples(tmp_path):
    predicted, labels, classes = _tsne_inputs()
    path = plots.plot_tsne(tmp_path / "tsne.png", predicted, labels, classes, ["a", "b", "c", "d"],
                           unseen=[False, False, True, True], max_points=50, iterations=250)
    assert _is_png(path)
    xy = plots.tsne_embedding(np.concatenate([predicted[:40], classes]), perplexity=10.0, seed=0, iterations=250)
    assert xy.shape == (44, 2) and np.isfinite(xy).all()
    with pytest.raises(ValueError, match="3 class names for 4"):
        plots.plot_tsne(tmp_path / "x.png", predicted, labels, classes, ["a", "b", "c"])


def test_tsne_figure_has_legends_and_labels_that_do_not_overlap():
    names = [f"class number {i}" for i in range(12)]
    predicted, labels, classes = _tsne_inputs(classes=12, per_class=12, seed=1)
    figure = plots.tsne_figure(predicted, labels, classes, names, unseen=[i >= 8 for i in range(12)],
                               iterations=250)
    axes = figure.axes[0]
    kinds = [t.get_text() for t in axes.get_legend().get_texts()]
    assert kinds == ["clip (colour: true class)", "seen class embedding", "unseen class embedding",
                     "clip of no listed class"]
    (classes_legend,) = figure.legends
    entries = [t.get_text() for t in classes_legend.get_texts()]
    assert entries[:2] == ["class number 0", "class number 1"] and entries[8] == "class number 8 (unseen)"
    renderer = figure.canvas.get_renderer()
    labels_drawn = [t for t in axes.texts if t.get_text() in names]
    assert len(labels_drawn) >= 6  # most names find a free place
    boxes = [t.get_window_extent(renderer) for t in labels_drawn]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    bold = {t.get_text() for t in labels_drawn if t.get_fontweight() == "bold"}
    assert bold == {n for n in names[8:] if n in {t.get_text() for t in labels_drawn}}


def test_label_placement_leaves_out_what_cannot_fit():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2, 2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    anchors = np.full((40, 2), 0.5)  # 40 long names on one point of a small plot
    placed = plots.place_labels(axes, anchors, [f"a long class name {i}" for i in range(40)], bold=[False] * 40)
    assert 1 <= len(placed) < 40 and len(axes.texts) == len(placed)


def test_tsne_is_deterministic_for_a_seed():
    points = np.random.default_rng(1).normal(size=(20, 5))
    first = plots.tsne_embedding(points, perplexity=5.0, seed=3, iterations=250)
    np.testing.assert_array_equal(first, plots.tsne_embedding(points, perplexity=5.0, seed=3, iterations=250))


def test_per_class_bars(tmp_path):
    path = plots.plot_per_class_accuracy(tmp_path / "bars.png", ["a", "b", "c"], {"ZSL": [50.0, np.nan, 100.0]},
                                         unseen=[False, True, True])
    assert _is_png(path)
    with pytest.raises(ValueError, match="2 class names for 3"):
        plots.plot_per_class_accuracy(tmp_path / "x.png", ["a", "b"], {"ZSL": [1.0, 2.0, 3.0]})


def test_per_class_figure_shows_raw_and_calibrated_with_unseen_rows():
    names = ["seen a", "seen b", "unseen c", "unseen d"]
    figure = plots.per_class_figure(names, {"GZSL, raw": [90.0, 80.0, 0.0, 0.0],
                                            "GZSL, calibrated stacking": [70.0, 60.0, 40.0, 20.0]},
                                    unseen=[False, False, True, True], title="run")
    raw, calibrated = figure.axes
    assert (raw.get_title(), calibrated.get_title()) == ("GZSL, raw", "GZSL, calibrated stacking")
    rows = [t.get_text() for t in raw.get_yticklabels()]
    assert rows == ["seen b", "seen a", "unseen d", "unseen c"]  # unseen on top, each part by calibrated accuracy
    assert [round(b.get_width()) for b in calibrated.patches] == [60, 70, 20, 40]
    assert [t.get_text() for t in raw.texts] == ["0", "0"]  # the unseen rows of raw GZSL read as zero
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["unseen class", "seen class"]
    assert raw.get_xlabel() == "accuracy (%)" and raw.get_xlim() == (0.0, 100.0)


def test_cli_report(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    a = _write(tmp_path / "a", label="x", group="g", seed=0, zsl=10.0)
    b = _write(tmp_path / "b", label="x", group="g", seed=1, zsl=20.0)
    result = CliRunner().invoke(cli, ["report", str(a), str(b), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    assert "| x | 2 | 15.00 ± 7.07 |" in result.output and "2 runs in 1 rows" in result.output
    assert (tmp_path / "cmp" / "comparison.json").is_file()


def test_a_difficulty_group_without_classes_shows_a_dash():
    from workflows.protocols import group_scores

    metrics = {"label": "mzsl", **group_scores({"band marching": 50.0, "baseball pitch": 25.0},
                                               {"band marching": "easy", "baseball pitch": "hard"})}
    text = report.run_markdown(metrics)
    assert "| easy | 1 | 50.00 |" in text and "| medium | 0 | – |" in text and "| hard | 1 | 25.00 |" in text


def test_comparison_figure_draws_a_bar_per_method_and_metric_and_chance_lines(tmp_path):
    from matplotlib.collections import LineCollection

    values = {"mzst (by name)": {"ZSL": [90.0, 100.0, 50.0], "HM": [10.0, 12.0, 14.0]},
              "devise (by name)": {"ZSL": [30.0, 30.0, 30.0], "HM": [float("nan")] * 3}}
    figure = plots.comparison_figure(values, {"ZSL": 33.3, "HM": 11.1}, "t")
    axes = figure.axes[0]
    heights = sorted(round(p.get_height(), 2) for p in axes.patches)
    assert heights == [12.0, 30.0, 80.0]  # devise has no HM: no bar
    assert [t.get_text() for t in axes.get_xticklabels()] == ["ZSL", "HM"]
    assert max(axes.get_yticks()) <= 100  # the axis reads as accuracy
    segments = [s for c in axes.collections if isinstance(c, LineCollection) for s in c.get_segments()]
    whiskers = [s for s in segments if s[0, 0] == s[1, 0]]
    assert whiskers and max(s[:, 1].max() for s in whiskers) <= 100  # mean 80 ± 26.5 stops at 100
    assert sorted(round(s[0, 1], 1) for s in segments if s[0, 1] == s[1, 1]) == [11.1, 33.3]  # the chance lines
    assert plots.plot_comparison(tmp_path / "c.png", values, {"ZSL": 33.3}, "t").read_bytes()[:4] == b"\x89PNG"
