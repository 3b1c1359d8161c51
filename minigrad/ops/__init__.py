"""minigrad's operations, one file per family.

Every op is a :class:`minigrad.tensor.Function` subclass with ``forward`` and
``backward`` side by side, plus a small function that applies it (the public
name, e.g. :func:`minigrad.ops.math.exp`).

* ``math``: element-wise arithmetic, matmul, reductions (sum, mean, max)
* ``shape``: reshape, transpose, slicing, padding, concatenation
* ``activation``: relu, softmax, log_softmax, dropout
* ``conv``: conv2d through im2col / col2im, linear
* ``pool``: max / average / adaptive average pooling
* ``norm``: batch normalisation, local response normalisation
* ``loss``: cross-entropy
"""
