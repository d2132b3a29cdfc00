"""The FastAPI gateway: routes, schemas, settings, cache, metrics, fallback and auth."""
