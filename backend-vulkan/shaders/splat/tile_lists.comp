#version 450
// Binning, fill pass: the Gaussians touching each tile, written at lists[offsets[tile] ...] in
// ascending Gaussian index (so no sort is needed, and the lists are the same every run). One
// workgroup per tile walks the image's Gaussians in batches of the workgroup size; an
// exclusive scan of the "touches" flags in shared memory gives each one its slot.
#include "common.glsl"

layout(constant_id = 1) const uint TILE = 16;

layout(std430, set = 0, binding = 0) readonly buffer Footprints { uint footprints[]; };
layout(std430, set = 0, binding = 1) readonly buffer Offsets { uint offsets[]; };
// Gaussian index within its image.
layout(std430, set = 0, binding = 2) writeonly buffer Lists { uint lists[]; };

// Mirrors splat.rs `TileParams`.
layout(push_constant) uniform Params {
    uint tiles;
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
} p;

#include "splat/tiles.glsl"

shared uint scan[gl_WorkGroupSize.x];

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint n = gl_WorkGroupSize.x;
    GROUP_STRIDE(tile, p.tiles) {
        uint first = (tile / p.tiles_per_image) * p.gaussians;
        uint next = offsets[tile];
        for (uint s0 = 0u; s0 < p.gaussians; s0 += n) {
            uint s = s0 + lid;
            uint flag = (s < p.gaussians && touches_tile(first + s, tile, p.tiles_x, p.tiles_per_image, TILE)) ? 1u : 0u;
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
