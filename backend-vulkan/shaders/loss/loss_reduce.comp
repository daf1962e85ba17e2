#version 450
// One pass of the loss's reduction on the device: the `count` compensated pairs of `src`
// (loss_partials.comp, or the previous pass) added FAN at a time, in order, by one invocation
// per output pair, into ceil(count / FAN) pairs of `dst`. The last pass (one output) writes
// the loss itself, sum / n rounded once to f32, into the one-value `dst`. The order depends on
// n only: the same bits run to run, on any dispatch.
#include "common.glsl"
#include "compensated.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

// Mirrors loss.rs `LOSS_FAN`.
const uint FAN = 256u;

// Mirrors loss.rs `ReduceParams`.
layout(push_constant) uniform Params {
    uint count;  // input pairs
    uint finish; // 1: one output, the loss sum / n into dst[0]
    float n;     // the number of loss terms (finish only)
} p;

void main() {
    uint outputs = (p.count + FAN - 1u) / FAN;
    GRID_STRIDE(o, outputs) {
        vec2 sum = vec2(0.0);
        uint end = min(p.count, (o + 1u) * FAN);
        for (uint i = o * FAN; i < end; ++i) {
            sum = df_add(sum, vec2(src[2u * i], src[2u * i + 1u]));
        }
        if (p.finish != 0u) {
            // (hi + lo) / n with one final rounding: q and the exact residual of hi - q n
            // (fma), which corrects q even where the device's division is not exact.
            precise float q = sum.x / p.n;
            precise float r = fma(-q, p.n, sum.x) + sum.y;
            precise float loss = q + r / p.n;
            dst[0] = loss;
        } else {
            dst[2u * o] = sum.x;
            dst[2u * o + 1u] = sum.y;
        }
    }
}
