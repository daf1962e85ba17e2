#version 450
// Images x [B, C, np*th, np*tw] <-> tiles y [B*np*np, C, th, tw], tile index b*np^2 + i*np + j.
// Indexed by the tile layout: patchify gathers dst[t] = src[image(t)], unpatchify scatters
// dst[image(t)] = src[t] (a bijection, so every output value is written once).
#include "common.glsl"

layout(std430, set = 0, binding = 0) readonly buffer Src { float src[]; };
layout(std430, set = 0, binding = 1) writeonly buffer Dst { float dst[]; };

// Mirrors tensor.rs `PatchParams`.
layout(push_constant) uniform Params {
    uint total;
    uint channels;
    uint patches;
    uint tile_height;
    uint tile_width;
    uint inverse; // 1: unpatchify
} p;

void main() {
    uint np = p.patches, th = p.tile_height, tw = p.tile_width;
    uint h = np * th, w = np * tw;
    GRID_STRIDE(t, p.total) {
        uint s = t % tw;
        uint r = (t / tw) % th;
        uint ch = (t / (tw * th)) % p.channels;
        uint tile = t / (tw * th * p.channels);
        uint b = tile / (np * np), i = (tile / np) % np, j = tile % np;
        uint image = ((b * p.channels + ch) * h + i * th + r) * w + j * tw + s;
        if (p.inverse == 0u) {
            dst[t] = src[image];
        } else {
            dst[image] = src[t];
        }
    }
}
