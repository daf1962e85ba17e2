#version 450
// RoIAlign forward: out [K, C, P, P] from features [B, C, H, W] and boxes [K, 5]. One
// invocation per output value, summing its bin's samples in torchvision's order (iy, ix) with
// the four taps added as torchvision does, then dividing by the sample count.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Features { float features[]; };
layout(std430, set = 0, binding = 1) readonly buffer Boxes { float boxes[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };

#include "params.glsl"
#include "geometry.glsl"

void main() {
    uint bins = p.pooled * p.pooled;
    GRID_STRIDE(o, p.rois * p.channels * bins) {
        uint pw = o % p.pooled;
        uint ph = (o / p.pooled) % p.pooled;
        uint c = (o / bins) % p.channels;
        uint n = o / (bins * p.channels);
        RoiGeom g = roi_geom(n);
        if (!g.valid) {
            outv[o] = 0.0;
            continue;
        }
        uint plane = (g.batch * p.channels + c) * p.height * p.width;
        precise float acc = 0.0;
        for (int iy = 0; iy < g.grid_h; ++iy) {
            uint yl, yh;
            float ly, hy;
            if (!axis_sample(g.start_h, g.bin_h, g.grid_h, ph, uint(iy), p.height, yl, yh, hy, ly)) {
                continue;
            }
            for (int ix = 0; ix < g.grid_w; ++ix) {
                uint xl, xh;
                float lx, hx;
                if (!axis_sample(g.start_w, g.bin_w, g.grid_w, pw, uint(ix), p.width, xl, xh, hx, lx)) {
                    continue;
                }
                precise float w1 = hy * hx;
                precise float w2 = hy * lx;
                precise float w3 = ly * hx;
                precise float w4 = ly * lx;
                precise float taps = w1 * features[plane + yl * p.width + xl]
                    + w2 * features[plane + yl * p.width + xh]
                    + w3 * features[plane + yh * p.width + xl]
                    + w4 * features[plane + yh * p.width + xh];
                acc += taps;
            }
        }
        precise float value = acc / g.count;
        outv[o] = value;
    }
}
