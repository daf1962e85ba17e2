#version 450
// Splat backward (spec 2.2), one workgroup per (image, Gaussian): grad_tokens [B, N, 5+C]
// (overwritten) from grad_out [B, C, H, W]. The workgroup walks the Gaussian's footprint in
// row-major order, invocation l taking pixels l, l + WG, ...; each sums its terms in that
// order (Kahan-compensated: a large footprint gives an invocation hundreds of terms), then the
// workgroup adds the partial sums in a fixed shared-memory tree. No atomics:
// the same bits every run. Channels are handled GROUP at a time; the geometry gradients (which
// need P = sum_c G col over every channel) are summed in the first pass.
#include "common.glsl"

// Colour accumulators per invocation (channels per pass).
layout(constant_id = 1) const uint GROUP = 16;

layout(std430, set = 0, binding = 0) readonly buffer Tokens { float tokens[]; };
layout(std430, set = 0, binding = 1) readonly buffer Grid { float grid[]; };
layout(std430, set = 0, binding = 2) readonly buffer Footprints { uint footprints[]; };
layout(std430, set = 0, binding = 3) readonly buffer GradOut { float grad_out[]; };
layout(std430, set = 0, binding = 4) writeonly buffer GradTokens { float grad_tokens[]; };

// Mirrors splat.rs `BackwardParams`.
layout(push_constant) uniform Params {
    uint total; // images * gaussians
    uint gaussians;
    uint channels;
    uint stride;
    uint width;
    uint height;
} p;

// red_geo[k * WG + l]: geometry sum k of invocation l; red_col likewise for the colours.
shared float red_geo[5u * gl_WorkGroupSize.x];
shared float red_col[GROUP * gl_WorkGroupSize.x];

// sum + term with the rounding error carried in `comp` (Kahan).
void kahan_add(inout float sum, inout float comp, float term) {
    precise float y = term - comp;
    precise float t = sum + y;
    comp = (t - sum) - y;
    sum = t;
}

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint n = gl_WorkGroupSize.x;
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
        float w1 = -0.5 / (1.0 - rho * rho);
        float w2 = 1.0 / (sx * sx);
        float w3 = 1.0 / (sx * sy);
        float w4 = 1.0 / (sy * sy);
        uint image_base = image * p.channels * plane;
        uint group_start = 0u;
        do {
            bool geometry = group_start == 0u;
            // Kahan-compensated running sums (precise: the compensation must not be optimised away).
            precise float geo[5];
            precise float geo_c[5];
            precise float col[GROUP];
            precise float col_c[GROUP];
            for (uint k = 0u; k < 5u; ++k) { geo[k] = 0.0; geo_c[k] = 0.0; }
            for (uint k = 0u; k < GROUP; ++k) { col[k] = 0.0; col_c[k] = 0.0; }
            for (uint pix = lid; pix < pixels; pix += n) {
                uint i = r0 + pix / cols, j = c0 + pix % cols;
                float dx = grid[j] - x;
                float dy = grid[p.width + i] - y;
                float q = w2 * dx * dx - 2.0 * rho * w3 * dx * dy + w4 * dy * dy;
                float v = exp(w1 * q);
                uint at = image_base + i * p.width + j;
                for (uint c = 0u; c < GROUP && group_start + c < p.channels; ++c) {
                    kahan_add(col[c], col_c[c], v * grad_out[at + (group_start + c) * plane]);
                }
                if (geometry) {
                    float big_p = 0.0;
                    for (uint c = 0u; c < p.channels; ++c) {
                        big_p += grad_out[at + c * plane] * tokens[t + 5u + c];
                    }
                    float pv = big_p * v;
                    float cross = rho * w3 * dx * dy;
                    kahan_add(geo[0], geo_c[0], pv * (cross - w2 * dx * dx));           // sigma_x
                    kahan_add(geo[1], geo_c[1], pv * (cross - w4 * dy * dy));           // sigma_y
                    kahan_add(geo[2], geo_c[2], pv * (2.0 * w1 * rho * q + w3 * dx * dy)); // rho
                    kahan_add(geo[3], geo_c[3], pv * (-w2 * dx + rho * w3 * dy));       // x
                    kahan_add(geo[4], geo_c[4], pv * (-w4 * dy + rho * w3 * dx));       // y
                }
            }
            for (uint k = 0u; k < 5u; ++k) { red_geo[k * n + lid] = geo[k]; }
            for (uint k = 0u; k < GROUP; ++k) { red_col[k * n + lid] = col[k]; }
            barrier();
            // Fixed tree: halves added pairwise (the workgroup size is a power of two).
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
                    grad_tokens[t] = 2.0 * w1 / sx * red_geo[0];
                    grad_tokens[t + 1u] = 2.0 * w1 / sy * red_geo[n];
                    grad_tokens[t + 2u] = -2.0 * w1 * red_geo[2u * n];
                    grad_tokens[t + 3u] = 2.0 * w1 * red_geo[3u * n];
                    grad_tokens[t + 4u] = 2.0 * w1 * red_geo[4u * n];
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
