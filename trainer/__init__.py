"""Offline jobs: data loading and splits, index building, training, evaluation; and the `reasonrec` CLI."""
