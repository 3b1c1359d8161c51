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

Where an op has faster implementations (conv, max-pool, batch norm, ReLU on
the CPU fast path of :mod:`minigrad.config`; conv, max-pool and LRN on a GPU),
the class named after the op is the reference math, the first thing in its
file, and the faster variants are subclasses beside it (``Conv2dFast``,
``Conv2dCuda``...) that override ``forward`` and ``backward`` together.  The
public function picks the class once, from the arrays it is given, so no
``forward`` tests a flag that its ``backward`` must test again.
"""
