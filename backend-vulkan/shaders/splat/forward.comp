#version 450
// Splat forward, one workgroup per TILE x TILE pixel tile: out [B, C, H, W] (overwritten).
// The tile's Gaussian list (ascending index, from the binning passes) is loaded into shared
// memory in batches; each invocation owns one pixel and adds v * colour over the list in that
// order, channel group by channel group: the same f32 sums, in the same order, as the CPU
// (render.rs `forward_band`), only the exp differs.
#include "common.glsl"

// TILE * TILE is the workgroup size (specialization constant 0).
layout(constant_id = 1) const uint TILE = 16;
// Gaussians per shared-memory batch, and channels per pass (accumulators per invocation).
layout(constant_id = 2) const uint BATCH = 128;
layout(constant_id = 3) const uint GROUP = 16;

layout(std430, set = 0, binding = 0) readonly buffer Kernels { float kernels[]; };
layout(std430, set = 0, binding = 1) readonly buffer Footprints { uint footprints[]; };
layout(std430, set = 0, binding = 2) readonly buffer Tokens { float tokens[]; };
layout(std430, set = 0, binding = 3) readonly buffer Grid { float grid[]; };
layout(std430, set = 0, binding = 4) readonly buffer Offsets { uint offsets[]; };
layout(std430, set = 0, binding = 5) readonly buffer Lists { uint lists[]; };
layout(std430, set = 0, binding = 6) writeonly buffer Out { float outv[]; };

// Mirrors splat.rs `ForwardParams`.
layout(push_constant) uniform Params {
    uint tiles;
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
    uint channels;
    uint stride;
    uint width;
    uint height;
} p;

// Per batch slot: [x, y, a*a, 2 rho, a, b, -r/2] and the footprint.
shared float s_kernel[BATCH * 7u];
shared uint s_box[BATCH * 4u];
shared float s_color[BATCH * GROUP];

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint n = gl_WorkGroupSize.x;
    GROUP_STRIDE(tile, p.tiles) {
        uint image = tile / p.tiles_per_image;
        uint local_tile = tile % p.tiles_per_image;
        uint i = (local_tile / p.tiles_x) * TILE + lid / TILE;
        uint j = (local_tile % p.tiles_x) * TILE + lid % TILE;
        bool valid = i < p.height && j < p.width;
        float px = valid ? grid[j] : 0.0;
        float py = valid ? grid[p.width + i] : 0.0;
        uint start = offsets[tile];
        uint count = offsets[tile + 1u] - start;
        uint plane = p.height * p.width;
        for (uint c0 = 0u; c0 < p.channels; c0 += GROUP) {
            precise float acc[GROUP];
            for (uint c = 0u; c < GROUP; ++c) { acc[c] = 0.0; }
            for (uint k0 = 0u; k0 < count; k0 += BATCH) {
                uint m = min(BATCH, count - k0);
                barrier(); // the previous batch has been used by everyone
                for (uint q = lid; q < m; q += n) {
                    uint g = image * p.gaussians + lists[start + k0 + q];
                    for (uint e = 0u; e < 7u; ++e) { s_kernel[q * 7u + e] = kernels[8u * g + e]; }
                    for (uint e = 0u; e < 4u; ++e) { s_box[q * 4u + e] = footprints[4u * g + e]; }
                    for (uint c = 0u; c < GROUP; ++c) {
                        uint ch = c0 + c;
                        s_color[q * GROUP + c] = ch < p.channels ? tokens[g * p.stride + 5u + ch] : 0.0;
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
                        precise float dx = px - kx;
                        precise float dy = py - ky;
                        precise float t = aa * dx * dx;
                        t = t - two_rho * dx * dy * a * b;
                        t = t + dy * dy * b * b;
                        precise float exponent = t * neg_half_r;
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
