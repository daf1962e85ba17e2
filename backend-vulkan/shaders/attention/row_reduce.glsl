// Fixed-order workgroup reductions for the row kernels (softmax_rows.comp,
// softmax_backward_rows.comp), where one workgroup owns one row.
//
// An invocation first folds the row entries lid, lid + size, ... in order; then the workgroup
// combines the partials in a fixed tree (the workgroup size is a power of two, chosen on the
// host from the device's limits and the row length). Same inputs, same device: same bits.

shared float row_partials[gl_WorkGroupSize.x];

// Sum of every invocation's `value`, returned to all of them.
float workgroup_sum(float value) {
    uint lid = gl_LocalInvocationID.x;
    row_partials[lid] = value;
    barrier();
    for (uint half_size = gl_WorkGroupSize.x / 2u; half_size > 0u; half_size /= 2u) {
        if (lid < half_size) {
            row_partials[lid] += row_partials[lid + half_size];
        }
        barrier();
    }
    float total = row_partials[0];
    // Nobody may overwrite the partials before everyone has read the total.
    barrier();
    return total;
}

// Maximum of every invocation's `value`, returned to all of them.
float workgroup_max(float value) {
    uint lid = gl_LocalInvocationID.x;
    row_partials[lid] = value;
    barrier();
    for (uint half_size = gl_WorkGroupSize.x / 2u; half_size > 0u; half_size /= 2u) {
        if (lid < half_size) {
            row_partials[lid] = max(row_partials[lid], row_partials[lid + half_size]);
        }
        barrier();
    }
    float total = row_partials[0];
    barrier();
    return total;
}
