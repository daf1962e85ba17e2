// tensor kernels (CUDA C). See kernels/common.cuh for the conventions.
#include "common.cuh"

// The parameters of the per-token kernels (gated_add, modulate, scale_by_vector). Mirrors
// tensor.rs `TokenParams`.
struct TokenParams {
    uint total;
    uint tokens;
    uint dim;
    float offset; // scale_by_vector: v * (offset + vec); unused by the others
};

namespace activation_impl {

struct Params {
    uint total;
    uint kind;     // 0 GELU erf, 1 GELU tanh, 2 SiLU, 3 sigmoid, 4 LeakyReLU(0.2)
    uint backward; // 1: dx = f'(x) * dy
};
// Activations, forward y = f(x) or backward dx = f'(x) * dy, in f32.

// Mirrors tensor.rs `ActivationParams`; `kind` is tensor.rs `activation_code`.

constexpr float SQRT_2_OVER_PI = 0.7978845608028654f;
constexpr float GELU_TANH_C = 0.044715f;
constexpr float INV_SQRT_2 = 0.7071067811865476f;
constexpr float INV_SQRT_2PI = 0.3989422804014327f;
constexpr float LEAKY_SLOPE = 0.2f;
struct K {
    Params p;
    const float* x;
    const float* dy;
    float* outv;

    __device__ float sigmoid(float v) {
        // exp overflows to +inf for v < -88: 1 / inf = 0, the right limit.
        return 1.0f / (1.0f + exp(-v));
    }

    // erfc(z) by the Chebyshev fit of Numerical Recipes (erfcc, Press et al. 6.2): fractional
    // error below 1.2e-7 for every z in exact arithmetic; relative (not absolute) accuracy in the
    // tail, so Phi(x) = erfc(-x/sqrt2)/2 keeps its relative accuracy for negative x.
    __device__ float erfc_approx(float z) {
        float a = gabs(z);
        float t = 1.0f / (1.0f + 0.5f * a);
        float poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f +
            t * (-0.18628806f + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f +
            t * (-0.82215223f + t * 0.17087277f))))))));
        float r = t * exp(-a * a + poly);
        return z >= 0.0f ? r : 2.0f - r;
    }

    __device__ float normal_cdf(float v) {
        return 0.5f * erfc_approx(-v * INV_SQRT_2);
    }

    __device__ float forward(uint kind, float v) {
        if (kind == 0u) {
            return v * normal_cdf(v);
        } else if (kind == 1u) {
            // 0.5 v (1 + tanh(u)) = v sigmoid(2u): no cancellation for negative u, no inf/inf.
            float u = SQRT_2_OVER_PI * (v + GELU_TANH_C * v * v * v);
            return v * sigmoid(2.0f * u);
        } else if (kind == 2u) {
            return v * sigmoid(v);
        } else if (kind == 3u) {
            return sigmoid(v);
        }
        return v > 0.0f ? v : LEAKY_SLOPE * v;
    }

    __device__ float derivative(uint kind, float v) {
        if (kind == 0u) {
            return normal_cdf(v) + v * INV_SQRT_2PI * exp(-0.5f * v * v);
        } else if (kind == 1u) {
            // With s = sigmoid(2u): 1 + tanh u = 2s and 1 - tanh^2 u = 4 s (1 - s).
            float u = SQRT_2_OVER_PI * (v + GELU_TANH_C * v * v * v);
            float s = sigmoid(2.0f * u);
            return s + 2.0f * v * s * (1.0f - s) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_C * v * v);
        } else if (kind == 2u) {
            float s = sigmoid(v);
            return s * (1.0f + v * (1.0f - s));
        } else if (kind == 3u) {
            float s = sigmoid(v);
            return s * (1.0f - s);
        }
        // PyTorch's LeakyReLU: the slope at 0.
        return v > 0.0f ? 1.0f : LEAKY_SLOPE;
    }

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            if (p.backward == 0u) {
                outv[i] = forward(p.kind, x[i]);
            } else if (p.kind == 4u) {
                // Exactly the f32 product slope * dy (what PyTorch computes).
                outv[i] = x[i] > 0.0f ? dy[i] : LEAKY_SLOPE * dy[i];
            } else {
                outv[i] = derivative(p.kind, x[i]) * dy[i];
            }
        }
    }

};
}  // namespace activation_impl
extern "C" __global__ void activation(activation_impl::Params p, const float* x, const float* dy, float* outv) {
    activation_impl::K k{p, x, dy, outv};
    k.main();
}

namespace add_row_broadcast_impl {

struct Params {
    uint total;
    uint cols;
};
struct K {
    Params p;
    float* x;
    const float* row;
    // x[r, c] += row[c] for x [rows, cols].

    // Mirrors tensor.rs `BroadcastParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            x[i] += row[i % p.cols];
        }
    }

};
}  // namespace add_row_broadcast_impl
extern "C" __global__ void add_row_broadcast(add_row_broadcast_impl::Params p, float* x, const float* row) {
    add_row_broadcast_impl::K k{p, x, row};
    k.main();
}

namespace binary_impl {

struct Params {
    uint total;
    uint mode; // 0 add, 1 axpy
    float alpha;
};
struct K {
    Params p;
    const float* a;
    const float* b;
    float* outv;
    // add, axpy: out[i] = a[i] + b[i] | a[i] + alpha * b[i] (the product rounded before the sum,
    // as the CPU backend).

    // Mirrors tensor.rs `BinaryParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            if (p.mode == 0u) {
                outv[i] = a[i] + b[i];
            } else {
                float scaled = p.alpha * b[i];
                float sum = a[i] + scaled;
                outv[i] = sum;
            }
        }
    }

};
}  // namespace binary_impl
extern "C" __global__ void binary(binary_impl::Params p, const float* a, const float* b, float* outv) {
    binary_impl::K k{p, a, b, outv};
    k.main();
}

namespace column_sums_impl {

struct Params {
    uint batch;
    uint rows;
    uint cols;
    uint rows_per_chunk;
    uint chunks;
    uint product; // 1: value = a * b
};
struct K {
    Params p;
    const float* a;
    const float* bv;
    float* outv;
    // Fixed-order column sums of `batch` stacked [rows, cols] matrices, in row chunks:
    // out[(b * chunks + k) * cols + c] = sum over r in chunk k (in row order) of value(b, r, c),
    // value = a[i] (mode 0) or a[i] * b[i] (mode 1), i = (b * rows + r) * cols + c.
    // One thread per output value, so the order never depends on the launch. A second pass
    // (the same kernel, one chunk covering all rows) adds the chunk sums in chunk order.

    // Mirrors tensor.rs `ColumnSumParams`.

    __device__ void main() {
        uint total = p.batch * p.chunks * p.cols;
        GRID_STRIDE(o, total) {
            uint c = o % p.cols;
            uint k = (o / p.cols) % p.chunks;
            uint b = o / (p.cols * p.chunks);
            uint r0 = k * p.rows_per_chunk;
            uint r1 = min(r0 + p.rows_per_chunk, p.rows);
            float sum = 0.0f;
            for (uint r = r0; r < r1; ++r) {
                uint i = (b * p.rows + r) * p.cols + c;
                sum += p.product != 0u ? a[i] * bv[i] : a[i];
            }
            outv[o] = sum;
        }
    }

};
}  // namespace column_sums_impl
extern "C" __global__ void column_sums(column_sums_impl::Params p, const float* a, const float* bv, float* outv) {
    column_sums_impl::K k{p, a, bv, outv};
    k.main();
}

namespace copy_columns_impl {

struct Params {
    uint total; // rows * cols
    uint cols;
    uint src_width;
    uint src_col0;
    uint dst_width;
    uint dst_col0;
};
struct K {
    Params p;
    const float* src;
    float* dst;
    // dst[r, dst_col0 + c] = src[r, src_col0 + c] for c < cols: one half of concat_cols or
    // split_cols (row-major matrices `src_width` and `dst_width` wide).

    // Mirrors tensor.rs `CopyColumnsParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint r = i / p.cols;
            uint c = i % p.cols;
            dst[r * p.dst_width + p.dst_col0 + c] = src[r * p.src_width + p.src_col0 + c];
        }
    }

};
}  // namespace copy_columns_impl
extern "C" __global__ void copy_columns(copy_columns_impl::Params p, const float* src, float* dst) {
    copy_columns_impl::K k{p, src, dst};
    k.main();
}

namespace gated_add_impl {

typedef TokenParams Params;
struct K {
    Params p;
    const float* gate;
    const float* f;
    float* outv;
    // The gated residual: out[b, n, :] += gate[b, :] * f[b, n, :].

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint v = (i / (p.tokens * p.dim)) * p.dim + i % p.dim;
            float gated = gate[v] * f[i];
            float sum = outv[i] + gated;
            outv[i] = sum;
        }
    }

};
}  // namespace gated_add_impl
extern "C" __global__ void gated_add(gated_add_impl::Params p, const float* gate, const float* f, float* outv) {
    gated_add_impl::K k{p, gate, f, outv};
    k.main();
}

namespace modulate_impl {

typedef TokenParams Params;
struct K {
    Params p;
    const float* x;
    const float* shift;
    const float* scale;
    float* y;
    // adaLN modulation: y[b, n, :] = x[b, n, :] * (1 + scale[b, :]) + shift[b, :], in that order.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint v = (i / (p.tokens * p.dim)) * p.dim + i % p.dim;
            float scaled = x[i] * (1.0f + scale[v]);
            float shifted = scaled + shift[v];
            y[i] = shifted;
        }
    }

};
}  // namespace modulate_impl
extern "C" __global__ void modulate(modulate_impl::Params p, const float* x, const float* shift, const float* scale, float* y) {
    modulate_impl::K k{p, x, shift, scale, y};
    k.main();
}

namespace patchify_impl {

struct Params {
    uint total;
    uint channels;
    uint patches;
    uint tile_height;
    uint tile_width;
    uint inverse; // 1: unpatchify
};
struct K {
    Params p;
    const float* src;
    float* dst;
    // Images x [B, C, np*th, np*tw] <-> tiles y [B*np*np, C, th, tw], tile index b*np^2 + i*np + j.
    // Indexed by the tile layout: patchify gathers dst[t] = src[image(t)], unpatchify scatters
    // dst[image(t)] = src[t] (a bijection, so every output value is written once).

    // Mirrors tensor.rs `PatchParams`.

    __device__ void main() {
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

};
}  // namespace patchify_impl
extern "C" __global__ void patchify(patchify_impl::Params p, const float* src, float* dst) {
    patchify_impl::K k{p, src, dst};
    k.main();
}

namespace scale_by_vector_impl {

typedef TokenParams Params;
struct K {
    Params p;
    const float* a;
    const float* vecv;
    float* outv;
    // out[b, n, :] = a[b, n, :] * (offset + vec[b, :]): modulate's dx (offset 1, vec = scale) and
    // the gated add's df (offset 0, vec = gate).

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            uint v = (i / (p.tokens * p.dim)) * p.dim + i % p.dim;
            outv[i] = a[i] * (p.offset + vecv[v]);
        }
    }

};
}  // namespace scale_by_vector_impl
extern "C" __global__ void scale_by_vector(scale_by_vector_impl::Params p, const float* a, const float* vecv, float* outv) {
    scale_by_vector_impl::K k{p, a, vecv, outv};
    k.main();
}

namespace transpose_impl {

struct Params {
    uint batch;
    uint rows;
    uint cols;
};
constexpr uint TILE = 16;  // tile side; launched with TILE * TILE threads
// y[b, c, r] = x[b, r, c] for x [batch, rows, cols], through TILE x TILE tiles in shared memory
// so that both the reads of x and the writes of y are contiguous across neighbouring
// threads. A pure copy: the same bits whatever TILE is.

// TILE * TILE must be the block size (blockDim.x).

// Mirrors tensor.rs `TransposeParams`.

// One padding column: the column reads of the second phase hit different banks.
__shared__ float tile[TILE * (TILE + 1u)];
struct K {
    Params p;
    const float* x;
    float* y;

    __device__ void main() {
        uint tx = threadIdx.x % TILE, ty = threadIdx.x / TILE;
        uint tiles_c = (p.cols + TILE - 1u) / TILE;
        uint tiles_per_matrix = ((p.rows + TILE - 1u) / TILE) * tiles_c;
        uint plane = p.rows * p.cols;
        GROUP_STRIDE(t, p.batch * tiles_per_matrix) {
            uint b = t / tiles_per_matrix, within = t % tiles_per_matrix;
            uint r0 = (within / tiles_c) * TILE, c0 = (within % tiles_c) * TILE;
            // Read x[b, r0 + ty, c0 + tx] (contiguous in tx).
            if (r0 + ty < p.rows && c0 + tx < p.cols) {
                tile[ty * (TILE + 1u) + tx] = x[b * plane + (r0 + ty) * p.cols + c0 + tx];
            }
            barrier();
            // Write y[b, c0 + ty, r0 + tx] = x[b, r0 + tx, c0 + ty] (contiguous in tx).
            if (c0 + ty < p.cols && r0 + tx < p.rows) {
                y[b * plane + (c0 + ty) * p.rows + r0 + tx] = tile[tx * (TILE + 1u) + ty];
            }
            barrier();
        }
    }

};
}  // namespace transpose_impl
extern "C" __global__ void transpose(transpose_impl::Params p, const float* x, float* y) {
    transpose_impl::K k{p, x, y};
    k.main();
}

namespace unary_impl {

struct Params {
    uint total;
    uint mode; // 0 copy, 1 scale, 2 fill
    float alpha;
};
struct K {
    Params p;
    const float* src;
    float* dst;
    // copy, scale, fill: dst[i] = src[i] | alpha * src[i] | alpha.

    // Mirrors tensor.rs `UnaryParams`.

    __device__ void main() {
        GRID_STRIDE(i, p.total) {
            if (p.mode == 0u) {
                dst[i] = src[i];
            } else if (p.mode == 1u) {
                dst[i] = p.alpha * src[i];
            } else {
                dst[i] = p.alpha;
            }
        }
    }

};
}  // namespace unary_impl
extern "C" __global__ void unary(unary_impl::Params p, const float* src, float* dst) {
    unary_impl::K k{p, src, dst};
    k.main();
}
