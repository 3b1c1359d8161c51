// maxpool.cu -- 2-D max pooling (NCHW, float32), forward with saved arg-max, and backward.
//
//   forward   y[n,c,oy,ox] = max over the kh x kw window at (oy*sh - ph, ox*sw - pw)
//             argmax[n,c,oy,ox] = iy*W + ix of the (first) maximum inside plane (n, c)
//   backward  gx[n,c,iy,ix] = sum of gy[n,c,oy,ox] over the windows whose argmax is (iy,ix)
//
// THREAD MAPPING
//   * forward: one thread per output element (grid-stride loop over N*C*Ho*Wo);
//     consecutive threads take consecutive ox, so the y/argmax writes coalesce.  The
//     padding counts as -infinity, so it is never the maximum.  Ties keep the first
//     maximum in row-major window order (strict '>').
//   * backward: one thread per INPUT element (gather, not scatter): it visits the few
//     windows that contain it (at most ceil(kh/sh) x ceil(kw/sw)) and adds gy where the
//     saved argmax points at it.  Overlapping windows (e.g. 3x3 stride 2) therefore
//     need no atomics, and the result is deterministic.
//   No shared memory: each value is read once (forward) or a few times (backward).
//
// INDEX WIDTH: as in im2col.cu, each kernel is a template over the index type, exported
// with 32-bit indices (`maxpool2d_forward`, `maxpool2d_backward`: fewer than 2^31
// elements, cheap divisions) and 64-bit ones (`..._i64`) for larger arrays.
// Compiled at run time by cupy.RawModule (NVRTC): no #include.

template <typename I>
__device__ __forceinline__ void maxpool2d_forward_body(
    const float* __restrict__ x, float* __restrict__ y, int* __restrict__ argmax,
    int NC, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw)
{
    const I total = (I)NC * Ho * Wo;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        const int ox = (int)(i % Wo), oy = (int)((i / Wo) % Ho);
        const I plane = i / ((I)Wo * Ho);
        const float* xp = x + plane * H * W;
        float best = __int_as_float(0xff800000);      // -infinity
        int best_at = -1;
        for (int ky = 0; ky < kh; ++ky) {
            const int iy = oy * sh - ph + ky;
            if (iy < 0 || iy >= H) continue;
            for (int kx = 0; kx < kw; ++kx) {
                const int ix = ox * sw - pw + kx;
                if (ix < 0 || ix >= W) continue;
                const float v = xp[iy * W + ix];
                if (v > best || best_at < 0) { best = v; best_at = iy * W + ix; }
            }
        }
        y[i] = best;
        argmax[i] = best_at;
    }
}

template <typename I>
__device__ __forceinline__ void maxpool2d_backward_body(
    const float* __restrict__ gy, const int* __restrict__ argmax, float* __restrict__ gx,
    int NC, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw)
{
    const I total = (I)NC * H * W;
    for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total;
         i += (I)gridDim.x * blockDim.x) {
        const int ix = (int)(i % W), iy = (int)((i / W) % H);
        const I plane = i / ((I)W * H);
        const int me = iy * W + ix;
        // windows containing iy: oy*sh - ph <= iy <= oy*sh - ph + kh - 1
        int oy_lo = iy + ph - kh + 1;
        oy_lo = oy_lo <= 0 ? 0 : (oy_lo + sh - 1) / sh;
        const int oy_hi = min((iy + ph) / sh, Ho - 1);
        int ox_lo = ix + pw - kw + 1;
        ox_lo = ox_lo <= 0 ? 0 : (ox_lo + sw - 1) / sw;
        const int ox_hi = min((ix + pw) / sw, Wo - 1);
        float sum = 0.0f;
        for (int oy = oy_lo; oy <= oy_hi; ++oy)
            for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                const I o = (plane * Ho + oy) * Wo + ox;
                if (argmax[o] == me) sum += gy[o];
            }
        gx[i] = sum;
    }
}

#define POOL_DIMS int NC, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw
#define POOL_PASS NC, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw

extern "C" __global__ void maxpool2d_forward(
    const float* __restrict__ x, float* __restrict__ y, int* __restrict__ argmax, POOL_DIMS)
{ maxpool2d_forward_body<int>(x, y, argmax, POOL_PASS); }

extern "C" __global__ void maxpool2d_forward_i64(
    const float* __restrict__ x, float* __restrict__ y, int* __restrict__ argmax, POOL_DIMS)
{ maxpool2d_forward_body<long long>(x, y, argmax, POOL_PASS); }

extern "C" __global__ void maxpool2d_backward(
    const float* __restrict__ gy, const int* __restrict__ argmax, float* __restrict__ gx, POOL_DIMS)
{ maxpool2d_backward_body<int>(gy, argmax, gx, POOL_PASS); }

extern "C" __global__ void maxpool2d_backward_i64(
    const float* __restrict__ gy, const int* __restrict__ argmax, float* __restrict__ gx, POOL_DIMS)
{ maxpool2d_backward_body<long long>(gy, argmax, gx, POOL_PASS); }
