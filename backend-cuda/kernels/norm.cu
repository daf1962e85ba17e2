// norm kernels (CUDA C): LayerNorm and training-mode BatchNorm2d (GroupNorm: norm_group.cu). See kernels/common.cuh for the conventions.
#include "common.cuh"

// The parameters of every BatchNorm kernel. Mirrors norm.rs `BatchNormParams`.
struct BatchNormParams {
    uint total; // values, for the elementwise kernels
    uint batch;
    uint channels;
    uint spatial;
    uint flag; // stats: update the running statistics; backward sums: write dgamma, dbeta
    float eps;
    float momentum;
};

// What every BatchNorm kernel's K derives from.
struct BatchNormBase {
    BatchNormParams p;

    // The index in x [batch, channels, spatial] of channel c's value e (e = b * spatial + s).
    __device__ uint value_index(uint c, uint e) {
        return ((e / p.spatial) * p.channels + c) * p.spatial + e % p.spatial;
    }
};

namespace batch_norm_apply_impl {

typedef BatchNormParams Params;
struct K : BatchNormBase {
    const float* x;
    const float* gamma;
    const float* beta;
    const float* stats;
    float* y;
    // Training-mode BatchNorm's output, one thread per value: y = (x - mean) (rstd gamma) + beta.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint c = (i / p.spatial) % p.channels;
            y[i] = (x[i] - stats[2u * c]) * (stats[2u * c + 1u] * gamma[c]) + beta[c];
        }
    }

};
}  // namespace batch_norm_apply_impl
extern "C" __global__ void batch_norm_apply(batch_norm_apply_impl::Params p, const float* x, const float* gamma, const float* beta, const float* stats, float* y) {
    batch_norm_apply_impl::K k{{p}, x, gamma, beta, stats, y};
    k.main();
}

namespace batch_norm_backward_sums_impl {

typedef BatchNormParams Params;
// Training-mode BatchNorm backward, one block per channel: sums[c] = (Σ dy, Σ dy (x - mean))
// over its batch x spatial values (fixed-order sums) and, when asked, dgamma = rstd Σ dy (x - mean),
// dbeta = Σ dy.

struct K : BatchNormBase {
    const float* x;
    const float* dy;
    const float* stats;
    vec2* sums;
    float* dgamma;
    float* dbeta;

     // flag only
       // flag only

    __device__ void main() {
        uint lid = threadIdx.x, n = p.batch * p.spatial;
        GROUP_STRIDE(c, p.channels) {
            float mean = stats[2u * c];
            vec2 partial = vec2(0.0f);
            for (uint e = lid; e < n; e += blockDim.x) {
                uint i = value_index(c, e);
                float g = dy[i];
                partial += vec2(g, g * (x[i] - mean));
            }
            vec2 total = workgroup_sum2(partial);
            if (lid == 0u) {
                sums[c] = total;
                if (p.flag != 0u) {
                    dgamma[c] = stats[2u * c + 1u] * total.y;
                    dbeta[c] = total.x;
                }
            }
        }
    }

};
}  // namespace batch_norm_backward_sums_impl
extern "C" __global__ void batch_norm_backward_sums(batch_norm_backward_sums_impl::Params p, const float* x, const float* dy, const float* stats, vec2* sums, float* dgamma, float* dbeta) {
    batch_norm_backward_sums_impl::K k{{p}, x, dy, stats, sums, dgamma, dbeta};
    k.main();
}

namespace batch_norm_dx_impl {

typedef BatchNormParams Params;
struct K : BatchNormBase {
    const float* x;
    const float* gamma;
    const float* dy;
    const float* stats;
    const vec2* sums;
    float* dx;
    // Training-mode BatchNorm's dx, one thread per value (the statistics depend on x):
    // dx = r γ dy - r γ Σdy / n - (x - mean) r³ γ Σdy (x - mean) / n.

    __device__ void main() {
        float n = float(p.batch * p.spatial);
        GRID_STRIDE(i, p.total) {
            uint c = (i / p.spatial) % p.channels;
            float r = stats[2u * c + 1u], rg = r * gamma[c];
            vec2 s = sums[c];
            float q = rg * s.x / n, c2 = r * r * rg * s.y / n;
            dx[i] = rg * dy[i] - q - (x[i] - stats[2u * c]) * c2;
        }
    }

};
}  // namespace batch_norm_dx_impl
extern "C" __global__ void batch_norm_dx(batch_norm_dx_impl::Params p, const float* x, const float* gamma, const float* dy, const float* stats, const vec2* sums, float* dx) {
    batch_norm_dx_impl::K k{{p}, x, gamma, dy, stats, sums, dx};
    k.main();
}

namespace batch_norm_stats_impl {

typedef BatchNormParams Params;
// Training-mode BatchNorm statistics, one block per channel over its batch x spatial values:
// the mean, then the biased variance (two passes, fixed-order sums); stats[c] = (mean, rstd)
// and, when asked, running = (1 - momentum) running + momentum (mean, var n / (n - 1)).

struct K : BatchNormBase {
    const float* x;
    float* stats;
    float* running_mean;
    float* running_var;

     // flag only
       // flag only

    __device__ void main() {
        uint lid = threadIdx.x, n = p.batch * p.spatial;
        GROUP_STRIDE(c, p.channels) {
            float sum = 0.0f;
            for (uint e = lid; e < n; e += blockDim.x) {
                sum += x[value_index(c, e)];
            }
            float mean = workgroup_sum(sum) / float(n);
            float squares = 0.0f;
            for (uint e = lid; e < n; e += blockDim.x) {
                float d = x[value_index(c, e)] - mean;
                squares += d * d;
            }
            float variance = workgroup_sum(squares) / float(n);
            if (lid == 0u) {
                stats[2u * c] = mean;
                stats[2u * c + 1u] = 1.0f / sqrt(variance + p.eps);
                if (p.flag != 0u) {
                    float keep = 1.0f - p.momentum;
                    running_mean[c] = keep * running_mean[c] + p.momentum * mean;
                    running_var[c] = keep * running_var[c] + p.momentum * (variance * (float(n) / float(n - 1u)));
                }
            }
        }
    }

};
}  // namespace batch_norm_stats_impl
extern "C" __global__ void batch_norm_stats(batch_norm_stats_impl::Params p, const float* x, float* stats, float* running_mean, float* running_var) {
    batch_norm_stats_impl::K k{{p}, x, stats, running_mean, running_var};
    k.main();
}

namespace layer_norm_backward_impl {

struct Params {
    uint rows;
    uint features;
    uint flag; // bit 1: gamma is bound; bit 2: write x̂
    float eps;
};
// LayerNorm's dx, one block per row: with g = dy [* gamma] and x̂ = (x - mean) rstd,
// dx = rstd (g - mean(g) - x̂ mean(g x̂)) (fixed-order sums). Optionally writes x̂, which the
// backend's column sums turn into dgamma = Σ_rows dy x̂.

struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* stats;
    const float* dy;
    float* dx;
    float* xhat;

     // affine only

     // flag bit 2

    // Mirrors norm.rs `LayerNormParams`.

    __device__ void main() {
        uint lid = threadIdx.x, f = p.features;
        bool has_gamma = (p.flag & 1u) != 0u, write_xhat = (p.flag & 2u) != 0u;
        GROUP_STRIDE(row, p.rows) {
            uint base = row * f;
            float mean = stats[2u * row], rstd = stats[2u * row + 1u];
            vec2 sums = vec2(0.0f); // (Σ g, Σ g x̂)
            for (uint j = lid; j < f; j += blockDim.x) {
                float g = has_gamma ? dy[base + j] * gamma[j] : dy[base + j];
                sums += vec2(g, g * ((x[base + j] - mean) * rstd));
            }
            vec2 means = workgroup_sum2(sums) / float(f);
            for (uint j = lid; j < f; j += blockDim.x) {
                float g = has_gamma ? dy[base + j] * gamma[j] : dy[base + j];
                float xh = (x[base + j] - mean) * rstd;
                dx[base + j] = rstd * (g - means.x - xh * means.y);
                if (write_xhat) {
                    xhat[base + j] = xh;
                }
            }
        }
    }

};
}  // namespace layer_norm_backward_impl
extern "C" __global__ void layer_norm_backward(layer_norm_backward_impl::Params p, const float* x, const float* gamma, const float* stats, const float* dy, float* dx, float* xhat) {
    layer_norm_backward_impl::K k{p, x, gamma, stats, dy, dx, xhat};
    k.main();
}

namespace layer_norm_forward_impl {

struct Params {
    uint rows;
    uint features;
    uint flag; // 1: affine
    float eps;
};
// LayerNorm, one block per row: the mean, then the biased variance (two passes,
// fixed-order sums), stats[row] = (mean, rstd), y = (x - mean) rstd [* gamma + beta].

struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* beta;
    float* y;
    float* stats;

     // affine only
       // affine only

    // Mirrors norm.rs `LayerNormParams`.

    __device__ void main() {
        uint lid = threadIdx.x, f = p.features;
        GROUP_STRIDE(row, p.rows) {
            uint base = row * f;
            float sum = 0.0f;
            for (uint j = lid; j < f; j += blockDim.x) {
                sum += x[base + j];
            }
            float total = workgroup_sum(sum);
            float mean = f == 0u ? 0.0f : total / float(f);
            float squares = 0.0f;
            for (uint j = lid; j < f; j += blockDim.x) {
                float d = x[base + j] - mean;
                squares += d * d;
            }
            float total_squares = workgroup_sum(squares);
            float rstd = 1.0f / sqrt((f == 0u ? 0.0f : total_squares / float(f)) + p.eps);
            if (lid == 0u) {
                stats[2u * row] = mean;
                stats[2u * row + 1u] = rstd;
            }
            for (uint j = lid; j < f; j += blockDim.x) {
                float v = (x[base + j] - mean) * rstd;
                y[base + j] = p.flag != 0u ? v * gamma[j] + beta[j] : v;
            }
        }
    }

};
}  // namespace layer_norm_forward_impl
extern "C" __global__ void layer_norm_forward(layer_norm_forward_impl::Params p, const float* x, const float* gamma, const float* beta, float* y, float* stats) {
    layer_norm_forward_impl::K k{p, x, gamma, beta, y, stats};
    k.main();
}
