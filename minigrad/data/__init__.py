"""Datasets, batch transforms and the data loader (``minigrad.data``).

    from minigrad.data import CIFAR10, DataLoader, transforms as T
    train = CIFAR10("~/data", train=True, download=True)     # .data uint8 (N, 3, 32, 32)
    loader = DataLoader(train, batch_size=128, shuffle=True, seed=0,
                        transform=T.Compose([T.SubtractMean(T.mean_image(train.data)),
                                             T.RandomCrop(32, padding=4),
                                             T.RandomHorizontalFlip()]))

* :mod:`~minigrad.data.cifar`: CIFAR-10 / CIFAR-100 (official python batches
  or the ``.tar.gz``);
* :mod:`~minigrad.data.mnist`: MNIST / Fashion-MNIST (IDX files);
* :mod:`~minigrad.data.synthetic`: a learnable synthetic image set for offline runs;
* :mod:`~minigrad.data.transforms`: vectorised augmentation of NCHW batches;
* :mod:`~minigrad.data.loader`: :class:`DataLoader`;
* :mod:`~minigrad.data.sampler`: :class:`DistributedSampler` (each rank's share);
* :mod:`~minigrad.data.download`: MD5-checked atomic downloads and the
  :class:`DatasetError` family.
"""
from . import transforms
from .cifar import CIFAR10, CIFAR100
from .download import (CorruptDatasetError, DatasetError, DatasetNotFoundError, DownloadError,
                       default_cache_dir, download_url)
from .loader import DataLoader
from .sampler import DistributedSampler
from .mnist import MNIST, FashionMNIST
from .synthetic import SyntheticImages

__all__ = ["CIFAR10", "CIFAR100", "MNIST", "FashionMNIST", "SyntheticImages", "DataLoader",
           "DistributedSampler", "transforms", "DatasetError", "DatasetNotFoundError",
           "DownloadError", "CorruptDatasetError", "default_cache_dir", "download_url"]
