"""``--register FILE.py`` of the scripts: run files that call jaxmlp.register_activation/_cost."""

from __future__ import annotations

import os
import runpy
from typing import Sequence


def run_registrations(files: Sequence[str]) -> None:
    """Runs each file; ValueError naming the file when it is missing or fails (a rule refused
    by the verification keeps its table of errors in the message)."""
    for path in files:
        if not os.path.isfile(path):
            raise ValueError(f"--register: file {path!r} does not exist.")
        try:
            runpy.run_path(path, run_name="__jaxmlp_register__")
        except Exception as e:  # the file's own error, e.g. a rule refused by verification
            raise ValueError(f"--register: {path}: {type(e).__name__}: {e}") from None
