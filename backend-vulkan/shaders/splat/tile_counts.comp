#version 450
// Binning, count pass: counts[tile] = how many Gaussians of the tile's image touch the tile.
// One workgroup per tile; integer sums, so the result does not depend on the order.
#include "common.glsl"

layout(constant_id = 1) const uint TILE = 16;

layout(std430, set = 0, binding = 0) readonly buffer Footprints { uint footprints[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Counts { uint counts[]; };

// Mirrors splat.rs `TileParams`.
layout(push_constant) uniform Params {
    uint tiles; // images * tiles_per_image
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
} p;

#include "splat/tiles.glsl"

shared uint total;

void main() {
    uint lid = gl_LocalInvocationID.x;
    GROUP_STRIDE(tile, p.tiles) {
        if (lid == 0u) { total = 0u; }
        barrier();
        uint first = (tile / p.tiles_per_image) * p.gaussians;
        uint mine = 0u;
        for (uint s = lid; s < p.gaussians; s += gl_WorkGroupSize.x) {
            mine += touches_tile(first + s, tile, p.tiles_x, p.tiles_per_image, TILE) ? 1u : 0u;
        }
        atomicAdd(total, mine);
        barrier();
        if (lid == 0u) { counts[tile] = total; }
        barrier();
    }
}
