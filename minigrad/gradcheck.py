"""Check a backward pass against finite differences.

For a function f of tensors x₁..xₖ, the analytic gradient of the scalar
L = Σ f(x) · r, for a fixed random direction r, is compared with the central
difference

    ∂L/∂xᵢ[j] ≈ (L(xᵢ[j] + ε) − L(xᵢ[j] − ε)) / 2ε

for every element j of every input that requires grad.  Everything runs in
float64, where a correct backward agrees to about 1e-7.  Contracting with a
random r instead of all-ones catches errors that a plain sum would hide
(a backward that swaps output positions, say).
"""
from __future__ import annotations

import numpy as np

from . import backend
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised by :func:`gradcheck` with ``raise_exception=True`` on a mismatch."""


def _as_tuple(out):
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0,
              raise_exception=True, report_worst=5):
    """Compare ``fn``'s analytic gradients with central finite differences.

    ``fn(*inputs)`` returns a Tensor (or a tuple of Tensors).  ``inputs`` are
    Tensors (those with ``requires_grad=True`` are checked) or other values,
    passed through unchanged.  Floating inputs must be float64: float32 rounding
    swamps the difference quotient, so the check refuses it.

    An element passes when ``|analytic − numeric| <= atol + rtol·|numeric|``.
    Returns True when all pass.  Otherwise raises :class:`GradcheckError` (or
    returns False with ``raise_exception=False``) with a report of the worst
    elements: input, index, analytic value, numeric value, relative error.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {inputs[i].dtype}; use float64 "
                            "(e.g. Tensor(x.astype(np.float64), requires_grad=True))")

    rng = np.random.default_rng(seed)
    outs = _as_tuple(fn(*inputs))
    directions = [rng.standard_normal(o.shape) for o in outs]

    def scalar(*args):
        from .tensor import no_grad
        with no_grad():
            values = _as_tuple(fn(*args))
        return sum(float((backend.to_numpy(o.data).astype(np.float64) * r).sum())
                   for o, r in zip(values, directions))

    # analytic: backward of L = Σ out · r
    for i in checked:
        inputs[i].grad = None
    for o, r in zip(outs, directions):
        if o.requires_grad:
            xp = backend.get_array_module(o.data)
            o.backward(xp.asarray(r, dtype=o.dtype), retain_graph=True)
    analytic = []
    for i in checked:
        g = inputs[i].grad
        analytic.append(np.zeros(inputs[i].shape) if g is None else backend.to_numpy(g.data))

    # numeric: central differences, one element at a time
    failures = []
    for a, i in zip(analytic, checked):
        x = inputs[i]
        data = x.data                       # perturbed in place, restored after
        numeric = np.zeros(x.shape)
        flat = data.reshape(-1)
        for j in range(flat.size):
            old = flat[j].item()
            flat[j] = old + eps
            plus = scalar(*inputs)
            flat[j] = old - eps
            minus = scalar(*inputs)
            flat[j] = old
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        err = np.abs(a - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        for j in np.flatnonzero(bad.reshape(-1)):
            idx = np.unravel_index(j, x.shape)
            an, nu = a[idx], numeric[idx]
            failures.append((err[idx], i, idx, an, nu, err[idx] / max(abs(nu), 1e-12)))

    for i in checked:
        inputs[i].grad = None
    if not failures:
        return True
    failures.sort(key=lambda f: -f[0])
    name = getattr(fn, "__name__", type(fn).__name__)
    lines = [f"gradcheck failed for {name}: {len(failures)} element(s) out of tolerance "
             f"(atol={atol}, rtol={rtol}, eps={eps}); worst:",
             f"  {'input':>5}  {'index':<18} {'analytic':>14} {'numeric':>14} {'rel.err':>10}"]
    for _, i, idx, an, nu, rel in failures[:report_worst]:
        lines.append(f"  {i:>5}  {str(tuple(int(k) for k in idx)):<18} {an:>14.7g} {nu:>14.7g} {rel:>10.3g}")
    report = "\n".join(lines)
    if raise_exception:
        raise GradcheckError(report)
    print(report)
    return False
