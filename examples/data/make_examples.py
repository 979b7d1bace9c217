"""Writes the small example tables of docs/own-data.md from scikit-learn's bundled wine data.

    .venv/bin/python examples/data/make_examples.py      # rewrites wine.csv and wine_new.csv

* ``wine.csv``: 168 of the 178 wines, 13 numeric measurements, a text column ``vineyard``
  (north/south/east, drawn at random with a fixed seed: a categorical feature) and the
  integer target ``cultivar`` (0, 1, 2); about 4 % of ``alcohol``, ``magnesium`` and
  ``vineyard`` cells are empty (missing values).
* ``wine_new.csv``: the 10 other wines without ``cultivar``, with an ``id`` column
  (``w001``...): new rows to predict; one ``magnesium`` cell is empty.

Deterministic: the same files on every run (seed 0).
"""

import os

import numpy as np
import pandas as pd
from sklearn.datasets import load_wine

HERE = os.path.dirname(os.path.abspath(__file__))


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(wine, wine_new) as described in the module docstring."""
    rng = np.random.default_rng(0)
    raw = load_wine(as_frame=True)
    frame = raw.data.copy()
    frame.columns = [c.replace("/", "_") for c in frame.columns]
    frame.insert(1, "vineyard", rng.choice(["north", "south", "east"], size=len(frame)))
    frame["cultivar"] = raw.target.astype(int)
    for c in ("alcohol", "magnesium", "vineyard"):
        frame.loc[rng.random(len(frame)) < 0.04, c] = np.nan
    new = rng.choice(len(frame), size=10, replace=False)
    wine = frame.drop(index=new).reset_index(drop=True)
    rows = frame.loc[np.sort(new)].drop(columns="cultivar").reset_index(drop=True)
    rows["alcohol"] = rows["alcohol"].fillna(13.0)
    rows["vineyard"] = rows["vineyard"].fillna("north")
    rows.loc[3, "magnesium"] = np.nan
    rows.insert(0, "id", [f"w{i + 1:03d}" for i in range(len(rows))])
    return wine, rows


def main() -> None:
    wine, rows = tables()
    wine.to_csv(os.path.join(HERE, "wine.csv"), index=False, float_format="%.6g")
    rows.to_csv(os.path.join(HERE, "wine_new.csv"), index=False, float_format="%.6g")
    print(f"wrote {os.path.join(HERE, 'wine.csv')} ({len(wine)} rows) and wine_new.csv "
          f"({len(rows)} rows)")


if __name__ == "__main__":
    main()
