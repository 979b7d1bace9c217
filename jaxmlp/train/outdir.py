"""Output folders of a run: one run per folder (an advisory lock), writability, atomic files.

* :class:`FolderLock` -- ``fcntl.flock`` on ``DIR/.jaxmlp.lock``, taken before anything else
  is written into DIR; a second run on DIR is refused at once with :class:`FolderInUse`,
  which names the holder (pid, host, start time, command). The lock belongs to the open
  file, so the operating system releases it when the holder exits, killed or not: a stale
  lock file never blocks a later run. Advisory: it only excludes processes that take it
  (every ``experiments/train.py`` run does); on file systems without ``flock`` (some
  network mounts) it is refused with an OSError rather than silently not locking.
* :func:`check_writable` -- creates and removes a file in DIR, so an unusable folder is
  reported before training instead of after.
* :func:`write_json_atomic`, :func:`atomic_path` -- write to ``<name>.tmp-<pid>`` in the
  same folder, flush and fsync, then ``os.replace``: a reader (or a crash) sees the old file
  or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Any, Iterator, Optional

__all__ = ["FolderInUse", "FolderLock", "LOCK_NAME", "atomic_path", "check_writable",
           "write_json_atomic"]

#: Name of the lock file inside a locked folder.
LOCK_NAME = ".jaxmlp.lock"


class FolderInUse(RuntimeError):
    """Another process holds the lock of the folder.

    Attributes:
      folder: the folder; holder: what the holder wrote into the lock file (dict, may be
        empty if it had not written it yet).
    """

    def __init__(self, folder: str, holder: dict):
        self.folder, self.holder = folder, holder
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
               f"{holder.get('started', '?')}" if holder else "a process that is starting")
        cmd = f" ({holder['command']})" if holder.get("command") else ""
        super().__init__(f"{folder} is in use by another run: {who}{cmd}. One run per output "
                         "folder: wait for it to finish, or choose another folder.")


class FolderLock:
    """An exclusive advisory lock on a folder (created if missing), for one run.

    Arguments:
      folder: the folder.
      remove_if_unused: on :meth:`release`, remove the lock file and the folder if this lock
        created the folder and nothing else was written into it (a run refused before
        writing anything leaves no trace).

    Use as a context manager; :meth:`acquire` raises :class:`FolderInUse` at once if another
    process holds it (it never waits), and OSError (e.g. not a directory, permission denied)
    if the folder or the lock file cannot be created.
    """

    def __init__(self, folder: str | os.PathLike, *, remove_if_unused: bool = True):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.remove_if_unused = remove_if_unused
        self._fd: Optional[int] = None
        self._created = False

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this FolderLock.")
        self._created = not os.path.isdir(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderInUse(self.folder, holder) from None
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join(os.path.basename(a) if i == 0 else a
                                    for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.remove_if_unused and self._created and os.listdir(self.folder) == [LOCK_NAME]:
                os.remove(self.path)
                os.rmdir(self.folder)
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self if self._fd is not None else self.acquire()  # acquired already: keep it

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(data) if data else {}
    except (OSError, ValueError):
        return {}


def check_writable(folder: str | os.PathLike) -> None:
    """Raises OSError (with the reason) unless a file can be created in ``folder``."""
    folder = os.fspath(folder)
    probe = os.path.join(folder, f".write-test-{os.getpid()}")
    with open(probe, "wb") as f:
        f.write(b"ok")
    os.remove(probe)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary path next to ``path``; on success it is fsynced and renamed onto
    ``path`` (``os.replace``), on an exception it is removed and ``path`` is untouched."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    """``json.dump(obj)`` into ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, **dump_kwargs)
