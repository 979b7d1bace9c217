"""Where the scripts write, and the one JSON writer they all use.

:func:`output_path` resolves a relative path against the repository root (not the working
directory), so a script writes to the same ``results/`` wherever it is started from (pass an
absolute path to write elsewhere). :func:`write_json` writes atomically
(:func:`jaxmlp.train.outdir.atomic_path`: a temporary file renamed into place, so a reader
never sees half a file), creates the folders, and writes NumPy arrays and scalars as plain
JSON lists and numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

__all__ = ["output_path", "plain", "repo_root", "write_json"]


def repo_root() -> Path:
    """The repository root: the folder holding ``pyproject.toml`` two folders above this file (a
    checkout); the working directory when the scripts were copied elsewhere."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def output_path(path: Union[str, os.PathLike]) -> Path:
    """``path`` if absolute, else ``repo_root() / path``."""
    p = Path(path)
    return p if p.is_absolute() else repo_root() / p


def plain(x: Any) -> Any:
    """``x`` with NumPy arrays as (nested) lists, NumPy scalars as Python numbers, paths as
    strings, tuples as lists and mapping keys as strings: what ``json.dumps`` accepts."""
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return plain(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: Union[str, os.PathLike], doc: Any) -> Path:
    """Writes ``doc`` (:func:`plain`) as JSON indented by 1 with a final newline to
    :func:`output_path` ``(path)``, atomically, creating its folders. Returns the absolute
    path written."""
    from jaxmlp.train.outdir import atomic_path

    p = output_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(plain(doc), indent=1) + "\n"
    with atomic_path(p) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return p
