# Two entry points for a fresh machine: `make demo` and `make test` (both run `make setup` first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
DEMO_DIR ?= runs/demo

.PHONY: setup lock demo test test-fast lint bench-cpu clean-demo

setup: $(STAMP)

# `make setup` installs the lock, the exact versions the tests passed with (for the Python and platform its header
# names), so that a new release of zarr, dask or transformers changes no result between two machines unannounced.
# pyproject.toml keeps the ranges, for other platforms and other installers. The stamp makes a second `make setup`
# a no-op until the lock changes. Only the dependencies are installed: the toolkit runs from the checkout (`python
# cli.py ...`), so its top-level packages (extract, features, fusion, eval, curate) never land in site-packages.
$(STAMP): $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	touch $(STAMP)

# Refresh the lock: pip's resolver picks the newest versions within pyproject.toml's ranges (its dependencies and
# the test extra; a dry run, nothing is installed) and the lock records every package it would install, exactly.
# Then `make test` installs them (the stamp follows the lock) and tests them; commit the lock when they pass.
lock:
	$(PYTHON) -c "$$PYPROJECT_RANGES" > $(LOCK).ranges
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --dry-run --ignore-installed \
	    --report $(LOCK).report -r $(LOCK).ranges
	$(PYTHON) -c "$$LOCK_FROM_REPORT" $(LOCK).report > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -f $(LOCK).ranges $(LOCK).report

define PYPROJECT_RANGES
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
endef
export PYPROJECT_RANGES

define LOCK_FROM_REPORT
import json, sys, time
report = json.load(open(sys.argv[1]))
env = report["environment"]
pins = sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in report["install"])
print(f"# The exact versions that `make setup` installs and the tests passed with, for CPython {env['python_version']} "
      f"on {env['sys_platform']} {env['platform_machine']}.")
print(f"# Made by `make lock` on {time.strftime('%Y-%m-%d')} (Python {env['python_full_version']}, pip {report['pip_version']}): "
      "pip's resolver over pyproject.toml's ranges.")
print("# Edit the ranges there and run `make lock`, never this file. Another Python or platform: install the ranges.")
print("\n".join(f"{name}=={version}" for name, version in sorted(pins, key=lambda pin: pin[0].lower())))
endef
export LOCK_FROM_REPORT

demo: setup
	$(PY) cli.py demo --out $(DEMO_DIR)

test: setup
	$(PY) -m pytest -q

# The edit-test loop: everything but the tests marked slow (end to end, worker clusters, killed processes).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .

clean-demo:
	rm -rf $(DEMO_DIR)
