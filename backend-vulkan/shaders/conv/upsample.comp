#version 450
// Nearest 2x upsampling of planes [h, w]: forward y[i, j] = x[i / 2, j / 2]; backward
// dx[i, j] = the four dy values it was copied to, added in output-pixel order (PyTorch's).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

// Mirrors conv.rs `UpsampleParams`.
layout(push_constant) uniform Params {
    uint total; // output values
    uint h;     // input height
    uint w;     // input width
    uint backward;
} p;

void main() {
    uint w2 = 2u * p.w;
    GRID_STRIDE(o, p.total) {
        if (p.backward == 0u) {
            uint plane = o / (4u * p.h * p.w), rest = o % (4u * p.h * p.w);
            uint i = rest / w2, j = rest % w2;
            dst[o] = src[(plane * p.h + i / 2u) * p.w + j / 2u];
        } else {
            uint plane = o / (p.h * p.w), rest = o % (p.h * p.w);
            uint top = (plane * 2u * p.h + 2u * (rest / p.w)) * w2 + 2u * (rest % p.w);
            dst[o] = ((src[top] + src[top + 1u]) + src[top + w2]) + src[top + w2 + 1u];
        }
    }
}
