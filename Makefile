# Two entry points for a fresh machine: `make demo` and `make test` (both run `make setup` first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo

.PHONY: setup demo test test-fast lint bench-cpu clean-demo

setup: $(STAMP)

# The stamp makes a second `make setup` a no-op until pyproject.toml changes. Only the dependencies are
# installed: the toolkit runs from the checkout (`python cli.py ...`), so its top-level packages
# (extract, features, fusion, eval, curate) never land in site-packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	    print("\n".join(p["dependencies"] + p["optional-dependencies"]["test"]))' > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements.txt
	touch $(STAMP)

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
