#version 450
// 2D convolution (NCHW, square kernel k, stride s, zero padding pad) as implicit GEMMs: the
// im2col matrix is never stored, its values are gathered from x (or dy) as the tiles load.
// With K = cin k k and P = ho wo (output positions), l = (ci, kh, kw) or (co, kh, kw):
//   MODE 0, forward: y[b] [cout, P] = W [cout, K] . col(x[b]) [K, P] (+ bias), per image b;
//   MODE 1, dx:      dx[b] [cin, h w] = sum over (co, kh, kw) of W[co, ci, kh, kw] dy[b, co, oh, ow]
//                    where ih = oh s + kh - pad, iw = ow s + kw - pad, per image b;
//   MODE 2, dW:      dW [cout, K] = sum over (b, position) of dy[b] [cout, P] . col(x[b])^T.
#include "common.glsl"

// TILE * TILE must be the workgroup size (specialization constant 0).
layout(constant_id = 1) const uint TILE = 16;

// The product (conv.rs `ConvMode`); ids 1 and 2 are the GEMM core's TILE and WPT.
layout(constant_id = 3) const uint MODE = 0;

layout(std430, set = 0, binding = 0) readonly buffer A { float a[]; };     // W (modes 0, 1), dy (2)
layout(std430, set = 0, binding = 1) readonly buffer B { float b[]; };     // x (modes 0, 2), dy (1)
layout(std430, set = 0, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, set = 0, binding = 3) writeonly buffer C { float c[]; };    // y, dx, dW

// Mirrors conv.rs `ConvParams`.
layout(push_constant) uniform Params {
    uint batch;
    uint cin;
    uint cout;
    uint h;
    uint w;
    uint k;
    uint s;
    uint pad;
    uint ho;
    uint wo;
    uint has_bias;
} p;

// x[b, ci, ih, iw] for the padded coordinates (ih + pad, iw + pad) given as signed values.
float x_at(uint batch, uint ci, int ih, int iw) {
    if (ih < 0 || iw < 0 || ih >= int(p.h) || iw >= int(p.w)) {
        return 0.0;
    }
    return b[((batch * p.cin + ci) * p.h + uint(ih)) * p.w + uint(iw)];
}

// im2col(x[batch]) at row l = (ci, kh, kw), column pos = (oh, ow).
float col_at(uint batch, uint l, uint pos) {
    uint kk = p.k * p.k;
    uint ci = l / kk, kh = (l / p.k) % p.k, kw = l % p.k;
    int ih = int((pos / p.wo) * p.s + kh) - int(p.pad);
    int iw = int((pos % p.wo) * p.s + kw) - int(p.pad);
    return x_at(batch, ci, ih, iw);
}

float load_a(uint batch, uint row, uint l) {
    uint kk = p.k * p.k;
    if (MODE == 0u) {
        return a[row * p.cin * kk + l];
    } else if (MODE == 1u) {
        // W[co, row, kh, kw] with l = (co, kh, kw).
        uint co = l / kk;
        return a[(co * p.cin + row) * kk + l % kk];
    }
    // dy[b, row, position] with l = (b, position).
    uint positions = p.ho * p.wo;
    return a[((l / positions) * p.cout + row) * positions + l % positions];
}

float load_b(uint batch, uint l, uint col) {
    if (MODE == 0u) {
        return col_at(batch, l, col);
    } else if (MODE == 1u) {
        // dy[b, co, oh, ow] where the tap (kh, kw) of output (oh, ow) reads input col = (ih, iw).
        uint kk = p.k * p.k;
        uint co = l / kk, kh = (l / p.k) % p.k, kw = l % p.k;
        int th = int(col / p.w + p.pad) - int(kh);
        int tw = int(col % p.w + p.pad) - int(kw);
        if (th < 0 || tw < 0 || th % int(p.s) != 0 || tw % int(p.s) != 0) {
            return 0.0;
        }
        uint oh = uint(th) / p.s, ow = uint(tw) / p.s;
        if (oh >= p.ho || ow >= p.wo) {
            return 0.0;
        }
        return b[((batch * p.cout + co) * p.ho + oh) * p.wo + ow];
    }
    // col(x[b]) transposed: row l = (b, position), column col = (ci, kh, kw).
    uint positions = p.ho * p.wo;
    return col_at(l / positions, col, l % positions);
}

void store(uint batch, uint row, uint col, float value) {
    if (MODE == 0u) {
        uint positions = p.ho * p.wo;
        c[(batch * p.cout + row) * positions + col] = p.has_bias != 0u ? value + bias[row] : value;
    } else if (MODE == 1u) {
        c[(batch * p.cin + row) * p.h * p.w + col] = value;
    } else {
        c[row * p.cin * p.k * p.k + col] = value;
    }
}

#include "gemm_core.glsl"

void main() {
    uint kk = p.k * p.k, positions = p.ho * p.wo;
    if (MODE == 0u) {
        gemm_tiles(p.batch, p.cout, positions, p.cin * kk);
    } else if (MODE == 1u) {
        gemm_tiles(p.batch, p.cin, p.h * p.w, p.cout * kk);
    } else {
        gemm_tiles(1u, p.cout, p.cin * kk, p.batch * positions);
    }
}
