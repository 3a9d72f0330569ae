"""workflows.ablate: every row trains and evaluates on a tiny store, finished rows are reused, bad input fails early."""

import json

import pytest
from click.testing import CliRunner

from workflows import ablate
from workflows.config import ABLATION_ROWS, DEFAULT_ABLATION_ROWS, AblateConfig

_TINY = {"epochs": 2, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 0.0, "progress": False, "prefetch_batches": 0,
         "width": 32, "num_blocks": 1, "num_heads": 2, "dropout": 0.0, "train_splits": ("seen",),
         "val_splits": ("val",)}


def _config(store, vectors, out, **kw):
    return AblateConfig(store=store.path, out=out, train={**_TINY, "embeddings": f"word2vec:{vectors}"}, **kw)


def test_rows_are_the_documented_ones():
    assert tuple(ablate.ROWS) == ABLATION_ROWS and DEFAULT_ABLATION_ROWS == ABLATION_ROWS[:11]
    from cli import cli

    help_text = " ".join(CliRunner().invoke(cli, ["ablate", "--help"]).output.split())
    assert all(row in help_text for row in ABLATION_ROWS)


@pytest.mark.slow
def test_every_row_trains_evaluates_and_is_reused(eval_store, eval_vectors, tmp_path, monkeypatch):
    out = tmp_path / "ablate"
    result = ablate.run_ablation(_config(eval_store, eval_vectors, out, rows=ABLATION_ROWS, seeds=(0,)))
    saved = json.loads((out / "ablation.json").read_text())
    assert list(saved["rows"]) == list(ABLATION_ROWS)
    for row in saved["rows"].values():
        assert set(row) == {key for key, _ in ablate.METRICS}
        assert all(m["std"] is None and len(m["seeds"]) == 1 for m in row.values())  # one seed: no spread
        assert row["zsl"]["mean"] is not None and row["calibrated_gzsl_hm"]["mean"] is not None
    # 6 seen (2 held out as validation-unseen are candidates of validation only) and 3 unseen test classes
    assert saved["chance"]["zsl"] == round(100 / 3, 2)
    assert saved["chance"]["gzsl_hm"] == saved["chance"]["calibrated_gzsl_s"] == round(100 / 9, 2)
    markdown = (out / "ablation.md").read_text()
    assert "| Chance | |" in markdown and "±" not in markdown and "One seed" in markdown
    # the fixture's tokens come from no backbone and no rendered clip: no caveat (the demo store's run has both)
    assert (saved["random_init"], saved["synthetic_data"]) == (False, False) and "RANDOM-INIT" not in markdown
    sentence = json.loads((out / "runs" / "sentence-seed0" / "classes.json").read_text())["embedding"]
    assert sentence["spec"] == "minilm" and sentence["dim"] == 384  # the row changes the class embeddings only
    # concat trains nothing of its own: it reads the audio-only and video-only runs side by side
    concat = next(r for r in result.rows if r.name == "concat")
    assert [p.split("/")[-1] for p in concat.runs] == ["audio-only-seed0", "video-only-seed0"]
    assert not (out / "runs" / "concat-seed0").exists()
    concat_metrics = json.loads((out / "report" / "concat-seed0" / "metrics.json").read_text())
    assert concat_metrics["config"]["concat_runs"] == [str(out / "runs" / "video-only-seed0")]
    fusion = {row: json.loads((out / "runs" / f"{row}-seed0" / "config.json").read_text())["train"]["fusion"]
              for row in ("task", "sequential", "eq5", "control")}
    assert fusion["task"]["zero_shot_embedding"] == "conse" and fusion["task"]["se_weights"] == [0.0]
    assert fusion["sequential"]["fusion_order"] == "sequential" and fusion["eq5"]["se_weights"] == [1.0]
    control = json.loads((out / "runs" / "control-seed0" / "config.json").read_text())["train"]
    assert control["shuffle_class_embeddings"] is True
    # a rerun trains nothing: every row is finished
    import fusion.trainer

    def no_training(config):
        raise AssertionError(f"{config.out} was trained again")

    monkeypatch.setattr(fusion.trainer, "train", no_training)
    again = ablate.run_ablation(_config(eval_store, eval_vectors, out, rows=ABLATION_ROWS, seeds=(0,)))
    assert json.loads((out / "ablation.json").read_text())["rows"] == saved["rows"]
    assert [r.metrics for r in again.rows] == [r.metrics for r in result.rows]


def test_rows_with_equal_settings_share_their_runs_and_the_reading_judges_the_spread(eval_store, eval_vectors,
                                                                                     tmp_path):
    out = tmp_path / "shared"
    config = _config(eval_store, eval_vectors, out, rows=("full", "normalised", "no-text"), seeds=(0, 1),
                     ablations=("normalised",))
    result = ablate.run_ablation(config)
    normalised = next(r for r in result.rows if r.name == "normalised")
    assert normalised.same_as == "full" and not (out / "runs" / "normalised-seed0").exists()
    markdown = (out / "ablation.md").read_text()
    assert "`normalised` trains with exactly the settings of `full`" in markdown
    # which class vector each class got, as the benchmark table says it (`eval.report.class_vectors_cell`)
    assert "| Model | Row | Class vectors | ZSL |" in markdown and markdown.count(" | by name | ") == 3
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["class_vectors"] == {"full": "by name", "normalised": "by name", "no-text": "by name"}
    full, no_text = (next(r for r in result.rows if r.name == n).metrics["zsl"] for n in ("full", "no-text"))
    bound = full.std + no_text.std
    verdict = "exceeds" if abs(no_text.mean - full.mean) > bound else "within"
    assert f"`no-text` {no_text.mean - full.mean:+.2f} ({verdict} {bound:.2f})" in markdown
    assert "`normalised` " not in markdown.split("## Differences")[1]  # the same runs as full: no difference


def test_bad_input_fails_before_any_training(eval_store, eval_vectors, store_builder, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown ablation row.*'audio'.*choose from full, concat, no-text"):
        _config(eval_store, eval_vectors, tmp_path / "x", rows=("full", "audio"))
    with pytest.raises(ValueError, match="set per row and seed"):
        AblateConfig(store=eval_store.path, out=tmp_path / "x", train={"seed": 3})
    import fusion.trainer

    monkeypatch.setattr(fusion.trainer, "train", lambda config: pytest.fail("trained before checking its input"))
    silent = store_builder(tmp_path / "silent.zarr", eval_vectors, [("playing guitar", "seen", 2),
                                                                    ("cat meowing", "unseen", 2)], has_audio=False)
    with pytest.raises(ValueError, match=r"no clip with audio: rows \['audio-only'\] need it"):
        ablate.run_ablation(_config(silent, eval_vectors, tmp_path / "y", rows=("full", "audio-only")))
    no_validation = AblateConfig(store=eval_store.path, out=tmp_path / "z", rows=("full",),
                                 train={**_TINY, "val_splits": (), "embeddings": f"word2vec:{eval_vectors}"})
    with pytest.raises(ValueError, match="validation clips"):
        ablate.run_ablation(no_validation)


def test_cli_ablate_errors_are_one_line(eval_store, tmp_path):
    from cli import cli

    result = CliRunner().invoke(cli, ["ablate", "--store", str(eval_store.path), "--out", str(tmp_path / "a"),
                                      "--rows", "full,fusion"])
    assert result.exit_code == 1 and "unknown ablation row(s) ['fusion']; choose from full, concat" in result.output
    result = CliRunner().invoke(cli, ["ablate", "--store", str(eval_store.path), "--out", str(tmp_path / "b"),
                                      "--rows", "full"])
    assert result.exit_code == 1 and "--val-unseen-fraction, --val-split or --val-store" in result.output
