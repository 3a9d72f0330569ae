"""Contracts of the repository layout: pinned dependencies, the files CI needs, module sizes (the CLI: test_cli)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

# The rooms in import order (docs/ARCHITECTURE.md): each imports only rooms before it.
ROOMS = ("common", "extract", "features", "text", "curate", "eval", "fusion", "workflows")
LAYOUT = ("cli.py", *ROOMS, "tests", "environment.yml", "pyproject.toml", "requirements.lock",
          "Makefile", "README.md", ".ci/run", ".gitignore", "BENCHMARKS.md")
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


def test_the_lock_pins_every_range_within_it():
    """`make setup` installs requirements.lock: it must hold every dependency of pyproject.toml (and its test
    extra) at a version within its range, so that a range changed without `make lock` fails here, not on a
    researcher's machine; and say in its header what it is for and how it was made."""
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert "CPython 3.11 on linux x86_64" in header[0] and "Made by `make lock`" in header[1]
    pins = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version and " " not in line, f"requirements.lock: not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    outside = []
    for requirement in map(Requirement, _pins_pyproject()):
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{requirement} (locked: {version})")
    assert outside == [], "run `make lock` after changing pyproject.toml's dependencies"


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


ALLOWED_BACKWARDS: set[tuple[str, str]] = set()  # (room, module) pairs allowed to import upward: none


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


def test_comments_cite_only_what_the_repository_holds():
    """A reason is written in place or points to docs/: project notes and issue numbers outside the repository
    send a newcomer to something they do not have."""
    outside = re.compile(r"\bDESIGN(\.md|'s| section| \d)|\b[Ii]ssue \d+\b|DEVELOPERS\.md")
    cited = [f"{path.relative_to(ROOT)}:{number}" for folder in (*ROOMS, "bench", "tests")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    cited += [name for name in ("cli.py", "README.md") if outside.search((ROOT / name).read_text(encoding="utf-8"))]
    cited += [str(path.relative_to(ROOT)) for path in sorted((ROOT / "docs").rglob("*.md"))
              if outside.search(path.read_text(encoding="utf-8"))]
    assert cited == []
