// Rotary embedding of two matrices in place in one dispatch (q and k): m = 0 is x, m = 1 is x2.
// Defines: x (binding 2), x2 (binding 3), load_x(m, i), store_x(m, i, v).

@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> x2: array<f32>;

fn load_x(m: u32, i: u32) -> f32 {
    if m == 0u {
        return x[i];
    }
    return x2[i];
}

fn store_x(m: u32, i: u32, v: f32) {
    if m == 0u {
        x[i] = v;
    } else {
        x2[i] = v;
    }
}
