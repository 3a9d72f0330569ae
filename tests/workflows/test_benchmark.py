"""workflows.benchmark: two methods x two seeds through the MZSL protocol (the table holds the runs' numbers, a
rerun trains nothing), one head through the AVCA protocol with the peers' class-vector order, bad input in one
line."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from eval.config import PlotConfig
from eval.report import format_mean_std, load_metrics
from text.class_embeddings import load_embedding_source
from workflows.benchmark import run_benchmark
from workflows.config import AVCAProtocolConfig, BenchmarkConfig, MZSLProtocolConfig

# Options every method takes, the MZST head's size (mzst only) and the comparison heads' batches per epoch (theirs)
_TINY = {"width": 32, "num_blocks": 1, "num_heads": 2, "warmup_epochs": 0.0, "n_batches": 3, "progress": False,
         "prefetch_batches": 0}
_COLUMNS = ("mzsl_easy", "mzsl_medium", "mzsl_hard", "mzsl_avg_unweighted", "mzsl_avg_class_weighted")


def _args(mzsl_stores, eval_vectors, out, methods="mzst,devise"):
    bench, evaluation, groups = mzsl_stores
    args = ["benchmark", "--protocol", "mzsl", "--methods", methods, "--train-store", str(bench.path),
            "--eval-store", str(evaluation.path), "--groups", str(groups), "--allow-overlap", "--seeds", "0,1",
            "--epochs", "2", "--lr", "0.003", "--train-batch-size", "16", "--embeddings",
            f"word2vec:{eval_vectors}", "--no-plots", "--out", str(out)]
    return args + [part for key, value in _TINY.items() for part in ("--option", f"{key}={json.dumps(value)}")]


def _trained_files(out):
    return {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.suffix in (".pt", ".jsonl")}


@pytest.mark.slow
def test_benchmark_table_holds_the_runs_numbers_and_a_rerun_trains_nothing(mzsl_stores, eval_vectors, tmp_path):
    out = tmp_path / "B"
    result = CliRunner().invoke(cli, _args(mzsl_stores, eval_vectors, out))
    assert result.exit_code == 0, result.output
    table = json.loads((out / "table.json").read_text())
    markdown = (out / "table.md").read_text()
    assert table["methods"] == ["mzst", "devise"] and table["table_columns"] == list(_COLUMNS)
    for row, method in zip(table["rows"], ("mzst", "devise"), strict=True):
        seeds = [load_metrics(out / method / f"seed_{s}" / "test") for s in (0, 1)]
        assert row["label"] == method and row["seeds"] == [0, 1] and row["class_vectors"] == "by name"
        assert [m["config"]["train"]["method"] for m in seeds] == [method, method]
        cells = []
        for key in _COLUMNS:
            values = [m[key] for m in seeds]
            assert row["metrics"][key]["values"] == [round(v, 2) for v in values]
            assert row["metrics"][key]["mean"] == round(float(np.mean(values)), 2)
            cells.append(format_mean_std(float(np.mean(values)), float(np.std(values, ddof=1))))
        assert f"| {method} | 2 | by name | " + " | ".join(cells) + " |" in markdown
    # the MZST head's size went to mzst only, the heads' batches per epoch to devise only
    runs = {m: json.loads((out / m / "seed_0" / "stage2" / "config.json").read_text())["train"]
            for m in ("mzst", "devise")}
    assert runs["mzst"]["fusion"]["width"] == 32 and runs["devise"]["head"]["n_batches"] == 3
    # chance: uniform guessing among the 5 evaluation classes, for every group and average
    assert table["chance"] == {key: 20.0 for key in _COLUMNS} and table["unseen_classes"] == 5
    assert "| Chance |  |  | 20.00 | 20.00 | 20.00 | 20.00 | 20.00 |" in markdown
    assert "| Method | Seeds | Class vectors | E | M | H | Avg (E+M+H)/3 | Avg, class-weighted |" in markdown
    assert "## Reading" in markdown and "RANDOM-INIT" not in markdown  # the fixture stores come from no backbone
    assert (out / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    trained = _trained_files(out)
    assert len([p for p in trained if p.name == "last.pt"]) == 2 * 2 * 2  # methods x seeds x stages
    again = CliRunner().invoke(cli, _args(mzsl_stores, eval_vectors, out))
    assert again.exit_code == 0, again.output
    assert _trained_files(out) == trained  # every run reused: no checkpoint or log written again
    assert json.loads((out / "table.json").read_text())["rows"] == table["rows"]


def test_a_bad_method_or_a_setting_of_the_other_protocol_is_one_line(mzsl_stores, eval_vectors, tmp_path):
    out = tmp_path / "B"
    result = CliRunner().invoke(cli, _args(mzsl_stores, eval_vectors, out, methods="mzst,devize"))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "unknown method(s) ['devize'] in --methods; choose from mzst, " in lines[0] and "devise" in lines[0]
    assert not out.exists()
    stray = CliRunner().invoke(cli, _args(mzsl_stores, eval_vectors, out) + ["--dataset", "UCF"])
    assert stray.exit_code == 1 and "--dataset: not a setting of the mzsl protocol" in stray.output
    unused = CliRunner().invoke(cli, _args(mzsl_stores, eval_vectors, out) + ["--option", "widht=3"])
    assert unused.exit_code == 1 and "['widht'] are taken by none of the methods ['mzst', 'devise']" in unused.output
    assert not out.exists()
    heads_only = _args(mzsl_stores, eval_vectors, out, methods="devise")[:-2 * len(_TINY)]  # no MZST options
    preset = CliRunner().invoke(cli, heads_only + ["--preset", "demo"])
    assert preset.exit_code == 1 and "mzst is not among the methods ['devise']" in preset.output
    avca = CliRunner().invoke(cli, ["benchmark", "--protocol", "avca", "--out", str(out), "--seeds", "0"])
    assert avca.exit_code == 1 and avca.output == "Error: the avca protocol needs --dataset, --store\n"
    settings = MZSLProtocolConfig(train_store="a", eval_store="b", groups="g", out="o", train={"method": "ale"})
    with pytest.raises(ValueError, match="set per row by the benchmark"):
        BenchmarkConfig(protocol="mzsl", settings=settings, out=tmp_path)
    with pytest.raises(ValueError, match="with its settings"):
        BenchmarkConfig(protocol="avca", settings=MZSLProtocolConfig(train_store="a", eval_store="b", groups="g",
                                                                     out="o"), out=tmp_path)


def test_avca_benchmark_writes_tables_5_6_columns_and_the_peers_assignment(ucf_stores, tmp_path):
    clean, _ = ucf_stores
    settings = AVCAProtocolConfig(dataset="UCF", store=clean.path, out=tmp_path, calibrated_stacking=True,
                                  train={"epochs": 2, "batch_size": 16, "n_batches": 3, "progress": False,
                                         "peer_text_order": True},
                                  plots=PlotConfig(tsne=False, per_class_bars=False))
    result = run_benchmark(BenchmarkConfig(protocol="avca", settings=settings, out=tmp_path / "B",
                                           methods=("sje", "cjme"), recipe="ucf", beta_rule="peers"))
    assert result.columns == ("zsl", "gzsl_s", "gzsl_u", "gzsl_hm", "calibrated_gzsl_hm")
    seed = load_metrics(tmp_path / "B" / "sje" / "seed_0" / "test")
    assert seed["peer_text_order"] is True and seed["config"]["train"]["recipe"] == "ucf"
    cells = " | ".join(format_mean_std(seed[key], None) for key in result.columns)
    assert f"| sje | 1 | AVCA-GZSL order | {cells} |" in result.markdown
    # the candidates are UCF-GZSL's classes of the test stages (42 seen, 9 unseen), whatever the store holds
    assert (seed["num_seen_classes"], seed["num_unseen_classes"]) == (42, 9)
    assert "| Chance |  |  | 11.11 | 1.96 | 1.96 | 1.96 | 1.96 |" in result.markdown
    assert "one seed, so no spread" in result.markdown and "by more than one std" not in result.markdown
    table = json.loads((tmp_path / "B" / "table.json").read_text())
    assert table["rows"][0]["class_vectors"] == "AVCA-GZSL order" and table["seen_classes"] == 42
    # the peers' beta rule where a method scores audio, video and both (cjme); ours for sje, and the text says so
    assert seed["calibrated_beta_rule"] == "ours"
    assert load_metrics(tmp_path / "B" / "cjme" / "seed_0" / "test")["calibrated_beta_rule"] == "peers"
    assert "the peers' rule (the mean of the best audio, video and both betas on validation) for cjme; ours" in (
        result.markdown)


def _ucf_store(store_builder, ucf_plan, path, plan=None, **layout):
    """A store of `ucf_plan`'s clips built as the `ucf_stores` fixture builds its clean store, with its own layout
    and token maps (another feature setting of the same videos)."""
    table = load_embedding_source("avca:ucf", normalise=True)
    full, ids = ucf_plan
    return store_builder(path, None, plan or full, layout={"V": 1, "Nv": 1, "Dv": 16, "Na": 1, "Da": 12,
                                                           "kinetics_classes": 0, **layout},
                         phi=lambda name: table.embed([name])[0], clip_id=lambda name, stage, k: ids[(name, stage)][k],
                         noise=0.05, seed=7)


def _feature_args(stores, out, methods="sje,clipclap"):
    return ["benchmark", "--protocol", "avca", "--dataset", "UCF", "--methods", methods, "--feature-stores",
            ",".join(f"{name}={path}" for name, path in stores.items()), "--seeds", "0", "--epochs", "2",
            "--train-batch-size", "16", "--option", "n_batches=3", "--option", "progress=false", "--no-plots",
            "--out", str(out)]


def test_feature_stores_give_a_row_per_setting_and_method_on_the_same_clips(ucf_stores, ucf_plan, store_builder,
                                                                            tmp_path):
    clean, _ = ucf_stores
    other = _ucf_store(store_builder, ucf_plan, tmp_path / "wide.zarr", Dv=24, Da=20)
    stores = {"mvit-ast": clean.path, "wide": other.path}
    out = tmp_path / "B"
    result = CliRunner().invoke(cli, _feature_args(stores, out))
    assert result.exit_code == 0, result.output
    table = json.loads((out / "table.json").read_text())
    markdown = (out / "table.md").read_text()
    labels = ["sje · mvit-ast", "clipclap · mvit-ast", "sje · wide", "clipclap · wide"]
    assert [row["label"] for row in table["rows"]] == labels
    columns = table["table_columns"]
    for row in table["rows"]:
        folder = out / row["features"] / row["method"]
        seed = load_metrics(folder / "seed_0" / "test")
        assert seed["config"]["train"]["method"] == row["method"]
        assert seed["config"]["store"] == str(stores[row["features"]])  # the row's run read the row's store
        assert row["store"]["path"] == str(stores[row["features"]]) and row["store"]["profile"] == "eval-test"
        assert {key: row["metrics"][key]["values"] for key in columns} == {
            key: [round(seed[key], 2) for _ in (0,)] for key in columns}
        cells = " | ".join(format_mean_std(seed[key], None) for key in columns)
        assert f"| {row['label']} | eval-test | 1 | by name | {cells} |" in markdown  # the fixture's profile
    assert "| Method | Features | Seeds | Class vectors |" in markdown and table["test_clips"] == 9 + 18
    assert f"mvit-ast = {clean.path}; wide = {other.path}." in markdown
    assert (out / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    trained = _trained_files(out)
    assert len([p for p in trained if p.name == "last.pt"]) == 2 * 2 * 2  # stores x methods x stages
    again = CliRunner().invoke(cli, _feature_args(stores, out))
    assert again.exit_code == 0, again.output
    assert _trained_files(out) == trained
    assert json.loads((out / "table.json").read_text())["rows"] == table["rows"]

    # a store missing one test clip: refused in one line before anything trains
    plan, _ = ucf_plan
    fewer = [(n, s, k - 1 if (s == "stage_2_test_unseen" and i == len(plan) - 1) else k)
             for i, (n, s, k) in enumerate(plan)]
    short = _ucf_store(store_builder, ucf_plan, tmp_path / "short.zarr", plan=fewer)
    refused = CliRunner().invoke(cli, _feature_args({"mvit-ast": clean.path, "short": short.path}, tmp_path / "C"))
    lines = refused.output.strip().splitlines()
    assert refused.exit_code == 1 and len(lines) == 1, refused.output
    assert f"{short.path}: its test clips differ from {clean.path}'s in 1 clip(s)" in lines[0]
    assert not (tmp_path / "C").exists()
    mzsl = BenchmarkConfig.of  # MZSL runs read two stores each: refused in one line
    with pytest.raises(ValueError, match="avca protocol only"):
        mzsl("mzsl", {"train_store": "a", "eval_store": "b", "groups": "g"}, out=tmp_path / "D",
             feature_stores=("a=x",))
    with pytest.raises(ValueError, match="not NAME=STORE"):
        BenchmarkConfig.of("avca", {"dataset": "UCF"}, out=tmp_path / "D", feature_stores=("a=x", "a=y"))
