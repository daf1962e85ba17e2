#version 450
// dst[r, dst_col0 + c] = src[r, src_col0 + c] for c < cols: one half of concat_cols or
// split_cols (row-major matrices `src_width` and `dst_width` wide).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

// Mirrors tensor.rs `CopyColumnsParams`.
layout(push_constant) uniform Params {
    uint total; // rows * cols
    uint cols;
    uint src_width;
    uint src_col0;
    uint dst_width;
    uint dst_col0;
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        uint r = i / p.cols;
        uint c = i % p.cols;
        dst[r * p.dst_width + p.dst_col0 + c] = src[r * p.src_width + p.src_col0 + c];
    }
}
