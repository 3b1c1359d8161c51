"""Prototype: compare conv designs against PyTorch (standalone, not part of the suite)."""
import sys, time
import numpy as np
import numba
from minigrad.kernels import cpu_numba as K

numba.set_num_threads(2)

def bench(f, n=10):
    f(); f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return round(np.median(ts) * 1e3, 2), round(min(ts) * 1e3, 2)

_buf = {}
def buf(key, shape, dtype):
    a = _buf.get((key, shape, dtype))
    if a is None:
        a = np.ones(shape, dtype); _buf[(key, shape, dtype)] = a
    return a

def conv_fwd(x, w, b, pad=1):
    n, c, h, ww = x.shape; k = w.shape[0]; kh = w.shape[2]
    ho = h + 2*pad - kh + 1; wo = ho
    cols = buf("cols", (c*kh*kh, n*ho*wo), x.dtype)
    K.im2col(x, kh, kh, 1, 1, pad, pad, 0, n, cols)
    y2 = buf("y2", (k, n*ho*wo), x.dtype)
    np.matmul(w.reshape(k, -1), cols, out=y2)
    y = np.empty((n, k, ho, wo), x.dtype)
    K.cnp_to_nchw(y2, b, True, y.reshape(n, k, -1))
    return y

def conv_bwd(x, w, g, pad=1):
    n, c, h, ww = x.shape; k = w.shape[0]; kh = w.shape[2]
    ho, wo = g.shape[2:]
    cols = buf("cols", (c*kh*kh, n*ho*wo), x.dtype)
    K.im2col(x, kh, kh, 1, 1, pad, pad, 0, n, cols)
    g2 = buf("g2", (k, n*ho*wo), x.dtype)
    db = np.empty(k, x.dtype)
    K.nchw_to_cnp(g.reshape(n, k, -1), g2, db)
    dw = (g2 @ cols.T).reshape(w.shape)
    dcols = buf("dcols", (c*kh*kh, n*ho*wo), x.dtype)
    np.matmul(w.reshape(k, -1).T, g2, out=dcols)
    dx = np.empty_like(x)
    K.col2im(dcols, kh, kh, 1, 1, pad, pad, 0, n, dx)
    return dx, dw, db

import torch
torch.set_num_threads(2)
for (N, C, H) in [(128,16,32),(128,32,16),(128,64,8),(64,64,32)]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N,C,H,H), dtype=np.float32); w = rng.standard_normal((C,C,3,3), dtype=np.float32)*0.1
    b = np.zeros(C, np.float32); g = rng.standard_normal((N,C,H,H), dtype=np.float32)
    def mg():
        conv_fwd(x, w, b); conv_bwd(x, w, g)
    # pieces
    cols = buf("cols", (C*9, N*H*H), x.dtype)
    t_im = bench(lambda: K.im2col(x, 3, 3, 1, 1, 1, 1, 0, N, cols))
    dx = np.empty_like(x)
    t_c2i = bench(lambda: K.col2im(cols, 3, 3, 1, 1, 1, 1, 0, N, dx))
    t_gemm = bench(lambda: np.matmul(w.reshape(C,-1), cols, out=buf("y2",(C,N*H*H),x.dtype)))
    xt = torch.from_numpy(x).requires_grad_(); wt = torch.from_numpy(w).requires_grad_(); gt = torch.from_numpy(g); bt=torch.from_numpy(b).requires_grad_()
    def tfb():
        y = torch.nn.functional.conv2d(xt, wt, bt, padding=1); y.backward(gt)
    a = bench(mg); t = bench(tfb)
    print(N, C, H, "mg", a, "torch", t, "ratio %.2f" % (a[0]/t[0]), "im2col", t_im, "col2im", t_c2i, "gemm", t_gemm, flush=True)
