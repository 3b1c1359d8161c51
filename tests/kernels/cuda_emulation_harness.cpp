// Compiles minigrad's CUDA C kernels for the CPU (see cuda_emulation.h) and exports one
// launcher per kernel: launch_<kernel>(gx, gy, gz, bx, by, bz, <the kernel's arguments>).
#include "cuda_emulation.h"

#include "conv3x3.cu"
#include "im2col.cu"
#include "maxpool.cu"
#include "lrn.cu"
#include "dropout.cu"
#include "sgd.cu"

#define GRID dim3{(unsigned)gx, (unsigned)gy, (unsigned)gz}, dim3{(unsigned)bx, (unsigned)by, (unsigned)bz}
#define DIMS int gx, int gy, int gz, int bx, int by, int bz

extern "C" {
void set_first_block_z(int z) { emu::first_block_z = (unsigned)z; }

int launch_conv3x3_forward(DIMS, const float* x, const float* w, float* y, int N, int C, int H,
                            int W, int K, int Ho, int Wo, int s, int p) {
    return launch(GRID, conv3x3_forward, x, w, y, N, C, H, W, K, Ho, Wo, s, p);
}
int launch_conv3x3_backward_input(DIMS, const float* gy_, const float* w, float* gx_, int N, int C,
                                   int H, int W, int K, int Ho, int Wo, int s, int p) {
    return launch(GRID, conv3x3_backward_input, gy_, w, gx_, N, C, H, W, K, Ho, Wo, s, p);
}
int launch_conv3x3_backward_weight(DIMS, const float* x, const float* gy_, float* part, int N,
                                    int C, int H, int W, int K, int Ho, int Wo, int s, int p,
                                    int per_slice) {
    return launch(GRID, conv3x3_backward_weight, x, gy_, part, N, C, H, W, K, Ho, Wo, s, p, per_slice);
}
// the 32-bit and the 64-bit index variants of im2col.cu and maxpool.cu
#define IM2COL_LAUNCHER(kernel)                                                                  \
    int launch_##kernel(DIMS, const float* in, float* out, int N, int C, int H, int W, int kh,   \
                        int kw, int sh, int sw, int ph, int pw, int Ho, int Wo) {                \
        return launch(GRID, kernel, in, out, N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);        \
    }
IM2COL_LAUNCHER(im2col)
IM2COL_LAUNCHER(im2col_i64)
IM2COL_LAUNCHER(col2im)
IM2COL_LAUNCHER(col2im_i64)
#define MAXPOOL_FORWARD_LAUNCHER(kernel)                                                          \
    int launch_##kernel(DIMS, const float* x, float* y, int* argmax, int NC, int H, int W,       \
                        int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw) {        \
        return launch(GRID, kernel, x, y, argmax, NC, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);     \
    }
MAXPOOL_FORWARD_LAUNCHER(maxpool2d_forward)
MAXPOOL_FORWARD_LAUNCHER(maxpool2d_forward_i64)
#define MAXPOOL_BACKWARD_LAUNCHER(kernel)                                                         \
    int launch_##kernel(DIMS, const float* gy_, const int* argmax, float* gx_, int NC, int H,   \
                        int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw) { \
        return launch(GRID, kernel, gy_, argmax, gx_, NC, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw); \
    }
MAXPOOL_BACKWARD_LAUNCHER(maxpool2d_backward)
MAXPOOL_BACKWARD_LAUNCHER(maxpool2d_backward_i64)
int launch_lrn_forward(DIMS, const float* x, float* y, float* scale, int N, int C, int HW,
                        int size, float alpha, float beta, float k) {
    return launch(GRID, lrn_forward, x, y, scale, N, C, HW, size, alpha, beta, k);
}
int launch_lrn_backward(DIMS, const float* x, const float* scale, const float* gy_, float* gx_,
                         int N, int C, int HW, int size, float alpha, float beta) {
    return launch(GRID, lrn_backward, x, scale, gy_, gx_, N, C, HW, size, alpha, beta);
}
int launch_dropout_forward(DIMS, const float* x, float* y, float* mask, long long n,
                            unsigned long long seed, float p, float scale) {
    return launch(GRID, dropout_forward, x, y, mask, n, seed, p, scale);
}
int launch_sgd_update(DIMS, float* p, const float* g, float* buf, long long n, float lr,
                       float momentum, float dampening, float weight_decay, int use_momentum,
                       int nesterov, int first) {
    return launch(GRID, sgd_update, p, g, buf, n, lr, momentum, dampening, weight_decay,
                  use_momentum, nesterov, first);
}
}
