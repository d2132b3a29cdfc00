"""Rating prediction: the served biases-and-factors model, its grounded four-tag reasons and their checker, and
the guided LLM rating (RecZero's tags) with the language model's state at `<rate>`."""
