// sgd.cu -- the SGD update of one parameter in one pass (float32), as torch.optim.SGD:
//
//   d = g + weight_decay * p                       (when weight_decay != 0)
//   b = d                                          first step with momentum
//   b = momentum * b + (1 - dampening) * d         later steps
//   d = d + momentum * b  if nesterov  else  d = b
//   p = p - lr * d
//
// Written out with array operations this is about five passes over the parameter (each
// a kernel launch that reads and writes whole arrays); here each thread reads p, g and
// b once and writes p and b once.  The gradient is never modified.
//
// THREAD MAPPING: one thread per element in a grid-stride loop; no shared memory.
// `use_momentum` = 0 leaves `buf` untouched (pass any array).
// Compiled at run time by cupy.RawModule (NVRTC): no #include.

extern "C" __global__ void sgd_update(
    float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf,
    long long n, float lr, float momentum, float dampening, float weight_decay,
    int use_momentum, int nesterov, int first)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float d = g[i];
        if (weight_decay != 0.0f) d += weight_decay * p[i];
        if (use_momentum) {
            const float b = first ? d : momentum * buf[i] + (1.0f - dampening) * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        p[i] -= lr * d;
    }
}
