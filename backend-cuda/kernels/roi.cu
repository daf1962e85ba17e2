// roi kernels (CUDA C): torchvision's RoIAlign (spec 5.2) in its f32 operation order, as the CPU
// backend (backend-cpu/src/roi.rs). See kernels/common.cuh for the conventions.
#include "common.cuh"

namespace roi_impl {

// Mirrors roi.rs `RoiParams`.
struct Params {
    uint total;     // forward: output values; backward: feature planes (batch * channels)
    uint batch;
    uint channels;
    uint height;
    uint width;
    uint rois;
    uint pooled;
    float spatial_scale;
    int sampling_ratio;
    uint aligned;
};

// The f32 geometry of one RoI (torchvision's names in the comments).
struct Geom {
    int batch;      // -1: an invalid batch index (the box is skipped)
    float start_h;  // roi_start_h
    float start_w;  // roi_start_w
    float bin_h;    // bin_size_h
    float bin_w;    // bin_size_w
    int grid_h;     // roi_bin_grid_h
    int grid_w;     // roi_bin_grid_w
    float count;    // max(grid_h * grid_w, 1)
};

__device__ Geom geometry(const Params& p, const float* roi) {
    Geom g;
    float b = roi[0];
    // RoiAlignDesc::batch_index: an integer in 0..batch.
    bool valid = isfinite(b) && b >= 0.0f && b < (float)p.batch && floorf(b) == b;
    g.batch = valid ? (int)b : -1;
    float offset = p.aligned != 0u ? 0.5f : 0.0f;
    float scale = p.spatial_scale;
    g.start_w = roi[1] * scale - offset;
    g.start_h = roi[2] * scale - offset;
    float end_w = roi[3] * scale - offset;
    float end_h = roi[4] * scale - offset;
    float roi_w = end_w - g.start_w;
    float roi_h = end_h - g.start_h;
    if (p.aligned == 0u) {
        roi_w = fmaxf(roi_w, 1.0f);
        roi_h = fmaxf(roi_h, 1.0f);
    }
    float pooled = (float)p.pooled;
    g.bin_h = roi_h / pooled;
    g.bin_w = roi_w / pooled;
    if (p.sampling_ratio > 0) {
        g.grid_h = p.sampling_ratio;
        g.grid_w = p.sampling_ratio;
    } else {
        g.grid_h = (int)ceilf(roi_h / pooled);
        g.grid_w = (int)ceilf(roi_w / pooled);
    }
    long long n = (long long)g.grid_h * (long long)g.grid_w;
    g.count = (float)(n > 1 ? n : 1);
    return g;
}

// One axis sample: bin `bin`, sample `i`: torchvision's coordinate, border rules, taps and
// weights. Returns false for a sample outside [-1, size].
struct Tap {
    uint low, high;
    float l, h;
};

__device__ bool axis_tap(float start, float bin_size, int grid, uint bin, uint i, uint size, Tap& t) {
    float c = start + (float)bin * bin_size + ((float)i + 0.5f) * bin_size / (float)grid;
    if (c < -1.0f || c > (float)size) {
        return false;
    }
    if (c <= 0.0f) {
        c = 0.0f;
    }
    uint low = (uint)c;
    uint high;
    if (low >= size - 1u) {
        low = size - 1u;
        high = size - 1u;
        c = (float)low;
    } else {
        high = low + 1u;
    }
    t.low = low;
    t.high = high;
    t.l = c - (float)low;
    // torchvision: `T hy = 1. - ly` (a double subtraction, then rounded to T).
    t.h = (float)(1.0 - (double)t.l);
    return true;
}

}  // namespace roi_impl

// One thread per output value out[n, c, ph, pw]: the mean of the bin's bilinear samples, summed
// in torchvision's order (iy, ix; the four taps left to right).
extern "C" __global__ void roi_align_forward(roi_impl::Params p, const float* features, const float* boxes, float* outv) {
    using namespace roi_impl;
    GRID_STRIDE(i, p.total) {
        uint pw = i % p.pooled, ph = (i / p.pooled) % p.pooled;
        uint c = (i / (p.pooled * p.pooled)) % p.channels, n = i / (p.pooled * p.pooled * p.channels);
        Geom g = geometry(p, boxes + 5u * n);
        if (g.batch < 0 || p.height * p.width == 0u) {
            outv[i] = 0.0f;
            continue;
        }
        const float* plane = features + ((size_t)g.batch * p.channels + c) * p.height * p.width;
        float acc = 0.0f;
        for (int iy = 0; iy < g.grid_h; ++iy) {
            Tap ty;
            bool vy = axis_tap(g.start_h, g.bin_h, g.grid_h, ph, (uint)iy, p.height, ty);
            for (int ix = 0; ix < g.grid_w; ++ix) {
                Tap tx;
                bool vx = axis_tap(g.start_w, g.bin_w, g.grid_w, pw, (uint)ix, p.width, tx);
                if (!vy || !vx) {
                    // An empty sample: weights 0 on position 0, as torchvision's pre_calc.
                    acc += 0.0f * plane[0] + 0.0f * plane[0] + 0.0f * plane[0] + 0.0f * plane[0];
                    continue;
                }
                float w1 = ty.h * tx.h, w2 = ty.h * tx.l, w3 = ty.l * tx.h, w4 = ty.l * tx.l;
                acc += w1 * plane[ty.low * p.width + tx.low] + w2 * plane[ty.low * p.width + tx.high] +
                       w3 * plane[ty.high * p.width + tx.low] + w4 * plane[ty.high * p.width + tx.high];
            }
        }
        outv[i] = acc / g.count;
    }
}

// One thread per feature plane (b, c): zeroes it, then adds every RoI's contributions in RoI
// order, (ph, pw, iy, ix) and the four taps in torchvision's order — the serial loop of
// torchvision's CPU backward restricted to one plane, so no two threads write one value and no
// atomics are needed.
extern "C" __global__ void roi_align_backward(roi_impl::Params p, const float* boxes, const float* dout, float* dfeatures) {
    using namespace roi_impl;
    GRID_STRIDE(plane_index, p.total) {
        uint b = plane_index / p.channels, c = plane_index % p.channels;
        uint hw = p.height * p.width;
        float* plane = dfeatures + (size_t)plane_index * hw;
        for (uint j = 0u; j < hw; ++j) {
            plane[j] = 0.0f;
        }
        for (uint n = 0u; n < p.rois; ++n) {
            Geom g = geometry(p, boxes + 5u * n);
            if (g.batch != (int)b) {
                continue;
            }
            const float* dout_c = dout + ((size_t)n * p.channels + c) * p.pooled * p.pooled;
            for (uint ph = 0u; ph < p.pooled; ++ph) {
                for (uint pw = 0u; pw < p.pooled; ++pw) {
                    float d = dout_c[ph * p.pooled + pw];
                    for (int iy = 0; iy < g.grid_h; ++iy) {
                        Tap ty;
                        if (!axis_tap(g.start_h, g.bin_h, g.grid_h, ph, (uint)iy, p.height, ty)) {
                            continue;
                        }
                        for (int ix = 0; ix < g.grid_w; ++ix) {
                            Tap tx;
                            if (!axis_tap(g.start_w, g.bin_w, g.grid_w, pw, (uint)ix, p.width, tx)) {
                                continue;
                            }
                            float w1 = ty.h * tx.h, w2 = ty.h * tx.l, w3 = ty.l * tx.h, w4 = ty.l * tx.l;
                            plane[ty.low * p.width + tx.low] += d * w1 / g.count;
                            plane[ty.low * p.width + tx.high] += d * w2 / g.count;
                            plane[ty.high * p.width + tx.low] += d * w3 / g.count;
                            plane[ty.high * p.width + tx.high] += d * w4 / g.count;
                        }
                    }
                }
            }
        }
    }
}
