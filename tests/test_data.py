"""minigrad.data: CIFAR / MNIST readers, downloads, transforms, DataLoader.

Oracles: pickles written here exactly like the official files, the numbers
of the real subset's PROVENANCE.md, naive per-image loops for every
transform."""
import gzip
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest

from minigrad.data import (CIFAR10, CIFAR100, MNIST, CorruptDatasetError, DataLoader,
                           DatasetError, DatasetNotFoundError, DownloadError, SyntheticImages,
                           download_url)
from minigrad.data import download as dl
from minigrad.data import transforms as T

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
         "truck"]


# ---------------------------------------------------------------------------
# writing CIFAR-format files like the official ones
# ---------------------------------------------------------------------------
def _batch_bytes(rows, labels, label_key=b"labels", extra=None):
    d = {b"batch_label": b"training batch", label_key: list(map(int, labels)), b"data": rows,
         b"filenames": [b"img_%05d.png" % i for i in range(len(labels))]}
    d.update(extra or {})
    return pickle.dumps(d, protocol=2)


def _make_cifar(counts=(7, 5, 6, 4, 3), test=5, seed=0):
    """{filename: bytes} of a tiny CIFAR-10 python folder, and the arrays."""
    rng = np.random.default_rng(seed)
    files, xs, ys = {}, [], []
    for i, k in enumerate(counts, start=1):
        rows = rng.integers(0, 256, (k, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, k)
        files[f"data_batch_{i}"] = _batch_bytes(rows, labels)
        xs.append(rows)
        ys.append(labels)
    trows = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    tlabels = rng.integers(0, 10, test)
    files["test_batch"] = _batch_bytes(trows, tlabels)
    files["batches.meta"] = pickle.dumps({b"label_names": [n.encode() for n in NAMES],
                                          b"num_cases_per_batch": 10000, b"num_vis": 3072},
                                         protocol=2)
    return files, (np.concatenate(xs), np.concatenate(ys)), (trows, tlabels)


def _write_dir(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    return folder


def _write_tar(path, files, folder="cifar-10-batches-py"):
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def _check_against(ds, rows, labels):
    assert ds.data.dtype == np.uint8 and ds.data.shape == (len(rows), 3, 32, 32)
    assert ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.targets, labels)
    # row layout: 1024 red values (row-major), then green, then blue
    for i in (0, len(rows) - 1):
        for c in range(3):
            for y in (0, 13, 31):
                for x in (0, 5, 31):
                    assert ds.data[i, c, y, x] == rows[i][c * 1024 + y * 32 + x]


def test_cifar10_folder(tmp_path):
    files, (x, y), (tx, ty) = _make_cifar()
    root = _write_dir(tmp_path / "cifar-10-batches-py", files)
    train = CIFAR10(root)
    _check_against(train, x, y)
    _check_against(CIFAR10(root, train=False), tx, ty)
    assert train.classes == NAMES
    # the parent folder works too
    _check_against(CIFAR10(tmp_path), x, y)


def test_cifar10_tar_gz(tmp_path):
    files, (x, y), (tx, ty) = _make_cifar(counts=(3, 2, 4, 1, 2))
    archive = _write_tar(tmp_path / "cifar-10-python.tar.gz", files)
    _check_against(CIFAR10(archive), x, y)
    _check_against(CIFAR10(tmp_path, train=False), tx, ty)     # folder holding the archive


def test_cifar100(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    fine, coarse = rng.integers(0, 100, 6), rng.integers(0, 20, 6)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        (folder / name).write_bytes(_batch_bytes(rows, fine, b"fine_labels",
                                                 {b"coarse_labels": list(map(int, coarse))}))
    ds = CIFAR100(tmp_path)
    _check_against(ds, rows, fine)
    np.testing.assert_array_equal(ds.coarse_targets, coarse)


def test_real_cifar10_subset(cifar10_dir):
    train, test = CIFAR10(cifar10_dir), CIFAR10(cifar10_dir, train=False)
    assert train.data.shape == (5438, 3, 32, 32) and test.data.shape == (1017, 3, 32, 32)
    assert train.data.dtype == np.uint8 and train.targets.dtype == np.int64
    assert train.classes == NAMES
    # PROVENANCE.md: class counts and the well-known first labels / pixels
    assert np.bincount(train.targets, minlength=10).tolist() == \
        [541, 564, 524, 529, 563, 523, 540, 548, 572, 534]
    assert np.bincount(test.targets, minlength=10).tolist() == \
        [105, 93, 100, 104, 92, 87, 114, 102, 110, 110]
    assert train.targets[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert train.data[0, 0, 0, :5].tolist() == [59, 43, 50, 68, 98]
    assert test.targets[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert test.data[0, 0, 0, :5].tolist() == [158, 159, 165, 166, 160]
    both = np.concatenate([train.data, test.data])
    means = both.reshape(len(both), 3, -1).mean(axis=(0, 2), dtype=np.float64)
    np.testing.assert_allclose(means, [126.05, 123.67, 114.42], atol=0.05)
    # per file (data_batch_4 is the one with 1285 images)
    sl = slice(1102 + 1017 + 1017, 1102 + 1017 + 1017 + 1285)
    m4 = train.data[sl].reshape(1285, 3, -1).mean(axis=(0, 2), dtype=np.float64)
    np.testing.assert_allclose(m4, [127.35, 124.16, 115.08], atol=0.05)


# ---------------------------------------------------------------------------
# clear errors
# ---------------------------------------------------------------------------
def test_missing_directory(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        CIFAR10(tmp_path / "nowhere")
    msg = str(e.value)
    assert "nowhere" in msg and "data_batch_1" in msg and "--data-dir" in msg
    assert isinstance(e.value, RuntimeError)


@pytest.mark.parametrize("damage, expect", [
    (lambda raw: raw[:len(raw) // 2], "truncated"),
    (lambda raw: b"this is not a pickle at all" * 10, "truncated or not a CIFAR"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2), "'labels'"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
                              protocol=2), "3072"),
    (lambda raw: pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},
                              protocol=2), "1 labels"),
])
def test_corrupt_batch_file(tmp_path, damage, expect):
    files, _, _ = _make_cifar()
    files["data_batch_3"] = damage(files["data_batch_3"])
    root = _write_dir(tmp_path / "c", files)
    with pytest.raises(CorruptDatasetError) as e:
        CIFAR10(root)
    assert "data_batch_3" in str(e.value) and expect in str(e.value)


def test_pickle_cannot_run_code(tmp_path):
    files, _, _ = _make_cifar()
    files["data_batch_1"] = pickle.dumps(
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [os.system]}, protocol=2)
    with pytest.raises(CorruptDatasetError, match="unexpected object"):
        CIFAR10(_write_dir(tmp_path / "c", files))


def test_corrupt_archive(tmp_path):
    files, _, _ = _make_cifar()
    raw = _write_tar(tmp_path / "a.tar.gz", files).read_bytes()
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz"):
        CIFAR10(bad)


# ---------------------------------------------------------------------------
# downloads (no network: urlopen is replaced)
# ---------------------------------------------------------------------------
class _FakeResponse:
    def __init__(self, payload, fail_after=None, exc=None):
        self.buf, self.fail_after, self.exc, self.sent = io.BytesIO(payload), fail_after, exc, 0
        self.headers = {"Content-Length": str(len(payload))}

    def read(self, n):
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise self.exc
        chunk = self.buf.read(min(n, 1000))
        self.sent += len(chunk)
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def _serve(monkeypatch, payload, **kw):
    monkeypatch.setattr(dl, "urlopen", lambda url, timeout=None: _FakeResponse(payload, **kw))


PAYLOAD = bytes(range(256)) * 40


def test_download_ok(tmp_path, monkeypatch):
    _serve(monkeypatch, PAYLOAD)
    path = download_url("http://x/f.bin", tmp_path / "f.bin", hashlib.md5(PAYLOAD).hexdigest(),
                        progress=False)
    assert path.read_bytes() == PAYLOAD and os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("exc, kind", [(ConnectionResetError("reset by peer"), DownloadError),
                                       (urllib.error.URLError("timed out"), DownloadError),
                                       (KeyboardInterrupt(), KeyboardInterrupt)])
def test_download_failing_midway_leaves_nothing(tmp_path, monkeypatch, exc, kind):
    _serve(monkeypatch, PAYLOAD, fail_after=3000, exc=exc)
    with pytest.raises(kind) as e:
        download_url("http://x/f.bin", tmp_path / "f.bin", progress=False)
    assert os.listdir(tmp_path) == []
    if kind is DownloadError:
        assert "broke off after 3,000 bytes" in str(e.value) and "nothing was kept" in str(e.value)


def test_download_md5_mismatch(tmp_path, monkeypatch):
    _serve(monkeypatch, PAYLOAD)
    with pytest.raises(DownloadError, match="corrupt: MD5"):
        download_url("http://x/f.bin", tmp_path / "f.bin", "0" * 32, progress=False)
    assert os.listdir(tmp_path) == []


def test_download_offline(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")
    monkeypatch.setattr(dl, "urlopen", offline)
    with pytest.raises(DownloadError) as e:
        CIFAR10(tmp_path, download=True)
    assert "offline" in str(e.value) and str(tmp_path / "cifar-10-python.tar.gz") in str(e.value)
    assert os.listdir(tmp_path) == []


def test_cifar10_download(tmp_path, monkeypatch):
    files, (x, y), _ = _make_cifar(counts=(2, 2, 2, 2, 2))
    payload = _write_tar(tmp_path / "src.tar.gz", files).read_bytes()
    (tmp_path / "src.tar.gz").unlink()
    _serve(monkeypatch, payload)
    monkeypatch.setattr(CIFAR10, "md5", hashlib.md5(payload).hexdigest())
    monkeypatch.setenv("MINIGRAD_DATA", str(tmp_path / "cache"))
    ds = CIFAR10(download=True)
    _check_against(ds, x, y)
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()


# ---------------------------------------------------------------------------
# MNIST
# ---------------------------------------------------------------------------
def _idx(arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def test_mnist_idx(tmp_path):
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(_idx(imgs))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    ds = MNIST(tmp_path)
    assert ds.data.shape == (5, 1, 28, 28) and ds.data.dtype == np.uint8
    np.testing.assert_array_equal(ds.data[:, 0], imgs)
    np.testing.assert_array_equal(ds.targets, labels)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01junk"))
    with pytest.raises(CorruptDatasetError, match="train-labels"):
        MNIST(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="t10k-images"):
        MNIST(tmp_path, train=False)


# ---------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------
def test_synthetic_deterministic_and_learnable():
    a, b, c = SyntheticImages(400, seed=0), SyntheticImages(400, seed=0), SyntheticImages(200, seed=1)
    assert a.data.shape == (400, 3, 32, 32) and a.data.dtype == np.uint8
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data[:200], c.data)
    assert np.bincount(a.targets).tolist() == [40] * 10
    # a nearest-class-mean classifier trained on one seed works on another
    means = np.stack([a.data[a.targets == k].reshape(-1, 3072).mean(0) for k in range(10)])
    d = ((c.data.reshape(-1, 1, 3072).astype(float) - means) ** 2).sum(-1)
    assert (d.argmin(1) == c.targets).mean() > 0.5


# ---------------------------------------------------------------------------
# transforms against naive per-image loops
# ---------------------------------------------------------------------------
@pytest.fixture
def batch():
    return np.random.default_rng(3).normal(size=(6, 3, 9, 11)).astype(np.float32)


def test_normalize_and_subtract_mean(batch):
    mean, std = [0.1, -0.2, 0.3], [0.5, 2.0, 1.5]
    out = T.Normalize(mean, std)(batch)
    for n in range(len(batch)):
        for c in range(3):
            np.testing.assert_allclose(out[n, c], (batch[n, c] - mean[c]) / std[c], rtol=1e-6)
    m = batch.mean(0)
    out = T.SubtractMean(m)(batch)
    for n in range(len(batch)):
        np.testing.assert_allclose(out[n], batch[n] - m, atol=1e-7)
    imgs = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    np.testing.assert_allclose(T.mean_image(imgs), imgs.mean(0) / 255, rtol=1e-6)
    with pytest.raises(ValueError, match="Normalize"):
        T.Normalize([0.0], [1.0])(batch)


def test_random_crop(batch):
    out = T.RandomCrop((7, 8), padding=2)(batch, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    n = len(batch)
    oy, ox = rng.integers(0, 13 - 7 + 1, n), rng.integers(0, 15 - 8 + 1, n)
    for i in range(n):
        padded = np.zeros((3, 13, 15), np.float32)
        padded[:, 2:11, 2:13] = batch[i]
        np.testing.assert_array_equal(out[i], padded[:, oy[i]:oy[i] + 7, ox[i]:ox[i] + 8])
    # all offsets appear over many draws (pad 4, crop 32 -> 9 x 9 positions)
    big = np.zeros((2000, 1, 32, 32), np.float32)
    big[:, :, 0, 0] = 1
    pos = T.RandomCrop(32, padding=4)(big, np.random.default_rng(0))
    assert len({tuple(np.argwhere(p[0] == 1)[0]) for p in pos if p.any()}) == 25


def test_random_flip(batch):
    out = T.RandomHorizontalFlip()(batch, np.random.default_rng(7))
    flip = np.random.default_rng(7).random(len(batch)) < 0.5
    assert 0 < flip.sum() < len(batch)
    for i in range(len(batch)):
        np.testing.assert_array_equal(out[i], batch[i][:, :, ::-1] if flip[i] else batch[i])


def _naive_bilinear(img, oh, ow):
    c, h, w = img.shape
    out = np.zeros((c, oh, ow))
    for i in range(oh):
        sy = min(max((i + 0.5) * h / oh - 0.5, 0), h - 1)
        y0 = int(np.floor(sy)); y1 = min(y0 + 1, h - 1); fy = sy - y0
        for j in range(ow):
            sx = min(max((j + 0.5) * w / ow - 0.5, 0), w - 1)
            x0 = int(np.floor(sx)); x1 = min(x0 + 1, w - 1); fx = sx - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * img[:, y0, x0] + fx * img[:, y0, x1])
                            + fy * ((1 - fx) * img[:, y1, x0] + fx * img[:, y1, x1]))
    return out


def test_scale_jitter(batch):
    out = T.ScaleJitter(9, 13, 8)(batch, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    s = rng.integers(9, 14, len(batch))
    u = rng.random((len(batch), 2))
    assert len(set(s)) > 1
    for i in range(len(batch)):
        h, w = s[i], int(round(11 * s[i] / 9))            # smaller side (height 9) -> S
        big = _naive_bilinear(batch[i], h, w)
        oy, ox = int(u[i, 0] * (h - 8 + 1)), int(u[i, 1] * (w - 8 + 1))
        np.testing.assert_allclose(out[i], big[:, oy:oy + 8, ox:ox + 8], atol=1e-5)
    np.testing.assert_allclose(T.resize_bilinear(batch, 9, 11), batch, atol=1e-6)


def test_pca_color_jitter(batch):
    imgs = np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8)
    eigval, eigvec = T.pca_color_stats(imgs)
    px = imgs.transpose(0, 2, 3, 1).reshape(-1, 3) / 255
    cov = np.cov(px.T)
    np.testing.assert_allclose(cov @ eigvec, eigvec * eigval, atol=1e-5)
    assert eigval[0] >= eigval[1] >= eigval[2]
    out = T.PCAColorJitter(eigval, eigvec, std=0.5)(batch, np.random.default_rng(2))
    alpha = np.random.default_rng(2).normal(0, 0.5, (len(batch), 3))
    for n in range(len(batch)):
        for c in range(3):
            shift = sum(eigvec[c, j] * alpha[n, j] * eigval[j] for j in range(3))
            np.testing.assert_allclose(out[n, c], batch[n, c] + shift, atol=1e-6)


def test_compose_uses_one_generator(batch):
    t = T.Compose([T.RandomCrop(9, padding=1), T.RandomHorizontalFlip()])
    a = t(batch[..., :9], np.random.default_rng(0))
    rng = np.random.default_rng(0)
    b = T.RandomHorizontalFlip()(T.RandomCrop(9, padding=1)(batch[..., :9], rng), rng)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# DataLoader
# ---------------------------------------------------------------------------
def _arrays(n=50):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), np.arange(n)


def _epoch(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_loader_batches_and_conversion():
    x, y = _arrays(50)
    loader = DataLoader((x, y), batch_size=16, prefetch=0)
    batches = _epoch(loader)
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2] and len(loader) == 4
    assert batches[0][0].dtype == np.float32 and batches[0][1].dtype == np.int64
    np.testing.assert_allclose(np.concatenate([b[0] for b in batches]), x / 255, rtol=1e-6)
    loader = DataLoader((x, y), batch_size=16, drop_last=True, shuffle=True, seed=0)
    assert [len(b[1]) for b in _epoch(loader)] == [16, 16, 16] and len(loader) == 3


def test_loader_seeded_shuffle():
    x, y = _arrays(50)
    a, b = DataLoader((x, y), 8, shuffle=True, seed=1), DataLoader((x, y), 8, shuffle=True, seed=1)
    e1a, e1b, e2a = _epoch(a), _epoch(b), _epoch(a)
    order1 = np.concatenate([yy for _, yy in e1a])
    assert sorted(order1) == list(range(50)) and not np.array_equal(order1, np.arange(50))
    for (xa, ya), (xb, yb) in zip(e1a, e1b):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    assert not np.array_equal(order1, np.concatenate([yy for _, yy in e2a]))
    other = np.concatenate([yy for _, yy in _epoch(DataLoader((x, y), 8, shuffle=True, seed=2))])
    assert not np.array_equal(order1, other)


def test_prefetch_identical_and_resumable():
    x, y = _arrays(60)
    tf = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip()])
    runs = []
    for prefetch in (0, 1, 3):
        loader = DataLoader((x, y), 8, shuffle=True, seed=4, transform=tf, prefetch=prefetch)
        runs.append(_epoch(loader) + _epoch(loader))
    for other in runs[1:]:
        for (xa, ya), (xb, yb) in zip(runs[0], other):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    # stop in the middle of epoch 2, save the state, continue in a new loader
    loader = DataLoader((x, y), 8, shuffle=True, seed=4, transform=tf, prefetch=2)
    _epoch(loader)
    it = iter(loader)
    head = [next(it) for _ in range(3)]
    state = loader.state_dict()
    it.close()
    assert state == {"seed": 4, "epoch": 1, "batch": 3}
    fresh = DataLoader((x, y), 8, shuffle=True, seed=99, transform=tf, prefetch=2)
    fresh.load_state_dict(state)
    rest = _epoch(fresh)
    expect = runs[0][len(loader):]
    assert len(head) + len(rest) == len(expect)
    for (xa, ya), (xb, yb) in zip([(h[0], h[1]) for h in head] + rest, expect):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert fresh.state_dict() == {"seed": 4, "epoch": 2, "batch": 0}


def test_loader_errors_surface():
    x, y = _arrays(20)

    def broken(batch, rng):
        raise RuntimeError("augmentation failed")
    with pytest.raises(RuntimeError, match="augmentation failed"):
        _epoch(DataLoader((x, y), 4, transform=broken, prefetch=2))
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader((x, y), 0)
    with pytest.raises(ValueError, match="labels"):
        DataLoader((x, y[:5]), 4)


def test_training_script_finds_data_folders_of_a_checkout(tmp_path, monkeypatch):
    """With no --data-dir, ``data/cifar-10-batches-py`` under the working folder
    (or ``../shared/data/...`` beside it) is used before the cache and the download."""
    import argparse
    from minigrad import training as T
    files, (rows, labels), _ = _make_cifar()
    _write_dir(tmp_path / "work" / "data" / "cifar-10-batches-py", files)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.delenv("MINIGRAD_CIFAR10_DIR", raising=False)
    monkeypatch.setenv("MINIGRAD_DATA", str(tmp_path / "empty-cache"))
    args = argparse.Namespace(data_dir=None, no_download=True)
    train, test = T.find_cifar(args, log=lambda *a: None)
    assert len(train) == len(labels) and len(test) == 5
    assert str(train.source).startswith(str(tmp_path / "work" / "data"))


def test_loader_refuses_to_truncate_float_labels():
    x = np.zeros((4, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"label 1 is 0\.7"):
        DataLoader((x, np.array([0.0, 0.7, 2.0, 3.0])), 2)
    with pytest.raises(TypeError, match="integer class indices"):
        DataLoader((x, np.array(["a", "b", "c", "d"])), 2)
    whole = DataLoader((x, np.array([0.0, 1.0, 2.0, 3.0], np.float32)), 2)
    assert whole.labels.dtype == np.int64 and whole.labels.tolist() == [0, 1, 2, 3]
