"""The example scripts end to end, as a user runs them (subprocesses, tiny settings)."""
import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigrad import training as T

REPO = Path(__file__).resolve().parents[1]
EX = REPO / "examples"
TINY = ["--dataset", "synthetic", "--width", "4", "--blocks-per-stage", "1", "--quiet"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
           PYTHONUNBUFFERED="1")


def example(name):
    """Import an example script as a module (to call its main() in-process)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"example_{name}", EX / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script, *args, timeout=120):
    return subprocess.run([sys.executable, str(EX / script), *map(str, args)], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def test_smoke_real_cifar10(cifar10_dir, tmp_path):
    """One short epoch on 768 real images: finishes well under a minute and
    the training loss falls."""
    t0 = time.time()
    r = run("train_cifar_resnet.py", "--data-dir", cifar10_dir, "--subset", 768, "--epochs", 1,
            "--batch-size", 64, "--width", 8, "--blocks-per-stage", 1, "--schedule", "cosine",
            "--quiet", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    assert time.time() - t0 < 60
    assert "on cifar10: 1 epochs" in r.stdout and "SYNTHETIC" not in r.stdout
    with open(tmp_path / "run" / "iterations.csv") as f:
        loss = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(loss) == 12
    assert np.mean(loss[-3:]) < np.mean(loss[:3]) - 0.1, loss
    row = T.read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]
    assert row["test_err"] < 0.9 and row["test_top5_err"] < row["test_err"]
    assert (tmp_path / "run" / "curves.png").exists()


def test_sigint_leaves_resumable_checkpoint(tmp_path):
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, str(EX / "train_cifar_resnet.py"), *TINY,
                          "--synthetic-size", "4800", "--batch-size", "16", "--epochs", "2",
                          "--out", str(out)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (out / "checkpoint.npz").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)                          # well inside epoch 1 (300 batches)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    ck = T.load_checkpoint(out)
    assert 0 < ck["iteration"] < 600
    r = run("train_cifar_resnet.py", "--resume", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in T.read_metrics_csv(out / "metrics.csv")] == [1, 2]
    assert T.load_checkpoint(out)["iteration"] == 600


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    assert T.main(TINY + ["--synthetic-size", "128", "--batch-size", "32", "--epochs", "2",
                          "--out", str(out)]) == 0
    return out


def _err(text):
    m = re.search(r"top-1 error ([\d.]+)%, top-5 error ([\d.]+)%", text)
    assert m, text
    return float(m.group(1)) / 100, float(m.group(2)) / 100


def test_evaluate_script(tiny_run, capsys):
    r = run("evaluate.py", tiny_run)
    assert r.returncode == 0, r.stderr
    top1, top5 = _err(r.stdout)
    last = T.read_metrics_csv(tiny_run / "metrics.csv")[-1]
    assert top1 == pytest.approx(last["test_err"], abs=1e-4)     # same number as training
    assert top5 == pytest.approx(last["test_top5_err"], abs=1e-4)
    evaluate = example("evaluate")
    for flag in ("--flip", "--ten-crop"):
        assert evaluate.main([str(tiny_run / "checkpoint.npz"), flag]) == 0
        assert 0 <= _err(capsys.readouterr().out)[0] <= 1
    assert evaluate.main([str(tiny_run), "--dense"]) == 2
    assert "not a VGG" in capsys.readouterr().err


def test_degradation_script(tmp_path, capsys):
    args = ["--models", "plain20,resnet20", *TINY, "--synthetic-size", "96", "--batch-size",
            "32", "--epochs", "2", "--std-batch", "16", "--out", tmp_path]
    r = run("degradation.py", *args)
    assert r.returncode == 0, r.stderr
    for name in ("training_error.png", "layer_std.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "degradation.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r_["model"], r_["epoch"]) for r_ in rows] == \
        [("plain20", "1"), ("plain20", "2"), ("resnet20", "1"), ("resnet20", "2")]
    with open(tmp_path / "layer_std.csv") as f:
        stds = list(csv.DictReader(f))
    assert [s["layer"] for s in stds] == ["layer1.0.bn2", "layer2.0.bn2", "layer3.0.bn2"] * 2
    assert all(float(s["std"]) > 0 for s in stds)
    assert sorted(int(s["rank"]) for s in stds[:3]) == [1, 2, 3]
    assert example("degradation").main(list(map(str, args))) == 0   # finished: skipped
    assert capsys.readouterr().out.count("already trained") == 2
