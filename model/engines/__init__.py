"""Engines: the language model loaded (SmolLM2 from its wheel, HF folders, LoRA, the tiny test model) and run,
in-process with transformers (micro- and continuous batching) or over HTTP on vLLM; prompts in, reasoning text
and final hidden states out (`model.engines.base.Engine`)."""
