#version 450
// C [m, n] = A [m, k] B [k, n] (+ bias[col]), overwritten. A and B are read through row and
// column strides (A(i, l) = a[i a_rs + l a_cs]), so transposes cost nothing. Tiled in shared
// memory: a workgroup of TILE x TILE invocations computes one TILE x TILE block of C, each
// invocation one value, summing over k in order (fixed order: identical bits run to run).
#include "common.glsl"

// TILE * TILE must be the workgroup size (specialization constant 0).
layout(constant_id = 1) const uint TILE = 16;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, set = 0, binding = 3) writeonly buffer C { float c[]; };

// Mirrors linear.rs `GemmParams`.
layout(push_constant) uniform Params {
    uint m;
    uint n;
    uint k;
    uint a_rs;
    uint a_cs;
    uint b_rs;
    uint b_cs;
    uint has_bias;
} p;

shared float a_tile[TILE * TILE];
shared float b_tile[TILE * TILE];

void main() {
    uint lid = gl_LocalInvocationID.x;
    uint tr = lid / TILE, tc = lid % TILE;
    uint tiles_n = (p.n + TILE - 1u) / TILE;
    uint tiles = ((p.m + TILE - 1u) / TILE) * tiles_n;
    GROUP_STRIDE(t, tiles) {
        uint row = (t / tiles_n) * TILE + tr;
        uint col = (t % tiles_n) * TILE + tc;
        float acc = 0.0;
        for (uint k0 = 0u; k0 < p.k; k0 += TILE) {
            uint ka = k0 + tc, kb = k0 + tr;
            a_tile[lid] = (row < p.m && ka < p.k) ? a[row * p.a_rs + ka * p.a_cs] : 0.0;
            b_tile[lid] = (kb < p.k && col < p.n) ? b[kb * p.b_rs + col * p.b_cs] : 0.0;
            barrier();
            for (uint l = 0u; l < TILE; ++l) {
                acc = fma(a_tile[tr * TILE + l], b_tile[l * TILE + tc], acc);
            }
            barrier();
        }
        if (row < p.m && col < p.n) {
            c[row * p.n + col] = p.has_bias != 0u ? acc + bias[col] : acc;
        }
    }
}
