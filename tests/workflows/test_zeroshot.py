"""workflows.zeroshot on a trained tiny run: outputs, held-out clips only, beta from validation only, open vocab."""

import csv
import dataclasses
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from common.errors import InputError
from eval import metrics
from eval.config import PlotConfig
from eval.gzsl import ValidationSplit, evaluate_gzsl
from eval.scoring import ClassEmbedder, ClipScores, ClipSet
from features.splits import SplitRole, SplitRoles
from features.store import DONE, TokenStore
from fusion.predict import score_clips
from fusion.trained_run import load_run
from workflows.config import ZeroShotConfig
from workflows.zeroshot import run_zeroshot

_NO_PLOTS = PlotConfig(tsne=False, per_class_bars=False)
# The fixtures' class names (tests/workflows/conftest.py).
SEEN = ["playing guitar", "dog barking", "riding bike", "cooking pasta", "opera singing", "chopping wood"]
VAL_UNSEEN = ["car engine", "ballet dancing"]
UNSEEN = ["playing piano", "cat meowing", "riding horse"]
EXTRA = ["blowing trumpet"]


@pytest.fixture(autouse=True, scope="module")
def _same_names_as_the_fixtures(classes):
    assert (classes.seen, classes.val_unseen, classes.unseen, classes.extra) == (SEEN, VAL_UNSEEN, UNSEEN, EXTRA)


def _config(run, store, **kw):
    return ZeroShotConfig(run_dir=run, store=store.path, plots=kw.pop("plots", _NO_PLOTS), **kw)


def test_default_gzsl_writes_metrics_predictions_report_and_plots(eval_run, eval_store, tmp_path):
    result = run_zeroshot(_config(eval_run, eval_store, out=tmp_path / "rep",
                                  plots=PlotConfig(tsne_max_points=20, tsne_iterations=250)))
    names = {p.name for p in result.paths}
    assert names == {"metrics.json", "predictions.csv", "report.md", "per_class_accuracy.png", "tsne.png"}
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    for key in ("zsl", "gzsl_s", "gzsl_u", "gzsl_hm"):
        assert 0.0 <= saved[key] <= 100.0
    assert saved["rule"] == "kinetics" and saved["classes"]["seen"] == sorted(SEEN)
    assert saved["classes"]["unseen"] == sorted(UNSEEN)
    with (tmp_path / "rep" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["clip_id", "true_class", "pred_gzsl", "pred_zsl", "split"]
    # only held-out clips: test_seen (3 per seen class) and unseen (4 per class); never the training clips
    assert len(rows) == 3 * len(SEEN) + 4 * len(UNSEEN)
    assert all(r["clip_id"].split("/")[0] in ("test_seen", "unseen") for r in rows)
    assert {r["split"] for r in rows if r["true_class"] in UNSEEN} == {"unseen"}
    assert all(r["pred_zsl"] in UNSEEN for r in rows if r["split"] == "unseen")
    assert all(r["pred_zsl"] == "" for r in rows if r["split"] == "seen")
    # the headline numbers are the metrics of the written predictions
    for name in UNSEEN:
        mine = [r for r in rows if r["true_class"] == name]
        zsl_acc = 100 * np.mean([r["pred_zsl"] == name for r in mine])
        assert next(p for p in saved["per_class"] if p["class"] == name)["zsl_acc"] == pytest.approx(zsl_acc)
    zsl = np.mean([100 * np.mean([r["pred_zsl"] == n for r in rows if r["true_class"] == n]) for n in UNSEEN])
    assert saved["zsl"] == pytest.approx(zsl)
    assert "| Class | Accuracy | Predicted as |" in (tmp_path / "rep" / "report.md").read_text()


def test_scores_match_a_recomputation_with_metrics(eval_run, eval_store):
    result = run_zeroshot(_config(eval_run, eval_store, rule="plain"))
    model, info = load_run(eval_run)
    keep = np.flatnonzero(np.isin(eval_store.splits, ["test_seen", "unseen"]))
    scores = score_clips(model, info, eval_store, keep, "plain", 64, "cpu")
    names = sorted(SEEN + UNSEEN)
    d = metrics.class_distances(scores.embeddings, ClassEmbedder(info)(names), "plain")
    y = np.array([names.index(n) for n in scores.labels])
    unseen = np.array([names.index(n) for n in UNSEEN])
    seen = np.array([names.index(n) for n in SEEN])
    assert result.metrics["zsl"] == pytest.approx(100 * metrics.zsl(d, y, unseen))
    assert result.metrics["gzsl_hm"] == pytest.approx(100 * metrics.gzsl(d, y, seen, unseen).hm)
    # the kinetics rule subtracts phi(s_v(x)): a different score than the plain rule
    kin = run_zeroshot(_config(eval_run, eval_store))
    assert kin.metrics["rule"] == "kinetics" and kin.metrics["group"] != result.metrics["group"]


def test_training_clips_only_on_request(eval_run, eval_store, tmp_path):
    held_out = run_zeroshot(_config(eval_run, eval_store, out=tmp_path / "held_out"))
    everything = run_zeroshot(_config(eval_run, eval_store, include_training_clips=True, out=tmp_path / "all"))
    # + the 8 training clips per seen class and the 3 validation clips per seen class
    assert everything.metrics["num_clips"] == held_out.metrics["num_clips"] + 11 * len(SEEN)
    assert everything.metrics["includes_training_clips"] is True
    marked = "- training clips: included on request: S measures clips the head trained or validated on"
    assert marked in (tmp_path / "all" / "report.md").read_text()
    assert "training clips" not in (tmp_path / "held_out" / "report.md").read_text()


def test_calibrated_stacking_takes_beta_from_validation(eval_run, eval_store):
    result = run_zeroshot(_config(eval_run, eval_store, calibrated_stacking=True, val_split="val"))
    m = result.metrics
    # the same sweep by hand, on the validation clips only
    model, info = load_run(eval_run)
    val = eval_store.indices(DONE, ["val"])
    scores = score_clips(model, info, eval_store, val, "kinetics", 64, "cpu")
    names = sorted(SEEN + VAL_UNSEEN)
    d = scores.distances(ClassEmbedder(info)(names))
    y = np.array([names.index(n) for n in scores.labels])
    beta, hm = metrics.select_beta(d, y, [names.index(n) for n in SEEN], [names.index(n) for n in VAL_UNSEEN])
    assert m["calibrated_beta"] == beta and m["calibrated_val_hm"] == pytest.approx(100 * hm)
    assert m["calibrated_val_split"] == "val"
    assert m["calibrated_beta"] in metrics.DEFAULT_BETAS.tolist()
    assert "calibrated" in result.summary()


@pytest.mark.parametrize("split", ["unseen", "test_seen"])
def test_beta_is_never_chosen_on_test_splits(eval_run, eval_store, split):
    with pytest.raises(ValueError, match="is test data"):
        run_zeroshot(_config(eval_run, eval_store, calibrated_stacking=True, val_split=split))


def test_beta_follows_the_roles_a_protocol_states(eval_run, eval_store):
    model, info = load_run(eval_run)
    val_scores = score_clips(model, info, eval_store, eval_store.indices(DONE, ["val"]), "kinetics", 64, "cpu")
    nothing = ClipSet.of(eval_store.identity, [])
    assert ValidationSplit.build(val_scores, "val", info.class_names, nothing).name == "val"
    with pytest.raises(ValueError, match="'val' is test data"):
        ValidationSplit.build(val_scores, "val", info.class_names, nothing, SplitRoles({"val": SplitRole.TEST}))


def test_calibrated_stacking_needs_a_validation_split(eval_run, eval_store):
    with pytest.raises(ValueError, match="needs `val_split`"):
        _config(eval_run, eval_store, calibrated_stacking=True)
    with pytest.raises(ValueError, match="cannot be both validation and evaluated"):
        _config(eval_run, eval_store, calibrated_stacking=True, val_split="val", splits=("val",))


def test_validation_split_cannot_be_built_from_evaluated_clips(eval_run, eval_store):
    model, info = load_run(eval_run)
    test = np.flatnonzero(np.isin(eval_store.splits, ["test_seen", "unseen"]))
    val = eval_store.indices(DONE, ["val"])
    test_scores = score_clips(model, info, eval_store, test, "kinetics", 64, "cpu")
    val_scores = score_clips(model, info, eval_store, val, "kinetics", 64, "cpu")
    with pytest.raises(TypeError, match="ValidationSplit.build"):
        ValidationSplit(test_scores, "val", tuple(SEEN), tuple(UNSEEN))
    # renaming the test clips does not help: their store split says test, and they are the evaluated clips
    with pytest.raises(ValueError, match="'my_val' is test data"):
        ValidationSplit.build(test_scores, "my_val", info.class_names, ClipSet.of(eval_store.identity, []))
    with pytest.raises(ValueError, match="shares clips with the evaluated clips"):
        ValidationSplit.build(val_scores, "val", info.class_names, ClipSet.of(eval_store.identity, val[:1]))
    # a validation split built against other clips still cannot calibrate an overlapping evaluation
    validation = ValidationSplit.build(val_scores, "val", info.class_names, ClipSet.of(eval_store.identity, []))
    embed = ClassEmbedder(info)
    with pytest.raises(ValueError, match="shares clips"):
        evaluate_gzsl(val_scores, SEEN, VAL_UNSEEN, embed, validation)
    # and not when its unseen classes are the evaluated unseen classes
    with pytest.raises(ValueError, match="evaluated unseen classes"):
        evaluate_gzsl(test_scores, [n for n in SEEN], UNSEEN + VAL_UNSEEN,
                      embed, validation)
    assert evaluate_gzsl(test_scores, SEEN, UNSEEN, embed, validation).calibrated is not None


def test_oracle_predictions_score_100(eval_run):
    """Ids, labels and candidates line up: clips predicting exactly phi(label) + offset are all right."""
    _, info = load_run(eval_run)
    embed = ClassEmbedder(info)
    names = SEEN[:2] + UNSEEN[:2]
    labels = np.array([n for n in names for _ in range(3)])
    offsets = np.random.default_rng(0).normal(size=(labels.size, embed(names).shape[1]))
    scores = ClipScores(clips=ClipSet.of("x", np.arange(labels.size)), clip_ids=labels, labels=labels,
                        splits=labels, embeddings=embed(list(labels)) + offsets, offsets=offsets, rule="kinetics")
    evaluation = evaluate_gzsl(scores, SEEN[:2], UNSEEN[:2], embed)
    assert (evaluation.zsl, evaluation.gzsl.s, evaluation.gzsl.u) == (1.0, 1.0, 1.0)


def test_class_lists_must_respect_what_the_run_trained(eval_run, eval_store, tmp_path):
    (tmp_path / "seen.txt").write_text("\n".join(SEEN[1:]) + "\n")
    (tmp_path / "unseen.txt").write_text("\n".join(UNSEEN + SEEN[:1]) + "\n")
    with pytest.raises(ValueError, match="trained on them"):
        run_zeroshot(_config(eval_run, eval_store, seen=tmp_path / "seen.txt", unseen=tmp_path / "unseen.txt"))
    (tmp_path / "unseen.txt").write_text("\n".join(UNSEEN[:2]) + "\n")
    (tmp_path / "seen.txt").write_text("\n".join(SEEN + VAL_UNSEEN[:1]) + "\n")
    with pytest.raises(ValueError, match="were not training classes"):
        run_zeroshot(_config(eval_run, eval_store, seen=tmp_path / "seen.txt", unseen=tmp_path / "unseen.txt"))
    (tmp_path / "seen.txt").write_text("\n".join(SEEN) + "\n")
    result = run_zeroshot(_config(eval_run, eval_store, seen=tmp_path / "seen.txt", unseen=tmp_path / "unseen.txt"))
    assert result.metrics["num_unseen_classes"] == 2
    assert result.metrics["num_clips"] == 3 * len(SEEN) + 4 * 2


def test_open_vocabulary_ranks_typed_names(eval_run, eval_store, tmp_path):
    names = (UNSEEN[0], UNSEEN[1], EXTRA[0])
    result = run_zeroshot(_config(eval_run, eval_store, class_names=names, splits=("unseen",), top_k=2,
                                  out=tmp_path / "voc"))
    m = result.metrics
    assert m["mode"] == "vocabulary" and m["num_clips"] == 4 * len(UNSEEN)
    assert m["num_labelled_clips"] == 8 and 0 <= m["top1"] <= m["topk"] <= 100
    with (tmp_path / "voc" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert all(r["pred"] in names and r["top_k"].split(";")[0] == r["pred"] and len(r["top_k"].split(";")) == 2
               for r in rows)


def test_a_run_records_each_class_with_the_vector_of_its_own_manual_name(eval_store, eval_vectors, run_trainer,
                                                                          tmp_path):
    # The map sends the seen classes to each other's names reversed, so the originals and the manual names sort
    # in different orders; the recorded rows must follow the names, not a position in either sorted list.
    name_map = tmp_path / "map.csv"
    name_map.write_text("original,manual\n" + "".join(f"{a},{b}\n" for a, b in zip(SEEN, SEEN[::-1], strict=True)))
    run = run_trainer(eval_store.path, tmp_path / "run", eval_vectors, name_map=name_map, epochs=1)
    _, info = load_run(run)
    from text.class_embeddings import load_embedding_source

    plain = load_embedding_source(f"word2vec:{eval_vectors}")
    with np.load(run / "class_embeddings.npz") as arrays:
        recorded = arrays["class_embeddings"]
    manual = dict(zip(SEEN, SEEN[::-1], strict=True))
    np.testing.assert_allclose(recorded, plain.embed([manual[name] for name in info.class_names]), rtol=1e-6)
    np.testing.assert_allclose(ClassEmbedder(info)(SEEN[:2]), plain.embed([SEEN[-1], SEEN[-2]]), rtol=1e-6)


@pytest.mark.parametrize("peer_text_order", [False, True])
def test_a_run_on_an_avca_table_embeds_new_names_in_the_order_it_trained_with(store_builder, run_trainer, tmp_path,
                                                                              peer_text_order):
    from text.class_embeddings import AVCA_TABLES, load_embedding_source

    table = load_embedding_source("avca:ucf", normalise=True)
    peer = load_embedding_source("avca:ucf", normalise=True, peer_text_order=True)
    ucf = AVCA_TABLES["ucf"].class_list.read_text().splitlines()
    moved = [name for name in ucf if not np.array_equal(table.embed([name]), peer.embed([name]))]
    trained, held_out = moved[:4], moved[4:6]
    plan = [(n, "seen", 4) for n in trained] + [(n, "val", 2) for n in trained + held_out]
    layout = {"V": 1, "Nv": 1, "Dv": 16, "Na": 1, "Da": 12, "kinetics_classes": 0}
    store = store_builder(tmp_path / "ucf.zarr", None, plan, layout=layout, phi=lambda n: table.embed([n])[0])
    run = run_trainer(store.path, tmp_path / "run", None, embeddings="avca:ucf", peer_text_order=peer_text_order,
                      epochs=1, fusion={"normalise_embeddings": True, "se_target": "class"})
    _, info = load_run(run)
    expected = peer if peer_text_order else table
    assert info.embedding_provenance["peer_text_order"] is peer_text_order
    np.testing.assert_array_equal(info.class_embeddings, expected.embed(list(info.class_names)))
    # zeroshot / the protocols' test embed names the run did not train on as the run did
    np.testing.assert_array_equal(ClassEmbedder(info)(held_out), expected.embed(held_out))


def test_kinetics_rule_needs_kinetics_logits(eval_run, eval_vectors, store_builder, tmp_path):
    layout = {"V": 2, "Nv": 3, "Dv": 12, "Na": 2, "Da": 8, "kinetics_classes": 0}
    store = store_builder(tmp_path / "nok.zarr", eval_vectors, [(n, "unseen", 2) for n in UNSEEN], layout=layout)
    with pytest.raises(ValueError, match="no Kinetics logits"):
        run_zeroshot(_config(eval_run, store))
    assert run_zeroshot(_config(eval_run, store, rule="plain")).metrics["gzsl_hm"] is None  # no seen clips: ZSL only


def test_cli_zeroshot(eval_run, eval_store, tmp_path):
    from cli import cli

    result = CliRunner().invoke(cli, ["zeroshot", "--run", str(eval_run), "--store", str(eval_store.path),
                                      "--calibrated-stacking", "--val-split", "val", "--no-plots",
                                      "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "ZSL" in result.output and "calibrated (beta" in result.output
    assert (tmp_path / "rep" / "metrics.json").is_file()
    bad = CliRunner().invoke(cli, ["zeroshot", "--run", str(eval_run), "--store", str(eval_store.path),
                                   "--calibrated-stacking", "--val-split", "unseen"])
    assert bad.exit_code == 1 and "Error:" in bad.output and "test data" in bad.output


@pytest.fixture(scope="module")
def held_run(eval_store, eval_vectors, run_trainer, tmp_path_factory):
    """A run validated on 2 of the 6 seen classes held out as validation-unseen (train-fusion --val-unseen-fraction)."""
    out = tmp_path_factory.mktemp("held") / "run"
    return run_trainer(eval_store.path, out, eval_vectors, val_splits=(), val_unseen_fraction=0.34)


def test_classes_held_out_for_validation_leave_the_candidates(eval_store, held_run):
    run = held_run
    _, info = load_run(run)
    held = info.validation["unseen_classes"]
    assert len(held) == 2 and not set(held) & set(info.class_names)
    result = run_zeroshot(_config(run, eval_store))
    assert result.metrics["classes"]["seen"] == sorted(info.class_names)
    # clips of the 4 trained classes this run never saw (3 test_seen + 3 "val" each, a split it did not use) and
    # every unseen clip; clips of the 2 held-out classes are not scored
    assert result.metrics["num_clips"] == 4 * (3 + 3) + 4 * len(UNSEEN)
    assert result.metrics["gzsl_hm"] is not None


def test_beta_from_the_runs_own_validation_clips(eval_store, held_run):
    run = held_run
    result = run_zeroshot(_config(run, eval_store, calibrated_stacking=True, val_split="run"))
    # the same sweep by hand on the clips classes.json records
    model, info = load_run(run)
    val = np.flatnonzero(np.isin(eval_store.clip_ids, info.validation["clip_ids"]))
    scores = score_clips(model, info, eval_store, val, "kinetics", 64, "cpu")
    names = sorted(list(info.class_names) + info.validation["unseen_classes"])
    y = np.array([names.index(n) for n in scores.labels])
    seen = [names.index(n) for n in info.class_names]
    unseen = [names.index(n) for n in info.validation["unseen_classes"]]
    beta, hm = metrics.select_beta(scores.distances(ClassEmbedder(info)(names)), y, seen, unseen)
    assert result.metrics["calibrated_val_split"] == "run"
    assert (result.metrics["calibrated_beta"], result.metrics["calibrated_val_hm"]) == (beta, pytest.approx(100 * hm))


def test_validation_log_and_metrics_json_name_metrics_alike(eval_store, held_run):
    """The trainer's validation (log.jsonl) and a zeroshot metrics.json are one type written by one writer."""
    result = run_zeroshot(_config(held_run, eval_store, calibrated_stacking=True, val_split="run"))
    logged = json.loads((held_run / "log.jsonl").read_text().splitlines()[-1])["val"]
    fields = {f.name for f in dataclasses.fields(metrics.EvalResult)}
    assert logged["selection"] in fields and set(logged) - {"selection"} <= fields
    headline = {"zsl", "gzsl_s", "gzsl_u", "gzsl_hm", "calibrated_beta", "calibrated_gzsl_hm", "calibrated_val_hm"}
    assert headline <= set(logged) and headline <= set(result.metrics)
    assert set(metrics.EvalResult.from_json(logged).to_json()) <= set(logged)
    # the result the workflows read is the one metrics.json holds, in fractions
    assert result.result.to_json() == metrics.EvalResult.from_json(result.metrics).to_json()
    assert result.result.calibrated_val_hm * 100 == result.metrics["calibrated_val_hm"]


def test_hints_name_flags_of_zeroshot(eval_run, eval_store, tmp_path):
    from cli import cli

    base = ["zeroshot", "--run", str(eval_run), "--store", str(eval_store.path), "--splits", "unseen"]
    typo = f"{EXTRA[0]} zzqxv"
    unknown = CliRunner().invoke(cli, [*base, "--class-names", typo])
    assert unknown.exit_code == 1 and "zzqxv" in unknown.output and "--missing skip" in unknown.output
    assert "missing=" not in unknown.output
    skipped = CliRunner().invoke(cli, [*base, "--class-names", f"{typo},{UNSEEN[0]}", "--missing", "skip"])
    assert skipped.exit_code == 0, skipped.output
    copy = tmp_path / "no_best"
    shutil.copytree(eval_run, copy)
    (copy / "best.pt").unlink()
    no_best = CliRunner().invoke(cli, ["zeroshot", "--run", str(copy), "--store", str(eval_store.path)])
    assert no_best.exit_code == 1 and "choose --checkpoint last" in no_best.output
    assert CliRunner().invoke(cli, ["zeroshot", "--run", str(copy), "--store", str(eval_store.path),
                                    "--checkpoint", "last", "--no-plots"]).exit_code == 0


def test_non_finite_tokens_name_their_clips(eval_run, eval_store, tmp_path):
    shutil.copytree(eval_store.path, tmp_path / "nan.zarr")
    store = TokenStore.open(tmp_path / "nan.zarr", mode="r+")
    victim = next(i for i, c in enumerate(store.clip_ids.tolist()) if c.startswith("unseen/"))
    tokens = {k: v[0] for k, v in store.read([victim]).items()}
    tokens["audio_tokens"][0, 0] = np.inf
    store.write_clips([victim], [SimpleNamespace(**tokens)])
    with pytest.raises(InputError, match=rf"NaN or inf in audio_tokens of clip\(s\) '{store.clip_ids[victim]}'"):
        run_zeroshot(_config(eval_run, store, out=tmp_path / "rep"))


def test_train_and_evaluate_on_a_read_only_store(eval_store, eval_vectors, run_trainer, read_only_copy, tmp_path):
    store = TokenStore.open(read_only_copy(eval_store.path.parent) / eval_store.path.name)
    run = run_trainer(store.path, tmp_path / "run", eval_vectors, epochs=1)
    result = run_zeroshot(_config(run, store, out=tmp_path / "rep"))
    assert (tmp_path / "rep" / "metrics.json").is_file() and result.paths
    with pytest.raises(OSError, match="Read-only file system"):  # what cannot be written fails, naming the path
        run_zeroshot(_config(run, store, out=store.path.parent / "rep"))


def test_a_resumed_run_is_one_run_and_one_seed_group(tmp_path):
    # Resume and seed grouping read the one declaration (`affects_result`): a run resumed with another compile or
    # resident store is the same run for both; another seed is another run of the same group; another lr neither.
    from dataclasses import replace

    from fusion.config import TrainConfig
    from fusion.run_dir import changed_settings
    from workflows.zeroshot import _group_key

    base = TrainConfig(store=tmp_path / "store.zarr", out=tmp_path / "run")
    store = SimpleNamespace(path=tmp_path / "store.zarr")
    metrics_json = {"rule": "kinetics", "mode": "gzsl", "classes": None}
    config = ZeroShotConfig(run_dir=tmp_path / "run", store=tmp_path / "store.zarr")

    def group(train: TrainConfig) -> str:
        info = SimpleNamespace(train=json.loads(json.dumps(train.to_dict())), embedding_repeats=1)
        return _group_key(info, store, metrics_json, config)

    resumed = replace(base, compile=True, resident_store="on", device="cuda", out=tmp_path / "moved")
    assert changed_settings(base.to_dict(), resumed) == [] and group(resumed) == group(base)
    other_seed = replace(base, seed=1, out=tmp_path / "seed1")
    assert changed_settings(base.to_dict(), other_seed) == ["seed"] and group(other_seed) == group(base)
    other_lr = replace(base, lr=1e-3)
    assert changed_settings(base.to_dict(), other_lr) == ["lr"] and group(other_lr) != group(base)
def _fail_writing(monkeypatch, name: str, error: BaseException) -> None:
    """Writing the report file `name` writes half of it, then raises `error` (a kill, a full disk)."""
    import pathlib

    write = pathlib.Path.write_text

    def half_then_fail(path, text, *args, **kwargs):
        if name in path.name:
            write(path, text[: len(text) // 2], *args, **kwargs)
            raise error
        return write(path, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)


def _folder(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_an_interrupted_report_leaves_the_previous_one_whole_and_a_rerun_replaces_it_whole(eval_run, eval_store,
                                                                                           tmp_path, monkeypatch):
    out = tmp_path / "rep"
    run_zeroshot(_config(eval_run, eval_store, out=out, plots=PlotConfig(tsne=False)))  # GZSL, with the figure
    before = _folder(out)
    ranking = _config(eval_run, eval_store, out=out, class_names=tuple(UNSEEN))  # another report into the folder
    _fail_writing(monkeypatch, "predictions.csv", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_zeroshot(ranking)
    assert _folder(out) == before and [p.name for p in tmp_path.iterdir()] == ["rep"]
    monkeypatch.undo()
    result = run_zeroshot(ranking)
    assert sorted(_folder(out)) == sorted(p.name for p in result.paths) == ["metrics.json", "predictions.csv",
                                                                          "report.md"]  # no figure of the other run
    assert json.loads((out / "metrics.json").read_text())["mode"] == "vocabulary"


def test_a_full_disk_while_writing_a_report_is_one_line_naming_the_file(eval_run, eval_store, tmp_path,
                                                                        monkeypatch):
    import errno

    from cli import cli

    _fail_writing(monkeypatch, "report.md", OSError(errno.ENOSPC, "No space left on device"))
    result = CliRunner().invoke(cli, ["zeroshot", "--run", str(eval_run), "--store", str(eval_store.path),
                                      "--no-plots", "--out", str(tmp_path / "rep")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("Error: ") and str(tmp_path / "rep" / "report.md") in result.output
    assert "No space left on device" in result.output and not list(tmp_path.iterdir())  # no partial folder


def test_a_report_never_replaces_a_folder_of_other_files(eval_run, eval_store, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):
        run_zeroshot(_config(eval_run, eval_store, out=tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_store_written_with_padded_or_nfd_names_scores_them_as_their_one_spelling(eval_run, eval_store,
                                                                                   eval_vectors, store_builder,
                                                                                   tmp_path):
    import unicodedata

    # A store written before names were normalised: the rows go into the store as they are (no manifest reader).
    nfd = {name: unicodedata.normalize("NFD", name) for name in UNSEEN}
    plan = ([(f"{n} ", "seen", 2) for n in SEEN] + [(n, "test_seen", 3) for n in SEEN]
            + [(nfd[n] if k % 2 else f" {n}", "unseen " if k % 2 else "unseen", 2) for n in UNSEEN for k in (0, 1)])
    store = store_builder(tmp_path / "padded.zarr", eval_vectors, plan)
    assert set(store.splits.tolist()) == {"seen", "test_seen", "unseen"} and set(store.labels.tolist()) <= set(
        SEEN + UNSEEN)
    padded = run_zeroshot(_config(eval_run, store)).metrics
    clean = run_zeroshot(_config(eval_run, store_builder(tmp_path / "clean.zarr", eval_vectors, [
        (n.strip(), s.strip(), c) for n, s, c in [(unicodedata.normalize("NFC", n), s, c) for n, s, c in plan]])))
    assert padded["classes"] == clean.metrics["classes"] and padded["classes"]["unseen"] == sorted(UNSEEN)
    assert padded["num_clips"] == clean.metrics["num_clips"] == len(SEEN) * 2 + len(SEEN) * 3 + len(UNSEEN) * 4
    assert padded["zsl"] == clean.metrics["zsl"]


def test_class_names_with_a_repeat_or_none_are_one_line_errors(eval_run, eval_store):
    from cli import cli

    base = ["zeroshot", "--run", str(eval_run), "--store", str(eval_store.path), "--no-plots"]
    for given, message in ((f"{UNSEEN[0]},{UNSEEN[0]} ", f"'{UNSEEN[0]}' is given twice"), (",,,", "no class names"),
                           (f"{UNSEEN[0]},,{UNSEEN[1]}", "entry 2 of the class names is empty")):
        result = CliRunner().invoke(cli, [*base, "--class-names", given])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert lines[0].startswith("Error: --class-names: ") and message in lines[0]


def test_a_vocabulary_of_one_class_scores_every_clip_of_it_right(eval_run, eval_store):
    metrics = run_zeroshot(_config(eval_run, eval_store, class_names=(UNSEEN[0],), splits=("unseen",))).metrics
    assert metrics["num_labelled_clips"] == 4 and metrics["top1"] == metrics["topk"] == 100.0
@pytest.mark.parametrize("method", ["devise", "ale", "sje"])
def test_zeroshot_of_a_comparison_head_compares_w_x_with_phi(eval_store, eval_vectors, tmp_path, method):
    from fusion.config import train_config_from_options
    from fusion.trainer import train

    run = tmp_path / "run"
    train(train_config_from_options({
        "store": eval_store.path, "out": run, "embeddings": f"word2vec:{eval_vectors}", "method": method,
        "train_splits": ("seen",), "val_splits": ("val",), "epochs": 3, "batch_size": 16, "n_batches": 5,
        "progress": False}))
    result = run_zeroshot(_config(run, eval_store, out=tmp_path / "rep", calibrated_stacking=True, val_split="val",
                                  plots=PlotConfig(tsne_max_points=20, tsne_iterations=250)))
    assert result.metrics["rule"] == "plain" and result.metrics["calibrated_beta"] is not None
    assert {p.name for p in result.paths} >= {"metrics.json", "predictions.csv", "tsne.png"}
    # by hand: theta(x) = W [v; a] with v the view mean of the video CLS token, a the mean of the first two audio
    # tokens (the extracted-store rule), the nearest unseen phi(c) in Euclidean distance
    model, info = load_run(run)
    weight = model.projection.weight.detach().numpy().astype(np.float64)  # (E, Dv + Da)
    with (tmp_path / "rep" / "predictions.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "unseen"]
    index = [list(eval_store.clip_ids).index(r["clip_id"]) for r in rows]
    tokens = eval_store.read(np.array(index), ["video_tokens", "audio_tokens"])
    video = tokens["video_tokens"].astype(np.float64)[:, :, 0].mean(axis=1)  # (N, V, Nv, Dv) -> (N, Dv)
    audio = tokens["audio_tokens"].astype(np.float64)[:, :2].mean(axis=1)  # (N, Na, Da) -> (N, Da)
    theta = np.concatenate([video, audio], axis=1) @ weight.T  # (N, E)
    names = sorted(UNSEEN)
    phi = ClassEmbedder(info)(names).astype(np.float64)
    nearest = np.linalg.norm(theta[:, None] - phi[None], axis=2).argmin(axis=1)
    assert [names[k] for k in nearest] == [r["pred_zsl"] for r in rows]
