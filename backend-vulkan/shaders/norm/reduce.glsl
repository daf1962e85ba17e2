// Fixed-order workgroup sums for the norm shaders (after common.glsl). Every invocation passes
// its own partial sum; a shared-memory tree over the workgroup (whose size, specialization
// constant 0, is a power of two) adds them in an order that depends on the workgroup size only,
// so a device gives the same bits run to run. Call from uniform control flow.

shared vec2 tree[gl_WorkGroupSize.x];

// The sum over the workgroup of each invocation's `v` (both components), in every invocation.
vec2 workgroup_sum2(vec2 v) {
    uint lid = gl_LocalInvocationID.x;
    tree[lid] = v;
    barrier();
    for (uint half_size = gl_WorkGroupSize.x / 2u; half_size > 0u; half_size >>= 1u) {
        if (lid < half_size) {
            tree[lid] += tree[lid + half_size];
        }
        barrier();
    }
    vec2 total = tree[0];
    // Every invocation has read the total before a later call overwrites the tree.
    barrier();
    return total;
}

float workgroup_sum(float v) {
    return workgroup_sum2(vec2(v, 0.0)).x;
}
