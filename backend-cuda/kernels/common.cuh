// Included by every kernels/<family>.cu (NVRTC, no CUDA headers needed).
//
// Conventions (docs/CUDA.md):
// * one kernel per op step, `extern "C"` (the name the Rust code launches), arguments
//   `(Params p, buffers...)`: `Params` mirrors a `#[repr(C)]` struct of 4-byte fields in
//   `src/<family>.rs`, the buffers follow in the order the Rust code passes them;
// * each kernel's body lives in `namespace <kernel>_impl`, in a struct `K` holding the parameters
//   and buffer pointers, so its helper functions see them as plain names;
// * grid-stride loops, so any grid covers the work; blocks of at most MAX_WG threads, a power
//   of two where the kernel reduces across the block;
// * every output value is written by one thread, sums run in a fixed order (shared-memory trees
//   whose shape depends on the block size only), no float atomics: the same bits run to run;
// * compiled with --fmad=false, so `a * b + c` rounds twice as on the CPU; kernels ask for a
//   fused multiply-add with fma() where they mean it.

typedef unsigned int uint;

// The largest block any kernel is launched with (shared arrays sized per thread use it).
#define MAX_WG 256u

// for (i in [0, total)) with a grid stride: thread g handles g, g + stride, ...
#define GRID_STRIDE(i, total) \
    for (uint i = blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += gridDim.x * blockDim.x)

// for (item g in [0, count)) with a stride of the grid: block g handles items g, g + blocks, ...
// (kernels where a whole block works on one item).
#define GROUP_STRIDE(g, count) for (uint g = blockIdx.x; g < (count); g += gridDim.x)

#define barrier() __syncthreads()

// GLSL-style helpers: the kernels share their algorithms with the Vulkan backend's shaders.
__device__ inline float gabs(float v) { return fabsf(v); }
__device__ inline int gabs(int v) { return v < 0 ? -v : v; }
__device__ inline float clamp(float v, float lo, float hi) { return fminf(fmaxf(v, lo), hi); }
__device__ inline uint clamp(uint v, uint lo, uint hi) { return v < lo ? lo : (v > hi ? hi : v); }
__device__ inline int clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }
__device__ inline float inversesqrt(float v) { return 1.0f / sqrtf(v); }

// Two floats; the layout of GLSL's vec2 in a std430 buffer (8 bytes, 8-aligned).
struct __align__(8) vec2 {
    float x, y;
    vec2() = default;
    __device__ explicit vec2(float s) : x(s), y(s) {}
    __device__ vec2(float a, float b) : x(a), y(b) {}
    __device__ vec2 operator+(vec2 o) const { return vec2(x + o.x, y + o.y); }
    __device__ vec2 operator-(vec2 o) const { return vec2(x - o.x, y - o.y); }
    __device__ vec2 operator*(vec2 o) const { return vec2(x * o.x, y * o.y); }
    __device__ vec2 operator*(float s) const { return vec2(x * s, y * s); }
    __device__ vec2 operator/(float s) const { return vec2(x / s, y / s); }
    __device__ vec2& operator+=(vec2 o) { x += o.x; y += o.y; return *this; }
};
__device__ inline vec2 operator*(float s, vec2 v) { return vec2(s * v.x, s * v.y); }

// Fixed-order block sums (norms, attention). Every thread passes its own partial sum; a
// shared-memory tree over the block (whose size is a power of two) adds them in an order that
// depends on the block size only, so a device gives the same bits run to run. Call from
// uniform control flow.
__shared__ vec2 reduce_tree[MAX_WG];

// The sum over the block of each thread's `v` (both components), in every thread.
__device__ inline vec2 workgroup_sum2(vec2 v) {
    uint lid = threadIdx.x;
    reduce_tree[lid] = v;
    __syncthreads();
    for (uint half_size = blockDim.x / 2u; half_size > 0u; half_size >>= 1u) {
        if (lid < half_size) {
            reduce_tree[lid] += reduce_tree[lid + half_size];
        }
        __syncthreads();
    }
    vec2 total = reduce_tree[0];
    // Every thread has read the total before a later call overwrites the tree.
    __syncthreads();
    return total;
}

__device__ inline float workgroup_sum(float v) {
    return workgroup_sum2(vec2(v, 0.0f)).x;
}
