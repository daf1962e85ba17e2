// The push constants of every GroupNorm shader. Mirrors norm/group.rs `GroupNormParams`.
layout(push_constant) uniform Params {
    uint total; // the shader's items (tiles, pixels, values or channels: see each shader)
    uint groups;
    uint cpg; // channels per group
    uint height;
    uint width;
    uint patches; // np
    uint standard; // 1: NormKind::Standard, 0: StdPlusEps
    float eps;
} p;

// Values per tile of the np x np grid (the whole group when np = 1).
uint tile_count() {
    return p.cpg * (p.height / p.patches) * (p.width / p.patches);
}

// The tile (index in the np x np grid) of pixel `pix` (y * width + x).
uint tile_of(uint pix) {
    uint th = p.height / p.patches, tw = p.width / p.patches;
    return ((pix / p.width) / th) * p.patches + (pix % p.width) / tw;
}

// 1 / divisor for np = 1 from the saved second statistic (rstd, or std for StdPlusEps).
float inverse_divisor(float second) {
    return p.standard != 0u ? second : 1.0 / (second + p.eps);
}
