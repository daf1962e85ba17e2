#version 450
// The boxes of each image, in box order, so that the backward's gather loops over its own
// image's boxes only: one invocation per image b writes
//   image_boxes[b] = how many boxes have batch index b,
//   image_boxes[batch + b * rois + t] = the t-th of them (t < that count).
// Boxes with an invalid batch index are in no list.
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Boxes { float boxes[]; };
layout(std430, set = 0, binding = 1) writeonly buffer ImageBoxes { uint image_boxes[]; };

#include "params.glsl"
#include "geometry.glsl"

void main() {
    GRID_STRIDE(b, p.batch) {
        uint count = 0u;
        for (uint n = 0u; n < p.rois; ++n) {
            float box_batch = boxes[n * 5u];
            if (batch_index_valid(box_batch) && uint(box_batch) == b) {
                image_boxes[p.batch + b * p.rois + count] = n;
                count += 1u;
            }
        }
        image_boxes[b] = count;
    }
}
