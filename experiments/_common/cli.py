"""Command-line errors shared by the scripts: exit status 2 with one message, before any work.

A script raises :class:`UsageError` for bad input; its ``main`` prints
``"<prog>: error: <message>"`` on stderr and returns :data:`EXIT_USAGE` (2).
:class:`Parser` turns argparse's own errors (unknown flag, a value that is not a number)
into the same exception, so that nothing exits from inside argparse.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Sequence

from _common.errors import UsageError

EXIT_OK, EXIT_USAGE = 0, 2

__all__ = ["EXIT_OK", "EXIT_USAGE", "HelpFormatter", "Parser", "UsageError", "bounded_int",
           "checkpoint_error", "claim_output_folder", "flag_error", "int_list", "name_list", "nonnegative_float",
           "nonnegative_int", "parse_floats", "positive_float", "positive_int",
           "positive_float_list", "positive_int_list", "report_usage", "run_registrations"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The docstring kept as written, and every option's default in ``--help``: appended as
    ``(default: X)`` unless the help already says its default (options whose default depends
    on the dataset say so themselves)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors raise :class:`UsageError` (exit 2 by the
    script's ``main``) instead of printing usage and calling ``sys.exit``; ``--help`` shows
    the defaults (:class:`HelpFormatter`)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise UsageError(message)


def checkpoint_error(e: Exception, flag: str, cdir) -> UsageError:
    """A ``jaxmlp.train.checkpoint.CheckpointError`` as the UsageError naming ``flag``: its
    message, or, when no checkpoint of ``cdir`` is intact, each one's epoch and reason."""
    skipped = getattr(e, "skipped", None)
    if skipped is None:
        return UsageError(f"{flag}: {e}")
    lines = "".join(f"\n  epoch {ep}: {why}" for ep, why in skipped)
    return UsageError(f"{flag}: no intact checkpoint in {cdir}:{lines}")


def flag_error(e: Exception, flags: Sequence[str] = (),
               fallback: Optional[str] = None) -> UsageError:
    """A library error ``"name: message"`` as the UsageError ``"--name: message"``.

    The library names its arguments with underscores (``expected_batch_size``); a CLI names
    them as flags (``--expected-batch-size``). With ``flags``, only those names are turned
    into flags. Any other message is kept whole, after ``--<fallback>: `` when given.
    """
    text = str(e)
    name, sep, rest = text.partition(": ")
    if sep and name.isidentifier() and (not flags or name in flags):
        return UsageError(f"--{name.replace('_', '-')}: {rest}")
    return UsageError(f"--{fallback.replace('_', '-')}: {text}" if fallback else text)


def parse_floats(flag: str, values: Sequence[str]) -> list[float]:
    """Numbers from ``values`` (separate words or comma-separated); UsageError naming ``flag``
    on a word that is not a number, or when there is none."""
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(float(part))
                except ValueError:
                    raise UsageError(f"{flag}: expected numbers, got {part.strip()!r}.") from None
    if not out:
        raise UsageError(f"{flag}: expected at least one number.")
    return out


def run_registrations(files: Sequence[str]) -> None:
    """Runs each ``--register FILE.py`` (files that call ``jaxmlp.register_activation`` or
    ``register_cost``); UsageError naming the file when it is missing or fails."""
    from _common import output, register

    try:
        register.run_registrations([output.user_path(f) for f in files])
    except ValueError as e:
        raise UsageError(str(e)) from None


def claim_output_folder(out: str):
    """Locks ``out`` for this run (:class:`jaxmlp.train.outdir.FolderLock`), then checks that
    the folder is writable and that ``out/results.json`` can be written; returns the held lock
    (a context manager that releases it). UsageError naming ``--out`` otherwise: the holder's
    pid when another run has the folder, the OS error when it cannot be used."""
    from jaxmlp.train import outdir

    lock = outdir.FolderLock(out)
    try:
        lock.acquire()
    except outdir.FolderInUse as e:
        raise UsageError(f"--out: {e}") from None
    except OSError as e:
        raise UsageError(f"--out: cannot use {out!r} as the output folder: "
                         f"{e.strerror or e}.") from None
    try:
        outdir.check_writable(out)
        results = os.path.join(out, "results.json")
        if os.path.exists(results) and not os.path.isfile(results):
            raise UsageError(f"--out: {results!r} exists and is not a file; results.json could "
                             "not be written (remove it or choose another --out).")
    except OSError as e:
        lock.release()
        raise UsageError(f"--out: {out!r} is not writable: {e.strerror or e}.") from None
    except UsageError:
        lock.release()
        raise
    return lock


# ---- argparse ``type=`` helpers: a bad value is refused by the Parser as
# "argument --flag: expected ..., got '...'" (exit 2), before any work.

def _number(text: str, kind, what: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def bounded_int(low: int, multiple_of: int = 1):
    """An argparse ``type``: an integer ``>= low`` (and a multiple of ``multiple_of``)."""
    what = f"an integer >= {low}" + (f" that is a multiple of {multiple_of}"
                                     if multiple_of > 1 else "")

    def parse(text):
        value = _number(text, int, what)
        if value < low or value % multiple_of:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    return bounded_int(1)(text)


def nonnegative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    return bounded_int(0)(text)


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (not nan, not inf)."""
    value = _number(text, float, "a finite number > 0")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """An argparse ``type``: a finite number >= 0 (not nan, not inf)."""
    value = _number(text, float, "a finite number >= 0")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def int_list(low: int = 1):
    """An argparse ``type``: a comma-separated list of integers ``>= low`` (at least one),
    as a list."""
    one = bounded_int(low)

    def parse(text):
        parts = [p.strip() for p in str(text).split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of integers >= {low}, got {text!r}")
        try:
            return [one(p) for p in parts]
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of integers >= {low}, got {text!r}") from None

    parse.__name__ = "int_list"
    return parse


def positive_int_list(text: str) -> list[int]:
    """An argparse ``type``: a comma-separated list of integers >= 1, as a list."""
    return int_list(1)(text)


def positive_float_list(text: str) -> list[float]:
    """An argparse ``type``: a comma-separated list of finite numbers > 0, as a list."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        return [positive_float(p) for p in parts]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of finite numbers > 0, got {text!r}") from None


def name_list(choices: Sequence[str]):
    """An argparse ``type``: a comma-separated list of names out of ``choices`` (at least
    one), as a list; a name that itself holds a comma is matched whole. The refusal lists the
    allowed names."""
    allowed = list(choices)
    sep = "; " if any("," in c for c in allowed) else ", "

    def parse(text):
        parts, names, i = str(text).split(","), [], 0
        while i < len(parts):
            for j in range(len(parts), i, -1):  # the longest known name from part i
                name = ",".join(parts[i:j]).strip()
                if name in allowed:
                    names.append(name)
                    i = j
                    break
            else:
                raise argparse.ArgumentTypeError(
                    f"expected a comma-separated list of {sep.join(allowed)}, got {text!r} "
                    f"({parts[i].strip()!r} is none of them)")
        return names

    parse.__name__ = "name_list"
    return parse


def report_usage(prog: str, e: Exception) -> int:
    """Prints ``"<prog>: error: <e>"`` on stderr (one line) and returns :data:`EXIT_USAGE`."""
    print(f"{prog}: error: {e}", file=sys.stderr)
    return EXIT_USAGE
