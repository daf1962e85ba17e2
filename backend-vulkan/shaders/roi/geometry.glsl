// torchvision's RoIAlign geometry (spec 5.2) in f32 with the operation order of the CPU
// backend (backend-cpu/src/roi.rs, bit-exact with torchvision's CPU kernel); `precise` keeps
// the compiler from fusing or reordering it. The including shader declares `boxes` (binding of
// [rois, 5] floats) and includes params.glsl first.

struct RoiGeom {
    // False for a batch index that is not an integer in 0..batch: the box is skipped (the
    // host validates boxes; this only keeps an invalid one from reading out of bounds).
    bool valid;
    uint batch;
    float start_h;
    float start_w;
    float bin_h;
    float bin_w;
    // Samples per bin and axis (<= 0: none, for empty or inverted boxes).
    int grid_h;
    int grid_w;
    // max(grid_h * grid_w, 1), the averaging divisor.
    float count;
};

// `v as i32` in Rust: NaN gives 0, out-of-range values saturate.
int saturating_int(float v) {
    if (isnan(v)) {
        return 0;
    }
    return int(clamp(v, -2147483648.0, 2147483520.0));
}

// Whether a box's batch index is an integer in 0..batch (NaN fails every comparison).
bool batch_index_valid(float b) {
    return b >= 0.0 && b < float(p.batch) && floor(b) == b;
}

RoiGeom roi_geom(uint n) {
    RoiGeom g;
    float b = boxes[n * 5u];
    g.valid = batch_index_valid(b);
    g.batch = g.valid ? uint(b) : 0u;
    precise float offset = p.aligned != 0u ? 0.5 : 0.0;
    precise float scale = p.spatial_scale;
    precise float start_w = boxes[n * 5u + 1u] * scale - offset;
    precise float start_h = boxes[n * 5u + 2u] * scale - offset;
    precise float end_w = boxes[n * 5u + 3u] * scale - offset;
    precise float end_h = boxes[n * 5u + 4u] * scale - offset;
    precise float roi_w = end_w - start_w;
    precise float roi_h = end_h - start_h;
    if (p.aligned == 0u) {
        roi_w = max(roi_w, 1.0);
        roi_h = max(roi_h, 1.0);
    }
    precise float pooled = float(p.pooled);
    g.start_h = start_h;
    g.start_w = start_w;
    g.bin_h = roi_h / pooled;
    g.bin_w = roi_w / pooled;
    if (p.sampling_ratio > 0) {
        g.grid_h = p.sampling_ratio;
        g.grid_w = p.sampling_ratio;
    } else {
        g.grid_h = saturating_int(ceil(roi_h / pooled));
        g.grid_w = saturating_int(ceil(roi_w / pooled));
    }
    precise float product = float(g.grid_h) * float(g.grid_w);
    g.count = max(product, 1.0);
    return g;
}

// One axis of sample `i` of bin `bin_index`: the coordinate start + bin_index bin
// + (i + 0.5) bin / grid and torchvision's border rules. False for a sample beyond the -1 and
// `size` cut-offs (it adds nothing); otherwise the taps `low`, `high` (always in 0..size) and
// their weights `w_low`, `w_high`.
bool axis_sample(float start, float bin, int grid, uint bin_index, uint i, uint size,
                 out uint low, out uint high, out float w_low, out float w_high) {
    low = 0u;
    high = 0u;
    w_low = 0.0;
    w_high = 0.0;
    precise float c = start + float(bin_index) * bin + (float(i) + 0.5) * bin / float(grid);
    if (size == 0u || !(c >= -1.0 && c <= float(size))) {
        // Also a NaN coordinate: nothing is read for it.
        return false;
    }
    if (c <= 0.0) {
        c = 0.0;
    }
    low = uint(c);
    if (low >= size - 1u) {
        low = size - 1u;
        high = size - 1u;
        c = float(low);
    } else {
        high = low + 1u;
    }
    precise float l = c - float(low);
    w_high = l;
    w_low = 1.0 - l;
    return true;
}
