// conv kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"
#include "gemm_tiles.cuh"

namespace conv_gemm_impl {

struct Params {
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
};
// MODE 0 forward, 1 dx, 2 dW; WPT values per thread along each axis (1 or 4).
template <uint MODE, uint WPT>
struct K {
    Params p;
    const float* a;
    const float* b;
    const float* bias;
    float* c;
    // 2D convolution (NCHW, square kernel k, stride s, zero padding pad) as implicit GEMMs: the
    // im2col matrix is never stored, its values are gathered from x (or dy) as the tiles load.
    // With K = cin k k and P = ho wo (output positions), l = (ci, kh, kw) or (co, kh, kw):
    //   MODE 0, forward: y[b] [cout, P] = W [cout, K] . col(x[b]) [K, P] (+ bias), per image b;
    //   MODE 1, dx:      dx[b] [cin, h w] = sum over (co, kh, kw) of W[co, ci, kh, kw] dy[b, co, oh, ow]
    //                    where ih = oh s + kh - pad, iw = ow s + kw - pad, per image b;
    //   MODE 2, dW:      dW [cout, K] = sum over (b, position) of dy[b] [cout, P] . col(x[b])^T.

    // TILE * TILE must be the block size (blockDim.x).

    // The product (conv.rs `ConvMode`); ids 1 and 2 are the GEMM core's TILE and WPT.

         // W (modes 0, 1), dy (2)
         // x (modes 0, 2), dy (1)

        // y, dx, dW

    // Mirrors conv.rs `ConvParams`.

    // x[b, ci, ih, iw] for the padded coordinates (ih + pad, iw + pad) given as signed values.
    __device__ float x_at(uint batch, uint ci, int ih, int iw) {
        if (ih < 0 || iw < 0 || ih >= int(p.h) || iw >= int(p.w)) {
            return 0.0f;
        }
        return b[((batch * p.cin + ci) * p.h + uint(ih)) * p.w + uint(iw)];
    }

    // im2col(x[batch]) at row l = (ci, kh, kw), column pos = (oh, ow).
    __device__ float col_at(uint batch, uint l, uint pos) {
        uint kk = p.k * p.k;
        uint ci = l / kk, kh = (l / p.k) % p.k, kw = l % p.k;
        int ih = int((pos / p.wo) * p.s + kh) - int(p.pad);
        int iw = int((pos % p.wo) * p.s + kw) - int(p.pad);
        return x_at(batch, ci, ih, iw);
    }

    __device__ float load_a(uint batch, uint row, uint l) {
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

    __device__ float load_b(uint batch, uint l, uint col) {
        if (MODE == 0u) {
            return col_at(batch, l, col);
        } else if (MODE == 1u) {
            // dy[b, co, oh, ow] where the tap (kh, kw) of output (oh, ow) reads input col = (ih, iw).
            uint kk = p.k * p.k;
            uint co = l / kk, kh = (l / p.k) % p.k, kw = l % p.k;
            int th = int(col / p.w + p.pad) - int(kh);
            int tw = int(col % p.w + p.pad) - int(kw);
            if (th < 0 || tw < 0 || th % int(p.s) != 0 || tw % int(p.s) != 0) {
                return 0.0f;
            }
            uint oh = uint(th) / p.s, ow = uint(tw) / p.s;
            if (oh >= p.ho || ow >= p.wo) {
                return 0.0f;
            }
            return b[((batch * p.cout + co) * p.ho + oh) * p.wo + ow];
        }
        // col(x[b]) transposed: row l = (b, position), column col = (ci, kh, kw).
        uint positions = p.ho * p.wo;
        return col_at(l / positions, col, l % positions);
    }

    __device__ void store(uint batch, uint row, uint col, float value) {
        if (MODE == 0u) {
            uint positions = p.ho * p.wo;
            c[(batch * p.cout + row) * positions + col] = p.has_bias != 0u ? value + bias[row] : value;
        } else if (MODE == 1u) {
            c[(batch * p.cin + row) * p.h * p.w + col] = value;
        } else {
            c[row * p.cin * p.k * p.k + col] = value;
        }
    }

    __device__ void main() {
        uint kk = p.k * p.k, positions = p.ho * p.wo;
        if (MODE == 0u) {
            gemm_tiles<WPT>(*this, p.batch, p.cout, positions, p.cin * kk);
        } else if (MODE == 1u) {
            gemm_tiles<WPT>(*this, p.batch, p.cin, p.h * p.w, p.cout * kk);
        } else {
            gemm_tiles<WPT>(*this, 1u, p.cout, p.cin * kk, p.batch * positions);
        }
    }

};
}  // namespace conv_gemm_impl
extern "C" __global__ void conv_gemm_forward_wpt1(conv_gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    conv_gemm_impl::K<0u, 1u> k{p, a, b, bias, c};
    k.main();
}

extern "C" __global__ void conv_gemm_forward_wpt4(conv_gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    conv_gemm_impl::K<0u, 4u> k{p, a, b, bias, c};
    k.main();
}

extern "C" __global__ void conv_gemm_dx_wpt1(conv_gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    conv_gemm_impl::K<1u, 1u> k{p, a, b, bias, c};
    k.main();
}

extern "C" __global__ void conv_gemm_dx_wpt4(conv_gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    conv_gemm_impl::K<1u, 4u> k{p, a, b, bias, c};
    k.main();
}

extern "C" __global__ void conv_gemm_dw_wpt1(conv_gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    conv_gemm_impl::K<2u, 1u> k{p, a, b, bias, c};
    k.main();
}

extern "C" __global__ void conv_gemm_dw_wpt4(conv_gemm_impl::Params p, const float* a, const float* b, const float* bias, float* c) {
    conv_gemm_impl::K<2u, 4u> k{p, a, b, bias, c};
    k.main();
}

namespace row_sums_impl {

struct Params {
    uint rows;
    uint cols;
    uint cols_per_chunk;
    uint chunks;
};
struct K {
    Params p;
    const float* x;
    float* outv;
    // Fixed-order row sums in column chunks: out[r * chunks + q] = sum over the columns of chunk q
    // (in order) of x[r, :] for x [rows, cols]. A second pass (one chunk covering all columns) adds
    // the chunk sums in chunk order. One thread per output value.

    // Mirrors conv.rs `RowSumParams`.

    __device__ void main() {
        GRID_STRIDE(o, p.rows * p.chunks) {
            uint r = o / p.chunks, q = o % p.chunks;
            uint c0 = q * p.cols_per_chunk;
            uint c1 = min(c0 + p.cols_per_chunk, p.cols);
            float sum = 0.0f;
            for (uint c = c0; c < c1; ++c) {
                sum += x[r * p.cols + c];
            }
            outv[o] = sum;
        }
    }

};
}  // namespace row_sums_impl
extern "C" __global__ void row_sums(row_sums_impl::Params p, const float* x, float* outv) {
    row_sums_impl::K k{p, x, outv};
    k.main();
}

namespace upsample_impl {

struct Params {
    uint total; // output values
    uint h;     // input height
    uint w;     // input width
    uint backward;
};
struct K {
    Params p;
    const float* src;
    float* dst;
    // Nearest 2x upsampling of planes [h, w]: forward y[i, j] = x[i / 2, j / 2]; backward
    // dx[i, j] = the four dy values it was copied to, added in output-pixel order (PyTorch's).

    // Mirrors conv.rs `UpsampleParams`.

    __device__ void main() {
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

};
}  // namespace upsample_impl
extern "C" __global__ void upsample(upsample_impl::Params p, const float* src, float* dst) {
    upsample_impl::K k{p, src, dst};
    k.main();
}
