"""A deterministic, CIFAR-shaped, learnable image set for offline runs.

Every class k has a prototype: a base colour, a stripe direction and
frequency, and a bright blob in one quadrant.  An image of class k is its
prototype with a random stripe phase, a jittered blob position, a random
brightness and Gaussian pixel noise, so a small convnet learns it in an epoch
or two but not instantly.  The prototypes depend only on ``num_classes`` and
``pattern_seed``; the images on ``seed``, so two sets with different seeds
are a train / test split of the same task.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SyntheticImages"]


class SyntheticImages:
    """``SyntheticImages(n=1000, num_classes=10, image_size=32, seed=0)``:
    ``.data`` uint8 (n, 3, S, S), ``.targets`` int64 (balanced classes in a
    shuffled order), ``.classes``."""

    def __init__(self, n: int = 1000, num_classes: int = 10, image_size: int = 32,
                 seed: int = 0, noise: float = 24.0, pattern_seed: int = 2024):
        if n < 1 or num_classes < 2 or image_size < 4:
            raise ValueError(f"SyntheticImages: need n >= 1, num_classes >= 2, image_size >= 4, "
                             f"got {n}, {num_classes}, {image_size}")
        self.num_classes, self.image_size, self.seed = num_classes, image_size, seed
        proto = np.random.default_rng(pattern_seed)
        colours = proto.uniform(-1, 1, (num_classes, 3))
        angles = proto.uniform(0, np.pi, num_classes)
        freqs = proto.uniform(1.5, 4.5, num_classes) / image_size
        quadrants = proto.integers(0, 4, num_classes)

        rng = np.random.default_rng(seed)
        targets = np.arange(n) % num_classes
        rng.shuffle(targets)
        s = image_size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        a, f = angles[targets][:, None, None], freqs[targets][:, None, None]
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        stripes = np.sin(2 * np.pi * f * (xx * np.cos(a) + yy * np.sin(a)) + phase)
        q = quadrants[targets]
        cy = (q // 2 + 0.5) * s / 2 + rng.normal(0, s / 16, n)
        cx = (q % 2 + 0.5) * s / 2 + rng.normal(0, s / 16, n)
        blob = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2)
                      / (2 * (s / 8) ** 2))
        brightness = rng.uniform(-20, 20, (n, 1, 1, 1))
        img = (128 + 55 * colours[targets][:, :, None, None] + 35 * stripes[:, None]
               + 60 * blob[:, None] + brightness + rng.normal(0, noise, (n, 3, s, s)))
        self.data = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        self.targets = targets.astype(np.int64)
        self.classes = [f"pattern{k}" for k in range(num_classes)]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])

    def __repr__(self):
        return (f"SyntheticImages({len(self)} images of shape {tuple(self.data.shape[1:])}, "
                f"{self.num_classes} classes, seed={self.seed})")
