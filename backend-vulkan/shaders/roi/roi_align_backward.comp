#version 450
// Last pass of the RoIAlign backward, a gather (no atomics): one invocation per feature value
// (b, c, y, x) adds, over the boxes of image b in box order (roi_image_boxes.comp), the bins
// whose samples touch row y and column x (the ranges of roi_axis_weights.comp) in (ph, pw)
// order:
//   dfeatures = Σ_n (Σ_ph Σ_pw dout[n, c, ph, pw] wy[n, ph, y] wx[n, pw, x]) / count_n,
// overwritten. Every value has one writer and a fixed order: the same bits run to run.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Boxes { float boxes[]; };
layout(std430, set = 0, binding = 1) readonly buffer Weights { float weights[]; };
layout(std430, set = 0, binding = 2) readonly buffer Ranges { uint ranges[]; };
layout(std430, set = 0, binding = 3) readonly buffer ImageBoxes { uint image_boxes[]; };
layout(std430, set = 0, binding = 4) readonly buffer Dout { float dout[]; };
layout(std430, set = 0, binding = 5) writeonly buffer Dfeatures { float dfeatures[]; };

#include "params.glsl"
#include "geometry.glsl"

void main() {
    uint hw = p.height * p.width;
    uint entries = p.height + p.width;
    GRID_STRIDE(i, p.batch * p.channels * hw) {
        uint x = i % p.width;
        uint y = (i / p.width) % p.height;
        uint c = (i / hw) % p.channels;
        uint b = i / (hw * p.channels);
        float acc = 0.0;
        uint boxes_of_image = image_boxes[b];
        for (uint t = 0u; t < boxes_of_image; ++t) {
            uint n = image_boxes[p.batch + b * p.rois + t];
            uint ry = 2u * (n * entries + y);
            uint rx = 2u * (n * entries + p.height + x);
            uint ph0 = ranges[ry], ph1 = ranges[ry + 1u];
            uint pw0 = ranges[rx], pw1 = ranges[rx + 1u];
            if (ph0 >= ph1 || pw0 >= pw1) {
                continue;
            }
            float box_acc = 0.0;
            for (uint ph = ph0; ph < ph1; ++ph) {
                float wy = weights[(n * p.pooled + ph) * entries + y];
                uint dout_row = ((n * p.channels + c) * p.pooled + ph) * p.pooled;
                for (uint pw = pw0; pw < pw1; ++pw) {
                    float wx = weights[(n * p.pooled + pw) * entries + p.height + x];
                    box_acc = fma(dout[dout_row + pw], wy * wx, box_acc);
                }
            }
            acc += box_acc / roi_geom(n).count;
        }
        dfeatures[i] = acc;
    }
}
