"""Mixed dtypes follow PyTorch's type promotion (minigrad.promotion).

The expected dtypes and values are PyTorch 2.x's (``torch.result_type``
rules), written out here so the test needs no PyTorch."""
import numpy as np
import pytest

import minigrad as mg
from minigrad import Tensor
from minigrad.promotion import result_type

I64 = Tensor([1, 2, 3])
I32 = Tensor(np.array([1, 2, 3], np.int32))
I8 = Tensor(np.array([1, 2, 3], np.int8))
U8 = Tensor(np.array([200, 1, 2], np.uint8))
F32 = Tensor([1.0, 2.0, 3.0])
F64 = Tensor(np.array([1.0, 2.0, 3.0]))
F16 = Tensor(np.array([1.0, 2.0, 3.0], np.float16))
B = Tensor([True, False, True])

CASES = [  # (expression, expected dtype, expected values)
    (lambda: I64 * 0.5, "float32", [0.5, 1.0, 1.5]),
    (lambda: I64 + 0.5, "float32", [1.5, 2.5, 3.5]),
    (lambda: 0.5 - I64, "float32", [-0.5, -1.5, -2.5]),
    (lambda: mg.arange(4) * 0.5, "float32", [0.0, 0.5, 1.0, 1.5]),
    (lambda: I64 * np.float64(0.5), "float32", [0.5, 1.0, 1.5]),     # NumPy scalars are weak
    (lambda: I64 * 2, "int64", [2, 4, 6]),
    (lambda: I32 * 2, "int32", [2, 4, 6]),
    (lambda: I8 * 1000, "int8", [-24, -48, -72]),                   # wraps around
    (lambda: U8 + 300, "uint8", [244, 45, 46]),
    (lambda: I64 / 2, "float32", [0.5, 1.0, 1.5]),                  # true division
    (lambda: 3 / I64, "float32", [3.0, 1.5, 1.0]),
    (lambda: I64 / I64, "float32", [1.0, 1.0, 1.0]),
    (lambda: I64 ** 2, "int64", [1, 4, 9]),
    (lambda: I64 ** 0.5, "float32", [1.0, 2 ** 0.5, 3 ** 0.5]),
    (lambda: F32 * 0.5, "float32", [0.5, 1.0, 1.5]),
    (lambda: F64 * 0.5, "float64", [0.5, 1.0, 1.5]),
    (lambda: F16 * 2.0, "float16", [2.0, 4.0, 6.0]),
    (lambda: I64 + F32, "float32", [2.0, 4.0, 6.0]),                # NumPy would give float64
    (lambda: F16 + I64, "float16", [2.0, 4.0, 6.0]),
    (lambda: F32 + F64, "float64", [2.0, 4.0, 6.0]),
    (lambda: I8 + U8, "int16", [201, 3, 5]),
    (lambda: F32 + Tensor(np.float64(1.0)), "float32", [2.0, 3.0, 4.0]),  # 0-d: same kind
    (lambda: I32 + Tensor(5), "int32", [6, 7, 8]),
    (lambda: I64 + Tensor(np.float64(0.5)), "float64", [1.5, 2.5, 3.5]),  # 0-d: higher kind
    (lambda: B + 1, "int64", [2, 1, 2]),
    (lambda: B + True, "bool", [True, True, True]),
    (lambda: B * 1.5, "float32", [1.5, 0.0, 1.5]),
    (lambda: B * B, "bool", [True, False, True]),
    (lambda: B / 2, "float32", [0.5, 0.0, 0.5]),
    (lambda: B ** 2, "int64", [1, 0, 1]),
    (lambda: I64 * True, "int64", [1, 2, 3]),
    (lambda: I64 * 1j, "complex64", [1j, 2j, 3j]),
]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_arithmetic_dtypes_follow_pytorch(i):
    expr, dtype, values = CASES[i]
    out = expr()
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out.numpy().astype(np.complex128), values, rtol=1e-6)


def test_result_type_groups():
    assert result_type(I64, 0.5) == np.float32
    assert result_type(Tensor(np.int32(1)), I8) == np.int8       # a 0-d int does not widen
    assert result_type(Tensor(1), 2.5) == np.float32                # 0-d with a scalar
    assert result_type(F32, Tensor(np.complex128(1j))) == np.complex64
    assert result_type(F64, 1j) == np.complex128
    with pytest.raises(TypeError, match="unsupported operand"):
        result_type(I64, "a")


def test_bool_subtraction_and_negation_are_errors():
    for bad in (lambda: B - B, lambda: B - 1, lambda: I64 - True, lambda: 1.5 - B,
                lambda: F32 - B, lambda: -B):
        with pytest.raises(TypeError, match="bool tensor"):
            bad()
    np.testing.assert_array_equal((~B).numpy(), [False, True, False])


def test_promotion_keeps_gradients_in_each_dtype():
    x = Tensor([1.0, 2.0], requires_grad=True)                  # float32
    y = Tensor(np.array([3.0, 4.0]), requires_grad=True)        # float64
    z = (x * y).sum()
    z.backward()
    assert z.dtype == np.float64
    assert x.grad.dtype == np.float32 and y.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 4.0])
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * Tensor([2, 3])).sum().backward()                       # int constant: no grad
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad.numpy(), [2.0, 3.0])


def test_batchnorm_refuses_integer_input():
    bn = mg.nn.BatchNorm2d(2)
    x = Tensor(np.ones((2, 2, 3, 3), np.int64))
    for mode in (bn.train, bn.eval):
        mode()
        with pytest.raises(TypeError, match=r"BatchNorm2d\(2.*floating-point.*int64.*"
                                            r"\(2, 2, 3, 3\)"):
            bn(x)
    assert np.isfinite(bn.train()(x.float()).numpy()).all()
