"""examples/train_cifar_resnet.py under ``mpiexec -n 2``.

A tiny ResNet (width 4, one block per stage) on 192 synthetic images: 160 to
train (2 ranks x 16 of each global batch of 32: 5 steps per epoch), 32 held
out for validation, 38 test images in evaluation batches of 16 (3 batches:
rank 0 takes two, rank 1 one).  Every launch goes through
tests/_distributed_train.py, which can make one rank fail."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigrad import training as T
from minigrad.data.transforms import SubtractMean
from minigrad.serialization import load_npz

from _mpi_launch import REPO, launch

DRIVER = REPO / "tests" / "_distributed_train.py"
TINY = ["--dataset", "synthetic", "--synthetic-size", "192", "--val-split", "32", "--width",
        "4", "--blocks-per-stage", "1", "--batch-size", "32", "--eval-batch-size", "16",
        "--quiet", "--epochs", "2"]


def train_ranks(argv, cwd, fault=("none", 0, 0), timeout=120):
    return launch(2, [DRIVER, *fault, *argv], timeout, cwd=cwd)


def error_lines(out):
    return [line for line in out.splitlines() if "error:" in line]


def rows(folder):
    with open(Path(folder) / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """Two epochs on two ranks without interruption, into the default folder."""
    cwd = tmp_path_factory.mktemp("whole")
    code, out, _ = train_ranks(TINY, cwd)
    assert code == 0, out
    folders = list((cwd / "runs").iterdir())
    assert len(folders) == 1, folders                 # rank 0 alone makes the run folder
    return folders[0], out


def test_two_ranks_report_once_and_their_test_error_is_the_checkpoints(whole_run):
    folder, out = whole_run
    assert out.count("final test error") == 1 and out.count("epoch   2/2") == 1, out
    assert "batch 32 = 2 processes x 16" in out and "Traceback" not in out, out
    ckpt = T.load_checkpoint(folder)
    assert (ckpt["world_size"], ckpt["iteration"], len(ckpt["history"])) == (2, 10, 2)
    ev = T.evaluate_checkpoint(folder, batch_size=250, log=lambda *a: None)  # one process
    last = ckpt["history"][-1]
    assert ev["n"] == 38
    assert (ev["top1_err"], ev["top5_err"]) == (last["test_err"], last["test_top5_err"])
    # the loss too (finer than 38 errors): each rank evaluated with rank 0's BN statistics
    model, args = T.model_from_checkpoint(ckpt)
    data = T.load_data(args, log=lambda *a: None)
    tf = SubtractMean(np.asarray(ckpt["mean_image"], dtype=np.float32))
    assert T.evaluate(model, *data.test, 16, tf)["loss"] == pytest.approx(last["test_loss"],
                                                                          rel=1e-6)
    assert [r["epoch"] for r in rows(folder)] == ["1", "2"]


def test_an_interrupted_two_rank_run_resumes_exactly(tmp_path, whole_run):
    """SIGTERM reaches rank 1 alone, after its 7th update (epoch 2, batch 2 of
    5): both ranks stop after that step, and the resumed run ends with the
    weights, momenta, losses and errors of the uninterrupted one."""
    whole, parts = whole_run[0], tmp_path / "parts"
    code, out, _ = train_ranks(TINY + ["--out", parts], tmp_path, fault=("term", 1, 7))
    assert code == 130, out
    assert out.count("interrupted at epoch 2, after batch 2 of 5") == 1, out
    assert f"mpiexec -n 2 python examples/train_cifar_resnet.py --resume {parts}" in out
    ck = T.load_checkpoint(parts)
    assert (ck["iteration"], ck["complete_epoch"]) == (7, False)
    assert ck["partial"]["seen"] == 64              # both ranks' images of the two batches
    code, out, _ = train_ranks(["--resume", parts, "--quiet"], tmp_path)
    assert code == 0 and "resuming" in out and "batch 3" in out, out
    assert rows(parts) == rows(whole)
    a, b = load_npz(Path(whole) / "checkpoint.npz"), load_npz(parts / "checkpoint.npz")
    np.testing.assert_array_equal(a["iterations"], b["iterations"])     # every loss
    for k in a["model"]:
        np.testing.assert_array_equal(a["model"][k], b["model"][k], err_msg=k)
    for i in a["optimizer"]["state"]:
        np.testing.assert_array_equal(a["optimizer"]["state"][i]["momentum_buffer"],
                                      b["optimizer"]["state"][i]["momentum_buffer"])
    assert a["rng"] == b["rng"]


def test_a_rank_that_raises_while_training_ends_every_rank(tmp_path):
    code, out, seconds = train_ranks(TINY + ["--out", tmp_path / "r", "--sync-bn"], tmp_path,
                                     fault=("raise", 1, 3), timeout=60)
    assert code != 0, out
    assert seconds < 30, f"took {seconds:.1f} s"
    assert "rank 1 fails on purpose" in out and "aborting all ranks" in out, out


def test_setup_errors_end_every_rank_with_one_line(tmp_path, whole_run):
    folder = whole_run[0]
    cases = [(["--epochs", "0"], "argument --epochs"),
             (TINY + ["--batch-size", "31"], "must be a multiple of 2"),
             (TINY + ["--out", folder], "already holds a run"),
             (TINY + ["--out", tmp_path / "n"], "(rank 1 of 2) no data on the machine of rank 1")]
    for argv, wanted in cases:
        fault = ("nodata", 1, 0) if "no data" in wanted else ("none", 0, 0)
        code, out, _ = train_ranks(argv, tmp_path, fault=fault, timeout=60)
        lines = error_lines(out)
        assert code == 2 and len(lines) == 1 and wanted in lines[0], out
        assert "Traceback" not in out, out
    # one process cannot continue a two-process run exactly: it says how to
    r = subprocess.run([sys.executable, REPO / "examples" / "train_cifar_resnet.py", "--resume",
                        folder], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "trained by 2 processes, this is 1 process" in lines[0]
    assert "mpiexec -n 2" in lines[0]
