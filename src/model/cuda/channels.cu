// Per-channel passes over NCHW tensors on the GPU: channel sums (batch norm's moments, the
// per-channel ops' gradients), channel dot products (batch norm's backward sums), per-channel
// affine maps with an optional ReLU, batch norm's input gradient, ReLU with its gradient, batch
// norm's fused training passes, 2x2 max pooling and its routing, and softmax cross-entropy.
// Reductions split each channel over blocks of images, then add the blocks' sums in order;
// every sum has a fixed order (each thread's strided partial sum in double, a tree in shared
// memory, the blocks in turn), so they repeat bit for bit. Indices within a tensor are 32-bit
// (the launchers refuse larger tensors).

#define THREADS 256

__device__ double block_sum(double v) {
    __shared__ double s[THREADS];
    __syncthreads();  // a previous call's readers are done with s
    s[threadIdx.x] = v;
    __syncthreads();
    for (int k = THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    return s[0];
}

// Stage one of the channel reductions, on a grid (C, S): block (ch, s) sums channel ch over
// images [s·N/S, (s+1)·N/S) into part[ch·S + s]: Σa, or Σ(a − centre[ch])² with a centre; with
// b, also Σa·b into part[(C + ch)·S + s].
template <typename T>
__device__ void partial_sums(const T *a, const T *b, const T *centre, double *part,
                             unsigned int n, unsigned int c, unsigned int plane) {
    unsigned int ch = blockIdx.x, s = blockIdx.y, parts = gridDim.y;
    unsigned int i0 = (unsigned int)((unsigned long long)n * s / parts);
    unsigned int i1 = (unsigned int)((unsigned long long)n * (s + 1) / parts);
    unsigned int per = (i1 - i0) * plane;
    double m = centre ? (double)centre[ch] : 0.0;
    double acc = 0.0, acc2 = 0.0;
#pragma unroll 4
    for (unsigned int j = threadIdx.x; j < per; j += THREADS) {
        unsigned int img = i0 + j / plane, i = j % plane;
        unsigned long long k = ((unsigned long long)img * c + ch) * plane + i;
        double v = (double)a[k];
        if (b) acc2 += v * (double)b[k];
        if (centre) {
            v -= m;
            v *= v;
        }
        acc += v;
    }
    double t = block_sum(acc);
    if (threadIdx.x == 0) part[ch * parts + s] = t;
    if (b) {
        double t2 = block_sum(acc2);
        if (threadIdx.x == 0) part[(c + ch) * parts + s] = t2;
    }
}

// Stage two: out[r] = scale · Σ_s part[r·S + s], in order, for each of `rows` results.
template <typename T>
__device__ void finish_sums(const double *part, T *out, unsigned int rows, unsigned int parts,
                            double scale) {
    unsigned int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    double t = 0.0;
    for (unsigned int s = 0; s < parts; s++) t += part[r * parts + s];
    out[r] = (T)(t * scale);
}

#define GRID_STRIDE(j, total)                                                         \
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; \
         j < (total); j += (unsigned long long)blockDim.x * gridDim.x)

// out = x·a[ch] + b[ch] (a or b may be absent), then max(·, 0) when relu (NaN giving 0)
template <typename T>
__device__ void affine(const T *x, const T *a, const T *b, T *out, unsigned long long total,
                       unsigned int c, unsigned int plane, int relu) {
    GRID_STRIDE(j, total) {
        unsigned int ch = ((unsigned int)j / plane) % c;
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
        unsigned int ch = ((unsigned int)j / plane) % c;
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

// Batch norm in training mode, one thread per channel, after the mean (stats row 0) and the
// partial sums of squared deviations (part, `parts` per channel): writes stats rows 1–3 =
// 1/√(var + ε), a = γ/√(var + ε), b = β − mean·a, and folds the batch into the running mean
// and (unbiased) variance in place. m: values per channel.
template <typename T>
__device__ void bn_stats_finish(const double *part, unsigned int parts, T *stats, const T *gamma,
                                const T *beta, T *rmean, T *rvar, unsigned int c, double m,
                                double momentum, double eps) {
    unsigned int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double t = 0.0;
    for (unsigned int s = 0; s < parts; s++) t += part[ch * parts + s];
    T var = (T)(t / m);
    T mean = stats[ch];
    T invstd = (T)1 / (T)sqrt((double)(var + (T)eps));
    T a = gamma[ch] * invstd;
    stats[c + ch] = invstd;
    stats[2 * c + ch] = a;
    stats[3 * c + ch] = beta[ch] - mean * a;
    T unbiased = var * (T)(m / fmax(m - 1.0, 1.0));
    rmean[ch] = rmean[ch] * (T)(1.0 - momentum) + mean * (T)momentum;
    rvar[ch] = rvar[ch] * (T)(1.0 - momentum) + unbiased * (T)momentum;
}

// Batch norm's reverse pass, one thread per channel, from the partial sums of dy and dy·z
// (part rows 0 and 1) and the forward's stats (mean, 1/σ, a = γ/σ, b): writes out rows
// dγ, dβ and the input gradient's coefficients c0, c1, c2 with dz = c0·dy + c1·z + c2, which
// is γ/σ·(dy − dβ/m − x̂·dγ/m) for x̂ = (z − mean)/σ.
template <typename T>
__device__ void bn_back_finish(const double *part, unsigned int parts, const T *stats, T *out,
                               unsigned int c, double m) {
    unsigned int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    double sdy = 0.0, sdyz = 0.0;
    for (unsigned int s = 0; s < parts; s++) {
        sdy += part[ch * parts + s];
        sdyz += part[(c + ch) * parts + s];
    }
    double mean = (double)stats[ch], invstd = (double)stats[c + ch], k = (double)stats[2 * c + ch];
    double dgamma = invstd * (sdyz - mean * sdy);
    double c1 = -k * dgamma * invstd / m;
    out[ch] = (T)dgamma;
    out[c + ch] = (T)sdy;
    out[2 * c + ch] = (T)k;
    out[3 * c + ch] = (T)c1;
    out[4 * c + ch] = (T)(-k * sdy / m - c1 * mean);
}

// 2x2 max pooling, stride 2 (odd trailing rows and columns dropped), one thread per window of
// x: [planes, h, w]. The first maximum (top left, top right, bottom left, bottom right) wins, as
// on the CPU. way 0: out = the maxima; way 1 (scatter): out [planes, h, w] gets a[window] at
// each maximum, zeros elsewhere (out comes zeroed, for the dropped rows); way 2 (gather): out[window] = a at the maximum.
template <typename T>
__device__ void pool2(const T *x, const T *a, T *out, unsigned int planes, unsigned int h,
                      unsigned int w, int way) {
    unsigned int oh = h / 2, ow = w / 2;
    unsigned long long total = (unsigned long long)planes * oh * ow;
    GRID_STRIDE(j, total) {
        unsigned int q = (unsigned int)j;
        unsigned int xx = q % ow, y = (q / ow) % oh, p = q / (ow * oh);
        unsigned long long base = ((unsigned long long)p * h + 2 * y) * w + 2 * xx;
        unsigned long long cell[4] = {base, base + 1, base + w, base + w + 1};
        T best = x[cell[0]];
        int k = 0;
        for (int i = 1; i < 4; i++) {
            T v = x[cell[i]];
            if (v > best) {
                best = v;
                k = i;
            }
        }
        if (way == 0) {
            out[j] = best;
        } else if (way == 1) {
            for (int i = 0; i < 4; i++) out[cell[i]] = i == k ? a[j] : (T)0;
        } else {
            out[j] = a[cell[k]];
        }
    }
}

// Softmax cross-entropy, one warp per row of z: [n, k] (f64 inside, as on the CPU). Writes
// the gradient (softmax − onehot)/n into out[0 .. n·k] and each row's loss into out[n·k + row]
// (NaN for a label outside 0..k).
template <typename T>
__device__ void softmax_xent(const T *z, const unsigned int *y, T *out, unsigned int n,
                             unsigned int k) {
    unsigned int row = blockIdx.x, lane = threadIdx.x;
    const T *zr = z + (unsigned long long)row * k;
    double m = -1.0 / 0.0;
    for (unsigned int j = lane; j < k; j += 32) m = fmax(m, (double)zr[j]);
    for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
    double s = 0.0;
    for (unsigned int j = lane; j < k; j += 32) s += exp((double)zr[j] - m);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    unsigned int label = y[row];
    double inv_n = 1.0 / (double)n;
    for (unsigned int j = lane; j < k; j += 32) {
        double p = exp((double)zr[j] - m) / s;
        out[(unsigned long long)row * k + j] = (T)((p - (j == label ? 1.0 : 0.0)) * inv_n);
    }
    if (lane == 0) {
        double loss = label < k ? m + log(s) - (double)zr[label] : 0.0 / 0.0;
        out[(unsigned long long)n * k + row] = (T)loss;
    }
}

#define INSTANCES(T, S)                                                                    \
    extern "C" __global__ void channel_partial_sums_##S(const T *a, const T *b, const T *centre, \
                                                        double *part, unsigned int n,       \
                                                        unsigned int c, unsigned int plane) { \
        partial_sums<T>(a, b, centre, part, n, c, plane);                                   \
    }                                                                                       \
    extern "C" __global__ void channel_finish_sums_##S(const double *part, T *out,          \
                                                       unsigned int rows, unsigned int parts, \
                                                       double scale) {                      \
        finish_sums<T>(part, out, rows, parts, scale);                                      \
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
    extern "C" __global__ void bn_stats_finish_##S(                                         \
        const double *part, unsigned int parts, T *stats, const T *gamma, const T *beta,    \
        T *rmean, T *rvar, unsigned int c, double m, double momentum, double eps) {         \
        bn_stats_finish<T>(part, parts, stats, gamma, beta, rmean, rvar, c, m, momentum, eps); \
    }                                                                                       \
    extern "C" __global__ void bn_back_finish_##S(const double *part, unsigned int parts,   \
                                                  const T *stats, T *out, unsigned int c,   \
                                                  double m) {                               \
        bn_back_finish<T>(part, parts, stats, out, c, m);                                   \
    }                                                                                       \
    extern "C" __global__ void pool2_##S(const T *x, const T *a, T *out, unsigned int planes, \
                                         unsigned int h, unsigned int w, int way) {         \
        pool2<T>(x, a, out, planes, h, w, way);                                             \
    }                                                                                       \
    extern "C" __global__ void softmax_xent_##S(const T *z, const unsigned int *y, T *out,  \
                                                unsigned int n, unsigned int k) {           \
        softmax_xent<T>(z, y, out, n, k);                                                   \
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
