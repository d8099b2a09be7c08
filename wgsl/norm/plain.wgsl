// RMS norm input read as is.
// Defines: x (binding 1, read-only), load_x(i).

@group(0) @binding(1) var<storage, read> x: array<f32>;

fn load_x(i: u32) -> f32 {
    return x[i];
}
