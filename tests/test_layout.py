"""Contracts of the repository layout: pinned dependencies, the files CI needs, module sizes (the CLI: test_cli)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

LAYOUT = ("cli.py", "common", "extract", "features", "fusion", "eval", "curate", "tests", "environment.yml",
          "pyproject.toml", "Makefile", "README.md", ".ci/run", ".gitignore", "BENCHMARKS.md")
# The house's size limits (docs/ARCHITECTURE.md): a module that grows past them is split by what it does.
MODULE_LINES = 600
LIMITS = {"cli.py": 800, "fusion/trainer.py": 500}


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
    for package in ROOMS:
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
    assert {".venv", "runs/", "__pycache__/"} <= ignored  # ".venv" without a slash: a symlinked venv too


def test_ruff_is_clean():
    """The style rules (pyproject.toml [tool.ruff]) hold for the whole tree."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_outgrows_its_room():
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
             for package in ROOMS
             for path in (ROOT / package).glob("*.py")}
    sizes["cli.py"] = len((ROOT / "cli.py").read_text(encoding="utf-8").splitlines())
    too_long = {name: lines for name, lines in sizes.items() if lines > LIMITS.get(name, MODULE_LINES)}
    assert too_long == {}


# The rooms in import order (docs/ARCHITECTURE.md): each imports only rooms before it, plus the one exception.
ROOMS = ("common", "extract", "features", "fusion", "curate", "eval")
ALLOWED_BACKWARDS = {("fusion", "eval.metrics")}  # the trainer validates with the metrics that test


def test_imports_flow_one_way():
    import ast

    backwards = []
    for position, room in enumerate(ROOMS):
        for path in sorted((ROOT / room).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [f"{node.module}.{alias.name}" for alias in node.names]
                         if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                for name in names:
                    target = name.split(".")[0]
                    allowed = any(room == exempt and (name + ".").startswith(module + ".")
                                  for exempt, module in ALLOWED_BACKWARDS)
                    if target in ROOMS[position + 1:] and not allowed:
                        backwards.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert backwards == []
