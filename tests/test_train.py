"""minigrad.training: schedules, top-k error, files, and exact resume.

The resume tests train a tiny ResNet (width 4, one block per stage) on a few
hundred synthetic images: an interrupted-and-resumed run must end with the
very same weights and metrics.csv rows (except wall-clock seconds) as an
uninterrupted one."""
import csv
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import minigrad
import minigrad.models
import minigrad.optim
from minigrad import training as T
from minigrad.serialization import load_npz

# training runs go to a subprocess with one BLAS thread: on a shared machine a
# multi-threaded BLAS is several times slower for these tiny matrices
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
DRIVER = """
import os, signal, sys
import minigrad.optim
from minigrad.training import main
stop_at = int(sys.argv[1])
if stop_at:
    step, calls = minigrad.optim.SGD.step, [0]
    def counting_step(self, *a):
        out = step(self, *a)
        calls[0] += 1
        if calls[0] == stop_at:          # Ctrl-C right after this update
            os.kill(os.getpid(), signal.SIGINT)
        return out
    minigrad.optim.SGD.step = counting_step
sys.exit(main(sys.argv[2:]))
"""


def train_main(argv, interrupt_after=0, env=None, cwd=None):
    """Run ``minigrad.training.main(argv)`` in a fresh process; returns (code, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-c", DRIVER, str(interrupt_after), *map(str, argv)],
                       env=env or ENV, capture_output=True, text=True, timeout=300, cwd=cwd)
    return r.returncode, r.stdout, r.stderr


TINY = ["--dataset", "synthetic", "--synthetic-size", "160", "--width", "4",
        "--blocks-per-stage", "1", "--batch-size", "32", "--quiet", "--eval-batch-size", "64"]


def test_paper_schedule():
    f = T.lr_factor_fn("paper", 64000)
    assert [f(i) for i in (0, 31999, 32000, 47999, 48000, 63999)] == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    args = T.build_parser().parse_args(["--model", "resnet110"])
    assert T.default_warmup(args) == 400
    assert T.default_warmup(T.build_parser().parse_args([])) == 0
    w = T.lr_factor_fn("paper", 64000, warmup=400)
    assert [w(i) for i in (0, 399, 400, 32000, 48000)] == pytest.approx([0.1, 0.1, 1, 0.1, 0.01])
    args = T.build_parser().parse_args(["--schedule", "paper"])
    assert T.plan(args, 391) == (64000, 164)          # 64k iterations = 164 epochs of 391


def test_step_and_cosine_schedules():
    s = T.lr_factor_fn("step", 100)
    assert [s(i) for i in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, .1, .1, .01, .01])
    c = T.lr_factor_fn("cosine", 100)
    assert c(0) == 1 and c(50) == pytest.approx(0.5) and c(100) == pytest.approx(0)
    assert T.plan(T.build_parser().parse_args(["--epochs", "3"]), 10) == (30, 3)
    assert T.plan(T.build_parser().parse_args(["--iterations", "25"]), 10) == (25, 3)


def test_topk_error_against_loop():
    rng = np.random.default_rng(0)
    logits = rng.permutation(40 * 10).reshape(40, 10).astype(np.float32)   # no ties
    labels = rng.integers(0, 10, 40)
    for k in (1, 3, 5):
        wrong = sum(labels[i] not in np.argsort(-logits[i])[:k] for i in range(40))
        assert T.topk_error(logits, labels, k) == pytest.approx(wrong / 40)
    assert T.topk_error(logits, labels, 10) == 0.0


def test_ten_crop_views():
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    views = T.ten_crop_views(x)
    assert len(views) == 10 and all(v.shape == x.shape for v in views)
    np.testing.assert_array_equal(views[4], x)                  # centre of the padded image
    np.testing.assert_array_equal(views[9], x[..., ::-1])
    np.testing.assert_array_equal(views[3][:, :, :28, :28], x[:, :, 4:, 4:])   # bottom-right
    assert not views[0][:, :, :4].any()                          # top-left sees the padding


def test_metrics_csv_and_curves(tmp_path):
    rows = [{"epoch": 1, "iteration": 5, "train_loss": 2.0, "train_err": 0.8, "test_loss": 1.9,
             "test_err": 0.7, "test_top5_err": 0.2, "lr": 0.1, "seconds": 1.5},
            {"epoch": 2, "iteration": 10, "train_loss": 1.5, "train_err": 0.6, "lr": 0.01,
             "seconds": 1.4}]
    T.write_metrics_csv(rows, tmp_path / "m.csv")
    back = T.read_metrics_csv(tmp_path / "m.csv")
    assert back[0]["test_err"] == 0.7 and back[1]["test_err"] is None
    assert back[1]["val_err"] is None and back[1]["lr"] == 0.01
    T.plot_curves(rows, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_matches_manual_forward():
    minigrad.manual_seed(0)
    model = minigrad.models.create("resnet20", width=4, blocks_per_stage=1)
    imgs = np.random.default_rng(1).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(10)
    model.train()
    ev = T.evaluate(model, imgs, labels, batch_size=4)
    assert model.training                                   # mode restored
    model.eval()
    with minigrad.no_grad():
        logits = model(minigrad.Tensor(imgs.astype(np.float32) / 255)).numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert ev["loss"] == pytest.approx(-np.log(p[np.arange(10), labels]).mean(), rel=1e-4)
    assert ev["top1_err"] == pytest.approx(np.mean(logits.argmax(1) != labels))


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _final_state(run):
    return load_npz(os.path.join(run, "checkpoint.npz"))


def _assert_same_run(a, b):
    assert _rows(os.path.join(a, "metrics.csv")) == _rows(os.path.join(b, "metrics.csv"))
    sa, sb = _final_state(a), _final_state(b)
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        np.testing.assert_array_equal(sa["model"][k], sb["model"][k], err_msg=k)
    for i in sa["optimizer"]["state"]:
        np.testing.assert_array_equal(sa["optimizer"]["state"][i]["momentum_buffer"],
                                      sb["optimizer"]["state"][i]["momentum_buffer"])
    assert sa["rng"] == sb["rng"] and sa["iteration"] == sb["iteration"]


RUN = TINY + ["--epochs", "4", "--val-split", "32"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """4 epochs without interruption (128 training images: 4 iterations each)."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    code, _, err = train_main(RUN + ["--out", out])
    assert code == 0, err
    return out


def test_resume_equals_uninterrupted(tmp_path, reference_run):
    a = str(tmp_path / "a")
    code, out, err = train_main(RUN + ["--out", a, "--stop-after", "2"])
    assert code == 0 and "--resume" in out, err
    assert len(_rows(os.path.join(a, "metrics.csv"))) == 2
    code, out, err = train_main(["--resume", a, "--quiet"])
    assert code == 0, err
    assert "resuming" in out and "at epoch 3" in out
    assert "resnet20 on synthetic: 4 epochs" in out and "s/epoch" in out
    rows = _rows(os.path.join(a, "metrics.csv"))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert all(r["val_err"] != "" and 0 <= float(r["test_err"]) <= 1 for r in rows)
    _assert_same_run(a, reference_run)
    # resuming a finished run changes nothing
    assert T.main(["--resume", a, "--quiet"]) == 0
    _assert_same_run(a, reference_run)


def test_mid_epoch_interrupt_resumes_exactly(tmp_path, reference_run):
    """A Ctrl-C in the middle of epoch 2 (delivered after the 7th update of
    4 per epoch): the checkpoint saved then continues to the same result."""
    a = str(tmp_path / "a")
    code, out, err = train_main(RUN + ["--out", a], interrupt_after=7)
    assert code == 130, err
    assert "epoch 2, after batch 3 of 4" in err and f"--resume {a}" in err
    ck = T.load_checkpoint(a)
    assert ck["complete_epoch"] is False and ck["iteration"] == 7
    assert ck["rng"]["loader"] == {"seed": 0, "epoch": 1, "batch": 3}
    assert len(ck["history"]) == 1
    assert train_main(["--resume", a, "--quiet"])[0] == 0
    _assert_same_run(a, reference_run)


def test_stop_flag_installs_and_restores_handlers():
    before = signal.getsignal(signal.SIGINT)
    messages = []
    with T.StopFlag(messages.append) as flag:
        assert signal.getsignal(signal.SIGINT) is not before
        os.kill(os.getpid(), signal.SIGINT)            # first Ctrl-C: only a flag
        assert flag.set and "finishing this batch" in messages[0]
        with pytest.raises(KeyboardInterrupt):          # second Ctrl-C: stop now
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_bad_arguments_are_clear(tmp_path, capsys):
    assert T.main(["--model", "resnet21", "--dataset", "synthetic", "--out",
                   str(tmp_path / "m")]) == 2
    assert "unknown CIFAR model 'resnet21'" in capsys.readouterr().err
    assert T.main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no data found" in err and "missing" in err and "Traceback" not in err
    assert T.main(TINY + ["--val-split", "100000", "--out", str(tmp_path / "v")]) == 2
    assert "--val-split" in capsys.readouterr().err
    assert T.main(["--resume", str(tmp_path / "nothing")]) == 2
    if not minigrad.cuda_available():
        assert T.main(["--device", "cuda", "--out", str(tmp_path / "c")]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


def test_fallback_to_synthetic_is_loud(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "MINIGRAD_CIFAR10_DIR"}
    env["MINIGRAD_DATA"] = str(tmp_path / "empty-cache")
    argv = ["--no-download", "--synthetic-size", "64", "--width", "4", "--blocks-per-stage",
            "1", "--batch-size", "32", "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")]
    code, out, err = train_main(argv, env=env, cwd=tmp_path)     # no data/ folder here
    assert code == 0, err
    assert out.count("TRAINING ON A SYNTHETIC DATASET INSTEAD") == 2     # start and end
    assert "CIFAR-10 not found" in out and "empty-cache" in out
    ck = T.load_checkpoint(tmp_path / "r")
    assert ck["args"]["dataset"] == "synthetic" and ck["args"]["synthetic_fallback"] is True


def test_resume_with_the_default_threads_is_bit_identical(tmp_path):
    """With minigrad's default threads (the CPU kernels split their reductions
    across the thread pool): a run stopped by Ctrl-C in the middle of its
    epoch and resumed ends with every loss and every weight bit-identical to
    an uninterrupted run."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    argv = ["--dataset", "synthetic", "--synthetic-size", "512", "--width", "8",
            "--blocks-per-stage", "1", "--batch-size", "32", "--epochs", "1", "--seed", "5",
            "--quiet", "--eval-batch-size", "128"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert train_main(argv + ["--out", whole], env=env)[0] == 0
    code, _, err = train_main(argv + ["--out", parts], interrupt_after=7, env=env)
    assert code == 130, err
    assert train_main(["--resume", parts, "--quiet"], env=env)[0] == 0
    a, b = _final_state(whole), _final_state(parts)
    assert a["iterations"].shape == (16, 5)
    np.testing.assert_array_equal(a["iterations"], b["iterations"])     # every loss
    _assert_same_run(whole, parts)                                       # every weight
