"""The evaluation protocol every job shares, one floor below the training and evaluation jobs: the ranking
harness (one code path for every ranker), the metrics with their intervals, and the genre-overlap sanity figure
of item vectors. The data and splits it runs on are `trainer.data`."""
