// Rotary embedding of one matrix in place (m is always 0; n_heads2 is 0).
// Defines: x (binding 2), load_x(m, i), store_x(m, i, v).

@group(0) @binding(2) var<storage, read_write> x: array<f32>;

fn load_x(m: u32, i: u32) -> f32 {
    return x[i];
}

fn store_x(m: u32, i: u32, v: f32) {
    x[i] = v;
}
