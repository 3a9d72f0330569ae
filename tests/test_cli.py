"""The command line as a user meets it: every command's --help, wrong usage, and the line between user errors
(one line, exit 1, in the command's own flags) and bugs (a traceback)."""

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import cli
from common.errors import InputError

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("extract", "features", "fusion", "eval", "curate")
# Commands the design card and the issues name; every command of the group is listed by --help, these among them.
REQUIRED_COMMANDS = ("make-synthetic", "extract", "train-fusion", "zeroshot", "inspect", "relatedness", "report",
                     "curate", "protocol", "demo", "import-avca")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command under `group`, depth first, as its argv path."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
    return found


COMMANDS = _commands(cli.cli)


def _command(path: tuple[str, ...]) -> click.Command:
    command = cli.cli
    for name in path:
        command = command.commands[name]
    return command


def _run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_top_level_help_lists_every_command():
    result = _run_python("cli.py", "--help")
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^  (\S+)", result.stdout.split("Commands:")[1], flags=re.MULTILINE))
    assert set(cli.cli.commands) == listed and set(REQUIRED_COMMANDS) <= listed


def test_help_does_not_import_heavy_libraries():
    # Commands import torch / zarr / dask inside their bodies so that `--help` stays fast.
    heavy = "import sys, cli; print(sorted(m for m in ('torch', 'zarr', 'dask') if m in sys.modules))"
    result = _run_python("-c", heavy)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_command_tree_is_what_the_readme_documents():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    leaves = [path for path in COMMANDS if not isinstance(cli.cli.commands[path[0]], click.Group) or len(path) > 1]
    assert len(leaves) >= 14
    undocumented = [" ".join(path) for path in leaves if f"cli.py {' '.join(path)}" not in readme]
    assert undocumented == []


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_documents_its_options(path):
    command = _command(path)
    result = CliRunner().invoke(cli.cli, [*path, "--help"])
    assert result.exit_code == 0 and result.output.startswith("Usage: "), result.output
    assert (command.help or "").strip(), f"{' '.join(path)} has no docstring"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help text"
            assert param.opts[0] in result.output


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_a_usage_error(path):
    result = CliRunner().invoke(cli.cli, [*path, "--no-such-option"])
    assert result.exit_code == 2 and "No such option '--no-such-option'" in result.output


def test_missing_required_option_names_it():
    result = CliRunner().invoke(cli.cli, ["extract", "--out", "somewhere.zarr"])
    assert result.exit_code == 2 and "Missing option '--videos'" in result.output


def test_options_built_from_config_fields_show_the_fields_defaults():
    built = 0
    for path in COMMANDS:
        command = _command(path)
        context = click.Context(command)
        for option in (p for p in command.params if isinstance(p, cli._FieldOption)):
            built += 1
            field = {f.name: f for f in dataclasses.fields(option.config)}[option.name]
            assert option.help and option.help.split()[0] in field.metadata["help"], option.opts
            help_text = " ".join(option.get_help_record(context)[1].split())
            if field.default is dataclasses.MISSING:
                # required, or None where the command may take it from a recorded config
                assert (option.required or option.default is None) and "[default:" not in help_text, option.opts
                continue
            value = field.default
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            if value is True:
                shown = option.opts[0].removeprefix("--")
            if value is None or value is False or (isinstance(value, str | tuple) and not value):
                assert "[default:" not in help_text, option.opts
            else:
                assert f"[default: {shown}]" in help_text, (option.opts, help_text)
            # the option's own default is the field's, or None where the command starts from a recorded config
            assert option.default is None or option.default in (value, shown), option.opts
    assert built >= 60


def test_views_help_says_what_it_counts():
    text = CliRunner().invoke(cli.cli, ["extract", "--help"]).output
    assert "--temporal-views" in text and "temporal views" in text and "--views " not in text


def test_user_errors_name_the_commands_flags(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    result = CliRunner().invoke(cli.cli, ["train-fusion", "--store", str(tmp_path / "missing.zarr"),
                                          "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_peer_text_order_on_a_source_that_is_not_an_avca_table_is_one_line(tmp_path):
    store = tmp_path / "store.zarr"
    store.mkdir()
    result = CliRunner().invoke(cli.cli, ["train-fusion", "--store", str(store), "--out", str(tmp_path / "run"),
                                          "--embeddings", "glove-6b-50d", "--peer-text-order"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("Error: --peer-text-order reproduces how AVCA-GZSL reads its own tables")
    for protocol in ("avca", "mzsl"):  # the protocols hand it to every stage's training
        assert "--peer-text-order" in CliRunner().invoke(cli.cli, ["protocol", protocol, "--help"]).output
    settings = cli._protocol_settings(None, None, None, None, True, None, (), None, None, (), False, (0,), 64, "cpu",
                                      True)
    assert settings["train"] == {"peer_text_order": True}


def test_backticked_fields_become_options():
    command = cli.cli.commands["train-fusion"]
    message = "run: exists; set `resume=True` to continue, or choose another `out`; or `se_target='class'`"
    assert cli._as_options(message, command) == (
        "run: exists; set --resume to continue, or choose another --out; or --se-target class")
    assert cli._as_options("`normalise_embeddings`", command) == "--ablation normalised"
    assert cli._as_options("`not_an_option`", command) == "`not_an_option`"
    zeroshot = cli.cli.commands["zeroshot"]
    assert cli._as_options("`calibrated_stacking` needs `val_split`", zeroshot) == (
        "--calibrated-stacking needs --val-split")
    mzsl = cli.cli.commands["protocol"].commands["mzsl"]  # training fields without their own flag: --option
    assert cli._as_options("or set `missing='skip'` to drop them", mzsl) == "or set --option missing=skip to drop them"
    assert cli._as_options("or set `allow_overlap=True` to run anyway", mzsl) == "or set --allow-overlap to run anyway"


def _command_raising(error: Exception) -> click.Command:
    @click.command()
    @cli._user_errors
    def command():
        raise error

    return command


def test_input_errors_are_one_line_but_bugs_keep_their_traceback():
    told = CliRunner().invoke(_command_raising(InputError("clips.csv: no 'path' column")), [])
    assert told.exit_code == 1 and told.output == "Error: clips.csv: no 'path' column\n"
    missing = CliRunner().invoke(_command_raising(FileNotFoundError("store.zarr does not exist")), [])
    assert missing.exit_code == 1 and missing.output == "Error: store.zarr does not exist\n"
    for bug in (ValueError("shapes (2, 3) and (4,) differ"), KeyError("video_tokens"), TypeError("None")):
        result = CliRunner().invoke(_command_raising(bug), [])
        assert result.exit_code == 1 and result.exception is bug and "Error:" not in result.output


def _raised_texts(path: Path) -> list[tuple[int, str]]:
    """The string literals (f-string parts included) of every `raise` in a module."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for part in ast.walk(node.exc):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    texts.append((node.lineno, part.value))
    return texts


def test_library_errors_name_config_fields_not_cli_flags():
    flag = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
    offenders = [f"{path.relative_to(REPO)}:{line}: {text!r}"
                 for package in LIBRARY for path in sorted((REPO / package).rglob("*.py"))
                 for line, text in _raised_texts(path) if flag.search(text)]
    assert offenders == []


def _one_error_line(arguments: list[str]) -> str:
    result = CliRunner().invoke(cli.cli, arguments)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("given, message", [
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "inf"], "--lr must be a finite number, got inf"),
    (["--weight-decay", "-inf"], "--weight-decay must be a finite number, got -inf"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 2**32 - 1 (a seed), got -1"),
    (["--seed", str(2**64)], f"--seed must be a whole number from 0 to 2**32 - 1 (a seed), got {2**64}"),
    (["--option", "compile=yes"], "`compile` must be true or false, got 'yes'"),
    (["--option", "batch_size=abc"], "--batch-size must be a whole number, got 'abc'"),
    (["--option", "mlm_mask_probability=NaN"], "`mlm_mask_probability` must be a finite number, got nan"),
    (["--option", "val_split_seed=-3"], "`val_split_seed` must be a whole number from 0 to 2**32 - 1"),
])
def test_values_that_do_not_fit_their_setting_are_one_line(tmp_path, given, message):
    line = _one_error_line(["train-fusion", "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "run"),
                            *given])
    assert message in line
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_a_value_of_the_wrong_type_is_one_line_naming_the_file_and_the_field(tmp_path):
    config = tmp_path / "config.json"
    for recorded, field, expected in (({"train": {"epochs": "abc"}}, "epochs", "a whole number"),
                                      ({"lr": "fast"}, "lr", "a finite number"),
                                      ({"train": {"fusion": {"width": [1]}}}, "width", "a whole number"),
                                      ({"train": {"train_splits": "seen"}}, "train_splits", "a list")):
        config.write_text(json.dumps(recorded))
        line = _one_error_line(["train-fusion", "--config", str(config), "--store", str(tmp_path / "s.zarr"),
                                "--out", str(tmp_path / "run")])
        assert line.startswith(f"Error: {config}: field {field!r} must be {expected}, got "), line


@pytest.mark.parametrize("command", [["demo", "--seeds", "0,0"], ["ablate", "--seeds", "1,2,1"],
                                     ["protocol", "avca", "--dataset", "UCF", "--seeds", "3,3"],
                                     ["protocol", "mzsl", "--seeds", "0,1,0"]])
def test_repeated_seeds_are_refused_everywhere(tmp_path, command):
    store = tmp_path / "store.zarr"
    store.mkdir()
    places = {"demo": ["--out", str(tmp_path / "demo")], "ablate": ["--store", str(store), "--out", str(tmp_path)],
              "avca": ["--store", str(store), "--out", str(tmp_path / "p")],
              "mzsl": ["--train-store", str(store), "--eval-store", str(store), "--groups", str(_groups(tmp_path)),
                       "--out", str(tmp_path / "p")]}
    line = _one_error_line([*command, *places[command[1] if command[0] == "protocol" else command[0]]])
    assert "--seeds must be distinct seeds" in line and "given more than once" in line


def _groups(tmp_path: Path) -> Path:
    path = tmp_path / "groups.csv"
    path.write_text("class_name,group\na,easy\n")
    return path


@pytest.mark.parametrize("command", [["make-synthetic", "OUT", "--seed", "-5"],
                                     ["curate", "sheets", "--filmstrips", "INDEX", "--reviewers", "a,b", "--out-dir",
                                      "OUT", "--seed", str(2**40)]])
def test_seeds_out_of_range_are_one_line_in_every_command(tmp_path, command):
    index = tmp_path / "index.csv"
    index.write_text("x\n")
    arguments = [str(tmp_path / "out") if a == "OUT" else str(index) if a == "INDEX" else a for a in command]
    assert "--seed must be a whole number from 0 to 2**32 - 1 (a seed)" in _one_error_line(arguments)
