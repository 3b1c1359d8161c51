"""The errors a training run reports to its user in one line (no traceback)."""
from __future__ import annotations

from ..serialization import CheckpointError

__all__ = ["ConfigError", "RunFolderError", "CheckpointError", "TrainingInterrupted",
           "StoppedOnAllRanks"]


class ConfigError(ValueError):
    """Arguments that cannot work together."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used: another run is writing to it, or it holds
    a run that was neither resumed nor explicitly replaced."""


class TrainingInterrupted(Exception):
    """Raised by :func:`minigrad.training.train` after an interrupted run was
    checkpointed; the message says how to continue."""

    def __init__(self, message, checkpoint):
        super().__init__(message)
        self.checkpoint = checkpoint


class StoppedOnAllRanks(Exception):
    """An error that every rank of a distributed run knows of (found while
    setting up): every rank exits with ``code``; the rank that reports it
    (rank 0) has the ``message``, the others None."""

    def __init__(self, code, message=None):
        super().__init__(message or f"stopped (exit code {code})")
        self.code, self.message = code, message
