"""The run folder (``--out``) belongs to one run.

* While a run writes to it, it holds an exclusive lock on ``.minigrad-run.lock``
  (an OS file lock, released by the OS when the process ends, however it
  ends): a second run into the same folder stops at once with a message.
* A folder that already holds a run (its checkpoint, metrics or plot) is only
  continued with ``--resume`` or replaced with an explicit ``--overwrite``;
  anything else in the folder is never touched.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from ..serialization import remove_stale_temporaries
from .checkpoint import CHECKPOINT, checkpoint_path
from .errors import RunFolderError
from .metrics import CURVES, ITERATIONS, METRICS

try:
    import fcntl
except ImportError:              # Windows
    fcntl = None
    import msvcrt

__all__ = ["RunFolder", "LOCK", "RUN_FILES", "run_folder_of"]

LOCK = ".minigrad-run.lock"
RUN_FILES = (CHECKPOINT, METRICS, ITERATIONS, CURVES)


def run_folder_of(args) -> Path:
    """The folder a run writes to: the resumed checkpoint's, ``--out``, or a new
    ``runs/<model>-<timestamp>`` (with a suffix when that name is taken)."""
    if args.resume:
        return checkpoint_path(args.resume).parent
    if args.out:
        return Path(args.out)
    base = Path("runs") / f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _try_lock(f) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class RunFolder:
    """The folder of one run and the files in it."""

    def __init__(self, path):
        self.path = Path(path)

    def __truediv__(self, name) -> Path:
        return self.path / name

    def __str__(self):
        return str(self.path)

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    @contextlib.contextmanager
    def locked(self):
        """Create the folder if needed and hold its lock for the ``with`` block.
        Raises :class:`RunFolderError` if another run holds it or the folder
        cannot be made."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / LOCK, "a+")
        except OSError as exc:
            raise RunFolderError(f"cannot use {self.path} as the run folder: "
                                 f"{exc.strerror or exc}") from None
        try:
            if not _try_lock(f):
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunFolderError(f"{self.path} is in use by another training run "
                                     f"({holder}); wait for it to finish or choose another "
                                     "--out")
            f.seek(0)
            f.truncate()
            f.write(f"process {os.getpid()} on {socket.gethostname()}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            yield self
        finally:
            f.close()            # closing the file releases the lock

    def refuse_or_clear(self, overwrite: bool, log=print) -> None:
        """For a new run: stop if the folder holds a run, unless ``overwrite``,
        in which case that run's files are removed (nothing else is)."""
        if not self.holds_run():
            return
        if not overwrite:
            raise RunFolderError(f"{self.path} already holds a run ({self._describe()}); "
                                 f"continue it with --resume {self.path}, or replace it "
                                 "with --overwrite")
        log(f"--overwrite: replacing the run in {self.path}")
        for name in RUN_FILES:
            remove_stale_temporaries(self.path / name)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path / name)

    def _describe(self) -> str:
        from .checkpoint import load_checkpoint
        try:
            ckpt = load_checkpoint(self.path)
        except Exception:                   # damaged, or only some of the files
            return "files of an earlier run"
        done = ckpt["iteration"] >= ckpt["total_iterations"]
        return (f"{len(ckpt['history'])} of {ckpt['epochs']} epochs, "
                + ("finished" if done else "not finished"))
