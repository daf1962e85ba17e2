#version 450
// Per (image, Gaussian): its footprint (the exact set of pixels passing the official box test,
// as half-open row and column ranges, as render.rs `footprint`) and the f32 constants of the
// forward kernel (render.rs `SplatKernel`), computed once and read by every tile.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Tokens { float tokens[]; };
// Pixel coordinates from render.rs `pixel_coord` (host-computed, exact): W columns, then H rows.
layout(std430, set = 0, binding = 1) readonly buffer Grid { float grid[]; };
// [row_start, row_end, col_start, col_end] per Gaussian; all zero when nothing is inside.
layout(std430, set = 0, binding = 2) writeonly buffer Footprints { uint footprints[]; };
// [x, y, a*a, 2 rho, a, b, -r/2, 0] per Gaussian (a = 1/sigma_x, b = 1/sigma_y, r = 1/(1-rho^2)).
layout(std430, set = 0, binding = 3) writeonly buffer Kernels { float kernels[]; };

// Mirrors splat.rs `FootprintParams`.
layout(push_constant) uniform Params {
    uint total; // images * gaussians
    uint stride; // 5 + channels
    uint width;
    uint height;
    float kappa;
} p;

// First index i of the axis (grid[base .. base+size]) with !(grid[i] - center < -half_extent).
// The offsets are non-decreasing in i, so the predicate is monotone and a bisection finds the
// same partition point as the CPU's galloping search (NaN passes, as in gs.cu).
uint first_not_left(uint base, uint size, float center, float half_extent) {
    uint lo = 0u, hi = size;
    while (lo < hi) {
        uint mid = lo + (hi - lo) / 2u;
        if (!(grid[base + mid] - center < -half_extent)) { hi = mid; } else { lo = mid + 1u; }
    }
    return lo;
}

// First index i with grid[i] - center > half_extent.
uint first_right(uint base, uint size, float center, float half_extent) {
    uint lo = 0u, hi = size;
    while (lo < hi) {
        uint mid = lo + (hi - lo) / 2u;
        if (grid[base + mid] - center > half_extent) { hi = mid; } else { lo = mid + 1u; }
    }
    return lo;
}

void main() {
    GRID_STRIDE(g, p.total) {
        uint t = g * p.stride;
        float sx = tokens[t], sy = tokens[t + 1u], rho = tokens[t + 2u];
        float x = tokens[t + 3u], y = tokens[t + 4u];
        // One f32 product each, as gs.cu and render.rs (precise: never fused or reordered).
        precise float half_x = p.kappa * sx;
        precise float half_y = p.kappa * sy;
        uint c0 = first_not_left(0u, p.width, x, half_x);
        uint c1 = first_right(0u, p.width, x, half_x);
        uint r0 = first_not_left(p.width, p.height, y, half_y);
        uint r1 = first_right(p.width, p.height, y, half_y);
        bool empty = !(c0 < c1 && r0 < r1);
        footprints[4u * g] = empty ? 0u : r0;
        footprints[4u * g + 1u] = empty ? 0u : r1;
        footprints[4u * g + 2u] = empty ? 0u : c0;
        footprints[4u * g + 3u] = empty ? 0u : c1;

        precise float a = 1.0 / sx;
        precise float b = 1.0 / sy;
        precise float aa = a * a;
        precise float one_minus = 1.0 - rho * rho;
        precise float r = 1.0 / one_minus;
        // render.rs multiplies t by -r/2 in f64 and rounds once; halving is exact, so the f32
        // product t * (-r/2) is that same correctly rounded product.
        precise float neg_half_r = -0.5 * r;
        kernels[8u * g] = x;
        kernels[8u * g + 1u] = y;
        kernels[8u * g + 2u] = aa;
        kernels[8u * g + 3u] = 2.0 * rho;
        kernels[8u * g + 4u] = a;
        kernels[8u * g + 5u] = b;
        kernels[8u * g + 6u] = neg_half_r;
        kernels[8u * g + 7u] = 0.0;
    }
}
