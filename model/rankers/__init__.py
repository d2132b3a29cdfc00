"""Ranker cores shared by the service and the evaluation harness: popular, SASRec+, content, the item table and
the language-model rankers (`reasoning`, `direct`)."""
