// lrn.cu -- Local Response Normalisation across channels (AlexNet / VGG A-LRN), float32 NCHW.
//
// The papers' formula (NOT PyTorch's, which divides alpha by the window size):
//
//     scale[c] = k + alpha * sum_{j in win(c)} x[j]^2,     y[c] = x[c] * scale[c]^(-beta)
//
// with win(c) = c - size/2 .. c + (size-1)/2, clipped to 0..C-1 (the centred window of
// `size` channels for odd size; VGG uses size=5, k=2, alpha=1e-4, beta=0.75).
//
// Backward, with r[i] = gy[i] * y[i] / scale[i]:
//     gx[j] = gy[j] * scale[j]^(-beta) - 2 * alpha * beta * x[j] * sum_{i : j in win(i)} r[i]
// and j in win(i)  <=>  i in j - (size-1)/2 .. j + size/2.
//
// THREAD MAPPING: one thread per pixel (n, h, w) -- N*H*W threads, consecutive threads on
// consecutive w, so every load/store of a channel plane coalesces.  Each thread walks
// down the C channels of its pixel keeping a RUNNING window sum (add the channel that
// enters the window, subtract the one that leaves), so the cost is O(C), not O(C*size).
// No shared memory.  Forward saves `scale` for the backward pass.
// Compiled at run time by cupy.RawModule (NVRTC): no #include.

extern "C" __global__ void lrn_forward(
    const float* __restrict__ x, float* __restrict__ y, float* __restrict__ scale,
    int N, int C, int HW, int size, float alpha, float beta, float k)
{
    const long long pixels = (long long)N * HW;
    const int before = size / 2, after = (size - 1) / 2;   // window c-before .. c+after
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels;
         p += (long long)gridDim.x * blockDim.x) {
        const long long n = p / HW, hw = p % HW;
        const float* xp = x + n * C * HW + hw;              // channel c at xp[c * HW]
        float window = 0.0f;                                // sum of squares in the window
        for (int j = 0; j < after && j < C; ++j) window += xp[(long long)j * HW] * xp[(long long)j * HW];
        for (int c = 0; c < C; ++c) {
            const int enter = c + after, leave = c - before - 1;
            if (enter < C) window += xp[(long long)enter * HW] * xp[(long long)enter * HW];
            if (leave >= 0) window -= xp[(long long)leave * HW] * xp[(long long)leave * HW];
            const float s = k + alpha * window;
            const long long at = (n * C + c) * HW + hw;
            scale[at] = s;
            y[at] = xp[(long long)c * HW] * powf(s, -beta);
        }
    }
}

extern "C" __global__ void lrn_backward(
    const float* __restrict__ x, const float* __restrict__ scale,
    const float* __restrict__ gy, float* __restrict__ gx,
    int N, int C, int HW, int size, float alpha, float beta)
{
    const long long pixels = (long long)N * HW;
    const int before = (size - 1) / 2, after = size / 2;    // i in j-before .. j+after
    for (long long p = blockIdx.x * (long long)blockDim.x + threadIdx.x; p < pixels;
         p += (long long)gridDim.x * blockDim.x) {
        const long long base = (p / HW) * C * HW + p % HW;  // channel c at base + c*HW
        // r[i] = gy[i] * y[i] / scale[i] = gy[i] * x[i] * scale[i]^(-beta-1)
        #define R(i) (gy[base + (long long)(i) * HW] * x[base + (long long)(i) * HW] * \
                      powf(scale[base + (long long)(i) * HW], -beta - 1.0f))
        float window = 0.0f;
        for (int i = 0; i < after && i < C; ++i) window += R(i);
        for (int j = 0; j < C; ++j) {
            const int enter = j + after, leave = j - before - 1;
            if (enter < C) window += R(enter);
            if (leave >= 0) window -= R(leave);
            const long long at = base + (long long)j * HW;
            gx[at] = gy[at] * powf(scale[at], -beta) - 2.0f * alpha * beta * x[at] * window;
        }
        #undef R
    }
}
