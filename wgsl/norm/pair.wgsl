// RMS norm of two matrices with the same group length in one dispatch (qwen3's per-head q and
// k norms): matrix m = 0 is x, w, out; m = 1 is x2, w2, out2.
// Defines: x, w, out (bindings 1-3), x2, w2, out2 (bindings 4-6), load_x(m, i),
//   store_out(m, i, k, scale).

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> x2: array<f32>;
@group(0) @binding(5) var<storage, read> w2: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<f32>;

fn load_x(m: u32, i: u32) -> f32 {
    if m == 0u {
        return x[i];
    }
    return x2[i];
}

fn store_out(m: u32, i: u32, k: u32, scale: f32) {
    if m == 0u {
        out[i] = x[i] * scale * w[k];
    } else {
        out2[i] = x2[i] * scale * w2[k];
    }
}
