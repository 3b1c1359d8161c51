// im2col.cu -- unfold image patches into columns (im2col) and fold them back (col2im).
//
// Layout (the one minigrad's conv uses): for an input x of shape (N, C, H, W) and a
// kh x kw kernel with stride (sh, sw) and padding (ph, pw), the column matrix is
//
//     cols[(c*kh + ky)*kw + kx, (n*Ho + oy)*Wo + ox] = x[n, c, oy*sh - ph + ky, ox*sw - pw + kx]
//
// i.e. shape (C*kh*kw, N*Ho*Wo), zero where the patch falls in the padding.  A
// convolution is then one matrix product  W.reshape(K, C*kh*kw) @ cols  (cuBLAS).
//
// THREAD MAPPING
//   * im2col: one thread per element of cols (a grid-stride loop, so any grid size is
//     correct).  Consecutive threads take consecutive columns (consecutive ox), so the
//     writes are fully coalesced and the reads nearly so.  No shared memory: each input
//     value is read kh*kw times, from L1/L2.
//   * col2im: the adjoint.  Instead of scattering each column entry into x (which needs
//     atomics, as several patches overlap), one thread per element of x GATHERS the
//     entries that came from it: tap (ky, kx) of output (oy, ox) came from
//     iy = oy*sh - ph + ky, so oy = (iy + ph - ky) / sh when that divides evenly and
//     0 <= oy < Ho.  Deterministic, no atomics, no shared memory.
//
// INDEX WIDTH.  Splitting a flat index into (row, n, oy, ox) costs a few divisions per
// element, and a 64-bit division is many times dearer than a 32-bit one on a GPU.  So
// each kernel is written once as a template over the index type and exported twice:
// `im2col` / `col2im` with 32-bit indices, used while cols and x hold fewer than 2^31
// elements, and `im2col_i64` / `col2im_i64` for larger arrays (minigrad/cuda.py picks).
// Compiled at run time by cupy.RawModule (NVRTC): no #include.

template <typename I>
__device__ __forceinline__ void im2col_body(
    const float* __restrict__ x, float* __restrict__ cols,
    int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
    int Ho, int Wo)
{
    const I ncols = (I)N * Ho * Wo;
    const I total = (I)C * kh * kw * ncols;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        const I col = i % ncols;
        const int row = (int)(i / ncols);
        const int ox = (int)(col % Wo), oy = (int)((col / Wo) % Ho), n = (int)(col / ((I)Wo * Ho));
        const int kx = row % kw, ky = (row / kw) % kh, c = row / (kw * kh);
        const int iy = oy * sh - ph + ky, ix = ox * sw - pw + kx;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
            v = x[(((I)n * C + c) * H + iy) * W + ix];
        cols[i] = v;
    }
}

template <typename I>
__device__ __forceinline__ void col2im_body(
    const float* __restrict__ cols, float* __restrict__ x,
    int N, int C, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw,
    int Ho, int Wo)
{
    const I ncols = (I)N * Ho * Wo;
    const I total = (I)N * C * H * W;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        const int ix = (int)(i % W), iy = (int)((i / W) % H);
        const int c = (int)((i / ((I)W * H)) % C), n = (int)(i / ((I)W * H * C));
        float sum = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            const int t = iy + ph - ky;                  // = oy * sh
            if (t < 0 || t % sh != 0) continue;
            const int oy = t / sh;
            if (oy >= Ho) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int u = ix + pw - kx;              // = ox * sw
                if (u < 0 || u % sw != 0) continue;
                const int ox = u / sw;
                if (ox >= Wo) continue;
                const int row = (c * kh + ky) * kw + kx;
                sum += cols[(I)row * ncols + ((I)n * Ho + oy) * Wo + ox];
            }
        }
        x[i] = sum;
    }
}

#define IM2COL_ARGS(in, out) \
    const float* __restrict__ in, float* __restrict__ out, int N, int C, int H, int W, \
    int kh, int kw, int sh, int sw, int ph, int pw, int Ho, int Wo
#define IM2COL_PASS(in, out) in, out, N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo

extern "C" __global__ void im2col(IM2COL_ARGS(x, cols)) { im2col_body<int>(IM2COL_PASS(x, cols)); }
extern "C" __global__ void im2col_i64(IM2COL_ARGS(x, cols)) { im2col_body<long long>(IM2COL_PASS(x, cols)); }
extern "C" __global__ void col2im(IM2COL_ARGS(cols, x)) { col2im_body<int>(IM2COL_PASS(cols, x)); }
extern "C" __global__ void col2im_i64(IM2COL_ARGS(cols, x)) { col2im_body<long long>(IM2COL_PASS(cols, x)); }
