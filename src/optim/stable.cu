// α-stable draws on the GPU: the same Philox4x32-10 stream and the same f32 Chambers–Mallows–Stuck
// kernel as src/optim/stable.rs, operation for operation (compiled without contraction, so every
// multiply-add below is the explicit fmaf the CPU kernel writes as mul_add), so a CUDA run draws
// the CPU's numbers. One thread per Philox block: draws 2j and 2j + 1. Also the fused update
// that draws its noise in place (update_f32).

#define PI_F 3.14159265358979323846f
#define LN_2_F 0.69314718055994530942f
#define LOG2_E_F 1.44269504088896340736f

__device__ __forceinline__ float sin_q(float x) {
    float x2 = x * x;
    float p = 2.60578e-6f;
    p = fmaf(p, x2, -1.9809602e-4f);
    p = fmaf(p, x2, 8.3330665e-3f);
    p = fmaf(p, x2, -1.666666e-1f);
    return fmaf(x * x2, p, x);
}

__device__ __forceinline__ float ln_q(float x) {
    unsigned int bits = __float_as_uint(x);
    unsigned int t = bits - 0x3f3504f3u;
    float e = (float)(((int)t) >> 23);
    float m = __uint_as_float((t & 0x007fffffu) + 0x3f3504f3u);
    float y = m - 1.0f;
    float y2 = y * y;
    float y4 = y2 * y2;
    float a0 = fmaf(-0.49999988f, y, 0.999999974f);
    float a1 = fmaf(-0.25002155f, y, 0.33334184f);
    float a2 = fmaf(-0.16560696f, y, 0.19956978f);
    float a3 = fmaf(-0.1437733f, y, 0.14949095f);
    float b0 = fmaf(a1, y2, a0);
    float b1 = fmaf(a3, y2, a2);
    float q = fmaf(fmaf(0.087439453f, y4, b1), y4, b0);
    return fmaf(e, LN_2_F, y * q);
}

__device__ __forceinline__ float exp_q(float y) {
    float shifted = fmaf(y, LOG2_E_F, 12582912.0f);
    float n = shifted - 12582912.0f;
    float r = fmaf(-n, 0.69314575f, y);
    r = fmaf(-n, 1.4286068e-6f, r);
    float r2 = r * r;
    float s01 = fmaf(4.999915e-1f, r, 9.999997e-1f);
    float s23 = fmaf(4.189793e-2f, r, 1.6667636e-1f);
    float p = fmaf(fmaf(fmaf(8.290316e-3f, r2, s23), r2, s01), r, 1.0f);
    return p * __uint_as_float((__float_as_uint(shifted) + (127u - 0x4b400000u)) << 23);
}

__device__ __forceinline__ float cms(float alpha, float ratio, float a_head, unsigned int w1,
                                     unsigned int w2) {
    const float pi_24 = PI_F / 16777216.0f, pi_25 = PI_F / 33554432.0f;
    unsigned int i1 = w1 >> 8, i2 = w2 >> 9;
    float u2 = fmaf((float)i2, 1.0f / 8388608.0f, 1.0f / 16777216.0f);
    float lo = (float)min(i1, (1u << 24) - 1u - i1);
    float t = fmaf(lo, pi_24, pi_25);
    float abs_u = pi_25 * fmaf(lo, -2.0f, 16777215.0f);
    float cos_u = sin_q(t);
    float sin_a = sin_q(fminf(alpha * abs_u, fmaf(alpha, t, a_head)));
    float cos_b = sin_q(fmaf(alpha - 1.0f, t, a_head));
    float ln_u2 = ln_q(u2);
    float q = -1.0f / (ln_u2 * cos_u);
    float minus_abs = (sin_a * ln_u2 * q) * exp_q(ratio * ln_q(cos_b * q));
    return __uint_as_float(__float_as_uint(minus_abs) ^ (w1 & 0x80000000u));
}

// Philox4x32-10 block j of stream (key, step): the words of draws 2j and 2j + 1.
__device__ __forceinline__ void philox(unsigned long long j, unsigned int key0, unsigned int key1,
                                       unsigned long long step, unsigned int w[4]) {
    unsigned int c0 = (unsigned int)j, c1 = (unsigned int)(j >> 32);
    unsigned int c2 = (unsigned int)step, c3 = (unsigned int)(step >> 32);
    unsigned int k0 = key0, k1 = key1;
    for (int r = 0; r < 10; r++) {
        unsigned long long p0 = 0xD2511F53ull * (unsigned long long)c0;
        unsigned long long p1 = 0xCD9E8D57ull * (unsigned long long)c2;
        unsigned int n0 = (unsigned int)(p1 >> 32) ^ c1 ^ k0;
        unsigned int n2 = (unsigned int)(p0 >> 32) ^ c3 ^ k1;
        c1 = (unsigned int)p1;
        c3 = (unsigned int)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    w[0] = c0;
    w[1] = c1;
    w[2] = c2;
    w[3] = c3;
}

extern "C" __global__ void stable_fill_f32(float *out, unsigned long long n, unsigned int key0,
                                           unsigned int key1, unsigned long long step,
                                           float alpha, float ratio,
                                           float a_head) {
    unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (2 * j >= n) return;
    unsigned int w[4];
    philox(j, key0, key1, step, w);
    out[2 * j] = cms(alpha, ratio, a_head, w[0], w[1]);
    if (2 * j + 1 < n) out[2 * j + 1] = cms(alpha, ratio, a_head, w[2], w[3]);
}

#define UPDATE_THREADS 256

__device__ double update_block_sum(double v) {
    __shared__ double s[UPDATE_THREADS];
    __syncthreads();
    s[threadIdx.x] = v;
    __syncthreads();
    for (int k = UPDATE_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    return s[0];
}

// The CPU's fused update (src/optim/update.rs, step_loop), operation for operation, with the
// noise drawn in place: n = clip(scale·ξ) from stream (key, step) when `noise`, then
//   dir = g + wd·θ + gn·n;  with momentum (m not null): b = mu·m + dir, m = b,
//   dir = c_dir·dir + c_buf·b;  θ = θ − lr·dir − ls·n.
// stats: [4 + 4·gridDim.x + 1] doubles, zeroed: each block writes its Σg², Σn², clipped count
// and count of non-finite new θ at 4 + 4·block; the last block to finish adds them in block
// order into stats[0..4] (the second entry becomes 0 when every θ is finite, NaN otherwise).
// The final slot counts finished blocks.
extern "C" __global__ void update_f32(float *p, const float *g, float *m, unsigned long long n,
                                      unsigned int key0, unsigned int key1,
                                      unsigned long long step, float alpha, float ratio,
                                      float a_head, int noise, float scale,
                                      int clip, float hi, float lo, float lr, float wd, float gn,
                                      float ls, float mu, float c_dir, float c_buf,
                                      double *stats) {
    double gsq = 0.0, nsq = 0.0, clipped = 0.0, bad = 0.0;
    unsigned long long pairs = (n + 1) / 2;
    for (unsigned long long j = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         j < pairs; j += (unsigned long long)blockDim.x * gridDim.x) {
        float draw[2] = {0.0f, 0.0f};
        if (noise) {
            unsigned int w[4];
            philox(j, key0, key1, step, w);
            draw[0] = cms(alpha, ratio, a_head, w[0], w[1]);
            draw[1] = cms(alpha, ratio, a_head, w[2], w[3]);
        }
        for (int k = 0; k < 2; k++) {
            unsigned long long i = 2 * j + k;
            if (i >= n) break;
            float gi = g[i];
            gsq += (double)gi * (double)gi;
            float ni = 0.0f;
            if (noise) {
                float v = draw[k] * scale;
                if (clip) {
                    clipped += (v > hi || v < lo) ? 1.0 : 0.0;
                    v = fmaxf(fminf(v, hi), lo);
                }
                ni = v;
                nsq += (double)v * (double)v;
            }
            float theta = p[i];
            float dir = gi + wd * theta + gn * ni;
            if (m) {
                float b = mu * m[i] + dir;
                m[i] = b;
                dir = c_dir * dir + c_buf * b;
            }
            float next = theta - lr * dir - ls * ni;
            if ((__float_as_uint(next) & 0x7f800000u) == 0x7f800000u) bad += 1.0;  // Inf or NaN
            p[i] = next;
        }
    }
    double sums[4] = {gsq, nsq, clipped, bad};
    for (int k = 0; k < 4; k++) {
        double t = update_block_sum(sums[k]);
        if (threadIdx.x == 0) stats[4 + 4 * blockIdx.x + k] = t;
    }
    __shared__ int last;
    if (threadIdx.x == 0) {
        __threadfence();
        unsigned int *done = (unsigned int *)&stats[4 + 4 * gridDim.x];
        last = atomicAdd(done, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (last && threadIdx.x < 4) {
        __threadfence();
        double t = 0.0;
        for (unsigned int b = 0; b < gridDim.x; b++) {
            t += ((volatile double *)stats)[4 + 4 * b + threadIdx.x];
        }
        // order: Σg², the finiteness check, Σn², clipped
        unsigned int slot[4] = {0, 2, 3, 1};
        stats[slot[threadIdx.x]] =
            threadIdx.x == 3 ? (t > 0.0 ? __longlong_as_double(0x7ff8000000000000ll) : 0.0) : t;
    }
}
