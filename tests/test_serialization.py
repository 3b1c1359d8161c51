"""minigrad.save / minigrad.load: damaged files are reported by name, and a
save killed half-way leaves nothing behind for long."""
import os
import pickle
import signal
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import minigrad
from minigrad.serialization import CheckpointError

GOOD = {"model": {"w": np.arange(2000, dtype=np.float32)}, "epoch": 3}


def _damaged_files(folder):
    """name -> path of files that are not (or no longer) checkpoints."""
    minigrad.save(GOOD, folder / "good.npz")
    data = (folder / "good.npz").read_bytes()
    files = {"truncated": data[:len(data) // 2], "empty": b"", "random": os.urandom(700),
             "pickle": pickle.dumps({"w": 1})}
    flipped = bytearray(data)
    flipped[300] ^= 0xFF                         # inside the array's bytes
    files["flipped byte"] = bytes(flipped)
    for name, content in files.items():
        (folder / f"{name}.npz").write_bytes(content)
    np.savez(folder / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    np.save(folder / "array.npy", np.arange(3))
    with zipfile.ZipFile(folder / "zip.npz", "w") as z:
        z.writestr("readme.txt", "not an array")
    names = list(files) + ["objects", "zip"]
    return {**{n: folder / f"{n}.npz" for n in names}, "npy": folder / "array.npy"}


def test_damaged_files_name_the_file_and_never_suggest_pickle(tmp_path):
    for kind, path in _damaged_files(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            minigrad.load(path)
        msg = str(info.value)
        assert str(path) in msg and "truncated, or not a minigrad checkpoint" in msg, kind
        assert "allow_pickle" not in msg and "\n" not in msg, kind
    assert isinstance(CheckpointError("x"), ValueError)
    with pytest.raises(FileNotFoundError):
        minigrad.load(tmp_path / "missing.npz")


WRITER = """
import sys, time
from minigrad.serialization import atomic_write
def write(f):
    f.write(b"x" * 1_000_000)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_a_save_killed_midway_is_cleaned_up_by_the_next_save(tmp_path):
    target = tmp_path / "checkpoint.npz"
    minigrad.save(GOOD, target)
    for _ in range(2):       # the second writer already removes the first one's leftover
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(target)],
                             stdout=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline().strip() == "writing"
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        left = [n for n in os.listdir(tmp_path) if n != "checkpoint.npz"]
        assert len(left) == 1 and left[0].startswith(".checkpoint.npz."), left
    assert minigrad.load(target)["epoch"] == 3    # the old file is intact
    # a temporary file of a live writer (another process of this host) stays
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        busy = left[0].rsplit("-", 2)[0] + f"-{live.pid}-0000.tmp"
        (tmp_path / busy).write_bytes(b"in progress")
        minigrad.save(dict(GOOD, epoch=4), target)
        assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.npz", busy])
    finally:
        live.kill()
        live.wait()
    assert minigrad.load(target)["epoch"] == 4
