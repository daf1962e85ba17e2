// The push constants of every BatchNorm shader. Mirrors norm.rs `BatchNormParams`.
layout(push_constant) uniform Params {
    uint total; // values, for the elementwise shaders
    uint batch;
    uint channels;
    uint spatial;
    uint flag; // stats: update the running statistics; backward sums: write dgamma, dbeta
    float eps;
    float momentum;
} p;

// The index in x [batch, channels, spatial] of channel c's value e (e = b * spatial + s).
uint value_index(uint c, uint e) {
    return ((e / p.spatial) * p.channels + c) * p.spatial + e % p.spatial;
}
