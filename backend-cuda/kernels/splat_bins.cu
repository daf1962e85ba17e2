// splat binning kernels (CUDA C), as gsplat bins: per (image, Gaussian) footprints, per-tile
// counts, their prefix sum, and per-tile lists in Gaussian order (splat.cu renders from them).
// See kernels/common.cuh for the conventions.
#include "common.cuh"

// Pixels per tile side (splat.rs TILE_SIDE; gsplat's 16; splat.cu's forward uses the same).
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
