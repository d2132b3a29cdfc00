"""Benchmark scripts: each prints ratios and writes docs/results/bench_<name>.{md,json} with the command, the
data and the machine that produced it.

OpenMP threads sleep as soon as a parallel region ends (`OMP_WAIT_POLICY=PASSIVE`, set before torch loads):
a benchmark runs torch from more than one thread (the offline batch in one, the batcher's worker in another),
and on a busy 2-core machine the default spin-waiting of one thread team starves the other (measured: a tiny
model's decode 3-10x slower in whichever team ran second). The gateway runs all torch work on the batcher's one
thread and is not affected.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
