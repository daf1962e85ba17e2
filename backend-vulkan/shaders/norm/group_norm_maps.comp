#version 450
// NormalizeNP's per-pixel maps (np > 1, spec 6.2): the [np, np] tile means and stds of each
// (image, group) resized bicubically to every pixel (PyTorch, align_corners = False, A = -0.75,
// border-clamped), maps[(bg, pixel)] = (M, 1 / (S + eps)). The resize is two small dense
// matrices prepared on the host from the shapes alone: table = [Wy [H, np], Wx [W, np]]
// (clamped taps of one index merged), M = Σ_tx Wx[x, tx] Σ_ty Wy[y, ty] mean[ty, tx].
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Stats { float stats[]; };
layout(std430, set = 0, binding = 1) readonly buffer Table { float table[]; };
layout(std430, set = 0, binding = 2) writeonly buffer Maps { vec2 maps[]; };

#include "norm/group_norm_params.glsl"

void main() {
    uint hw = p.height * p.width, np = p.patches;
    // total = batch * groups * H * W pixels.
    GRID_STRIDE(i, p.total) {
        uint bg = i / hw, pix = i % hw;
        uint py = pix / p.width, px = pix % p.width;
        vec2 map = vec2(0.0);
        for (uint tx = 0u; tx < np; ++tx) {
            float wx = table[p.height * np + px * np + tx];
            vec2 column = vec2(0.0);
            for (uint ty = 0u; ty < np; ++ty) {
                uint s = 2u * ((bg * np + ty) * np + tx);
                column += table[py * np + ty] * vec2(stats[s], stats[s + 1u]);
            }
            map += wx * column;
        }
        maps[i] = vec2(map.x, 1.0 / (map.y + p.eps));
    }
}
