/* Fused fake-quant kernels for contiguous float32 CPU tensors (see native.py).
 *
 * Each function does in one pass what the torch path does in several operations, with the same
 * float32 arithmetic, so the results are identical bit for bit:
 *   - v * inv_scale rounded half to even (rintf in the default rounding mode, as torch.round),
 *   - clamped with NaN passing through (as torch.clamp),
 *   - multiplied by scale.
 * Min, max and max-abs reductions compare float bit patterns as integers (exact, vectorizable
 * without fast-math): for non-negative floats the integer order is the float order, and
 * key(b) = b ^ ((b >> 31) & 0x7fffffff) orders signed floats.
 * Compiled with -O3 -fno-math-errno -ffp-contract=off (no fused multiply-add).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__APPLE__) && !defined(__clang__)
#define NQ_CLONES __attribute__((target_clones("avx2", "sse4.1", "default")))
#else
#define NQ_CLONES
#endif

static inline float nq_unkey(int32_t k) {
    int32_t b = k ^ ((k >> 31) & 0x7fffffff);
    float v;
    memcpy(&v, &b, 4);
    return v;
}

/* out[0] = min, out[1] = max of x[0..n). Returns 1 when some value is NaN or infinite (out is then
 * meaningless), else 0. n >= 1. */
NQ_CLONES static int nq_minmax(const float *x, int64_t n, float *out) {
    const int32_t *b = (const int32_t *)x;
    int32_t lo = INT32_MAX, hi = INT32_MIN, bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        int32_t k = b[i] ^ ((b[i] >> 31) & 0x7fffffff);
        lo = k < lo ? k : lo;
        hi = k > hi ? k : hi;
        bad |= (b[i] & 0x7f800000) == 0x7f800000;
    }
    out[0] = nq_unkey(lo);
    out[1] = nq_unkey(hi);
    return bad;
}

/* fake_quant.act_qparams, in the same double arithmetic: scale (before its float32 rounding), zero
 * point and integer grid of the range [lo, hi]. */
static void nq_act_qparams(double lo, double hi, int bits, int symmetric, double *scale, double *zp, double *qmin,
                           double *qmax) {
    if (!(isfinite(lo) && isfinite(hi))) lo = hi = 0.0;
    double s;
    if (symmetric) {
        if (lo >= 0) {
            *qmin = 0.0;
            *qmax = ldexp(1.0, bits) - 1.0;
        } else {
            *qmax = bits == 1 ? 1.0 : ldexp(1.0, bits - 1) - 1.0;
            *qmin = -*qmax;
        }
        double m = -lo > hi ? -lo : hi;
        m = m > 0.0 ? m : 0.0;
        s = (double)(float)(m / *qmax);
        *zp = 0.0;
        *scale = s > 1e-8 ? s : 1e-8;
    } else {
        *qmin = 0.0;
        *qmax = ldexp(1.0, bits) - 1.0;
        lo = lo < 0.0 ? lo : 0.0;
        hi = hi > 0.0 ? hi : 0.0;
        s = (double)(float)((hi - lo) / (*qmax - *qmin));
        *scale = s > 1e-8 ? s : 1e-8;
        double z = *qmin - nearbyint(lo / *scale);
        z = z > *qmin ? z : *qmin;
        *zp = z < *qmax ? z : *qmax;
    }
}

/* The static per-tensor activation quantizer of ActFakeQuant, in one pass over its input.
 * mode 0: the running range (*run_min, *run_max) as it is (evaluation);
 * mode 1: observe x first: the running range moves toward x's min and max by `momentum` (is set to
 *         them when `initialized` is 0), in double precision then rounded to float32, as Python
 *         computes it; a batch with a NaN or an infinity leaves it as it is;
 * mode 2: x's own range, nothing recorded (a quantizer never trained).
 * Then y = clamp(rint(x * inv), qmin - zp, qmax - zp) * scale with the quantizer of that range
 * (act_qparams, StaticQuantPlan) and mask = 1 where nothing was clipped.
 * info[0..1] = x's min and max (modes 1, 2), info[2..3] = the running range after the call.
 * Returns bit 0: x holds a NaN or an infinity (modes 1, 2); bit 1: some value was clipped. */
NQ_CLONES int nq_act_quant(const float *x, int64_t n, float *run_min, float *run_max, int mode, double momentum,
                           int initialized, int bits, int symmetric, float *y, float *mask, float *info) {
    int flags = 0;
    double lo = *run_min, hi = *run_max;
    if (mode != 0) {
        flags = nq_minmax(x, n, info);
        if (mode == 2 || !initialized) {
            lo = flags ? NAN : info[0];
            hi = flags ? NAN : info[1];
        }
        if (mode == 1 && !flags) {
            if (initialized) {
                *run_min = (float)(lo + momentum * ((double)info[0] - lo));
                *run_max = (float)(hi + momentum * ((double)info[1] - hi));
            } else {
                *run_min = info[0];
                *run_max = info[1];
            }
            lo = *run_min;
            hi = *run_max;
        }
    }
    info[2] = *run_min;
    info[3] = *run_max;
    double scale_d, zp, qmin, qmax;
    nq_act_qparams(lo, hi, bits, symmetric, &scale_d, &zp, &qmin, &qmax);
    float scale = (float)scale_d;
    float inv = (float)(1.0 / (double)scale);
    float qlo = (float)(qmin - zp), qhi = (float)(qmax - zp);
    int64_t inside = 0; /* counted, not or-ed: gcc vectorizes a sum, not an or of float comparisons */
    for (int64_t i = 0; i < n; ++i) {
        float r = rintf(x[i] * inv);
        float c = r < qlo ? qlo : r;
        c = c > qhi ? qhi : c;
        int32_t in = r == c;
        inside += in;
        mask[i] = (float)in;
        y[i] = c * scale;
    }
    return flags | ((inside != n) << 1);
}

/* y = clamp(rint(x * inv), lo, hi) * scale; mask = 1 where nothing was clipped, else 0. */
NQ_CLONES void nq_fake_quant(const float *x, int64_t n, float inv, float scale, float lo, float hi, float *y,
                             float *mask) {
    for (int64_t i = 0; i < n; ++i) {
        float r = rintf(x[i] * inv);
        float c = r < lo ? lo : r;
        c = c > hi ? hi : c;
        mask[i] = r == c ? 1.0f : 0.0f;
        y[i] = c * scale;
    }
}

/* Symmetric max-abs weight fake-quant of `rows` rows of `cols` values (one scale per row, written to `scale` unless it is NULL):
 * scale = max(max|w| / qmax, 1e-8), y = rint(w * (1 / scale)) * scale. */
NQ_CLONES void nq_weight_maxabs(const float *w, int64_t rows, int64_t cols, float qmax, float *y, float *scale) {
    const int32_t *b = (const int32_t *)w;
    for (int64_t r = 0; r < rows; ++r) {
        const int32_t *br = b + r * cols;
        int32_t m = 0;
        for (int64_t i = 0; i < cols; ++i) {
            int32_t a = br[i] & 0x7fffffff;
            m = a > m ? a : m;
        }
        float amax;
        memcpy(&amax, &m, 4);
        float s = amax / qmax;
        s = s < 1e-8f ? 1e-8f : s; /* NaN passes, as torch.clamp_min */
        float inv = 1.0f / s;
        if (scale) scale[r] = s;
        const float *wr = w + r * cols;
        float *yr = y + r * cols;
        for (int64_t i = 0; i < cols; ++i) yr[i] = rintf(wr[i] * inv) * s;
    }
}
