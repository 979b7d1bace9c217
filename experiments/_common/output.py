"""Where the scripts write, and the one JSON writer they all use.

One convention for every experiment script (:func:`add_out_arguments`, :func:`resolve_out`):

* no ``--out``: a NEW folder per run, ``runs/<name>-<YYYYmmdd-HHMMSS>[-k]/`` under the
  repository root (ignored by git), never an existing one;
* ``--out PATH``: PATH, a relative one from the CALLER's folder (``scripts/run.sh`` passes it
  in ``JAXMLP_CALLER_DIR`` before changing to the repository root; else the working directory);
* ``--results``: the experiment's own committed folder under ``results/`` (the figures of the
  docs), rewritten on purpose only.

:func:`user_path` resolves any path a user gives (``--data``, ``--checkpoint``) the same way.
:func:`output_path` resolves a relative path against the repository root (for the scripts'
own files under ``results/``). :func:`write_json` writes atomically
(:func:`jaxmlp.train.outdir.atomic_path`: a temporary file renamed into place, so a reader
never sees half a file), creates the folders, and writes NumPy arrays and scalars as plain
JSON lists and numbers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from _common.errors import UsageError

__all__ = ["add_out_arguments", "caller_dir", "new_run_dir", "output_path", "plain",
           "repo_root", "resolve_out", "user_path", "write_json"]

#: The environment variable ``scripts/run.sh`` sets to the folder it was called from.
CALLER_ENV = "JAXMLP_CALLER_DIR"


def repo_root() -> Path:
    """The repository root: the folder holding ``pyproject.toml`` two folders above this file (a
    checkout); the working directory when the scripts were copied elsewhere."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").is_file() else Path.cwd()


def output_path(path: Union[str, os.PathLike]) -> Path:
    """``path`` if absolute, else ``repo_root() / path``."""
    p = Path(path)
    return p if p.is_absolute() else repo_root() / p


def caller_dir() -> Path:
    """The folder the user ran the command from: ``$JAXMLP_CALLER_DIR`` (set by
    ``scripts/run.sh``) when set, else the working directory."""
    d = os.environ.get(CALLER_ENV)
    return Path(d) if d else Path.cwd()


def user_path(path: Union[str, os.PathLike, None]) -> Optional[str]:
    """A path the user gave, absolute: a relative one is taken from :func:`caller_dir`
    (``~`` expanded); None stays None."""
    if path is None:
        return None
    p = Path(os.path.expanduser(os.fspath(path)))
    return str(p if p.is_absolute() else caller_dir() / p)


def new_run_dir(name: str, suffix: str = "") -> Path:
    """A folder that does not exist yet: ``<repo>/runs/<name>-<YYYYmmdd-HHMMSS>[-k]<suffix>``
    (``-2``, ``-3``, ... when runs start within the same second). Not created."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = repo_root() / "runs" / f"{name}-{stamp}"
    k = 1
    while True:
        p = Path(f"{base}{'' if k == 1 else f'-{k}'}{suffix}")
        if not p.exists():
            return p
        k += 1


def add_out_arguments(parser, results: str, *, what: str = "folder") -> None:
    """Adds ``--out`` and ``--results`` to ``parser`` (the convention of this module);
    ``results`` is the experiment's committed place under the repository root (a folder, or
    a file when ``what="file"``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--out", default=None, metavar="PATH",
                       help=f"output {what}, relative paths from the folder you run from "
                            f"(default: a new runs/<name>-<time>/ folder, ignored by git)")
    group.add_argument("--results", action="store_true",
                       help=f"write the committed {results} instead (what the docs show; "
                            "rewrites those files)")
    parser.set_defaults(_results_path=results, _out_kind=what)


def resolve_out(args, name: str) -> str:
    """The absolute output path of a parsed command line (:func:`add_out_arguments`), also
    stored back into ``args.out`` (argparse refuses ``--out`` with ``--results``).
    :class:`_common.errors.UsageError` naming ``--out`` when the path cannot be created (under
    a file; a folder that is a file or the reverse)."""
    if getattr(args, "results", False):
        out = output_path(args._results_path)
    elif args.out is not None:
        out = Path(user_path(args.out))
    else:
        kind = getattr(args, "_out_kind", "folder")
        if kind == "folder":
            out = new_run_dir(name)
        else:  # a file: runs/<name>-<time>/<the committed file's name>
            out = new_run_dir(name) / Path(args._results_path).name
    _check_out(out, getattr(args, "_out_kind", "folder"),
               "--results" if getattr(args, "results", False) else "--out")
    args.out = str(out)
    return args.out


def _check_out(out: Path, kind: str, flag: str) -> None:
    """UsageError naming ``flag`` when ``out`` cannot be created: a folder that is an existing
    file, a file that is an existing folder, or a path under an existing file."""
    if kind == "folder" and out.exists() and not out.is_dir():
        raise UsageError(f"{flag}: {str(out)!r} exists and is not a folder.")
    if kind != "folder" and out.is_dir():
        raise UsageError(f"{flag}: {str(out)!r} is a folder, expected a {kind}.")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{flag}: cannot create {str(out)!r}: {str(parent)!r} is a "
                                 "file, not a folder.")
            return


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
