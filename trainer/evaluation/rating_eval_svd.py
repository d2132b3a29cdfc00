"""Surprise's SVD (Hug, "Surprise: A Python library for recommender systems", JOSS 2020; Funk's SVD as Koren, Bell &
Volinsky 2009 describe it, default settings: 100 factors, 20 epochs, lr .005, reg .02) on the rating protocol.

scikit-surprise is not a dependency of the project (it compiles C extensions against numpy at install time), so
`reasonrec eval-rating --svd-python PY` runs this file as a script under a Python that has it, e.g.
`python3.11 -m venv /tmp/svdenv && /tmp/svdenv/bin/pip install scikit-surprise`:

    PY rating_eval_svd.py IN.npz OUT.npy SEED

IN.npz holds `fit_users`, `fit_items`, `fit_values` (the ratings to fit) and `users`, `items` (the ratings to
predict); OUT.npy gets the predictions. Only numpy and surprise are imported.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    from surprise import SVD, Dataset, Reader

    source, target, seed = Path(argv[0]), Path(argv[1]), int(argv[2])
    data = np.load(source)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ratings.csv"
        rows = zip(data["fit_users"], data["fit_items"], data["fit_values"], strict=True)
        path.write_text("".join(f"{u},{i},{r}\n" for u, i, r in rows), encoding="utf-8")
        trainset = Dataset.load_from_file(str(path), Reader(line_format="user item rating", sep=",",
                                                            rating_scale=(1, 5))).build_full_trainset()
    algo = SVD(random_state=seed)
    algo.fit(trainset)
    np.save(target, np.array([algo.predict(str(u), str(i)).est for u, i in zip(data["users"], data["items"],
                                                                                  strict=True)]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
