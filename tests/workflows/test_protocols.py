"""workflows.protocols: AVCA two-stage on the real UCF split files (a small store) and MZSL-50, a few epochs each.

The central check: the epoch and beta a protocol selects do not depend on the test clips at all (a store whose
test clips are pure noise selects exactly the same), and stage 2 has no validation to select with.
"""

import json

import numpy as np
import pytest

from eval.config import PlotConfig, ReportConfig
from eval.metrics import EvalResult
from eval.report import write_report
from features.store import TokenStore
from text.class_embeddings import load_embedding_source
from workflows import leaks, protocols
from workflows.config import AVCAProtocolConfig, MZSLProtocolConfig

_TINY = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_epochs": 0.0, "progress": False, "prefetch_batches": 0,
         "width": 32, "num_blocks": 1, "num_heads": 2, "dropout": 0.0}
_NO_PLOTS = PlotConfig(tsne=False, per_class_bars=False)
def _avca(store, out, **kw):
    return AVCAProtocolConfig(dataset="UCF", store=store.path, out=out, train=dict(_TINY), plots=_NO_PLOTS, **kw)


@pytest.mark.slow
def test_avca_selects_nothing_on_the_test_clips(ucf_stores, tmp_path):
    clean, noisy = ucf_stores
    a = protocols.run_avca_protocol(_avca(clean, tmp_path / "clean", calibrated_stacking=True))
    b = protocols.run_avca_protocol(_avca(noisy, tmp_path / "noisy", calibrated_stacking=True))
    # epoch and beta come from stage-1 validation only: identical although the test clips differ completely
    assert (a.seeds[0].best_epoch, a.seeds[0].beta) == (b.seeds[0].best_epoch, b.seeds[0].beta)
    assert a.seeds[0].beta in [round(0.2 * k, 10) for k in range(16)]
    stage1 = json.loads((tmp_path / "clean" / "seed_0" / "stage1" / "config.json").read_text())["train"]
    stage2 = json.loads((tmp_path / "clean" / "seed_0" / "stage2" / "config.json").read_text())["train"]
    assert stage1["train_splits"] == ["stage_1_train"]
    assert stage1["val_splits"] == ["stage_1_val_seen", "stage_1_val_unseen"]
    assert stage2["train_splits"] == ["stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"]
    assert stage2["val_splits"] == [] and stage2["val_store"] is None and stage2["val_unseen_fraction"] == 0
    assert stage2["epochs"] == a.seeds[0].best_epoch and stage2["schedule_epochs"] == stage1["epochs"]
    assert not (tmp_path / "clean" / "seed_0" / "stage2" / "best.pt").exists()
    # the selected epoch is the stage-1 validation optimum (first one on ties)
    log = [json.loads(x) for x in (tmp_path / "clean" / "seed_0" / "stage1" / "log.jsonl").read_text().splitlines()]
    scores = [getattr(EvalResult.from_json(line["val"]), line["val"]["selection"]) for line in log]
    assert a.seeds[0].best_epoch == int(np.argmax(scores)) + 1
    # the embeddings default to AVCA's table, without the Kinetics term (the table cannot embed Kinetics labels)
    assert stage1["embeddings"] == "avca:ucf" and stage1["fusion"]["se_target"] == "class"


def test_avca_outputs_and_report(ucf_stores, tmp_path):
    clean, _ = ucf_stores
    result = protocols.run_avca_protocol(_avca(clean, tmp_path / "p", seeds=(0, 1)))
    out = tmp_path / "p"
    pooled = json.loads((out / "metrics.json").read_text())
    assert pooled["seeds"] == [0, 1] and pooled["seed_runs"] == ["seed_0/test", "seed_1/test"]
    per_seed = [json.loads((out / f"seed_{s}" / "test" / "metrics.json").read_text()) for s in (0, 1)]
    assert pooled["zsl"] == pytest.approx(np.mean([m["zsl"] for m in per_seed]))
    assert per_seed[0]["group"] == per_seed[1]["group"] and per_seed[0]["protocol"] == "avca"
    # only the test stages are scored: 9 test-seen classes x 2 clips + 3 test-unseen classes x 3 clips
    assert per_seed[0]["num_clips"] == 9 * 2 + 3 * 3
    assert per_seed[0]["num_seen_classes"] == 42 and per_seed[0]["num_unseen_classes"] == 9
    summary = write_report(ReportConfig(runs=(out,)))
    assert len(summary.rows) == 1 and len(summary.rows[0].runs) == 2
    assert "| p | 2 |" in (out / "summary.md").read_text()
    assert "AVCA" in result.summary() and "±" in result.summary()
    # The store holds a few clips of each stage: the report says how few, against UCF's 6,816 listed videos.
    assert pooled["clips"]["stage_2_test_unseen"] == {"used": 9, "listed": 1267}
    assert sum(c["listed"] for c in pooled["clips"].values()) == 6816
    used = sum(c["used"] for c in pooled["clips"].values())
    assert f"clips used {used:,} of 6,816 listed, {used / 6816:.1%}" in result.summary()
    assert "Clips used (done clips of the store, of those its lists name): stage_1_train" in (
        out / "summary.md").read_text()


def test_avca_with_the_peers_text_order_trains_tests_and_reports_with_it(ucf_stores, tmp_path):
    clean, _ = ucf_stores
    config = AVCAProtocolConfig(dataset="UCF", store=clean.path, out=tmp_path / "peer", plots=_NO_PLOTS,
                                train={**_TINY, "peer_text_order": True})
    result = protocols.run_avca_protocol(config)
    out = tmp_path / "peer"
    for stage in ("stage1", "stage2"):
        classes = json.loads((out / "seed_0" / stage / "classes.json").read_text())
        assert classes["embedding"]["provenance"]["peer_text_order"] is True
    assert json.loads((out / "seed_0" / "test" / "metrics.json").read_text())["peer_text_order"] is True
    assert result.metrics["peer_text_order"] is True
    assert "| peer | 1 | AVCA-GZSL order |" in (out / "summary.md").read_text()


def test_avca_store_split_column_must_match_the_split_files(store_builder, ucf_plan, tmp_path):
    plan, ids = ucf_plan
    in_order = iter([v for name, stage, n in plan for v in ids[(name, stage)][:n]])
    # the stage-1 validation-seen clips claim to be training clips
    wrong = [(name, "stage_1_train" if stage == "stage_1_val_seen" else stage, n) for name, stage, n in plan]
    layout = {"V": 1, "Nv": 1, "Dv": 4, "Na": 1, "Da": 4, "kinetics_classes": 0}
    store = store_builder(tmp_path / "wrong.zarr", None, wrong, layout=layout, phi=lambda name: np.ones(3),
                          clip_id=lambda *_: next(in_order))
    with pytest.raises(ValueError, match="split 'stage_1_train', the split files say 'stage_1_val_seen'"):
        protocols.run_avca_protocol(_avca(store, tmp_path / "x"))


def test_protocol_configs_reject_owned_options():
    with pytest.raises(ValueError, match="set by the protocol"):
        AVCAProtocolConfig(dataset="UCF", store="s", out="o", train={"val_splits": ("stage_2_test_seen",)})
    with pytest.raises(ValueError, match="set by the protocol"):
        MZSLProtocolConfig(train_store="a", eval_store="b", groups="g", out="o", train={"train_splits": ("test",)})
    with pytest.raises(ValueError, match="also a training split"):
        MZSLProtocolConfig(train_store="a", eval_store="b", groups="g", out="o", test_split="train")


def test_group_scores_by_hand():
    per_class = {"a": 100.0, "b": 50.0, "c": 0.0, "d": 30.0}
    groups = {"a": "easy", "b": "medium", "c": "medium", "d": "hard", "unused": "hard"}
    scores = protocols.group_scores(per_class, groups)
    assert (scores["mzsl_easy"], scores["mzsl_medium"], scores["mzsl_hard"]) == (100.0, 25.0, 30.0)
    # weighted by classes per group: (1 * 100 + 2 * 25 + 1 * 30) / 4 = 45; unweighted (100 + 25 + 30) / 3
    assert scores["mzsl_avg_class_weighted"] == pytest.approx(45.0)
    assert scores["mzsl_avg_unweighted"] == pytest.approx(155 / 3)
    assert scores["groups"]["medium"] == {"classes": 2, "zsl": 25.0}
    with pytest.raises(ValueError, match="without a difficulty group"):
        protocols.group_scores({"x": 1.0}, groups)


def test_group_averages_of_the_papers_table_3():
    """MZST on VGGSound, Table 3: E / M / H = 46.74 / 24.98 / 8.82 over MZSL-50's 9 / 31 / 10 classes."""
    per_class, groups = {}, {}
    for group, accuracy, count in (("easy", 46.74, 9), ("medium", 24.98, 31), ("hard", 8.82, 10)):
        for k in range(count):
            per_class[f"{group}{k}"], groups[f"{group}{k}"] = accuracy, group
    scores = protocols.group_scores(per_class, groups)
    assert round(scores["mzsl_avg_unweighted"], 2) == 26.85  # the table prints 26.84 (its E, M, H are rounded)
    assert round(scores["mzsl_avg_class_weighted"], 2) == 25.66


@pytest.mark.parametrize("text, expected", [
    ("a,Easy\nb,medium\n", {"a": "easy", "b": "medium"}),
    ("a ,easy\na,easy\n  b  c ,hard\n", {"a": "easy", "b c": "hard"}),  # "a " and "a" are one class
    ("a,easy\na,hard\n", "class 'a' is in groups 'easy' and 'hard'"),
    ("a ,easy\na,hard\n", "class 'a' is in groups 'easy' and 'hard'"),
    ("a,trivial\n", "not one of"),
    ("  ,easy\n", "line 2: empty class_name"),
])
def test_read_groups(tmp_path, text, expected):
    path = tmp_path / "g.csv"
    path.write_text("class_name,group\n" + text, encoding="utf-8")
    if isinstance(expected, dict):
        assert protocols.read_groups(path) == expected
    else:
        with pytest.raises(ValueError, match=expected):
            protocols.read_groups(path)


@pytest.mark.slow
def test_mzsl_protocol(mzsl_stores, eval_vectors, tmp_path):
    bench, evaluation, groups = mzsl_stores
    config = MZSLProtocolConfig(train_store=bench.path, eval_store=evaluation.path, groups=groups, out=tmp_path / "m",
                                train={**_TINY, "embeddings": f"word2vec:{eval_vectors}"}, seeds=(0, 1),
                                calibrated_stacking=True, plots=_NO_PLOTS, allow_overlap=True)
    result = protocols.run_mzsl_protocol(config)
    m = result.seeds[0].metrics
    per_class = {r["class"]: r["zsl_acc"] for r in m["per_class"] if r["split"] == "unseen" and r["clips"]}
    assert len(per_class) == 5 and m["groups"]["medium"]["classes"] == 2
    assert m["mzsl_avg_class_weighted"] == pytest.approx(np.mean(list(per_class.values())))
    assert m["mzsl_avg_unweighted"] == pytest.approx(np.mean([m[f"mzsl_{g}"] for g in ("easy", "medium", "hard")]))
    # GZSL: the benchmark's 6 classes x 3 test clips are the seen part, the evaluation set the unseen part
    assert m["num_clips"] == 6 * 3 + 5 * 4 and m["num_seen_classes"] == 6
    assert m["calibrated_val_split"] == "stage_1_holdout" and m["calibrated_beta"] is not None
    stage1 = json.loads((tmp_path / "m" / "seed_0" / "stage1" / "config.json").read_text())["train"]
    assert stage1["val_unseen_fraction"] == 0.2 and stage1["train_splits"] == ["train"]
    for key in ("mzsl_avg_unweighted", "mzsl_avg_class_weighted"):
        assert result.metrics[key] == pytest.approx(np.mean([s.metrics[key] for s in result.seeds]))
    summary = (tmp_path / "m" / "summary.md").read_text()
    assert "Avg (E+M+H)/3" in summary and "Avg, class-weighted" in summary
    # "playing piano" is a Kinetics-400 label: allowed here, and recorded
    kinetics = {"kind": "kinetics400", "evaluation": "playing piano", "other": "playing piano",
                "detail": "both read 'play piano'"}
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["overlaps"] == [kinetics]
    assert "run with allow_overlap; 1 overlap(s)" in summary and "kinetics400: 'playing piano'" in summary


def test_mzsl_protocol_pools_the_stores_of_a_branch_head(mzsl_stores, eval_vectors, tmp_path):
    """AVGZSLNet sums two branch distances: the seen test clips and the evaluation set's, scored apart, pool into one
    evaluation, and the peers' beta rule chooses beta on the stage-1 hold-out."""
    bench, evaluation, groups = mzsl_stores
    train = {"method": "avgzslnet", "epochs": 2, "batch_size": 16, "n_batches": 3, "progress": False,
             "embeddings": f"word2vec:{eval_vectors}"}
    config = MZSLProtocolConfig(train_store=bench.path, eval_store=evaluation.path, groups=groups, out=tmp_path / "m",
                                train=train, calibrated_stacking=True, beta_rule="peers", plots=_NO_PLOTS,
                                allow_overlap=True)
    m = protocols.run_mzsl_protocol(config).seeds[0].metrics
    assert m["num_clips"] == 6 * 3 + 5 * 4 and m["num_seen_classes"] == 6
    assert m["calibrated_beta_rule"] == "peers" and m["calibrated_val_split"] == "stage_1_holdout"


@pytest.mark.slow
def test_mzsl_refuses_evaluation_classes_the_head_trained_on(mzsl_stores, store_builder, eval_vectors, classes,
                                                               tmp_path):
    bench, _, groups = mzsl_stores
    overlap = store_builder(tmp_path / "overlap.zarr", eval_vectors, [(classes.seen[0], "mzsl", 2)])
    (tmp_path / "g.csv").write_text(f"class_name,group\n{classes.seen[0]},easy\n")
    config = MZSLProtocolConfig(train_store=bench.path, eval_store=overlap.path, groups=tmp_path / "g.csv",
                                out=tmp_path / "m", val_unseen_fraction=0.0, test_split=None,
                                train={**_TINY, "embeddings": f"word2vec:{eval_vectors}", "epochs": 1},
                                plots=_NO_PLOTS)
    with pytest.raises(ValueError, match="MZSL classes must be unseen"):
        protocols.run_mzsl_protocol(config)
    assert not (tmp_path / "m").exists()  # refused before any training


def test_cli_protocol_avca(ucf_stores, tmp_path):
    from click.testing import CliRunner

    from cli import cli

    clean, _ = ucf_stores
    args = ["protocol", "avca", "--dataset", "UCF", "--store", str(clean.path), "--out", str(tmp_path / "cli"),
            "--epochs", "2", "--lr", "0.003", "--train-batch-size", "16", "--no-plots", "--seeds", "3"]
    for key, value in (("width", 32), ("num_blocks", 1), ("num_heads", 2), ("warmup_epochs", 0.0),
                       ("progress", "false"), ("prefetch_batches", 0)):
        args += ["--option", f"{key}={value}"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "AVCA UCF main_split (1 seed(s)" in result.output
    assert (tmp_path / "cli" / "seed_3" / "test" / "predictions.csv").is_file()
    bad = CliRunner().invoke(cli, ["protocol", "avca", "--dataset", "UCF", "--store", str(clean.path), "--out",
                                   str(tmp_path / "bad"), "--option", "val_splits=[\"stage_2_test_seen\"]"])
    assert bad.exit_code == 1 and "set by the protocol" in bad.output


@pytest.mark.slow
def test_imported_avca_features_run_the_avca_protocol(ucf_plan, tmp_path):
    """The "MZST (VGG+)" route: AVCA feature files -> import-avca -> protocol avca."""
    import h5py

    from curate.config import AVCAImportConfig
    from curate.importers import import_avca_features

    plan, ids = ucf_plan
    table = load_embedding_source("avca:ucf", normalise=True)
    rng = np.random.default_rng(0)
    maps = {"audio": rng.normal(size=(6, 300)), "video": rng.normal(size=(10, 300))}
    for name, stage, _ in plan:
        for modality, projection in maps.items():
            folder = tmp_path / "features" / modality / stage
            folder.mkdir(parents=True, exist_ok=True)
            videos = ids[(name, stage)]
            data = projection @ table.embed([name])[0] + 0.05 * rng.normal(size=(len(videos), projection.shape[0]))
            with h5py.File(folder / f"{name}.h5", "w") as f:
                f["data"] = data.astype(np.float32)
                f["video_urls"] = np.array([f"{v}.avi".encode() for v in videos])
    store = tmp_path / "imported.zarr"
    import_avca_features(AVCAImportConfig(features=tmp_path / "features", dataset="UCF", out=store))
    config = AVCAProtocolConfig(dataset="UCF", store=store, out=tmp_path / "p", train={**_TINY, "epochs": 2},
                                plots=_NO_PLOTS)
    result = protocols.run_avca_protocol(config)
    assert result.seeds[0].metrics["num_clips"] == 9 * 2 + 3 * 3
    assert 1 <= result.seeds[0].best_epoch <= 2


def test_stage2_follows_stage1s_schedule_up_to_the_selected_epoch(mzsl_stores, eval_vectors, tmp_path, monkeypatch):
    """AVCA's stage 2: stage 1's whole lr schedule, checkpoint at the selected epoch (not a schedule of that length)."""
    import torch

    bench, evaluation, groups = mzsl_stores
    seen_lr: dict[str, list[float]] = {}
    original_step = torch.optim.lr_scheduler.LambdaLR.step

    def recording_step(self, *args, **kwargs):  # the lr of every optimiser step, per run folder
        run = self.lr_lambdas[0].keywords["config"].out.name
        seen_lr.setdefault(run, []).append(self.optimizer.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    original_stage1 = protocols._train_stage1

    def stage1_selecting_epoch_3(*args, **kwargs):  # pin the selection before the end of stage 1's schedule
        folder, _, epochs = original_stage1(*args, **kwargs)
        return folder, 3, epochs

    monkeypatch.setattr(torch.optim.lr_scheduler.LambdaLR, "step", recording_step)
    monkeypatch.setattr(protocols, "_train_stage1", stage1_selecting_epoch_3)
    # one batch per epoch in both stages (stage 2 has more clips), so step k of each is the same point of the schedule
    train = {**_TINY, "embeddings": f"word2vec:{eval_vectors}", "epochs": 5, "batch_size": 64, "warmup_epochs": 1.0}
    protocols.run_mzsl_protocol(MZSLProtocolConfig(train_store=bench.path, eval_store=evaluation.path, groups=groups,
                                                   out=tmp_path / "m", test_split=None, train=train, plots=_NO_PLOTS,
                                                   allow_overlap=True))
    # the lr each optimiser step used ([0] is the scheduler's step at construction)
    stage1, stage2 = seen_lr["stage1"][1:], seen_lr["stage2"][1:]
    assert len(stage1) == 5 and len(stage2) == 3
    assert stage2 == stage1[:3]
    # a schedule of 3 epochs would be halfway down its cosine at step 3 (factor 0.5); stage 1's is at 0.85
    assert stage2[2] == pytest.approx(3e-3 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi / 4))))
    recorded = json.loads((tmp_path / "m" / "seed_0" / "stage2" / "config.json").read_text())["train"]
    assert (recorded["epochs"], recorded["schedule_epochs"]) == (3, 5)


@pytest.mark.slow
def test_mzsl_with_an_empty_group_reports_it_and_finishes(mzsl_stores, eval_vectors, classes, tmp_path):
    bench, evaluation, _ = mzsl_stores
    names = classes.unseen + classes.val_unseen
    groups = tmp_path / "groups.csv"  # no hard class: the normal case with GloVe vectors and the paper's edges
    groups.write_text("class_name,group\n" + "".join(f"{n},{g}\n" for n, g in zip(
        names, ["easy", "medium", "medium", "easy", "easy"], strict=True)))
    config = MZSLProtocolConfig(train_store=bench.path, eval_store=evaluation.path, groups=groups, out=tmp_path / "m",
                                train={**_TINY, "embeddings": f"word2vec:{eval_vectors}", "epochs": 2}, seeds=(0, 1),
                                plots=_NO_PLOTS, allow_overlap=True)
    result = protocols.run_mzsl_protocol(config)
    for seed in result.seeds:
        assert seed.metrics["groups"]["hard"] == {"classes": 0, "zsl": None} and seed.metrics["mzsl_hard"] is None
        easy, medium = seed.metrics["mzsl_easy"], seed.metrics["mzsl_medium"]
        assert seed.metrics["mzsl_avg_unweighted"] == pytest.approx((easy + medium) / 2)  # the groups present
    assert result.metrics["mzsl_hard"] is None and result.metrics["mzsl_avg_unweighted"] is not None
    saved = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert saved["mzsl_hard"] is None and saved["seed_runs"] and (tmp_path / "m" / "seed_1" / "test").is_dir()
    summary = (tmp_path / "m" / "summary.md").read_text()
    assert "hard: no classes" in summary and "the averages are over easy, medium." in summary
    assert saved["groups"] == {"easy": 3, "medium": 2, "hard": 0}


def test_mzsl_refuses_leaks_before_training(store_builder, eval_vectors, classes, tmp_path):
    bench = store_builder(tmp_path / "b.zarr", eval_vectors, [(n, "train", 2) for n in classes.seen])
    # a respelled training class, an unseen class, and a synonym of a training class (same vector as "dog barking")
    names = ["Playing-Guitars", "riding horse", "hound barking"]
    evaluation = store_builder(tmp_path / "e.zarr", None, [(n, "mzsl", 2) for n in names], phi=lambda n: np.ones(8))
    (tmp_path / "g.csv").write_text("class_name,group\n" + "".join(f"{n},easy\n" for n in names))
    rows = eval_vectors.read_text().splitlines()
    dog = next(r for r in rows if r.startswith("dog "))
    vectors = tmp_path / "v.txt"  # "hound" = "dog": SR 0 to "dog barking"
    vectors.write_text(f"{int(rows[0].split()[0]) + 1} {rows[0].split()[1]}\n" + "\n".join(rows[1:])
                       + "\nhound " + dog.split(" ", 1)[1] + "\n")
    # one evaluation file holds the bytes of a training file (a copy under another name)
    (tmp_path / "train.mp4").write_bytes(b"same bytes" * 100)
    (tmp_path / "copy.mp4").write_bytes(b"same bytes" * 100)
    (tmp_path / "other.mp4").write_bytes(b"other bytes" * 100)
    for store, first in ((bench, "train.mp4"), (evaluation, "copy.mp4")):
        with_paths = TokenStore.open(store.path, mode="r+")
        with_paths.relocate([tmp_path / first, *with_paths.paths[1:]], "test")
    config = dict(train_store=bench.path, eval_store=evaluation.path, groups=tmp_path / "g.csv",
                  val_unseen_fraction=0.0, test_split=None, plots=_NO_PLOTS,
                  train={**_TINY, "embeddings": f"word2vec:{vectors}", "epochs": 1})
    with pytest.raises(ValueError, match="4 overlap") as refused:
        protocols.run_mzsl_protocol(MZSLProtocolConfig(out=tmp_path / "m", **config))
    message = str(refused.value)
    assert "name: 'Playing-Guitars' ~ 'playing guitar'" in message and "'hound barking' ~ 'dog barking'" in message
    assert "kinetics400: 'riding horse'" not in message and "file: " in message and "`allow_overlap=True`" in message
    assert not (tmp_path / "m").exists()  # nothing trained
    found = leaks.find_overlaps(names, classes.seen, {"e/0": str(tmp_path / "copy.mp4")},
                                {"t/0": str(tmp_path / "train.mp4"), "t/1": str(tmp_path / "other.mp4")},
                                load_embedding_source(f"word2vec:{vectors}"))
    assert [(o.kind, o.evaluation, o.other) for o in found] == [
        ("name", "Playing-Guitars", "playing guitar"), ("relatedness", "hound barking", "dog barking"),
        ("kinetics400", "Playing-Guitars", "playing guitar"), ("file", "e/0", "t/0")]


def _patterned_video(path, seed: int, crf: int = 23, side: int = 64):
    """25 frames, each a random 8 x 8 grey pattern blown up to side x side pixels (structure an average hash sees)."""
    from curate.encode import write_mp4

    cells = np.random.default_rng(seed).integers(0, 256, (25, 8, 8), np.uint8)
    frames = np.repeat(np.repeat(cells, side // 8, axis=1), side // 8, axis=2)[..., None].repeat(3, axis=3)
    return write_mp4(path, frames, 25, crf=crf)


def test_near_duplicate_videos_are_found_by_fingerprint(eval_vectors, classes, tmp_path):
    original = _patterned_video(tmp_path / "train.mp4", seed=1)
    smaller = _patterned_video(tmp_path / "smaller.mp4", seed=1, crf=40, side=48)  # re-encoded: other bytes
    other = _patterned_video(tmp_path / "other.mp4", seed=2)
    exact = tmp_path / "exact.mp4"
    exact.write_bytes(original.read_bytes())
    assert smaller.read_bytes() != original.read_bytes()
    fingerprint = leaks.video_fingerprint(original)
    assert fingerprint.shape == (256,) and np.mean(fingerprint != leaks.video_fingerprint(smaller)) <= 0.1
    assert np.mean(fingerprint != leaks.video_fingerprint(other)) > 0.3
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    eval_files = {"e/copy": str(smaller), "e/other": str(other), "e/exact": str(exact),
                  "e/broken": str(tmp_path / "broken.mp4")}
    source = load_embedding_source(f"word2vec:{eval_vectors}")
    found = leaks.find_overlaps(["riding horse"], classes.seen, eval_files, {"t/0": str(original)}, source,
                                near_duplicates=True)
    assert [(o.kind, o.evaluation, o.other) for o in found] == [("file", "e/exact", "t/0"),
                                                                ("near-duplicate", "e/copy", "t/0")]
    assert leaks.find_overlaps(["riding horse"], classes.seen, eval_files, {"t/0": str(original)}, source) == found[:1]


def test_a_rerun_of_an_interrupted_protocol_continues_and_equals_an_uninterrupted_run(ucf_stores, tmp_path,
                                                                                      monkeypatch):
    from common.errors import InputError
    from fusion import trainer

    clean, _ = ucf_stores
    whole = protocols.run_avca_protocol(_avca(clean, tmp_path / "whole" / "p", seeds=(0, 1)))
    out = tmp_path / "cut" / "p"
    save, saved = trainer.save_epoch, []

    def killed_at(stage: str, epoch):
        """save_epoch that records each saved epoch, and is killed in `stage` at `epoch` after its log line."""
        def save_epoch(run, log_line, payload, is_best):
            if run == out / stage and log_line["epoch"] == (epoch or payload["config"]["epochs"]):
                with (run / "log.jsonl").open("a") as log:
                    log.write(json.dumps(log_line) + "\n")
                raise KeyboardInterrupt
            saved.append((run.relative_to(out).as_posix(), log_line["epoch"]))
            save(run, log_line, payload, is_best)
        return save_epoch

    for stage, epoch in (("seed_1/stage1", 2), ("seed_1/stage2", None)):  # stage 2: killed in its last epoch
        monkeypatch.setattr(trainer, "save_epoch", killed_at(stage, epoch))
        with pytest.raises(KeyboardInterrupt):
            protocols.run_avca_protocol(_avca(clean, out, seeds=(0, 1)))
    monkeypatch.setattr(trainer, "save_epoch", killed_at("none", 0))
    rerun = protocols.run_avca_protocol(_avca(clean, out, seeds=(0, 1)))
    assert len(saved) == len(set(saved))  # no epoch trained twice: seed 0 was reused, seed 1 resumed
    assert {run for run, _ in saved} == {"seed_0/stage1", "seed_0/stage2", "seed_1/stage1", "seed_1/stage2"}

    def numbers(metrics):
        return {k: v for k, v in metrics.items() if k not in ("config", "run")}

    assert numbers(rerun.metrics) == numbers(whole.metrics)
    assert numbers(json.loads((out / "metrics.json").read_text())) == numbers(
        json.loads((tmp_path / "whole" / "p" / "metrics.json").read_text()))
    for seed in (0, 1):
        cut_seed, whole_seed = (json.loads((root / f"seed_{seed}" / "test" / "metrics.json").read_text())
                                for root in (out, tmp_path / "whole" / "p"))
        assert numbers(cut_seed) == numbers(whole_seed)
    saved.clear()
    protocols.run_avca_protocol(_avca(clean, out, seeds=(0, 1)))  # a finished protocol: reused, nothing trains
    assert saved == []
    with pytest.raises(InputError, match=r"seed_0/stage1: holds this protocol's run with other settings \(epochs\)"):
        protocols.run_avca_protocol(AVCAProtocolConfig(dataset="UCF", store=clean.path, out=out, seeds=(0, 1),
                                                       train={**_TINY, "epochs": 2}, plots=_NO_PLOTS))


def test_a_full_disk_while_writing_the_pooled_report_keeps_the_previous_one(ucf_stores, tmp_path, monkeypatch):
    import errno
    import pathlib

    clean, _ = ucf_stores
    out = tmp_path / "p"
    protocols.run_avca_protocol(_avca(clean, out))
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "summary.md")}
    write = pathlib.Path.write_text

    def full_at_summary(path, text, *args, **kwargs):
        if path.name.startswith(".summary.md.tmp-"):
            write(path, text[:10], *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full_at_summary)
    with pytest.raises(OSError, match="No space left on device") as raised:
        protocols.run_avca_protocol(_avca(clean, out, calibrated_stacking=True))  # a rerun that changes the report
    assert raised.value.filename == str(out / "summary.md")
    assert {name: (out / name).read_bytes() for name in before} == before  # neither file replaced
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "seed_0", "summary.md"]


@pytest.mark.parametrize("given, message", [(["--lr", "nan"], "must be a finite number, got nan"),
                                            (["--option", "compile=yes"], "must be true or false, got 'yes'"),
                                            (["--seeds", "0,0"], "must be distinct seeds")])
def test_a_protocol_refuses_values_that_do_not_fit_in_one_line_before_training(ucf_stores, tmp_path, given, message):
    from click.testing import CliRunner

    from cli import cli

    clean, _ = ucf_stores
    result = CliRunner().invoke(cli, ["protocol", "avca", "--dataset", "UCF", "--store", str(clean.path), "--out",
                                      str(tmp_path / "p"), "--no-plots", *given])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
    assert not list((tmp_path / "p").rglob("*.pt"))
@pytest.mark.parametrize("method, beta_rule", [("devise", "ours"), ("ale", "ours"), ("sje", "ours"), ("cjme", "peers"),
                                               ("avgzslnet", "peers"), ("avca", "peers"), ("tcaf", "ours"),
                                               ("clipclap", "ours")])
def test_avca_protocol_runs_a_comparison_head(ucf_stores, tmp_path, method, beta_rule):
    clean, _ = ucf_stores
    train = {"method": method, "epochs": 3, "batch_size": 16, "n_batches": 4, "progress": False,
             **({"depth": 1} if method == "tcaf" else {})}
    result = protocols.run_avca_protocol(AVCAProtocolConfig(dataset="UCF", store=clean.path, out=tmp_path / "p",
                                                            train=train, plots=_NO_PLOTS, calibrated_stacking=True,
                                                            beta_rule=beta_rule))
    m = result.seeds[0].metrics
    assert m["num_clips"] == 9 * 2 + 3 * 3 and m["rule"] == "plain" and m["calibrated_beta"] is not None
    assert m["calibrated_beta_rule"] == beta_rule
    stage2 = json.loads((tmp_path / "p" / "seed_0" / "stage2" / "config.json").read_text())["train"]
    assert stage2["method"] == method and stage2["epochs"] == result.seeds[0].best_epoch
    assert stage2["head"]["n_batches"] == 4 and stage2["lr"] == 1e-3  # the peers' training, our override
