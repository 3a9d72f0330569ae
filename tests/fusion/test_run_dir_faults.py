"""fusion.run_dir after a fault: a full disk while a checkpoint is written, a damaged checkpoint, a junk config.json,
a log line cut off by a kill. Each test does the damage itself and runs the command a user would run next."""

import errno
import io
import json
import logging
import pathlib

import pytest
import torch
from click.testing import CliRunner

import cli
from fusion import trainer
from fusion.config import FusionConfig, TrainConfig
from fusion.trainer import train

TINY = FusionConfig(width=32, num_blocks=1, num_heads=2, num_fusion_tokens=2, dropout=0.1)
_TIMING = ("samples_per_s", "data_time_s", "step_time_s", "epoch_time_s")


def _config(store, out, vectors_file, **overrides) -> TrainConfig:
    values = dict(store=store.path, out=out, fusion=TINY, embeddings=f"word2vec:{vectors_file}", epochs=2,
                  batch_size=8, lr=3e-3, warmup_epochs=0.0, val_unseen_fraction=0.25, progress=False,
                  prefetch_batches=0)
    values.update(overrides)
    return TrainConfig(**values)


def _train_args(store, run, vectors_file) -> list[str]:
    """train-fusion's options for `_config`'s run."""
    args = ["train-fusion", "--store", str(store.path), "--out", str(run), "--embeddings", f"word2vec:{vectors_file}",
            "--epochs", "2", "--batch-size", "8", "--lr", "0.003", "--warmup-epochs", "0", "--no-progress"]
    for key, value in (("val_unseen_fraction", 0.25), ("prefetch_batches", 0), ("width", 32), ("num_blocks", 1),
                       ("num_heads", 2), ("num_fusion_tokens", 2), ("dropout", 0.1)):
        args += ["--option", f"{key}={value}"]
    return args


def _resume(run, store, vectors_file):
    return CliRunner().invoke(cli.cli, [*_train_args(store, run, vectors_file), "--resume"])


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for part in parts:
        assert part in lines[0], (part, lines[0])


def _strip(lines):
    return [{k: v for k, v in line.items() if k not in _TIMING} for line in lines]


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_store, vectors_file):
    """A finished two-epoch run with validation (best.pt and last.pt), copied by each test that damages it."""
    run = tmp_path_factory.mktemp("runs") / "run"
    train(_config(synthetic_store, run, vectors_file))
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    import shutil

    return pathlib.Path(shutil.copytree(finished_run, tmp_path / "run"))


def test_a_full_disk_while_writing_a_checkpoint_names_the_file_and_keeps_the_previous_one(
        synthetic_store, vectors_file, tmp_path, monkeypatch):
    open_path = pathlib.Path.open
    opened = []

    class FullDisk:
        """A file on a disk that fills up after `room` bytes (what torch.save writes to)."""

        def __init__(self, handle, room: int) -> None:
            self.handle, self.room = handle, room

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

        def write(self, data) -> int:
            # as a buffered file on a full disk: a large write fails, small ones still land in the buffer
            if len(data) > self.room and len(data) >= io.DEFAULT_BUFFER_SIZE:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.room = max(0, self.room - len(data))
            return self.handle.write(data)

        def flush(self) -> None:
            self.handle.flush()

    def full_disk_at_epoch_2(path, mode="r", *args, **kwargs):  # last.pt of epoch 2: the disk fills part-way
        handle = open_path(path, mode, *args, **kwargs)
        if path.name.startswith(".last.pt.tmp-"):
            opened.append(path)
            if len(opened) == 2:
                return FullDisk(handle, room=100_000)
        return handle

    monkeypatch.setattr(pathlib.Path, "open", full_disk_at_epoch_2)
    run = tmp_path / "run"
    args = _train_args(synthetic_store, run, vectors_file)
    result = CliRunner().invoke(cli.cli, args)
    _one_line_error(result, "No space left on device", str(run / "last.pt"))
    assert "unexpected pos" not in result.output
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1  # the previous checkpoint, whole
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(pathlib.Path, "open", open_path)
    resumed = CliRunner().invoke(cli.cli, args + ["--resume"])  # the disk has room again
    assert resumed.exit_code == 0, resumed.output
    assert [line["epoch"] for line in _log(run)] == [1, 2]


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_a_truncated_checkpoint_of_a_finished_run_is_not_resumed_as_a_success(run_copy, synthetic_store, vectors_file,
                                                                               name):
    path = run_copy / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _one_line_error(_resume(run_copy, synthetic_store, vectors_file), str(path), "cannot read as a fusion checkpoint",
                    "train the run again" if name == "best.pt" else "delete it")


def test_a_best_pt_of_another_epoch_is_refused_on_resume(run_copy, synthetic_store, vectors_file):
    best = torch.load(run_copy / "best.pt", weights_only=True)["epoch"]
    last = torch.load(run_copy / "last.pt", weights_only=True)
    other = 2 if best == 1 else 1
    torch.save({**last, "epoch": other}, run_copy / "best.pt")  # a best.pt of another epoch than the records name
    _one_line_error(_resume(run_copy, synthetic_store, vectors_file), str(run_copy / "best.pt"),
                    f"holds epoch {other}")


def test_zeroshot_names_a_truncated_best_pt(run_copy, synthetic_store):
    path = run_copy / "best.pt"
    path.write_bytes(path.read_bytes()[:100])
    result = CliRunner().invoke(cli.cli, ["zeroshot", "--run", str(run_copy), "--store", str(synthetic_store.path)])
    _one_line_error(result, str(path), "damaged")


@pytest.mark.parametrize("text, problem", [
    ('{"train": {', "not JSON"),
    ('["a", "list"]', "a JSON list, not an object"),
    (None, "its training config does not load"),  # epochs written as a string
    ('{"train": {}, "dims": {}, "decision_rule": 3}', "decision_rule is not a str"),
])
def test_a_junk_config_json_is_one_line_naming_it(run_copy, synthetic_store, vectors_file, text, problem):
    path = run_copy / "config.json"
    if text is None:
        record = json.loads(path.read_text())
        record["train"]["epochs"] = "two"
        text = json.dumps(record)
    path.write_text(text)
    _one_line_error(_resume(run_copy, synthetic_store, vectors_file), str(path), problem)
    result = CliRunner().invoke(cli.cli, ["zeroshot", "--run", str(run_copy), "--store", str(synthetic_store.path)])
    if "training config" in problem:  # zeroshot reads only the decision rule of config.json (the head's config
        assert result.exit_code == 0, result.output  # comes from the checkpoint)
    else:
        _one_line_error(result, str(path), problem)


def test_a_half_written_log_line_is_dropped_on_resume(finished_run, synthetic_store, vectors_file, tmp_path,
                                                      monkeypatch, caplog):
    save = trainer.save_epoch

    def killed_while_logging_epoch_2(out, log_line, payload, is_best):
        if log_line["epoch"] == 2:
            text = json.dumps(log_line)
            with (out / "log.jsonl").open("a", encoding="utf-8") as log:
                log.write(text[: len(text) // 2])
            raise KeyboardInterrupt
        save(out, log_line, payload, is_best)

    monkeypatch.setattr(trainer, "save_epoch", killed_while_logging_epoch_2)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train(_config(synthetic_store, cut, vectors_file))
    monkeypatch.setattr(trainer, "save_epoch", save)
    with caplog.at_level(logging.WARNING, logger="fusion.run_dir"):
        train(_config(synthetic_store, cut, vectors_file, resume=True))
    assert any("leaving out its last line" in r.getMessage() for r in caplog.records)
    assert _strip(_log(cut)) == _strip(_log(finished_run))


def test_a_broken_line_inside_the_log_is_one_line_naming_it(run_copy, synthetic_store, vectors_file):
    path = run_copy / "log.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("not json\n" + "\n".join(lines[1:]) + "\n")
    _one_line_error(_resume(run_copy, synthetic_store, vectors_file), f"{path} line 1: not a log line")
