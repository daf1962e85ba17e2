// splat kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

// Most colour accumulators per thread (registers); more channels take several passes.
#define GROUP_MAX 32u

// Pixels per tile side of the binning and the forward (splat.rs TILE_SIDE; gsplat's 16).
constexpr uint TILE = 16;

// Whether footprint `g` touches tile `tile` (global tile index) of a tiles_x-wide grid.
__device__ bool touches_tile(const uint* footprints, uint g, uint tile, uint tiles_x, uint tiles_per_image, uint tile_side) {
    uint local_tile = tile % tiles_per_image;
    uint row0 = (local_tile / tiles_x) * tile_side;
    uint col0 = (local_tile % tiles_x) * tile_side;
    uint r0 = footprints[4u * g], r1 = footprints[4u * g + 1u];
    uint c0 = footprints[4u * g + 2u], c1 = footprints[4u * g + 3u];
    // Empty footprints are stored as zeros, so r0 < r1 fails for them.
    return r0 < r1 && r0 < row0 + tile_side && r1 > row0 && c0 < col0 + tile_side && c1 > col0;
}

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

namespace splat_footprints_impl {

struct Params {
    uint total; // images * gaussians
    uint stride; // 5 + channels
    uint width;
    uint height;
    float kappa;
};
struct K {
    Params p;
    const float* tokens;
    const float* grid;
    uint* footprints;
    float* kernels;
    // Per (image, Gaussian): its footprint (the exact set of pixels passing the official box test,
    // as half-open row and column ranges, as render.rs `footprint`) and the f32 constants of the
    // forward kernel (render.rs `SplatKernel`), computed once and read by every tile.

    // Pixel coordinates from render.rs `pixel_coord` (host-computed, exact): W columns, then H rows.

    // [row_start, row_end, col_start, col_end] per Gaussian; all zero when nothing is inside.

    // [x, y, a*a, 2 rho, a, b, -r/2, 0] per Gaussian (a = 1/sigma_x, b = 1/sigma_y, r = 1/(1-rho^2)).

    // Mirrors splat.rs `FootprintParams`.

    // First index i of the axis (grid[base .. base+size]) with !(grid[i] - center < -half_extent).
    // The offsets are non-decreasing in i, so the predicate is monotone and a bisection finds the
    // same partition point as the CPU's galloping search (NaN passes, as in gs.cu).
    __device__ uint first_not_left(uint base, uint size, float center, float half_extent) {
        uint lo = 0u, hi = size;
        while (lo < hi) {
            uint mid = lo + (hi - lo) / 2u;
            if (!(grid[base + mid] - center < -half_extent)) { hi = mid; } else { lo = mid + 1u; }
        }
        return lo;
    }

    // First index i with grid[i] - center > half_extent.
    __device__ uint first_right(uint base, uint size, float center, float half_extent) {
        uint lo = 0u, hi = size;
        while (lo < hi) {
            uint mid = lo + (hi - lo) / 2u;
            if (grid[base + mid] - center > half_extent) { hi = mid; } else { lo = mid + 1u; }
        }
        return lo;
    }

    __device__ void main() {
        GRID_STRIDE(g, p.total) {
            uint t = g * p.stride;
            float sx = tokens[t], sy = tokens[t + 1u], rho = tokens[t + 2u];
            float x = tokens[t + 3u], y = tokens[t + 4u];
            // One f32 product each, as gs.cu and render.rs (precise: never fused or reordered).
            float half_x = p.kappa * sx;
            float half_y = p.kappa * sy;
            uint c0 = first_not_left(0u, p.width, x, half_x);
            uint c1 = first_right(0u, p.width, x, half_x);
            uint r0 = first_not_left(p.width, p.height, y, half_y);
            uint r1 = first_right(p.width, p.height, y, half_y);
            bool empty = !(c0 < c1 && r0 < r1);
            footprints[4u * g] = empty ? 0u : r0;
            footprints[4u * g + 1u] = empty ? 0u : r1;
            footprints[4u * g + 2u] = empty ? 0u : c0;
            footprints[4u * g + 3u] = empty ? 0u : c1;

            float a = 1.0f / sx;
            float b = 1.0f / sy;
            float aa = a * a;
            float one_minus = 1.0f - rho * rho;
            float r = 1.0f / one_minus;
            // render.rs multiplies t by -r/2 in f64 and rounds once; halving is exact, so the f32
            // product t * (-r/2) is that same correctly rounded product.
            float neg_half_r = -0.5f * r;
            kernels[8u * g] = x;
            kernels[8u * g + 1u] = y;
            kernels[8u * g + 2u] = aa;
            kernels[8u * g + 3u] = 2.0f * rho;
            kernels[8u * g + 4u] = a;
            kernels[8u * g + 5u] = b;
            kernels[8u * g + 6u] = neg_half_r;
            kernels[8u * g + 7u] = 0.0f;
        }
    }

};
}  // namespace splat_footprints_impl
extern "C" __global__ void splat_footprints(splat_footprints_impl::Params p, const float* tokens, const float* grid, uint* footprints, float* kernels) {
    splat_footprints_impl::K k{p, tokens, grid, footprints, kernels};
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

namespace splat_tile_counts_impl {

struct Params {
    uint tiles; // images * tiles_per_image
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
};

__shared__ uint total;
struct K {
    Params p;
    const uint* footprints;
    uint* counts;
    // Binning, count pass: counts[tile] = how many Gaussians of the tile's image touch the tile.
    // One block per tile; integer sums, so the result does not depend on the order.

    // Mirrors splat.rs `TileParams`.

    __device__ void main() {
        uint lid = threadIdx.x;
        GROUP_STRIDE(tile, p.tiles) {
            if (lid == 0u) { total = 0u; }
            barrier();
            uint first = (tile / p.tiles_per_image) * p.gaussians;
            uint mine = 0u;
            for (uint s = lid; s < p.gaussians; s += blockDim.x) {
                mine += touches_tile(footprints, first + s, tile, p.tiles_x, p.tiles_per_image, TILE) ? 1u : 0u;
            }
            atomicAdd(&total, mine);
            barrier();
            if (lid == 0u) { counts[tile] = total; }
            barrier();
        }
    }

};
}  // namespace splat_tile_counts_impl
extern "C" __global__ void splat_tile_counts(splat_tile_counts_impl::Params p, const uint* footprints, uint* counts) {
    splat_tile_counts_impl::K k{p, footprints, counts};
    k.main();
}

namespace splat_tile_lists_impl {

struct Params {
    uint tiles;
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
};

__shared__ uint scan[MAX_WG];
struct K {
    Params p;
    const uint* footprints;
    const uint* offsets;
    uint* lists;
    // Binning, fill pass: the Gaussians touching each tile, written at lists[offsets[tile] ...] in
    // ascending Gaussian index (so no sort is needed, and the lists are the same every run). One
    // block per tile walks the image's Gaussians in batches of the block size; an
    // exclusive scan of the "touches" flags in shared memory gives each one its slot.

    // Gaussian index within its image.

    // Mirrors splat.rs `TileParams`.

    __device__ void main() {
        uint lid = threadIdx.x;
        uint n = blockDim.x;
        GROUP_STRIDE(tile, p.tiles) {
            uint first = (tile / p.tiles_per_image) * p.gaussians;
            uint next = offsets[tile];
            for (uint s0 = 0u; s0 < p.gaussians; s0 += n) {
                uint s = s0 + lid;
                uint flag = (s < p.gaussians && touches_tile(footprints, first + s, tile, p.tiles_x, p.tiles_per_image, TILE)) ? 1u : 0u;
                scan[lid] = flag;
                barrier();
                for (uint d = 1u; d < n; d *= 2u) {
                    uint add = lid >= d ? scan[lid - d] : 0u;
                    barrier();
                    scan[lid] += add;
                    barrier();
                }
                if (flag != 0u) { lists[next + scan[lid] - 1u] = s; }
                uint batch_total = scan[n - 1u];
                barrier(); // everyone has read scan[] before the next batch overwrites it
                next += batch_total;
            }
        }
    }

};
}  // namespace splat_tile_lists_impl
extern "C" __global__ void splat_tile_lists(splat_tile_lists_impl::Params p, const uint* footprints, const uint* offsets, uint* lists) {
    splat_tile_lists_impl::K k{p, footprints, offsets, lists};
    k.main();
}

namespace splat_tile_offsets_impl {

struct Params {
    uint tiles;
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
};
// Binning, prefix sum: offsets[t] = counts[0] + ... + counts[t-1] over every tile of the
// batch, offsets[tiles] = the total. One block: each thread sums a contiguous chunk,
// the chunk sums are scanned in shared memory, then each chunk is scanned serially.

// Mirrors splat.rs `TileParams` (only `tiles` is used).

__shared__ uint chunk_sums[MAX_WG];
struct K {
    Params p;
    const uint* counts;
    uint* offsets;

    __device__ void main() {
        uint lid = threadIdx.x;
        uint n = blockDim.x;
        uint chunk = (p.tiles + n - 1u) / n;
        uint begin = min(lid * chunk, p.tiles), end = min(begin + chunk, p.tiles);
        uint sum = 0u;
        for (uint t = begin; t < end; ++t) { sum += counts[t]; }
        chunk_sums[lid] = sum;
        barrier();
        // Hillis-Steele inclusive scan of the chunk sums.
        for (uint d = 1u; d < n; d *= 2u) {
            uint add = lid >= d ? chunk_sums[lid - d] : 0u;
            barrier();
            chunk_sums[lid] += add;
            barrier();
        }
        uint running = chunk_sums[lid] - sum;
        for (uint t = begin; t < end; ++t) {
            offsets[t] = running;
            running += counts[t];
        }
        if (lid == n - 1u) { offsets[p.tiles] = chunk_sums[lid]; }
    }

};
}  // namespace splat_tile_offsets_impl
extern "C" __global__ void splat_tile_offsets(splat_tile_offsets_impl::Params p, const uint* counts, uint* offsets) {
    splat_tile_offsets_impl::K k{p, counts, offsets};
    k.main();
}
