#version 450
// First pass of the RoIAlign backward: per box n, bin b and pixel coordinate t of either axis
// (entries e < H are rows t = e, the others columns t = e - H), the total bilinear weight the
// bin's samples give that row or column:
//   weights[(n P + b) (H + W) + e] = Σ_i (w_low if low_i == t) + (w_high if high_i == t),
// the samples i in order; and the range of bins with a nonzero weight,
//   ranges[2 (n (H + W) + e) + {0, 1}] = [first, end) (empty: [0, 0)).
// The weight of a sample on pixel (y, x) is the product of its row and column weights, so the
// gather (roi_align_backward.comp) needs only these tables. One invocation per (n, e).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Boxes { float boxes[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Weights { float weights[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Ranges { uint ranges[]; };

#include "params.glsl"
#include "geometry.glsl"

void main() {
    uint entries = p.height + p.width;
    GRID_STRIDE(job, p.rois * entries) {
        uint n = job / entries, e = job % entries;
        RoiGeom g = roi_geom(n);
        bool rows = e < p.height;
        uint t = rows ? e : e - p.height;
        float start = rows ? g.start_h : g.start_w;
        float bin = rows ? g.bin_h : g.bin_w;
        int grid = g.valid ? (rows ? g.grid_h : g.grid_w) : 0;
        uint size = rows ? p.height : p.width;
        uint first = p.pooled, end = 0u;
        for (uint b = 0u; b < p.pooled; ++b) {
            precise float w = 0.0;
            for (int i = 0; i < grid; ++i) {
                uint low, high;
                float w_low, w_high;
                if (axis_sample(start, bin, grid, b, uint(i), size, low, high, w_low, w_high)) {
                    if (low == t) {
                        w += w_low;
                    }
                    if (high == t) {
                        w += w_high;
                    }
                }
            }
            weights[(n * p.pooled + b) * entries + e] = w;
            if (w != 0.0) {
                first = min(first, b);
                end = b + 1u;
            }
        }
        ranges[2u * job] = end == 0u ? 0u : first;
        ranges[2u * job + 1u] = end;
    }
}
