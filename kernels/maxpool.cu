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
// Compiled at run time by cupy.RawModule (NVRTC): no #include.

extern "C" __global__ void maxpool2d_forward(
    const float* __restrict__ x, float* __restrict__ y, int* __restrict__ argmax,
    int NC, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw)
{
    const long long total = (long long)NC * Ho * Wo;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ox = (int)(i % Wo), oy = (int)((i / Wo) % Ho);
        const long long plane = i / ((long long)Wo * Ho);
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

extern "C" __global__ void maxpool2d_backward(
    const float* __restrict__ gy, const int* __restrict__ argmax, float* __restrict__ gx,
    int NC, int H, int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw)
{
    const long long total = (long long)NC * H * W;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ix = (int)(i % W), iy = (int)((i / W) % H);
        const long long plane = i / ((long long)W * H);
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
                const long long o = (plane * Ho + oy) * Wo + ox;
                if (argmax[o] == me) sum += gy[o];
            }
        gx[i] = sum;
    }
}
