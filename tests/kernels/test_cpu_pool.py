"""The kernels' worker pool (kernels/cpu_pool.py): every part of a job runs
exactly once, errors reach the caller, and jobs posted while another runs
(nested, or from a second Python thread) still complete."""
import threading
import time

import numpy as np
import pytest

from minigrad.kernels import cpu_pool


def _recording_job(n):
    seen = np.zeros(n, np.int64)
    names = [None] * n

    def fn(t):
        seen[t] += 1
        names[t] = threading.current_thread().name
    return fn, seen, names


@pytest.mark.parametrize("workers, n", [(1, 2), (3, 4), (3, 2)])
def test_every_part_runs_once_on_its_own_thread(workers, n):
    pool = cpu_pool.Pool(workers)
    for _ in range(50):
        fn, seen, names = _recording_job(n)
        pool.run(fn, n)
        assert seen.tolist() == [1] * n
        assert names[0] == threading.current_thread().name
        assert len(set(names)) == n                  # the other parts on the workers


def test_a_worker_that_slept_takes_the_next_job():
    pool = cpu_pool.Pool(1)
    pool.run(lambda t: None, 2)
    time.sleep(20 * cpu_pool.SPIN_S)                 # long past the spin: the worker sleeps
    fn, seen, names = _recording_job(2)
    pool.run(fn, 2)
    assert seen.tolist() == [1, 1] and names[1] != names[0]


def test_a_part_that_outlasts_the_spin_is_waited_for():
    pool = cpu_pool.Pool(1)
    done = []

    def fn(t):
        if t == 1:
            time.sleep(50 * cpu_pool.SPIN_S)
            done.append(t)
    pool.run(fn, 2)
    assert done == [1]


def test_an_error_in_a_worker_reaches_the_caller_and_the_pool_goes_on():
    pool = cpu_pool.Pool(1)

    def fn(t):
        if t == 1:
            raise ValueError("part 1 failed")
    with pytest.raises(ValueError, match="part 1 failed"):
        pool.run(fn, 2)
    fn, seen, _ = _recording_job(2)
    pool.run(fn, 2)
    assert seen.tolist() == [1, 1]


def test_nested_and_concurrent_jobs_run_on_the_calling_thread():
    pool = cpu_pool.Pool(1)
    inner = []

    def outer(t):
        fn, seen, names = _recording_job(2)
        pool.run(fn, 2)                              # the pool is busy: runs here
        inner.append((seen.tolist(), set(names)))
    pool.run(outer, 2)
    assert [s for s, _ in inner] == [[1, 1], [1, 1]]
    assert all(len(names) == 1 for _, names in inner)

    results, threads = [], []
    for _ in range(4):                               # four Python threads at once
        def job():
            fn, seen, _ = _recording_job(2)
            for _ in range(20):
                seen[:] = 0
                pool.run(fn, 2)
                results.append(seen.tolist())
        threads.append(threading.Thread(target=job))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    assert results == [[1, 1]] * 80


def test_errors_of_a_failed_job_stay_with_it():
    pool = cpu_pool.Pool(1)

    def both_fail(t):
        raise ValueError(f"part {t} failed")
    with pytest.raises(ValueError, match="part 0 failed"):
        pool.run(both_fail, 2)
    fn, seen, _ = _recording_job(2)
    pool.run(fn, 2)                                  # raises nothing left over
    assert seen.tolist() == [1, 1]
