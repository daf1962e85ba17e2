// splat kernels (CUDA C): the forward and the backward; the footprints and the tile binning are
// in splat_bins.cu. See kernels/common.cuh for the conventions.
#include "common.cuh"

// Most colour accumulators per thread (registers); more channels take several passes.
#define GROUP_MAX 32u

// Pixels per tile side of the binning and the forward (splat.rs TILE_SIDE; gsplat's 16).
constexpr uint TILE = 16;

namespace splat_backward_impl {

struct Params {
    uint total; // images * gaussians
    uint gaussians;
    uint channels;
    uint stride;
    uint width;
    uint height;
};
// Splat backward (spec 2.2), one block per (image, Gaussian): grad_tokens [B, N, 5+C]
// (overwritten) from grad_out [B, C, H, W]. The block walks the Gaussian's footprint in
// row-major order, thread l taking pixels l, l + WG, ...; each sums its terms in that
// order (Kahan-compensated: a large footprint gives an thread hundreds of terms), then the
// block adds the partial sums in a fixed shared-memory tree. No atomics:
// the same bits every run. Channels are handled GROUP at a time; the geometry gradients (which
// need P = sum_c G col over every channel) are summed in the first pass.

// Colour accumulators per thread (channels per pass).

// Mirrors splat.rs `BackwardParams`.

// red_geo[k * WG + l]: geometry sum k of thread l; red_col likewise for the colours.
__shared__ float red_geo[5u * MAX_WG];
__shared__ float red_col[GROUP_MAX * MAX_WG];
// GROUP: colour accumulators per thread (channels per pass), a template parameter (1 .. 32).
template <uint GROUP>
struct K {
    Params p;
    const float* tokens;
    const float* grid;
    const uint* footprints;
    const float* grad_out;
    float* grad_tokens;

    // sum + term with the rounding error carried in `comp` (Kahan).
    __device__ void kahan_add(float& sum, float& comp, float term) {
        float y = term - comp;
        float t = sum + y;
        comp = (t - sum) - y;
        sum = t;
    }

    __device__ void main() {
        uint lid = threadIdx.x;
        uint n = blockDim.x;
        uint plane = p.height * p.width;
        GROUP_STRIDE(g, p.total) {
            uint image = g / p.gaussians;
            uint t = g * p.stride;
            float sx = tokens[t], sy = tokens[t + 1u], rho = tokens[t + 2u];
            float x = tokens[t + 3u], y = tokens[t + 4u];
            uint r0 = footprints[4u * g], r1 = footprints[4u * g + 1u];
            uint c0 = footprints[4u * g + 2u], c1 = footprints[4u * g + 3u];
            uint cols = c1 - c0;
            uint pixels = (r1 - r0) * cols; // 0 for an empty footprint (stored as zeros)
            float w1 = -0.5f / (1.0f - rho * rho);
            float w2 = 1.0f / (sx * sx);
            float w3 = 1.0f / (sx * sy);
            float w4 = 1.0f / (sy * sy);
            uint image_base = image * p.channels * plane;
            uint group_start = 0u;
            do {
                bool geometry = group_start == 0u;
                // Kahan-compensated running sums (precise: the compensation must not be optimised away).
                float geo[5];
                float geo_c[5];
                float col[GROUP];
                float col_c[GROUP];
                for (uint k = 0u; k < 5u; ++k) { geo[k] = 0.0f; geo_c[k] = 0.0f; }
                for (uint k = 0u; k < GROUP; ++k) { col[k] = 0.0f; col_c[k] = 0.0f; }
                for (uint pix = lid; pix < pixels; pix += n) {
                    uint i = r0 + pix / cols, j = c0 + pix % cols;
                    float dx = grid[j] - x;
                    float dy = grid[p.width + i] - y;
                    float q = w2 * dx * dx - 2.0f * rho * w3 * dx * dy + w4 * dy * dy;
                    float v = exp(w1 * q);
                    uint at = image_base + i * p.width + j;
                    for (uint c = 0u; c < GROUP && group_start + c < p.channels; ++c) {
                        kahan_add(col[c], col_c[c], v * grad_out[at + (group_start + c) * plane]);
                    }
                    if (geometry) {
                        float big_p = 0.0f;
                        for (uint c = 0u; c < p.channels; ++c) {
                            big_p += grad_out[at + c * plane] * tokens[t + 5u + c];
                        }
                        float pv = big_p * v;
                        float cross = rho * w3 * dx * dy;
                        kahan_add(geo[0], geo_c[0], pv * (cross - w2 * dx * dx));           // sigma_x
                        kahan_add(geo[1], geo_c[1], pv * (cross - w4 * dy * dy));           // sigma_y
                        kahan_add(geo[2], geo_c[2], pv * (2.0f * w1 * rho * q + w3 * dx * dy)); // rho
                        kahan_add(geo[3], geo_c[3], pv * (-w2 * dx + rho * w3 * dy));       // x
                        kahan_add(geo[4], geo_c[4], pv * (-w4 * dy + rho * w3 * dx));       // y
                    }
                }
                for (uint k = 0u; k < 5u; ++k) { red_geo[k * n + lid] = geo[k]; }
                for (uint k = 0u; k < GROUP; ++k) { red_col[k * n + lid] = col[k]; }
                barrier();
                // Fixed tree: halves added pairwise (the block size is a power of two).
                for (uint half_n = n / 2u; half_n > 0u; half_n /= 2u) {
                    if (lid < half_n) {
                        for (uint k = 0u; k < 5u; ++k) { red_geo[k * n + lid] += red_geo[k * n + lid + half_n]; }
                        for (uint k = 0u; k < GROUP; ++k) { red_col[k * n + lid] += red_col[k * n + lid + half_n]; }
                    }
                    barrier();
                }
                if (lid == 0u) {
                    if (geometry) {
                        // The constant prefactors of spec 2.2, applied once.
                        grad_tokens[t] = 2.0f * w1 / sx * red_geo[0];
                        grad_tokens[t + 1u] = 2.0f * w1 / sy * red_geo[n];
                        grad_tokens[t + 2u] = -2.0f * w1 * red_geo[2u * n];
                        grad_tokens[t + 3u] = 2.0f * w1 * red_geo[3u * n];
                        grad_tokens[t + 4u] = 2.0f * w1 * red_geo[4u * n];
                    }
                    for (uint c = 0u; c < GROUP && group_start + c < p.channels; ++c) {
                        grad_tokens[t + 5u + group_start + c] = red_col[c * n];
                    }
                }
                barrier(); // red_* are read before the next pass overwrites it
                group_start += GROUP;
            } while (group_start < p.channels);
        }
    }

};
}  // namespace splat_backward_impl
extern "C" __global__ void splat_backward_g1(splat_backward_impl::Params p, const float* tokens, const float* grid, const uint* footprints, const float* grad_out, float* grad_tokens) {
    splat_backward_impl::K<1u> k{p, tokens, grid, footprints, grad_out, grad_tokens};
    k.main();
}

extern "C" __global__ void splat_backward_g2(splat_backward_impl::Params p, const float* tokens, const float* grid, const uint* footprints, const float* grad_out, float* grad_tokens) {
    splat_backward_impl::K<2u> k{p, tokens, grid, footprints, grad_out, grad_tokens};
    k.main();
}

extern "C" __global__ void splat_backward_g4(splat_backward_impl::Params p, const float* tokens, const float* grid, const uint* footprints, const float* grad_out, float* grad_tokens) {
    splat_backward_impl::K<4u> k{p, tokens, grid, footprints, grad_out, grad_tokens};
    k.main();
}

extern "C" __global__ void splat_backward_g8(splat_backward_impl::Params p, const float* tokens, const float* grid, const uint* footprints, const float* grad_out, float* grad_tokens) {
    splat_backward_impl::K<8u> k{p, tokens, grid, footprints, grad_out, grad_tokens};
    k.main();
}

extern "C" __global__ void splat_backward_g16(splat_backward_impl::Params p, const float* tokens, const float* grid, const uint* footprints, const float* grad_out, float* grad_tokens) {
    splat_backward_impl::K<16u> k{p, tokens, grid, footprints, grad_out, grad_tokens};
    k.main();
}

extern "C" __global__ void splat_backward_g32(splat_backward_impl::Params p, const float* tokens, const float* grid, const uint* footprints, const float* grad_out, float* grad_tokens) {
    splat_backward_impl::K<32u> k{p, tokens, grid, footprints, grad_out, grad_tokens};
    k.main();
}

namespace splat_forward_impl {

struct Params {
    uint tiles;
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
    uint channels;
    uint stride;
    uint width;
    uint height;
};
constexpr uint BATCH = 128;  // Gaussians per shared-memory batch of the forward
// Splat forward, one block per TILE x TILE pixel tile: out [B, C, H, W] (overwritten).
// The tile's Gaussian list (ascending index, from the binning passes) is loaded into shared
// memory in batches; each thread owns one pixel and adds v * colour over the list in that
// order, channel group by channel group: the same f32 sums, in the same order, as the CPU
// (render.rs `forward_band`), only the exp differs.

// TILE * TILE is the block size (blockDim.x).

// Gaussians per shared-memory batch, and channels per pass (accumulators per thread).

// Mirrors splat.rs `ForwardParams`.

// Per batch slot: [x, y, a*a, 2 rho, a, b, -r/2] and the footprint.
__shared__ float s_kernel[BATCH * 7u];
__shared__ uint s_box[BATCH * 4u];
__shared__ float s_color[BATCH * GROUP_MAX];
// GROUP: colour accumulators per thread (channels per pass), a template parameter (1 .. 32).
template <uint GROUP>
struct K {
    Params p;
    const float* kernels;
    const uint* footprints;
    const float* tokens;
    const float* grid;
    const uint* offsets;
    const uint* lists;
    float* outv;

    __device__ void main() {
        uint lid = threadIdx.x;
        uint n = blockDim.x;
        GROUP_STRIDE(tile, p.tiles) {
            uint image = tile / p.tiles_per_image;
            uint local_tile = tile % p.tiles_per_image;
            uint i = (local_tile / p.tiles_x) * TILE + lid / TILE;
            uint j = (local_tile % p.tiles_x) * TILE + lid % TILE;
            bool valid = i < p.height && j < p.width;
            float px = valid ? grid[j] : 0.0f;
            float py = valid ? grid[p.width + i] : 0.0f;
            uint start = offsets[tile];
            uint count = offsets[tile + 1u] - start;
            uint plane = p.height * p.width;
            for (uint c0 = 0u; c0 < p.channels; c0 += GROUP) {
                float acc[GROUP];
                for (uint c = 0u; c < GROUP; ++c) { acc[c] = 0.0f; }
                for (uint k0 = 0u; k0 < count; k0 += BATCH) {
                    uint m = min(BATCH, count - k0);
                    barrier(); // the previous batch has been used by everyone
                    for (uint q = lid; q < m; q += n) {
                        uint g = image * p.gaussians + lists[start + k0 + q];
                        for (uint e = 0u; e < 7u; ++e) { s_kernel[q * 7u + e] = kernels[8u * g + e]; }
                        for (uint e = 0u; e < 4u; ++e) { s_box[q * 4u + e] = footprints[4u * g + e]; }
                        for (uint c = 0u; c < GROUP; ++c) {
                            uint ch = c0 + c;
                            s_color[q * GROUP + c] = ch < p.channels ? tokens[g * p.stride + 5u + ch] : 0.0f;
                        }
                    }
                    barrier();
                    if (valid) {
                        for (uint q = 0u; q < m; ++q) {
                            // The footprint is exactly the box test's set of pixels.
                            if (i < s_box[q * 4u] || i >= s_box[q * 4u + 1u] || j < s_box[q * 4u + 2u] ||
                                j >= s_box[q * 4u + 3u]) {
                                continue;
                            }
                            float kx = s_kernel[q * 7u], ky = s_kernel[q * 7u + 1u];
                            float aa = s_kernel[q * 7u + 2u], two_rho = s_kernel[q * 7u + 3u];
                            float a = s_kernel[q * 7u + 4u], b = s_kernel[q * 7u + 5u];
                            float neg_half_r = s_kernel[q * 7u + 6u];
                            // gs.cu's operation order, left to right, no fused multiply-add.
                            float dx = px - kx;
                            float dy = py - ky;
                            float t = aa * dx * dx;
                            t = t - two_rho * dx * dy * a * b;
                            t = t + dy * dy * b * b;
                            float exponent = t * neg_half_r;
                            float v = exp(exponent);
                            for (uint c = 0u; c < GROUP; ++c) { acc[c] += v * s_color[q * GROUP + c]; }
                        }
                    }
                }
                if (valid) {
                    for (uint c = 0u; c < GROUP && c0 + c < p.channels; ++c) {
                        outv[(image * p.channels + c0 + c) * plane + i * p.width + j] = acc[c];
                    }
                }
            }
        }
    }

};
}  // namespace splat_forward_impl
extern "C" __global__ void splat_forward_g1(splat_forward_impl::Params p, const float* kernels, const uint* footprints, const float* tokens, const float* grid, const uint* offsets, const uint* lists, float* outv) {
    splat_forward_impl::K<1u> k{p, kernels, footprints, tokens, grid, offsets, lists, outv};
    k.main();
}

extern "C" __global__ void splat_forward_g2(splat_forward_impl::Params p, const float* kernels, const uint* footprints, const float* tokens, const float* grid, const uint* offsets, const uint* lists, float* outv) {
    splat_forward_impl::K<2u> k{p, kernels, footprints, tokens, grid, offsets, lists, outv};
    k.main();
}

extern "C" __global__ void splat_forward_g4(splat_forward_impl::Params p, const float* kernels, const uint* footprints, const float* tokens, const float* grid, const uint* offsets, const uint* lists, float* outv) {
    splat_forward_impl::K<4u> k{p, kernels, footprints, tokens, grid, offsets, lists, outv};
    k.main();
}

extern "C" __global__ void splat_forward_g8(splat_forward_impl::Params p, const float* kernels, const uint* footprints, const float* tokens, const float* grid, const uint* offsets, const uint* lists, float* outv) {
    splat_forward_impl::K<8u> k{p, kernels, footprints, tokens, grid, offsets, lists, outv};
    k.main();
}

extern "C" __global__ void splat_forward_g16(splat_forward_impl::Params p, const float* kernels, const uint* footprints, const float* tokens, const float* grid, const uint* offsets, const uint* lists, float* outv) {
    splat_forward_impl::K<16u> k{p, kernels, footprints, tokens, grid, offsets, lists, outv};
    k.main();
}

extern "C" __global__ void splat_forward_g32(splat_forward_impl::Params p, const float* kernels, const uint* footprints, const float* tokens, const float* grid, const uint* offsets, const uint* lists, float* outv) {
    splat_forward_impl::K<32u> k{p, kernels, footprints, tokens, grid, offsets, lists, outv};
    k.main();
}
