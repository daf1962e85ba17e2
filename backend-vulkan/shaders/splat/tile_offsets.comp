#version 450
// Binning, prefix sum: offsets[t] = counts[0] + ... + counts[t-1] over every tile of the
// batch, offsets[tiles] = the total. One workgroup: each invocation sums a contiguous chunk,
// the chunk sums are scanned in shared memory, then each chunk is scanned serially.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Counts { uint counts[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Offsets { uint offsets[]; };

// Mirrors splat.rs `TileParams` (only `tiles` is used).
layout(push_constant) uniform Params {
    uint tiles;
    uint tiles_x;
    uint tiles_per_image;
    uint gaussians;
} p;

shared uint chunk_sums[gl_WorkGroupSize.x];

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint n = gl_WorkGroupSize.x;
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
