// Per-channel passes over NCHW tensors on the GPU: channel sums (batch norm's moments, the
// per-channel ops' gradients), channel dot products (batch norm's backward sums), per-channel
// affine maps with an optional ReLU, batch norm's input gradient, and ReLU with its gradient.
// Reductions take one block per channel and a fixed order (each thread's strided partial sum
// in double, then a tree in shared memory), so they repeat bit for bit.

#define THREADS 256

__device__ double block_sum(double v) {
    __shared__ double s[THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    for (int k = THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    return s[0];
}

// out[ch] = scale · Σ x (or Σ (x − centre[ch])² when centre is given)
template <typename T>
__device__ void sums(const T *x, const T *centre, T *out, unsigned int n, unsigned int c,
                     unsigned int plane, double scale) {
    unsigned int ch = blockIdx.x;
    double m = centre ? (double)centre[ch] : 0.0;
    unsigned int per = n * plane;
    double acc = 0.0;
    for (unsigned int j = threadIdx.x; j < per; j += THREADS) {
        unsigned int img = j / plane, i = j - img * plane;
        double v = (double)x[((unsigned long long)img * c + ch) * plane + i];
        if (centre) {
            v -= m;
            v *= v;
        }
        acc += v;
    }
    double t = block_sum(acc);
    if (threadIdx.x == 0) out[ch] = (T)(t * scale);
}

// out[ch] = Σ a·b
template <typename T>
__device__ void dots(const T *a, const T *b, T *out, unsigned int n, unsigned int c,
                     unsigned int plane) {
    unsigned int ch = blockIdx.x;
    unsigned int per = n * plane;
    double acc = 0.0;
    for (unsigned int j = threadIdx.x; j < per; j += THREADS) {
        unsigned int img = j / plane, i = j - img * plane;
        unsigned long long k = ((unsigned long long)img * c + ch) * plane + i;
        acc += (double)a[k] * (double)b[k];
    }
    double t = block_sum(acc);
    if (threadIdx.x == 0) out[ch] = (T)t;
}

#define GRID_STRIDE(j, total)                                                         \
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; \
         j < (total); j += (unsigned long long)blockDim.x * gridDim.x)

// out = x·a[ch] + b[ch] (a or b may be absent), then max(·, 0) when relu (NaN giving 0)
template <typename T>
__device__ void affine(const T *x, const T *a, const T *b, T *out, unsigned long long total,
                       unsigned int c, unsigned int plane, int relu) {
    GRID_STRIDE(j, total) {
        unsigned int ch = (unsigned int)((j / plane) % c);
        T y = x[j];
        if (a) y = y * a[ch];
        if (b) y = y + b[ch];
        if (relu) y = y > (T)0 ? y : (T)0;
        out[j] = y;
    }
}

// out = g·k[0][ch] + x·k[1][ch] + k[2][ch]   (k: [3, C])
template <typename T>
__device__ void combine(const T *g, const T *x, const T *k, T *out, unsigned long long total,
                        unsigned int c, unsigned int plane) {
    GRID_STRIDE(j, total) {
        unsigned int ch = (unsigned int)((j / plane) % c);
        out[j] = g[j] * k[ch] + x[j] * k[c + ch] + k[2 * c + ch];
    }
}

// out = max(x, 0), NaN giving 0
template <typename T>
__device__ void relu(const T *x, T *out, unsigned long long total) {
    GRID_STRIDE(j, total) {
        T v = x[j];
        out[j] = v > (T)0 ? v : (T)0;
    }
}

// out = g where r > 0, else 0
template <typename T>
__device__ void relu_back(const T *g, const T *r, T *out, unsigned long long total) {
    GRID_STRIDE(j, total) { out[j] = r[j] > (T)0 ? g[j] : (T)0; }
}

#define INSTANCES(T, S)                                                                    \
    extern "C" __global__ void channel_sums_##S(const T *x, const T *centre, T *out,        \
                                                unsigned int n, unsigned int c,             \
                                                unsigned int plane, double scale) {         \
        sums<T>(x, centre, out, n, c, plane, scale);                                        \
    }                                                                                       \
    extern "C" __global__ void channel_dots_##S(const T *a, const T *b, T *out,             \
                                                unsigned int n, unsigned int c,             \
                                                unsigned int plane) {                       \
        dots<T>(a, b, out, n, c, plane);                                                    \
    }                                                                                       \
    extern "C" __global__ void channel_affine_##S(const T *x, const T *a, const T *b, T *out, \
                                                  unsigned long long total, unsigned int c, \
                                                  unsigned int plane, int relu_) {          \
        affine<T>(x, a, b, out, total, c, plane, relu_);                                    \
    }                                                                                       \
    extern "C" __global__ void channel_combine_##S(const T *g, const T *x, const T *k, T *out, \
                                                   unsigned long long total, unsigned int c, \
                                                   unsigned int plane) {                    \
        combine<T>(g, x, k, out, total, c, plane);                                          \
    }                                                                                       \
    extern "C" __global__ void relu_##S(const T *x, T *out, unsigned long long total) {     \
        relu<T>(x, out, total);                                                             \
    }                                                                                       \
    extern "C" __global__ void relu_back_##S(const T *g, const T *r, T *out,                \
                                             unsigned long long total) {                    \
        relu_back<T>(g, r, out, total);                                                     \
    }

INSTANCES(float, f32)
INSTANCES(double, f64)
