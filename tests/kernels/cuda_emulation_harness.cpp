// Compiles minigrad's CUDA C kernels for the CPU (see cuda_emulation.h) and exports one
// launcher per kernel: launch_<kernel>(gx, gy, gz, bx, by, bz, <the kernel's arguments>).
#include "cuda_emulation.h"

#include "conv3x3.cu"
#include "im2col.cu"
#include "maxpool.cu"
#include "lrn.cu"

#define GRID dim3{(unsigned)gx, (unsigned)gy, (unsigned)gz}, dim3{(unsigned)bx, (unsigned)by, (unsigned)bz}
#define DIMS int gx, int gy, int gz, int bx, int by, int bz

extern "C" {
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
int launch_im2col(DIMS, const float* x, float* cols, int N, int C, int H, int W, int kh, int kw,
                   int sh, int sw, int ph, int pw, int Ho, int Wo) {
    return launch(GRID, im2col, x, cols, N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
}
int launch_col2im(DIMS, const float* cols, float* x, int N, int C, int H, int W, int kh, int kw,
                   int sh, int sw, int ph, int pw, int Ho, int Wo) {
    return launch(GRID, col2im, cols, x, N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo);
}
int launch_maxpool2d_forward(DIMS, const float* x, float* y, int* argmax, int NC, int H, int W,
                              int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw) {
    return launch(GRID, maxpool2d_forward, x, y, argmax, NC, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);
}
int launch_maxpool2d_backward(DIMS, const float* gy_, const int* argmax, float* gx_, int NC, int H,
                               int W, int Ho, int Wo, int kh, int kw, int sh, int sw, int ph, int pw) {
    return launch(GRID, maxpool2d_backward, gy_, argmax, gx_, NC, H, W, Ho, Wo, kh, kw, sh, sw, ph, pw);
}
int launch_lrn_forward(DIMS, const float* x, float* y, float* scale, int N, int C, int HW,
                        int size, float alpha, float beta, float k) {
    return launch(GRID, lrn_forward, x, y, scale, N, C, HW, size, alpha, beta, k);
}
int launch_lrn_backward(DIMS, const float* x, const float* scale, const float* gy_, float* gx_,
                         int N, int C, int HW, int size, float alpha, float beta) {
    return launch(GRID, lrn_backward, x, scale, gy_, gx_, N, C, HW, size, alpha, beta);
}
}
