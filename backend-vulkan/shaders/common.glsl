// Included by every shader (glslc -I shaders).
//
// The workgroup size is specialization constant 0, chosen by the backend from the device's
// limits; kernels loop over their work with a grid stride, so any dispatch size covers it.

layout(local_size_x_id = 0) in;

// for (i in [0, total)) with a grid stride: invocation g handles g, g + stride, ...
#define GRID_STRIDE(i, total) \
    for (uint i = gl_GlobalInvocationID.x; i < (total); i += gl_NumWorkGroups.x * gl_WorkGroupSize.x)

// for (group item g in [0, count)) with a stride of the dispatched workgroups: a workgroup
// handles items g, g + groups, ... (kernels where a whole workgroup works on one item).
#define GROUP_STRIDE(g, count) for (uint g = gl_WorkGroupID.x; g < (count); g += gl_NumWorkGroups.x)
