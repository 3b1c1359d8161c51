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
//       - the 8 x 9 x 16 weights of the chunk into shared memory s_w, laid out
//         [input channel][tap][output channel]: the 4 channels of a thread are 4
//         consecutive floats, read with ONE 16-byte load (float4) per 4 multiply-adds;
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
//     Which taps contribute, and where each one reads, depends only on the thread's
//     pixel: it is worked out once, before the channel loop.
//
// SHARED-MEMORY BANKS.  A warp is 32 threads: tx = 0..7 and four consecutive ty, one
// tz.  Shared memory has 32 banks of 4 bytes; 32 loads of one instruction run at once
// only when they fall in 32 different banks (or are the same word).  Thread (tx, ty)
// reads input row ty*s + ky, column tx*s + kx of the staged patch:
//   * stride 1: rows are IN_PITCH = 24 floats apart, so the four rows of a warp start in
//     banks 0, 24, 16, 8 and the 8 columns of each fill the 8 banks after: no conflict.
//   * stride 2: a warp reads every other column, which in a plain row layout puts two
//     threads in one bank (and, with a row pitch of 17, four).  So each staged row is
//     stored de-interleaved -- its 9 even columns first, then its 8 odd ones -- and a
//     warp's 8 reads of a row are 8 consecutive floats; with rows IN_PITCH_S2 = 20 floats
//     apart, rows 2*ty start in banks 0, 8, 16, 24: no conflict either.
//
// THREAD / BLOCK MAPPING of conv3x3_backward_weight
//   * A block owns WG_K (4) output channels k0.., WG_CI (4) input channels c0.. and one
//     slice (blockIdx.z) of the work: the (image, 8 x 8 output tile) pairs, "units".
//   * For each unit the block stages, like the forward kernel, the input patch of its 4
//     input channels (with halo, zeros in the padding) and the 8 x 8 tile of gy of its 4
//     output channels, laid out [pixel][channel] (one 16-byte load per pixel).  Thread
//     (pixel, ci) = (tid % 64, tid / 64) then adds, for its pixel and input channel, the
//     9 taps x 4 output channels = 36 products to 36 register sums.
//   * After the last unit the 36 sums are reduced over the 64 pixel-threads of each input
//     channel (two warps): __shfl_down_sync inside each warp, then the two warp totals
//     through shared memory s_red.
//   * Each slice writes its own partial result gw_part[slice, k, c, 9]; the caller sums
//     the slices (deterministic: no floating-point atomics).
//
// INDEXING.  Offsets inside one image (C*H*W, K*Ho*Wo elements) are 32-bit ints; the
// offset of image n is computed in 64 bits, so a batch may hold 2^31 elements and more
// (VGG-16 at 224 x 224 passes that at about 670 images).  The launcher checks that one
// image stays below 2^31 elements.
//
// Launch from Python (minigrad/cuda.py) with block = (8, 8, 4) for the first two kernels
// and block = (256,) for the weight gradient.  Compiled at run time by cupy.RawModule
// (NVRTC): no #include is needed or allowed here.

#define TILE 8                                  // output pixels per block side
#define CO_PER_THREAD 4                         // output channels per thread
#define CO_GROUPS 4                             // blockDim.z
#define CO_BLOCK (CO_PER_THREAD * CO_GROUPS)    // output channels per block (16)
#define CI_TILE 8                               // input channels staged per step
#define IN_ROWS ((TILE - 1) * 2 + 3)            // rows of the input patch at stride <= 2 (17)
#define IN_PITCH 24                             // floats per staged row at stride 1
#define IN_PITCH_S2 20                          // ... and at stride 2 (de-interleaved)
#define IN_EVEN ((IN_ROWS + 1) / 2)             // even columns of a stride-2 row (9)
#define IN_PLANE (IN_ROWS * IN_PITCH)           // floats per staged channel
#define G_SIDE (TILE + 2)                       // gy patch side for backward_input (10)
#define G_PITCH 24                              // floats per staged gy row
#define G_PLANE (G_SIDE * G_PITCH)
#define WG_PIX (TILE * TILE)                    // output pixels of a weight-grad unit (64)
#define WG_CI 4                                 // input channels per weight-grad block
#define WG_K 4                                  // output channels per weight-grad block
#define WG_THREADS (WG_PIX * WG_CI)             // threads of the weight-gradient block (256)
#define WG_SUMS (WG_K * 9)                      // register sums per weight-grad thread (36)

// floor division that is also right for negative a (C rounds toward 0)
__device__ __forceinline__ int floor_div(int a, int b) {
    return (a >= 0) ? a / b : -((-a + b - 1) / b);
}

// where column px of an input patch row is staged (see SHARED-MEMORY BANKS)
__device__ __forceinline__ int staged_col(int px, int stride) {
    return stride == 1 ? px : (px & 1) * IN_EVEN + (px >> 1);
}

// copy the input patch of channels c0 .. c0+nc-1 of image xn (C, H, W) whose top-left
// corner is (iy0, ix0) into s_in, zeros outside the image (the padding)
__device__ __forceinline__ void stage_input_patch(
    float* s_in, const float* xn, int c0, int nc, int H, int W, int iy0, int ix0,
    int stride, int tid, int nthreads)
{
    const int side = (TILE - 1) * stride + 3;
    const int pitch = stride == 1 ? IN_PITCH : IN_PITCH_S2;
    const int patch = side * side;
    for (int i = tid; i < nc * patch; i += nthreads) {
        const int ci = i / patch, r = i % patch;
        const int py = r / side, px = r % side;
        const int iy = iy0 + py, ix = ix0 + px;
        float v = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
            v = xn[((c0 + ci) * H + iy) * W + ix];
        s_in[ci * IN_PLANE + py * pitch + staged_col(px, stride)] = v;
    }
}

// offsets in a staged channel of the 9 taps of output pixel (tx, ty) of a tile
__device__ __forceinline__ void input_tap_offsets(int* at, int tx, int ty, int stride) {
    const int pitch = stride == 1 ? IN_PITCH : IN_PITCH_S2;
#pragma unroll
    for (int ky = 0; ky < 3; ++ky)
#pragma unroll
        for (int kx = 0; kx < 3; ++kx)
            at[ky * 3 + kx] = (ty * stride + ky) * pitch + staged_col(tx * stride + kx, stride);
}

extern "C" __global__ void conv3x3_forward(
    const float* __restrict__ x,   // (N, C, H, W)
    const float* __restrict__ w,   // (K, C, 3, 3)
    float* __restrict__ y,         // (N, K, Ho, Wo)
    int N, int C, int H, int W, int K, int Ho, int Wo, int stride, int pad)
{
    __shared__ float s_in[CI_TILE * IN_PLANE];
    __shared__ __align__(16) float s_w[CI_TILE][9][CO_BLOCK];

    const int tiles_w = (Wo + TILE - 1) / TILE;
    const int oy0 = (blockIdx.x / tiles_w) * TILE;      // first output row of the tile
    const int ox0 = (blockIdx.x % tiles_w) * TILE;      // first output column
    const int k0 = blockIdx.y * CO_BLOCK;               // first output channel
    const int n = blockIdx.z;
    const int tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    const int tid = (tz * TILE + ty) * TILE + tx;
    const int nthreads = TILE * TILE * CO_GROUPS;
    const float* xn = x + (long long)n * C * H * W;     // image n (64-bit offset)

    int tap_at[9];
    input_tap_offsets(tap_at, tx, ty, stride);

    float acc[CO_PER_THREAD];
#pragma unroll
    for (int j = 0; j < CO_PER_THREAD; ++j) acc[j] = 0.0f;

    for (int c0 = 0; c0 < C; c0 += CI_TILE) {
        const int nc = min(CI_TILE, C - c0);            // channels in this chunk
        // 1. stage the input patch (zeros outside the image = the padding)
        stage_input_patch(s_in, xn, c0, nc, H, W, oy0 * stride - pad, ox0 * stride - pad,
                          stride, tid, nthreads);
        // 2. stage w[k0.., c0.., :, :] as s_w[ci][tap][co] (co fastest: no bank conflicts)
        for (int i = tid; i < nc * 9 * CO_BLOCK; i += nthreads) {
            const int co = i % CO_BLOCK, r = i / CO_BLOCK;
            const int ci = r / 9, tap = r % 9;
            const int k = k0 + co;
            s_w[ci][tap][co] = (k < K) ? w[(k * C + c0 + ci) * 9 + tap] : 0.0f;
        }
        __syncthreads();

        // 3. multiply-accumulate from shared memory: per tap one input value and one
        //    16-byte load of the thread's 4 weights
        for (int ci = 0; ci < nc; ++ci) {
            const float* in_c = s_in + ci * IN_PLANE;
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                const float v = in_c[tap_at[t]];
                const float4 wv = *reinterpret_cast<const float4*>(&s_w[ci][t][tz * CO_PER_THREAD]);
                acc[0] += v * wv.x;
                acc[1] += v * wv.y;
                acc[2] += v * wv.z;
                acc[3] += v * wv.w;
            }
        }
        __syncthreads();   // before the next chunk overwrites shared memory
    }

    const int oy = oy0 + ty, ox = ox0 + tx;
    if (oy < Ho && ox < Wo) {
        float* yn = y + (long long)n * K * Ho * Wo;
#pragma unroll
        for (int j = 0; j < CO_PER_THREAD; ++j) {
            const int k = k0 + tz * CO_PER_THREAD + j;
            if (k < K) yn[(k * Ho + oy) * Wo + ox] = acc[j];
        }
    }
}

extern "C" __global__ void conv3x3_backward_input(
    const float* __restrict__ gy,  // (N, K, Ho, Wo)
    const float* __restrict__ w,   // (K, C, 3, 3)
    float* __restrict__ gx,        // (N, C, H, W)
    int N, int C, int H, int W, int K, int Ho, int Wo, int stride, int pad)
{
    __shared__ float s_g[CI_TILE * G_PLANE];
    __shared__ __align__(16) float s_w[CI_TILE][9][CO_BLOCK];   // [output ch][tap][input ch]

    const int tiles_w = (W + TILE - 1) / TILE;
    const int iy0 = (blockIdx.x / tiles_w) * TILE;      // first input row of the tile
    const int ix0 = (blockIdx.x % tiles_w) * TILE;
    const int c0 = blockIdx.y * CO_BLOCK;               // first input channel
    const int n = blockIdx.z;
    const int tx = threadIdx.x, ty = threadIdx.y, tz = threadIdx.z;
    const int tid = (tz * TILE + ty) * TILE + tx;
    const int nthreads = TILE * TILE * CO_GROUPS;
    const float* gyn = gy + (long long)n * K * Ho * Wo;

    // gy rows that can reach input rows iy0 .. iy0+TILE-1: oy*s = iy + pad - ky
    const int oy_lo = floor_div(iy0 + pad - 2 + stride - 1, stride);   // ceil division
    const int ox_lo = floor_div(ix0 + pad - 2 + stride - 1, stride);
    const int iy = iy0 + ty, ix = ix0 + tx;

    // which taps reach this input pixel (oy = (iy + pad - ky) / s must be a whole
    // number) and where each reads in the staged gy patch: fixed for the thread
    int g_at[9];
    unsigned taps = 0;                                  // bit t set: tap t contributes
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
#pragma unroll
        for (int kx = 0; kx < 3; ++kx) {
            const int t_row = iy + pad - ky, t_col = ix + pad - kx;   // = oy*s, ox*s
            const int oy = floor_div(t_row, stride), ox = floor_div(t_col, stride);
            const bool on_grid = oy * stride == t_row && ox * stride == t_col;
            taps |= (on_grid ? 1u : 0u) << (ky * 3 + kx);
            g_at[ky * 3 + kx] = on_grid ? (oy - oy_lo) * G_PITCH + (ox - ox_lo) : 0;
        }
    }

    float acc[CO_PER_THREAD];
#pragma unroll
    for (int j = 0; j < CO_PER_THREAD; ++j) acc[j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += CI_TILE) {
        const int nk = min(CI_TILE, K - k0);
        // 1. stage the gy patch (zeros outside 0..Ho-1 x 0..Wo-1)
        for (int i = tid; i < nk * G_SIDE * G_SIDE; i += nthreads) {
            const int ki = i / (G_SIDE * G_SIDE), r = i % (G_SIDE * G_SIDE);
            const int row = r / G_SIDE, col = r % G_SIDE;
            const int oy = oy_lo + row, ox = ox_lo + col;
            float v = 0.0f;
            if (oy >= 0 && oy < Ho && ox >= 0 && ox < Wo)
                v = gyn[((k0 + ki) * Ho + oy) * Wo + ox];
            s_g[ki * G_PLANE + row * G_PITCH + col] = v;
        }
        // 2. stage w[k0.., c0.., :, :] as s_w[ki][tap][co]
        for (int i = tid; i < nk * 9 * CO_BLOCK; i += nthreads) {
            const int co = i % CO_BLOCK, r = i / CO_BLOCK;
            const int ki = r / 9, tap = r % 9;
            const int c = c0 + co;
            s_w[ki][tap][co] = (c < C) ? w[((k0 + ki) * C + c) * 9 + tap] : 0.0f;
        }
        __syncthreads();

        // 3. gather: each tap whose (oy, ox) lands on the stride grid contributes
        for (int ki = 0; ki < nk; ++ki) {
            const float* g_k = s_g + ki * G_PLANE;
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                if (!(taps & (1u << t))) continue;
                const float g = g_k[g_at[t]];
                const float4 wv = *reinterpret_cast<const float4*>(&s_w[ki][t][tz * CO_PER_THREAD]);
                acc[0] += g * wv.x;
                acc[1] += g * wv.y;
                acc[2] += g * wv.z;
                acc[3] += g * wv.w;
            }
        }
        __syncthreads();
    }

    if (iy < H && ix < W) {
        float* gxn = gx + (long long)n * C * H * W;
#pragma unroll
        for (int j = 0; j < CO_PER_THREAD; ++j) {
            const int c = c0 + tz * CO_PER_THREAD + j;
            if (c < C) gxn[(c * H + iy) * W + ix] = acc[j];
        }
    }
}

extern "C" __global__ void conv3x3_backward_weight(
    const float* __restrict__ x,     // (N, C, H, W)
    const float* __restrict__ gy,    // (N, K, Ho, Wo)
    float* __restrict__ gw_part,     // (slices, K, C, 3, 3), summed over slices by the caller
    int N, int C, int H, int W, int K, int Ho, int Wo, int stride, int pad,
    int units_per_slice)             // (image, tile) units of each slice
{
    __shared__ float s_in[WG_CI * IN_PLANE];
    __shared__ __align__(16) float s_g[WG_PIX][WG_K];  // gy of the tile: [pixel][channel]
    __shared__ float s_red[WG_THREADS / 32][WG_SUMS];

    const int k0 = blockIdx.x * WG_K;
    const int c0 = blockIdx.y * WG_CI;
    const int slice = blockIdx.z;
    const int tid = threadIdx.x;
    const int pix = tid % WG_PIX, ci = tid / WG_PIX;    // a warp: 32 pixels, one channel
    const int ty = pix / TILE, tx = pix % TILE;
    const int nc = min(WG_CI, C - c0);
    const int tiles_w = (Wo + TILE - 1) / TILE;
    const int tiles = tiles_w * ((Ho + TILE - 1) / TILE);
    const int first = slice * units_per_slice;
    const int last = min(first + units_per_slice, N * tiles);

    int tap_at[9];
    input_tap_offsets(tap_at, tx, ty, stride);

    float acc[WG_SUMS];                                 // acc[kk * 9 + tap]
#pragma unroll
    for (int i = 0; i < WG_SUMS; ++i) acc[i] = 0.0f;

    for (int u = first; u < last; ++u) {
        const int n = u / tiles, tile = u % tiles;
        const int oy0 = (tile / tiles_w) * TILE, ox0 = (tile % tiles_w) * TILE;
        // 1. stage the input patch of the block's input channels
        stage_input_patch(s_in, x + (long long)n * C * H * W, c0, nc, H, W,
                          oy0 * stride - pad, ox0 * stride - pad, stride, tid, WG_THREADS);
        // 2. stage the gy tile of the block's output channels (zeros past the edges)
        const float* gyn = gy + (long long)n * K * Ho * Wo;
        for (int i = tid; i < WG_K * WG_PIX; i += WG_THREADS) {
            const int kk = i / WG_PIX, p = i % WG_PIX;
            const int oy = oy0 + p / TILE, ox = ox0 + p % TILE, k = k0 + kk;
            s_g[p][kk] = (k < K && oy < Ho && ox < Wo) ? gyn[(k * Ho + oy) * Wo + ox] : 0.0f;
        }
        __syncthreads();
        // 3. this pixel's 9 input values times its 4 gradient values
        if (ci < nc) {
            const float4 g = *reinterpret_cast<const float4*>(s_g[pix]);
            const float* in_c = s_in + ci * IN_PLANE;
#pragma unroll
            for (int t = 0; t < 9; ++t) {
                const float v = in_c[tap_at[t]];
                acc[t] += g.x * v;
                acc[9 + t] += g.y * v;
                acc[18 + t] += g.z * v;
                acc[27 + t] += g.w * v;
            }
        }
        __syncthreads();
    }

    // reduce the 36 sums over the 64 pixel-threads of each input channel: warp
    // shuffles, then the two warps of the channel through shared memory
    const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
    for (int i = 0; i < WG_SUMS; ++i) {
        float v = acc[i];
        for (int offset = 16; offset > 0; offset >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, offset);
        if (lane == 0) s_red[warp][i] = v;
    }
    __syncthreads();
    if (tid < WG_CI * WG_SUMS) {
        const int cc = tid / WG_SUMS, i = tid % WG_SUMS;      // channel c0+cc, sum i
        const int k = k0 + i / 9, c = c0 + cc;
        const int per_channel = WG_PIX / 32;                   // warps per input channel (2)
        float total = 0.0f;
        for (int j = 0; j < per_channel; ++j) total += s_red[cc * per_channel + j][i];
        if (k < K && c < C)
            gw_part[(long long)slice * K * C * 9 + (k * C + c) * 9 + i % 9] = total;
    }
}
