"""Ctrl-C and SIGTERM during training: the first finishes the current batch and
saves a checkpoint, the second stops at once."""
from __future__ import annotations

import signal
import threading

__all__ = ["StopFlag"]


class StopFlag:
    """First Ctrl-C (or SIGTERM): finish the current batch, checkpoint, stop.
    Second Ctrl-C: stop at once (the last checkpoint stays)."""

    def __init__(self, log):
        self.set, self.signal, self.log, self._old = False, None, log, {}

    def _handler(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set, self.signal = True, signum
        self.log("\ninterrupt received: finishing this batch and saving a checkpoint "
                 "(press Ctrl-C again to quit without saving)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False
