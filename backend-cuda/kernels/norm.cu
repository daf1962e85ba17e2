// norm kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

namespace batch_norm_apply_impl {

struct Params {
     uint total; // values, for the elementwise shaders
     uint batch;
     uint channels;
     uint spatial;
     uint flag; // stats: update the running statistics; backward sums: write dgamma, dbeta
     float eps;
     float momentum;
 };
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* beta;
    const float* stats;
    float* y;
    // Training-mode BatchNorm's output, one invocation per value: y = (x - mean) (rstd gamma) + beta.

    // The push constants of every BatchNorm shader. Mirrors norm.rs `BatchNormParams`.

    // The index in x [batch, channels, spatial] of channel c's value e (e = b * spatial + s).
    __device__ uint value_index(uint c, uint e) {
        return ((e / p.spatial) * p.channels + c) * p.spatial + e % p.spatial;
    }

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint c = (i / p.spatial) % p.channels;
            y[i] = (x[i] - stats[2u * c]) * (stats[2u * c + 1u] * gamma[c]) + beta[c];
        }
    }

};
}  // namespace batch_norm_apply_impl
extern "C" __global__ void batch_norm_apply(batch_norm_apply_impl::Params p, const float* x, const float* gamma, const float* beta, const float* stats, float* y) {
    batch_norm_apply_impl::K k{p, x, gamma, beta, stats, y};
    k.main();
}

namespace batch_norm_backward_sums_impl {

struct Params {
     uint total; // values, for the elementwise shaders
     uint batch;
     uint channels;
     uint spatial;
     uint flag; // stats: update the running statistics; backward sums: write dgamma, dbeta
     float eps;
     float momentum;
 };
// Training-mode BatchNorm backward, one workgroup per channel: sums[c] = (Σ dy, Σ dy (x - mean))
// over its batch x spatial values (fixed-order sums) and, when asked, dgamma = rstd Σ dy (x - mean),
// dbeta = Σ dy.

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* x;
    const float* dy;
    const float* stats;
    vec2* sums;
    float* dgamma;
    float* dbeta;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

     // flag only
       // flag only

    // The push constants of every BatchNorm shader. Mirrors norm.rs `BatchNormParams`.

    // The index in x [batch, channels, spatial] of channel c's value e (e = b * spatial + s).
    __device__ uint value_index(uint c, uint e) {
        return ((e / p.spatial) * p.channels + c) * p.spatial + e % p.spatial;
    }

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
    batch_norm_backward_sums_impl::K k{p, x, dy, stats, sums, dgamma, dbeta};
    k.main();
}

namespace batch_norm_dx_impl {

struct Params {
     uint total; // values, for the elementwise shaders
     uint batch;
     uint channels;
     uint spatial;
     uint flag; // stats: update the running statistics; backward sums: write dgamma, dbeta
     float eps;
     float momentum;
 };
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* dy;
    const float* stats;
    const vec2* sums;
    float* dx;
    // Training-mode BatchNorm's dx, one invocation per value (the statistics depend on x):
    // dx = r γ dy - r γ Σdy / n - (x - mean) r³ γ Σdy (x - mean) / n.

    // The push constants of every BatchNorm shader. Mirrors norm.rs `BatchNormParams`.

    // The index in x [batch, channels, spatial] of channel c's value e (e = b * spatial + s).
    __device__ uint value_index(uint c, uint e) {
        return ((e / p.spatial) * p.channels + c) * p.spatial + e % p.spatial;
    }

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
    batch_norm_dx_impl::K k{p, x, gamma, dy, stats, sums, dx};
    k.main();
}

namespace batch_norm_stats_impl {

struct Params {
     uint total; // values, for the elementwise shaders
     uint batch;
     uint channels;
     uint spatial;
     uint flag; // stats: update the running statistics; backward sums: write dgamma, dbeta
     float eps;
     float momentum;
 };
// Training-mode BatchNorm statistics, one workgroup per channel over its batch x spatial values:
// the mean, then the biased variance (two passes, fixed-order sums); stats[c] = (mean, rstd)
// and, when asked, running = (1 - momentum) running + momentum (mean, var n / (n - 1)).

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* x;
    float* stats;
    float* running_mean;
    float* running_var;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

     // flag only
       // flag only

    // The push constants of every BatchNorm shader. Mirrors norm.rs `BatchNormParams`.

    // The index in x [batch, channels, spatial] of channel c's value e (e = b * spatial + s).
    __device__ uint value_index(uint c, uint e) {
        return ((e / p.spatial) * p.channels + c) * p.spatial + e % p.spatial;
    }

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
    batch_norm_stats_impl::K k{p, x, stats, running_mean, running_var};
    k.main();
}

namespace group_norm_affine_grads_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
struct K {
    Params p;
    const float* stats;
    const vec2* parts;
    float* dgamma;
    float* dbeta;
    // GroupNorm's dgamma and dbeta, one invocation per channel: the per-(image, channel) sums of
    // group_norm_channel_sums.comp added over the images in order (np = 1: the image's sum times
    // its group's 1 / divisor).

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint channels = p.groups * p.cpg, batch = p.total / channels;
        // total = B * C (one invocation per channel does the batch).
        GRID_STRIDE(c, channels) {
            vec2 sums = vec2(0.0f);
            for (uint b = 0u; b < batch; ++b) {
                vec2 part = parts[b * channels + c];
                if (p.patches == 1u) {
                    part.x *= inverse_divisor(stats[2u * (b * p.groups + c / p.cpg) + 1u]);
                }
                sums += part;
            }
            dgamma[c] = sums.x;
            dbeta[c] = sums.y;
        }
    }

};
}  // namespace group_norm_affine_grads_impl
extern "C" __global__ void group_norm_affine_grads(group_norm_affine_grads_impl::Params p, const float* stats, const vec2* parts, float* dgamma, float* dbeta) {
    group_norm_affine_grads_impl::K k{p, stats, parts, dgamma, dbeta};
    k.main();
}

namespace group_norm_apply_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* beta;
    const float* stats;
    const vec2* maps;
    float* y;
    // GroupNorm's output, one invocation per value: y = (x - m) / divisor * gamma + beta, with the
    // group's statistics (np = 1) or the pixel's bicubic maps (M, 1 / (S + eps)) (np > 1).

     // np > 1 only

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint hw = p.height * p.width, group_len = p.cpg * hw;
        // total = B * C * H * W values.
        GRID_STRIDE(i, p.total) {
            uint bg = i / group_len, pix = i % hw;
            uint c = (bg % p.groups) * p.cpg + (i % group_len) / hw;
            if (p.patches == 1u) {
                // The CPU backend's f32 order: (x - m) * (a * gamma) + beta.
                float a = inverse_divisor(stats[2u * bg + 1u]);
                y[i] = (x[i] - stats[2u * bg]) * (a * gamma[c]) + beta[c];
            } else {
                vec2 map = maps[bg * hw + pix];
                y[i] = (x[i] - map.x) * map.y * gamma[c] + beta[c];
            }
        }
    }

};
}  // namespace group_norm_apply_impl
extern "C" __global__ void group_norm_apply(group_norm_apply_impl::Params p, const float* x, const float* gamma, const float* beta, const float* stats, const vec2* maps, float* y) {
    group_norm_apply_impl::K k{p, x, gamma, beta, stats, maps, y};
    k.main();
}

namespace group_norm_channel_sums_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
// GroupNorm backward, one workgroup per (image, channel): parts[b, c] = (Σ dy (x - M) D, Σ dy)
// over the channel's pixels (fixed-order sums), with (M, D) = (the group mean, 1) for np = 1
// (the affine-gradient pass scales by the group's 1 / divisor) or the pixel's maps for np > 1.

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* x;
    const float* dy;
    const float* stats;
    const vec2* maps;
    vec2* parts;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

     // np > 1 only

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint lid = threadIdx.x;
        uint hw = p.height * p.width, channels = p.groups * p.cpg;
        // total = B * C channels.
        GROUP_STRIDE(bc, p.total) {
            uint bg = (bc / channels) * p.groups + (bc % channels) / p.cpg;
            float mean = stats[2u * bg];
            vec2 sums = vec2(0.0f);
            for (uint pix = lid; pix < hw; pix += blockDim.x) {
                uint i = bc * hw + pix;
                float g = dy[i];
                if (p.patches == 1u) {
                    sums += vec2(g * (x[i] - mean), g);
                } else {
                    vec2 map = maps[bg * hw + pix];
                    sums += vec2(g * (x[i] - map.x) * map.y, g);
                }
            }
            vec2 total = workgroup_sum2(sums);
            if (lid == 0u) {
                parts[bc] = total;
            }
        }
    }

};
}  // namespace group_norm_channel_sums_impl
extern "C" __global__ void group_norm_channel_sums(group_norm_channel_sums_impl::Params p, const float* x, const float* dy, const float* stats, const vec2* maps, vec2* parts) {
    group_norm_channel_sums_impl::K k{p, x, dy, stats, maps, parts};
    k.main();
}

namespace group_norm_coefficients_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
struct K {
    Params p;
    const float* gamma;
    const float* stats;
    const vec2* parts;
    vec2* coefficients;
    // GroupNorm backward for np = 1, one invocation per (image, group): with a = 1 / divisor and
    // k = d a / d var · 2 (a³ standard, a²/std StdPlusEps), dx = a gamma dy - q - (x - m) c2 where
    // q = a Σ gamma Σdy / n and c2 = k Σ gamma Σdy (x - m) / n, the channels added in order.

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        // total = B * G groups.
        GRID_STRIDE(bg, p.total) {
            float second = stats[2u * bg + 1u];
            float a = inverse_divisor(second);
            float k = p.standard != 0u ? a * a * a : (second > 0.0f ? a * a / second : 0.0f);
            uint c0 = (bg % p.groups) * p.cpg, b = bg / p.groups;
            vec2 sums = vec2(0.0f); // (Σ gamma Σdy (x - m), Σ gamma Σdy)
            for (uint cl = 0u; cl < p.cpg; ++cl) {
                uint c = c0 + cl;
                sums += gamma[c] * parts[b * p.groups * p.cpg + c];
            }
            float n = float(tile_count());
            coefficients[bg] = vec2(a * sums.y / n, k * sums.x / n);
        }
    }

};
}  // namespace group_norm_coefficients_impl
extern "C" __global__ void group_norm_coefficients(group_norm_coefficients_impl::Params p, const float* gamma, const float* stats, const vec2* parts, vec2* coefficients) {
    group_norm_coefficients_impl::K k{p, gamma, stats, parts, coefficients};
    k.main();
}

namespace group_norm_dx_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* dy;
    const float* stats;
    const vec2* maps;
    const vec2* coefficients;
    float* dx;
    // GroupNorm's dx, one invocation per value.
    // np = 1: dx = (a gamma) dy - q - (x - m) c2 (group_norm_coefficients.comp).
    // np > 1: dx = dy gamma D + dL/dmean_t / n + dL/dstd_t (x - mean_t) / (n std_t), t the pixel's
    // tile, the tile gradients from group_norm_tile_grads.comp (the std term is 0 where std = 0).

     // np > 1 only
    // np = 1: per (image, group) (q, c2); np > 1: per tile (dL/dmean, dL/dstd).

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint hw = p.height * p.width, group_len = p.cpg * hw;
        // total = B * C * H * W values.
        GRID_STRIDE(i, p.total) {
            uint bg = i / group_len, pix = i % hw;
            float gc = gamma[(bg % p.groups) * p.cpg + (i % group_len) / hw];
            float g = dy[i], xv = x[i];
            if (p.patches == 1u) {
                float m = stats[2u * bg], a = inverse_divisor(stats[2u * bg + 1u]);
                vec2 qc = coefficients[bg];
                dx[i] = (a * gc) * g - qc.x - (xv - m) * qc.y;
            } else {
                uint t = bg * p.patches * p.patches + tile_of(pix);
                float mean_t = stats[2u * t], std_t = stats[2u * t + 1u];
                vec2 tg = coefficients[t];
                float n = float(tile_count());
                float via_std = std_t > 0.0f ? tg.y / (n * std_t) : 0.0f;
                dx[i] = g * gc * maps[bg * hw + pix].y + tg.x / n + via_std * (xv - mean_t);
            }
        }
    }

};
}  // namespace group_norm_dx_impl
extern "C" __global__ void group_norm_dx(group_norm_dx_impl::Params p, const float* x, const float* gamma, const float* dy, const float* stats, const vec2* maps, const vec2* coefficients, float* dx) {
    group_norm_dx_impl::K k{p, x, gamma, dy, stats, maps, coefficients, dx};
    k.main();
}

namespace group_norm_maps_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
struct K {
    Params p;
    const float* stats;
    const float* table;
    vec2* maps;
    // NormalizeNP's per-pixel maps (np > 1, spec 6.2): the [np, np] tile means and stds of each
    // (image, group) resized bicubically to every pixel (PyTorch, align_corners = False, A = -0.75,
    // border-clamped), maps[(bg, pixel)] = (M, 1 / (S + eps)). The resize is two small dense
    // matrices prepared on the host from the shapes alone: table = [Wy [H, np], Wx [W, np]]
    // (clamped taps of one index merged), M = Σ_tx Wx[x, tx] Σ_ty Wy[y, ty] mean[ty, tx].

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint hw = p.height * p.width, np = p.patches;
        // total = batch * groups * H * W pixels.
        GRID_STRIDE(i, p.total) {
            uint bg = i / hw, pix = i % hw;
            uint py = pix / p.width, px = pix % p.width;
            vec2 map = vec2(0.0f);
            for (uint tx = 0u; tx < np; ++tx) {
                float wx = table[p.height * np + px * np + tx];
                vec2 column = vec2(0.0f);
                for (uint ty = 0u; ty < np; ++ty) {
                    uint s = 2u * ((bg * np + ty) * np + tx);
                    column += table[py * np + ty] * vec2(stats[s], stats[s + 1u]);
                }
                map += wx * column;
            }
            maps[i] = vec2(map.x, 1.0f / (map.y + p.eps));
        }
    }

};
}  // namespace group_norm_maps_impl
extern "C" __global__ void group_norm_maps(group_norm_maps_impl::Params p, const float* stats, const float* table, vec2* maps) {
    group_norm_maps_impl::K k{p, stats, table, maps};
    k.main();
}

namespace group_norm_pixel_grads_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* dy;
    const vec2* maps;
    vec2* pixel_grads;
    // NormalizeNP backward (np > 1), one invocation per (image, group, pixel): the loss gradient of
    // the pixel's maps, dL/dM = -D Σ_c gamma dy and dL/dS = -D² Σ_c gamma dy (x - M), the group's
    // channels added in order.

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint hw = p.height * p.width;
        // total = B * G * H * W pixels.
        GRID_STRIDE(i, p.total) {
            uint bg = i / hw, pix = i % hw, c0 = (bg % p.groups) * p.cpg;
            vec2 map = maps[i];
            vec2 sums = vec2(0.0f); // (Σ gamma dy, Σ gamma dy (x - M))
            for (uint cl = 0u; cl < p.cpg; ++cl) {
                uint j = (bg * p.cpg + cl) * hw + pix;
                float gg = dy[j] * gamma[c0 + cl];
                sums += vec2(gg, gg * (x[j] - map.x));
            }
            pixel_grads[i] = vec2(-map.y * sums.x, -map.y * map.y * sums.y);
        }
    }

};
}  // namespace group_norm_pixel_grads_impl
extern "C" __global__ void group_norm_pixel_grads(group_norm_pixel_grads_impl::Params p, const float* x, const float* gamma, const float* dy, const vec2* maps, vec2* pixel_grads) {
    group_norm_pixel_grads_impl::K k{p, x, gamma, dy, maps, pixel_grads};
    k.main();
}

namespace group_norm_stats_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
// GroupNorm statistics, one workgroup per (image, group, tile) of the np x np grid (np = 1: the
// whole group): the mean, then the biased variance of the tile's cpg x th x tw values (two
// passes, fixed-order sums), saved as (mean, 1/sqrt(var + eps)) for the standard kind and
// (mean, std) for StdPlusEps (NormalizeNP).

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* x;
    float* stats;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint lid = threadIdx.x;
        uint th = p.height / p.patches, tw = p.width / p.patches;
        uint tile_len = th * tw, n = p.cpg * tile_len, hw = p.height * p.width;
        GROUP_STRIDE(item, p.total) {
            uint bg = item / (p.patches * p.patches), t = item % (p.patches * p.patches);
            uint base = bg * p.cpg * hw + (t / p.patches) * th * p.width + (t % p.patches) * tw;
            float sum = 0.0f;
            for (uint e = lid; e < n; e += blockDim.x) {
                uint rem = e % tile_len;
                sum += x[base + (e / tile_len) * hw + (rem / tw) * p.width + rem % tw];
            }
            float total_sum = workgroup_sum(sum);
            float mean = n == 0u ? 0.0f : total_sum / float(n);
            float squares = 0.0f;
            for (uint e = lid; e < n; e += blockDim.x) {
                uint rem = e % tile_len;
                float d = x[base + (e / tile_len) * hw + (rem / tw) * p.width + rem % tw] - mean;
                squares += d * d;
            }
            float total_squares = workgroup_sum(squares);
            float variance = n == 0u ? 0.0f : total_squares / float(n);
            if (lid == 0u) {
                stats[2u * item] = mean;
                stats[2u * item + 1u] = p.standard != 0u ? 1.0f / sqrt(variance + p.eps) : sqrt(variance);
            }
        }
    }

};
}  // namespace group_norm_stats_impl
extern "C" __global__ void group_norm_stats(group_norm_stats_impl::Params p, const float* x, float* stats) {
    group_norm_stats_impl::K k{p, x, stats};
    k.main();
}

namespace group_norm_tile_grads_impl {

struct Params {
     uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
     uint groups;
     uint cpg; // channels per group
     uint height;
     uint width;
     uint patches; // np
     uint standard; // 1: NormKind::Standard, 0: StdPlusEps
     float eps;
 };
// NormalizeNP backward (np > 1), one workgroup per (image, group, tile): the maps' gradients
// pulled back through the bicubic resize to the tile's mean and std,
// tile_grads[(bg, ty, tx)] = Σ_pixels Wy[y, ty] Wx[x, tx] (dL/dM, dL/dS) (fixed-order sums; the
// transpose of group_norm_maps.comp's resize, as a gather, without atomics).

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* table;
    const vec2* pixel_grads;
    vec2* tile_grads;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

    // The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.

    // Values per tile of the np x np grid (the whole group when np = 1).
    __device__ uint tile_count() {
        return p.cpg * (p.height / p.patches) * (p.width / p.patches);
    }

    // The tile (index in the np x np grid) of pixel `pix` (y * width + x).
    __device__ uint tile_of(uint pix) {
        uint th = p.height / p.patches, tw = p.width / p.patches;
        return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
    }

    // 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
    __device__ float inverse_divisor(float second) {
        return p.standard != 0u ? second : 1.0f / (second + p.eps);
    }

    __device__ void main() {
        uint lid = threadIdx.x;
        uint hw = p.height * p.width, np = p.patches;
        // total = B * G * np * np tiles.
        GROUP_STRIDE(item, p.total) {
            uint bg = item / (np * np), ty = (item % (np * np)) / np, tx = item % np;
            vec2 sums = vec2(0.0f);
            for (uint pix = lid; pix < hw; pix += blockDim.x) {
                float w = table[(pix / p.width) * np + ty] * table[p.height * np + (pix % p.width) * np + tx];
                // Most pixels are out of the tile's reach (the cubic kernel spans 4 taps).
                if (w != 0.0f) {
                    sums += w * pixel_grads[bg * hw + pix];
                }
            }
            vec2 total = workgroup_sum2(sums);
            if (lid == 0u) {
                tile_grads[item] = total;
            }
        }
    }

};
}  // namespace group_norm_tile_grads_impl
extern "C" __global__ void group_norm_tile_grads(group_norm_tile_grads_impl::Params p, const float* table, const vec2* pixel_grads, vec2* tile_grads) {
    group_norm_tile_grads_impl::K k{p, table, pixel_grads, tile_grads};
    k.main();
}

namespace layer_norm_backward_impl {

struct Params {
     uint rows;
     uint features;
     uint flag; // bit 1: gamma is bound; bit 2: write x̂
     float eps;
 };
// LayerNorm's dx, one workgroup per row: with g = dy [* gamma] and x̂ = (x - mean) rstd,
// dx = rstd (g - mean(g) - x̂ mean(g x̂)) (fixed-order sums). Optionally writes x̂, which the
// backend's column sums turn into dgamma = Σ_rows dy x̂.

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* stats;
    const float* dy;
    float* dx;
    float* xhat;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

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
// LayerNorm, one workgroup per row: the mean, then the biased variance (two passes,
// fixed-order sums), stats[row] = (mean, rstd), y = (x - mean) rstd [* gamma + beta].

// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

__shared__ vec2 tree[MAX_WG];
struct K {
    Params p;
    const float* x;
    const float* gamma;
    const float* beta;
    float* y;
    float* stats;

    // The sum over the workgroup of each invocation's `v` (both components), in every invocation.
    __device__ vec2 workgroup_sum2(vec2 v) {
        uint lid = threadIdx.x;
        tree[lid] = v;
        barrier();
        for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
            if (lid < half_size) {
                tree[lid] += tree[lid + half_size];
            }
            barrier();
        }
        vec2 total = tree[0];
        // Every invocation has read the total before a later call overwrites the tree.
        barrier();
        return total;
    }

    __device__ float workgroup_sum(float v) {
        return workgroup_sum2(vec2(v, 0.0f)).x;
    }

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
