"""``minigrad.nn.functional``: every operation of the models as a function,
with PyTorch's names and argument order (``import minigrad.nn.functional as F``).

Each function lives, with its forward and backward side by side, in one file
of :mod:`minigrad.ops`:

=====================  ====================================================================
``ops/conv.py``        conv2d (im2col / GEMM / col2im)
``ops/linear.py``      linear
``ops/activation.py``  relu, softmax, log_softmax, dropout
``ops/pool.py``        max_pool2d, avg_pool2d, adaptive_avg_pool2d
``ops/norm.py``        batch_norm, batch_norm_relu (fused), local_response_norm
``ops/loss.py``        cross_entropy, nll_loss
``ops/shape.py``       pad, flatten, reshape, permute, transpose, cat, stack, subsample_pad
``ops/math.py``        sigmoid, tanh (and the arithmetic behind the operators)
=====================  ====================================================================
"""
from ..ops.activation import dropout, log_softmax, relu, softmax
from ..ops.conv import col2im, conv2d, im2col
from ..ops.linear import linear
from ..ops.loss import cross_entropy, nll_loss
from ..ops.math import sigmoid, tanh
from ..ops.norm import batch_norm, batch_norm_relu, local_response_norm
from ..ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d
from ..ops.shape import (cat, concat, flatten, pad, permute, reshape, stack, subsample_pad,
                         transpose)

__all__ = [
    "conv2d", "im2col", "col2im", "linear",
    "relu", "softmax", "log_softmax", "dropout", "sigmoid", "tanh",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "batch_norm", "batch_norm_relu", "local_response_norm",
    "cross_entropy", "nll_loss",
    "pad", "flatten", "reshape", "permute", "transpose", "cat", "concat", "stack",
    "subsample_pad",
]
