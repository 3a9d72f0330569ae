"""Contracts of the repository layout: the CLI's commands and help, pinned dependencies, the files CI needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

import cli

ROOT = Path(__file__).resolve().parents[1]

# Commands the design card and the issues name (STYLE.md "CLI"); add `protocol` when it lands.
# Every command of the click group must be listed by --help, and these must be among them.
REQUIRED_COMMANDS = ("make-synthetic", "extract", "train-fusion", "zeroshot", "inspect", "relatedness", "report",
                     "curate", "protocol", "demo", "import-avca")

LAYOUT = ("cli.py", "extract", "features", "fusion", "eval", "tests", "environment.yml", "pyproject.toml", "Makefile",
          "README.md", ".ci/run", ".gitignore", "BENCHMARKS.md")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command under `group`, depth first, as (argv path, command)."""
    found = []
    for name, command in sorted(group.commands.items()):
        found.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
    return found


def test_top_level_help_lists_every_command():
    result = subprocess.run([sys.executable, "cli.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    listed = set(re.findall(r"^  (\S+)", result.stdout.split("Commands:")[1], flags=re.MULTILINE))
    assert set(cli.cli.commands) == listed
    assert set(REQUIRED_COMMANDS) <= listed


def test_help_does_not_import_heavy_libraries():
    # Commands import torch / zarr / dask inside their bodies so that `--help` stays fast.
    code = "import sys, cli; print(sorted(m for m in ('torch', 'zarr', 'dask') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("path, command", _commands(cli.cli), ids=[" ".join(p) for p, _ in _commands(cli.cli)])
def test_every_command_documents_its_options(path, command):
    result = CliRunner().invoke(cli.cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"{' '.join(path)} has no docstring"
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help text"
            assert param.opts[0] in result.output


def _pins_pyproject() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return project["dependencies"] + [dep for deps in project.get("optional-dependencies", {}).values()
                                      for dep in deps]


def _pins_environment() -> list[str]:
    environment = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip = [entry["pip"] for entry in environment["dependencies"] if isinstance(entry, dict) and "pip" in entry]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return pip[0]


def _normalised(requirement: str) -> str:
    name, _, rest = re.match(r"^\s*([A-Za-z0-9_.\-]+(\[[^\]]*\])?)(.*)$", requirement).group(1, 2, 3)
    return re.sub(r"[-_.]+", "-", name.lower()) + rest.replace(" ", "")


def test_pins_agree():
    pyproject = sorted(_normalised(r) for r in _pins_pyproject())
    environment = sorted(_normalised(r) for r in _pins_environment())
    assert pyproject, "pyproject.toml declares no dependencies"
    assert pyproject == environment


def test_layout_present():
    missing = [name for name in LAYOUT if not (ROOT / name).exists()]
    assert not missing, f"missing from the repository root: {missing}"
    for package in ("extract", "features", "fusion", "eval"):
        assert (ROOT / package / "__init__.py").is_file(), package


def test_ci_runs_make_test():
    run = ROOT / ".ci" / "run"
    assert os.access(run, os.X_OK), ".ci/run must be executable"
    commands = [line.strip() for line in run.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "make test" in commands
    assert re.search(r"^test:", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.MULTILINE)


def test_gitignore_keeps_generated_data_out():
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()}
    assert {".venv/", "runs/", "__pycache__/"} <= ignored


def test_ruff_is_clean():
    """The style rules (pyproject.toml [tool.ruff]) hold for the whole tree."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
