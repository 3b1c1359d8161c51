"""The worker threads of minigrad's CPU kernels: a small pool that hands a
job to its threads in about a microsecond.

A job is ``fn(t)`` for t = 0 .. n − 1: the calling thread runs t = 0 and the
pool's workers the others (the kernels split their work through shared
counters, so a thread that starts late simply takes fewer pieces).  Most ops
of a training step take 0.2-10 ms, and a thread that sleeps on a lock wakes
up 50-100 us after it is signalled on a virtual machine, twice per job (the
worker when the job is posted, the caller when it waits for the worker).  So
instead of sleeping right away, a thread that waits *spins* for a while:

* a worker, done with a job, reads the job counter in a loop (in compiled
  code, without the GIL) for about SPIN_S seconds; a new job is seen at once.
  Only after that does it go to sleep on a condition variable;
* the caller, done with its own part, reads the workers' "done" counters the
  same way until they have finished.

The counters live in a NumPy array, read and written with atomic
(acquire / release) operations, so a thread never reads a stale value and
everything a worker wrote before it said "done" is visible to the caller.

One job runs at a time: a job posted while another runs (from another
Python thread, or from inside a job) runs all its parts on the calling thread.
A job that raises in a worker raises in the caller once every part is done.
"""
from __future__ import annotations

import os
import platform
import threading
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

from .simd import _element_ptr

# How long a waiting thread spins before it sleeps (seconds).  Between two
# jobs of a training step the main thread often runs Python for more than
# 0.2 ms (the autograd engine, small ops on one thread); a worker that has
# gone to sleep by then costs the next job a wake-up.  Measured on a
# ResNet-20 step (2 threads, alternating, 15 and 25 pairs): 1 ms instead of
# 0.2 ms, 0.98 and 0.94 of the time.
SPIN_S = 1e-3
POLL_S = 2e-4       # the caller's sleep between polls, once it has spun that long

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _load_acquire(typingctx, counters, i):
    """counters[i], read with acquire ordering (int64 counters)."""
    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(counters, types.intp), codegen


@intrinsic
def _store_release(typingctx, counters, i, value):
    """counters[i] = value, written with release ordering."""
    def codegen(context, builder, sig, args):
        ptr = _element_ptr(context, builder, sig.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()
    return types.void(counters, types.intp, types.int64), codegen


@intrinsic
def _pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``; nothing elsewhere)."""
    def codegen(context, builder, sig, args):
        if _X86:
            name = "llvm.x86.sse2.pause"
            fn = builder.module.globals.get(name)
            if fn is None:
                fn = ir.Function(builder.module, ir.FunctionType(ir.VoidType(), []), name)
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@njit(nogil=True, cache=True)
def post_then_wait(counters, post, value, watch, old, spins):
    """counters[post] = value (if post >= 0), then read counters[watch] until
    it differs from ``old``, at most ``spins`` times; returns the last value
    read.  Runs without the GIL, so the thread that waits on the value can
    take the GIL as soon as it sees it."""
    if post >= 0:
        _store_release(counters, post, value)
    v = _load_acquire(counters, watch)
    for _ in range(spins):
        if v != old:
            break
        _pause()
        v = _load_acquire(counters, watch)
    return v


def _spins_for(seconds):
    """How many reads of :func:`post_then_wait` take about ``seconds``."""
    c = np.zeros(1, np.int64)
    post_then_wait(c, -1, 0, 0, 0, 10)             # compile (or load) first
    n = 20_000
    t = time.perf_counter()
    post_then_wait(c, -1, 0, 0, 0, n)
    per_read = max((time.perf_counter() - t) / n, 1e-9)
    return max(1000, int(seconds / per_read))


class Pool:
    """``workers`` threads that run jobs posted by :meth:`run`."""

    def __init__(self, workers):
        self.workers = workers
        self.spins = _spins_for(SPIN_S)
        # counters[0]: the number of the job last posted; counters[t]: the
        # number of the last job worker t has finished
        self.counters = np.zeros(1 + workers, np.int64)
        self._fn = None
        self._errors = []
        self._busy = threading.Lock()       # one job at a time
        self._wake = threading.Condition()  # for workers that sleep
        self._sleeping = 0
        for t in range(1, workers + 1):
            threading.Thread(target=self._worker, args=(t,), daemon=True,
                             name=f"minigrad-{t}").start()

    def _worker(self, t):
        job, post = 0, -1
        while True:
            seen = post_then_wait(self.counters, post, job, 0, job, self.spins)
            if seen == job:                     # nothing new for a while: sleep
                with self._wake:
                    self._sleeping += 1
                    while self.counters[0] == job:
                        self._wake.wait()
                    self._sleeping -= 1
                seen = int(self.counters[0])
            job, post = seen, t
            try:
                self._fn(t)
            except BaseException as e:         # handed to the caller
                self._errors.append(e)

    def run(self, fn, n):
        """fn(t) for t in range(n) (n − 1 <= workers): t = 0 on the calling
        thread, the others on the workers; returns when all are done."""
        if not self._busy.acquire(blocking=False):      # another job is running
            for t in range(n):
                fn(t)
            return
        try:
            self._run(fn, n)
        finally:
            self._busy.release()

    def _run(self, fn, n):
        self._fn = fn if n - 1 == self.workers else _only_below(fn, n)
        job = int(self.counters[0]) + 1
        with self._wake:
            self.counters[0] = job
            if self._sleeping:
                self._wake.notify_all()
        try:
            fn(0)
        finally:                                # (also when part 0 raised)
            for t in range(1, self.workers + 1):
                while post_then_wait(self.counters, -1, 0, t, job - 1, self.spins) != job:
                    time.sleep(POLL_S)          # a long part: poll, without spinning
            self._fn = None
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]


def _only_below(fn, n):
    """fn for the threads t < n only (a job smaller than the pool)."""
    def part(t):
        if t < n:
            fn(t)
    return part


_POOL = {"pool": None, "pid": None}
_LOCK = threading.Lock()


def pool(workers):
    """The process's pool, with at least ``workers`` workers (made anew when
    it has fewer, and in a forked child, which has none of its parent's
    threads)."""
    with _LOCK:
        p = _POOL["pool"]
        if p is None or p.workers < workers or _POOL["pid"] != os.getpid():
            p = _POOL["pool"] = Pool(workers)
            _POOL["pid"] = os.getpid()
        return p
