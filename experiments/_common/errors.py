"""The scripts' one exception for bad command-line input (the bottom of ``_common``: it imports
nothing of it, so ``cli`` and ``output`` both raise it without importing each other)."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input: reported on stderr with exit status 2, before any work or file is written."""
