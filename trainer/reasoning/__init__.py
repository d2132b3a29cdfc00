"""Reasoning taught from the data (issue 27): grounded rationales written by a program from a history
(`rationales`), the claims they make and how each is phrased (`claims`), the facts those claims are checked
against (`facts`), the checker that verifies any text against a history (`checker`), the SFT pool (`samples`) and
its packed teacher forcing (`packing`), and the evaluation report (`report`). Following R2ec ("Towards Large
Recommender Models with Reasoning"), whose reasoning precedes the recommendation state, with the reasoning
supervised from programmatic, verifiable rationales rather than a teacher model (none is available offline).
"""
