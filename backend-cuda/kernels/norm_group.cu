// GroupNorm kernels (CUDA C), the norm family's largest part (src/norm/group.rs). See
// kernels/common.cuh for the conventions.
#include "common.cuh"

// The parameters of every GroupNorm kernel. Mirrors norm/group.rs `GroupNormParams`.
struct GroupNormParams {
    uint total; // the kernel's items (tiles, pixels, values or channels: see each kernel)
    uint groups;
    uint cpg; // channels per group
    uint height;
    uint width;
    uint patches; // np
    uint standard; // 1: NormKind::Standard, 0: StdPlusEps
    float eps;
};

// What every GroupNorm kernel's K derives from: the parameters and their derived sizes.
struct GroupNormBase {
    GroupNormParams p;

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
};

namespace group_norm_affine_grads_impl {

typedef GroupNormParams Params;
struct K : GroupNormBase {
    const float* stats;
    const vec2* parts;
    float* dgamma;
    float* dbeta;
    // GroupNorm's dgamma and dbeta, one thread per channel: the per-(image, channel) sums of
    // group_norm_channel_sums.comp added over the images in order (np = 1: the image's sum times
    // its group's 1 / divisor).

    __device__ void main() {
        uint channels = p.groups * p.cpg, batch = p.total / channels;
        // total = B * C (one thread per channel does the batch).
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
    group_norm_affine_grads_impl::K k{{p}, stats, parts, dgamma, dbeta};
    k.main();
}

namespace group_norm_apply_impl {

typedef GroupNormParams Params;
struct K : GroupNormBase {
    const float* x;
    const float* gamma;
    const float* beta;
    const float* stats;
    const vec2* maps;
    float* y;
    // GroupNorm's output, one thread per value: y = (x - m) / divisor * gamma + beta, with the
    // group's statistics (np = 1) or the pixel's bicubic maps (M, 1 / (S + eps)) (np > 1).

     // np > 1 only

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
    group_norm_apply_impl::K k{{p}, x, gamma, beta, stats, maps, y};
    k.main();
}

namespace group_norm_channel_sums_impl {

typedef GroupNormParams Params;
// GroupNorm backward, one block per (image, channel): parts[b, c] = (Σ dy (x - M) D, Σ dy)
// over the channel's pixels (fixed-order sums), with (M, D) = (the group mean, 1) for np = 1
// (the affine-gradient pass scales by the group's 1 / divisor) or the pixel's maps for np > 1.

struct K : GroupNormBase {
    const float* x;
    const float* dy;
    const float* stats;
    const vec2* maps;
    vec2* parts;

     // np > 1 only

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
    group_norm_channel_sums_impl::K k{{p}, x, dy, stats, maps, parts};
    k.main();
}

namespace group_norm_coefficients_impl {

typedef GroupNormParams Params;
struct K : GroupNormBase {
    const float* gamma;
    const float* stats;
    const vec2* parts;
    vec2* coefficients;
    // GroupNorm backward for np = 1, one thread per (image, group): with a = 1 / divisor and
    // k = d a / d var · 2 (a³ standard, a²/std StdPlusEps), dx = a gamma dy - q - (x - m) c2 where
    // q = a Σ gamma Σdy / n and c2 = k Σ gamma Σdy (x - m) / n, the channels added in order.

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
    group_norm_coefficients_impl::K k{{p}, gamma, stats, parts, coefficients};
    k.main();
}

namespace group_norm_dx_impl {

typedef GroupNormParams Params;
struct K : GroupNormBase {
    const float* x;
    const float* gamma;
    const float* dy;
    const float* stats;
    const vec2* maps;
    const vec2* coefficients;
    float* dx;
    // GroupNorm's dx, one thread per value.
    // np = 1: dx = (a gamma) dy - q - (x - m) c2 (group_norm_coefficients.comp).
    // np > 1: dx = dy gamma D + dL/dmean_t / n + dL/dstd_t (x - mean_t) / (n std_t), t the pixel's
    // tile, the tile gradients from group_norm_tile_grads.comp (the std term is 0 where std = 0).

     // np > 1 only
    // np = 1: per (image, group) (q, c2); np > 1: per tile (dL/dmean, dL/dstd).

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
    group_norm_dx_impl::K k{{p}, x, gamma, dy, stats, maps, coefficients, dx};
    k.main();
}

namespace group_norm_maps_impl {

typedef GroupNormParams Params;
struct K : GroupNormBase {
    const float* stats;
    const float* table;
    vec2* maps;
    // NormalizeNP's per-pixel maps (np > 1, spec 6.2): the [np, np] tile means and stds of each
    // (image, group) resized bicubically to every pixel (PyTorch, align_corners = False, A = -0.75,
    // border-clamped), maps[(bg, pixel)] = (M, 1 / (S + eps)). The resize is two small dense
    // matrices prepared on the host from the shapes alone: table = [Wy [H, np], Wx [W, np]]
    // (clamped taps of one index merged), M = Σ_tx Wx[x, tx] Σ_ty Wy[y, ty] mean[ty, tx].

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
    group_norm_maps_impl::K k{{p}, stats, table, maps};
    k.main();
}

namespace group_norm_pixel_grads_impl {

typedef GroupNormParams Params;
struct K : GroupNormBase {
    const float* x;
    const float* gamma;
    const float* dy;
    const vec2* maps;
    vec2* pixel_grads;
    // NormalizeNP backward (np > 1), one thread per (image, group, pixel): the loss gradient of
    // the pixel's maps, dL/dM = -D Σ_c gamma dy and dL/dS = -D² Σ_c gamma dy (x - M), the group's
    // channels added in order.

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
    group_norm_pixel_grads_impl::K k{{p}, x, gamma, dy, maps, pixel_grads};
    k.main();
}

namespace group_norm_stats_impl {

typedef GroupNormParams Params;
// GroupNorm statistics, one block per (image, group, tile) of the np x np grid (np = 1: the
// whole group): the mean, then the biased variance of the tile's cpg x th x tw values (two
// passes, fixed-order sums), saved as (mean, 1/sqrt(var + eps)) for the standard kind and
// (mean, std) for StdPlusEps (NormalizeNP).

struct K : GroupNormBase {
    const float* x;
    float* stats;

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
    group_norm_stats_impl::K k{{p}, x, stats};
    k.main();
}

namespace group_norm_tile_grads_impl {

typedef GroupNormParams Params;
// NormalizeNP backward (np > 1), one block per (image, group, tile): the maps' gradients
// pulled back through the bicubic resize to the tile's mean and std,
// tile_grads[(bg, ty, tx)] = Σ_pixels Wy[y, ty] Wx[x, tx] (dL/dM, dL/dS) (fixed-order sums; the
// transpose of group_norm_maps.comp's resize, as a gather, without atomics).

struct K : GroupNormBase {
    const float* table;
    const vec2* pixel_grads;
    vec2* tile_grads;

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
    group_norm_tile_grads_impl::K k{{p}, table, pixel_grads, tile_grads};
    k.main();
}

