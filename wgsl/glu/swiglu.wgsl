// The expert activation of the routed-MoE layer, on two (gate, up) pairs at once:
//   swiglu(g, u, 0, _)     = silu(g) * u
//   swiglu(g, u, 1, limit) = silu(min(g, limit)) * clamp(u, -limit, limit)
// (ExpertActivation::SwiGlu and ::SwiGluClamped). Shared by act.wgsl and the mat-vec's glu
// epilogue (mv/glu.wgsl), so both compute the same function.
// Defines: silu(x), swiglu(g, u, clamped, limit).

fn silu(x: vec2<f32>) -> vec2<f32> {
    return x / (1.0 + exp(-x));
}

fn swiglu(g: vec2<f32>, u: vec2<f32>, clamped: u32, limit: f32) -> vec2<f32> {
    if clamped != 0u {
        return silu(min(g, vec2<f32>(limit))) * clamp(u, vec2<f32>(-limit), vec2<f32>(limit));
    }
    return silu(g) * u;
}
