// Compensated (double-float) sums for the loss shaders: a value is a pair (hi, lo) of floats
// whose exact sum is the represented number, |lo| <= ulp(hi) / 2. Adding with TwoSum keeps the
// rounding error of every addition, so a sum of many terms, even cancelling ones, is close to
// an f64 sum of the f32 terms. Every intermediate is `precise` (SPIR-V NoContraction, exact in
// the driver's compiler): no fused multiply-add or reassociation may simplify the error terms
// away.

// Knuth's TwoSum: s = fl(a + b) and the exact error a + b - s, for any a and b.
vec2 two_sum(float a, float b) {
    precise float s = a + b;
    precise float bb = s - a;
    precise float e = (a - (s - bb)) + (b - bb);
    return vec2(s, e);
}

// Normalises hi + lo (|hi| >= |lo| or hi = 0) into a pair with |lo| <= ulp(hi) / 2.
vec2 quick_two_sum(float hi, float lo) {
    precise float s = hi + lo;
    precise float e = lo - (s - hi);
    return vec2(s, e);
}

// (hi, lo) + (hi, lo).
vec2 df_add(vec2 a, vec2 b) {
    vec2 s = two_sum(a.x, b.x);
    precise float lo = s.y + (a.y + b.y);
    return quick_two_sum(s.x, lo);
}
