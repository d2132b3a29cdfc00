"""The language model: loading, prompt templates, engines (reasoning + vectors), and the SASRec network."""
