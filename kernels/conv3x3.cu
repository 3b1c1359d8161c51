// conv3x3.cu -- direct 3x3 convolution (NCHW, float32) and both of its gradients.
//
//   forward          y[n,k,oy,ox]  = sum_{c,ky,kx} x[n,c, oy*s-p+ky, ox*s-p+kx] * w[k,c,ky,kx]
//   backward_input   gx[n,c,iy,ix] = sum_{k,ky,kx} gy[n,k,oy,ox] * w[k,c,ky,kx]
//                                      over the (oy,ox) with oy*s-p+ky == iy, ox*s-p+kx == ix
//   backward_weight  gw[k,c,ky,kx] = sum_{n,oy,ox} gy[n,k,oy,ox] * x[n,c, oy*s-p+ky, ox*s-p+kx]
//
// Used for the 3x3 convolutions of VGG and ResNet (stride 1 or 2, padding 1), which
// are almost all of their arithmetic.  Everything else goes through im2col + cuBLAS.
//
// THREAD / BLOCK MAPPING of conv3x3_forward and conv3x3_backward_input
//   * A block computes a TILE x TILE (8 x 8) patch of output pixels for CO_BLOCK (16)
//     output channels of one image.  Block = (8, 8, 4) = 256 threads: thread (tx, ty)
//     owns output pixel (oy0+ty, ox0+tx) and thread z-layer tz owns the CO_PER_THREAD (4)
//     channels tz*4 .. tz*4+3 of the block's 16, kept in 4 register accumulators.
//   * Grid = (number of spatial tiles, ceil(K / 16), N).
//   * Loop over the input channels in chunks of CI_TILE (8).  For each chunk the block
//     first copies, cooperatively (all 256 threads, consecutive threads -> consecutive
//     addresses, so the global loads coalesce):
//       - the input patch the tile needs, *with its halo*, into shared memory s_in:
//         (TILE-1)*s + 3 pixels a side (10 x 10 at stride 1, 17 x 17 at stride 2),
//         zeros where the patch falls in the padding;
//       - the 16 x 8 x 9 weights of the chunk into shared memory s_w;
//     then __syncthreads(), and every thread does 8 * 9 * 4 multiply-adds from shared
//     memory.  Each input value loaded from global memory is reused by up to
//     9 taps x 16 output channels; each weight by 64 pixels.  (All threads of a warp
//     share tz, so their s_w reads are broadcasts.)
//   * backward_input is the same kernel shape run "in reverse": the block owns a tile of
//     *input* pixels for 16 input channels and loops over the output channels k.  A
//     gradient pixel gy[oy,ox] reaches input pixel iy when oy*s - p + ky == iy, i.e.
//     oy = (iy + p - ky) / s when that divides evenly.  At stride 1 this is the "full"
//     correlation of gy with the flipped kernel; at stride 2 only the taps of the right
//     parity contribute.  Each thread *gathers* its own sum (no atomics, no scatter),
//     from a gy patch of at most TILE+2 = 10 pixels a side staged in shared memory.
//
// THREAD / BLOCK MAPPING of conv3x3_backward_weight
//   * A block owns one output channel k and WG_CI (4) input channels c0..c0+3, and one
//     slice (blockIdx.z) of the N*Ho*Wo output positions.  Its 256 threads stride over
//     the positions (consecutive threads -> consecutive ox, coalesced gy reads), each
//     keeping 4 x 9 = 36 partial sums in registers.
//   * The 36 sums are then reduced across the block: within each warp with
//     __shfl_down_sync, then the 8 warp results through shared memory s_red.
//   * Each slice writes its own partial result gw_part[slice, k, c, 9]; the caller sums
//     the slices (deterministic: no floating-point atomics).
//
// Launch from Python (minigrad/cuda.py) with block = (8, 8, 4) for the first two kernels
// and block = (256,) for the weight gradient.  Compiled at run time by cupy.RawModule
// (NVRTC): no #include is needed or allowed here.

#define TILE 8                                  // output pixels per block side
#define CO_PER_THREAD 4                         // output channels per thread
#define CO_GROUPS 4                             // blockDim.z
#define CO_BLOCK (CO_PER_THREAD * CO_GROUPS)    // output channels per block (16)
#define CI_TILE 8                               // input channels staged per step
#define IN_MAX ((TILE - 1) * 2 + 3)             // input patch side at stride <= 2 (17)
#define G_MAX (TILE + 2)                        // gy patch side for backward_input (10)
#define WG_THREADS 256                          // threads of the weight-gradient block
#define WG_CI 4                                 // input channels per weight-grad block

// floor division and modulo that are also right for negative a (C rounds toward 0)
__device__ __forceinline__ int floor_div(int a, int b) {
    return (a >= 0) ? a / b : -((-a + b - 1) / b);
}

extern "C" __global__ void conv3x3_forward(
    const float* __restrict__ x,   // (N, C, H, W)
    const float* __restrict__ w,   // (K, C, 3, 3)
    float* __restrict__ y,         // (N, K, Ho, Wo)
    int N, int C, int H, int W, int K, int Ho, int Wo, int stride, int pad)
{
    __shared__ float s_in[CI_TILE][IN_MAX][IN_MAX];
    __shared__ float s_w[CO_BLOCK][CI_TILE][9];

    const int tiles_w = (Wo + TILE - 1) / TILE;
    const int oy0 = (blockIdx.x / tiles_w) * TILE;      // first output row of the tile
    const int ox0 = (blockIdx.x % tiles_w) * TILE;      // first output column
    const int k0 = blockIdx.y * CO_BLOCK;               // first output channel
    const int n = blockIdx.z;
    const int tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    const int tid = (tz * TILE + ty) * TILE + tx;
    const int nthreads = TILE * TILE * CO_GROUPS;

    const int in_side = (TILE - 1) * stride + 3;        // patch side incl. halo
    const int iy0 = oy0 * stride - pad;                 // patch origin in the image
    const int ix0 = ox0 * stride - pad;

    float acc[CO_PER_THREAD];
#pragma unroll
    for (int j = 0; j < CO_PER_THREAD; ++j) acc[j] = 0.0f;

    for (int c0 = 0; c0 < C; c0 += CI_TILE) {
        // 1. stage the input patch (zeros outside the image = the padding)
        const int patch = in_side * in_side;
        for (int i = tid; i < CI_TILE * patch; i += nthreads) {
            const int ci = i / patch, r = i % patch;
            const int py = r / in_side, px = r % in_side;
            const int c = c0 + ci, iy = iy0 + py, ix = ix0 + px;
            float v = 0.0f;
            if (c < C && iy >= 0 && iy < H && ix >= 0 && ix < W)
                v = x[((n * C + c) * H + iy) * W + ix];
            s_in[ci][py][px] = v;
        }
        // 2. stage the weights of these CI_TILE input channels for the block's channels
        for (int i = tid; i < CO_BLOCK * CI_TILE * 9; i += nthreads) {
            const int co = i / (CI_TILE * 9), r = i % (CI_TILE * 9);
            const int ci = r / 9, tap = r % 9;
            const int k = k0 + co, c = c0 + ci;
            s_w[co][ci][tap] = (k < K && c < C) ? w[(k * C + c) * 9 + tap] : 0.0f;
        }
        __syncthreads();

        // 3. multiply-accumulate from shared memory
        for (int ci = 0; ci < CI_TILE; ++ci) {
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const float v = s_in[ci][ty * stride + ky][tx * stride + kx];
#pragma unroll
                    for (int j = 0; j < CO_PER_THREAD; ++j)
                        acc[j] += v * s_w[tz * CO_PER_THREAD + j][ci][ky * 3 + kx];
                }
            }
        }
        __syncthreads();   // before the next chunk overwrites shared memory
    }

    const int oy = oy0 + ty, ox = ox0 + tx;
    if (oy < Ho && ox < Wo) {
#pragma unroll
        for (int j = 0; j < CO_PER_THREAD; ++j) {
            const int k = k0 + tz * CO_PER_THREAD + j;
            if (k < K) y[((n * K + k) * Ho + oy) * Wo + ox] = acc[j];
        }
    }
}

extern "C" __global__ void conv3x3_backward_input(
    const float* __restrict__ gy,  // (N, K, Ho, Wo)
    const float* __restrict__ w,   // (K, C, 3, 3)
    float* __restrict__ gx,        // (N, C, H, W)
    int N, int C, int H, int W, int K, int Ho, int Wo, int stride, int pad)
{
    __shared__ float s_g[CI_TILE][G_MAX][G_MAX];
    __shared__ float s_w[CO_BLOCK][CI_TILE][9];   // [input channel][output channel][tap]

    const int tiles_w = (W + TILE - 1) / TILE;
    const int iy0 = (blockIdx.x / tiles_w) * TILE;      // first input row of the tile
    const int ix0 = (blockIdx.x % tiles_w) * TILE;
    const int c0 = blockIdx.y * CO_BLOCK;               // first input channel
    const int n = blockIdx.z;
    const int tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    const int tid = (tz * TILE + ty) * TILE + tx;
    const int nthreads = TILE * TILE * CO_GROUPS;

    // gy rows that can reach input rows iy0 .. iy0+TILE-1: oy*s = iy + pad - ky
    const int oy_lo = floor_div(iy0 + pad - 2 + stride - 1, stride);   // ceil division
    const int ox_lo = floor_div(ix0 + pad - 2 + stride - 1, stride);

    float acc[CO_PER_THREAD];
#pragma unroll
    for (int j = 0; j < CO_PER_THREAD; ++j) acc[j] = 0.0f;

    const int iy = iy0 + ty, ix = ix0 + tx;

    for (int k0 = 0; k0 < K; k0 += CI_TILE) {
        // 1. stage the gy patch (zeros outside 0..Ho-1 x 0..Wo-1)
        for (int i = tid; i < CI_TILE * G_MAX * G_MAX; i += nthreads) {
            const int ki = i / (G_MAX * G_MAX), r = i % (G_MAX * G_MAX);
            const int gy_r = r / G_MAX, gx_c = r % G_MAX;
            const int k = k0 + ki, oy = oy_lo + gy_r, ox = ox_lo + gx_c;
            float v = 0.0f;
            if (k < K && oy >= 0 && oy < Ho && ox >= 0 && ox < Wo)
                v = gy[((n * K + k) * Ho + oy) * Wo + ox];
            s_g[ki][gy_r][gx_c] = v;
        }
        // 2. stage w[k0.., c0.., :, :]
        for (int i = tid; i < CO_BLOCK * CI_TILE * 9; i += nthreads) {
            const int co = i / (CI_TILE * 9), r = i % (CI_TILE * 9);
            const int ki = r / 9, tap = r % 9;
            const int c = c0 + co, k = k0 + ki;
            s_w[co][ki][tap] = (k < K && c < C) ? w[(k * C + c) * 9 + tap] : 0.0f;
        }
        __syncthreads();

        // 3. gather: each tap (ky, kx) whose oy, ox land on the stride grid contributes
        for (int ki = 0; ki < CI_TILE; ++ki) {
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const int t_row = iy + pad - ky;               // = oy * stride
                if (t_row - floor_div(t_row, stride) * stride != 0) continue;  // off the grid
                const int ly = floor_div(t_row, stride) - oy_lo;   // row in s_g
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int t_col = ix + pad - kx;
                    if (t_col - floor_div(t_col, stride) * stride != 0) continue;
                    const int lx = floor_div(t_col, stride) - ox_lo;
                    const float g = s_g[ki][ly][lx];
#pragma unroll
                    for (int j = 0; j < CO_PER_THREAD; ++j)
                        acc[j] += g * s_w[tz * CO_PER_THREAD + j][ki][ky * 3 + kx];
                }
            }
        }
        __syncthreads();
    }

    if (iy < H && ix < W) {
#pragma unroll
        for (int j = 0; j < CO_PER_THREAD; ++j) {
            const int c = c0 + tz * CO_PER_THREAD + j;
            if (c < C) gx[((n * C + c) * H + iy) * W + ix] = acc[j];
        }
    }
}

extern "C" __global__ void conv3x3_backward_weight(
    const float* __restrict__ x,     // (N, C, H, W)
    const float* __restrict__ gy,    // (N, K, Ho, Wo)
    float* __restrict__ gw_part,     // (slices, K, C, 3, 3), summed over slices by the caller
    int N, int C, int H, int W, int K, int Ho, int Wo, int stride, int pad,
    int positions_per_slice)
{
    __shared__ float s_red[WG_THREADS / 32][WG_CI * 9];

    const int k = blockIdx.x;
    const int c0 = blockIdx.y * WG_CI;
    const int slice = blockIdx.z;
    const int tid = threadIdx.x;
    const int P = N * Ho * Wo;
    const int start = slice * positions_per_slice;
    const int end = min(start + positions_per_slice, P);

    float acc[WG_CI * 9];
#pragma unroll
    for (int i = 0; i < WG_CI * 9; ++i) acc[i] = 0.0f;

    for (int p = start + tid; p < end; p += WG_THREADS) {
        const int ox = p % Wo, oy = (p / Wo) % Ho, n = p / (Ho * Wo);
        const float g = gy[((n * K + k) * Ho + oy) * Wo + ox];
#pragma unroll
        for (int ci = 0; ci < WG_CI; ++ci) {
            const int c = c0 + ci;
            if (c >= C) break;
            const float* xc = x + (n * C + c) * H * W;
#pragma unroll
            for (int ky = 0; ky < 3; ++ky) {
                const int iy = oy * stride - pad + ky;
                if (iy < 0 || iy >= H) continue;
#pragma unroll
                for (int kx = 0; kx < 3; ++kx) {
                    const int ix = ox * stride - pad + kx;
                    if (ix < 0 || ix >= W) continue;
                    acc[ci * 9 + ky * 3 + kx] += g * xc[iy * W + ix];
                }
            }
        }
    }

    // block reduction of the 36 sums: warp shuffles, then one value per warp in shared
    const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
    for (int i = 0; i < WG_CI * 9; ++i) {
        float v = acc[i];
        for (int offset = 16; offset > 0; offset >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) s_red[warp][i] = v;
    }
    __syncthreads();
    if (tid < WG_CI * 9) {
        float total = 0.0f;
        for (int w_ = 0; w_ < WG_THREADS / 32; ++w_) total += s_red[w_][tid];
        const int c = c0 + tid / 9;
        if (c < C) gw_part[((slice * K + k) * C + c) * 9 + tid % 9] = total;
    }
}
