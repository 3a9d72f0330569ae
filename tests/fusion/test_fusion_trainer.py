import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from common.errors import InputError
from common.files import write_json
from common.threads import set_requested_threads
from eval.metrics import EvalResult
from features.lease import LeaseHeldError, lease_path
from features.store import TokenStore
from fusion import run_dir, trainer
from fusion.config import ABLATIONS, FusionConfig, TrainConfig, apply_ablations, train_config_from_options
from fusion.curves import training_curves_figure
from fusion.epoch import check_finite
from fusion.plan import plan_training
from fusion.trainer import train
from text.class_embeddings import MissingWordsError

TINY = FusionConfig(width=32, num_blocks=1, num_heads=2, num_fusion_tokens=2, dropout=0.1,
                    se_weights=(0.25, 0.1), mlm_weights=(0.5, 0.25), weight_milestones_epochs=(3,))
REPO = Path(__file__).resolve().parents[2]
_TIMING = ("samples_per_s", "data_time_s", "step_time_s", "epoch_time_s")


def _config(store, out, vectors_file, **overrides) -> TrainConfig:
    values = dict(store=store.path, out=out, fusion=TINY, embeddings=f"word2vec:{vectors_file}", epochs=4,
                  batch_size=8, lr=3e-3, warmup_epochs=0.5, val_unseen_fraction=0.25, progress=False)
    values.update(overrides)
    return TrainConfig(**values)


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_run_directory_and_every_loss_decreases(synthetic_store, vectors_file, tmp_path, kit):
    summary = train(_config(synthetic_store, tmp_path / "run", vectors_file, epochs=8, select_by="gzsl_hm"))
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "class_embeddings.npz", "classes.json",
                                                     "config.json", "last.pt", "log.jsonl", "training_curves.png"]
    lines = _log(run)
    losses, scores = training_curves_figure(lines, "run").axes
    assert [line.get_label() for line in losses.get_lines()] == ["total (weighted)", "TASK", "SE", "MLM"]
    assert [line.get_label() for line in scores.get_lines()] == ["ZSL", "GZSL HM, raw", "GZSL HM, calibrated",
                                                                 f"best epoch ({summary.best_epoch})"]
    assert list(losses.get_lines()[1].get_xdata()) == list(range(1, 9))
    results = [EvalResult.from_json(line["val"]) for line in lines]
    assert scores.get_lines()[0].get_ydata()[-1] == pytest.approx(100 * results[-1].zsl)
    assert [line["epoch"] for line in lines] == list(range(1, 9)) and lines[-1]["step"] == summary.epochs * 5
    for part in ("loss_task", "loss_se", "loss_mlm"):
        assert lines[-1][part] < 0.8 * lines[0][part], part
    assert lines[0]["weight_se"] == 0.25 and lines[-1]["weight_se"] == 0.1 and lines[-1]["weight_mlm"] == 0.25
    assert {"lr", "val", "samples_per_s", "data_time_s", "step_time_s"} <= set(lines[0])
    assert set(lines[0]["val"]) >= {"zsl", "gzsl_s", "gzsl_u", "gzsl_hm", "selection"}
    assert lines[0]["val"]["selection"] == "gzsl_hm"  # the `EvalResult` field that scores the epoch
    config = json.loads((run / "config.json").read_text())
    assert config["decision_rule"] == "kinetics" and config["train"]["fusion"]["width"] == 32
    classes = json.loads((run / "classes.json").read_text())
    held = classes["validation"]["unseen_classes"]
    assert len(held) == 2 and set(held) <= set(kit.SEEN) and not set(held) & set(classes["classes"])
    assert classes["classes"] == sorted(set(kit.SEEN) - set(held)) and classes["mlm_vocabulary"][:4] == [
        "<pad>", "<mask>", "<unk>", "<cls>"]
    assert not set(kit.UNSEEN) & set(classes["validation"]["seen_classes"] + held)  # test classes never validate
    assert classes["embedding"]["spec"].startswith("word2vec:") and len(classes["kinetics_labels"]) == 400
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["epoch"] == summary.best_epoch
    assert EvalResult.from_json(best["metrics"]).gzsl_hm == pytest.approx(summary.best_score)
    ranks = [(r.gzsl_hm, r.zsl) for r in results]  # HM, ties broken by ZSL
    assert summary.best_epoch == 1 + ranks.index(max(ranks)) and summary.best_score == pytest.approx(max(ranks)[0])
    assert 0 <= results[0].calibrated_beta <= 3 and results[0].calibrated_gzsl_hm >= results[0].gzsl_hm
    with np.load(run / "class_embeddings.npz") as arrays:
        assert arrays["class_embeddings"].shape == (8, 16) and arrays["kinetics_embeddings"].shape == (400, 16)


@pytest.mark.slow
def test_zero_shot_beats_chance_on_the_learnable_store(synthetic_store, vectors_file, tmp_path, kit):
    # 4 truly unseen classes validate here through --val-split... of a second store that holds them as "val".
    val = kit.make_store(tmp_path / "val.zarr", vectors_file, seen=[], unseen=[],
                     extra_splits={"val": ["playing piano", "cat meowing", "riding horse", "folk dancing"]})
    train_store = kit.make_store(tmp_path / "train.zarr", vectors_file, unseen=[])
    config = _config(train_store, tmp_path / "run", vectors_file, val_unseen_fraction=0.0, val_store=val.path,
                     epochs=6, fusion=FusionConfig(width=32, num_blocks=1, num_heads=2, dropout=0.0,
                                                    se_target="class", se_weights=(1.0,), mlm_weights=(0.1,),
                                                    weight_milestones_epochs=()))
    summary = train(config)
    assert summary.best_metric == "zsl" and summary.best_score >= 0.5  # chance: 1 / 4


@pytest.mark.slow
def test_resume_equals_uninterrupted(synthetic_store, vectors_file, tmp_path, crash_in_epoch):
    train(_config(synthetic_store, tmp_path / "whole", vectors_file))
    crash_in_epoch(3)
    with pytest.raises(RuntimeError, match="power cut"):
        train(_config(synthetic_store, tmp_path / "cut", vectors_file))
    crash_in_epoch(None)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["epoch"] == 2
    train(_config(synthetic_store, tmp_path / "cut", vectors_file, resume=True))

    for name in ("last.pt", "best.pt"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        cut = torch.load(tmp_path / "cut" / name, weights_only=True)
        assert whole["epoch"] == cut["epoch"] and whole["step"] == cut["step"] and whole["best"] == cut["best"]
        for key, tensor in whole["model"].items():
            assert torch.equal(tensor, cut["model"][key]), key
        assert whole["optimizer"]["state"][0]["exp_avg"].equal(cut["optimizer"]["state"][0]["exp_avg"])
        assert whole["scheduler"] == cut["scheduler"]

    def strip(lines):
        return [{k: v for k, v in line.items() if k not in _TIMING} for line in lines]

    assert strip(_log(tmp_path / "whole")) == strip(_log(tmp_path / "cut"))  # epoch 3 logged once


def test_resume_refuses_other_settings_or_store(synthetic_store, vectors_file, tmp_path, kit):
    run = tmp_path / "run"
    train(_config(synthetic_store, run, vectors_file, epochs=1))
    with pytest.raises(ValueError, match="lr"):
        train(_config(synthetic_store, run, vectors_file, epochs=1, lr=1e-3, resume=True))
    with pytest.raises(ValueError, match="architecture differs: width"):
        train(_config(synthetic_store, run, vectors_file, resume=True, fusion=FusionConfig(
            width=64, num_blocks=1, num_heads=2, num_fusion_tokens=2, se_weights=(0.25, 0.1),
            mlm_weights=(0.5, 0.25), weight_milestones_epochs=(3,))))
    with pytest.raises(ValueError, match=r"other settings.*\['store'\]"):
        train(_config(kit.make_store(tmp_path / "o.zarr", vectors_file), run, vectors_file, epochs=1, resume=True))
    # The same path holding other clips since: caught by the recorded classes.
    swap = kit.make_store(tmp_path / "swap.zarr", vectors_file, clips_per_class=2)
    train(_config(swap, tmp_path / "run2", vectors_file, epochs=1))
    shutil.rmtree(swap.path)
    swap = kit.make_store(swap.path, vectors_file, clips_per_class=2, seen=kit.SEEN[:8] + ["playing piano"],
                          unseen=[])
    with pytest.raises(ValueError, match="different store or class list"):
        train(_config(swap, tmp_path / "run2", vectors_file, epochs=1, resume=True))
    with pytest.raises(FileExistsError, match="`resume=True`"):
        train(_config(synthetic_store, run, vectors_file, epochs=1))
    with pytest.raises(ValueError, match=r"other settings.*\['lr'\]"):  # killed in epoch 1: still the same run
        (run / "last.pt").unlink()
        train(_config(synthetic_store, run, vectors_file, epochs=1, lr=1e-3, resume=True))
    (run / "stray.txt").write_text("not a run's")
    with pytest.raises(FileExistsError, match="stray.txt"):
        train(_config(synthetic_store, run, vectors_file, epochs=1, resume=True))


def test_resume_without_a_checkpoint_starts_the_run(synthetic_store, vectors_file, tmp_path, caplog):
    train(_config(synthetic_store, tmp_path / "fresh", vectors_file, epochs=1, resume=True))  # a scheduler's rerun
    assert "nothing to resume" in caplog.text and torch.load(tmp_path / "fresh" / "last.pt")["epoch"] == 1
    run = tmp_path / "killed"
    train(_config(synthetic_store, run, vectors_file, epochs=1))
    (run / "last.pt").rename(run / ".last.pt.tmp-99")  # a kill while the first checkpoint was written
    train(_config(synthetic_store, run, vectors_file, epochs=1, resume=True))
    assert "before its first epoch ended" in caplog.text and [line["epoch"] for line in _log(run)] == [1]
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "class_embeddings.npz", "classes.json",
                                                     "config.json", "last.pt", "log.jsonl", "training_curves.png"]


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_equals_uninterrupted(synthetic_store, vectors_file, tmp_path):
    """`train-fusion --resume` after SIGKILLs in the first epoch (no last.pt yet) and at random moments."""
    config_file = tmp_path / "train.json"
    write_json(config_file, _config(synthetic_store, tmp_path / "unused", vectors_file, epochs=3).to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def command(out, *extra):
        return [sys.executable, str(REPO / "cli.py"), "train-fusion", "--config", str(config_file), "--out", str(out),
                *extra]

    started = time.monotonic()
    subprocess.run(command(tmp_path / "whole"), env=env, check=True, capture_output=True, timeout=120)
    whole_s = time.monotonic() - started
    run, rng = tmp_path / "killed", np.random.default_rng(16)
    # When to kill: in the first epoch (the folder is there, no checkpoint yet), at a random moment of a whole run,
    # and a random moment after the first checkpoint.
    kills = [("config.json", 0.0), (None, rng.uniform(0.2, 0.9) * whole_s), ("last.pt", rng.uniform(0.0, 0.3))]
    for file, delay in kills:
        process = subprocess.Popen(command(run, "--resume"), env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while process.poll() is None and file is not None and not (run / file).is_file():
            time.sleep(0.002)
        while process.poll() is None and time.monotonic() < started + delay:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if file is not None:  # each kill landed where it was meant to (the random one may land anywhere)
            assert process.returncode == -signal.SIGKILL and (run / "last.pt").exists() == (file == "last.pt")
    finished = subprocess.run(command(run, "--resume"), env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    for name in ("last.pt", "best.pt"):
        whole = torch.load(tmp_path / "whole" / name, weights_only=True)
        cut = torch.load(run / name, weights_only=True)
        assert (whole["epoch"], whole["step"], whole["best"]) == (cut["epoch"], cut["step"], cut["best"])
        for key, tensor in whole["model"].items():
            assert torch.equal(tensor, cut["model"][key]), key
    assert [line["epoch"] for line in _log(run)] == [1, 2, 3]


def test_one_training_per_run_folder_and_a_killed_holders_lease_is_taken_over(synthetic_store, vectors_file,
                                                                                tmp_path):
    config = _config(synthetic_store, tmp_path / "run", vectors_file, epochs=1)
    holder = subprocess.Popen(  # another process writing the run folder (a training would do the same)
        [sys.executable, "-c", "import sys, time\nfrom fusion.run_dir import RunLease\nwith RunLease(sys.argv[1]):\n"
         "    print('held', flush=True)\n    time.sleep(120)", str(config.out)], cwd=REPO, stdout=subprocess.PIPE,
        text=True)
    write_json(tmp_path / "c.json", config.to_dict())
    try:
        assert holder.stdout.readline() == "held\n"
        for second in (["--resume"], []):  # a resume or a new run into the same folder
            refused = CliRunner().invoke(cli.cli, ["train-fusion", "--config", str(tmp_path / "c.json"), *second])
            assert refused.exit_code == 1 and refused.output.count("\n") == 1, refused.output
            assert refused.output.startswith(f"Error: {config.out.resolve()}: another training is running on this "
                                             f"run folder (host {socket.gethostname()}, pid {holder.pid}, since ")
            assert refused.output.endswith("let it finish, or train into another --out (its process runs on this "
                                           "host: if it dies, the lease is taken over at once)\n")
        with pytest.raises(LeaseHeldError):  # the workflows' way in (demo, ablate) neither judges nor deletes
            trainer.train_or_reuse(config)
    finally:
        holder.kill()  # SIGKILL: the lease file stays behind, its process gone
        holder.wait()
    assert lease_path(config.out.resolve()).exists() and not config.out.exists()
    assert train(config).epochs == 1  # a dead holder's lease on this host is taken over at once
    assert not lease_path(config.out.resolve()).exists() and (config.out / "last.pt").is_file()


def test_training_progress_in_a_log_file_is_lines_not_bars(synthetic_store, vectors_file, tmp_path, monkeypatch,
                                                             caplog):
    """Standard error to a file, as under a batch scheduler: each epoch's progress is "done / total" lines (an
    interval of 0 s: a line per batch), never bar fragments; the same for a comparison head's epochs."""
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, str(REPO / "cli.py"), "train-fusion", "--store", str(synthetic_store.path), "--out",
             str(tmp_path / "mzst"), "--preset", "demo", "--embeddings", f"word2vec:{vectors_file}", "--epochs", "2",
             "--batch-size", "16", "--val-unseen-fraction", "0"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300,
            env=os.environ | {"MZST_PROGRESS_INTERVAL_S": "0"})
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "%|" not in text and "it/s" not in text

    def counts(epoch, found):
        return [(int(a), int(b)) for a, b in re.findall(rf"epoch {epoch}/2: (\d+) / (\d+) batches", found)]

    assert counts(1, text) == counts(2, text) == [(1, 4), (2, 4), (3, 4), (4, 4)], text  # 60 clips, 16 a batch
    monkeypatch.setenv("MZST_PROGRESS_INTERVAL_S", "0")  # stderr is captured here, so not a terminal either
    caplog.set_level("INFO", logger="common.progress")
    train(train_config_from_options(dict(store=synthetic_store.path, out=tmp_path / "ale", method="ale", epochs=2,
                                         embeddings=f"word2vec:{vectors_file}", n_batches=3, progress=True,
                                         val_unseen_fraction=0.0)))
    assert counts(1, caplog.text) == counts(2, caplog.text) == [(1, 3), (2, 3), (3, 3)], caplog.text


def test_store_and_class_list_must_agree(synthetic_store, vectors_file, tmp_path, kit):
    listed = tmp_path / "classes.txt"
    listed.write_text("# training classes\n" + "\n".join(kit.SEEN[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"disagree.*'car engine': 6"):
        train(_config(synthetic_store, tmp_path / "a", vectors_file, classes_file=listed, val_unseen_fraction=0.0))
    listed.write_text("\n".join(reversed(kit.SEEN)) + "\n")
    train(_config(synthetic_store, tmp_path / "b", vectors_file, classes_file=listed, val_unseen_fraction=0.0,
                  epochs=1))
    assert json.loads((tmp_path / "b" / "classes.json").read_text())["classes"] == list(reversed(kit.SEEN))


def test_a_label_the_source_cannot_embed_is_named(vectors_file, tmp_path, kit):
    store = kit.make_store(tmp_path / "s.zarr", vectors_file, seen=kit.SEEN[:3] + ["car engine"], unseen=[],
                           clips_per_class=2)
    words = vectors_file.read_text().splitlines()
    kept = [line for line in words[1:] if not line.startswith("engine ")]
    trimmed = tmp_path / "trimmed.txt"
    trimmed.write_text(f"{len(kept)} {words[0].split()[1]}\n" + "\n".join(kept) + "\n")
    with pytest.raises(MissingWordsError, match="'engine' \\(in 'car engine'\\)"):
        train(_config(store, tmp_path / "run", trimmed, val_unseen_fraction=0.0))
    assert not (tmp_path / "run").exists()  # refused before creating the run directory
    args = ["train-fusion", "--store", str(store.path), "--out", str(tmp_path / "run"), "--preset", "demo",
            "--embeddings", f"word2vec:{trimmed}", "--epochs", "1", "--val-unseen-fraction", "0", "--no-progress"]
    refused = CliRunner().invoke(cli.cli, args)
    assert refused.exit_code == 1 and "--missing skip" in refused.output and "missing=" not in refused.output
    skipped = CliRunner().invoke(cli.cli, [*args, "--missing", "skip"])
    assert skipped.exit_code == 0, skipped.output
    provenance = json.loads((tmp_path / "run" / "classes.json").read_text())["embedding"]["provenance"]
    assert provenance["missing"] == "skip"


def test_kinetics_target_needs_kinetics_logits(vectors_file, tmp_path, kit):
    store = kit.make_store(tmp_path / "s.zarr", vectors_file, clips_per_class=2,
                       layout={**kit.LAYOUT, "kinetics_classes": 7})
    with pytest.raises(ValueError, match="`se_target='class'`"):
        train(_config(store, tmp_path / "run", vectors_file))
    summary = train(_config(store, tmp_path / "run", vectors_file, epochs=1,
                            fusion=apply_ablations(TINY, ["no-se"])))
    assert summary.epochs == 1
    assert json.loads((tmp_path / "run" / "config.json").read_text())["decision_rule"] == "plain"


def test_validation_never_uses_test_data(synthetic_store, vectors_file, tmp_path, kit):
    with pytest.raises(ValueError, match="test split"):
        train(_config(synthetic_store, tmp_path / "a", vectors_file, val_unseen_fraction=0.0, val_splits=("unseen",)))
    store = kit.make_store(tmp_path / "s.zarr", vectors_file, clips_per_class=2,
                       extra_splits={"val": ["playing piano"], "stage_2_test_seen": ["dog barking"]})
    with pytest.raises(ValueError, match="test-unseen classes"):
        train(_config(store, tmp_path / "b", vectors_file, val_unseen_fraction=0.0, val_splits=("val",)))
    with pytest.raises(ValueError, match=r"test split\(s\) \['stage_2_test_seen'\]"):
        train(_config(store, tmp_path / "c", vectors_file, val_unseen_fraction=0.0,
                      val_splits=("stage_2_test_seen",)))
    leaky = kit.make_store(tmp_path / "leaky.zarr", vectors_file, clips_per_class=2, seen=kit.SEEN + ["playing piano"])
    with pytest.raises(ValueError, match="never be trained on"):
        train(_config(leaky, tmp_path / "d", vectors_file))


def test_validation_split_named_like_test_by_substring_only_is_accepted(vectors_file, tmp_path, kit):
    # the role comes from whole words of the name: "latest" and "contest" hold no word "test"
    store = kit.make_store(tmp_path / "s.zarr", vectors_file, clips_per_class=2,
                           extra_splits={"latest": ["dog barking"], "contest": ["dog barking"]})
    plan = plan_training(_config(store, tmp_path / "a", vectors_file, val_unseen_fraction=0.0,
                                 val_splits=("latest", "contest")))
    assert sorted(set(store.splits[plan.clips.validation.indices].tolist())) == ["contest", "latest"]


@pytest.mark.slow
@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_trains(ablation, synthetic_store, vectors_file, tmp_path):
    config = _config(synthetic_store, tmp_path / "run", vectors_file, epochs=1,
                     fusion=apply_ablations(TINY, [ablation]))
    summary = train(config)
    line = _log(tmp_path / "run")[0]
    assert summary.best_epoch == 1 and np.isfinite(line["loss"])
    assert (line["loss_mlm"] is None) == (ablation in ("concat", "no-text", "no-mlm", "task"))
    assert line["weight_se"] == {"task": 0.0, "eq5": 1.0}.get(ablation, 0.25)


@pytest.mark.slow
def test_best_epoch_by_calibrated_hm(synthetic_store, vectors_file, tmp_path):
    summary = train(_config(synthetic_store, tmp_path / "run", vectors_file, epochs=3, select_by="calibrated_gzsl_hm"))
    results = [EvalResult.from_json(line["val"]) for line in _log(tmp_path / "run")]
    ranks = [(r.calibrated_gzsl_hm, r.zsl) for r in results]
    assert summary.best_metric == "calibrated_gzsl_hm" and summary.best_epoch == 1 + ranks.index(max(ranks))
    with pytest.raises(ValueError, match="select_by"):
        _config(synthetic_store, tmp_path / "x", vectors_file, select_by="hm")


def test_a_run_recorded_with_the_earlier_selection_name_resumes(synthetic_store, vectors_file, tmp_path):
    config = _config(synthetic_store, tmp_path / "run", vectors_file, select_by="calibrated_gzsl_hm")
    recorded = json.loads(json.dumps({**config.to_dict(), "select_by": "gzsl_hm_calibrated"}))  # its config.json
    assert TrainConfig.from_dict(recorded).select_by == "calibrated_gzsl_hm"
    assert run_dir.changed_settings(recorded, config) == []
    assert run_dir.changed_settings(recorded, replace(config, select_by="gzsl_hm")) == ["select_by"]


def test_no_validation_writes_only_last(synthetic_store, vectors_file, tmp_path):
    summary = train(_config(synthetic_store, tmp_path / "run", vectors_file, epochs=1, val_unseen_fraction=0.0))
    assert summary.best_epoch is None and not (tmp_path / "run" / "best.pt").exists()
    assert (tmp_path / "run" / "last.pt").is_file()
    _, scores = training_curves_figure(_log(tmp_path / "run"), "run").axes
    assert not scores.get_lines() and "no validation split" in scores.texts[0].get_text()
    assert (tmp_path / "run" / "training_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_train_fusion(synthetic_store, vectors_file, tmp_path):
    runner = CliRunner()
    args = ["train-fusion", "--store", str(synthetic_store.path), "--out", str(tmp_path / "run"), "--preset", "demo",
            "--embeddings", f"word2vec:{vectors_file}", "--epochs", "1", "--batch-size", "16",
            "--val-unseen-fraction", "0.25", "--ablation", "no-mlm", "--no-progress"]
    result = runner.invoke(cli.cli, args)
    assert result.exit_code == 0, result.output
    assert "trained 1 epochs on" in result.output and "best epoch 1 by calibrated_gzsl_hm" in result.output
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert recorded["fusion"]["width"] == 128 and recorded["fusion"]["mlm_weights"] == [0.0]
    assert recorded["batch_size"] == 16 and recorded["lr"] == 1e-4  # unset options keep the config defaults
    again = runner.invoke(cli.cli, ["train-fusion", "--config", str(tmp_path / "run" / "config.json"), "--resume",
                                    "--epochs", "2"])
    assert again.exit_code == 1 and "Error:" in again.output and "epochs" in again.output
    config_json = str(tmp_path / "run" / "config.json")
    resumed = runner.invoke(cli.cli, ["--threads", "1", "train-fusion", "--config", config_json, "--resume",
                                      "--option", "resident_store=on"])  # how it runs may change
    set_requested_threads(None)
    assert resumed.exit_code == 0, resumed.output  # epoch 1 of 1 is done: nothing left, same summary
    odd = runner.invoke(cli.cli, ["train-fusion", "--config", str(tmp_path / "run" / "config.json"), "--out",
                                  str(tmp_path / "odd"), "--option", "lr_batch_scaling=cubic"])
    assert odd.exit_code == 1 and "lr_batch_scaling must be one of" in odd.output
    bad = runner.invoke(cli.cli, ["train-fusion", "--store", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and bad.output.startswith("Error:") and "nowhere" in bad.output


def test_a_copied_run_folder_resumes_where_it_now_is(synthetic_store, vectors_file, tmp_path, monkeypatch):
    save = run_dir.save_checkpoint

    def crash_in_epoch_2(path, payload):
        if payload["epoch"] == 2:
            raise RuntimeError("power cut")
        save(path, payload)

    monkeypatch.setattr(run_dir, "save_checkpoint", crash_in_epoch_2)
    with pytest.raises(RuntimeError, match="power cut"):
        train(_config(synthetic_store, tmp_path / "first", vectors_file, epochs=3))
    monkeypatch.setattr(run_dir, "save_checkpoint", save)
    shutil.copytree(tmp_path / "first", tmp_path / "elsewhere" / "copied")
    shutil.rmtree(tmp_path / "first")
    copied = tmp_path / "elsewhere" / "copied"
    resumed = CliRunner().invoke(cli.cli, ["train-fusion", "--config", str(copied / "config.json"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"run in {copied}" in resumed.output and not (tmp_path / "first").exists()
    assert [line["epoch"] for line in _log(copied)] == [1, 2, 3]
    assert torch.load(copied / "last.pt", weights_only=True)["epoch"] == 3


def test_test_seen_hold_out_is_never_trained_or_validated_on(synthetic_store, vectors_file, tmp_path):
    train(_config(synthetic_store, tmp_path / "run", vectors_file, epochs=1, test_seen_fraction=0.25))
    classes = json.loads((tmp_path / "run" / "classes.json").read_text())
    test_seen = set(classes["test_seen_clip_ids"])
    trained, validated = set(classes["train_clip_ids"]), set(classes["validation"]["clip_ids"])
    assert test_seen and not test_seen & trained and not test_seen & validated
    labels = dict(zip(synthetic_store.clip_ids.tolist(), synthetic_store.labels.tolist(), strict=True))
    splits = dict(zip(synthetic_store.clip_ids.tolist(), synthetic_store.splits.tolist(), strict=True))
    assert {splits[c] for c in test_seen} == {"seen"}
    assert {labels[c] for c in test_seen} == {labels[c] for c in trained | validated if splits[c] == "seen"}
    assert len(trained) == classes["train_clips"]


def test_shuffled_embeddings_control_teaches_other_classes_names(synthetic_store, vectors_file, tmp_path,
                                                                 monkeypatch):
    taught = {}
    original = trainer.ClassTargets.of.__func__

    def spy(cls, *args):
        targets = original(cls, *args)
        taught["embeddings"] = targets.class_embeddings.cpu().numpy()
        return targets

    monkeypatch.setattr(trainer.ClassTargets, "of", classmethod(spy))
    train(_config(synthetic_store, tmp_path / "control", vectors_file, epochs=1, shuffle_class_embeddings=True))
    classes = json.loads((tmp_path / "control" / "classes.json").read_text())
    permutation = np.asarray(classes["shuffled_class_embeddings"])
    assert (permutation != np.arange(len(permutation))).all()
    with np.load(tmp_path / "control" / "class_embeddings.npz") as arrays:
        true = arrays["class_embeddings"]  # the run records the true embeddings; only the targets are permuted
    np.testing.assert_array_equal(taught["embeddings"], true[permutation])


@pytest.mark.gpu
def test_cuda_training_follows_the_cpu_run(synthetic_store, vectors_file, tmp_path):
    # bf16 autocast on the GPU: the same seed and data order give losses within a few percent of the CPU's.
    train(_config(synthetic_store, tmp_path / "cpu", vectors_file, epochs=2, fusion=replace(TINY, dropout=0.0)))
    train(_config(synthetic_store, tmp_path / "cuda", vectors_file, epochs=2, fusion=replace(TINY, dropout=0.0),
                  device="cuda"))
    cpu, cuda = _log(tmp_path / "cpu"), _log(tmp_path / "cuda")
    for part in ("loss_task", "loss_se", "loss_mlm"):
        assert cuda[0][part] == pytest.approx(cpu[0][part], rel=0.05), part
    assert cuda[-1]["loss"] < cuda[0]["loss"] and torch.load(tmp_path / "cuda" / "last.pt", weights_only=True)


@pytest.mark.slow
def test_a_compiled_forward_trains_as_the_eager_one(synthetic_store, vectors_file, tmp_path):
    # torch.compile on the CPU (inductor, ~40 s): fused kernels and their own dropout stream, so close, not equal
    options = dict(epochs=1, val_unseen_fraction=0.0, fusion=apply_ablations(TINY, ["no-text"]), batch_size=64)
    train(_config(synthetic_store, tmp_path / "eager", vectors_file, **options))
    train(_config(synthetic_store, tmp_path / "compiled", vectors_file, compile=True, **options))
    eager, compiled = _log(tmp_path / "eager"), _log(tmp_path / "compiled")
    for part in ("loss_task", "loss_se"):
        assert compiled[0][part] == pytest.approx(eager[0][part], rel=0.05), part


@pytest.mark.gpu
def test_cuda_fast_path_follows_the_streamed_run(synthetic_store, vectors_file, tmp_path):
    # tokens resident on the card, the forward compiled, fused AdamW: the losses of the plain CUDA run (bf16 both)
    options = dict(epochs=2, fusion=replace(TINY, dropout=0.0), device="cuda", log_every_steps=3)
    train(_config(synthetic_store, tmp_path / "plain", vectors_file, resident_store="off", **options))
    train(_config(synthetic_store, tmp_path / "fast", vectors_file, resident_store="on", compile=True, **options))
    plain, fast = _log(tmp_path / "plain"), _log(tmp_path / "fast")
    for part in ("loss_task", "loss_se", "loss_mlm"):
        assert fast[-1][part] == pytest.approx(plain[-1][part], rel=0.05), part


def test_settings_that_change_no_result_do_not_count_as_changed(synthetic_store, vectors_file, tmp_path):
    config = _config(synthetic_store, tmp_path / "run", vectors_file, epochs=1)
    train(config)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    how_it_runs = replace(config, progress=True, prefetch_batches=0, eval_batch_size=7, out=tmp_path / "copy",
                          compile=True, resident_store="on", resident_share=0.2)
    assert run_dir.changed_settings(recorded, how_it_runs) == []
    assert run_dir.changed_settings(recorded, replace(config, lr=1e-3, fusion=replace(TINY, dropout=0.3))) == [
        "lr", "fusion.dropout"]
    # a run recorded before a field existed did what its default does (fields added since: same run)
    older = {k: v for k, v in recorded.items() if k != "schedule_epochs"}
    older["fusion"] = {k: v for k, v in recorded["fusion"].items() if k not in ("fusion_order", "conse_top_t")}
    assert run_dir.changed_settings(older, config) == []
    assert run_dir.changed_settings(older, replace(config, fusion=replace(TINY, fusion_order="sequential"))) == [
        "fusion.fusion_order"]


def test_a_store_extract_is_still_filling_is_named_with_its_counts(vectors_file, tmp_path, kit, caplog):
    store = kit.make_store(tmp_path / "filling.zarr", vectors_file, pending=30)  # the last 30 of 84 clips
    with pytest.raises(InputError) as refused:
        train(_config(store, tmp_path / "refused", vectors_file, epochs=1, require_complete=True))
    assert str(refused.value) == (f"{store.path}: 30 of 84 clips are still pending (54 done, 0 failed): extract has "
                                  "not finished the store; run extract to the end first, or train without "
                                  "`require_complete`")
    assert not (tmp_path / "refused").exists()
    summary = train(_config(store, tmp_path / "run", vectors_file, epochs=1))
    assert summary.train_clips + summary.val_clips == 54  # the done clips only, and said so
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "still pending" in r.getMessage()]
    assert len(warned) == 1 and warned[0].getMessage().startswith(f"{store.path}: 30 of 84 clips are still pending")
    complete = _config(store, tmp_path / "run", vectors_file, epochs=1, require_complete=True)
    assert run_dir.changed_settings(json.loads((tmp_path / "run" / "config.json").read_text())["train"],
                                    complete) == []  # refusing or not changes no result
    result = CliRunner().invoke(cli.cli, ["train-fusion", "--store", str(store.path), "--out", str(tmp_path / "cli"),
                                          "--require-complete", "--epochs", "1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"Error: {store.path}: 30 of 84 clips are still pending")
    assert result.output.endswith("or train without --require-complete\n")


def test_non_finite_tokens_stop_training_naming_the_clip(vectors_file, tmp_path, kit):
    store = kit.make_store(tmp_path / "nan.zarr", vectors_file)
    writable = TokenStore.open(store.path, mode="r+")
    victim = writable.clip_ids.tolist().index("seen/playing guitar/1")
    tokens = {k: v[0] for k, v in writable.read([victim]).items()}
    tokens["video_tokens"][1, 2] = np.nan
    writable.write_clips([victim], [SimpleNamespace(**tokens)])
    with pytest.raises(InputError, match=r"nan.zarr: NaN or inf in video_tokens of clip\(s\) 'seen/playing guitar/1'"):
        train(_config(store, tmp_path / "run", vectors_file, epochs=1, val_unseen_fraction=0.0))


def test_a_device_resident_store_trains_as_the_streamed_one(synthetic_store, vectors_file, tmp_path):
    # The CPU stands in for the device: tokens held in memory once and batched there, against read per batch.
    train(_config(synthetic_store, tmp_path / "streamed", vectors_file, epochs=2, resident_store="off"))
    train(_config(synthetic_store, tmp_path / "resident", vectors_file, epochs=2, resident_store="on"))
    strip = [{k: v for k, v in line.items() if k not in _TIMING} for line in _log(tmp_path / "streamed")]
    assert strip == [{k: v for k, v in line.items() if k not in _TIMING} for line in _log(tmp_path / "resident")]
    assert run_dir.changed_settings(json.loads((tmp_path / "streamed" / "config.json").read_text())["train"],
                                    _config(synthetic_store, tmp_path / "x", vectors_file, epochs=2,
                                            resident_store="on", compile=True)) == []


def test_a_non_finite_loss_stops_the_run_naming_the_batch(kit, vectors_file, tmp_path):
    store = kit.make_store(tmp_path / "bad.zarr", vectors_file, clips_per_class=2)
    bad = int(np.flatnonzero(store.splits == "seen")[3])
    tokens = store.read([bad])
    store = TokenStore.open(store.path, mode="r+")
    store.write_clips([bad], [SimpleNamespace(
        video_tokens=np.full_like(tokens["video_tokens"][0], np.inf), audio_tokens=tokens["audio_tokens"][0],
        kinetics_logits=tokens["kinetics_logits"][0], has_audio=bool(tokens["has_audio"][0]), audio_frames=100)])
    # (InputError: a check of the input tokens before training, where there is one, names the clip as well)
    with pytest.raises((FloatingPointError, InputError), match=re.escape(str(store.clip_ids[bad]))):
        train(_config(store, tmp_path / "run", vectors_file, epochs=1, val_unseen_fraction=0.0, log_every_steps=2))
    # the check itself: the first bad step since the last check names its batch's clips
    finite = SimpleNamespace(clip_ids=np.array(["a", "b", "c"]), path="s.zarr", read=lambda index, fields: {
        name: np.zeros((len(index), 2), dtype=np.float16) for name in fields})  # finite tokens: the run diverged
    check_finite(torch.tensor(-1), {1: torch.tensor([0])}, finite, epoch=1)
    with pytest.raises(FloatingPointError, match=r"epoch 3 step 2: .* clips c, a; their tokens are finite"):
        check_finite(torch.tensor(2), {1: torch.tensor([1]), 2: torch.tensor([2, 0])}, finite, epoch=3)


def test_lr_scaling_rule_for_large_batches(synthetic_store, vectors_file, tmp_path):
    base = _config(synthetic_store, tmp_path, vectors_file, lr=1e-4, batch_size=1024)
    assert trainer.scaled_lr(base) == 1e-4  # "none", the default: lr as given
    assert trainer.scaled_lr(replace(base, lr_batch_scaling="sqrt")) == pytest.approx(4e-4)  # sqrt(1024 / 64)
    assert trainer.scaled_lr(replace(base, lr_batch_scaling="linear", lr_reference_batch=256)) == pytest.approx(4e-4)
