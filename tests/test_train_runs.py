"""What the training script does with its run folder, its arguments and the
operating system: one run per folder, nothing overwritten unasked, every
mistake one line, and no per-step wait for the device."""
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minigrad
import minigrad.models
from minigrad import backend
from minigrad import training as T

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
TINY = ["--dataset", "synthetic", "--synthetic-size", "64", "--width", "4",
        "--blocks-per-stage", "1", "--batch-size", "32", "--epochs", "1", "--quiet",
        "--eval-batch-size", "64"]
# the training script, with two ways to stress it: hold the first SGD step
# until a file appears, or make the disk "full" after N files were written
DRIVER = """
import errno, os, sys, time
import minigrad.optim
from minigrad.training import main
hold = os.environ.get("HOLD_FIRST_STEP")
if hold:
    step = minigrad.optim.SGD.step
    def held(self, *a):
        minigrad.optim.SGD.step = step
        open(hold + ".started", "w").close()
        while not os.path.exists(hold + ".go"):
            time.sleep(0.05)
        return step(self, *a)
    minigrad.optim.SGD.step = held
full = os.environ.get("DISK_FULL_AFTER")
if full:
    calls, fsync = [0], os.fsync
    def fsync_or_full(fd):
        calls[0] += 1
        if calls[0] > int(full):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return fsync(fd)
    os.fsync = fsync_or_full
sys.exit(main(sys.argv[1:]))
"""


def script(argv, timeout=120, **env):
    r = subprocess.run([sys.executable, "-c", DRIVER, *map(str, argv)], cwd=REPO,
                       env=dict(ENV, **env), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def files_of(folder):
    return {n: (folder / n).read_bytes() for n in sorted(os.listdir(folder))
            if not n.startswith(".")}


# ---- the run folder ---------------------------------------------------------------
def test_a_finished_folder_is_only_resumed_or_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert T.main(TINY + ["--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    before = files_of(out)
    assert T.main(TINY + ["--out", str(out), "--seed", "1"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and f"--resume {out}" in line and "--overwrite" in line
    assert "1 of 1 epochs, finished" in line
    assert files_of(out) == before                            # nothing touched
    assert T.main(["--resume", str(out), "--quiet"]) == 0      # continuing is allowed
    assert files_of(out) == before
    assert T.main(TINY + ["--out", str(out), "--seed", "1", "--overwrite"]) == 0
    after = files_of(out)
    assert after["checkpoint.npz"] != before["checkpoint.npz"]
    assert T.load_checkpoint(out)["args"]["seed"] == 1
    assert after["notes.txt"] == b"mine"                       # not a file of the run
    with pytest.raises(SystemExit):                           # one or the other
        T.build_parser().parse_args(["--resume", str(out), "--overwrite"])


def test_a_second_run_into_a_busy_folder_stops_at_once(tmp_path, capsys):
    out, hold = tmp_path / "run", tmp_path / "hold"
    first = subprocess.Popen([sys.executable, "-c", DRIVER, *TINY, "--out", str(out)], cwd=REPO,
                             env=dict(ENV, HOLD_FIRST_STEP=str(hold)), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not Path(f"{hold}.started").exists():
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        t0 = time.time()
        assert T.main(TINY + ["--out", str(out)]) == 2
        assert time.time() - t0 < 10
        line = one_error_line(capsys.readouterr().err)
        assert f"{out} is in use by another training run" in line
        assert f"process {first.pid}" in line and "--out" in line
        assert T.main(["--resume", str(out), "--quiet"]) == 2       # nor resumed meanwhile
        assert "in use" in capsys.readouterr().err
    finally:
        Path(f"{hold}.go").touch()
        stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert [r["epoch"] for r in T.read_metrics_csv(out / "metrics.csv")] == [1]
    assert T.main(["--resume", str(out), "--quiet"]) == 0            # free again


def test_the_default_folder_never_reuses_an_existing_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = T.build_parser().parse_args([])
    first = T.runfolder.run_folder_of(args)
    first.mkdir(parents=True)
    second = T.runfolder.run_folder_of(args)
    assert second != first and second.name.startswith(first.name)


# ---- the command line ----------------------------------------------------------------
BAD_NUMBERS = [("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "2.5"),
               ("--iterations", "0"), ("--subset", "0"), ("--subset", "-5"),
               ("--batch-size", "0"), ("--lr", "-0.1"), ("--lr", "0"), ("--lr", "nan"),
               ("--width", "-1"), ("--width", "0"), ("--blocks-per-stage", "0"),
               ("--warmup", "-1"), ("--momentum", "-0.5"), ("--momentum", "1.5"),
               ("--weight-decay", "-0.0001"), ("--synthetic-size", "0"), ("--val-split", "-1"),
               ("--seed", "-1"), ("--prefetch", "-1"), ("--eval-every", "0"),
               ("--eval-batch-size", "0"), ("--stop-after", "0")]


@pytest.mark.parametrize("flag,value", BAD_NUMBERS)
def test_every_number_is_checked_by_the_parser(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        T.build_parser().parse_args([flag, value])
    assert info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert flag in line and repr(value) in line


def test_a_bad_number_from_the_shell_is_one_line(tmp_path):
    code, out, err = script(TINY + ["--batch-size", "0", "--out", tmp_path / "r"])
    assert code == 2
    assert "--batch-size" in one_error_line(err) and not (tmp_path / "r").exists()
    args = T.build_parser().parse_args(["--epochs", "3", "--lr", "0.05", "--momentum", "0"])
    assert (args.epochs, args.lr, args.momentum) == (3, 0.05, 0.0)


# ---- damaged checkpoints and the operating system -------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "empty", "random"])
def test_resuming_a_damaged_checkpoint_names_the_file(tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert T.main(TINY + ["--out", str(out)]) == 0
    ckpt = out / "checkpoint.npz"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncate": data[:len(data) // 3], "empty": b"",
                      "random": os.urandom(len(data))}[damage])
    capsys.readouterr()
    assert T.main(["--resume", str(out), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(ckpt) in line and "truncated, or not a minigrad checkpoint" in line
    assert "pickle" not in line
    ev = subprocess.run([sys.executable, str(REPO / "examples" / "evaluate.py"), str(out)],
                        env=ENV, capture_output=True, text=True, timeout=120)
    assert ev.returncode == 2 and str(ckpt) in one_error_line(ev.stderr)
    minigrad.save({"w": np.ones(2)}, ckpt)                   # readable, but not a run's
    assert T.main(["--resume", str(out), "--quiet"]) == 2
    assert "not a minigrad training checkpoint" in one_error_line(capsys.readouterr().err)


def test_an_unusable_out_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    out = tmp_path / "file.txt" / "run"
    assert T.main(TINY + ["--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and os.strerror(errno.ENOTDIR) in line


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    # the epoch-0 checkpoint is written, the end-of-epoch one finds the disk full
    code, _, err = script(TINY + ["--epochs", "2", "--out", out], DISK_FULL_AFTER="1")
    assert code == 1
    line = one_error_line(err)
    assert f"{out / 'checkpoint.npz'}: {os.strerror(errno.ENOSPC)}" in line
    assert T.load_checkpoint(out)["iteration"] == 0
    assert sorted(os.listdir(out)) == [".minigrad-run.lock", "checkpoint.npz"]
    code, _, err = script(["--resume", out, "--quiet"])
    assert code == 0, err


# ---- the loop and the device ------------------------------------------------------------
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    """Values come back to the host (``to_numpy``, ``.item()``) only once per
    --log-every steps, never inside a step; the numbers recorded are the same
    as when they are read after every step."""
    import minigrad.optim
    reads, per_step = [0], []

    def counted(fn, only_from_training):
        # to_numpy is counted where the training code calls it (the loss checks
        # its host labels with it too), .item() wherever it is called
        def wrapper(*a, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if not only_from_training or caller.startswith("minigrad.train"):
                reads[0] += 1
            return fn(*a, **k)
        return wrapper
    monkeypatch.setattr(backend, "to_numpy", counted(backend.to_numpy, True))
    monkeypatch.setattr(minigrad.Tensor, "item", counted(minigrad.Tensor.item, False))
    step = minigrad.optim.SGD.step

    def counting_step(self, *a):
        per_step.append(reads[0])
        return step(self, *a)
    monkeypatch.setattr(minigrad.optim.SGD, "step", counting_step)
    threads = minigrad.config.get_num_threads()
    minigrad.config.set_num_threads(1)      # the same numbers in both runs below
    try:
        runs = {}
        for every in (4, 1):
            args = T.build_parser().parse_args(
                TINY + ["--synthetic-size", "256", "--prefetch", "0",
                        "--out", str(tmp_path / f"every{every}")])
            args.log_every = every
            reads[0], per_step[:] = 0, []
            T.train(args, log=lambda *a: None)
            runs[every] = T.load_checkpoint(args.out)
            if every == 4:
                assert np.diff(per_step).tolist() == [0, 0, 0, 1, 0, 0, 0]
    finally:
        minigrad.config.set_num_threads(threads)
    assert runs[4]["iterations"].shape == (8, 5)
    np.testing.assert_array_equal(runs[4]["iterations"], runs[1]["iterations"])
    assert runs[4]["history"][0]["train_loss"] == runs[1]["history"][0]["train_loss"]


def test_layer_response_stds_feeds_the_models_device(monkeypatch):
    minigrad.manual_seed(0)
    model = minigrad.models.create("resnet20", width=4, blocks_per_stage=1)
    batch = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    expected = T.layer_response_stds(model, batch)

    class OnGpu:
        device = "cuda"
    moved = []
    to_device = backend.to_device

    def fake_to_device(array, device):      # a stand-in GPU: record, keep the array
        if device == "cuda":
            moved.append(array.shape)
            return array
        return to_device(array, device)
    monkeypatch.setattr(model, "parameters", lambda: iter([OnGpu()]))
    monkeypatch.setattr(backend, "to_device", fake_to_device)
    assert T.layer_response_stds(model, batch) == expected
    assert moved == [(4, 3, 32, 32)]
