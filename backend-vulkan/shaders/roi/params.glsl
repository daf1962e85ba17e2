// The push constants of every RoIAlign shader; mirrors roi.rs `RoiParams`.
layout(push_constant) uniform Params {
    uint batch;
    uint channels;
    uint height;
    uint width;
    uint rois;
    uint pooled;
    float spatial_scale;
    int sampling_ratio; // <= 0: adaptive, ceil(roi size / pooled) samples per bin and axis
    uint aligned;       // 1: boxes shifted by -0.5 pixel, no minimum size
} p;
