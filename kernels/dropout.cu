// dropout.cu -- inverted dropout drawn on the GPU (float32).
//
//   keep[i] = (u_i >= p),   mask[i] = keep[i] / (1 - p),   y[i] = x[i] * mask[i]
//
// u_i is a uniform number in [0, 1) made from the i-th output of the SplitMix64
// generator started at `seed` (Steele, Lea & Flood, 2014): z_i = seed + (i + 1) * g
// with g = 0x9e3779b97f4a7c15, passed through SplitMix64's mixing function; its top 24
// bits, divided by 2^24, are u_i.  The number of element i depends only on (seed, i),
// not on which thread computes it or in which order, so the mask is the same for every
// launch configuration and every GPU: a run seeded with minigrad.manual_seed repeats
// exactly (minigrad draws `seed` from its own generator, one integer per call).
//
// THREAD MAPPING: one thread per element in a grid-stride loop; no shared memory.  The
// mask is written for the backward pass (dx = g * mask).
// Compiled at run time by cupy.RawModule (NVRTC): no #include.

__device__ __forceinline__ unsigned long long splitmix64_mix(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

extern "C" __global__ void dropout_forward(
    const float* __restrict__ x, float* __restrict__ y, float* __restrict__ mask,
    long long n, unsigned long long seed, float p, float scale)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const unsigned long long z = splitmix64_mix(seed + (unsigned long long)(i + 1) * 0x9e3779b97f4a7c15ULL);
        const float u = (float)(z >> 40) * (1.0f / 16777216.0f);   // top 24 bits -> [0, 1)
        const float m = u >= p ? scale : 0.0f;
        mask[i] = m;
        y[i] = x[i] * m;
    }
}
