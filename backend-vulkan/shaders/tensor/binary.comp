#version 450
// add, axpy: out[i] = a[i] + b[i] | a[i] + alpha * b[i] (the product rounded before the sum,
// as the CPU backend).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Out { float outv[]; };

// Mirrors tensor.rs `BinaryParams`.
layout(push_constant) uniform Params {
    uint total;
    uint mode; // 0 add, 1 axpy
    float alpha;
} p;

void main() {
    GRID_STRIDE(i, p.total) {
        if (p.mode == 0u) {
            outv[i] = a[i] + b[i];
        } else {
            precise float scaled = p.alpha * b[i];
            precise float sum = a[i] + scaled;
            outv[i] = sum;
        }
    }
}
