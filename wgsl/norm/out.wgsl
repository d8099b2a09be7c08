// RMS norm output of one matrix: out[i] = x[i] * scale * w[k].
// Expects: x. Defines: w (binding 2), out (binding 3), store_out(i, k, scale).

@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn store_out(i: u32, k: u32, scale: f32) {
    out[i] = x[i] * scale * w[k];
}
