"""Data augmentation and normalisation on whole batches (NumPy, NCHW).

Every transform is called as ``t(x, rng)`` on a float32 batch ``x`` of shape
(N, C, H, W) and returns a new array; random ones draw from the NumPy
``Generator`` they are given (the :class:`~minigrad.data.DataLoader` passes
its own augmentation generator, so a run is repeatable and resumable).  No
transform loops over images: crops are one fancy-indexing gather, flips one
masked assignment, rescaling one interpolation per distinct scale.

The two papers' recipes:

* ResNet on CIFAR-10 (Sec 4.2): per-pixel mean subtraction, then "4 pixels
  are padded on each side, and a 32×32 crop is randomly sampled from the
  padded image or its horizontal flip"::

      Compose([SubtractMean(mean_image), RandomCrop(32, padding=4), RandomHorizontalFlip()])

  (padding happens after the mean is subtracted, so padded pixels are zeros
  = the mean image);
* VGG (Sec 3.1): isotropic rescaling so the smaller side is S (fixed, or
  jittered in [Smin, Smax]), a random crop, a random flip, and AlexNet's PCA
  colour shift::

      Compose([ScaleJitter(256, 512, 224), RandomHorizontalFlip(),
               PCAColorJitter(eigval, eigvec, std=0.1), Normalize(mean, std)])
"""
from __future__ import annotations

import numpy as np

__all__ = ["Transform", "Compose", "Normalize", "SubtractMean", "RandomCrop",
           "RandomHorizontalFlip", "ScaleJitter", "PCAColorJitter", "resize_bilinear",
           "pca_color_stats", "mean_image"]


def _check_batch(x, who):
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{who}: expected a NumPy batch (N, C, H, W), got "
                         f"{type(x).__name__} of shape {getattr(x, 'shape', None)}")
    return x


def _rng(rng):
    if rng is None:
        from ..random import get_rng
        return get_rng()
    return rng


def _pair(v, who):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{who}: size must be an int or (h, w), got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


class Transform:
    """Base class: ``__call__(x, rng=None) -> array``."""

    def __call__(self, x, rng=None):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items()
                         if not isinstance(v, np.ndarray) and not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose([" + ", ".join(map(repr, self.transforms)) + "])"


class Normalize(Transform):
    """Per channel: ``(x[:, c] − mean[c]) / std[c]``."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape or np.any(self.std <= 0):
            raise ValueError(f"Normalize: mean {self.mean} and std {self.std} must have one "
                             "value per channel, std > 0")

    def __call__(self, x, rng=None):
        _check_batch(x, "Normalize")
        if x.shape[1] != self.mean.size:
            raise ValueError(f"Normalize: {self.mean.size} channel statistics for a batch of "
                             f"shape {x.shape}")
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


def mean_image(images, scale: float = 1.0 / 255) -> np.ndarray:
    """The per-pixel mean (C, H, W) of a uint8 image set, in the loader's scale."""
    images = np.asarray(images)
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(images), 4096):          # bounded memory
        total += images[start:start + 4096].sum(axis=0, dtype=np.float64)
    return (total / max(len(images), 1) * scale).astype(np.float32)


class SubtractMean(Transform):
    """Subtract a per-pixel mean image (C, H, W) (ResNet Sec 4.2; compute it
    on the training set with :func:`mean_image`)."""

    def __init__(self, mean_image):
        self.mean_image = np.asarray(mean_image, dtype=np.float32)
        if self.mean_image.ndim != 3:
            raise ValueError(f"SubtractMean: mean image must be (C, H, W), got shape "
                             f"{self.mean_image.shape}")

    def __call__(self, x, rng=None):
        _check_batch(x, "SubtractMean")
        if x.shape[1:] != self.mean_image.shape:
            raise ValueError(f"SubtractMean: mean image {self.mean_image.shape} does not match "
                             f"the batch {x.shape}")
        return x - self.mean_image

    def __repr__(self):
        return f"SubtractMean(mean_image of shape {self.mean_image.shape})"


def _gather_crops(x, oy, ox, h, w):
    """out[n] = x[n, :, oy[n]:oy[n]+h, ox[n]:ox[n]+w] for all n at once."""
    n, c = x.shape[:2]
    rows = (oy[:, None] + np.arange(h))[:, None, :, None]
    cols = (ox[:, None] + np.arange(w))[:, None, None, :]
    return x[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]


class RandomCrop(Transform):
    """Zero-pad ``padding`` pixels on every side, then take a random ``size``
    crop of each image (offsets ``oy``, then ``ox``, drawn with
    ``rng.integers``)."""

    def __init__(self, size, padding: int = 0, fill: float = 0.0):
        self.size, self.padding, self.fill = _pair(size, "RandomCrop"), int(padding), fill

    def __call__(self, x, rng=None):
        _check_batch(x, "RandomCrop")
        rng = _rng(rng)
        p = self.padding
        if p:
            x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=self.fill)
        n, _, hp, wp = x.shape
        h, w = self.size
        if h > hp or w > wp:
            raise ValueError(f"RandomCrop: crop {self.size} larger than the padded image "
                             f"{(hp, wp)}")
        oy = rng.integers(0, hp - h + 1, n)
        ox = rng.integers(0, wp - w + 1, n)
        return _gather_crops(x, oy, ox, h, w)


class RandomHorizontalFlip(Transform):
    """Mirror each image left-right with probability ``p`` (mask drawn with
    ``rng.random(N) < p``)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, x, rng=None):
        _check_batch(x, "RandomHorizontalFlip")
        flip = _rng(rng).random(len(x)) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out


def resize_bilinear(x, out_h: int, out_w: int):
    """Bilinear resize of a batch (N, C, H, W) to (out_h, out_w), pixel
    centres aligned (``align_corners=False``, no antialiasing): output pixel
    i samples input coordinate (i + 0.5)·H/out_h − 0.5, clamped to the image."""
    n, c, h, w = x.shape

    def weights(size_in, size_out):
        src = (np.arange(size_out) + 0.5) * size_in / size_out - 0.5
        src = np.clip(src, 0, size_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, size_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    y0, y1, wy = weights(h, out_h)
    x0, x1, wx = weights(w, out_w)
    rows = x[:, :, y0, :] * (1 - wy)[:, None] + x[:, :, y1, :] * wy[:, None]
    return (rows[..., x0] * (1 - wx) + rows[..., x1] * wx).astype(np.float32)


class ScaleJitter(Transform):
    """VGG's scale jittering: rescale each image isotropically so its smaller
    side is S, S drawn uniformly from the integers [smin, smax], then take a
    random ``crop`` × ``crop`` window.

    Draws: ``S = rng.integers(smin, smax + 1, N)``, then ``u = rng.random((N, 2))``
    and the offsets ``floor(u · (H' − crop + 1))`` of the rescaled image.
    Images sharing an S are resized together (one interpolation per S).
    ``smin == smax`` is single-scale training.
    """

    def __init__(self, smin: int, smax: int, crop):
        if not 0 < smin <= smax:
            raise ValueError(f"ScaleJitter: need 0 < smin <= smax, got {smin}, {smax}")
        self.smin, self.smax, self.crop = int(smin), int(smax), _pair(crop, "ScaleJitter")
        if min(self.crop) > self.smin:
            raise ValueError(f"ScaleJitter: crop {self.crop} larger than the smallest scale "
                             f"{self.smin}")

    @staticmethod
    def scaled_size(h, w, s):
        """(H', W') with the smaller side equal to s, aspect ratio kept."""
        return (s, max(s, int(round(w * s / h)))) if h <= w else (max(s, int(round(h * s / w))), s)

    def __call__(self, x, rng=None):
        _check_batch(x, "ScaleJitter")
        rng = _rng(rng)
        n, c, h, w = x.shape
        ch, cw = self.crop
        scales = rng.integers(self.smin, self.smax + 1, n)
        u = rng.random((n, 2))
        out = np.empty((n, c, ch, cw), dtype=np.float32)
        for s in np.unique(scales):
            idx = np.flatnonzero(scales == s)
            hs, ws = self.scaled_size(h, w, int(s))
            big = resize_bilinear(x[idx], hs, ws)
            oy = np.floor(u[idx, 0] * (hs - ch + 1)).astype(np.int64)
            ox = np.floor(u[idx, 1] * (ws - cw + 1)).astype(np.int64)
            out[idx] = _gather_crops(big, oy, ox, ch, cw)
        return out


def pca_color_stats(images, scale: float = 1.0 / 255, max_pixels: int = 1_000_000, seed: int = 0):
    """Eigenvalues (3,) and eigenvectors (3, 3) (columns) of the RGB covariance
    of a uint8 image set (N, 3, H, W), in the loader's scale; computed on at
    most ``max_pixels`` random pixels."""
    images = np.asarray(images)
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, images.shape[1])
    if len(pixels) > max_pixels:
        pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)]
    cov = np.cov((pixels.astype(np.float64) * scale).T)
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    return eigval[order].astype(np.float32), eigvec[:, order].astype(np.float32)


class PCAColorJitter(Transform):
    """AlexNet's colour augmentation: add to every pixel of an image the RGB
    vector ``eigvec @ (alpha * eigval)`` with ``alpha ~ N(0, std²)`` drawn once
    per image (``rng.normal(0, std, (N, 3))``).  ``eigvec`` holds the
    eigenvectors of the RGB covariance as columns (see :func:`pca_color_stats`)."""

    def __init__(self, eigval, eigvec, std: float = 0.1):
        self.eigval = np.asarray(eigval, dtype=np.float32).reshape(3)
        self.eigvec = np.asarray(eigvec, dtype=np.float32).reshape(3, 3)
        self.std = float(std)

    def __call__(self, x, rng=None):
        _check_batch(x, "PCAColorJitter")
        if x.shape[1] != 3:
            raise ValueError(f"PCAColorJitter: expected RGB images, got shape {x.shape}")
        alpha = _rng(rng).normal(0.0, self.std, (len(x), 3)).astype(np.float32)
        shift = (alpha * self.eigval) @ self.eigvec.T          # (N, 3)
        return x + shift[:, :, None, None]

    def __repr__(self):
        return f"PCAColorJitter(eigval={self.eigval.tolist()}, std={self.std})"
