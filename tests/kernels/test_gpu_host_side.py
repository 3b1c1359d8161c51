"""The host side of minigrad's GPU path, on a machine without a GPU.

A stand-in ``cupy`` module (its ``ndarray`` a NumPy subclass) shows what minigrad does
with CuPy arrays without CuPy: how it recognises them, keeps them where they are and
launches the Numba kernels on them.  Also here: the cache of kernel handles, the GPU
benchmark's report markers, and benchmarks/gpu_check.sh refusing to run without a GPU.
"""
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import minigrad
from minigrad import backend, nn
from minigrad import cuda as gpu

REPO = Path(__file__).resolve().parents[2]


class FakeCupyArray(np.ndarray):
    """An array that only the stand-in cupy module owns."""


def fake_cupy(stream_ptr=0):
    """A module named cupy whose ndarray is FakeCupyArray; the rest is NumPy."""
    cp = types.ModuleType("cupy")
    cp.ndarray = FakeCupyArray
    cp.asnumpy = lambda a: np.asarray(a).view(np.ndarray).copy()
    cp.ascontiguousarray = lambda a: np.ascontiguousarray(a).view(FakeCupyArray)
    cp.cuda = types.SimpleNamespace(
        get_current_stream=lambda: types.SimpleNamespace(ptr=stream_ptr))
    cp.__getattr__ = lambda name: getattr(np, name)
    return cp


def on_fake_gpu(a):
    return np.asarray(a, np.float32).view(FakeCupyArray)


@pytest.fixture
def user_imported_cupy(monkeypatch):
    """cupy imported by the user, not (yet) by minigrad."""
    cp = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(backend, "_cupy", None)
    return cp


def test_a_users_cupy_array_is_on_cuda_before_minigrad_imports_cupy(user_imported_cupy):
    a = on_fake_gpu(np.arange(6).reshape(2, 3))
    assert backend.device_of(a) == "cuda"
    assert backend.get_array_module(a) is user_imported_cupy
    t = minigrad.Tensor(a)
    assert t.device == "cuda" and backend.get_array_module(t) is user_imported_cupy
    host = backend.to_device(a, "cpu")                 # through cupy.asnumpy
    assert type(host) is np.ndarray and host.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert backend.device_of(np.zeros(3)) == "cpu"
    assert backend.get_array_module(np.zeros(3)) is np


def test_without_cupy_everything_is_on_the_cpu(monkeypatch):
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(backend, "_cupy", None)
    a = np.zeros((2, 2), np.float32).view(FakeCupyArray)   # nobody owns this type now
    assert backend.device_of(a) == "cpu" and backend.get_array_module(a) is np
    assert "cupy" not in sys.modules                     # and nothing imported CuPy


def test_dense_predict_keeps_a_gpu_batch_where_it_is(user_imported_cupy):
    """dense_predict hands the network the array it was given: a CuPy batch is never
    converted through NumPy (CuPy refuses that implicit copy)."""
    from minigrad.models import DenseVGG, dense_predict

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []

        def forward(self, x):
            self.seen.append(backend.device_of(x.data))
            return x

    spy = Spy()
    dense = DenseVGG(spy, nn.Sequential(), "spy")
    batch = on_fake_gpu(np.random.default_rng(0).standard_normal((2, 3, 4, 4)))
    probs = dense_predict(dense, batch, flip=True)
    assert spy.seen == ["cuda", "cuda"]                  # the image and its mirror
    assert probs.shape == (2, 3) and probs.device == "cuda"


def test_kernel_handles_are_looked_up_once(monkeypatch):
    """get_kernel asks the compiled module for a function once per (file, name), not at
    every launch."""
    asked = []

    class Module:
        def get_function(self, name):
            asked.append(name)
            return object()

    monkeypatch.setattr(gpu, "_kernels", {})
    monkeypatch.setattr(gpu, "load_module", lambda filename: Module())
    first = gpu.get_kernel("conv3x3.cu", "conv3x3_forward")
    assert gpu.get_kernel("conv3x3.cu", "conv3x3_forward") is first
    gpu.get_kernel("conv3x3.cu", "conv3x3_backward_input")
    gpu.get_kernel("conv3x3.cu", "conv3x3_forward")
    assert asked == ["conv3x3_forward", "conv3x3_backward_input"]


def test_numba_kernels_launch_on_cupys_stream_without_a_sync(monkeypatch):
    """The Numba launchers view CuPy arrays with sync=False and launch on CuPy's current
    stream (so Numba does not wait on the host for each array argument)."""
    from minigrad.kernels import numba_cuda as nc
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(stream_ptr=0x5EED))
    syncs, launches = [], []
    # (the simulator has no as_cuda_array: it never sees a CuPy array)
    monkeypatch.setattr(nc.cuda, "as_cuda_array", raising=False,
                        value=lambda a, sync=True: syncs.append(sync) or ("view", a.shape))
    monkeypatch.setattr(nc.cuda, "external_stream", raising=False,
                        value=lambda ptr: ("stream", ptr))
    monkeypatch.setattr(nc, "_streams", {})

    class Kernel:
        def __getitem__(self, config):
            return lambda *args: launches.append((config, args))

    for name in ("conv3x3_forward_kernel", "conv3x3_backward_input_kernel",
                 "conv3x3_backward_weight_kernel"):
        monkeypatch.setattr(nc, name, Kernel())
    x, w = on_fake_gpu(np.zeros((2, 3, 9, 9))), on_fake_gpu(np.zeros((4, 3, 3, 3)))
    y = on_fake_gpu(np.zeros((2, 4, 9, 9)))
    nc.forward(x, w, y, 1, 1)
    nc.backward_input(y, w, x, 1, 1)
    nc.backward_weight(x, y, on_fake_gpu(np.zeros((2, 4, 3, 3, 3))), 1, 1)
    assert len(launches) == 3 and syncs == [False] * 9
    for (grid, block, stream), args in launches:
        assert stream == ("stream", 0x5EED)
        assert all(a[0] == "view" for a in args[:3])
    assert launches[0][1][3:] == (1, 1)                  # stride, padding


# --- the GPU benchmark's report ---------------------------------------------------------------
def test_gpu_bench_writes_between_its_markers(tmp_path):
    from benchmarks import gpu_bench as gb
    doc = tmp_path / "gpu.md"
    doc.write_text(f"# GPU\nkept above\n{gb.MARK_START}\nold figures\n{gb.MARK_END}\nkept below\n")
    gb.write_docs("| new | figures |\n", doc)
    once = doc.read_text()
    assert once == (f"# GPU\nkept above\n{gb.MARK_START}\n| new | figures |\n{gb.MARK_END}\n"
                    "kept below\n")
    gb.write_docs("| new | figures |\n", doc)
    assert doc.read_text() == once                      # a rerun replaces, never appends
    plain = tmp_path / "plain.md"
    plain.write_text("no markers here\n")
    with pytest.raises(ValueError, match="gpu-bench:start"):
        gb.write_docs("| new |\n", plain)
    assert plain.read_text() == "no markers here\n"     # refused, untouched


def test_the_gpu_docs_carry_the_markers():
    from benchmarks import gpu_bench as gb
    text = (REPO / "docs" / "gpu.md").read_text(encoding="utf-8")
    assert text.count(gb.MARK_START) == 1 and text.count(gb.MARK_END) == 1
    assert text.index(gb.MARK_START) < text.index(gb.MARK_END)
    assert gb.DOC == REPO / "docs" / "gpu.md"


def test_gpu_bench_report_has_no_markers_of_its_own():
    from benchmarks import gpu_bench as gb
    rows = [{"shape": "C16 32x32", "cupy": ((1.0, 0.9), (3.0, 2.9))}]
    text = gb.markdown(rows, ["cupy"], {"cupy": 12.5}, 20, "Some GPU")
    assert gb.MARK_START not in text and gb.MARK_END not in text
    assert "Some GPU" in text and "| C16 32x32 | 1.000 (0.900) | 3.000 (2.900) |" in text
    assert "| cupy | 12.5 |" in text


# --- benchmarks/gpu_check.sh -----------------------------------------------------------------
def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    script = REPO / "benchmarks" / "gpu_check.sh"
    assert os.access(script, os.X_OK), "benchmarks/gpu_check.sh must be executable"
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([str(script), str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1 and "no usable NVIDIA GPU" in lines[0], lines
    assert not (tmp_path / "out").exists()               # nothing started, nothing written
