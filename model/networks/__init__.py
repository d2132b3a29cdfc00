"""The recommender networks the trainer builds and the service loads: SASRec+, the item table (content map g,
residuals, sequence encoder s, heads f) with its artifact and content features, and MiniLM text vectors."""
