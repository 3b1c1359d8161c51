import numpy as np

import minigrad as mg


def test_square_gradient():
    x = mg.Tensor([[1.0, 2.0]], requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(np.asarray(x.grad), [[2.0, 4.0]])
