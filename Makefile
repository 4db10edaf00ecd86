# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv and install
# the project first (only from package registries).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch build to install. The default is the CPU build this project is tested with; a GPU user
# passes e.g. TORCH="torch==2.13.0 --index-url <CUDA wheel index>" (see README).
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.mvft-installed
PRESET ?= demo

export PATH := $(abspath $(VENV))/bin:$(PATH)
export MPLBACKEND := Agg
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test lab bench clean distclean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing $(TORCH) and the project into $(VENV) ..."
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,faiss]"
	@touch $(STAMP)

demo: install
	$(PY) -m mvft_helpers.runner --preset $(PRESET)

test: install
	$(PY) -m pytest

# Speed and memory ratios, measured side by side in one run (about 5 minutes).
bench: install
	$(PY) -m mvft_helpers.bench

lab: install
	$(PY) -m ipykernel install --sys-prefix --name mvft-ji --display-name "MVFT-JI (.venv)"
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf reports work build .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -exec rm -rf {} +

# Also removes the generated toy worlds and the virtual environment.
distclean: clean
	rm -rf data $(VENV) *.egg-info
