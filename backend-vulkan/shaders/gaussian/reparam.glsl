// Shared by the reparameterisation shaders.

// a (columns 0, 1) or b (columns 2..5) of one initial value, in the CPU backend's f32 order.
float pre_activation(uint col, float g) {
    return col < 2u ? -log(1.0 / g - 1.0) : -log(2.0 / (1.0 + g) - 1.0);
}
