// The expert activation of the routed-MoE layer, on two (gate, up) pairs at once:
//   swiglu(g, u, 0, _, _)         = silu(g) * u
//   swiglu(g, u, 1, limit, _)     = silu(min(g, limit)) * clamp(u, -limit, limit)
//   swiglu(g, u, 2, limit, alpha) = x * sigmoid(alpha x) * (clamp(u, -limit, limit) + 1),
//                                   x = min(g, limit)
// (ExpertActivation::SwiGlu, ::SwiGluClamped and ::SwiGluOai). Shared by act.wgsl and the
// mat-vec's glu epilogue (mv/glu.wgsl), so both compute the same function.
// Defines: silu(x), swiglu(g, u, mode, limit, alpha).

fn silu(x: vec2<f32>) -> vec2<f32> {
    return x / (1.0 + exp(-x));
}

fn swiglu(g: vec2<f32>, u: vec2<f32>, mode: u32, limit: f32, alpha: f32) -> vec2<f32> {
    if mode == 0u {
        return silu(g) * u;
    }
    let x = min(g, vec2<f32>(limit));
    let y = clamp(u, vec2<f32>(-limit), vec2<f32>(limit));
    if mode == 1u {
        return silu(x) * y;
    }
    return x / (1.0 + exp(-alpha * x)) * (y + 1.0);
}
